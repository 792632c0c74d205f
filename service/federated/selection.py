"""Picking a round's participants, and what becomes of each (``Plan``), decided before it trains.

A round starting at simulated time T picks ``participants`` devices: the first online at T in a
random order of the run's devices seeded by the run's seed and the round's number (a device's record is
read when the walk meets it: an unprofiled run reads only its participants'). The order is drawn as the
walk goes (``SeededOrder``): picking k devices of n costs O(k), however many the run holds. When none is
online, the round starts when the first comes online. A picked profiled participant takes ``d``
simulated seconds (``local.participation_seconds``: download, train, upload, local evaluation); it drops
out, untrained, with its profile's ``dropout`` probability or when its online spell ends before T + d;
with a ``deadline``, one with d over it is a straggler. Unprofiled devices are always online, take no
simulated time and never drop out nor straggle.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.errors import FleetError
from service.federated.local import participation_seconds
from service.federated.participants import Participants
from service.federated.spec import RoundSpec
from service.profiles import DeviceProfile
from service.profiles.availability import device_key, next_online, online_until

DROPOUT_STREAM = 0x64726F70
"""Tags the generator of a participant's dropout draw: seeded by the run's seed, the round and the
device's key like its shuffling, but not the same stream."""


class Profiles:
    """The profiles of a run's devices, each read once a run, when the run first needs it: picking walks
    the devices in a seeded order and stops at the ``participants``-th online one, so an unprofiled run
    reads only its participants' records."""

    def __init__(self, participants: Participants) -> None:
        self._participants = participants
        self._known: dict[str, DeviceProfile | None] = {}

    def get(self, device_id: str) -> DeviceProfile | None:
        if device_id not in self._known:
            self._known[device_id] = self._participants.profile(device_id)
        return self._known[device_id]


class SeededOrder:
    """The indices ``0..n-1`` in a uniformly random order seeded by ``seed``, drawn as they are asked for.

    A Fisher-Yates shuffle whose swaps are kept in a dict: the first k indices cost O(k) time and
    memory, not O(n) like ``permutation(n)``. Positions are drawn in batches (``first``, then doubling)
    of a fixed schedule, so the same seed gives the same order however far it is walked.
    """

    def __init__(self, n: int, seed: list[int], first: int) -> None:
        self.n = n
        self._seed = seed
        self._first = max(1, first)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng(self._seed)
        moved: dict[int, int] = {}
        """What a position holds when it is not its own index (positions already drawn are dropped)."""
        at, batch = 0, self._first
        while at < self.n:
            size = min(batch, self.n - at)
            targets = rng.integers(np.arange(at, at + size), self.n).tolist()  # j uniform in [i, n)
            for i, j in enumerate(targets, start=at):
                here = moved.pop(i, i)
                drawn = moved.get(j, j) if j != i else here
                if j != i:
                    moved[j] = here
                yield drawn
            at += size
            batch = min(2 * batch, 1 << 16)


def pick(
    devices: Sequence[str], profiles: Profiles, seed: int, number: int, per_round: int, at: float
) -> tuple[float, list[str], int]:
    """When round ``number`` starts, its participants (in ID order), and how many offline devices were
    skipped picking them: the first ``per_round`` devices online at ``at`` in a random order seeded by
    the run's seed and the round (unprofiled devices are always online). When no device is online at
    ``at``, the round starts when the first comes online (FleetError if none ever does)."""
    order = SeededOrder(len(devices), [seed, number], per_round)
    picked, offline = _walk(devices, order, profiles, per_round, at)
    if not picked:  # every profile was read: the walk met every device
        start = min(next_online(profiles.get(i), i, at) for i in devices)
        if start == math.inf:
            raise FleetError(
                f"round {number}: no device of the run is online at simulated time {at:g} s, and none "
                "comes online later (their profiles' availability)"
            )
        at = start
        picked, offline = _walk(devices, order, profiles, per_round, at)
    return at, sorted(picked), offline


def _walk(
    devices: Sequence[str], order: SeededOrder, profiles: Profiles, per_round: int, at: float
) -> tuple[list[str], int]:
    picked: list[str] = []
    offline = 0
    for index in order:
        device_id = devices[index]
        if next_online(profiles.get(device_id), device_id, at) == at:
            picked.append(device_id)
            if len(picked) == per_round:
                break
        else:
            offline += 1
    return picked, offline


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
) -> Plan:
    """What becomes of a participant picked at simulated time ``at``, decided before it trains."""
    if profile is None:
        return Plan(device_id)
    try:
        train, test = participants.sample_counts(device_id)
    except FleetError as exc:
        return Plan(device_id, fate="failed", error=exc.message)
    seconds = participation_seconds(
        profile, spec.training, train, test if spec.local_accuracy else 0, weights_bytes
    )
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
