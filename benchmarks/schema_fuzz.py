"""A schema fuzzer (schemathesis) against a real ``fleet serve``: every operation of the live OpenAPI,
stateful through its links, with a fixed seed and budget; what each operation answered, and the event
loop's longest stall while it ran (the slowest of ``GET /healthz`` probes sent every 20 ms meanwhile).

    .venv/bin/python -m benchmarks.schema_fuzz [--shards 2] [--max-examples 50] [--max-time 600]

The tests run the same with a small budget (tests/api/test_schema_fuzz.py). This module is also the
schemathesis hooks module (``SCHEMATHESIS_HOOKS``): it teaches the fuzzer ``application/x-npz`` bodies
(real ``numpy.savez`` archives) and logs every answer.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import schemathesis
from hypothesis import strategies as st

from service.server_process import ServerProcess

NPZ = "application/x-npz"
LOG_ENV = "FLEET_FUZZ_LOG"
"""The file the hooks append ``METHOD PATH<TAB>STATUS<TAB>body excerpt`` lines to, one per call."""
ST = str(Path(sys.executable).with_name("st"))
HOOKS = "benchmarks.schema_fuzz"
"""This module, by the name schemathesis imports it (``__name__`` is ``__main__`` when run as a script)."""
PROBE_SECONDS = 0.02
PHASES = "examples,coverage,fuzzing,stateful"


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@st.composite
def npz_bodies(draw: st.DrawFn) -> bytes:
    """Archives of the default model's inputs (``x``) and labels (``y``): mostly a right batch (for
    train, or without labels for infer), the rest wrong in one way (name, shape, dtype, value or
    labels), as a client of the npz routes sends them."""
    n = draw(st.integers(1, 4))
    arrays = {
        "x": np.full((n, 28, 28), 0.5, np.float32),
        "y": np.eye(10, dtype=np.float32)[np.arange(n) % 10],
    }
    flaws = ["name", "shape", "dtype", "value", "labels", "classes", "empty"]
    flaw = draw(st.sampled_from(["none"] * 5 + ["inputs only"] * 4 + flaws))
    if flaw == "inputs only":  # what infer takes
        del arrays["y"]
    elif flaw == "name":
        arrays["X"] = arrays.pop("x")
    elif flaw == "shape":
        arrays["x"] = arrays["x"].reshape(n, 784)
    elif flaw == "dtype":
        arrays["x"] = arrays["x"].astype(draw(st.sampled_from(["float64", "int64", "uint8", "bool"])))
    elif flaw == "value":
        arrays["x"][0, 0, 0] = draw(st.sampled_from([np.nan, np.inf, -1e30]))
    elif flaw == "labels":
        arrays["y"] = np.zeros((n + 1, 3), np.float32)
    elif flaw == "classes":
        arrays["y"] = np.arange(n, dtype=np.int64) % draw(st.sampled_from([10, 11]))
    elif flaw == "empty":
        arrays = {"x": np.zeros((0, 28, 28), np.float32), "y": np.zeros((0, 10), np.float32)}
    return _npz(arrays)


schemathesis.openapi.media_type(NPZ, npz_bodies())


RETRY = 1503
"""Logged for a 503 with Retry-After (a shard restarting, a device moving): deliberate, not an error."""
MAX_RESIZE = 3
"""Resizes ask for at most this many shards. A resize is one synchronous call: to 63 shards on 2 cores
it starts 61 Ray actors that each import TensorFlow, minutes during which the front answers nothing
about shards (``GET /v1/fleet/shards`` waits on the same coordinator). Known; not the fuzzer's to find."""


@schemathesis.hook
def before_call(context: object, case: schemathesis.Case, kwargs: dict[str, object]) -> None:
    body = case.body
    if case.operation.label == "POST /v1/fleet/shards" and isinstance(body, dict):
        count = body.get("count")
        if isinstance(count, int) and not isinstance(count, bool) and count > MAX_RESIZE:
            body["count"] = 1 + count % MAX_RESIZE


@schemathesis.hook
def after_call(context: object, case: schemathesis.Case, response: object) -> None:
    path = os.environ.get(LOG_ENV)
    if path is None:
        return
    status = int(response.status_code)  # type: ignore[attr-defined]
    excerpt = ""
    if status == 503 and "retry-after" in {k.lower() for k in response.headers}:  # type: ignore[attr-defined]
        status = RETRY  # a deliberate answer: try again later
    elif status >= 500:
        excerpt = response.content[:300].decode("utf-8", "replace").replace("\n", " ")  # type: ignore[attr-defined]
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"{case.operation.label}\t{status}\t{excerpt}\n")


@dataclass
class Report:
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    server_errors: list[str] = field(default_factory=list)
    """``OPERATION STATUS body`` of every 5xx answer."""
    longest_stall: float = 0.0
    """Seconds: the slowest /healthz probe during the run."""
    probes: int = 0
    seconds: float = 0.0
    exit_code: int = 0
    """schemathesis's: not 0 on a deliberate 503 too (1503 in ``statuses``), or a call that timed out."""
    output: str = ""
    tracebacks: list[str] = field(default_factory=list)
    """From the server's log (``fuzz_server`` only)."""

    @property
    def calls(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())

    @property
    def timeouts(self) -> int:
        return self.output.count("Read timed out")

    def reached(self) -> list[str]:
        """Operations that answered anything but 404, 405 or 422 at least once: their logic ran."""
        return [op for op, c in self.statuses.items() if any(s not in (404, 405, 422) for s in c)]


class StallProbe:
    """``GET /healthz`` every ``PROBE_SECONDS`` on its own thread; the slowest answer is the stall."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.longest = 0.0
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                with contextlib.suppress(httpx.HTTPError):  # a refused probe still measures the wait
                    client.get("/healthz")
                self.longest = max(self.longest, time.perf_counter() - started)
                self.count += 1
                self._stop.wait(PROBE_SECONDS)

    def __enter__(self) -> StallProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=70)


def fuzz(url: str, *, seed: int, max_examples: int, max_time: float, phases: str = PHASES) -> Report:
    """Run schemathesis (its CLI, with this module as hooks) against the server at ``url``."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as scratch:
        log = Path(scratch) / "calls.tsv"
        log.touch()
        command = [
            ST, "run", f"{url}/openapi.json", "--seed", str(seed), "--max-examples", str(max_examples),
            "--max-time", str(max(1, int(max_time))), "--phases", phases, "--checks", "not_a_server_error",
            "--workers", "1", "--no-shrink", "--request-timeout", "60", "--max-failures", "1000",
            "--suppress-health-check", "all", "--warnings", "off",
        ]  # fmt: skip
        # In a scratch directory: schemathesis keeps a cache of past failures in its working directory,
        # which would make one run depend on the last.
        root = str(Path(__file__).resolve().parent.parent)
        python_path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "SCHEMATHESIS_HOOKS": HOOKS, LOG_ENV: str(log), "PYTHONPATH": python_path}
        started = time.perf_counter()
        with StallProbe(url) as probe:
            done = subprocess.run(
                command,
                env=env,
                cwd=scratch,
                capture_output=True,
                text=True,
                timeout=max_time + 240,
                check=False,
            )
        report = Report(
            longest_stall=probe.longest,
            probes=probe.count,
            seconds=time.perf_counter() - started,
            exit_code=done.returncode,
            output=done.stdout[-60000:] + done.stderr[-3000:],
        )
        for line in log.read_text(encoding="utf-8").splitlines():
            operation, status, excerpt = line.split("\t", 2)
            report.statuses[operation][int(status)] += 1
            if 500 <= int(status) < 600:
                report.server_errors.append(f"{operation} {status} {excerpt}")
    return report


def fuzz_server(
    data_dir: Path, *args: str, seed: int, max_examples: int, max_time: float, phases: str = PHASES
) -> Report:
    """Start ``fleet serve`` (``args``: e.g. ``--shards 2``), fuzz it, stop it."""
    with ServerProcess(data_dir, *args, timeout=240) as server:
        report = fuzz(server.url, seed=seed, max_examples=max_examples, max_time=max_time, phases=phases)
    report.tracebacks = tracebacks(server.log.read_text(errors="replace"))
    return report


def tracebacks(log: str, limit: int = 5) -> list[str]:
    """The server log's first ``limit`` tracebacks, each with the line that logged it."""
    lines = log.splitlines()
    found: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback") and len(found) < limit:
            end = next((j for j in range(i + 1, len(lines)) if not lines[j].startswith((" ", "\t"))), i)
            found.append("\n".join(lines[max(0, i - 1) : end + 1]))
    return found


def _statuses(counts: Counter[int]) -> str:
    return " ".join(f"{'503(retry)' if s == RETRY else s}:{n}" for s, n in sorted(counts.items()))


def main() -> None:
    from benchmarks._common import machine, table

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shards", type=int, default=None)
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--max-examples", type=int, default=50)
    parser.add_argument("--max-time", type=float, default=600.0)
    parser.add_argument("--phases", default=PHASES)
    options = parser.parse_args()
    args = () if options.shards is None else ("--shards", str(options.shards))
    with tempfile.TemporaryDirectory(prefix="schema-fuzz-") as scratch:
        report = fuzz_server(
            Path(scratch) / "data",
            *args,
            seed=options.seed,
            max_examples=options.max_examples,
            max_time=options.max_time,
            phases=options.phases,
        )
    rows = [(op, sum(c.values()), _statuses(c)) for op, c in sorted(report.statuses.items())]
    shards = options.shards or 1
    table(
        f"schema fuzz, {shards} shard(s), seed {options.seed} ({machine()})",
        ["operation", "calls", "statuses"],
        rows,
    )
    print(
        f"{report.calls} calls in {report.seconds:.0f} s; {len(report.statuses)} operations called, "
        f"{len(report.reached())} reached past 404/405/422; {len(report.server_errors)} server errors; "
        f"longest event-loop stall {report.longest_stall * 1000:.0f} ms over {report.probes} probes; "
        f"schemathesis exit code {report.exit_code}"
    )
    if report.exit_code != 0:
        print(report.output)
    for error in report.server_errors[:20]:
        print("  ", error)
    for traceback in report.tracebacks:
        print(traceback)


if __name__ == "__main__":
    main()
