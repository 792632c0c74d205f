"""SCAFFOLD (Karimireddy et al. 2020), option II, as NIID-Bench runs it.

The server keeps a control variate ``c`` (zeros at first) and publishes it every round; each participant
corrects every local step by ``c - c_i`` through the model's ``train_scaffold`` signature, keeps its
own ``c_i`` under its directory and sends its change (``service.federated.client_side``). The server
takes the sample-weighted mean of the weights (server learning rate 1 by default: NIID-Bench's
``x = sum n_i / n * y_i``) and moves ``c`` by the sum of the changes over the run's devices,
``c += sum(delta c_i) / N``: the paper's ``|S| / N`` times their mean.
"""

from __future__ import annotations

import numpy as np

from service.errors import InvalidTensor
from service.federated.aggregation import is_averaged
from service.federated.checkpoints import Weights
from service.federated.participants import Update
from service.federated.strategies.base import ClientTask, Collector, MeanCollector, RoundContext, Strategy

CONTROL = "c"
"""The server's control variate in the run's state, as ``c/<tensor name>``."""


class ControlCollector(MeanCollector):
    """The weights' mean, and the sum of the participants' control changes (one model each)."""

    def __init__(self) -> None:
        super().__init__()
        self.changes: dict[str, np.ndarray] = {}

    def add(self, update: Update, rounds_late: int = 0) -> None:
        if update.control is None:
            raise InvalidTensor(f"participant '{update.device}' sent no SCAFFOLD control change")
        shapes = {name: np.shape(value) for name, value in update.control.items()}
        if self.changes and shapes != {name: value.shape for name, value in self.changes.items()}:
            raise InvalidTensor(f"participant '{update.device}''s control change does not fit the others'")
        super().add(update, rounds_late)
        for name, value in update.control.items():
            if name in self.changes:
                self.changes[name] += value.astype(np.float64)
            else:
                self.changes[name] = value.astype(np.float64)


class Scaffold(Strategy):
    name = "scaffold"
    title = "SCAFFOLD"
    signatures = ("train_scaffold", "hyperparameters")

    def task(self, global_weights: Weights, state: Weights, context: RoundContext) -> ClientTask:
        control = {
            name: np.asarray(state.get(f"{CONTROL}/{name}", np.zeros(np.shape(value))), np.float32)
            for name, value in global_weights.items()
            if is_averaged(np.asarray(value))
        }
        return ClientTask("train_scaffold", control=context.publish(f"control-{context.number}", control))

    def collector(self, context: RoundContext) -> Collector:
        return ControlCollector()

    def combine(
        self, global_weights: Weights, collected: Collector, state: Weights, context: RoundContext
    ) -> tuple[Weights, Weights]:
        assert isinstance(collected, ControlCollector)
        weights, new_state = self.step(global_weights, collected.mean.result(), state, context)
        for name, change in collected.changes.items():
            previous = np.asarray(state.get(f"{CONTROL}/{name}", np.zeros(change.shape)), np.float64)
            if previous.shape != change.shape:
                raise InvalidTensor(
                    f"the control change of '{name}' does not fit the server's control variate"
                )
            new_state[f"{CONTROL}/{name}"] = previous + change / context.population
        return weights, dict(sorted(new_state.items()))

    def _other_state(self, state: Weights) -> int:
        return sum(key.startswith(f"{CONTROL}/") for key in state)
