"""``fleet simulate --dataset`` saves its spec; ``--from-run`` runs it again from that alone, with the
same metrics. Against a real ``fleet serve``: a small Fashion-MNIST upload, a disjoint partition, FedProx
with a given mu, uniform selection, central differential privacy under secure aggregation and seed 7 (not
a default, so a seed the spec fails to carry shows; nor is the privacy, whose epsilon every round shows).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from service.client import FleetClient
from service.model.dataset import FashionMNIST, one_hot
from service.server_process import ServerProcess
from service.version import __version__
from tests.simulate.test_comparison import Simulated, simulate

DATASET, TRAIN, TEST, DEVICES, PREFIX = "tiny-fmnist", 480, 160, 4, "rep"
FIRST = (
    *("--dataset", DATASET, "--devices", str(DEVICES), "--partition", "label_dirichlet", "--beta", "0.5"),
    *("--rounds", "2", "--participants", "3", "--strategy", "fedprox", "--proximal-mu", "0.1"),
    *("--selection", "uniform", "--epochs", "1", "--batch-size", "16", "--global-test-size", "100"),
    *("--privacy", "mode=central", "noise_multiplier=0.3", "clip=0.5", "--secure-aggregation", "threshold=2"),
    *("--seed", "7", "--prefix", PREFIX),
)
"""The first run's flags (beside --url and --output)."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fashion_mnist: FashionMNIST) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("from-run") / "data") as running:
        with FleetClient(running.url) as client:
            arrays: dict[str, Any] = {
                "train/x": fashion_mnist.train_images[:TRAIN],
                "train/y": one_hot(fashion_mnist.train_labels[:TRAIN]),
                "test/x": fashion_mnist.test_images[:TEST],
                "test/y": one_hot(fashion_mnist.test_labels[:TEST]),
            }
            client.add_dataset(DATASET, **arrays)
        yield running


@pytest.fixture(scope="module")
def runs(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> tuple[Simulated, Simulated]:
    """The run, then (its devices deleted: the spec names them) the run again from its output alone."""
    first, again = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("again")
    code, printed = simulate("--url", server.url, *FIRST, "--output", str(first))
    assert code == 0, printed
    with FleetClient(server.url) as client:
        client.delete_devices([f"{PREFIX}-{i}" for i in range(DEVICES)])
    code2, printed2 = simulate("--from-run", str(first), "--url", server.url, "--output", str(again))
    return Simulated(code, printed, first), Simulated(code2, printed2, again)


def metrics(report: dict[str, Any]) -> dict[str, Any]:
    """What a run measured, without its timings, its run ID or the version numbers (a model's versions
    go on counting across runs)."""
    timing = {"seconds", "simulated_start", "version"}
    return {
        "arms": report["arms"],
        "start": report["run"]["start_global_accuracy"],
        "devices": report["devices"],
        "rounds": [{k: v for k, v in r.items() if k not in timing} for r in report["rounds"]],
    }


def test_the_spec_holds_everything_the_run_depends_on(runs: tuple[Simulated, Simulated]) -> None:
    first, _ = runs
    spec = json.loads((first.output / "spec.json").read_text())
    assert spec["service_version"] == __version__ and spec["mode"] == "federated"
    assert spec["model"] == first.report()["model"]
    assert spec["dataset"]["name"] == DATASET and spec["dataset"]["content_id"]
    assert spec["partition"] == {"kind": "label_dirichlet", "devices": DEVICES, "seed": 7, "beta": 0.5}
    assert spec["strategy"]["name"] == "fedprox" and spec["strategy"]["options"]["proximal_mu"] == 0.1
    assert spec["strategy"]["server"]["learning_rate"] == 1.0
    assert spec["selection"]["name"] == "uniform" and "epsilon" in spec["selection"]["options"]
    assert spec["seeds"] == {"rounds": 7, "profiles": 7, "jobs": 7}
    assert (spec["rounds"], spec["participants"], spec["devices"]) == (2, 3, {"prefix": PREFIX, "count": 4})
    assert spec["training"] == {"epochs": 1, "fine_tune_epochs": 1, "batch_size": 16}
    privacy = spec["privacy"]
    assert privacy["privacy"]["noise_multiplier"] == 0.3 and privacy["privacy"]["clip"] == 0.5
    assert privacy["privacy"]["delta"] == 1e-5 and privacy["privacy"]["accountant"] == "rdp"  # defaults
    assert privacy["secure_aggregation"]["threshold"] == 2
    assert privacy["secure_aggregation"]["quantization_range"] == 1 << 22
    assert first.report()["spec"] == spec


def test_the_tables_and_the_report_name_the_strategy_and_the_partition(
    runs: tuple[Simulated, Simulated],
) -> None:
    first, _ = runs
    assert "fedprox (proximal_mu=0.1)" in first.printed, first.printed
    assert "label_dirichlet (beta=0.5, seed 7) partition of tiny-fmnist" in first.printed
    assert "selection uniform" in first.printed
    report = first.report()
    assert report["run_spec"]["aggregation"] == "fedprox" and report["run_spec"]["selection"] == "uniform"
    assert report["run_spec"]["options"]["proximal_mu"] == 0.1
    assert report["partition"]["title"] == "label_dirichlet (beta=0.5, seed 7)"


def test_the_report_shows_the_privacy_and_epsilon_per_round(runs: tuple[Simulated, Simulated]) -> None:
    first, _ = runs
    title = "DP central (noise_multiplier=0.3, clip=0.5, delta=1e-05, rdp), SecAgg+ (threshold=2)"
    assert title in first.printed
    report = first.report()
    epsilons = [r["privacy"]["epsilon"] for r in report["rounds"]]
    assert len(epsilons) == 2 and 0 < epsilons[0] < epsilons[1]  # spent so far: it grows
    assert [r["privacy"]["secure"]["survivors"] for r in report["rounds"]] == [3, 3]
    privacy = report["privacy"]
    assert privacy["title"] == title and privacy["epsilon_per_round"] == epsilons
    assert privacy["final_epsilon"] == epsilons[-1] and privacy["delta"] == 1e-5
    assert f"epsilon {epsilons[-1]:.4g} at delta 1e-05 after 2 rounds" in first.printed
    rows = [line for line in first.printed.splitlines() if line.startswith("│")]
    for epsilon in epsilons:  # the rounds table's epsilon column
        assert any(f"{epsilon:.4g}" in row for row in rows), (epsilon, first.printed)
    content = (first.output / "privacy.png").read_bytes()
    assert content.startswith(b"\x89PNG") and 3_000 < len(content) < 150_000


def test_a_budget_reached_stops_the_rounds_and_the_report_says_why(
    server: ServerProcess, runs: tuple[Simulated, Simulated], tmp_path: Path
) -> None:
    """The same run with a budget between its first and its second round's epsilon, ``on_budget=stop``."""
    first, _ = runs
    spent = [r["privacy"]["epsilon"] for r in first.report()["rounds"]]
    budget = f"target_epsilon={(spent[0] + spent[1]) / 2}"
    flags = (*FIRST, "--privacy", budget, "on_budget=stop", "--prefix", "budget", "--output", str(tmp_path))
    code, printed = simulate("--url", server.url, *flags)
    assert code == 0, printed
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["privacy"]["epsilon"] for r in report["rounds"]] == [spent[0]]
    stopped = report["privacy"]["stopped"]
    assert stopped and "round 2 would reach epsilon" in stopped
    assert f"stopped early: {stopped}" in " ".join(printed.split())


def test_a_run_from_its_spec_measures_what_it_measured(runs: tuple[Simulated, Simulated]) -> None:
    first, again = runs
    assert again.code == 0, again.printed
    assert metrics(again.report()) == metrics(first.report())
    assert json.loads((again.output / "spec.json").read_text()) == json.loads(
        (first.output / "spec.json").read_text()
    )


def test_flags_that_would_change_the_run_are_refused_beside_from_run(
    runs: tuple[Simulated, Simulated], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = runs
    assert main(["simulate", "--from-run", str(first.output), "--rounds", "3", "--seed", "1"]) == 2
    assert "--rounds, --seed cannot be given with --from-run" in capsys.readouterr().err
    assert main(["simulate", "--from-run", str(first.output), "--output", str(first.output)]) == 2
    assert "holds the saved run" in capsys.readouterr().err
    assert main(["simulate", "--from-run", str(tmp_path)]) == 2
    assert "no run spec at" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ("--partition", "label_dirichlet", "--alpha", "0.3"),
            "--alpha not read by partition label_dirichlet",
        ),
        (("--partition", "interest", "--beta", "0.3"), "--beta not read by partition interest"),
        (("--strategy", "fedprox", "--strategy-option", "mu=1"), "unknown strategy option 'mu'"),
        (("--strategy", "krum", "--strategy-option", "byzantine=1.5"), "byzantine must be a whole number"),
        (("--strategy-option", "proximal_mu"), "--strategy-option takes KEY=VALUE"),
        (("--selection", "oort", "--selection-option", "epsilon=2"), "epsilon"),
        (("--strategy", "fedadam", "--strategy-option", "tau=5"), "tau must be in"),
    ],
)
def test_settings_the_run_cannot_use_are_refused_before_it_starts(
    flags: tuple[str, ...], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No service is needed: the registries' own checks run first (exit 2, naming the setting)."""
    argv = [
        "simulate",
        "--dataset",
        "fashion-mnist",
        "--url",
        "http://127.0.0.1:9",
        "--output",
        str(tmp_path),
    ]
    assert main([*argv, *flags]) == 2
    assert message in capsys.readouterr().err


def test_a_disjoint_partition_needs_the_federated_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--partition", "homogeneous", "--url", "http://127.0.0.1:9"]) == 2
    assert "partition homogeneous is the server's: it needs --dataset" in capsys.readouterr().err


def test_an_uploading_run_is_run_again_from_its_spec(server: ServerProcess, tmp_path: Path) -> None:
    """The mode without --dataset (each device's share uploaded) saves its spec and runs again from it."""
    first, again = tmp_path / "first", tmp_path / "again"
    flags = ("--devices", "2", "--partition", "dirichlet", "--alpha", "0.3", "--train-per-device", "40")
    more = ("--test-per-device", "20", "--epochs", "1", "--global-test-size", "50", "--seed", "3")
    code, printed = simulate("--url", server.url, *flags, *more, "--prefix", "up", "--output", str(first))
    assert code == 0, printed
    spec = json.loads((first / "spec.json").read_text())
    assert spec["mode"] == "upload" and spec["seeds"] == {"jobs": 3}
    assert spec["partition"] == {
        "kind": "dirichlet",
        "devices": 2,
        "seed": 3,
        "train_per_device": 40,
        "test_per_device": 20,
        "alpha": 0.3,
        "replace": False,
    }
    with FleetClient(server.url) as client:
        client.delete_devices(["up-0", "up-1"])
    code, printed = simulate("--from-run", str(first), "--url", server.url, "--output", str(again))
    assert code == 0, printed
    before, after = (json.loads((d / "report.json").read_text()) for d in (first, again))

    def measured(report: dict[str, Any]) -> list[Any]:
        losses = {k: [step["loss"] for step in v] for k, v in report["histories"].items()}
        return [[{k: v for k, v in d.items() if k != "train_seconds"} for d in report["devices"]], losses]

    assert measured(after) == measured(before)
