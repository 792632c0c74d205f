"""Partitions of the real Fashion-MNIST labels: reproducible, shaped as asked, train and test alike."""

from __future__ import annotations

import numpy as np
import pytest

from service.model.dataset import FashionMNIST
from service.personalization.partition import (
    PartitionSpec,
    balanced_subset,
    class_quotas,
    label_histogram,
    partition,
)

C = 10


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
    [{"kind": "shards"}, {"devices": 0}, {"alpha": 0.0}, {"interest_share": 1.5}, {"train_per_device": 0}],
)
def test_invalid_specs_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        PartitionSpec(**bad)
