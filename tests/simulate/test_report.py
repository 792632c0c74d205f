"""The summary, the report files and the plot helpers, on a hand-made result (no server)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from service.data.spec import PartitionSpec
from service.simulate.harness import DeviceOutcome, GridSample, SimulationConfig, SimulationResult
from service.simulate.plots import moving_average, prediction_grid
from service.simulate.report import describe_interest, points, summarize, write_csv, write_json


def outcome(index: int, local: tuple[float, float], global_: tuple[float, float], **kwargs) -> DeviceOutcome:
    fields = dict(
        device_id=f"d-{index}",
        index=index,
        preferred_classes=(index,),
        label_distribution=tuple(np.eye(10)[index]),
        train_size=100,
        test_size=50,
        local_before=local[0],
        local_after=local[1],
        global_before=global_[0],
        global_after=global_[1],
        steps=8,
        final_loss=0.1,
        train_seconds=0.5,
    )
    return DeviceOutcome(**(fields | kwargs))  # type: ignore[arg-type]


@pytest.fixture
def result() -> SimulationResult:
    grid = GridSample(
        "d-0", np.arange(25), np.zeros((25, 28, 28), np.float32), np.zeros(25, int), np.zeros(25, int)
    )
    return SimulationResult(
        config=SimulationConfig(PartitionSpec("interest", devices=2)),
        dataset_source="test",
        devices=[outcome(0, (0.6, 0.9), (0.85, 0.80)), outcome(1, (0.8, 0.7), (0.85, 0.86))],
        histories={"d-0": [{"step": 1, "loss": 0.5, "source": "train", "at": "now"}], "d-1": []},
        grid=grid,
        seconds=1.0,
    )


def test_summary_means_and_counts(result: SimulationResult) -> None:
    summary = summarize(result)
    assert summary.local_before == pytest.approx(0.7) and summary.local_after == pytest.approx(0.8)
    assert summary.local_change == pytest.approx(0.1) and summary.global_change == pytest.approx(-0.02)
    assert summary.improved_locally == 1 and summary.worse_globally == 1 and summary.train_steps == 16


def test_headline_shows_the_global_cost_beside_the_local_gain(result: SimulationResult) -> None:
    sentence = summarize(result).sentence()
    assert "70.0% -> 80.0% (+10.0 pts" in sentence and "85.0% -> 83.0% (-2.0 pts" in sentence
    assert points(0.1234) == "+12.3 pts" and points(-0.05) == "-5.0 pts"


def test_reports_have_a_row_per_device(result: SimulationResult, tmp_path: Path) -> None:
    with write_csv(result, tmp_path / "r.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["local_change"] for r in rows] == ["0.3", "-0.1"]
    document = json.loads(write_json(result, tmp_path / "r.json", service_url="http://x").read_text())
    assert document["summary"]["local_change"] == pytest.approx(0.1)
    assert document["devices"][1]["label_distribution"][1] == 1.0
    assert document["config"]["partition"]["kind"] == "interest"


def test_describe_interest_names_preferred_or_dominant_classes() -> None:
    assert describe_interest(outcome(7, (0, 0), (0, 0))) == "Sneaker"
    mixed = outcome(0, (0, 0), (0, 0), preferred_classes=(), label_distribution=(0.1,) * 10)
    skewed = outcome(0, (0, 0), (0, 0), preferred_classes=(), label_distribution=(0.6, 0.3) + (0.0125,) * 8)
    assert describe_interest(mixed) == "mixed" and describe_interest(skewed) == "T-shirt/top, Trouser"


def test_moving_average_is_trailing_and_keeps_length() -> None:
    np.testing.assert_allclose(moving_average([1, 3, 5, 7], 2), [1, 2, 4, 6])
    np.testing.assert_allclose(moving_average([4.0], 10), [4.0])


def test_prediction_grid_labels_right_in_blue_and_wrong_in_red(
    result: SimulationResult, fashion_mnist, tmp_path: Path
) -> None:
    """Real images (many greys) and three wrong labels: red must survive the PNG's palette."""
    from PIL import Image

    labels = fashion_mnist.test_labels[:25]
    predictions = labels.copy()
    predictions[[3, 11, 20]] = (labels[[3, 11, 20]] + 1) % 10
    images = fashion_mnist.test_images[:25]
    grid = dataclasses.replace(result.grid, images=images, labels=labels, predictions=predictions)
    with Image.open(prediction_grid(grid, tmp_path / "g.png")) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    for name, rgb in {"blue": (0, 0, 255), "red": (255, 0, 0)}.items():
        assert (np.abs(pixels - rgb).sum(axis=1) < 60).sum() > 30, f"no {name} label pixels"
