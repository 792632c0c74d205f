"""``poisson``: Poisson sampling, as a differential-privacy accountant assumes it (``privacy.accounting``):
each of the run's N devices takes part in a round independently with probability ``q = participants / N``,
online or not, so a round's cohort varies about ``participants``.

Drawn as the same thing in O(cohort): the cohort's size from Binomial(N, q), then that many from the
seeded uniform order ``uniform`` walks. Offline devices picked are planned like ``uniform``'s: they drop
out at 0 s, untrained (counted in ``dropped`` and ``offline``): sampling never looks at availability, or
the accountant's assumption would not hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice

import numpy as np

from service.federated.selectors.base import Pick, Selector
from service.federated.selectors.order import Profiles, SeededOrder

COHORT_STREAM = 0x706F6973
"""Tags the generator of a round's cohort size, apart from the order it is taken from."""


class Poisson(Selector):
    name = "poisson"
    title = "Poisson sampling (seeded, availability ignored)"

    def pick(
        self, devices: Sequence[str], profiles: Profiles, number: int, per_round: int, at: float
    ) -> Pick:
        rate = per_round / len(devices)
        size = int(np.random.default_rng([self.seed, number, COHORT_STREAM]).binomial(len(devices), rate))
        order = SeededOrder(len(devices), [self.seed, number], max(1, size))
        picked = [devices[index] for index in islice(order, size)]
        offline = sum(not profiles.online(device_id, at) for device_id in picked)
        return Pick(at, sorted(picked), offline)
