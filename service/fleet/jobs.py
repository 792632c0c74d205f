"""Background training over a device's own samples, like a phone training while idle.

A job runs in a worker thread and calls the device's training signature batch by batch, taking the
device's lock per step, so HTTP calls on the same device interleave with it safely. A device runs
one job at a time. Job records live in the device's directory (``jobs.json``); a job that was
queued or running when the service stopped is marked ``interrupted`` when it starts again.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np

from service.errors import (
    DeviceBusy,
    FleetError,
    InvalidRequest,
    JobEnded,
    JobNotFound,
    NoSamples,
    SamplesMismatch,
)
from service.fleet.device import Device, scalar_loss, utc_now
from service.fleet.files import read_json, write_json

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
ACTIVE: tuple[JobState, ...] = ("queued", "running")
JOBS_FILE = "jobs.json"
KEEP_JOBS = 20
"""Job records kept per device, newest last."""


@dataclass(frozen=True)
class JobSpec:
    epochs: int = 1
    batch_size: int = 32
    save: bool = False
    """Save a checkpoint when the job succeeds."""
    shuffle: bool = True
    seed: int | None = None
    signature: str = "train"

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise InvalidRequest(
                f"epochs and batch_size must be at least 1 (got {self.epochs}, {self.batch_size})"
            )


@dataclass
class Job:
    id: str
    device: str
    spec: JobSpec
    state: JobState = "queued"
    steps_done: int = 0
    steps_total: int = 0
    epoch: int = 0
    loss: float | None = None
    epoch_losses: list[float] = field(default_factory=list)
    """Mean loss of each finished epoch."""
    created_at: str = field(default_factory=utc_now)
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    cancel_requested: bool = False

    def view(self) -> dict[str, object]:
        view = asdict(self)
        view.update(view.pop("spec"))
        view.pop("cancel_requested")
        return view

    @classmethod
    def from_view(cls, view: dict[str, object]) -> Job:
        spec_fields = set(JobSpec.__dataclass_fields__)
        spec = JobSpec(**{k: v for k, v in view.items() if k in spec_fields})  # type: ignore[arg-type]
        return cls(spec=spec, **{k: v for k, v in view.items() if k not in spec_fields})  # type: ignore[arg-type]


class JobRunner:
    """Runs jobs on a small thread pool. Jobs are kept per device object, so a device deleted and
    created again under the same ID starts with none; records go to the device's directory."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job")
        self._jobs: dict[Device, dict[str, Job]] = {}
        self._lock = threading.Lock()
        """Guards the job tables and every job's state."""
        self._closing = False

    # -- records -----------------------------------------------------------------------------

    def _device_jobs(self, device: Device) -> dict[str, Job]:
        """The device's jobs (under the lock), read from its directory the first time."""
        jobs = self._jobs.get(device)
        if jobs is None:
            jobs = {r["id"]: Job.from_view(r) for r in read_json(device.directory / JOBS_FILE, [])}
            for job in jobs.values():  # active when the last process stopped
                if job.state in ACTIVE:
                    job.state, job.finished_at = "interrupted", job.finished_at or utc_now()
            if not device.deleted:
                self._jobs[device] = jobs
        return jobs

    def _persist(self, device: Device) -> None:
        with self._lock:
            jobs = list(self._device_jobs(device).values())[-KEEP_JOBS:]
            if device in self._jobs:
                self._jobs[device] = {job.id: job for job in jobs}
            views = [job.view() for job in jobs]
        with device.lock:  # delete() takes it too: no write into a directory being removed
            if not device.deleted:
                write_json(device.directory / JOBS_FILE, views)

    def jobs(self, device: Device) -> list[Job]:
        with self._lock:
            return list(self._device_jobs(device).values())

    def job(self, device: Device, job_id: str) -> Job:
        with self._lock:
            job = self._device_jobs(device).get(job_id)
        if job is None:
            raise JobNotFound(f"device '{device.id}' has no job '{job_id}'")
        return job

    def counts_by_state(self) -> dict[str, int]:
        """Jobs known in memory by state (for metrics)."""
        with self._lock:
            counts: dict[str, int] = {}
            for jobs in self._jobs.values():
                for job in jobs.values():
                    counts[job.state] = counts.get(job.state, 0) + 1
            return counts

    # -- running -----------------------------------------------------------------------------

    def _check(self, device: Device, spec: JobSpec) -> tuple[JobSpec, int]:
        """Refuse now what could only fail later; returns the spec with its signature settled."""
        spec.check()
        if spec.signature is not None:
            device.callable_signature(spec.signature)
        stats = device.samples.stats()
        if stats.count == 0:
            raise NoSamples(f"device '{device.id}' has no samples to train on; POST some to /samples first")
        signature = spec.signature or stats.signature or "train"
        if signature != stats.signature:
            raise SamplesMismatch(
                f"the device's samples are inputs of signature '{stats.signature}', not '{signature}'"
            )
        device.callable_signature(signature)
        if spec.save:
            device.checkpoint_signature("save")
        return replace(spec, signature=signature), stats.count

    def start(self, device: Device, spec: JobSpec) -> Job:
        spec, count = self._check(device, spec)
        with self._lock:
            jobs = self._device_jobs(device)
            active = [job.id for job in jobs.values() if job.state in ACTIVE]
            if active:
                raise DeviceBusy(f"device '{device.id}' already runs job '{active[0]}'; one job at a time")
            job = Job(id=uuid.uuid4().hex[:12], device=device.id, spec=spec)
            job.steps_total = spec.epochs * math.ceil(count / spec.batch_size)
            jobs[job.id] = job
        self._persist(device)
        self._pool.submit(self._run, device, job)
        return job

    def cancel(self, device: Device, job_id: str) -> Job:
        job = self.job(device, job_id)
        with self._lock:
            if job.state not in ACTIVE:
                raise JobEnded(f"job '{job_id}' already ended ({job.state})")
            job.cancel_requested = True
            if job.state == "queued":  # never started: it ends now; the worker will skip it
                job.state, job.finished_at = "cancelled", utc_now()
        self._persist(device)
        return job

    def stop_active(self, device: Device, reason: str, timeout: float = 60.0) -> None:
        """Cancel the device's running job, if any, and wait until it has stopped (within a step)."""
        with self._lock:
            active = [job for job in self._device_jobs(device).values() if job.state in ACTIVE]
        for job in active:
            with self._lock:
                job.cancel_requested = True
                job.error = reason
                if job.state == "queued":
                    job.state, job.finished_at = "cancelled", utc_now()
            deadline = time.monotonic() + timeout
            while job.state in ACTIVE and time.monotonic() < deadline:
                time.sleep(0.005)
        if active:
            self._persist(device)

    def _run(self, device: Device, job: Job) -> None:
        with self._lock:
            if job.cancel_requested or job.state != "queued":
                return
            job.state, job.started_at = "running", utc_now()
        self._persist(device)
        state: JobState
        error = None
        try:
            self._train(device, job)
            if job.cancel_requested:
                state = "interrupted" if self._closing else "cancelled"
            else:
                if job.spec.save:
                    device.save()
                state = "succeeded"
        except FleetError as exc:
            state, error = "failed", exc.message
        except Exception as exc:  # a worker thread must record every failure, not lose it
            state, error = "failed", f"{type(exc).__name__}: {exc}"
        with self._lock:
            job.state, job.finished_at = state, utc_now()
            job.error = error or job.error
        self._persist(device)

    def _train(self, device: Device, job: Job) -> None:
        _, samples = device.samples.load()
        count = len(next(iter(samples.values())))
        rng = np.random.default_rng(job.spec.seed)
        size = job.spec.batch_size
        for epoch in range(job.spec.epochs):
            order = rng.permutation(count) if job.spec.shuffle else np.arange(count)
            losses = []
            for start in range(0, count, size):
                if job.cancel_requested:
                    return
                batch = {name: values[order[start : start + size]] for name, values in samples.items()}
                loss = scalar_loss(device.run(job.spec.signature, batch, source="job"))
                if loss is not None:
                    job.loss = loss
                    losses.append(loss)
                job.steps_done += 1
            job.epoch = epoch + 1
            if losses:
                job.epoch_losses.append(float(np.mean(losses)))

    def forget(self, device: Device) -> None:
        """Drop a deleted device's jobs (its running job, if any, stops before its next step)."""
        with self._lock:
            for job in self._jobs.pop(device, {}).values():
                job.cancel_requested = True

    def close(self) -> None:
        """Stop: interrupt every job and wait for the workers to notice (within one step)."""
        self._closing = True
        with self._lock:
            for jobs in self._jobs.values():
                for job in jobs.values():
                    job.cancel_requested = True
        self._pool.shutdown(wait=True, cancel_futures=True)
