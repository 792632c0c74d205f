"""Plain, thread-safe counts of what the fleet does, for whoever wants to export them. No HTTP.

The fleet only counts; the API layer reads these at scrape time and renders them as Prometheus metrics,
so nothing here knows about any metrics library. A histogram keeps bucket counts and a running sum,
never the observations themselves, so memory stays constant however long the service runs.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

CHECKPOINT_SECONDS_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
"""Upper bounds for checkpoint save/restore durations: a few ms on a local disk, seconds on a slow one."""


class Counter:
    """A monotonically increasing count, safe to bump from any thread."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    def inc(self, amount: int = 1) -> None:
        with self._lock:
            self._value += amount

    @property
    def value(self) -> int:
        return self._value


@dataclass(frozen=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]
    cumulative_counts: tuple[int, ...]
    """Observations <= each bound, then the total (the +Inf bucket): one longer than ``bounds``."""
    sum: float

    @property
    def count(self) -> int:
        return self.cumulative_counts[-1]


class Histogram:
    """Bucket counts and a sum of observations, safe to feed from any thread."""

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"histogram bounds must increase strictly: {bounds}")
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)  # a value equal to a bound falls in that bucket
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for n in counts:
            running += n
            cumulative.append(running)
        return HistogramSnapshot(self.bounds, tuple(cumulative), total)


@dataclass
class FleetStats:
    """Counts since the fleet opened. Residency keeps its own (``Residency.stats()``)."""

    train_steps: Counter = field(default_factory=Counter)
    checkpoint_seconds: dict[str, Histogram] = field(
        default_factory=lambda: {op: Histogram(CHECKPOINT_SECONDS_BUCKETS) for op in ("save", "restore")}
    )
    """Durations of the model's ``save`` and ``restore`` signatures: checkpoints, spills and activations."""

    def observe_checkpoint(self, operation: str, seconds: float) -> None:
        self.checkpoint_seconds[operation].observe(seconds)
