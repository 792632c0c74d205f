"""Federated round throughput: devices per second through the rounds API against an in-process loop.

Each participant's work: take the global weights, train 1 local epoch (batch 32) over its 600 assigned
Fashion-MNIST samples, save its checkpoint, send its weights, which the server averages (FedAvg).
Through the API: ``POST /v1/rounds`` on a real ``fleet serve`` (every device participates; no
evaluation, ``device_weights="saved"``), figures from the rounds' own durations after the first
(in which every device also makes its interpreter, as the in-process loop does before timing).
In-process, in the same run: the same work on bare interpreters (restore, train, save to the
device's file, read the weights back, add them to the running mean), with 1 and with 2 threads.

Then one round over 10,000 devices with a residency cap of 1,000: its duration and the server's
peak RSS.

    .venv/bin/python -m benchmarks.round_throughput [--devices 100] [--rounds 5] [--large 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks._common import machine, table
from service.client import FleetClient
from service.data.device_split import device_split
from service.data.pools import ClassPools
from service.data.spec import PartitionSpec
from service.federated.aggregation import WeightedMean
from service.federated.checkpoints import read_weights
from service.fleet.models import embedded_model_path
from service.fleet.weights import run_checkpoint
from service.model.dataset import load_fashion_mnist, one_hot
from service.runtime import CompiledModel
from service.server_process import ServerProcess

SAMPLES = 600
BATCH = 32


def in_process_devices_per_s(threads: int, devices: int, rounds: int, workdir: Path) -> float:
    """The participants' work on bare interpreters: one interpreter per device, as the fleet keeps."""
    model = CompiledModel.load("fashion_mnist", embedded_model_path().read_bytes())
    data = load_fashion_mnist()
    pools = ClassPools.build(data.train_labels, data.test_labels)
    spec = PartitionSpec(kind="iid", devices=devices, train_per_device=SAMPLES, test_per_device=10)
    splits = [device_split(f"bench-{i}", spec, pools).train_indices for i in range(devices)]
    labels = one_hot(data.train_labels)
    interpreters = [model.interpreter() for _ in range(devices)]
    global_path = workdir / "global.ckpt"
    run_checkpoint(model.interpreter(), model, "save", global_path, global_path, workdir)
    mean, lock = WeightedMean(), threading.Lock()

    def participate(i: int, rng: np.random.Generator) -> None:
        interpreter = interpreters[i]
        own = workdir / f"device-{i}.ckpt"
        run_checkpoint(interpreter, model, "restore", global_path, global_path, workdir)
        order = splits[i][rng.permutation(SAMPLES)]
        for start in range(0, SAMPLES, BATCH):
            chosen = order[start : start + BATCH]
            interpreter.run("train", {"x": data.train_images[chosen], "y": labels[chosen]})
        run_checkpoint(interpreter, model, "save", own, own, workdir)
        weights = read_weights(own)
        with lock:
            mean.add(weights, SAMPLES)

    def run_part(part: list[int]) -> None:
        for i in part:
            participate(i, np.random.default_rng(i))

    started = time.perf_counter()
    for _ in range(rounds):
        pending = list(range(devices))
        workers = [threading.Thread(target=run_part, args=(pending[t::threads],)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        mean.result()
        mean = WeightedMean()
    return devices * rounds / (time.perf_counter() - started)


def api_round(client: FleetClient, prefix: str, rounds: int, timeout: float) -> dict[str, object]:
    run = client.start_rounds(
        prefix=prefix,
        rounds=rounds,
        epochs=1,
        batch_size=BATCH,
        local_accuracy=False,
        global_accuracy=False,
        device_weights="saved",
        start_version=0,
    )
    return client.wait_rounds(run["id"], timeout=timeout, poll=0.5)


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--large", type=int, default=10_000, help="devices of the one large round (0: skip)")
    parser.add_argument("--cap", type=int, default=1000, help="residency cap of the large round's server")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="round-bench-") as tmp:
        work = Path(tmp)
        reference = {}
        for threads in (1, 2):
            (work / f"ref{threads}").mkdir()
            reference[threads] = in_process_devices_per_s(
                threads, args.devices, args.rounds, work / f"ref{threads}"
            )
        with ServerProcess(work / "data") as server, FleetClient(server.url, timeout=600) as client:
            ids = [f"bench-{i}" for i in range(args.devices)]
            client.create_devices(ids=ids)
            client.assign("fashion-mnist", prefix="bench-", train_per_device=SAMPLES, test_per_device=10)
            done = api_round(client, "bench-", args.rounds, timeout=3600)
            if done["state"] != "succeeded":
                raise SystemExit(f"the rounds did not succeed: {done}")
            seconds = [float(r["seconds"]) for r in done["rounds"]]  # type: ignore[attr-defined]
            steady = seconds[1:] or seconds  # the first round also makes every device's interpreter,
            api = args.devices * len(steady) / sum(steady)  # which the in-process loop makes untimed

        rows = [
            ["in-process, 1 thread", f"{reference[1]:.1f}", f"{reference[1] / reference[2]:.2f}"],
            ["in-process, 2 threads", f"{reference[2]:.1f}", "1.00"],
            ["rounds API (3 round workers)", f"{api:.1f}", f"{api / reference[2]:.2f}"],
        ]
        table(
            f"{args.devices} devices x {SAMPLES} samples, 1 epoch of batch {BATCH}, saved, FedAvg "
            f"({args.rounds} rounds; {machine()})",
            ["path", "devices/s", "vs 2 threads in-process"],
            rows,
        )
        verdict = "met" if api >= 0.8 * reference[2] else "missed"
        print(f"target: rounds API >= 0.8 of 2 threads in-process: {verdict}")
        print(
            f"round seconds through the API: {', '.join(f'{s:.2f}' for s in seconds)} (devices/s from "
            "the rounds after the first, whose participants each make their interpreter)"
        )

        if args.large:
            env = {"FLEET_MAX_RESIDENT": str(args.cap)}
            with (
                ServerProcess(work / "large", env=env) as server,
                FleetClient(server.url, timeout=3600) as client,
            ):
                before = rss_mb(server.pid)
                started = time.perf_counter()
                client.create_devices(count=args.large, prefix="many-")
                created = time.perf_counter() - started
                started = time.perf_counter()
                assigned = client.assign(
                    "fashion-mnist", prefix="many-", train_per_device=SAMPLES, test_per_device=10
                )
                assign_s = time.perf_counter() - started
                done = api_round(client, "many-", 1, timeout=7200)
                fleet = client.fleet()
                peak = rss_mb(server.pid)
            metrics = done["rounds"][0]  # type: ignore[index]
            table(
                f"one round over {args.large:,} devices, residency cap {args.cap:,}",
                ["what", "figure"],
                [
                    ["create devices (s)", f"{created:.1f}"],
                    ["assign 600 + 10 samples each (s)", f"{assign_s:.1f} (server: {assigned['seconds']} s)"],
                    ["round (s)", f"{metrics['seconds']:.1f}"],
                    ["devices/s in the round", f"{args.large / metrics['seconds']:.1f}"],
                    ["finished / failed", f"{metrics['finished']} / {metrics['failed']}"],
                    ["server RSS before / peak (MB)", f"{before:.0f} / {peak:.0f}"],
                    ["resident at the end", str(fleet.get("resident", fleet))],
                ],
            )


if __name__ == "__main__":
    main()
