"""Prometheus metrics at /metrics, scraped and parsed as Prometheus would."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.api import create_app
from service.config import Settings
from tests.local import local_client

Batch = tuple[np.ndarray, np.ndarray]
TRAIN = "/v1/devices/{device_id}/train"


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by name and sorted labels."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def body(batch: Batch, n: int = 4) -> dict:
    return {"inputs": {"x": batch[0][:n].tolist(), "y": batch[1][:n].tolist()}}


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[TestClient]:
    with local_client(create_app(Settings(data_dir=tmp_path / "data", max_resident=1))) as client:
        yield client


def train_three_and_miss_one(client: TestClient, batch: Batch) -> list[str]:
    """Three devices train once each (200), and a call to an unknown one (404); their IDs."""
    ids = [f"phone-{i}" for i in range(3)]
    client.post("/v1/devices/bulk-create", json={"ids": ids})
    for device in ids:
        assert client.post(f"/v1/devices/{device}/train", json=body(batch)).status_code == 200
    client.post("/v1/devices/nobody/train", json=body(batch))
    return ids


def test_requests_are_counted_per_route_template(capped: TestClient, train_batch: Batch) -> None:
    ids = train_three_and_miss_one(capped, train_batch)
    capped.get("/no/such/thing")
    samples = scrape(capped)

    assert value(samples, "fleet_http_requests_total", method="POST", route=TRAIN, status="200") == 3
    assert value(samples, "fleet_http_requests_total", method="POST", route=TRAIN, status="404") == 1
    assert value(samples, "fleet_http_requests_total", method="GET", route="unmatched", status="404") == 1
    duration = {"method": "POST", "route": TRAIN}
    assert value(samples, "fleet_http_request_duration_seconds_count", **duration) == 4
    assert value(samples, "fleet_http_request_duration_seconds_bucket", le="+Inf", **duration) == 4
    assert value(samples, "fleet_http_request_duration_seconds_sum", **duration) > 0
    labels = {v for _, pairs in samples for _, v in pairs}
    assert not any(device in label for device in [*ids, "nobody"] for label in labels)


def test_fleet_counts_residency_train_steps_and_checkpoints(capped: TestClient, train_batch: Batch) -> None:
    capped.post("/v1/devices/bulk-create", json={"ids": ["a", "b"]})
    for device in ("a", "a", "b"):  # b's activation evicts a, whose unsaved weights spill (a save)
        capped.post(f"/v1/devices/{device}/train", json=body(train_batch))
    capped.post("/v1/devices/b/save")  # a save; b's weights are now its checkpoint's
    # a's activation restores its spill and evicts b, which needs no spill
    capped.post("/v1/devices/a/infer", json={"inputs": {"x": train_batch[0][:1].tolist()}})
    samples = scrape(capped)

    assert value(samples, "fleet_devices") == 2
    assert value(samples, "fleet_interpreters_resident") == 1
    assert value(samples, "fleet_interpreters_max_resident") == 1
    assert value(samples, "fleet_train_steps_total") == 3
    assert value(samples, "fleet_activations_total") == 3
    assert value(samples, "fleet_evictions_total") == 2
    assert value(samples, "fleet_spills_total") == 1
    saves = value(samples, "fleet_checkpoint_duration_seconds_count", operation="save")
    restores = value(samples, "fleet_checkpoint_duration_seconds_count", operation="restore")
    assert (saves, restores) == (2, 1)
    assert value(samples, "fleet_checkpoint_duration_seconds_bucket", operation="save", le="+Inf") == saves
    assert value(samples, "fleet_checkpoint_duration_seconds_sum", operation="save") > 0


def test_jobs_are_gauged_by_state(client: TestClient, train_batch: Batch) -> None:
    client.post("/v1/devices", json={"id": "phone"})
    samples = scrape(client)
    assert {dict(labels)["state"] for name, labels in samples if name == "fleet_jobs"} >= {
        "queued", "running", "succeeded", "failed", "cancelled", "interrupted",
    }  # fmt: skip
    assert sum(v for (name, _), v in samples.items() if name == "fleet_jobs") == 0

    client.post("/v1/devices/phone/samples", json=body(train_batch, 8))
    job = client.post("/v1/devices/phone/jobs", json={"epochs": 1, "batch_size": 4}).json()
    deadline = time.monotonic() + 60
    while client.get(f"/v1/devices/phone/jobs/{job['id']}").json()["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    samples = scrape(client)
    assert value(samples, "fleet_jobs", state="succeeded") == 1
    assert value(samples, "fleet_train_steps_total") == 2


def test_each_app_has_its_own_registry_and_needs_no_fleet_to_scrape(tmp_path: Path) -> None:
    first = local_client(create_app(Settings(data_dir=tmp_path / "one")))  # no `with`: the fleet never opens
    second = local_client(create_app(Settings(data_dir=tmp_path / "two")))
    for _ in range(3):
        first.get("/healthz")
    second.get("/healthz")
    one, two = scrape(first), scrape(second)
    assert value(one, "fleet_http_requests_total", method="GET", route="/healthz", status="200") == 3
    assert value(two, "fleet_http_requests_total", method="GET", route="/healthz", status="200") == 1
    assert not any(name.startswith("fleet_devices") for name, _ in one)
    assert not (tmp_path / "one").exists() and not (tmp_path / "two").exists()


def test_openmetrics_when_asked(client: TestClient) -> None:
    response = client.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_the_fleet_status_carries_the_same_counts_as_json(capped: TestClient, train_batch: Batch) -> None:
    """What the dashboard reads: GET /v1/fleet agrees with /metrics, route by route."""
    train_three_and_miss_one(capped, train_batch)
    before = capped.get("/v1/fleet").json()
    samples = scrape(capped)
    status = capped.get("/v1/fleet").json()

    assert status["train_steps"] == 3 == value(samples, "fleet_train_steps_total")
    assert status["time"] >= before["time"]
    routes = {(r["method"], r["route"]): r for r in status["requests"]}
    train = routes["POST", TRAIN]
    assert (train["requests"], train["errors"]) == (4, 1)
    assert len(train["buckets"]) == len(status["request_buckets"]) + 1 and train["buckets"][-1] == 4
    assert train["buckets"] == sorted(train["buckets"])  # cumulative
    assert train["seconds"] == pytest.approx(
        value(samples, "fleet_http_request_duration_seconds_sum", method="POST", route=TRAIN)
    )
    assert routes["GET", "/v1/fleet"]["requests"] == 1  # the first status call; this one counts later
    assert routes["GET", "/metrics"]["requests"] == 1
    assert status["jobs"] == {}  # none yet: the jobs tests count them (fleet.jobs_by_state, as /metrics)
