"""What privacy costs (issue 26): accuracy against epsilon, with and without secure aggregation, and the
bytes, simulated time and wall time it adds to a round, all in one run against plain FedAvg.

Fashion-MNIST split disjointly among ``--devices`` phones by the service's ``label_dirichlet`` scheme
(Dirichlet(0.5) over labels; 60 images a device on average at 1000), each with a profile of the
``--mix`` (default ``phones-online``: the built-in ``phones`` classes' speeds, networks and dropout rates,
always online; the built-in ``phones`` has half the fleet offline, and the ``uniform`` sample, which
ignores availability, would then leave fewer than the threshold to share keys). Each round a fixed-size
uniform sample of ``--participants`` (accounted as one: sampling without replacement) trains 1 local
epoch at batch 20; the model is the embedded default's MLP (784-128-10, plain SGD, lr 0.01) from its
untrained weights (``--start untrained``; the embedded weights were trained on all 60,000 images
without privacy, so fine-tuning them would make any epsilon meaningless). Every version is evaluated on
the 10,000 test images. Everything runs in this process through ``Fleet``, ``Federation`` and
``RoundRunner`` (real TFLite interpreters, no HTTP).

Configurations (one JSON file each under ``--results``; a saved one is not run again, delete it to):
plain FedAvg; central DP-FedAvg at ``--clip`` with ``z = 0`` (clipping only) and every ``--noise``;
the same with secure aggregation, each device adding its share of the noise (``mode="distributed"``,
SecAgg+ with ``--threshold``, default 2/3 of the cohort, over the full graph unless ``--neighbors``);
and secure aggregation alone. Epsilon is at ``--delta`` (default 1e-5, below 1/N) by the ``--accountant``.

    .venv/bin/python -m benchmarks.privacy --measure-clip    # one round's update norms (choose --clip)
    .venv/bin/python -m benchmarks.privacy --quick           # 50 phones, 10 a round, 3 rounds
    .venv/bin/python -m benchmarks.privacy                   # 1000 phones, 100 a round, 30 rounds
    .venv/bin/python -m benchmarks.privacy --table-only      # the table and plots from saved results
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import console, machine
from benchmarks.privacy_results import (
    Result,
    load_results,
    plot_epsilon,
    plot_rounds,
    print_tables,
    result_path,
    save_result,
)
from benchmarks.time_to_accuracy import RESULTS as TTA_RESULTS
from benchmarks.time_to_accuracy import untrained_mlp
from service.data.datasets import BUILTIN
from service.data.disjoint_assign import DisjointSpec
from service.errors import FleetError
from service.federated.federation import Federation
from service.federated.local import LocalTraining
from service.federated.participants import Participation, Update
from service.federated.spec import Evaluation, RoundSpec
from service.fleet.fleet import Fleet
from service.fleet.models import DEFAULT_MODEL
from service.privacy.secagg import SecAggSettings
from service.privacy.settings import DPSettings
from service.profiles.mixes import BUILTIN as BUILTIN_MIXES
from service.profiles.mixes import PHONE_CLASSES, ProfileMix, find_mix

UNTRAINED = "mlp-untrained"
RESULTS = Path(__file__).parent / "results" / "privacy"
DOCS = Path(__file__).parent.parent / "docs"
ONLINE_MIX = "phones-online"


@dataclass(frozen=True)
class Preset:
    devices: int
    participants: int
    rounds: int
    noise: tuple[float, ...]


PRESETS = {"full": Preset(1000, 100, 30, (0.5, 2.0, 4.0, 8.0, 16.0)), "quick": Preset(50, 10, 3, (0.3, 1.0))}
"""Full: a first run at z in 0.1-1 left accuracy flat (63.4-63.5% against 63.4% clipping only); 4 and 16
gave 61.4% and 34.3%, so the levels span near-plain to clearly worse (epsilon about 370 to 0.55)."""
CLIP = 0.15
"""The default ``--clip``: near the median update norm ``--measure-clip`` gave at the full preset (0.143,
round 1)."""


@dataclass(frozen=True)
class Config:
    key: str
    kind: str
    """``plain``, ``central`` (DP-FedAvg), ``distributed`` (DP under secure aggregation), ``secagg``."""
    noise: float | None = None


def configs(noise: list[float]) -> list[Config]:
    levels = [0.0, *sorted(noise)]
    return [
        Config("plain", "plain"),
        *(Config(f"central-z{z:g}", "central", z) for z in levels),
        Config("secagg", "secagg"),
        *(Config(f"distributed-z{z:g}", "distributed", z) for z in levels),
    ]


def mix(name: str) -> ProfileMix:
    if name != ONLINE_MIX:
        return find_mix(name)
    classes = [{**phone, "availability": {"kind": "always"}} for phone in PHONE_CLASSES]
    return ProfileMix.parse({"name": ONLINE_MIX, "classes": classes}, f"mix '{ONLINE_MIX}'", "benchmark")


def fleet_of(federation: Federation, model: str, args: argparse.Namespace) -> list[str]:
    """The profiled devices with their share of the train images."""
    ids = [f"phone-{i:04d}" for i in range(args.devices)]
    federation.fleet.create_many(ids, model=model)
    federation.assign(BUILTIN, ids, DisjointSpec("label_dirichlet", beta=args.beta, seed=args.seed))
    for device_id, profile in mix(args.mix).assign(ids, seed=args.seed).items():
        federation.fleet.get(device_id).set_profile(profile)
    return ids


def spec_of(config: Config, model: str, ids: list[str], args: argparse.Namespace, rounds: int) -> RoundSpec:
    dp = secure = None
    if config.kind in ("central", "distributed"):
        assert config.noise is not None
        dp = DPSettings(
            mode="central" if config.kind == "central" else "distributed",
            noise_multiplier=config.noise,
            clip=args.clip,
            delta=args.delta,
            accountant=args.accountant,
        )
    if config.kind in ("distributed", "secagg"):
        secure = SecAggSettings(threshold=args.threshold, neighbors=args.neighbors)
    return RoundSpec(
        model=model,
        devices=tuple(ids),
        rounds=rounds,
        participants=args.participants,
        training=LocalTraining(epochs=args.local_epochs, batch_size=args.batch_size),
        seed=args.seed,
        start_version=0,
        evaluation=Evaluation(BUILTIN, "test", args.eval_limit),
        local_accuracy=False,
        selection="uniform",
        privacy=dp,
        secure_aggregation=secure,
    )


def run_spec(federation: Federation, name: str, spec: RoundSpec) -> dict[str, Any]:
    """Run ``spec`` to its end (a deadline of 20 minutes a round); its view."""
    run_id = str(federation.rounds.start(spec)["id"])
    deadline = time.monotonic() + 1200.0 * spec.rounds
    while time.monotonic() < deadline:
        view = federation.rounds.wait(run_id, 300)
        if view["state"] not in ("queued", "running"):
            break
        so_far: list[dict[str, Any]] = view["rounds"]  # type: ignore[assignment]
        last = f", accuracy {so_far[-1]['global_accuracy']:.4f}" if so_far else ""
        console.print(f"  {name}: round {len(so_far)}/{spec.rounds}{last}")
    else:
        federation.rounds.cancel(run_id)
        raise FleetError(f"{name} did not end in time")
    if view["state"] != "succeeded":
        raise FleetError(f"{name} ended {view['state']}: {view.get('error')}")
    return view


def run_config(
    federation: Federation, config: Config, model: str, ids: list[str], args: argparse.Namespace
) -> Result:
    started = time.perf_counter()
    view = run_spec(federation, config.key, spec_of(config, model, ids, args, args.rounds))
    rounds: list[dict[str, Any]] = view["rounds"]
    privacy = [r["privacy"] or {} for r in rounds]
    secure = [p.get("secure") or {} for p in privacy]
    return Result(
        config.key,
        config.kind,
        config.noise,
        accuracy=[float(r["global_accuracy"]) for r in rounds],
        epsilon=[p.get("epsilon") for p in privacy],
        simulated_seconds=[float(r["simulated_seconds"]) for r in rounds],
        wall_seconds=[float(r["seconds"]) for r in rounds],
        model_bytes=federation.version_size(model, 0),
        protocol_bytes=[int(s["upload_bytes"] + s["download_bytes"]) for s in secure if s],
        survivors=[int(s["survivors"]) for s in secure if s],
        recovered=[int(s["recovered"]) for s in secure if s],
        dropped=[int(r["dropped"]) for r in rounds],
        clip=args.clip if config.kind in ("central", "distributed") else None,
        delta=args.delta if config.kind in ("central", "distributed") else None,
        threshold=args.threshold if config.kind in ("distributed", "secagg") else None,
        seconds=round(time.perf_counter() - started, 1),
        setup=setup_of(args),
    )


def setup_of(args: argparse.Namespace) -> dict[str, Any]:
    names = ("devices", "participants", "rounds", "local_epochs", "batch_size", "beta", "mix", "start")
    shown = {name: getattr(args, name) for name in names}
    shown.update(neighbors=args.neighbors, accountant=args.accountant, seed=args.seed, machine=machine())
    return shown


class NormRecorder:
    """The federation's participants, noting the L2 norm of each update that reaches the server."""

    def __init__(self, federation: Federation) -> None:
        self.federation = federation
        self.norms: list[float] = []

    def participate(self, device_id: str, asked: Participation, stop: Any) -> Update:
        update = self.federation.participate(device_id, asked, stop)
        if update.payload is not None:
            self.norms.append(float(np.linalg.norm(update.payload[:-1])))
        return update

    def __getattr__(self, name: str) -> Any:
        return getattr(self.federation, name)


def measure_clip(federation: Federation, model: str, ids: list[str], args: argparse.Namespace) -> list[float]:
    """One round of central DP with no noise and a clip no update reaches: its updates' norms."""
    args.clip = 1e6
    spec = spec_of(Config("probe", "central", 0.0), model, ids, args, 1)
    recorder = NormRecorder(federation)
    runner = federation.rounds
    real, runner.participants = runner.participants, recorder
    try:
        run_spec(federation, "one round, clip 1e6", spec)
    finally:
        runner.participants = real
    norms = sorted(recorder.norms)
    quantiles = {q: float(np.percentile(norms, q)) for q in (10, 25, 50, 75, 90)}
    shown = ", ".join(f"p{q} {v:.4f}" for q, v in quantiles.items())
    console.print(f"update L2 norms over {len(norms)} updates of round 1: {shown}")
    return norms


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="50 phones, 10 a round, 3 rounds, z in 0.3, 1")
    p.add_argument("--devices", type=int, default=None)
    p.add_argument("--participants", type=int, default=None, help="the fixed-size cohort a round")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--noise", type=float, nargs="+", default=None, help="noise multipliers (and 0)")
    p.add_argument("--clip", type=float, default=CLIP, help="the fixed L2 clip of each update")
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--accountant", choices=("rdp", "pld"), default="rdp")
    p.add_argument("--threshold", type=int, default=None, help="SecAgg's t (default: 2/3 of the cohort)")
    p.add_argument("--neighbors", type=int, default=None, help="SecAgg+'s k (default: the full graph)")
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--beta", type=float, default=0.5, help="the label Dirichlet's concentration")
    p.add_argument("--mix", choices=(ONLINE_MIX, *BUILTIN_MIXES), default=ONLINE_MIX)
    p.add_argument("--start", choices=("untrained", "embedded"), default="untrained")
    p.add_argument("--model", type=Path, default=None, help="a .tflite to start from instead")
    p.add_argument("--eval-limit", type=int, default=None, help="test images (default: all 10,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="participants training at once (threads)")
    p.add_argument("--results", type=Path, default=None, help=f"default: {RESULTS}/<preset>")
    p.add_argument("--plots", type=Path, default=None, help="directory of the PNGs (full: docs/)")
    p.add_argument("--only", nargs="+", default=None, help="run only these configurations (plain, ...)")
    p.add_argument("--measure-clip", action="store_true", help="print one round's update norms, only")
    p.add_argument("--table-only", action="store_true", help="the table and plots of saved results")
    p.add_argument("--markdown", action="store_true", help="with --table-only: the tables as Markdown")
    return p


def resolve(args: argparse.Namespace) -> str:
    """Fill the preset's defaults into ``args``; the preset's name (its results' directory)."""
    preset = "quick" if args.quick else "full"
    for name, value in asdict(PRESETS[preset]).items():
        if getattr(args, name) is None:
            setattr(args, name, list(value) if name == "noise" else value)
    if args.threshold is None:
        args.threshold = max(2, math.ceil(2 * args.participants / 3))
    args.results = args.results or RESULTS / preset
    if args.plots is None:
        args.plots = DOCS if preset == "full" else args.results
    return preset


def start_model(fleet: Fleet, args: argparse.Namespace) -> str:
    if args.model is not None or args.start == "untrained":
        weights = args.model.read_bytes() if args.model else untrained_mlp(args.seed, TTA_RESULTS / "models")
        fleet.models.add(UNTRAINED, weights)
        return UNTRAINED
    return DEFAULT_MODEL


def report(results: dict[str, Result], args: argparse.Namespace, title: str) -> int:
    if not results:
        console.print(f"no saved results in {args.results}")
        return 1
    print_tables(results)
    for path in (
        plot_epsilon(results, args.plots / "privacy_accuracy.png", title),
        plot_rounds(results, args.plots / "privacy_rounds.png", title),
    ):
        console.print(f"plot: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    preset = resolve(args)
    title = (
        f"Fashion-MNIST, MLP, {args.devices} phones, Dir({args.beta:g}); {args.participants} a round, "
        f"{args.rounds} rounds; clip {args.clip:g}, delta {args.delta:g}"
    )
    if args.table_only and args.markdown:
        print_tables(load_results(args.results), as_markdown=True)
        return 0
    if args.table_only:
        return report(load_results(args.results), args, title)
    console.print(f"Privacy benchmark, preset {preset}, results in {args.results}; {machine()}")
    with tempfile.TemporaryDirectory(prefix="privacy-bench-") as tmp:
        fleet = Fleet(Path(tmp) / "data")
        federation = Federation(fleet, round_workers=args.workers)
        try:
            model = start_model(fleet, args)
            ids = fleet_of(federation, model, args)
            if args.measure_clip:
                measure_clip(federation, model, ids, args)
                return 0
            for config in configs(args.noise):
                if args.only and config.key not in args.only:
                    continue
                if result_path(args.results, config.key).exists():
                    console.print(f"{config.key}: saved, not run again")
                    continue
                console.print(f"{config.key}: running")
                save_result(args.results, run_config(federation, config, model, ids, args))
        finally:
            federation.close()
            fleet.close()
    return report(load_results(args.results), args, title)


if __name__ == "__main__":
    raise SystemExit(main())
