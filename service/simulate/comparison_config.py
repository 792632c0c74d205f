"""What ``fleet simulate --dataset`` compares: the arms, the run's configuration and its checks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from service.federated.spec import MAX_ROUNDS
from service.simulate.partition_choice import Partition
from service.simulate.privacy_choice import PrivacyChoice
from service.simulate.strategy_choice import SelectionChoice, StrategyChoice

Arm = Literal["local_only", "federated", "fine_tuned"]


ARMS: tuple[Arm, ...] = get_args(Arm)


ARM_TITLES: Mapping[str, str] = {
    "local_only": "local only",
    "federated": "federated",
    "fine_tuned": "federated + fine-tuning",
}


PHASES = ("assign", "local_only", "rounds", "evaluate", "fine_tune")
"""Progress phases: the assignment, local-only train steps, round participants, evaluations and
fine-tuning steps."""


START_VERSION = 0
"""Rounds start from the model's own weights, the baseline the local-only arm starts from too."""


def mix_name(mix: str | Mapping[str, Any]) -> str:
    return mix if isinstance(mix, str) else str(mix.get("name", "custom"))


@dataclass(frozen=True)
class Seeds:
    """Every seed of a run but the partition's: ``fleet simulate --seed`` sets them all."""

    rounds: int = 0
    """Who takes part in each round, and in what order."""
    profiles: int = 0
    """The devices' profiles drawn from the mix."""
    jobs: int = 0
    """The local-only and fine-tuning jobs' shuffling (each device's seed is derived from it)."""

    @classmethod
    def all(cls, seed: int) -> Seeds:
        return cls(seed, seed, seed)

    def as_dict(self) -> dict[str, int]:
        return {"rounds": self.rounds, "profiles": self.profiles, "jobs": self.jobs}

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> Seeds:
        return cls(int(saved["rounds"]), int(saved["profiles"]), int(saved["jobs"]))


def _fedavg() -> StrategyChoice:
    return StrategyChoice.of("fedavg", {}, {})


def _available() -> SelectionChoice:
    return SelectionChoice.of(None, {})


@dataclass(frozen=True)
class ComparisonConfig:
    dataset: str = "fashion-mnist"
    partition: Partition = field(default_factory=lambda: Partition.of("interest", 10, 0))
    rounds: int = 10
    participants: int | None = None
    """Devices per round; None: all of them."""
    strategy: StrategyChoice = field(default_factory=_fedavg)
    selection: SelectionChoice = field(default_factory=_available)
    privacy: PrivacyChoice = field(default_factory=PrivacyChoice)
    """Differential privacy and secure aggregation (off by default)."""
    model: str | None = None
    """The devices' model; None: the service's default (the run records the one used)."""
    seeds: Seeds = field(default_factory=Seeds)
    """The rounds', the profiles' and the jobs' seeds (the partition's is its own)."""
    dataset_content_id: str | None = None
    """The dataset's content ID the run must find (a spec's run again); None: any."""
    epochs: int = 3
    """Local epochs per round, and the local-only arm's epochs."""
    fine_tune_epochs: int | None = None
    """Epochs of arm 3's fine-tuning; None: ``epochs``."""
    batch_size: int = 32
    concurrency: int = 4
    global_test_size: int = 2000
    device_prefix: str = "sim"
    timeout: float = 3600.0
    """Seconds any one job, or the whole run of rounds, may take."""
    profiles: str | Mapping[str, Any] | None = None
    """A profile mix (a built-in mix's name, or a mix as ``ProfileMix.describe()`` gives it)."""
    deadline: float | None = None
    """Simulated seconds a round waits for its participants (needs ``profiles``)."""
    stragglers: Literal["drop", "stale"] = "drop"

    def __post_init__(self) -> None:
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise ValueError(f"rounds must be between 1 and {MAX_ROUNDS:,} (got {self.rounds})")
        devices = self.partition.devices
        if self.participants is not None and not 1 <= self.participants <= devices:
            raise ValueError(
                f"participants must be between 1 and the {devices} devices (got {self.participants})"
            )
        if self.deadline is not None and (self.profiles is None or not self.deadline > 0):
            raise ValueError("a deadline needs --profiles, and must be a positive number of seconds")
        numbers = (self.epochs, self.fine_tune_epochs or 1, self.batch_size, self.concurrency)
        if min(*numbers, self.global_test_size) < 1:
            raise ValueError(
                "epochs, fine_tune_epochs, batch_size, concurrency and global_test_size must be at least 1"
            )
        self.privacy.check_run(
            strategy=self.strategy.as_dict(),
            selection=self.selection.as_dict(),
            devices=devices,
            participants=self.participants,
            rounds=self.rounds,
            stragglers=self.stragglers,
        )

    @property
    def aggregation(self) -> str:
        return self.strategy.name

    @property
    def per_round(self) -> int:
        return self.participants or self.partition.devices

    @property
    def tune_epochs(self) -> int:
        return self.fine_tune_epochs or self.epochs

    def device_seed(self, index: int) -> int:
        """The shuffling seed of a device's jobs (as ``SimulationConfig.device_seed``)."""
        return self.seeds.jobs * 100_003 + index

    def steps(self, epochs: int) -> int | None:
        """Train steps of one device's job of ``epochs`` epochs (None: a disjoint partition's parts
        differ in size, known once assigned)."""
        train = self.partition.train_per_device
        return None if train is None else epochs * math.ceil(train / self.batch_size)

    def describe(self) -> str:
        """The partition and the strategy, as tables and plots title the run."""
        selection = (
            ""
            if self.selection.name == "available" and not self.selection.given
            else (f", selection {self.selection.describe()}")
        )
        privacy = f", {self.privacy.describe()}" if self.privacy.on else ""
        return (
            f"{self.partition.describe()} partition of {self.dataset}, {self.partition.devices} devices, "
            f"{self.rounds} rounds of {self.per_round} ({self.strategy.describe()}{selection}{privacy})"
        )

    def evaluations(self) -> int:
        """Every evaluation the run asks for: two per device in arms 1 and 3, one in arm 2, and the
        global accuracy of the start and the final version."""
        return 5 * self.partition.devices + 2
