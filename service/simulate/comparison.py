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

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from service.client import FleetClient
from service.errors import FleetError, InvalidRequest
from service.simulate.comparison_config import ARMS, START_VERSION, ComparisonConfig
from service.simulate.comparison_result import ComparedDevice, ComparisonResult, RoundRecord, Scores
from service.simulate.harness import NoProgress, ProgressSink, device_ids

T = TypeVar("T")


@runtime_checkable
class SizedProgress(Protocol):
    """A progress sink whose phases' totals can be set once known (a disjoint partition's steps)."""

    def advance(self, phase: str, amount: int = 1) -> None: ...

    def total(self, phase: str, count: int) -> None: ...


R = TypeVar("R")


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
        created = self.client.create_devices(self.ids, model=self.config.model)
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
            run_spec=dict(run.get("spec") or {}),
            stopped=run.get("stopped"),
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
        expected = self.config.dataset_content_id
        if expected is not None and described.get("content_id") != expected:
            raise InvalidRequest(
                f"dataset '{name}' is not the one the run was made on: content ID "
                f"{described.get('content_id')}, the spec's {expected}"
            )
        count = min(self.config.global_test_size, int(splits["test"]["count"]))
        dataset = {
            "name": name,
            "content_id": described.get("content_id"),
            "source": described.get("source"),
            "num_classes": described.get("num_classes"),
            "train_count": splits["train"]["count"],
            "test_count": splits["test"]["count"],
        }
        return dataset, count

    def _assign(self, devices: list[_Device]) -> None:
        self.client.assign(
            self.config.dataset, ids=[d.device_id for d in devices], **self.config.partition.assign_body()
        )

        def read(device: _Device) -> None:
            found = self.client.assignment(device.device_id)
            if found is None:
                raise FleetError(f"device {device.device_id} has no assignment after assigning it")
            device.assignment = found

        self._each(read, devices)
        if self.config.partition.disjoint and isinstance(self.progress, SizedProgress):
            batch = self.config.batch_size
            batches = sum(-(-int(d.assignment.get("train_size", 0)) // batch) for d in devices)
            self.progress.total("local_only", batches * self.config.epochs)
            self.progress.total("fine_tune", batches * self.config.tune_epochs)
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
        self.client.assign_profiles(self.config.profiles, ids=ids, seed=self.config.seeds.profiles)
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
            **config.strategy.rounds_body(),
            **config.selection.rounds_body(),
            **config.privacy.rounds_body(),
            seed=config.seeds.rounds,
            start_version=START_VERSION,
            evaluate_on={"dataset": config.dataset, "split": "test", "limit": config.global_test_size},
            **extra,
        )
        reported = 0

        def report(polled: Mapping[str, Any]) -> None:
            nonlocal reported
            progress = polled["progress"]
            per_round = int(progress.get("participants_per_round") or config.per_round)  # fedbuff: K
            if per_round != config.per_round and isinstance(self.progress, SizedProgress):
                runs = 1 if config.profiles is None else 2
                self.progress.total("rounds", runs * config.rounds * per_round)
            done = progress["rounds_done"] * per_round + progress["participants_done"]
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
