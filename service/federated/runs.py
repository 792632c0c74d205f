"""A run of rounds as it goes (``Run``), its metrics per round (``RoundMetrics``), and its record on
disk (``RunRecords``): ``data_dir/rounds/<id>.json``, the newest ``KEEP_RUNS`` kept; a run that was going
on when the service stopped is read back as ``interrupted``."""

from __future__ import annotations

import logging
from collections.abc import Container
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from service.errors import FleetError, RoundNotFound
from service.federated.spec import RoundSpec
from service.federated.strategies import NAMES, strategy_class
from service.storage import read_json, utc_now, write_json

log = logging.getLogger(__name__)

RunState = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
ACTIVE: tuple[RunState, ...] = ("queued", "running")
ROUNDS_DIR = "rounds"
KEEP_RUNS = 50
SHOWN_FAILURES = 20
"""Failures listed per round (all are counted)."""
SHOWN_PARTICIPANTS = 100
"""Participants listed per round (``picked`` counts them all): a run's record stays small."""
SHOWN_STRAGGLERS = 100
"""Stragglers listed per round (``straggled`` counts them all)."""


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
    seeded order until ``participants`` online ones are found: not every offline device is met). The
    ``uniform`` selector skips none: it counts the offline devices it picked (each also ``dropped``)."""
    stale_added: int = 0
    """Stale updates of earlier rounds' stragglers added to this round's mean (fedbuff: updates added
    from a version older than the current one)."""
    mean_staleness: float | None = None
    """fedbuff: the mean staleness (server steps since the device downloaded) of the step's updates."""
    simulated_start: float = 0.0
    simulated_seconds: float = 0.0
    stragglers: list[str] = field(default_factory=list)
    """The first ``SHOWN_STRAGGLERS`` stragglers, in participant order."""
    privacy: dict[str, object] | None = None
    """Differential privacy (epsilon so far at delta, the clip norm, ...) and secure aggregation (its
    cohort, survivors, bytes) of the round (``private_run.PrivateRun.finish``); None without either."""


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
    stopped: str | None = None
    """Why the run ended before its last round without failing (its privacy budget)."""

    def view(self) -> dict[str, object]:
        per_round = self.spec.participants or len(self.spec.devices)
        if self.spec.aggregation in NAMES and strategy_class(self.spec.aggregation).asynchronous:
            per_round = self.spec.options.buffer_size  # FedBuff: updates per server step
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
            "stopped": self.stopped,
        }


class RunRecords:
    """The runs' records, one JSON file each: the run's view (its devices counted, not listed: a run over
    a million devices would write megabytes at every round; records of older versions list them)."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / ROUNDS_DIR
        self.data_dir = data_dir

    def path(self, run_id: str) -> Path:
        return self.directory / f"{run_id}.json"

    def write(self, run: Run) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_json(self.path(run.id), run.view(), durable=False, root=self.data_dir)
        except FleetError as exc:
            log.error("could not write the record of round run %s: %s", run.id, exc.message)

    def ids(self) -> list[str]:
        """The IDs of the runs with a record, oldest first (none when the directory cannot be read)."""
        try:
            paths = sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return []
        return [p.stem for p in paths]

    def prune(self, active: Container[str]) -> None:
        """Delete the oldest records past ``KEEP_RUNS``, but not those of ``active`` runs."""
        ids = self.ids()
        for run_id in ids[: max(0, len(ids) - KEEP_RUNS)]:
            if run_id not in active:
                self.path(run_id).unlink(missing_ok=True)

    def read(self, run_id: str) -> dict[str, object]:
        """The view a run's record holds; RoundNotFound without one."""
        if not run_id.isalnum():
            raise RoundNotFound(f"no round run '{run_id[:64]}'")
        value = read_json(self.path(run_id), None, root=self.data_dir)
        if not isinstance(value, dict):
            raise RoundNotFound(f"no round run '{run_id}'")
        value.pop("devices", None)  # the device list of a record written by an older version
        if value.get("state") in ACTIVE:  # going on when the process that wrote it stopped
            value["state"] = "interrupted"
        return value
