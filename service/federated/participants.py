"""Where a round's participants train (``Participants``), what each is asked to do
(``Participation``) and what it sends back (``Update``)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from service.federated.checkpoints import Weights
from service.federated.local import LocalTraining
from service.federated.task import ClientTask, Privatize
from service.profiles import DeviceProfile

DeviceWeights = Literal["trained", "checkpoint", "saved"]


@dataclass(frozen=True)
class Evaluation:
    dataset: str
    split: str = "test"
    limit: int | None = None
    """Evaluate on the split's first ``limit`` samples (None: all)."""


@dataclass(frozen=True)
class Update:
    """What a participant sends back: its weights (None with ``aggregation="none"``) and how it went."""

    device: str
    samples: int
    steps: int
    mean_loss: float | None
    local_accuracy: float | None
    weights: Weights | None
    train_seconds: float = 0.0
    control: Weights | None = None
    """SCAFFOLD: the change of the participant's control variate (``ClientTask.control``)."""
    payload: np.ndarray | None = None
    """Under differential privacy or secure aggregation, all it sends instead of ``weights``: its
    privatized update vector, masked with secure aggregation (``private.privatize``)."""


@dataclass(frozen=True)
class Participation:
    """What one participant is asked to do (``POST /v1/devices/{id}/participate`` carries it too)."""

    model: str
    version: int | None
    """Adopt this global version first and send the weights back; None: train from the device's own
    weights and send none (``aggregation="none"``)."""
    training: LocalTraining = field(default_factory=LocalTraining)
    seed: tuple[int, ...] = (0,)
    """Seeds the participant's shuffling: the run's seed, the round, the device's key."""
    local_accuracy: bool = True
    device_weights: DeviceWeights = "trained"
    durable: bool = True
    """Whether a saved checkpoint is flushed to disk at once; False: ``Participants.flush`` flushes
    a round's checkpoints together when the round ends."""
    task: ClientTask = field(default_factory=ClientTask)
    """What the strategy has it train with and send beyond its weights."""
    privatize: Privatize | None = None
    """Differential privacy or secure aggregation: what it does to its update before sending it."""


class Participants(Protocol):
    """Where participants train: this process's fleet, or the shards of a sharded one."""

    def participate(self, device_id: str, asked: Participation, stop: Callable[[], bool]) -> Update: ...

    def flush(self) -> None:
        """Make what participants saved without ``durable`` durable (one sync for the whole round)."""
        ...

    def resolve_version(self, model: str, number: int | None, viewer: str | None = None) -> int:
        """``number`` if the model has that version and ``viewer`` (a devices key's prefix, None: an
        admin) sees it (VersionNotFound if not); None: the latest it sees."""
        ...

    def version_weights(self, model: str, version: int) -> Weights: ...

    def store_version(self, model: str, weights: Weights, meta: dict[str, object]) -> int: ...

    def evaluate_version(self, model: str, version: int, evaluation: Evaluation) -> float: ...

    def pin(self, model: str, version: int) -> AbstractContextManager[object]:
        """Keeps ``version`` while a round gives it to its participants."""
        ...

    def profile(self, device_id: str) -> DeviceProfile | None:
        """The device's profile; None for an unprofiled device, or one whose record cannot be read (its
        part fails with the reason)."""
        ...

    def sample_counts(self, device_id: str) -> tuple[int, int]:
        """The train and test samples assigned to the device ((0, 0) without an assignment)."""
        ...

    def hyperparameters(self, model: str) -> dict[str, float]:
        """The model's local optimizer settings, from its ``hyperparameters`` signature (InvalidRequest
        when it has none)."""
        ...

    def publish(self, run_id: str, name: str, weights: Weights) -> str:
        """Store tensors a run's participants read (SCAFFOLD's control variate); the name they ask for
        them by (``ClientTask.control``)."""
        ...

    def version_size(self, model: str, version: int) -> int:
        """Bytes of the version's weights file: what a participant downloads, and what its update is
        charged at when it uploads it back (``local.participation_seconds``)."""
        ...
