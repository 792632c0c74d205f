"""FedTrimmedAvg: how many values are cut from each end, worked out by hand; its setting checked; and a
round with poisoned updates that drag FedAvg's mean far off and leave the trimmed mean near the honest one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.errors import InvalidRequest
from service.federated.strategies import make
from service.federated.strategies.base import StrategySettings
from service.federated.strategies.trimmed_mean import trimmed_mean
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


def column(values: list[float]) -> np.ndarray:
    return np.array(values, np.float64)[:, None]


@pytest.mark.parametrize(
    ("values", "beta", "expected"),
    [
        # n = 10, beta 0.2: int(2.0) = 2 cut from each end: the mean of 3..8.
        ([9.0, 1.0, 10.0, 3.0, 2.0, 8.0, 4.0, 7.0, 5.0, 6.0], 0.2, (3 + 4 + 5 + 6 + 7 + 8) / 6),
        # n = 4, beta 0.2: int(0.8) = 0 cut: the plain (unweighted) mean.
        ([1.0, 2.0, 3.0, 10.0], 0.2, 4.0),
        # n = 5, beta 0.2: int(1.0) = 1 cut from each end.
        ([100.0, -50.0, 1.0, 2.0, 3.0], 0.2, 2.0),
        # n = 14, beta 0.2: int(2.8) = 2 cut from each end (the fraction rounds down).
        ([*range(10), 1e6, 1e6, -1e6, -1e6], 0.2, 4.5),
        # n = 3, beta 0.49: int(1.47) = 1 from each end: the middle value.
        ([5.0, -7.0, 1.0], 0.49, 1.0),
        ([5.0, -7.0, 1.0], 0.0, -1 / 3),
    ],
)
def test_the_values_cut_from_each_end(values: list[float], beta: float, expected: float) -> None:
    assert trimmed_mean(column(values), beta)[0] == pytest.approx(expected, rel=1e-15)


def test_a_round_trims_each_coordinate_apart_and_ignores_samples() -> None:
    strategy = make("trimmed_mean", None, StrategySettings(trim_fraction=0.25))
    collected = strategy.collector(context())
    # n = 4, cut int(1.0) = 1 from each end of each coordinate: [mean(2, 3), mean(20, 30)].
    for i, w in enumerate(([1.0, 40.0], [2.0, 30.0], [3.0, 20.0], [4.0, 10.0])):
        collected.add(update(f"d{i}", {"w": np.array(w, np.float32)}, samples=1 if i else 1000))
    new, _ = strategy.combine({"w": np.zeros(2, np.float32)}, collected, {}, context())
    np.testing.assert_array_equal(new["w"], [2.5, 25.0])


@pytest.mark.parametrize("beta", [0.5, 0.7, -0.1, math.nan, math.inf, "0.2", True])
def test_a_trim_fraction_that_leaves_nothing_is_refused(beta: object) -> None:
    with pytest.raises(InvalidRequest, match=r"^trim_fraction must be a number in \[0, 0.5\)"):
        make("trimmed_mean", None, StrategySettings(trim_fraction=beta))  # type: ignore[arg-type]


@pytest.mark.parametrize("attack", ["scaled", "mixed"])
def test_poisoned_updates_drag_fedavg_off_but_not_the_trimmed_mean(attack: str) -> None:
    updates = attacked(honest_round(), attack)
    target = honest_mean(updates)
    assert distance(combined("fedavg", updates), target) > 1.0
    robust = combined("trimmed_mean", updates, StrategySettings(trim_fraction=0.2))
    assert distance(robust, target) < 0.01
    assert robust["step"] == 8 and distance(START, target) > 0.4
