"""The simulated clock: its arithmetic by hand, and what real devices and jobs add to it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.fleet import Fleet
from service.fleet.device import Device
from service.fleet.jobs import Job, JobRunner, JobSpec
from service.profiles import DeviceProfile, parse_profile
from service.profiles.profile import REFERENCE_INFER_MS, REFERENCE_TRAIN_MS
from tests.fleet.test_jobs import until

Batch = tuple[np.ndarray, np.ndarray]

TRAIN_MS, INFER_MS, SPEED = 2.0, 0.5, 4.0
"""A phone's times per sample and its own speed factor: 100 samples train in 0.05 s, predict in 0.0125 s."""


def profiled(**extra: object) -> DeviceProfile:
    compute = {"train_ms_per_sample": TRAIN_MS, "infer_ms_per_sample": INFER_MS}
    return parse_profile({"class": "test", "compute": compute, "speed": SPEED, **extra})


def train(device: Device, batch: Batch, steps: int) -> None:
    for _ in range(steps):
        device.run("train", {"x": batch[0], "y": batch[1]})


# -- the arithmetic ----------------------------------------------------------------------------


def test_train_and_infer_seconds_are_samples_times_ms_over_speed() -> None:
    profile = profiled()
    assert profile.train_seconds(100) == pytest.approx(100 * 2.0 / 4.0 / 1000)  # 0.05 s
    assert profile.infer_seconds(100) == pytest.approx(100 * 0.5 / 4.0 / 1000)  # 0.0125 s
    assert profile.train_seconds(1) == pytest.approx(0.0005)
    assert profile.train_seconds(0) == 0.0


def test_download_and_upload_seconds_are_a_round_trip_plus_the_bytes_at_the_link_rate() -> None:
    network = {"downlink_mbps": 8.0, "uplink_mbps": 2.0, "rtt_ms": 50.0}
    profile = parse_profile({"network": network})
    # 1 MB down at 8 Mbit/s: 1 s, plus 50 ms; 0.5 MB up at 2 Mbit/s: 2 s, plus 50 ms.
    assert profile.download_seconds(1_000_000) == pytest.approx(1.05)
    assert profile.upload_seconds(500_000) == pytest.approx(2.05)
    assert profile.download_seconds(0) == pytest.approx(0.05)
    # The device's own speed is a compute factor: it does not speed up the network.
    faster = parse_profile({"network": network, "speed": 10})
    assert faster.download_seconds(1_000_000) == pytest.approx(1.05)


def test_compute_speed_divides_the_reference_times() -> None:
    for speed in (0.25, 1.0, 2.0, 3.0):
        compute = parse_profile({"compute": {"speed": speed}}).profile.compute
        assert compute.train_ms_per_sample == pytest.approx(REFERENCE_TRAIN_MS / speed)
        assert compute.infer_ms_per_sample == pytest.approx(REFERENCE_INFER_MS / speed)
    doubled = parse_profile({"compute": {"speed": 2.0}})
    assert doubled.train_seconds(1000) == pytest.approx(1000 * REFERENCE_TRAIN_MS / 2.0 / 1000)


# -- a real device -----------------------------------------------------------------------------


def test_device_clock_after_train_calls_is_steps_times_batch_times_train_time(
    tmp_path: Path, train_batch: Batch
) -> None:
    fleet = Fleet(tmp_path)
    device = fleet.create("phone")
    device.set_profile(profiled())
    steps, batch = 5, len(train_batch[0])
    train(device, train_batch, steps)
    assert device.clock == pytest.approx(steps * batch * TRAIN_MS / SPEED / 1000)
    fleet.close()


def test_device_clock_after_infer_calls_is_calls_times_batch_times_infer_time(
    tmp_path: Path, train_batch: Batch
) -> None:
    fleet = Fleet(tmp_path)
    device = fleet.create("phone")
    device.set_profile(profiled())
    calls, batch = 4, 30
    for _ in range(calls):
        device.run("infer", {"x": train_batch[0][:batch]})
    assert device.clock == pytest.approx(calls * batch * INFER_MS / SPEED / 1000)
    fleet.close()


def test_unprofiled_device_clock_stays_zero(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path)
    device = fleet.create("phone")
    train(device, train_batch, 3)
    device.run("infer", {"x": train_batch[0]})
    assert device.profile is None
    assert device.clock == 0.0
    fleet.close()


def test_clock_and_profile_survive_a_new_fleet_and_a_reset(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path)
    device = fleet.create("phone")
    device.set_profile(profiled())
    train(device, train_batch, 3)
    expected = 3 * len(train_batch[0]) * TRAIN_MS / SPEED / 1000
    fleet.close()

    reopened = Fleet(tmp_path)
    device = reopened.get("phone")
    device.read_record()
    assert device.profile == profiled()
    assert device.clock == pytest.approx(expected)
    train(device, train_batch, 1)  # the clock goes on from where it was
    expected += len(train_batch[0]) * TRAIN_MS / SPEED / 1000
    assert device.clock == pytest.approx(expected)

    reopened.reset(device)
    assert device.info().train_steps == 0
    assert device.profile == profiled()
    assert device.clock == pytest.approx(expected)  # a reset undoes the weights, not time spent
    reopened.close()
    again = Fleet(tmp_path)
    assert again.get("phone").read_record().profile == profiled()
    assert again.get("phone").clock == pytest.approx(expected)
    again.close()


# -- jobs --------------------------------------------------------------------------------------


def finished(runner: JobRunner, device: Device, job: Job, timeout: float = 60) -> Job:
    until(lambda: runner.job(device, job.id).state not in ("queued", "running"), timeout, "the job ends")
    return runner.job(device, job.id)


def test_job_reports_the_simulated_seconds_of_its_steps(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path / "data")
    device = fleet.create("phone")
    device.add_samples("train", {"x": train_batch[0][:50], "y": train_batch[1][:50]})
    device.set_profile(profiled())
    train(device, train_batch, 2)  # time spent before the job is not the job's
    before = device.clock
    # Two epochs of 50 samples in batches of 20, 20 and 10: 100 samples trained in all.
    job = fleet.jobs.start(device, JobSpec(epochs=2, batch_size=20, shuffle=False))
    done = finished(fleet.jobs, device, job)
    assert done.state == "succeeded" and done.steps_done == 6
    expected = 100 * TRAIN_MS / SPEED / 1000
    assert done.simulated_seconds == pytest.approx(expected)
    assert done.view()["simulated_seconds"] == pytest.approx(expected)
    assert device.clock == pytest.approx(before + expected)
    fleet.close()
    reopened = Fleet(tmp_path / "data")  # read back from jobs.json
    read = reopened.jobs.job(reopened.get("phone"), job.id)
    assert read.simulated_seconds == pytest.approx(expected)
    reopened.close()


def test_job_on_unprofiled_device_has_no_simulated_seconds(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path / "data")
    device = fleet.create("phone")
    device.add_samples("train", {"x": train_batch[0][:50], "y": train_batch[1][:50]})
    job = fleet.jobs.start(device, JobSpec(epochs=1, batch_size=25))
    done = finished(fleet.jobs, device, job)
    assert done.state == "succeeded"
    assert done.simulated_seconds is None
    assert done.view()["simulated_seconds"] is None
    fleet.close()
