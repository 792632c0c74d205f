"""An added model's trial run in a process of its own (``service.runtime.trials``): a model that kills the
trial process, or keeps it past its time limit, is refused naming why, the process is replaced, and the
service's own process never makes an interpreter of it.

Which defects only a trial finds changes as the verifier learns (the mutation fuzzer reports them as
"trial run" refusals); here the trial process is killed from outside while it runs, as such a model
would kill it, and a limit of a millisecond stands for a model that loops.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.errors import InvalidModel
from service.fleet import Fleet
from service.fleet.models import embedded_model_path
from service.runtime.trials import Trials
from tests.regressor import build_regressor

DEADLINE = 120.0


@pytest.fixture
def trials() -> Iterator[Trials]:
    running = Trials()
    yield running
    running.close()


def killed_during_its_trial(trials: Trials, content: bytes, how: signal.Signals) -> BaseException | None:
    """Admit ``content`` in a thread, kill the trial process by ``how`` while it runs; what admit raised."""
    raised: list[BaseException | None] = [None]

    def admit() -> None:
        try:
            trials.admit("victim", content)
        except BaseException as exc:  # handed to the test
            raised[0] = exc

    thread = threading.Thread(target=admit)
    thread.start()
    deadline = time.monotonic() + DEADLINE
    while trials._process is None or trials._process.pid is None:  # started by admit
        assert time.monotonic() < deadline, "no trial process started"
        time.sleep(0.01)
    os.kill(trials._process.pid, how)
    thread.join(DEADLINE)
    assert not thread.is_alive(), "admit did not return after its trial process died"
    return raised[0]


@pytest.mark.parametrize("how", [signal.SIGSEGV, signal.SIGABRT])
def test_a_model_whose_trial_process_dies_is_refused_naming_the_signal(
    trials: Trials, how: signal.Signals
) -> None:
    embedded = embedded_model_path().read_bytes()
    raised = killed_during_its_trial(trials, embedded, how)
    assert isinstance(raised, InvalidModel), raised
    assert (
        f"on a trial run in a process of its own, its worker process was killed by {how.name}"
        in raised.message
    )
    trials.admit("embedded", embedded)  # a new trial process, and the model passes it


def test_a_trial_past_its_time_limit_is_refused_and_its_process_killed() -> None:
    trials = Trials(seconds=0.001)
    try:
        with pytest.raises(InvalidModel, match="ran past its time limit"):
            trials.admit("slow", embedded_model_path().read_bytes())
        assert trials._process is None
    finally:
        trials.close()


def test_the_fleet_refuses_a_model_that_fails_its_trial_and_keeps_no_file_of_it(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path / "data")
    try:
        fleet.models.trials = Trials(seconds=0.001)
        with pytest.raises(InvalidModel, match="trial run"):
            fleet.models.add("refused", build_regressor())
        assert "refused" not in fleet.models.names()
        fleet.models.trials = Trials()
        assert fleet.models.add("admitted", build_regressor()).name == "admitted"
    finally:
        fleet.close()
