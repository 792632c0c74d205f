"""Disjoint partitions as the federated-learning literature defines them (NIID-Bench, Li et al. 2022).

Unlike the per-device draws of ``service.data.device_split`` (each device samples independently, so
examples repeat across devices and some classes may be on none), these split one set of examples among
``parties`` devices: every example goes to exactly one device. A partition is a function of the
labels, the kind, its parameter and the seed; device ``i`` is the ``i``-th of the devices it is given
to, in the order the caller fixes (sorted IDs).

    iid          a random permutation cut into equal parts (NIID-Bench's "homo")
    labels       "#C=k": device i holds label i mod K first, then k-1 other labels drawn at random;
                 each label's examples are split evenly among the devices that hold it, so every
                 label is held by some device ("noniid-#label k")
    dirichlet    "Dir(beta)" over labels: each label's examples are shared out in proportions drawn
                 from Dir(beta), drawn again until every device has at least ``min_size`` examples
                 ("noniid-labeldir")
    quantity     "Dir(beta)" over sizes: an IID split whose part sizes follow Dir(beta), redrawn until
                 every part has ``min_size`` examples ("iid-diff-quantity")

Feature noise (NIID-Bench's "noise-based") is an IID split whose devices add Gaussian noise of their
own scale to their inputs: a property of training, not of which examples a device holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

DisjointKind = Literal["iid", "labels", "dirichlet", "quantity"]
MIN_SIZE = 10
"""NIID-Bench redraws a Dirichlet split until every device holds at least this many examples."""
MAX_DRAWS = 1000
"""Redraws before a Dirichlet split that cannot give every device ``min_size`` examples is refused."""


def partition(
    labels: np.ndarray,
    parties: int,
    kind: DisjointKind,
    *,
    labels_per_device: int = 2,
    beta: float = 0.5,
    seed: int = 0,
    min_size: int = MIN_SIZE,
) -> list[np.ndarray]:
    """Each device's example indices (sorted), disjoint and together every index of ``labels``.

    ``labels`` holds each example's class (integers 0..K-1). ValueError for a split that cannot be
    made (more devices than examples, ``labels_per_device`` outside 1..K, a Dirichlet split that
    leaves a device under ``min_size`` examples after MAX_DRAWS draws).
    """
    labels = np.asarray(labels).reshape(-1)
    if parties < 1 or parties > len(labels):
        raise ValueError(f"cannot split {len(labels)} examples among {parties} devices")
    if not beta > 0:
        raise ValueError("beta must be positive")
    rng = np.random.default_rng(seed)
    if kind == "iid":
        parts = np.array_split(rng.permutation(len(labels)), parties)
    elif kind == "labels":
        parts = _by_label_quantity(labels, parties, labels_per_device, rng)
    elif kind == "dirichlet":
        parts = _by_label_dirichlet(labels, parties, beta, min(min_size, len(labels) // parties), rng)
    elif kind == "quantity":
        parts = _by_quantity(len(labels), parties, beta, min(min_size, len(labels) // parties), rng)
    else:
        raise ValueError(f"unknown disjoint partition {kind!r}")
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]


def _classes(labels: np.ndarray) -> int:
    return int(labels.max()) + 1 if len(labels) else 0


def _by_label_quantity(
    labels: np.ndarray, parties: int, k: int, rng: np.random.Generator
) -> list[np.ndarray]:
    classes = _classes(labels)
    if not 1 <= k <= classes:
        raise ValueError(f"labels_per_device must be between 1 and the {classes} labels")
    held = []
    for i in range(parties):
        own = [i % classes]
        others = rng.permutation([c for c in range(classes) if c != own[0]])
        held.append(own + [int(c) for c in others[: k - 1]])
    parts: list[list[np.ndarray]] = [[] for _ in range(parties)]
    for label in range(classes):
        holders = [i for i in range(parties) if label in held[i]]
        if not holders:  # fewer devices than labels: the label is on no device, as in NIID-Bench
            continue
        examples = rng.permutation(np.flatnonzero(labels == label))
        for holder, share in zip(holders, np.array_split(examples, len(holders)), strict=True):
            parts[holder].append(share)
    return [np.concatenate(p) if p else np.empty(0, np.int64) for p in parts]


def _cut(examples: np.ndarray, proportions: np.ndarray) -> list[np.ndarray]:
    """``examples`` cut into consecutive pieces of the given proportions (which sum to 1)."""
    bounds = (np.cumsum(proportions)[:-1] * len(examples)).astype(int)
    return np.split(examples, bounds)


def _by_label_dirichlet(
    labels: np.ndarray, parties: int, beta: float, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    classes, total = _classes(labels), len(labels)
    for _ in range(MAX_DRAWS):
        parts: list[list[np.ndarray]] = [[] for _ in range(parties)]
        sizes = np.zeros(parties, dtype=np.int64)
        for label in range(classes):
            examples = rng.permutation(np.flatnonzero(labels == label))
            proportions = rng.dirichlet(np.full(parties, beta))
            # A device already holding its even share takes no more (NIID-Bench's balancing step).
            proportions = proportions * (sizes < total / parties)
            if proportions.sum() == 0:
                proportions = np.full(parties, 1.0 / parties)
            for i, piece in enumerate(_cut(examples, proportions / proportions.sum())):
                parts[i].append(piece)
                sizes[i] += len(piece)
        if sizes.min() >= min_size:
            return [np.concatenate(p) for p in parts]
    raise ValueError(
        f"Dir({beta:g}) over labels left a device with fewer than {min_size} examples in {MAX_DRAWS} "
        "draws; use fewer devices or a larger beta"
    )


def _by_quantity(
    total: int, parties: int, beta: float, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    examples = rng.permutation(total)
    for _ in range(MAX_DRAWS):
        proportions = rng.dirichlet(np.full(parties, beta))
        if (proportions * total).min() >= min_size:
            return _cut(examples, proportions)
    raise ValueError(
        f"Dir({beta:g}) over sizes left a device with fewer than {min_size} examples in {MAX_DRAWS} "
        "draws; use fewer devices or a larger beta"
    )


@dataclass(frozen=True)
class PartitionStats:
    """What a partition gives: examples and labels per device, and what no device holds."""

    examples: list[int]
    labels: list[int]
    """Distinct labels each device holds."""
    distinct_examples: int
    labels_on_no_device: list[int]
    counts: np.ndarray
    """Examples of each label on each device (devices x labels): the heatmap's data."""

    def describe(self) -> dict[str, object]:
        return {
            "examples_per_device": self.examples,
            "labels_per_device": self.labels,
            "distinct_examples": self.distinct_examples,
            "labels_on_no_device": self.labels_on_no_device,
        }


def stats(labels: np.ndarray, parts: Sequence[np.ndarray], classes: int | None = None) -> PartitionStats:
    labels = np.asarray(labels).reshape(-1)
    classes = classes if classes is not None else _classes(labels)
    counts = (
        np.stack([np.bincount(labels[p], minlength=classes) for p in parts])
        if parts
        else np.zeros((0, classes))
    )
    held = counts.sum(axis=0)
    return PartitionStats(
        examples=[len(p) for p in parts],
        labels=[int(n) for n in (counts > 0).sum(axis=1)],
        distinct_examples=len(np.unique(np.concatenate(parts))) if parts else 0,
        labels_on_no_device=[int(c) for c in np.flatnonzero(held == 0)],
        counts=counts,
    )
