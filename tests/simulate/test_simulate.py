"""The personalization round against a real ``fleet serve``: local accuracy rises, in both modes."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.cli import main
from service.client import FleetClient
from service.data.spec import PartitionSpec
from service.model.dataset import FashionMNIST
from service.server_process import ServerProcess
from service.simulate.harness import Simulation, SimulationConfig, SimulationResult
from service.simulate.report import summarize

SPEC = PartitionSpec(
    "interest", devices=4, train_per_device=300, test_per_device=100, classes_per_device=1, interest_share=0.9
)
STEPS = 2 * math.ceil(300 / 32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("simulate") / "data") as running:
        yield running


def simulate(server: ServerProcess, data: FashionMNIST, mode: str) -> SimulationResult:
    config = SimulationConfig(SPEC, epochs=2, batch_size=32, mode=mode, concurrency=4, device_prefix=mode)  # type: ignore[arg-type]
    with FleetClient(server.url) as client:
        return Simulation(data, config).run(client)


@pytest.fixture(scope="module")
def streamed(server: ServerProcess, fashion_mnist: FashionMNIST) -> SimulationResult:
    return simulate(server, fashion_mnist, "stream")


def assert_personalized(result: SimulationResult) -> None:
    summary = summarize(result)
    assert summary.local_after > summary.local_before + 0.03, summary
    assert summary.improved_locally >= 3
    # Every device starts from the same embedded model, so "before" on the global subset is one number.
    assert len({d.global_before for d in result.devices}) == 1
    assert all(d.global_after != d.global_before for d in result.devices)  # the weights really changed


def test_streaming_raises_mean_local_accuracy(streamed: SimulationResult) -> None:
    assert_personalized(streamed)
    assert [d.device_id for d in streamed.devices] == ["stream-0", "stream-1", "stream-2", "stream-3"]
    for device in streamed.devices:
        assert device.steps == STEPS
        history = streamed.histories[device.device_id]
        assert [e["source"] for e in history] == ["train"] * STEPS
        assert history[-1]["loss"] == pytest.approx(device.final_loss)


def test_after_numbers_come_from_the_saved_checkpoint(
    server: ServerProcess, streamed: SimulationResult
) -> None:
    with FleetClient(server.url) as client:
        info = client.device("stream-0")
    assert info["has_checkpoint"] and info["train_steps"] == STEPS


def test_grid_holds_the_grid_devices_local_test_images(streamed: SimulationResult, fashion_mnist) -> None:
    grid = streamed.grid
    assert grid.device_id == "stream-0" and grid.images.shape == (25, 28, 28)
    np.testing.assert_array_equal(grid.labels, fashion_mnist.test_labels[grid.test_indices])
    np.testing.assert_array_equal(grid.images, fashion_mnist.test_images[grid.test_indices])
    assert np.mean(grid.predictions == grid.labels) > 0.5


@pytest.fixture(scope="module")
def jobs(server: ServerProcess, fashion_mnist: FashionMNIST) -> SimulationResult:
    return simulate(server, fashion_mnist, "jobs")


def test_background_jobs_raise_mean_local_accuracy(server: ServerProcess, jobs: SimulationResult) -> None:
    result = jobs
    assert_personalized(result)
    with FleetClient(server.url) as client:
        for device in result.devices:
            assert device.steps == STEPS
            assert client.samples(device.device_id)["count"] == SPEC.train_per_device
            assert {e["source"] for e in result.histories[device.device_id]} == {"job"}
            assert client.device(device.device_id)["has_checkpoint"]


def test_cli_writes_reports_and_plots(server: ServerProcess, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at 80 columns when not on a terminal
    argv = [
        "simulate",
        "--url",
        server.url,
        "--devices",
        "2",
        "--train-per-device",
        "64",
        "--test-per-device",
        "30",
    ]
    argv += ["--epochs", "1", "--global-test-size", "200", "--grid-device", "1", "--prefix", "cli"]
    assert main([*argv, "--output", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "fleet mean" in printed and "mean global accuracy" in printed
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["partition"]["kind"] == "interest" and report["grid"]["device_id"] == "cli-1"
    assert [d["device_id"] for d in report["devices"]] == ["cli-0", "cli-1"]
    assert "pts" in report["headline"] and set(report["histories"]) == {"cli-0", "cli-1"}
    with (tmp_path / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["device_id"] for r in rows] == ["cli-0", "cli-1"] and float(rows[0]["local_after"]) > 0
    for name in ("loss.png", "accuracy.png", "predictions.png"):
        content = (tmp_path / name).read_bytes()
        assert content.startswith(b"\x89PNG") and 3_000 < len(content) < 150_000


def test_cli_refuses_an_impossible_plan_before_creating_devices(
    server: ServerProcess, tmp_path: Path
) -> None:
    argv = ["simulate", "--url", server.url, "--devices", "1", "--classes-per-device", "1"]
    argv += [
        "--interest-share",
        "1.0",
        "--test-per-device",
        "1500",
        "--prefix",
        "nope",
        "--output",
        str(tmp_path),
    ]
    assert main(argv) == 1
    assert main(["simulate", "--devices", "2", "--grid-device", "2", "--output", str(tmp_path)]) == 2
    with FleetClient(server.url) as client:
        assert not [d for d in client.devices() if d["id"].startswith("nope")]


def test_a_job_trains_what_streaming_trains(streamed: SimulationResult, jobs: SimulationResult) -> None:
    """Same data, same seed: the job shuffles as the stream does (``default_rng(seed)``, a permutation
    per epoch), so the two modes end with the same weights, hence the same predictions."""
    for s, j in zip(streamed.devices, jobs.devices, strict=True):
        assert (s.local_after, s.global_after) == (j.local_after, j.global_after)
