"""Tensors on the wire: JSON (nested lists) and ``application/x-npz`` (numpy's savez)."""

from __future__ import annotations

import io
import math
import re
import struct
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from fastapi import Request, Response

from service.api.deps import in_thread
from service.errors import BodyTooLarge, InvalidRequest, InvalidTensor, UnsupportedMediaType
from service.runtime import SignatureSpec

NPZ = "application/x-npz"
JSON = "application/json"
INLINE_BYTES = 256 * 1024
"""JSON bodies up to this size are decoded on the event loop (at most a few milliseconds, less than a
trip to the worker pool costs at batch 1); larger ones in the worker pool, so that they stall no other
request. An uncompressed npz is viewed in place whatever its size (tens of microseconds: a train
batch of 100 is 314 KB), so it is decoded on the loop; a compressed one always in the pool."""


MAX_RANK = 32
"""The most dimensions a tensor in a body may declare (numpy allows 64; no model here takes more than 8)."""
MAX_DIM = 2**31 - 1
"""The largest dimension a body may declare: TFLite's dimensions are int32."""


def check_shape(name: str, shape: object) -> tuple[int, ...]:
    """``shape`` if it is at most ``MAX_RANK`` integers in 0..``MAX_DIM``; else InvalidTensor.

    Checked before any arithmetic on it: the product of a few hundred 3,000-digit integers takes seconds.
    """
    if not isinstance(shape, (tuple, list)) or len(shape) > MAX_RANK:
        raise InvalidTensor(f"'{name}' declares a shape of more than {MAX_RANK} dimensions, or none at all")
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or not 0 <= dim <= MAX_DIM:
            shown = str(dim) if not isinstance(dim, int) or dim.bit_length() < 64 else "a huge integer"
            raise InvalidTensor(
                f"'{name}' declares dimension {shown}; each must be an integer in 0..{MAX_DIM}"
            )
    return tuple(shape)


def media_type(header: str | None) -> str:
    return (header or "").split(";")[0].strip().lower()


NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|=]?[a-zA-Z]\d{0,4})', 'fortran_order': False, "
    rb"'shape': \(((?:\d{1,10}, ?)*\d{0,10})\), \} *\n"
)
"""The header ``numpy.save`` writes for a plain C-ordered array."""


def _stored_arrays(body: bytes) -> dict[str, np.ndarray] | None:
    """Arrays viewed in place from an uncompressed ``savez`` archive, or None if it is anything else.

    ``np.load`` checks a CRC and parses each header with ``ast``: about 0.5 ms for a train batch,
    as long as the train step itself. This reads the same bytes in about 30 us.
    """
    view = memoryview(body)
    arrays = {}
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
                return None
            name_len, extra_len = struct.unpack_from("<HH", body, info.header_offset + 26)
            start = info.header_offset + 30 + name_len + extra_len
            data = view[start : start + info.file_size]
            if len(data) != info.file_size or bytes(data[:6]) != b"\x93NUMPY" or data[6] not in (1, 2, 3):
                return None
            header_start = 10 if data[6] == 1 else 12
            header_len = int.from_bytes(data[8:header_start], "little")
            match = NPY_HEADER.fullmatch(bytes(data[header_start : header_start + header_len]))
            if match is None:
                return None
            dtype = np.dtype(match.group(1).decode())
            if dtype.hasobject:
                return None
            shape = check_shape(info.filename, [int(d) for d in match.group(2).split(b",") if d.strip()])
            array = np.frombuffer(data, dtype=dtype, offset=header_start + header_len)
            arrays[info.filename.removesuffix(".npy")] = array.reshape(shape)
    return arrays


def _member_array(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One ``.npy`` member, decompressing no more than its header says the array takes.

    ``np.load`` would allocate whatever shape the header declares before reading a byte of data.
    """
    if info.flag_bits & 0x1:
        raise InvalidTensor(f"member '{info.filename}' of the {NPZ} archive is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        # bzip2 and lzma decompress a read's worth of input with no bound on the output.
        raise InvalidTensor(
            f"member '{info.filename}' of the {NPZ} archive is compressed with method "
            f"{info.compress_type}; use numpy.savez or numpy.savez_compressed (deflate)"
        )
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise ValueError(
                f"member '{info.filename}' has .npy format version {version}; 1.0 or 2.0 expected"
            )
        if dtype.hasobject:
            raise ValueError(f"member '{info.filename}' holds Python objects, which need pickle")
        count = math.prod(check_shape(info.filename, shape))
        size = count * dtype.itemsize
        if size > info.file_size:
            raise ValueError(
                f"member '{info.filename}' declares shape {list(shape)} of {dtype} ({size} bytes) "
                f"but holds {info.file_size} bytes"
            )
        data = member.read(size)  # read(size) decompresses at most about size bytes; read() 1 GB
    if len(data) != size:
        raise EOFError(f"member '{info.filename}' ends after {len(data)} of its {size} bytes")
    return np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran_order else "C")


def _archive_arrays(body: bytes, max_bytes: int) -> dict[str, np.ndarray]:
    """Arrays from any ``savez`` or ``savez_compressed`` archive (``_stored_arrays`` is the fast path)."""
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        members = archive.infolist()
        # A member never yields more than its declared size, so this bounds what decompressing takes.
        declared = sum(info.file_size for info in members)
        if declared > max_bytes:
            raise BodyTooLarge(
                f"the {NPZ} archive's arrays take {declared} bytes uncompressed, more than the limit "
                f"of {max_bytes} bytes (FLEET_MAX_BODY_BYTES)"
            )
        arrays = {}
        for info in members:
            if not info.filename.endswith(".npy"):
                raise InvalidTensor(
                    f"member '{info.filename}' of the {NPZ} archive is not an array (name.npy)"
                )
            arrays[info.filename.removesuffix(".npy")] = _member_array(archive, info)
    return arrays


MALFORMED = (
    ValueError,
    TypeError,
    OverflowError,
    OSError,
    EOFError,
    KeyError,
    struct.error,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,  # zip features zipfile lacks: strong encryption, patched data, new versions
)
"""What zipfile and numpy raise on a malformed archive."""


def _native(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The interpreter takes native byte order; a big-endian sender is not wrong, just foreign."""
    return {
        name: a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("=")) for name, a in arrays.items()
    }


def _refuse_malformed(exc: Exception) -> InvalidTensor:
    return InvalidTensor(f"the body is not a valid {NPZ} archive (numpy.savez): {exc}")


EOCD = b"PK\x05\x06"
"""The zip end-of-central-directory record's signature; the record is 22 bytes plus a comment."""
EOCD_SEARCH = 22 + 0xFFFF
DIRECTORY_ENTRY_BYTES = 46 + 512
"""A central-directory entry: 46 fixed bytes plus its name and extra fields (an input name is short)."""
ZIP64_LOCATOR = b"PK\x06\x07"
ZIP64_ENTRIES = 0xFFFF
"""The entry count a zip64 archive writes in its classic record; the real count lives elsewhere."""


def check_directory(body: bytes, max_members: int) -> None:
    """Refuse an archive with more than ``max_members`` entries before its directory is parsed.

    ``zipfile`` builds an object for every central-directory entry first; a 64 MB body can declare a
    million of them, seconds of work for nothing. The counts are read from the end record (22 bytes).
    """
    at = body.rfind(EOCD, max(0, len(body) - EOCD_SEARCH))
    if at < 0 or len(body) < at + 22:
        raise InvalidTensor(f"the body is not a valid {NPZ} archive (numpy.savez): it has no zip end record")
    on_disk, total, directory_size = struct.unpack_from("<HHI", body, at + 8)
    # zipfile takes the counts from a zip64 record whenever its locator sits before the end record.
    if ZIP64_ENTRIES in (on_disk, total) or body[max(0, at - 20) : at - 16] == ZIP64_LOCATOR:
        raise InvalidTensor(f"the {NPZ} archive is a zip64 archive; numpy.savez of a few arrays is not")
    if max(on_disk, total) > max_members:
        raise InvalidTensor(
            f"the {NPZ} archive holds {max(on_disk, total)} members; at most {max_members} are accepted "
            "(FLEET_MAX_NPZ_MEMBERS): send one array per input"
        )
    # zipfile parses entries until it has read the directory's declared size, whatever the count says.
    if directory_size > max_members * DIRECTORY_ENTRY_BYTES:
        raise InvalidTensor(
            f"the {NPZ} archive's directory takes {directory_size} bytes, more than {max_members} "
            f"entries with names of an input's length take"
        )


def plain_npz(body: bytes, max_members: int = 64) -> dict[str, np.ndarray] | None:
    """The arrays of an uncompressed archive, viewed in place in microseconds; None for any other."""
    if not body.startswith(b"PK"):
        raise InvalidTensor(f"the body is not a {NPZ} archive (numpy.savez writes a zip file)")
    check_directory(body, max_members)
    try:
        arrays = _stored_arrays(body)
        return None if arrays is None else _native(arrays)
    except MALFORMED as exc:
        raise _refuse_malformed(exc) from exc


def decode_npz(body: bytes, max_bytes: int, max_members: int = 64) -> dict[str, np.ndarray]:
    """The arrays of any ``savez`` or ``savez_compressed`` archive.

    Compressed archives whose arrays would take more than ``max_bytes`` are refused (BodyTooLarge)
    before anything is decompressed.
    """
    arrays = plain_npz(body, max_members)
    if arrays is not None:
        return arrays
    try:
        return _native(_archive_arrays(body, max_bytes))
    except MALFORMED as exc:
        raise _refuse_malformed(exc) from exc


def json_object(body: bytes) -> dict[str, Any]:
    """A JSON body that must be an object (an empty body is none: ``{}``), else InvalidRequest."""
    if not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidRequest("the body must be a JSON object")
    return value


def encode_npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    """``numpy.savez``'s archive of ``arrays``: written here for plain arrays (a few microseconds for
    a train step's loss, where ``zipfile`` takes tens), by numpy for anything else."""
    plain = {name: np.asarray(value) for name, value in arrays.items()}
    if all(_is_plain(a) for a in plain.values()):
        return _stored_archive({f"{name}.npy": _npy(a) for name, a in plain.items()})
    buffer = io.BytesIO()
    np.savez(buffer, **plain)
    return buffer.getvalue()


PLAIN_KINDS = frozenset("biufcS")
STORED_LIMIT = 1 << 31
"""Archives this large are left to ``zipfile``, which switches to zip64 near 4 GiB."""


def _is_plain(array: np.ndarray) -> bool:
    """A C-ordered array of a one-field dtype numpy describes by its ``str`` (``<f4``, ``|S5``...)."""
    dtype = array.dtype
    plain_dtype = dtype.kind in PLAIN_KINDS and dtype.names is None and dtype.shape == ()
    return plain_dtype and array.flags.c_contiguous and array.nbytes < STORED_LIMIT


def _npy(array: np.ndarray) -> bytes:
    """The ``.npy`` file ``numpy.save`` writes for a plain array (format 1.0, header padded to 64)."""
    header = f"{{'descr': '{array.dtype.str}', 'fortran_order': False, 'shape': {array.shape!r}, }}"
    pad = -(10 + len(header) + 1) % 64
    head = header.encode("latin1") + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head + array.tobytes()


def _stored_archive(members: Mapping[str, bytes]) -> bytes:
    """A zip of ``members`` stored uncompressed, as ``zipfile`` writes them (version 2.0, no dates)."""
    parts: list[bytes] = []
    directory: list[bytes] = []
    offset = 0
    for name, data in members.items():
        encoded, crc, size = name.encode(), zlib.crc32(data), len(data)
        fields = (0, 0, 0, 0x21, crc, size, size, len(encoded))  # flags, method, time, date (1980-01-01)...
        local = struct.pack("<4s5H3IHH", b"PK\x03\x04", 20, *fields, 0)
        directory.append(struct.pack("<4s6H3I5HII", b"PK\x01\x02", 20, 20, *fields, 0, 0, 0, 0, 0, offset))
        directory.append(encoded)
        parts += (local, encoded, data)
        offset += len(local) + len(encoded) + size
    listing = b"".join(directory)
    count = len(members)
    end = struct.pack("<4s4HIIH", EOCD, 0, 0, count, count, len(listing), offset, 0)
    return b"".join(parts) + listing + end


def decode_json_inputs(body: bytes) -> Mapping[str, object]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidTensor(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("inputs", {}), dict):
        raise InvalidTensor('a JSON body must be an object {"inputs": {"<input name>": <nested lists>, ...}}')
    inputs: Mapping[str, object] = document.get("inputs", {})
    return inputs


def _none_given(inputs: Mapping[str, object]) -> dict[str, np.ndarray]:
    """For an operation that takes no inputs: the body must carry none."""
    if inputs:
        raise InvalidTensor("this operation takes no inputs; send an empty body")
    return {}


def decode_inputs(
    body: bytes, kind: str, spec: SignatureSpec | None, max_bytes: int, max_members: int = 64
) -> dict[str, np.ndarray]:
    """The body's tensors, checked against ``spec`` (None: the operation takes no inputs).

    Blocking, and slow for large bodies: ``read_inputs`` runs it in the worker pool.
    """
    if kind == NPZ and body:
        arrays = decode_npz(body, max_bytes, max_members)
        return _none_given(arrays) if spec is None else spec.check(arrays)
    inputs = decode_json_inputs(body) if body else {}
    return _none_given(inputs) if spec is None else spec.coerce(inputs)


async def read_inputs(request: Request, spec: SignatureSpec | None) -> dict[str, np.ndarray]:
    """Decode and check the request's tensors against ``spec``; an empty body means no inputs.

    ``spec`` None: the operation takes no inputs (the body must then be empty or carry none).
    Cheap bodies are decoded here, on the event loop; others in the worker pool (``INLINE_BYTES``).
    """
    body = await request.body()
    kind = media_type(request.headers.get("content-type"))
    if kind not in (NPZ, JSON, ""):
        raise UnsupportedMediaType(f"content type {kind!r} is not supported; send {JSON} or {NPZ}")
    settings = request.app.state.settings
    max_bytes: int = settings.max_body_bytes
    max_members: int = settings.max_npz_members
    if kind == NPZ and body:
        arrays = plain_npz(body, max_members)
        if arrays is not None:
            return _none_given(arrays) if spec is None else spec.check(arrays)
    elif len(body) <= INLINE_BYTES:
        return decode_inputs(body, kind, spec, max_bytes, max_members)
    return await in_thread(request, decode_inputs, body, kind, spec, max_bytes, max_members)


def to_json(value: object) -> object:
    """An array as nested lists; byte strings as text (UTF-8, undecodable bytes replaced)."""
    array = np.asarray(value)
    if array.dtype.kind == "S":
        return np.char.decode(array, "utf-8", "replace").tolist()
    if array.dtype.kind == "O":
        return np.vectorize(_text, otypes=[str])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def _text(item: object) -> str:
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)


def wants_npz(request: Request) -> bool:
    return NPZ in (request.headers.get("accept") or "")


def tensor_response(request: Request, outputs: Mapping[str, np.ndarray]) -> Response:
    if wants_npz(request):
        return Response(encode_npz(outputs), media_type=NPZ)
    body = {"outputs": {name: to_json(value) for name, value in outputs.items()}}
    return Response(orjson.dumps(body), media_type=JSON)
