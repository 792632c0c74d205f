"""Stale updates: a straggler's update added, discounted, to the mean of the round it arrives in
(``stragglers="stale"``): ``LateUpdates`` keeps them until then (``mean.staleness_weight`` discounts them)."""

from __future__ import annotations

from service.federated.participants import Update
from service.federated.selection import Plan
from service.federated.spec import RoundSpec

MAX_STALENESS = 4
"""Rounds late a stale update may be and still be added; a later one is dropped."""
MAX_PENDING_STALE = 32
"""Stale updates kept at once, waiting for the round they arrive in (a model's weights each): a straggler
whose update finds the list full has it dropped (it is counted as straggled, like any straggler). Which
round an update arrives in is known only once that round has ended, so waiting updates cannot be summed
ahead of it."""


class LateUpdates:
    """Stragglers' updates waiting for the round they arrive in (``stragglers="stale"``).

    A straggler's update arrives at its round's start plus its simulated duration, and is added to the
    first round whose simulated end is at or after that, ``k`` rounds after its own (rounds do not all
    last the deadline: one where nobody is late ends earlier, one may start later, waiting for a device
    to come online). It is dropped when ``k`` would be over ``MAX_STALENESS``, when the run ends first,
    or when ``MAX_PENDING_STALE`` updates already wait."""

    def __init__(self, spec: RoundSpec) -> None:
        self.keep = spec.deadline is not None and spec.stragglers == "stale"
        self._waiting: list[tuple[float, int, Update]] = []
        """(arrival time, origin round, update), in the order they were sent."""

    def offer(self, number: int, plan: Plan, update: Update, start: float) -> None:
        """Keep a straggler's update of round ``number`` (which started at simulated ``start``)."""
        if not self.keep or plan.fate != "straggler" or update.weights is None:
            return
        if len(self._waiting) >= MAX_PENDING_STALE:
            return
        self._waiting.append((start + plan.seconds, number, update))

    def arriving(self, number: int, end: float) -> list[tuple[Update, int]]:
        """The updates that arrive in round ``number``, which ends at simulated ``end`` (in the order they
        were sent), and how many rounds late; those that can no longer arrive in time are dropped."""
        found: list[tuple[Update, int]] = []
        waiting: list[tuple[float, int, Update]] = []
        for arrival, origin, update in self._waiting:
            if number - origin > MAX_STALENESS:
                continue
            if arrival <= end:
                found.append((update, number - origin))
            else:
                waiting.append((arrival, origin, update))
        self._waiting = [w for w in waiting if number + 1 - w[1] <= MAX_STALENESS]
        return found
