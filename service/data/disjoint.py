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
    natural      by group (a writer, a user): each group's examples go to one device, the groups
                 shuffled and cut into ``parties`` equal runs (LEAF's FEMNIST, by writer)

A partition is a ``Plan`` (which labels a device holds, each label's or each device's shares, which
groups it owns), fixed once on the train split's labels, then ``deal``t to any split: the train split
and the test split are dealt by the same plan, so a device's local test data have its train skew.

Feature noise (NIID-Bench's "noise-based") is an IID split whose devices add Gaussian noise of their
own scale to their inputs: a property of training, not of which examples a device holds
(``service.data.noise``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

DisjointKind = Literal["iid", "labels", "dirichlet", "quantity", "natural"]
MIN_SIZE = 10
"""NIID-Bench redraws a Dirichlet split until every device holds at least this many examples."""
MAX_DRAWS = 1000
"""Redraws before a Dirichlet split that cannot give every device ``min_size`` examples is refused."""
DRAW_BUDGET = 20_000_000
"""Shares drawn (labels x devices a draw) over all redraws at most: fewer redraws for many devices, so
a refused split is refused in a fraction of a second, not minutes."""


@dataclass(frozen=True, eq=False)
class Plan:
    """How a partition deals examples: fixed once (on the train split), applied to any split."""

    kind: DisjointKind
    parties: int
    classes: int
    seed: int
    held: tuple[tuple[int, ...], ...] = ()
    """labels: each device's labels, its own (``i mod K``) first."""
    shares: np.ndarray | None = None
    """dirichlet: each label's shares among the devices (labels x devices, rows sum to 1);
    quantity: each device's share of the examples."""
    groups: np.ndarray | None = None
    """natural: the groups (sorted) ..."""
    owners: np.ndarray | None = None
    """... and the device each belongs to."""


def partition(
    labels: np.ndarray,
    parties: int,
    kind: DisjointKind,
    *,
    labels_per_device: int = 2,
    beta: float = 0.5,
    seed: int = 0,
    min_size: int = MIN_SIZE,
    groups: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Each device's example indices (sorted), disjoint and together every index of ``labels``.

    ``labels`` holds each example's class (integers 0..K-1); ``groups`` each example's group
    (``natural`` only). ValueError for a split that cannot be made (see ``plan``).
    """
    made = plan(
        labels,
        parties,
        kind,
        labels_per_device=labels_per_device,
        beta=beta,
        seed=seed,
        min_size=min_size,
        groups=groups,
    )
    return deal(made, labels, groups=groups)


def plan(
    labels: np.ndarray,
    parties: int,
    kind: DisjointKind,
    *,
    labels_per_device: int = 2,
    beta: float = 0.5,
    seed: int = 0,
    min_size: int = MIN_SIZE,
    groups: np.ndarray | None = None,
    classes: int | None = None,
) -> Plan:
    """The plan of a partition of the examples whose classes are ``labels`` (the train split's).

    ValueError naming the setting for a split that cannot be made: more devices than examples (or than
    groups), ``labels_per_device`` outside 1..K, ``beta`` not positive, a Dirichlet split that leaves a
    device under ``min_size`` examples after its redraws, ``natural`` without ``groups``.
    """
    labels = np.asarray(labels).reshape(-1)
    classes = classes if classes is not None else _classes(labels)
    if parties < 1 or parties > len(labels):
        raise ValueError(f"cannot split {len(labels)} examples among {parties} devices")
    if not beta > 0:
        raise ValueError("beta must be positive")
    rng = np.random.default_rng([seed, 0])
    floor = min(min_size, len(labels) // parties)
    held: tuple[tuple[int, ...], ...] = ()
    shares = values = owners = None
    if kind == "labels":
        held = _held_labels(parties, labels_per_device, classes, seed)
    elif kind == "dirichlet":
        shares = _label_shares(np.bincount(labels, minlength=classes), parties, beta, floor, rng)
    elif kind == "quantity":
        shares = _size_shares(len(labels), parties, beta, floor, rng)
    elif kind == "natural":
        values, owners = _group_owners(groups, parties, rng)
    elif kind != "iid":
        raise ValueError(f"unknown disjoint partition {kind!r}")
    return Plan(kind, parties, classes, seed, held, shares, values, owners)


def deal(
    made: Plan, labels: np.ndarray, *, stream: int = 1, groups: np.ndarray | None = None
) -> list[np.ndarray]:
    """Each device's indices (sorted) among ``labels``' examples, by ``made``: the train split's
    (``stream`` 1) or another split's (the test split's: another stream, the same plan)."""
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng([made.seed, stream])
    parties = made.parties
    if made.kind in ("iid", "quantity"):
        examples = rng.permutation(len(labels))
        parts = np.array_split(examples, parties) if made.shares is None else _cut(examples, made.shares)
    elif made.kind == "natural":
        parts = _by_group(made, groups, len(labels))
    else:
        pieces: list[list[np.ndarray]] = [[] for _ in range(parties)]
        for label in range(made.classes):
            examples = rng.permutation(np.flatnonzero(labels == label))
            if made.shares is not None:
                cut = _cut(examples, made.shares[label])
                holders = list(range(parties))
            else:
                holders = [i for i in range(parties) if label in made.held[i]]
                if not holders:  # fewer devices than labels: the label is on no device, as in NIID-Bench
                    continue
                cut = np.array_split(examples, len(holders))
            for holder, share in zip(holders, cut, strict=True):
                pieces[holder].append(share)
        parts = [np.concatenate(p) if p else np.empty(0, np.int64) for p in pieces]
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]


def _classes(labels: np.ndarray) -> int:
    return int(labels.max()) + 1 if len(labels) else 0


def _held_labels(parties: int, k: int, classes: int, seed: int) -> tuple[tuple[int, ...], ...]:
    """Device i's labels: i mod K, then labels drawn uniformly until it has k distinct ones, by
    Python's ``random`` seeded with ``seed`` as NIID-Bench draws them (its only use of that generator),
    so a seed gives NIID-Bench's label sets for that seed."""
    if not 1 <= k <= classes:
        raise ValueError(f"labels_per_device must be between 1 and the {classes} labels")
    picker = random.Random(seed)
    held = []
    for i in range(parties):
        labels = [i % classes]
        while len(labels) < k:
            label = picker.randint(0, classes - 1)
            if label not in labels:
                labels.append(label)
        held.append(tuple(labels))
    return tuple(held)


def _sizes(count: int, proportions: np.ndarray) -> np.ndarray:
    """The sizes of the pieces ``_cut`` makes of ``count`` examples."""
    bounds = (np.cumsum(proportions)[:-1] * count).astype(int)
    return np.diff(np.concatenate(([0], bounds, [count])))


def _cut(examples: np.ndarray, proportions: np.ndarray) -> list[np.ndarray]:
    """``examples`` cut into consecutive pieces of the given proportions (which sum to 1)."""
    bounds = (np.cumsum(proportions)[:-1] * len(examples)).astype(int)
    return np.split(examples, bounds)


def _draws(parties: int, classes: int) -> int:
    return max(1, min(MAX_DRAWS, DRAW_BUDGET // max(1, parties * classes)))


def _label_shares(
    counts: np.ndarray, parties: int, beta: float, min_size: int, rng: np.random.Generator
) -> np.ndarray:
    total = int(counts.sum())
    draws = _draws(parties, len(counts))
    for _ in range(draws):
        shares = np.empty((len(counts), parties))
        sizes = np.zeros(parties, dtype=np.int64)
        for label, count in enumerate(counts):
            proportions = rng.dirichlet(np.full(parties, beta))
            # A device already holding its even share takes no more (NIID-Bench's balancing step).
            proportions = proportions * (sizes < total / parties)
            if proportions.sum() == 0:
                proportions = np.full(parties, 1.0 / parties)
            shares[label] = proportions / proportions.sum()
            sizes += _sizes(int(count), shares[label])
        if sizes.min() >= min_size:
            return shares
    raise ValueError(
        f"Dir({beta:g}) over labels left a device with fewer than {min_size} examples in {draws} "
        "draws; use fewer devices or a larger beta"
    )


def _size_shares(
    total: int, parties: int, beta: float, min_size: int, rng: np.random.Generator
) -> np.ndarray:
    draws = _draws(parties, 1)
    for _ in range(draws):
        proportions = rng.dirichlet(np.full(parties, beta))
        if _sizes(total, proportions).min() >= min_size:
            return proportions
    raise ValueError(
        f"Dir({beta:g}) over sizes left a device with fewer than {min_size} examples in {draws} "
        "draws; use fewer devices or a larger beta"
    )


def _group_owners(
    groups: np.ndarray | None, parties: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The groups (sorted) and each one's device: the groups shuffled, cut into ``parties`` runs."""
    if groups is None:
        raise ValueError("a natural split needs each example's group (writer or user)")
    values = np.unique(np.asarray(groups).reshape(-1))
    if len(values) < parties:
        raise ValueError(f"cannot split {len(values)} groups (writers or users) among {parties} devices")
    owners = np.empty(len(values), dtype=np.int64)
    for device, run in enumerate(np.array_split(rng.permutation(len(values)), parties)):
        owners[run] = device
    return values, owners


def _by_group(made: Plan, groups: np.ndarray | None, count: int) -> list[np.ndarray]:
    """Each device's examples: those of its groups (an example of a group not planned is on none)."""
    assert made.groups is not None and made.owners is not None
    if groups is None or len(groups) != count:
        raise ValueError("a natural split needs each example's group (writer or user)")
    groups = np.asarray(groups).reshape(-1)
    position = np.minimum(np.searchsorted(made.groups, groups), len(made.groups) - 1)
    owner = np.where(made.groups[position] == groups, made.owners[position], made.parties)
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(1, made.parties))
    return np.split(order, bounds)


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
