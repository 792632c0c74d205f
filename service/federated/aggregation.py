"""Server-side aggregation: the participants' weighted mean, then a server optimizer's step from it.

The optimizers are those of Reddi et al. 2021, "Adaptive Federated Optimization" (Algorithm 2), applied
to the pseudo-gradient ``delta = client_mean - global``:

- ``fedavg``: ``new = global + lr * delta``; with ``lr = 1`` that is the client mean, plain FedAvg
  (McMahan et al. 2017).
- ``fedavgm``: server momentum (Hsu et al. 2019): ``m = momentum * m + delta``; ``new = global + lr * m``.
- ``fedadam``: ``m = b1 * m + (1 - b1) * delta``; ``v = b2 * v + (1 - b2) * delta**2``;
  ``new = global + lr * m / (sqrt(v) + tau)``, without bias correction, as in the paper.

Only floating-point tensors are averaged and stepped; any other tensor (a step counter, an integer
table) is taken as it is: the first update's in the mean, the client mean's in a step. Arithmetic is
float64 and cast back to each tensor's dtype at the end; the same inputs in the same order give
bit-identical outputs. Pure numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal, get_args

import numpy as np

from service.errors import InvalidRequest, InvalidTensor, NotFinite
from service.federated.checkpoints import Weights, same_layout

OptimizerKind = Literal["fedavg", "fedavgm", "fedadam"]
OPTIMIZER_KINDS: tuple[str, ...] = get_args(OptimizerKind)
STATE_SLOTS: dict[str, tuple[str, ...]] = {"fedavg": (), "fedavgm": ("m",), "fedadam": ("m", "v")}
"""The optimizer state each kind keeps, per floating tensor, as ``<slot>/<tensor name>`` (float64)."""


def is_averaged(value: np.ndarray) -> bool:
    """Whether a tensor takes part in the arithmetic: real floating point (not ints, bools, complex)."""
    return bool(np.issubdtype(value.dtype, np.floating))


class WeightedMean:
    """The sample-weighted mean of participants' weights, added one at a time.

    Holds one float64 sum per floating tensor and a copy of the first update's other tensors, never
    the updates themselves: memory is about one model (in float64) however many are added. Every update
    must have the first one's names, shapes and dtypes, finite values and at least one sample; one that
    does not is refused (InvalidTensor, InvalidRequest) and leaves the mean as it was.
    """

    def __init__(self) -> None:
        self._sums: dict[str, np.ndarray] = {}
        self._kept: dict[str, np.ndarray] = {}
        self._layout: Weights = {}
        """The first update's names, shapes and dtypes, as one-element views broadcast to each shape."""
        self._count = 0
        self._samples = 0

    @property
    def count(self) -> int:
        """Updates added."""
        return self._count

    @property
    def samples(self) -> int:
        """Samples over all updates added: the mean's denominator."""
        return self._samples

    def add(self, weights: Weights, samples: int) -> None:
        if isinstance(samples, bool) or not isinstance(samples, int | np.integer) or samples < 1:
            raise InvalidRequest(f"samples must be a positive integer, got {samples!r}")
        values = {name: np.asarray(value) for name, value in weights.items()}
        if self._count:
            problem = same_layout(self._layout, values)
            if problem is not None:
                raise InvalidTensor(f"the update does not fit the others: {problem}")
        elif not values:
            raise InvalidTensor("the update has no tensors")
        for name, value in values.items():
            if is_averaged(value) and not np.isfinite(value).all():
                raise InvalidTensor(f"the update's tensor '{name}' has non-finite values")
        for name in sorted(values):
            value = values[name]
            if not is_averaged(value):
                if not self._count:
                    self._kept[name] = np.array(value, copy=True)
                continue
            contribution = np.multiply(value, float(samples), dtype=np.float64)
            if self._count:
                self._sums[name] += contribution
            else:
                self._sums[name] = contribution
        if not self._count:
            self._layout = {
                name: np.broadcast_to(np.zeros((), value.dtype), value.shape)
                for name, value in values.items()
            }
        self._count += 1
        self._samples += int(samples)

    def result(self) -> Weights:
        """The mean so far, by name, each tensor in its own dtype; InvalidRequest before any update."""
        if not self._count:
            raise InvalidRequest("no update has been added: there is no mean")
        mean: Weights = {}
        for name in sorted(self._layout):
            if name in self._sums:
                mean[name] = (self._sums[name] / float(self._samples)).astype(self._layout[name].dtype)
            else:
                mean[name] = self._kept[name].copy()
        return mean


MAX_SERVER_LEARNING_RATE = 100.0
"""Past this a server step is an amplifier, not an optimizer: one caller's run could blow the shared
model's weights up for every caller (the API refuses more; ``check`` refuses it from anywhere)."""
MIN_TAU, MAX_TAU = 1e-9, 1.0
"""FedAdam's adaptivity: below, ``m / (sqrt(v) + tau)`` divides by almost nothing."""


@dataclass(frozen=True)
class ServerOptimizer:
    """How the server turns the client mean into the next global weights; see the module's docstring.

    ``momentum`` is FedAvgM's; ``beta1``, ``beta2`` and ``tau`` are FedAdam's. ``defaults(kind)`` gives
    each kind's usual settings.
    """

    kind: OptimizerKind = "fedavg"
    learning_rate: float = 1.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    @classmethod
    def defaults(cls, kind: str) -> ServerOptimizer:
        """FedAvg and FedAvgM: learning rate 1, momentum 0.9; FedAdam: 0.01, betas 0.9 and 0.99, tau 1e-3."""
        if kind not in OPTIMIZER_KINDS:
            raise InvalidRequest(f"kind must be one of {list(OPTIMIZER_KINDS)}, got {kind!r}")
        return cls(kind=kind, learning_rate=0.01 if kind == "fedadam" else 1.0)  # type: ignore[arg-type]

    def check(self) -> ServerOptimizer:
        """``self``, if every setting is usable; else InvalidRequest naming the first that is not."""
        if self.kind not in OPTIMIZER_KINDS:
            raise InvalidRequest(f"kind must be one of {list(OPTIMIZER_KINDS)}, got {self.kind!r}")
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

    def step(self, global_weights: Weights, client_mean: Weights, state: Weights) -> tuple[Weights, Weights]:
        """The next global weights and the optimizer's next state, from this round's client mean.

        ``state`` is what the previous step returned (``m/<name>``, ``v/<name>``; empty for FedAvg),
        or empty for the first step: it starts at zero. Neither input is changed. InvalidTensor when the
        client mean does not fit the global weights; InvalidRequest when the state does not.
        """
        self.check()
        problem = same_layout(global_weights, client_mean)
        if problem is not None:
            raise InvalidTensor(f"the client mean does not fit the global weights: {problem}")
        averaged = sorted(name for name, value in global_weights.items() if is_averaged(np.asarray(value)))
        previous = self._previous_state(global_weights, averaged, state)
        new_weights: Weights = {}
        new_state: Weights = {}
        for name in sorted(global_weights):
            current = np.asarray(global_weights[name])
            if name not in averaged:
                new_weights[name] = np.array(client_mean[name], copy=True)
                continue
            start = current.astype(np.float64)
            delta = np.subtract(client_mean[name], current, dtype=np.float64)
            if self.kind == "fedavg":
                update = delta
            elif self.kind == "fedavgm":
                m = self.momentum * previous[f"m/{name}"] + delta
                update = m
                new_state[f"m/{name}"] = m
            else:
                m = self.beta1 * previous[f"m/{name}"] + (1.0 - self.beta1) * delta
                v = self.beta2 * previous[f"v/{name}"] + (1.0 - self.beta2) * np.square(delta)
                update = m / (np.sqrt(v) + self.tau)
                new_state[f"m/{name}"] = m
                new_state[f"v/{name}"] = v
            with np.errstate(over="ignore"):  # an overflow is refused just below, naming the tensor
                new_weights[name] = (start + self.learning_rate * update).astype(current.dtype)
            if not np.isfinite(new_weights[name]).all():
                raise NotFinite(
                    f"the next global weights are not finite ('{name}' holds NaN or infinity after "
                    f"{self.kind} with learning rate {self.learning_rate}): no version is made"
                )
        return new_weights, dict(sorted(new_state.items()))

    def _previous_state(self, global_weights: Weights, averaged: list[str], state: Weights) -> Weights:
        """``state`` as float64, checked against the weights; zeros when it is empty (the first step)."""
        expected = sorted(f"{slot}/{name}" for slot in STATE_SLOTS[self.kind] for name in averaged)
        if not state:
            return {key: np.zeros(np.shape(global_weights[key.split("/", 1)[1]])) for key in expected}
        if sorted(state) != expected:
            missing = sorted(set(expected) - set(state))
            extra = sorted(set(state) - set(expected))
            wrong = f"it has no '{missing[0]}'" if missing else f"'{extra[0]}' is not its"
            raise InvalidRequest(f"the {self.kind} state does not fit the weights: {wrong}")
        previous: Weights = {}
        for key in expected:
            value = np.asarray(state[key])
            shape = np.shape(global_weights[key.split("/", 1)[1]])
            if value.shape != shape or not is_averaged(value):
                raise InvalidRequest(
                    f"the {self.kind} state does not fit the weights: '{key}' is {value.dtype} "
                    f"{list(value.shape)}, not floating point {list(shape)}"
                )
            previous[key] = value.astype(np.float64)
        return previous
