"""SecAgg+'s communication graph (Bell et al. 2020): the cohort, in a seeded random order, on a ring;
each member's neighbours are the ``k/2`` nearest on each side (a Harary graph; for odd ``k`` over an even
cohort, also the member opposite). ``k = n - 1`` is the complete graph of the original SecAgg."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def neighbours(cohort: Sequence[str], degree: int, seed: bytes) -> dict[str, tuple[str, ...]]:
    """Each member's ``degree`` neighbours (sorted), a symmetric relation; ``seed`` fixes the order."""
    n = len(cohort)
    rng = np.random.default_rng(list(seed))
    ring = [cohort[i] for i in rng.permutation(n)]
    if degree >= n - 1:
        return {member: tuple(sorted(m for m in cohort if m != member)) for member in cohort}
    offsets = set(range(1, degree // 2 + 1))
    offsets |= {n - o for o in offsets}
    if degree % 2 == 1:
        if n % 2 == 1:
            raise ValueError(f"a circulant graph of odd degree {degree} needs an even order, not {n}")
        offsets.add(n // 2)
    return {ring[p]: tuple(sorted(ring[(p + o) % n] for o in offsets)) for p in range(n)}
