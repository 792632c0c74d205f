"""The three-arm comparison's numbers: means per arm, the rich tables, and the JSON and CSV reports."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from service.model.dataset import CLASS_NAMES
from service.simulate.comparison_config import ARM_TITLES, ARMS
from service.simulate.comparison_result import ComparedDevice, ComparisonResult, RoundRecord
from service.simulate.report import interest_classes, percent, points, signed_points, write_rows
from service.simulate.run_spec import spec_document

FASHION_MNIST = "fashion-mnist"
"""The built-in dataset, whose classes have names."""
CSV_FIELDS = (
    "device_id",
    "preferred_classes",
    "train_size",
    "test_size",
    *(f"{arm}_{where}" for arm in ARMS for where in ("local", "global")),
    "local_only_loss",
    "fine_tune_loss",
    "profile_class",
    "rounds_straggled",
)
START_NOTE = (
    "Every arm starts from the model's own weights (version 0): the embedded model is pre-trained on "
    "Fashion-MNIST, so accuracies start high and the arms differ by what they change."
)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def arm_means(result: ComparisonResult) -> dict[str, dict[str, float]]:
    """Mean local and global accuracy of each arm over the devices."""
    return {arm: {"local": result.mean(arm, "local"), "global": result.mean(arm, "global_")} for arm in ARMS}


def headline(result: ComparisonResult) -> str:
    means = arm_means(result)
    local = ", ".join(f"{ARM_TITLES[a]} {means[a]['local']:.1%}" for a in ARMS)
    global_ = ", ".join(f"{ARM_TITLES[a]} {means[a]['global']:.1%}" for a in ARMS)
    tuned = means["fine_tuned"]["local"] - means["local_only"]["local"]
    return (
        f"Mean local accuracy: {local}; mean global accuracy: {global_}. Fine-tuning the federated model "
        f"gives {points(tuned)} locally over local-only training (from {result.start_global_accuracy:.1%} "
        "global accuracy at version 0)."
    )


def describe_interest(device: ComparedDevice, dataset: str) -> str:
    """The device's preferred (or dominant) classes: named for the built-in dataset, numbered otherwise."""
    classes = interest_classes(device.preferred_classes, device.label_distribution)
    named = dataset == FASHION_MNIST and all(c < len(CLASS_NAMES) for c in classes)
    return ", ".join(CLASS_NAMES[c] if named else f"class {c}" for c in classes) or "mixed"


def device_row(device: ComparedDevice, result: ComparisonResult) -> dict[str, Any]:
    row: dict[str, Any] = {
        "device_id": device.device_id,
        "preferred_classes": " ".join(str(c) for c in device.preferred_classes),
        "train_size": device.train_size,
        "test_size": device.test_size,
    }
    for arm in ARMS:
        row[f"{arm}_local"] = round(device.arms[arm].local, 4)
        row[f"{arm}_global"] = round(device.arms[arm].global_, 4)
    row["local_only_loss"] = _rounded(device.local_only_loss, 5)
    row["fine_tune_loss"] = _rounded(device.fine_tune_loss, 5)
    row["profile_class"] = result.classes.get(device.device_id)
    row["rounds_straggled"] = result.straggled(device.device_id) if result.profiled else None
    return row


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def final_epsilon(result: ComparisonResult) -> float | None:
    """The privacy spent by the whole run at its delta: the last round's epsilon (None: no DP, no round,
    or no noise, for which epsilon is infinite)."""
    return result.rounds[-1].epsilon if result.rounds else None


def privacy_line(result: ComparisonResult) -> str | None:
    """``Privacy: DP central (...): epsilon 2.31 at delta 1e-05 after 2 rounds``; None without privacy."""
    choice = result.config.privacy
    if not choice.on:
        return None
    line = f"Privacy: {choice.describe()}"
    if choice.privacy is not None:
        epsilon = final_epsilon(result)
        spent = "infinite (no noise)" if epsilon is None else f"{epsilon:.4g}"
        rounds = plural(len(result.rounds), "round")
        line += f": epsilon {spent} at delta {choice.privacy['delta']:g} after {rounds}"
    if result.stopped:
        line += f"; stopped early: {result.stopped}"
    return line + "."


def privacy_document(result: ComparisonResult) -> dict[str, Any] | None:
    """The report's ``privacy``: the settings, epsilon after each round, the final epsilon at delta."""
    choice = result.config.privacy
    if not choice.on:
        return None
    dp = choice.privacy
    return choice.as_dict() | {
        "title": choice.describe(),
        "epsilon_per_round": [r.epsilon for r in result.rounds] if dp is not None else None,
        "final_epsilon": final_epsilon(result),
        "delta": None if dp is None else dp["delta"],
        "stopped": result.stopped,
        "summary": privacy_line(result),
    }


def write_csv(result: ComparisonResult, path: Path) -> Path:
    """One row per device: its data, and local and global accuracy in each arm."""
    return write_rows(path, CSV_FIELDS, (device_row(d, result) for d in result.devices))


def write_json(result: ComparisonResult, path: Path, *, service_url: str) -> Path:
    """Configuration, dataset, the run, means per arm, every device, and the metrics of every round."""
    document = {
        "service_url": service_url,
        "mode": "federated",
        "config": dataclasses.asdict(result.config)
        | {"participants": result.config.per_round, "fine_tune_epochs": result.config.tune_epochs},
        "title": result.config.describe(),
        "strategy": result.config.strategy.as_dict(),
        "selection": result.config.selection.as_dict(),
        "privacy": privacy_document(result),
        "partition": result.config.partition.as_dict() | {"title": result.config.partition.describe()},
        "spec": spec_document(
            result.config, model=result.model, dataset_content_id=result.dataset.get("content_id")
        ),
        "run_spec": dict(result.run_spec),
        "dataset": dict(result.dataset),
        "model": result.model,
        "global_test_count": result.global_test_count,
        "run": {
            "id": result.run_id,
            "start_version": 0,
            "final_version": result.final_version,
            "start_global_accuracy": result.start_global_accuracy,
        },
        "note": START_NOTE,
        "arms": {
            arm: {"title": ARM_TITLES[arm], **{k: round(v, 4) for k, v in means.items()}}
            for arm, means in arm_means(result).items()
        },
        "headline": headline(result),
        "devices": [
            device_row(d, result)
            | {
                "preferred_classes": list(d.preferred_classes),
                "label_distribution": list(d.label_distribution),
            }
            for d in result.devices
        ],
        "rounds": [dataclasses.asdict(r) for r in result.rounds],
        "seconds": round(result.seconds, 3),
        "phase_seconds": dict(result.phase_seconds),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def devices_table(result: ComparisonResult) -> Table:
    """A row per device and a fleet-mean footer: local and global accuracy in each arm, and what
    fine-tuning adds locally over local-only training."""
    config, means = result.config, arm_means(result)
    t = Table(
        title=f"{config.describe()}, {plural(config.epochs, 'local epoch')} each",
        show_footer=True,
    )
    t.add_column("device", footer="fleet mean", no_wrap=True)
    t.add_column("interest", no_wrap=True, overflow="ellipsis")
    short = {"local_only": "local only", "federated": "federated", "fine_tuned": "fed + tuned"}
    for arm in ARMS:
        for where, key in (("local", "local"), ("global", "global")):
            t.add_column(f"{short[arm]}\n{where}", justify="right", footer=percent(means[arm][key]))
    gain = means["fine_tuned"]["local"] - means["local_only"]["local"]
    t.add_column("tuned vs\nlocal pts", justify="right", footer=signed_points(gain))
    if result.profiled:
        t.add_column("class")
        t.add_column("rounds\nstraggled", justify="right")
    for d in result.devices:
        cells = [percent(getattr(d.arms[arm], key)) for arm in ARMS for key in ("local", "global_")]
        change = d.arms["fine_tuned"].local - d.arms["local_only"].local
        profiled = [result.classes.get(d.device_id, "-"), str(result.straggled(d.device_id))]
        t.add_row(
            d.device_id,
            describe_interest(d, config.dataset),
            *cells,
            signed_points(change),
            *(profiled if result.profiled else []),
        )
    return t


def rounds_table(result: ComparisonResult) -> Table:
    """The run's rounds as the service measured them; with profiles, beside the run on ideal phones."""
    profiled = result.profiled
    caption = (
        "global: the round's new version on the global test split; local: the participants on their own "
        "test data after the round's local training"
    )
    if profiled:
        deadline = result.config.deadline
        caption += (
            "; ideal: the same round on unprofiled phones; simulated: what the round took on the profiled "
            "phones" + ("" if deadline is None else f" (deadline {deadline:g} s)")
        )
    caption += _privacy_caption(result)
    privacy = result.config.privacy
    t = Table(
        title=f"round run {result.run_id} ({result.config.strategy.describe()}, selection "
        f"{result.config.selection.describe()}{', ' + privacy.describe() if privacy.on else ''}): from "
        f"version 0 to version {result.final_version}",
        caption=caption,
    )
    headers = ["round", "version", "participants", "failed", "mean\nloss", "global\naccuracy"]
    if profiled:
        headers += ["ideal\nglobal", "straggled", "dropped", "offline", "simulated\ns"]
    private = _privacy_headers(result)
    for name in (*headers, "mean local\naccuracy", "seconds", *private):
        t.add_column(name, justify="right")
    start = percent(result.start_global_accuracy)
    t.add_row(
        *("0", "0", "-", "-", "-", start),
        *([start, "-", "-", "-", "-"] if profiled else []),
        *("-", "-"),
        *("-" for _ in private),
    )
    for r in result.rounds:
        extra = [
            _percent_or_dash(r.ideal_global_accuracy),
            str(r.straggled),
            str(r.dropped),
            str(r.offline),
            "-" if r.simulated_seconds is None else f"{r.simulated_seconds:.1f}",
        ]
        t.add_row(
            str(r.round),
            "-" if r.version is None else str(r.version),
            str(r.finished),
            str(r.failed),
            "-" if r.mean_loss is None else f"{r.mean_loss:.3f}",
            _percent_or_dash(r.global_accuracy),
            *(extra if profiled else []),
            _percent_or_dash(r.mean_local_accuracy),
            f"{r.seconds:.1f}",
            *_privacy_cells(r, result),
        )
    return t


def _privacy_headers(result: ComparisonResult) -> list[str]:
    choice = result.config.privacy
    headers = ["epsilon", "clip"] if choice.privacy is not None else []
    return headers + (["secure\nsurvivors"] if choice.secure_aggregation is not None else [])


def _privacy_cells(record: RoundRecord, result: ComparisonResult) -> list[str]:
    shown = record.privacy or {}
    cells = []
    if result.config.privacy.privacy is not None:
        clip = shown.get("clip")
        cells += [
            "inf" if record.epsilon is None else f"{record.epsilon:.4g}",
            "-" if clip is None else f"{clip:.3g}",
        ]
    if result.config.privacy.secure_aggregation is not None:
        secure = shown.get("secure") or {}
        cells.append(f"{secure.get('survivors', '-')}/{secure.get('cohort', '-')}")
    return cells


def _privacy_caption(result: ComparisonResult) -> str:
    dp = result.config.privacy.privacy
    if dp is None:
        return ""
    caption = f"; epsilon: the privacy spent so far at delta {dp['delta']:g} ({dp['accountant']} accountant)"
    return caption + (f"; stopped early: {result.stopped}" if result.stopped else "")


def _percent_or_dash(value: float | None) -> str:
    return "-" if value is None else percent(value)
