"""Background training over a device's own samples, like a phone training while idle.

Jobs run in slices on a few worker threads: a worker takes the job at the head of the run queue, runs
its steps for about ``slice_seconds`` (at least one step) and puts it back at the tail, so every
device with an active job gets its turn, and a short job started behind a 10,000-epoch one ends
promptly. A device runs one job at a time. Each step takes the device's lock, so HTTP calls on the
device interleave with its job safely. Cancelling (and reset, restart, delete, shutdown) stops a job
before its next step: a job between slices ends at once, a job in a step ends when the step returns.

Bounds: a job's steps are refused past ``max_steps`` before it starts. Job tables are in memory only
while their device has an active job; otherwise the records are read from the device's ``jobs.json``
when asked for. Samples a job loaded stay in memory for its next slice within a byte budget
(``sample_cache_bytes``, least recently used first out); a job whose samples were dropped reads them
again at its next turn, and its slices then last at least ``RELOAD_FACTOR`` times the read, so the
re-reading costs at most about a tenth of its time.

A job that was queued or running when the service stopped is ``interrupted``, in the next process too.
A ``jobs.json`` that cannot be read is set aside as ``jobs.json.corrupt`` (and logged): the device
then has no job history, and listing, starting, reset and delete work as for a new device.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from dataclasses import asdict, dataclass, field, replace
from typing import Literal, Protocol

import numpy as np

from service.errors import (
    CorruptState,
    DeviceBusy,
    DeviceNotFound,
    FleetError,
    InvalidRequest,
    JobEnded,
    JobNotFound,
    LimitExceeded,
    NoAssignment,
    NoSamples,
    SamplesMismatch,
)
from service.fleet.device import Device
from service.fleet.record import scalar_loss
from service.profiles.availability import device_key
from service.storage import read_json, utc_now, write_json

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted", "dropped"]
"""``dropped``: the device's profile had it drop out of the job (``Profile.dropout``) midway."""
DROPOUT_STREAM = 0xD50
"""Tags the generator of a job's dropout, so that it draws apart from the job's shuffling."""
ACTIVE: tuple[JobState, ...] = ("queued", "running")
JOBS_FILE = "jobs.json"
CORRUPT_SUFFIX = ".corrupt"
KEEP_JOBS = 20
"""Job records kept per device, newest last."""
MAX_JOB_STEPS = 1_000_000
SLICE_SECONDS = 0.1
"""A job's turn on a worker; long enough that switching devices (maybe an activation) is cheap beside it."""
SAMPLE_CACHE_BYTES = 128 * 1024 * 1024
RELOAD_FACTOR = 10
"""A slice that had to read its samples lasts at least this many times the read."""
STOP_TIMEOUT = 60.0


JobData = Literal["samples", "assigned"]


class AssignedData(Protocol):
    """A device's data assigned from a server-side dataset (``service.federated``)."""

    def count(self, device: Device) -> int:
        """Train samples assigned to the device (0: none)."""
        ...

    def load(self, device: Device) -> dict[str, np.ndarray]:
        """Its train samples, by input of the ``train`` signature."""
        ...


@dataclass(frozen=True)
class JobSpec:
    epochs: int = 1
    batch_size: int = 32
    save: bool = False
    """Save a checkpoint when the job succeeds."""
    shuffle: bool = True
    seed: int | None = None
    signature: str = "train"
    data: JobData | None = None
    """Train over the device's uploaded samples or its assigned data; None: the samples if it has
    any, else its assignment."""
    steps: int | None = None
    """Stop after this many training steps, even within an epoch (one step: one batch)."""

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or (self.steps is not None and self.steps < 1):
            raise InvalidRequest(
                f"epochs, batch_size and steps must be at least 1 (got {self.epochs}, {self.batch_size}, "
                f"{self.steps})"
            )

    def steps_total(self, count: int, epochs_left: int, steps_done: int = 0) -> int:
        """The steps done and those of ``epochs_left`` epochs over ``count`` samples, within ``steps``."""
        planned = steps_done + epochs_left * math.ceil(count / self.batch_size)
        return planned if self.steps is None else min(planned, self.steps)


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
    simulated_seconds: float | None = None
    """How far the device's simulated clock moved since the job started running (its profile's time
    for the steps taken, and for any calls between them); None for a device without a profile."""
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


@dataclass(eq=False)
class _Run:
    """An active job's place in its work: what a slice needs to go on where the last one stopped."""

    device: Device
    job: Job
    table: _Table
    rng: np.random.Generator
    count: int
    """Samples the plan is for; a different count when they are read again restarts the epoch."""
    order: np.ndarray | None = None
    """This epoch's order of the samples; None until the first slice."""
    position: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    """This epoch's losses so far (their sum and number: O(1) memory however long the epoch)."""
    executing: bool = False
    """A worker holds it (it is not in the queue)."""
    slice_seconds: float = SLICE_SECONDS
    clock_start: float | None = None
    """The device's clock when the job started running; None for an unprofiled device."""
    clock_read: bool = False
    drop_at: int | None = None
    """Steps after which the phone drops out of the job (its profile's dropout drew it); None: never."""

    def track_clock(self) -> None:
        """Note the device's clock when the job starts, and its advance since then after each step.

        A profile taken away midway resets the clock: the advance stays what it was."""
        device = self.device
        if not self.clock_read:
            record = device.read_record()
            self.clock_read = True
            if record.profile is not None:
                self.clock_start, self.job.simulated_seconds = record.clock, 0.0
                self.drop_at = self._dropout(record.profile.profile.dropout)
        elif self.clock_start is not None and device.profile is not None:
            self.job.simulated_seconds = device.clock - self.clock_start

    def _dropout(self, probability: float) -> int | None:
        """Whether the phone drops out of this job and after how many of its steps: drawn from the
        job's seed and the device's ID (reproducible with a seed), uniformly over the job's steps."""
        if probability <= 0:
            return None
        seed = self.job.spec.seed if self.job.spec.seed is not None else int(self.job.id, 16)
        rng = np.random.default_rng([seed, device_key(self.device.id), DROPOUT_STREAM])
        if rng.random() >= probability:
            return None
        return self.job.steps_done + int(rng.integers(0, max(1, self.job.steps_total - self.job.steps_done)))

    def plan(self, count: int) -> None:
        """Start the current epoch over ``count`` samples; the job's remaining steps follow from it."""
        job, spec = self.job, self.job.spec
        self.count, self.position, self.loss_sum, self.loss_count = count, 0, 0.0, 0
        self.order = self.rng.permutation(count) if spec.shuffle else np.arange(count)
        job.steps_total = spec.steps_total(count, spec.epochs - job.epoch, job.steps_done)


@dataclass(eq=False)
class _Table:
    """A device's job records while it has an active job. ``version`` counts changes of state."""

    jobs: dict[str, Job]
    run: _Run | None = None
    version: int = 0


class _DroppedOut(Exception):
    """The phone dropped out of its job (a profile's dropout): the job ends ``dropped``."""


class _SampleCache:
    """Samples of active jobs kept between slices, least recently used out past a byte budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._sets: OrderedDict[_Run, dict[str, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def _size(samples: dict[str, np.ndarray]) -> int:
        return sum(a.nbytes for a in samples.values())

    def get(self, run: _Run) -> dict[str, np.ndarray] | None:
        with self._lock:
            samples = self._sets.get(run)
            if samples is not None:
                self._sets.move_to_end(run)
            return samples

    def put(self, run: _Run, samples: dict[str, np.ndarray]) -> None:
        size = self._size(samples)
        with self._lock:
            self._discard(run)
            if size > self.budget:
                return
            self._sets[run] = samples
            self._bytes += size
            while self._bytes > self.budget:
                _, dropped = self._sets.popitem(last=False)
                self._bytes -= self._size(dropped)

    def discard(self, run: _Run) -> None:
        with self._lock:
            self._discard(run)

    def _discard(self, run: _Run) -> None:
        dropped = self._sets.pop(run, None)
        if dropped is not None:
            self._bytes -= self._size(dropped)

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes


class JobRunner:
    """Runs jobs in slices, round-robin, on ``workers`` threads (started with the first job).

    Jobs belong to a device object, so a device deleted and created again under the same ID starts
    with none. Lock order: a device's lock, then the runner's; never the other way round.
    """

    def __init__(
        self,
        workers: int,
        max_steps: int = MAX_JOB_STEPS,
        *,
        slice_seconds: float = SLICE_SECONDS,
        sample_cache_bytes: int = SAMPLE_CACHE_BYTES,
    ) -> None:
        if workers < 1:
            raise InvalidRequest(f"job workers must be at least 1 (got {workers})")
        self.workers = workers
        self.max_steps = max_steps
        self.slice_seconds = slice_seconds
        self._samples = _SampleCache(sample_cache_bytes)
        self._tables: dict[Device, _Table] = {}
        self._queue: deque[_Run] = deque()
        self._ended: Counter[str] = Counter()
        self._lock = threading.Lock()
        """Guards the tables, the queue and every active job's state."""
        self._changed = threading.Condition(self._lock)
        """Notified when a job joins the queue or ends."""
        self._threads: list[threading.Thread] = []
        self._closing = False
        self.assigned: AssignedData | None = None
        """Where jobs over assigned data read it (set by ``service.federated``)."""

    # -- records -----------------------------------------------------------------------------

    def _read_records(self, device: Device) -> dict[str, Job]:
        """The device's records from its ``jobs.json`` (under the device's lock); a file that cannot
        be read is set aside, so it blocks nothing and is kept for a look."""
        path = device.directory / JOBS_FILE
        try:
            records = read_json(path, [])
            if not isinstance(records, list):
                raise CorruptState(f"{path.parent.name}/{path.name} is not a list of job records")
            jobs = {str(r["id"]): Job.from_view(r) for r in records}
        except (CorruptState, TypeError, KeyError, ValueError) as exc:
            aside = path.with_name(path.name + CORRUPT_SUFFIX)
            log.warning("device %s: %s; set aside as %s", device.id, exc, aside.name)
            if not device.deleted:
                try:
                    os.replace(path, aside)
                except OSError as err:
                    log.warning("device %s: could not set %s aside: %s", device.id, path.name, err)
            return {}
        for job in jobs.values():  # active when the process that wrote them stopped
            if job.state in ACTIVE:
                job.state, job.finished_at = "interrupted", job.finished_at or utc_now()
        return jobs

    def _persist(self, device: Device) -> None:
        """Write the device's records; drop its table from memory when no job is active and none
        changed state while it was written."""
        with device.lock:  # delete() takes it too: no write into a directory being removed
            with self._lock:
                table = self._tables.get(device)
                if table is None:
                    return  # written and dropped already, or the device was deleted
                table.jobs = dict(list(table.jobs.items())[-KEEP_JOBS:])
                views = [job.view() for job in table.jobs.values()]
                version = table.version
            if not device.deleted:
                write_json(device.directory / JOBS_FILE, views)
            with self._lock:
                if table.run is None and table.version == version and self._tables.get(device) is table:
                    del self._tables[device]

    def jobs(self, device: Device) -> list[Job]:
        with self._lock:
            table = self._tables.get(device)
            if table is not None:
                return list(table.jobs.values())
        with device.lock:
            return list(self._read_records(device).values())

    def job(self, device: Device, job_id: str) -> Job:
        job = next((j for j in self.jobs(device) if j.id == job_id), None)
        if job is None:
            raise JobNotFound(f"device '{device.id}' has no job '{job_id}'")
        return job

    def active(self, device: Device) -> Job | None:
        """The device's queued or running job, if any (reads no file)."""
        with self._lock:
            table = self._tables.get(device)
            return table.run.job if table is not None and table.run is not None else None

    def active_count(self, prefix: str) -> int:
        """Queued and running jobs of devices whose IDs start with ``prefix`` (reads no file)."""
        with self._lock:
            return sum(
                1
                for device, table in self._tables.items()
                if table.run is not None and device.id.startswith(prefix)
            )

    def counts_by_state(self) -> dict[str, int]:
        """Active jobs now, and jobs ended since the runner started, by state (for metrics)."""
        with self._lock:
            counts = Counter(self._ended)
            for table in self._tables.values():
                if table.run is not None:
                    counts[table.run.job.state] += 1
            return dict(counts)

    @property
    def tables_in_memory(self) -> int:
        """Devices whose job records are in memory: those with an active job (or one just ending)."""
        return len(self._tables)

    @property
    def sample_bytes_in_memory(self) -> int:
        """Bytes of samples kept between slices (slices that run also hold the samples they read)."""
        return self._samples.bytes

    # -- starting and stopping ---------------------------------------------------------------

    def _check(self, device: Device, spec: JobSpec) -> tuple[JobSpec, int]:
        """Refuse now what could only fail later; returns the spec with its signature settled."""
        spec.check()
        if spec.signature is not None:
            device.callable_signature(spec.signature)
        stats = device.samples.stats()
        data: JobData = spec.data or (
            "assigned" if stats.count == 0 and self._assigned(device) else "samples"
        )
        if data == "assigned":
            count = self._assigned(device)
            if count == 0:
                raise NoAssignment(
                    f"device '{device.id}' has no data assigned; "
                    "POST /v1/datasets/{name}/assign gives it some"
                )
            signature = spec.signature or "train"
            if signature != "train":
                raise SamplesMismatch(f"assigned data are inputs of signature 'train', not '{signature}'")
        else:
            count = stats.count
            if count == 0:
                raise NoSamples(
                    f"device '{device.id}' has no samples to train on; POST some to /samples first, "
                    "or assign it data from a dataset"
                )
            signature = spec.signature or stats.signature or "train"
            if signature != stats.signature:
                raise SamplesMismatch(
                    f"the device's samples are inputs of signature '{stats.signature}', not '{signature}'"
                )
        device.callable_signature(signature)
        if spec.save:
            device.checkpoint_signature("save")
        batches, total = math.ceil(count / spec.batch_size), spec.steps_total(count, spec.epochs)
        if total > self.max_steps:
            raise LimitExceeded(
                f"the job would take {total:,} training steps ({spec.epochs:,} epochs of "
                f"{batches:,} batches of {spec.batch_size}); one job may take {self.max_steps:,} "
                "(FLEET_MAX_JOB_STEPS): ask for fewer epochs or a larger batch_size"
            )
        return replace(spec, signature=signature, data=data), count

    def _assigned(self, device: Device) -> int:
        return self.assigned.count(device) if self.assigned is not None else 0

    def start(self, device: Device, spec: JobSpec) -> Job:
        spec, count = self._check(device, spec)
        with device.lock:  # tables are made and dropped under it: what is read here is the latest
            with self._lock:
                in_memory = device in self._tables
            records = {} if in_memory else self._read_records(device)
            with self._lock:
                if self._closing:
                    raise FleetError("the service is stopping; no new jobs start")
                if device.deleted:
                    raise DeviceNotFound(f"device '{device.id}' was deleted")
                if device.participating:
                    raise DeviceBusy(f"device '{device.id}' trains in a federated round; start the job after")
                table = self._tables.setdefault(device, _Table(records))
                if table.run is not None:
                    raise DeviceBusy(
                        f"device '{device.id}' already runs job '{table.run.job.id}'; one job at a time"
                    )
                job = Job(id=uuid.uuid4().hex[:12], device=device.id, spec=spec)
                job.steps_total = spec.steps_total(count, spec.epochs)
                run = _Run(device, job, table, np.random.default_rng(spec.seed), count)
                table.jobs[job.id] = job
                table.run = run
                table.version += 1
        try:
            self._persist(device)
        except FleetError:
            with self._lock:  # no record, no job; the file still holds the other records
                table.jobs.pop(job.id, None)
                if table.run is run:
                    table.run = None
                if table.run is None and self._tables.get(device) is table:
                    del self._tables[device]
            raise
        with self._lock:
            if table.run is run:  # not cancelled meanwhile
                self._queue.append(run)
                self._changed.notify()
            self._start_workers()
        return job

    def _end(self, run: _Run, state: JobState, error: str | None = None) -> None:
        """Record the job's end (under the lock); its table may now leave memory once persisted."""
        job = run.job
        job.state, job.finished_at = state, utc_now()
        job.error = error or job.error
        if run.table.run is run:
            run.table.run = None
        run.table.version += 1
        if not run.executing:
            with contextlib.suppress(ValueError):  # not queued yet: start() queues it once persisted
                self._queue.remove(run)
        self._samples.discard(run)
        self._ended[state] += 1
        self._changed.notify_all()

    def _stop(self, run: _Run, state: JobState) -> bool:
        """Ask the job to stop (under the lock): it ends now if no worker holds it (True; the caller
        persists), else the worker ends it after its step and persists."""
        run.job.cancel_requested = True
        if run.executing:
            return False
        self._end(run, state)
        return True

    def cancel(self, device: Device, job_id: str) -> Job:
        job = self.job(device, job_id)
        with self._lock:
            table = self._tables.get(device)
            run = table.run if table is not None else None
            if run is None or run.job.id != job_id:
                raise JobEnded(f"job '{job_id}' already ended ({job.state})")
            ended = self._stop(run, "cancelled")
        if ended:
            self._persist(device)
        return run.job

    def stop_active(self, device: Device, reason: str, timeout: float = STOP_TIMEOUT) -> bool:
        """Cancel the device's active job, if any, and wait until it has stopped (within a step).

        Returns False if it was still in its step after ``timeout`` seconds. Reads no file.
        """
        with self._lock:
            table = self._tables.get(device)
            run = table.run if table is not None else None
            if run is None:
                return True
            run.job.error = reason
            ended = self._stop(run, "cancelled")
            stopped = ended or self._changed.wait_for(lambda: run.table.run is not run, timeout)
        if ended:
            self._persist(device)
        if not stopped:
            log.warning("job %s of device %s did not stop within %.0f s", run.job.id, device.id, timeout)
        return stopped

    def forget(self, device: Device) -> None:
        """Drop a deleted device's jobs (its running job, if any, stops before its next step)."""
        with self._lock:
            table = self._tables.pop(device, None)
            if table is not None and table.run is not None:
                self._stop(table.run, "cancelled")

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop: interrupt every job and wait for the workers to notice (within one step)."""
        with self._lock:
            self._closing = True
            devices = list(self._tables)
            for table in self._tables.values():
                if table.run is not None:
                    self._stop(table.run, "interrupted")
            self._changed.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for device in devices:
            try:
                self._persist(device)
            except FleetError as exc:
                log.error("could not persist the jobs of device %s: %s", device.id, exc.message)

    # -- the workers -------------------------------------------------------------------------

    def _start_workers(self) -> None:
        """Start the worker threads (under the lock) the first time a job starts."""
        while len(self._threads) < self.workers:
            thread = threading.Thread(target=self._work, name=f"job-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._changed.wait_for(lambda: self._queue or self._closing)
                if self._closing:
                    return  # close() ended every job no worker held
                run = self._queue.popleft()
                run.executing = True
                first = run.job.state == "queued"
                if first:
                    run.job.state, run.job.started_at = "running", utc_now()
                    run.table.version += 1
            if first:
                self._persist_logged(run.device)
            done, error, dropped = False, None, None
            try:
                done = self._slice(run)
                if done and run.job.spec.save and not run.job.cancel_requested:
                    run.device.save()
            except _DroppedOut as exc:
                dropped = str(exc)
            except FleetError as exc:
                error = exc.message
            except Exception as exc:  # a worker must record every failure, not die of it
                error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                run.executing = False
                job = run.job
                if job.cancel_requested:
                    self._end(run, "interrupted" if self._closing else "cancelled", error)
                elif error is not None:
                    self._end(run, "failed", error)
                elif dropped is not None:
                    self._end(run, "dropped", dropped)
                elif done:
                    self._end(run, "succeeded")
                else:  # its turn is over: to the back of the queue
                    self._queue.append(run)
                    self._changed.notify()
                    continue
            self._persist_logged(run.device)

    def _persist_logged(self, device: Device) -> None:
        try:
            self._persist(device)
        except FleetError as exc:  # the records stay in memory; the next persist tries again
            log.error("could not persist the jobs of device %s: %s", device.id, exc.message)

    def _load_samples(self, run: _Run) -> dict[str, np.ndarray]:
        """The job's samples: kept from its last slice, or read from the device's store."""
        samples = self._samples.get(run)
        if samples is not None:
            return samples
        started = time.perf_counter()
        if run.job.spec.data == "assigned" and self.assigned is not None:
            samples = self.assigned.load(run.device)
        else:
            _, samples = run.device.samples.load()
        run.slice_seconds = max(self.slice_seconds, RELOAD_FACTOR * (time.perf_counter() - started))
        count = len(next(iter(samples.values()))) if samples else 0
        if count == 0:
            raise NoSamples(f"the samples of device '{run.device.id}' were cleared while the job ran")
        if run.order is None or count != run.count:
            run.plan(count)  # first slice, or the samples changed under the job: this epoch starts over
            if run.job.steps_total > self.max_steps:
                raise LimitExceeded(
                    f"the device's samples grew to {count:,} while the job ran: it would take "
                    f"{run.job.steps_total:,} training steps; one job may take {self.max_steps:,} "
                    "(FLEET_MAX_JOB_STEPS)"
                )
        self._samples.put(run, samples)
        return samples

    def _slice(self, run: _Run) -> bool:
        """Run the job's next steps for about its slice's length; True when it has taken all of them.

        The cancel flag is read before every step: a stopped job takes no step after the one in hand.
        """
        samples = self._load_samples(run)
        job, spec = run.job, run.job.spec
        assert run.order is not None
        run.track_clock()
        until = time.monotonic() + run.slice_seconds
        while not job.cancel_requested:
            if run.drop_at is not None and job.steps_done >= run.drop_at:
                raise _DroppedOut(
                    f"device '{run.device.id}' dropped out after {job.steps_done} of {job.steps_total} steps "
                    "(its profile's dropout probability)"
                )
            chosen = run.order[run.position : run.position + spec.batch_size]
            batch = {name: values[chosen] for name, values in samples.items()}
            loss = scalar_loss(run.device.run(spec.signature, batch, source="job"))
            if loss is not None:
                job.loss = loss
                run.loss_sum += loss
                run.loss_count += 1
            job.steps_done += 1
            run.track_clock()
            run.position += spec.batch_size
            if run.position >= run.count:  # the epoch is over
                job.epoch += 1
                if run.loss_count:
                    job.epoch_losses.append(run.loss_sum / run.loss_count)
                if job.epoch >= spec.epochs:
                    return True
                run.position, run.loss_sum, run.loss_count = 0, 0.0, 0
                run.order = run.rng.permutation(run.count) if spec.shuffle else run.order
            if job.steps_done >= job.steps_total:  # the job's own step limit, within an epoch
                return True
            if time.monotonic() >= until:
                break
        return False
