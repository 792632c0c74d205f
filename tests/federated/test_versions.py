"""Model versions: version 0 is the model's own weights, retention is bounded, pinned versions stay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.errors import VersionNotFound
from service.federated.federation import Federation
from service.fleet import Fleet

MODEL = "fashion_mnist"


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    fleet = Fleet(tmp_path / "data")
    federated = Federation(fleet, keep_versions=3)
    yield federated
    federated.close()
    fleet.close()


def test_version_zero_is_the_models_own_weights(federation: Federation) -> None:
    assert federation.versions.latest(MODEL) == 0
    weights = federation.version_weights(MODEL, 0)
    interpreter = federation.fleet.models.get(MODEL).interpreter()
    x = np.random.default_rng(0).random((4, 28, 28), dtype=np.float32)
    fresh = interpreter.run("infer", {"x": x})["logits"]
    hidden = np.maximum(x.reshape(4, -1) @ weights["dense_1_kernel"] + weights["dense_1_bias"], 0)
    np.testing.assert_allclose(fresh, hidden @ weights["dense_2_kernel"] + weights["dense_2_bias"], atol=1e-4)


def test_retention_keeps_the_newest_and_version_zero_and_what_is_pinned(federation: Federation) -> None:
    base = federation.version_weights(MODEL, 0)
    made = []
    with federation.versions.pinned(MODEL, 2):
        for step in range(6):
            changed = {k: v + np.float32(step + 1) for k, v in base.items()}
            made.append(federation.store_version(MODEL, changed, {"round": step + 1}))
        kept = [v.number for v in federation.versions.list(MODEL)]
    assert made == [1, 2, 3, 4, 5, 6]
    assert kept == [0, 2, 4, 5, 6]  # the newest 3, version 0, and the pinned 2
    np.testing.assert_array_equal(
        federation.version_weights(MODEL, 6)["dense_2_bias"], base["dense_2_bias"] + 6
    )
    with pytest.raises(VersionNotFound, match="no version 1"):
        federation.versions.path(MODEL, 1)
    federation.store_version(MODEL, base, {})
    assert [v.number for v in federation.versions.list(MODEL)] == [0, 5, 6, 7]  # unpinned, 2 went too
