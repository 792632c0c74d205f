"""Request-scoped access to the fleet, and running blocking interpreter work off the event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar

import anyio.to_thread
from fastapi import Depends, Path, Request

from service.fleet import Device, Fleet
from service.fleet.files import ID_PATTERN

P = ParamSpec("P")
T = TypeVar("T")


async def get_fleet(request: Request) -> Fleet:
    fleet: Fleet = request.app.state.fleet
    return fleet


FleetDep = Annotated[Fleet, Depends(get_fleet)]
DeviceId = Annotated[str, Path(description=f"device ID, {ID_PATTERN.pattern} without '..'")]
ModelName = Annotated[str, Path(description=f"model name, {ID_PATTERN.pattern} without '..'")]


async def get_device(fleet: FleetDep, device_id: DeviceId) -> Device:
    return fleet.get(device_id)


DeviceDep = Annotated[Device, Depends(get_device)]


async def in_thread(request: Request, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn`` in the worker pool: interpreter calls release the GIL, so devices run in parallel."""
    limiter = request.app.state.limiter
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=limiter)
