"""Federated rounds: pick participants, give them the global weights, train them, aggregate, repeat.

A run of ``rounds`` rounds over a set of devices, in the background (``RoundRunner``, one run at a
time, its participants on ``workers`` threads). Each round:

1. picks ``participants`` devices with the run's selector (``selectors``; after the round it hears how
   each did): by default the first online ones in a random order of the run's devices seeded by the
   run's seed and the round's number, drawn as far as needed (a round drawn from a million costs what
   one drawn from a thousand does);
2. each participant adopts the current global version, trains ``epochs`` over its assigned data
   (shuffled by a seed of its own), and writes its weights for the server; it is then evaluated on
   its local test data, and its weights are kept, dropped or saved as the run says (one without an
   interpreter of its own whose weights are saved trains on an idle one the round lends it:
   ``lending``);
3. the updates are averaged, weighted by samples, as they arrive, in participant order (a reorder
   window of a few updates): memory holds one model and that window, however many participate,
   and the float arithmetic is the same in every run (``tally``, ``mean``);
4. the server's optimizer (FedAvg, FedAvgM, FedAdam) turns the average into the next global version,
   which is evaluated on the run's evaluation split.

With ``aggregation="none"`` participants train from their own weights and nothing is aggregated:
pure local personalization, measured the same way.

Devices with a profile (``service.profiles``) take simulated time. Each round starts at a simulated
time T (the run's ``start_time``, then the end of the round before); what becomes of each participant
is decided before it trains (``selection.plan_participant``: on time, dropped out, or a straggler past
the ``deadline``, whose update is dropped or, with ``stragglers="stale"``, added late: ``staleness``).
A round lasts the deadline if anyone was late or dropped out; else until its last participant
finished, dropped out or failed (at least ``MIN_ROUND_SECONDS`` when one is profiled: simulated time
always moves).

Two runs with the same seed over the same devices and data give identical metrics. A participant that
fails (busy with a job, no data, deleted) is recorded and left out of the average; a round in which
none finishes fails the run. Cancelling stops the run before its next training step; the round in
progress makes no version. Run records are kept on disk (``runs.RunRecords``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from service.errors import FleetError, RoundEnded, RoundNotFound
from service.federated.asynchronous import BufferedLoop
from service.federated.checkpoints import Weights
from service.federated.participants import Participants, Participation, Update
from service.federated.private_run import PrivateRun
from service.federated.runs import SHOWN_PARTICIPANTS, RoundMetrics, Run, RunRecords, RunState
from service.federated.selection import Plan, Profiles, plan_participant
from service.federated.selectors.base import Outcome, Selector
from service.federated.spec import RoundSpec
from service.federated.staleness import LateUpdates
from service.federated.strategies.base import MAX_BUFFERED_BYTES, ClientTask, RoundContext, Strategy
from service.federated.tally import Tally
from service.federated.task import Privatize
from service.profiles.availability import device_key
from service.storage import utc_now

log = logging.getLogger(__name__)

WINDOW_PER_WORKER = 8
"""Participants started ahead of the one whose update is added next, per worker: a slow one does not
idle the others, and at most this many updates wait (a model's weights each)."""
PERSIST_EVERY = 1.0
"""Seconds between writes of a running run's record (it is written at every state change too)."""


class RoundRunner:
    """Runs one run at a time on its own thread; participants on ``workers`` threads."""

    def __init__(
        self,
        data_dir: Path,
        participants: Participants,
        workers: int = 2,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
    ) -> None:
        self.records = RunRecords(data_dir)
        self.participants = participants
        self.workers = max(1, workers)
        self.max_buffered_bytes = max_buffered_bytes
        """What a strategy that keeps every update of a round may hold (``FLEET_MAX_BUFFERED_BYTES``)."""
        self._runs: dict[str, Run] = {}
        """Runs queued or running (the others are read from their files)."""
        self._queue: deque[Run] = deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closing = False

    # -- reading runs ------------------------------------------------------------------------

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
        return self.records.read(run_id)

    def runs(self, owner: str | None = None) -> list[dict[str, object]]:
        """Runs, oldest first, without their per-round metrics (with ``owner``: that key's only)."""
        ids = self.records.ids()
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
            self.records.write(run)
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
            # A run whose end is being recorded is still here, in its final state: it has ended too.
            ended = run is None or run.state not in ("queued", "running")
            if run is not None and not ended:
                run.cancel_requested = True
                queued = run.state == "queued"
                if queued:
                    self._queue.remove(run)
        if run is None or ended:
            raise RoundEnded(f"round run '{run_id}' already ended ({self.get(run_id)['state']})")
        if queued:
            self._finish(run, "cancelled")
        return self.get(run_id)

    def _finish(self, run: Run, state: RunState, error: str | None = None) -> None:
        """Record the run's end (not under the lock); it leaves memory once its file says so, so that
        ``get`` never reads a file older than the run."""
        with self._lock:
            run.state, run.finished_at, run.error = state, utc_now(), error
        self.records.write(run)
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
            self.records.write(run)
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
            self.records.prune(self._runs)

    def _execute(self, run: Run) -> None:
        strategy = run.spec.strategy()
        if run.spec.aggregation != "none" and strategy.asynchronous:  # FedBuff: on the virtual clock
            loop = BufferedLoop(self.participants, self.workers, self._lock, self._store, self.records)
            loop.run(run, strategy)
        else:
            self._rounds(run)

    def _rounds(self, run: Run) -> None:
        """A synchronous run: ``rounds`` rounds of picked participants."""
        spec = run.spec
        private = PrivateRun(spec) if spec.privacy or spec.secure_aggregation else None
        going = _Going(
            sorted(spec.devices),
            spec.strategy(),
            spec.selector(),
            Profiles(self.participants),
            LateUpdates(spec),
            private,
        )
        if spec.aggregation != "none":
            going.version = self.participants.resolve_version(
                spec.model, spec.start_version, spec.owner or None
            )
            going.weights = self.participants.version_weights(spec.model, going.version)
            run.start_version = run.version = going.version
        going.now = run.simulated_time = spec.start_time
        persisted = time.monotonic()
        hyperparameters = functools.cache(lambda: self.participants.hyperparameters(spec.model))
        for number in range(1, spec.rounds + 1):
            if run.cancel_requested:
                return
            if private is not None and not private.budget_allows_next():
                run.stopped = private.stopped
                return
            context = RoundContext(
                number,
                len(spec.devices),
                hyperparameters,
                lambda name, weights: self.participants.publish(run.id, name, weights),
                self.max_buffered_bytes,
            )
            started = time.perf_counter()
            metrics = self._one_round(run, going, context)
            if metrics is None:
                return  # cancelled
            metrics.seconds = round(time.perf_counter() - started, 3)
            with self._lock:
                run.rounds.append(metrics)
                run.round = number
                run.done_in_round = 0
                run.simulated_time = going.now = going.now + metrics.simulated_seconds
            if time.monotonic() - persisted > PERSIST_EVERY:
                self.records.write(run)
                persisted = time.monotonic()

    def _one_round(self, run: Run, going: _Going, context: RoundContext) -> RoundMetrics | None:
        """Round ``context.number``: pick, plan, train, combine; its metrics (None: cancelled)."""
        spec, number, version, private = run.spec, context.number, going.version, going.private
        now, picked, offline = going.selector.pick(
            going.devices, going.profiles, number, spec.participants or len(going.devices), going.now
        )
        going.now = now
        metrics = RoundMetrics(
            number,
            None,
            picked[:SHOWN_PARTICIPANTS],
            picked=len(picked),
            offline=offline,
            simulated_start=now,
        )
        weights = going.weights
        task = ClientTask() if weights is None else going.strategy.task(weights, going.state, context)
        collected = going.strategy.collector(context) if weights is not None else None
        pin = self.participants.pin(spec.model, version) if version is not None else nullcontext()
        with pin:
            tally = Tally(metrics, weights, collected)
            profiled = tally.profiled = any(going.profiles.get(i) is not None for i in picked)
            size = (
                self.participants.version_size(spec.model, version) if profiled and version is not None else 0
            )
            extra = private.protocol(len(picked), weights) if private and weights is not None else None
            private_round = None
            plans = [
                plan_participant(self.participants, spec, number, i, going.profiles.get(i), now, size, extra)
                for i in picked
            ]
            if private is not None and weights is not None:
                private_round = private.begin(number, plans, weights, going.profiles, extra)
                tally.collected = private_round.collector
            outcomes: list[Outcome] = []
            privatize = private_round.privatize if private_round is not None else None
            self._round(run, plans, number, version, tally, going.late, now, task, outcomes, privatize)
            going.selector.feedback(number, outcomes)
        if spec.device_weights == "saved":
            self.participants.flush()
        if run.cancel_requested:
            return None
        duration = tally.duration(spec.deadline)
        for update, rounds_late in going.late.arriving(number, now + duration):
            tally.take_stale(update, rounds_late)
        metrics = tally.finish()
        if weights is not None and version is not None and tally.collected.count:
            if private_round is not None and private is not None:
                aggregate, metrics.privacy = private.finish(private_round, weights)
                going.weights, going.state = going.strategy.step(weights, aggregate, going.state, context)
            else:
                going.weights, going.state = going.strategy.combine(
                    weights, tally.collected, going.state, context
                )
            going.version = self._store(run, metrics, going.weights, version)
        metrics.simulated_seconds = duration
        return metrics

    def _store(self, run: Run, metrics: RoundMetrics, weights: Weights, parent: int) -> int:
        """Store the global version a round made from ``parent`` (evaluated if the run asks)."""
        spec = run.spec
        meta: dict[str, object] = {
            "parent": parent,
            "round_id": run.id,
            "round": metrics.round,
            "aggregation": spec.aggregation,
            "participants": metrics.finished,
            "samples": metrics.samples,
            "owner": spec.owner,
        }
        version = self.participants.store_version(spec.model, weights, meta)
        metrics.version = run.version = version
        if spec.evaluation is not None:
            metrics.global_accuracy = self.participants.evaluate_version(spec.model, version, spec.evaluation)
        return version

    def _round(
        self,
        run: Run,
        plans: list[Plan],
        number: int,
        version: int | None,
        tally: Tally,
        late: LateUpdates,
        start: float,
        task: ClientTask,
        outcomes: list[Outcome],
        privatize: Callable[[str], Privatize] | None = None,
    ) -> None:
        """Train the participants that did not drop out (the round starting at simulated ``start``),
        adding their updates to ``tally`` in the order they were picked, and what became of each to
        ``outcomes`` (for the run's selector)."""
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
                            task=task,
                            privatize=privatize(ahead.device) if privatize is not None else None,
                        )
                        train = self.participants.participate
                        ready[submitted] = pool.submit(train, ahead.device, asked, stop)
                    submitted += 1
                if not plan.trains:
                    tally.skip(plan)
                    outcomes.append(Outcome(plan.device, plan.fate, plan.seconds))
                elif index not in ready:
                    return  # cancelled: nothing more was submitted
                else:
                    future = ready.pop(index)
                    try:
                        update = future.result()
                        if not run.cancel_requested:
                            tally.take(update, plan)
                            late.offer(number, plan, update, start)
                            outcomes.append(
                                Outcome(
                                    plan.device, plan.fate, plan.seconds, update.samples, update.mean_loss
                                )
                            )
                    except FleetError as exc:
                        tally.fail(plan.device, exc.message, plan.seconds)
                        outcomes.append(Outcome(plan.device, "failed", plan.seconds))
                    except Exception as exc:
                        log.exception("participant %s of round run %s", plan.device, run.id)
                        tally.fail(plan.device, f"{type(exc).__name__}: {exc}", plan.seconds)
                        outcomes.append(Outcome(plan.device, "failed", plan.seconds))
                with self._lock:
                    run.done_in_round += 1


@dataclass
class _Going:
    """What a synchronous run carries from round to round."""

    devices: list[str]
    """The run's devices, sorted once (a million take a second to sort)."""
    strategy: Strategy
    selector: Selector
    profiles: Profiles
    late: LateUpdates
    private: PrivateRun | None
    version: int | None = None
    weights: Weights | None = None
    """The global weights (None: ``aggregation="none"``)."""
    state: Weights = field(default_factory=dict)
    """The server optimizer's state."""
    now: float = 0.0
    """The simulated time the next round is due at."""
