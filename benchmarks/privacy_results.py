"""``benchmarks.privacy``'s results (one ``Result`` a configuration, saved as JSON), its tables and its
two plots: accuracy against epsilon, and accuracy over rounds."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import console, table

TITLES = {"plain": "FedAvg", "central": "DP central", "distributed": "DP + SecAgg", "secagg": "SecAgg"}
SPREAD_ROUNDS = 5
"""The last rounds whose accuracies' spread stands for a run's noise (the SecAgg comparison)."""


@dataclass
class Result:
    key: str
    kind: str
    noise: float | None
    accuracy: list[float]
    """Global accuracy after each round."""
    epsilon: list[float | None]
    """Epsilon spent after each round at ``delta`` (None: infinite, or no DP)."""
    simulated_seconds: list[float]
    wall_seconds: list[float]
    """Each round's wall seconds (``RoundMetrics.seconds``)."""
    model_bytes: int
    """The version file's size: what a participant downloads, and is charged for its upload."""
    protocol_bytes: list[int] = field(default_factory=list)
    """Secure aggregation's extra bytes a device (upload + download, the most over the cohort)."""
    survivors: list[int] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    clip: float | None = None
    delta: float | None = None
    threshold: int | None = None
    seconds: float = 0.0
    setup: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> float:
        return 100 * self.accuracy[-1]

    @property
    def best(self) -> float:
        return 100 * max(self.accuracy)

    @property
    def final_epsilon(self) -> float | None:
        """The epsilon spent by the end (inf: no noise; None: no DP)."""
        if self.kind not in ("central", "distributed"):
            return None
        last = self.epsilon[-1] if self.epsilon else None
        return math.inf if last is None else float(last)

    @property
    def kilobytes(self) -> float:
        """A participant's bytes a round: the model down and up, and the protocol's extra ones."""
        return (2 * self.model_bytes + mean(self.protocol_bytes)) / 1000

    @property
    def spread(self) -> float:
        """The standard deviation of the last rounds' accuracy (percentage points): the run's noise."""
        return float(np.std(self.accuracy[-SPREAD_ROUNDS:]) * 100)


def result_path(results: Path, key: str) -> Path:
    return results / f"{key}.json"


def load_results(results: Path) -> dict[str, Result]:
    found = {}
    for path in sorted(results.glob("*.json")):
        result = Result(**json.loads(path.read_text()))
        found[result.key] = result
    return found


def save_result(results: Path, result: Result) -> None:
    path = result_path(results, result.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(result), indent=1) + "\n")
    tmp.replace(path)


def mean(values: list[float] | list[int]) -> float:
    return float(np.mean(values)) if values else 0.0


def epsilon_text(value: float | None) -> str:
    if value is None:
        return "—"
    return "∞" if math.isinf(value) else f"{value:.3g}"


def ordered(results: dict[str, Result]) -> list[Result]:
    kinds = ["plain", "central", "secagg", "distributed"]
    return sorted(results.values(), key=lambda r: (kinds.index(r.kind), r.noise or 0.0))


def table_rows(results: dict[str, Result]) -> list[tuple[str, ...]]:
    """One row a configuration, in ``COLUMNS``' order."""
    plain = results.get("plain")
    rows: list[tuple[str, ...]] = []
    for r in ordered(results):
        wall = mean(r.wall_seconds)
        ratio = "—" if plain is None else f"{wall / mean(plain.wall_seconds):.2f}x"
        rows.append(
            (
                TITLES[r.kind],
                "—" if r.noise is None else f"{r.noise:g}",
                epsilon_text(r.final_epsilon),
                f"{r.final:.1f}",
                f"{r.best:.1f}",
                f"{mean(r.simulated_seconds):.1f}",
                f"{r.kilobytes:,.0f}",
                f"{mean(r.wall_seconds):.2f}",
                ratio,
                f"{mean(r.dropped):.1f}",
                "—" if not r.recovered else f"{mean(r.recovered):.1f}",
            )
        )
    return rows


COLUMNS = [
    "config",
    "z",
    "epsilon",
    "final %",
    "best %",
    "sim s/round",
    "KB/device/round",
    "wall s/round",
    "x plain",
    "dropped/round",
    "recovered/round",
]


def comparison_rows(results: dict[str, Result]) -> list[tuple[str, ...]]:
    """SecAgg against no SecAgg at each noise level (and alone against plain FedAvg): the accuracy
    difference, and whether it is within twice the two runs' combined spread over their last rounds."""
    pairs = [
        (results[f"central-z{r.noise:g}"], r)
        for r in ordered(results)
        if r.kind == "distributed" and f"central-z{r.noise:g}" in results
    ]
    if "plain" in results and "secagg" in results:
        pairs.insert(0, (results["plain"], results["secagg"]))
    rows: list[tuple[str, ...]] = []
    for without, with_ in pairs:
        noise = 2 * math.hypot(without.spread, with_.spread)
        diff = with_.final - without.final
        sum_noise = (
            "—"
            if not with_.survivors or not with_.noise or with_.threshold is None
            else f"{math.sqrt(mean(with_.survivors) / with_.threshold):.2f}x"
        )
        rows.append(
            (
                f"{TITLES[without.kind]} -> {TITLES[with_.kind]}",
                "—" if with_.noise is None else f"{with_.noise:g}",
                f"{without.final:.1f}",
                f"{with_.final:.1f}",
                f"{diff:+.1f}",
                f"{with_.best - without.best:+.1f}",
                f"{noise:.1f}",
                "yes" if abs(diff) <= noise else "no",
                sum_noise,
                f"{with_.kilobytes - without.kilobytes:+,.0f}",
                f"{mean(with_.simulated_seconds) - mean(without.simulated_seconds):+.2f}",
            )
        )
    return rows


COMPARISON = [
    "without -> with SecAgg",
    "z",
    "final % without",
    "final % with",
    "diff (pts)",
    "best diff",
    "2x spread",
    "within",
    "sum's noise",
    "extra KB",
    "extra sim s",
]


def markdown(columns: list[str], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def print_tables(results: dict[str, Result], as_markdown: bool = False) -> None:
    rows, compared = table_rows(results), comparison_rows(results)
    if as_markdown:
        print(markdown(COLUMNS, rows) + "\n\n" + markdown(COMPARISON, compared))
        return
    delta = next((r.delta for r in results.values() if r.delta is not None), None)
    table(f"Privacy on Fashion-MNIST: accuracy, epsilon (delta {delta}) and costs", COLUMNS, rows)
    table("Secure aggregation against none, at the same noise", COMPARISON, compared)
    console.print(
        "'sum's noise': the noise in the sum under SecAgg over central's at the same z "
        "(each survivor adds z C / sqrt(threshold)); 'within': |diff| <= 2x the runs' combined spread "
        f"(std of their last {SPREAD_ROUNDS} rounds)"
    )


def plot_epsilon(results: dict[str, Result], path: Path, title: str) -> Path:
    """Final accuracy against final epsilon (log), with and without SecAgg; plain FedAvg as a line."""
    from matplotlib.figure import Figure

    from service.simulate.plots import save

    fig = Figure(figsize=(8, 4.5), dpi=80)
    ax = fig.add_subplot()
    for kind, color, marker in (("central", "tab:blue", "o"), ("distributed", "tab:orange", "s")):
        points = [
            r for r in ordered(results) if r.kind == kind and math.isfinite(r.final_epsilon or math.inf)
        ]
        xs, ys = [r.final_epsilon or 0.0 for r in points], [r.final for r in points]
        ax.plot(xs, ys, marker=marker, color=color, label=TITLES[kind])
        for r, x, y in zip(points, xs, ys, strict=True):
            if kind != "central":  # the same epsilon at the same z: one label a level
                continue
            ax.annotate(f"z={r.noise:g}", (x, y), textcoords="offset points", xytext=(4, -12), fontsize=8)
    for key, style, label in (("plain", "-", "FedAvg (no privacy)"), ("central-z0", ":", "clipping only")):
        if key in results:
            ax.axhline(
                results[key].final, color="0.4", ls=style, lw=1, label=f"{label}: {results[key].final:.1f}%"
            )
    ax.set_xscale("log")
    top = max(r.best for r in results.values())
    ax.set_ylim(top=top + 2)
    ax.set_xlabel("epsilon after the last round (log scale)")
    ax.set_ylabel("final global accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(fig, path)


def plot_rounds(results: dict[str, Result], path: Path, title: str) -> Path:
    """Accuracy over rounds per configuration, without secure aggregation (left) and with it (right):
    one colour a noise level, plain FedAvg and SecAgg alone in black."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from service.simulate.plots import save

    fig = Figure(figsize=(10, 4.8), dpi=80)
    axes = fig.subplots(1, 2, sharey=True)
    levels = sorted({r.noise for r in results.values() if r.noise is not None})
    cmap = colormaps["plasma"]
    colors = {z: cmap(0.85 * i / max(1, len(levels) - 1)) for i, z in enumerate(levels)}
    for ax, kinds, heading in (
        (axes[0], ("plain", "central"), "without secure aggregation"),
        (axes[1], ("secagg", "distributed"), "with secure aggregation (distributed noise)"),
    ):
        for r in (r for r in ordered(results) if r.kind in kinds):
            color = "black" if r.noise is None else colors[r.noise]
            label = TITLES[r.kind] + ("" if r.noise is None else f", z={r.noise:g}")
            rounds = range(1, len(r.accuracy) + 1)
            ax.plot(rounds, [100 * a for a in r.accuracy], color=color, lw=1.3, label=label)
        ax.set_title(heading, fontsize=9)
        ax.set_xlabel("round")
        ax.legend(loc="lower right", fontsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("global accuracy (%)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(fig, path)
