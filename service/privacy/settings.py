"""A run's differential-privacy settings (``DPSettings``), checked with the setting named.

Three modes, as the literature names them:

- ``central``: DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent Language
  Models"): each device clips its update to L2 norm ``clip``; the server adds Gaussian noise of standard
  deviation ``noise_multiplier * clip`` to the sum and divides by the expected cohort.
- ``local``: each device clips and adds that noise to its own update before it sends it; the server
  averages what arrives.
- ``distributed``: with secure aggregation, each device adds its share of the central noise
  (``noise_multiplier * clip / sqrt(n)``, ``n`` the fewest inputs a secure round sums: its
  ``min_inputs``, else its threshold; a round that sums fewer fails, so the sum holds at least the
  central noise); the server only sees the noisy sum.

``adaptive`` clipping follows Andrew et al. 2021 ("Differentially Private Learning with Adaptive
Clipping"): after each round ``clip *= exp(-clip_learning_rate * (b - target_quantile))``, ``b`` the
noisy fraction of updates that were not clipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from service.errors import InvalidRequest

Mode = Literal["central", "local", "distributed"]
MODES: tuple[str, ...] = ("central", "local", "distributed")
AccountantKind = Literal["rdp", "pld"]
ACCOUNTANTS: tuple[str, ...] = ("rdp", "pld")
OnBudget = Literal["refuse", "stop"]
ON_BUDGET: tuple[str, ...] = ("refuse", "stop")
MAX_NOISE_MULTIPLIER = 1e4
MAX_CLIP = 1e6
MAX_EPSILON = 1e6


@dataclass(frozen=True)
class DPSettings:
    mode: Mode = "central"
    noise_multiplier: float = 1.0
    """The Gaussian noise's standard deviation over the clip norm (``z``); 0: clipping only (no privacy:
    epsilon is infinite)."""
    clip: float = 1.0
    """The L2 norm each update is clipped to (``C``); with ``adaptive``, the first round's."""
    adaptive: bool = False
    target_quantile: float = 0.5
    """Adaptive clipping: the fraction of updates the clip norm aims to leave unclipped (``gamma``)."""
    clip_learning_rate: float = 0.2
    """Adaptive clipping: the geometric step of the clip norm (``eta_C``; Andrew et al.'s 0.2)."""
    clipped_count_stddev: float | None = None
    """Adaptive clipping: the noise on the count of unclipped updates (``sigma_b``); None: the expected
    cohort over 20, as Andrew et al. advise."""
    delta: float = 1e-5
    accountant: AccountantKind = "rdp"
    """Google's ``dp-accounting``: Renyi DP (``rdp``) or privacy loss distributions (``pld``, tighter)."""
    target_epsilon: float | None = None
    """The privacy budget at ``delta``: a run that would exceed it is refused at its start
    (``on_budget="refuse"``), or stops before the round that would (``"stop"``)."""
    on_budget: OnBudget = "refuse"

    def check(self) -> DPSettings:
        """``self``, if every setting is usable; else InvalidRequest naming the first that is not."""
        if self.mode not in MODES:
            raise InvalidRequest(f"privacy.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        _number("noise_multiplier", self.noise_multiplier, 0.0, MAX_NOISE_MULTIPLIER)
        _number("clip", self.clip, 0.0, MAX_CLIP, open_low=True)
        _number("target_quantile", self.target_quantile, 0.0, 1.0)
        _number("clip_learning_rate", self.clip_learning_rate, 0.0, 10.0)
        if self.clipped_count_stddev is not None:
            _number("clipped_count_stddev", self.clipped_count_stddev, 0.0, 1e9, open_low=True)
        _number("delta", self.delta, 0.0, 1.0, open_low=True, open_high=True)
        if self.accountant not in ACCOUNTANTS:
            raise InvalidRequest(
                f"privacy.accountant must be one of {', '.join(ACCOUNTANTS)}, got {self.accountant!r}"
            )
        if self.target_epsilon is not None:
            _number("target_epsilon", self.target_epsilon, 0.0, MAX_EPSILON, open_low=True)
        if self.on_budget not in ON_BUDGET:
            raise InvalidRequest(
                f"privacy.on_budget must be one of {', '.join(ON_BUDGET)}, got {self.on_budget!r}"
            )
        return self

    def count_stddev(self, expected_cohort: float) -> float:
        """``sigma_b``: the noise on the count of unclipped updates (adaptive clipping)."""
        if self.clipped_count_stddev is not None:
            return self.clipped_count_stddev
        return expected_cohort / 20.0

    def update_noise_multiplier(self, expected_cohort: float) -> float:
        """The noise multiplier on the updates' sum. With adaptive clipping the count of unclipped updates
        is released too; Andrew et al.'s Theorem 1 splits ``z`` so that both together are as private as
        one Gaussian of multiplier ``z``: ``z_delta = (z**-2 - (2 sigma_b)**-2) ** -0.5``. InvalidRequest
        when ``sigma_b`` is too small for that (``2 sigma_b <= z``)."""
        z = self.noise_multiplier
        if not self.adaptive or z == 0:
            return z
        sigma_b = self.count_stddev(expected_cohort)
        if 2 * sigma_b <= z:
            raise InvalidRequest(
                f"privacy.clipped_count_stddev ({sigma_b:g}) must be over half the noise multiplier ({z:g}) "
                "for adaptive clipping to fit in the budget (Andrew et al. 2021, Theorem 1)"
            )
        return (z**-2 - (2 * sigma_b) ** -2) ** -0.5


def _number(
    name: str,
    value: object,
    low: float,
    high: float,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    """InvalidRequest naming ``privacy.<name>`` unless ``value`` is a finite number in its interval."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        assert isinstance(value, int | float)
        ok = (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not ok:
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise InvalidRequest(f"privacy.{name} must be a number in {interval}, got {value!r}")
