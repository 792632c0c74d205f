"""The literature's disjoint partitions of a stored dataset, as the datasets API offers them, and the
assignment files that give each device its part.

    homogeneous      IID: a permutation cut into equal parts (NIID-Bench "homo")
    label_quantity   #C=k: device i holds label i mod K, then ``labels_per_device - 1`` others; a label's
                     examples are split evenly among its holders
    label_dirichlet  Dir(beta) over labels: each label shared out in Dir(``beta``) proportions
    quantity_skew    Dir(beta) over sizes: IID labels, part sizes from Dir(``beta``)
    feature_noise    homogeneous, and device i adds Gaussian noise of sigma_i = ``noise`` * i / (N - 1)
                     to its inputs when they are gathered (``service.data.noise``)
    natural          each writer's or user's examples on one device (the dataset's ``group`` array)

A partition is over a fixed, ordered set of devices: device ``i`` is the ``i``-th of the selected IDs
sorted, and every example of the train split goes to exactly one of them (``train_per_device`` and
``test_per_device`` do not apply). The plan is made once on the train split's labels and dealt to the
test split too (``service.data.disjoint``), so a device's local test data follow its train skew.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from service.data.assignment import (
    ASSIGNMENT_FILE,
    BATCH,
    Assignment,
    assignment_payload,
    index_dtype,
    write_batches,
)
from service.data.dataset import Dataset
from service.data.disjoint import DisjointKind, PartitionStats, Plan, deal, plan, stats
from service.data.noise import FEATURE_NOISE, sigma
from service.errors import InvalidPartition
from service.storage import utc_now

DisjointScheme = Literal[
    "homogeneous", "label_quantity", "label_dirichlet", "quantity_skew", "feature_noise", "natural"
]
DISJOINT_SCHEMES: tuple[str, ...] = get_args(DisjointScheme)
KINDS: dict[str, DisjointKind] = {
    "homogeneous": "iid",
    "label_quantity": "labels",
    "label_dirichlet": "dirichlet",
    "quantity_skew": "quantity",
    FEATURE_NOISE: "iid",
    "natural": "natural",
}
MAX_LISTED = 1000
"""Per-device lists (examples, labels, sigma, held labels) are given for at most this many devices."""
TRAIN_STREAM, TEST_STREAM = 1, 2


@dataclass(frozen=True)
class DisjointSpec:
    """A disjoint partition as asked: its scheme, the scheme's parameter and the seed."""

    scheme: DisjointScheme
    labels_per_device: int = 2
    beta: float = 0.5
    noise: float = 0.1
    group: str | None = None
    """natural: the dataset's group array (None: whichever it has)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scheme not in DISJOINT_SCHEMES:
            raise InvalidPartition(
                f"unknown scheme {self.scheme!r}; the disjoint ones are {DISJOINT_SCHEMES}"
            )
        if not self.beta > 0 or not math.isfinite(self.beta):
            raise InvalidPartition(f"beta must be a positive number (got {self.beta})")
        if not self.noise >= 0 or not math.isfinite(self.noise):
            raise InvalidPartition(f"noise must be zero or more (got {self.noise})")
        if self.labels_per_device < 1:
            raise InvalidPartition(f"labels_per_device must be at least 1 (got {self.labels_per_device})")

    def parameters(self) -> dict[str, object]:
        """The parameters the scheme uses, as assignments record them."""
        if self.scheme == "label_quantity":
            return {"labels_per_device": self.labels_per_device}
        if self.scheme in ("label_dirichlet", "quantity_skew"):
            return {"beta": self.beta}
        if self.scheme == FEATURE_NOISE:
            return {"noise": self.noise}
        if self.scheme == "natural":
            return {"group": self.group}
        return {}


@dataclass(frozen=True, eq=False)
class DisjointSplit:
    """A dataset's train and test splits dealt among ``parties`` devices, and what they hold."""

    spec: DisjointSpec
    plan: Plan
    train: list[np.ndarray]
    test: list[np.ndarray]
    train_stats: PartitionStats
    test_stats: PartitionStats

    @property
    def parties(self) -> int:
        return self.plan.parties

    def parameters(self, device: int) -> dict[str, object]:
        """What device ``device``'s assignment records: the scheme's parameters, its index, the parties."""
        recorded = {**self.spec.parameters(), "device": device, "parties": self.parties}
        if self.spec.scheme == FEATURE_NOISE:
            recorded["sigma"] = sigma(self.spec.noise, device, self.parties)
        return recorded

    def describe(self) -> dict[str, object]:
        listed = self.parties <= MAX_LISTED
        described: dict[str, object] = {
            "scheme": self.spec.scheme,
            "parameters": self.spec.parameters(),
            "seed": self.spec.seed,
            "parties": self.parties,
            "order": "device i is the i-th of the selected device IDs, sorted",
            "train": _stats_view(self.train_stats, listed),
            "test": _stats_view(self.test_stats, listed),
            "listed": listed,
        }
        if listed and self.plan.held:
            described["held_labels"] = [sorted(h) for h in self.plan.held]
        if listed and self.spec.scheme == FEATURE_NOISE:
            described["sigma"] = [sigma(self.spec.noise, i, self.parties) for i in range(self.parties)]
        return described


def _stats_view(found: PartitionStats, listed: bool) -> dict[str, object]:
    view: dict[str, object] = {
        "examples": int(sum(found.examples)),
        "distinct_examples": found.distinct_examples,
        "labels_on_no_device": found.labels_on_no_device,
        "examples_min": min(found.examples),
        "examples_max": max(found.examples),
        "labels_min": min(found.labels),
        "labels_max": max(found.labels),
    }
    if listed:
        view.update(examples_per_device=found.examples, labels_per_device=found.labels)
    return view


def split_dataset(dataset: Dataset, spec: DisjointSpec, parties: int) -> DisjointSplit:
    """Deal ``dataset``'s train and test splits among ``parties`` devices by ``spec``; InvalidPartition
    naming the setting when it cannot be done."""
    train_labels, test_labels = dataset.labels("train"), dataset.labels("test")
    classes = dataset.num_classes or int(max(train_labels.max(initial=0), test_labels.max(initial=0))) + 1
    train_groups = test_groups = planned_groups = None
    if spec.scheme == "natural":
        train_groups, test_groups = dataset.groups("train", spec.group), dataset.groups("test", spec.group)
        planned_groups = np.concatenate([train_groups, test_groups])
    try:
        made = plan(
            train_labels,
            parties,
            KINDS[spec.scheme],
            labels_per_device=spec.labels_per_device,
            beta=spec.beta,
            seed=spec.seed,
            groups=planned_groups,
            classes=classes,
        )
        train = deal(made, train_labels, stream=TRAIN_STREAM, groups=train_groups)
        test = deal(made, test_labels, stream=TEST_STREAM, groups=test_groups)
    except ValueError as exc:
        raise InvalidPartition(f"dataset '{dataset.name}' cannot be split so: {exc}") from exc
    empty = [i for i, part in enumerate(train) if not len(part)]
    if empty:
        raise InvalidPartition(
            f"{spec.scheme} leaves {len(empty)} of {parties} devices (device {empty[0]} first) without a "
            "train example; select fewer devices"
        )
    return DisjointSplit(
        spec, made, train, test, stats(train_labels, train, classes), stats(test_labels, test, classes)
    )


def assign_disjoint(
    device_ids: Sequence[str],
    directory_of: Callable[[str], Path],
    dataset: Dataset,
    spec: DisjointSpec,
    root: Path,
    parties: Sequence[str] | None = None,
) -> DisjointSplit:
    """Write each of ``device_ids`` its part of ``dataset``'s partition among ``parties`` (None: the
    devices themselves; a sharded fleet's shard writes its own devices of the whole selection)."""
    order = sorted(set(parties if parties is not None else device_ids))
    index = {device_id: i for i, device_id in enumerate(order)}
    outside = [device_id for device_id in device_ids if device_id not in index]
    if outside:
        raise InvalidPartition(f"device '{outside[0]}' is not among the partition's parties")
    split = split_dataset(dataset, spec, len(order))
    dtypes = index_dtype(dataset.split("train").count), index_dtype(dataset.split("test").count)
    assigned_at = utc_now()

    def payload(device_id: str) -> tuple[Path, bytes]:
        i = index[device_id]
        counts = split.train_stats.counts[i]
        assignment = Assignment(
            dataset=dataset.name,
            content_id=dataset.content_id,
            scheme=spec.scheme,
            parameters=split.parameters(i),
            seed=spec.seed,
            label_distribution=tuple(np.round(counts / max(1, counts.sum()), 4).tolist()),
            preferred_classes=tuple(sorted(split.plan.held[i])) if split.plan.held else (),
            assigned_at=assigned_at,
            train=split.train[i].astype(dtypes[0]),
            test=split.test[i].astype(dtypes[1]),
        )
        return directory_of(device_id) / ASSIGNMENT_FILE, assignment_payload(assignment)

    def batches() -> Iterator[list[tuple[Path, bytes]]]:
        ids = iter(device_ids)
        while batch := list(itertools.islice(ids, BATCH)):
            yield [payload(device_id) for device_id in batch]

    write_batches(batches(), root)
    return split
