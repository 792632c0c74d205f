"""A secure round over a small cohort with real cryptography, and the plain sum to hold it to."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from service.privacy.secagg import SecAggSettings, SecureRound, mask

DIMENSION = 1_000


def cohort_of(n: int) -> list[str]:
    return [f"phone-{i:02d}" for i in range(n)]


def update(device: str, dimension: int = DIMENSION) -> np.ndarray:
    """A device's float32 update, some of it beyond the clipping range (clipped alike on both paths)."""
    rng = np.random.default_rng([int(device.rsplit("-", 1)[1]), 7])
    return rng.normal(0.0, 2.0, dimension).astype(np.float32)


def quantize_rng(device: str) -> np.random.Generator:
    return np.random.default_rng([int(device.rsplit("-", 1)[1]), 11])


def upload(round_: SecureRound, devices: Collection[str]) -> dict[str, np.ndarray]:
    """Each of ``devices`` masks its update and the server receives it; the masked vectors, by device."""
    sent = {}
    for device in devices:
        sent[device] = mask(update(device, round_.dimension), round_.keys(device), quantize_rng(device))
        round_.receive(device, sent[device])
    return sent


def plain_sum(settings: SecAggSettings, devices: Collection[str], dimension: int = DIMENSION) -> np.ndarray:
    c = settings.clipping_range
    return np.sum([np.clip(update(d, dimension).astype(np.float64), -c, c) for d in devices], axis=0)
