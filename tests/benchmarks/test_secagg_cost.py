"""``benchmarks.secagg_cost`` on a small cohort: the protocol's sum is checked within its bound, and the
row says what a device spends."""

from __future__ import annotations

from benchmarks.secagg_cost import row
from service.privacy.secagg import SecAggSettings


def test_a_small_cohorts_row_recovers_its_dropouts_and_counts_its_bytes() -> None:
    cells = row(8, SecAggSettings(threshold=3, neighbors=4), 2)
    assert cells[:4] == ["8", "4", "3", "2"]
    assert cells[9].startswith("1,")  # about a kilobyte of keys and shares beyond the update
    error, bound = (float(x) for x in cells[-1].split(" / "))
    assert error <= bound
