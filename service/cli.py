"""The ``fleet`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# Quiet TensorFlow's C++ chatter unless the user asked for it, and hide GPUs from it: the service never
# uses one. (What the full wheel logs while it is imported is filtered by service.runtime.quiet.)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def _build_model(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from service.errors import FleetError
    from service.model.build import BuildSettings, build, write_outputs
    from service.model.dataset import load_fashion_mnist

    console = Console(stderr=True)
    settings = BuildSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        hidden=args.hidden,
        train_limit=args.train_limit,
        seed=args.seed,
    )
    try:
        data = load_fashion_mnist(args.dataset_dir)
        console.print(
            f"Fashion-MNIST from {data.source}: {len(data.train_images)} train, {len(data.test_images)} test"
        )
        with Progress(
            TextColumn("pre-training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("train", total=settings.epochs, loss="-")

            def on_epoch(epoch: int, loss: float) -> None:
                progress.update(task, completed=epoch, loss=f"{loss:.3f}")
                if epoch % 10 == 0:
                    progress.console.print(f"Finished {epoch} epochs, loss: {loss:.3f}")

            result = build(data, settings, on_epoch=on_epoch)
        card_path, plot_path = write_outputs(result, args.output)
    except FleetError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        return 1
    console.print(f"parity: max |logits_tf - logits_tflite| = {result.parity_max_abs_diff:.3g}")
    tf_accuracy, lite_accuracy = result.tf_test_accuracy, result.tflite_test_accuracy
    console.print(f"test accuracy: TensorFlow {tf_accuracy:.4f}, converted {lite_accuracy:.4f}")
    console.print(f"wrote {args.output} ({len(result.model)} bytes, sha256 {result.sha256[:12]}...)")
    console.print(f"wrote {card_path} and {plot_path}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from service.fleet.memory import configure_allocator

    configure_allocator()  # first: the cap holds only for threads started after it
    import signal

    import uvicorn

    from service.api import create_app
    from service.api.auth import LOOPBACK_PROXIES
    from service.api.startup import banner
    from service.config import Settings
    from service.errors import FleetError

    overrides = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    settings = Settings(**overrides)
    sharded = args.shards is not None or args.ray_address is not None
    try:
        if sharded:
            try:
                from service.cluster.launch import sharded_app
            except ImportError as exc:
                print(
                    f"fleet serve: error: sharding needs Ray ({exc}): pip install '.[cluster]'",
                    file=sys.stderr,
                )
                return 2
            app = sharded_app(settings, args.shards, args.ray_address)
        else:
            app = create_app(settings)
    except FleetError as exc:
        print(f"fleet serve: error: {exc.message}", file=sys.stderr)
        return 2
    # A write past RLIMIT_FSIZE then fails with EFBIG (a 507 for its request) instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    print(banner(settings, app.state.keys), file=sys.stderr, flush=True)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning" if settings.log_json else "info",
        access_log=not settings.log_json,
        # Without keys, who is on loopback decides everything: only a local proxy may say otherwise.
        forwarded_allow_ips=LOOPBACK_PROXIES if app.state.keys is None else None,
        timeout_graceful_shutdown=10,
    )
    if sharded:
        from service.cluster.launch import shutdown

        shutdown()
    return 0


def _openapi(args: argparse.Namespace) -> int:
    """Needs neither TensorFlow nor a data dir: the app does no work until it is started."""
    from service.api import create_app
    from service.api.openapi import render
    from service.config import Settings

    document = render(create_app(Settings()))
    if args.output is None:
        sys.stdout.write(document)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(document, encoding="utf-8")
    return 0


FEDERATED_ONLY = (
    "rounds",
    "participants",
    "aggregation",
    "fine_tune_epochs",
    "profiles",
    "deadline",
    "stragglers",
)
"""``fleet simulate`` options of the federated mode (``--dataset``); None when not given."""
UPLOADING_ONLY = ("mode", "grid_device", "dataset_dir")
"""Options of the mode that uploads each device's data; None when not given."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _mix(spec: str) -> str | dict[str, object]:
    """A built-in mix by name (the service has it), else a mix file read here and sent whole."""
    from service.profiles.mixes import BUILTIN, resolve_mix

    return spec if spec in BUILTIN else resolve_mix(spec).describe()


def _simulate(args: argparse.Namespace) -> int:
    from service.data.spec import PartitionSpec
    from service.errors import FleetError
    from service.simulate.command import run, run_comparison
    from service.simulate.comparison import ComparisonConfig
    from service.simulate.harness import SimulationConfig

    federated = args.dataset is not None
    misplaced = [
        _flag(name)
        for name in (UPLOADING_ONLY if federated else FEDERATED_ONLY)
        if getattr(args, name) is not None
    ]
    if misplaced:
        needs = "are not used with --dataset" if federated else "need --dataset (the federated mode)"
        print(f"fleet simulate: error: {', '.join(misplaced)} {needs}", file=sys.stderr)
        return 2
    config: ComparisonConfig | SimulationConfig
    try:
        partition = PartitionSpec(
            kind=args.partition,
            devices=args.devices,
            train_per_device=args.train_per_device,
            test_per_device=args.test_per_device,
            alpha=args.alpha,
            classes_per_device=args.classes_per_device,
            interest_share=args.interest_share,
            replace=args.replace,
            seed=args.seed,
        )
        if federated:
            config = ComparisonConfig(
                dataset=args.dataset,
                partition=partition,
                rounds=10 if args.rounds is None else args.rounds,
                participants=args.participants,
                aggregation=args.aggregation or "fedavg",
                epochs=args.epochs,
                fine_tune_epochs=args.fine_tune_epochs,
                profiles=None if args.profiles is None else _mix(args.profiles),
                deadline=args.deadline,
                stragglers=args.stragglers or "drop",
                batch_size=args.batch_size,
                concurrency=args.concurrency,
                global_test_size=args.global_test_size,
                device_prefix=args.prefix,
            )
        else:
            config = SimulationConfig(
                partition=partition,
                epochs=args.epochs,
                batch_size=args.batch_size,
                mode=args.mode or "stream",
                concurrency=args.concurrency,
                global_test_size=args.global_test_size,
                grid_device=args.grid_device or 0,
                device_prefix=args.prefix,
            )
    except ValueError as exc:
        print(f"fleet simulate: error: {exc}", file=sys.stderr)
        return 2
    except FleetError as exc:  # a mix file that cannot be read
        print(f"fleet simulate: error: {exc.message}", file=sys.stderr)
        return 2
    api_key = args.api_key or os.environ.get("FLEET_API_KEY")
    if isinstance(config, ComparisonConfig):
        return run_comparison(
            config, output=args.output, url=args.url, data_dir=args.data_dir, api_key=api_key
        )
    return run(
        config,
        output=args.output,
        url=args.url,
        data_dir=args.data_dir,
        dataset_dir=args.dataset_dir,
        api_key=api_key,
    )


def _add_simulate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate = commands.add_parser(
        "simulate",
        help="personalize a simulated fleet on Fashion-MNIST partitions and report local and global "
        "accuracy; with --dataset, compare local-only, federated and federated + fine-tuned models on "
        "server-side data",
    )
    simulate.add_argument(
        "--dataset",
        default=None,
        help="federated mode: partition this server-side dataset (e.g. fashion-mnist) and compare three "
        "arms; nothing is uploaded",
    )
    simulate.add_argument("--rounds", type=int, default=None, help="federated: rounds (default 10)")
    simulate.add_argument(
        "--profiles",
        default=None,
        metavar="MIX",
        help="federated: profile the devices from this mix (a built-in one: phones, phones-always-on, "
        "phones-at-night; or a JSON/YAML mix file) and compare the rounds with ideal phones",
    )
    simulate.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="federated, with --profiles: simulated seconds a round waits; later participants straggle",
    )
    simulate.add_argument(
        "--stragglers",
        choices=("drop", "stale"),
        default=None,
        help="federated, with --deadline: drop stragglers' updates (default) or add them late, discounted",
    )
    simulate.add_argument(
        "--participants", type=int, default=None, help="federated: devices per round (default: all)"
    )
    simulate.add_argument(
        "--aggregation",
        choices=("fedavg", "fedavgm", "fedadam"),
        default=None,
        help="federated: the server's optimizer (default fedavg)",
    )
    simulate.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=None,
        help="federated: epochs of fine-tuning (default --epochs)",
    )
    simulate.add_argument("--devices", type=int, default=10)
    simulate.add_argument(
        "--partition", choices=("iid", "dirichlet", "interest", "shards"), default="interest"
    )
    simulate.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (small: skewed)")
    simulate.add_argument("--classes-per-device", type=int, default=1, help="interest: preferred classes")
    simulate.add_argument(
        "--interest-share", type=float, default=0.9, help="interest: share of data from the preferred classes"
    )
    simulate.add_argument("--train-per-device", type=int, default=500)
    simulate.add_argument("--test-per-device", type=int, default=100)
    simulate.add_argument("--replace", action="store_true", help="sample with replacement within a device")
    simulate.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="epochs of training (federated: local epochs per round, and of the local-only arm)",
    )
    simulate.add_argument("--batch-size", type=int, default=32)
    simulate.add_argument(
        "--mode",
        choices=("stream", "jobs"),
        default=None,
        help="train calls, or samples and a job (default stream; not with --dataset)",
    )
    simulate.add_argument("--concurrency", type=int, default=4, help="devices trained (or evaluated) at once")
    simulate.add_argument(
        "--global-test-size",
        type=int,
        default=2000,
        help="class-balanced test subset (federated: the dataset's first N test samples)",
    )
    simulate.add_argument(
        "--grid-device", type=int, default=None, help="device (0-based) for the grid (default 0)"
    )
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--prefix", default="sim", help="device ID prefix (IDs are PREFIX-NN)")
    simulate.add_argument("--output", type=Path, default=Path("simulation"), help="report and plots go here")
    simulate.add_argument("--url", default=None, help="a running service; default: start one for the run")
    simulate.add_argument(
        "--api-key", default=None, help="the --url service's API key (default: $FLEET_API_KEY)"
    )
    simulate.add_argument("--data-dir", type=Path, default=None, help="the started service's data (temp)")
    simulate.add_argument(
        "--dataset-dir", type=Path, default=None, help="Fashion-MNIST IDX files (not with --dataset)"
    )
    simulate.set_defaults(run=_simulate)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser(
        "build-model", help="pre-train, convert and check an on-device-trainable model"
    )
    build.add_argument("--epochs", type=int, default=100)
    build.add_argument("--batch-size", type=int, default=100)
    build.add_argument("--learning-rate", type=float, default=0.01)
    build.add_argument("--hidden", type=int, default=128, help="units in the hidden layer")
    build.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument(
        "--dataset-dir", type=Path, default=None, help="directory of the four Fashion-MNIST IDX .gz files"
    )
    build.add_argument("--output", type=Path, default=Path("fashion_mnist.tflite"))
    build.set_defaults(run=_build_model)

    serve = commands.add_parser(
        "serve", help="run the fleet service (settings also from FLEET_* environment variables)"
    )
    serve.add_argument("--host", default=None, help="default 127.0.0.1 (FLEET_HOST)")
    serve.add_argument("--port", type=int, default=None, help="default 8000 (FLEET_PORT)")
    serve.add_argument("--data-dir", type=Path, default=None, help="default ./fleet-data (FLEET_DATA_DIR)")
    serve.add_argument("--max-resident", type=int, default=None, help="cap on interpreters in memory")
    serve.add_argument(
        "--log-json",
        action="store_const",
        const=True,
        default=None,
        help="one JSON line per request (FLEET_LOG_JSON)",
    )
    serve.add_argument(
        "--shards",
        type=int,
        default=None,
        help="shard the fleet over N processes on Ray (pip install '.[cluster]')",
    )
    serve.add_argument(
        "--ray-address", default=None, help="join this Ray cluster and spread the shards over its nodes"
    )
    serve.set_defaults(run=_serve)

    openapi = commands.add_parser("openapi", help="print the OpenAPI document (openapi/openapi.json)")
    openapi.add_argument("--output", type=Path, default=None, help="write it here instead of to stdout")
    openapi.set_defaults(run=_openapi)
    _add_simulate(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
