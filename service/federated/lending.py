"""Interpreters lent to a round's participants: a device with no interpreter of its own trains on an
idle one of its model instead of making one.

A participant that adopts a model version replaces every weight of the interpreter it trains, so a
device that holds no interpreter needs none of its own for its part: it borrows one here
(``Device.adopt_weights(lent=...)``), trains, saves and gives it back (``Device.give_back``, which
spills what was not saved). A round then makes at most one interpreter per worker, and its participants
do not churn the residency cap.
"""

from __future__ import annotations

import threading

from service.runtime import CompiledModel, ModelInterpreter


class Lending:
    """Idle interpreters by model, at most ``keep`` of each (a round's workers)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._idle: dict[str, tuple[CompiledModel, list[ModelInterpreter]]] = {}
        self._lock = threading.Lock()

    def take(self, model: CompiledModel) -> ModelInterpreter:
        """An idle interpreter of ``model`` (the same object the fleet resolves), else a new one."""
        with self._lock:
            held = self._idle.get(model.name)
            if held is not None and held[0] is model and held[1]:
                return held[1].pop()
        return model.interpreter()

    def give(self, model: CompiledModel, interpreter: ModelInterpreter) -> None:
        """Keep ``interpreter`` for the next participant, unless ``keep`` are idle already; a model
        replaced under its name drops the old one's."""
        if not interpreter.alive:
            return
        with self._lock:
            held = self._idle.get(model.name)
            if held is None or held[0] is not model:
                held = self._idle[model.name] = (model, [])
            if len(held[1]) < self.keep:
                held[1].append(interpreter)

    def clear(self) -> None:
        with self._lock:
            self._idle.clear()
