"""What every selector walks: the run's devices in a seeded order drawn as it goes (``SeededOrder``),
and their profiles, each read once a run when first needed (``Profiles``)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from service.federated.participants import Participants
from service.profiles import DeviceProfile
from service.profiles.availability import next_online


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

    def online(self, device_id: str, at: float) -> bool:
        """Whether the device is online at simulated time ``at`` (an unprofiled one always is)."""
        return next_online(self.get(device_id), device_id, at) == at


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
