"""Drawing a device's examples class by class: stratified quotas, and draws with or without replacement."""

from __future__ import annotations

import numpy as np


def class_quotas(total: int, distribution: np.ndarray) -> np.ndarray:
    """Integer counts per class summing to ``total``, proportional to ``distribution`` (largest remainder)."""
    exact = total * np.asarray(distribution, dtype=np.float64) / np.sum(distribution)
    counts = np.floor(exact).astype(np.int64)
    shortfall = total - int(counts.sum())
    # Ties go to the lower class index: a stable sort keeps the rounding itself deterministic.
    counts[np.argsort(-(exact - counts), kind="stable")[:shortfall]] += 1
    return counts


def too_few(c: int, count: int, available: int, split: str, device: str | None = None) -> ValueError:
    where = f" in the {split} split" if split else ""
    of = f" (device {device!r})" if device is not None else ""
    return ValueError(
        f"class {c} needs {count} examples but has {available}{where}{of}; "
        "ask for fewer per device or sample with replacement"
    )


def draw(
    pools: list[np.ndarray],
    counts: np.ndarray,
    rng: np.random.Generator,
    *,
    replace: bool = False,
    split: str = "",
) -> np.ndarray:
    """``counts[c]`` indices from each class's pool, shuffled together; ``split`` names it in errors."""
    chosen = []
    for c, (pool, count) in enumerate(zip(pools, counts, strict=True)):
        if count == 0:
            continue
        if not replace and count > len(pool):
            raise too_few(c, int(count), len(pool), split)
        chosen.append(rng.choice(pool, size=int(count), replace=replace))
    indices = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    return rng.permutation(indices)


def classes_of(positions: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    return np.searchsorted(bounds, positions, side="right") - 1
