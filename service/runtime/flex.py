"""The TensorFlow op inside a Flex (Select TF ops) operator, decoded strictly from its custom options.

The Flex delegate does not run the op that an operator's ``custom_code`` names: it claims every custom
operator whose code starts with ``Flex``, reads its custom options, a flexbuffer vector
``[op name, serialized tensorflow.NodeDef]``, and runs the op that the first string names, with the
NodeDef's attributes (``NodeDef.op`` only chooses the attribute defaults). Seen with TF 2.19.1: an
operator coded ``FlexSqrt`` whose options say ``WriteFile`` writes its file, whatever ``NodeDef.op``
says. So all three names must agree before any of them is believed.

The C++ reader follows offsets without checking them; this one reads exactly that layout (a root vector
of two strings) and refuses any offset that leaves the options' bytes, so that it cannot read something
other than what the delegate reads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

OP_NAME = re.compile(r"[A-Z][A-Za-z0-9_>]*\Z")
"""What TensorFlow accepts as an op name (``op_def_builder``'s rule)."""
PREFIX = b"Flex"

# flexbuffers type codes (flexbuffers.h): a packed type byte is (type << 2) | log2(byte width).
_STRING = 5
_VECTOR = 10


class BadFlexOptions(ValueError):
    """The custom options are not a Flex op's ``[op name, NodeDef]``."""


@dataclass(frozen=True)
class FlexOp:
    name: str
    """The op the delegate runs (the options' first string)."""
    node_op: str
    """``NodeDef.op``: the op whose defaults fill in the attributes."""
    function_attrs: tuple[str, ...]
    """Attributes whose values are functions (or placeholders for them)."""
    type_attrs: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    """Attributes holding a TensorFlow ``DataType`` (a 1-tuple) or a list of them, by name."""
    int_attrs: Mapping[str, int] = field(default_factory=dict)
    """Attributes holding an integer (``N`` of ``ShapeN``, a number of inputs), by name."""


def op_in_custom_code(custom_code: bytes | None) -> str | None:
    """The op name after ``Flex`` in a custom code, or None if it is not a Flex op's code."""
    if custom_code is None or not custom_code.startswith(PREFIX):
        return None
    name = custom_code[len(PREFIX) :].decode("ascii", "replace")
    return name if OP_NAME.match(name) else None


def decode(options: bytes) -> FlexOp:
    """The op a Flex operator with these custom options runs; `BadFlexOptions` if they are anything else."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.framework import node_def_pb2

    name, serialized = _two_strings(options)
    try:
        text = name.decode("ascii")
    except UnicodeDecodeError:
        raise BadFlexOptions("its op name is not ASCII") from None
    if not OP_NAME.match(text):
        raise BadFlexOptions(f"{text[:64]!r} is not a TensorFlow op name")
    try:
        node = node_def_pb2.NodeDef.FromString(serialized)
    except DecodeError as exc:
        raise BadFlexOptions(f"its NodeDef does not parse: {exc}") from None
    function_attrs = tuple(
        sorted(
            key
            for key, value in node.attr.items()
            if value.WhichOneof("value") in ("func", "placeholder")
            or (value.WhichOneof("value") == "list" and len(value.list.func))
        )
    )
    type_attrs: dict[str, tuple[int, ...]] = {}
    int_attrs: dict[str, int] = {}
    for key, value in node.attr.items():
        kind = value.WhichOneof("value")
        if kind == "type":
            type_attrs[key] = (int(value.type),)
        elif kind == "i":
            int_attrs[key] = int(value.i)
        elif kind == "list" and len(value.list.type):
            type_attrs[key] = tuple(int(t) for t in value.list.type)
    return FlexOp(text, node.op, function_attrs, type_attrs, int_attrs)


def _two_strings(options: bytes) -> tuple[bytes, bytes]:
    """The two strings of a flexbuffer whose root is an untyped vector of exactly two strings."""
    if len(options) < 3:
        raise BadFlexOptions(f"{len(options)} bytes are too few for a flexbuffer")
    root_width = options[-1]
    if root_width not in (1, 2, 4, 8):
        raise BadFlexOptions(f"the root byte width {root_width} is not 1, 2, 4 or 8")
    root_type, vector_width = _unpack_type(options[-2])
    if root_type != _VECTOR:
        raise BadFlexOptions(f"the root has flexbuffer type {root_type}, not a vector")
    root = len(options) - 2 - root_width
    vector = _indirect(options, root, root_width)
    size = _uint(options, vector - vector_width, vector_width)
    if size != 2:
        raise BadFlexOptions(f"the root vector has {size} elements, not 2 (op name, NodeDef)")
    strings = []
    for i in range(2):
        element_type, string_width = _unpack_type(_uint(options, vector + 2 * vector_width + i, 1))
        if element_type != _STRING:
            raise BadFlexOptions(f"element {i} has flexbuffer type {element_type}, not a string")
        start = _indirect(options, vector + i * vector_width, vector_width)
        length = _uint(options, start - string_width, string_width)
        if start + length > len(options):
            raise BadFlexOptions(f"string {i} ({length} bytes) runs past the end of the options")
        strings.append(options[start : start + length])
    return strings[0], strings[1]


def _unpack_type(packed: int) -> tuple[int, int]:
    return packed >> 2, 1 << (packed & 3)


def _uint(data: bytes, pos: int, width: int) -> int:
    if pos < 0 or pos + width > len(data):
        raise BadFlexOptions(
            f"a {width}-byte field at offset {pos} lies outside the {len(data)}-byte options"
        )
    return int.from_bytes(data[pos : pos + width], "little")


def _indirect(data: bytes, pos: int, width: int) -> int:
    """Where the (backwards) offset stored at ``pos`` points, as the C++ reader computes it."""
    return pos - _uint(data, pos, width)
