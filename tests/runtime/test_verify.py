"""The semantic verifier refuses models whose contents lie, before any interpreter is made of them.

The two attacks of issue 22 are first reproduced without the verifier, each in a child process: a string
tensor whose offsets point past its buffer leaks the heap through GATHER, a Flex op whose ``T`` disagrees
with its tensors aborts the process. Every other hostile model is the embedded or a converted model with
one field changed through TFLite's object API, refused by `CompiledModel.load` with interpreter
construction booby-trapped.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tensorflow.lite.python import schema_py_generated as schema

from service.fleet.models import embedded_model_path
from service.runtime.flatbuffer import read_model
from service.runtime.verify import MAX_ELEMENTS, verify
from tests.hostile import build_string_gather, edit, flex_type_swapped, string_offsets_past_the_end
from tests.runtime.conftest import Refuse

ROOT = Path(__file__).resolve().parents[2]
DT_INT64 = 9


def infer_of(model: Any) -> tuple[Any, Any]:
    """The model's ``infer`` signature and its subgraph (the converter orders signatures by name, so the
    first is not always infer: the strategies' ``hyperparameters`` comes before it)."""
    signature = next(s for s in model.signatureDefs if s.signatureKey in (b"infer", "infer"))
    return signature, model.subgraphs[signature.subgraphIndex]


@pytest.fixture(scope="module")
def embedded() -> bytes:
    return embedded_model_path().read_bytes()


@pytest.fixture(scope="module")
def gather() -> bytes:
    return build_string_gather()


def _in_child(code: str, content: bytes, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``content`` at ``model`` and a bare TFLite interpreter, in a child process."""
    model = tmp_path / "model.tflite"
    model.write_bytes(content)
    prelude = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"it = tf.lite.Interpreter(model_content=open({str(model)!r}, 'rb').read())\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"},
    )


def test_string_offsets_past_the_buffer_leak_the_heap_without_the_verifier(
    gather: bytes, tmp_path: Path
) -> None:
    hostile = string_offsets_past_the_end(gather)
    done = _in_child(
        "out = it.get_signature_runner('infer')(i=np.array([2], np.int32))['word']\nprint(len(out[0]))",
        hostile,
        tmp_path,
    )
    leaked = done.returncode < 0 or int(done.stdout.split()[-1]) > 1000
    assert leaked, f"the three-word model answered only {done.stdout!r} (rc {done.returncode})"


def test_flex_type_mismatch_aborts_the_process_without_the_verifier(embedded: bytes, tmp_path: Path) -> None:
    hostile = flex_type_swapped(embedded, "BroadcastGradientArgs", "T", DT_INT64)
    done = _in_child(
        "r = it.get_signature_runner('train')\n"
        "r(**{k: np.zeros(v['shape'], v['dtype']) for k, v in r.get_input_details().items()})",
        hostile,
        tmp_path,
    )
    assert done.returncode < 0, f"train survived (rc {done.returncode}): {done.stderr[-500:]}"


def test_string_offsets_past_the_buffer_are_refused(gather: bytes, refuse: Refuse) -> None:
    message = refuse(string_offsets_past_the_end(gather))
    assert "string offsets" in message and "tensor" in message and "subgraph 0" in message, message


def test_flex_type_attribute_disagreeing_with_its_tensors_is_refused(embedded: bytes, refuse: Refuse) -> None:
    message = refuse(flex_type_swapped(embedded, "BroadcastGradientArgs", "T", DT_INT64))
    assert "BroadcastGradientArgs" in message and "T of TensorFlow type 9" in message, message
    assert "operator" in message and "subgraph" in message, message


def _first(model: Any, wanted: Callable[[Any, Any], bool]) -> Any:
    return next(t for g in model.subgraphs for t in g.tensors if wanted(model, t))


def _constant(model: Any, tensor: Any) -> bool:
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 8 and tensor.type == schema.TensorType.FLOAT32


def test_operator_input_index_out_of_range_is_refused(embedded: bytes, refuse: Refuse) -> None:
    def change(model: Any) -> None:
        _, subgraph = infer_of(model)
        operator = next(op for op in subgraph.operators if len(op.inputs))
        operator.inputs[0] = len(subgraph.tensors) + 5

    assert "tensor" in refuse(edit(embedded, change))


def test_signature_tensor_index_out_of_range_is_refused(embedded: bytes, refuse: Refuse) -> None:
    def change(model: Any) -> None:
        infer_of(model)[0].inputs[0].tensorIndex = 10**6

    message = refuse(edit(embedded, change))
    assert "1000000" in message, message


def test_signature_subgraph_index_out_of_range_is_refused(embedded: bytes, refuse: Refuse) -> None:
    def change(model: Any) -> None:
        model.signatureDefs[0].subgraphIndex = len(model.subgraphs) + 2

    message = refuse(edit(embedded, change))
    assert "signature" in message and "subgraph" in message, message


def test_buffer_index_out_of_range_is_refused(embedded: bytes, refuse: Refuse) -> None:
    def change(model: Any) -> None:
        _first(model, _constant).buffer = len(model.buffers) + 3

    message = refuse(edit(embedded, change))
    assert "names buffer" in message and "tensor" in message, message


def test_buffer_shorter_than_its_shape_is_refused(embedded: bytes, refuse: Refuse) -> None:
    def change(model: Any) -> None:
        buffer = model.buffers[_first(model, _constant).buffer]
        buffer.data = buffer.data[:-4].copy()

    message = refuse(edit(embedded, change))
    assert "bytes of constant data" in message and "needs" in message, message


@pytest.mark.parametrize(
    ("dims", "words"),
    [([1 << 20, 1 << 20], f"more than {MAX_ELEMENTS} elements"), ([3, -7], "negative dimension")],
)
def test_huge_or_negative_dims_are_refused(
    embedded: bytes, refuse: Refuse, dims: list[int], words: str
) -> None:
    def change(model: Any) -> None:
        tensor = _first(model, lambda m, t: m.buffers[t.buffer].data is None and t.type == 0)
        tensor.shape = np.array(dims, np.int32)

    message = refuse(edit(embedded, change))
    assert words in message and "shape" in message, message


def test_unknown_tensor_type_is_refused(embedded: bytes, refuse: Refuse) -> None:
    def change(model: Any) -> None:
        _first(model, _constant).type = 99

    assert "which TFLite does not know" in refuse(edit(embedded, change))


def test_gather_with_float_indices_is_refused(gather: bytes, refuse: Refuse) -> None:
    def change(model: Any) -> None:
        for subgraph in model.subgraphs:
            for operator in subgraph.operators:
                if model.operatorCodes[operator.opcodeIndex].builtinCode == schema.BuiltinOperator.GATHER:
                    subgraph.tensors[operator.inputs[1]].type = schema.TensorType.FLOAT32

    assert "int16, int32 or int64 indices" in refuse(edit(gather, change))


def test_string_tensor_into_a_builtin_that_takes_no_strings_is_refused(
    embedded: bytes, refuse: Refuse
) -> None:
    def change(model: Any) -> None:
        _, subgraph = infer_of(model)
        operator = next(
            op
            for op in subgraph.operators
            if model.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.RESHAPE
        )
        for t in (operator.inputs[0], operator.outputs[0]):  # RESHAPE takes strings; what follows does not
            subgraph.tensors[t].type = schema.TensorType.STRING
        following = next(op for op in subgraph.operators if operator.outputs[0] in op.inputs)
        assert model.operatorCodes[following.opcodeIndex].builtinCode != schema.BuiltinOperator.CUSTOM

    assert "takes no strings" in refuse(edit(embedded, change))


def _rewire_a_mul(model: Any) -> None:
    """The MUL before the train signature's SUM loses its reader: SUM reads the label input instead."""
    train = next(s for s in model.signatureDefs if s.signatureKey in ("train", b"train"))
    subgraph = model.subgraphs[train.subgraphIndex]
    for operator in subgraph.operators:
        if model.operatorCodes[operator.opcodeIndex].builtinCode == schema.BuiltinOperator.SUM:
            producer = next(op for op in subgraph.operators if operator.inputs[0] in op.outputs)
            readers = [op for op in subgraph.operators if operator.inputs[0] in op.inputs]
            if model.operatorCodes[
                producer.opcodeIndex
            ].builtinCode == schema.BuiltinOperator.MUL and readers == [operator]:
                operator.inputs[0] = (
                    subgraph.inputs[0]
                    if subgraph.tensors[subgraph.inputs[0]].type == 0
                    else subgraph.inputs[1]
                )
                return
    raise AssertionError("the train signature has a SUM of a MUL")


def test_rewired_builtin_aborts_xnnpack_without_the_verifier(embedded: bytes, tmp_path: Path) -> None:
    """Found by the mutation fuzzer (seed 0, mutant 247): a MUL whose output nothing reads."""
    done = _in_child("it.allocate_tensors()", edit(embedded, _rewire_a_mul), tmp_path)
    assert done.returncode < 0, f"allocating survived (rc {done.returncode}): {done.stderr[-500:]}"


def test_builtin_output_that_nothing_reads_is_refused(embedded: bytes, refuse: Refuse) -> None:
    message = refuse(edit(embedded, _rewire_a_mul))
    assert "which nothing reads" in message and "builtin 18" in message, message


def test_embedded_and_converted_models_pass_fast(embedded: bytes, gather: bytes) -> None:
    for content in (embedded, gather):
        verify("ok", content, read_model(content))
    started = time.perf_counter()
    verify("embedded", embedded, read_model(embedded))
    seconds = time.perf_counter() - started
    assert seconds < 0.1, f"verifying the embedded model took {seconds * 1000:.1f} ms"


def test_flex_op_without_one_of_its_inputs_is_refused(embedded: bytes, refuse: Refuse) -> None:
    """Found by the mutation fuzzer (seed 2, mutant 543): a Flex ``Restore`` given input -1 segfaulted."""

    def change(model: Any) -> None:
        operator = next(
            op
            for subgraph in model.subgraphs
            for op in subgraph.operators
            if (model.operatorCodes[op.opcodeIndex].customCode or b"").startswith(b"Flex")
            and len(op.inputs) > 1
        )
        operator.inputs[-1] = -1

    assert "TensorFlow ops have no optional ones" in refuse(edit(embedded, change))


def test_variable_read_bigger_than_the_variable_is_refused(embedded: bytes, refuse: Refuse) -> None:
    """Found by the mutation fuzzer (seed 2, mutant 1587): READ_VARIABLE copied its declared 1048576 x 7
    floats out of a variable of one, and segfaulted."""

    def change(model: Any) -> None:
        for subgraph in model.subgraphs:
            for operator in subgraph.operators:
                if (
                    model.operatorCodes[operator.opcodeIndex].builtinCode
                    == schema.BuiltinOperator.READ_VARIABLE
                ):
                    subgraph.tensors[operator.outputs[0]].shape = np.array([1 << 20, 7], np.int32)
                    return
        raise AssertionError("the embedded model reads a variable")

    message = refuse(edit(embedded, change))
    assert "uses variable" in message and "[1048576, 7]" in message, message


def test_reshape_into_another_type_is_refused(embedded: bytes, refuse: Refuse) -> None:
    """Found by the mutation fuzzer (seed 0, mutant 115): infer's input made complex64 into a float
    RESHAPE overran the heap (glibc aborted on free)."""

    def change(model: Any) -> None:
        _, subgraph = infer_of(model)
        subgraph.tensors[subgraph.inputs[0]].type = schema.TensorType.COMPLEX64

    message = refuse(edit(embedded, change))
    assert "has the type of its input" in message and "builtin 22" in message, message


def test_builtin_missing_a_required_input_is_refused(embedded: bytes, refuse: Refuse) -> None:
    """Found by the mutation fuzzer (seed 0, mutant 529): SUM given axis -1 segfaulted in its Prepare."""

    def change(model: Any) -> None:
        operator = next(
            op
            for subgraph in model.subgraphs
            for op in subgraph.operators
            if model.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.SUM
        )
        operator.inputs[1] = -1

    assert "missing (-1) input" in refuse(edit(embedded, change))
