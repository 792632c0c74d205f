"""Request-scoped access to the fleet and the caller, and running blocking work off the event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar

import anyio.to_thread
from fastapi import Depends, Path, Request

from service.api.auth import Principal
from service.api.pool import WorkerPool
from service.api.quotas import Quotas
from service.errors import NotAuthenticated
from service.federated.federation import Federation
from service.fleet import Device, Fleet
from service.fleet.fleet import absent
from service.runtime import CompiledModel
from service.storage import ID_PATTERN

P = ParamSpec("P")
T = TypeVar("T")


async def get_fleet(request: Request) -> Fleet:
    fleet: Fleet = request.app.state.fleet
    return fleet


async def get_principal(request: Request) -> Principal:
    """The caller, as ``Authenticate`` found it (every route but the probes passes through it)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise NotAuthenticated("this route needs an API key: send 'Authorization: Bearer KEY'")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_admin(request: Request, principal: PrincipalDep) -> Principal:
    """The caller, who must hold an admin key (or be on loopback in protected mode)."""
    principal.require_admin(f"{request.method} {request.url.path}")
    return principal


async def get_federation(request: Request) -> Federation:
    federation: Federation = request.app.state.federation
    return federation


async def get_quotas(request: Request) -> Quotas:
    quotas: Quotas = request.app.state.quotas
    return quotas


FleetDep = Annotated[Fleet, Depends(get_fleet)]
QuotasDep = Annotated[Quotas, Depends(get_quotas)]
FederationDep = Annotated[Federation, Depends(get_federation)]
AdminDep = Annotated[Principal, Depends(get_admin)]
DeviceId = Annotated[str, Path(description=f"device ID, {ID_PATTERN.pattern} without '..'")]
ModelName = Annotated[str, Path(description=f"model name, {ID_PATTERN.pattern} without '..'")]


def check_access(principal: Principal, device_id: str) -> None:
    """A device outside the caller's prefix is reported exactly as an absent one."""
    if not principal.may_touch(device_id):
        raise absent(device_id)


async def get_device(fleet: FleetDep, principal: PrincipalDep, device_id: DeviceId) -> Device:
    check_access(principal, device_id)
    return fleet.get(device_id)


DeviceDep = Annotated[Device, Depends(get_device)]


async def in_thread(request: Request, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn`` in the worker pool: interpreter calls release the GIL, so devices run in parallel."""
    pool: WorkerPool | None = getattr(request.app.state, "pool", None)
    if pool is None:  # before the app starts: anyio's threads
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
    return await pool.run(fn, *args, **kwargs)


async def device_model(request: Request, device: Device) -> CompiledModel:
    """The device's compiled model: at once when it is loaded, else read in the worker pool."""
    model = device.loaded_model()
    return model if model is not None else await in_thread(request, device.load)
