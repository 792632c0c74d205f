"""Partitions of the real Fashion-MNIST labels: reproducible, shaped as asked, train and test alike.

``partition`` splits a fleet from one seed; ``device_split`` one device from the seed and its ID alone.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from service.data.device_split import device_split, device_splits
from service.data.partition import balanced_subset, label_histogram, partition
from service.data.pools import ClassPools
from service.data.sampling import class_quotas
from service.data.spec import DeviceSplit, PartitionKind, PartitionSpec
from service.model.dataset import FashionMNIST

C = 10
REPO = Path(__file__).resolve().parents[2]
device_split_module = importlib.import_module("service.data.device_split")  # not the function
KINDS = ["iid", "dirichlet", "interest", "shards"]


@pytest.fixture(scope="module")
def labels(fashion_mnist: FashionMNIST) -> tuple[np.ndarray, np.ndarray]:
    return fashion_mnist.train_labels, fashion_mnist.test_labels


def split(labels: tuple[np.ndarray, np.ndarray], **kwargs: object) -> list:
    return partition(*labels, PartitionSpec(**kwargs))  # type: ignore[arg-type]


def histograms(splits: list, labels: np.ndarray, which: str) -> np.ndarray:
    return np.array([label_histogram(labels[getattr(s, f"{which}_indices")], C) for s in splits])


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "interest"])
def test_same_seed_same_partition_other_seed_other(labels, kind: str) -> None:
    a, b = split(labels, kind=kind, devices=5, seed=3), split(labels, kind=kind, devices=5, seed=3)
    other = split(labels, kind=kind, devices=5, seed=4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.train_indices, y.train_indices)
        np.testing.assert_array_equal(x.test_indices, y.test_indices)
        assert x.preferred_classes == y.preferred_classes
    assert any(not np.array_equal(x.train_indices, z.train_indices) for x, z in zip(a, other, strict=True))


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "interest"])
def test_sizes_as_requested_and_no_index_twice_within_a_split(labels, kind: str) -> None:
    splits = split(labels, kind=kind, devices=8, train_per_device=333, test_per_device=77, alpha=0.1, seed=1)
    assert len(splits) == 8
    for s in splits:
        assert len(s.train_indices) == 333 and len(s.test_indices) == 77
        assert len(np.unique(s.train_indices)) == 333 and len(np.unique(s.test_indices)) == 77
        assert s.train_indices.max() < len(labels[0]) and s.test_indices.max() < len(labels[1])
        assert s.label_distribution.sum() == pytest.approx(1.0)


def test_iid_histograms_are_uniform(labels) -> None:
    splits = split(labels, kind="iid", devices=6, seed=2)
    train, test = histograms(splits, labels[0], "train"), histograms(splits, labels[1], "test")
    assert np.abs(train - 1 / C).max() <= 0.002 and np.abs(test - 1 / C).max() <= 0.01


def _mean_max_share(labels, alpha: float) -> float:
    splits = split(labels, kind="dirichlet", devices=40, train_per_device=500, alpha=alpha, seed=5)
    return float(histograms(splits, labels[0], "train").max(axis=1).mean())


def test_dirichlet_small_alpha_is_skewed_large_alpha_close_to_iid(labels) -> None:
    assert _mean_max_share(labels, 0.05) > 0.7  # most of a device's data from one class
    assert _mean_max_share(labels, 1000.0) < 0.13  # about 1/10 for each class
    splits = split(labels, kind="dirichlet", devices=20, train_per_device=1000, alpha=1000.0, seed=5)
    assert np.abs(histograms(splits, labels[0], "train") - 1 / C).max() < 0.03


@pytest.mark.parametrize(("k", "share"), [(1, 0.9), (2, 0.8), (3, 0.5)])
def test_interest_share_of_preferred_classes(labels, k: int, share: float) -> None:
    splits = split(labels, kind="interest", devices=10, classes_per_device=k, interest_share=share, seed=7)
    for s in splits:
        assert len(s.preferred_classes) == k and len(set(s.preferred_classes)) == k
        for indices, pool in ((s.train_indices, labels[0]), (s.test_indices, labels[1])):
            observed = np.isin(pool[indices], s.preferred_classes).mean()
            assert observed == pytest.approx(share, abs=k / len(indices) + 1e-9)  # rounding only
    assert len({s.preferred_classes for s in splits}) > 1  # devices differ in their interests


@pytest.mark.parametrize("kind", ["dirichlet", "interest"])
def test_train_and_test_label_distributions_match_per_device(labels, kind: str) -> None:
    splits = split(
        labels, kind=kind, devices=10, train_per_device=600, test_per_device=200, alpha=0.3, seed=9
    )
    train, test = histograms(splits, labels[0], "train"), histograms(splits, labels[1], "test")
    expected = np.array([s.label_distribution for s in splits])
    assert np.abs(train - expected).max() <= 1 / 600 + 1e-9  # rounding only
    assert np.abs(test - expected).max() <= 1 / 200 + 1e-9
    # And devices really differ from each other, so the match is not the trivial one.
    assert np.abs(train[0] - train[1]).max() > 0.1


def test_class_quotas_sum_to_total_and_follow_the_distribution() -> None:
    counts = class_quotas(7, np.array([0.5, 0.25, 0.25]))
    assert counts.sum() == 7 and list(counts) == [3, 2, 2]
    assert class_quotas(100, np.full(10, 0.1)).tolist() == [10] * 10


def test_too_many_from_one_class_without_replacement_is_refused(labels) -> None:
    spec = dict(kind="interest", devices=1, classes_per_device=1, interest_share=1.0, test_per_device=1001)
    with pytest.raises(ValueError, match="needs 1001 examples but has 1000"):
        split(labels, **spec)
    (s,) = split(labels, **spec, replace=True)
    assert len(s.test_indices) == 1001 and len(np.unique(s.test_indices)) < 1001


def test_balanced_subset_is_fixed_balanced_and_distinct(labels) -> None:
    subset = balanced_subset(labels[1], 2000, seed=0)
    np.testing.assert_array_equal(subset, balanced_subset(labels[1], 2000, seed=0))
    assert len(np.unique(subset)) == 2000
    assert np.bincount(labels[1][subset], minlength=C).tolist() == [200] * C


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "pathological"},
        {"devices": 0},
        {"alpha": 0.0},
        {"interest_share": 1.5},
        {"train_per_device": 0},
        {"kind": "shards", "classes_per_device": 3, "train_per_device": 2},
    ],
)
def test_invalid_specs_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        PartitionSpec(**bad)


# -- today's partition, unchanged -------------------------------------------------------------------

GOLDEN = {"iid": "4798312ad3d3ce60", "dirichlet": "d6fcf2ec3b10a90a", "interest": "485455184ae600b6"}
"""sha256 prefixes of ``partition``'s output before shards and ``device_split`` were added (numpy 2.1)."""


@pytest.mark.parametrize("kind", sorted(GOLDEN))
def test_partition_of_the_existing_kinds_is_unchanged(labels, kind: str) -> None:
    digest = hashlib.sha256()
    for s in split(labels, kind=kind, devices=4, seed=11, alpha=0.3):
        for array in (s.label_distribution, s.train_indices, s.test_indices):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(repr(s.preferred_classes).encode())
    assert digest.hexdigest()[:16] == GOLDEN[kind]


# -- shards -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pools(labels) -> ClassPools:
    return ClassPools.build(*labels)


def shard_counts(indices: np.ndarray, pools: ClassPools, size: int) -> np.ndarray:
    """How many of ``indices`` come from each shard (``size`` consecutive examples of the sorted labels)."""
    rank = np.empty(pools.train_size, dtype=np.int64)
    rank[pools.train_order] = np.arange(pools.train_size)
    counts = np.bincount(rank[indices] // size)
    return counts[counts > 0]


def keyed(spec: PartitionSpec, pools: ClassPools, n: int = 40) -> list[DeviceSplit]:
    return device_splits([f"device-{i}" for i in range(n)], spec, pools)


@pytest.mark.parametrize(("k", "train"), [(2, 600), (3, 700), (1, 50), (4, 5)])
def test_shards_train_is_k_contiguous_shards_of_the_label_sorted_train_set(
    labels: tuple[np.ndarray, np.ndarray], pools, k, train
) -> None:
    spec = PartitionSpec(kind="shards", classes_per_device=k, train_per_device=train, test_per_device=50)
    size, excess = spec.shard_size, k * spec.shard_size - train
    for s in keyed(spec, pools) + partition(*labels, PartitionSpec(**{**spec.__dict__, "devices": 10})):
        assert len(s.train_indices) == train and len(np.unique(s.train_indices)) == train
        counts = shard_counts(s.train_indices, pools, size)
        # k distinct shards, whole but for one example from each of the first ``excess`` of them
        assert sorted(counts.tolist()) == [size - 1] * excess + [size] * (k - excess)


def test_shards_label_distribution_is_the_train_histogram_and_test_follows_it(labels, pools) -> None:
    spec = PartitionSpec(kind="shards", classes_per_device=2, train_per_device=700, test_per_device=200)
    for s in keyed(spec, pools):
        train, test = (
            label_histogram(labels[0][s.train_indices], C),
            label_histogram(labels[1][s.test_indices], C),
        )
        np.testing.assert_array_equal(train, s.label_distribution)
        assert np.abs(test - s.label_distribution).max() <= 1 / 200 + 1e-9  # stratified: rounding only
        assert s.preferred_classes == tuple(np.flatnonzero(train).tolist())
        assert len(np.unique(s.test_indices)) == 200


def test_shards_k2_on_fashion_mnist_gives_devices_two_or_three_classes(labels, pools) -> None:
    aligned = PartitionSpec(kind="shards", classes_per_device=2, train_per_device=600)  # 300 divides 6000
    classes = [len(s.preferred_classes) for s in keyed(aligned, pools, 200)]
    assert max(classes) <= 2 and np.mean(classes) > 1.8  # two classes, unless both shards are of one
    straddling = PartitionSpec(kind="shards", classes_per_device=2, train_per_device=700)  # 350 does not
    classes = [len(s.preferred_classes) for s in keyed(straddling, pools, 200)]
    assert max(classes) <= 4 and np.mean([c <= 3 for c in classes]) > 0.75


def test_shards_needs_enough_shards_and_classes(pools) -> None:
    with pytest.raises(ValueError, match="make 1 shards of 30001, fewer than the 2 distinct shards"):
        device_split("a", PartitionSpec(kind="shards", classes_per_device=2, train_per_device=60002), pools)
    for kind in ("shards", "interest"):
        with pytest.raises(ValueError, match="classes_per_device 11 exceeds the dataset's 10 classes"):
            device_split("a", PartitionSpec(kind=kind, classes_per_device=11, train_per_device=11), pools)


# -- device_split: one device from (seed, key) ------------------------------------------------------


def same(a: DeviceSplit, b: DeviceSplit) -> bool:
    return (
        np.array_equal(a.train_indices, b.train_indices)
        and np.array_equal(a.test_indices, b.test_indices)
        and np.array_equal(a.label_distribution, b.label_distribution)
        and a.preferred_classes == b.preferred_classes
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_device_gets_the_same_split_whatever_else_is_assigned_with_it(pools, kind: PartitionKind) -> None:
    spec = PartitionSpec(kind=kind, train_per_device=600, test_per_device=100, seed=5)
    keys = [f"phone-{i}" for i in range(30)]
    together = dict(zip(keys, device_splits(keys, spec, pools), strict=True))
    others = [f"tablet-{i}" for i in range(50)]
    mixed = keys[::-2] + others + keys[-2::-2]
    in_company = dict(zip(mixed, device_splits(mixed, spec, pools), strict=True))
    for key in keys:
        assert same(together[key], in_company[key])
        assert same(together[key], device_split(key, spec, pools))
    assert not same(together["phone-0"], together["phone-1"])  # different keys, different splits
    assert not same(
        together["phone-0"],
        device_split("phone-0", PartitionSpec(kind=kind, seed=6, train_per_device=600), pools),
    )


def test_a_device_gets_the_same_split_in_another_process() -> None:
    """The seed comes from a stable hash of the key, not ``hash()``, which each process salts anew."""
    script = textwrap.dedent(
        """
        import sys, numpy as np
        from service.data.device_split import device_split
        from service.data.pools import ClassPools
        from service.data.spec import PartitionSpec
        labels = np.arange(6000) % 10
        s = device_split("phone-7", PartitionSpec(kind="dirichlet", seed=3), ClassPools.build(labels, labels))
        sys.stdout.write(",".join(map(str, s.train_indices[:20].tolist() + s.test_indices[:5].tolist())))
        """
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    labels = np.arange(6000) % 10
    here = device_split("phone-7", PartitionSpec(kind="dirichlet", seed=3), ClassPools.build(labels, labels))
    assert outputs == {",".join(map(str, here.train_indices[:20].tolist() + here.test_indices[:5].tolist()))}


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "interest"])
def test_device_split_histograms_match_its_label_distribution(labels, pools, kind: PartitionKind) -> None:
    spec = PartitionSpec(kind=kind, train_per_device=600, test_per_device=100, alpha=0.3)
    splits = keyed(spec, pools)
    train = np.array([label_histogram(labels[0][s.train_indices], C) for s in splits])
    test = np.array([label_histogram(labels[1][s.test_indices], C) for s in splits])
    expected = np.array([s.label_distribution for s in splits])
    assert np.abs(train - expected).max() <= 1 / 600 + 1e-9  # rounding only
    assert np.abs(test - expected).max() <= 1 / 100 + 1e-9
    for s in splits:
        assert len(np.unique(s.train_indices)) == 600 and len(np.unique(s.test_indices)) == 100
    if kind != "iid":
        assert np.abs(expected[0] - expected[1]).max() > 0.05  # devices differ


def test_device_split_draws_each_class_uniformly_and_shuffles() -> None:
    """Every example of a class is as likely as any other, and the order carries no class pattern."""
    labels = np.arange(80) % 2  # two classes of 40; a device takes 10 of each (fast path: 1/4 of a pool)
    pools = ClassPools.build(labels, labels)
    splits = keyed(PartitionSpec(kind="iid", train_per_device=20, test_per_device=2), pools, 4000)
    seen = np.bincount(np.concatenate([s.train_indices for s in splits]), minlength=80)
    assert np.abs(seen - 1000).max() < 5 * np.sqrt(1000 * 0.75)  # 4000 * 10 / 40 each; 5 sigma
    first = np.array([labels[s.train_indices[0]] for s in splits])
    assert abs(first.mean() - 0.5) < 0.05


def test_dense_quotas_and_exhausted_reserves_still_give_distinct_reproducible_examples(
    pools, monkeypatch
) -> None:
    """A quota of more than a quarter of its class, or a device whose reserve of redraws runs out, is
    drawn class by class; the result is still without repeats and the same in any company."""
    dense = PartitionSpec(kind="interest", classes_per_device=1, interest_share=1.0, train_per_device=5000)
    monkeypatch.setattr(device_split_module, "_reserve", lambda drawn: 0)  # every repeat exhausts it
    for spec in (dense, PartitionSpec(kind="dirichlet", train_per_device=600)):
        splits = keyed(spec, pools, 8)
        for key, s in zip([f"device-{i}" for i in range(8)], splits, strict=True):
            assert len(np.unique(s.train_indices)) == len(s.train_indices) == spec.train_per_device
            assert len(np.unique(s.test_indices)) == len(s.test_indices)
            assert same(s, device_split(key, spec, pools))


def test_too_many_samples_from_a_class_is_refused_naming_class_split_and_device(pools) -> None:
    one = {"kind": "interest", "classes_per_device": 1, "interest_share": 1.0}
    spec = PartitionSpec(**one, train_per_device=6001)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"class \d needs 6001 examples but has 6000 in the train split \(device 'x'\)"
    ):
        device_split("x", spec, pools)
    spec = PartitionSpec(**one, test_per_device=1001)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"class \d needs 1001 examples but has 1000 in the test split"):
        device_split("x", spec, pools)
    s = device_split("x", PartitionSpec(**one, test_per_device=1001, replace=True), pools)  # type: ignore[arg-type]
    assert len(s.test_indices) == 1001 and len(np.unique(s.test_indices)) < 1001


def test_class_pools_refuse_labels_out_of_range(labels: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\); found 0..9"):
        ClassPools.build(*labels, num_classes=5)
    with pytest.raises(ValueError, match="non-empty 1-D array of integers"):
        ClassPools.build(labels[0].astype(np.float32), labels[1])


def test_device_splits_in_chunks_are_the_same_as_in_one(pools, monkeypatch) -> None:
    spec = PartitionSpec(kind="dirichlet", train_per_device=300, test_per_device=50)
    whole = keyed(spec, pools, 25)
    monkeypatch.setattr(device_split_module, "CHUNK_UNIFORMS", 4000)  # a few devices a chunk
    chunked = keyed(spec, pools, 25)
    assert all(same(a, b) for a, b in zip(whole, chunked, strict=True))


def test_shards_are_dealt_uniformly() -> None:
    labels = np.arange(400) % 4  # 40 shards of 10; a device takes 2
    pools = ClassPools.build(labels, labels)
    spec = PartitionSpec(kind="shards", classes_per_device=2, train_per_device=20, test_per_device=4)
    dealt = np.concatenate(
        [np.unique(pools.train_order.argsort()[s.train_indices] // 10) for s in keyed(spec, pools, 4000)]
    )
    hits = np.bincount(dealt, minlength=40)
    assert np.abs(hits - 200).max() < 5 * np.sqrt(200)  # 4000 * 2 / 40 each; 5 sigma
