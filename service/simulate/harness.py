"""Drive a fleet service through a personalization round, over HTTP with ``FleetClient``.

Each device runs its own pipeline, devices concurrently on a thread pool: evaluate (local test data
and the global test subset), train on its local data (streamed ``train`` calls or a background job
over uploaded samples), save, restart, and evaluate again. The restart makes the "after" numbers
come from what the device saved: its new interpreter restores the checkpoint.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

import numpy as np

from service.client import FleetClient
from service.data.partition import balanced_subset, partition
from service.data.spec import DeviceSplit, PartitionSpec
from service.errors import FleetError
from service.model.dataset import FashionMNIST, one_hot

Mode = Literal["stream", "jobs"]
MODES: tuple[str, ...] = get_args(Mode)
INFER_CHUNK = 1000
"""Images per infer request when evaluating (about 3 MB of float32 each)."""
UPLOAD_CHUNK = 2000
"""Samples per add_samples request."""
GRID_SIZE = 25


@dataclass(frozen=True)
class SimulationConfig:
    partition: PartitionSpec = field(default_factory=PartitionSpec)
    epochs: int = 3
    batch_size: int = 32
    mode: Mode = "stream"
    concurrency: int = 4
    global_test_size: int = 2000
    grid_device: int = 0
    device_prefix: str = "sim"
    job_timeout: float = 1800.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.concurrency < 1 or self.global_test_size < 1:
            raise ValueError("epochs, batch_size, concurrency and global_test_size must be at least 1")
        if not 0 <= self.grid_device < self.partition.devices:
            raise ValueError(f"grid_device must name one of the {self.partition.devices} devices (0-based)")

    def device_seed(self, index: int) -> int:
        """The shuffling seed of one device, the same in both modes."""
        return self.partition.seed * 100_003 + index

    def steps_per_device(self) -> int:
        return self.epochs * math.ceil(self.partition.train_per_device / self.batch_size)


class ProgressSink(Protocol):
    """Where the harness reports progress (a rich progress bar in the CLI; nothing in tests)."""

    def advance(self, phase: str, amount: int = 1) -> None: ...


class NoProgress:
    def advance(self, phase: str, amount: int = 1) -> None:
        pass


PHASES = ("evaluate", "train", "devices")
"""The progress phases: evaluations (two per device), train steps, and finished devices."""


@dataclass(frozen=True)
class DeviceOutcome:
    """One device's before and after accuracies, on its local test data and on the global subset."""

    device_id: str
    index: int
    preferred_classes: tuple[int, ...]
    label_distribution: tuple[float, ...]
    train_size: int
    test_size: int
    local_before: float
    local_after: float
    global_before: float
    global_after: float
    steps: int
    final_loss: float | None
    train_seconds: float


@dataclass(frozen=True)
class GridSample:
    """The grid device's first 25 local test images, their labels and its predictions after training."""

    device_id: str
    test_indices: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray


@dataclass(frozen=True)
class SimulationResult:
    config: SimulationConfig
    dataset_source: str
    devices: list[DeviceOutcome]
    histories: dict[str, list[dict[str, Any]]]
    grid: GridSample
    seconds: float


def predict(client: FleetClient, device_id: str, images: np.ndarray) -> np.ndarray:
    """The device's predicted class for each image, asking in chunks."""
    chunks = [
        np.argmax(client.infer(device_id, x=images[i : i + INFER_CHUNK])["output"], axis=1)
        for i in range(0, len(images), INFER_CHUNK)
    ]
    return np.concatenate(chunks)


def device_ids(prefix: str, count: int) -> list[str]:
    """``PREFIX-NN``, numbered from 0 with as many digits as the last one needs."""
    width = len(str(count - 1))
    return [f"{prefix}-{i:0{width}d}" for i in range(count)]


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predictions == labels))


class Simulation:
    """A planned run: the partition and the global test subset, made on construction.

    Construction raises ValueError for a partition the dataset cannot supply, before any HTTP;
    ``run`` then executes the plan against a service.
    """

    def __init__(self, data: FashionMNIST, config: SimulationConfig) -> None:
        self.data, self.config = data, config
        self.splits = partition(data.train_labels, data.test_labels, config.partition)
        self.global_indices = balanced_subset(
            data.test_labels, config.global_test_size, config.partition.seed
        )

    def device_ids(self) -> list[str]:
        return device_ids(self.config.device_prefix, self.config.partition.devices)

    def run(self, client: FleetClient, progress: ProgressSink | None = None) -> SimulationResult:
        """Create the devices, run every device's pipeline, collect histories; one result."""
        return _Run(self, client, progress or NoProgress()).execute()


class _Run:
    """One execution of a plan: the devices' pipelines on a thread pool sharing one client."""

    def __init__(self, plan: Simulation, client: FleetClient, progress: ProgressSink) -> None:
        self.data, self.config = plan.data, plan.config
        self.plan, self.client, self.progress = plan, client, progress
        self.global_indices = plan.global_indices
        self._grid: GridSample | None = None
        self._lock = threading.Lock()

    def execute(self) -> SimulationResult:
        start = time.monotonic()
        ids = self.client.create_devices(self.plan.device_ids())
        outcomes: list[DeviceOutcome | None] = [None] * len(ids)
        with ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="simulate") as pool:
            futures = {
                pool.submit(self._device, device_id, split): split.index
                for device_id, split in zip(ids, self.plan.splits, strict=True)
            }
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            errors = [error for f in done if (error := f.exception()) is not None]
            if errors:
                for future in futures:
                    future.cancel()
                raise errors[0]
            for future, index in futures.items():
                outcomes[index] = future.result()
        histories = {device_id: self.client.history(device_id) for device_id in ids}
        assert self._grid is not None
        return SimulationResult(
            config=self.config,
            dataset_source=self.data.source,
            devices=[o for o in outcomes if o is not None],
            histories=histories,
            grid=self._grid,
            seconds=time.monotonic() - start,
        )

    # -- one device ------------------------------------------------------------------------

    def _evaluate(self, device_id: str, split: DeviceSplit) -> tuple[np.ndarray, float, float]:
        """Local predictions, local accuracy and global accuracy."""
        data = self.data
        local = predict(self.client, device_id, data.test_images[split.test_indices])
        global_ = predict(self.client, device_id, data.test_images[self.global_indices])
        self.progress.advance("evaluate")
        return (
            local,
            accuracy(local, data.test_labels[split.test_indices]),
            accuracy(global_, data.test_labels[self.global_indices]),
        )

    def _device(self, device_id: str, split: DeviceSplit) -> DeviceOutcome:
        _, local_before, global_before = self._evaluate(device_id, split)
        started = time.monotonic()
        train = self._stream if self.config.mode == "stream" else self._job
        steps, final_loss = train(device_id, split)
        train_seconds = time.monotonic() - started
        self.client.restart(device_id)
        local, local_after, global_after = self._evaluate(device_id, split)
        if split.index == self.config.grid_device:
            self._keep_grid(device_id, split, local)
        self.progress.advance("devices")
        return DeviceOutcome(
            device_id=device_id,
            index=split.index,
            preferred_classes=split.preferred_classes,
            label_distribution=tuple(round(float(p), 6) for p in split.label_distribution),
            train_size=len(split.train_indices),
            test_size=len(split.test_indices),
            local_before=local_before,
            local_after=local_after,
            global_before=global_before,
            global_after=global_after,
            steps=steps,
            final_loss=final_loss,
            train_seconds=train_seconds,
        )

    def _keep_grid(self, device_id: str, split: DeviceSplit, predictions: np.ndarray) -> None:
        indices = split.test_indices[:GRID_SIZE]
        with self._lock:
            self._grid = GridSample(
                device_id=device_id,
                test_indices=indices,
                images=self.data.test_images[indices],
                labels=self.data.test_labels[indices],
                predictions=predictions[:GRID_SIZE],
            )

    def _stream(self, device_id: str, split: DeviceSplit) -> tuple[int, float | None]:
        """Batches through the ``train`` signature, reshuffled each epoch; then ``save``.

        The shuffling (a ``default_rng(seed)`` permutation per epoch) is the one the service's jobs
        use, so with the same seed both modes should present the same batches in the same order.
        """
        rng = np.random.default_rng(self.config.device_seed(split.index))
        x, y = (
            self.data.train_images[split.train_indices],
            one_hot(self.data.train_labels[split.train_indices]),
        )
        steps, loss = 0, None
        for _ in range(self.config.epochs):
            order = rng.permutation(len(x))
            for i in range(0, len(x), self.config.batch_size):
                batch = order[i : i + self.config.batch_size]
                loss = float(self.client.train(device_id, x=x[batch], y=y[batch])["loss"])
                steps += 1
                self.progress.advance("train")
        self.client.save(device_id)
        return steps, loss

    def _job(self, device_id: str, split: DeviceSplit) -> tuple[int, float | None]:
        """Upload the local train data as device samples, then one background job that saves at the end."""
        x, y = (
            self.data.train_images[split.train_indices],
            one_hot(self.data.train_labels[split.train_indices]),
        )
        for i in range(0, len(x), UPLOAD_CHUNK):
            stored = self.client.add_samples(device_id, x=x[i : i + UPLOAD_CHUNK], y=y[i : i + UPLOAD_CHUNK])
            if stored.get("dropped"):
                raise FleetError(
                    f"device {device_id} keeps at most {stored['capacity']} samples; "
                    f"ask for fewer than {len(x)} per device"
                )
        job = self.client.start_job(
            device_id,
            epochs=self.config.epochs,
            batch_size=self.config.batch_size,
            save=True,
            shuffle=True,
            seed=self.config.device_seed(split.index),
        )
        reported = 0

        def report(polled: dict[str, Any]) -> None:
            nonlocal reported
            steps_done = int(polled.get("steps_done") or 0)
            self.progress.advance("train", steps_done - reported)
            reported = steps_done

        job = self.client.wait_job(device_id, job["id"], timeout=self.config.job_timeout, on_poll=report)
        if job["state"] != "succeeded":
            raise FleetError(f"job {job['id']} of device {device_id} {job['state']}: {job.get('error')}")
        return reported, job.get("loss")
