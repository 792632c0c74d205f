"""Background jobs without HTTP: bounded steps, cancelling within a step, bounded memory, bad files."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from service.errors import LimitExceeded
from service.fleet import Fleet, job_run
from service.fleet.device import Device
from service.fleet.jobs import JOBS_FILE, Job, JobRunner, JobSpec
from service.model.dataset import FashionMNIST, one_hot

LONG = JobSpec(epochs=10_000, batch_size=1, seed=0)
"""10,000 epochs of single-sample steps: minutes of work, far more than any test waits for."""


def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)


def finished(runner: JobRunner, device: Device, job: Job, timeout: float = 60) -> Job:
    until(
        lambda: runner.job(device, job.id).state not in ("queued", "running"), timeout, f"job {job.id} ends"
    )
    return runner.job(device, job.id)


@contextlib.contextmanager
def held(device: Device) -> Iterator[None]:
    """The device's lock, held by another thread meanwhile: its job's worker blocks in its next step."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with device.lock:
            taken.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(10)
    try:
        time.sleep(0.2)  # the worker reaches the lock within a step
        yield
    finally:
        release.set()
        holder.join(10)


def count_reads(device: Device, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Times at which the device's samples are read from disk, from now on."""
    reads: list[float] = []
    load = device.samples.load

    def counted() -> tuple[str | None, dict[str, np.ndarray]]:
        reads.append(time.monotonic())
        return load()

    monkeypatch.setattr(device.samples, "load", counted)
    return reads


@pytest.fixture
def fleet(tmp_path: Path, fashion_mnist: FashionMNIST) -> Iterator[Fleet]:
    """Devices d0..d3, each with 50 samples of its own."""
    fleet = Fleet(tmp_path / "data")
    for i, device in enumerate(fleet.create_many([f"d{i}" for i in range(4)])):
        part = slice(50 * i, 50 * (i + 1))
        x, y = fashion_mnist.train_images[part], one_hot(fashion_mnist.train_labels[part])
        device.add_samples("train", {"x": x, "y": y})
    yield fleet
    fleet.close()


@pytest.fixture
def runners() -> Iterator[list[JobRunner]]:
    """Runners a test makes, closed after it (their workers are daemon threads, but stop them anyway)."""
    made: list[JobRunner] = []
    yield made
    for runner in made:
        runner.close(timeout=10)


def test_a_job_past_max_steps_is_refused_before_it_starts(fleet: Fleet, runners: list[JobRunner]) -> None:
    runner = JobRunner(1, max_steps=10)
    runners.append(runner)
    device = fleet.get("d0")
    with pytest.raises(LimitExceeded, match="FLEET_MAX_JOB_STEPS") as refused:
        runner.start(device, JobSpec(epochs=3, batch_size=10))  # 3 x 5 = 15 steps
    assert "15 training steps" in refused.value.message
    assert runner.jobs(device) == [] and runner.tables_in_memory == 0
    job = runner.start(device, JobSpec(epochs=2, batch_size=10))  # 10: at the bound
    assert finished(runner, device, job).state == "succeeded"


def test_a_job_with_a_step_limit_stops_there_even_within_an_epoch(
    fleet: Fleet, runners: list[JobRunner]
) -> None:
    runner = JobRunner(1, max_steps=10)
    runners.append(runner)
    device = fleet.get("d0")  # 50 samples: 5 batches of 10 an epoch
    job = runner.start(device, JobSpec(epochs=1_000, batch_size=10, steps=7))  # within max_steps
    assert job.steps_total == 7
    done = finished(runner, device, job)
    assert (done.state, done.steps_done, done.epoch, len(done.epoch_losses)) == ("succeeded", 7, 1, 1)
    assert device.info().train_steps == 7
    one = finished(runner, device, runner.start(device, JobSpec(batch_size=10, steps=1)))
    assert (one.steps_done, one.epoch, device.info().train_steps) == (1, 0, 8)
    assert runner.start(device, JobSpec(epochs=1, batch_size=10, steps=99)).steps_total == 5


def test_cancel_stops_a_job_before_its_next_step(fleet: Fleet, runners: list[JobRunner]) -> None:
    """With 30-second slices, only a check before every step can stop the job after one more step."""
    runner = JobRunner(1, slice_seconds=30)
    runners.append(runner)
    device = fleet.get("d0")
    job = runner.start(device, LONG)
    until(lambda: job.steps_done >= 5, 30, "the job takes steps")
    with held(device):
        steps = job.steps_done
        runner.cancel(device, job.id)
        assert job.cancel_requested and job.steps_done == steps
    ended = finished(runner, device, job, timeout=10)
    assert ended.state == "cancelled"
    assert ended.steps_done == steps + 1, "only the step that was waiting for the lock may finish"
    train_steps = device.info().train_steps
    time.sleep(0.3)
    assert device.info().train_steps == train_steps == steps + 1, "the job kept training"


def test_stop_active_waits_for_the_step_in_hand_then_gives_up(fleet: Fleet, runners: list[JobRunner]) -> None:
    runner = JobRunner(1, slice_seconds=30)
    runners.append(runner)
    device = fleet.get("d0")
    job = runner.start(device, LONG)
    until(lambda: job.steps_done >= 1, 30, "the job takes steps")
    with held(device):  # a step that cannot end meanwhile
        started = time.monotonic()
        assert runner.stop_active(device, "stopped by a test", timeout=0.5) is False
        assert 0.5 <= time.monotonic() - started < 5
        assert job.state == "running"
    started = time.monotonic()
    assert runner.stop_active(device, "stopped by a test", timeout=10) is True
    assert time.monotonic() - started < 5
    assert job.state == "cancelled" and job.error == "stopped by a test"
    assert runner.stop_active(device, "nothing to stop") is True


def test_job_tables_leave_memory_once_their_jobs_end(fleet: Fleet, runners: list[JobRunner]) -> None:
    runner = JobRunner(2)
    runners.append(runner)
    devices = [fleet.get(f"d{i}") for i in range(4)]
    long = runner.start(devices[0], LONG)
    jobs = [runner.start(d, JobSpec(epochs=2, batch_size=10, seed=i)) for i, d in enumerate(devices[1:])]
    for device, job in zip(devices[1:], jobs, strict=True):
        assert finished(runner, device, job).state == "succeeded"
    until(lambda: runner.tables_in_memory == 1, 10, "the ended jobs' tables leave memory")
    for device, job in zip(devices[1:], jobs, strict=True):  # read back from jobs.json
        (record,) = runner.jobs(device)
        assert (record.id, record.state, record.steps_done) == (job.id, "succeeded", 10)
        assert orjson.loads((device.directory / JOBS_FILE).read_bytes())[0]["state"] == "succeeded"
    runner.cancel(devices[0], long.id)
    assert finished(runner, devices[0], long, timeout=10).state == "cancelled"
    until(lambda: runner.tables_in_memory == 0, 10, "the cancelled job's table leaves memory")
    again = runner.start(devices[1], JobSpec(epochs=1, batch_size=50))  # history read back, then kept
    assert finished(runner, devices[1], again).state == "succeeded"
    assert [j.id for j in runner.jobs(devices[1])] == [jobs[0].id, again.id]
    assert runner.counts_by_state() == {"succeeded": 4, "cancelled": 1}


def test_samples_read_again_every_step_train_exactly_as_kept_ones(
    tmp_path: Path, fashion_mnist: FashionMNIST, runners: list[JobRunner], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose samples are not kept (budget 0, one step a slice) takes the same batches in the
    same order as one that keeps them: the same losses, the same weights."""
    monkeypatch.setattr(job_run, "RELOAD_FACTOR", 0)  # a slice that read its samples is one step still
    kept, reread = JobRunner(1), JobRunner(1, slice_seconds=0, sample_cache_bytes=0)
    runners += [kept, reread]
    x, y = fashion_mnist.train_images[:60], one_hot(fashion_mnist.train_labels[:60])
    results = []
    for name, runner in (("kept", kept), ("reread", reread)):
        fleet = Fleet(tmp_path / name)
        device = fleet.create("phone")
        device.add_samples("train", {"x": x, "y": y})
        reads = count_reads(device, monkeypatch)
        job = finished(runner, device, runner.start(device, JobSpec(epochs=3, batch_size=16, seed=7)))
        assert job.state == "succeeded" and job.steps_done == job.steps_total == 12
        assert len(reads) == (1 if runner is kept else 12)
        results.append((job.epoch_losses, device.run("infer", {"x": x[:5]})["logits"]))
        assert runner.sample_bytes_in_memory == 0
        fleet.close()
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_kept_samples_stay_within_their_budget(fleet: Fleet, runners: list[JobRunner]) -> None:
    _, samples = fleet.get("d0").samples.load()
    one_set = sum(a.nbytes for a in samples.values())  # each device has as many
    runner = JobRunner(1, slice_seconds=0.01, sample_cache_bytes=one_set)
    runners.append(runner)
    devices = [fleet.get(f"d{i}") for i in range(3)]
    jobs = [runner.start(d, LONG) for d in devices]
    seen = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        seen = max(seen, runner.sample_bytes_in_memory)
        assert runner.sample_bytes_in_memory <= one_set
        time.sleep(0.005)
    assert seen == one_set, "a job's samples were never kept"
    assert all(job.steps_done > 0 for job in jobs), "the jobs took turns"
    for device in devices:
        runner.stop_active(device, "done")
    assert runner.sample_bytes_in_memory == 0


def test_samples_changed_under_a_job(fleet: Fleet, runners: list[JobRunner], fashion_mnist) -> None:
    """Re-read samples of another count start the epoch over them; cleared ones fail the job."""
    runner = JobRunner(1, slice_seconds=0, sample_cache_bytes=0)
    runners.append(runner)
    device = fleet.get("d0")
    job = runner.start(device, JobSpec(epochs=200, batch_size=10, seed=1))  # 1,000 steps
    until(lambda: job.steps_done >= 3, 30, "the job takes steps")
    x, y = fashion_mnist.train_images[500:530], one_hot(fashion_mnist.train_labels[500:530])
    device.add_samples("train", {"x": x, "y": y})
    ended = finished(runner, device, job)
    assert ended.state == "succeeded", ended.error
    assert ended.steps_done == ended.steps_total > 1_000 and ended.epoch == 200

    job = runner.start(device, LONG)
    until(lambda: job.steps_done >= 1, 30, "the job takes steps")
    device.samples.clear()
    ended = finished(runner, device, job, timeout=10)
    assert ended.state == "failed" and "cleared while the job ran" in (ended.error or "")


def test_a_corrupt_jobs_file_blocks_nothing(fleet: Fleet) -> None:
    device = fleet.get("d0")
    path = device.directory / JOBS_FILE
    path.write_bytes(b"\x00garbage{")
    assert fleet.jobs.jobs(device) == []
    assert (device.directory / f"{JOBS_FILE}.corrupt").read_bytes() == b"\x00garbage{", "kept for a look"
    job = fleet.jobs.start(device, JobSpec(epochs=1, batch_size=25))
    assert finished(fleet.jobs, device, job).state == "succeeded"
    assert [r["id"] for r in orjson.loads(path.read_bytes())] == [job.id]

    for garbage in (b"not json", b'{"a": 1}', b'[{"id": "x", "nope": 1}]', b"[1, 2]"):
        path.write_bytes(garbage)
        fleet.reset(device)
        fleet.restart(device)
        assert fleet.jobs.jobs(device) == [], garbage
    path.write_bytes(b"garbage")
    fleet.jobs.start(device, LONG)
    fleet.delete("d0")
    assert not device.directory.exists()
