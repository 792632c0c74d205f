"""Memory under churn: a capped fleet trained over HTTP in passes until N activations, RSS per pass.

Every pass trains each device for a few steps in a row (npz bodies, the lean load generator), so each
device is activated once a pass and, past the cap, another is evicted (its weights spilled). After
each pass the server's RSS is read from ``/proc/<pid>/statm`` (its peak during the pass is sampled
too). The pass criterion: every RSS after the warm-up stays within the tolerance of the RSS at the
end of the warm-up.

    .venv/bin/python -m benchmarks.soak [--devices 1000 --cap 100 --steps 5 --activations 50000]
    .venv/bin/python -m benchmarks.soak --quick                 # a few minutes: 200 devices, cap 20
    .venv/bin/python -m benchmarks.soak --server-env MALLOC_ARENA_MAX=8   # compare a server setting

The in-process reference, in the same run: the RSS of this process after importing TensorFlow and
training one interpreter, then with ``cap`` trained interpreters resident (what the server's capped
fleet would need with nothing else), and the activations/s of the same churn in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from benchmarks import _loadgen as loadgen
from benchmarks._common import batch, console, machine, npz, table
from service.fleet.fleet import process_rss_bytes
from service.fleet.models import embedded_model_path
from service.runtime import CompiledModel
from service.server_process import ServerProcess

MB = 1024 * 1024
NPZ = "application/x-npz"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakSampler:
    """The highest RSS of a process seen since the last ``take()``, read every ``period`` seconds."""

    def __init__(self, pid: int, period: float = 0.25) -> None:
        self.pid, self.period = pid, period
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self._peak = max(self._peak, rss_of(self.pid))
            except OSError:
                return

    def take(self) -> int:
        peak, self._peak = self._peak, 0
        return peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class Reference:
    rss_one: int
    """This process after importing TensorFlow and training one interpreter."""
    rss_resident: int
    """The same with ``cap`` trained interpreters resident."""
    activations_per_s: float
    """New interpreter + restore + the pass's steps + save, in this process, one thread."""


def in_process_reference(cap: int, steps: int, churn: int, tmp: Path) -> Reference:
    model = CompiledModel.load("fashion_mnist", embedded_model_path().read_bytes())
    x, y = batch()
    first = model.interpreter()
    first.run("train", {"x": x, "y": y})
    rss_one = process_rss_bytes()
    resident = [first]
    for _ in range(cap - 1):
        interpreter = model.interpreter()
        interpreter.run("train", {"x": x, "y": y})
        resident.append(interpreter)
    rss_resident = process_rss_bytes()
    del resident
    spill = np.array(os.fsencode(tmp / "spill.ckpt"))
    first.run("save", {"checkpoint_path": spill})
    start = time.perf_counter()
    for _ in range(churn):
        interpreter = model.interpreter()
        interpreter.run("restore", {"checkpoint_path": spill})
        for _ in range(steps):
            interpreter.run("train", {"x": x, "y": y})
        interpreter.run("save", {"checkpoint_path": spill})
    return Reference(rss_one, rss_resident, churn / (time.perf_counter() - start))


def bulk_create(client: httpx.Client, count: int, prefix: str, chunk: int = 10_000) -> list[str]:
    ids: list[str] = []
    for made in range(0, count, chunk):
        response = client.post(
            "/v1/devices/bulk-create", json={"count": min(chunk, count - made), "prefix": prefix}
        )
        response.raise_for_status()
        ids += response.json()["ids"]
    return ids


@dataclass(frozen=True)
class Pass:
    number: int
    activations: int
    evictions: int
    rss: int
    peak: int
    seconds: float


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--cap", type=int, default=100, help="the server's --max-resident")
    parser.add_argument("--steps", type=int, default=5, help="train steps per device per pass")
    parser.add_argument(
        "--activations", type=int, default=50_000, help="run until the server counts this many"
    )
    parser.add_argument("--warmup", type=int, default=5_000, help="activations before the reference RSS")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed RSS drift after the warm-up")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE", help="extra server environment"
    )
    parser.add_argument("--quick", action="store_true", help="200 devices, cap 20, 4,000 activations")
    args = parser.parse_args()
    if args.quick:
        args.devices, args.cap, args.activations, args.warmup = 200, 20, 4_000, 800
    for assignment in args.server_env:
        name, _, value = assignment.partition("=")
        os.environ[name] = value  # the server inherits this process's environment

    with tempfile.TemporaryDirectory() as tmp:
        reference = in_process_reference(args.cap, args.steps, churn=200, tmp=Path(tmp))
        console.print(
            f"in-process: RSS with TF and one trained interpreter {reference.rss_one / MB:.0f} MB, "
            f"with {args.cap} {reference.rss_resident / MB:.0f} MB; "
            f"{reference.activations_per_s:.0f} activations/s ({args.steps} steps each)",
            soft_wrap=True,
        )
        passes: list[Pass] = []
        with (
            ServerProcess(Path(tmp) / "data", "--max-resident", str(args.cap)) as server,
            httpx.Client(base_url=server.url, timeout=600) as client,
        ):
            ids = bulk_create(client, args.devices, "soak-")
            x, y = batch()
            body = npz(x=x, y=y)
            heads = [
                loadgen.request_head("POST", f"/v1/devices/{i}/train", NPZ, NPZ, len(body))
                for i in ids
                for _ in range(args.steps)
            ]
            sampler = PeakSampler(server.pid)
            started = time.perf_counter()
            activations = 0
            while activations < args.activations:
                t = time.perf_counter()
                asyncio.run(loadgen.run(server.url, heads, body, args.concurrency, requests=len(heads)))
                status = client.get("/v1/fleet").json()
                activations = status["activations"]
                done = Pass(
                    len(passes) + 1,
                    activations,
                    status["evictions"],
                    rss_of(server.pid),
                    sampler.take(),
                    time.perf_counter() - t,
                )
                passes.append(done)
                console.print(
                    f"pass {done.number}: {done.activations:,} activations, RSS {done.rss / MB:,.0f} MB "
                    f"(peak {done.peak / MB:,.0f}), {done.seconds:.1f} s",
                    highlight=False,
                    soft_wrap=True,
                )
            elapsed = time.perf_counter() - started
            sampler.stop()

    report(args, reference, passes, elapsed)


def report(args: argparse.Namespace, reference: Reference, passes: list[Pass], elapsed: float) -> None:
    warm = next((p for p in passes if p.activations >= args.warmup), passes[-1])
    after = [p for p in passes if p.number > warm.number]
    rows = [
        (
            p.number,
            f"{p.activations:,}",
            f"{p.rss / MB:,.0f}",
            f"{p.peak / MB:,.0f}",
            f"{p.rss / warm.rss:.3f}" if p.number >= warm.number else "(warm-up)",
            f"{p.rss / reference.rss_resident:.2f}",
            f"{(args.devices * args.steps) / p.seconds:.0f}",
        )
        for p in passes
    ]
    table(
        f"soak: {args.devices:,} devices, cap {args.cap}, {args.steps} steps a pass ({machine()})",
        [
            "pass",
            "activations",
            "RSS MB",
            "peak MB",
            "vs warm-up",
            f"vs in-process {args.cap} resident",
            "steps/s",
        ],
        rows,
    )
    rate = passes[-1].activations / elapsed
    console.print(
        f"in-process reference: {reference.rss_one / MB:.0f} MB (TF + one trained interpreter), "
        f"{reference.rss_resident / MB:.0f} MB ({args.cap} resident); "
        f"{reference.activations_per_s:.0f} activations/s in-process vs {rate:.1f}/s over HTTP "
        f"({rate / reference.activations_per_s:.2f})",
        highlight=False,
        soft_wrap=True,
    )
    drift = max((abs(p.rss / warm.rss - 1) for p in after), default=0.0)
    peak_drift = max((abs(p.peak / max(1, warm.peak) - 1) for p in after), default=0.0)
    growth = (passes[-1].rss - warm.rss) / max(1, passes[-1].activations - warm.activations)
    verdict = (
        "PASS"
        if after and drift <= args.tolerance
        else "FAIL"
        if after
        else "NOT RUN (no pass after warm-up)"
    )
    console.print(
        f"{verdict}: RSS after the warm-up (pass {warm.number}, {warm.rss / MB:,.0f} MB) stayed within "
        f"{drift:.1%} of it (allowed {args.tolerance:.0%}) over {len(after)} passes; "
        f"{growth / 1024:+.1f} KB per activation from there to the end; the peak RSS of a pass stayed "
        f"within {peak_drift:.1%} of the warm-up pass's ({warm.peak / MB:,.0f} MB)",
        highlight=False,
        soft_wrap=True,
    )


if __name__ == "__main__":
    main()
