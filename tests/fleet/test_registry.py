"""The registry: IDs registered without objects; a device's one object made on demand, a bounded number
held."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np

from service.fleet import Fleet
from service.profiles.mixes import builtin_mixes

Batch = tuple[np.ndarray, np.ndarray]


def test_start_up_makes_no_device_object_and_listing_makes_at_most_the_bound(tmp_path: Path) -> None:
    Fleet(tmp_path).create_many(count=20, prefix="d-")
    fleet = Fleet(tmp_path, max_loaded=5)
    assert len(fleet) == 20 and fleet._registry.held() == 0
    page = fleet.page(limit=8)
    assert [d.id for d in page.devices] == fleet.ids()[:8]
    assert all(d.info().problem is None for d in page.devices)
    del page
    gc.collect()
    assert fleet._registry.held() == 5
    assert len(fleet._registry.alive()) == 5


def test_a_device_has_one_object_while_anything_holds_it(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, max_loaded=1)
    fleet.create_many(["a", "b", "c"])
    kept = fleet.get("a")
    fleet.get("b")
    fleet.get("c")
    assert fleet._registry.held() == 1
    assert fleet.get("a") is kept  # dropped by the registry, still alive here: the same object
    del kept
    fleet.get("b")
    gc.collect()
    assert fleet._registry.peek("a") is None  # idle and held by nothing: gone
    assert fleet.get("a").id == "a"  # made again


def test_busy_devices_are_held_past_the_bound_and_nothing_unwritten_is_lost(
    tmp_path: Path, train_batch: Batch
) -> None:
    fleet = Fleet(tmp_path, max_loaded=1, max_resident=2)
    fleet.create_many(["a", "b", "c"])
    x, y = train_batch
    fleet.get("a").run("train", {"x": x, "y": y})  # resident: held
    fleet.get("b").set_profile(builtin_mixes()[0].assign(["b"])["b"], durable=False)
    fleet.get("b").advance(5.0)  # its clock moved, its record not written yet: held
    fleet.get("c")
    gc.collect()
    assert fleet._registry.peek("a") is not None and fleet._registry.peek("b") is not None
    assert fleet.get("a").info().train_steps == 1
    fleet.close()
    again = Fleet(tmp_path)
    assert again.get("a").info().train_steps == 1
    assert again.get("b").read_record().clock == 5.0


def test_deleted_and_created_devices_keep_the_ids_sorted(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, max_loaded=2)
    fleet.create_many([f"m{i:02d}" for i in range(0, 60, 2)])  # a bulk merge
    fleet.create_many(["m05", "m01"])  # small: inserted
    fleet.delete_many(["m10", "m05"])
    assert fleet.ids() == sorted(fleet.ids()) and len(fleet.ids()) == len(fleet) == 30
    assert "m10" not in fleet.ids() and "m01" in fleet.ids()
    assert fleet.count("m0") == 6  # m00 m01 m02 m04 m06 m08, less m05
