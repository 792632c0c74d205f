"""The simulation's PNGs: loss curves, accuracy before and after, and the tutorial's prediction grid.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas, not pyplot, so no global
backend or figure state is touched (safe from any thread, and in a server process).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from service.model.dataset import CLASS_NAMES
from service.simulate.harness import DeviceOutcome, GridSample, SimulationResult
from service.simulate.report import points, summarize

DPI = 80
PALETTE = 256
"""Colors kept in the saved PNGs: an octree palette makes them 3-4 times smaller and keeps rare colors
(the grid's red labels) that a median-cut palette merges away."""
SMOOTHING = 10
"""Steps in the moving average of the loss curves (one step's loss is one batch's, and noisy)."""


def save(fig: Figure, path: Path) -> Path:
    """Render with Agg and write a palette PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    with Image.open(buffer) as image:
        palette = image.convert("RGB").quantize(colors=PALETTE, method=Image.Quantize.FASTOCTREE)
        palette.save(path, optimize=True)
    return path


def _main_class(device: DeviceOutcome) -> int:
    return (
        device.preferred_classes[0] if device.preferred_classes else int(np.argmax(device.label_distribution))
    )


def _class_color(label: int) -> Any:
    from matplotlib import colormaps

    return colormaps["tab10"](label % 10)


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (shorter at the start), as long as ``values``."""
    array = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.insert(array, 0, 0.0))
    counts = np.minimum(np.arange(1, len(array) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(array) + 1) - counts]) / counts


def loss_curves(result: SimulationResult, path: Path) -> Path:
    """Each device's loss per training step (from its service-side history), colored by its main class."""
    fig = Figure(figsize=(8, 4.5), dpi=DPI)
    ax = fig.add_subplot()
    seen: set[int] = set()
    curves = []
    for device in result.devices:
        history = result.histories.get(device.device_id, [])
        if not history:
            continue
        label = _main_class(device)
        curve = moving_average([float(e["loss"]) for e in history], SMOOTHING)
        ax.plot(range(1, len(curve) + 1), curve, color=_class_color(label), lw=1, alpha=0.45)
        curves.append(curve)
        seen.add(label)
    handles = [Line2D([], [], color=_class_color(c), label=CLASS_NAMES[c]) for c in sorted(seen)]
    if curves:
        steps = min(len(c) for c in curves)
        mean = np.mean([c[:steps] for c in curves], axis=0)
        handles += ax.plot(range(1, steps + 1), mean, color="black", lw=2.5, label="fleet mean")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training step on the device")
    ax.set_ylabel(f"loss (moving average of {SMOOTHING} steps)")
    ax.set_title(f"Loss per device ({result.config.mode} mode), colored by the device's main class")
    ax.legend(handles=handles, fontsize=8, ncol=2, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def accuracy_bars(result: SimulationResult, path: Path) -> Path:
    """Before and after per device, local test data above and the global test subset below."""
    summary = summarize(result)
    devices = result.devices
    x = np.arange(len(devices))
    fig = Figure(figsize=(max(6.0, 0.45 * len(devices) + 2), 6), dpi=DPI)
    axes = fig.subplots(2, 1, sharex=True)
    panels = (
        ("local test data", "local", summary.local_before, summary.local_after),
        ("global test subset", "global", summary.global_before, summary.global_after),
    )
    for ax, (title, key, mean_before, mean_after) in zip(axes, panels, strict=True):
        before = [getattr(d, f"{key}_before") for d in devices]
        after = [getattr(d, f"{key}_after") for d in devices]
        ax.bar(x - 0.2, before, 0.4, color="0.7", label=f"before (mean {mean_before:.1%})")
        ax.bar(x + 0.2, after, 0.4, color=[_class_color(_main_class(d)) for d in devices])
        ax.axhline(mean_before, color="0.5", ls=":", lw=1)
        ax.axhline(mean_after, color="black", ls="--", lw=1, label=f"after (mean {mean_after:.1%})")
        ax.set_ylim(0, 1.22)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title}: {points(mean_after - mean_before)}", fontsize=10)
        ax.legend(fontsize=8, loc="upper left", ncol=3)
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(x, [d.device_id for d in devices], rotation=60, fontsize=8)
    fig.suptitle("Accuracy before (grey) and after personalization (by main class)")
    fig.tight_layout()
    return save(fig, path)


def prediction_grid(grid: GridSample, path: Path) -> Path:
    """The tutorial's 5x5 grid: images with the predicted class, blue when right and red when wrong."""
    fig = Figure(figsize=(7, 7.5), dpi=DPI)
    right = int(np.sum(grid.predictions == grid.labels))
    for i, (image, label, predicted) in enumerate(
        zip(grid.images, grid.labels, grid.predictions, strict=True)
    ):
        ax = fig.add_subplot(5, 5, i + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        ax.imshow(image, cmap="binary")
        ax.set_xlabel(CLASS_NAMES[int(predicted)], color="blue" if predicted == label else "red")
    fig.suptitle(
        f"{grid.device_id} after personalization: {right}/{len(grid.labels)} of its local test images right"
    )
    fig.tight_layout()
    return save(fig, path)


def write_plots(result: SimulationResult, directory: Path) -> list[Path]:
    return [
        loss_curves(result, directory / "loss.png"),
        accuracy_bars(result, directory / "accuracy.png"),
        prediction_grid(result.grid, directory / "predictions.png"),
    ]
