"""The sharded fleet against one process, in the same run: throughput, CPU per request, pauses, memory.

Starts, one after the other, ``fleet serve`` (one process), ``fleet serve --shards 1`` and
``fleet serve --shards 2`` (a local Ray runtime each), and measures on each: train throughput (batch
100, npz) through the one address and, when sharded, through the fast path (straight to each
device's owner); the CPU each request costs the service's processes; then on two shards the pause a
resize 2 -> 3 -> 2 causes under load, the time a killed shard takes to serve again (with a spare
ready, and killed again at once, while the new spare still imports TensorFlow), listing latency
over 100,000 devices, bulk creation of 10,000, and the memory of Ray's processes and of each shard.

    .venv/bin/python -m benchmarks.cluster [--seconds 10] [--repeat 3] [--devices 32] [--concurrency 8]
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks import _loadgen as loadgen
from benchmarks._common import batch, console, load_parser, machine, ms, npz, percentile, table
from benchmarks._loadgen import request_head
from service.server_process import ServerProcess
from service.wire.view import View

NPZ = "application/x-npz"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its threads so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except OSError:
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def ray_processes() -> dict[str, list[int]]:
    """This machine's Ray processes by kind: shards, the coordinator, and Ray's own."""
    found: dict[str, list[int]] = {"shard": [], "coordinator": [], "ray": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "ray::ShardActor" in command:
            found["shard"].append(int(entry.name))
        elif "ray::Coordinator" in command:
            found["coordinator"].append(int(entry.name))
        elif "/ray/" in command or "raylet" in command or "ray::" in command:
            found["ray"].append(int(entry.name))
    return found


@dataclass
class Service:
    url: str
    pids: list[int]
    """The processes whose CPU a request costs: the server, or the front and the shards."""
    view: View | None
    server: ServerProcess


@contextmanager
def service(tmp: Path, shards: int | None) -> Iterator[Service]:
    args = () if shards is None else ("--shards", str(shards))
    with ServerProcess(tmp / f"data-{shards}", *args, timeout=300) as server:
        view = None
        pids = [server.pid]
        with httpx.Client(base_url=server.url, timeout=60) as client:
            answer = client.get("/v1/fleet/shards").json()
        if answer["sharded"]:
            view = View.parse(answer)
            pids += [s["pid"] for s in answer["shards"]]
        yield Service(server.url, pids, view, server)


def train_heads(ids: list[str], length: int) -> list[bytes]:
    return [request_head("POST", f"/v1/devices/{i}/train", NPZ, NPZ, length) for i in ids]


def throughput(
    svc: Service, ids: list[str], seconds: float, concurrency: int, direct: bool
) -> tuple[float, float]:
    """Train steps per second, and service CPU milliseconds per step."""
    x, y = batch()
    body = npz(x=x, y=y)
    if direct and svc.view is not None:
        parts = svc.view.partition(ids)
        share = max(1, concurrency // len(parts))
        targets = [(svc.view.shards[slot].address or "", part) for slot, part in parts.items()]
    else:
        share, targets = concurrency, [(svc.url, ids)]

    async def run() -> list[list[float]]:
        return await asyncio.gather(
            *(
                loadgen.run(url, train_heads(part, len(body)), body, share, seconds=seconds)
                for url, part in targets
            )
        )

    os.sync()  # an earlier phase's files written back now, not during this one
    cpu = sum(cpu_seconds(p) for p in svc.pids)
    start = time.perf_counter()
    done = sum(len(latencies) for latencies in asyncio.run(run()))
    elapsed = time.perf_counter() - start
    cpu = sum(cpu_seconds(p) for p in svc.pids) - cpu
    return done / elapsed, 1000 * cpu / max(done, 1)


def make_devices(url: str, count: int, prefix: str) -> tuple[list[str], float]:
    with httpx.Client(base_url=url, timeout=600) as client:
        start = time.perf_counter()
        made = client.post("/v1/devices/bulk-create", json={"count": count, "prefix": prefix})
        made.raise_for_status()
        return list(made.json()["ids"]), time.perf_counter() - start


def resize_pause(svc: Service, ids: list[str], concurrency: int) -> tuple[float, float, float]:
    """Under train load through the front: (resize 2->3 call s, 3->2 call s, longest request s)."""
    x, y = batch()
    body = npz(x=x, y=y)
    latencies: list[float] = []
    durations: list[float] = []

    def resize() -> None:
        with httpx.Client(base_url=svc.url, timeout=120) as client:
            for count in (3, 2):
                time.sleep(2)
                start = time.perf_counter()
                client.post("/v1/fleet/shards", json={"count": count}).raise_for_status()
                durations.append(time.perf_counter() - start)

    thread = threading.Thread(target=resize)
    thread.start()
    latencies = asyncio.run(loadgen.run(svc.url, train_heads(ids, len(body)), body, concurrency, seconds=12))
    thread.join()
    return durations[0], durations[1], max(latencies)


def spares_ready(client: httpx.Client, timeout: float = 120) -> list[dict[str, Any]]:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        spares = client.get("/v1/fleet/shards").json()["spares"]
        if all(s["state"] == "ready" for s in spares):
            return list(spares)
        time.sleep(0.2)
    raise RuntimeError(f"the spares were not ready in {timeout} s")


def restart_time(svc: Service, device_id: str) -> float:
    """Seconds from kill -9 of the device's shard to the device answering again."""
    with httpx.Client(base_url=svc.url, timeout=30) as client:
        answer = client.get("/v1/fleet/shards").json()
        slot = View.parse(answer).owner(device_id).slot
        victim = next(s for s in answer["shards"] if s["slot"] == slot)
        os.kill(victim["pid"], signal.SIGKILL)
        start = time.perf_counter()
        deadline = start + 120
        while time.perf_counter() < deadline:
            if client.get(f"/v1/devices/{device_id}").status_code == 200:
                return time.perf_counter() - start
            time.sleep(0.05)
    raise RuntimeError("the killed shard did not come back in 120 s")


def listing(url: str, repeat: int = 50) -> tuple[list[float], list[float]]:
    with httpx.Client(base_url=url, timeout=60) as client:
        first, middle = [], []
        for _ in range(repeat):
            start = time.perf_counter()
            client.get("/v1/devices", params={"limit": 100}).raise_for_status()
            first.append(time.perf_counter() - start)
            start = time.perf_counter()
            client.get("/v1/devices", params={"limit": 100, "after": "list-8"}).raise_for_status()
            middle.append(time.perf_counter() - start)
    return first, middle


def main() -> None:
    parser = load_parser(__doc__)
    parser.add_argument("--list-devices", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs per path (median shown)")
    parser.add_argument("--only", default="one,1,2", help="which services: one (process), 1 or 2 (shards)")
    args = parser.parse_args()
    wanted = [None if part == "one" else int(part) for part in args.only.split(",")]

    rows: list[tuple[str, ...]] = []
    facts: dict[str, Any] = {}
    base = 0.0
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for shards in wanted:
            name = "one process" if shards is None else f"--shards {shards}"
            with service(tmp, shards) as svc:
                ids, _ = make_devices(svc.url, args.devices, "bench-")
                throughput(svc, ids, 2, args.concurrency, direct=False)  # warm up: every interpreter made
                paths = [("one address", False)] + ([("fast path", True)] if shards else [])
                for label, direct in paths:
                    options = args.seconds, args.concurrency, direct
                    runs = sorted(throughput(svc, ids, *options) for _ in range(args.repeat))
                    steps, cpu = runs[len(runs) // 2]  # the median run
                    base = base or steps
                    spread = f"{runs[0][0]:.0f}-{runs[-1][0]:.0f}"
                    rows.append(
                        (f"{name}, {label}", f"{steps:.0f}", spread, f"{steps / base:.2f}", f"{cpu:.2f}")
                    )
                    console.print(f"{rows[-1]}")
                _, created = make_devices(svc.url, 10_000, "bulk-")
                facts[f"bulk creation of 10,000 ({name})"] = f"{created:.2f} s"
                if shards == 2:
                    grow, shrink, longest = resize_pause(svc, ids, args.concurrency)
                    facts["resize 2->3 / 3->2 under load (the call)"] = f"{grow:.2f} / {shrink:.2f} s"
                    facts["longest train request during the resizes"] = f"{longest:.2f} s"
                    with httpx.Client(base_url=svc.url, timeout=30) as client:
                        spares = {s["pid"] for s in spares_ready(client)}
                    processes = ray_processes()
                    shard_rss = [rss_mb(p) for p in processes["shard"] if p not in spares]
                    facts["RSS per shard process"] = ", ".join(f"{mb:.0f}" for mb in shard_rss) + " MB"
                    facts["RSS per spare (TensorFlow imported, no devices)"] = (
                        ", ".join(f"{rss_mb(p):.0f}" for p in spares) + " MB"
                    )
                    facts["RSS of the coordinator"] = (
                        f"{sum(rss_mb(p) for p in processes['coordinator']):.0f} MB"
                    )
                    facts["RSS of Ray's own processes (one node)"] = (
                        f"{sum(rss_mb(p) for p in processes['ray']):.0f} MB"
                    )
                    facts["RSS of the front"] = f"{rss_mb(svc.server.pid):.0f} MB"
                    facts["killed shard serving again (a spare ready)"] = f"{restart_time(svc, ids[0]):.2f} s"
                    facts["killed again at once (the new spare still starting)"] = (
                        f"{restart_time(svc, ids[0]):.2f} s"
                    )
                if shards in (None, 2):
                    make_devices(svc.url, args.list_devices - 10_000 - args.devices, "list-")
                    first, middle = listing(svc.url)
                    facts[f"list 100 of {args.list_devices:,}: first page p50 / p99 ({name})"] = (
                        f"{ms(percentile(first, 50))} / {ms(percentile(first, 99))} ms"
                    )
                    facts[f"list 100 of {args.list_devices:,}: from the middle p50 ({name})"] = (
                        f"{ms(percentile(middle, 50))} ms"
                    )

    load = f"{args.devices} devices, {args.concurrency} concurrent, {args.seconds:.0f} s a run"
    table(
        f"train, batch 100, npz, {load} ({machine()})",
        ["path", "steps/s (median)", f"{args.repeat} runs", "vs one process", "service CPU ms / step"],
        rows,
    )
    table("sharded fleet: pauses, start-up, listing, memory", ["what", "figure"], list(facts.items()))


if __name__ == "__main__":
    main()
