"""What becomes of each picked participant (``Plan``), decided before it trains.

Who is picked is the run's selector's to say (``service.federated.selectors``; ``Profiles``,
``SeededOrder`` and the default selector's ``pick`` are re-exported here). A round starting at simulated
time T plans each participant at T: a picked profiled participant takes ``d``
simulated seconds (``local.participation_seconds``: download, train, upload, local evaluation); it drops
out, untrained, with its profile's ``dropout`` probability or when its online spell ends before T + d;
with a ``deadline``, one with d over it is a straggler. Unprofiled devices are always online, take no
simulated time and never drop out nor straggle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.errors import FleetError
from service.federated.local import participation_seconds
from service.federated.participants import Participants
from service.federated.selectors.available import pick
from service.federated.selectors.order import Profiles, SeededOrder
from service.federated.spec import RoundSpec
from service.profiles import DeviceProfile
from service.profiles.availability import device_key, online_until

__all__ = ["DROPOUT_STREAM", "Fate", "Plan", "Profiles", "SeededOrder", "pick", "plan_participant"]

DROPOUT_STREAM = 0x64726F70
"""Tags the generator of a participant's dropout draw: seeded by the run's seed, the round and the
device's key like its shuffling, but not the same stream."""


Fate = Literal["on_time", "straggler", "dropped", "failed"]


@dataclass(frozen=True)
class Plan:
    """A picked participant: its simulated duration, what becomes of it."""

    device: str
    seconds: float = 0.0
    fate: Fate = "on_time"
    error: str = ""
    gone: float | None = None
    """A dropout's simulated seconds into the round when it left (None: ``seconds``, the dropout draw's
    and a failure's: the server notices when the part should have ended)."""

    @property
    def trains(self) -> bool:
        return self.fate in ("on_time", "straggler")

    @property
    def ends(self) -> float:
        """Simulated seconds into the round when the server is done waiting for it."""
        return self.seconds if self.gone is None else self.gone


def plan_participant(
    participants: Participants,
    spec: RoundSpec,
    number: int,
    device_id: str,
    profile: DeviceProfile | None,
    at: float,
    weights_bytes: int,
    extra: Callable[[DeviceProfile], float] | None = None,
) -> Plan:
    """What becomes of a participant picked at simulated time ``at``, decided before it trains
    (``extra``: the simulated seconds a profile spends beyond its plain part: secure aggregation's)."""
    if profile is None:
        return Plan(device_id)
    try:
        train, test = participants.sample_counts(device_id)
    except FleetError as exc:
        return Plan(device_id, fate="failed", error=exc.message)
    seconds = participation_seconds(
        profile, spec.training, train, test if spec.local_accuracy else 0, weights_bytes
    )
    if extra is not None:
        seconds += extra(profile)
    dropout = profile.profile.dropout
    if dropout > 0:
        draw = np.random.default_rng([spec.seed, number, device_key(device_id), DROPOUT_STREAM]).random()
        if draw < dropout:
            return Plan(device_id, seconds, "dropped")
    until = online_until(profile, device_id, at)
    if until < at + seconds:  # gone when its spell ends (``until - at`` is at most ``seconds``)
        return Plan(device_id, seconds, "dropped", gone=max(0.0, until - at))
    if spec.deadline is not None and seconds > spec.deadline:
        return Plan(device_id, seconds, "straggler")
    return Plan(device_id, seconds)
