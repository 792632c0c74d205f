"""The residency budget: eviction spills weights and is invisible, except to ``restart``."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from service.fleet import Fleet

Batch = tuple[np.ndarray, np.ndarray]


def personal_batch(batch: Batch, i: int) -> Batch:
    """A different batch per device, so every device's weights differ."""
    x, y = batch
    return np.roll(x, i, axis=0), np.roll(y, i, axis=0)


def assert_same_weights(fleet: Fleet, twins: Fleet, device_id: str, probe: np.ndarray, steps: int) -> None:
    """The device has its never-evicted twin's logits, bit for bit, and counted every step."""
    np.testing.assert_array_equal(
        fleet.get(device_id).run("infer", {"x": probe})["logits"],
        twins.get(device_id).run("infer", {"x": probe})["logits"],
    )
    assert fleet.get(device_id).info().train_steps == steps


def train_in_turn(fleet: Fleet, batch: Batch, n: int, rounds: int = 2) -> None:
    for _ in range(rounds):
        for i in range(n):
            x, y = personal_batch(batch, i)
            fleet.get(f"d{i}").run("train", {"x": x, "y": y})


def test_capped_fleet_keeps_every_device_weights_exactly(tmp_path: Path, train_batch: Batch) -> None:
    capped = Fleet(tmp_path / "capped", max_resident=3)
    twins = Fleet(tmp_path / "twins")
    for fleet in (capped, twins):
        fleet.create_many([f"d{i}" for i in range(10)])
        train_in_turn(fleet, train_batch, 10)

    stats = capped.residency_stats()
    assert stats.resident <= 3
    assert stats.evictions >= 7 * 2 and stats.spills == stats.evictions
    assert twins.residency_stats().evictions == 0
    for i in range(10):
        assert_same_weights(capped, twins, f"d{i}", train_batch[0], steps=2)


def test_spill_is_removed_after_reactivation(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path, max_resident=1)
    fleet.create_many(["a", "b"])
    a = fleet.get("a")
    a.run("train", {"x": train_batch[0], "y": train_batch[1]})
    fleet.get("b").run("infer", {"x": train_batch[0]})  # evicts a
    assert not a.resident and a.spill_path.exists() and a.info().has_spill
    a.run("infer", {"x": train_batch[0]})
    assert a.resident and not a.spill_path.exists()
    assert not a.checkpoint_path.exists(), "a spill is never a user checkpoint"


def test_restart_after_eviction_still_drops_unsaved_weights(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path, max_resident=1)
    fleet.create_many(["a", "b", "baseline"])
    baseline = fleet.get("baseline").run("infer", {"x": train_batch[0]})["logits"]
    a = fleet.get("a")
    a.run("train", {"x": train_batch[0], "y": train_batch[1]})
    a.save()
    saved = a.run("infer", {"x": train_batch[0]})["logits"]
    a.run("train", {"x": train_batch[0], "y": train_batch[1]})  # unsaved
    fleet.get("b").run("infer", {"x": train_batch[0]})  # evicts a, spilling the unsaved weights
    assert a.spill_path.exists()
    a.restart()
    assert not a.spill_path.exists()
    np.testing.assert_array_equal(a.run("infer", {"x": train_batch[0]})["logits"], saved)
    a.reset()
    np.testing.assert_array_equal(a.run("infer", {"x": train_batch[0]})["logits"], baseline)


def test_busy_device_is_never_evicted(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path, max_resident=1)
    fleet.create_many(["busy", "b", "c"])
    busy = fleet.get("busy")
    busy.run("infer", {"x": train_batch[0]})
    with busy.lock:  # as a running call holds it
        fleet.get("b").run("infer", {"x": train_batch[0]})
        fleet.get("c").run("infer", {"x": train_batch[0]})
        assert busy.resident
    fleet.get("b").run("infer", {"x": train_batch[0]})
    assert not busy.resident


def test_concurrent_devices_under_a_tight_cap(tmp_path: Path, train_batch: Batch) -> None:
    capped = Fleet(tmp_path / "capped", max_resident=2)
    twins = Fleet(tmp_path / "twins")
    ids = [f"d{i}" for i in range(6)]
    for fleet in (capped, twins):
        fleet.create_many(ids)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            x, y = personal_batch(train_batch, i)
            for _ in range(8):
                capped.get(ids[i]).run("train", {"x": x, "y": y})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(ids))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i, device_id in enumerate(ids):
        x, y = personal_batch(train_batch, i)
        for _ in range(8):
            twins.get(device_id).run("train", {"x": x, "y": y})
        assert_same_weights(capped, twins, device_id, train_batch[0], steps=8)


def test_clean_weights_are_evicted_without_a_spill(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path, max_resident=1)
    fleet.create_many(["a", "b"])
    a, b = fleet.get("a"), fleet.get("b")
    a.run("train", {"x": train_batch[0], "y": train_batch[1]})
    a.save()  # the live weights now equal the checkpoint
    saved = a.run("infer", {"x": train_batch[0]})["logits"]
    b.run("infer", {"x": train_batch[0]})  # evicts a: nothing to spill
    assert not a.resident and not a.spill_path.exists()
    np.testing.assert_array_equal(
        a.run("infer", {"x": train_batch[0]})["logits"], saved
    )  # evicts b: baseline
    assert not b.spill_path.exists()
    stats = fleet.residency_stats()
    assert (stats.evictions, stats.spills) == (2, 0)
    # Weights that came back from a spill are not the checkpoint's: evicting them again spills again.
    a.run("train", {"x": train_batch[0], "y": train_batch[1]})
    b.run("infer", {"x": train_batch[0]})
    assert a.spill_path.exists()
    trained = a.run("infer", {"x": train_batch[0]})["logits"]  # back from the spill
    b.run("infer", {"x": train_batch[0]})
    assert a.spill_path.exists(), "restored-from-spill weights must be spilled again"
    np.testing.assert_array_equal(a.run("infer", {"x": train_batch[0]})["logits"], trained)


def test_a_spill_left_by_the_last_run_is_dropped(tmp_path: Path, train_batch: Batch) -> None:
    fleet = Fleet(tmp_path, max_resident=1)
    fleet.create_many(["a", "b"])
    a = fleet.get("a")
    a.run("train", {"x": train_batch[0], "y": train_batch[1]})
    a.save()
    saved = a.run("infer", {"x": train_batch[0]})["logits"]
    a.run("train", {"x": train_batch[0], "y": train_batch[1]})
    fleet.get("b").run("infer", {"x": train_batch[0]})  # a is evicted: its unsaved weights spilled
    assert a.spill_path.exists()
    fleet.close()
    (tmp_path / "devices" / "not a device").mkdir()  # skipped, not fatal

    reopened = Fleet(tmp_path, max_resident=1)
    assert len(reopened) == 2
    again = reopened.get("a")
    np.testing.assert_array_equal(again.run("infer", {"x": train_batch[0]})["logits"], saved)
    assert not again.spill_path.exists()


def test_a_failing_spill_does_not_fail_other_devices(tmp_path: Path, train_batch: Batch) -> None:
    import shutil

    fleet = Fleet(tmp_path, max_resident=1)
    fleet.create_many(["broken", "b", "c"])
    broken = fleet.get("broken")
    broken.run("train", {"x": train_batch[0], "y": train_batch[1]})  # unsaved weights: must spill
    shutil.rmtree(broken.directory)  # its disk fails
    fleet.get("b").run("infer", {"x": train_batch[0]})  # would evict "broken": the spill fails
    fleet.get("c").run("infer", {"x": train_batch[0]})  # evicts "b" instead
    assert broken.resident and not fleet.get("b").resident
    fleet.close()  # logs the broken device, persists the others


def test_restore_after_an_eviction_gives_the_checkpoint_not_the_spill(
    tmp_path: Path, train_batch: Batch
) -> None:
    fleet = Fleet(tmp_path, max_resident=1)
    fleet.create_many(["a", "b"])
    a = fleet.get("a")
    a.run("train", {"x": train_batch[0], "y": train_batch[1]})
    a.save()
    saved = a.run("infer", {"x": train_batch[0]})["logits"]
    a.run("train", {"x": train_batch[0], "y": train_batch[1]})  # unsaved
    fleet.get("b").run("infer", {"x": train_batch[0]})  # evicts a: spilled
    assert a.spill_path.exists()
    a.restore()
    np.testing.assert_array_equal(a.run("infer", {"x": train_batch[0]})["logits"], saved)
    assert not a.spill_path.exists()
    fleet.get("b").run("infer", {"x": train_batch[0]})  # evicts a again: its weights are the checkpoint's
    assert not a.spill_path.exists()


def test_the_loss_history_leaves_memory_with_the_interpreter(tmp_path: Path, train_batch: Batch) -> None:
    """Only the steps not yet written are in memory (``pending``); an eviction writes them."""
    fleet = Fleet(tmp_path, max_resident=1)
    a, b = fleet.create_many(["a", "b"])
    for _ in range(2):
        a.run("train", {"x": train_batch[0], "y": train_batch[1]})
    assert len(a.ledger.pending) == 2  # kept while the device trains
    b.run("infer", {"x": train_batch[0]})  # evicts a: its history is written and dropped
    assert not a.resident and a.ledger.pending == []
    assert [entry["step"] for entry in a.history()] == [1, 2]  # from its file
    assert a.ledger.pending == [], "reading the history of an evicted device must not keep it"
    a.run("train", {"x": train_batch[0], "y": train_batch[1]})  # evicts b
    assert b.ledger.pending == [] and len(a.ledger.pending) == 1
    a.restart()
    assert a.ledger.pending == [] and [entry["step"] for entry in a.history()] == [1, 2, 3]
