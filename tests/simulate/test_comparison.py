"""``fleet simulate --dataset``: three arms on one server-side partition, against a real ``fleet serve``.

One run for the module (5 devices, 2 rounds of 3 participants, 100 training images each), its printed
output captured as a pipe would see it; each test reads one property of what it printed or wrote.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from service.client import FleetClient
from service.server_process import ServerProcess

DEVICES, ROUNDS, PARTICIPANTS, TRAIN, TEST, GLOBAL = 5, 2, 3, 100, 40, 300
ARMS = ("local_only", "federated", "fine_tuned")


@dataclass(frozen=True)
class Simulated:
    code: int
    printed: str
    output: Path

    def report(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((self.output / "report.json").read_text())
        return document


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("federated-simulate") / "data") as running:
        yield running


def simulate(*argv: str) -> tuple[int, str]:
    """``fleet simulate`` with its stdout a pipe (not a terminal, no COLUMNS), and what it printed."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.delenv("COLUMNS", raising=False)
        code = main(["simulate", *argv])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def simulated(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Simulated:
    output = tmp_path_factory.mktemp("federated-report")
    code, printed = simulate(
        *("--url", server.url, "--dataset", "fashion-mnist", "--devices", str(DEVICES)),
        *("--rounds", str(ROUNDS), "--participants", str(PARTICIPANTS), "--aggregation", "fedavg"),
        *("--train-per-device", str(TRAIN), "--test-per-device", str(TEST), "--epochs", "1"),
        *("--global-test-size", str(GLOBAL), "--prefix", "fed", "--output", str(output)),
    )
    return Simulated(code, printed, output)


def test_the_run_succeeds_and_prints_every_device_and_the_means(simulated: Simulated) -> None:
    assert simulated.code == 0, simulated.printed
    for device in range(DEVICES):
        assert f"fed-{device} " in simulated.printed
    assert "fleet mean" in simulated.printed and "Mean local accuracy: local only" in simulated.printed
    assert "version 0" in simulated.printed and "pre-trained" in simulated.printed


def test_the_report_has_three_arms_with_local_and_global_accuracy_per_device(simulated: Simulated) -> None:
    report = simulated.report()
    assert list(report["arms"]) == list(ARMS)
    assert [d["device_id"] for d in report["devices"]] == [f"fed-{i}" for i in range(DEVICES)]
    for device in report["devices"]:
        for arm in ARMS:
            for where in ("local", "global"):
                assert 0 < device[f"{arm}_{where}"] <= 1, (device, arm, where)
    for arm, means in report["arms"].items():
        values = [d[f"{arm}_local"] for d in report["devices"]]
        assert means["local"] == pytest.approx(sum(values) / DEVICES, abs=1e-4)


def test_the_federated_arm_is_the_runs_final_version(simulated: Simulated) -> None:
    report = simulated.report()
    last = report["rounds"][-1]
    assert report["run"]["final_version"] == last["version"]
    assert {d["federated_global"] for d in report["devices"]} == {round(last["global_accuracy"], 4)}


def test_the_report_has_the_metrics_of_every_round(simulated: Simulated) -> None:
    rounds = simulated.report()["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    for metrics in rounds:
        assert len(metrics["participants"]) == PARTICIPANTS and metrics["finished"] == PARTICIPANTS
        assert metrics["failed"] == 0 and metrics["failures"] == []
        assert metrics["mean_loss"] > 0 and metrics["seconds"] >= 0
        assert 0 < metrics["global_accuracy"] <= 1 and 0 < metrics["mean_local_accuracy"] <= 1


def test_no_device_data_is_uploaded(server: ServerProcess, simulated: Simulated) -> None:
    with FleetClient(server.url) as client:
        for device in range(DEVICES):
            device_id = f"fed-{device}"
            assert client.samples(device_id)["count"] == 0
            assignment = client.assignment(device_id)
            assert assignment is not None and assignment["dataset"] == "fashion-mnist"
            assert (assignment["train_size"], assignment["test_size"]) == (TRAIN, TEST)
            assert client.device(device_id)["has_checkpoint"]  # the fine-tuned weights, saved


def test_the_csv_and_the_plots_are_written(simulated: Simulated) -> None:
    with (simulated.output / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["device_id"] for r in rows] == [f"fed-{i}" for i in range(DEVICES)]
    assert all(0 < float(r[f"{arm}_global"]) <= 1 for r in rows for arm in ARMS)
    for name in ("rounds.png", "arms.png"):
        content = (simulated.output / name).read_bytes()
        assert content.startswith(b"\x89PNG") and 3_000 < len(content) < 150_000


def test_the_table_keeps_full_figures_when_printed_to_a_pipe(simulated: Simulated) -> None:
    assert "…" not in simulated.printed
    rows = {line.split()[1]: line for line in simulated.printed.splitlines() if line.startswith("│ fed-")}
    for device in simulated.report()["devices"]:
        row = rows[device["device_id"]]
        for arm in ARMS:
            assert f"{device[f'{arm}_local']:.1%}" in row and f"{device[f'{arm}_global']:.1%}" in row


def test_bad_arguments_are_refused_with_a_clear_message(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ("--url", server.url, "--output", str(tmp_path), "--prefix", "refused")
    assert (
        main(["simulate", *common, "--dataset", "fashion-mnist", "--devices", "3", "--participants", "4"])
        == 2
    )
    assert "participants must be between 1 and the 3 devices" in capsys.readouterr().err
    assert main(["simulate", *common, "--rounds", "3"]) == 2
    assert "--rounds need --dataset" in capsys.readouterr().err
    assert main(["simulate", *common, "--dataset", "fashion-mnist", "--mode", "jobs"]) == 2
    assert "--mode are not used with --dataset" in capsys.readouterr().err
    code, printed = simulate(*common, "--dataset", "nowhere", "--devices", "2")
    assert code == 1 and "error: no dataset 'nowhere'" in printed
    greedy = ("--classes-per-device", "1", "--interest-share", "1.0", "--train-per-device", "7000")
    code, printed = simulate(*common, "--dataset", "fashion-mnist", "--devices", "2", *greedy)
    assert code == 1 and "needs 7000 examples but has 6000" in printed, printed
    with FleetClient(server.url) as client:
        assert not [d for d in client.devices() if d["id"].startswith("refused")]
