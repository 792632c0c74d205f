"""Does on-device training continue where pre-training stopped? The tutorial's second half, measured.

Loads a model built by ``fleet build-model`` (default: the embedded one) into ``tf.lite.Interpreter``
(the in-process reference, no service involved), trains it through its ``train`` signature on the full
Fashion-MNIST train set batched as the tutorial does (``train_ds.batch(100)``, no shuffling), records the
last batch's loss of each epoch, and prints three tables: pre-training (the model card beside the
tutorial's published figures), on-device (this run beside the tutorial's), test accuracy before and after.

Exit status: 0 when the on-device loss starts below where pre-training stopped and keeps falling,
1 when it does not, 2 when the inputs are unusable (no card, a card of another model, no dataset).

    .venv/bin/python benchmarks/seed_reproduction.py [--epochs 50] [--plot /tmp/seed_reproduction.png]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import service
from service.console import make_console
from service.errors import FleetError, InvalidModel, ModelNotFound
from service.model.build import accuracy, batches, plot_losses
from service.model.dataset import load_fashion_mnist, one_hot
from service.model.tutorial import ON_DEVICE_LOSSES as TUTORIAL_ON_DEVICE
from service.model.tutorial import PRE_TRAINING_LOSSES as TUTORIAL_PRE_TRAINING

EMBEDDED_MODEL = Path(service.__file__).parent / "models" / "fashion_mnist.tflite"

REPORT_EVERY = 10
"""The tutorial prints the loss every 10 epochs; so do the tables."""
TREND_WINDOW = 10
"""Losses keep falling when the mean of the last this-many on-device epochs is below the first's."""

EpochCallback = Callable[[int, float], None]


def load_card(model_path: Path) -> dict[str, Any]:
    """The model's card (same path, ``.json``), checked to describe these very bytes."""
    card_path = model_path.with_suffix(".json")
    if not model_path.is_file():
        raise ModelNotFound(f"no model at {model_path}")
    if not card_path.is_file():
        raise ModelNotFound(f"no card at {card_path}: the pre-training losses come from the model's card")
    model = model_path.read_bytes()
    card: dict[str, Any] = json.loads(card_path.read_text())
    if card.get("sha256") != hashlib.sha256(model).hexdigest():
        raise InvalidModel(f"{card_path} describes another model: its sha256 differs from {model_path}'s")
    return card


def reported_epochs(epochs: int) -> list[int]:
    """Every 10th epoch, as the tutorial prints them, and the last one."""
    points = list(range(REPORT_EVERY, epochs + 1, REPORT_EVERY))
    if not points or points[-1] != epochs:
        points.append(epochs)
    return points


def train_on_device(
    train: Callable[..., dict[str, np.ndarray]],
    images: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    batch_size: int,
    on_epoch: EpochCallback | None = None,
) -> list[float]:
    """The tutorial's loop: every batch in order, each epoch; keeps the last batch's loss."""
    parts = [(images[s], labels[s]) for s in batches(len(images), batch_size)]
    losses: list[float] = []
    for epoch in range(1, epochs + 1):
        for x, y in parts:
            result = train(x=x, y=y)
        losses.append(float(result["loss"]))
        if on_epoch:
            on_epoch(epoch, losses[-1])
    return losses


def relative(ours: float, reference: float | None) -> str:
    return "-" if reference is None else f"{(ours - reference) / reference:+.1%}"


def fmt(loss: float | None) -> str:
    return "-" if loss is None else f"{loss:.3f}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=50, help="on-device epochs (the tutorial's 50)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--model", type=Path, default=EMBEDDED_MODEL, help="a .tflite with its .json card beside it"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="directory of the four Fashion-MNIST IDX .gz files"
    )
    parser.add_argument("--plot", type=Path, default=None, help="write the tutorial's loss figure here (PNG)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        _parser().error("--epochs and --batch-size must be positive")

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    console = make_console()
    started = time.monotonic()
    try:
        card = load_card(args.model)
        data = load_fashion_mnist(args.data_dir)
    except FleetError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        return 2

    import tensorflow as tf

    pre_losses: list[float] = card["losses"]
    pre_epochs = len(pre_losses)
    console.print(
        f"model {args.model} (card: {pre_epochs} pre-training epochs, TensorFlow "
        f"{card['tensorflow_version']}); Fashion-MNIST from {data.source}; TensorFlow {tf.__version__} here"
    )

    interpreter = tf.lite.Interpreter(model_path=str(args.model))
    interpreter.allocate_tensors()
    train = interpreter.get_signature_runner("train")
    infer = interpreter.get_signature_runner("infer")

    def predict(x: np.ndarray) -> np.ndarray:
        return infer(x=x)["logits"]

    accuracy_before = accuracy(predict, data.test_images, data.test_labels)
    train_started = time.monotonic()
    with Progress(
        TextColumn("on-device training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("train", total=args.epochs, loss="-")
        losses = train_on_device(
            train,
            data.train_images,
            one_hot(data.train_labels),
            args.epochs,
            args.batch_size,
            on_epoch=lambda epoch, loss: progress.update(task, completed=epoch, loss=f"{loss:.3f}"),
        )
    train_seconds = time.monotonic() - train_started
    accuracy_after = accuracy(predict, data.test_images, data.test_labels)

    pre_table = Table(title="Pre-training in TensorFlow (loss of the last batch)")
    for column in ("epoch", "tutorial", "ours (card)", "ours vs tutorial"):
        pre_table.add_column(column, justify="right")
    for epoch in reported_epochs(pre_epochs):
        ours = pre_losses[epoch - 1]
        reference = TUTORIAL_PRE_TRAINING.get(epoch)
        pre_table.add_row(str(epoch), fmt(reference), fmt(ours), relative(ours, reference))

    device_table = Table(
        title=f"On device: {args.epochs} epochs through the train signature (tf.lite.Interpreter)"
    )
    for column in ("epoch", "tutorial", "ours", "ours vs tutorial"):
        device_table.add_column(column, justify="right")
    start_reference = TUTORIAL_PRE_TRAINING.get(pre_epochs)
    device_table.add_row(
        f"{pre_epochs} (start)",
        fmt(start_reference),
        fmt(pre_losses[-1]),
        relative(pre_losses[-1], start_reference),
    )
    for epoch in reported_epochs(args.epochs):
        ours = losses[epoch - 1]
        reference = TUTORIAL_ON_DEVICE.get(epoch)
        device_table.add_row(str(pre_epochs + epoch), fmt(reference), fmt(ours), relative(ours, reference))

    accuracy_table = Table(title=f"Test accuracy ({len(data.test_images):,} images)")
    for column in ("model", "accuracy"):
        accuracy_table.add_column(column, justify="right")
    accuracy_table.add_row("card (converted model)", f"{card['tflite_test_accuracy']:.4f}")
    accuracy_table.add_row("before on-device training", f"{accuracy_before:.4f}")
    accuracy_table.add_row(f"after {args.epochs} on-device epochs", f"{accuracy_after:.4f}")
    accuracy_table.add_row("change", f"{accuracy_after - accuracy_before:+.4f}")

    for table in (pre_table, device_table, accuracy_table):
        console.print(table)

    first = reported_epochs(args.epochs)[0]
    continues = losses[first - 1] < pre_losses[-1]
    checks = [
        (
            continues,
            f"on-device loss at epoch {pre_epochs + first} ({losses[first - 1]:.4f}) is below where "
            f"pre-training stopped ({pre_losses[-1]:.4f})",
        )
    ]
    window = min(TREND_WINDOW, args.epochs // 2)
    if window:
        head, tail = float(np.mean(losses[:window])), float(np.mean(losses[-window:]))
        checks.append(
            (
                tail < head,
                f"loss keeps falling: mean of the last {window} on-device epochs ({tail:.4f}) "
                f"is below the first {window}'s ({head:.4f})",
            )
        )
    for passed, text in checks:
        console.print(f"{'[green]PASS[/green]' if passed else '[red]FAIL[/red]'} {text}")

    if args.plot:
        plot_losses(
            args.plot,
            {
                "Pre-training": (list(range(1, pre_epochs + 1)), pre_losses),
                "On device": (list(range(pre_epochs + 1, pre_epochs + args.epochs + 1)), losses),
            },
        )
        console.print(f"wrote {args.plot}")

    steps = args.epochs * len(batches(len(data.train_images), args.batch_size))
    console.print(
        f"took {time.monotonic() - started:.1f} s; on-device training {train_seconds:.1f} s "
        f"({steps:,} train steps, {steps / train_seconds:,.0f} steps/s)"
    )
    return 0 if all(passed for passed, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
