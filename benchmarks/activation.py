"""Activation: a new interpreter for a device plus the restore of its checkpoint (p50, p99).

Measured in-process on the fleet layer (what the server does when a device comes back into memory),
beside its parts (a bare interpreter, one ``restore``), and the eviction that makes room (a spill).

    .venv/bin/python -m benchmarks.activation [--devices 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks._common import batch, machine, ms, percentile, table, timed
from service.fleet import Fleet


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=300)
    args = parser.parse_args()
    x, y = batch()
    probe = x[:1]

    with tempfile.TemporaryDirectory() as tmp:
        fleet = Fleet(Path(tmp), max_resident=args.devices // 2)
        model = fleet.models.get("fashion_mnist")
        devices = fleet.create_many(count=args.devices, prefix="act-")
        for device in devices:  # every device trained once and saved: each has a checkpoint
            device.run("train", {"x": x, "y": y})
            device.save()
            device.restart()

        bare = timed(model.interpreter, args.devices)
        activations: list[float] = []
        evicting: list[float] = []
        restores: list[float] = []
        for device in devices:  # the first half fills the budget; the second half evicts (spills) to fit
            before = fleet.residency_stats().evictions
            start = time.perf_counter()
            device.run("infer", {"x": probe})  # activation: interpreter + restore + the infer itself
            elapsed = time.perf_counter() - start
            (evicting if fleet.residency_stats().evictions > before else activations).append(elapsed)
        infer_only = timed(lambda: devices[-1].run("infer", {"x": probe}), args.devices)
        for device in devices[-args.devices // 2 :]:
            start = time.perf_counter()
            device.restore()
            restores.append(time.perf_counter() - start)

    def row(name: str, samples: list[float]) -> tuple[str, ...]:
        return (name, str(len(samples)), ms(percentile(samples, 50)), ms(percentile(samples, 99)))

    table(
        f"activation of the default model ({machine()})",
        ["what", "n", "p50 ms", "p99 ms"],
        [
            row("new interpreter (+ allocate_tensors)", bare),
            row("restore of a checkpoint (resident device)", restores),
            row("activation: interpreter + restore + infer", activations),
            row("  the same, evicting another device (spill)", evicting),
            row("infer alone, resident (subtract)", infer_only),
        ],
    )


if __name__ == "__main__":
    main()
