"""FedBuff (Nguyen et al., AISTATS 2022, "Federated Learning with Buffered Asynchronous Aggregation"):
devices train asynchronously, each from the global version it downloaded; the server adds each update as
it arrives to a buffer and steps once every ``buffer_size`` (K) updates. Its loop on the virtual clock is
``service.federated.asynchronous``; this module is what the server does with the updates.

An update's delta is taken against the version its device downloaded (``w_i - w_downloaded``, as FLSim's
``fed_buff_aggregation``), discounted by the staleness weight ``s(tau) = (1 + tau) ** -0.5`` (tau: server
steps since the download) and weighted by its samples. The buffer's delta is

    Delta = sum_i n_i * s(tau_i) * delta_i / sum_i n_i

the paper's Algorithm 1 (``Delta / K`` over ``s(tau_i) * delta_i``) with sample weights: with equal
samples it is the paper's. The staleness weight is not in the denominator, so a stale buffer moves the
model less (FLSim's weighted sum would leave the 1/K to the server learning rate instead). The step is
``new = global + server_lr * rule(Delta)``; with every tau 0 and K participants it is FedAvg's round.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from service.errors import InvalidRequest
from service.federated.aggregation import checked_update, is_averaged
from service.federated.checkpoints import Weights
from service.federated.mean import staleness_weight
from service.federated.strategies.base import Collector, RoundContext, Strategy

MAX_BUFFER_SIZE = 10_000
MAX_CONCURRENCY = 100_000
MAX_STALENESS_LIMIT = 10_000


class DeltaBuffer:
    """Up to K updates as deltas against their downloaded versions: one float64 sum per floating tensor
    (one model in memory, however large K is) and the first update's other tensors (a step counter)."""

    def __init__(self) -> None:
        self._sums: dict[str, np.ndarray] = {}
        self._kept: Weights = {}
        self._count = 0
        self._samples = 0
        self.staleness: list[int] = []
        """Each added update's staleness, in the order they came."""

    @property
    def count(self) -> int:
        return self._count

    @property
    def samples(self) -> int:
        return self._samples

    def add(self, weights: Weights, base: Weights, samples: int, staleness: int) -> None:
        """Add ``n * s(tau) * (weights - base)``; InvalidTensor when the update does not fit its base or
        is not finite, InvalidRequest without samples (the buffer is then as it was)."""
        checked_update(weights, samples, base, "the version it trained from")
        factor = samples * staleness_weight(staleness)
        for name in sorted(weights):
            value = np.asarray(weights[name])
            if not is_averaged(value):
                if not self._count:
                    self._kept[name] = np.array(value, copy=True)
                continue
            contribution = np.subtract(value, base[name], dtype=np.float64) * factor
            if name in self._sums:
                self._sums[name] += contribution
            else:
                self._sums[name] = contribution
        self._count += 1
        self._samples += int(samples)
        self.staleness.append(staleness)

    def delta(self) -> dict[str, np.ndarray]:
        """The buffer's delta per floating tensor (float64); InvalidRequest when empty."""
        if not self._count:
            raise InvalidRequest("the buffer holds no update")
        return {name: total / self._samples for name, total in self._sums.items()}

    def kept(self) -> Weights:
        return dict(self._kept)


class FedBuff(Strategy):
    name = "fedbuff"
    title = "FedBuff"
    reads = ("buffer_size", "concurrency", "max_staleness")
    asynchronous: ClassVar[bool] = True

    def check(self) -> None:
        super().check()
        settings = self.settings
        for name, low, high in (
            ("buffer_size", 1, MAX_BUFFER_SIZE),
            ("concurrency", 1, MAX_CONCURRENCY),
            ("max_staleness", 0, MAX_STALENESS_LIMIT),
        ):
            value = getattr(settings, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidRequest(f"{name} must be an integer between {low} and {high}, got {value!r}")

    def collector(self, context: RoundContext) -> Collector:
        raise InvalidRequest("fedbuff has no rounds: its updates go to a DeltaBuffer (buffer())")

    def buffer(self) -> DeltaBuffer:
        return DeltaBuffer()

    def combine(
        self,
        global_weights: Weights,
        collected: Collector | DeltaBuffer,
        state: Weights,
        context: RoundContext,
    ) -> tuple[Weights, Weights]:
        """The next global weights from a full buffer: ``global + lr * rule(Delta)`` per floating tensor
        (the first update's other tensors); NotFinite when a new weight would not be finite."""
        assert isinstance(collected, DeltaBuffer)
        self.check()
        deltas, kept = collected.delta(), collected.kept()
        new_weights: Weights = {}
        for name in sorted(global_weights):
            current = np.asarray(global_weights[name])
            if name not in deltas:
                new_weights[name] = np.array(kept.get(name, current), copy=True)
                continue
            direction, _ = self.rule(deltas[name], {}, context.number)
            new_weights[name] = self.moved(name, current, direction)
        return new_weights, {}
