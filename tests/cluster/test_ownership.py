"""Two fleets sharing one data directory, each owning its slot's devices, and devices moving between them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.cluster.ownership import SlotOwnership
from service.cluster.state import ClusterState, Membership
from service.errors import DeviceMoving, NotOwner, Unavailable
from service.fleet import Fleet
from service.wire.view import owner_slot

Batch = tuple[np.ndarray, np.ndarray]
IDS = [f"phone-{i}" for i in range(12)]


def shard_fleets(data_dir: Path, shards: int = 2) -> tuple[list[Fleet], list[SlotOwnership]]:
    owners = [SlotOwnership(slot, shards, epoch=1) for slot in range(shards)]
    return [Fleet(data_dir, ownership=o) for o in owners], owners


def test_each_fleet_registers_and_serves_only_its_slot(tmp_path: Path) -> None:
    Fleet(tmp_path).create_many(IDS)  # made by a single process, then opened as two shards
    fleets, _ = shard_fleets(tmp_path)
    for slot, fleet in enumerate(fleets):
        mine = sorted(i for i in IDS if owner_slot(i, 2) == slot)
        assert [d.id for d in fleet.page(limit=100).devices] == mine
        foreign = next(i for i in IDS if owner_slot(i, 2) != slot)
        with pytest.raises(NotOwner, match=f"shard {1 - slot} in epoch 1") as refused:
            fleet.get(foreign)
        assert refused.value.epoch == 1
        with pytest.raises(NotOwner):
            fleet.create(f"{foreign}-new" if owner_slot(f"{foreign}-new", 2) != slot else foreign)
    made = fleets[0].create_many(count=20, prefix="r-")
    assert all(owner_slot(d.id, 2) == 0 for d in made)


def test_hand_over_keeps_unsaved_weights_and_counters(tmp_path: Path, train_batch: Batch) -> None:
    fleets, owners = shard_fleets(tmp_path, shards=1)
    mover = next(i for i in IDS if owner_slot(i, 2) == 1)
    device = fleets[0].create(mover)
    for _ in range(3):
        device.run("train", {"x": train_batch[0], "y": train_batch[1]})  # nothing saved
    trained = device.run("infer", {"x": train_batch[0]})["logits"]

    owners[0].fence(2)
    with pytest.raises(DeviceMoving, match="moving between shards"):
        fleets[0].get(mover)
    assert fleets[0].hand_over([mover]) == [mover]
    with pytest.raises(DeviceMoving, match="moved to another shard"):
        device.run("infer", {"x": train_batch[0]})  # a caller still holding the old object
    with pytest.raises(Unavailable):
        device.delete()

    new = Fleet(tmp_path, ownership=SlotOwnership(1, 2, epoch=2))
    owners[0].commit(2, 2)
    assert new.take_over([mover]) == 0  # already registered: it found the directory at start
    moved = new.get(mover)
    np.testing.assert_array_equal(moved.run("infer", {"x": train_batch[0]})["logits"], trained)
    assert moved.info().train_steps == 3
    assert len(moved.history()) == 3
    with pytest.raises(NotOwner, match="shard 1 in epoch 2"):
        fleets[0].get(mover)


def test_take_over_registers_handed_devices_in_a_running_fleet(tmp_path: Path, train_batch: Batch) -> None:
    mover = next(i for i in IDS if owner_slot(i, 2) == 1)
    old_owner = SlotOwnership(0, 1, epoch=1)
    old = Fleet(tmp_path, ownership=old_owner)
    new_owner = SlotOwnership(1, 2, epoch=2)
    new_owner.fence(2)
    new = Fleet(tmp_path, ownership=new_owner)
    old.create(mover).run("train", {"x": train_batch[0], "y": train_batch[1]})
    old_owner.fence(2)
    handed = old.hand_over([mover])
    old_owner.commit(2, 2)
    new_owner.commit(2, 2)
    assert new.take_over(handed) == 1
    assert new.get(mover).info().train_steps == 1
    assert new.page().devices[0].id == mover


def fenced_fleet(data_dir: Path, slot: int, shards: int, epoch: int) -> tuple[Fleet, ClusterState]:
    disk = ClusterState(data_dir)
    if disk.membership() is None:
        disk.write_membership(Membership(epoch, shards))
    incarnation = disk.next_incarnation(slot)
    return Fleet(data_dir, ownership=SlotOwnership(slot, shards, epoch, disk, incarnation)), disk


def test_a_superseded_incarnation_cannot_overwrite_the_checkpoint(tmp_path: Path, train_batch: Batch) -> None:
    stale, disk = fenced_fleet(tmp_path, slot=0, shards=1, epoch=1)
    device = stale.create("phone")
    device.run("train", {"x": train_batch[0], "y": train_batch[1]})
    device.save()
    saved = device.checkpoint_path.read_bytes()
    # Ray started the slot again elsewhere (the old process was partitioned, not dead): it trains on.
    fresh = Fleet(tmp_path, ownership=SlotOwnership(0, 1, 1, disk, disk.next_incarnation(0)))
    fresh.get("phone").run("train", {"x": train_batch[0], "y": train_batch[1]})
    fresh.get("phone").save()
    newer = device.checkpoint_path.read_bytes()
    assert newer != saved
    device.run("train", {"x": train_batch[0], "y": train_batch[1]})
    with pytest.raises(Unavailable, match="incarnation 1 is stale"):
        device.save()
    assert device.checkpoint_path.read_bytes() == newer
    assert not list(device.directory.glob(".*.tmp-*"))


def test_an_owner_that_missed_a_resize_cannot_write_a_moved_device(
    tmp_path: Path, train_batch: Batch
) -> None:
    mover = next(i for i in IDS if owner_slot(i, 2) == 1)
    stayer = next(i for i in IDS if owner_slot(i, 2) == 0)
    stale, disk = fenced_fleet(tmp_path, slot=0, shards=1, epoch=1)
    for device_id in (mover, stayer):
        stale.create(device_id).run("train", {"x": train_batch[0], "y": train_batch[1]})
    disk.write_membership(Membership(2, 2))  # committed without this process's hand-over
    with pytest.raises(NotOwner, match="shard 1 in epoch 2"):
        stale.get(mover).save()
    assert not stale.get(mover).checkpoint_path.exists()
    with pytest.raises(NotOwner):
        stale.get(mover).restart()  # its record is not written either
    stale.get(stayer).save()  # a device it still owns is written as before
    assert stale.get(stayer).checkpoint_path.exists()
