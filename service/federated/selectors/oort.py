"""``oort``: utility-based selection in the manner of Oort (Lai et al., "Oort: Efficient Federated
Learning via Guided Participant Selection", OSDI 2021; read against SymbioticLab/Oort's ``oort/oort.py``).

Among the devices online at the round's start, a share ``epsilon_r = max(epsilon * epsilon_decay **
(r - 1), epsilon_min)`` of the round's ``k`` places goes to devices never heard from (exploration, in the
seeded order ``available`` walks); the rest, ``int(k * (1 - epsilon_r))``, to devices that trained before
(exploitation), scored by

    U_i = |B_i| * L_i                                  (statistical utility, from its last training)
    score_i = (U_i - U_min) / (U_max - U_min) + sqrt(0.1 * ln(r) / R_i)
    score_i *= (T / t_i) ** alpha    when t_i > T      (system utility)

with ``|B_i|`` its samples, ``L_i`` its mean training loss, ``R_i`` the round it last trained in (a
device not picked for long gets a bonus), ``t_i`` its simulated seconds and ``T`` the preferred duration
(``preferred_seconds``, or the 10th percentile of the durations heard). Utilities are clipped at their
98th percentile before the min-max scaling, as Oort's code does. The exploited are drawn without
replacement, with probability proportional to score, among the devices scoring at least ``cut_off``
times the score of the ``k * (1 - epsilon_r)``-th best.

Where we differ from Oort: ``L_i`` is the mean of the training's batch losses, not the root mean square
of its per-sample losses (which the participants do not report; the mean is a lower bound of it);
unexplored devices are drawn in the seeded order, not ranked by size and expected speed (their speed is
not known before they train); Oort's pacer (relaxing ``T`` when utility plateaus) and blacklist are left
out; when too few unexplored devices are online, the best-scoring of the rest fill the round. Devices
that dropped out or failed tell it nothing (as in Oort, only trained participants update their utility).

Memory: one entry per device that ever trained in the run (``arms``), so at most the smaller of the
run's devices and ``rounds x participants``; it lives as long as the run and is not persisted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from service.federated.selectors.base import Outcome, Pick, Selector, SelectorSettings, first_online
from service.federated.selectors.order import Profiles, SeededOrder

OORT_STREAM = 0x6F6F7274
"""Tags the generator of the exploitation draw: seeded by the run's seed and the round, apart from the
seeded order the exploration walks."""
PREFERRED_PERCENTILE = 10
"""Without ``preferred_seconds``, T is this percentile of the durations heard (Oort's default)."""
CLIP_QUANTILE = 0.98
"""Utilities above this quantile are clipped to it before scaling (Oort's ``clip_bound``)."""
SPREAD_FLOOR = 1e-4
"""The smallest utility spread scaled by (equal utilities scale to 0, not to a division by zero)."""
DRAW_FLOOR = 1e-12
"""Added to every score drawn from: a score of 0 still leaves the device a (tiny) chance."""


@dataclass(slots=True)
class Arm:
    """What the run heard of a device the last time it trained."""

    utility: float
    seconds: float
    last_round: int


class Oort(Selector):
    name = "oort"
    title = "Oort (utility: loss and speed)"
    reads = tuple(field.name for field in fields(SelectorSettings))

    def __init__(self, settings: SelectorSettings, seed: int) -> None:
        super().__init__(settings, seed)
        self.arms: dict[str, Arm] = {}
        """Devices that trained in the run, in the order first heard from."""

    def epsilon(self, number: int) -> float:
        """The share of round ``number``'s places left to exploration."""
        s = self.settings
        return max(s.epsilon * s.epsilon_decay ** (number - 1), s.epsilon_min)

    def preferred_seconds(self) -> float:
        """T: the setting, or the ``PREFERRED_PERCENTILE``-th percentile of the durations heard."""
        if self.settings.preferred_seconds is not None:
            return self.settings.preferred_seconds
        durations = sorted(arm.seconds for arm in self.arms.values())
        if not durations:
            return math.inf
        return durations[min(len(durations) * PREFERRED_PERCENTILE // 100, len(durations) - 1)]

    def scores(self, candidates: Sequence[str], number: int) -> dict[str, float]:
        """Each candidate's score in round ``number`` (every candidate has trained before)."""
        if not candidates:
            return {}
        utilities = sorted(self.arms[i].utility for i in candidates)
        clip = utilities[min(int(len(utilities) * CLIP_QUANTILE), len(utilities) - 1)]
        low = 0.999 * utilities[0]
        spread = max(clip - low, SPREAD_FLOOR)
        preferred = self.preferred_seconds()
        scores = {}
        for device_id in candidates:
            arm = self.arms[device_id]
            score = (min(arm.utility, clip) - low) / spread
            score += math.sqrt(0.1 * math.log(number) / arm.last_round)
            if arm.seconds > preferred:
                score *= (preferred / arm.seconds) ** self.settings.alpha
            scores[device_id] = score
        return scores

    def pick(
        self, devices: Sequence[str], profiles: Profiles, number: int, per_round: int, at: float
    ) -> Pick:
        picked, offline = self._choose(devices, profiles, number, per_round, at)
        if not picked:  # none online: the round starts when the first device comes online
            at = first_online(devices, profiles, number, at)
            picked, offline = self._choose(devices, profiles, number, per_round, at)
        return Pick(at, sorted(picked), offline)

    def _choose(
        self, devices: Sequence[str], profiles: Profiles, number: int, per_round: int, at: float
    ) -> tuple[list[str], int]:
        candidates = [i for i in self.arms if profiles.online(i, at)]
        offline = len(self.arms) - len(candidates)
        scores = self.scores(candidates, number)
        ranked = sorted(candidates, key=lambda i: (-scores[i], i))
        exploit = min(int(per_round * (1 - self.epsilon(number)) + 1e-9), len(ranked))
        rng = np.random.default_rng([self.seed, number, OORT_STREAM])
        picked = self._exploit(ranked, scores, exploit, rng)
        explored, skipped = self._explore(devices, profiles, number, per_round - len(picked), at)
        picked += explored
        if len(picked) < per_round:  # too few unexplored devices online: the best of the rest
            taken = set(picked)
            picked += [i for i in ranked if i not in taken][: per_round - len(picked)]
        return picked, offline + skipped

    def _exploit(
        self, ranked: list[str], scores: dict[str, float], wanted: int, rng: np.random.Generator
    ) -> list[str]:
        """``wanted`` of the ``ranked`` candidates, drawn by score among those past the cut-off."""
        if wanted <= 0:
            return []
        bar = self.settings.cut_off * scores[ranked[wanted - 1]]
        pool = [i for i in ranked if scores[i] >= bar]
        weights = np.array([scores[i] for i in pool]) + DRAW_FLOOR
        drawn = rng.choice(len(pool), size=wanted, replace=False, p=weights / weights.sum())
        return [pool[index] for index in drawn.tolist()]

    def _explore(
        self, devices: Sequence[str], profiles: Profiles, number: int, wanted: int, at: float
    ) -> tuple[list[str], int]:
        """The first ``wanted`` devices never heard from online at ``at``, in the round's seeded order,
        and how many such devices were met offline."""
        found: list[str] = []
        offline = 0
        if wanted <= 0:
            return found, offline
        for index in SeededOrder(len(devices), [self.seed, number], wanted):
            device_id = devices[index]
            if device_id in self.arms:
                continue
            if profiles.online(device_id, at):
                found.append(device_id)
                if len(found) == wanted:
                    break
            else:
                offline += 1
        return found, offline

    def feedback(self, number: int, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            if not outcome.trained:
                continue
            loss = outcome.mean_loss
            loss = abs(loss) if loss is not None and math.isfinite(loss) else 0.0
            self.arms[outcome.device] = Arm(outcome.samples * loss, outcome.seconds, number)
