"""A model with other signature names and inputs, through the generic route; and a service restart."""

from __future__ import annotations

import numpy as np
import pytest

from service.client import FleetClient
from service.errors import InvalidTensor, SignatureNotFound
from service.server_process import ServerProcess
from tests.e2e.conftest import UPLOADS_ON
from tests.regressor import regression_batch


def test_second_model_through_the_generic_route(server: ServerProcess, regressor_model: bytes) -> None:
    rng = np.random.default_rng(0)
    with FleetClient(server.url) as client:
        described = client.add_model("regressor", regressor_model)
        assert {s["name"] for s in described["signatures"]} == {"fit", "predict", "save", "restore"}
        device = client.create_device("linear-1", model="regressor")["id"]
        mse = []
        for _ in range(30):
            features, target = regression_batch(rng)
            mse.append(float(client.run(device, "fit", {"features": features, "target": target})["mse"]))
        assert mse[-1] < mse[0] / 10
        client.run(device, "save")
        features, _ = regression_batch(rng, 4)
        saved = client.run(device, "predict", {"features": features})["prediction"]
        client.run(device, "fit", {"features": features, "target": np.zeros((4, 1), np.float32)})
        client.restart(device)
        np.testing.assert_array_equal(
            client.run(device, "predict", {"features": features})["prediction"], saved
        )
        with pytest.raises(SignatureNotFound):
            client.train(device, x=np.zeros((1, 28, 28), np.float32), y=np.zeros((1, 10), np.float32))
        with pytest.raises(InvalidTensor, match="'features' has shape"):
            client.run(device, "predict", {"features": np.zeros((2, 4), np.float32)})


def test_service_restart_keeps_devices_models_and_checkpoints(
    tmp_path, regressor_model: bytes, train_batch
) -> None:
    first = ServerProcess(tmp_path / "data", env=UPLOADS_ON)
    try:
        with FleetClient(first.url) as client:
            client.add_model("regressor", regressor_model)
            client.create_device("linear", model="regressor")
            client.create_device("phone")
            client.create_device("untouched")
            client.train("phone", x=train_batch[0], y=train_batch[1])
            client.save("phone")
            saved = client.infer("phone", x=train_batch[0])["logits"]
            client.train("phone", x=train_batch[0], y=train_batch[1])  # lost with the process
    finally:
        first.stop()
    second = ServerProcess(tmp_path / "data", env=UPLOADS_ON)
    try:
        with FleetClient(second.url) as client:
            devices = {d["id"]: d for d in client.devices()}
            assert set(devices) == {"linear", "phone", "untouched"}
            assert devices["linear"]["model"] == "regressor"
            assert devices["phone"]["has_checkpoint"] and devices["phone"]["train_steps"] == 2
            assert not devices["phone"]["resident"]
            # The tutorial's rule after a service restart: the new interpreter restores the checkpoint.
            np.testing.assert_array_equal(client.infer("phone", x=train_batch[0])["logits"], saved)
            assert "regressor" in {m["name"] for m in client.models()}
    finally:
        second.stop()
