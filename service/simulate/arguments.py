"""``fleet simulate``'s options, and the command that checks them and starts the run.

Light to import (``fleet --help`` loads it): the registries of strategies, selectors and partition kinds
are read when ``fleet simulate --help`` lists them or a run starts; the harness, the reports and their
plotting libraries when a run starts. Every option's default is None here (``DEFAULTS`` holds the real
ones), so the command knows which flags were given: ``--from-run`` refuses the others.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from service.simulate.options import (
    DEFAULTS,
    FEDERATED_ONLY,
    UPLOADING_ONLY,
    config_from,
    flag,
    from_run,
    with_defaults,
)


class LazyChoices(Sequence[str]):
    """argparse ``choices`` read from a registry when first asked for (help, or a value to check)."""

    def __init__(self, load: Callable[[], Sequence[str]]) -> None:
        self.load = load

    def __getitem__(self, index: Any) -> Any:
        return self.load()[index]

    def __len__(self) -> int:
        return len(self.load())

    def __iter__(self) -> Iterator[str]:
        return iter(self.load())

    def __contains__(self, name: object) -> bool:
        return name in self.load()


def _strategies() -> Sequence[str]:
    from service.federated.strategies import NAMES

    return NAMES


def _selectors() -> Sequence[str]:
    from service.federated.selectors import NAMES

    return NAMES


def _kinds() -> Sequence[str]:
    from service.simulate.partition_choice import KINDS

    return KINDS


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fleet simulate`` to the ``fleet`` command."""
    simulate = commands.add_parser(
        "simulate",
        help="personalize a simulated fleet on Fashion-MNIST partitions and report local and global "
        "accuracy; with --dataset, compare local-only, federated and federated + fine-tuned models on "
        "server-side data (any strategy, selection and partition); --from-run runs a saved spec again",
    )
    _comparison_options(simulate)
    _strategy_options(simulate)
    _partition_options(simulate)
    _run_options(simulate)
    simulate.set_defaults(run=run)


def _comparison_options(simulate: argparse.ArgumentParser) -> None:
    """The federated mode's: ``--dataset`` and the rounds it compares."""
    add = simulate.add_argument
    add(
        "--dataset",
        help="federated mode: partition this server-side dataset (e.g. fashion-mnist) and compare three "
        "arms; nothing is uploaded",
    )
    add(
        "--from-run",
        type=Path,
        metavar="PATH",
        help="run a saved comparison again from its spec alone (an earlier --output directory or its "
        "spec.json); only --output, --url, --api-key, --data-dir, --dataset-dir and --concurrency may be "
        "given beside it",
    )
    add("--rounds", type=int, help="federated: rounds (default 10)")
    add(
        "--profiles",
        metavar="MIX",
        help="federated: profile the devices from this mix (a built-in one: phones, phones-always-on, "
        "phones-at-night; or a JSON/YAML mix file) and compare the rounds with ideal phones",
    )
    add(
        "--deadline",
        type=float,
        help="federated, with --profiles: simulated seconds a round waits; later participants straggle",
    )
    add(
        "--stragglers",
        choices=("drop", "stale"),
        help="federated, with --deadline: drop stragglers' updates (default) or add them late, discounted",
    )
    add("--participants", type=int, help="federated: devices per round (default: all)")
    add("--fine-tune-epochs", type=int, help="federated: epochs of fine-tuning (default --epochs)")


def _strategy_options(simulate: argparse.ArgumentParser) -> None:
    """The rounds' strategy, its settings and the client selection (names from the registries)."""
    add = simulate.add_argument
    add(
        "--aggregation",
        "--strategy",
        dest="aggregation",
        metavar="NAME",
        choices=LazyChoices(_strategies),
        help="federated: the strategy (default fedavg); one of %(choices)s (docs/strategies.md)",
    )
    add("--proximal-mu", type=float, help="federated, fedprox: the proximal term's weight (default 0.01)")
    add("--server-learning-rate", type=float, help="federated: the server optimizer's learning rate")
    add("--server-momentum", type=float, help="federated, fedavgm: the server's momentum (default 0.9)")
    add(
        "--strategy-option",
        action="append",
        metavar="KEY=VALUE",
        help="federated: any strategy setting (trim_fraction, byzantine, krum_keep, buffer_size, "
        "max_staleness, ...) or server setting (beta1, beta2, tau); repeat for more",
    )
    add(
        "--selection",
        metavar="NAME",
        choices=LazyChoices(_selectors),
        help="federated: who takes part in each round (default available); one of %(choices)s",
    )
    add(
        "--selection-option",
        action="append",
        metavar="KEY=VALUE",
        help="federated: a selector setting (oort's epsilon, alpha, preferred_seconds, ...); repeat for more",
    )
    _privacy_options(simulate)


def _privacy_options(simulate: argparse.ArgumentParser) -> None:
    """Differential privacy and secure aggregation, as the rounds API takes them (docs/privacy.md)."""
    add = simulate.add_argument
    add(
        "--privacy",
        action="extend",
        nargs="+",
        metavar="KEY=VALUE",
        help="federated: differential privacy (needs --selection poisson or uniform); keys mode "
        "(central, local, distributed), noise_multiplier, clip, adaptive, target_quantile, "
        "clip_learning_rate, clipped_count_stddev, delta, accountant (rdp, pld), target_epsilon, "
        "on_budget (refuse, stop); 'mode=central' alone turns it on with the defaults",
    )
    add(
        "--secure-aggregation",
        action="extend",
        nargs="+",
        metavar="KEY=VALUE",
        help="federated: secure aggregation (SecAgg+); keys threshold (required), neighbors, "
        "clipping_range, quantization_range",
    )


def _partition_options(simulate: argparse.ArgumentParser) -> None:
    """How the devices' data are partitioned."""
    add = simulate.add_argument
    add("--devices", type=int, help=f"devices (default {DEFAULTS['devices']})")
    add(
        "--partition",
        metavar="KIND",
        choices=LazyChoices(_kinds),
        help="default interest; one of %(choices)s (the disjoint kinds, from homogeneous on, need --dataset)",
    )
    add("--alpha", type=float, help="dirichlet: concentration (small: skewed; default 0.5)")
    add("--classes-per-device", type=int, help="interest: preferred classes; shards: shards (default 1)")
    add("--interest-share", type=float, help="interest: share of data from the preferred classes (0.9)")
    add("--train-per-device", type=int, help="sampled kinds: training examples each (default 500)")
    add("--test-per-device", type=int, help="sampled kinds: test examples each (default 100)")
    add("--replace", action="store_true", default=None, help="sample with replacement within a device")
    add("--labels-per-device", type=int, help="label_quantity: k of #C=k (default 2)")
    add("--beta", type=float, help="label_dirichlet, quantity_skew: Dir(beta) (default 0.5)")
    add("--noise", type=float, help="feature_noise: the last device's Gaussian sigma (default 0.1)")
    add("--group", help="natural: the dataset's group array (default: its own)")


def _run_options(simulate: argparse.ArgumentParser) -> None:
    """Training, evaluation, the service used and where the reports go."""
    add = simulate.add_argument
    add(
        "--epochs",
        type=int,
        help="epochs of training (federated: local epochs per round, and of the local-only arm; default 3)",
    )
    add("--batch-size", type=int, help="default 32")
    add(
        "--mode",
        choices=("stream", "jobs"),
        help="train calls, or samples and a job (default stream; not with --dataset)",
    )
    add("--concurrency", type=int, help="devices trained (or evaluated) at once (default 4)")
    add(
        "--global-test-size",
        type=int,
        help="class-balanced test subset (federated: the dataset's first N test samples; default 2000)",
    )
    add("--grid-device", type=int, help="device (0-based) for the grid (default 0)")
    add("--seed", type=int, help="the partition's, the rounds', the profiles' and the jobs' seed (default 0)")
    add("--prefix", help="device ID prefix (IDs are PREFIX-NN; default sim)")
    add("--output", type=Path, help="report, plots and spec.json go here (default ./simulation)")
    add("--url", help="a running service; default: start one for the run")
    add("--api-key", help="the --url service's API key (default: $FLEET_API_KEY)")
    add("--data-dir", type=Path, help="the started service's data (temp)")
    add("--dataset-dir", type=Path, help="Fashion-MNIST IDX files (not with --dataset)")


def _error(message: str) -> int:
    print(f"fleet simulate: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """``fleet simulate``: check the options, then run the personalization round or the comparison."""
    from service.errors import FleetError
    from service.simulate import command
    from service.simulate.comparison_config import ComparisonConfig

    given = {name for name, value in vars(args).items() if value is not None and name in DEFAULTS}
    try:
        if args.from_run is not None:
            config: Any = from_run(args.from_run, given, args.output, args.concurrency)
        else:
            args = with_defaults(args)
            misplaced = [
                flag(name) for name in (UPLOADING_ONLY if args.dataset else FEDERATED_ONLY) if name in given
            ]
            if misplaced:
                needs = (
                    "are not used with --dataset" if args.dataset else "need --dataset (the federated mode)"
                )
                return _error(f"{', '.join(misplaced)} {needs}")
            config = config_from(args, given)
    except ValueError as exc:
        return _error(str(exc))
    except FleetError as exc:  # a mix file that cannot be read, a setting the service refuses
        return _error(exc.message)
    output = args.output or DEFAULTS["output"]
    api_key = args.api_key or os.environ.get("FLEET_API_KEY")
    if isinstance(config, ComparisonConfig):
        return command.run_comparison(
            config, output=output, url=args.url, data_dir=args.data_dir, api_key=api_key
        )
    return command.run(
        config,
        output=output,
        url=args.url,
        data_dir=args.data_dir,
        dataset_dir=args.dataset_dir,
        api_key=api_key,
    )
