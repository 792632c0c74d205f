"""Clipping an update to an L2 norm and adding Gaussian noise (``clip``, ``gaussian``), and the clip norm
that follows a quantile of the updates' norms (``AdaptiveClip``, Andrew et al. 2021).

Every noise draw takes a generator the caller seeds from its own stream (``NOISE_STREAM``), kept apart
from the shuffling, dropout and selection streams: the same seed gives the same noise, and adding noise
does not move any other random draw of a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NOISE_STREAM = 0x6E6F6973
"""Tags every privacy noise generator: ``default_rng([seed, round, NOISE_STREAM])`` on the server,
``[seed, round, device key, NOISE_STREAM]`` on a device."""
MIN_CLIP, MAX_ADAPTIVE_CLIP = 1e-6, 1e6
"""Adaptive clipping keeps the norm within these (a geometric step may not drive it to 0 or overflow)."""


def clip(vector: np.ndarray, norm: float) -> tuple[np.ndarray, bool]:
    """``vector`` scaled down to L2 norm ``norm`` if it is longer (float64), and whether it was within
    (not clipped)."""
    length = float(np.sqrt(np.sum(np.square(vector, dtype=np.float64))))  # not np.linalg.norm: OpenBLAS's
    # careful dnrm2 takes 8 ms over the MLP's 100,000 weights here, this 0.06 ms
    if length <= norm:
        return np.asarray(vector, np.float64), True
    return np.multiply(vector, norm / length, dtype=np.float64), False


def gaussian(rng: np.random.Generator, stddev: float, size: int) -> np.ndarray:
    """``size`` draws of N(0, stddev**2) (zeros when ``stddev`` is 0, with no draw made)."""
    if stddev == 0:
        return np.zeros(size)
    return rng.normal(0.0, stddev, size)


@dataclass
class AdaptiveClip:
    """The clip norm of the next round: geometric steps towards the ``target_quantile`` of the norms.

    After each round the server has ``b``, the fraction of the expected cohort whose updates were within
    the clip, noised by ``count_stddev`` on the count (by the server in central DP, by the devices'
    shares in distributed DP), and sets ``clip *= exp(-learning_rate * (b - target_quantile))``: too
    many within, the norm shrinks; too many clipped, it grows."""

    clip: float
    target_quantile: float
    learning_rate: float
    count_stddev: float

    def move(self, unclipped_fraction: float) -> float:
        """The next clip norm, from the round's noisy unclipped fraction (kept within the bounds)."""
        moved = self.clip * math.exp(-self.learning_rate * (unclipped_fraction - self.target_quantile))
        self.clip = min(max(moved, MIN_CLIP), MAX_ADAPTIVE_CLIP)
        return self.clip
