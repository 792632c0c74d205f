"""From ``fleet simulate``'s parsed options to the run they ask for: the defaults, the checks of which
flags go together, and ``--from-run``'s spec with the few flags it allows beside it.

Light to import (``fleet --help`` loads it): what runs builds on is imported in the functions.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.simulate.comparison_config import ComparisonConfig
    from service.simulate.harness import SimulationConfig

PARTITION_PARAMETERS = (
    "train_per_device",
    "test_per_device",
    "replace",
    "alpha",
    "classes_per_device",
    "interest_share",
    "labels_per_device",
    "beta",
    "noise",
    "group",
)
"""The partition kinds' parameters (None: the kind's default, ``partition_choice.DEFAULTS``)."""
DEFAULTS: dict[str, Any] = {
    "dataset": None,
    "rounds": 10,
    "profiles": None,
    "deadline": None,
    "stragglers": "drop",
    "participants": None,
    "fine_tune_epochs": None,
    "aggregation": "fedavg",
    "proximal_mu": None,
    "server_learning_rate": None,
    "server_momentum": None,
    "strategy_option": None,
    "selection": None,
    "selection_option": None,
    "privacy": None,
    "secure_aggregation": None,
    "devices": 10,
    "partition": "interest",
    **dict.fromkeys(PARTITION_PARAMETERS),
    "epochs": 3,
    "batch_size": 32,
    "mode": "stream",
    "concurrency": 4,
    "global_test_size": 2000,
    "grid_device": 0,
    "seed": 0,
    "prefix": "sim",
    "output": Path("simulation"),
    "url": None,
    "api_key": None,
    "data_dir": None,
    "dataset_dir": None,
}
"""Every option's default (the parser's are None, so a given flag is told from a default)."""
FEDERATED_ONLY = (
    "rounds",
    "participants",
    "aggregation",
    "proximal_mu",
    "server_learning_rate",
    "server_momentum",
    "strategy_option",
    "selection",
    "selection_option",
    "privacy",
    "secure_aggregation",
    "fine_tune_epochs",
    "profiles",
    "deadline",
    "stragglers",
    "labels_per_device",
    "beta",
    "noise",
    "group",
)
"""Options of the federated mode (``--dataset``)."""
UPLOADING_ONLY = ("mode", "grid_device", "dataset_dir")
"""Options of the mode that uploads each device's data."""
BESIDE_FROM_RUN = ("output", "url", "api_key", "data_dir", "dataset_dir", "concurrency")
"""What may be given with ``--from-run``: where the run goes, where the uploading mode finds Fashion-MNIST
and how many devices are driven at once, none of which changes its metrics; any other flag is refused
(the spec says it)."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def with_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with every option not given set to its default."""
    values = vars(args)
    return argparse.Namespace(**{**values, **{k: v for k, v in DEFAULTS.items() if values.get(k) is None}})


def _mix(spec: str) -> str | dict[str, object]:
    """A built-in mix by name (the service has it), else a mix file read here and sent whole."""
    from service.profiles.mixes import BUILTIN, resolve_mix

    return spec if spec in BUILTIN else resolve_mix(spec).describe()


def config_from(args: argparse.Namespace, given: set[str]) -> ComparisonConfig | SimulationConfig:
    """The run ``args`` (defaults filled) describe; ``given``: the flags given. ValueError for values out
    of range or parameters the partition kind does not read; FleetError for a mix file or a setting the
    strategy refuses."""
    from service.simulate.partition_choice import DISJOINT_SCHEMES, PARAMETERS, Partition

    unread = [
        flag(name)
        for name in PARTITION_PARAMETERS
        if name in given and name not in PARAMETERS[args.partition]
    ]
    if unread:
        reads = ", ".join(flag(n) for n in PARAMETERS[args.partition]) or "no parameter"
        raise ValueError(f"{', '.join(unread)} not read by partition {args.partition} (it reads {reads})")
    parameters = {name: getattr(args, name) for name in PARTITION_PARAMETERS}
    partition = Partition.of(args.partition, args.devices, args.seed, **parameters)
    if args.dataset is None:
        if args.partition in DISJOINT_SCHEMES:
            raise ValueError(
                f"partition {args.partition} is the server's: it needs --dataset (the federated mode)"
            )
        return _uploading(args, partition)
    return _comparison(args, partition)


def _comparison(args: argparse.Namespace, partition: Any) -> ComparisonConfig:
    from service.simulate.comparison_config import ComparisonConfig, Seeds
    from service.simulate.privacy_choice import PrivacyChoice
    from service.simulate.strategy_choice import (
        SERVER_FIELDS,
        SelectionChoice,
        StrategyChoice,
        parse_assignments,
    )

    options = parse_assignments(args.strategy_option, "--strategy-option")
    server = {key: options.pop(key) for key in list(options) if key in SERVER_FIELDS}
    for name, value in (("learning_rate", args.server_learning_rate), ("momentum", args.server_momentum)):
        if value is not None:
            server[name] = value
    if args.proximal_mu is not None:
        options["proximal_mu"] = args.proximal_mu
    return ComparisonConfig(
        dataset=args.dataset,
        partition=partition,
        rounds=args.rounds,
        participants=args.participants,
        strategy=StrategyChoice.of(args.aggregation, options, server),
        selection=SelectionChoice.of(
            args.selection, parse_assignments(args.selection_option, "--selection-option")
        ),
        privacy=PrivacyChoice.of(
            None if args.privacy is None else parse_assignments(args.privacy, "--privacy"),
            None
            if args.secure_aggregation is None
            else parse_assignments(args.secure_aggregation, "--secure-aggregation"),
        ),
        seeds=Seeds.all(args.seed),
        epochs=args.epochs,
        fine_tune_epochs=args.fine_tune_epochs,
        profiles=None if args.profiles is None else _mix(args.profiles),
        deadline=args.deadline,
        stragglers=args.stragglers,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        global_test_size=args.global_test_size,
        device_prefix=args.prefix,
    )


def _uploading(args: argparse.Namespace, partition: Any) -> SimulationConfig:
    from service.data.spec import PartitionSpec
    from service.simulate.harness import SimulationConfig

    return SimulationConfig(
        partition=PartitionSpec(
            kind=partition.kind, devices=partition.devices, seed=partition.seed, **partition.parameters
        ),
        epochs=args.epochs,
        batch_size=args.batch_size,
        mode=args.mode,
        concurrency=args.concurrency,
        global_test_size=args.global_test_size,
        grid_device=args.grid_device,
        device_prefix=args.prefix,
    )


def from_run(
    path: Path, given: set[str], output: Path | None, concurrency: int | None
) -> ComparisonConfig | SimulationConfig:
    """The saved run's comparison; ValueError for a flag beside ``--from-run`` that would change the run,
    or an ``output`` that would overwrite the saved run's own results."""
    from service.simulate.run_spec import read_spec, spec_path

    refused = sorted(given - set(BESIDE_FROM_RUN))
    if refused:
        allowed = ", ".join(flag(n) for n in BESIDE_FROM_RUN)
        raise ValueError(
            f"{', '.join(flag(n) for n in refused)} cannot be given with --from-run: the saved spec says how "
            f"the run is made (only {allowed} may be given beside it)"
        )
    config = read_spec(path)
    target = (output or DEFAULTS["output"]).resolve()
    if target == spec_path(path).resolve().parent:
        raise ValueError(
            f"--output {target} holds the saved run: give another directory, not to overwrite it"
        )
    return config if concurrency is None else replace(config, concurrency=concurrency)
