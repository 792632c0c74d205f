"""Added models in worker processes: the same answers as in-process, and a worker's death costs only
that model's callers, who come back from their checkpoints (``service.runtime.isolation``).

A worker is killed here as a crash would kill it (SIGKILL, SIGSEGV), past its memory limit, or past its
time limit; the models are real (the regressor of ``tests.regressor`` and the embedded default).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.errors import ModelCrashed
from service.fleet import DEFAULT_MODEL, Fleet
from service.runtime.interpreter import ModelInterpreter
from service.runtime.isolation import Isolation, RemoteInterpreter

FEATURES = {"features": np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]], np.float32)}
TARGET = {**FEATURES, "target": np.array([[1.0], [2.0]], np.float32)}


@pytest.fixture
def fleet(tmp_path: Path, regressor_model: bytes) -> Iterator[Fleet]:
    opened = Fleet(tmp_path / "data", isolation=Isolation(workers=1, call_seconds=60))
    opened.models.add("reg", regressor_model)
    yield opened
    opened.close()


def workers(fleet: Fleet) -> list[int]:
    """The PIDs of the regressor's live workers."""
    pool = fleet.models.get("reg").isolated
    return [w.process.pid for w in pool._workers if w.dead is None]


def trained(fleet: Fleet, device_id: str, steps: int) -> np.ndarray:
    device = fleet.get(device_id)
    for _ in range(steps):
        device.run("fit", TARGET)
    return device.run("predict", FEATURES)["prediction"]


def test_an_isolated_model_answers_as_the_same_model_in_process(
    fleet: Fleet, tmp_path: Path, regressor_model: bytes
) -> None:
    fleet.create("remote", model="reg")
    remote = trained(fleet, "remote", 5)
    assert isinstance(fleet.get("remote")._interpreter, RemoteInterpreter)
    assert workers(fleet) and os.getpid() not in workers(fleet)
    local = Fleet(tmp_path / "local")
    try:
        local.models.add("reg", regressor_model)
        local.create("here", model="reg")
        assert type(local.get("here").load().interpreter()) is ModelInterpreter
        np.testing.assert_array_equal(remote, trained(local, "here", 5))
    finally:
        local.close()
    assert fleet.models.get("reg").signatures == local.models.get("reg").signatures


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSEGV])
def test_a_dead_worker_costs_its_models_callers_a_5xx_and_they_come_back_from_their_checkpoints(
    fleet: Fleet, how: signal.Signals
) -> None:
    fleet.create("saved", model="reg")
    fleet.create("bystander")  # the embedded default model, in this process
    saved = trained(fleet, "saved", 3)
    fleet.get("saved").save()
    trained(fleet, "saved", 3)  # steps after the checkpoint: lost with the worker
    bystander = fleet.get("bystander").run("infer", {"x": np.zeros((1, 28, 28), np.float32)})
    [pid] = workers(fleet)
    os.kill(pid, how)
    with pytest.raises(ModelCrashed, match=rf"model 'reg' crashed.*{how.name}"):
        fleet.get("saved").run("predict", FEATURES)
    again = fleet.get("saved").run("predict", FEATURES)["prediction"]  # a new worker, from the checkpoint
    np.testing.assert_array_equal(again, saved)
    assert workers(fleet) and pid not in workers(fleet)
    after = fleet.get("bystander").run("infer", {"x": np.zeros((1, 28, 28), np.float32)})
    np.testing.assert_array_equal(after["logits"], bystander["logits"])
    assert fleet.get("bystander").load().name == DEFAULT_MODEL


def test_a_worker_past_its_memory_limit_is_killed(fleet: Fleet) -> None:
    fleet.create("big", model="reg")
    trained(fleet, "big", 1)
    pool = fleet.models.get("reg").isolated
    [worker] = pool._workers
    pool.isolation = Isolation(workers=1, memory_bytes=worker.resident_bytes() // 2)
    deadline = time.monotonic() + 10
    while worker.dead is None:
        assert time.monotonic() < deadline, "the watchdog did not kill the worker"
        time.sleep(0.05)
    with pytest.raises(ModelCrashed, match=r"memory limit of .* MiB"):
        fleet.get("big").run("predict", FEATURES)


def test_a_call_past_its_time_limit_kills_the_worker(fleet: Fleet) -> None:
    fleet.create("slow", model="reg")
    trained(fleet, "slow", 1)
    [worker] = fleet.models.get("reg").isolated._workers
    worker.isolation = Isolation(workers=1, call_seconds=1e-6)
    with pytest.raises(ModelCrashed, match="took longer than"):
        fleet.get("slow").run("predict", {"features": np.ones((100_000, 3), np.float32)})
    assert not worker.process.is_alive()


def test_a_deleted_model_stops_its_workers(fleet: Fleet) -> None:
    fleet.create("gone", model="reg")
    trained(fleet, "gone", 1)
    pool = fleet.models.get("reg").isolated
    processes = [w.process for w in pool._workers]
    fleet.delete("gone")
    fleet.delete_model("reg")
    for process in processes:
        process.join(timeout=10)
        assert not process.is_alive()
