"""Private and secure rounds over HTTP (issue 26, item 6): the body takes the settings, a run shows them
and epsilon per round, bad settings are 422s naming the setting, and a participant asked to privatize
answers with nothing but its masked vector."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.api.codecs import NPZ
from service.api.routes.round_privacy import PrivatizeBody
from service.config import Settings
from service.federated.task import Privatize
from service.model.dataset import FashionMNIST
from service.privacy.secagg import SecAggSettings, SecureRound
from tests.api.test_federated import SMALL, assign, devices, error, npz, small_dataset, start_run, wait_run
from tests.local import local_client


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, fashion_mnist: FashionMNIST) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("privacy") / "data")
    with local_client(create_app(settings)) as test_client:
        content = npz(**small_dataset(fashion_mnist))
        put = test_client.put(f"/v1/datasets/{SMALL}", content=content, headers={"content-type": NPZ})
        assert put.status_code == 201, put.text
        devices(test_client, "priv", 5)
        assign(test_client, "priv", scheme="iid", seed=3)
        yield test_client


def test_a_private_secure_run_shows_its_settings_and_epsilon_per_round(client: TestClient) -> None:
    body = {
        "prefix": "priv",
        "rounds": 2,
        "batch_size": 20,
        "selection": "uniform",
        "privacy": {"mode": "distributed", "noise_multiplier": 0.8, "clip": 0.5},
        "secure_aggregation": {"threshold": 2, "neighbors": 2},
    }
    view = wait_run(client, start_run(client, **body)["id"])
    assert view["state"] == "succeeded", view
    assert view["spec"]["privacy"]["mode"] == "distributed" and view["spec"]["privacy"]["delta"] == 1e-5
    assert view["spec"]["secure_aggregation"] == {
        "threshold": 2,
        "neighbors": 2,
        "clipping_range": 8.0,
        "quantization_range": 1 << 22,
        "min_inputs": None,
    }
    epsilons = [r["privacy"]["epsilon"] for r in view["rounds"]]
    assert 0 < epsilons[0] < epsilons[1]
    assert all(r["privacy"]["secure"]["survivors"] == 5 for r in view["rounds"])


@pytest.mark.parametrize(
    ("part", "value", "named"),
    [
        ("privacy", {"noise_multiplier": -0.5}, "noise_multiplier"),
        ("privacy", {"clip": 0}, "clip"),
        ("privacy", {"delta": 0}, "delta"),
        ("privacy", {"delta": 1}, "delta"),
        ("privacy", {"mode": "trusted"}, "mode"),
        ("privacy", {"target_epsilon": -1}, "target_epsilon"),
        ("secure_aggregation", {"threshold": 6}, "threshold"),
        ("secure_aggregation", {"threshold": 1}, "threshold"),
        ("secure_aggregation", {"threshold": 3, "neighbors": 9}, "neighbors"),
        ("secure_aggregation", {"threshold": 3, "clipping_range": 0}, "clipping_range"),
    ],
)
def test_bad_privacy_settings_are_422s_naming_the_setting(
    client: TestClient, part: str, value: dict[str, Any], named: str
) -> None:
    body: dict[str, Any] = {"prefix": "priv", "selection": "uniform", part: value}
    assert named in error(client.post("/v1/rounds", json=body), 422)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"selection": "available"}, "selection must be 'poisson'"),
        ({"aggregation": "krum"}, "aggregation 'krum' cannot run"),
        ({"rounds": 500, "privacy": {"target_epsilon": 1.0}}, "target_epsilon 1 would be exceeded"),
        ({"privacy": {"mode": "distributed"}}, "give secure_aggregation"),
    ],
)
def test_runs_privacy_cannot_serve_are_422s_saying_why(
    client: TestClient, changes: dict[str, Any], named: str
) -> None:
    body: dict[str, Any] = {"prefix": "priv", "selection": "uniform", "privacy": {}, **changes}
    assert named in error(client.post("/v1/rounds", json=body), 422)


def test_a_participant_asked_to_privatize_answers_only_its_masked_vector(client: TestClient) -> None:
    version = 0  # the model's base version
    secure = SecureRound(SecAggSettings(threshold=2), ["priv-0", "priv-1"], 101_771, (1, 1))
    how = Privatize(clip=1.0, masking=secure.keys("priv-0"))
    body = {"version": version, "batch_size": 20, "privatize": PrivatizeBody.of(how).model_dump()}
    response = client.post("/v1/devices/priv-0/participate", json=body)
    assert response.status_code == 200, response.text
    with np.load(io.BytesIO(response.content)) as answer:
        assert sorted(answer.files) == ["meta", "p"]
        assert answer["p"].dtype == np.uint32 and answer["p"].shape == (101_771,)
