"""Against a real ``fleet serve`` with uploads on: an added model runs in a worker process, and when that
worker dies its callers get a 502 naming the model while the service and other models go on."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from service.client import FleetClient
from service.errors import ModelCrashed
from service.server_process import ServerProcess

FEATURES = {"features": np.array([[1.0, 2.0, 3.0]], np.float32)}
TARGET = {**FEATURES, "target": np.array([[4.0]], np.float32)}


def spawned(pid: int) -> list[int]:
    """The service's processes spawned by multiprocessing (not its resource tracker), oldest first: the
    trial process of added models, then each added model's workers."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    started = {
        child: int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[19]) for child in found
    }
    return sorted(found, key=lambda child: started[child])


def test_a_crashing_model_costs_its_callers_a_502_not_the_service(
    server: ServerProcess, regressor_model: bytes
) -> None:
    with FleetClient(server.url) as client:
        client.add_model("crashy", regressor_model)
        device = client.create_device("crashy-1", model="crashy")["id"]
        other = client.create_device("default-1")["id"]
        for _ in range(3):
            client.run(device, "fit", TARGET)
        client.run(device, "save")
        saved = client.run(device, "predict", FEATURES)["prediction"]
        client.run(device, "fit", TARGET)  # past the checkpoint: lost with the worker
        before = client.infer(other, x=np.zeros((1, 28, 28), np.float32))["logits"]
        trial, worker = spawned(server.process.pid)
        os.kill(worker, signal.SIGSEGV)
        with pytest.raises(ModelCrashed, match=r"model 'crashy' crashed.*SIGSEGV"):
            client.run(device, "predict", FEATURES)
        np.testing.assert_array_equal(client.run(device, "predict", FEATURES)["prediction"], saved)
        np.testing.assert_array_equal(
            client.infer(other, x=np.zeros((1, 28, 28), np.float32))["logits"], before
        )
        assert server.process.poll() is None
        assert spawned(server.process.pid)[0] == trial and worker not in spawned(server.process.pid)
