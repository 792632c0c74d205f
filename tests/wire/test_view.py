"""Rendezvous hashing over a view's slots: balanced, stable, and minimal when the slot count changes."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from service.wire.view import ShardInfo, View, owner_slot

IDS = [f"phone-{i:05d}" for i in range(20_000)]


def test_owners_are_balanced_over_slots() -> None:
    counts = Counter(owner_slot(i, 4) for i in IDS)
    assert sorted(counts) == [0, 1, 2, 3]
    assert all(abs(n - 5_000) < 400 for n in counts.values()), counts


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_growing_by_one_moves_only_devices_to_the_new_slot(shards: int) -> None:
    before = {i: owner_slot(i, shards) for i in IDS}
    after = {i: owner_slot(i, shards + 1) for i in IDS}
    moved = [i for i in IDS if before[i] != after[i]]
    assert all(after[i] == shards for i in moved)
    assert abs(len(moved) / len(IDS) - 1 / (shards + 1)) < 0.02


def test_owner_is_a_pure_function_of_id_and_slot_count() -> None:
    view = View(epoch=3, shards=tuple(ShardInfo(slot=s, address=f"http://h:{s}") for s in range(3)))
    assert [view.owner(i).slot for i in IDS[:100]] == [owner_slot(i, 3) for i in IDS[:100]]
    parts = view.partition(IDS[:1000])
    assert sorted(i for ids in parts.values() for i in ids) == sorted(IDS[:1000])
    assert all(owner_slot(i, 3) == slot for slot, ids in parts.items() for i in ids)


def test_view_round_trips_through_json_and_rejects_gaps() -> None:
    view = View(epoch=5, shards=(ShardInfo(0, "http://a:1", "n1", 11, 2), ShardInfo(1, None, "n2", 12, 1)))
    assert View.parse(view.to_json()) == view
    broken = view.to_json()
    broken["shards"] = broken["shards"][1:]
    with pytest.raises(ValueError, match="slots"):
        View.parse(broken)


def test_the_docker_drivers_copy_of_the_hashing_agrees() -> None:
    """docker/drive.py runs on the standard library alone, so it carries its own copy."""
    spec = importlib.util.spec_from_file_location("drive", Path(__file__).parents[2] / "docker" / "drive.py")
    assert spec is not None and spec.loader is not None
    drive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(drive)
    assert all(drive._owner_slot(i, n) == owner_slot(i, n) for i in IDS[:500] for n in (1, 2, 3, 7))
