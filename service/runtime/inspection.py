"""Which operators a model may run, decided from its flatbuffer before any interpreter is made of it.

A `.tflite` file is code. Its builtin operators are TFLite kernels, none of which opens a file. Its Flex
(Select TF ops) operators are TensorFlow ops run by the Flex delegate, and TensorFlow has ops that read
and write files at paths of their choosing (``ReadFile``, ``WriteFile``, ``Save``...), read them while
the interpreter is being prepared (``DecodeProtoV2``'s descriptor file), or run functions. So:

- Flex operators are decoded (`service.runtime.flex`): the op the delegate runs is named in the
  operator's options, not by its ``custom_code``, so the two and ``NodeDef.op`` must agree.
- Every Flex op must be on `TENSORFLOW_OPS`, an allowlist of pure-compute ops that on-device training
  needs (below, by group); an op nobody has reviewed is refused, whatever its name.
- The checkpoint ops (`CHECKPOINT_OPS`) may run only on the path the service passes: inside a signature
  that takes a single string input, on that input, untouched by any other operator, in a subgraph no
  other operator runs (an IF/WHILE/CALL_ONCE caller would pass a path of the model's choosing).
- No Flex op may take or give a RESOURCE or VARIANT tensor: those cross into TensorFlow as raw pointers.
- Custom operators other than Flex ones, and the few builtins that run subgraphs or calls this check
  does not follow, are refused.

This guards what a model can reach through TensorFlow ops. It does not make the TFLite runtime safe on
arbitrary hostile flatbuffers (its C++ loader trusts offsets and shapes): uploads stay a trusted act.
"""

from __future__ import annotations

from collections import defaultdict
from typing import NoReturn

from service.errors import InvalidModel
from service.runtime import flex
from service.runtime.flatbuffer import MalformedFlatbuffer, Model, Operator, Subgraph, read_model
from service.runtime.verify import verify

CHECKPOINT_OPS = frozenset({"Save", "Restore"})
"""TensorFlow ops whose first input names the checkpoint file they write or read.

``SaveV2``/``RestoreV2``/``SaveSlices``/``RestoreSlice`` are left out: no model here uses them, and
``SaveV2`` writes files beside the given prefix that the service neither names nor removes.
"""

_EMITTED_FOR_OUR_MODELS = frozenset({"BroadcastGradientArgs", "EnsureShape", "ReluGrad"})
"""What the converter emits (besides Save/Restore) for the embedded model, the tiny test build and the
regressor: the shape bookkeeping of broadcasting gradients, a shape assertion, ReLU's gradient."""

_EMITTED_FOR_COMMON_LAYERS = frozenset(
    {
        "AvgPoolGrad",
        "ConcatOffset",
        "Conv2DBackpropFilter",
        "DepthwiseConv2dNativeBackpropFilter",
        "EluGrad",
        "FusedBatchNormGradV3",
        "FusedBatchNormV3",
        "LeakyReluGrad",
        "MaxPoolGrad",
        "ReciprocalGrad",
        "Relu6Grad",
        "ResizeBilinearGrad",
        "SeluGrad",
        "ShapeN",
        "Softsign",
        "SoftsignGrad",
        "SparseSoftmaxCrossEntropyWithLogits",
        "StridedSliceGrad",
    }
)
"""What the converter (TF 2.19.1, builtins + select TF ops) emitted for ``tape.gradient`` of small
Keras-style models: conv/depthwise conv, max/avg pooling, fused batch norm, ELU/SELU/leaky ReLU/ReLU6/
softsign, sparse softmax cross-entropy, embedding lookups, resizing, concatenation, 1/x. Optimizer
steps need nothing here: the converter decomposes ``ResourceApply*`` (SGD, Adam, momentum, RMSProp,
Adagrad were tried) into builtin reads, arithmetic and ASSIGN_VARIABLE."""

_GRADIENTS = frozenset(
    {
        "BiasAddGrad",
        "Conv2DBackpropInput",
        "Conv3DBackpropFilterV2",
        "Conv3DBackpropInputV2",
        "DepthwiseConv2dNativeBackpropInput",
        "FusedBatchNorm",
        "FusedBatchNormGrad",
        "FusedBatchNormGradV2",
        "FusedBatchNormV2",
        "InvGrad",
        "L2Loss",
        "MaxPoolGradV2",
        "MirrorPadGrad",
        "ResizeNearestNeighborGrad",
        "RsqrtGrad",
        "SigmoidGrad",
        "SoftmaxCrossEntropyWithLogits",
        "SoftplusGrad",
        "SqrtGrad",
        "TanhGrad",
    }
)
"""The siblings of those: gradient kernels of the same layers under other settings (transposed
convolutions, 3-D, older batch-norm versions, other activations and losses)."""

_GRADIENT_BOOKKEEPING = frozenset(
    {
        "BroadcastArgs",
        "DynamicStitch",
        "Identity",
        "IdentityN",
        "InvertPermutation",
        "OnesLike",
        "PreventGradient",
        "Rank",
        "Shape",
        "Size",
        "StopGradient",
        "UnsortedSegmentSum",
        "ZerosLike",
    }
)
"""Shapes, identities and the segment sums that gradients of gathers and reductions are built from."""

_FORWARD_MATH = frozenset(
    {
        "Abs",
        "AddN",
        "AddV2",
        "ArgMax",
        "ArgMin",
        "AvgPool",
        "BatchMatMulV2",
        "BatchMatMulV3",
        "BiasAdd",
        "BroadcastTo",
        "Cast",
        "ClipByValue",
        "ConcatV2",
        "Conv2D",
        "Cumsum",
        "DepthwiseConv2dNative",
        "DivNoNan",
        "Elu",
        "Equal",
        "Exp",
        "ExpandDims",
        "Fill",
        "GatherV2",
        "Greater",
        "GreaterEqual",
        "LeakyRelu",
        "Less",
        "LessEqual",
        "Log",
        "Log1p",
        "LogSoftmax",
        "LogicalAnd",
        "LogicalNot",
        "LogicalOr",
        "MatMul",
        "Max",
        "MaxPool",
        "Maximum",
        "Mean",
        "Min",
        "Minimum",
        "MirrorPad",
        "Mul",
        "Neg",
        "NotEqual",
        "OneHot",
        "Pack",
        "Pad",
        "PadV2",
        "Pow",
        "Prod",
        "Range",
        "RealDiv",
        "Relu",
        "Relu6",
        "Reshape",
        "Rsqrt",
        "Select",
        "SelectV2",
        "Selu",
        "Sigmoid",
        "Sign",
        "Slice",
        "Softmax",
        "Softplus",
        "Sqrt",
        "Square",
        "SquaredDifference",
        "Squeeze",
        "StridedSlice",
        "Sub",
        "Sum",
        "Tanh",
        "Tile",
        "Transpose",
        "Unpack",
    }
)
"""Forward math and shape ops. Most have builtins, but the converter falls back to the TensorFlow op
for dtypes or attributes the builtin lacks (int64 arithmetic, some paddings and reductions)."""

_STATELESS_RANDOM = frozenset(
    {"StatelessRandomGetKeyCounter", "StatelessRandomNormalV2", "StatelessRandomUniformV2"}
)
"""Seeded, deterministic draws: what the converter emits for ``tf.random.stateless_uniform``/``_normal``,
as seeded (Keras-style) dropout uses them."""

TENSORFLOW_OPS = (
    _EMITTED_FOR_OUR_MODELS
    | _EMITTED_FOR_COMMON_LAYERS
    | _GRADIENTS
    | _GRADIENT_BOOKKEEPING
    | _FORWARD_MATH
    | _STATELESS_RANDOM
)
"""Every TensorFlow op a Flex operator may run outside the checkpoint rule.

All are pure: none is stateful, none has a string, resource or variant argument of its own, none takes
a function (the tests check this against TensorFlow's op registry). Left out on purpose, with examples:
anything naming a file (ReadFile, WriteFile, MatchingFiles, *Reader*, Save*/Restore*/MergeV2Checkpoints,
LoadAndRemapMatrix, GenerateVocabRemapping, InitializeTableFromTextFile, ImmutableConst, Decode/
EncodeProto with a descriptor_source), datasets and iterators, Print/Assert/summaries, PyFunc and other
callbacks, function calls and control flow (PartitionedCall, While, If, Case: the converter emits TFLite
builtins for control flow), resource ops (VarHandleOp, ResourceApply*, lookup tables) and variant ops
(TensorList*, so a ``tf.while_loop`` differentiated inside the model is refused), stateful random ops,
and string processing. A model that needs one more op is a reviewed change to this list."""

CUSTOM = 32
"""The builtin code of custom operators (Flex ones among them)."""
LAST_REVIEWED_BUILTIN = 209
"""STABLEHLO_CASE, the last builtin code in TF 2.19's schema: a newer code is unreviewed."""
REFUSED_BUILTINS = {
    51: "DELEGATE",
    127: "PLACEHOLDER_FOR_GREATER_OP_CODES",
    173: "STABLEHLO_CUSTOM_CALL",
    174: "STABLEHLO_REDUCE",
    190: "STABLEHLO_SCATTER",
    198: "STABLEHLO_REDUCE_WINDOW",
    199: "STABLEHLO_SORT",
    200: "STABLEHLO_WHILE",
    206: "STABLEHLO_COMPOSITE",
    209: "STABLEHLO_CASE",
}
"""Builtins that are placeholders, call out, or run subgraphs this check does not follow (the ones it
follows are CALL, IF, WHILE and CALL_ONCE). The converter emits none of them for these models."""

_STRING, _RESOURCE, _VARIANT = 5, 13, 14
_POINTER_TYPES = {_RESOURCE: "RESOURCE", _VARIANT: "VARIANT"}


def check_operators(name: str, content: bytes) -> None:
    """Raise InvalidModel unless every operator of ``content`` is one this service lets a model run."""
    try:
        model = read_model(content)
    except MalformedFlatbuffer as exc:
        raise InvalidModel(f"model '{name}' is not a readable TFLite flatbuffer: {exc}") from exc
    _Inspection(name, model).run()
    verify(name, content, model)


class _Inspection:
    def __init__(self, name: str, model: Model) -> None:
        self.name = name
        self.model = model
        self.signatures: dict[int, list[int]] = defaultdict(list)
        """Signature indices by subgraph."""
        for index, signature in enumerate(model.signatures):
            self.signatures[signature.subgraph].append(index)
        self.callers: dict[int, str] = {}
        """For each subgraph another operator runs, the first such operator (as `where` says it)."""
        self._written: dict[int, dict[int, int]] = {}

    def run(self) -> None:
        checkpoints: list[tuple[int, int, str]] = []
        for g, subgraph in enumerate(self.model.subgraphs):
            for i, operator in enumerate(subgraph.operators):
                for callee in operator.calls:
                    self.callers.setdefault(callee, self.where(g, i))
                if operator.builtin != CUSTOM:
                    self.check_builtin(g, i, operator)
                    continue
                op = self.tensorflow_op(g, i, operator, subgraph)
                if op in CHECKPOINT_OPS:
                    checkpoints.append((g, i, op))
                elif op not in TENSORFLOW_OPS:
                    self.refuse(
                        g,
                        i,
                        f"runs TensorFlow op '{op}', which is not allowed (only the pure-compute ops "
                        "on-device training needs are; see service.runtime.inspection.TENSORFLOW_OPS)",
                    )
        for g, i, op in checkpoints:
            self.check_checkpoint(g, i, op)

    def where(self, g: int, i: int) -> str:
        names = [self.model.signatures[s].name for s in self.signatures.get(g, [])]
        if not names:
            return f"operator {i} of subgraph {g}"
        return f"operator {i} of signature " + ", ".join(f"'{_shown(n)}'" for n in names)

    def refuse(self, g: int, i: int, what: str) -> NoReturn:
        raise InvalidModel(f"model '{self.name}': {self.where(g, i)} {what}")

    def check_builtin(self, g: int, i: int, operator: Operator) -> None:
        if operator.builtin in REFUSED_BUILTINS:
            self.refuse(
                g,
                i,
                f"is the builtin {REFUSED_BUILTINS[operator.builtin]}, which is not allowed "
                "(it runs a subgraph or a call that this check does not follow)",
            )
        if not 0 <= operator.builtin <= LAST_REVIEWED_BUILTIN:
            self.refuse(g, i, f"has builtin code {operator.builtin}, which this service does not know")

    def tensorflow_op(self, g: int, i: int, operator: Operator, subgraph: Subgraph) -> str:
        """The TensorFlow op a custom operator runs, once it is sure to be that op and only that."""
        code = operator.custom_code
        claimed = flex.op_in_custom_code(code)
        if claimed is None:
            self.refuse(
                g,
                i,
                f"is the custom operator {_shown_code(code)}; only builtin and Flex (TensorFlow) "
                "operators can run here",
            )
        if operator.large_custom_options or not operator.custom_options:
            self.refuse(g, i, "keeps no custom options in the flatbuffer, so what it runs cannot be checked")
        try:
            op = flex.decode(operator.custom_options or b"")
        except flex.BadFlexOptions as exc:
            self.refuse(g, i, f"has custom options that are not a Flex op's [op name, NodeDef]: {exc}")
        if not claimed == op.name == op.node_op:
            self.refuse(
                g,
                i,
                f"is not what it says: its custom_code says Flex{claimed} but its options run "
                f"'{op.name}' (NodeDef op '{_shown(op.node_op)}'); the delegate runs the options' op",
            )
        if op.function_attrs:
            self.refuse(
                g, i, f"runs TensorFlow op '{op.name}' with function attribute(s) {list(op.function_attrs)}"
            )
        for t in (*operator.inputs, *operator.outputs):
            kind = _POINTER_TYPES.get(subgraph.tensors[t].type) if t >= 0 else None
            if kind is not None:
                self.refuse(
                    g,
                    i,
                    f"runs TensorFlow op '{op.name}' on the {kind} tensor {t}; resource and variant "
                    "tensors cross into TensorFlow as raw pointers and are not allowed",
                )
        return op.name

    def written(self, g: int) -> dict[int, int]:
        """The tensors that operators of subgraph ``g`` write, and (the last of) those operators."""
        if g not in self._written:
            self._written[g] = {
                t: j
                for j, operator in enumerate(self.model.subgraphs[g].operators)
                for t in (*operator.outputs, *operator.intermediates)
            }
        return self._written[g]

    def check_checkpoint(self, g: int, i: int, op: str) -> None:
        """Refuse a checkpoint op unless its file is surely the path the service passes its signature."""
        subgraph = self.model.subgraphs[g]
        operator = subgraph.operators[i]
        path = operator.inputs[0] if operator.inputs else -1
        signatures = [self.model.signatures[s] for s in self.signatures.get(g, [])]
        written = self.written(g)
        reason = None
        if not signatures:
            reason = "it is in a subgraph that no signature runs"
        elif g in self.callers:
            reason = f"its subgraph is also run by {self.callers[g]}, with inputs of the model's choosing"
        elif any(len(s.inputs) != 1 for s in signatures):
            reason = "its signature does not take exactly one input"
        elif any(path != s.inputs[0] for s in signatures):
            reason = f"its file name is tensor {path}, not its signature's input"
        elif subgraph.tensors[path].type != _STRING or path not in subgraph.inputs:
            reason = "its signature's input is not a string input of the subgraph"
        elif path in written:
            reason = f"operator {written[path]} overwrites its signature's input"
        elif (
            subgraph.tensors[path].is_variable or subgraph.tensors[path].buffer in self.model.constant_buffers
        ):
            reason = "its signature's input is a variable or a constant"
        if reason is not None:
            self.refuse(
                g,
                i,
                f"runs TensorFlow op '{op}' on a file of the model's choosing ({reason}): a checkpoint "
                "op must take its file name straight from the only input of the signature that holds it "
                "(the checkpoint path the service passes); a model may not choose its own files",
            )


def _shown(text: str) -> str:
    """Model-supplied text, bounded, for an error message."""
    return text if len(text) <= 64 else text[:61] + "..."


def _shown_code(code: bytes | None) -> str:
    return "with no custom_code" if code is None else repr(_shown(code.decode("ascii", "backslashreplace")))
