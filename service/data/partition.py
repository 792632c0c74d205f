"""Split a labelled dataset across simulated devices: IID, Dirichlet over labels, "interest" or shards.

Every device first gets a label distribution ``p_d``; its local train and local test data are then both
drawn from ``p_d`` (train from the train set, test from the test set), so a device is evaluated on the
same kind of data it trains on. ``shards`` (the pathological split of McMahan et al. 2017) turns this
around: a device is dealt ``k`` contiguous shards of the label-sorted train set, and ``p_d`` is the label
histogram of what it was dealt; its test data are then drawn from that ``p_d`` like the others'.

Sampling decisions, chosen so that the measured distributions are the intended ones:

* **Stratified quotas.** A device's class counts are ``n * p_d`` rounded by largest remainder, not a
  multinomial draw, so its train and test histograms match ``p_d`` (and each other) up to rounding.
* **Without replacement within a device** (the default): no example appears twice in one device's
  train split, nor twice in its test split. A quota larger than its class's pool raises ValueError;
  ``replace=True`` allows repeats instead.
* **Independent across devices.** Each device draws from the whole pool, so two devices may share
  examples, as two phones may see similar photos; that keeps any fleet size possible.

Two ways in, both pure numpy:

* ``partition(train_labels, test_labels, spec)``: the whole fleet from one generator seeded with
  ``spec.seed``, device after device (what ``fleet simulate`` uses; the same seed, the same partition).
* ``device_split(key, spec, pools)``: one device, whose generator is seeded from a stable hash of
  ``spec.seed`` and its ``key`` (its device ID) only, so its split is the same whichever other devices
  are assigned with it, in whatever order, in whatever process; ``device_splits`` computes many at
  once, each the same as alone. ``ClassPools`` holds what every call needs (per-class index pools, the
  label-sorted train order), built once per dataset.

Shards, in detail: the train set is sorted by label (stably, so a class keeps dataset order) and cut into
contiguous shards of ``ceil(train_per_device / k)`` examples (``k = classes_per_device``); the tail that
makes no whole shard is never dealt. A device takes ``k`` distinct shards at random. When
``train_per_device`` is not a multiple of ``k``, the first ``excess = k * shard_size - train_per_device``
(fewer than ``k``) of its shards each give up one example at random, so the total is exact and every
shard still contributes (at least one example; all of it, or all but one).
"""

from __future__ import annotations

import numpy as np

from service.data.device_split import check_split, split_with
from service.data.pools import ClassPools, class_pools
from service.data.sampling import class_quotas, draw
from service.data.spec import DeviceSplit, PartitionSpec, label_distributions


def partition(
    train_labels: np.ndarray, test_labels: np.ndarray, spec: PartitionSpec, num_classes: int | None = None
) -> list[DeviceSplit]:
    """Split per ``spec``: every device's local train and test indices, drawn from its own ``p_d``."""
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    rng = np.random.default_rng(spec.seed)
    if spec.kind == "shards":
        pools = ClassPools.build(train_labels, test_labels, num_classes)
        check_split(spec, pools)
        return [split_with(rng, spec, pools, d) for d in range(spec.devices)]
    distributions, preferred = label_distributions(spec, num_classes, rng)
    train_pools, test_pools = class_pools(train_labels, num_classes), class_pools(test_labels, num_classes)
    splits = []
    for d in range(spec.devices):
        p = distributions[d]
        train = draw(
            train_pools, class_quotas(spec.train_per_device, p), rng, replace=spec.replace, split="train"
        )
        test = draw(
            test_pools, class_quotas(spec.test_per_device, p), rng, replace=spec.replace, split="test"
        )
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
