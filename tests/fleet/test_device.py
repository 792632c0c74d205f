"""Devices without HTTP: the tutorial's rule, checkpoints, reset, restart, persistence."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from service.errors import DeviceExists, DeviceNotFound, InvalidId, InvalidTensor, ModelNotFound, NoCheckpoint
from service.fleet import Fleet

Batch = tuple[np.ndarray, np.ndarray]


def logits(fleet: Fleet, device_id: str, x: np.ndarray) -> np.ndarray:
    return fleet.get(device_id).run("infer", {"x": x})["logits"]


def train(fleet: Fleet, device_id: str, batch: Batch, steps: int = 3) -> None:
    for _ in range(steps):
        fleet.get(device_id).run("train", {"x": batch[0], "y": batch[1]})


def test_save_restart_restores_checkpoint_bit_for_bit(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path)
    fleet.create("phone")
    train(fleet, "phone", train_batch)
    fleet.get("phone").save()
    saved = logits(fleet, "phone", train_batch[0])
    train(fleet, "phone", train_batch)  # unsaved progress
    fleet.get("phone").restart()
    assert not fleet.get("phone").resident
    # The tutorial's rule: the new interpreter restored the checkpoint by itself.
    np.testing.assert_array_equal(logits(fleet, "phone", train_batch[0]), saved)


def test_restore_returns_to_saved_weights(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path)
    device = fleet.create("phone")
    train(fleet, "phone", train_batch)
    device.save()
    saved = logits(fleet, "phone", train_batch[0])
    train(fleet, "phone", train_batch)
    assert not np.array_equal(logits(fleet, "phone", train_batch[0]), saved)
    device.restore()
    np.testing.assert_array_equal(logits(fleet, "phone", train_batch[0]), saved)


def test_reset_gives_baseline(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path)
    fleet.create("fresh")
    fleet.create("phone")
    baseline = logits(fleet, "fresh", train_batch[0])
    train(fleet, "phone", train_batch)
    fleet.get("phone").save()
    fleet.get("phone").reset()
    assert not fleet.get("phone").checkpoint_path.exists()
    np.testing.assert_array_equal(logits(fleet, "phone", train_batch[0]), baseline)
    assert fleet.get("phone").info().train_steps == 0


def test_restore_without_checkpoint_is_a_conflict(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.create("phone")
    with pytest.raises(NoCheckpoint, match="no checkpoint"):
        fleet.get("phone").restore()


def test_fleet_reloads_devices_and_checkpoints(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path)
    fleet.create("phone")
    train(fleet, "phone", train_batch, steps=2)
    fleet.get("phone").save()
    saved = logits(fleet, "phone", train_batch[0])
    train(fleet, "phone", train_batch, steps=1)
    fleet.close()

    reopened = Fleet(tmp_path)
    info = reopened.get("phone").info()
    assert (info.model, info.train_steps, info.has_checkpoint) == ("fashion_mnist", 3, True)
    np.testing.assert_array_equal(logits(reopened, "phone", train_batch[0]), saved)


def test_checkpoint_is_replaced_atomically(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path)
    device = fleet.create("phone")
    train(fleet, "phone", train_batch)
    device.save()
    before = device.checkpoint_path.read_bytes()
    train(fleet, "phone", train_batch)
    device.save()
    after = device.checkpoint_path.read_bytes()
    assert before != after
    assert sorted(p.name for p in device.directory.iterdir()) == [
        "checkpoint.ckpt",
        "device.json",
        "history.jsonl",
    ]


def test_ids_are_checked_and_unique(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.create("a")
    with pytest.raises(DeviceExists):
        fleet.create("a")
    for hostile in ("../x", "a/b", "..", ".hidden", "", "x" * 129, "a..b", "nul\x00", "a\\b"):
        with pytest.raises(InvalidId):
            fleet.create(hostile)
    with pytest.raises(ModelNotFound):
        fleet.create("b", model="nope")
    assert sorted(p.name for p in fleet.devices_dir.iterdir()) == ["a"]


def test_bulk_create_is_all_or_nothing(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.create("taken")
    with pytest.raises(DeviceExists, match="taken"):
        fleet.create_many(["new-1", "taken"])
    with pytest.raises(DeviceExists, match="twice"):
        fleet.create_many(["twice", "twice"])
    assert len(fleet) == 1
    made = fleet.create_many(count=50, prefix="load-")
    assert len(made) == 50 and all(d.id.startswith("load-") for d in made)
    assert fleet.delete_many([d.id for d in made[:10]]) == 10
    assert len(fleet) == 41


def test_pagination_walks_every_device_once(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    ids = sorted(d.id for d in fleet.create_many(count=25))
    seen, after = [], None
    while True:
        page = fleet.page(after, limit=7)
        seen += [d.id for d in page.devices]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == ids


def test_delete_removes_directory_and_refuses_later_calls(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path)
    device = fleet.create("phone")
    train(fleet, "phone", train_batch, steps=1)
    device.save()
    fleet.delete("phone")
    assert not device.directory.exists()
    with pytest.raises(DeviceNotFound):
        fleet.get("phone")
    with pytest.raises(DeviceNotFound):
        device.run("infer", {"x": train_batch[0]})


def test_concurrent_train_on_one_device_counts_every_step(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path)
    device = fleet.create("phone")
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                device.run("train", {"x": train_batch[0], "y": train_batch[1]})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert device.info().train_steps == 40


def test_string_inputs_and_paths_are_never_taken_from_callers(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    device = fleet.create("phone")
    with pytest.raises(InvalidTensor, match="takes no inputs"):
        device.run("save", {"checkpoint_path": np.array(b"/tmp/elsewhere.ckpt")})
    assert not Path("/tmp/elsewhere.ckpt").exists()


def test_a_diverged_loss_is_not_recorded_and_the_device_reads_back(
    tmp_path: Path, train_batch: Batch
) -> None:
    fleet = Fleet(tmp_path)
    device = fleet.create("phone")
    x, y = train_batch
    device.run("train", {"x": x * np.float32(3e38), "y": y})  # finite inputs, overflowing sums
    device.save()
    assert device.info().last_loss is None and device.history() == []
    fleet.close()
    reopened = Fleet(tmp_path).get("phone")
    assert reopened.info().train_steps == 1


def test_corrupt_files_are_reported_not_crashed_on(tmp_path: Path) -> None:
    from service.errors import CorruptState

    Fleet(tmp_path).create("phone")
    (tmp_path / "devices" / "phone" / "device.json").write_text("{not json")
    device = Fleet(tmp_path).get("phone")
    info = device.info()  # never raises: the problem is shown
    assert info.problem is not None and "devices/phone/device.json" in info.problem
    assert (info.model, info.created_at, info.train_steps) == (None, None, None)
    with pytest.raises(CorruptState, match=r"devices/phone/device\.json.*reset or delete the device"):
        device.load()


def test_leftover_directories_and_long_prefixes_are_refused_up_front(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    (fleet.devices_dir / "left").mkdir()
    with pytest.raises(DeviceExists, match="left"):
        fleet.create_many(["new", "left"])
    assert len(fleet) == 0 and not (fleet.devices_dir / "new").exists()
    with pytest.raises(InvalidId):
        fleet.create_many(count=1, prefix="p" * 120)
    (made,) = fleet.create_many(count=1, prefix="p" * 116)
    assert made.id.startswith("p" * 116)


def test_bulk_delete_with_repeats_deletes_once(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.create_many(["a", "b"])
    assert fleet.delete_many(["a", "a", "b"]) == 2
    assert len(fleet) == 0
