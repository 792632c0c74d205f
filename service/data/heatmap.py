"""A partition's heatmap: examples of each label (columns) on each device (rows), as a PNG.

Drawn like ``service.simulate.plots``: a ``matplotlib.figure.Figure`` on the Agg canvas (no pyplot, no
global state: safe in a server thread), saved as a palette PNG. Its size is bounded whatever the
partition: past ``MAX_ROWS`` devices, runs of consecutive devices share a row (the mean of their counts,
ticks naming the first device of a row); past ``MAX_COLUMNS`` labels, consecutive labels are summed into
a column. The axis labels say so.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

DPI = 80
WIDTH, HEIGHT = 9.0, 7.0
"""Inches: the PNG is at most 720 x 560 pixels."""
MAX_ROWS = 100
MAX_COLUMNS = 100
ANNOTATE_CELLS = 400
"""Each cell shows its count when there are at most this many."""
PALETTE = 256


def binned(counts: np.ndarray, most: int, axis: int) -> tuple[np.ndarray, int]:
    """``counts`` with runs of consecutive rows (``axis`` 0) or columns summed so that at most ``most``
    remain; and how many a run holds (1: none summed)."""
    size = counts.shape[axis]
    per = max(1, -(-size // most))
    if per == 1:
        return counts, 1
    starts = np.arange(0, size, per)
    return np.add.reduceat(counts, starts, axis=axis), per


def heatmap_png(counts: np.ndarray, title: str) -> bytes:
    """The PNG of ``counts`` (devices x labels)."""
    from PIL import Image

    counts = np.asarray(counts, dtype=np.int64)
    cells, rows_per = binned(counts, MAX_ROWS, 0)
    cells, columns_per = binned(cells, MAX_COLUMNS, 1)
    if rows_per > 1:  # a row's mean device: the last row may hold fewer devices than the others
        devices = np.diff(np.append(np.arange(0, len(counts), rows_per), len(counts)))
        cells = cells / devices[:, None]
    fig = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI)
    ax = fig.add_subplot()
    image = ax.imshow(cells, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="examples" if rows_per == 1 else "examples (a row's mean device)")
    ax.set_xlabel("label" if columns_per == 1 else f"labels ({columns_per} a column, summed)")
    ax.set_ylabel("device" if rows_per == 1 else f"device ({rows_per} a row: their mean)")
    ax.set_title(title, fontsize=10)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda row, _: f"{int(row) * rows_per}"))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda column, _: f"{int(column) * columns_per}"))
    if cells.size <= ANNOTATE_CELLS:
        middle = cells.max() / 2 if cells.size else 0
        for (row, column), value in np.ndenumerate(cells):
            color = "black" if value > middle else "white"
            ax.text(column, row, f"{value:g}", ha="center", va="center", fontsize=7, color=color)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    out = io.BytesIO()
    with Image.open(buffer) as rendered:
        palette = rendered.convert("RGB").quantize(colors=PALETTE, method=Image.Quantize.FASTOCTREE)
        palette.save(out, format="PNG", optimize=True)
    return out.getvalue()
