"""Fleet scale on a real server: memory per resident device, a capped 10,000-device fleet,
bulk creation, listing with 100,000 devices registered, and start-up with them on disk.

    .venv/bin/python -m benchmarks.fleet_scale [--fleet 10000 --cap 1000 --resident 200 --registered 100000]

With ``--devices N`` it measures only the registry at scale (issue 24's targets): N devices made
in-process by ``Fleet.create_many`` (timed: devices/s and bytes on disk per device), then the server
started on them twice, with ``--max-resident 1000`` and with none resident (``--max-resident 0`` is
not a cap, so the second start has the default cap and no device is activated): start-up to ready,
RSS with none resident, and the first page of the listing (p50 / p99 over 200 requests).

    .venv/bin/python -m benchmarks.fleet_scale --devices 1000000 [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks import _loadgen as loadgen
from benchmarks._common import batch, machine, ms, npz, percentile, table, timed
from service.fleet.fleet import Fleet, process_rss_bytes
from service.fleet.models import embedded_model_path
from service.runtime import CompiledModel
from service.server_process import ServerProcess

MB = 1024 * 1024
NPZ = "application/x-npz"


def bulk_create(client: httpx.Client, count: int, prefix: str, chunk: int = 10_000) -> float:
    start = time.perf_counter()
    for made in range(0, count, chunk):
        response = client.post(
            "/v1/devices/bulk-create", json={"count": min(chunk, count - made), "prefix": prefix}
        )
        response.raise_for_status()
    return time.perf_counter() - start


def train_each_once(url: str, ids: list[str], concurrency: int = 4) -> float:
    x, y = batch()
    body = npz(x=x, y=y)
    heads = [loadgen.request_head("POST", f"/v1/devices/{i}/train", NPZ, NPZ, len(body)) for i in ids]
    start = time.perf_counter()
    asyncio.run(loadgen.run(url, heads, body, concurrency, requests=len(ids)))
    return time.perf_counter() - start


def all_ids(client: httpx.Client) -> list[str]:
    ids, after = [], None
    while True:
        page = client.get("/v1/devices", params={"limit": 1000} | ({"after": after} if after else {})).json()
        ids += [d["id"] for d in page["devices"]]
        if not (after := page["next_after"]):
            return ids


def in_process_rss_per_interpreter(n: int) -> float:
    """The reference: bare interpreters in this process, each trained once."""
    model = CompiledModel.load("fashion_mnist", embedded_model_path().read_bytes())
    x, y = batch()
    model.interpreter().run("train", {"x": x, "y": y})  # first-use costs outside the measurement
    before = process_rss_bytes()
    kept = []
    for _ in range(n):
        interpreter = model.interpreter()
        interpreter.run("train", {"x": x, "y": y})
        kept.append(interpreter)
    return (process_rss_bytes() - before) / n


def disk_bytes(root: Path) -> tuple[int, int]:
    """Allocated bytes (blocks) and inodes under ``root``."""
    blocks = inodes = 0
    for directory, subdirs, files in os.walk(root):
        for name in [*subdirs, *files]:
            blocks += os.lstat(os.path.join(directory, name)).st_blocks * 512
            inodes += 1
    return blocks, inodes


def make_devices(data_dir: Path, count: int, chunk: int = 10_000) -> float:
    """``count`` devices made by the fleet itself (no HTTP), in chunks as bulk-create makes them."""
    fleet = Fleet(data_dir, max_devices=None)
    start = time.perf_counter()
    for made in range(0, count, chunk):
        fleet.create_many(count=min(chunk, count - made), prefix="dev-")
    seconds = time.perf_counter() - start
    fleet.close()
    return seconds


def registry_at_scale(count: int, parent: str | None) -> None:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="fleet-scale-", dir=parent) as tmp:
        data_dir = Path(tmp) / "data"
        seconds = make_devices(data_dir, count)
        rows.append(
            (
                f"make {count:,} devices (Fleet.create_many, 10,000 a call)",
                f"{seconds:.1f} s ({count / seconds:,.0f}/s)",
            )
        )
        blocks, inodes = disk_bytes(data_dir / "devices")
        rows.append(
            ("  disk per device (blocks / inodes)", f"{blocks / count:,.0f} B / {inodes / count:.1f}")
        )
        for label, extra in (("cap 1,000", ("--max-resident", "1000")), ("no cap", ())):
            start = time.perf_counter()
            with (
                ServerProcess(data_dir, *extra, timeout=900) as server,
                httpx.Client(base_url=server.url, timeout=600) as client,
            ):
                rows.append(
                    (
                        f"start-up with {count:,} devices, {label} (to ready)",
                        f"{time.perf_counter() - start:.1f} s",
                    )
                )
                status = client.get("/v1/fleet").json()
                rows.append(
                    (
                        f"  RSS, none resident ({status['resident']} resident)",
                        f"{status['process_rss_bytes'] / MB:,.0f} MB",
                    )
                )
                first = timed(
                    lambda: client.get("/v1/devices", params={"limit": 100}).raise_for_status(), 200
                )
                rows.append(
                    (
                        f"  list 100 of {count:,}: first page p50 / p99",
                        f"{ms(percentile(first, 50))} / {ms(percentile(first, 99))} ms",
                    )
                )
                status = client.get("/v1/fleet").json()
                rows.append(("  RSS after listing", f"{status['process_rss_bytes'] / MB:,.0f} MB"))
    table(f"fleet registry at scale ({machine()})", ["what", "figure"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resident", type=int, default=200, help="devices for the per-device RSS")
    parser.add_argument("--fleet", type=int, default=10_000)
    parser.add_argument("--cap", type=int, default=1_000)
    parser.add_argument("--registered", type=int, default=100_000, help="devices registered for listing")
    parser.add_argument("--devices", type=int, help="measure only the registry with this many devices")
    parser.add_argument("--dir", help="where to make the registry's data directory (default: the temp dir)")
    args = parser.parse_args()
    if args.devices:
        registry_at_scale(args.devices, args.dir)
        return
    rows: list[tuple[str, str]] = []

    per_interpreter = in_process_rss_per_interpreter(args.resident)
    rows.append(
        (f"RSS per trained interpreter, in-process ({args.resident})", f"{per_interpreter / MB:.2f} MB")
    )

    with tempfile.TemporaryDirectory() as tmp:
        with (
            ServerProcess(Path(tmp) / "a") as server,
            httpx.Client(base_url=server.url, timeout=600) as client,
        ):
            client.post("/v1/devices", json={"id": "warm"}).raise_for_status()
            train_each_once(server.url, ["warm"])  # first-use costs outside the measurement
            before = client.get("/v1/fleet").json()["process_rss_bytes"]
            bulk_create(client, args.resident, "res-")
            train_each_once(server.url, [i for i in all_ids(client) if i.startswith("res-")])
            status = client.get("/v1/fleet").json()
            per_device = (status["process_rss_bytes"] - before) / args.resident
            rows.append(
                (
                    f"RSS per resident device, server ({status['resident'] - 1} trained)",
                    f"{per_device / MB:.2f} MB",
                )
            )

        with (
            ServerProcess(Path(tmp) / "b", "--max-resident", str(args.cap)) as server,
            httpx.Client(base_url=server.url, timeout=600) as client,
        ):
            created = bulk_create(client, args.fleet, "dev-")
            rows.append((f"bulk creation of {args.fleet:,} devices (HTTP)", f"{created:.2f} s"))
            ids = all_ids(client)
            seconds = train_each_once(server.url, ids)
            status = client.get("/v1/fleet").json()
            rows.append(
                (
                    f"train each of {args.fleet:,} once, cap {args.cap:,}",
                    f"{seconds:.1f} s ({args.fleet / seconds:.0f} steps/s)",
                )
            )
            rows.append(("  evictions / spills", f"{status['evictions']:,} / {status['spills']:,}"))
            rows.append(
                (
                    f"  RSS of the {args.fleet:,}/{args.cap:,} fleet",
                    f"{status['process_rss_bytes'] / MB:.0f} MB",
                )
            )

            bulk_create(client, args.registered - args.fleet, "reg-")
            total = client.get("/v1/devices", params={"limit": 1}).json()["total"]
            first = timed(lambda: client.get("/v1/devices", params={"limit": 100}).raise_for_status(), 200)
            middle = ids[len(ids) // 2]
            deep = timed(
                lambda: client.get("/v1/devices", params={"limit": 100, "after": middle}).raise_for_status(),
                200,
            )
            rows.append(
                (
                    f"list 100 of {total:,}: first page p50 / p99",
                    f"{ms(percentile(first, 50))} / {ms(percentile(first, 99))} ms",
                )
            )
            rows.append((f"list 100 of {total:,}: from the middle p50", f"{ms(percentile(deep, 50))} ms"))

        start = time.perf_counter()
        with ServerProcess(Path(tmp) / "b", "--max-resident", str(args.cap), timeout=600) as server:
            rows.append(
                (
                    f"start-up with {total:,} devices on disk (to ready)",
                    f"{time.perf_counter() - start:.1f} s",
                )
            )

    table(f"fleet scale ({machine()})", ["what", "figure"], rows)


if __name__ == "__main__":
    main()
