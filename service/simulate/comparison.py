"""Compare three arms on one server-side partition, over HTTP with ``FleetClient``; no data is uploaded.

The devices are assigned their local data from a dataset the service keeps (one ``assign`` call), then:

1. **local only**: each device trains over its assigned data from the baseline model (a job), and is
   evaluated on its local test data and on the global test split (the dataset's first
   ``global_test_size`` test samples);
2. **federated**: the devices are reset, federated rounds run over them from version 0 (the model's own
   weights), and the final global version is evaluated on each device's local test data, in an
   interpreter of its own (the device is untouched);
3. **federated + fine-tuning**: each device adopts the final version and trains over its data again
   (a job that saves), then is evaluated like the first arm.

The global accuracy of arm 2 is one number (the same weights on the same samples), measured once.

With ``profiles`` (a profile mix), the rounds run twice on the same partition: first on ideal phones
(no profiles: the accuracy without heterogeneity), then on the devices profiled from the mix, with
``deadline`` (simulated seconds per round) dropping stragglers or taking their updates late. Arms 2 and
3 use the heterogeneous run; the report shows both runs' accuracy per round, the simulated round
durations and which devices straggled.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args

from service.client import FleetClient
from service.data.spec import PartitionSpec
from service.errors import FleetError, InvalidRequest
from service.federated.spec import MAX_ROUNDS
from service.simulate.harness import NoProgress, ProgressSink, device_ids

Aggregation = Literal["fedavg", "fedavgm", "fedadam"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
Arm = Literal["local_only", "federated", "fine_tuned"]
ARMS: tuple[Arm, ...] = get_args(Arm)
ARM_TITLES: Mapping[str, str] = {
    "local_only": "local only",
    "federated": "federated",
    "fine_tuned": "federated + fine-tuning",
}
PHASES = ("assign", "local_only", "rounds", "evaluate", "fine_tune")
"""Progress phases: the assignment, local-only train steps, round participants, evaluations and
fine-tuning steps."""
START_VERSION = 0
"""Rounds start from the model's own weights, the baseline the local-only arm starts from too."""


def mix_name(mix: str | Mapping[str, Any]) -> str:
    return mix if isinstance(mix, str) else str(mix.get("name", "custom"))


T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ComparisonConfig:
    dataset: str = "fashion-mnist"
    partition: PartitionSpec = field(default_factory=PartitionSpec)
    rounds: int = 10
    participants: int | None = None
    """Devices per round; None: all of them."""
    aggregation: Aggregation = "fedavg"
    epochs: int = 3
    """Local epochs per round, and the local-only arm's epochs."""
    fine_tune_epochs: int | None = None
    """Epochs of arm 3's fine-tuning; None: ``epochs``."""
    batch_size: int = 32
    concurrency: int = 4
    global_test_size: int = 2000
    device_prefix: str = "sim"
    timeout: float = 3600.0
    """Seconds any one job, or the whole run of rounds, may take."""
    profiles: str | Mapping[str, Any] | None = None
    """A profile mix (a built-in mix's name, or a mix as ``ProfileMix.describe()`` gives it)."""
    deadline: float | None = None
    """Simulated seconds a round waits for its participants (needs ``profiles``)."""
    stragglers: Literal["drop", "stale"] = "drop"

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"unknown aggregation {self.aggregation!r}; choose one of {', '.join(AGGREGATIONS)}"
            )
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise ValueError(f"rounds must be between 1 and {MAX_ROUNDS:,} (got {self.rounds})")
        devices = self.partition.devices
        if self.participants is not None and not 1 <= self.participants <= devices:
            raise ValueError(
                f"participants must be between 1 and the {devices} devices (got {self.participants})"
            )
        if self.deadline is not None and (self.profiles is None or not self.deadline > 0):
            raise ValueError("a deadline needs --profiles, and must be a positive number of seconds")
        numbers = (self.epochs, self.fine_tune_epochs or 1, self.batch_size, self.concurrency)
        if min(*numbers, self.global_test_size) < 1:
            raise ValueError(
                "epochs, fine_tune_epochs, batch_size, concurrency and global_test_size must be at least 1"
            )

    @property
    def per_round(self) -> int:
        return self.participants or self.partition.devices

    @property
    def tune_epochs(self) -> int:
        return self.fine_tune_epochs or self.epochs

    def device_seed(self, index: int) -> int:
        """The shuffling seed of a device's jobs (as ``SimulationConfig.device_seed``)."""
        return self.partition.seed * 100_003 + index

    def steps(self, epochs: int) -> int:
        """Train steps of one device's job of ``epochs`` epochs."""
        return epochs * math.ceil(self.partition.train_per_device / self.batch_size)

    def evaluations(self) -> int:
        """Every evaluation the run asks for: two per device in arms 1 and 3, one in arm 2, and the
        global accuracy of the start and the final version."""
        return 5 * self.partition.devices + 2


@dataclass(frozen=True)
class Scores:
    local: float
    """Accuracy on the device's own test data."""
    global_: float
    """Accuracy on the global test split."""


@dataclass(frozen=True)
class ComparedDevice:
    device_id: str
    index: int
    preferred_classes: tuple[int, ...]
    label_distribution: tuple[float, ...]
    train_size: int
    test_size: int
    arms: Mapping[str, Scores]
    """Scores by arm (``ARMS``)."""
    local_only_loss: float | None
    fine_tune_loss: float | None


@dataclass(frozen=True)
class RoundRecord:
    """One round of the run, as the service measured it."""

    round: int
    version: int | None
    participants: list[str]
    finished: int
    failed: int
    failures: list[dict[str, str]]
    samples: int
    mean_loss: float | None
    global_accuracy: float | None
    """The round's new global version on the global test split."""
    mean_local_accuracy: float | None
    """The participants' mean accuracy on their own test data after this round's local training."""
    seconds: float
    straggled: int = 0
    dropped: int = 0
    offline: int = 0
    stragglers: tuple[str, ...] = ()
    simulated_seconds: float | None = None
    """What the round took on the profiled phones (None without profiles)."""
    ideal_global_accuracy: float | None = None
    """The same round's global accuracy in the run on ideal phones (with profiles only)."""

    @classmethod
    def of(cls, view: Mapping[str, Any], ideal: Mapping[str, Any] | None = None) -> RoundRecord:
        return cls(
            round=int(view["round"]),
            version=view.get("version"),
            participants=list(view.get("participants", [])),
            finished=int(view.get("finished", 0)),
            failed=int(view.get("failed", 0)),
            failures=list(view.get("failures", [])),
            samples=int(view.get("samples", 0)),
            mean_loss=view.get("mean_loss"),
            global_accuracy=view.get("global_accuracy"),
            mean_local_accuracy=view.get("mean_local_accuracy"),
            seconds=float(view.get("seconds", 0.0)),
            straggled=int(view.get("straggled", 0)),
            dropped=int(view.get("dropped", 0)),
            offline=int(view.get("offline", 0)),
            stragglers=tuple(view.get("stragglers", ())),
            simulated_seconds=view.get("simulated_seconds") if ideal is not None else None,
            ideal_global_accuracy=None if ideal is None else ideal.get("global_accuracy"),
        )


@dataclass(frozen=True)
class ComparisonResult:
    config: ComparisonConfig
    dataset: Mapping[str, Any]
    """The dataset's name, source and split sizes, as the service describes it."""
    model: str
    run_id: str
    final_version: int
    start_global_accuracy: float
    """Version 0 (the model's own weights) on the global test split: where every arm starts."""
    global_test_count: int
    rounds: list[RoundRecord]
    devices: list[ComparedDevice]
    seconds: float
    phase_seconds: Mapping[str, float]
    classes: Mapping[str, str] = field(default_factory=dict)
    """Each device's profile class (with profiles)."""

    @property
    def profiled(self) -> bool:
        return self.config.profiles is not None

    def straggled(self, device_id: str) -> int:
        """Rounds in which the device straggled (as far as the rounds' lists of stragglers show)."""
        return sum(device_id in r.stragglers for r in self.rounds)

    def mean(self, arm: str, where: Literal["local", "global_"]) -> float:
        values = [getattr(d.arms[arm], where) for d in self.devices]
        return sum(values) / len(values)


def in_parallel(workers: int, function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``function`` over ``items`` on ``workers`` threads, results in order; the first error is raised
    once the calls already running have ended (the others are not started)."""
    with ThreadPoolExecutor(workers, thread_name_prefix="simulate") as pool:
        futures = [pool.submit(function, item) for item in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            error = future.exception()
            if error is not None:
                for other in futures:
                    other.cancel()
                raise error
        return [future.result() for future in futures]


class Comparison:
    """A planned comparison; ``run`` executes it against a service."""

    def __init__(self, config: ComparisonConfig) -> None:
        self.config = config

    def device_ids(self) -> list[str]:
        return device_ids(self.config.device_prefix, self.config.partition.devices)

    def run(self, client: FleetClient, progress: ProgressSink | None = None) -> ComparisonResult:
        return _Run(self, client, progress or NoProgress()).execute()


@dataclass
class _Device:
    """What the run learns about one device as it goes."""

    device_id: str
    index: int
    assignment: Mapping[str, Any] = field(default_factory=dict)
    arms: dict[str, Scores] = field(default_factory=dict)
    losses: dict[str, float | None] = field(default_factory=dict)


class _Run:
    def __init__(self, plan: Comparison, client: FleetClient, progress: ProgressSink) -> None:
        self.config, self.client, self.progress = plan.config, client, progress
        self.ids = plan.device_ids()
        self.phase_seconds: dict[str, float] = {}

    def execute(self) -> ComparisonResult:
        started = time.monotonic()
        dataset, test_count = self._check_dataset()
        clock = time.monotonic()
        created = self.client.create_devices(self.ids)
        devices = [_Device(device_id, index) for index, device_id in enumerate(created)]
        try:
            self._assign(devices)
        except FleetError:  # a partition the dataset cannot supply: leave no devices behind
            self.client.delete_devices(created)
            raise
        model = str(self.client.device(created[0])["model"])
        self._lap("assign", clock)

        clock = time.monotonic()
        self._each(self._local_only, devices)
        self._lap("local_only", clock)

        clock = time.monotonic()
        self._each(lambda d: self.client.reset(d.device_id), devices)
        run = self._rounds()
        ideal: list[Mapping[str, Any]] | None = None
        classes: dict[str, str] = {}
        if self.config.profiles is not None:
            ideal = list(run["rounds"])
            self._each(lambda d: self.client.reset(d.device_id), devices)
            classes = self._profile(created)
            run = self._rounds(deadline=self.config.deadline)
        final = int(run["version"])
        start_global = self._global(created[0], START_VERSION)
        final_global = self._global(created[0], final)
        self._each(lambda d: self._score_version(d, final, final_global), devices)
        self._lap("rounds", clock)

        clock = time.monotonic()
        self._each(lambda d: self._fine_tune(d, final), devices)
        self._lap("fine_tune", clock)
        return ComparisonResult(
            config=self.config,
            dataset=dataset,
            model=model,
            run_id=str(run["id"]),
            final_version=final,
            start_global_accuracy=start_global,
            global_test_count=test_count,
            rounds=[
                RoundRecord.of(r, None if ideal is None else ideal[i]) for i, r in enumerate(run["rounds"])
            ],
            devices=[self._outcome(d) for d in devices],
            seconds=time.monotonic() - started,
            phase_seconds=self.phase_seconds,
            classes=classes,
        )

    def _lap(self, phase: str, since: float) -> None:
        self.phase_seconds[phase] = round(time.monotonic() - since, 3)

    def _each(self, function: Callable[[_Device], object], devices: Sequence[_Device]) -> None:
        in_parallel(self.config.concurrency, function, devices)

    # -- the dataset and the assignment ------------------------------------------------------

    def _check_dataset(self) -> tuple[dict[str, Any], int]:
        """The dataset's description and the size of its global test split; refused (before any device
        is made) without a test split or a label array."""
        name = self.config.dataset
        described = self.client.dataset(name)
        splits = described.get("splits", {})
        if "test" not in splits or "train" not in splits:
            raise InvalidRequest(f"dataset '{name}' needs a train and a test split; it has {sorted(splits)}")
        if described.get("label") is None:
            raise InvalidRequest(f"dataset '{name}' has no label array: accuracy needs one")
        count = min(self.config.global_test_size, int(splits["test"]["count"]))
        dataset = {
            "name": name,
            "source": described.get("source"),
            "num_classes": described.get("num_classes"),
            "train_count": splits["train"]["count"],
            "test_count": splits["test"]["count"],
        }
        return dataset, count

    def _assign(self, devices: list[_Device]) -> None:
        spec = self.config.partition
        self.client.assign(
            self.config.dataset,
            ids=[d.device_id for d in devices],
            scheme=spec.kind,
            train_per_device=spec.train_per_device,
            test_per_device=spec.test_per_device,
            alpha=spec.alpha,
            classes_per_device=spec.classes_per_device,
            interest_share=spec.interest_share,
            replace=spec.replace,
            seed=spec.seed,
        )

        def read(device: _Device) -> None:
            found = self.client.assignment(device.device_id)
            if found is None:
                raise FleetError(f"device {device.device_id} has no assignment after assigning it")
            device.assignment = found

        self._each(read, devices)
        self.progress.advance("assign")

    # -- training and evaluation -------------------------------------------------------------

    def _job(self, device: _Device, phase: str, epochs: int, save: bool) -> float | None:
        """A job over the device's assigned data; its last loss."""
        job = self.client.start_job(
            device.device_id,
            epochs=epochs,
            batch_size=self.config.batch_size,
            save=save,
            seed=self.config.device_seed(device.index),
            data="assigned",
        )
        reported = 0

        def report(polled: Mapping[str, Any]) -> None:
            nonlocal reported
            done = int(polled.get("steps_done") or 0)
            self.progress.advance(phase, done - reported)
            reported = done

        job = self.client.wait_job(device.device_id, job["id"], timeout=self.config.timeout, on_poll=report)
        if job["state"] != "succeeded":
            raise FleetError(
                f"job {job['id']} of device {device.device_id} {job['state']}: {job.get('error')}"
            )
        loss = job.get("loss")
        return None if loss is None else float(loss)

    def _score(self, device_id: str, version: int | None = None) -> Scores:
        local = self._accuracy(device_id, version=version)
        global_ = self._accuracy(
            device_id, dataset=self.config.dataset, limit=self.config.global_test_size, version=version
        )
        return Scores(local, global_)

    def _accuracy(self, device_id: str, **on: Any) -> float:
        evaluated = self.client.evaluate(device_id, **on)
        self.progress.advance("evaluate")
        return float(evaluated["accuracy"])

    def _global(self, device_id: str, version: int) -> float:
        return self._accuracy(
            device_id, dataset=self.config.dataset, limit=self.config.global_test_size, version=version
        )

    def _local_only(self, device: _Device) -> None:
        device.losses["local_only"] = self._job(device, "local_only", self.config.epochs, save=False)
        device.arms["local_only"] = self._score(device.device_id)

    def _score_version(self, device: _Device, version: int, global_accuracy: float) -> None:
        local = self._accuracy(device.device_id, version=version)
        device.arms["federated"] = Scores(local, global_accuracy)

    def _fine_tune(self, device: _Device, version: int) -> None:
        self.client.adopt(device.device_id, version)
        device.losses["fine_tuned"] = self._job(device, "fine_tune", self.config.tune_epochs, save=True)
        device.arms["fine_tuned"] = self._score(device.device_id)

    # -- rounds ------------------------------------------------------------------------------

    def _profile(self, ids: list[str]) -> dict[str, str]:
        """Profile the devices from the mix (seeded by the partition's seed); each one's class."""
        assert self.config.profiles is not None
        self.client.assign_profiles(self.config.profiles, ids=ids, seed=self.config.partition.seed)
        views = in_parallel(self.config.concurrency, self.client.device, ids)
        return {str(v["id"]): str((v.get("profile") or {}).get("class", "-")) for v in views}

    def _rounds(self, deadline: float | None = None) -> dict[str, Any]:
        config = self.config
        extra: dict[str, Any] = (
            {} if deadline is None else {"deadline": deadline, "stragglers": config.stragglers}
        )
        started = self.client.start_rounds(
            ids=self.ids,
            rounds=config.rounds,
            participants=config.participants,
            epochs=config.epochs,
            batch_size=config.batch_size,
            aggregation=config.aggregation,
            seed=config.partition.seed,
            start_version=START_VERSION,
            evaluate_on={"dataset": config.dataset, "split": "test", "limit": config.global_test_size},
            **extra,
        )
        reported = 0

        def report(polled: Mapping[str, Any]) -> None:
            nonlocal reported
            progress = polled["progress"]
            done = progress["rounds_done"] * config.per_round + progress["participants_done"]
            self.progress.advance("rounds", done - reported)
            reported = done

        run = self.client.wait_rounds(started["id"], timeout=config.timeout, on_poll=report)
        if run["state"] != "succeeded":
            raise FleetError(f"round run {run['id']} {run['state']}: {run.get('error')}")
        return run

    def _outcome(self, device: _Device) -> ComparedDevice:
        found = device.assignment
        return ComparedDevice(
            device_id=device.device_id,
            index=device.index,
            preferred_classes=tuple(int(c) for c in found.get("preferred_classes", ())),
            label_distribution=tuple(float(p) for p in found.get("label_distribution", ())),
            train_size=int(found.get("train_size", 0)),
            test_size=int(found.get("test_size", 0)),
            arms={arm: device.arms[arm] for arm in ARMS},
            local_only_loss=device.losses.get("local_only"),
            fine_tune_loss=device.losses.get("fine_tuned"),
        )
