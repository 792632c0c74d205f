"""What a comparison found: each device's scores by arm, each round's record, the means."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from service.simulate.comparison_config import ComparisonConfig


@dataclass(frozen=True)
class Scores:
    local: float
    """Accuracy on the device's own test data."""
    global_: float
    """Accuracy on the global test split."""


@dataclass(frozen=True)
class ComparedDevice:
    device_id: str
    index: int
    preferred_classes: tuple[int, ...]
    label_distribution: tuple[float, ...]
    train_size: int
    test_size: int
    arms: Mapping[str, Scores]
    """Scores by arm (``ARMS``)."""
    local_only_loss: float | None
    fine_tune_loss: float | None


@dataclass(frozen=True)
class RoundRecord:
    """One round of the run, as the service measured it."""

    round: int
    version: int | None
    participants: list[str]
    finished: int
    failed: int
    failures: list[dict[str, str]]
    samples: int
    mean_loss: float | None
    global_accuracy: float | None
    """The round's new global version on the global test split."""
    mean_local_accuracy: float | None
    """The participants' mean accuracy on their own test data after this round's local training."""
    seconds: float
    straggled: int = 0
    dropped: int = 0
    offline: int = 0
    stragglers: tuple[str, ...] = ()
    simulated_seconds: float | None = None
    """What the round took on the profiled phones (None without profiles)."""
    ideal_global_accuracy: float | None = None
    """The same round's global accuracy in the run on ideal phones (with profiles only)."""
    privacy: Mapping[str, Any] | None = None
    """Differential privacy (epsilon so far at delta, the clip norm, ...) and secure aggregation (cohort,
    survivors, bytes) as the service measured the round; None without either."""

    @classmethod
    def of(cls, view: Mapping[str, Any], ideal: Mapping[str, Any] | None = None) -> RoundRecord:
        return cls(
            round=int(view["round"]),
            version=view.get("version"),
            participants=list(view.get("participants", [])),
            finished=int(view.get("finished", 0)),
            failed=int(view.get("failed", 0)),
            failures=list(view.get("failures", [])),
            samples=int(view.get("samples", 0)),
            mean_loss=view.get("mean_loss"),
            global_accuracy=view.get("global_accuracy"),
            mean_local_accuracy=view.get("mean_local_accuracy"),
            seconds=float(view.get("seconds", 0.0)),
            straggled=int(view.get("straggled", 0)),
            dropped=int(view.get("dropped", 0)),
            offline=int(view.get("offline", 0)),
            stragglers=tuple(view.get("stragglers", ())),
            simulated_seconds=view.get("simulated_seconds") if ideal is not None else None,
            ideal_global_accuracy=None if ideal is None else ideal.get("global_accuracy"),
            privacy=view.get("privacy"),
        )

    @property
    def epsilon(self) -> float | None:
        """The privacy spent after this round, at the run's delta (None: no DP, or no noise)."""
        return None if self.privacy is None else self.privacy.get("epsilon")


@dataclass(frozen=True)
class ComparisonResult:
    config: ComparisonConfig
    dataset: Mapping[str, Any]
    """The dataset's name, source and split sizes, as the service describes it."""
    model: str
    run_id: str
    final_version: int
    start_global_accuracy: float
    """Version 0 (the model's own weights) on the global test split: where every arm starts."""
    global_test_count: int
    rounds: list[RoundRecord]
    devices: list[ComparedDevice]
    seconds: float
    phase_seconds: Mapping[str, float]
    classes: Mapping[str, str] = field(default_factory=dict)
    """Each device's profile class (with profiles)."""
    run_spec: Mapping[str, Any] = field(default_factory=dict)
    """The round run's spec as the service shows it (its strategy, server optimizer, selection...)."""
    stopped: str | None = None
    """Why the rounds ended before their last (a privacy budget), as the service says; None: they did not."""

    @property
    def profiled(self) -> bool:
        return self.config.profiles is not None

    def straggled(self, device_id: str) -> int:
        """Rounds in which the device straggled (as far as the rounds' lists of stragglers show)."""
        return sum(device_id in r.stragglers for r in self.rounds)

    def mean(self, arm: str, where: Literal["local", "global_"]) -> float:
        values = [getattr(d.arms[arm], where) for d in self.devices]
        return sum(values) / len(values)
