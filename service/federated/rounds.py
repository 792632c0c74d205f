"""Federated rounds: pick participants, give them the global weights, train them, aggregate, repeat.

A run of ``rounds`` rounds over a set of devices, in the background (``RoundRunner``, one run at a
time, its participants on ``workers`` threads). Each round:

1. picks ``participants`` devices at random: the first online ones in a permutation of the run's
   devices seeded by the run's seed and the round's number (a device's record is read when the walk
   meets it: an unprofiled run reads only its participants');
2. each participant adopts the current global version, trains ``epochs`` over its assigned data
   (shuffled by a seed of its own), and writes its weights for the server; it is then evaluated on
   its local test data, and its weights are kept, dropped or saved as the run says;
3. the updates are averaged, weighted by samples, as they arrive, in participant order (a reorder
   window of a few updates): memory holds one model and that window, however many participate,
   and the float arithmetic is the same in every run;
4. the server's optimizer (FedAvg, FedAvgM, FedAdam) turns the average into the next global version,
   which is evaluated on the run's evaluation split.

With ``aggregation="none"`` participants train from their own weights and nothing is aggregated:
pure local personalization, measured the same way.

Devices with a profile (``service.profiles``) take simulated time. Each round starts at a simulated
time T (the run's ``start_time``, then the end of the round before): devices offline at T are not
picked (when none is online, the round starts when the first comes online). A picked profiled
participant takes ``d`` simulated seconds (``local.participation_seconds``: download, train, upload,
local evaluation); it drops out, untrained, with its profile's ``dropout`` probability or when its
online spell ends before T + d. With a ``deadline``, one with d over it is a straggler: it trains,
and its update is dropped or (``stragglers="stale"``) added, discounted, to the mean of the first
round that ends at or after T + d (``_Late``). A round lasts the deadline if anyone was late or
dropped out; else until its last participant finished, dropped out or failed (at least
``MIN_ROUND_SECONDS`` when one is profiled: simulated time always moves). Unprofiled devices take no
simulated time and never drop out nor straggle.

Two runs with the same seed over the same devices and data give identical metrics. A participant that
fails (busy with a job, no data, deleted) is recorded and left out of the average; a round in which
none finishes fails the run. Cancelling stops the run before its next training step; the round in
progress makes no version. Run records are kept in ``data_dir/rounds/<id>.json`` (the newest
``KEEP_RUNS``); a run that was going on when the service stopped is ``interrupted``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from service.errors import FleetError, InvalidRequest, RoundEnded, RoundNotFound
from service.federated.aggregation import ServerOptimizer, WeightedMean, is_averaged
from service.federated.checkpoints import Weights, same_layout
from service.federated.local import LocalTraining, participation_seconds
from service.profiles import DeviceProfile
from service.profiles.availability import device_key, next_online, online_until
from service.storage import read_json, utc_now, write_json

log = logging.getLogger(__name__)

Aggregation = Literal["fedavg", "fedavgm", "fedadam", "none"]
AGGREGATIONS: tuple[str, ...] = ("fedavg", "fedavgm", "fedadam", "none")
DeviceWeights = Literal["trained", "checkpoint", "saved"]
Stragglers = Literal["drop", "stale"]
STRAGGLERS: tuple[str, ...] = ("drop", "stale")
MAX_STALENESS = 4
"""Rounds late a stale update may be and still be added; a later one is dropped."""
MAX_PENDING_STALE = 32
"""Stale updates kept at once, waiting for the round they arrive in (a model's weights each): a straggler
whose update finds the list full has it dropped (it is counted as straggled, like any straggler). Which
round an update arrives in is known only once that round has ended, so waiting updates cannot be summed
ahead of it."""
MIN_DEADLINE, MAX_DEADLINE = 0.001, 1e9
"""The simulated seconds a round's deadline may be."""
MAX_START_TIME = 1e12
"""The latest simulated time a run may start at (about 31,700 years)."""
MIN_ROUND_SECONDS = 0.001
"""The shortest simulated round when a profiled participant was picked: simulated time always moves."""
SHOWN_STRAGGLERS = 100
"""Stragglers listed per round (``straggled`` counts them all)."""
DROPOUT_STREAM = 0x64726F70
"""Tags the generator of a participant's dropout draw: seeded by the run's seed, the round and the
device's key like its shuffling, but not the same stream."""
RunState = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
ACTIVE: tuple[RunState, ...] = ("queued", "running")
ROUNDS_DIR = "rounds"
KEEP_RUNS = 50
MAX_ROUNDS = 1000
SHOWN_FAILURES = 20
"""Failures listed per round (all are counted)."""
SHOWN_PARTICIPANTS = 100
"""Participants listed per round (``picked`` counts them all): a run's record stays small."""
WINDOW_PER_WORKER = 8
"""Participants started ahead of the one whose update is added next, per worker: a slow one does not
idle the others, and at most this many updates wait (a model's weights each)."""
PERSIST_EVERY = 1.0
"""Seconds between writes of a running run's record (it is written at every state change too)."""


@dataclass(frozen=True)
class Evaluation:
    dataset: str
    split: str = "test"
    limit: int | None = None
    """Evaluate on the split's first ``limit`` samples (None: all)."""


@dataclass(frozen=True)
class RoundSpec:
    model: str
    devices: tuple[str, ...]
    """The devices the run picks from (resolved when the run is asked for)."""
    rounds: int = 1
    participants: int | None = None
    """Devices per round (None: all of them)."""
    training: LocalTraining = field(default_factory=LocalTraining)
    aggregation: Aggregation = "fedavg"
    server: ServerOptimizer | None = None
    """The server's optimizer; None: the aggregation's defaults."""
    seed: int = 0
    start_version: int | None = None
    """The global version the first round starts from (None: the model's latest)."""
    evaluation: Evaluation | None = None
    local_accuracy: bool = True
    """Evaluate each participant on its local test data after it trains."""
    device_weights: DeviceWeights = "trained"
    """After a participant sends its update: keep the trained weights (unsaved, like any training),
    drop them (the device's next call starts from its checkpoint), or save them as its checkpoint."""
    owner: str = ""
    """The device prefix of the key that started the run ("" for an admin): only that key's holders
    (and admins) see the run or cancel it."""
    deadline: float | None = None
    """Simulated seconds a round waits for its participants (None: for all of them)."""
    stragglers: Stragglers = "drop"
    """What becomes of the update of a participant past the deadline: dropped, or added late (stale)."""
    start_time: float = 0.0
    """The simulated time the run's first round starts at (availability is read at it)."""

    def check(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise InvalidRequest(
                f"unknown aggregation {self.aggregation!r}; choose one of {', '.join(AGGREGATIONS)}"
            )
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise InvalidRequest(f"rounds must be between 1 and {MAX_ROUNDS} (got {self.rounds})")
        if not self.devices:
            raise InvalidRequest("the run selects no devices: give IDs, a prefix that matches some, or all")
        if self.participants is not None and not 1 <= self.participants <= len(self.devices):
            raise InvalidRequest(
                f"participants must be between 1 and the {len(self.devices)} devices selected "
                f"(got {self.participants})"
            )
        if self.deadline is not None and not (
            isinstance(self.deadline, int | float) and MIN_DEADLINE <= self.deadline <= MAX_DEADLINE
        ):
            raise InvalidRequest(
                f"deadline must be between {MIN_DEADLINE:g} and {MAX_DEADLINE:g} simulated seconds "
                f"(got {self.deadline})"
            )
        if self.stragglers not in STRAGGLERS:
            raise InvalidRequest(
                f"unknown stragglers policy {self.stragglers!r}; choose one of {', '.join(STRAGGLERS)}"
            )
        if not (isinstance(self.start_time, int | float) and 0 <= self.start_time <= MAX_START_TIME):
            raise InvalidRequest(
                f"start_time must be between 0 and {MAX_START_TIME:g} simulated seconds "
                f"(got {self.start_time})"
            )
        self.training.check()
        self.optimizer().check()

    def optimizer(self) -> ServerOptimizer:
        if self.server is not None:
            return self.server
        return ServerOptimizer.defaults("fedavg" if self.aggregation == "none" else self.aggregation)

    def view(self) -> dict[str, object]:
        view = asdict(self)
        devices = view.pop("devices")
        view["devices"] = len(devices)
        view["server"] = asdict(self.optimizer()) if self.aggregation != "none" else None
        return view


@dataclass(frozen=True)
class Update:
    """What a participant sends back: its weights (None with ``aggregation="none"``) and how it went."""

    device: str
    samples: int
    steps: int
    mean_loss: float | None
    local_accuracy: float | None
    weights: Weights | None
    train_seconds: float = 0.0


@dataclass(frozen=True)
class Participation:
    """What one participant is asked to do (``POST /v1/devices/{id}/participate`` carries it too)."""

    model: str
    version: int | None
    """Adopt this global version first and send the weights back; None: train from the device's own
    weights and send none (``aggregation="none"``)."""
    training: LocalTraining = field(default_factory=LocalTraining)
    seed: tuple[int, ...] = (0,)
    """Seeds the participant's shuffling: the run's seed, the round, the device's key."""
    local_accuracy: bool = True
    device_weights: DeviceWeights = "trained"
    durable: bool = True
    """Whether a saved checkpoint is flushed to disk at once; False: ``Participants.flush`` flushes
    a round's checkpoints together when the round ends."""


class Participants(Protocol):
    """Where participants train: this process's fleet, or the shards of a sharded one."""

    def participate(self, device_id: str, asked: Participation, stop: Callable[[], bool]) -> Update: ...

    def flush(self) -> None:
        """Make what participants saved without ``durable`` durable (one sync for the whole round)."""
        ...

    def resolve_version(self, model: str, number: int | None, viewer: str | None = None) -> int:
        """``number`` if the model has that version and ``viewer`` (a devices key's prefix, None: an
        admin) sees it (VersionNotFound if not); None: the latest it sees."""
        ...

    def version_weights(self, model: str, version: int) -> Weights: ...

    def store_version(self, model: str, weights: Weights, meta: dict[str, object]) -> int: ...

    def evaluate_version(self, model: str, version: int, evaluation: Evaluation) -> float: ...

    def pin(self, model: str, version: int) -> AbstractContextManager[object]:
        """Keeps ``version`` while a round gives it to its participants."""
        ...

    def profile(self, device_id: str) -> DeviceProfile | None:
        """The device's profile; None for an unprofiled device, or one whose record cannot be read (its
        part fails with the reason)."""
        ...

    def sample_counts(self, device_id: str) -> tuple[int, int]:
        """The train and test samples assigned to the device ((0, 0) without an assignment)."""
        ...

    def version_size(self, model: str, version: int) -> int:
        """Bytes of the version's weights file: what a participant downloads, and what its update is
        charged at when it uploads it back (``local.participation_seconds``)."""
        ...


@dataclass
class RoundMetrics:
    round: int
    version: int | None
    """The global version this round made (None: ``aggregation="none"``)."""
    participants: list[str]
    """The first ``SHOWN_PARTICIPANTS`` picked, in ID order."""
    picked: int = 0
    finished: int = 0
    """Participants whose update counts in this round (trained on time): every picked one is counted
    once, in ``finished``, ``straggled``, ``dropped`` or ``failed``."""
    failed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    samples: int = 0
    mean_loss: float | None = None
    global_accuracy: float | None = None
    mean_local_accuracy: float | None = None
    seconds: float = 0.0
    straggled: int = 0
    """Participants past the deadline: they trained, their update missed the round."""
    dropped: int = 0
    """Participants that dropped out (their dropout draw, or their online spell ended): untrained."""
    offline: int = 0
    """Devices skipped, offline when the round started, while picking (the run's devices are walked in a
    seeded order until ``participants`` online ones are found: not every offline device is met)."""
    stale_added: int = 0
    """Stale updates of earlier rounds' stragglers added to this round's mean."""
    simulated_start: float = 0.0
    simulated_seconds: float = 0.0
    stragglers: list[str] = field(default_factory=list)
    """The first ``SHOWN_STRAGGLERS`` stragglers, in participant order."""


@dataclass
class Run:
    id: str
    spec: RoundSpec
    state: RunState = "queued"
    round: int = 0
    """Rounds finished."""
    done_in_round: int = 0
    """Participants finished (or failed) in the round in progress."""
    start_version: int | None = None
    version: int | None = None
    """The newest global version the run made."""
    rounds: list[RoundMetrics] = field(default_factory=list)
    created_at: str = field(default_factory=utc_now)
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    cancel_requested: bool = False
    simulated_time: float = 0.0
    """The simulated time the last round finished ended at (the start time before any)."""

    def view(self) -> dict[str, object]:
        per_round = self.spec.participants or len(self.spec.devices)
        return {
            "id": self.id,
            "owner": self.spec.owner,
            "state": self.state,
            "model": self.spec.model,
            "spec": self.spec.view(),
            "progress": {
                "rounds_done": self.round,
                "rounds_total": self.spec.rounds,
                "participants_done": self.done_in_round,
                "participants_per_round": per_round,
            },
            "start_version": self.start_version,
            "version": self.version,
            "rounds": [asdict(r) for r in self.rounds],
            "simulated_time": self.simulated_time,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
        }


class RoundRunner:
    """Runs one run at a time on its own thread; participants on ``workers`` threads."""

    def __init__(self, data_dir: Path, participants: Participants, workers: int = 2) -> None:
        self.directory = data_dir / ROUNDS_DIR
        self.data_dir = data_dir
        self.participants = participants
        self.workers = max(1, workers)
        self._runs: dict[str, Run] = {}
        """Runs queued or running (the others are read from their files)."""
        self._queue: deque[Run] = deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closing = False

    # -- records -----------------------------------------------------------------------------

    def _path(self, run_id: str) -> Path:
        return self.directory / f"{run_id}.json"

    def _persist(self, run: Run) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_json(
                self._path(run.id),
                {**run.view(), "devices": list(run.spec.devices)},
                durable=False,
                root=self.data_dir,
            )
        except FleetError as exc:
            log.error("could not write the record of round run %s: %s", run.id, exc.message)

    def _prune(self) -> None:
        try:
            records = sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return
        for path in records[: max(0, len(records) - KEEP_RUNS)]:
            if path.stem not in self._runs:
                path.unlink(missing_ok=True)

    def get(self, run_id: str, owner: str | None = None) -> dict[str, object]:
        """The run's view; with ``owner`` (a key's prefix), RoundNotFound unless that key started it."""
        view = self._view(run_id)
        if owner is not None and view.get("owner", "") != owner:
            raise RoundNotFound(f"no round run '{run_id}'")
        return view

    def _view(self, run_id: str) -> dict[str, object]:
        with self._lock:
            run = self._runs.get(run_id)
            if run is not None:
                return run.view()
        if not run_id.isalnum():
            raise RoundNotFound(f"no round run '{run_id[:64]}'")
        value = read_json(self._path(run_id), None, root=self.data_dir)
        if not isinstance(value, dict):
            raise RoundNotFound(f"no round run '{run_id}'")
        value.pop("devices", None)
        if value.get("state") in ACTIVE:  # going on when the process that wrote it stopped
            value["state"] = "interrupted"
        return value

    def runs(self, owner: str | None = None) -> list[dict[str, object]]:
        """Runs, oldest first, without their per-round metrics (with ``owner``: that key's only)."""
        try:
            paths = sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
        except OSError:
            paths = []
        ids = [p.stem for p in paths]
        with self._lock:
            ids += [i for i in self._runs if i not in ids]
        runs = []
        for run_id in ids:
            try:
                view = self.get(run_id, owner)
            except RoundNotFound:
                continue
            view.pop("rounds", None)
            runs.append(view)
        return runs

    # -- starting and stopping ---------------------------------------------------------------

    def start(self, spec: RoundSpec) -> dict[str, object]:
        spec.check()
        run = Run(uuid.uuid4().hex[:12], spec)
        with self._lock:
            if self._closing:
                raise FleetError("the service is stopping; no new rounds start")
            self._runs[run.id] = run
            # Written before the worker can take the run: a run that ends at once (its first round
            # fails) would otherwise have its final record overwritten by this queued one.
            self._persist(run)
            self._queue.append(run)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="rounds", daemon=True)
                self._thread.start()
            self._changed.notify_all()
            return run.view()

    def cancel(self, run_id: str, owner: str | None = None) -> dict[str, object]:
        self.get(run_id, owner)
        with self._lock:
            run = self._runs.get(run_id)
            if run is not None:
                run.cancel_requested = True
                queued = run.state == "queued"
                if queued:
                    self._queue.remove(run)
        if run is None:
            raise RoundEnded(f"round run '{run_id}' already ended ({self.get(run_id)['state']})")
        if queued:
            self._finish(run, "cancelled")
        return self.get(run_id)

    def _finish(self, run: Run, state: RunState, error: str | None = None) -> None:
        """Record the run's end (not under the lock); it leaves memory once its file says so, so that
        ``get`` never reads a file older than the run."""
        with self._lock:
            run.state, run.finished_at, run.error = state, utc_now(), error
        self._persist(run)
        with self._lock:
            self._runs.pop(run.id, None)
            self._changed.notify_all()

    def close(self, timeout: float = 60.0) -> None:
        with self._lock:
            self._closing = True
            for run in list(self._runs.values()):
                run.cancel_requested = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def wait(self, run_id: str, timeout: float) -> dict[str, object]:
        """The run's view once it has ended, or after ``timeout`` seconds (tests, the CLI)."""
        with self._lock:
            self._changed.wait_for(lambda: run_id not in self._runs, timeout)
        return self.get(run_id)

    # -- the work ----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                self._changed.wait_for(lambda: self._queue or self._closing)
                closing, left = self._closing, list(self._runs.values())
                if not closing:
                    run = self._queue.popleft()
                    run.state, run.started_at = "running", utc_now()
            if closing:
                for run in left:
                    self._finish(run, "interrupted")
                return
            self._persist(run)
            state: RunState = "succeeded"
            error = None
            try:
                self._execute(run)
                if run.cancel_requested:
                    state = "interrupted" if self._closing else "cancelled"
            except FleetError as exc:
                state, error = "failed", exc.message
            except Exception as exc:  # a run must record every failure, not kill the thread
                log.exception("round run %s failed", run.id)
                state, error = "failed", f"{type(exc).__name__}: {exc}"
            self._finish(run, state, error)
            self._prune()

    def _execute(self, run: Run) -> None:
        spec = run.spec
        federated = spec.aggregation != "none"
        optimizer = spec.optimizer()
        version: int | None = None
        global_weights: Weights | None = None
        state: Weights = {}
        if federated:
            version = self.participants.resolve_version(spec.model, spec.start_version, spec.owner or None)
            global_weights = self.participants.version_weights(spec.model, version)
            run.start_version = run.version = version
        devices = sorted(spec.devices)
        per_round = spec.participants or len(devices)
        profiles = _Profiles(self.participants)
        late = _Late(spec)
        now = run.simulated_time = spec.start_time
        persisted = time.monotonic()
        for number in range(1, spec.rounds + 1):
            if run.cancel_requested:
                return
            started = time.perf_counter()
            now, picked, offline = _pick(devices, profiles, spec.seed, number, per_round, now)
            metrics = RoundMetrics(
                number,
                None,
                picked[:SHOWN_PARTICIPANTS],
                picked=len(picked),
                offline=offline,
                simulated_start=now,
            )
            tally = _Tally(metrics, global_weights)
            run.done_in_round = 0
            pin = self.participants.pin(spec.model, version) if version is not None else nullcontext()
            with pin:
                profiled = tally.profiled = any(profiles.get(i) is not None for i in picked)
                size = (
                    self.participants.version_size(spec.model, version)
                    if profiled and version is not None
                    else 0
                )
                plans = [self._plan(spec, number, i, profiles.get(i), now, size) for i in picked]
                self._round(run, plans, number, version, tally, late, now)
            if spec.device_weights == "saved":
                self.participants.flush()
            if run.cancel_requested:
                return
            duration = tally.duration(spec.deadline)
            for update, rounds_late in late.arriving(number, now + duration):
                tally.take_stale(update, rounds_late)
            metrics = tally.finish()
            if federated and tally.mean.count:
                assert global_weights is not None and version is not None
                global_weights, state = optimizer.step(global_weights, tally.mean.result(), state)
                meta: dict[str, object] = {
                    "parent": version,
                    "round_id": run.id,
                    "round": number,
                    "aggregation": spec.aggregation,
                    "participants": metrics.finished,
                    "samples": metrics.samples,
                    "owner": spec.owner,
                }
                version = self.participants.store_version(spec.model, global_weights, meta)
                metrics.version = run.version = version
                if spec.evaluation is not None:
                    metrics.global_accuracy = self.participants.evaluate_version(
                        spec.model, version, spec.evaluation
                    )
            metrics.simulated_seconds = duration
            metrics.seconds = round(time.perf_counter() - started, 3)
            with self._lock:
                run.rounds.append(metrics)
                run.round = number
                run.done_in_round = 0
                run.simulated_time = now = now + metrics.simulated_seconds
            if time.monotonic() - persisted > PERSIST_EVERY:
                self._persist(run)
                persisted = time.monotonic()

    def _plan(
        self,
        spec: RoundSpec,
        number: int,
        device_id: str,
        profile: DeviceProfile | None,
        at: float,
        weights_bytes: int,
    ) -> _Plan:
        """What becomes of a participant picked at simulated time ``at``, decided before it trains."""
        if profile is None:
            return _Plan(device_id)
        try:
            train, test = self.participants.sample_counts(device_id)
        except FleetError as exc:
            return _Plan(device_id, fate="failed", error=exc.message)
        seconds = participation_seconds(
            profile, spec.training, train, test if spec.local_accuracy else 0, weights_bytes
        )
        dropout = profile.profile.dropout
        if dropout > 0:
            draw = np.random.default_rng([spec.seed, number, device_key(device_id), DROPOUT_STREAM]).random()
            if draw < dropout:
                return _Plan(device_id, seconds, "dropped")
        until = online_until(profile, device_id, at)
        if until < at + seconds:  # gone when its spell ends (``until - at`` is at most ``seconds``)
            return _Plan(device_id, seconds, "dropped", gone=max(0.0, until - at))
        if spec.deadline is not None and seconds > spec.deadline:
            return _Plan(device_id, seconds, "straggler")
        return _Plan(device_id, seconds)

    def _round(
        self,
        run: Run,
        plans: list[_Plan],
        number: int,
        version: int | None,
        tally: _Tally,
        late: _Late,
        start: float,
    ) -> None:
        """Train the participants that did not drop out (the round starting at simulated ``start``),
        adding their updates to ``tally`` in the order they were picked."""
        spec = run.spec
        window = WINDOW_PER_WORKER * self.workers
        ready: dict[int, Future[Update]] = {}
        stop = lambda: run.cancel_requested  # noqa: E731
        with ThreadPoolExecutor(self.workers, thread_name_prefix=f"round-{run.id[:6]}") as pool:
            submitted = 0
            for index, plan in enumerate(plans):
                while submitted < len(plans) and submitted < index + window and not run.cancel_requested:
                    ahead = plans[submitted]
                    if ahead.trains:
                        asked = Participation(
                            spec.model,
                            version,
                            spec.training,
                            (spec.seed, number, device_key(ahead.device)),
                            spec.local_accuracy,
                            spec.device_weights,
                            durable=False,
                        )
                        train = self.participants.participate
                        ready[submitted] = pool.submit(train, ahead.device, asked, stop)
                    submitted += 1
                if not plan.trains:
                    tally.skip(plan)
                elif index not in ready:
                    return  # cancelled: nothing more was submitted
                else:
                    future = ready.pop(index)
                    try:
                        update = future.result()
                        if not run.cancel_requested:
                            tally.take(update, plan)
                            late.offer(number, plan, update, start)
                    except FleetError as exc:
                        tally.fail(plan.device, exc.message, plan.seconds)
                    except Exception as exc:
                        log.exception("participant %s of round run %s", plan.device, run.id)
                        tally.fail(plan.device, f"{type(exc).__name__}: {exc}", plan.seconds)
                with self._lock:
                    run.done_in_round += 1


class _Profiles:
    """The profiles of a run's devices, each read once a run, when the run first needs it: picking walks
    the devices in a seeded order and stops at the ``participants``-th online one, so an unprofiled run
    reads only its participants' records."""

    def __init__(self, participants: Participants) -> None:
        self._participants = participants
        self._known: dict[str, DeviceProfile | None] = {}

    def get(self, device_id: str) -> DeviceProfile | None:
        if device_id not in self._known:
            self._known[device_id] = self._participants.profile(device_id)
        return self._known[device_id]


def _pick(
    devices: list[str], profiles: _Profiles, seed: int, number: int, per_round: int, at: float
) -> tuple[float, list[str], int]:
    """When round ``number`` starts, its participants (in ID order), and how many offline devices were
    skipped picking them: the first ``per_round`` devices online at ``at`` in a permutation seeded by the
    run's seed and the round (unprofiled devices are always online). When no device is online at ``at``,
    the round starts when the first comes online (FleetError if none ever does)."""
    order = np.random.default_rng([seed, number]).permutation(len(devices))
    picked, offline = _walk(devices, order, profiles, per_round, at)
    if not picked:  # every profile was read: the walk met every device
        start = min(next_online(profiles.get(i), i, at) for i in devices)
        if start == math.inf:
            raise FleetError(
                f"round {number}: no device of the run is online at simulated time {at:g} s, and none "
                "comes online later (their profiles' availability)"
            )
        at = start
        picked, offline = _walk(devices, order, profiles, per_round, at)
    return at, sorted(picked), offline


def _walk(
    devices: list[str], order: np.ndarray, profiles: _Profiles, per_round: int, at: float
) -> tuple[list[str], int]:
    picked: list[str] = []
    offline = 0
    for index in order:
        device_id = devices[int(index)]
        if next_online(profiles.get(device_id), device_id, at) == at:
            picked.append(device_id)
            if len(picked) == per_round:
                break
        else:
            offline += 1
    return picked, offline


Fate = Literal["on_time", "straggler", "dropped", "failed"]


@dataclass(frozen=True)
class _Plan:
    """A picked participant: its simulated duration, what becomes of it."""

    device: str
    seconds: float = 0.0
    fate: Fate = "on_time"
    error: str = ""
    gone: float | None = None
    """A dropout's simulated seconds into the round when it left (None: ``seconds``, the dropout draw's
    and a failure's: the server notices when the part should have ended)."""

    @property
    def trains(self) -> bool:
        return self.fate in ("on_time", "straggler")

    @property
    def ends(self) -> float:
        """Simulated seconds into the round when the server is done waiting for it."""
        return self.seconds if self.gone is None else self.gone


def staleness_weight(rounds_late: int) -> float:
    """The factor on a stale update's samples: FedAsync's polynomial staleness function
    ``(1 + k) ** -a`` with ``a = 0.5`` (Xie, Koyejo and Gupta, "Asynchronous Federated Optimization",
    2019), ``k`` the rounds it is late."""
    return (1.0 + rounds_late) ** -0.5


class _Late:
    """Stragglers' updates waiting for the round they arrive in (``stragglers="stale"``).

    A straggler's update arrives at its round's start plus its simulated duration, and is added to the
    first round whose simulated end is at or after that, ``k`` rounds after its own (rounds do not all
    last the deadline: one where nobody is late ends earlier, one may start later, waiting for a device
    to come online). It is dropped when ``k`` would be over ``MAX_STALENESS``, when the run ends first,
    or when ``MAX_PENDING_STALE`` updates already wait."""

    def __init__(self, spec: RoundSpec) -> None:
        self.keep = spec.deadline is not None and spec.stragglers == "stale"
        self._waiting: list[tuple[float, int, Update]] = []
        """(arrival time, origin round, update), in the order they were sent."""

    def offer(self, number: int, plan: _Plan, update: Update, start: float) -> None:
        """Keep a straggler's update of round ``number`` (which started at simulated ``start``)."""
        if not self.keep or plan.fate != "straggler" or update.weights is None:
            return
        if len(self._waiting) >= MAX_PENDING_STALE:
            return
        self._waiting.append((start + plan.seconds, number, update))

    def arriving(self, number: int, end: float) -> list[tuple[Update, int]]:
        """The updates that arrive in round ``number``, which ends at simulated ``end`` (in the order they
        were sent), and how many rounds late; those that can no longer arrive in time are dropped."""
        found: list[tuple[Update, int]] = []
        waiting: list[tuple[float, int, Update]] = []
        for arrival, origin, update in self._waiting:
            if number - origin > MAX_STALENESS:
                continue
            if arrival <= end:
                found.append((update, number - origin))
            else:
                waiting.append((arrival, origin, update))
        self._waiting = [w for w in waiting if number + 1 - w[1] <= MAX_STALENESS]
        return found


class _Mean:
    """A round's mean: updates on time weighted by their samples, stale ones by their samples times
    ``staleness_weight``. One ``WeightedMean`` per lateness (at most ``MAX_STALENESS + 1`` models),
    combined at the end; with no stale update it is the on-time mean itself, bit for bit."""

    def __init__(self) -> None:
        self._by_late: dict[int, WeightedMean] = {}

    @property
    def count(self) -> int:
        return sum(mean.count for mean in self._by_late.values())

    def add(self, weights: Weights, samples: int, rounds_late: int = 0) -> None:
        self._by_late.setdefault(rounds_late, WeightedMean()).add(weights, samples)

    def result(self) -> Weights:
        groups = sorted((k, m) for k, m in self._by_late.items() if m.count)
        if len(groups) == 1:
            return groups[0][1].result()
        parts = [(mean.result(), mean.samples * staleness_weight(k)) for k, mean in groups]
        total = sum(weight for _, weight in parts)
        combined: Weights = {}
        for name, value in parts[0][0].items():  # other tensors: the first update's, as in WeightedMean
            if is_averaged(value):
                summed = sum(np.asarray(result[name], np.float64) * weight for result, weight in parts)
                combined[name] = (np.asarray(summed) / total).astype(value.dtype)
            else:
                combined[name] = value
        return combined


class _Tally:
    """One round's results as participants finish: the running average of their weights, and metrics.

    Every picked participant ends up in one count: ``finished`` (its update is in the mean),
    ``straggled``, ``dropped`` or ``failed``."""

    def __init__(self, metrics: RoundMetrics, global_weights: Weights | None) -> None:
        self.metrics = metrics
        self.global_weights = global_weights
        self.mean = _Mean()
        self.losses: list[tuple[float, int]] = []
        self.local: list[float] = []
        self.longest = 0.0
        """Simulated seconds into the round when the last picked participant finished, dropped out or
        failed (its plan's ``ends``)."""
        self.profiled = False
        """Whether a profiled participant was picked (its plan takes simulated time)."""

    def take(self, update: Update, plan: _Plan) -> None:
        if update.weights is not None:
            assert self.global_weights is not None
            problem = same_layout(self.global_weights, update.weights)
            if problem is not None:
                raise InvalidRequest(f"its update does not fit the global weights: {problem}")
        if plan.fate == "straggler":
            self.metrics.straggled += 1
            if len(self.metrics.stragglers) < SHOWN_STRAGGLERS:
                self.metrics.stragglers.append(plan.device)
            return
        if update.weights is not None:
            self.mean.add(update.weights, update.samples)
        self.metrics.finished += 1
        self.metrics.samples += update.samples
        self._waited(plan.seconds)
        if update.mean_loss is not None:
            self.losses.append((update.mean_loss, update.samples))
        if update.local_accuracy is not None:
            self.local.append(update.local_accuracy)

    def take_stale(self, update: Update, rounds_late: int) -> None:
        """An earlier round's straggler's update (its layout was checked when it came)."""
        assert update.weights is not None
        self.mean.add(update.weights, update.samples, rounds_late)
        self.metrics.stale_added += 1

    def skip(self, plan: _Plan) -> None:
        """A participant that did not train: dropped out, or failed before it was asked."""
        if plan.fate == "dropped":
            self.metrics.dropped += 1
            self._waited(plan.ends)
        else:
            self.fail(plan.device, plan.error, plan.seconds)

    def fail(self, device_id: str, message: str, seconds: float = 0.0) -> None:
        self.metrics.failed += 1
        self._waited(seconds)
        if len(self.metrics.failures) < SHOWN_FAILURES:
            self.metrics.failures.append({"device": device_id, "error": message})

    def _waited(self, seconds: float) -> None:
        self.longest = max(self.longest, seconds)

    def duration(self, deadline: float | None) -> float:
        """The round's simulated seconds: the deadline when someone missed it (straggled or dropped out);
        else until the last picked participant finished, dropped out or failed (the slowest finisher
        when none dropped out); never less than ``MIN_ROUND_SECONDS`` when someone was picked and
        profiled, so that simulated time always moves."""
        if deadline is not None and (self.metrics.straggled or self.metrics.dropped):
            return deadline
        longest = self.longest if deadline is None else min(self.longest, deadline)
        if self.profiled and not longest > 0:
            return MIN_ROUND_SECONDS
        return longest

    def finish(self) -> RoundMetrics:
        """The round's metrics; FleetError when every participant failed (no update and none dropped
        out or straggled: then the round just makes no version)."""
        metrics = self.metrics
        if metrics.finished == 0 and not (metrics.stale_added or metrics.straggled or metrics.dropped):
            first = metrics.failures[0]["error"] if metrics.failures else "none was picked"
            raise FleetError(f"round {metrics.round}: no participant finished (first failure: {first})")
        if self.losses:
            metrics.mean_loss = sum(loss * n for loss, n in self.losses) / sum(n for _, n in self.losses)
        metrics.mean_local_accuracy = float(np.mean(self.local)) if self.local else None
        return metrics
