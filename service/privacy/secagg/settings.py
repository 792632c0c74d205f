"""A round's secure-aggregation settings (``SecAggSettings``), checked with the setting named."""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.errors import InvalidRequest

FIELD_BITS = 32
"""The masked inputs and their sum live in the integers mod ``2**32``."""


@dataclass(frozen=True)
class SecAggSettings:
    threshold: int
    """``t``: the shares needed to rebuild a device's secret (its self-mask seed or its mask key)."""
    neighbors: int | None = None
    """``k``: each device's neighbours in SecAgg+'s graph; None: every other member (SecAgg, Bonawitz
    2017)."""
    clipping_range: float = 8.0
    """Each coordinate is clipped to ``[-clipping_range, clipping_range]`` before quantization."""
    quantization_range: int = 1 << 22
    """The levels each coordinate is quantized to: ``[0, quantization_range - 1]``."""
    min_inputs: int | None = None
    """The fewest masked inputs a round sums, or it fails (None: ``threshold``). Distributed DP sizes each
    device's share of the noise for this many, so SecAgg+'s small neighbourhoods (a threshold at most
    ``neighbors``) need not mean a noisy sum."""

    @property
    def fewest(self) -> int:
        """The fewest masked inputs a round sums: ``min_inputs``, or ``threshold``."""
        return self.threshold if self.min_inputs is None else max(self.min_inputs, self.threshold)

    def check(self, cohort: int) -> None:
        """InvalidRequest naming the first setting that cannot serve a cohort of ``cohort``."""
        self.check_values(cohort)
        if self.threshold > cohort:
            raise InvalidRequest(
                f"secure_aggregation.threshold must be at most the cohort ({cohort} participants), "
                f"got {self.threshold}"
            )
        if self.min_inputs is not None and self.min_inputs > cohort:
            raise InvalidRequest(
                f"secure_aggregation.min_inputs must be at most the cohort ({cohort} participants), "
                f"got {self.min_inputs}"
            )
        if self.neighbors is not None and self.neighbors >= cohort:
            raise InvalidRequest(
                f"secure_aggregation.neighbors must be below the cohort ({cohort} participants), "
                f"got {self.neighbors}"
            )

    def check_values(self, summands: int) -> None:
        """InvalidRequest naming the first setting unusable whatever the cohort, or at which ``summands``
        inputs would wrap the sum; a round checks this over the devices that actually shared keys."""
        if not _is_int(self.threshold) or self.threshold < 2:
            raise InvalidRequest(f"secure_aggregation.threshold must be at least 2, got {self.threshold!r}")
        if self.neighbors is not None and (not _is_int(self.neighbors) or self.neighbors < self.threshold):
            raise InvalidRequest(
                f"secure_aggregation.neighbors must be at least the threshold ({self.threshold}), "
                f"got {self.neighbors!r}"
            )
        if self.min_inputs is not None and (not _is_int(self.min_inputs) or self.min_inputs < self.threshold):
            raise InvalidRequest(
                f"secure_aggregation.min_inputs must be at least the threshold ({self.threshold}), "
                f"got {self.min_inputs!r}"
            )
        c = self.clipping_range
        if isinstance(c, bool) or not isinstance(c, int | float) or not math.isfinite(c) or c <= 0:
            raise InvalidRequest(
                f"secure_aggregation.clipping_range must be a finite number above 0, got {c!r}"
            )
        q = self.quantization_range
        if not _is_int(q) or q < 2:
            raise InvalidRequest(f"secure_aggregation.quantization_range must be at least 2, got {q!r}")
        if summands * (q - 1) >= 2**FIELD_BITS:
            most = (2**FIELD_BITS - 1) // max(summands, 1) + 1
            raise InvalidRequest(
                f"secure_aggregation.quantization_range {q} would wrap the {FIELD_BITS}-bit sum of "
                f"{summands} inputs: at most {most} for that many"
            )

    def degree(self, cohort: int) -> int:
        """The ``k`` actually used over ``cohort`` members: every other one without ``neighbors`` (or when
        the cohort shrank below it); an odd ``k`` over an odd cohort is raised to ``k + 1`` (a circulant
        graph of odd degree needs an even order)."""
        full = max(cohort - 1, 0)
        if self.neighbors is None or self.neighbors >= full:
            return full
        k = self.neighbors
        return k + 1 if k % 2 == 1 and cohort % 2 == 1 else k


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
