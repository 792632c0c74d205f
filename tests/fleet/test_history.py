"""The loss history is a log (``history.jsonl``): appended at each write, never rewritten until it is
long, readable after a crash mid-append, and read from an earlier version's ``history.json``.

Real files in ``tmp_path`` and real interpreters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from service.errors import StorageFull
from service.fleet import Fleet
from service.fleet.device import Device
from service.fleet.record import HISTORY, HISTORY_COMPACT_LINES, HISTORY_LIMIT, LEGACY_HISTORY
from tests.fleet.test_recovery import file_size_limit

Batch = tuple[np.ndarray, np.ndarray]


def train(device: Device, batch: Batch, steps: int = 1) -> None:
    for _ in range(steps):
        device.run("train", {"x": batch[0], "y": batch[1]})


def steps(device: Device) -> list[object]:
    return [entry["step"] for entry in device.history()]


def logged_steps(path: Path) -> list[object]:
    return [orjson.loads(line)["step"] for line in path.read_bytes().splitlines()]


def entry(step: int) -> dict[str, object]:
    return {"step": step, "loss": 0.5, "source": "train", "at": 1.0}


def test_each_write_appends_the_steps_trained_since_the_last(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path)
    device = fleet.create("phone")
    path = device.directory / HISTORY
    train(device, train_batch, steps=2)
    assert not path.exists() and steps(device) == [1, 2]  # not written yet, shown all the same
    device.restart()
    first = path.read_bytes()
    assert logged_steps(path) == [1, 2]
    inode = path.stat().st_ino
    train(device, train_batch)
    device.restart()
    assert path.read_bytes().startswith(first) and path.stat().st_ino == inode  # appended, not replaced
    assert steps(device) == [1, 2, 3]
    fleet.close()
    assert steps(Fleet(tmp_path).get("phone")) == [1, 2, 3]


def test_a_line_torn_by_a_crash_is_ignored_and_cut_off_by_the_next_append(
    tmp_path: Path, train_batch: Batch
) -> None:
    fleet = Fleet(tmp_path)
    device = fleet.create("phone")
    train(device, train_batch, steps=2)
    device.restart()
    fleet.close()
    path = tmp_path / "devices" / "phone" / HISTORY
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"step": 3, "lo')  # a crash in the middle of appending step 3

    device = Fleet(tmp_path).get("phone")
    assert steps(device) == [1, 2] and device.info().problem is None
    train(device, train_batch)
    device.restart()
    assert path.read_bytes().startswith(whole) and b'"lo\n' not in path.read_bytes()
    assert steps(device) == [1, 2, 3]


def test_a_full_disk_while_appending_leaves_the_history_as_it_was(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path)
    device = fleet.create("phone")
    train(device, train_batch, steps=2)
    device.restart()
    path = device.directory / HISTORY
    before = path.read_bytes()
    train(device, train_batch, steps=2)
    with file_size_limit(len(before) + 40), pytest.raises(StorageFull, match=r"devices/phone/history\.jsonl"):
        device.restart()  # the record fits; the two new lines do not, only part of them was written
    assert path.read_bytes() == before
    device.restart()
    assert steps(device) == [1, 2, 3, 4]


def test_a_history_of_an_earlier_version_is_read_then_replaced_by_the_log(
    tmp_path: Path, train_batch: Batch
) -> None:
    fleet = Fleet(tmp_path)
    fleet.create("phone")
    fleet.close()
    directory = tmp_path / "devices" / "phone"
    (directory / LEGACY_HISTORY).write_bytes(orjson.dumps([entry(1), entry(2)]))

    device = Fleet(tmp_path).get("phone")
    assert steps(device) == [1, 2]
    train(device, train_batch)  # its record counts no step: this one is step 1 again
    device.restart()
    assert not (directory / LEGACY_HISTORY).exists()
    assert logged_steps(directory / HISTORY) == [1, 2, 1]


def test_a_long_log_is_rewritten_with_its_last_entries(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path)
    fleet.create("phone")
    fleet.close()
    path = tmp_path / "devices" / "phone" / HISTORY
    path.write_bytes(b"".join(orjson.dumps(entry(i)) + b"\n" for i in range(HISTORY_COMPACT_LINES)))

    device = Fleet(tmp_path).get("phone")
    assert len(device.history()) == HISTORY_LIMIT
    train(device, train_batch)
    device.restart()
    lines = path.read_bytes().splitlines()
    assert len(lines) == HISTORY_LIMIT
    assert orjson.loads(lines[0])["step"] == HISTORY_COMPACT_LINES - HISTORY_LIMIT + 1
    assert steps(device)[-2:] == [HISTORY_COMPACT_LINES - 1, 1]
