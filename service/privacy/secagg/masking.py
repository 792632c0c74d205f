"""The device's step: quantize its vector and add its masks (``y = x + PRG(b) + sum of +-PRG(s_ij)``,
mod ``2**32``). It runs where the device's update is (a Ray worker too), so it takes only the small,
picklable ``MaskingKeys``, never the round."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.privacy.secagg.crypto import prg
from service.privacy.secagg.field import QuantizationField


@dataclass(frozen=True)
class MaskingKeys:
    """What one device needs to mask its input: its self-mask seed ``b_i`` and, per neighbour, the pair
    seed ``s_ij`` with its sign (+1 when the neighbour comes after the device in the sorted cohort)."""

    device: str
    self_seed: bytes
    pairwise: tuple[tuple[bytes, int], ...]
    field: tuple[float, int]

    def __repr__(self) -> str:  # secrets stay out of logs and tracebacks
        return f"MaskingKeys(device={self.device!r}, neighbours={len(self.pairwise)})"


def mask(vector: np.ndarray, keys: MaskingKeys, rng: np.random.Generator) -> np.ndarray:
    """Device side: float vector -> quantized (stochastic rounding with ``rng``) + masked uint32 vector."""
    masked = QuantizationField(*keys.field).quantize(vector, rng)
    masked += prg(keys.self_seed, masked.size)
    for seed, sign in keys.pairwise:
        if sign > 0:
            masked += prg(seed, masked.size)
        else:
            masked -= prg(seed, masked.size)
    return masked
