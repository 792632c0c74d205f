"""A round participant's counters (record and loss history) are on disk by the round's end, with its
checkpoint: what the round trained is counted in the files the next process reads."""

from __future__ import annotations

from pathlib import Path

import orjson

from service.data.spec import PartitionSpec
from service.federated.federation import Federation
from service.federated.local import LocalTraining
from service.federated.spec import RoundSpec
from service.fleet.record import HISTORY, RECORD
from tests.federated.conftest import DATASET

MODEL = "fashion_mnist"
WAIT = 180.0


def on_disk(directory: Path) -> tuple[int, list[int]]:
    """The train steps in the record on disk, and the steps in the history file."""
    record = orjson.loads((directory / RECORD).read_bytes())
    history = [orjson.loads(line)["step"] for line in (directory / HISTORY).read_bytes().splitlines()]
    return record["train_steps"], history


def test_a_round_writes_its_participants_counters_by_its_end(federation: Federation) -> None:
    ids = [f"counted-{i}" for i in range(3)]
    federation.fleet.create_many(ids)
    federation.assign(DATASET, ids, PartitionSpec("iid", 3, 40, 10, seed=1))
    spec = RoundSpec(
        MODEL, tuple(ids), rounds=2, training=LocalTraining(1, 20), start_version=0, device_weights="saved"
    )
    view = federation.rounds.wait(str(federation.rounds.start(spec)["id"]), WAIT)
    assert view["state"] == "succeeded", view
    for device_id in ids:
        device = federation.fleet.get(device_id)
        assert not device.ledger.record_dirty and not device.ledger.history_dirty
        assert on_disk(device.directory) == (4, [1, 2, 3, 4])  # 2 rounds x 2 batches
