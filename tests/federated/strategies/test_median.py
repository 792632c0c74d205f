"""FedMedian: the coordinate-wise median worked out by hand, and a round with poisoned updates that drag
FedAvg's mean far off and leave the median near the honest mean."""

from __future__ import annotations

import numpy as np
import pytest

from service.federated.strategies import buffered, make
from tests.federated.strategies.poisoned import (
    START,
    attacked,
    combined,
    context,
    distance,
    honest_mean,
    honest_round,
    update,
)


def test_the_median_of_an_odd_and_an_even_number_of_updates() -> None:
    values = [[1.0, -2.0], [7.0, 0.0], [3.0, 5.0], [100.0, 1.0]]
    strategy_updates = [{"w": np.array(v, np.float32), "step": np.array(i)} for i, v in enumerate(values)]
    start = {"w": np.zeros(2, np.float32), "step": np.array(0)}
    median = make("median")
    for count, expected in ((3, [3.0, 0.0]), (4, [(3.0 + 7.0) / 2, (0.0 + 1.0) / 2])):
        # sorted: [1, 3, 7] -> 3; [-2, 0, 5] -> 0; even: the mean of the two middle values
        collected = median.collector(context())
        for i, weights in enumerate(strategy_updates[:count]):
            collected.add(update(f"d{i}", weights, samples=1000 if i == 3 else 1))  # samples ignored
        new, state = median.combine(start, collected, {}, context())
        np.testing.assert_array_equal(new["w"], expected)
        assert new["w"].dtype == np.float32 and state == {}
        assert new["step"] == 0  # not a floating tensor: the first update's


@pytest.mark.parametrize("block_bytes", [buffered.BLOCK_BYTES, 64])
@pytest.mark.parametrize("attack", ["scaled", "mixed"])
def test_poisoned_updates_drag_fedavg_off_but_not_the_median(
    attack: str, block_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 64 bytes a block the median is taken one coordinate at a time: the same result."""
    monkeypatch.setattr(buffered, "BLOCK_BYTES", block_bytes)
    updates = attacked(honest_round(), attack)
    target = honest_mean(updates)
    assert distance(combined("fedavg", updates), target) > 1.0
    robust = combined("median", updates)
    assert distance(robust, target) < 0.01
    assert robust["step"] == 8 and distance(START, target) > 0.4
