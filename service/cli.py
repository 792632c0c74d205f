"""The ``fleet`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from service.simulate import arguments as simulate_command

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
        arch=args.arch,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        hidden=args.hidden,
        train_limit=args.train_limit,
        seed=args.seed,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
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


def _build_arguments(build: argparse.ArgumentParser) -> None:
    """``fleet build-model``'s options (``fleet model build`` is the same command)."""
    build.add_argument(
        "--arch", choices=["mlp", "cnn"], default="mlp", help="the tutorial's MLP, or NIID-Bench's CNN"
    )
    build.add_argument("--epochs", type=int, default=100)
    build.add_argument("--batch-size", type=int, default=100)
    build.add_argument("--learning-rate", type=float, default=0.01)
    build.add_argument("--hidden", type=int, default=128, help="units in the hidden layer")
    build.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--momentum", type=float, default=0.9, help="the CNN's SGD momentum")
    build.add_argument("--weight-decay", type=float, default=1e-5, help="the CNN's L2 weight decay")
    build.add_argument(
        "--dataset-dir", type=Path, default=None, help="directory of the four Fashion-MNIST IDX .gz files"
    )
    build.add_argument("--output", type=Path, default=Path("fashion_mnist.tflite"))
    build.set_defaults(run=_build_model)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser(
        "build-model", help="pre-train, convert and check an on-device-trainable model"
    )
    _build_arguments(build)
    model = commands.add_parser("model", help="models: build one (the same as build-model)")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    _build_arguments(model_commands.add_parser("build", help="the same as fleet build-model"))

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
    simulate_command.add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
