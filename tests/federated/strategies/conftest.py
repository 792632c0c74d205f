"""A federation whose model carries the strategies' signatures: the suite's small MLP built by our
pipeline (``tiny_build``; the embedded default predates them), over 400 train and 100 test samples of
Fashion-MNIST."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.federated.federation import Federation
from service.fleet import Fleet
from service.model.build import BuildResult
from service.model.dataset import FashionMNIST
from tests.federated.conftest import DATASET, add_small_dataset

MODEL = "mlp"


@pytest.fixture(scope="session")
def strategy_model(tiny_build: BuildResult) -> BuildResult:
    return tiny_build


@pytest.fixture(scope="module")
def strategy_federation(
    tmp_path_factory: pytest.TempPathFactory, fashion_mnist: FashionMNIST, strategy_model: BuildResult
) -> Iterator[Federation]:
    fleet = Fleet(tmp_path_factory.mktemp("strategies") / "data")
    fleet.models.add(MODEL, strategy_model.model)
    federated = Federation(fleet, round_workers=2)
    add_small_dataset(federated, fashion_mnist)
    yield federated
    federated.close()
    fleet.close()


__all__ = ["DATASET", "MODEL"]
