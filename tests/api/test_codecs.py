"""The npz fast path reads exactly what ``np.load`` reads, falls back where it cannot, and never
decompresses more than the body limit."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from service.api.codecs import _stored_arrays, decode_npz, to_json
from service.errors import BodyTooLarge, InvalidTensor

NO_LIMIT = 1 << 40
MiB = 1 << 20

ARRAYS = {
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


def npz(save: Callable[..., None], **arrays: np.ndarray) -> bytes:
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


def npy(array: np.ndarray) -> bytes:
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
