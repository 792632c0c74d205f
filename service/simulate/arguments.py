"""``fleet simulate``'s options, and the command that checks them and starts the run.

Light to import (``fleet --help`` loads it): the harness, the reports and their plotting libraries are
imported when a run starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.simulate.comparison_config import ComparisonConfig
    from service.simulate.harness import SimulationConfig

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


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fleet simulate`` to the ``fleet`` command."""
    simulate = commands.add_parser(
        "simulate",
        help="personalize a simulated fleet on Fashion-MNIST partitions and report local and global "
        "accuracy; with --dataset, compare local-only, federated and federated + fine-tuned models on "
        "server-side data",
    )
    _comparison_options(simulate)
    _partition_options(simulate)
    _run_options(simulate)
    simulate.set_defaults(run=run)


def _comparison_options(simulate: argparse.ArgumentParser) -> None:
    """The federated mode's: ``--dataset`` and the rounds it compares."""
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


def _partition_options(simulate: argparse.ArgumentParser) -> None:
    """How the devices' data are partitioned."""
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


def _run_options(simulate: argparse.ArgumentParser) -> None:
    """Training, evaluation, the service used and where the reports go."""
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


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _mix(spec: str) -> str | dict[str, object]:
    """A built-in mix by name (the service has it), else a mix file read here and sent whole."""
    from service.profiles.mixes import BUILTIN, resolve_mix

    return spec if spec in BUILTIN else resolve_mix(spec).describe()


def run(args: argparse.Namespace) -> int:
    """``fleet simulate``: check the options, then run the personalization round or the comparison."""
    from service.errors import FleetError
    from service.simulate import command
    from service.simulate.comparison_config import ComparisonConfig

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
    try:
        config = _config(args)
    except ValueError as exc:
        print(f"fleet simulate: error: {exc}", file=sys.stderr)
        return 2
    except FleetError as exc:  # a mix file that cannot be read
        print(f"fleet simulate: error: {exc.message}", file=sys.stderr)
        return 2
    api_key = args.api_key or os.environ.get("FLEET_API_KEY")
    if isinstance(config, ComparisonConfig):
        return command.run_comparison(
            config, output=args.output, url=args.url, data_dir=args.data_dir, api_key=api_key
        )
    return command.run(
        config,
        output=args.output,
        url=args.url,
        data_dir=args.data_dir,
        dataset_dir=args.dataset_dir,
        api_key=api_key,
    )


def _config(args: argparse.Namespace) -> ComparisonConfig | SimulationConfig:
    """The run ``args`` describe (ValueError for values out of range; FleetError for a mix file)."""
    from service.data.spec import PartitionSpec
    from service.simulate.comparison_config import ComparisonConfig
    from service.simulate.harness import SimulationConfig

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
    if args.dataset is not None:
        return ComparisonConfig(
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
    return SimulationConfig(
        partition=partition,
        epochs=args.epochs,
        batch_size=args.batch_size,
        mode=args.mode or "stream",
        concurrency=args.concurrency,
        global_test_size=args.global_test_size,
        grid_device=args.grid_device or 0,
        device_prefix=args.prefix,
    )
