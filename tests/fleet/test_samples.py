"""A device's samples: bounded in count and in bytes, oldest first out; a corrupt store is cleared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.errors import CorruptState, LimitExceeded
from service.fleet import Fleet
from service.fleet.samples import MANIFEST, SampleStore

PER_SAMPLE = 10 * 4 + 4
"""Bytes of one sample below: ten float32 and one int32."""


def samples(start: int, n: int) -> dict[str, np.ndarray]:
    """``n`` samples numbered from ``start`` (the number is in every value, to see which were kept)."""
    numbers = np.arange(start, start + n)
    return {"x": np.repeat(numbers[:, None], 10, axis=1).astype(np.float32), "y": numbers.astype(np.int32)}


def kept(store: SampleStore) -> list[int]:
    return store.load()[1]["y"].tolist()


def test_samples_are_capped_in_bytes_oldest_first(tmp_path: Path) -> None:
    store = SampleStore(tmp_path, capacity=1000, capacity_bytes=25 * PER_SAMPLE)
    for start in (0, 10):
        store.add("train", samples(start, 10))
    stats = store.add("train", samples(20, 10))
    assert (stats.count, stats.bytes, stats.dropped, stats.capacity_bytes) == (25, 25 * PER_SAMPLE, 5, 1100)
    assert kept(store) == list(range(5, 30))
    stats = store.add("train", samples(30, 30))  # more than fits at once: only its newest 25
    assert (stats.count, stats.added, stats.dropped) == (25, 30, 30)
    assert kept(store) == list(range(35, 60))
    assert store.stats().bytes == 25 * PER_SAMPLE


def test_samples_are_capped_in_count_too(tmp_path: Path) -> None:
    store = SampleStore(tmp_path, capacity=15, capacity_bytes=10**9)
    store.add("train", samples(0, 10))
    assert store.add("train", samples(10, 10)).count == 15
    assert kept(store) == list(range(5, 20))


def test_a_sample_larger_than_the_byte_capacity_is_refused(tmp_path: Path) -> None:
    store = SampleStore(tmp_path, capacity=10, capacity_bytes=PER_SAMPLE - 1)
    with pytest.raises(LimitExceeded, match="FLEET_SAMPLE_CAPACITY_BYTES"):
        store.add("train", samples(0, 1))
    assert store.stats().count == 0


def test_the_fleet_caps_every_device_in_bytes(
    tmp_path: Path, train_batch: tuple[np.ndarray, np.ndarray]
) -> None:
    per_sample = 28 * 28 * 4 + 10 * 4
    device = Fleet(tmp_path, sample_capacity_bytes=20 * per_sample).create("phone")
    stats = device.add_samples("train", {"x": train_batch[0][:50], "y": train_batch[1][:50]})
    assert (stats.count, stats.bytes, stats.capacity_bytes) == (20, 20 * per_sample, 20 * per_sample)


def test_a_corrupt_store_is_reported_and_cleared(tmp_path: Path) -> None:
    (tmp_path / "devices" / "phone").mkdir(parents=True)
    store = SampleStore(tmp_path / "devices" / "phone", capacity=100, root=tmp_path)
    store.add("train", samples(0, 10))
    (chunk,) = store.directory.glob("*.npz")
    chunk.write_bytes(b"not an npz")
    (store.directory / "stray-name.npz").write_bytes(b"")  # not a chunk's name: ignored
    assert store.stats().count == 10  # counting reads no file
    with pytest.raises(CorruptState, match=r"devices/phone/samples/.*clear the device's samples") as raised:
        store.load()
    assert str(tmp_path) not in raised.value.message
    store.clear()
    assert store.stats().count == 0 and list(store.directory.iterdir()) == []
    (store.directory / MANIFEST).write_text("{")
    store.directory.joinpath("0-1-44.npz").write_bytes(b"")
    with pytest.raises(CorruptState, match=r"signature\.json"):
        store.stats()
    store.clear()
    assert store.add("train", samples(0, 3)).count == 3


def test_chunks_named_before_they_carried_their_size_still_count(tmp_path: Path) -> None:
    store = SampleStore(tmp_path, capacity=100, capacity_bytes=10**9)
    store.add("train", samples(0, 5))
    (chunk,) = store.directory.glob("*.npz")
    chunk.rename(chunk.with_name("0-5.npz"))
    stats = store.stats()
    assert stats.count == 5 and stats.bytes == (store.directory / "0-5.npz").stat().st_size
    store.add("train", samples(5, 5))
    assert kept(store) == list(range(10))
