"""Cancelling a run that has just ended: while its end is being recorded it is still held in memory, in its
final state, and a cancel then says it ended (409), as it does once the record is written."""

from __future__ import annotations

import threading

import pytest

from service.data.spec import PartitionSpec
from service.errors import RoundEnded
from service.federated.federation import Federation
from service.federated.local import LocalTraining
from service.federated.runs import Run
from service.federated.spec import RoundSpec
from tests.federated.conftest import DATASET

MODEL = "fashion_mnist"


def test_a_run_whose_end_is_being_recorded_cannot_be_cancelled(
    federation: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = ["ending-0", "ending-1"]
    federation.fleet.create_many(ids)
    federation.assign(DATASET, ids, PartitionSpec("iid", 2, 20, 5, seed=2))
    runner = federation.rounds
    recording, release = threading.Event(), threading.Event()
    write = runner.records.write

    def slow_final_write(run: Run) -> None:
        if run.state not in ("queued", "running"):  # the final record: hold it until the test has asked
            recording.set()
            assert release.wait(60)
        write(run)

    monkeypatch.setattr(runner.records, "write", slow_final_write)
    run_id = str(
        runner.start(RoundSpec(MODEL, tuple(ids), training=LocalTraining(1, 10), start_version=0))["id"]
    )
    try:
        assert recording.wait(120), "the run did not end"
        assert runner.get(run_id)["state"] == "succeeded"
        with pytest.raises(RoundEnded, match="already ended"):
            runner.cancel(run_id)
    finally:
        release.set()
    assert runner.wait(run_id, 60)["state"] == "succeeded"
