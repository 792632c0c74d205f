"""What every federated strategy is: what a participant trains with and sends (``ClientTask``), how
the server collects the updates (``Collector``), and how it combines them into the next global weights
(``Strategy.combine``).

A strategy's server side is two parts, as in Reddi et al. 2021 ("Adaptive Federated Optimization"):

1. ``aggregate``: the participants' updates become one "client aggregate" (a model): the sample-weighted
   mean by default; a robust statistic (median, trimmed mean, Krum) or a normalized average (FedNova)
   in the strategies that say so;
2. ``rule``: the server optimizer's step on the pseudo-gradient ``delta = aggregate - global``,
   ``new = global + server_lr * rule(delta)``: ``delta`` itself by default (with ``server_lr = 1`` the
   aggregate, plain FedAvg); momentum or an adaptive step in FedAvgM, FedAdam, FedAdagrad, FedYogi.

Only floating-point tensors are aggregated and stepped; any other tensor (a step counter) is taken as the
aggregate has it. Arithmetic is float64 and cast back to each tensor's dtype at the end; the same inputs
in the same order give bit-identical outputs. A new strategy is one module with a subclass; see
``service.federated.strategies`` for the registry.
"""

from __future__ import annotations

import math
from abc import ABC
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import ClassVar, Protocol

import numpy as np

from service.errors import InvalidRequest, InvalidTensor, NotFinite
from service.federated.aggregation import is_averaged
from service.federated.checkpoints import Weights, same_layout
from service.federated.mean import RoundMean
from service.federated.participants import Update
from service.federated.task import ClientTask

MAX_SERVER_LEARNING_RATE = 100.0
"""Past this a server step is an amplifier, not an optimizer: one caller's run could blow the shared
model's weights up for every caller (the API refuses more; ``check`` refuses it from anywhere)."""
MIN_TAU, MAX_TAU = 1e-9, 1.0
"""An adaptive step's ``tau``: below, ``m / (sqrt(v) + tau)`` divides by almost nothing."""
MAX_BUFFERED_BYTES = 1 << 30
"""The default bound on the bytes of updates a robust strategy keeps in a round (FLEET_MAX_BUFFERED_BYTES)."""


@dataclass(frozen=True)
class ServerOptimizer:
    """The server optimizer's settings: its learning rate, FedAvgM's ``momentum``, and the adaptive
    steps' ``beta1``, ``beta2`` and ``tau``. ``kind`` names the strategy whose rule steps with them
    (each strategy's defaults: ``service.federated.strategies.server_defaults``)."""

    kind: str = "fedavg"
    learning_rate: float = 1.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def check(self) -> ServerOptimizer:
        """``self``, if every setting is usable; else InvalidRequest naming the first that is not."""
        for field in fields(self)[1:]:
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidRequest(f"{field.name} must be a finite number, got {value!r}")
        if not 0 < self.learning_rate <= MAX_SERVER_LEARNING_RATE:
            raise InvalidRequest(
                f"learning_rate must be in (0, {MAX_SERVER_LEARNING_RATE}], got {self.learning_rate}"
            )
        for name in ("momentum", "beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise InvalidRequest(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not MIN_TAU <= self.tau <= MAX_TAU:
            raise InvalidRequest(f"tau must be in [{MIN_TAU}, {MAX_TAU}], got {self.tau}")
        return self


@dataclass(frozen=True)
class StrategySettings:
    """The knobs of the strategies that have any; each strategy checks the ones it uses."""

    proximal_mu: float = 0.01
    """FedProx: the proximal term's weight (Flower's default; NIID-Bench sweeps 0.001 to 1)."""
    trim_fraction: float = 0.2
    """trimmed_mean: the fraction of updates cut from each end, per coordinate (Flower's ``beta``)."""
    byzantine: int = 0
    """krum: the faulty participants ``f`` it tolerates; scores sum the ``n - f - 2`` nearest (Flower: 0)."""
    krum_keep: int = 0
    """krum: 0 picks the one best-scored update (Krum); ``m`` > 0 averages the ``m`` best (multi-Krum)."""
    buffer_size: int = 10
    """fedbuff: the server steps every ``buffer_size`` updates (K; the paper's default 10)."""
    concurrency: int = 10
    """fedbuff: devices training at once (at most the run's devices)."""
    max_staleness: int = 100
    """fedbuff: an update more server steps old than this is dropped."""


@dataclass(frozen=True)
class RoundContext:
    """What a strategy may know of the run when it makes a task or combines a round."""

    number: int
    """The round, from 1."""
    population: int
    """The devices the run picks from (SCAFFOLD moves its control variate by participants / population)."""
    hyperparameters: Callable[[], dict[str, float]]
    """The model's local optimizer settings (``learning_rate``, ``momentum``, ``weight_decay``) from its
    ``hyperparameters`` signature; InvalidRequest when it has none (only strategies that need them ask)."""
    publish: Callable[[str, Weights], str]
    """Store tensors participants read (``publish(name, weights)``), giving the path they find them at."""
    max_buffered_bytes: int = MAX_BUFFERED_BYTES
    """The most bytes of updates a strategy that keeps them all (median, trimmed mean, Krum) may hold."""


class Collector(Protocol):
    """Where a round's updates go as they arrive, in participant order."""

    @property
    def count(self) -> int: ...

    def add(self, update: Update, rounds_late: int = 0) -> None:
        """Take a participant's update (``rounds_late`` > 0: a straggler's, from an earlier round)."""
        ...


class MeanCollector:
    """The sample-weighted mean of the updates' weights (stale ones discounted): one model in memory."""

    def __init__(self) -> None:
        self.mean = RoundMean()

    @property
    def count(self) -> int:
        return self.mean.count

    def add(self, update: Update, rounds_late: int = 0) -> None:
        if update.weights is None:
            raise InvalidTensor(f"participant '{update.device}' sent no weights")
        self.mean.add(update.weights, update.samples, rounds_late)


class Strategy(ABC):
    """A federated algorithm: FedAvg's client task, collector and aggregate unless a subclass says
    otherwise, and its server rule (``rule``) stepped with ``server``'s learning rate."""

    name: ClassVar[str]
    title: ClassVar[str]
    """How tables and the dashboard name it (``FedAvg``)."""
    signatures: ClassVar[tuple[str, ...]] = ("train",)
    """The model signatures the strategy needs (a run is refused at its start when one is missing)."""
    slots: ClassVar[tuple[str, ...]] = ()
    """The server optimizer's state per floating tensor, kept as ``<slot>/<tensor name>`` (float64)."""
    server_defaults: ClassVar[Mapping[str, float]] = MappingProxyType({"learning_rate": 1.0})
    reads: ClassVar[tuple[str, ...]] = ()
    """The ``StrategySettings`` fields it uses (a run's view shows only these)."""
    server_reads: ClassVar[tuple[str, ...]] = ("learning_rate",)
    """The ``ServerOptimizer`` fields its server step uses."""
    """The ``ServerOptimizer`` settings the strategy starts from; given ones replace them."""
    private: ClassVar[bool] = False
    """Whether it runs under differential privacy and secure aggregation (``RoundSpec.privacy``): only a
    strategy whose client aggregate is the plain mean of the updates, which the privacy layer then
    computes its own way (clipped, noised, summed securely) before the strategy's server step."""
    asynchronous: ClassVar[bool] = False
    """Whether the strategy runs its own asynchronous loop (``service.federated.asynchronous``) instead
    of synchronous rounds."""

    def __init__(self, server: ServerOptimizer, settings: StrategySettings) -> None:
        self.server = server
        self.settings = settings

    def check(self) -> None:
        """InvalidRequest naming the first setting the strategy cannot run with."""
        self.server.check()

    def task(self, global_weights: Weights, state: Weights, context: RoundContext) -> ClientTask:
        """What every participant of round ``context.number`` trains with."""
        return ClientTask()

    def collector(self, context: RoundContext) -> Collector:
        return MeanCollector()

    def aggregate(self, collected: Collector, global_weights: Weights, context: RoundContext) -> Weights:
        """The round's client aggregate (a model): the sample-weighted mean."""
        assert isinstance(collected, MeanCollector)
        return collected.mean.result()

    def rule(
        self, delta: np.ndarray, previous: dict[str, np.ndarray], number: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The server step's direction from one tensor's pseudo-gradient and its slots' previous values
        (zeros at the first step); returns the direction and the slots' new values."""
        return delta, {}

    def combine(
        self, global_weights: Weights, collected: Collector, state: Weights, context: RoundContext
    ) -> tuple[Weights, Weights]:
        """The next global weights and the server's next state from a round's updates."""
        return self.step(global_weights, self.aggregate(collected, global_weights, context), state, context)

    def step(
        self, global_weights: Weights, aggregate: Weights, state: Weights, context: RoundContext | int = 1
    ) -> tuple[Weights, Weights]:
        """``new = global + lr * rule(aggregate - global)`` per floating tensor; the slots' state.

        ``state`` is what the previous step returned, or empty for the first step: it starts at zero.
        Neither input is changed. InvalidTensor when the aggregate does not fit the global weights;
        InvalidRequest when the state does not; NotFinite when a new weight would not be finite.
        """
        self.check()
        number = context if isinstance(context, int) else context.number
        problem = same_layout(global_weights, aggregate)
        if problem is not None:
            raise InvalidTensor(f"the client aggregate does not fit the global weights: {problem}")
        averaged = sorted(name for name, value in global_weights.items() if is_averaged(np.asarray(value)))
        previous = self._previous_state(global_weights, averaged, state)
        new_weights: Weights = {}
        new_state: Weights = {}
        for name in sorted(global_weights):
            current = np.asarray(global_weights[name])
            if name not in averaged:
                new_weights[name] = np.array(aggregate[name], copy=True)
                continue
            delta = np.subtract(aggregate[name], current, dtype=np.float64)
            slots = {slot: previous[f"{slot}/{name}"] for slot in self.slots}
            direction, updated = self.rule(delta, slots, number)
            new_state.update({f"{slot}/{name}": value for slot, value in updated.items()})
            new_weights[name] = self.moved(name, current, direction)
        return new_weights, dict(sorted(new_state.items()))

    def moved(self, name: str, current: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """``current + server_lr * direction`` in ``current``'s dtype; NotFinite naming the tensor when
        that is not finite (no version is made of it)."""
        with np.errstate(over="ignore"):  # an overflow is refused just below, naming the tensor
            new = (current.astype(np.float64) + self.server.learning_rate * direction).astype(current.dtype)
        if not np.isfinite(new).all():
            raise NotFinite(
                f"the next global weights are not finite ('{name}' holds NaN or infinity after "
                f"{self.name} with learning rate {self.server.learning_rate}): no version is made"
            )
        return new

    def _previous_state(self, global_weights: Weights, averaged: list[str], state: Weights) -> Weights:
        """The slots' part of ``state`` as float64, checked against the weights; zeros when empty."""
        expected = sorted(f"{slot}/{name}" for slot in self.slots for name in averaged)
        if not state:
            return {key: np.zeros(np.shape(global_weights[key.split("/", 1)[1]])) for key in expected}
        mine = {key: value for key, value in state.items() if key.split("/", 1)[0] in self.slots}
        if sorted(mine) != expected or len(state) != len(mine) + self._other_state(state):
            missing = sorted(set(expected) - set(mine))
            extra = sorted(set(state) - set(expected))
            wrong = f"it has no '{missing[0]}'" if missing else f"'{extra[0]}' is not its"
            raise InvalidRequest(f"the {self.name} state does not fit the weights: {wrong}")
        previous: Weights = {}
        for key in expected:
            value = np.asarray(state[key])
            shape = np.shape(global_weights[key.split("/", 1)[1]])
            if value.shape != shape or not is_averaged(value):
                raise InvalidRequest(
                    f"the {self.name} state does not fit the weights: '{key}' is {value.dtype} "
                    f"{list(value.shape)}, not floating point {list(shape)}"
                )
            previous[key] = value.astype(np.float64)
        return previous

    def _other_state(self, state: Weights) -> int:
        """How many entries of ``state`` belong to the strategy beyond its optimizer slots (SCAFFOLD's
        control variate): they are not the optimizer's to check."""
        return 0
