"""Every failure on disk is recoverable and honestly reported: corrupt files, a full disk, a killed delete.

Real files in ``tmp_path`` and real interpreters. A full disk is the file size limit (``RLIMIT_FSIZE``,
with SIGXFSZ ignored, as the server does): writes past it fail with EFBIG, in Python and in TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from service.errors import (
    CorruptState,
    DeviceExists,
    DeviceNotFound,
    InvalidRequest,
    LimitExceeded,
    StorageError,
    StorageFull,
)
from service.fleet import Fleet
from service.fleet.device import Device
from service.fleet.jobs import JOBS_FILE
from service.fleet.models import embedded_model_path
from service.fleet.record import CHECKPOINT, HISTORY, LEGACY_HISTORY, RECORD
from service.storage import write_atomic

Batch = tuple[np.ndarray, np.ndarray]
REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """A disk that is full past ``limit`` bytes per file, for this process, restored afterwards."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, previous[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous)
        signal.signal(signal.SIGXFSZ, handler)


def logits(device: Device, x: np.ndarray) -> np.ndarray:
    return device.run("infer", {"x": x})["logits"]


def train(device: Device, batch: Batch, steps: int = 1) -> None:
    for _ in range(steps):
        device.run("train", {"x": batch[0], "y": batch[1]})


def assert_no_absolute_paths(message: str | None, tmp_path: Path) -> None:
    assert message
    for root in {str(tmp_path), os.path.realpath(tmp_path)}:
        assert root not in message, message


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def legacy(history: Path, content: bytes) -> None:
    """The history as an earlier version wrote it (``history.json``), holding ``content``."""
    history.unlink()
    (history.parent / LEGACY_HISTORY).write_bytes(content)


CORRUPTIONS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "device.json garbage": (RECORD, lambda p: p.write_bytes(b"\x00\xffnot json{")),
    "device.json truncated": (RECORD, truncate),
    "device.json missing": (RECORD, lambda p: p.unlink()),  # as a crash mid-delete of old left it
    "device.json not a record": (RECORD, lambda p: p.write_text('{"id": "victim", "model": 3}')),
    # A last line without its newline was torn by a crash mid-append: ignored, so these end in one.
    "history.jsonl garbage": (HISTORY, lambda p: p.write_bytes(b"[{]\n")),
    "history.jsonl cut mid-line": (HISTORY, lambda p: p.write_bytes(p.read_bytes()[:100] + b"\n")),
    "history.jsonl not a history": (HISTORY, lambda p: p.write_text('{"step": "one"}\n')),
    "history.jsonl time out of range": (
        HISTORY,
        lambda p: p.write_text('{"step": 1, "loss": 0.5, "source": "train", "at": 1e20}\n'),
    ),
    "history.json of an earlier version garbage": (HISTORY, lambda p: legacy(p, b"[{]")),
    "history.json of an earlier version truncated": (
        HISTORY,
        lambda p: legacy(p, b'[{"step": 1, "loss": 0.5, "source": "train", "at": 1.0}, {"step'),
    ),
    "checkpoint garbage": (CHECKPOINT, lambda p: p.write_bytes(b"garbage" * 1000)),
    "checkpoint truncated": (CHECKPOINT, truncate),
    "jobs.json garbage": (JOBS_FILE, lambda p: p.write_bytes(b'[{"id": ')),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_corrupt_file_is_shown_and_reset_recovers_the_device(
    tmp_path: Path, train_batch: Batch, case: str
) -> None:
    x = train_batch[0]
    fleet = Fleet(tmp_path)
    fresh, other, victim = fleet.create_many(["fresh", "other", "victim"])
    for device in (other, victim):
        train(device, train_batch, steps=2)
        device.save()
    baseline, others = logits(fresh, x), logits(other, x)
    fleet.close()
    name, corrupt = CORRUPTIONS[case]
    corrupt(tmp_path / "devices" / "victim" / name)

    fleet = Fleet(tmp_path)
    infos = [device.info() for device in fleet.page().devices]  # the listing never raises
    assert [info.id for info in infos] == ["fresh", "other", "victim"]
    victim = fleet.get("victim")
    if name == JOBS_FILE:
        assert fleet.jobs.jobs(victim) == []  # set aside by the jobs module
    else:
        with pytest.raises(CorruptState) as raised:
            train(victim, train_batch)
        assert_no_absolute_paths(raised.value.message, tmp_path)
        problem = victim.info().problem
        assert_no_absolute_paths(problem, tmp_path)
        assert name.split(".")[0] in str(problem) and "reset" in str(problem)

    fleet.reset(victim)
    info = victim.info()
    assert (info.problem, info.has_checkpoint, info.train_steps, info.model) == (
        None,
        False,
        0,
        "fashion_mnist",
    )
    np.testing.assert_array_equal(logits(victim, x), baseline)
    train(victim, train_batch)
    np.testing.assert_array_equal(logits(fleet.get("other"), x), others)  # untouched
    fleet.close()

    reopened = Fleet(tmp_path).get("victim")
    assert (reopened.info().problem, reopened.info().train_steps) == (None, 1)
    assert [entry["step"] for entry in reopened.history()] == [1]


def test_reset_of_an_unreadable_record_keeps_the_model_it_still_names(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.models.add("copy", embedded_model_path().read_bytes())
    fleet.create_many(["named", "garbled"], model="copy")
    fleet.close()
    (tmp_path / "devices" / "named" / RECORD).write_text('{"model": "copy"}')  # fields missing
    (tmp_path / "devices" / "garbled" / RECORD).write_text('{"model": "co')
    fleet = Fleet(tmp_path)
    for device_id, model in (("named", "copy"), ("garbled", "fashion_mnist")):
        device = fleet.get(device_id)
        fleet.reset(device)
        assert (device.info().model, device.info().problem) == (model, None)


def test_a_train_step_that_cannot_be_recorded_is_not_applied(tmp_path: Path, train_batch: Batch) -> None:
    """A retry must not apply a step twice: the call fails before the interpreter runs, or succeeds."""
    fleet = Fleet(tmp_path)
    device = fleet.create("phone")
    train(device, train_batch)
    device.restart()  # the history is written, and leaves memory
    (device.directory / HISTORY).write_bytes(b"[{\n")
    before = logits(device, train_batch[0])  # inference needs no history
    with pytest.raises(CorruptState, match=r"devices/phone/history\.jsonl"):
        train(device, train_batch)
    np.testing.assert_array_equal(logits(device, train_batch[0]), before)
    assert device.info().train_steps == 1


def test_failed_writes_during_training_count_every_step_once(tmp_path: Path, train_batch: Batch) -> None:
    """Writes that fail around training calls (an eviction's spill, a save) leave the weights and the
    step counts consistent, so a client retrying the failed call applies nothing twice."""
    capped = Fleet(tmp_path / "capped", max_resident=1)
    twins = Fleet(tmp_path / "twins")
    for fleet in (capped, twins):
        fleet.create_many(["a", "b"])
    a, b = capped.get("a"), capped.get("b")
    train(a, train_batch)
    with file_size_limit(100_000):  # no room for a's spill (~400 KB)
        train(b, train_batch)  # evicts a: its spill fails, a stays resident; b's step runs once
        assert a.resident
        with pytest.raises(StorageFull):
            a.save()
    a.save()  # the retry, with room again
    for device_id in ("a", "b"):
        train(twins.get(device_id), train_batch)
        np.testing.assert_array_equal(
            logits(capped.get(device_id), train_batch[0]), logits(twins.get(device_id), train_batch[0])
        )
        assert capped.get(device_id).info().train_steps == 1
    capped.close()
    assert Fleet(tmp_path / "capped").get("a").info().train_steps == 1


def test_a_full_disk_during_save_is_storage_full_and_keeps_the_previous_checkpoint(
    tmp_path: Path, train_batch: Batch
) -> None:
    fleet = Fleet(tmp_path)
    device = fleet.create("phone")
    train(device, train_batch)
    device.save()
    saved = device.checkpoint_path.read_bytes()
    saved_logits = logits(device, train_batch[0])
    train(device, train_batch)
    with file_size_limit(100_000), pytest.raises(StorageFull) as raised:
        device.save()
    assert "devices/phone/checkpoint.ckpt" in raised.value.message
    assert_no_absolute_paths(raised.value.message, tmp_path)
    assert device.checkpoint_path.read_bytes() == saved
    assert sorted(p.name for p in device.directory.iterdir()) == [CHECKPOINT, RECORD, HISTORY]
    device.restart()
    np.testing.assert_array_equal(logits(device, train_batch[0]), saved_logits)


def test_a_full_disk_while_writing_the_record_keeps_the_device_as_it_was(
    tmp_path: Path, train_batch: Batch
) -> None:
    fleet = Fleet(tmp_path)
    device = fleet.create("phone")
    train(device, train_batch, steps=2)
    trained = logits(device, train_batch[0])
    with file_size_limit(16), pytest.raises(StorageFull, match=r"devices/phone/device\.json"):
        device.restart()  # writes the counters first: it fails before dropping anything
    assert device.resident and device.info().train_steps == 2
    np.testing.assert_array_equal(logits(device, train_batch[0]), trained)
    device.restart()
    fleet.close()
    assert Fleet(tmp_path).get("phone").info().train_steps == 2


def test_disk_full_is_storage_full_and_other_io_errors_are_storage_errors(tmp_path: Path) -> None:
    with file_size_limit(10), pytest.raises(StorageFull, match="File too large"):
        write_atomic(tmp_path / "big", b"x" * 100, root=tmp_path)
    with pytest.raises(StorageError) as raised:
        write_atomic(tmp_path / "missing" / "file", b"x", root=tmp_path)
    assert not isinstance(raised.value, StorageFull)
    assert raised.value.message.startswith("could not write missing/file:")
    assert list(tmp_path.iterdir()) == []  # no temporary left behind


def test_an_unreadable_checkpoint_is_corrupt_state_and_is_kept(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path)
    device = fleet.create("phone")
    train(device, train_batch)
    device.save()
    trained = logits(device, train_batch[0])
    device.checkpoint_path.write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptState, match="checkpoint of device 'phone' cannot be restored") as raised:
        device.restore()  # into the live interpreter: its weights stay
    assert "devices/phone/checkpoint.ckpt" in raised.value.message
    assert_no_absolute_paths(raised.value.message, tmp_path)
    np.testing.assert_array_equal(logits(device, train_batch[0]), trained)
    device.restart()
    for _ in range(2):  # every activation says so; none deletes the user's file
        with pytest.raises(CorruptState, match="reset the device"):
            logits(device, train_batch[0])
    assert device.checkpoint_path.read_bytes() == b"not a checkpoint"
    assert not device.resident


def test_an_unreadable_spill_is_dropped_once_and_the_device_goes_on_from_its_checkpoint(
    tmp_path: Path, train_batch: Batch
) -> None:
    fleet = Fleet(tmp_path, max_resident=1)
    a, b = fleet.create_many(["a", "b"])
    train(a, train_batch)
    a.save()
    saved = logits(a, train_batch[0])
    train(a, train_batch)  # unsaved
    logits(b, train_batch[0])  # evicts a: its unsaved weights are spilled
    a.spill_path.write_bytes(a.spill_path.read_bytes()[:1000])
    with pytest.raises(CorruptState, match="lost the weights it had not saved") as raised:
        logits(a, train_batch[0])
    assert_no_absolute_paths(raised.value.message, tmp_path)
    assert not a.spill_path.exists()
    np.testing.assert_array_equal(logits(a, train_batch[0]), saved)
    assert a.info().problem is None


def test_a_delete_killed_midway_leaves_only_trash_and_frees_the_id(
    tmp_path: Path, train_batch: Batch
) -> None:
    fleet = Fleet(tmp_path)
    phone = fleet.create("phone")
    fleet.create("other")
    train(phone, train_batch)
    phone.save()
    fleet.close()
    # A real SIGKILL between the rename into the trash and the removal there.
    child = textwrap.dedent(
        """
        import os, shutil, signal, sys
        from pathlib import Path
        shutil.rmtree = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
        from service.fleet import Fleet
        Fleet(Path(sys.argv[1])).delete("phone")
        """
    )
    done = subprocess.run([sys.executable, "-c", child, str(tmp_path)], cwd=REPO, timeout=120)
    assert done.returncode == -signal.SIGKILL
    assert not (tmp_path / "devices" / "phone").exists()
    (left,) = (tmp_path / "trash").iterdir()
    assert (left / RECORD).exists() and (left / CHECKPOINT).exists()
    (tmp_path / "trash" / "stray-file").write_text("not ours to keep")

    fleet = Fleet(tmp_path)
    assert [d.id for d in fleet.page().devices] == ["other"]
    assert fleet.trash_cleaner is not None
    fleet.trash_cleaner.join(timeout=60)
    assert list((tmp_path / "trash").iterdir()) == []
    again = fleet.create("phone")
    assert (again.info().has_checkpoint, again.info().train_steps, again.info().problem) == (False, 0, None)


def test_a_device_with_an_unreadable_record_can_be_deleted_and_its_id_reused(tmp_path: Path) -> None:
    Fleet(tmp_path).create("phone")
    (tmp_path / "devices" / "phone" / RECORD).unlink()
    fleet = Fleet(tmp_path)
    assert "devices/phone/device.json is missing" in str(fleet.get("phone").info().problem)
    fleet.delete("phone")
    assert list((tmp_path / "trash").iterdir()) == [] and not (tmp_path / "devices" / "phone").exists()
    assert fleet.create("phone").info().problem is None


def test_error_messages_name_files_relative_to_the_data_dir(tmp_path: Path, train_batch: Batch) -> None:
    messages: list[str] = []
    with pytest.raises(InvalidRequest) as glob_error:
        Fleet(tmp_path / "data[1]")
    messages.append(glob_error.value.message)
    fleet = Fleet(tmp_path / "data")
    device = fleet.create("phone")
    (fleet.devices_dir / "stranger").mkdir()
    with pytest.raises(DeviceExists) as exists:
        fleet.create("stranger")
    messages.append(exists.value.message)
    train(device, train_batch)
    (device.directory / "checkpoint.ckpt").mkdir()  # the rename over it fails
    with pytest.raises(StorageError) as save_error:
        device.save()
    messages.append(save_error.value.message)
    shutil.rmtree(device.directory)  # TensorFlow's Save op fails, naming its temporary file
    with pytest.raises(StorageError, match="No such file or directory") as tf_error:
        device.save()
    messages.append(tf_error.value.message)
    for message in messages[2:]:
        assert "devices/phone/" in message
    for message in messages:
        assert_no_absolute_paths(message, tmp_path)


def test_max_devices_is_all_or_nothing(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, max_devices=3)
    fleet.create_many(["a", "b"])
    with pytest.raises(LimitExceeded, match="FLEET_MAX_DEVICES"):
        fleet.create_many(["c", "d"])
    with pytest.raises(LimitExceeded, match="FLEET_MAX_DEVICES"):
        fleet.create_many(count=2)
    assert len(fleet) == 2 and sorted(p.name for p in fleet.devices_dir.iterdir()) == ["a", "b"]
    fleet.create("c")
    with pytest.raises(LimitExceeded):
        fleet.create("d")
    fleet.delete("a")
    fleet.create("d")


def test_a_deleted_devices_samples_calls_never_reach_the_device_made_under_its_id(
    tmp_path: Path, train_batch: Batch
) -> None:
    """A request holding the old object (it resolved the ID before the delete) must not act on the new."""
    fleet = Fleet(tmp_path)
    old = fleet.create("phone")
    fleet.delete("phone")
    new = fleet.create("phone")
    new.add_samples("train", {"x": train_batch[0][:3], "y": train_batch[1][:3]})
    for call in (old.sample_stats, old.clear_samples):
        with pytest.raises(DeviceNotFound):
            call()
    with pytest.raises(DeviceNotFound):
        old.add_samples("train", {"x": train_batch[0][:2], "y": train_batch[1][:2]})
    assert new.sample_stats().count == 3


def test_no_property_does_io_and_get_needs_no_readable_record(tmp_path: Path) -> None:
    Fleet(tmp_path).create("phone")
    (tmp_path / "devices" / "phone" / RECORD).write_text("{")
    fleet = Fleet(tmp_path)
    device = fleet.get("phone")  # no I/O: a corrupt record does not matter yet
    properties = {name for name, value in vars(Device).items() if isinstance(value, property)}
    # paths, a flag, what the record in memory holds, and the collaborators (views made on use): no reads
    paths = {"checkpoint_path", "spill_path", "handover_path"}
    assert properties == {*paths, "resident", "profile", "clock", "checkpoints", "phone", "calls"}
    assert device.checkpoints and device.phone and device.calls  # made without reading anything
    assert device.loaded_model() is None and not device.resident
    assert device.profile is None and device.clock == 0.0  # the record is not read for them
    with pytest.raises(CorruptState):
        device.load()
    fleet.reset(device)
    assert device.loaded_model() is device.load()
