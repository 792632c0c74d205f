"""Train throughput (batch 100, default model): over HTTP (npz and JSON) against in-process calls.

A concurrent load generator (``benchmarks/_loadgen.py``, in this process) trains many devices of a real
``fleet serve`` on loopback; the reference runs ``train`` on in-process interpreters in the same run,
with one thread and with as many threads as the server has cores.

    .venv/bin/python benchmarks/train_throughput.py [--seconds 10] [--devices 32] [--concurrency 8]
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson

from benchmarks import _loadgen as loadgen
from benchmarks._common import batch, load_parser, machine, npz, table
from benchmarks._loadgen import request_head
from service.fleet.models import embedded_model_path
from service.runtime import CompiledModel
from service.server_process import ServerProcess


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


def http_steps_per_s(url: str, ids: list[str], binary: bool, seconds: float, concurrency: int) -> float:
    x, y = batch()
    if binary:
        body, content_type = npz(x=x, y=y), "application/x-npz"
    else:
        body, content_type = orjson.dumps({"inputs": {"x": x.tolist(), "y": y.tolist()}}), "application/json"
    heads = [
        request_head("POST", f"/v1/devices/{i}/train", content_type, content_type, len(body)) for i in ids
    ]
    start = time.perf_counter()
    latencies = asyncio.run(loadgen.run(url, heads, body, concurrency, seconds=seconds))
    return len(latencies) / (time.perf_counter() - start)


def main() -> None:
    parser = load_parser(__doc__)
    parser.add_argument("--threads", type=int, default=2, help="in-process reference threads (cores)")
    args = parser.parse_args()

    one = in_process_steps_per_s(1, args.seconds, args.devices)
    many = in_process_steps_per_s(args.threads, args.seconds, args.devices)
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(Path(tmp) / "data") as server:
        with httpx.Client(base_url=server.url) as client:
            ids = client.post(
                "/v1/devices/bulk-create", json={"count": args.devices, "prefix": "bench-"}
            ).json()["ids"]
        http_steps_per_s(server.url, ids, True, 2, args.concurrency)  # warm up: activate every interpreter
        binary = http_steps_per_s(server.url, ids, True, args.seconds, args.concurrency)
        as_json = http_steps_per_s(server.url, ids, False, args.seconds, args.concurrency)

    rows = [
        ("in-process, 1 thread", f"{one:.0f}", "1.00", f"{one / many:.2f}"),
        (f"in-process, {args.threads} threads", f"{many:.0f}", f"{many / one:.2f}", "1.00"),
        (
            f"HTTP npz, {args.concurrency} concurrent",
            f"{binary:.0f}",
            f"{binary / one:.2f}",
            f"{binary / many:.2f}",
        ),
        (
            f"HTTP JSON, {args.concurrency} concurrent",
            f"{as_json:.0f}",
            f"{as_json / one:.2f}",
            f"{as_json / many:.2f}",
        ),
    ]
    table(
        f"train, batch 100, {args.devices} devices, {args.seconds:.0f} s each ({machine()})",
        ["path", "steps/s", "vs 1 thread", f"vs {args.threads} threads"],
        rows,
    )


if __name__ == "__main__":
    main()
