"""What a partition is asked for (``PartitionSpec``), what a device gets (``DeviceSplit``), and the label
distributions of the kinds drawn from a prior (IID, Dirichlet, interest)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

PartitionKind = Literal["iid", "dirichlet", "interest", "shards"]


PARTITION_KINDS: tuple[str, ...] = get_args(PartitionKind)


@dataclass(frozen=True)
class PartitionSpec:
    """How to split: the kind, the fleet's size, per-device sizes and the kind's parameters."""

    kind: PartitionKind = "iid"
    devices: int = 10
    train_per_device: int = 500
    test_per_device: int = 100
    alpha: float = 0.5
    """Dirichlet concentration: small is skewed (few classes per device), large approaches IID."""
    classes_per_device: int = 2
    """Interest: how many classes each device prefers. Shards: how many shards each device is dealt."""
    interest_share: float = 0.9
    """Interest: the share of a device's data drawn from its preferred classes."""
    replace: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in PARTITION_KINDS:
            raise ValueError(f"unknown partition {self.kind!r}; choose one of {', '.join(PARTITION_KINDS)}")
        if self.devices < 1:
            raise ValueError("devices must be at least 1")
        if self.train_per_device < 1 or self.test_per_device < 1:
            raise ValueError("train_per_device and test_per_device must be at least 1")
        if not self.alpha > 0:
            raise ValueError("alpha must be positive")
        if self.classes_per_device < 1:
            raise ValueError("classes_per_device must be at least 1")
        if not 0.0 <= self.interest_share <= 1.0:
            raise ValueError("interest_share must be in [0, 1]")
        if self.kind == "shards" and self.train_per_device < self.classes_per_device:
            raise ValueError(
                f"shards: train_per_device {self.train_per_device} is fewer than classes_per_device "
                f"{self.classes_per_device} (the shards per device); every shard needs at least one example"
            )

    @property
    def shard_size(self) -> int:
        """Shards: examples per shard, ``ceil(train_per_device / classes_per_device)``."""
        return -(-self.train_per_device // self.classes_per_device)


@dataclass(frozen=True)
class DeviceSplit:
    """One device's share: its label distribution and its indices into the train and test sets."""

    index: int
    """The device's position in ``partition``'s list; 0 from ``device_split`` (the key names the device)."""
    label_distribution: np.ndarray
    train_indices: np.ndarray
    test_indices: np.ndarray
    preferred_classes: tuple[int, ...] = field(default=())
    """Interest: the chosen classes; shards: the classes of the dealt shards (sorted); empty otherwise."""


def label_distributions(
    spec: PartitionSpec, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Each device's label distribution (devices x classes, rows sum to 1) and preferred classes."""
    n = spec.devices
    if spec.kind == "iid":
        return np.full((n, num_classes), 1.0 / num_classes), [() for _ in range(n)]
    if spec.kind == "dirichlet":
        return rng.dirichlet(np.full(num_classes, spec.alpha), size=n), [() for _ in range(n)]
    if spec.kind == "shards":
        raise ValueError(
            "shards: a device's label distribution follows from the shards it is dealt; "
            "use partition or device_split"
        )
    k = spec.classes_per_device
    check_classes_per_device(k, num_classes)
    rows, preferred = np.empty((n, num_classes)), []
    for d in range(n):
        rows[d], chosen = interest_row(spec, num_classes, rng)
        preferred.append(chosen)
    return rows, preferred


def check_classes_per_device(k: int, num_classes: int) -> None:
    if k > num_classes:
        raise ValueError(
            f"classes_per_device {k} exceeds the dataset's {num_classes} classes; "
            f"ask for at most {num_classes}"
        )


def interest_row(
    spec: PartitionSpec, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, ...]]:
    k = spec.classes_per_device
    chosen = np.sort(rng.choice(num_classes, size=k, replace=False))
    if k == num_classes:
        row = np.full(num_classes, 1.0 / num_classes)
    else:
        row = np.full(num_classes, (1.0 - spec.interest_share) / (num_classes - k))
        row[chosen] = spec.interest_share / k
    return row, tuple(int(c) for c in chosen)
