"""The pathological ``shards`` split (McMahan et al. 2017): dealing contiguous shards of the label-sorted
train set, and the label histograms of what was dealt."""

from __future__ import annotations

import numpy as np

from service.data.pools import ClassPools
from service.data.sampling import classes_of
from service.data.spec import PartitionSpec


def deal_shards(
    spec: PartitionSpec, pools: ClassPools, rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """Shards: which ``k`` distinct shards a device is dealt, in the order dealt, and, for each of the
    first ``k * shard_size - train_per_device``, the offset of the example it gives up.

    From one call for ``k + excess`` uniforms (``rng.choice`` costs ~15 us a device): the shards by a
    sparse Fisher-Yates shuffle of ``range(available)``, an ordered uniform sample.
    """
    k, size = spec.classes_per_device, spec.shard_size
    available, excess = pools.train_size // size, k * size - spec.train_per_device
    uniforms = rng.random(k + excess).tolist()
    moved: dict[int, int] = {}
    shards = []
    for i in range(k):
        j = i + int(uniforms[i] * (available - i))
        shards.append(moved.get(j, j))
        moved[j] = moved.get(i, i)
    return shards, [int(u * size) for u in uniforms[k:]]


def dealt_positions(shards: np.ndarray, drops: np.ndarray, spec: PartitionSpec) -> np.ndarray:
    """Each row's dealt positions in ``train_order``, shard after shard, for rows of ``deal_shards``."""
    rows, size = len(shards), spec.shard_size
    positions = shards[:, :, None] * size + np.arange(size)
    keep = np.ones(positions.shape, dtype=bool)
    keep[np.arange(rows)[:, None], np.arange(drops.shape[1]), drops] = False  # one from each of the first
    return positions[keep].reshape(rows, spec.train_per_device)


def dealt_distributions(
    dealt: np.ndarray, spec: PartitionSpec, pools: ClassPools
) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Each row's label histogram (its ``p_d``) and the classes present, for rows of ``deal_shards``."""
    rows, num_classes = len(dealt), pools.num_classes
    classes = classes_of(dealt, pools.train_bounds) + num_classes * np.arange(rows)[:, None]
    counts = np.bincount(classes.ravel(), minlength=rows * num_classes).reshape(rows, num_classes)
    present = [tuple(c for c, n in enumerate(row) if n) for row in counts.tolist()]
    return counts / spec.train_per_device, present
