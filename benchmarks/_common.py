"""Shared pieces of the benchmark scripts: data, percentiles, tables, the in-process reference."""

from __future__ import annotations

import argparse
import io
import os
import platform
import time
from collections.abc import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from rich.table import Table

from service.console import make_console

console = make_console()


def batch(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A train batch of the default model's shape (random pixels: speed does not depend on content)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 28, 28), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]
    return x, y


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def percentile(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Seconds per call, one sample per call."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def machine() -> str:
    python = platform.python_version()
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {python}, {platform.system()}"


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    t = Table(title=title)
    for column in columns:
        t.add_column(column, justify="right" if column != columns[0] else "left")
    for row in rows:
        t.add_row(*(str(c) for c in row))
    console.print(t)


def load_parser(description: str | None) -> argparse.ArgumentParser:
    """A benchmark's command line with the load options every throughput benchmark takes."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--devices", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    return parser
