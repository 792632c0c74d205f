"""``infer`` latency, batch 1, one request at a time: over HTTP against in-process calls.

.venv/bin/python -m benchmarks.infer_latency [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import httpx
import numpy as np
import orjson

from benchmarks import _loadgen as loadgen
from benchmarks._common import batch, machine, ms, npz, percentile, table, timed
from service.client import FleetClient
from service.fleet.models import embedded_model_path
from service.runtime import CompiledModel
from service.server_process import ServerProcess


def row(name: str, samples: list[float], reference: float) -> tuple[str, ...]:
    p50 = percentile(samples, 50)
    return (name, ms(p50), ms(percentile(samples, 99)), f"{p50 / reference:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    x = batch(1)[0]

    interpreter = CompiledModel.load("fashion_mnist", embedded_model_path().read_bytes()).interpreter()
    in_process = timed(lambda: interpreter.run("infer", {"x": x}), args.requests)
    reference = percentile(in_process, 50)
    rows = [row("in-process interpreter", in_process, reference)]

    with tempfile.TemporaryDirectory() as tmp, ServerProcess(Path(tmp) / "data") as server:
        httpx.post(f"{server.url}/v1/devices", json={"id": "phone"}).raise_for_status()
        path = "/v1/devices/phone/infer"
        for label, body, media in (
            ("HTTP npz (lean client)", npz(x=x), "application/x-npz"),
            ("HTTP JSON (lean client)", orjson.dumps({"inputs": {"x": x.tolist()}}), "application/json"),
        ):
            head = loadgen.request_head("POST", path, media, media, len(body))
            asyncio.run(loadgen.run(server.url, [head], body, 1, requests=200))  # warm up
            samples = asyncio.run(loadgen.run(server.url, [head], body, 1, requests=args.requests))
            rows.append(row(label, samples, reference))
        with FleetClient(server.url) as client:
            client.infer("phone", x=x)
            rows.append(
                row(
                    "HTTP npz (FleetClient, httpx)",
                    timed(lambda: client.infer("phone", x=x), args.requests),
                    reference,
                )
            )
        logits = FleetClient(server.url).infer("phone", x=x)["logits"]
        np.testing.assert_array_equal(logits, interpreter.run("infer", {"x": x})["logits"])

    table(
        f"infer, batch 1, {args.requests} sequential requests ({machine()})",
        ["path", "p50 ms", "p99 ms", "p50 vs in-process"],
        rows,
    )


if __name__ == "__main__":
    main()
