"""``fleet simulate``: run a simulation against a service (given, or started here) and report on it."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from service.client import FleetClient
from service.console import make_console
from service.errors import DeviceExists, FleetError
from service.model.dataset import load_fashion_mnist
from service.server_process import ServerProcess
from service.simulate import comparison_plots, comparison_report, run_spec
from service.simulate.comparison import Comparison
from service.simulate.comparison_config import ComparisonConfig, mix_name
from service.simulate.harness import Simulation, SimulationConfig, SimulationResult
from service.simulate.plots import write_plots
from service.simulate.report import summarize, table, write_csv, write_json


class RichProgress:
    """The harness's progress phases as rich progress bars."""

    def __init__(self, progress: Progress, config: SimulationConfig) -> None:
        devices = config.partition.devices
        self.progress = progress
        self.tasks: dict[str, TaskID] = {
            "evaluate": progress.add_task("evaluations", total=2 * devices),
            "train": progress.add_task(
                f"train steps ({config.mode})", total=devices * config.steps_per_device()
            ),
            "devices": progress.add_task("devices done", total=devices),
        }

    def advance(self, phase: str, amount: int = 1) -> None:
        if amount:
            self.progress.advance(self.tasks[phase], amount)


class FederatedProgress:
    """The federated comparison's phases as rich progress bars."""

    def __init__(self, progress: Progress, config: ComparisonConfig) -> None:
        devices = config.partition.devices
        runs = 1 if config.profiles is None else 2  # with profiles: on ideal phones, then profiled
        local, tune = config.steps(config.epochs), config.steps(config.tune_epochs)
        self.progress = progress
        self.tasks: dict[str, TaskID] = {
            "assign": progress.add_task("assign", total=1),
            "local_only": progress.add_task(
                "local-only steps", total=None if local is None else devices * local
            ),
            "rounds": progress.add_task(
                f"rounds ({config.rounds} x {config.per_round}{', ideal then profiled' if runs > 1 else ''})",
                total=runs * config.rounds * config.per_round,
            ),
            "evaluate": progress.add_task("evaluations", total=config.evaluations()),
            "fine_tune": progress.add_task(
                "fine-tuning steps", total=None if tune is None else devices * tune
            ),
        }

    def advance(self, phase: str, amount: int = 1) -> None:
        if amount:
            self.progress.advance(self.tasks[phase], amount)

    def total(self, phase: str, count: int) -> None:
        self.progress.update(self.tasks[phase], total=count)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


@contextlib.contextmanager
def service_url(url: str | None, data_dir: Path | None, output: Path, console: Console) -> Iterator[str]:
    """``url`` as given, or a ``fleet serve`` started for the run (on ``data_dir``, else a temporary one)."""
    if url:
        yield url
        return
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = (
                Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-simulate-"))) / "data"
            )
        console.print(f"starting fleet serve on {data_dir} (log: {output / 'server.log'})")
        server = stack.enter_context(ServerProcess(data_dir, log=output / "server.log"))
        yield server.url


def simulate(plan: Simulation, console: Console, *, url: str, api_key: str | None = None) -> SimulationResult:
    """Run the plan against ``url`` with rich progress bars."""
    with FleetClient(url, api_key=api_key, timeout=120.0) as client, _progress(console) as progress:
        return plan.run(client, RichProgress(progress, plan.config))


def run(
    config: SimulationConfig,
    *,
    output: Path,
    url: str | None = None,
    data_dir: Path | None = None,
    dataset_dir: Path | None = None,
    api_key: str | None = None,
    console: Console | None = None,
) -> int:
    """Run, print the table and the headline, write report.json, report.csv and the PNGs; exit code."""
    console = console or make_console()
    output.mkdir(parents=True, exist_ok=True)
    try:
        plan = Simulation(load_fashion_mnist(dataset_dir), config)
        with service_url(url, data_dir, output, console) as base_url:
            spec = config.partition
            console.print(
                f"simulating {spec.devices} devices against {base_url}: {spec.kind} partition, "
                f"{spec.train_per_device} train / {spec.test_per_device} test each, {config.mode} mode"
            )
            result = simulate(plan, console, url=base_url, api_key=api_key)
    except (FleetError, RuntimeError, TimeoutError, ValueError) as exc:
        console.print(f"[red]error:[/red] {getattr(exc, 'message', exc)}")
        return 1
    console.print(table(result))
    summary = summarize(result)
    console.print(summary.sentence())
    console.print(
        f"{summary.train_steps} train steps; the whole round took {summary.seconds:.1f} s "
        f"(global test subset: {config.global_test_size} images)"
    )
    written = [
        run_spec.write_spec(run_spec.upload_document(config, dataset_source=result.dataset_source), output),
        write_json(result, output / "report.json", service_url=base_url),
        write_csv(result, output / "report.csv"),
        *write_plots(result, output),
    ]
    console.print("wrote " + ", ".join(str(p) for p in written))
    return 0


def run_comparison(
    config: ComparisonConfig,
    *,
    output: Path,
    url: str | None = None,
    data_dir: Path | None = None,
    api_key: str | None = None,
    console: Console | None = None,
) -> int:
    """The three arms on the server's ``config.dataset``: print the tables and the headline, write
    report.json, report.csv, rounds.png and arms.png; the exit code."""
    console = console or make_console()
    output.mkdir(parents=True, exist_ok=True)
    plan = Comparison(config)
    try:
        with (
            service_url(url, data_dir, output, console) as base_url,
            FleetClient(base_url, api_key=api_key, timeout=120.0) as client,
        ):
            sizes = config.partition.parameters
            console.print(
                f"comparing local-only, federated and federated + fine-tuning against {base_url}: "
                f"{config.describe()}"
                + (
                    f", {sizes['train_per_device']} train / {sizes['test_per_device']} test each"
                    if "train_per_device" in sizes
                    else ", the train split dealt among them"
                )
                + (
                    ""
                    if config.profiles is None
                    else f"; on ideal phones, then profiled from mix '{mix_name(config.profiles)}'"
                    + ("" if config.deadline is None else f" with a {config.deadline:g} s deadline")
                )
            )
            with _progress(console) as progress:
                result = plan.run(client, FederatedProgress(progress, config))
    except DeviceExists as exc:
        console.print(
            f"[red]error:[/red] {exc.message}; choose another --prefix, or delete the devices "
            f"'{config.device_prefix}-*' (a run from a saved spec keeps its device IDs: the sampled "
            "partitions are keyed by them)"
        )
        return 1
    except (FleetError, RuntimeError, TimeoutError, ValueError, httpx.TransportError) as exc:
        console.print(f"[red]error:[/red] {getattr(exc, 'message', exc)}")
        return 1
    console.print(comparison_report.rounds_table(result))
    console.print(comparison_report.devices_table(result))
    console.print(comparison_report.headline(result))
    private = comparison_report.privacy_line(result)
    if private is not None:
        console.print(private)
    console.print(comparison_report.START_NOTE)
    console.print(
        f"global test split: the first {result.global_test_count} test samples; the whole comparison took "
        f"{result.seconds:.1f} s"
    )
    written = [
        run_spec.write_spec(
            run_spec.spec_document(
                config, model=result.model, dataset_content_id=result.dataset.get("content_id")
            ),
            output,
        ),
        comparison_report.write_json(result, output / "report.json", service_url=base_url),
        comparison_report.write_csv(result, output / "report.csv"),
        *comparison_plots.write_plots(result, output),
    ]
    console.print("wrote " + ", ".join(str(p) for p in written))
    return 0
