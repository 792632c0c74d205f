"""Models run only allowlisted operators, and touch no file but the checkpoint path the service passes.

Hostile models are built with the real converter and then edited as an uploader could edit them. Every
refusal goes through `CompiledModel.load` with interpreter construction booby-trapped, so it also shows
that the check comes before any interpreter exists (and so before any TensorFlow kernel is built).
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from flatbuffers import flexbuffers
from tensorflow.core.framework import attr_value_pb2, types_pb2
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.python.framework import op_def_registry

import service.runtime.interpreter as interpreter_module
from service.errors import InvalidModel
from service.fleet.models import embedded_model_path
from service.model.build import BuildResult
from service.runtime import CompiledModel, flex
from service.runtime.inspection import CHECKPOINT_OPS, TENSORFLOW_OPS, check_operators
from tests.hostile import (
    build_cumprod,
    build_descriptor_reader,
    build_file_ops,
    build_hostile,
    build_vocab_reader,
    edit,
    flex_operators,
    flex_options,
    object_model,
    options_of,
    rename_custom_code,
    rerun_as,
    set_custom_code,
    set_options,
)
from tests.runtime.conftest import Refuse

SECRET = "the service's own secret\n"
WRITTEN = "written by the model"


@dataclass(frozen=True)
class FileOps:
    source: Path
    target: Path
    reader_writer: bytes
    """ReadFile (operator 0) of ``source``, then WriteFile to ``target``."""
    writer: bytes
    """WriteFile to ``target`` only."""

    def fresh_target(self) -> Path:
        self.target.unlink(missing_ok=True)
        return self.target


@pytest.fixture(scope="module")
def file_ops(tmp_path_factory: pytest.TempPathFactory) -> FileOps:
    where = tmp_path_factory.mktemp("file-ops")
    source, target = where / "secret.txt", where / "written-by-the-model"
    source.write_text(SECRET)
    return FileOps(source, target, build_file_ops(source, target), build_file_ops(None, target))


@pytest.fixture(scope="module")
def hostile_infer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A model whose ``infer`` saves its weights to a path of its own, and that path."""
    target = tmp_path_factory.mktemp("hostile") / "written-by-the-model"
    return target, build_hostile(target, "infer")


def run_infer(content: bytes, **inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``infer`` in a plain, unchecked ``tf.lite.Interpreter``: what the model really does."""
    interpreter = tf.lite.Interpreter(model_content=content)
    interpreter.allocate_tensors()
    return dict(interpreter.get_signature_runner("infer")(**(inputs or {"x": np.ones((1, 3), np.float32)})))


def where_is(content: bytes, op: str) -> str:
    """How refusals name the first ``Flex<op>`` operator of a single-signature ``infer`` model."""
    found = flex_operators(object_model(content), op)
    assert found, f"the model has no Flex{op} operator"
    return f"operator {found[0][1]} of signature 'infer'"


# The project's own models


def test_the_project_models_pass(tiny_build: BuildResult, regressor_model: bytes) -> None:
    for name, content in (
        ("fashion_mnist", embedded_model_path().read_bytes()),
        ("tiny", tiny_build.model),
        ("regressor", regressor_model),
    ):
        check_operators(name, content)
        assert CompiledModel.load(name, content).signatures


def test_the_strict_decoder_reads_what_flexbuffers_reads(
    tiny_build: BuildResult, regressor_model: bytes
) -> None:
    """On well-formed options the strict decoder agrees with the flatbuffers package's reader."""
    seen = set()
    for content in (embedded_model_path().read_bytes(), tiny_build.model, regressor_model):
        model = object_model(content)
        for subgraph in model.subgraphs:
            for operator in subgraph.operators:
                code = model.operatorCodes[operator.opcodeIndex].customCode
                if code is None:
                    continue
                name, node_def = options_of(operator)
                decoded = flex.decode(bytes(operator.customOptions))
                assert (decoded.name, decoded.node_op) == (name, node_def.op)
                assert flex.op_in_custom_code(code) == name
                seen.add(name)
    assert seen == {"BroadcastGradientArgs", "EnsureShape", "ReluGrad", "Restore", "Save"}


# The allowlist


FILE_AND_CODE_OPS = (
    "ReadFile",
    "WriteFile",
    "MatchingFiles",
    "Save",
    "Restore",
    "SaveV2",
    "RestoreV2",
    "SaveSlices",
    "RestoreSlice",
    "MergeV2Checkpoints",
    "GenerateVocabRemapping",
    "LoadAndRemapMatrix",
    "InitializeTableFromTextFileV2",
    "ImmutableConst",
    "DecodeProtoV2",
    "EncodeProto",
    "WholeFileReaderV2",
    "TFRecordReaderV2",
    "TFRecordDataset",
    "FixedLengthRecordDatasetV2",
    "PrintV2",
    "Assert",
    "WriteScalarSummary",
    "PyFunc",
    "EagerPyFunc",
    "PartitionedCall",
    "StatefulPartitionedCall",
    "While",
    "If",
    "VarHandleOp",
    "ResourceApplyGradientDescent",
    "TensorListReserve",
    "RandomUniform",
)


def test_every_allowed_tensorflow_op_is_pure() -> None:
    """Registered, stateless, no string/resource/variant argument of its own, no function attribute."""
    pointer_or_text = {types_pb2.DT_STRING, types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT}
    for name in sorted(TENSORFLOW_OPS):
        op_def = op_def_registry.get(name)
        assert op_def is not None, f"{name} is not a TensorFlow op"
        assert not op_def.is_stateful, name
        assert all(arg.type not in pointer_or_text for arg in (*op_def.input_arg, *op_def.output_arg)), name
        assert all(attr.type not in ("func", "list(func)") for attr in op_def.attr), name


def test_file_and_code_running_ops_are_not_allowed() -> None:
    for name in FILE_AND_CODE_OPS:
        assert op_def_registry.get(name) is not None, f"{name} is not a TensorFlow op"
    assert not TENSORFLOW_OPS & set(FILE_AND_CODE_OPS)
    assert not TENSORFLOW_OPS & CHECKPOINT_OPS


# Checkpoint ops on paths of the model's choosing


@pytest.mark.parametrize("where", ["infer", "save"])
def test_a_model_choosing_its_own_file_is_refused(tmp_path: Path, where: str, refuse: Refuse) -> None:
    target = tmp_path / "outside" / "written-by-the-model"
    message = refuse(build_hostile(target, where))
    assert f"operator 3 of signature '{where}' runs TensorFlow op 'Save' on a file of the model's" in message
    assert "may not choose its own files" in message
    assert not target.exists()


def test_the_hostile_model_would_really_write_its_file(hostile_infer: tuple[Path, bytes]) -> None:
    """The refusal above matters: run unchecked, the model writes where it likes."""
    target, content = hostile_infer
    target.unlink(missing_ok=True)
    run_infer(content)
    assert target.exists()


def test_a_renamed_save_is_refused_for_what_it_runs(
    hostile_infer: tuple[Path, bytes], refuse: Refuse
) -> None:
    target, content = hostile_infer
    target.unlink(missing_ok=True)
    message = refuse(rename_custom_code(content, "Save", "Sqrt"))
    assert "operator 3 of signature 'infer' is not what it says: its custom_code says FlexSqrt" in message
    assert "its options run 'Save'" in message
    assert not target.exists()


def test_the_renamed_save_would_really_write_its_file(hostile_infer: tuple[Path, bytes]) -> None:
    """The delegate runs the op the options name: a FlexSqrt that is a Save still writes."""
    target, content = hostile_infer
    target.unlink(missing_ok=True)
    run_infer(rename_custom_code(content, "Save", "Sqrt"))
    assert target.exists()


CHECKPOINT_CASES: dict[str, tuple[Callable[[Any, int, Any], None], str]] = {}
"""How to break the checkpoint rule in the regressor's ``save``: change(model, save_subgraph, save_op)."""


def _case(reason: str) -> Callable[[Callable[[Any, int, Any], None]], Callable[[Any, int, Any], None]]:
    def register(change: Callable[[Any, int, Any], None]) -> Callable[[Any, int, Any], None]:
        CHECKPOINT_CASES[change.__name__] = (change, reason)
        return change

    return register


def _signature_of(model: Any, subgraph: int) -> Any:
    return next(s for s in model.signatureDefs if s.subgraphIndex == subgraph)


@_case("it is in a subgraph that no signature runs")
def no_signature(model: Any, g: int, save: Any) -> None:
    model.signatureDefs.remove(_signature_of(model, g))


@_case("its subgraph is also run by operator 0 of signature 'fit', with inputs of the model's choosing")
def run_by_another_subgraph(model: Any, g: int, save: Any) -> None:
    call_once = model.subgraphs[0].operators[0]
    assert isinstance(call_once.builtinOptions, schema.CallOnceOptionsT)
    call_once.builtinOptions.initSubgraphIndex = g


@_case("its signature does not take exactly one input")
def two_signature_inputs(model: Any, g: int, save: Any) -> None:
    extra = schema.TensorMapT()
    extra.name, extra.tensorIndex = b"extra", save.inputs[1]
    _signature_of(model, g).inputs.append(extra)


@_case("its file name is tensor 1, not its signature's input")
def path_from_another_tensor(model: Any, g: int, save: Any) -> None:
    assert save.inputs[1] == 1
    save.inputs[0] = save.inputs[1]


@_case("its signature's input is not a string input of the subgraph")
def path_not_a_string(model: Any, g: int, save: Any) -> None:
    model.subgraphs[g].tensors[save.inputs[0]].type = schema.TensorType.FLOAT32


@_case("its signature's input is not a string input of the subgraph")
def path_not_a_subgraph_input(model: Any, g: int, save: Any) -> None:
    model.subgraphs[g].inputs = [t for t in model.subgraphs[g].inputs if t != save.inputs[0]]


@_case("operator 3 overwrites its signature's input")
def path_overwritten(model: Any, g: int, save: Any) -> None:
    model.subgraphs[g].operators[3].outputs[0] = save.inputs[0]


@_case("its signature's input is a variable or a constant")
def path_a_variable(model: Any, g: int, save: Any) -> None:
    model.subgraphs[g].tensors[save.inputs[0]].isVariable = True


@_case("its signature's input is a variable or a constant")
def path_a_constant(model: Any, g: int, save: Any) -> None:
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(b"chosen-by-the-model", np.uint8).copy()
    model.buffers.append(buffer)
    model.subgraphs[g].tensors[save.inputs[0]].buffer = len(model.buffers) - 1


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_checkpoint_ops_run_only_on_the_path_the_service_passes(
    regressor_model: bytes, case: str, refuse: Refuse
) -> None:
    change, reason = CHECKPOINT_CASES[case]

    def apply(model: Any) -> None:
        ((g, i, save),) = flex_operators(model, "Save")
        assert (g, i) == (3, 5)
        change(model, g, save)

    message = refuse(edit(regressor_model, apply))
    assert (
        "operator 5 of " in message
        and "runs TensorFlow op 'Save' on a file of the model's choosing" in message
    )
    assert f"({reason})" in message


# File operations, plain and disguised


def test_a_file_reading_op_is_refused(file_ops: FileOps, refuse: Refuse) -> None:
    target = file_ops.fresh_target()
    message = refuse(file_ops.reader_writer)
    assert (
        f"{where_is(file_ops.reader_writer, 'ReadFile')} runs TensorFlow op 'ReadFile', which is not"
        in message
    )
    assert SECRET.strip() not in message
    assert not target.exists()


def test_a_file_writing_op_is_refused(file_ops: FileOps, refuse: Refuse) -> None:
    target = file_ops.fresh_target()
    message = refuse(file_ops.writer)
    assert f"{where_is(file_ops.writer, 'WriteFile')} runs TensorFlow op 'WriteFile', which is not" in message
    assert not target.exists()


def test_renamed_file_ops_are_refused(file_ops: FileOps, refuse: Refuse) -> None:
    target = file_ops.fresh_target()
    renamed = rename_custom_code(
        rename_custom_code(file_ops.reader_writer, "ReadFile", "ReluGrad"), "WriteFile", "Relu6Grad"
    )
    message = refuse(renamed)
    assert "operator 0 of signature 'infer' is not what it says: its custom_code says FlexReluGrad" in message
    assert "its options run 'ReadFile'" in message
    assert not target.exists()


def test_the_renamed_file_ops_would_really_read_and_write(file_ops: FileOps) -> None:
    """Renamed to allowlisted gradients, ReadFile and WriteFile still hand over and write files."""
    target = file_ops.fresh_target()
    renamed = rename_custom_code(
        rename_custom_code(file_ops.reader_writer, "ReadFile", "ReluGrad"), "WriteFile", "Relu6Grad"
    )
    assert run_infer(renamed)["stolen"] == SECRET.encode()
    assert target.read_text() == WRITTEN


DISGUISES: dict[str, dict[str, Any]] = {
    "custom-code-renamed": dict(code="Sqrt", name="WriteFile", node_op="WriteFile"),
    "only-the-op-name-says-WriteFile": dict(code="Sqrt", name="WriteFile", node_op="Sqrt", keep_attrs=False),
    "op-name-patched-NodeDef-says-WriteFile": dict(code="Sqrt", name="Sqrt", node_op="WriteFile"),
    "NodeDef-op-patched": dict(code="WriteFile", name="WriteFile", node_op="Sqrt"),
}


@pytest.mark.parametrize("disguise", sorted(DISGUISES))
def test_options_that_disagree_with_the_custom_code_are_refused(
    file_ops: FileOps, disguise: str, refuse: Refuse
) -> None:
    target = file_ops.fresh_target()
    spec = DISGUISES[disguise]
    message = refuse(rerun_as(file_ops.writer, "WriteFile", **spec))
    assert f"{where_is(file_ops.writer, 'WriteFile')} is not what it says" in message
    assert f"its custom_code says Flex{spec['code']} but its options run '{spec['name']}'" in message
    assert f"(NodeDef op '{spec['node_op']}')" in message
    assert not target.exists()


def test_write_file_options_moved_into_a_benign_op_are_refused(file_ops: FileOps, refuse: Refuse) -> None:
    """The WriteFile operator is gone; its options now sit in the ReluGrad operator."""
    target = file_ops.fresh_target()

    def move(model: Any) -> None:
        ((g, _, writer),) = flex_operators(model, "WriteFile")
        ((_, _, relu_grad),) = flex_operators(model, "ReluGrad")
        set_options(relu_grad, bytes(writer.customOptions))
        model.subgraphs[g].operators.remove(writer)

    content = edit(file_ops.writer, move)
    message = refuse(content)
    assert f"{where_is(content, 'ReluGrad')} is not what it says" in message
    assert "its custom_code says FlexReluGrad but its options run 'WriteFile'" in message
    assert not target.exists()


def test_the_options_op_name_is_what_really_runs(file_ops: FileOps) -> None:
    """Custom code and NodeDef.op say Sqrt, the options' op name says WriteFile: the file is written.

    So neither custom_code nor NodeDef.op alone can be trusted to say what an operator runs.
    """
    target = file_ops.fresh_target()
    run_infer(rerun_as(file_ops.writer, "WriteFile", **DISGUISES["only-the-op-name-says-WriteFile"]))
    assert target.read_text() == WRITTEN


# Ops off the allowlist, and why the check must come before the interpreter


@pytest.fixture(scope="module")
def vocab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("alpha\nbeta\n")
    return path, build_vocab_reader(path)


@pytest.fixture(scope="module")
def descriptor_reader(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    path = tmp_path_factory.mktemp("descriptor") / "duration.desc"
    return path, build_descriptor_reader(path)


def test_a_vocabulary_reader_is_refused(vocab: tuple[Path, bytes], refuse: Refuse) -> None:
    message = refuse(vocab[1])
    assert (
        f"{where_is(vocab[1], 'GenerateVocabRemapping')} runs TensorFlow op 'GenerateVocabRemapping'"
        in message
    )
    assert "which is not allowed" in message


def test_the_vocabulary_reader_would_really_read_its_file(vocab: tuple[Path, bytes]) -> None:
    path, content = vocab
    assert list(run_infer(content)["remapping"]) == [0, 1]
    path.unlink()
    with pytest.raises(RuntimeError, match="vocab"):
        run_infer(content)


def test_a_descriptor_reader_is_refused(descriptor_reader: tuple[Path, bytes], refuse: Refuse) -> None:
    message = refuse(descriptor_reader[1])
    assert (
        "operator 0 of signature 'infer' runs TensorFlow op 'DecodeProtoV2', which is not allowed" in message
    )


def test_the_descriptor_reader_reads_while_the_interpreter_is_prepared(
    descriptor_reader: tuple[Path, bytes],
) -> None:
    """No invoke needed: allocate_tensors builds the kernel, and the kernel reads its file."""
    from google.protobuf import descriptor_pb2, duration_pb2

    path, content = descriptor_reader
    path.unlink(missing_ok=True)
    with pytest.raises(RuntimeError, match="descriptor"):
        tf.lite.Interpreter(model_content=content).allocate_tensors()
    descriptors = descriptor_pb2.FileDescriptorSet()
    duration_pb2.DESCRIPTOR.CopyToProto(descriptors.file.add())
    path.write_bytes(descriptors.SerializeToString())
    tf.lite.Interpreter(model_content=content).allocate_tensors()


def test_models_are_checked_before_any_interpreter_is_made(
    descriptor_reader: tuple[Path, bytes], regressor_model: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    real = interpreter_module._interpreter_class

    def recording() -> Any:
        made.append("interpreter")
        return real()

    monkeypatch.setattr(interpreter_module, "_interpreter_class", recording)
    with pytest.raises(InvalidModel, match="DecodeProtoV2"):
        CompiledModel.load("reader", descriptor_reader[1])
    assert made == []
    CompiledModel.load("regressor", regressor_model)
    assert made


def test_a_pure_op_left_off_the_allowlist_is_refused(refuse: Refuse) -> None:
    """An allowlist, not a deny-list: Cumprod is harmless, but nobody put it on the list."""
    content = build_cumprod()
    message = refuse(content)
    assert f"{where_is(content, 'Cumprod')} runs TensorFlow op 'Cumprod', which is not allowed" in message


# Operators that are not what a Flex op must be


def _first_flex(model: Any, op: str) -> Any:
    return flex_operators(model, op)[0][2]


@pytest.mark.parametrize(
    ("code", "shown"),
    [(b"Mfcc", "'Mfcc'"), (b"Flex", "'Flex'"), (b"Flexsqrt", "'Flexsqrt'"), (None, "with no custom_code")],
)
def test_custom_operators_that_are_not_flex_are_refused(
    regressor_model: bytes, code: bytes | None, shown: str, refuse: Refuse
) -> None:
    def recode(model: Any) -> None:
        set_custom_code(model, _first_flex(model, "BroadcastGradientArgs"), code)

    message = refuse(edit(regressor_model, recode))
    assert f"operator 10 of signature 'fit' is the custom operator {shown}" in message
    assert "only builtin and Flex (TensorFlow) operators can run here" in message


def _node_def(op: str) -> bytes:
    from tensorflow.core.framework import node_def_pb2

    return node_def_pb2.NodeDef(op=op).SerializeToString()


def _builder_options(*values: bytes) -> bytes:
    builder = flexbuffers.Builder()
    with builder.Vector():
        for value in values:
            builder.Blob(value)
    return bytes(builder.Finish())


BGA = b"BroadcastGradientArgs"
BAD_OPTIONS: dict[str, tuple[bytes | None, str]] = {
    "none": (None, "keeps no custom options"),
    "empty": (b"", "keeps no custom options"),
    "bad-root-width": (
        flex_options(BGA, _node_def("BroadcastGradientArgs"))[:-1] + b"\x03",
        "root byte width",
    ),
    "truncated": (flex_options(BGA, _node_def("BroadcastGradientArgs"))[:-7], "not a Flex op's"),
    "a-lone-string": (bytes(flexbuffers.Dumps("BroadcastGradientArgs")), "not a vector"),
    "three-strings": (bytes(flexbuffers.Dumps(["BroadcastGradientArgs", "x", "y"])), "3 elements"),
    "blobs": (_builder_options(BGA, _node_def("BroadcastGradientArgs")), "not a string"),
    "offset-out-of-range": (
        flex_options(BGA, _node_def("BroadcastGradientArgs"))[:-6] + b"\xff\xff\xff\x7f" + bytes([42, 4]),
        "lies outside",
    ),
    "string-past-the-end": (
        struct.pack("<I", 10**6) + flex_options(BGA, _node_def("BroadcastGradientArgs"))[4:],
        "runs past the end",
    ),
    "nodedef-garbage": (flex_options(BGA, b"\xff\xff\xff\xff"), "NodeDef does not parse"),
    "op-name-not-ascii": (flex_options("BroadcastGradientArgé".encode(), _node_def("x")), "not ASCII"),
    "op-name-with-nul": (
        flex_options(BGA + b"\0Save", _node_def("BroadcastGradientArgs")),
        "not a TensorFlow",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_undecodable_options_are_refused(regressor_model: bytes, case: str, refuse: Refuse) -> None:
    options, expected = BAD_OPTIONS[case]

    def damage(model: Any) -> None:
        operator = _first_flex(model, "BroadcastGradientArgs")
        if options is None:
            operator.customOptions = None
        else:
            set_options(operator, options)

    message = refuse(edit(regressor_model, damage))
    assert "operator 10 of signature 'fit' " in message and expected in message


def test_options_kept_outside_the_flatbuffer_are_refused(regressor_model: bytes, refuse: Refuse) -> None:
    def elsewhere(model: Any) -> None:
        operator = _first_flex(model, "BroadcastGradientArgs")
        operator.customOptions, operator.largeCustomOptionsOffset, operator.largeCustomOptionsSize = (
            None,
            16,
            64,
        )

    message = refuse(edit(regressor_model, elsewhere))
    assert "operator 10 of signature 'fit' keeps no custom options in the flatbuffer" in message


def test_function_attributes_are_refused(regressor_model: bytes, refuse: Refuse) -> None:
    def add_function(model: Any) -> None:
        operator = _first_flex(model, "EnsureShape")
        name, node_def = options_of(operator)
        node_def.attr["f"].CopyFrom(attr_value_pb2.AttrValue(func=attr_value_pb2.NameAttrList(name="evil")))
        set_options(operator, flex_options(name.encode(), node_def.SerializeToString()))

    message = refuse(edit(regressor_model, add_function))
    assert (
        "operator 4 of signature 'restore' runs TensorFlow op 'EnsureShape' with function attribute(s) ['f']"
        in message
    )


@pytest.mark.parametrize("kind", ["RESOURCE", "VARIANT"])
def test_pointer_tensors_are_refused_at_flex_operators(
    regressor_model: bytes, kind: str, refuse: Refuse
) -> None:
    def retype(model: Any) -> None:
        ((g, _, operator), *_) = flex_operators(model, "EnsureShape")
        model.subgraphs[g].tensors[operator.outputs[0]].type = getattr(schema.TensorType, kind)

    message = refuse(edit(regressor_model, retype))
    assert (
        f"operator 4 of signature 'restore' runs TensorFlow op 'EnsureShape' on the {kind} tensor" in message
    )


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (200, "is the builtin STABLEHLO_WHILE, which is not allowed"),
        (173, "is the builtin STABLEHLO_CUSTOM_CALL, which is not allowed"),
        (51, "is the builtin DELEGATE, which is not allowed"),
        (250, "has builtin code 250, which this service does not know"),
    ],
)
def test_builtins_the_check_cannot_follow_are_refused(
    regressor_model: bytes, code: int, expected: str, refuse: Refuse
) -> None:
    def recode(model: Any) -> None:
        add = next(oc for oc in model.operatorCodes if oc.builtinCode == schema.BuiltinOperator.ADD)
        add.builtinCode, add.deprecatedBuiltinCode = code, min(code, 127)

    message = refuse(edit(regressor_model, recode))
    assert f"operator 7 of signature 'fit' {expected}" in message


# Hostile flatbuffers


def _opcode_out_of_range(model: Any) -> None:
    model.subgraphs[0].operators[3].opcodeIndex = 999


def _tensor_out_of_range(model: Any) -> None:
    model.subgraphs[0].operators[3].inputs[0] = 9999


def _calls_a_missing_subgraph(model: Any) -> None:
    model.subgraphs[0].operators[0].builtinOptions.initSubgraphIndex = 99


def _call_without_options(model: Any) -> None:
    model.subgraphs[0].operators[0].builtinOptionsType, model.subgraphs[0].operators[0].builtinOptions = (
        0,
        None,
    )


def _signature_of_a_missing_subgraph(model: Any) -> None:
    model.signatureDefs[0].subgraphIndex = 99


def _signature_input_out_of_range(model: Any) -> None:
    model.signatureDefs[1].inputs[0].tensorIndex = 9999


def _unterminated_custom_code(content: bytes) -> bytes:
    assert content.count(b"FlexSave\0") == 1
    return content.replace(b"FlexSave\0", b"FlexSaveX")


def _inputs_vector_past_the_end(content: bytes) -> bytes:
    """An operator's inputs vector a few elements longer than the file has room for."""
    table = schema.Model.GetRootAsModel(content, 0).Subgraphs(0).Operators(3)._tab
    length_at = table.Vector(table.Offset(6)) - 4  # Operator.inputs
    length = (len(content) - length_at - 4) // 4 + 1
    return content[:length_at] + struct.pack("<I", length) + content[length_at + 4 :]


MALFORMED: dict[str, Callable[[bytes], bytes]] = {
    "custom-code-not-nul-terminated": _unterminated_custom_code,
    "vector-past-the-end": _inputs_vector_past_the_end,
    "empty": lambda c: b"",
    "not-a-flatbuffer": lambda c: b"not a flatbuffer at all" * 10,
    "wrong-identifier": lambda c: c[:4] + b"XXXX" + c[8:],
    "root-offset-past-the-end": lambda c: b"\xf0\xff\xff\x7f" + c[4:],
    "truncated-to-12": lambda c: c[:12],
    "truncated-to-a-tenth": lambda c: c[: len(c) // 10],
    "truncated-to-half": lambda c: c[: len(c) // 2],
    "opcode-out-of-range": lambda c: edit(c, _opcode_out_of_range),
    "tensor-out-of-range": lambda c: edit(c, _tensor_out_of_range),
    "calls-a-missing-subgraph": lambda c: edit(c, _calls_a_missing_subgraph),
    "call-without-options": lambda c: edit(c, _call_without_options),
    "signature-of-a-missing-subgraph": lambda c: edit(c, _signature_of_a_missing_subgraph),
    "signature-input-out-of-range": lambda c: edit(c, _signature_input_out_of_range),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_flatbuffers_are_invalid_models(regressor_model: bytes, case: str, refuse: Refuse) -> None:
    assert "not a readable TFLite flatbuffer" in refuse(MALFORMED[case](regressor_model))


def test_random_damage_gives_an_invalid_model_or_a_pass(regressor_model: bytes) -> None:
    """Whatever bytes an upload has, the check answers InvalidModel or lets it through; nothing else."""
    rng = random.Random(20261201)
    refused = 0
    for attempt in range(600):
        damaged = bytearray(regressor_model)
        if attempt % 6 == 0:
            del damaged[rng.randrange(len(damaged)) :]
        else:
            for _ in range(rng.randint(1, 4)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        try:
            check_operators("damaged", bytes(damaged))
        except InvalidModel:
            refused += 1
    assert refused > 100


def test_random_damage_to_options_gives_bad_flex_options_or_a_decode() -> None:
    rng = random.Random(7)
    options = flex_options(b"Save", _node_def("Save"))
    refused = 0
    for _ in range(2000):
        damaged = bytearray(options)
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        if rng.random() < 0.2:
            del damaged[rng.randrange(len(damaged)) :]
        try:
            flex.decode(bytes(damaged))
        except flex.BadFlexOptions:
            refused += 1
    assert refused > 500


def test_shared_vectors_cannot_make_the_check_slow(refuse: Refuse) -> None:
    """20,000 operators sharing one table of 20,000 inputs: 4e8 reads, unless work is bounded by size."""
    import flatbuffers

    count = 20_000
    builder = flatbuffers.Builder(0)
    schema.OperatorStartInputsVector(builder, count)
    for _ in range(count):
        builder.PrependInt32(0)
    inputs = builder.EndVector()
    schema.OperatorStart(builder)
    schema.OperatorAddInputs(builder, inputs)
    operator = schema.OperatorEnd(builder)
    schema.SubGraphStartOperatorsVector(builder, count)
    for _ in range(count):
        builder.PrependUOffsetTRelative(operator)
    operators = builder.EndVector()
    schema.TensorStart(builder)
    tensor = schema.TensorEnd(builder)
    schema.SubGraphStartTensorsVector(builder, 1)
    builder.PrependUOffsetTRelative(tensor)
    tensors = builder.EndVector()
    schema.SubGraphStart(builder)
    schema.SubGraphAddTensors(builder, tensors)
    schema.SubGraphAddOperators(builder, operators)
    subgraph = schema.SubGraphEnd(builder)
    schema.OperatorCodeStart(builder)
    opcode = schema.OperatorCodeEnd(builder)
    schema.ModelStartOperatorCodesVector(builder, 1)
    builder.PrependUOffsetTRelative(opcode)
    opcodes = builder.EndVector()
    schema.ModelStartSubgraphsVector(builder, 1)
    builder.PrependUOffsetTRelative(subgraph)
    subgraphs = builder.EndVector()
    schema.ModelStart(builder)
    schema.ModelAddVersion(builder, 3)
    schema.ModelAddOperatorCodes(builder, opcodes)
    schema.ModelAddSubgraphs(builder, subgraphs)
    builder.Finish(schema.ModelEnd(builder), file_identifier=b"TFL3")
    started = time.perf_counter()
    assert "more elements than its size allows" in refuse(bytes(builder.Output()))
    assert time.perf_counter() - started < 2
