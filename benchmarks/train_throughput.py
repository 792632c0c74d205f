"""Train throughput (batch 100, default model): over HTTP (npz and JSON) against in-process calls.

A concurrent load generator (``benchmarks/_loadgen.py``, in this process) trains many devices of a real
``fleet serve`` on loopback; the reference runs ``train`` on in-process interpreters in the same run,
with one thread and with as many threads as the server has cores. Each HTTP phase also reports the
server's CPU time per request (its process's user + system time, from /proc), and the run ends with
``infer`` at batch 1, one request at a time (p50).

With ``--baseline COMMIT`` the run also serves that commit's tree (checked out in a temporary git
worktree, run with this venv) and alternates the two servers phase by phase, so both see the same
machine; the table gives each figure of this tree beside the baseline's, with the ratio.

    .venv/bin/python -m benchmarks.train_throughput [--seconds 10] [--devices 32] [--concurrency 8]
        [--baseline 20c7e00] [--rounds 3]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from benchmarks import _loadgen as loadgen
from benchmarks._common import batch, load_parser, machine, npz, percentile, table
from benchmarks._loadgen import request_head
from service.fleet.models import embedded_model_path
from service.runtime import CompiledModel
from service.server_process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent


def in_process_steps_per_s(threads: int, seconds: float, devices: int) -> float:
    model = CompiledModel.load("fashion_mnist", embedded_model_path().read_bytes())
    x, y = batch()
    interpreters = [model.interpreter() for _ in range(max(devices, threads))]
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        mine = interpreters[i::threads]
        n = 0
        while time.perf_counter() < stop:
            mine[n % len(mine)].run("train", {"x": x, "y": y})
            n += 1
        counts[i] = n

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far (/proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def train_body(binary: bool) -> tuple[bytes, str]:
    x, y = batch()
    if binary:
        return npz(x=x, y=y), "application/x-npz"
    return orjson.dumps({"inputs": {"x": x.tolist(), "y": y.tolist()}}), "application/json"


@dataclass
class Phase:
    """Requests, seconds and server CPU seconds summed over the phases of one kind on one server."""

    requests: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / self.requests if self.requests else float("nan")


@dataclass
class Served:
    label: str
    server: ServerProcess
    ids: list[str]
    phases: dict[str, Phase] = field(default_factory=dict)

    def measure(self, kind: str, heads: list[bytes], body: bytes, concurrency: int, **until: float) -> None:
        cpu, start = cpu_seconds(self.server.pid), time.perf_counter()
        latencies = asyncio.run(loadgen.run(self.server.url, heads, body, concurrency, **until))  # type: ignore[arg-type]
        seconds, cpu = time.perf_counter() - start, cpu_seconds(self.server.pid) - cpu
        phase = self.phases.setdefault(kind, Phase())
        phase.requests += len(latencies)
        phase.seconds += seconds
        phase.cpu += cpu
        phase.latencies.extend(latencies)

    def train(self, kind: str, binary: bool, seconds: float, concurrency: int) -> None:
        body, media = train_body(binary)
        heads = [request_head("POST", f"/v1/devices/{i}/train", media, media, len(body)) for i in self.ids]
        self.measure(kind, heads, body, concurrency, seconds=seconds)

    def infer(self, requests: int) -> None:
        body = npz(x=batch(1)[0])
        head = request_head("POST", f"/v1/devices/{self.ids[0]}/infer", *["application/x-npz"] * 2, len(body))
        self.measure("infer", [head], body, 1, requests=requests)


@contextlib.contextmanager
def baseline_tree(commit: str) -> Iterator[Path]:
    """``commit`` checked out in a temporary git worktree, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), commit], check=True
        )
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def serve(label: str, tree: Path, data: Path, devices: int, stack: contextlib.ExitStack) -> Served:
    """A server of ``tree``'s code (this venv; PYTHONSAFEPATH keeps the working directory off the path)."""
    env = {"PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1"}
    server = stack.enter_context(ServerProcess(data, env=env))
    with httpx.Client(base_url=server.url) as client:
        ids = client.post("/v1/devices/bulk-create", json={"count": devices, "prefix": "bench-"}).json()[
            "ids"
        ]
    return Served(label, server, ids)


def ratio_rows(servers: list[Served], one: float, threads: int, concurrency: int) -> list[tuple[str, ...]]:
    rows = []
    base = servers[1] if len(servers) > 1 else None
    for kind, name in (
        ("npz", f"HTTP npz, {concurrency} concurrent"),
        ("json", f"HTTP JSON, {concurrency} concurrent"),
    ):
        for s in servers:
            p = s.phases[kind]
            vs_base = f"{p.per_s / base.phases[kind].per_s:.2f}" if base is not None else "-"
            rows.append(
                (f"{name} ({s.label})", f"{p.per_s:.0f}", f"{p.per_s / one:.2f}", vs_base, f"{p.cpu_ms:.3f}")
            )
    for s in servers:
        p50 = percentile(s.phases["infer"].latencies, 50)
        vs_base = f"{p50 / percentile(base.phases['infer'].latencies, 50):.2f}" if base is not None else "-"
        rows.append(
            (
                f"HTTP npz infer batch 1, p50 ms ({s.label})",
                f"{p50 * 1000:.3f}",
                "-",
                vs_base,
                f"{s.phases['infer'].cpu_ms:.3f}",
            )
        )
    return rows


def main() -> None:
    parser = load_parser(__doc__)
    parser.add_argument("--threads", type=int, default=2, help="in-process reference threads (cores)")
    parser.add_argument("--baseline", metavar="COMMIT", help="also serve this commit, alternating with it")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the servers (with --baseline)")
    parser.add_argument("--infer-requests", type=int, default=2000)
    args = parser.parse_args()
    rounds = args.rounds if args.baseline else 1

    one = in_process_steps_per_s(1, args.seconds, args.devices)
    many = in_process_steps_per_s(args.threads, args.seconds, args.devices)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        servers = [serve("this tree", ROOT, tmp / "current", args.devices, stack)]
        if args.baseline:
            tree = stack.enter_context(baseline_tree(args.baseline))
            servers.append(serve(args.baseline, tree, tmp / "baseline", args.devices, stack))
        for s in servers:  # warm up: activate every interpreter
            s.train("warm-up", True, 2, args.concurrency)
        for _ in range(rounds):
            for s in servers:
                s.train("npz", True, args.seconds / rounds, args.concurrency)
        for _ in range(rounds):
            for s in servers:
                s.train("json", False, args.seconds / rounds / 2, args.concurrency)
        for _ in range(rounds):
            for s in servers:
                s.infer(args.infer_requests // rounds)

    rows = [
        ("in-process, 1 thread", f"{one:.0f}", "1.00", "-", "-"),
        (f"in-process, {args.threads} threads", f"{many:.0f}", f"{many / one:.2f}", "-", "-"),
        *ratio_rows(servers, one, args.threads, args.concurrency),
    ]
    table(
        f"train, batch 100, {args.devices} devices, {args.seconds:.0f} s per path ({machine()})",
        ["path", "steps/s", "vs 1 thread", f"vs {args.baseline or 'baseline'}", "server CPU ms/request"],
        rows,
    )


if __name__ == "__main__":
    main()
