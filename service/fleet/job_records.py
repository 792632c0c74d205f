"""What a background job is: its spec (checked against its device before it starts), its record, and
a device's ``jobs.json`` of them (``service.fleet.jobs`` runs them).

A job that was queued or running when the service stopped is ``interrupted``, in the next process too.
A ``jobs.json`` that cannot be read is set aside as ``jobs.json.corrupt`` (and logged): the device
then has no job history, and listing, starting, reset and delete work as for a new device.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Literal, Protocol

import numpy as np

from service.errors import (
    CorruptState,
    InvalidRequest,
    LimitExceeded,
    NoAssignment,
    NoSamples,
    SamplesMismatch,
)
from service.fleet.device import Device
from service.storage import read_json, utc_now

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted", "dropped"]
"""``dropped``: the device's profile had it drop out of the job (``Profile.dropout``) midway."""
ACTIVE: tuple[JobState, ...] = ("queued", "running")
JOBS_FILE = "jobs.json"
CORRUPT_SUFFIX = ".corrupt"
KEEP_JOBS = 20
"""Job records kept per device, newest last."""


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


def read_records(device: Device) -> dict[str, Job]:
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


def check_start(
    device: Device, spec: JobSpec, assigned: AssignedData | None, max_steps: int
) -> tuple[JobSpec, int]:
    """Refuse now what could only fail later (``max_steps``: a job's bound); returns the spec with its
    signature and data settled, and the count of samples it is to train on."""
    spec.check()
    if spec.signature is not None:
        device.callable_signature(spec.signature)
    stats = device.samples.stats()
    data: JobData = spec.data or (
        "assigned" if stats.count == 0 and _assigned(assigned, device) else "samples"
    )
    if data == "assigned":
        count = _assigned(assigned, device)
        if count == 0:
            raise NoAssignment(
                f"device '{device.id}' has no data assigned; POST /v1/datasets/{{name}}/assign gives it some"
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
    if total > max_steps:
        raise LimitExceeded(
            f"the job would take {total:,} training steps ({spec.epochs:,} epochs of "
            f"{batches:,} batches of {spec.batch_size}); one job may take {max_steps:,} "
            "(FLEET_MAX_JOB_STEPS): ask for fewer epochs or a larger batch_size"
        )
    return replace(spec, signature=signature, data=data), count


def _assigned(assigned: AssignedData | None, device: Device) -> int:
    return assigned.count(device) if assigned is not None else 0
