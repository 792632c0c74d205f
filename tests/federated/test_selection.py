"""Picking a round's participants: seeded, reading profiles only as the walk meets them, skipping
offline devices, and waiting for the first to come online when none is."""

from __future__ import annotations

from service.federated.selection import Profiles, pick
from service.profiles import DeviceProfile
from tests.federated.selectors.helpers import night


class _Counting:
    """Participants that count profile reads (only ``profile`` is used by picking)."""

    def __init__(self, profiles: dict[str, DeviceProfile | None]) -> None:
        self.profiles = profiles
        self.read: list[str] = []

    def profile(self, device_id: str) -> DeviceProfile | None:
        self.read.append(device_id)
        return self.profiles.get(device_id)


def test_an_unprofiled_run_reads_only_its_participants_profiles() -> None:
    devices = [f"d{i:05d}" for i in range(10_000)]
    counting = _Counting({})
    at, picked, offline = pick(devices, Profiles(counting), 3, 1, 10, 0.0)  # type: ignore[arg-type]
    assert at == 0.0 and offline == 0 and len(picked) == 10 and picked == sorted(picked)
    assert sorted(counting.read) == picked
    again = pick(devices, Profiles(_Counting({})), 3, 1, 10, 0.0)  # type: ignore[arg-type]
    other = pick(devices, Profiles(_Counting({})), 3, 2, 10, 0.0)  # type: ignore[arg-type]
    assert again[1] == picked and other[1] != picked


def test_picking_skips_offline_devices_and_waits_when_none_is_online() -> None:
    devices = [f"d{i}" for i in range(6)]
    counting = _Counting({i: night() for i in devices[:4]})
    at, picked, offline = pick(devices, Profiles(counting), 0, 1, 2, 0.0)  # type: ignore[arg-type]
    assert at == 0.0 and picked == devices[4:] and 0 <= offline <= 4
    assert len(counting.read) == offline + 2
    everyone_sleeps = _Counting({i: night() for i in devices})
    at, picked, offline = pick(devices, Profiles(everyone_sleeps), 0, 1, 2, 300.0)  # type: ignore[arg-type]
    assert at == 1100.0 and len(picked) == 2 and offline == 0
