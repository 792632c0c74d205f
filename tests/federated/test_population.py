"""Work over a huge population costs what its devices need: a round's picking draws only as many devices
as it needs, a run's views and records count its devices instead of listing them, and assigning data
reads no device's record when every model takes the dataset."""

from __future__ import annotations

import collections
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import overload

from service.data.spec import PartitionSpec
from service.federated.federation import Federation
from service.federated.runs import Run, RunRecords
from service.federated.selection import Profiles, SeededOrder, pick
from service.federated.spec import RoundSpec
from service.fleet import Fleet
from service.model.dataset import FashionMNIST, one_hot
from service.profiles import DeviceProfile

TRILLION = 10**12


class Population(Sequence[str]):
    """``n`` device IDs made when asked for, counting the reads (a list of a trillion would not fit)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.reads = 0

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            raise TypeError("no slices of a population")
        if not 0 <= index < self.n:
            raise IndexError(index)
        self.reads += 1
        return f"d{index:013d}"


class Unprofiled:
    def profile(self, device_id: str) -> DeviceProfile | None:
        return None


def test_picking_from_a_trillion_devices_reads_only_the_participants() -> None:
    devices = Population(TRILLION)
    at, picked, offline = pick(devices, Profiles(Unprofiled()), 7, 1, 100, 0.0)  # type: ignore[arg-type]
    assert at == 0.0 and offline == 0 and len(set(picked)) == 100 and picked == sorted(picked)
    assert devices.reads == 100
    again = pick(Population(TRILLION), Profiles(Unprofiled()), 7, 1, 100, 0.0)  # type: ignore[arg-type]
    assert again[1] == picked


def test_a_seeded_order_is_a_uniform_permutation_the_same_for_a_seed_however_far_it_is_walked() -> None:
    for n, first in itertools.product((1, 2, 5, 64, 1000), (1, 3, 100)):
        assert sorted(SeededOrder(n, [5, 1], first)) == list(range(n))
    whole = list(SeededOrder(1000, [1, 2], 10))
    assert list(itertools.islice(SeededOrder(1000, [1, 2], 10), 37)) == whole[:37]
    assert list(SeededOrder(1000, [1, 3], 10)) != whole
    orders = collections.Counter(tuple(SeededOrder(3, [seed, 0], 1)) for seed in range(6000))
    assert len(orders) == 6 and all(800 < seen < 1200 for seen in orders.values())  # 1000 each expected


def test_a_runs_view_and_record_count_its_devices_instead_of_listing_them(tmp_path: Path) -> None:
    devices = tuple(f"phone-{i:06d}" for i in range(100_000))
    run = Run("abc123", RoundSpec(model="fashion_mnist", devices=devices, participants=10))
    assert run.view()["spec"]["devices"] == 100_000  # type: ignore[index]
    records = RunRecords(tmp_path)
    records.write(run)
    assert records.path(run.id).stat().st_size < 5_000  # the IDs alone would be 1.5 MB
    assert records.read(run.id)["spec"]["devices"] == 100_000  # type: ignore[index]


def test_assigning_reads_no_device_record_when_every_model_takes_the_dataset(
    tmp_path: Path, fashion_mnist: FashionMNIST
) -> None:
    data_dir = tmp_path / "data"
    fleet = Fleet(data_dir)
    ids = [device.id for device in fleet.create_many(count=30, prefix="p-")]
    fleet.close()
    fleet = Fleet(data_dir)  # started again: no device object, no record read
    federation = Federation(fleet)
    federation.datasets.add(
        "small",
        {
            "train/x": fashion_mnist.train_images[:200],
            "train/y": one_hot(fashion_mnist.train_labels[:200]),
            "test/x": fashion_mnist.test_images[:50],
            "test/y": one_hot(fashion_mnist.test_labels[:50]),
        },
        label="y",
    )
    try:
        done = federation.assign(
            "small", ids, PartitionSpec(kind="iid", train_per_device=10, test_per_device=5)
        )
        assert done["devices"] == 30
        for device_id in ids:
            device = fleet.get(device_id)
            assert device.loaded_record() is None  # nothing read it
            assert federation.count(device) == 10
    finally:
        federation.close()
        fleet.close()
