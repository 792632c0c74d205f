"""Real-time mode: do a profiled device's HTTP calls take as long as its profile says, scaled?

A real ``fleet serve`` with ``FLEET_REALTIME_FACTOR`` (real seconds per simulated second). Devices get a
profile whose train and infer calls have known simulated durations; each call's measured latency is
compared with ``simulated seconds x factor``. Then many devices at once: the waits must not hold the
service's worker threads or its event loop, so ``concurrency`` calls of ``d`` seconds take about ``d``,
not ``concurrency x d``. Last, an offline device (a trace with no spell now): its 503 and Retry-After.

Beside, the same calls on the same server against unprofiled devices (no wait): the service's own cost.

    .venv/bin/python -m benchmarks.realtime_latency [--factor 0.1] [--calls 10] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from benchmarks._common import batch, machine, percentile, table
from service.client import FleetClient
from service.server_process import ServerProcess

BATCH = 32
TRAIN_MS, INFER_MS = 200.0, 50.0
"""Simulated milliseconds per sample: a 32-sample train call is 6.4 simulated seconds, infer 1.6."""
TOLERANCE = 0.10
"""A call may take at most this much longer than its scaled simulated duration (and never less)."""


def profile(offline: bool = False) -> dict[str, object]:
    described: dict[str, object] = {
        "class": "bench",
        "compute": {"train_ms_per_sample": TRAIN_MS, "infer_ms_per_sample": INFER_MS},
    }
    if offline:  # online only during the first simulated second of every 10,000 s: offline now
        described["availability"] = {"kind": "trace", "intervals": [[0, 1]], "period": 10_000}
    return described


def latencies(client: FleetClient, device_id: str, calls: int, kind: str) -> list[float]:
    x, y = batch(BATCH)
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        if kind == "train":
            client.train(device_id, x=x, y=y)
        else:
            client.infer(device_id, x=x)
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--factor", type=float, default=0.1, help="real seconds per simulated second")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    expected = {
        "train": BATCH * TRAIN_MS / 1000 * args.factor,
        "infer": BATCH * INFER_MS / 1000 * args.factor,
    }
    env = {"FLEET_REALTIME_FACTOR": str(args.factor)}
    with (
        tempfile.TemporaryDirectory(prefix="realtime-bench-") as tmp,
        ServerProcess(Path(tmp) / "data", env=env) as server,
        FleetClient(server.url, timeout=120) as client,
    ):
        client.create_devices(ids=["plain"])
        client.create_devices(ids=[f"rt-{i}" for i in range(args.concurrency)], profile=profile())
        rows = []
        worst = 0.0
        for kind in ("train", "infer"):
            plain = latencies(client, "plain", args.calls, kind)
            paced = latencies(client, "rt-0", args.calls, kind)
            want = expected[kind]
            over = percentile(paced, 95) / want - 1
            under = min(paced) / want - 1
            worst = max(worst, over, -under)
            rows.append(
                [
                    kind,
                    f"{percentile(plain, 50) * 1000:.1f}",
                    f"{want * 1000:.1f}",
                    f"{percentile(paced, 50) * 1000:.1f}",
                    f"{percentile(paced, 95) * 1000:.1f}",
                    f"{min(paced) / want:.3f}",
                    f"{percentile(paced, 95) / want:.3f}",
                ]
            )
        table(
            f"real-time mode, factor {args.factor:g}: one device's calls of {BATCH} samples "
            f"({args.calls} each; {machine()})",
            [
                "call",
                "unprofiled p50 ms",
                "expected ms",
                "p50 ms",
                "p95 ms",
                "min / expected",
                "p95 / expected",
            ],
            rows,
        )

        def one(i: int) -> float:
            started = time.perf_counter()
            latencies(client, f"rt-{i}", 1, "train")
            return time.perf_counter() - started

        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            each = list(pool.map(one, range(args.concurrency)))
        wall = time.perf_counter() - started
        want = expected["train"]
        table(
            f"{args.concurrency} profiled devices training at once (each call: {want * 1000:.0f} ms)",
            ["what", "figure"],
            [
                ["wall time of all calls (ms)", f"{wall * 1000:.0f}"],
                ["serial would be (ms)", f"{args.concurrency * want * 1000:.0f}"],
                ["slowest call / expected", f"{max(each) / want:.2f}"],
            ],
        )

        client.create_devices(ids=["away"], profile=profile(offline=True))
        x, _ = batch(BATCH)
        with httpx.Client(base_url=server.url, timeout=30) as raw:
            response = raw.post("/v1/devices/away/infer", json={"inputs": {"x": x[:1].tolist()}})
        print(
            f"offline device: HTTP {response.status_code}, Retry-After {response.headers.get('retry-after')}"
            f" s (at most {10_000 * args.factor:.0f} s): {response.json().get('error', {})}"
        )
        verdict = "within" if worst <= TOLERANCE else "outside"
        print(f"latencies {verdict} {TOLERANCE:.0%} of the scaled simulated durations (worst {worst:+.1%})")


if __name__ == "__main__":
    main()
