"""Rounds with the robust strategies (median, trimmed mean, Krum) and FedNova over HTTP: they make
versions, their settings are bounded in the body, runs too big for FLEET_MAX_BUFFERED_BYTES are refused
at their start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.api.codecs import NPZ
from service.config import Settings
from service.model.dataset import FashionMNIST
from tests.api.test_federated import SMALL, assign, devices, error, npz, small_dataset, start_run, wait_run
from tests.local import local_client


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, fashion_mnist: FashionMNIST) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("robust") / "data", keep_versions=5)
    with local_client(create_app(settings)) as test_client:
        put = test_client.put(
            f"/v1/datasets/{SMALL}",
            content=npz(**small_dataset(fashion_mnist)),
            headers={"content-type": NPZ},
        )
        assert put.status_code == 201, put.text
        yield test_client


@pytest.mark.parametrize(
    ("aggregation", "options"),
    [
        ("median", {}),
        ("trimmed_mean", {"trim_fraction": 0.25}),
        ("krum", {"byzantine": 1}),
        ("krum", {"byzantine": 1, "krum_keep": 2}),
    ],
)
def test_robust_rounds_make_versions(client: TestClient, aggregation: str, options: dict[str, Any]) -> None:
    prefix = f"robust-{aggregation}-{len(options)}"
    devices(client, prefix, 5)
    assign(client, prefix, scheme="iid", seed=3)
    body = {"prefix": prefix, "rounds": 2, "batch_size": 20, "aggregation": aggregation, "options": options}
    view = wait_run(client, start_run(client, **body)["id"])
    assert view["state"] == "succeeded", view
    assert [r["finished"] for r in view["rounds"]] == [5, 5]
    assert all(r["version"] is not None and 0 < r["global_accuracy"] <= 1 for r in view["rounds"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("trim_fraction", 0.5),
        ("trim_fraction", -0.1),
        ("byzantine", -1),
        ("byzantine", 1.5),
        ("krum_keep", 2_000_000),
    ],
)
def test_bad_strategy_options_are_refused_naming_the_field(
    client: TestClient, field: str, value: Any
) -> None:
    devices(client, f"badopt-{field}-{value}", 1)
    body = {"prefix": f"badopt-{field}-{value}", "aggregation": "krum", "options": {field: value}}
    assert field in error(client.post("/v1/rounds", json=body), 422)


def test_fednova_rounds_make_versions(client: TestClient) -> None:
    """The default model carries the ``hyperparameters`` signature FedNova reads its momentum from."""
    devices(client, "nova", 4)
    assign(client, "nova", scheme="dirichlet", alpha=0.5, seed=2)
    view = wait_run(client, start_run(client, prefix="nova", rounds=2, aggregation="fednova")["id"])
    assert view["state"] == "succeeded", view
    assert view["spec"]["aggregation"] == "fednova"
    assert all(r["version"] is not None and 0 < r["global_accuracy"] <= 1 for r in view["rounds"])


def test_a_robust_run_past_the_buffer_bound_is_refused_at_its_start(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", max_buffered_bytes=1000)
    with local_client(create_app(settings)) as small:
        devices(small, "big", 3)
        for aggregation in ("median", "trimmed_mean", "krum"):
            body = {"prefix": "big", "aggregation": aggregation}
            message = error(small.post("/v1/rounds", json=body), 400)
            assert "FLEET_MAX_BUFFERED_BYTES (1000 bytes)" in message and "3 participants" in message
        assert small.post("/v1/rounds", json={"prefix": "big", "aggregation": "fedavg"}).status_code == 202
