"""What TFLite's own verifier (``tflite::Verify``) checks of a model's contents, and more, before any
interpreter is made of it.

TFLite's Python interpreter checks a flatbuffer's structure only; its kernels then trust the contents.
A model whose contents lie makes them read and write past their memory: a constant string tensor whose
offsets point past its buffer, read by ``GATHER``, answered ``infer`` with half a megabyte of the
server's heap; a Flex op whose ``T`` disagrees with the tensors bound to it aborted the process. So,
on what `service.runtime.flatbuffer` read (which already refuses offsets outside the file and
operator, subgraph and signature indices that refer to nothing):

- **types**: every tensor's type is one TFLite knows;
- **shapes**: rank at most `MAX_RANK`, dimensions not negative (-1, dynamic, only in the shape
  signature), at most `MAX_ELEMENTS` elements a tensor;
- **buffers**: every tensor's buffer exists; a constant holds exactly its shape times its type's size;
  a constant string tensor's header (count, offsets) matches its shape, its offsets start after the
  header, never decrease and end at the buffer's end;
- **dataflow**: every operator reads only constants, the subgraph's inputs, variables and what an
  earlier operator wrote (an unwritten string tensor is a dangling pointer to its kernel);
- **builtins**: string tensors only into the few builtins that take strings, resource tensors only
  where the variable builtins expect their handle;
- **Flex ops**: by TensorFlow's own definition of the op, the operator has the inputs and outputs it
  declares, and every type attribute (``T``, ``Tidx``, ``out_type``, ...) agrees with the tensors bound
  to it.

A refusal is InvalidModel naming the first defect: the subgraph, the tensor or operator, the field.
"""

from __future__ import annotations

import functools
import itertools
import math
import struct
from typing import Any

from service.errors import InvalidModel
from service.runtime import flex
from service.runtime.flatbuffer import Model, Operator, Subgraph, Tensor

MAX_RANK = 16
MAX_ELEMENTS = 2**26
"""Elements of one tensor (256 MiB of float32): far more than an on-device model needs."""
MAX_TOTAL_BYTES = 2**31
"""Bytes of all tensors of a model at their declared shapes: what making its interpreter may allocate."""
STRING, RESOURCE, VARIANT, INT4 = 5, 13, 14, 17
TYPE_SIZES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 15: 4, 16: 2, 18: 2}
"""Bytes per element of TFLite's fixed-size ``TensorType``s (INT4 packs two elements a byte)."""
KNOWN_TYPES = frozenset(TYPE_SIZES) | {STRING, RESOURCE, VARIANT, INT4}
FROM_TENSORFLOW = {
    1: 0, 2: 10, 3: 2, 4: 3, 5: 7, 6: 9, 7: 5, 8: 8, 9: 4, 10: 6, 14: 18, 17: 16, 18: 11, 19: 1,
    20: 13, 21: 14, 22: 15, 23: 12,
}  # fmt: skip
"""TensorFlow ``DataType`` to TFLite ``TensorType`` (DT_FLOAT 1 is FLOAT32 0, ...)."""
STRING_BUILTINS = frozenset({22, 36, 43, 70, 107})
"""Builtins whose kernels take string tensors: RESHAPE, GATHER, SQUEEZE, EXPAND_DIMS, GATHER_ND."""
RESOURCE_BUILTINS = {142: ("output", 0), 143: ("input", 0), 144: ("input", 0)}
"""VAR_HANDLE, READ_VARIABLE and ASSIGN_VARIABLE, and which of their tensors is the variable's handle."""
INDEX_TYPES = frozenset({2, 4, 7})
"""INT32, INT64, INT16: the index types GATHER and GATHER_ND's kernels read positions as."""
GATHERS = frozenset({36, 107})
OPTIONAL_INPUTS = frozenset({3, 4, 9, 16, 27, 44, 46, 52, 67, 132, 141})
"""Builtins with optional inputs (-1): convolutions' and FULLY_CONNECTED's bias, the LSTMs' and RNNs'."""
SAME_TYPE = frozenset(
    {0, 2, 14, 18, 19, 22, 25, 28, 34, 36, 39, 40, 41, 42, 43, 45, 50, 65, 69, 70, 74, 83, 88, 107, 130}
)
"""Builtins whose output 0 has the type of their input 0 (their kernels copy or compute in it): ADD,
CONCATENATION, ..., RESHAPE, ..., SUM, PACK, UNPACK, GATHER_ND, BROADCAST_TO."""
PASS_THROUGH = frozenset({31, 118, 119, 129})
"""CALL, IF, WHILE, CALL_ONCE: they hand tensors of any type to the subgraphs they run."""


def verify(name: str, content: bytes, model: Model) -> None:
    """Raise InvalidModel at the first tensor, buffer or Flex op of ``model`` that is not what it says."""
    total = 0
    for g, subgraph in enumerate(model.subgraphs):
        for t, tensor in enumerate(subgraph.tensors):
            problem = _tensor_problem(content, model, tensor)
            if problem is not None:
                raise InvalidModel(f"model '{name}': tensor {t} of subgraph {g} {problem}")
            total += math.prod(tensor.shape) * TYPE_SIZES.get(tensor.type, 1)
            if total > MAX_TOTAL_BYTES:
                raise InvalidModel(
                    f"model '{name}': its tensors, up to tensor {t} of subgraph {g}, take more than "
                    f"{MAX_TOTAL_BYTES} bytes at their declared shapes"
                )
        written = set(subgraph.inputs) | {
            t
            for t, tensor in enumerate(subgraph.tensors)
            if tensor.is_variable or model.buffers[tensor.buffer].size
        }
        for i, operator in enumerate(subgraph.operators):
            if operator.custom_code is not None and operator.custom_code.startswith(flex.PREFIX):
                problem = _flex_problem(subgraph, operator)
            else:
                problem = _builtin_problem(subgraph, operator)
            unwritten = next((t for t in operator.inputs if t >= 0 and t not in written), None)
            if problem is None and unwritten is not None:
                problem = (
                    f"reads tensor {unwritten} before any operator writes it (it is no constant, input or "
                    "variable)"
                )
            if problem is not None:
                raise InvalidModel(f"model '{name}': operator {i} of subgraph {g} {problem}")
            written.update(operator.outputs, operator.intermediates)
        problem = _dead_output(subgraph)
        if problem is not None:
            raise InvalidModel(f"model '{name}': in subgraph {g}, {problem}")
    problem = _variable_problem(model)
    if problem is not None:
        raise InvalidModel(f"model '{name}': {problem}")


def _variable_problem(model: Model) -> str | None:
    """Every read and assignment of one resource variable has one type and shape: READ_VARIABLE copies
    as many bytes as its output declares from the variable, whatever the variable holds (found by the
    mutation fuzzer: a read declared 1048576 x 7 of a variable of one float)."""
    seen: dict[bytes, tuple[int, tuple[int, ...], str]] = {}
    for g, subgraph in enumerate(model.subgraphs):
        handles = {
            op.outputs[0]: op.variable for op in subgraph.operators if op.variable is not None and op.outputs
        }
        for i, operator in enumerate(subgraph.operators):
            if operator.builtin not in (143, 144):
                continue
            where = f"operator {i} of subgraph {g}"
            values = operator.outputs[:1] if operator.builtin == 143 else operator.inputs[1:2]
            value = values[0] if values else -1
            variable = handles.get(operator.inputs[0]) if operator.inputs else None
            if variable is None or value < 0:
                return (
                    f"{where} uses a variable without a handle from a VAR_HANDLE of its subgraph, or no value"
                )
            tensor = subgraph.tensors[value]
            first = seen.setdefault(variable, (tensor.type, tensor.shape, where))
            if first[:2] != (tensor.type, tensor.shape):
                return (
                    f"{where} uses variable {variable!r} as type {tensor.type} of shape {list(tensor.shape)} "
                    f"(tensor {value}), but {first[2]} uses it as type {first[0]} of shape {list(first[1])}"
                )
    return None


def _dead_output(subgraph: Subgraph) -> str | None:
    """A builtin of one output that nothing reads: converters never write one, and XNNPACK's graph
    fusion aborts the process on it (found by the mutation fuzzer: a MUL whose consumer was rewired)."""
    read = {*subgraph.outputs, *(t for operator in subgraph.operators for t in operator.inputs)}
    for i, operator in enumerate(subgraph.operators):
        if operator.custom_code is None and len(operator.outputs) == 1:
            (t,) = operator.outputs
            if t >= 0 and t not in read:
                return f"operator {i} (builtin {operator.builtin}) writes tensor {t}, which nothing reads"
    return None


def _tensor_problem(content: bytes, model: Model, tensor: Tensor) -> str | None:
    if tensor.type not in KNOWN_TYPES:
        return f"has type {tensor.type}, which TFLite does not know"
    problem = _shape_problem("shape", tensor.shape, dynamic=False)
    if problem is None and tensor.shape_signature is not None:
        problem = _shape_problem("shape_signature", tensor.shape_signature, dynamic=True)
    if problem is not None:
        return problem
    if tensor.buffer >= len(model.buffers):
        return f"names buffer {tensor.buffer}, but the model has {len(model.buffers)}"
    buffer = model.buffers[tensor.buffer]
    if not buffer.size:
        return None
    elements = math.prod(tensor.shape)
    if tensor.type in (RESOURCE, VARIANT):
        return "is a resource or variant tensor with constant data"
    if tensor.type == STRING:
        return _string_problem(content[buffer.start : buffer.start + buffer.size], elements)
    expected = (elements + 1) // 2 if tensor.type == INT4 else elements * TYPE_SIZES[tensor.type]
    if buffer.size != expected:
        return (
            f"holds {buffer.size} bytes of constant data, but its shape {list(tensor.shape)} needs {expected}"
        )
    return None


def _shape_problem(field: str, shape: tuple[int, ...], dynamic: bool) -> str | None:
    if len(shape) > MAX_RANK:
        return f"has a {field} of rank {len(shape)}; at most {MAX_RANK} are allowed"
    if any(d < 0 and not (dynamic and d == -1) for d in shape):
        return f"has a negative dimension in its {field} {list(shape)}"
    if math.prod(max(d, 1) for d in shape) > MAX_ELEMENTS:
        return f"has a {field} {list(shape)} of more than {MAX_ELEMENTS} elements"
    return None


def _string_problem(data: bytes, elements: int) -> str | None:
    """TFLite's string layout: count N, N + 1 offsets from the buffer's start, then the bytes."""
    if len(data) < 4:
        return f"holds {len(data)} bytes of string data, too few for its header"
    (count,) = struct.unpack_from("<i", data)
    if count != elements:
        return f"holds {count} strings in its header, but its shape has {elements} elements"
    header = 4 * (count + 2)
    if len(data) < header:
        return f"holds {len(data)} bytes of string data, too few for the offsets of {count} strings"
    offsets = struct.unpack_from(f"<{count + 1}i", data, 4)
    if offsets[0] != header or offsets[-1] != len(data):
        return (
            f"has string offsets from {offsets[0]} to {offsets[-1]}, but its strings lie from {header} to "
            f"{len(data)}"
        )
    if any(later < earlier for earlier, later in itertools.pairwise(offsets)):
        return "has string offsets that go backwards"
    return None


def _builtin_problem(subgraph: Subgraph, operator: Operator) -> str | None:
    """Strings, resources and variants only where the builtin's kernel expects them."""
    if operator.builtin in PASS_THROUGH:
        return None
    types = {t: subgraph.tensors[t].type for t in (*operator.inputs, *operator.outputs) if t >= 0}
    if operator.builtin in RESOURCE_BUILTINS:
        role, position = RESOURCE_BUILTINS[operator.builtin]
        bound = (operator.inputs if role == "input" else operator.outputs)[position : position + 1]
        if not bound or bound[0] < 0 or types[bound[0]] != RESOURCE:
            return f"is the builtin {operator.builtin}, whose {role} {position} must be a resource tensor"
        return None
    if any(t < 0 for t in operator.outputs) or (
        operator.builtin not in OPTIONAL_INPUTS and any(t < 0 for t in operator.inputs)
    ):
        return f"is the builtin {operator.builtin} with a missing (-1) input or output it requires"
    if operator.builtin in SAME_TYPE and operator.inputs and operator.outputs:
        kinds = {types[operator.inputs[0]], types[operator.outputs[0]]}
        if len(kinds) > 1:
            return (
                f"is the builtin {operator.builtin}, whose output {operator.outputs[0]} has the type of "
                f"its input {operator.inputs[0]} (types {sorted(kinds)} differ)"
            )
    indices = operator.inputs[1] if len(operator.inputs) == 2 else -1
    if operator.builtin in GATHERS and (indices < 0 or types[indices] not in INDEX_TYPES):
        return f"is the gather builtin {operator.builtin}, whose input 1 takes int16, int32 or int64 indices"
    for t, kind in types.items():
        if kind in (RESOURCE, VARIANT):
            return f"is the builtin {operator.builtin} on the resource or variant tensor {t}"
        if kind == STRING and operator.builtin not in STRING_BUILTINS:
            return f"is the builtin {operator.builtin}, which takes no strings, on the string tensor {t}"
    return None


@functools.cache
def _op_def(op: str) -> Any:
    from tensorflow.python.framework import op_def_registry

    return op_def_registry.get(op)


def _flex_problem(subgraph: Subgraph, operator: Operator) -> str | None:
    """Whether the tensors bound to a Flex op are the ones TensorFlow's definition of it expects."""
    try:
        op = flex.decode(operator.custom_options or b"")
    except flex.BadFlexOptions:
        return None  # the operator inspection refuses it, naming why
    op_def = _op_def(op.name)
    if op_def is None:
        return f"runs TensorFlow op '{op.name}', which TensorFlow does not define"
    sides = (("input", op_def.input_arg, operator.inputs), ("output", op_def.output_arg, operator.outputs))
    for kind, args, bound in sides:
        expected = _expected_types(op, op_def, args, len(bound))
        if isinstance(expected, str):
            return f"runs '{op.name}' {expected}"
        if len(expected) != len(bound):
            return f"runs '{op.name}' on {len(bound)} {kind}s; TensorFlow's '{op.name}' takes {len(expected)}"
        for position, ((attr, dtype), t) in enumerate(zip(expected, bound, strict=True)):
            if t < 0:
                return (
                    f"runs '{op.name}' without its {kind} {position} (TensorFlow ops have no optional ones)"
                )
            if dtype is None:
                return f"runs '{op.name}' without setting its type attribute '{attr}'"
            actual = subgraph.tensors[t].type
            if FROM_TENSORFLOW.get(dtype) != actual:
                return (
                    f"runs '{op.name}' with {attr} of TensorFlow type {dtype}, but its {kind} {position} "
                    f"(tensor {t}) has TFLite type {actual}"
                )
    return None


def _expected_types(
    op: flex.FlexOp, op_def: Any, args: Any, bound: int
) -> list[tuple[str, int | None]] | str:
    """(attribute, TensorFlow type or None if unset) of each tensor the op's ``args`` take, in order;
    or what is wrong with the counts."""
    defaults = {a.name: a.default_value for a in op_def.attr if a.HasField("default_value")}

    def types_of(attr: str) -> tuple[int, ...]:
        default = defaults.get(attr)
        if attr not in op.type_attrs and default is not None and default.WhichOneof("value") == "type":
            return (int(default.type),)
        return op.type_attrs.get(attr, ())

    expected: list[tuple[str, int | None]] = []
    for arg in args:
        if arg.type_list_attr:
            expected += [(arg.type_list_attr, t) for t in types_of(arg.type_list_attr)]
            continue
        found = types_of(arg.type_attr) if arg.type_attr else (int(arg.type),)
        count = op.int_attrs.get(arg.number_attr, -1) if arg.number_attr else 1
        if not 0 <= count <= bound:
            return f"with {arg.number_attr}={count}, which its {bound} tensors do not fit"
        expected += [(arg.type_attr or arg.name, found[0] if found else None)] * count
    return expected
