"""Krum and multi-Krum: distances, the ``n - f - 2`` nearest and the choice worked out by hand on points
of a line; their settings checked; and a round with poisoned updates that drag FedAvg's mean far off
while Krum's choice stays near the honest mean."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import InvalidRequest
from service.federated.strategies import make
from service.federated.strategies.base import StrategySettings
from service.federated.strategies.buffered import BufferedCollector
from service.federated.strategies.krum import krum_choice, krum_scores, squared_distances
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

LINE = (0.0, 1.0, 3.0, 10.0)
"""Four updates, one weight each: squared distances 0-1: 1, 0-3: 9, 0-10: 100, 1-3: 4, 1-10: 81, 3-10: 49."""


def krum_round(settings: StrategySettings, samples: tuple[int, ...] = (1, 3, 1, 1)) -> np.ndarray:
    strategy = make("krum", None, settings)
    collected = strategy.collector(context())
    for i, (x, n) in enumerate(zip(LINE, samples, strict=True)):
        collected.add(update(f"d{i}", {"w": np.array([x]), "step": np.array(i)}, samples=n))
    new, _ = strategy.combine({"w": np.zeros(1), "step": np.array(0)}, collected, {}, context())
    return np.array([new["w"][0], new["step"]])


def test_squared_distances_sum_over_every_floating_tensor() -> None:
    collected = BufferedCollector(1 << 20)
    collected.add(update("a", {"u": np.array([0.0], np.float32), "v": np.zeros(1), "n": np.array(5)}))
    collected.add(update("b", {"u": np.array([3.0], np.float32), "v": np.full(1, 4.0), "n": np.array(9)}))
    np.testing.assert_array_equal(squared_distances(collected), [[0.0, 25.0], [25.0, 0.0]])  # 3^2 + 4^2


def test_scores_sum_the_n_minus_f_minus_2_nearest() -> None:
    distances = np.square(np.subtract.outer(LINE, LINE))
    # f = 0: the 2 nearest others: 0: 1 + 9; 1: 1 + 4; 3: 4 + 9; 10: 49 + 81.
    np.testing.assert_array_equal(krum_scores(distances, 0), [10.0, 5.0, 13.0, 130.0])
    # f = 1: max(1, 4 - 1 - 2) = 1 nearest: 1, 1, 4, 49; f = 3: still 1 (never fewer).
    np.testing.assert_array_equal(krum_scores(distances, 1), [1.0, 1.0, 4.0, 49.0])
    np.testing.assert_array_equal(krum_scores(distances, 3), [1.0, 1.0, 4.0, 49.0])
    assert krum_choice(distances, 0, 0) == [1]
    assert krum_choice(distances, 1, 0) == [0]  # a tie goes to the earlier participant
    assert krum_choice(distances, 0, 2) == [0, 1]
    assert krum_choice(distances, 0, 9) == [0, 1, 2, 3]  # more kept than sent: all of them


def test_krum_takes_one_update_and_multi_krum_the_weighted_mean_of_the_best() -> None:
    np.testing.assert_array_equal(krum_round(StrategySettings()), [1.0, 1])  # update 1, its own step
    np.testing.assert_array_equal(krum_round(StrategySettings(byzantine=1)), [0.0, 0])
    # keep 2, f = 0: updates 0 and 1, 1 and 3 samples: (0 * 1 + 1 * 3) / 4.
    np.testing.assert_array_equal(krum_round(StrategySettings(krum_keep=2)), [0.75, 0])
    # keep 3: updates 0, 1, 2 (at 0, 1, 3; scores 10, 5, 13): (0 * 1 + 1 * 3 + 3 * 1) / 5; update 3's
    # 1000 samples do not make it chosen.
    kept3 = krum_round(StrategySettings(krum_keep=3), samples=(1, 3, 1, 1000))
    np.testing.assert_array_equal(kept3, [(0.0 + 3.0 + 3.0) / 5, 0])


@pytest.mark.parametrize(
    ("field", "value"), [("byzantine", -1), ("byzantine", 1.5), ("krum_keep", True), ("krum_keep", 10**7)]
)
def test_bad_settings_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidRequest, match=f"^{field} must be an integer"):
        make("krum", None, StrategySettings(**{field: value}))  # type: ignore[arg-type]


@pytest.mark.parametrize("attack", ["scaled", "mixed"])
@pytest.mark.parametrize("keep", [0, 5])
def test_poisoned_updates_drag_fedavg_off_but_not_krum(attack: str, keep: int) -> None:
    updates = attacked(honest_round(), attack)
    target = honest_mean(updates)
    assert distance(combined("fedavg", updates), target) > 1.0
    robust = combined("krum", updates, StrategySettings(byzantine=3, krum_keep=keep))
    assert distance(robust, target) < (0.03 if keep == 0 else 0.015)  # one honest update; five's mean
    assert robust["step"] == 8 and distance(START, target) > 0.4
