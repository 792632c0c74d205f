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
(``sample_cache_bytes``, least recently used first out).

Here: the runner (queue, workers, starting and stopping). A job's spec and records, and ``jobs.json``,
are ``service.fleet.job_records``; a running job's slices, ``service.fleet.job_run``; the samples kept
between slices, ``service.fleet.sample_cache``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import Counter, deque

import numpy as np

from service.errors import DeviceBusy, DeviceNotFound, FleetError, InvalidRequest, JobEnded, JobNotFound
from service.fleet.device import Device
from service.fleet.job_records import (
    JOBS_FILE,
    KEEP_JOBS,
    AssignedData,
    Job,
    JobSpec,
    JobState,
    check_start,
    read_records,
)
from service.fleet.job_run import SLICE_SECONDS, DroppedOut, JobRun, JobTable
from service.fleet.sample_cache import SAMPLE_CACHE_BYTES, SampleCache
from service.storage import utc_now, write_json

__all__ = ["JOBS_FILE", "AssignedData", "Job", "JobRunner", "JobSpec", "JobState"]

log = logging.getLogger(__name__)

MAX_JOB_STEPS = 1_000_000
STOP_TIMEOUT = 60.0


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
        self._samples = SampleCache(sample_cache_bytes)
        self._tables: dict[Device, JobTable] = {}
        self._queue: deque[JobRun] = deque()
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
            return list(read_records(device).values())

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

    def start(self, device: Device, spec: JobSpec) -> Job:
        spec, count = check_start(device, spec, self.assigned, self.max_steps)
        with device.lock:  # tables are made and dropped under it: what is read here is the latest
            with self._lock:
                in_memory = device in self._tables
            records = {} if in_memory else read_records(device)
            with self._lock:
                if self._closing:
                    raise FleetError("the service is stopping; no new jobs start")
                if device.deleted:
                    raise DeviceNotFound(f"device '{device.id}' was deleted")
                if device.participating:
                    raise DeviceBusy(f"device '{device.id}' trains in a federated round; start the job after")
                table = self._tables.setdefault(device, JobTable(records))
                if table.run is not None:
                    raise DeviceBusy(
                        f"device '{device.id}' already runs job '{table.run.job.id}'; one job at a time"
                    )
                job = Job(id=uuid.uuid4().hex[:12], device=device.id, spec=spec)
                job.steps_total = spec.steps_total(count, spec.epochs)
                run = JobRun(device, job, table, np.random.default_rng(spec.seed), count)
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

    def _end(self, run: JobRun, state: JobState, error: str | None = None) -> None:
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

    def _stop(self, run: JobRun, state: JobState) -> bool:
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
                samples = run.load_samples(self._samples, self.assigned, self.slice_seconds, self.max_steps)
                done = run.take_slice(samples)
                if done and run.job.spec.save and not run.job.cancel_requested:
                    run.device.save()
            except DroppedOut as exc:
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
