"""The three-arm comparison's PNGs: accuracy per round, mean local and global accuracy per arm, and with
differential privacy, accuracy beside epsilon per round.

Built like ``service.simulate.plots``: a ``Figure`` on the Agg canvas, saved as a palette PNG.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from service.simulate.comparison_config import ARM_TITLES, ARMS
from service.simulate.comparison_report import arm_means, final_epsilon
from service.simulate.comparison_result import ComparisonResult
from service.simulate.plots import DPI, save

GLOBAL_COLOR = "tab:blue"
LOCAL_COLOR = "tab:orange"


def accuracy_per_round(result: ComparisonResult, path: Path) -> Path:
    """The global version's accuracy on the global split after each round (round 0: version 0), the
    participants' mean local accuracy after their local training, and the local-only arm as lines."""
    means = arm_means(result)
    fig = Figure(figsize=(8, 4.5), dpi=DPI)
    ax = fig.add_subplot()
    measured = [(0, result.start_global_accuracy)]
    measured += [(r.round, r.global_accuracy) for r in result.rounds if r.global_accuracy is not None]
    ax.plot(
        [n for n, _ in measured],
        [a for _, a in measured],
        marker="o",
        color=GLOBAL_COLOR,
        label="global model, global test split",
    )
    ideal = [(r.round, r.ideal_global_accuracy) for r in result.rounds if r.ideal_global_accuracy is not None]
    if ideal:
        ax.plot(
            [0, *(n for n, _ in ideal)],
            [result.start_global_accuracy, *(a for _, a in ideal)],
            marker="o",
            ls=":",
            color="tab:gray",
            label="global model on ideal phones (no heterogeneity)",
        )
    local = [(r.round, r.mean_local_accuracy) for r in result.rounds if r.mean_local_accuracy is not None]
    if local:
        x, y = zip(*local, strict=True)
        ax.plot(x, y, marker="s", color=LOCAL_COLOR, label="participants after local training, local test")
    only = means["local_only"]
    ax.axhline(
        only["global"], color=GLOBAL_COLOR, ls="--", lw=1, label=f"local only, global ({only['global']:.1%})"
    )
    ax.axhline(
        only["local"], color=LOCAL_COLOR, ls="--", lw=1, label=f"local only, local ({only['local']:.1%})"
    )
    tuned = means["fine_tuned"]["local"]
    last = result.rounds[-1].round if result.rounds else 0
    ax.plot(
        [last],
        [tuned],
        marker="*",
        ms=14,
        ls="",
        color="black",
        label=f"fed + fine-tuning, local ({tuned:.1%})",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy")
    config = result.config
    ax.set_title(
        f"{config.strategy.describe()}, {config.per_round} of {config.partition.devices} devices per round, "
        f"from version 0\n{config.partition.describe()} partition of {config.dataset}",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def accuracy_per_arm(result: ComparisonResult, path: Path) -> Path:
    """Mean local and global accuracy of each arm as bars, every device a dot on its bar."""
    means = arm_means(result)
    fig = Figure(figsize=(7, 4.5), dpi=DPI)
    ax = fig.add_subplot()
    x = np.arange(len(ARMS))
    rng = np.random.default_rng(0)  # the dots' jitter only
    for offset, where, key, color in (
        (-0.2, "local", "local", LOCAL_COLOR),
        (0.2, "global", "global_", GLOBAL_COLOR),
    ):
        heights = [means[arm][where] for arm in ARMS]
        bars = ax.bar(x + offset, heights, 0.38, color=color, alpha=0.75, label=f"{where} test data")
        ax.bar_label(bars, labels=[f"{h:.1%}" for h in heights], label_type="center", fontsize=9)
        for i, arm in enumerate(ARMS):
            values = [getattr(d.arms[arm], key) for d in result.devices]
            jitter = rng.uniform(-0.1, 0.1, len(values))
            ax.plot(i + offset + jitter, values, ".", color="black", ms=4, alpha=0.6)
    ax.set_xticks(x, [ARM_TITLES[arm] for arm in ARMS])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("accuracy (mean over devices; dots: devices)")
    ax.set_title(
        f"Three arms on the same {result.config.partition.describe()} partition of {result.config.dataset}"
        f"\n({result.config.strategy.describe()})",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def round_durations(result: ComparisonResult, path: Path) -> Path:
    """Each round's simulated duration on the profiled phones as bars, the deadline as a line, and the
    stragglers and dropouts of each round written on its bar."""
    fig = Figure(figsize=(8, 4), dpi=DPI)
    ax = fig.add_subplot()
    rounds = [r.round for r in result.rounds]
    seconds = [r.simulated_seconds or 0.0 for r in result.rounds]
    bars = ax.bar(rounds, seconds, color=GLOBAL_COLOR, alpha=0.75, label="simulated round duration")
    labels = [f"{r.straggled} late, {r.dropped} out" for r in result.rounds]
    ax.bar_label(bars, labels=labels, fontsize=7, label_type="edge")
    if result.config.deadline is not None:
        ax.axhline(result.config.deadline, color="tab:red", ls="--", lw=1, label="deadline")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("simulated seconds")
    ax.set_title("What each round took on the profiled phones (stragglers late, dropouts out)")
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def privacy_per_round(result: ComparisonResult, path: Path) -> Path:
    """The global model's accuracy per round (left) beside the privacy spent, epsilon at the run's delta
    (right): what each round's accuracy cost."""
    dp = result.config.privacy.privacy
    assert dp is not None
    fig = Figure(figsize=(10, 4.2), dpi=DPI, layout="constrained")
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    measured = [(0, result.start_global_accuracy)]
    measured += [(r.round, r.global_accuracy) for r in result.rounds if r.global_accuracy is not None]
    left.plot([n for n, _ in measured], [a for _, a in measured], marker="o", color=GLOBAL_COLOR)
    left.set_ylabel("global accuracy (global test split)")
    spent = [(r.round, r.epsilon) for r in result.rounds if r.epsilon is not None]
    if spent:
        right.plot([0, *(n for n, _ in spent)], [0.0, *(e for _, e in spent)], marker="o", color="tab:red")
    else:
        right.text(
            0.5, 0.5, "epsilon infinite (no noise)", ha="center", va="center", transform=right.transAxes
        )
    final = final_epsilon(result)
    target = dp.get("target_epsilon")
    if target is not None:
        right.axhline(
            target, color="black", ls="--", lw=1, label=f"target epsilon {target:g} ({dp['on_budget']})"
        )
        right.legend(fontsize=8, loc="best")
    right.set_ylabel(f"epsilon at delta {dp['delta']:g} ({dp['accountant']})")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    ending = "" if final is None else f": epsilon {final:.3g} after {len(result.rounds)} rounds"
    config = result.config
    title = f"{config.privacy.describe()}{ending}; {config.strategy.describe()}, "
    title += f"{config.partition.describe()} partition of {config.dataset}"
    fig.suptitle(textwrap.fill(title, 120), fontsize=9)
    return save(fig, path)


def write_plots(result: ComparisonResult, directory: Path) -> list[Path]:
    written = [
        accuracy_per_round(result, directory / "rounds.png"),
        accuracy_per_arm(result, directory / "arms.png"),
    ]
    if result.profiled:
        written.append(round_durations(result, directory / "durations.png"))
    if result.config.privacy.privacy is not None:
        written.append(privacy_per_round(result, directory / "privacy.png"))
    return written
