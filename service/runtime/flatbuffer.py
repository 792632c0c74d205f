"""A bounds-checked reader of the parts of a `.tflite` flatbuffer that the model inspection needs.

TensorFlow's generated Python schema trusts the bytes it reads: on a hostile file it raises whatever
``struct.error``/``IndexError``/``TypeError`` it meets, and silently truncates a string that runs off
the end. TFLite's C++ loader trusts them too (``FlatBufferModel::BuildFromBuffer`` does not verify), so
a lenient reader here could see something other than what the interpreter runs. Every read below is
checked against the file's bounds, work is bounded by the file's size (flatbuffers may share one vector
between many tables), and any violation is one error, `MalformedFlatbuffer`.

Field numbers are those of TFLite's ``schema.fbs`` (TF 2.19).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

IDENTIFIER = b"TFL3"
"""The file identifier TFLite writes at bytes 4-8."""

CALL_OPTIONS, IF_OPTIONS, WHILE_OPTIONS, CALL_ONCE_OPTIONS = 16, 92, 93, 103
"""``BuiltinOptions`` union tags of the options that name subgraphs."""
SUBGRAPH_CALLERS = {31: CALL_OPTIONS, 118: IF_OPTIONS, 119: WHILE_OPTIONS, 129: CALL_ONCE_OPTIONS}
"""Builtin operator codes (CALL, IF, WHILE, CALL_ONCE) that run other subgraphs, and their options."""
_SUBGRAPH_FIELDS = {
    CALL_OPTIONS: ((0, "<I"),),  # subgraph
    IF_OPTIONS: ((0, "<i"), (1, "<i")),  # then_subgraph_index, else_subgraph_index
    WHILE_OPTIONS: ((0, "<i"), (1, "<i")),  # cond_subgraph_index, body_subgraph_index
    CALL_ONCE_OPTIONS: ((0, "<i"),),  # init_subgraph_index
}
OPTIONAL_TENSOR = -1
"""An operator input or output that is left out (``kTfLiteOptionalTensor``)."""


VAR_HANDLE = 142
VAR_HANDLE_OPTIONS = 111
"""``BuiltinOptions.VarHandleOptions``: container (field 0) and shared_name (field 1)."""


class MalformedFlatbuffer(ValueError):
    """The bytes are not a TFLite model this reader can follow safely."""


@dataclass(frozen=True)
class Tensor:
    type: int
    """A ``TensorType`` value (STRING is 5, RESOURCE 13, VARIANT 14)."""
    buffer: int
    is_variable: bool
    shape: tuple[int, ...] = ()
    shape_signature: tuple[int, ...] | None = None
    """The shape with -1 for dynamic dimensions, when the converter wrote one."""


@dataclass(frozen=True)
class Buffer:
    """Where a buffer's bytes lie in the file: ``start`` and ``size`` (0, 0 when it holds none)."""

    start: int
    size: int


@dataclass(frozen=True)
class Operator:
    builtin: int
    """The operator's builtin code, read as the interpreter reads it (CUSTOM is 32)."""
    custom_code: bytes | None
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    intermediates: tuple[int, ...]
    calls: tuple[int, ...]
    """Subgraphs this operator runs (CALL, IF, WHILE, CALL_ONCE)."""
    custom_options: bytes | None
    large_custom_options: bool
    """Whether it points at custom options stored outside the flatbuffer."""
    variable: bytes | None = None
    """A ``VAR_HANDLE``'s variable: its container and shared name, NUL-separated."""


@dataclass(frozen=True)
class Subgraph:
    tensors: tuple[Tensor, ...]
    inputs: tuple[int, ...]
    operators: tuple[Operator, ...]
    outputs: tuple[int, ...] = ()


@dataclass(frozen=True)
class Signature:
    name: str
    subgraph: int
    inputs: tuple[int, ...]
    """Tensor indices of its inputs, in its subgraph."""
    outputs: tuple[int, ...] = ()


@dataclass(frozen=True)
class Model:
    subgraphs: tuple[Subgraph, ...]
    signatures: tuple[Signature, ...]
    constant_buffers: frozenset[int]
    """Indices of the buffers that hold data (a tensor on one of them is a constant)."""
    buffers: tuple[Buffer, ...] = ()


def read_model(content: bytes) -> Model:
    """Read ``content`` as a TFLite model; raise `MalformedFlatbuffer` if it is not one."""
    if len(content) < 8 or content[4:8] != IDENTIFIER:
        raise MalformedFlatbuffer(f"it does not carry the TFLite file identifier {IDENTIFIER.decode()}")
    reader = _Reader(content)
    root = reader.table(reader.follow(0))
    opcodes = [_opcode(table) for table in root.tables(1)]
    buffer_tables = root.tables(4)
    constant = frozenset(
        i
        for i, buffer in enumerate(buffer_tables)
        if buffer.vector_length(0) or buffer.scalar(1, "<Q", 0) > 1
    )
    buffers = tuple(_buffer(table, len(content)) for table in buffer_tables)
    subgraph_tables = root.tables(2)
    subgraphs = tuple(_subgraph(table, opcodes, len(subgraph_tables)) for table in subgraph_tables)
    signatures = tuple(_signature(table, subgraphs) for table in root.tables(7))
    return Model(subgraphs=subgraphs, signatures=signatures, constant_buffers=constant, buffers=buffers)


def _buffer(table: _Table, file_size: int) -> Buffer:
    """A buffer's bytes: its ``data`` vector, or ``offset``/``size`` past the flatbuffer (large models)."""
    data = table.data_span(0)
    if data is not None and data[1]:
        return Buffer(*data)
    offset, size = table.scalar(1, "<Q", 0), table.scalar(2, "<Q", 0)
    if offset > 1 and offset + size > file_size:
        raise MalformedFlatbuffer(
            f"a buffer's {size} bytes at offset {offset} lie past the {file_size}-byte file"
        )
    return Buffer(offset, size) if offset > 1 else Buffer(0, 0)


def _opcode(table: _Table) -> tuple[int, bytes | None]:
    # The interpreter takes the larger of the int8 deprecated_builtin_code and the int32 builtin_code.
    builtin = max(table.scalar(0, "<b", 0), table.scalar(3, "<i", 0))
    return builtin, table.string(1)


def _subgraph(table: _Table, opcodes: list[tuple[int, bytes | None]], subgraph_count: int) -> Subgraph:
    tensors = tuple(
        Tensor(
            type=t.scalar(1, "<b", 0),
            buffer=t.scalar(2, "<I", 0),
            is_variable=bool(t.scalar(5, "<B", 0)),
            shape=t.ints(0),
            shape_signature=t.ints(7) if t.vector_length(7) else None,
        )
        for t in table.tables(0)
    )
    inputs = _tensor_indices(table.ints(1), len(tensors), optional=False)
    operators = []
    for op_table in table.tables(3):
        opcode_index = op_table.scalar(0, "<I", 0)
        if opcode_index >= len(opcodes):
            raise MalformedFlatbuffer(f"an operator has opcode index {opcode_index} of {len(opcodes)}")
        builtin, custom_code = opcodes[opcode_index]
        operators.append(
            Operator(
                builtin=builtin,
                custom_code=custom_code,
                inputs=_tensor_indices(op_table.ints(1), len(tensors)),
                outputs=_tensor_indices(op_table.ints(2), len(tensors)),
                intermediates=_tensor_indices(op_table.ints(8), len(tensors)),
                calls=_calls(op_table, builtin, subgraph_count),
                custom_options=op_table.byte_vector(5),
                large_custom_options=bool(op_table.scalar(9, "<Q", 0) or op_table.scalar(10, "<Q", 0)),
                variable=_variable(op_table) if builtin == VAR_HANDLE else None,
            )
        )
    outputs = _tensor_indices(table.ints(2), len(tensors), optional=False)
    return Subgraph(tensors=tensors, inputs=inputs, operators=tuple(operators), outputs=outputs)


def _variable(op_table: _Table) -> bytes:
    options = op_table.table_at(4) if op_table.scalar(3, "<B", 0) == VAR_HANDLE_OPTIONS else None
    if options is None:
        return b"\0"
    return (options.string(0) or b"") + b"\0" + (options.string(1) or b"")


def _calls(op_table: _Table, builtin: int, subgraph_count: int) -> tuple[int, ...]:
    expected = SUBGRAPH_CALLERS.get(builtin)
    if expected is None:
        return ()
    options = op_table.table_at(4)
    # Without its options the interpreter would run subgraph 0 (the defaults); no converter writes that.
    if op_table.scalar(3, "<B", 0) != expected or options is None:
        raise MalformedFlatbuffer(
            f"an operator with builtin code {builtin} lacks the options naming its subgraphs"
        )
    calls = tuple(options.scalar(field, fmt, 0) for field, fmt in _SUBGRAPH_FIELDS[expected])
    if any(not 0 <= index < subgraph_count for index in calls):
        raise MalformedFlatbuffer(f"an operator calls subgraph(s) {calls}, but there are {subgraph_count}")
    return calls


def _signature(table: _Table, subgraphs: tuple[Subgraph, ...]) -> Signature:
    key = table.string(2) or b""
    index = table.scalar(4, "<I", 0)
    if index >= len(subgraphs):
        raise MalformedFlatbuffer(f"a signature names subgraph {index} of {len(subgraphs)}")
    count = len(subgraphs[index].tensors)
    inputs = tuple(entry.scalar(1, "<I", 0) for entry in table.tables(0))
    outputs = tuple(entry.scalar(1, "<I", 0) for entry in table.tables(1))
    return Signature(
        name=key.decode("utf-8", "backslashreplace"),
        subgraph=index,
        inputs=_tensor_indices(inputs, count, optional=False),
        outputs=_tensor_indices(outputs, count, optional=False),
    )


def _tensor_indices(indices: tuple[int, ...], count: int, optional: bool = True) -> tuple[int, ...]:
    for index in indices:
        if not (0 <= index < count or (optional and index == OPTIONAL_TENSOR)):
            raise MalformedFlatbuffer(f"tensor index {index} is out of range (the subgraph has {count})")
    return indices


class _Reader:
    """The file's bytes, read only through bounds checks, with a budget of elements to visit."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._budget = 2 * len(data) + 1024

    def charge(self, elements: int) -> None:
        self._budget -= elements
        if self._budget < 0:
            raise MalformedFlatbuffer(
                "it holds more elements than its size allows (shared or looping offsets)"
            )

    def unpack(self, fmt: str, pos: int) -> int:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            raise MalformedFlatbuffer(
                f"a {size}-byte field at offset {pos} lies outside the {len(self.data)}-byte file"
            )
        value: int = struct.unpack_from(fmt, self.data, pos)[0]
        return value

    def follow(self, pos: int) -> int:
        """Where the unsigned offset stored at ``pos`` points."""
        return pos + self.unpack("<I", pos)

    def table(self, pos: int) -> _Table:
        self.charge(1)
        vtable = pos - self.unpack("<i", pos)
        size = self.unpack("<H", vtable)
        if size < 4 or size % 2:
            raise MalformedFlatbuffer(f"the table at offset {pos} has a vtable of {size} bytes")
        return _Table(self, pos, vtable, size)

    def vector(self, pos: int, element_size: int) -> tuple[int, int]:
        """(start, length) of the vector whose length is stored at ``pos``."""
        length = self.unpack("<I", pos)
        start = pos + 4
        if start + length * element_size > len(self.data):
            raise MalformedFlatbuffer(
                f"the vector at offset {pos} ({length} elements) runs past the end of the file"
            )
        return start, length


class _Table:
    def __init__(self, reader: _Reader, pos: int, vtable: int, vtable_size: int) -> None:
        self._reader = reader
        self._pos = pos
        self._vtable = vtable
        self._vtable_size = vtable_size

    def _field(self, field: int) -> int | None:
        slot = 4 + 2 * field
        if slot >= self._vtable_size:
            return None
        offset = self._reader.unpack("<H", self._vtable + slot)
        return self._pos + offset if offset else None

    def scalar(self, field: int, fmt: str, default: int) -> int:
        pos = self._field(field)
        return default if pos is None else self._reader.unpack(fmt, pos)

    def table_at(self, field: int) -> _Table | None:
        pos = self._field(field)
        return None if pos is None else self._reader.table(self._reader.follow(pos))

    def _vector(self, field: int, element_size: int) -> tuple[int, int] | None:
        pos = self._field(field)
        if pos is None:
            return None
        start, length = self._reader.vector(self._reader.follow(pos), element_size)
        self._reader.charge(length)
        return start, length

    def vector_length(self, field: int) -> int:
        pos = self._field(field)
        return 0 if pos is None else self._reader.unpack("<I", self._reader.follow(pos))

    def tables(self, field: int) -> list[_Table]:
        found = self._vector(field, 4)
        if found is None:
            return []
        start, length = found
        return [self._reader.table(self._reader.follow(start + 4 * i)) for i in range(length)]

    def ints(self, field: int) -> tuple[int, ...]:
        found = self._vector(field, 4)
        if found is None:
            return ()
        start, length = found
        return struct.unpack_from(f"<{length}i", self._reader.data, start)

    def data_span(self, field: int) -> tuple[int, int] | None:
        """(start, length) of a byte vector, without copying it (a constant buffer can be large)."""
        pos = self._field(field)
        if pos is None:
            return None
        return self._reader.vector(self._reader.follow(pos), 1)

    def byte_vector(self, field: int) -> bytes | None:
        found = self._vector(field, 1)
        if found is None:
            return None
        start, length = found
        return self._reader.data[start : start + length]

    def string(self, field: int) -> bytes | None:
        found = self._vector(field, 1)
        if found is None:
            return None
        start, length = found
        # The C++ side reads strings up to their NUL terminator: it must be where the length says.
        if self._reader.unpack("<B", start + length) != 0:
            raise MalformedFlatbuffer(f"the string at offset {start} is not NUL-terminated")
        return self._reader.data[start : start + length]
