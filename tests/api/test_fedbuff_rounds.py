"""FedBuff over HTTP: a run of server steps makes a version per step with its staleness shown, its
settings are bounded in the body (422 naming the field), and what only rounds have is refused (400)."""

from __future__ import annotations

from collections.abc import Iterator
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
    settings = Settings(data_dir=tmp_path_factory.mktemp("fedbuff") / "data", keep_versions=5)
    with local_client(create_app(settings)) as test_client:
        put = test_client.put(
            f"/v1/datasets/{SMALL}",
            content=npz(**small_dataset(fashion_mnist)),
            headers={"content-type": NPZ},
        )
        assert put.status_code == 201, put.text
        yield test_client


def test_a_fedbuff_run_makes_a_version_every_k_updates(client: TestClient) -> None:
    devices(client, "buff", 5)
    assign(client, "buff", scheme="iid", seed=3)
    options = {"buffer_size": 2, "concurrency": 3, "max_staleness": 10}
    body = {"prefix": "buff", "rounds": 3, "batch_size": 20, "aggregation": "fedbuff", "options": options}
    view = wait_run(client, start_run(client, **body)["id"])
    assert view["state"] == "succeeded", view
    assert view["spec"]["options"]["buffer_size"] == 2
    assert view["progress"]["participants_per_round"] == 2  # updates per server step
    assert [r["finished"] for r in view["rounds"]] == [2, 2, 2]
    assert all(r["version"] is not None and 0 < r["global_accuracy"] <= 1 for r in view["rounds"])
    assert [r["mean_staleness"] is not None for r in view["rounds"]] == [True] * 3


@pytest.mark.parametrize(
    ("field", "value"),
    [("buffer_size", 0), ("concurrency", 0), ("concurrency", 1.5), ("max_staleness", -1)],
)
def test_bad_fedbuff_options_are_refused_naming_the_field(client: TestClient, field: str, value: Any) -> None:
    devices(client, f"badbuff-{field}-{value}", 1)
    body = {"prefix": f"badbuff-{field}-{value}", "aggregation": "fedbuff", "options": {field: value}}
    assert field in error(client.post("/v1/rounds", json=body), 422)


@pytest.mark.parametrize(
    ("extra", "named"), [({"deadline": 2.0}, "deadline"), ({"selection": "oort"}, "oort")]
)
def test_what_only_rounds_have_is_refused(client: TestClient, extra: dict[str, Any], named: str) -> None:
    devices(client, f"norounds-{named}", 1)
    body = {"prefix": f"norounds-{named}", "aggregation": "fedbuff", **extra}
    assert named in error(client.post("/v1/rounds", json=body), 400)
