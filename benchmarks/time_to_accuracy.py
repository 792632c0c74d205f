"""Time-to-accuracy on the virtual clock: FedBuff against synchronous FedAvg rounds with a deadline.

A heterogeneous fleet (the built-in ``phones`` mix: low/mid/high phones at about 0.2x/1x/2x speed,
2/10/30 Mbit/s up, Markov spells online, 10/6/2% dropouts) holds Fashion-MNIST by Dirichlet(0.5) over
labels, and trains the tutorial's MLP from its untrained weights (the pipeline with no epochs), in this
process through the service's layers (``Fleet``, ``Federation``, ``RoundRunner``: real TFLite
interpreters, no HTTP). Two runs from the same version 0:

- FedAvg: ``--rounds`` rounds of ``--participants`` devices (the first online in a seeded order), a
  ``--deadline`` in simulated seconds past which a participant's update is dropped (default: the 60th
  percentile of the fleet's participation times: the low tier (30% of the mix, about 2-3 s: its 2 Mbit/s
  uplink) and the slowest mid phones are stragglers; a percentile near 70 sits on the low tier's cliff
  and the deadline then depends on the seed's draw of the mix);
- FedBuff: ``--participants`` devices in flight, a server step every ``--buffer-size`` updates, as many
  steps as make the same number of updates (``rounds x participants / buffer_size``).

Each version is evaluated on the first ``--eval-limit`` test images (all 10,000 by default). The
table gives the simulated seconds each run took to first reach each ``--targets`` accuracy (and FedAvg's
over FedBuff's), its final and best accuracy, its simulated and wall seconds, and the updates it added
and lost; the PNG plots accuracy against simulated time for both.

    .venv/bin/python -m benchmarks.time_to_accuracy --quick     # 40 phones, 10 rounds of 10: ~10 s
    .venv/bin/python -m benchmarks.time_to_accuracy             # 100 phones, 50 rounds of 20: ~40 s
    .venv/bin/python -m benchmarks.time_to_accuracy --wait-for-all   # and FedAvg with no deadline: ~50 s
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import console, machine, table
from service.data.datasets import BUILTIN
from service.data.spec import PartitionSpec
from service.errors import FleetError
from service.federated.federation import Federation
from service.federated.local import LocalTraining, participation_seconds
from service.federated.spec import Evaluation, RoundSpec
from service.federated.strategies.base import StrategySettings
from service.fleet.fleet import Fleet
from service.profiles.mixes import find_mix

MODEL = "mlp-untrained"
RESULTS = Path(__file__).parent / "results" / "time_to_accuracy"
PRESETS = {"quick": (40, 10, 10, 5), "full": (100, 50, 20, 10)}
"""devices, rounds, participants (FedBuff's concurrency), buffer size."""


@dataclass
class Curve:
    name: str
    times: list[float]
    """Simulated seconds at which each version was made (its round's or step's end)."""
    accuracy: list[float]
    wall: float
    added: int
    lost: int
    staleness: float | None = None
    """FedBuff: the mean staleness of the updates it added."""
    """Updates trained and not added: stragglers (FedAvg), too stale (FedBuff); and dropouts."""

    def reached(self, target: float) -> float | None:
        return next((t for t, a in zip(self.times, self.accuracy, strict=True) if a >= target), None)


def untrained_mlp(seed: int, cache: Path) -> bytes:
    """The tutorial's MLP with its initial weights (the pipeline with no epochs), built once per seed."""
    path = cache / f"mlp-untrained-{seed}.tflite"
    if not path.exists():
        from service.model.build import BuildSettings, build
        from service.model.dataset import load_fashion_mnist

        result = build(load_fashion_mnist(), BuildSettings(epochs=0, train_limit=100, seed=seed))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(result.model)
    return path.read_bytes()


def fleet_of(federation: Federation, args: argparse.Namespace) -> tuple[list[str], float]:
    """The profiled devices with their data, and the deadline (given, or the durations' percentile)."""
    ids = [f"phone-{i:03d}" for i in range(args.devices)]
    federation.fleet.create_many(ids, model=MODEL)
    spec = PartitionSpec("dirichlet", len(ids), args.train, 10, alpha=0.5, seed=args.seed)
    federation.assign(BUILTIN, ids, spec)
    profiles = find_mix("phones").assign(ids, seed=args.seed)
    for device_id, profile in profiles.items():
        federation.fleet.get(device_id).set_profile(profile)
    if args.deadline is not None:
        return ids, args.deadline
    size = federation.version_size(MODEL, 0)
    training = LocalTraining(args.local_epochs, args.batch_size)
    seconds = [participation_seconds(p, training, args.train, 0, size) for p in profiles.values()]
    return ids, round(float(np.percentile(seconds, args.deadline_percentile)), 3)


def run_curve(federation: Federation, name: str, spec: RoundSpec, start: float) -> Curve:
    """Run ``spec``; its versions' accuracy by simulated time, from version 0's (``start``) at 0 s."""
    started = time.perf_counter()
    view = federation.rounds.wait(str(federation.rounds.start(spec)["id"]), 3600)
    if view["state"] != "succeeded":
        raise FleetError(f"{name} ended {view['state']}: {view.get('error')}")
    steps: list[dict[str, Any]] = view["rounds"]  # type: ignore[assignment]
    made = [s for s in steps if s["version"] is not None]
    return Curve(
        name,
        [0.0, *(s["simulated_start"] + s["simulated_seconds"] for s in made)],
        [start, *(float(s["global_accuracy"]) for s in made)],
        round(time.perf_counter() - started, 1),
        sum(s["finished"] for s in steps),
        sum(s["straggled"] + s["dropped"] for s in steps),
        mean_staleness(steps),
    )


def mean_staleness(steps: list[dict[str, Any]]) -> float | None:
    weighted = [(s["mean_staleness"], s["finished"]) for s in steps if s.get("mean_staleness") is not None]
    total = sum(n for _, n in weighted)
    return sum(m * n for m, n in weighted) / total if total else None


def plot(curves: list[Curve], targets: list[float], path: Path, title: str) -> Path:
    from matplotlib.figure import Figure

    from service.simulate.plots import save

    fig = Figure(figsize=(8, 4.5), dpi=80)
    ax = fig.add_subplot()
    right = 1.05 * max(c.times[-1] for c in curves[:2])
    ax.set_xlim(-0.5, right)
    for curve, color in zip(curves, ("tab:blue", "tab:orange", "tab:gray"), strict=False):
        label = curve.name + (f" (on to {curve.times[-1]:,.0f} s)" if curve.times[-1] > right else "")
        ax.step(curve.times, curve.accuracy, where="post", color=color)
        ax.plot(curve.times, curve.accuracy, ".", color=color, label=label)
    for target in targets:
        ax.axhline(target, color="0.6", ls=":", lw=1)
    ax.set_xlabel("simulated seconds")
    ax.set_ylabel("global accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(fig, path)


def shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def report(curves: list[Curve], targets: list[float]) -> None:
    columns = ["run", *[f"to {t:.0%} (sim s)" for t in targets], "final", "best", "sim s", "wall s"]
    rows = []
    for c in curves:
        reached = [c.reached(t) for t in targets]
        rows.append(
            [
                c.name,
                *["-" if r is None else f"{r:,.1f}" for r in reached],
                f"{c.accuracy[-1]:.2%}",
                f"{max(c.accuracy):.2%}",
                f"{c.times[-1]:,.1f}",
                f"{c.wall:.1f}",
            ]
        )
    buffered = curves[1]
    for other in (curves[0], *curves[2:]):
        ratios = [ratio(other.reached(t), buffered.reached(t)) for t in targets]
        rows.append([f"{other.name} / FedBuff", *ratios])
    table("Time to accuracy on the virtual clock", columns, rows)
    table(
        "Updates",
        ["run", "versions", "added", "lost (late, too stale, dropped out)", "mean staleness"],
        [[c.name, len(c.accuracy) - 1, c.added, c.lost, shown(c.staleness)] for c in curves],
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="40 phones, 10 rounds of 10, K = 5")
    p.add_argument("--devices", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None, help="FedAvg's rounds")
    p.add_argument("--participants", type=int, default=None, help="per round; FedBuff's concurrency")
    p.add_argument("--buffer-size", type=int, default=None, help="FedBuff's K")
    p.add_argument("--train", type=int, default=300, help="train images per device")
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--deadline", type=float, default=None, help="simulated seconds (default: percentile)")
    p.add_argument("--deadline-percentile", type=float, default=60.0)
    p.add_argument(
        "--wait-for-all",
        action="store_true",
        help="also run FedAvg with no deadline (each round waits for its slowest participant)",
    )
    p.add_argument("--eval-limit", type=int, default=10_000, help="test images each version is evaluated on")
    p.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.6, 0.65, 0.7, 0.75])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="participants training at once (threads)")
    p.add_argument("--model", type=Path, default=None, help="a .tflite to start from (default: untrained)")
    p.add_argument("--plot", type=Path, default=None, help=f"default: {RESULTS}/<preset>.png")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    preset = "quick" if args.quick else "full"
    defaults = dict(zip(("devices", "rounds", "participants", "buffer_size"), PRESETS[preset], strict=True))
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    steps = max(1, args.rounds * args.participants // args.buffer_size)
    console.print(f"Time to accuracy: FedAvg with a deadline vs FedBuff, preset {preset}; {machine()}")
    with tempfile.TemporaryDirectory(prefix="time-to-accuracy-") as tmp:
        fleet = Fleet(Path(tmp) / "data")
        federation = Federation(fleet, round_workers=args.workers)
        try:
            model = args.model.read_bytes() if args.model else untrained_mlp(args.seed, RESULTS / "models")
            fleet.models.add(MODEL, model)
            ids, deadline = fleet_of(federation, args)
            common: dict[str, Any] = {
                "training": LocalTraining(args.local_epochs, args.batch_size),
                "seed": args.seed,
                "start_version": 0,
                "evaluation": Evaluation(BUILTIN, "test", args.eval_limit),
                "local_accuracy": False,
            }
            console.print(
                f"{len(ids)} phones x {args.train} images; FedAvg {args.rounds} rounds of "
                f"{args.participants}, deadline {deadline} s (stragglers dropped); FedBuff concurrency "
                f"{args.participants}, K = {args.buffer_size}, {steps} steps"
            )
            fedavg = RoundSpec(MODEL, tuple(ids), args.rounds, args.participants, deadline=deadline, **common)
            settings = StrategySettings(buffer_size=args.buffer_size, concurrency=args.participants)
            fedbuff = RoundSpec(MODEL, tuple(ids), steps, aggregation="fedbuff", options=settings, **common)
            start = federation.evaluate_version(MODEL, 0, common["evaluation"])
            curves = [
                run_curve(federation, f"FedAvg, deadline {deadline} s", fedavg, start),
                run_curve(federation, f"FedBuff, K = {args.buffer_size}", fedbuff, start),
            ]
            if args.wait_for_all:
                waiting = replace(fedavg, deadline=None)
                curves.append(run_curve(federation, "FedAvg, no deadline", waiting, start))
        finally:
            federation.close()
            fleet.close()
    report(curves, args.targets)
    title = (
        f"Fashion-MNIST, MLP, {len(ids)} phones (mix 'phones'), Dir(0.5); "
        f"{args.participants} per round / in flight"
    )
    path = plot(curves, args.targets, args.plot or RESULTS / f"{preset}.png", title)
    console.print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
