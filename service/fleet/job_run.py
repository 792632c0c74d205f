"""An active job's place in its work, and its slices: the steps it takes in one turn on a worker.

A slice runs the job's steps for about ``slice_seconds`` (at least one step). Samples a job loaded stay
in memory for its next slice within a byte budget (``SampleCache``); a job whose samples were dropped
reads them again at its next turn, and its slices then last at least ``RELOAD_FACTOR`` times the read,
so the re-reading costs at most about a tenth of its time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from service.errors import LimitExceeded, NoSamples
from service.fleet.device import Device
from service.fleet.job_records import AssignedData, Job
from service.fleet.record import scalar_loss
from service.fleet.sample_cache import SampleCache
from service.profiles.availability import device_key

DROPOUT_STREAM = 0xD50
"""Tags the generator of a job's dropout, so that it draws apart from the job's shuffling."""
SLICE_SECONDS = 0.1
"""A job's turn on a worker; long enough that switching devices (maybe an activation) is cheap beside it."""
RELOAD_FACTOR = 10
"""A slice that had to read its samples lasts at least this many times the read."""


@dataclass(eq=False)
class JobRun:
    """An active job's place in its work: what a slice needs to go on where the last one stopped."""

    device: Device
    job: Job
    table: JobTable
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

    def load_samples(
        self, cache: SampleCache, assigned: AssignedData | None, slice_seconds: float, max_steps: int
    ) -> dict[str, np.ndarray]:
        """The job's samples: kept from its last slice in ``cache``, or read from the device's store
        (or from ``assigned``); a slice that had to read them lasts at least ``RELOAD_FACTOR`` times
        the read, and ``slice_seconds`` at least. ``max_steps``: a job's bound, checked again when
        the samples changed under it."""
        samples = cache.get(self)
        if samples is not None:
            return samples
        started = time.perf_counter()
        if self.job.spec.data == "assigned" and assigned is not None:
            samples = assigned.load(self.device)
        else:
            _, samples = self.device.samples.load()
        self.slice_seconds = max(slice_seconds, RELOAD_FACTOR * (time.perf_counter() - started))
        count = len(next(iter(samples.values()))) if samples else 0
        if count == 0:
            raise NoSamples(f"the samples of device '{self.device.id}' were cleared while the job ran")
        if self.order is None or count != self.count:
            self.plan(count)  # first slice, or the samples changed under the job: this epoch starts over
            if self.job.steps_total > max_steps:
                raise LimitExceeded(
                    f"the device's samples grew to {count:,} while the job ran: it would take "
                    f"{self.job.steps_total:,} training steps; one job may take {max_steps:,} "
                    "(FLEET_MAX_JOB_STEPS)"
                )
        cache.put(self, samples)
        return samples

    def take_slice(self, samples: dict[str, np.ndarray]) -> bool:
        """Run the job's next steps for about its slice's length; True when it has taken all of them.

        The cancel flag is read before every step: a stopped job takes no step after the one in hand.
        """
        job, spec = self.job, self.job.spec
        assert self.order is not None
        self.track_clock()
        until = time.monotonic() + self.slice_seconds
        while not job.cancel_requested:
            if self.drop_at is not None and job.steps_done >= self.drop_at:
                raise DroppedOut(
                    f"device '{self.device.id}' dropped out after {job.steps_done} of {job.steps_total} "
                    "steps (its profile's dropout probability)"
                )
            chosen = self.order[self.position : self.position + spec.batch_size]
            batch = {name: values[chosen] for name, values in samples.items()}
            loss = scalar_loss(self.device.run(spec.signature, batch, source="job"))
            if loss is not None:
                job.loss = loss
                self.loss_sum += loss
                self.loss_count += 1
            job.steps_done += 1
            self.track_clock()
            self.position += spec.batch_size
            if self.position >= self.count:  # the epoch is over
                job.epoch += 1
                if self.loss_count:
                    job.epoch_losses.append(self.loss_sum / self.loss_count)
                if job.epoch >= spec.epochs:
                    return True
                self.position, self.loss_sum, self.loss_count = 0, 0.0, 0
                self.order = self.rng.permutation(self.count) if spec.shuffle else self.order
            if job.steps_done >= job.steps_total:  # the job's own step limit, within an epoch
                return True
            if time.monotonic() >= until:
                break
        return False


@dataclass(eq=False)
class JobTable:
    """A device's job records while it has an active job. ``version`` counts changes of state."""

    jobs: dict[str, Job]
    run: JobRun | None = None
    version: int = 0


class DroppedOut(Exception):
    """The phone dropped out of its job (a profile's dropout): the job ends ``dropped``."""
