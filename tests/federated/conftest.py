"""A federation over a small server-side dataset (400 train and 100 test samples of Fashion-MNIST)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.federated.federation import Federation
from service.fleet import Fleet
from service.model.dataset import FashionMNIST, one_hot

DATASET = "small"


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory, fashion_mnist: FashionMNIST) -> Iterator[Federation]:
    fleet = Fleet(tmp_path_factory.mktemp("federation") / "data")
    federated = Federation(fleet, round_workers=2)
    add_small_dataset(federated, fashion_mnist)
    yield federated
    federated.close()
    fleet.close()


def add_small_dataset(federation: Federation, fashion_mnist: FashionMNIST) -> None:
    federation.datasets.add(
        DATASET,
        {
            "train/x": fashion_mnist.train_images[:400],
            "train/y": one_hot(fashion_mnist.train_labels[:400]),
            "test/x": fashion_mnist.test_images[:100],
            "test/y": one_hot(fashion_mnist.test_labels[:100]),
        },
        label="y",
    )
