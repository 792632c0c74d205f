"""The npz fast path reads exactly what ``np.load`` reads, falls back where it cannot, and never
decompresses more than the body limit; an archive's directory is checked before zipfile parses it."""

from __future__ import annotations

import functools
import io
import struct
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api import codecs, create_app
from service.api.codecs import NPZ, _stored_arrays, decode_npz, to_json
from service.config import Settings
from service.errors import BodyTooLarge, InvalidTensor
from tests.local import local_client

NO_LIMIT = 1 << 40
MiB = 1 << 20

ARRAYS: dict[str, np.ndarray | np.generic] = {
    "x": np.random.default_rng(0).random((5, 28, 28), dtype=np.float32),
    "scalar": np.float32(3.5),
    "empty": np.zeros((0, 3)),
    "big_endian": np.arange(6, dtype=">i8").reshape(2, 3),
    "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "flags": np.array([True, False]),
}


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_decode_matches_numpy(save) -> None:
    buffer = io.BytesIO()
    save(buffer, **ARRAYS)
    decoded = decode_npz(buffer.getvalue(), NO_LIMIT)
    assert set(decoded) == set(ARRAYS)
    for name, expected in ARRAYS.items():
        np.testing.assert_array_equal(decoded[name], expected)
        assert decoded[name].dtype.isnative and decoded[name].dtype == np.asarray(
            expected
        ).dtype.newbyteorder("=")


def test_fast_path_takes_plain_archives_and_declines_others() -> None:
    plain, compressed = io.BytesIO(), io.BytesIO()
    np.savez(plain, x=ARRAYS["x"], y=np.eye(10, dtype=np.float32)[:5])
    np.savez_compressed(compressed, x=ARRAYS["x"])
    fast = _stored_arrays(plain.getvalue())
    assert fast is not None and np.array_equal(fast["x"], ARRAYS["x"])
    assert _stored_arrays(compressed.getvalue()) is None


def test_pickled_objects_are_refused() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InvalidTensor, match="not a valid"):
        decode_npz(buffer.getvalue(), NO_LIMIT)


def test_truncated_archive_is_refused() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=ARRAYS["x"])
    with pytest.raises(InvalidTensor):
        decode_npz(buffer.getvalue()[:-100], NO_LIMIT)


def npz(save: Callable[..., None], **arrays: np.ndarray | np.generic) -> bytes:
    buffer = io.BytesIO()
    save(buffer, **arrays)
    return buffer.getvalue()


@contextmanager
def peak_memory() -> Iterator[list[int]]:
    """The peak of Python allocations (bytes objects and numpy arrays) in the block, once it ends."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def test_compressed_arrays_past_the_limit_are_refused_before_decompressing() -> None:
    body = npz(np.savez_compressed, x=np.zeros((2048, 1024), np.float32), y=np.zeros(16, np.float32))
    assert len(body) < 64 * 1024  # 8 MiB of zeros deflate to a few KB
    limit = r"take 8388\d{3} bytes uncompressed, more than the limit of 4194304"
    with peak_memory() as peak, pytest.raises(BodyTooLarge, match=limit):
        decode_npz(body, 4 * MiB)
    assert peak[0] < MiB
    decoded = decode_npz(body, 9 * MiB)  # savez_compressed within the limit is fine
    assert decoded["x"].shape == (2048, 1024) and not decoded["x"].any()


def test_the_limit_counts_every_member() -> None:
    body = npz(np.savez_compressed, a=np.zeros(1000, np.uint8), b=np.zeros(1000, np.uint8))
    sizes = sum(info.file_size for info in zipfile.ZipFile(io.BytesIO(body)).infolist())
    assert set(decode_npz(body, sizes)) == {"a", "b"}
    with pytest.raises(BodyTooLarge):
        decode_npz(body, sizes - 1)


def deflated_member(name: str, data: bytes, *, claimed_size: int, claimed_crc: int) -> bytes:
    """A one-member archive whose headers claim ``claimed_size`` bytes while the stream holds ``data``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    body = bytearray(buffer.getvalue())
    local = body.index(b"PK\x03\x04")
    central = body.index(b"PK\x01\x02")
    struct.pack_into("<I", body, local + 14, claimed_crc)
    struct.pack_into("<I", body, local + 22, claimed_size)
    struct.pack_into("<I", body, central + 16, claimed_crc)
    struct.pack_into("<I", body, central + 24, claimed_size)
    return bytes(body)


def npy(array: np.ndarray | np.generic) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_a_member_decompresses_no_more_than_its_array_needs() -> None:
    """A small declared size over a 64 MiB stream of zeros: what the header says is all that is read."""
    head = npy(np.zeros(16384, np.float32))
    body = deflated_member(
        "x.npy", head + bytes(64 * MiB), claimed_size=len(head), claimed_crc=zlib.crc32(head)
    )
    assert len(body) < MiB
    with peak_memory() as peak:
        decoded = decode_npz(body, 2 * MiB)
    assert np.array_equal(decoded["x"], np.zeros(16384, np.float32))
    assert peak[0] < 4 * MiB  # zipfile's read() would inflate the whole stream: 64 MiB


def test_a_header_declaring_more_than_the_member_holds_is_refused_without_allocating() -> None:
    # np.load would allocate the declared 1 TB array (or fail with MemoryError) before reading data.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": True, "shape": (2**28, 1024)}
    )
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
            archive.writestr("x.npy", header.getvalue() + bytes(100))
        with peak_memory() as peak, pytest.raises(InvalidTensor, match=r"declares shape \[268435456, 1024\]"):
            decode_npz(buffer.getvalue(), NO_LIMIT)
        assert peak[0] < MiB


@pytest.mark.parametrize(
    ("member", "compression", "message"),
    [
        ("x.txt", zipfile.ZIP_STORED, "member 'x.txt' of the application/x-npz archive is not an array"),
        ("x.npy", zipfile.ZIP_LZMA, "is compressed with method 14"),
        ("x.npy", zipfile.ZIP_BZIP2, "is compressed with method 12"),
    ],
)
def test_members_numpy_does_not_write_are_refused(member: str, compression: int, message: str) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        archive.writestr(member, npy(np.zeros(3, np.float32)))
    with pytest.raises(InvalidTensor, match=message):
        decode_npz(buffer.getvalue(), NO_LIMIT)


def test_corrupt_deflate_data_is_refused() -> None:
    body = bytearray(npz(np.savez_compressed, x=np.arange(1000, dtype=np.float32)))
    start = body.index(b"x.npy") + len("x.npy")
    body[start + 20 : start + 60] = b"\xff" * 40
    with pytest.raises(InvalidTensor, match="not a valid"):
        decode_npz(bytes(body), NO_LIMIT)


def test_text_goes_out_as_utf8_strings() -> None:
    assert to_json(np.array(["é".encode(), b"plain", b"\xff"])) == ["é", "plain", "\ufffd"]
    assert to_json(np.array([b"abc", "é".encode()], dtype=object)) == ["abc", "é"]
    assert to_json(np.array(b"checkpoint.ckpt")) == "checkpoint.ckpt"


# The zip directory is checked before zipfile parses it (check_directory).

REAL_ZIPFILE = zipfile.ZipFile  # builders use it, so the spy sees only what the codecs open
END = b"PK\x05\x06"
END_RECORD = struct.Struct("<4sHHHHIIH")
"""signature, disk, the directory's first disk, entries on this disk, entries, directory size and offset,
comment length"""
ZIP64_END = struct.Struct("<4sQHHIIQQQQ")
ZIP64_LOCATOR = struct.Struct("<4sIQI")
MEMBERS = 20_000


@functools.cache
def empty_members(count: int) -> bytes:
    """An archive of ``count`` empty stored members: a 2 MB body for 20,000 of them."""
    buffer = io.BytesIO()
    with REAL_ZIPFILE(buffer, "w") as archive:
        for i in range(count):
            archive.writestr(f"m{i:05d}.npy", b"")
    return buffer.getvalue()


def end_record(body: bytes) -> tuple[int, tuple]:
    at = body.rindex(END)
    return at, END_RECORD.unpack_from(body, at)


def with_counts(body: bytes, entries: int) -> bytes:
    """The archive with its end record claiming ``entries`` entries (its directory's size left true)."""
    at, (signature, disk, start, _, _, size, offset, _) = end_record(body)
    record = END_RECORD.pack(signature, disk, start, entries, entries, size, offset, 0)
    return body[:at] + record + body[at + END_RECORD.size :]


def as_zip64(body: bytes, classic_entries: int = 0xFFFF, classic_size: int = 0xFFFFFFFF) -> bytes:
    """The archive with zip64 end records (the true counts) before a classic record claiming the given ones.

    The defaults are what a zip64 writer puts in the classic record: the counts and sizes live elsewhere.
    """
    at, (_, _, _, on_disk, total, size, offset, _) = end_record(body)
    zip64 = ZIP64_END.pack(b"PK\x06\x06", ZIP64_END.size - 12, 45, 45, 0, 0, on_disk, total, size, offset)
    locator = ZIP64_LOCATOR.pack(b"PK\x06\x07", 0, at, 1)
    classic_offset = offset if classic_size != 0xFFFFFFFF else 0xFFFFFFFF
    classic = END_RECORD.pack(END, 0, 0, classic_entries, classic_entries, classic_size, classic_offset, 0)
    return body[:at] + zip64 + locator + classic


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every archive opened for reading (by the codecs) in the test: the real ``zipfile.ZipFile``, spied on.

    Writing (``numpy.savez`` making a body) is not counted.
    """
    calls: list[object] = []

    class Spy(REAL_ZIPFILE):
        def __init__(self, file: Any, mode: Any = "r", *args: Any, **kwargs: Any) -> None:
            if mode == "r":
                calls.append(file)
            super().__init__(file, mode, *args, **kwargs)

    monkeypatch.setattr(codecs.zipfile, "ZipFile", Spy)
    return calls


def three_arrays(save: Callable[..., None]) -> bytes:
    return npz(save, x=ARRAYS["x"], big_endian=ARRAYS["big_endian"], scalar=ARRAYS["scalar"])


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_an_archive_of_three_arrays_decodes_through_zipfile(save: Callable[..., None], opened: list) -> None:
    body = three_arrays(save)
    decoded = decode_npz(body, NO_LIMIT)
    for name in ("x", "big_endian", "scalar"):
        np.testing.assert_array_equal(decoded[name], ARRAYS[name])
    assert opened  # the spy sees zipfile at work: its absence below means something


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_max_members_arrays_decode_and_one_more_is_refused_unopened(
    save: Callable[..., None], opened: list
) -> None:
    arrays = {f"a{i}": np.full(2, i, np.float32) for i in range(65)}
    assert len(decode_npz(npz(save, **dict(list(arrays.items())[:64])), NO_LIMIT)) == 64
    opened.clear()
    message = r"holds 65 members; at most 64 are accepted \(FLEET_MAX_NPZ_MEMBERS\)"
    with pytest.raises(InvalidTensor, match=message):
        decode_npz(npz(save, **arrays), NO_LIMIT)
    assert opened == []
    with pytest.raises(InvalidTensor, match=r"holds 3 members; at most 2 .*FLEET_MAX_NPZ_MEMBERS"):
        decode_npz(three_arrays(save), NO_LIMIT, max_members=2)
    assert opened == []


def test_twenty_thousand_empty_members_are_refused_at_once_unopened(opened: list) -> None:
    body = empty_members(MEMBERS)
    started = time.perf_counter()
    with pytest.raises(InvalidTensor, match=r"holds 20000 members; .*\(FLEET_MAX_NPZ_MEMBERS\)"):
        decode_npz(body, NO_LIMIT)
    assert time.perf_counter() - started < 0.05  # zipfile takes about 0.2 s to parse that directory
    assert opened == []


def test_an_end_record_claiming_one_entry_over_twenty_thousand_is_refused_unopened(opened: list) -> None:
    body = with_counts(empty_members(MEMBERS), 1)
    assert len(REAL_ZIPFILE(io.BytesIO(body)).infolist()) == MEMBERS  # zipfile reads by size, not count
    with pytest.raises(InvalidTensor, match="archive's directory takes 1120000 bytes, more than 64 entries"):
        decode_npz(body, NO_LIMIT)
    assert opened == []


def test_the_directory_size_allowed_fits_max_members_entries_of_long_names(opened: list) -> None:
    """The size check refuses no honest archive: 64 members with names of 200 characters pass it."""
    arrays = {f"{i:02d}" + "n" * 198: np.zeros(1, np.float32) for i in range(64)}
    assert len(decode_npz(npz(np.savez, **arrays), NO_LIMIT)) == 64


@pytest.mark.parametrize("body", [three_arrays(np.savez), empty_members(3)], ids=["savez", "empty-members"])
def test_a_zip64_archive_is_refused_unopened(body: bytes, opened: list) -> None:
    zip64 = as_zip64(body)
    assert len(REAL_ZIPFILE(io.BytesIO(zip64)).infolist()) == 3  # a valid zip64 archive
    with pytest.raises(InvalidTensor, match="is a zip64 archive"):
        decode_npz(zip64, NO_LIMIT, max_members=0xFFFF)  # refused as zip64, whatever the member limit
    with pytest.raises(InvalidTensor, match="is a zip64 archive"):
        decode_npz(with_counts(body, 0xFFFF), NO_LIMIT)
    assert opened == []


def test_a_zip64_directory_under_a_classic_record_claiming_one_entry_is_refused_unopened(
    opened: list,
) -> None:
    """zipfile takes the zip64 record's counts and size whatever the classic record says."""
    body = as_zip64(empty_members(MEMBERS), classic_entries=1, classic_size=56)
    assert len(REAL_ZIPFILE(io.BytesIO(body)).infolist()) == MEMBERS
    with pytest.raises(InvalidTensor):
        decode_npz(body, NO_LIMIT)
    assert opened == []


@pytest.mark.parametrize(
    "body",
    [
        three_arrays(np.savez)[: -END_RECORD.size],
        three_arrays(np.savez_compressed)[: -END_RECORD.size],
        three_arrays(np.savez)[: -END_RECORD.size + 10],  # a record cut short
        b"PK\x03\x04" + bytes(100),
        b"PK",
    ],
    ids=["savez", "savez_compressed", "cut-short", "local-header-only", "signature-only"],
)
def test_a_body_without_an_end_record_is_refused_unopened(body: bytes, opened: list) -> None:
    with pytest.raises(InvalidTensor, match=r"not a valid application/x-npz archive \(numpy.savez\)"):
        decode_npz(body, NO_LIMIT)
    assert opened == []


def test_an_archive_with_a_comment_still_decodes() -> None:
    buffer = io.BytesIO()
    with REAL_ZIPFILE(buffer, "w") as archive:
        archive.writestr("x.npy", npy(ARRAYS["x"]))
        archive.comment = b"c" * 0xFFFF  # the end record is then 64 KB from the end
    np.testing.assert_array_equal(decode_npz(buffer.getvalue(), NO_LIMIT)["x"], ARRAYS["x"])


# Through the service: a bad archive gets 422 and changes nothing.

BAD_ARCHIVES = [
    pytest.param(
        lambda: npz(np.savez, **{f"a{i}": np.zeros(2, np.float32) for i in range(65)}),
        "holds 65 members; at most 64 are accepted (FLEET_MAX_NPZ_MEMBERS)",
        id="65-arrays",
    ),
    pytest.param(
        lambda: empty_members(MEMBERS),
        "holds 20000 members; at most 64 are accepted (FLEET_MAX_NPZ_MEMBERS)",
        id="20000-empty-members",
    ),
    pytest.param(
        lambda: with_counts(empty_members(MEMBERS), 1),
        "archive's directory takes 1120000 bytes",
        id="lying-count",
    ),
    pytest.param(lambda: as_zip64(three_arrays(np.savez)), "is a zip64 archive", id="zip64"),
    pytest.param(
        lambda: three_arrays(np.savez)[: -END_RECORD.size],
        "not a valid application/x-npz archive (numpy.savez): it has no zip end record",
        id="no-end-record",
    ),
    pytest.param(
        lambda: as_zip64(empty_members(MEMBERS), classic_entries=1, classic_size=56),
        "is a zip64 archive",
        id="zip64-under-a-plausible-classic-record",
    ),
]


@pytest.fixture
def checkpoint(client: TestClient) -> Iterator[Path]:
    """Device "phone", trained a step and saved; after the test, its checkpoint and steps are as they were."""
    assert client.post("/v1/devices", json={"id": "phone"}).status_code == 201
    x, y = np.zeros((2, 28, 28), np.float32), np.eye(10, dtype=np.float32)[:2]
    assert client.post(
        "/v1/devices/phone/train", content=npz(np.savez, x=x, y=y), headers=NPZ_TYPE
    ).is_success
    assert client.post("/v1/devices/phone/save").is_success
    path = Path(client.app.state.fleet.get("phone").checkpoint_path)  # type: ignore[attr-defined]
    before, steps = path.read_bytes(), client.get("/v1/devices/phone").json()["train_steps"]
    yield path
    assert path.read_bytes() == before
    assert client.get("/v1/devices/phone").json()["train_steps"] == steps


NPZ_TYPE = {"content-type": NPZ}


@pytest.mark.parametrize(("make", "message"), BAD_ARCHIVES)
def test_a_bad_archive_gets_422_unopened_and_keeps_the_checkpoint(
    client: TestClient, checkpoint: Path, opened: list, make: Callable[[], bytes], message: str
) -> None:
    body = make()
    for path in ("/v1/devices/phone/train", "/v1/devices/phone/infer"):
        response = client.post(path, content=body, headers=NPZ_TYPE)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_tensor" and message in error["message"], error
    assert opened == []


def test_the_member_limit_is_the_setting(tmp_path: Path) -> None:
    x = np.zeros((1, 28, 28), np.float32)
    two, three = npz(np.savez, x=x, extra=x), npz(np.savez, x=x, extra=x, more=x)
    with local_client(create_app(Settings(data_dir=tmp_path / "data", max_npz_members=2))) as client:
        client.post("/v1/devices", json={"id": "phone"})
        response = client.post("/v1/devices/phone/infer", content=three, headers=NPZ_TYPE)
        assert response.status_code == 422, response.text
        assert "holds 3 members; at most 2 are accepted (FLEET_MAX_NPZ_MEMBERS)" in response.text
        response = client.post("/v1/devices/phone/infer", content=two, headers=NPZ_TYPE)
        assert response.status_code == 422 and "unexpected input(s) ['extra']" in response.text


ENCODED = {
    "loss": np.float32(0.25),
    "logits": np.arange(20, dtype=np.float32).reshape(2, 10),
    "big_endian": np.arange(6, dtype=">i4").reshape(3, 2),
    "text": np.array([b"coat", b"bag"]),
    "flag": np.array(True),
    "empty": np.zeros((0, 5), np.int8),
    "complex": np.array([1 + 2j], np.complex64),
    "half": np.ones((2, 3), np.float16),
}


@pytest.mark.parametrize("name", list(ENCODED))
def test_encoded_members_are_byte_for_byte_what_numpy_savez_writes(name: str) -> None:
    value = np.asarray(ENCODED[name])
    expected = io.BytesIO()
    np.savez(expected, **{name: value})
    got = zipfile.ZipFile(io.BytesIO(codecs.encode_npz({name: value})))
    assert got.testzip() is None  # every member's CRC holds
    assert got.namelist() == [f"{name}.npy"]
    assert got.read(f"{name}.npy") == zipfile.ZipFile(expected).read(f"{name}.npy")
    loaded = np.load(io.BytesIO(codecs.encode_npz({name: value})))[name]
    assert loaded.dtype == value.dtype and np.array_equal(loaded, value)


def test_an_encoded_archive_of_many_arrays_reads_back_through_both_paths() -> None:
    body = codecs.encode_npz(ENCODED)
    fast = codecs.plain_npz(body)
    slow = dict(np.load(io.BytesIO(body)))
    assert fast is not None and list(fast) == list(slow) == list(ENCODED)
    for name, value in ENCODED.items():
        assert np.array_equal(fast[name], np.asarray(value)) and np.array_equal(slow[name], np.asarray(value))


@pytest.mark.parametrize(
    "value",
    [np.ones((3, 2)).T, np.array(["str"]), np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")])],
    ids=["fortran-order", "unicode", "structured"],
)
def test_arrays_the_encoder_does_not_write_go_to_numpy(value: np.ndarray) -> None:
    loaded = np.load(io.BytesIO(codecs.encode_npz({"x": value})))["x"]
    assert loaded.dtype == value.dtype and np.array_equal(loaded, value)
