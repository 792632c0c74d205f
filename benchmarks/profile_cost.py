"""What device profiles cost: train calls, federated rounds and memory, profiled against unprofiled.

(a) Train calls: ``Device.run("train")`` (batch 100, default model) on N devices of a real in-process
``Fleet``, one thread, round-robin; the same devices with a profile each (drawn from ``phones``) and
without, alternating A/B several times in the same run so that drift and noise hit both alike.

(b) Rounds: a real in-process ``Federation`` over 100 devices with 600 assigned Fashion-MNIST samples
each (1 local epoch, batch 32, every device participating), with the devices profiled from
``phones-always-on`` (nobody offline, nobody dropping out: the same work, plus the simulated clock)
and without, alternating; devices/s from the rounds' own durations, after a warm-up round.

(c) Memory: 100,000 devices registered (``Fleet.create_many``, what ``bulk-create`` runs) in a fresh
subprocess each: without profiles, and with a profile each drawn from ``phones`` as they are created
(``profile_mix`` of ``bulk-create``). One device is made first, so that one-time costs (the model,
modules imported on first use) fall outside the measure. Two measures, each as the difference between
the profiled and the unprofiled registration, per device:

- tracemalloc over the registration: the Python objects still allocated once it is done. This is
  the faithful figure for "bytes per device": exactly what stays referenced, without the allocator's
  arenas and page granularity. Of it, what was allocated in ``service/profiles`` is shown apart (the
  ``DeviceProfile`` objects and their speeds, which the records keep; class profiles are shared).
- RSS growth over the registration, in processes that do not trace (tracemalloc's own records would
  swell it): what the operating system sees. At 100,000 devices 1 MB of noise is 10 bytes a device.

Targets: profiled train calls and rounds within 5% of unprofiled; profiles at most 100 bytes per
device beyond an unprofiled device.

    .venv/bin/python -m benchmarks.profile_cost [--devices 32] [--seconds 0.5] [--pairs 20]
        [--round-devices 100] [--rounds 2] [--round-pairs 3] [--memory-devices 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from benchmarks._common import batch, machine, table
from service.data.spec import PartitionSpec
from service.federated.federation import Federation
from service.federated.local import LocalTraining
from service.federated.spec import RoundSpec
from service.fleet import Fleet
from service.fleet.device import Device
from service.fleet.memory import configure_allocator
from service.profiles import DeviceProfile
from service.profiles.mixes import find_mix

SAMPLES = 600
MAX_BYTES_PER_DEVICE = 100
PROFILES_DIR = str(Path("service", "profiles"))
ROUND_TIMEOUT = 1800.0


def set_profiles(devices: list[Device], profiles: dict[str, DeviceProfile] | None) -> None:
    """Profile the devices (None: take the profiles away); profiled ones must have been timed."""
    if any(d.profile is not None and d.clock == 0 for d in devices):
        raise AssertionError("a profiled phase left a device's clock at 0: it measured no profiled call")
    for device in devices:
        device.set_profile(None if profiles is None else profiles[device.id], durable=False)


def alternate(
    pairs: int, measure: Callable[[], float], profile_on: Callable[[bool], None]
) -> tuple[list[float], list[float]]:
    """``measure`` unprofiled then profiled (then profiled then unprofiled: ABBA), ``pairs`` times."""
    plain: list[float] = []
    profiled: list[float] = []
    for i in range(pairs):
        for on in (False, True) if i % 2 == 0 else (True, False):
            profile_on(on)
            (profiled if on else plain).append(measure())
    return plain, profiled


# -- (a) train calls ---------------------------------------------------------------------------


def train_calls_per_s(devices: list[Device], seconds: float) -> float:
    x, y = batch()
    inputs = {"x": x, "y": y}
    calls, stop = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < stop:
        devices[calls % len(devices)].run("train", inputs)
        calls += 1
    return calls / (time.perf_counter() - start)


def train_throughput(args: argparse.Namespace, workdir: Path) -> tuple[list[float], list[float]]:
    fleet = Fleet(workdir / "train")
    devices = fleet.create_many(count=args.devices, prefix="bench-")
    profiles = find_mix("phones").assign([d.id for d in devices], seed=1)
    train_calls_per_s(devices, 1.0)  # warm up: every interpreter made
    result = alternate(
        args.pairs,
        lambda: train_calls_per_s(devices, args.seconds),
        lambda on: set_profiles(devices, profiles if on else None),
    )
    fleet.close()
    return result


# -- (b) rounds --------------------------------------------------------------------------------


def run_rounds(federation: Federation, ids: list[str], rounds: int) -> list[float]:
    """Seconds of each round of one run."""
    spec = RoundSpec(
        model="fashion_mnist",
        devices=tuple(ids),
        rounds=rounds,
        training=LocalTraining(epochs=1, batch_size=32),
        start_version=0,
        local_accuracy=False,
        device_weights="saved",
    )
    run_id = str(federation.rounds.start(spec)["id"])
    deadline = time.monotonic() + ROUND_TIMEOUT
    while (run := federation.rounds.get(run_id))["state"] in ("queued", "running"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} did not end within {ROUND_TIMEOUT:.0f} s")
        time.sleep(0.05)
    if run["state"] != "succeeded":
        raise RuntimeError(f"run {run_id} ended {run['state']}: {run.get('error')}")
    rounds_done = cast(list[dict[str, Any]], run["rounds"])
    short = [r for r in rounds_done if r["finished"] != len(ids)]
    if short:  # profiled and unprofiled rounds must do the same work
        raise RuntimeError(f"round {short[0]['round']}: {short[0]['finished']} of {len(ids)} finished")
    return [float(r["seconds"]) for r in rounds_done]


def round_throughput(args: argparse.Namespace, workdir: Path) -> tuple[list[float], list[float]]:
    fleet = Fleet(workdir / "rounds")
    federation = Federation(fleet)
    n = args.round_devices
    ids = [f"bench-{i}" for i in range(n)]
    devices = fleet.create_many(ids)
    split = PartitionSpec(kind="iid", devices=n, train_per_device=SAMPLES, test_per_device=10)
    federation.assign("fashion-mnist", ids, split)
    profiles = find_mix("phones-always-on").assign(ids, seed=1)
    for _ in range(2):  # warm up: every interpreter made, every checkpoint written once
        run_rounds(federation, ids, 1)

    def devices_per_s() -> float:
        seconds = run_rounds(federation, ids, args.rounds)
        return n * len(seconds) / sum(seconds)

    result = alternate(
        args.round_pairs, devices_per_s, lambda on: set_profiles(devices, profiles if on else None)
    )
    federation.close()
    fleet.close()
    return result


# -- (c) memory --------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(count: int, profiled: bool, traced: bool) -> dict[str, float]:
    """Run in a fresh process: register ``count`` devices (profiled from ``phones`` as they are made,
    if asked) and report the bytes per device: RSS growth, or (``traced``) what tracemalloc sees kept."""
    configure_allocator()
    mix = find_mix("phones")
    with tempfile.TemporaryDirectory() as tmp:
        fleet = Fleet(Path(tmp) / "data")
        # One-time costs (the model loaded, modules imported on first use) are no device's: paid first.
        fleet.create_many(["warm"], profiles=lambda ids: mix.assign(ids, seed=1))
        profiles = (lambda ids: mix.assign(ids, seed=1)) if profiled else None
        if traced:
            tracemalloc.start(1)
            start = tracemalloc.take_snapshot()
        before = rss_bytes()
        fleet.create_many(count=count, prefix="m-", profiles=profiles)
        after = rss_bytes()
        kept = by_profiles = 0
        if traced:
            kept = tracemalloc.get_traced_memory()[0]
            diff = tracemalloc.take_snapshot().compare_to(start, "filename")
            tracemalloc.stop()
            by_profiles = sum(d.size_diff for d in diff if PROFILES_DIR in str(d.traceback[0].filename))
        fleet.close()
    return {"rss": (after - before) / count, "kept": kept / count, "by_profiles": by_profiles / count}


def memory(count: int) -> dict[str, dict[str, float]]:
    """Each of unprofiled and profiled, traced and not, in a fresh process."""
    results = {}
    for kind, flags in (
        ("bare", []),
        ("profiled", ["--profiled"]),
        ("bare_traced", ["--traced"]),
        ("profiled_traced", ["--profiled", "--traced"]),
    ):
        command = [sys.executable, "-m", "benchmarks.profile_cost", "--memory-child", str(count), *flags]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[kind] = json.loads(out.strip().splitlines()[-1])
    return results


# -- the tables --------------------------------------------------------------------------------


AB_COLUMNS = ["median", "range", "vs unprofiled", "pairs' ratios"]


def ab_rows(plain: list[float], profiled: list[float]) -> list[tuple[str, ...]]:
    """Medians, and the median of each pair's ratio: the pair's phases ran next to each other, so a
    pair's ratio is what the machine's drift disturbs least."""
    ratios = [b / a for a, b in zip(plain, profiled, strict=True)]
    spread = lambda xs: f"{min(xs):.0f}-{max(xs):.0f}"  # noqa: E731
    return [
        ("unprofiled", f"{statistics.median(plain):.1f}", spread(plain), "1.000", ""),
        (
            "profiled",
            f"{statistics.median(profiled):.1f}",
            spread(profiled),
            f"**{statistics.median(ratios):.3f}**",
            f"{min(ratios):.3f}-{max(ratios):.3f}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=0.5, help="each A or B phase of (a)")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--round-devices", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2, help="rounds in each A or B phase of (b)")
    parser.add_argument("--round-pairs", type=int, default=3)
    parser.add_argument("--memory-devices", type=int, default=100_000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "rounds", "memory"])
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profiled", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        print(json.dumps(memory_child(args.memory_child, args.profiled, args.traced)))
        return

    configure_allocator()
    with tempfile.TemporaryDirectory() as tmp:
        if "train" not in args.skip:
            plain, profiled = train_throughput(args, Path(tmp))
            table(
                f"(a) train calls, batch 100, {args.devices} devices, 1 thread, {args.pairs} A/B pairs of "
                f"{args.seconds:g} s ({machine()})",
                ["calls/s", *AB_COLUMNS],
                ab_rows(plain, profiled),
            )
        if "rounds" not in args.skip:
            plain, profiled = round_throughput(args, Path(tmp))
            table(
                f"(b) rounds, {args.round_devices} devices x {SAMPLES} samples, {args.round_pairs} A/B pairs "
                f"of {args.rounds} rounds, phones-always-on",
                ["devices/s", *AB_COLUMNS],
                ab_rows(plain, profiled),
            )
    if "memory" not in args.skip:
        count = args.memory_devices
        result = memory(count)
        beyond = result["profiled_traced"]["kept"] - result["bare_traced"]["kept"]
        table(
            f"(c) memory, {count:,} devices registered, each run in a fresh process",
            ["bytes per device", "unprofiled", "profiled", "beyond unprofiled"],
            [
                (
                    "tracemalloc: kept",
                    f"{result['bare_traced']['kept']:.0f}",
                    f"{result['profiled_traced']['kept']:.0f}",
                    f"**{beyond:.0f}**",
                ),
                (
                    "  of which allocated in service/profiles",
                    f"{result['bare_traced']['by_profiles']:.0f}",
                    f"{result['profiled_traced']['by_profiles']:.0f}",
                    "",
                ),
                (
                    "RSS growth",
                    f"{result['bare']['rss']:.0f}",
                    f"{result['profiled']['rss']:.0f}",
                    f"{result['profiled']['rss'] - result['bare']['rss']:.0f}",
                ),
            ],
        )
        verdict = "met" if beyond <= MAX_BYTES_PER_DEVICE else "missed"
        print(f"target: at most {MAX_BYTES_PER_DEVICE} bytes per device beyond unprofiled: {verdict}")


if __name__ == "__main__":
    main()
