"""Split a labelled dataset across simulated devices: IID, Dirichlet over labels, or "interest".

Every device first gets a label distribution ``p_d``; its local train and local test data are then both
drawn from ``p_d`` (train from the train set, test from the test set), so a device is evaluated on the
same kind of data it trains on.

Sampling decisions, chosen so that the measured distributions are the intended ones:

* **Stratified quotas.** A device's class counts are ``n * p_d`` rounded by largest remainder, not a
  multinomial draw, so its train and test histograms match ``p_d`` (and each other) up to rounding.
* **Without replacement within a device** (the default): no example appears twice in one device's
  train split, nor twice in its test split. A quota larger than its class's pool raises ValueError;
  ``replace=True`` allows repeats instead.
* **Independent across devices.** Each device draws from the whole pool, so two devices may share
  examples, as two phones may see similar photos; that keeps any fleet size possible.

Pure numpy; the same ``seed`` gives the same partition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

PartitionKind = Literal["iid", "dirichlet", "interest"]
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
    """Interest: how many classes each device prefers."""
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


@dataclass(frozen=True)
class DeviceSplit:
    """One device's share: its label distribution and its indices into the train and test sets."""

    index: int
    label_distribution: np.ndarray
    train_indices: np.ndarray
    test_indices: np.ndarray
    preferred_classes: tuple[int, ...] = field(default=())
    """The interest partition's chosen classes; empty for the other kinds."""


def label_distributions(
    spec: PartitionSpec, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Each device's label distribution (devices x classes, rows sum to 1) and preferred classes."""
    n = spec.devices
    if spec.kind == "iid":
        return np.full((n, num_classes), 1.0 / num_classes), [() for _ in range(n)]
    if spec.kind == "dirichlet":
        return rng.dirichlet(np.full(num_classes, spec.alpha), size=n), [() for _ in range(n)]
    k = spec.classes_per_device
    if k > num_classes:
        raise ValueError(f"classes_per_device {k} exceeds the {num_classes} classes")
    rows, preferred = np.empty((n, num_classes)), []
    for d in range(n):
        chosen = np.sort(rng.choice(num_classes, size=k, replace=False))
        if k == num_classes:
            rows[d] = 1.0 / num_classes
        else:
            rows[d] = (1.0 - spec.interest_share) / (num_classes - k)
            rows[d, chosen] = spec.interest_share / k
        preferred.append(tuple(int(c) for c in chosen))
    return rows, preferred


def class_quotas(total: int, distribution: np.ndarray) -> np.ndarray:
    """Integer counts per class summing to ``total``, proportional to ``distribution`` (largest remainder)."""
    exact = total * np.asarray(distribution, dtype=np.float64) / np.sum(distribution)
    counts = np.floor(exact).astype(np.int64)
    shortfall = total - int(counts.sum())
    # Ties go to the lower class index: a stable sort keeps the rounding itself deterministic.
    counts[np.argsort(-(exact - counts), kind="stable")[:shortfall]] += 1
    return counts


def draw(
    pools: list[np.ndarray], counts: np.ndarray, rng: np.random.Generator, *, replace: bool = False
) -> np.ndarray:
    """``counts[c]`` indices from each class's pool, shuffled together."""
    chosen = []
    for c, (pool, count) in enumerate(zip(pools, counts, strict=True)):
        if count == 0:
            continue
        if not replace and count > len(pool):
            raise ValueError(
                f"class {c} needs {count} examples but has {len(pool)}; "
                "ask for fewer per device or sample with replacement"
            )
        chosen.append(rng.choice(pool, size=int(count), replace=replace))
    indices = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    return rng.permutation(indices)


def class_pools(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """The indices of each class, in dataset order."""
    return [np.flatnonzero(labels == c) for c in range(num_classes)]


def partition(
    train_labels: np.ndarray, test_labels: np.ndarray, spec: PartitionSpec, num_classes: int | None = None
) -> list[DeviceSplit]:
    """Split per ``spec``: every device's local train and test indices, drawn from its own ``p_d``."""
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    rng = np.random.default_rng(spec.seed)
    distributions, preferred = label_distributions(spec, num_classes, rng)
    train_pools, test_pools = class_pools(train_labels, num_classes), class_pools(test_labels, num_classes)
    splits = []
    for d in range(spec.devices):
        p = distributions[d]
        train = draw(train_pools, class_quotas(spec.train_per_device, p), rng, replace=spec.replace)
        test = draw(test_pools, class_quotas(spec.test_per_device, p), rng, replace=spec.replace)
        splits.append(DeviceSplit(d, p, train, test, preferred[d]))
    return splits


def balanced_subset(labels: np.ndarray, size: int, seed: int, num_classes: int | None = None) -> np.ndarray:
    """A fixed, class-balanced subset of ``size`` indices without repeats: the global test set."""
    num_classes = num_classes or int(labels.max()) + 1
    rng = np.random.default_rng(seed)
    counts = class_quotas(min(size, len(labels)), np.full(num_classes, 1.0 / num_classes))
    return draw(class_pools(labels, num_classes), counts, rng)


def label_histogram(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of each class among ``labels``."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return counts / max(1, counts.sum())
