"""What a model may do to files, read from its flatbuffer before any interpreter runs it.

A `.tflite` with Select TF ops can carry TensorFlow's file operations with paths of its own: an
uploaded model could then read or write anywhere the service can. Only the checkpoint operations
are allowed, only in a signature that takes a single string input, and only on that input: the path
the service itself passes (the device's checkpoint or spill file). Every other file-touching op is
refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from service.errors import InvalidModel

CHECKPOINT_OPS = frozenset({"Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice"})
"""TensorFlow ops whose first input names the checkpoint file (or prefix) they write or read."""
FILE_OPS = re.compile(
    r"File|Reader|Writer|Dataset|Summary|Checkpoint|Print|Debug|ImmutableConst|Save|Restore|Load|Record"
)
"""Any other op whose name says it may touch files (a deliberately wide net)."""


@dataclass(frozen=True)
class Signature:
    name: str
    subgraph: int
    inputs: tuple[int, ...]
    """Tensor indices of its inputs, in its subgraph."""


def _schema() -> Any:
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def check_file_access(name: str, content: bytes) -> None:
    """Raise InvalidModel if the model could touch a file other than the one the service passes."""
    schema = _schema()
    try:
        model = schema.Model.GetRootAsModel(content, 0)
        opcodes = [model.OperatorCodes(i).CustomCode() for i in range(model.OperatorCodesLength())]
        signatures = {}
        for i in range(model.SignatureDefsLength()):
            definition = model.SignatureDefs(i)
            inputs = tuple(definition.Inputs(j).TensorIndex() for j in range(definition.InputsLength()))
            signature = Signature(definition.SignatureKey().decode(), definition.SubgraphIndex(), inputs)
            signatures[signature.subgraph] = signature
        for index in range(model.SubgraphsLength()):
            subgraph = model.Subgraphs(index)
            for op_index in range(subgraph.OperatorsLength()):
                operator = subgraph.Operators(op_index)
                custom = opcodes[operator.OpcodeIndex()]
                if not custom or not custom.startswith(b"Flex"):
                    continue
                op = custom[4:].decode(errors="replace")
                if op in CHECKPOINT_OPS:
                    _check_checkpoint_op(name, op, signatures.get(index), subgraph, operator, schema)
                elif FILE_OPS.search(op):
                    raise InvalidModel(f"model '{name}' uses the TensorFlow op {op}, which may touch files")
    except (IndexError, AttributeError, UnicodeDecodeError, TypeError) as exc:
        raise InvalidModel(f"model '{name}' is not a readable TFLite flatbuffer: {exc}") from exc


def _check_checkpoint_op(
    name: str, op: str, signature: Signature | None, subgraph: Any, operator: Any, schema: Any
) -> None:
    path_tensor = operator.Inputs(0) if operator.InputsLength() else -1
    if (
        signature is None
        or len(signature.inputs) != 1
        or subgraph.Tensors(signature.inputs[0]).Type() != schema.TensorType.STRING
        or path_tensor != signature.inputs[0]
    ):
        where = f"signature '{signature.name}'" if signature else "a subgraph that is no signature"
        raise InvalidModel(
            f"model '{name}': the {op} op in {where} must take its file name straight from the signature's "
            "only input (the checkpoint path the service passes); a model may not choose its own files"
        )
