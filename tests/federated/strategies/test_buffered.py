"""The robust strategies' collector: it keeps copies of every update up to FLEET_MAX_BUFFERED_BYTES and
refuses, naming the setting, what would go past it; a run too big for it is refused at its start."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.data.spec import PartitionSpec
from service.errors import InvalidRequest, InvalidTensor
from service.federated.federation import Federation
from service.federated.local import LocalTraining
from service.federated.participants import Update
from service.federated.spec import RoundSpec
from service.federated.strategies import make
from service.federated.strategies.buffered import BufferedCollector, check_buffer, coordinatewise
from service.fleet import Fleet
from service.model.build import BuildResult
from service.model.dataset import FashionMNIST
from tests.federated.conftest import DATASET, add_small_dataset
from tests.federated.strategies.conftest import MODEL
from tests.federated.strategies.poisoned import context, update


def weights(value: float, size: int = 100) -> dict[str, np.ndarray]:
    return {"w": np.full(size, value, np.float32), "step": np.array(3, np.int64)}


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "krum"])
def test_updates_past_the_bound_are_refused_naming_the_setting(name: str) -> None:
    one = 100 * 4 + 8  # 100 float32 and one int64
    collected = make(name).collector(context(limit=3 * one))
    assert isinstance(collected, BufferedCollector)
    for i in range(3):
        collected.add(update(f"d{i}", weights(float(i))))
    with pytest.raises(InvalidRequest, match=r"more than FLEET_MAX_BUFFERED_BYTES \(1224 bytes\)"):
        collected.add(update("d3", weights(3.0)))
    assert (collected.count, collected.nbytes) == (3, 3 * one)


def test_kept_updates_are_copies() -> None:
    collected = BufferedCollector(1 << 20)
    given = weights(1.0)
    collected.add(update("a", given))
    given["w"][:] = 100.0
    np.testing.assert_array_equal(coordinatewise(collected, lambda b: b.max(axis=0))["w"], np.ones(100))


def test_updates_that_do_not_fit_are_refused_and_leave_the_collector_as_it_was() -> None:
    collected = BufferedCollector(1 << 20)
    collected.add(update("a", weights(1.0)))
    with pytest.raises(InvalidTensor, match=r"'w' has shape \[3\], not \[100\]"):
        collected.add(update("b", weights(1.0, size=3)))
    with pytest.raises(InvalidTensor, match="'w' has non-finite values"):
        collected.add(update("b", weights(math.nan)))
    with pytest.raises(InvalidTensor, match="participant 'c' sent no weights"):
        collected.add(Update("c", 1, 1, None, None, None))
    for samples in (0, -1, True):
        with pytest.raises(InvalidRequest, match="samples must be a positive integer"):
            collected.add(update("d", weights(1.0), samples=samples))
    assert collected.count == 1
    with pytest.raises(InvalidRequest, match="nothing to aggregate"):
        coordinatewise(BufferedCollector(1), lambda b: b[0])


def test_a_run_that_would_not_fit_is_refused_at_its_start() -> None:
    limit = 1 << 30
    for name in ("median", "trimmed_mean", "krum"):
        check_buffer(make(name), 1000, limit // 1000, limit)  # exactly the bound: fine
        with pytest.raises(InvalidRequest, match=f"^{name} keeps every update .* FLEET_MAX_BUFFERED_BYTES"):
            check_buffer(make(name), 1001, limit // 1000, limit)
    check_buffer(make("fedavg"), 10**6, 10**6, limit)  # the mean keeps one model, whatever the count


def test_the_setting_reaches_a_federations_rounds(
    tmp_path: Path, fashion_mnist: FashionMNIST, tiny_build: BuildResult
) -> None:
    """``max_buffered_bytes`` given to a Federation bounds its rounds' collectors: with room for one
    model, the second participant's update is refused and counted as failed."""
    fleet = Fleet(tmp_path / "data")
    federation = Federation(fleet, max_buffered_bytes=len(tiny_build.model))
    try:
        fleet.models.add(MODEL, tiny_build.model)
        add_small_dataset(federation, fashion_mnist)
        ids = ["bound-0", "bound-1"]
        fleet.create_many(ids, model=MODEL)
        federation.assign(DATASET, ids, PartitionSpec("iid", 2, 20, 10, seed=1))
        spec = RoundSpec(
            MODEL, tuple(ids), training=LocalTraining(1, 20), aggregation="median", start_version=0
        )
        view = federation.rounds.wait(str(federation.rounds.start(spec)["id"]), 180)
        rounds: list[dict[str, Any]] = view["rounds"]  # type: ignore[assignment]
        (metrics,) = rounds
        assert (metrics["finished"], metrics["failed"]) == (1, 1), metrics
        assert "FLEET_MAX_BUFFERED_BYTES" in metrics["failures"][0]["error"]
    finally:
        federation.close()
        fleet.close()
