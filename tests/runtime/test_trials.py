"""An added model's trial run in a process of its own (``service.runtime.trials``): what the static checks
cannot see (an operator fed a tensor of the right type and the wrong shape aborts TFLite's planner) is
refused naming the signal, and the service's process never makes an interpreter of it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.errors import InvalidModel
from service.fleet import Fleet
from service.fleet.models import embedded_model_path
from service.runtime.inspection import check_operators
from service.runtime.trials import Trials
from tests.hostile import edit


def fed_the_wrong_shape(content: bytes) -> bytes:
    """The embedded model with the train subgraph's SUM (operator 38) fed the input images: same type,
    another shape. Found by the mutation fuzzer (seed 0, mutant 247): the interpreter aborts."""

    def change(model: Any) -> None:
        model.subgraphs[3].operators[38].inputs[0] = 0

    return edit(content, change)


@pytest.fixture(scope="module")
def trials() -> Iterator[Trials]:
    running = Trials()
    yield running
    running.close()


def test_a_model_that_aborts_on_its_trial_is_refused_and_the_next_trial_runs(trials: Trials) -> None:
    embedded = embedded_model_path().read_bytes()
    aborts = fed_the_wrong_shape(embedded)
    check_operators("aborts", aborts)  # the static checks cannot see it
    with pytest.raises(InvalidModel, match=r"model 'aborts' is refused: on a trial run .*SIGABRT"):
        trials.admit("aborts", aborts)
    started = time.monotonic()
    trials.admit("embedded", embedded)  # a new trial process, then the model passes
    assert time.monotonic() - started < 120


def test_the_fleet_refuses_such_a_model_and_keeps_no_file_of_it(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path / "data")
    try:
        with pytest.raises(InvalidModel, match="trial run"):
            fleet.models.add("aborts", fed_the_wrong_shape(embedded_model_path().read_bytes()))
        assert "aborts" not in fleet.models.names()
        assert fleet.create("still-here").load().name == "fashion_mnist"
    finally:
        fleet.close()
