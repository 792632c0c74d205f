"""Rounds of a sharded fleet: run by slot 0's process, each participant trained by the shard that owns it.

Slot 0 holds the run (its records, the versions it writes, the aggregate). A participant it owns
trains here; any other is asked of its owner (``POST /v1/devices/{id}/participate``, signed with the
peer token), whose answer carries the update as npz. A call no shard could take yet (the owner
restarts, the device moves in a resize) is tried again with a fresh view for up to ``ROUTE_DEADLINE``;
a call that reached its shard and then broke is the participant's failure, not retried: the device
may have trained.

What the run plans with (devices' profiles and assignment sizes) is read from the devices' files in
the shared data directory, whichever shard owns them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import httpx
import orjson

from service.api.auth import PEER_HEADER
from service.api.routes.round_privacy import PrivatizeBody
from service.cluster.ownership import SlotOwnership
from service.errors import FleetError, Unavailable
from service.federated.checkpoints import Weights
from service.federated.federation import Federation
from service.federated.participants import Participation, Update
from service.federated.spec import Evaluation
from service.federated.wire import decode_update
from service.fleet.record import RECORD, DeviceRecord
from service.profiles import DeviceProfile
from service.storage import read_json
from service.wire.errors import raise_for_error
from service.wire.view import View

ROUTE_DEADLINE = 30.0
RETRY_PAUSE = 0.2
CALL_TIMEOUT = 600.0
MISROUTED = frozenset({421, 503})
"""Not the owner (any more), or the device is moving: nothing was done, so the call is tried again."""

ViewSource = Callable[[], View]
"""The fleet's current view (the coordinator's)."""
MAX_CACHED_PROFILES = 1_000_000
"""Devices' profiles kept between runs (a pointer and a float each; their class profiles are shared)."""


class ShardParticipants:
    def __init__(
        self, federation: Federation, ownership: SlotOwnership, peers: ViewSource, token: bytes
    ) -> None:
        self.federation = federation
        self.ownership = ownership
        self._peers = peers
        self._token = token
        self._view: View | None = None
        self._http = httpx.Client(timeout=httpx.Timeout(CALL_TIMEOUT, connect=5.0))
        self._profiles: dict[str, tuple[tuple[int, int], DeviceProfile | None]] = {}
        """Profiles read from devices' records, by device, with the record's (mtime, size) then."""
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def _current(self, fresh: bool) -> View:
        if fresh or self._view is None:
            self._view = self._peers()
        return self._view

    def participate(self, device_id: str, asked: Participation, stop: Callable[[], bool]) -> Update:
        deadline = time.monotonic() + ROUTE_DEADLINE
        fresh = False
        while True:
            if self.ownership.owns(device_id):
                return self.federation.participate(device_id, asked, stop)
            owner = self._current(fresh).owner(device_id)
            if owner.slot != self.ownership.slot and owner.address is not None:
                try:
                    response = self._http.post(
                        f"{owner.address}/v1/devices/{device_id}/participate",
                        content=orjson.dumps(_body(asked)),  # its owner saves durably, if asked to save
                        headers={
                            "content-type": "application/json",
                            PEER_HEADER.decode(): self._token.decode(),
                        },
                    )
                except httpx.ConnectError:
                    response = None  # not sent: its shard is restarting
                if response is not None and response.status_code not in MISROUTED:
                    return _update(response)
            if time.monotonic() > deadline or stop():
                raise Unavailable(f"no shard took participant '{device_id}' within {ROUTE_DEADLINE:.0f} s")
            fresh = True
            time.sleep(RETRY_PAUSE)

    # The run's own state lives in slot 0's process and the shared data directory.

    def resolve_version(self, model: str, number: int | None, viewer: str | None = None) -> int:
        return self.federation.resolve_version(model, number, viewer)

    def version_weights(self, model: str, version: int) -> Weights:
        return self.federation.version_weights(model, version)

    def store_version(self, model: str, weights: Weights, meta: dict[str, object]) -> int:
        return self.federation.store_version(model, weights, meta)

    def evaluate_version(self, model: str, version: int, evaluation: Evaluation) -> float:
        return self.federation.evaluate_version(model, version, evaluation)

    def pin(self, model: str, version: int) -> contextlib.AbstractContextManager[object]:
        return self.federation.pin(model, version)

    def flush(self) -> None:
        self.federation.flush()

    def profile(self, device_id: str) -> DeviceProfile | None:
        """The profile in the device's record file, read again only when the file changed; None for an
        unprofiled device or a record that cannot be read (its part fails with the reason)."""
        path = self.federation.fleet.devices_dir / device_id / RECORD
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._profiles.get(device_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            profile = DeviceRecord.parse(device_id, read_json(path, None), RECORD).profile
        except FleetError:
            return None
        with self._lock:
            if len(self._profiles) >= MAX_CACHED_PROFILES:
                self._profiles.clear()
            self._profiles[device_id] = (key, profile)
        return profile

    def sample_counts(self, device_id: str) -> tuple[int, int]:
        return self.federation.sample_counts_in(self.federation.fleet.devices_dir / device_id)

    def hyperparameters(self, model: str) -> dict[str, float]:
        return self.federation.hyperparameters(model)

    def publish(self, run_id: str, name: str, weights: Weights) -> str:
        return self.federation.publish(run_id, name, weights)

    def version_size(self, model: str, version: int) -> int:
        return self.federation.version_size(model, version)


def _body(asked: Participation) -> dict[str, object]:
    return {
        "model": asked.model,
        "version": asked.version,
        "epochs": asked.training.epochs,
        "batch_size": asked.training.batch_size,
        "shuffle": asked.training.shuffle,
        "seed": list(asked.seed),
        "local_accuracy": asked.local_accuracy,
        "device_weights": asked.device_weights,
        "signature": asked.task.signature,
        "proximal_mu": asked.task.proximal_mu,
        "control": asked.task.control,
        "privatize": PrivatizeBody.of(asked.privatize).model_dump() if asked.privatize is not None else None,
    }


def _update(response: httpx.Response) -> Update:
    raise_for_error(response)
    return decode_update(response.content)
