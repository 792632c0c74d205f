"""A round's tally as its participants finish: the mean of their weights, its counts and metrics, and
how long it lasted in simulated time (``Tally``)."""

from __future__ import annotations

import numpy as np

from service.errors import FleetError, InvalidRequest
from service.federated.checkpoints import Weights, same_layout
from service.federated.participants import Update
from service.federated.runs import SHOWN_FAILURES, SHOWN_STRAGGLERS, RoundMetrics
from service.federated.selection import Plan
from service.federated.strategies.base import Collector, MeanCollector

MIN_ROUND_SECONDS = 0.001
"""The shortest simulated round when a profiled participant was picked: simulated time always moves."""


class Tally:
    """One round's results as participants finish: their updates, collected as the strategy says, and metrics.

    Every picked participant ends up in one count: ``finished`` (its update is in the mean),
    ``straggled``, ``dropped`` or ``failed``."""

    def __init__(
        self, metrics: RoundMetrics, global_weights: Weights | None, collected: Collector | None = None
    ) -> None:
        self.metrics = metrics
        self.global_weights = global_weights
        self.collected: Collector = collected or MeanCollector()
        """Where the updates go: the strategy's collector (the sample-weighted mean by default)."""
        self.losses: list[tuple[float, int]] = []
        self.local: list[float] = []
        self.longest = 0.0
        """Simulated seconds into the round when the last picked participant finished, dropped out or
        failed (its plan's ``ends``)."""
        self.profiled = False
        """Whether a profiled participant was picked (its plan takes simulated time)."""

    def take(self, update: Update, plan: Plan) -> None:
        if update.weights is not None:
            assert self.global_weights is not None
            problem = same_layout(self.global_weights, update.weights)
            if problem is not None:
                raise InvalidRequest(f"its update does not fit the global weights: {problem}")
        if plan.fate == "straggler":
            self.metrics.straggled += 1
            if len(self.metrics.stragglers) < SHOWN_STRAGGLERS:
                self.metrics.stragglers.append(plan.device)
            return
        if update.weights is not None or update.payload is not None:
            self.collected.add(update)
        self.metrics.finished += 1
        self.metrics.samples += update.samples
        self._waited(plan.seconds)
        if update.mean_loss is not None:
            self.losses.append((update.mean_loss, update.samples))
        if update.local_accuracy is not None:
            self.local.append(update.local_accuracy)

    def take_stale(self, update: Update, rounds_late: int) -> None:
        """An earlier round's straggler's update (its layout was checked when it came)."""
        assert update.weights is not None
        self.collected.add(update, rounds_late)
        self.metrics.stale_added += 1

    def skip(self, plan: Plan) -> None:
        """A participant that did not train: dropped out, or failed before it was asked."""
        if plan.fate == "dropped":
            self.metrics.dropped += 1
            self._waited(plan.ends)
        else:
            self.fail(plan.device, plan.error, plan.seconds)

    def fail(self, device_id: str, message: str, seconds: float = 0.0) -> None:
        self.metrics.failed += 1
        self._waited(seconds)
        if len(self.metrics.failures) < SHOWN_FAILURES:
            self.metrics.failures.append({"device": device_id, "error": message})

    def _waited(self, seconds: float) -> None:
        self.longest = max(self.longest, seconds)

    def duration(self, deadline: float | None) -> float:
        """The round's simulated seconds: the deadline when someone missed it (straggled or dropped out);
        else until the last picked participant finished, dropped out or failed (the slowest finisher
        when none dropped out); never less than ``MIN_ROUND_SECONDS`` when someone was picked and
        profiled, so that simulated time always moves."""
        if deadline is not None and (self.metrics.straggled or self.metrics.dropped):
            return deadline
        longest = self.longest if deadline is None else min(self.longest, deadline)
        if self.profiled and not longest > 0:
            return MIN_ROUND_SECONDS
        return longest

    def finish(self) -> RoundMetrics:
        """The round's metrics; FleetError when every participant failed (no update and none dropped
        out or straggled: then the round just makes no version)."""
        metrics = self.metrics
        nobody = not metrics.picked  # a Poisson sample may be empty: the round makes no version
        if metrics.finished == 0 and not (
            nobody or metrics.stale_added or metrics.straggled or metrics.dropped
        ):
            first = metrics.failures[0]["error"] if metrics.failures else "none was picked"
            raise FleetError(f"round {metrics.round}: no participant finished (first failure: {first})")
        if self.losses:
            metrics.mean_loss = sum(loss * n for loss, n in self.losses) / sum(n for _, n in self.losses)
        metrics.mean_local_accuracy = float(np.mean(self.local)) if self.local else None
        return metrics
