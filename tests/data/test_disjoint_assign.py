"""The disjoint partitions as the datasets API deals them: assignment files that together hold every
example once, device i the i-th sorted ID, test data dealt by the train plan, statistics, the heatmap,
feature noise, and refusals naming the setting. On a dataset cut from Fashion-MNIST (real images and
labels), stored in ``tmp_path`` with a group array of writers."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from service.data.assignment import read_assignment
from service.data.dataset import Dataset
from service.data.datasets import DatasetStore
from service.data.disjoint_assign import (
    DISJOINT_SCHEMES,
    DisjointScheme,
    DisjointSpec,
    assign_disjoint,
    split_dataset,
)
from service.data.heatmap import binned, heatmap_png
from service.data.noise import FeatureNoise, batch, gather
from service.errors import InvalidPartition
from service.model.dataset import FashionMNIST, one_hot
from service.runtime import SignatureSpec, TensorSpec

TRAIN, TEST, WRITERS = 6000, 1000, 120
IDS = ["zeta", "alpha", "mike", "delta", "kilo", "bravo", "echo", "lima", "oscar", "golf", "hotel", "india"]
"""Not in order (device i is the i-th sorted); more than the 10 labels, so #C=k holds every label."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, fashion_mnist: FashionMNIST) -> Dataset:
    rng = np.random.default_rng(0)
    arrays = {
        "train/x": fashion_mnist.train_images[:TRAIN],
        "train/y": one_hot(fashion_mnist.train_labels[:TRAIN]),
        "train/writer": rng.integers(0, WRITERS, TRAIN),
        "test/x": fashion_mnist.test_images[:TEST],
        "test/y": one_hot(fashion_mnist.test_labels[:TEST]),
        "test/writer": rng.integers(0, WRITERS, TEST),
    }
    store = DatasetStore(tmp_path_factory.mktemp("store"), 1 << 30, builtins={})
    return store.add("fm", arrays, "y", group="writer")


def assigned(tmp_path: Path, dataset: Dataset, spec: DisjointSpec, ids: list[str] = IDS) -> dict:
    for device_id in ids:
        (tmp_path / device_id).mkdir(parents=True, exist_ok=True)
    assign_disjoint(ids, tmp_path.joinpath, dataset, spec, tmp_path)
    found = {device_id: read_assignment(tmp_path / device_id, tmp_path) for device_id in ids}
    assert all(a is not None for a in found.values())
    return found


def labels_of(dataset: Dataset, split: str, rows: np.ndarray) -> np.ndarray:
    return dataset.labels(split)[rows]


@pytest.mark.parametrize("scheme", DISJOINT_SCHEMES)
def test_the_devices_files_hold_every_example_once(
    tmp_path: Path, dataset: Dataset, scheme: DisjointScheme
) -> None:
    found = assigned(tmp_path, dataset, DisjointSpec(scheme, seed=2))
    for split, count in (("train", TRAIN), ("test", TEST)):
        parts = [getattr(a, split).astype(np.int64) for a in found.values()]
        joined = np.concatenate(parts)
        assert len(joined) == len(np.unique(joined)), f"{split}: an example on two devices"
        if scheme == "natural":  # a writer of the test split only is on no device
            assert set(joined) <= set(range(count))
        else:
            assert np.array_equal(np.sort(joined), np.arange(count)), f"{split}: an example on none"
    assert all(a.scheme == scheme and a.parameters["parties"] == len(IDS) for a in found.values())


def test_device_i_is_the_ith_of_the_sorted_ids(tmp_path: Path, dataset: Dataset) -> None:
    spec = DisjointSpec("label_quantity", labels_per_device=1)
    found = assigned(tmp_path, dataset, spec)
    dealt = split_dataset(dataset, spec, len(IDS))
    for i, device_id in enumerate(sorted(IDS)):
        assignment = found[device_id]
        assert assignment.parameters["device"] == i
        assert np.array_equal(assignment.train, dealt.train[i])
        assert set(labels_of(dataset, "train", assignment.train)) == {i % 10}  # #C=1: label i mod 10


def test_a_shard_writes_its_own_devices_parts_of_the_whole_partition(
    tmp_path: Path, dataset: Dataset
) -> None:
    spec = DisjointSpec("label_dirichlet", beta=0.3, seed=5)
    whole = assigned(tmp_path / "whole", dataset, spec)
    part = tmp_path / "part"
    part.mkdir()
    mine = IDS[:3]
    for device_id in mine:
        (part / device_id).mkdir()
    assign_disjoint(mine, part.joinpath, dataset, spec, part, parties=IDS)
    for device_id in mine:
        alone = read_assignment(part / device_id, part)
        assert alone is not None and np.array_equal(alone.train, whole[device_id].train)
    with pytest.raises(InvalidPartition, match="'nobody' is not among the partition's parties"):
        assign_disjoint(["nobody"], part.joinpath, dataset, spec, part, parties=IDS)


def shares(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels, minlength=10) / max(1, len(labels))


def test_a_devices_test_data_follow_its_train_skew(tmp_path: Path, dataset: Dataset) -> None:
    found = assigned(tmp_path, dataset, DisjointSpec("label_dirichlet", beta=0.1, seed=1))
    own, others = [], []
    for device_id, a in found.items():
        test = shares(labels_of(dataset, "test", a.test))
        own.append(np.abs(test - shares(labels_of(dataset, "train", a.train))).sum())
        others += [
            np.abs(test - shares(labels_of(dataset, "train", b.train))).sum()
            for other, b in found.items()
            if other != device_id
        ]
    # Dir(0.1) makes devices' mixes far apart; a device's test mix is its own train mix up to sampling
    assert max(own) < 0.25 < min(others), (own, min(others))
    quantity = assigned(tmp_path, dataset, DisjointSpec("label_quantity", labels_per_device=2, seed=1))
    for a in quantity.values():
        held = set(a.preferred_classes)
        assert set(labels_of(dataset, "train", a.train)) == held == set(labels_of(dataset, "test", a.test))


def test_natural_puts_each_writers_examples_on_one_device(tmp_path: Path, dataset: Dataset) -> None:
    found = assigned(tmp_path, dataset, DisjointSpec("natural", seed=3))
    owner: dict[int, str] = {}
    for device_id, a in found.items():
        for split, rows in (("train", a.train), ("test", a.test)):
            for writer in set(dataset.groups(split)[rows].tolist()):
                assert owner.setdefault(writer, device_id) == device_id, f"writer {writer} on two devices"
    assert "writer" not in dataset.split("train").arrays  # not a model input: kept apart


def test_statistics_count_examples_labels_and_labels_on_no_device(dataset: Dataset) -> None:
    dealt = split_dataset(dataset, DisjointSpec("label_quantity", labels_per_device=1), 3)
    described = dealt.describe()
    train = described["train"]
    assert isinstance(train, dict)
    assert train["labels_on_no_device"] == list(range(3, 10))  # 3 devices of #C=1 hold labels 0, 1, 2
    assert train["labels_per_device"] == [1, 1, 1]
    counts = np.bincount(dataset.labels("train"), minlength=10)
    assert train["examples_per_device"] == counts[:3].tolist() and train["distinct_examples"] == sum(
        counts[:3]
    )
    homogeneous = split_dataset(dataset, DisjointSpec("homogeneous"), 7).describe()["train"]
    assert isinstance(homogeneous, dict)
    assert homogeneous["distinct_examples"] == homogeneous["examples"] == TRAIN
    assert homogeneous["labels_on_no_device"] == [] and homogeneous["examples_min"] == TRAIN // 7
    assert homogeneous["examples_per_device"] == [858] * 1 + [857] * 6


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize(("scheme", "devices"), [("label_dirichlet", 10), ("homogeneous", 5000)])
def test_the_heatmap_is_a_png_of_bounded_size(dataset: Dataset, scheme: DisjointScheme, devices: int) -> None:
    dealt = split_dataset(dataset, DisjointSpec(scheme), devices)
    width, height = png_size(heatmap_png(dealt.train_stats.counts, "a title"))
    assert 200 < width <= 720 and 200 < height <= 560


def test_many_devices_are_summed_into_a_bounded_number_of_rows() -> None:
    counts = np.random.default_rng(0).integers(0, 50, (5000, 10))
    rows, per = binned(counts, 100, 0)
    assert rows.shape == (100, 10) and per == 50 and rows.sum() == counts.sum()
    assert np.array_equal(rows[1], counts[50:100].sum(axis=0))
    assert binned(counts[:80], 100, 0)[1] == 1


def noisy_devices(tmp_path: Path, dataset: Dataset, seed: int = 0) -> dict:
    return assigned(tmp_path, dataset, DisjointSpec("feature_noise", noise=0.3, seed=seed))


class Data:
    def __init__(self, assignment, dataset: Dataset) -> None:
        self.assignment, self.dataset = assignment, dataset


def test_feature_noise_grows_with_the_device_index_and_spares_the_labels(
    tmp_path: Path, dataset: Dataset
) -> None:
    found = noisy_devices(tmp_path, dataset)
    for i, device_id in enumerate(sorted(IDS)):
        a = found[device_id]
        assert a.parameters["sigma"] == pytest.approx(0.3 * i / (len(IDS) - 1))
        clean = dataset.split("test").gather(a.test)
        noisy = gather(Data(a, dataset), "test")
        assert np.array_equal(noisy["y"], clean["y"])
        measured = float(np.std(noisy["x"] - clean["x"]))
        assert measured == pytest.approx(a.parameters["sigma"], rel=0.05, abs=1e-9)
        assert noisy["x"].dtype == np.float32 and (i == 0) == (FeatureNoise.of(a) is None)
    assert float(noisy["x"].max()) > 1.0  # not clipped to the images' [0, 1]


def test_feature_noise_is_reproducible_and_differs_per_device_and_per_seed(
    tmp_path: Path, dataset: Dataset
) -> None:
    found, again = noisy_devices(tmp_path / "a", dataset), noisy_devices(tmp_path / "b", dataset)
    signature = SignatureSpec(
        "train",
        (
            TensorSpec("x", np.dtype(np.float32), (-1, 28, 28)),
            TensorSpec("y", np.dtype(np.float32), (-1, 10)),
        ),
        (),
    )
    rows = np.arange(64)
    split = dataset.split("train")

    def noise_of(assignment, participant: int) -> np.ndarray:
        rng = np.random.default_rng([participant])
        return batch(split, signature, rows, Data(assignment, dataset), rng)["x"] - split.arrays["x"][rows]

    last, before_last = found[sorted(IDS)[-1]], found[sorted(IDS)[-2]]
    assert np.array_equal(noise_of(last, 1), noise_of(again[sorted(IDS)[-1]], 1))  # the same seeds

    def correlation(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    assert abs(correlation(noise_of(last, 1), noise_of(last, 2))) < 0.05  # another participant seed
    assert abs(correlation(noise_of(last, 1), noise_of(before_last, 1))) < 0.05  # another device
    assert np.array_equal(gather(Data(last, dataset), "test")["x"], gather(Data(last, dataset), "test")["x"])
    rng = np.random.default_rng([1])
    first, second = (batch(split, signature, rows, Data(last, dataset), rng)["x"] for _ in range(2))
    assert not np.array_equal(first, second)  # redrawn for every batch


@pytest.mark.parametrize(
    ("spec", "parties", "message"),
    [
        ({"scheme": "label_quantity", "labels_per_device": 11}, 5, "labels_per_device must be between 1 and"),
        ({"scheme": "homogeneous"}, TRAIN + 1, f"cannot split {TRAIN} examples among {TRAIN + 1} devices"),
        ({"scheme": "natural"}, WRITERS + 1, f"cannot split {WRITERS} groups"),
        ({"scheme": "natural", "group": "user"}, 5, "no group array 'user'"),
        ({"scheme": "label_dirichlet", "beta": 0.001}, 500, "left a device with fewer than"),
    ],
)
def test_a_partition_that_cannot_be_made_is_refused_naming_the_setting(
    dataset: Dataset, spec: dict, parties: int, message: str
) -> None:
    with pytest.raises(InvalidPartition, match=message):
        split_dataset(dataset, DisjointSpec(**spec), parties)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"beta": 0.0}, "beta must be a positive"),
        ({"noise": -0.1}, "noise must be zero or more"),
        ({"labels_per_device": 0}, "labels_per_device must be at least 1"),
        ({"beta": float("nan")}, "beta"),
    ],
)
def test_bad_parameters_are_refused_naming_them(options: dict, message: str) -> None:
    with pytest.raises(InvalidPartition, match=message):
        DisjointSpec("label_dirichlet", **options)
