"""Federated round throughput: devices per second through the rounds API against an in-process loop.

Each participant's work: take the global weights, train 1 local epoch (batch 32) over its 600 assigned
Fashion-MNIST samples, save its checkpoint, send its weights, which the server averages (FedAvg).
Through the API: ``POST /v1/rounds`` on a real ``fleet serve`` (every device participates; no
evaluation, ``device_weights="saved"``), figures from the rounds' own durations. In-process: the same
work on bare interpreters (restore, train, save to the device's file, read the weights back, add them
to the running mean), with 2 threads, its interpreters made before it is timed.

The two are measured in pairs, interleaved (ABBA: the in-process loop first in even pairs, the API
first in odd ones), each pair over fresh devices (``p<n>-<i>``, deleted after it), so that every pair
has an API first round in which each participant also makes its interpreter. A pair's ratios: the
API's rounds after the first against the in-process loop (the steady ratio), and the API's first round
against the same loop (the first-round ratio); the medians over the pairs are the figures. With
``--profiles on`` the devices are created with profiles drawn from ``phones-always-on`` (simulated
time only: the same work). One in-process single-thread figure is measured first, for reference.

Then one round over 10,000 devices with a residency cap of 1,000: its duration and the server's
peak RSS.

    .venv/bin/python -m benchmarks.round_throughput [--devices 100] [--rounds 5] [--pairs 8]
        [--profiles off|on] [--large 10000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
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
STEADY_TARGET = 0.9
FIRST_TARGET = 0.6


def in_process_loop(devices: int, workdir: Path) -> Callable[[int, int], float]:
    """The participants' work on bare interpreters, one per device as the fleet keeps, made now;
    returns ``measure(threads, rounds)``: devices/s over ``rounds`` rounds on ``threads`` threads."""
    model = CompiledModel.load("fashion_mnist", embedded_model_path().read_bytes())
    data = load_fashion_mnist()
    pools = ClassPools.build(data.train_labels, data.test_labels)
    spec = PartitionSpec(kind="iid", devices=devices, train_per_device=SAMPLES, test_per_device=10)
    splits = [device_split(f"bench-{i}", spec, pools).train_indices for i in range(devices)]
    labels = one_hot(data.train_labels)
    interpreters = [model.interpreter() for _ in range(devices)]
    global_path = workdir / "global.ckpt"
    run_checkpoint(model.interpreter(), model, "save", global_path, global_path, workdir)

    def participate(i: int, rng: np.random.Generator, mean: WeightedMean, lock: threading.Lock) -> None:
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

    def measure(threads: int, rounds: int) -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            mean, lock = WeightedMean(), threading.Lock()

            def run_part(part: list[int], mean: WeightedMean = mean, lock: threading.Lock = lock) -> None:
                for i in part:
                    participate(i, np.random.default_rng(i), mean, lock)

            pending = list(range(devices))
            workers = [threading.Thread(target=run_part, args=(pending[t::threads],)) for t in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            mean.result()
        return devices * rounds / (time.perf_counter() - started)

    return measure


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
    done = client.wait_rounds(run["id"], timeout=timeout, poll=0.5)
    if done["state"] != "succeeded":
        raise SystemExit(f"the rounds did not succeed: {done}")
    return done


def api_rounds(client: FleetClient, prefix: str, devices: int, rounds: int, profiles: bool) -> list[float]:
    """Make ``devices`` fresh devices named ``prefix<i>``, assign them data (and profiles), run
    ``rounds`` rounds over them, delete them; the rounds' seconds."""
    ids = [f"{prefix}{i}" for i in range(devices)]
    mix = {"profile_mix": "phones-always-on", "profile_seed": 1} if profiles else {}
    client.create_devices(ids=ids, **mix)  # type: ignore[arg-type]
    client.assign("fashion-mnist", prefix=prefix, train_per_device=SAMPLES, test_per_device=10)
    done = api_round(client, prefix, rounds, timeout=3600)
    client.delete_devices(ids)
    rows = done["rounds"]
    assert isinstance(rows, list)
    short = [r for r in rows if r["finished"] != devices]
    if short:
        raise SystemExit(f"round {short[0]['round']}: {short[0]['finished']} of {devices} finished")
    return [float(r["seconds"]) for r in rows]


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def spread(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def pairs(args: argparse.Namespace, work: Path) -> None:
    (work / "ref").mkdir()
    measure = in_process_loop(args.devices, work / "ref")
    single = measure(1, args.rounds)
    profiles = args.profiles == "on"
    loop, steady, first = list[float](), list[float](), list[float]()
    with ServerProcess(work / "data") as server, FleetClient(server.url, timeout=600) as client:
        for pair in range(args.pairs):
            api_first = pair % 2 == 1
            if api_first:
                seconds = api_rounds(client, f"p{pair}-", args.devices, args.rounds, profiles)
            reference = measure(2, args.rounds)
            if not api_first:
                seconds = api_rounds(client, f"p{pair}-", args.devices, args.rounds, profiles)
            loop.append(reference)
            steady.append(args.devices * len(seconds[1:]) / sum(seconds[1:]) / reference)
            first.append(args.devices / seconds[0] / reference)
            print(
                f"pair {pair + 1}: in-process {reference:.1f} devices/s; API round seconds "
                f"{', '.join(f'{s:.2f}' for s in seconds)}; ratios {steady[-1]:.2f} steady, "
                f"{first[-1]:.2f} first round",
                flush=True,
            )
    steady_api = [r * ref for r, ref in zip(steady, loop, strict=True)]
    first_api = [r * ref for r, ref in zip(first, loop, strict=True)]
    table(
        f"{args.devices} devices x {SAMPLES} samples, 1 epoch of batch {BATCH}, saved, FedAvg, profiles "
        f"{args.profiles} ({args.pairs} pairs of {args.rounds} rounds; {machine()})",
        ["path", "devices/s, median (range)", "vs 2 threads in-process, median (range)"],
        [
            ["in-process, 1 thread (once)", f"{single:.1f}", "-"],
            ["in-process, 2 threads", spread(loop, 1), "1.00"],
            ["rounds API, rounds after the first", spread(steady_api, 1), spread(steady)],
            ["rounds API, first round", spread(first_api, 1), spread(first)],
        ],
    )
    for name, ratios, target in (("steady", steady, STEADY_TARGET), ("first-round", first, FIRST_TARGET)):
        verdict = "met" if statistics.median(ratios) >= target else "missed"
        print(f"target: {name} ratio >= {target} (median of {len(ratios)} pairs): {verdict}")


def large_round(args: argparse.Namespace, work: Path) -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of each API run and in-process loop (>= 2)"
    )
    parser.add_argument("--pairs", type=int, default=8, help="interleaved pairs (the figures: their medians)")
    parser.add_argument(
        "--profiles", choices=("off", "on"), default="off", help="profiled devices (phones-always-on)"
    )
    parser.add_argument("--large", type=int, default=10_000, help="devices of the one large round (0: skip)")
    parser.add_argument("--cap", type=int, default=1000, help="residency cap of the large round's server")
    args = parser.parse_args()
    if args.rounds < 2 or args.pairs < 1:
        parser.error("--rounds must be at least 2 (a first round and the rest) and --pairs at least 1")
    with tempfile.TemporaryDirectory(prefix="round-bench-") as tmp:
        work = Path(tmp)
        if args.pairs:
            pairs(args, work)
        if args.large:
            large_round(args, work)


if __name__ == "__main__":
    main()
