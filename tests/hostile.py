"""Models that try to touch files of their own choosing, and the edits an attacker makes to them.

The builders convert real ``tf.Module``s with the project's converter settings; the editors then change
the converted flatbuffer as an uploader could: same-length byte patches of an operator's custom_code, or
a round trip through TFLite's object API to rewrite an operator's options, opcodes, tensors or signatures.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from flatbuffers import flexbuffers
from tensorflow.core.framework import node_def_pb2
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from service.model.trainable import convert


class WritesItsOwnFile(tf.Module):
    """``infer`` saves its weights to a path baked into the model; ``save``/``restore`` are proper."""

    def __init__(self, target: Path, where: str) -> None:
        super().__init__()
        self.w = tf.Variable(np.ones((3, 1), np.float32))
        self.target = str(target)
        self.where = where
        self.infer = tf.function(self._infer, input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        self.save = tf.function(self._save, input_signature=[tf.TensorSpec([], tf.string)])
        self.restore = tf.function(self._restore, input_signature=[tf.TensorSpec([], tf.string)])

    def _infer(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        if self.where == "infer":
            tf.raw_ops.Save(filename=self.target, tensor_names=["w"], data=[self.w.read_value()])
        return {"y": tf.matmul(x, self.w)}

    def _save(self, checkpoint_path: tf.Tensor) -> dict[str, tf.Tensor]:
        filename = tf.constant(self.target) if self.where == "save" else checkpoint_path
        tf.raw_ops.Save(filename=filename, tensor_names=["w"], data=[self.w.read_value()])
        return {"checkpoint_path": checkpoint_path}

    def _restore(self, checkpoint_path: tf.Tensor) -> dict[str, tf.Tensor]:
        self.w.assign(
            tf.ensure_shape(
                tf.raw_ops.Restore(file_pattern=checkpoint_path, tensor_name="w", dt=tf.float32), [3, 1]
            )
        )
        return {"w": self.w.read_value()}


def build_hostile(target: Path, where: str) -> bytes:
    """A model writing to ``target`` from its ``infer`` or (ignoring the path it is given) its ``save``."""
    module = WritesItsOwnFile(target, where)
    signatures = {
        name: getattr(module, name).get_concrete_function() for name in ("infer", "save", "restore")
    }
    with tempfile.TemporaryDirectory() as workdir:
        return convert(module, signatures, workdir)


class _Infer(tf.Module):
    """A module whose one signature, ``infer(x: float32[None, 3])``, is ``body``."""

    def __init__(self, body: Callable[[tf.Tensor], dict[str, tf.Tensor]], spec: tf.TensorSpec | None = None):
        super().__init__()
        self.infer = tf.function(body, input_signature=[spec or tf.TensorSpec([None, 3], tf.float32)])


def _convert_infer(module: _Infer, user_ops: list[str] | None = None) -> bytes:
    """As `convert`, optionally admitting TensorFlow ops the converter's own list lacks."""
    with tempfile.TemporaryDirectory() as workdir:
        if not user_ops:
            return convert(module, {"infer": module.infer.get_concrete_function()}, workdir)
        tf.saved_model.save(module, workdir, signatures={"infer": module.infer.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(workdir)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        converter.target_spec.experimental_select_user_tf_ops = user_ops
        converter.experimental_enable_resource_variables = True
        return bytes(converter.convert())


def build_file_ops(source: Path | None, target: Path | None) -> bytes:
    """``infer`` returns ``source``'s contents as ``stolen`` and writes "written by the model" to ``target``.

    Its Flex operators are ReadFile (first, if there is a source), ReluGrad (allowlisted) and WriteFile.
    """

    def body(x: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.nn.relu(x)
        outputs = {"y": tape.gradient(y, x)}
        if target is not None:
            tf.io.write_file(str(target), "written by the model")
        if source is not None:
            outputs["stolen"] = tf.io.read_file(str(source))
        return outputs

    return _convert_infer(_Infer(body))


def build_vocab_reader(vocab: Path) -> bytes:
    """``infer`` reads ``vocab`` with GenerateVocabRemapping, which the converter admits only when asked.

    The path goes through a GATHER on the input so that the converter cannot fold the read away (it
    would read the file at conversion time).
    """

    def body(x: tf.Tensor) -> dict[str, tf.Tensor]:
        path = tf.gather(tf.constant([str(vocab), str(vocab)]), tf.cast(x[0, 0] * 0, tf.int32))
        remapping, _ = tf.raw_ops.GenerateVocabRemapping(
            new_vocab_file=path, old_vocab_file=path, new_vocab_offset=0, num_new_vocab=2
        )
        return {"y": x * 2, "remapping": remapping}

    return _convert_infer(_Infer(body), ["GenerateVocabRemapping"])


def build_descriptor_reader(descriptor: Path) -> bytes:
    """``infer(b)`` decodes ``google.protobuf.Duration``s with the descriptor set read from ``descriptor``."""

    def body(b: tf.Tensor) -> dict[str, tf.Tensor]:
        sizes, _ = tf.io.decode_proto(
            b, "google.protobuf.Duration", ["seconds"], [tf.int64], descriptor_source=str(descriptor)
        )
        return {"sizes": sizes}

    return _convert_infer(_Infer(body, tf.TensorSpec([None], tf.string)), ["DecodeProtoV2"])


def build_cumprod() -> bytes:
    """``infer`` runs Cumprod: pure, emitted by the converter as a Flex op, and not on the allowlist."""
    return _convert_infer(_Infer(lambda x: {"y": tf.math.cumprod(x, axis=1)}))


def rename_custom_code(content: bytes, old: str, new: str) -> bytes:
    """Patch the custom_code string ``Flex<old>`` to ``Flex<new>`` in place, as a hex editor would."""
    before, after = b"Flex" + old.encode(), b"Flex" + new.encode()
    assert len(before) == len(after), "an in-place patch keeps the length"
    assert content.count(before) == 1, f"{before!r} should be one opcode's custom_code"
    return content.replace(before, after)


def flex_options(name: bytes, node_def: bytes) -> bytes:
    """A flexbuffer ``[name, node_def]`` of two strings, written with 4-byte widths throughout."""
    width, string, vector = 4, (5 << 2) | 2, (10 << 2) | 2
    out = bytearray()
    starts = []
    for value in (name, node_def):
        out += bytes(-len(out) % width) + struct.pack("<I", len(value))
        starts.append(len(out))
        out += value + b"\0"
    out += bytes(-len(out) % width) + struct.pack("<I", 2)
    start = len(out)
    for i, string_start in enumerate(starts):
        out += struct.pack("<I", start + i * width - string_start)
    out += bytes([string, string])
    out += bytes(-len(out) % width)
    out += struct.pack("<I", len(out) - start) + bytes([vector, width])
    return bytes(out)


def object_model(content: bytes) -> Any:
    """``content`` as TFLite's object-API model (a ``ModelT``), which can be changed and written back."""
    return flatbuffer_utils.read_model_from_bytearray(bytearray(content))


def edit(content: bytes, change: Callable[[Any], None]) -> bytes:
    """``content`` after ``change`` has altered its object-API model in place."""
    model = object_model(content)
    change(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def flex_operators(model: Any, op: str) -> list[tuple[int, int, Any]]:
    """(subgraph, operator index, OperatorT) of every operator whose custom_code is ``Flex<op>``."""
    code = b"Flex" + op.encode()
    return [
        (g, i, operator)
        for g, subgraph in enumerate(model.subgraphs)
        for i, operator in enumerate(subgraph.operators)
        if model.operatorCodes[operator.opcodeIndex].customCode == code
    ]


def options_of(operator: Any) -> tuple[str, Any]:
    """An OperatorT's Flex options, read with the flatbuffers package's own flexbuffers reader."""
    root = flexbuffers.GetRoot(bytes(operator.customOptions)).AsVector
    return root[0].AsString, node_def_pb2.NodeDef.FromString(root[1].AsStringBytes)


def set_options(operator: Any, options: bytes) -> None:
    operator.customOptions = np.frombuffer(options, np.uint8).copy()


def set_custom_code(model: Any, operator: Any, code: bytes | None) -> None:
    """Point ``operator`` at a new opcode with this custom_code (other users of its opcode keep theirs)."""
    opcode = schema.OperatorCodeT()
    opcode.builtinCode = opcode.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    opcode.customCode = code
    opcode.version = 1
    model.operatorCodes.append(opcode)
    operator.opcodeIndex = len(model.operatorCodes) - 1


def rerun_as(
    content: bytes, op: str, *, code: str, name: str, node_op: str, keep_attrs: bool = True
) -> bytes:
    """Rewrite every ``Flex<op>`` operator: its custom_code, its options' op name and its ``NodeDef.op``."""

    def change(model: Any) -> None:
        for _, _, operator in flex_operators(model, op):
            _, node_def = options_of(operator)
            node_def.op = node_op
            if not keep_attrs:
                node_def.ClearField("attr")
            set_options(operator, flex_options(name.encode(), node_def.SerializeToString()))
            set_custom_code(model, operator, b"Flex" + code.encode())

    return edit(content, change)


def build_string_gather() -> bytes:
    """``infer(i: int32[None]) -> word``: the builtin GATHER over a constant string tensor of three words."""
    words = tf.constant(["alpha", "beta", "gamma"])
    return _convert_infer(_Infer(lambda i: {"word": tf.gather(words, i)}, tf.TensorSpec([None], tf.int32)))


def string_offsets_past_the_end(content: bytes, end: int = 1 << 19) -> bytes:
    """Every constant string tensor's last offset moved to ``end``: GATHER then reads past the buffer."""

    def change(model: Any) -> None:
        for subgraph in model.subgraphs:
            for tensor in subgraph.tensors:
                buffer = model.buffers[tensor.buffer]
                if tensor.type == schema.TensorType.STRING and buffer.data is not None:
                    data = bytearray(buffer.data.tobytes())
                    count = struct.unpack_from("<i", data)[0]
                    struct.pack_into("<i", data, 4 + 4 * count, end)
                    buffer.data = np.frombuffer(bytes(data), np.uint8).copy()

    return edit(content, change)


def flex_type_swapped(content: bytes, op: str, attr: str, dtype: int) -> bytes:
    """Every ``Flex<op>`` operator's NodeDef attribute ``attr`` set to TensorFlow type ``dtype``."""

    def change(model: Any) -> None:
        for _, _, operator in flex_operators(model, op):
            name, node_def = options_of(operator)
            node_def.attr[attr].type = dtype
            set_options(operator, flex_options(name.encode(), node_def.SerializeToString()))

    return edit(content, change)
