"""Interpreters of added models in worker processes: a crash costs that model's callers, not the fleet.

A model that did not ship with the package is a stranger's program; the verifier refuses what it can
see is wrong, and this contains what it cannot. With ``FLEET_MODEL_ISOLATION=process`` each added
model gets a pool of worker processes of its own (``ModelWorkers``). A worker loads the model (every
check of ``CompiledModel.load`` runs there, before any interpreter), holds interpreters by handle and
answers one call at a time over a pipe. The service keeps a ``RemoteInterpreter`` per device, with
``ModelInterpreter``'s interface.

A worker that dies takes its interpreters with it: killed by a signal, past its memory limit
(``FLEET_MODEL_WORKER_MEMORY_BYTES``, watched from here), or stuck in a call past
``FLEET_MODEL_CALL_SECONDS`` (then killed). Its calls in flight and every later call on its
interpreters raise ModelCrashed naming the model and why; the next interpreter asked of the pool gets
a new worker; a device whose interpreter died makes a new one on its next call, which restores its
checkpoint (the tutorial's rule). Devices of other models never notice.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from service.config import Settings
from service.errors import FleetError, InvalidModel, InvocationFailed, ModelCrashed
from service.runtime.interpreter import CompiledModel, ModelInterpreter
from service.runtime.quiet import tensorflow_start_up_quiet

START_SECONDS = 180.0
"""A worker imports TensorFlow and loads the model: seconds, more on a busy machine."""
WATCH_SECONDS = 0.2
"""How often each worker's resident memory is read."""
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Isolation:
    """How added models' workers are run (``FLEET_MODEL_*`` settings)."""

    workers: int = 1
    memory_bytes: int = 2 * 1024**3
    call_seconds: float = 120.0

    @classmethod
    def of(cls, settings: Settings) -> Isolation | None:
        """The isolation ``settings`` ask for, or None: added models run in-process."""
        if not settings.models_isolated():
            return None
        return cls(settings.model_workers, settings.model_worker_memory_bytes, settings.model_call_seconds)


def _serve(conn: Connection, name: str, content: bytes, num_threads: int) -> None:
    """A worker's life: load the model, then answer ``create``/``run`` calls until the pipe closes."""
    try:
        with tensorflow_start_up_quiet():  # the worker imports TensorFlow and makes a first interpreter
            model = CompiledModel.load(name, content, num_threads)
            model.interpreter()
    except FleetError as exc:
        conn.send(("error", exc))
        return
    conn.send(("ok", dict(model.signatures)))
    interpreters: dict[int, ModelInterpreter] = {}
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        kind, handle, drops = request[0], request[1], request[-1]
        for dropped in drops:
            interpreters.pop(dropped, None)
        try:
            if kind == "create":
                interpreters[handle] = model.interpreter()
                reply: tuple[str, Any] = ("ok", None)
            else:
                reply = ("ok", interpreters[handle].run(request[2], request[3]))
        except FleetError as exc:
            reply = ("error", exc)
        except Exception as exc:
            reply = ("error", InvocationFailed(f"model '{name}': {type(exc).__name__}: {exc}"))
        conn.send(reply)


def exit_reason(process: multiprocessing.process.BaseProcess) -> str:
    process.join(timeout=1.0)
    code = process.exitcode
    if code is not None and code < 0:
        return f"its worker process was killed by {signal.Signals(-code).name}"
    return f"its worker process exited (code {code})"


class _Worker:
    """One worker process of a model's pool, and the pipe to it (one call at a time)."""

    def __init__(self, name: str, content: bytes, num_threads: int, isolation: Isolation) -> None:
        self.name = name
        self.isolation = isolation
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads, no locks held
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child, name, content, num_threads), name=f"fleet-model-{name}", daemon=True
        )
        self.process.start()
        child.close()
        self.lock = threading.Lock()
        self.dead: str | None = None
        """Why the worker is gone, once it is."""
        self.handles = itertools.count(1)
        self.live = 0
        self.drops: list[int] = []
        self.signatures = self._reply(START_SECONDS, "loading")

    def kill(self, why: str) -> None:
        if self.dead is None:
            self.dead = why
        with contextlib.suppress(OSError):
            self.process.kill()

    def _reply(self, seconds: float, doing: str, started: float | None = None) -> Any:
        """The worker's answer; ModelCrashed (the worker killed) if it dies or takes past ``seconds``
        from ``started`` (the call's start, its request's sending included; None: now)."""
        started = time.monotonic() if started is None else started
        arrived = self.conn.poll(max(0.0, seconds - (time.monotonic() - started)))
        timed_out = not arrived or time.monotonic() - started > seconds
        if timed_out:  # killed, even if its answer came in meanwhile: the call took too long
            self.kill(f"a call took longer than {seconds:g} s (FLEET_MODEL_CALL_SECONDS)")
        try:
            if timed_out:
                raise EOFError
            status, value = self.conn.recv()
        except (EOFError, OSError):
            self.kill(exit_reason(self.process))
            raise ModelCrashed(
                f"model '{self.name}' crashed while {doing}: {self.dead}; its devices come back from "
                "their checkpoints on their next call"
            ) from None
        if status == "error":
            raise value
        return value

    def call(self, kind: str, handle: int, *args: object) -> Any:
        with self.lock:
            if self.dead is not None:
                raise ModelCrashed(f"model '{self.name}' crashed: {self.dead}; retry the call")
            drops, self.drops = self.drops, []
            started = time.monotonic()
            try:
                self.conn.send((kind, handle, *args, drops))
            except OSError:
                self.kill(exit_reason(self.process))
            doing = f"running {args[0]!r}" if args else "starting"
            return self._reply(self.isolation.call_seconds, doing, started)

    def resident_bytes(self) -> int:
        try:
            with open(f"/proc/{self.process.pid}/statm") as statm:
                return int(statm.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            return 0


class ModelWorkers:
    """The pool of one added model: its workers, started on demand, replaced when they die."""

    def __init__(self, name: str, content: bytes, num_threads: int, isolation: Isolation) -> None:
        self.name, self.content, self.num_threads, self.isolation = name, content, num_threads, isolation
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self.crashes = 0
        first = self._start()
        self.signatures: Mapping[str, Any] = first.signatures
        self._closed = threading.Event()
        self._watch = threading.Thread(target=self._watch_memory, name=f"watch-{name}", daemon=True)
        self._watch.start()

    def _start(self) -> _Worker:
        try:
            worker = _Worker(self.name, self.content, self.num_threads, self.isolation)
        except ModelCrashed as exc:
            raise InvalidModel(f"model '{self.name}' does not load: {exc.message}") from exc
        self._workers.append(worker)
        return worker

    def interpreter(self, model: CompiledModel) -> RemoteInterpreter:
        """A new interpreter of the model, on the pool's least-loaded live worker."""
        with self._lock:
            for worker in [w for w in self._workers if w.dead is not None]:
                self._workers.remove(worker)
                self.crashes += 1
            if len(self._workers) < self.isolation.workers:
                self._start()
            worker = min(self._workers, key=lambda w: w.live)
            handle = next(worker.handles)
        worker.call("create", handle)
        return RemoteInterpreter(model, worker, handle)

    def _watch_memory(self) -> None:
        while not self._closed.wait(WATCH_SECONDS):
            with self._lock:
                workers = list(self._workers)
            for worker in workers:
                if worker.dead is None and worker.resident_bytes() > self.isolation.memory_bytes:
                    limit = self.isolation.memory_bytes // 1024**2
                    worker.kill(
                        f"it passed its memory limit of {limit} MiB (FLEET_MODEL_WORKER_MEMORY_BYTES)"
                    )

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.kill("the model was closed")
            with contextlib.suppress(OSError):
                worker.conn.close()
            worker.process.join(timeout=5)


class RemoteInterpreter:
    """A device's interpreter in a worker process; ``ModelInterpreter``'s interface."""

    def __init__(self, model: CompiledModel, worker: _Worker, handle: int) -> None:
        self.model, self._worker, self._handle = model, worker, handle
        worker.live += 1

    @property
    def alive(self) -> bool:
        return self._worker.dead is None

    def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.model.signature(signature)
        outputs: dict[str, np.ndarray] = self._worker.call("run", self._handle, signature, dict(inputs))
        return outputs

    def __del__(self) -> None:
        self._worker.live -= 1
        self._worker.drops.append(self._handle)  # sent with the worker's next call


def load_isolated(name: str, content: bytes, num_threads: int, isolation: Isolation) -> CompiledModel:
    """``CompiledModel.load``, done in the model's first worker: no interpreter of it is made here."""
    pool = ModelWorkers(name, content, num_threads, isolation)
    return CompiledModel(name, content, pool.signatures, num_threads, isolated=pool)
