"""A simulation's numbers: the fleet summary, the JSON and CSV reports, and the rich table."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from service.model.dataset import CLASS_NAMES
from service.simulate.harness import DeviceOutcome, SimulationResult

CSV_FIELDS = (
    "device_id",
    "preferred_classes",
    "train_size",
    "test_size",
    "local_before",
    "local_after",
    "local_change",
    "global_before",
    "global_after",
    "global_change",
    "steps",
    "final_loss",
    "train_seconds",
)


@dataclass(frozen=True)
class Summary:
    """Fleet means. Changes are in accuracy points (after minus before, on a 0-1 scale)."""

    devices: int
    local_before: float
    local_after: float
    global_before: float
    global_after: float
    improved_locally: int
    """Devices whose local accuracy rose."""
    worse_globally: int
    """Devices whose global accuracy fell."""
    train_steps: int
    seconds: float

    @property
    def local_change(self) -> float:
        return self.local_after - self.local_before

    @property
    def global_change(self) -> float:
        return self.global_after - self.global_before

    def sentence(self) -> str:
        """The headline: the local gain and, beside it, what it cost on the global test set."""
        return (
            f"Personalization moved mean local accuracy {self.local_before:.1%} -> {self.local_after:.1%} "
            f"({points(self.local_change)}, {self.improved_locally}/{self.devices} devices improved); "
            f"mean global accuracy {self.global_before:.1%} -> {self.global_after:.1%} "
            f"({points(self.global_change)}, {self.worse_globally}/{self.devices} devices lost some)."
        )


def points(change: float) -> str:
    """An accuracy change as signed percentage points, e.g. ``+12.3 pts``."""
    return f"{change * 100:+.1f} pts"


def summarize(result: SimulationResult) -> Summary:
    devices = result.devices

    def mean(name: str) -> float:
        return float(np.mean([getattr(d, name) for d in devices]))

    return Summary(
        devices=len(devices),
        local_before=mean("local_before"),
        local_after=mean("local_after"),
        global_before=mean("global_before"),
        global_after=mean("global_after"),
        improved_locally=sum(d.local_after > d.local_before for d in devices),
        worse_globally=sum(d.global_after < d.global_before for d in devices),
        train_steps=sum(d.steps for d in devices),
        seconds=result.seconds,
    )


def interest_classes(preferred: Sequence[int], distribution: Sequence[float]) -> tuple[int, ...]:
    """The preferred classes, or (when the partition names none) the top two that hold 20% or more."""
    return tuple(preferred) or tuple(
        int(c) for c in np.argsort(distribution)[::-1][:2] if distribution[c] >= 0.2
    )


def describe_interest(device: DeviceOutcome) -> str:
    """The device's preferred class names, or its top classes when the partition names none."""
    classes = interest_classes(device.preferred_classes, device.label_distribution)
    return ", ".join(CLASS_NAMES[c] for c in classes) or "mixed"


def device_row(device: DeviceOutcome) -> dict[str, Any]:
    return {
        "device_id": device.device_id,
        "preferred_classes": " ".join(str(c) for c in device.preferred_classes),
        "train_size": device.train_size,
        "test_size": device.test_size,
        "local_before": round(device.local_before, 4),
        "local_after": round(device.local_after, 4),
        "local_change": round(device.local_after - device.local_before, 4),
        "global_before": round(device.global_before, 4),
        "global_after": round(device.global_after, 4),
        "global_change": round(device.global_after - device.global_before, 4),
        "steps": device.steps,
        "final_loss": None if device.final_loss is None else round(device.final_loss, 5),
        "train_seconds": round(device.train_seconds, 3),
    }


def write_rows(path: Path, fields: Sequence[str], rows: Iterable[Mapping[str, object]]) -> Path:
    """A CSV file of ``rows`` under a header of ``fields``."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_csv(result: SimulationResult, path: Path) -> Path:
    """One row per device."""
    return write_rows(path, CSV_FIELDS, (device_row(d) for d in result.devices))


def write_json(result: SimulationResult, path: Path, *, service_url: str) -> Path:
    """The configuration, the summary, every device (with its label distribution) and the grid."""
    summary = summarize(result)
    document = {
        "service_url": service_url,
        "dataset": result.dataset_source,
        "config": dataclasses.asdict(result.config),
        "summary": dataclasses.asdict(summary)
        | {"local_change": summary.local_change, "global_change": summary.global_change},
        "headline": summary.sentence(),
        "devices": [
            device_row(d)
            | {
                "preferred_classes": list(d.preferred_classes),
                "label_distribution": list(d.label_distribution),
            }
            for d in result.devices
        ],
        "grid": {
            "device_id": result.grid.device_id,
            "test_indices": result.grid.test_indices.tolist(),
            "labels": result.grid.labels.tolist(),
            "predictions": result.grid.predictions.tolist(),
        },
        "histories": result.histories,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def percent(value: float) -> str:
    return f"{value:.1%}"


def signed_points(value: float) -> str:
    """Signed points, green for a gain and red for a loss."""
    style = "green" if value > 0 else "red" if value < 0 else ""
    text = f"{value * 100:+.1f}"
    return f"[{style}]{text}[/{style}]" if style else text


def table(result: SimulationResult) -> Table:
    """Per-device rows and a fleet-mean footer: local and global accuracy, before and after."""
    summary = summarize(result)
    config = result.config
    spec = config.partition
    t = Table(
        title=f"{spec.kind} partition, {spec.devices} devices, {config.mode} mode, {config.epochs} epochs",
        show_footer=True,
    )
    t.add_column("device", footer="fleet mean", no_wrap=True)
    t.add_column("interest", no_wrap=True, overflow="ellipsis")
    t.add_column("local before", justify="right", footer=percent(summary.local_before))
    t.add_column("local after", justify="right", footer=percent(summary.local_after))
    t.add_column("local pts", justify="right", footer=signed_points(summary.local_change))
    t.add_column("global before", justify="right", footer=percent(summary.global_before))
    t.add_column("global after", justify="right", footer=percent(summary.global_after))
    t.add_column("global pts", justify="right", footer=signed_points(summary.global_change))
    t.add_column("last loss", justify="right")
    for d in result.devices:
        t.add_row(
            d.device_id,
            describe_interest(d),
            percent(d.local_before),
            percent(d.local_after),
            signed_points(d.local_after - d.local_before),
            percent(d.global_before),
            percent(d.global_after),
            signed_points(d.global_after - d.global_before),
            "-" if d.final_loss is None else f"{d.final_loss:.3f}",
        )
    return t
