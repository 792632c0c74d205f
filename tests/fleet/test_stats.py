"""The fleet's plain counters: exact under threads, histograms cumulative like Prometheus's."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from service.fleet.stats import Counter, Histogram


def test_histogram_buckets_are_cumulative_and_bounds_inclusive() -> None:
    histogram = Histogram([0.1, 1.0])
    for seconds in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(seconds)
    snapshot = histogram.snapshot()
    assert snapshot.cumulative_counts == (2, 4, 5)
    assert snapshot.count == 5 and snapshot.sum == pytest.approx(8.65)


def test_counts_are_exact_under_threads() -> None:
    counter, histogram = Counter(), Histogram([0.5])
    per_thread = 20_000

    def bump(_: int) -> None:
        for _ in range(per_thread):
            counter.inc()
            histogram.observe(1.0)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(bump, range(8)))
    assert counter.value == 8 * per_thread
    assert histogram.snapshot().cumulative_counts == (0, 8 * per_thread)


def test_bounds_must_increase() -> None:
    with pytest.raises(ValueError, match="increase"):
        Histogram([1.0, 0.5])
