"""Seeded mutants of real models, each verified and, where accepted, loaded and invoked in a child process.

A mutant is a model with one defect an uploader could plant: flipped bits, an overwritten integer, a
truncation, or, through TFLite's object API, a tensor's type, shape or buffer, an operator's input, a
string tensor's offsets, a Flex op's type attribute, a signature's tensor. Children run batches and
log each mutant as they start and finish it, so a child that dies names the mutant that killed it;
the rest of its batch goes on in a new child. No child may die of a signal.

``tests/runtime/test_model_fuzz.py`` runs a short slice; ``benchmarks/model_fuzz.py`` thousands.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CHILD_SECONDS = 120.0
"""A child that logs nothing for this long is stuck in one mutant: it is killed, the mutant noted."""


@dataclass
class Report:
    """What became of the mutants: by outcome, refusals by check, and the mutants that killed a child."""

    outcomes: Counter[str] = field(default_factory=Counter)
    refused_by: Counter[str] = field(default_factory=Counter)
    by_mutation: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)


# -- making mutants -------------------------------------------------------------------------------


def _raw(rng: random.Random, content: bytes) -> tuple[str, bytes]:
    data = bytearray(content)
    kind = rng.choice(("bit flips", "int32 overwrite", "truncation"))
    if kind == "bit flips":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "int32 overwrite":
        at = rng.randrange(0, len(data) - 4) & ~3
        value = rng.choice((0, -1, 1, 2**31 - 1, -(2**31), len(data), len(data) + 4, rng.randrange(1 << 16)))
        struct.pack_into("<i", data, at, value)
    else:
        del data[rng.randrange(8, len(data)) :]
    return kind, bytes(data)


STRUCTURED = (
    "tensor type",
    "tensor shape",
    "tensor buffer",
    "operator input",
    "string offsets",
    "flex type",
    "signature tensor",
)


def _tensors(model: Any) -> list[tuple[Any, Any]]:
    return [(subgraph, tensor) for subgraph in model.subgraphs for tensor in subgraph.tensors]


def _structured(rng: random.Random, model: Any) -> str:
    """Plant one defect in ``model`` (TFLite's object API), in place; its name."""
    from tensorflow.core.framework import types_pb2

    from tests.hostile import flex_options, options_of, set_options

    kind = rng.choice(STRUCTURED)
    subgraph, tensor = rng.choice(_tensors(model))
    if kind == "tensor type":
        tensor.type = rng.randrange(0, 20)
    elif kind == "tensor shape":
        dims = list(tensor.shape) if tensor.shape is not None else []
        dims = [*dims, rng.choice((0, 1, 7))] if not dims or rng.random() < 0.3 else dims
        dims[rng.randrange(len(dims))] = rng.choice((-5, 0, 3, 1 << 20, 2**31 - 1))
        tensor.shape = np.array(dims, np.int32)
    elif kind == "tensor buffer":
        tensor.buffer = rng.choice((0, rng.randrange(len(model.buffers) + 3)))
    elif kind == "operator input":
        operator = rng.choice([op for g in model.subgraphs for op in g.operators])
        if operator.inputs is not None and len(operator.inputs):
            operator.inputs[rng.randrange(len(operator.inputs))] = rng.randrange(
                -1, len(subgraph.tensors) + 3
            )
    elif kind == "string offsets":
        strings = [t for _, t in _tensors(model) if t.type == 5 and model.buffers[t.buffer].data is not None]
        if strings:
            buffer = model.buffers[rng.choice(strings).buffer]
            data = bytearray(buffer.data.tobytes())
            at = rng.randrange(0, max(4, min(len(data) - 4, 64))) & ~3
            struct.pack_into("<i", data, at, rng.choice((-1, 0, 1 << 19, len(data) + 1, rng.randrange(64))))
            buffer.data = np.frombuffer(bytes(data), np.uint8).copy()
    elif kind == "flex type":
        flexes = [op for g in model.subgraphs for op in g.operators if op.customOptions is not None]
        if flexes:
            operator = rng.choice(flexes)
            try:
                name, node_def = options_of(operator)
            except Exception:
                return kind
            typed = [key for key, value in node_def.attr.items() if value.WhichOneof("value") == "type"]
            if typed:
                node_def.attr[rng.choice(typed)].type = rng.choice(
                    (types_pb2.DT_INT32, types_pb2.DT_INT64, types_pb2.DT_FLOAT, types_pb2.DT_STRING)
                )
                set_options(operator, flex_options(name.encode(), node_def.SerializeToString()))
    elif model.signatureDefs:
        signature = rng.choice(model.signatureDefs)
        maps = (signature.inputs or []) + (signature.outputs or [])
        if maps and rng.random() < 0.7:
            rng.choice(maps).tensorIndex = rng.randrange(len(subgraph.tensors) + 3)
        else:
            signature.subgraphIndex = rng.randrange(len(model.subgraphs) + 2)
    return kind


def mutants(seeds: dict[str, bytes], count: int, seed: int) -> list[tuple[str, bytes]]:
    """``count`` mutants of the ``seeds`` models, the same ones for the same ``seed``: (label, bytes)."""
    from tests.hostile import edit

    rng = random.Random(seed)
    made = []
    names = sorted(seeds)
    for index in range(count):
        source = names[index % len(names)]
        if rng.random() < 0.5:
            kind, content = _raw(rng, seeds[source])
        else:
            kinds: list[str] = []

            def plant(model: Any, kinds: list[str] = kinds) -> None:
                kinds.append(_structured(rng, model))

            content = edit(seeds[source], plant)
            kind = kinds[0]
        made.append((f"{index}:{source}:{kind}", content))
    return made


# -- running them ---------------------------------------------------------------------------------


def refusal_check(message: str) -> str:
    """Which check refused a model, from InvalidModel's message."""
    checks: tuple[tuple[str, str], ...] = (
        ("not a readable TFLite flatbuffer", "structure"),
        ("which nothing reads", "dataflow"),
        ("uses variable", "variables"),
        ("uses a variable", "variables"),
        ("no optional ones", "flex arity"),
        ("before any operator writes it", "dataflow"),
        ("takes no strings", "builtin types"),
        ("has the type of its input", "builtin types"),
        ("missing (-1)", "builtin arity"),
        ("indices", "builtin types"),
        ("resource", "builtin types"),
        ("string", "strings"),
        ("bytes of constant data", "buffer size"),
        ("names buffer", "buffer index"),
        ("TensorFlow type", "flex types"),
        ("TensorFlow's", "flex arity"),
        ("type attribute", "flex types"),
        ("which TFLite does not know", "tensor type"),
        ("rank", "shapes"),
        ("dimension", "shapes"),
        ("elements", "shapes"),
        ("take more than", "shapes"),
        ("trial run", "trial run"),
        ("does not load", "interpreter load"),
        ("has no signatures", "signatures"),
    )
    for marker, check in checks:
        if marker in message:
            return check
    return "operators"


def _child(directory: Path, with_trials: bool) -> None:
    """A child's life: verify, load and invoke each mutant of ``directory`` (every signature on zeros, then
    on random values), logging as it goes.

    ``with_trials`` admits a mutant as the service does (its checks, then a trial run in a process of its
    own); without, the verifier alone stands between a mutant and this process, which is what shows its
    gaps."""
    from service.errors import FleetError, InvalidModel
    from service.runtime import CompiledModel
    from service.runtime.inspection import check_operators
    from service.runtime.trials import Trials

    log = (directory / "log").open("a", buffering=1)
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp())
    trials = Trials() if with_trials else None
    for path in sorted(directory.glob("*.tflite"), key=lambda p: int(p.stem)):
        log.write(f"start {path.stem}\n")
        try:
            content = path.read_bytes()
            check_operators("mutant", content)
            if trials is not None:
                trials.admit("mutant", content)
            model = CompiledModel.load("mutant", content)
        except InvalidModel as exc:
            log.write(f"end {path.stem} refused {refusal_check(exc.message)}\n")
            continue
        errors = Counter[str]()
        try:
            interpreter = model.interpreter()
        except (FleetError, ValueError, RuntimeError) as exc:
            log.write(f"end {path.stem} invoke-error {type(exc).__name__}\n")
            continue
        for spec, fill in itertools.product(model.signatures.values(), ("zeros", "random")):
            inputs = {}
            for tensor in spec.inputs:
                if tensor.dtype.kind in "SOU":
                    inputs[tensor.name] = np.array(os.fsencode(work / "ckpt"), np.bytes_)
                else:
                    shape = [max(d, 1) for d in tensor.shape]
                    values = np.zeros(shape) if fill == "zeros" else rng.standard_normal(shape) * 4
                    inputs[tensor.name] = values.astype(tensor.dtype)
            try:
                interpreter.run(spec.name, inputs)
            except (FleetError, ValueError, RuntimeError, TypeError, OverflowError, MemoryError):
                errors[fill] += 1  # random inputs may be out of range (gather indices): they shake, not judge
        log.write(f"end {path.stem} {'invoke-error' if errors['zeros'] else 'invoked'} -\n")
        del interpreter


def run(made: list[tuple[str, bytes]], report: Report | None = None, with_trials: bool = True) -> Report:
    """Run the mutants in child processes; a child that dies is replaced after the mutant that killed it."""
    report = report or Report()
    labels = dict(enumerate(label for label, _ in made))
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for index, (_, content) in enumerate(made):
            (directory / f"{index}.tflite").write_bytes(content)
        while any(directory.glob("*.tflite")):
            _run_child(directory, labels, report, with_trials)
    return report


def _run_child(directory: Path, labels: dict[int, str], report: Report, with_trials: bool) -> None:
    log = directory / "log"
    log.write_text("")
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.model_mutants",
            str(directory),
            "trials" if with_trials else "verifier",
        ],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen, last_change = 0, time.monotonic()
    while child.poll() is None:
        time.sleep(0.2)
        size = log.stat().st_size
        if size != seen:
            seen, last_change = size, time.monotonic()
        elif time.monotonic() - last_change > CHILD_SECONDS:
            child.kill()
            child.wait()
            _account(directory, labels, report, died="hang")
            return
    _account(directory, labels, report, died=_signal_name(child.returncode))


def _signal_name(code: int) -> str | None:
    return signal.Signals(-code).name if code < 0 else None


def _account(directory: Path, labels: dict[int, str], report: Report, died: str | None) -> None:
    """Count what the child's log says it finished; the one it started last and did not finish is what
    it died of (a signal, or a hang)."""
    started = None
    for line in (directory / "log").read_text().splitlines():
        words = line.split()
        if words[0] == "start":
            started = int(words[1])
            continue
        index, outcome, check = int(words[1]), words[2], " ".join(words[3:])
        started = None
        report.outcomes[outcome] += 1
        report.by_mutation[labels[index].split(":", 2)[2]] += 1
        if outcome == "refused":
            report.refused_by[check] += 1
        (directory / f"{index}.tflite").unlink()
    if started is not None:
        culprit = labels[started]
        report.outcomes["died" if died != "hang" else "hang"] += 1
        (report.hangs if died == "hang" else report.crashes).append(f"{culprit} ({died or 'exited'})")
        (directory / f"{started}.tflite").unlink()


def seed_models() -> dict[str, bytes]:
    """The embedded model, the regressor, a string GATHER model, and the hostile models of
    ``tests.hostile`` that compute (their file-touching cousins need paths of a test's own)."""
    from service.fleet.models import embedded_model_path
    from tests import hostile
    from tests.regressor import build_regressor

    gather = hostile.build_string_gather()
    embedded = embedded_model_path().read_bytes()
    return {
        "embedded": embedded,
        "regressor": build_regressor(),
        "string-gather": gather,
        "string-offsets-past-the-end": hostile.string_offsets_past_the_end(gather),
        "flex-type-swapped": hostile.flex_type_swapped(embedded, "BroadcastGradientArgs", "T", 9),
        "cumprod": hostile.build_cumprod(),
    }


def summary(report: Report) -> dict[str, Any]:
    return {
        "outcomes": dict(report.outcomes),
        "refused_by": dict(report.refused_by),
        "crashes": report.crashes,
        "hangs": report.hangs,
    }


if __name__ == "__main__":
    _child(Path(sys.argv[1]), sys.argv[2] == "trials")
