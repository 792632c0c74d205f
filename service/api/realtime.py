"""Real-time mode (``FLEET_REALTIME_FACTOR``): profiled devices keep their profiles' hours over HTTP.

Simulated time runs from the app's start at ``1 / factor`` simulated seconds per real second. A call on a
profiled device that its availability has offline now is refused (503 ``DeviceOffline``, with
``Retry-After`` until it comes online) before the route runs, so the device loses nothing; a call it
takes that does work on the phone (training, predicting, a checkpoint, adopting or evaluating: ``WORK``)
is answered no sooner than its clock's advance during the call times the factor (the simulated time of
the work it did; a job running on the device at the same time counts too). The wait is
``asyncio.sleep`` in the event loop: no thread is held.

The server's own view of the device is not the phone: ``/v1/devices/{id}`` itself (show, delete) and
``/v1/devices/{id}/profile`` answer whatever the device's availability, and reads (``GET``, such as
polling a job) are not stretched. Calls between the processes of a sharded fleet (a round's
participants, signed with the peer header) are the server's own, on the run's simulated clock, and
pass untouched. With the factor 0 the middleware is not installed at all.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass, field

import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.auth import Principal
from service.api.errors import error_headers, error_response, status_of
from service.api.pool import WorkerPool
from service.errors import DeviceOffline, FleetError
from service.fleet import Device, Fleet
from service.profiles import DeviceProfile
from service.profiles.availability import next_online

DEVICE_CALL = re.compile(r"^/v(?:1/devices|2/models)/([^/]+)(/.*)?$")
"""Routes of one device: ``/v1/devices/{id}/...`` and the Open Inference Protocol's ``/v2/models/{id}``."""
NOT_DEVICE_IDS = frozenset({"bulk-create", "bulk-delete"})
SERVER_SIDE = frozenset({None, "/", "/profile"})
"""What follows ``/v1/devices/{id}`` on routes of the server's own record, answered while offline."""
WORK = re.compile(r"^/(?:train|infer|save|restore|adopt|evaluate|signatures/[^/]+)$")
"""What follows the device on the routes whose calls do the phone's work (``/v2/models/{id}/infer`` too)."""


@dataclass
class SimulatedTime:
    """Simulated seconds since ``started`` (``time.monotonic()``), ``factor`` real seconds each."""

    factor: float
    started: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        return (time.monotonic() - self.started) / self.factor

    def real(self, simulated: float) -> float:
        return simulated * self.factor


def offline_error(device_id: str, now: float, comes_online: float, clock: SimulatedTime) -> DeviceOffline:
    """The refusal of a call while offline, with ``Retry-After`` until the device's next spell online."""
    if math.isinf(comes_online):
        return DeviceOffline(
            f"device '{device_id}' is offline at simulated time {now:.1f} s and its profile has it never "
            "come online again; change its profile (PUT /v1/devices/{id}/profile)",
            retry_after=86_400,
        )
    wait = clock.real(comes_online - now)
    return DeviceOffline(
        f"device '{device_id}' is offline at simulated time {now:.1f} s; its profile has it come online at "
        f"{comes_online:.1f} s, in {math.ceil(wait)} s",
        retry_after=max(1, math.ceil(wait)),
    )


class RealTime:
    """The middleware: refuses calls on offline devices, and stretches the others to simulated time."""

    def __init__(self, app: ASGIApp, clock: SimulatedTime) -> None:
        self.app = app
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = DEVICE_CALL.match(scope["path"]) if scope["type"] == "http" else None
        if found is not None and scope.get("state", {}).get("peer"):
            found = None  # another process of the fleet (its token checked): a round's participant
        device = None if found is None else await self._device(scope, found.group(1))
        profile = None if device is None else device.profile
        if found is None or device is None or profile is None:
            await self.app(scope, receive, send)
            return
        server_side = found.group(2) in SERVER_SIDE and scope["path"].startswith("/v1/")
        refusal = None if server_side else self._refusal(device.id, profile)
        if refusal is not None:
            status, path, headers = status_of(refusal), scope["path"], error_headers(refusal)
            response = error_response(status, refusal.code, refusal.message, path=path, headers=headers)
            await response(scope, receive, send)
            return
        work = scope["method"] != "GET" and WORK.match(found.group(2) or "") is not None
        await self.app(scope, receive, self._stretched(device, send) if work else send)

    async def _device(self, scope: Scope, device_id: str) -> Device | None:
        """The device the call is on, if the caller may touch it and its record can be read; else None
        (the route then answers as it would without real time: 404, 421, the record's problem)."""
        principal: Principal | None = scope.get("state", {}).get("principal")
        state = scope["app"].state
        fleet: Fleet | None = state.fleet
        if device_id in NOT_DEVICE_IDS or principal is None or fleet is None:
            return None
        if not principal.may_touch(device_id):
            return None
        try:
            device = fleet.get(device_id)
            if device.loaded_record() is None:  # not read yet: read it (blocking, once)
                pool: WorkerPool | None = getattr(state, "pool", None)
                await (pool.run(device.read_record) if pool else anyio.to_thread.run_sync(device.read_record))
        except FleetError:
            return None
        return device

    def _refusal(self, device_id: str, profile: DeviceProfile) -> DeviceOffline | None:
        now = self.clock.now()
        comes_online = next_online(profile, device_id, now)
        return None if comes_online == now else offline_error(device_id, now, comes_online, self.clock)

    def _stretched(self, device: Device, send: Send) -> Send:
        """``send``, its response held back until the call has taken its simulated time."""
        started, clock_before = time.monotonic(), device.clock

        async def held(message: Message) -> None:
            if message["type"] == "http.response.start":
                advanced = device.clock - clock_before
                wait = self.clock.real(advanced) - (time.monotonic() - started)
                if wait > 0:
                    await asyncio.sleep(wait)
            await send(message)

        return held
