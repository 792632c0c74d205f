"""Assignment files: written atomically, read back exactly, refused clearly when damaged; many at once.

Files in ``tmp_path``, labels of the real Fashion-MNIST. A full disk is the file size limit
(``RLIMIT_FSIZE``, SIGXFSZ ignored).
"""

from __future__ import annotations

import importlib
import io
import zipfile
from pathlib import Path

import numpy as np
import orjson
import pytest

from service.data.assignment import (
    ASSIGNMENT_FILE,
    Assignment,
    assign_many,
    index_dtype,
    read_assignment,
    remove_assignment,
    stored_npz,
    write_assignment,
)
from service.data.device_split import device_split
from service.data.pools import ClassPools
from service.data.spec import PartitionKind, PartitionSpec
from service.errors import CorruptState, StorageError, StorageFull
from service.model.dataset import FashionMNIST
from tests.fleet.test_recovery import file_size_limit

assignment_module = importlib.import_module("service.data.assignment")
SPEC = PartitionSpec(kind="dirichlet", alpha=0.5, train_per_device=600, test_per_device=100, seed=4)


@pytest.fixture(scope="module")
def pools(fashion_mnist: FashionMNIST) -> ClassPools:
    return ClassPools.build(fashion_mnist.train_labels, fashion_mnist.test_labels)


@pytest.fixture
def device_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "devices" / "alice"
    directory.mkdir(parents=True)
    return directory


def assignment_of(key: str, pools: ClassPools, spec: PartitionSpec = SPEC) -> Assignment:
    return Assignment.of(device_split(key, spec, pools), spec, pools, "fashion-mnist", "c0ffee")


def test_an_assignment_reads_back_as_written(pools, device_dir: Path, tmp_path: Path) -> None:
    written = assignment_of("alice", pools)
    write_assignment(device_dir, written, tmp_path)
    read = read_assignment(device_dir, tmp_path)
    assert read is not None
    assert read.describe() == written.describe()
    for name in ("train", "test"):
        np.testing.assert_array_equal(getattr(read, name), getattr(written, name))
        assert getattr(read, name).dtype == np.uint16  # 60,000 and 10,000 examples
    split = device_split("alice", SPEC, pools)
    np.testing.assert_array_equal(read.train, split.train_indices)
    assert read.label_distribution == tuple(np.round(split.label_distribution, 4).tolist())
    assert read.parameters == {"alpha": 0.5, "replace": False} and read.seed == 4
    assert [p.name for p in device_dir.iterdir()] == [ASSIGNMENT_FILE]  # no temporary left


def test_describe_gives_counts_not_indices_and_is_json(pools) -> None:
    described = assignment_of("alice", pools).describe()
    assert described["train_size"] == 600 and described["test_size"] == 100
    assert "train" not in described and "test" not in described
    assert described["scheme"] == "dirichlet" and described["dataset"] == "fashion-mnist"
    assert orjson.loads(orjson.dumps(described)) == described


@pytest.mark.parametrize(
    ("size", "dtype"),
    [(1, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16), (65537, np.uint32)],
)
def test_indices_take_the_smallest_unsigned_dtype_that_fits_the_split(size: int, dtype: type) -> None:
    assert index_dtype(size) == np.dtype(dtype)


def test_no_assignment_reads_as_none_and_removing_says_whether_there_was_one(
    pools, device_dir: Path, tmp_path: Path
) -> None:
    assert read_assignment(device_dir, tmp_path) is None
    assert remove_assignment(device_dir, tmp_path) is False
    write_assignment(device_dir, assignment_of("alice", pools), tmp_path)
    assert remove_assignment(device_dir, tmp_path) is True
    assert read_assignment(device_dir, tmp_path) is None


def test_a_failed_write_leaves_the_previous_assignment_whole(pools, device_dir: Path, tmp_path: Path) -> None:
    first = assignment_of("alice", pools)
    write_assignment(device_dir, first, tmp_path)
    second = assignment_of("alice", pools, PartitionSpec(kind="iid", train_per_device=2000, seed=4))
    with file_size_limit(3000), pytest.raises(StorageFull) as caught:  # the new file is ~6 KB
        write_assignment(device_dir, second, tmp_path)
    assert "devices/alice/assignment.npz" in str(caught.value) and str(tmp_path) not in str(caught.value)
    read = read_assignment(device_dir, tmp_path)
    assert read is not None and read.describe() == first.describe()
    np.testing.assert_array_equal(read.train, first.train)
    assert [p.name for p in device_dir.iterdir()] == [ASSIGNMENT_FILE]  # the temporary is gone


def _valid(pools: ClassPools) -> bytes:
    a = assignment_of("alice", pools)
    meta = orjson.dumps({"format": 1, **a.describe()}).decode()
    return stored_npz({"train": a.train, "test": a.test, "meta": np.array(meta)})


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _damaged(kind: str, pools: ClassPools) -> bytes:
    valid = _valid(pools)
    with np.load(io.BytesIO(valid)) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = orjson.loads(str(arrays["meta"]))
    if kind == "garbage":
        return b"not a zip file at all"
    if kind == "truncated":
        return valid[: len(valid) // 2]
    if kind == "crc":
        with zipfile.ZipFile(io.BytesIO(valid)) as archive:
            offset = archive.getinfo("train.npy").header_offset + 30 + len("train.npy") + 200
        return valid[:offset] + bytes([valid[offset] ^ 0xFF]) + valid[offset + 1 :]
    if kind == "no meta":
        return _npz(train=arrays["train"], test=arrays["test"])
    if kind == "meta not json":
        return _npz(train=arrays["train"], test=arrays["test"], meta=np.array("{not json"))
    if kind == "wrong size":
        return _npz(train=arrays["train"][:-1], test=arrays["test"], meta=arrays["meta"])
    if kind == "signed indices":
        return _npz(train=arrays["train"].astype(np.int64), test=arrays["test"], meta=arrays["meta"])
    if kind == "missing field":
        del meta["content_id"]
        return _npz(train=arrays["train"], test=arrays["test"], meta=np.array(orjson.dumps(meta).decode()))
    if kind == "pickled":
        return _npz(train=arrays["train"], test=arrays["test"], meta=np.array([{"a": 1}], dtype=object))
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "garbage",
        "truncated",
        "crc",
        "no meta",
        "meta not json",
        "wrong size",
        "signed indices",
        "missing field",
        "pickled",
    ],
)
def test_a_damaged_file_is_corrupt_state_named_relative_to_the_data_dir(
    pools, device_dir: Path, tmp_path: Path, kind: str
) -> None:
    (device_dir / ASSIGNMENT_FILE).write_bytes(_damaged(kind, pools))
    with pytest.raises(CorruptState) as caught:
        read_assignment(device_dir, tmp_path)
    message = str(caught.value)
    assert message.startswith("devices/alice/assignment.npz ") and "assign the device again" in message
    assert str(tmp_path) not in message


# -- assign_many ----------------------------------------------------------------------------------


def devices(root: Path, count: int = 200) -> list[tuple[str, Path]]:
    places = []
    for i in range(count):
        directory = root / "devices" / f"phone-{i:03d}"
        directory.mkdir(parents=True)
        places.append((directory.name, directory))
    return places


def contents(places: list[tuple[str, Path]], root: Path) -> dict[str, tuple[bytes, bytes, dict]]:
    """Each device's indices and its description without the time it was assigned."""
    found = {}
    for device_id, directory in places:
        a = read_assignment(directory, root)
        assert a is not None
        described = {k: v for k, v in a.describe().items() if k != "assigned_at"}
        found[device_id] = (a.train.tobytes(), a.test.tobytes(), described)
    return found


@pytest.mark.parametrize("kind", ["dirichlet", "shards"])
def test_assign_many_gives_each_device_its_own_split_in_any_order_or_batching(
    pools, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: PartitionKind
) -> None:
    spec = PartitionSpec(kind=kind, train_per_device=600, test_per_device=100, seed=9)
    first, second = tmp_path / "first", tmp_path / "second"
    places = devices(first)
    assert assign_many(places, spec, pools, "fashion-mnist", "c0ffee", first) == 200
    monkeypatch.setattr(assignment_module, "BATCH", 33)  # other batches, other company, reversed order
    again = devices(second)
    assert assign_many(reversed(again), spec, pools, "fashion-mnist", "c0ffee", second) == 200
    one, other = contents(places, first), contents(again, second)
    assert one == other
    for device_id in ("phone-000", "phone-117"):  # each is exactly its device_split
        split = device_split(device_id, spec, pools)
        assert one[device_id][0] == split.train_indices.astype(np.uint16).tobytes()
    assert len({train for train, _, _ in one.values()}) == 200  # and devices differ


def test_assign_many_names_the_device_it_cannot_supply(pools, tmp_path: Path) -> None:
    places = devices(tmp_path, 20)
    spec = PartitionSpec(kind="interest", classes_per_device=1, interest_share=1.0, test_per_device=1001)
    with pytest.raises(ValueError, match=r"in the test split \(device 'phone-\d+'\)"):
        assign_many(places, spec, pools, "fashion-mnist", "c0ffee", tmp_path)
    assert all(read_assignment(directory, tmp_path) is None for _, directory in places)


def test_assign_many_reports_a_write_that_fails_naming_the_file_relatively(pools, tmp_path: Path) -> None:
    places = devices(tmp_path, 50)
    missing = places[30][1]
    missing.rmdir()  # the device was deleted meanwhile
    with pytest.raises(StorageError) as caught:
        assign_many(places, SPEC, pools, "fashion-mnist", "c0ffee", tmp_path)
    assert "devices/phone-030/assignment.npz" in str(caught.value) and str(tmp_path) not in str(caught.value)
    assert read_assignment(places[0][1], tmp_path) is not None
    assert not missing.exists()


def test_assign_many_replaces_each_file_in_one_rename_leaving_no_temporary(pools, tmp_path: Path) -> None:
    places = devices(tmp_path, 40)
    assert assign_many(places, SPEC, pools, "fashion-mnist", "c0ffee", tmp_path) == 40
    before = (places[25][1] / ASSIGNMENT_FILE).read_bytes()
    (places[30][1] / ASSIGNMENT_FILE).unlink()
    (places[30][1] / ASSIGNMENT_FILE / "in-the-way").mkdir(parents=True)  # a rename onto it fails
    again = PartitionSpec(kind="iid", train_per_device=60, test_per_device=10, seed=5)
    with pytest.raises(StorageError, match=r"devices/phone-030/assignment\.npz"):
        assign_many(places, again, pools, "fashion-mnist", "c0ffee", tmp_path)
    assert (places[25][1] / ASSIGNMENT_FILE).read_bytes() != before  # written whole before the failure
    kept = read_assignment(places[35][1], tmp_path)
    assert kept is not None and len(kept.train) == SPEC.train_per_device != 60  # untouched
    left = [p.name for _, d in places for p in d.iterdir() if p.name != ASSIGNMENT_FILE]
    assert left == []
