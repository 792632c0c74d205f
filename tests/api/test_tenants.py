"""Tenants cannot reach each other's state: model versions belong to the key that made them, an admin
publishes what all may see, retention counts per owner, no round makes a version that is not finite,
and each devices key has quotas (429 naming the setting).

One keyed service for the module: an admin key and two devices keys, ``alice-`` and ``bob-``; a small
dataset cut from Fashion-MNIST is uploaded once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.api.codecs import NPZ
from service.config import Settings
from service.model.dataset import FashionMNIST
from tests.api.test_federated import SMALL, npz, small_dataset
from tests.local import LOOPBACK

ADMIN = {"authorization": "Bearer " + "a" * 32}
ALICE = {"authorization": "Bearer " + "b" * 32}
BOB = {"authorization": "Bearer " + "c" * 32}
KEEP = 2
QUOTA_DEVICES, QUOTA_SAMPLE_BYTES = 8, 200_000


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, fashion_mnist: FashionMNIST) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("tenants")
    keys = root / "keys"
    keys.write_text(f"{'a' * 32} admin\n{'b' * 32} devices alice-\n{'c' * 32} devices bob-\n")
    settings = Settings(
        data_dir=root / "data",
        api_keys_file=keys,
        keep_versions=KEEP,
        quota_devices=QUOTA_DEVICES,
        quota_runs=1,
        quota_jobs=1,
        quota_sample_bytes=QUOTA_SAMPLE_BYTES,
    )
    with TestClient(create_app(settings), client=LOOPBACK) as running:
        put = running.put(
            f"/v1/datasets/{SMALL}",
            content=npz(**small_dataset(fashion_mnist)),
            headers={"content-type": NPZ, **ADMIN},
        )
        assert put.status_code == 201, put.text
        for key, prefix in ((ALICE, "alice"), (BOB, "bob")):
            ids = [f"{prefix}-{i}" for i in range(3)]
            for device_id in ids:
                assert running.post("/v1/devices", json={"id": device_id}, headers=key).status_code == 201
            body = {"ids": ids, "train_per_device": 60, "test_per_device": 20}
            assert running.post(f"/v1/datasets/{SMALL}/assign", json=body, headers=ADMIN).status_code == 200
        yield running


def run(client: TestClient, key: dict[str, str], **body: Any) -> dict[str, Any]:
    """Start a run as ``key`` and wait for it to end; its final view."""
    body = {"rounds": 1, "epochs": 1, "batch_size": 20, "global_accuracy": False, **body}
    response = client.post("/v1/rounds", json=body, headers=key)
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 120
    while True:
        view: dict[str, Any] = client.get(f"/v1/rounds/{response.json()['id']}", headers=key).json()
        if view["state"] not in ("queued", "running"):
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.05)


def versions(client: TestClient, key: dict[str, str]) -> list[int]:
    listing = client.get("/v1/models/fashion_mnist/versions", headers=key).json()
    return [v["number"] for v in listing["versions"]]


def error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["error"]["message"]
    return message


def test_a_tenants_versions_are_its_own_until_an_admin_publishes_one(client: TestClient) -> None:
    made = run(client, ALICE, ids=["alice-0", "alice-1"])
    assert made["state"] == "succeeded", made
    mine = made["version"]
    assert mine in versions(client, ALICE) and mine in versions(client, ADMIN)
    assert mine not in versions(client, BOB) and 0 in versions(client, BOB)
    described = client.get(f"/v1/models/fashion_mnist/versions/{mine}", headers=ADMIN).json()
    assert described["owner"] == "alice-" and described["published"] is False
    # Bob can neither read, adopt, evaluate, train from, nor build on it: as if it did not exist.
    assert "no version" in error(client.get(f"/v1/models/fashion_mnist/versions/{mine}", headers=BOB), 404)
    for path, body in (
        ("/v1/devices/bob-0/adopt", {"version": mine}),
        ("/v1/devices/bob-0/evaluate", {"version": mine}),
        ("/v1/devices/bob-0/participate", {"version": mine}),
    ):
        assert "no version" in error(client.post(path, json=body, headers=BOB), 404), path
    refused = client.post("/v1/rounds", json={"ids": ["bob-0"], "start_version": mine}, headers=BOB)
    assert "no version" in error(refused, 404)
    # Bob's runs start from the latest version *he* sees, not Alice's.
    his = run(client, BOB, ids=["bob-0"])
    assert his["state"] == "succeeded" and his["start_version"] == 0, his
    adopted = client.post("/v1/devices/bob-1/adopt", json={}, headers=BOB).json()
    assert adopted["version"] == his["version"]
    # Publishing is an admin's act; then every key sees it.
    path = f"/v1/models/fashion_mnist/versions/{mine}/publish"
    assert "admin" in error(client.post(path, headers=BOB), 403)
    assert client.post(path, headers=ADMIN).json()["published"] is True
    assert mine in versions(client, BOB)
    assert client.post("/v1/devices/bob-0/adopt", json={"version": mine}, headers=BOB).status_code == 200


def test_retention_counts_per_owner(client: TestClient) -> None:
    """Bob's runs prune Bob's old versions only; Alice's latest stays however much Bob runs."""
    alice = run(client, ALICE, ids=["alice-2"])["version"]
    made = [run(client, BOB, ids=["bob-2"], start_version=0)["version"] for _ in range(KEEP + 2)]
    bobs = [n for n in versions(client, BOB) if n > 0]
    assert made[-KEEP:] == sorted(set(bobs) & set(made))[-KEEP:]
    assert not set(made[:2]) & set(bobs)  # pruned: past KEEP of Bob's
    assert alice in versions(client, ALICE)


def test_a_server_learning_rate_past_its_bound_is_refused(client: TestClient) -> None:
    for field, value in (("server_learning_rate", 1e38), ("server_learning_rate", 101), ("tau", 5.0)):
        response = client.post("/v1/rounds", json={"ids": ["alice-0"], field: value}, headers=ALICE)
        assert response.status_code == 422, response.text
        assert field in response.text


def test_a_devices_key_is_held_to_its_device_quota(client: TestClient) -> None:
    have = len([d for d in client.get("/v1/devices", headers=ALICE).json()["devices"]])
    for i in range(QUOTA_DEVICES - have):
        assert client.post("/v1/devices", json={"id": f"alice-q{i}"}, headers=ALICE).status_code == 201
    message = error(client.post("/v1/devices", json={"id": "alice-over"}, headers=ALICE), 429)
    assert "FLEET_QUOTA_DEVICES" in message and "alice-" in message
    assert error(client.post("/v1/devices", json={}, headers=ALICE), 429)  # a random ID too
    assert client.post("/v1/devices", json={"id": "bob-fits"}, headers=BOB).status_code == 201
    assert client.post("/v1/devices", json={"id": "admin-fits"}, headers=ADMIN).status_code == 201
    for i in range(QUOTA_DEVICES - have):
        assert client.delete(f"/v1/devices/alice-q{i}", headers=ALICE).status_code == 204


def test_a_devices_key_is_held_to_its_sample_bytes(client: TestClient) -> None:
    x = np.zeros((100, 28, 28), np.float32)  # 313,600 bytes with y: past the quota at once
    y = np.zeros((100, 10), np.float32)
    one = {"content-type": NPZ, **ALICE}
    small = client.post("/v1/devices/alice-0/samples", content=npz(x=x[:20], y=y[:20]), headers=one)
    assert small.status_code == 200, small.text
    message = error(client.post("/v1/devices/alice-1/samples", content=npz(x=x, y=y), headers=one), 429)
    assert "FLEET_QUOTA_SAMPLE_BYTES" in message
    assert client.get("/v1/devices/alice-1/samples", headers=ALICE).json()["count"] == 0
    theirs = client.post("/v1/devices/bob-0/samples", content=npz(x=x[:20], y=y[:20]), headers={**one, **BOB})
    assert theirs.status_code == 200
    assert client.delete("/v1/devices/alice-0/samples", headers=ALICE).status_code == 204


def test_a_devices_key_is_held_to_its_run_and_job_quotas(client: TestClient) -> None:
    long_run = {"ids": ["alice-0"], "rounds": 50, "epochs": 20, "batch_size": 1, "global_accuracy": False}
    first = client.post("/v1/rounds", json=long_run, headers=ALICE)
    assert first.status_code == 202, first.text
    try:
        assert "FLEET_QUOTA_RUNS" in error(client.post("/v1/rounds", json=long_run, headers=ALICE), 429)
        assert client.post("/v1/rounds", json={**long_run, "ids": ["bob-0"]}, headers=BOB).status_code == 202
        job = {"epochs": 200, "batch_size": 1}
        started = client.post("/v1/devices/alice-1/jobs", json=job, headers=ALICE)
        assert started.status_code == 202, started.text
        second = client.post("/v1/devices/alice-2/jobs", json=job, headers=ALICE)
        assert "FLEET_QUOTA_JOBS" in error(second, 429)
        client.post(f"/v1/devices/alice-1/jobs/{started.json()['id']}/cancel", headers=ALICE)
    finally:
        for key in (ALICE, BOB):
            for listed in client.get("/v1/rounds", headers=key).json()["runs"]:
                if listed["state"] in ("queued", "running"):
                    client.post(f"/v1/rounds/{listed['id']}/cancel", headers=key)
