"""Strategies whose aggregate needs every update of the round at once (a median, a trimmed mean, Krum's
distances): ``BufferedCollector`` keeps them in memory, up to a bound in bytes (FLEET_MAX_BUFFERED_BYTES),
and ``coordinatewise`` applies a statistic across them one block of coordinates at a time.

Stale updates (``rounds_late`` > 0) are kept like the others: the robust statistics ignore sample counts,
as Flower's do, so they are neither discounted nor weighted; only multi-Krum's final mean weighs samples
(discounted by ``staleness_weight``, as FedAvg's mean does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from service.errors import InvalidRequest, InvalidTensor
from service.federated.aggregation import checked_update, is_averaged
from service.federated.checkpoints import Weights
from service.federated.participants import Update
from service.federated.strategies.base import Collector, RoundContext, Strategy

SETTING = "FLEET_MAX_BUFFERED_BYTES"
BLOCK_BYTES = 32 << 20
"""The most bytes of float64 a statistic sees at once (all updates' share of one block of coordinates)."""


@dataclass(frozen=True)
class Buffered:
    """One update as kept: its tensors (copies, each in its own dtype), samples and lateness."""

    weights: Weights
    samples: int
    rounds_late: int


class BufferedCollector:
    """Every update of a round, in the order they came. Each must fit the first (names, shapes, dtypes),
    be finite and have at least one sample; one that does not, or would take the kept bytes past
    ``limit``, is refused (InvalidTensor, InvalidRequest) and leaves the collector as it was."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.updates: list[Buffered] = []
        self.nbytes = 0

    @property
    def count(self) -> int:
        return len(self.updates)

    def add(self, update: Update, rounds_late: int = 0) -> None:
        if update.weights is None:
            raise InvalidTensor(f"participant '{update.device}' sent no weights")
        samples = update.samples
        values = checked_update(update.weights, samples, self.updates[0].weights if self.updates else None)
        size = sum(value.nbytes for value in values.values())
        if self.nbytes + size > self.limit:
            raise InvalidRequest(
                f"the round's updates would take more than {SETTING} ({self.limit} bytes) in memory: "
                f"{self.count} kept, {self.nbytes} bytes, this one {size}"
            )
        kept = {name: np.array(value, copy=True) for name, value in sorted(values.items())}
        self.updates.append(Buffered(kept, int(samples), rounds_late))
        self.nbytes += size

    def blocks(self, name: str) -> Iterator[tuple[slice, np.ndarray]]:
        """Tensor ``name`` of every update, flattened, as (coordinates, float64 array [updates, block])."""
        size = int(np.asarray(self.updates[0].weights[name]).size)
        step = max(1, BLOCK_BYTES // (8 * self.count))
        for start in range(0, size, step):
            where = slice(start, min(start + step, size))
            rows = [np.asarray(u.weights[name]).reshape(-1)[where] for u in self.updates]
            yield where, np.stack(rows).astype(np.float64)


def buffered(collected: Collector) -> BufferedCollector:
    assert isinstance(collected, BufferedCollector)
    if not collected.count:
        raise InvalidRequest("no update has been added: there is nothing to aggregate")
    return collected


def coordinatewise(collected: Collector, statistic: Callable[[np.ndarray], np.ndarray]) -> Weights:
    """``statistic`` (an [updates, coordinates] array to [coordinates]) of every floating tensor,
    coordinate by coordinate, cast back to the tensor's dtype; other tensors as the first update has them."""
    kept = buffered(collected)
    first = kept.updates[0].weights
    result: Weights = {}
    for name in sorted(first):
        value = np.asarray(first[name])
        if not is_averaged(value):
            result[name] = value.copy()
            continue
        flat = np.empty(value.size, np.float64)
        for where, block in kept.blocks(name):
            flat[where] = statistic(block)
        result[name] = flat.reshape(value.shape).astype(value.dtype)
    return result


def check_buffer(strategy: Strategy, participants: int, update_bytes: int, limit: int) -> None:
    """InvalidRequest naming FLEET_MAX_BUFFERED_BYTES when a round of ``participants`` updates of
    ``update_bytes`` each would not fit the bound of a strategy that keeps them all."""
    if isinstance(strategy, BufferedStrategy) and participants * update_bytes > limit:
        raise InvalidRequest(
            f"{strategy.name} keeps every update of a round in memory: {participants} participants x "
            f"{update_bytes} bytes is more than {SETTING} ({limit} bytes); pick fewer participants per "
            "round or raise the setting"
        )


class BufferedStrategy(Strategy):
    """A strategy whose ``aggregate`` reads every update (``BufferedCollector``)."""

    def collector(self, context: RoundContext) -> Collector:
        return BufferedCollector(context.max_buffered_bytes)
