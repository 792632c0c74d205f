"""NIID-Bench's partitions split one set of examples: every example on exactly one device, seeded, with
each kind's skew (labels per device, sizes) as the paper defines it. On Fashion-MNIST's real labels."""

from __future__ import annotations

import numpy as np
import pytest

from service.data.disjoint import DisjointKind, deal, partition, plan, stats
from service.model.dataset import FashionMNIST

KINDS: list[DisjointKind] = ["iid", "labels", "dirichlet", "quantity"]


@pytest.fixture(scope="module")
def labels(fashion_mnist: FashionMNIST) -> np.ndarray:
    return np.asarray(fashion_mnist.train_labels)


@pytest.mark.parametrize("kind", KINDS)
def test_every_example_is_on_exactly_one_device(labels: np.ndarray, kind: DisjointKind) -> None:
    parts = partition(labels, 10, kind, seed=3)
    assert len(parts) == 10
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    summary = stats(labels, parts)
    assert summary.distinct_examples == len(labels) == sum(summary.examples)
    assert np.array_equal(summary.counts.sum(axis=0), np.bincount(labels, minlength=10))


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_seed_gives_the_same_split_and_another_seed_another(
    labels: np.ndarray, kind: DisjointKind
) -> None:
    first, again, other = (partition(labels, 10, kind, seed=s) for s in (5, 5, 6))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_label_quantity_gives_each_device_k_labels_its_own_first_and_holds_every_label(
    labels: np.ndarray, k: int
) -> None:
    parts = partition(labels, 10, "labels", labels_per_device=k, seed=0)
    summary = stats(labels, parts)
    assert summary.labels == [k] * 10
    assert all(summary.counts[i, i % 10] > 0 for i in range(10))  # device i holds label i mod 10
    assert summary.labels_on_no_device == []


def test_label_dirichlet_skews_labels_more_as_beta_falls(labels: np.ndarray) -> None:
    skewed = stats(labels, partition(labels, 10, "dirichlet", beta=0.1, seed=0))
    mild = stats(labels, partition(labels, 10, "dirichlet", beta=100.0, seed=0))
    assert min(skewed.examples) >= 10 and min(mild.examples) >= 10
    assert np.mean(skewed.labels) < 7 and mild.labels == [10] * 10
    # label shares on a device: far from uniform under Dir(0.1), near it under Dir(100)
    share = lambda s: s.counts / s.counts.sum(axis=1, keepdims=True)  # noqa: E731
    assert np.abs(share(skewed) - 0.1).max() > 0.3 > np.abs(share(mild) - 0.1).max()


def test_quantity_skew_varies_sizes_but_not_labels(labels: np.ndarray) -> None:
    summary = stats(labels, partition(labels, 10, "quantity", beta=0.5, seed=0))
    assert min(summary.examples) >= 10
    assert max(summary.examples) > 3 * min(summary.examples)
    big = [i for i, n in enumerate(summary.examples) if n >= 1000]
    assert big and all(summary.labels[i] == 10 for i in big)


def test_iid_parts_are_equal_in_size(labels: np.ndarray) -> None:
    assert stats(labels, partition(labels, 7, "iid")).examples == [8572] * 3 + [8571] * 4


def test_fewer_devices_than_labels_leaves_labels_on_no_device_and_says_so() -> None:
    labels = np.repeat(np.arange(10), 5)
    summary = stats(labels, partition(labels, 3, "labels", labels_per_device=1))
    assert summary.labels_on_no_device == list(range(3, 10))


@pytest.mark.parametrize(
    ("parties", "options", "message"),
    [
        (101, {}, "among 101 devices"),
        (5, {"labels_per_device": 11}, "between 1 and the 10 labels"),
        (5, {"beta": 0.0}, "beta must be positive"),
    ],
)
def test_impossible_splits_are_refused_naming_why(parties: int, options: dict, message: str) -> None:
    labels = np.repeat(np.arange(10), 10)
    kind: DisjointKind = "labels" if "labels_per_device" in options else "dirichlet"
    with pytest.raises(ValueError, match=message):
        partition(labels, parties, kind, **options)


def test_label_dirichlet_stops_giving_to_a_device_that_holds_its_even_share(labels: np.ndarray) -> None:
    # A device under N/parties can take at most one more label's examples: that bounds every device.
    bound = len(labels) / 10 + np.bincount(labels).max()
    for seed in range(6):
        assert max(len(p) for p in partition(labels, 10, "dirichlet", beta=0.1, seed=seed)) < bound


def test_label_quantity_draws_niid_benchs_label_sets_for_its_seed(labels: np.ndarray) -> None:
    """NIID-Bench (utils.py, seed 0, 10 parties) gives these #C=2 and #C=3 label sets."""
    c2 = [[0, 6], [1, 6], [2, 0], [3, 4], [4, 8], [5, 7], [6, 4], [7, 5], [8, 9], [9, 3]]
    c3 = [
        [0, 6, 4],
        [1, 8, 7],
        [2, 6, 4],
        [3, 7, 5],
        [4, 9, 3],
        [5, 8, 2],
        [6, 4, 2],
        [7, 1, 9],
        [8, 4, 9],
        [9, 2, 4],
    ]
    for k, expected in ((2, c2), (3, c3)):
        made = plan(labels, 10, "labels", labels_per_device=k, seed=0)
        assert [list(h) for h in made.held] == expected
        summary = stats(labels, deal(made, labels))
        for i, held in enumerate(expected):  # each label split evenly among its holders
            for label in held:
                holders = sum(label in h for h in expected)
                assert abs(summary.counts[i, label] - 6000 / holders) <= 1
