"""A round drawn from a million devices against the same round drawn from a thousand.

Issue 24's target: a run of rounds of ``--participants`` (100) picked from every registered device
(``POST /v1/rounds`` with ``all``, ``--population`` of them: a million) costs within 10% of the same
run picked from 1,000 devices (``prefix``): nothing in a round walks the population.

The population is made in-process, as ``fleet_scale --devices`` makes it (``Fleet.create_many``,
10,000 a call), and every device is given 600 train / 10 test samples of Fashion-MNIST
(``assign_many``); ``--keep DIR`` makes it there once and reuses it in later runs (making a million
takes minutes and ~16 GB of disk). It holds ``--pairs`` + 1 groups of 1,000 devices named ``s<k>-``
(the first warms the server up); the others are named ``big-``.

A real ``fleet serve`` is started on it. Each pair runs ``--rounds`` rounds (1 epoch of batch 32 over
each participant's 600 samples, FedAvg, saved, no evaluation) over group ``s<k>-`` and over all devices,
alternating which goes first (ABBA), each with its own seed, so that both draw devices that have not
trained yet. A run's cost is the wall time from the POST to its end as polling sees it (every 0.02 s),
start and records included; the rounds' own seconds are shown beside it. The figure is the median over
the pairs of (run over the million) / (run over the thousand).

    .venv/bin/python -m benchmarks.round_scale [--population 1000000] [--participants 100]
        [--rounds 5] [--pairs 4] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import console, machine, table
from service.client import FleetClient
from service.data.assignment import assign_many
from service.data.pools import ClassPools
from service.data.spec import PartitionSpec
from service.federated.federation import Federation
from service.fleet.fleet import Fleet
from service.server_process import ServerProcess

GROUP = 1000
"""Devices of each small population (``s<k>-``)."""
CHUNK = 10_000
SAMPLES = 600
TARGET = 1.10
MARKER = "round_scale.json"


def make_population(data_dir: Path, population: int, groups: int) -> dict[str, float]:
    """``groups`` groups of ``GROUP`` devices and big ones up to ``population``, each assigned its data;
    the seconds each step took."""
    fleet = Fleet(data_dir, max_devices=None)
    started = time.perf_counter()
    for k in range(groups):
        fleet.create_many(count=GROUP, prefix=f"s{k}-")
    for made in range(groups * GROUP, population, CHUNK):
        fleet.create_many(count=min(CHUNK, population - made), prefix="big-")
    created = time.perf_counter() - started
    federation = Federation(fleet)
    dataset = federation.datasets.get("fashion-mnist")
    pools = ClassPools.build(dataset.labels("train"), dataset.labels("test"), dataset.num_classes)
    spec = PartitionSpec(kind="iid", train_per_device=SAMPLES, test_per_device=10)
    started = time.perf_counter()
    places = ((i, fleet.devices_dir / i) for i in fleet.ids())
    assign_many(places, spec, pools, "fashion-mnist", dataset.content_id, data_dir)
    assigned = time.perf_counter() - started
    federation.close()
    fleet.close()
    return {"create": created, "assign": assigned}


def one_run(
    client: FleetClient, selection: dict[str, Any], rounds: int, participants: int, seed: int
) -> dict[str, Any]:
    """A run over ``selection``: its wall seconds (POST to end), the POST's, and its rounds' seconds."""
    started = time.perf_counter()
    run = client.start_rounds(
        **selection,
        rounds=rounds,
        participants=participants,
        epochs=1,
        batch_size=32,
        local_accuracy=False,
        global_accuracy=False,
        device_weights="saved",
        start_version=0,
        seed=seed,
    )
    posted = time.perf_counter() - started
    done = client.wait_rounds(run["id"], timeout=3600, poll=0.02)
    wall = time.perf_counter() - started
    if done["state"] != "succeeded":
        raise SystemExit(f"the run over {selection} did not succeed: {done.get('error')}")
    short = [r for r in done["rounds"] if r["finished"] != participants]
    if short:
        raise SystemExit(f"round {short[0]['round']}: {short[0]['finished']} of {participants} finished")
    return {"wall": wall, "post": posted, "rounds": [float(r["seconds"]) for r in done["rounds"]]}


def spread(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def measure(args: argparse.Namespace, data_dir: Path) -> None:
    small: list[dict[str, Any]] = []
    large: list[dict[str, Any]] = []
    ratios: list[float] = []
    started = time.perf_counter()
    with (
        ServerProcess(data_dir, timeout=900) as server,
        FleetClient(server.url, timeout=3600) as client,
    ):
        start_up = time.perf_counter() - started
        one_run(client, {"prefix": "s0-"}, args.rounds, args.participants, seed=1000)  # warm-up
        for pair in range(args.pairs):
            k = pair + 1
            order: list[tuple[str, dict[str, Any]]] = [
                ("small", {"prefix": f"s{k}-"}),
                ("large", {"all": True}),
            ]
            measured: dict[str, dict[str, Any]] = {}
            for name, selection in order if pair % 2 == 0 else order[::-1]:
                measured[name] = one_run(client, selection, args.rounds, args.participants, seed=k)
            small.append(measured["small"])
            large.append(measured["large"])
            ratios.append(measured["large"]["wall"] / measured["small"]["wall"])
            print(
                f"pair {k}: from {GROUP:,} {measured['small']['wall']:.2f} s, from {args.population:,} "
                f"{measured['large']['wall']:.2f} s: ratio {ratios[-1]:.3f}",
                flush=True,
            )
    rows = []
    for label, runs in ((f"{GROUP:,}", small), (f"{args.population:,}", large)):
        rows.append(
            [
                f"{args.participants} of {label}",
                spread([r["wall"] for r in runs]),
                spread([r["post"] * 1000 for r in runs], 1),
                spread([sum(r["rounds"]) / len(r["rounds"]) for r in runs]),
            ]
        )
    table(
        f"{args.rounds} rounds of {args.participants} participants x {SAMPLES} samples, 1 epoch of batch 32, "
        f"FedAvg, saved ({args.pairs} pairs; {machine()})",
        ["drawn from", "run s, POST to end: median (range)", "POST ms", "round s (its own)"],
        rows,
    )
    ratio = statistics.median(ratios)
    console.print(f"start-up with {args.population:,} devices: {start_up:.1f} s")
    console.print(
        f"million / thousand, median of {len(ratios)} pairs: {ratio:.3f} (range {min(ratios):.3f}-"
        f"{max(ratios):.3f}); target <= {TARGET}: {'met' if ratio <= TARGET else 'missed'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--population", type=int, default=1_000_000)
    parser.add_argument("--participants", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--keep", help="make the population in this directory once and reuse it")
    args = parser.parse_args()
    groups = args.pairs + 1
    if args.population < groups * GROUP or not 1 <= args.participants <= GROUP:
        parser.error(f"--population must hold {groups} groups of {GROUP} and --participants at most {GROUP}")
    with tempfile.TemporaryDirectory(prefix="round-scale-") as tmp:
        parent = Path(args.keep) if args.keep else Path(tmp)
        data_dir = parent / "data"
        marker = parent / MARKER
        wanted = {"population": args.population, "groups": groups}
        if marker.exists() and json.loads(marker.read_text()).get("population") == args.population:
            made = json.loads(marker.read_text())
            if made.get("groups", 0) < groups:
                parser.error(
                    f"{parent} holds {made['groups']} groups: use --pairs {made['groups'] - 1} or less"
                )
            console.print(f"reusing the population in {parent}")
        else:
            if data_dir.exists():
                parser.error(f"{data_dir} exists but holds no population of {args.population:,}: remove it")
            seconds = make_population(data_dir, args.population, groups)
            marker.write_text(json.dumps({**wanted, **seconds}))
            console.print(
                f"made {args.population:,} devices in {seconds['create']:.1f} s, assigned their data in "
                f"{seconds['assign']:.1f} s"
            )
        measure(args, data_dir)


if __name__ == "__main__":
    main()
