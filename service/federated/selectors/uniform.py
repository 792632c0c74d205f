"""``uniform``: a seeded uniform sample of the round's participants from all the run's devices, online or
not (the first ``per_round`` of the same seeded order ``available`` walks, so with every device online
both pick alike).

The round starts at its due time whatever the sample's availability. A picked device offline then is
planned like any participant whose online spell ends early: it drops out at 0 s, untrained, counted in
the round's ``dropped`` and also in its ``offline`` (for this selector: the offline devices it picked,
not devices skipped). A round whose every participant was offline makes no version, and simulated time
moves on by ``MIN_ROUND_SECONDS`` (or the deadline, if the run has one).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice

from service.federated.selectors.base import Pick, Selector
from service.federated.selectors.order import Profiles, SeededOrder


class Uniform(Selector):
    name = "uniform"
    title = "Uniform (seeded, availability ignored)"

    def pick(
        self, devices: Sequence[str], profiles: Profiles, number: int, per_round: int, at: float
    ) -> Pick:
        order = SeededOrder(len(devices), [self.seed, number], per_round)
        picked = [devices[index] for index in islice(order, per_round)]
        offline = sum(not profiles.online(device_id, at) for device_id in picked)
        return Pick(at, sorted(picked), offline)
