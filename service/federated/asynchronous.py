"""Buffered asynchronous aggregation (FedBuff) on the virtual clock: devices train from the version they
downloaded, the server steps every K updates (``BufferedLoop``).

Up to ``concurrency`` devices train at once. A free slot, at simulated time t, takes a device uniformly
among those online at t and not already training (the first such in a seeded random order of the run's
devices, drawn afresh for each start); when none is online it waits for the first to come online. The
device downloads the current global version, and its update arrives at t plus its simulated duration
(``selection.plan_participant``: download, training, upload, local evaluation; it may drop out, and
then its slot frees when it leaves). Events are taken in simulated-time order from a heap; at one time,
starts before arrivals, then in the order the devices started. Unprofiled devices take no simulated
time: they all start and arrive at the run's start time, in that order, so each device that starts
downloads the version made by the arrivals before it (round-robin over the slots).

Each arrival is added to the strategy's buffer with its staleness tau (server steps since its download;
updates more than ``max_staleness`` old are dropped, counted as ``straggled``); every ``buffer_size``
updates the strategy steps and makes a version: one ``RoundMetrics`` per server step, from the step
before (or the run's start) to its last arrival. ``rounds`` is the number of server steps.

Training is real (``Participants.participate``) on ``workers`` threads, submitted at each start; the
order updates are added in is the simulated one, so two runs with the same seed give identical metrics.
At most ``concurrency`` devices are in flight, so at most that many updates wait (plus the versions
they downloaded, one model each at most).
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace

from service.errors import FleetError, InvalidRequest, InvalidTensor
from service.federated.checkpoints import Weights
from service.federated.participants import Participants, Participation, Update
from service.federated.runs import SHOWN_FAILURES, SHOWN_PARTICIPANTS, RoundMetrics, Run, RunRecords
from service.federated.selection import Plan, Profiles, SeededOrder, plan_participant
from service.federated.strategies.base import RoundContext, Strategy
from service.federated.strategies.fedbuff import FedBuff
from service.profiles.availability import device_key, next_online

log = logging.getLogger(__name__)

START, ARRIVAL = 0, 1
"""Event kinds; at one simulated time starts come first."""
PICK_STREAM = 0x62756666
"""Tags the seeded order of each start's pick (beside the run's seed and the start's number)."""
MAX_MISSES = 1000
"""Starts in a row that bring no update (dropped out, failed) before the run fails: a fleet that always
drops out would otherwise spin on the clock forever."""
PERSIST_EVERY = 1.0

Store = Callable[[Run, RoundMetrics, Weights, int], int]
"""Stores a step's version (evaluated if the run asks) and returns its number: ``RoundRunner._store``."""


@dataclass(order=True)
class Event:
    time: float
    kind: int
    order: int
    """Start events: the order they were queued in; arrivals: the start number of their device."""


@dataclass
class Flight:
    """A device between its start and its arrival (or leaving: ``future`` None when it dropped out)."""

    device: str
    plan: Plan
    step: int
    """Server steps made when it downloaded (its staleness is counted from here)."""
    version: int
    future: Future[Update] | None
    pins: ExitStack = field(default_factory=ExitStack)


@dataclass
class StepTally:
    """One server step's metrics as its updates arrive."""

    metrics: RoundMetrics
    losses: list[tuple[float, int]] = field(default_factory=list)
    local: list[float] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    wall: float = field(default_factory=time.perf_counter)

    def fail(self, device: str, message: str) -> None:
        self.metrics.failed += 1
        if len(self.metrics.failures) < SHOWN_FAILURES:
            self.metrics.failures.append({"device": device, "error": message})

    def take(self, update: Update, staleness: int) -> None:
        metrics = self.metrics
        metrics.finished += 1
        metrics.samples += update.samples
        metrics.stale_added += staleness > 0
        if len(self.added) < SHOWN_PARTICIPANTS:
            self.added.append(update.device)
        if update.mean_loss is not None:
            self.losses.append((update.mean_loss, update.samples))
        if update.local_accuracy is not None:
            self.local.append(update.local_accuracy)

    def finish(self, end: float, staleness: list[int]) -> RoundMetrics:
        metrics = self.metrics
        metrics.participants = self.added
        metrics.simulated_seconds = end - metrics.simulated_start
        metrics.mean_staleness = sum(staleness) / len(staleness) if staleness else None
        if self.losses:
            metrics.mean_loss = sum(loss * n for loss, n in self.losses) / sum(n for _, n in self.losses)
        metrics.mean_local_accuracy = sum(self.local) / len(self.local) if self.local else None
        metrics.seconds = round(time.perf_counter() - self.wall, 3)
        return metrics


class BufferedLoop:
    """Runs one FedBuff run to its ``rounds`` server steps (``RoundRunner`` hands it asynchronous runs)."""

    def __init__(
        self,
        participants: Participants,
        workers: int,
        lock: threading.Lock,
        store: Store,
        records: RunRecords,
    ) -> None:
        self.participants = participants
        self.workers = max(1, workers)
        self.lock = lock
        self.store = store
        self.records = records
        self.peak_in_flight = 0
        """The most devices in flight at once (each holding at most one update): at most ``concurrency``."""

    def run(self, run: Run, strategy: Strategy) -> None:
        if not isinstance(strategy, FedBuff):
            raise InvalidRequest(f"{strategy.name} has no asynchronous loop (only fedbuff has)")
        with ThreadPoolExecutor(self.workers, thread_name_prefix=f"fedbuff-{run.id[:6]}") as pool:
            state = _LoopState(self, run, strategy, pool)
            try:
                state.loop()
            finally:
                state.stopped = True
                pool.shutdown(wait=True, cancel_futures=True)
                for flight in state.flights.values():
                    flight.pins.close()
            self.peak_in_flight = state.peak


class _LoopState:
    """One run's clock, slots, buffer and global weights."""

    def __init__(self, loop: BufferedLoop, run: Run, strategy: FedBuff, pool: ThreadPoolExecutor) -> None:
        spec = run.spec
        self.owner, self.run, self.strategy, self.pool = loop, run, strategy, pool
        self.lock = loop.lock
        self.participants = loop.participants
        # A deadline has no meaning without rounds: a device's update is only ever late, not missed.
        self.spec = replace(spec, deadline=None)
        self.devices = sorted(spec.devices)
        self.profiles = Profiles(self.participants)
        self.concurrency = min(strategy.settings.concurrency, len(self.devices))
        self.version = self.participants.resolve_version(spec.model, spec.start_version, spec.owner or None)
        self.global_weights = self.participants.version_weights(spec.model, self.version)
        run.start_version = run.version = self.version
        self.bases: dict[int, Weights] = {self.version: self.global_weights}
        """The versions devices in flight downloaded (and the current one), for their deltas."""
        self.server_state: Weights = {}
        self.steps = 0
        self.buffer = strategy.buffer()
        self.heap: list[Event] = []
        self.flights: dict[int, Flight] = {}
        """Devices in flight by start number."""
        self.training: set[str] = set()
        self.starts = self.queued = self.misses = self.peak = 0
        self.stopped = False
        self.persisted = time.monotonic()
        run.simulated_time = spec.start_time
        self.tally = self._new_tally(spec.start_time)

    def loop(self) -> None:
        run = self.run
        for _ in range(self.concurrency):
            self._queue_start(self.spec.start_time)
        while self.steps < self.spec.rounds:
            if run.cancel_requested:
                return
            if not self.heap:
                raise FleetError(
                    f"fedbuff: no device of the run is online after simulated time {run.simulated_time:g} s, "
                    f"and none comes online later ({self.steps} of {self.spec.rounds} server steps made)"
                )
            event = heapq.heappop(self.heap)
            if event.kind == START:
                self._start(event.time)
            else:
                self._arrive(event.time, self.flights.pop(event.order))

    # -- starts ------------------------------------------------------------------------------

    def _queue_start(self, at: float) -> None:
        heapq.heappush(self.heap, Event(at, START, self.queued))
        self.queued += 1

    def _pick(self, at: float) -> str | None:
        """A device online at ``at`` and not training, uniformly (the first in a fresh seeded order)."""
        order = SeededOrder(len(self.devices), [self.spec.seed, PICK_STREAM, self.starts], 1)
        for index in order:
            device = self.devices[index]
            if device not in self.training and self.profiles.online(device, at):
                return device
        return None

    def _start(self, at: float) -> None:
        device = self._pick(at)
        if device is None:  # every free device was met offline: wait for the first to come online
            free = [d for d in self.devices if d not in self.training]
            later = min((next_online(self.profiles.get(d), d, at) for d in free), default=math.inf)
            if later < math.inf:  # else the slot stays empty (the run fails if every slot does)
                self._queue_start(later)
            return
        number, spec = self.starts, self.spec
        self.starts += 1
        self.tally.metrics.picked += 1
        profile = self.profiles.get(device)
        size = self.participants.version_size(spec.model, self.version) if profile is not None else 0
        plan = plan_participant(self.participants, spec, number, device, profile, at, size)
        if plan.fate == "failed":
            self._miss(at)
            self.tally.fail(device, plan.error)
            return
        flight = Flight(device, plan, self.steps, self.version, None)
        if plan.trains:
            flight.pins.enter_context(self.participants.pin(spec.model, self.version))
            task = self.strategy.task(self.global_weights, self.server_state, self._context())
            asked = Participation(
                spec.model,
                self.version,
                spec.training,
                (spec.seed, number, device_key(device)),
                spec.local_accuracy,
                spec.device_weights,
                durable=False,
                task=task,
            )
            flight.future = self.pool.submit(self.participants.participate, device, asked, self._stop)
        self.training.add(device)
        self.flights[number] = flight
        self.peak = max(self.peak, len(self.flights))
        heapq.heappush(self.heap, Event(at + plan.ends, ARRIVAL, number))

    def _stop(self) -> bool:
        return self.stopped or self.run.cancel_requested

    def _miss(self, at: float) -> None:
        """A start that brings no update; the slot starts another device at ``at``."""
        self.misses += 1
        if self.misses >= MAX_MISSES:
            first = self.tally.metrics.failures[0]["error"] if self.tally.metrics.failures else "dropped out"
            raise FleetError(f"fedbuff: {MAX_MISSES} devices in a row sent no update (first: {first})")
        self._queue_start(at)

    # -- arrivals ----------------------------------------------------------------------------

    def _arrive(self, at: float, flight: Flight) -> None:
        self.training.discard(flight.device)
        with self.lock:
            self.run.simulated_time = max(self.run.simulated_time, at)
        try:
            if flight.future is None:
                self.tally.metrics.dropped += 1
                self._miss(at)
                return
            try:
                update = flight.future.result()
            except FleetError as exc:
                self.tally.fail(flight.device, exc.message)
                self._miss(at)
                return
            except Exception as exc:  # as in a round: one participant's failure, not the run's
                log.exception("participant %s of fedbuff run %s", flight.device, self.run.id)
                self.tally.fail(flight.device, f"{type(exc).__name__}: {exc}")
                self._miss(at)
                return
            self._add(at, flight, update)
        finally:
            flight.pins.close()
            self._release(flight.version)
        self._queue_start(at)

    def _add(self, at: float, flight: Flight, update: Update) -> None:
        staleness = self.steps - flight.step
        self.misses = 0
        if staleness > self.strategy.settings.max_staleness:
            self.tally.metrics.straggled += 1
            if len(self.tally.metrics.stragglers) < SHOWN_PARTICIPANTS:
                self.tally.metrics.stragglers.append(flight.device)
            return
        try:
            if update.weights is None:
                raise InvalidTensor(f"participant '{flight.device}' sent no weights")
            self.buffer.add(update.weights, self.bases[flight.version], update.samples, staleness)
        except FleetError as exc:
            self.tally.fail(flight.device, exc.message)
            return
        self.tally.take(update, staleness)
        with self.lock:
            self.run.done_in_round = self.buffer.count
        if self.buffer.count >= self.strategy.settings.buffer_size:
            self._step(at)

    def _release(self, version: int) -> None:
        if version != self.version and all(f.version != version for f in self.flights.values()):
            self.bases.pop(version, None)

    def _context(self) -> RoundContext:
        return RoundContext(
            self.steps + 1,
            len(self.devices),
            lambda: self.participants.hyperparameters(self.spec.model),
            lambda name, weights: self.participants.publish(self.run.id, name, weights),
        )

    def _step(self, at: float) -> None:
        """The server's step on a full buffer: the next version, and the step's metrics."""
        run, spec = self.run, self.spec
        self.global_weights, self.server_state = self.strategy.combine(
            self.global_weights, self.buffer, self.server_state, self._context()
        )
        metrics = self.tally.finish(at, self.buffer.staleness)
        previous = self.version
        self.version = self.owner.store(run, metrics, self.global_weights, previous)
        self.bases[self.version] = self.global_weights
        self._release(previous)
        if spec.device_weights == "saved":
            self.participants.flush()
        self.steps += 1
        self.buffer = self.strategy.buffer()
        self.tally = self._new_tally(at)
        with self.lock:
            run.rounds.append(metrics)
            run.round = self.steps
            run.done_in_round = 0
        if time.monotonic() - self.persisted > PERSIST_EVERY:
            self.owner.records.write(run)
            self.persisted = time.monotonic()

    def _new_tally(self, start: float) -> StepTally:
        return StepTally(RoundMetrics(self.steps + 1, None, [], simulated_start=start))
