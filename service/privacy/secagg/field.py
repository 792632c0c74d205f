"""Quantization to the masking field and back, as Flower's SecAgg+ does it: clip each coordinate to
``[-c, c]``, map it to ``[0, Q - 1]`` with stochastic rounding (unbiased), sum mod ``2**32``, and read the
sum of ``n`` inputs back as ``sum_q * step - n * c`` with ``step = 2c / (Q - 1)``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.errors import InvalidTensor


@dataclass(frozen=True)
class QuantizationField:
    clipping_range: float
    quantization_range: int

    @property
    def step(self) -> float:
        """The value of one quantization level."""
        return 2.0 * self.clipping_range / (self.quantization_range - 1)

    def bound(self, n: int) -> float:
        """The most a coordinate of the dequantized sum of ``n`` clipped inputs can be off: each input's
        stochastic rounding moves it by less than one step."""
        return n * self.step

    def quantize(self, vector: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``vector`` clipped and stochastically rounded to levels in ``[0, Q - 1]`` (uint32)."""
        values = np.asarray(vector)
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.floating):
            raise InvalidTensor(
                f"secure aggregation masks a 1-d float vector, got {values.dtype} {values.shape}"
            )
        if not np.isfinite(values).all():
            raise InvalidTensor("secure aggregation cannot quantize NaN or infinity")
        c = self.clipping_range
        levels = (np.clip(values.astype(np.float64), -c, c) + c) / self.step
        low = np.floor(levels)
        up = rng.random(levels.shape) < (levels - low)
        quantized = np.minimum(low + up, self.quantization_range - 1)
        return quantized.astype(np.uint32)

    def dequantize(self, total: np.ndarray, n: int) -> np.ndarray:
        """The float64 sum of ``n`` inputs from the sum of their levels (exact mod ``2**32``: the settings
        refuse a ``Q`` at which ``n`` inputs could wrap)."""
        return total.astype(np.float64) * self.step - n * self.clipping_range
