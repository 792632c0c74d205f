"""A trial run of every added model in a process of its own, before the service makes an interpreter of it.

The verifier (`service.runtime.verify`) refuses what it can see is wrong; some defects only show when
TFLite plans the model's memory or TensorFlow prepares a Flex op (an operator fed a tensor of the right
type but the wrong shape aborts the process there). So a model that passes the checks is loaded, its
tensors allocated and every signature invoked once on zeros (``save``/``restore`` on a scratch path),
in one long-lived trial process. A model that kills it is refused, naming the signal; the process is
replaced. Errors a call reports (a model may need real inputs) are not refusals.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import tempfile
import threading
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from service.errors import FleetError, InvalidModel
from service.runtime.interpreter import CompiledModel
from service.runtime.isolation import exit_reason
from service.runtime.quiet import tensorflow_start_up_quiet

TRIAL_SECONDS = 120.0
"""A trial longer than this (TensorFlow's import included) is refused, and its process killed."""


def try_model(name: str, content: bytes, scratch: Path) -> None:
    """Load ``content``, allocate it and invoke each signature on zeros; InvalidModel if it cannot load."""
    model = CompiledModel.load(name, content)
    interpreter = model.interpreter()
    for spec in model.signatures.values():
        inputs = {
            t.name: np.array(os.fsencode(scratch / "trial.ckpt"), np.bytes_)
            if t.dtype.kind in "SOU"
            else np.zeros([max(d, 1) for d in t.shape], t.dtype)
            for t in spec.inputs
        }
        with contextlib.suppress(FleetError):
            interpreter.run(spec.name, inputs)


def _serve(conn: Connection) -> None:
    with tensorflow_start_up_quiet(), tempfile.TemporaryDirectory() as scratch:
        while True:
            try:
                name, content = conn.recv()
            except (EOFError, OSError):
                return
            try:
                try_model(name, content, Path(scratch))
                conn.send(("ok", None))
            except FleetError as exc:
                conn.send(("error", exc))


class Trials:
    """The trial process, started on first use and replaced when a model kills it."""

    def __init__(self, seconds: float = TRIAL_SECONDS) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    def _start(self) -> tuple[multiprocessing.process.BaseProcess, Connection]:
        if self._process is None or not self._process.is_alive() or self._conn is None:
            context = multiprocessing.get_context("spawn")
            self._conn, child = context.Pipe()
            self._process = context.Process(
                target=_serve, args=(child,), name="fleet-model-trials", daemon=True
            )
            self._process.start()
            child.close()
        return self._process, self._conn

    def admit(self, name: str, content: bytes) -> None:
        """Return if ``content`` survives its trial; InvalidModel naming why not."""
        with self._lock:
            process, conn = self._start()
            try:
                conn.send((name, content))
                if not conn.poll(self.seconds):
                    process.kill()
                    raise TimeoutError
                status, value = conn.recv()
            except (EOFError, OSError, TimeoutError) as exc:
                why = "it ran past its time limit" if isinstance(exc, TimeoutError) else exit_reason(process)
                self._process = self._conn = None
                raise InvalidModel(
                    f"model '{name}' is refused: on a trial run in a process of its own, {why}"
                ) from None
        if status == "error":
            raise value

    def close(self) -> None:
        with self._lock:
            if self._process is not None:
                self._process.kill()
                self._process.join(timeout=5)
            self._process = self._conn = None
