"""The weighted mean against sums worked out by hand (the server optimizers' steps are tested with
their strategies, in tests/federated/strategies)."""

from __future__ import annotations

import gc
import math
import tracemalloc
import weakref

import numpy as np
import pytest

from service.errors import InvalidRequest, InvalidTensor
from service.federated.aggregation import WeightedMean
from service.federated.checkpoints import Weights


def update(kernel: list[float], bias: float, step: int) -> Weights:
    return {
        "kernel": np.array(kernel, np.float32),
        "bias": np.array([bias], np.float32),
        "step": np.array(step, np.int64),
    }


def test_weighted_mean_of_three_updates() -> None:
    mean = WeightedMean()
    mean.add(update([1.0, 2.0], 8.0, step=7), samples=1)
    mean.add(update([3.0, 6.0], 0.0, step=9), samples=2)
    mean.add(update([5.0, 10.0], 4.0, step=11), samples=5)
    result = mean.result()
    assert (mean.count, mean.samples) == (3, 8)
    # kernel: (1*1 + 2*3 + 5*5) / 8 = 4, (1*2 + 2*6 + 5*10) / 8 = 8; bias: (8 + 0 + 20) / 8 = 3.5
    np.testing.assert_array_equal(result["kernel"], [4.0, 8.0])
    np.testing.assert_array_equal(result["bias"], [3.5])
    assert result["step"] == 7  # not averaged: the first update's
    assert {name: value.dtype for name, value in result.items()} == {
        "bias": np.float32,
        "kernel": np.float32,
        "step": np.int64,
    }
    assert list(result) == ["bias", "kernel", "step"]


def test_the_mean_of_identical_updates_is_exactly_that_update() -> None:
    """float64 sums: float32 values times small counts are exact, so nothing is lost to rounding."""
    weights = {"w": np.random.default_rng(0).standard_normal(10_000).astype(np.float32)}
    mean = WeightedMean()
    for samples in (3, 7, 11, 13, 17, 19, 23):
        mean.add(weights, samples)
    np.testing.assert_array_equal(mean.result()["w"], weights["w"])


def test_the_mean_keeps_no_reference_to_the_updates() -> None:
    first = update([1.0, 2.0], 1.0, step=3)
    second = update([3.0, 4.0], 3.0, step=5)
    mean = WeightedMean()
    mean.add(first, samples=1)
    mean.add(second, samples=1)
    expected = mean.result()
    refs = [weakref.ref(array) for array in (*first.values(), *second.values())]
    for array in (*first.values(), *second.values()):
        array[...] = 100  # changing an update after it was added changes nothing
    for name, value in mean.result().items():
        np.testing.assert_array_equal(value, expected[name])
    del first, second, array
    gc.collect()
    assert [ref() for ref in refs] == [None] * len(refs)


def test_the_mean_takes_the_memory_of_one_model_however_many_updates() -> None:
    rng = np.random.default_rng(1)
    mean = WeightedMean()
    tracemalloc.start()
    try:
        sizes = []
        for i in range(40):
            mean.add({"w": rng.standard_normal(50_000).astype(np.float32)}, samples=i + 1)
            sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    # One float64 sum is 400 KB; forty float32 updates kept would be 8 MB.
    assert sizes[-1] < 1_000_000
    assert sizes[-1] - sizes[1] < 50_000


def test_an_update_that_is_refused_leaves_the_mean_as_it_was() -> None:
    mean = WeightedMean()
    mean.add(update([1.0, 2.0], 1.0, step=3), samples=2)
    with pytest.raises(InvalidTensor, match=r"tensor 'kernel' has shape \[3\], not \[2\]"):
        mean.add(update([1.0, 2.0, 3.0], 1.0, step=3), samples=1)
    with pytest.raises(InvalidTensor, match="tensor 'bias' is missing"):
        mean.add({"kernel": np.zeros(2, np.float32), "step": np.array(1)}, samples=1)
    with pytest.raises(InvalidTensor, match="'kernel' is float64, not float32"):
        mean.add({**update([1.0, 2.0], 1.0, step=3), "kernel": np.zeros(2)}, samples=1)
    with pytest.raises(InvalidTensor, match="'bias' has non-finite values"):
        mean.add(update([50.0, 50.0], math.nan, step=3), samples=1)
    for samples in (0, -1, True, 1.5):
        with pytest.raises(InvalidRequest, match="samples"):
            mean.add(update([50.0, 50.0], 50.0, step=3), samples=samples)  # type: ignore[arg-type]
    assert (mean.count, mean.samples) == (1, 2)
    np.testing.assert_array_equal(mean.result()["kernel"], [1.0, 2.0])


def test_there_is_no_mean_of_nothing() -> None:
    with pytest.raises(InvalidRequest, match="no update"):
        WeightedMean().result()
    with pytest.raises(InvalidTensor, match="no tensors"):
        WeightedMean().add({}, samples=1)
