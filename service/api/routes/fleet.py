"""The fleet as a whole: status, bulk creation and deletion."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, Field, model_validator

from service.api.deps import AdminDep, FleetDep, PrincipalDep, in_thread
from service.api.errors import documented
from service.api.metrics import REQUEST_SECONDS_BUCKETS, RequestMetrics
from service.api.routes.profiles import ProfileFields
from service.config import Settings
from service.errors import LimitExceeded, NotSharded
from service.fleet import Fleet
from service.fleet.fleet import process_rss_bytes

router = APIRouter(tags=["fleet"])
BULK_ERRORS = documented(
    e400="invalid ID or prefix",
    e403="needs an admin key",
    e404="unknown model or device",
    e409="an ID exists",
    e422="bad request",
)


class RouteRequests(BaseModel):
    method: str
    route: str = Field(description="the route template, or 'unmatched'")
    requests: int
    errors: int = Field(description="answers with status 400 and up")
    seconds: float = Field(description="the sum of their durations")
    buckets: list[int] = Field(description="cumulative counts at each of request_buckets, then the total")


class FleetStatus(BaseModel):
    devices: int = Field(description="devices registered")
    resident: int = Field(description="interpreters in memory")
    max_resident: int | None = Field(description="the residency cap in interpreters (null: none)")
    max_resident_bytes: int | None
    interpreter_bytes: int = Field(description="memory estimate per interpreter used with max_resident_bytes")
    activations: int = Field(description="interpreters created since start")
    evictions: int
    spills: int = Field(description="evictions that wrote unsaved weights to a spill file")
    train_steps: int = Field(description="training steps run since start")
    jobs: dict[str, int] = Field(description="background training jobs by state")
    process_rss_bytes: int
    requests: list[RouteRequests] = Field(
        description="HTTP requests finished since start, per method and route template"
    )
    request_buckets: list[float] = Field(
        description="the upper bounds in seconds of every route's duration buckets (then +Inf)"
    )
    time: float = Field(description="the server's clock (Unix seconds): rates are differences over it")


class ShardsView(BaseModel):
    epoch: int = Field(description="rises with every resize; 0 for a single process")
    sharded: bool = Field(description="whether devices are sharded over processes (fleet serve --shards)")
    shards: list[dict[str, Any]] = Field(
        description="per shard: slot, address, node, pid, incarnation, epoch, devices, resident, state"
    )
    coordinator: dict[str, Any] | None = Field(None, description="the process keeping the view")
    spares: list[dict[str, Any]] = Field(
        [], description="warm processes ready to replace a dead shard or to grow the fleet: node, pid, state"
    )


class Resize(BaseModel):
    count: Annotated[int, Field(ge=1, le=64, description="the new number of shards")]


class BulkCreate(ProfileFields):
    ids: list[str] | None = Field(None, description="create devices with these IDs")
    count: Annotated[int, Field(ge=1, le=1_000_000)] | None = Field(
        None, description="or create this many, with random IDs"
    )
    prefix: str = Field("", description="prefix for the random IDs")
    model: str | None = Field(None, description="model name; the embedded default if absent")

    @model_validator(mode="after")
    def one_of_ids_or_count(self) -> BulkCreate:
        if (self.ids is None) == (self.count is None):
            raise ValueError("give either ids or count")
        return self


class BulkDelete(BaseModel):
    ids: list[str]
    dry_run: bool = Field(False, description="only check that every ID exists (and may be deleted)")


class BulkResult(BaseModel):
    count: int
    ids: list[str]


def _check_size(request: Request, n: int) -> None:
    limit = request.app.state.settings.max_bulk
    if n > limit:
        raise LimitExceeded(f"{n} devices in one request; the limit is {limit} (FLEET_MAX_BULK)")


@router.get(
    "/v1/fleet",
    summary="Fleet status: devices, residency, evictions, memory",
    responses=documented(e403="needs an admin key"),
)
async def fleet_status(fleet: FleetDep, admin: AdminDep, request: Request) -> FleetStatus:
    """Counts since start: a rate is the difference of two answers over their ``time``."""
    metrics = request.app.state.metrics.requests
    return await in_thread(request, _status, fleet, request.app.state.settings, metrics)


def _status(fleet: Fleet, settings: Settings, metrics: RequestMetrics) -> FleetStatus:
    stats = fleet.residency_stats()
    return FleetStatus(
        devices=len(fleet),
        resident=stats.resident,
        max_resident=stats.max_resident,
        max_resident_bytes=settings.max_resident_bytes,
        interpreter_bytes=settings.interpreter_bytes,
        activations=stats.activations,
        evictions=stats.evictions,
        spills=stats.spills,
        train_steps=fleet.stats.train_steps.value,
        jobs=fleet.jobs_by_state(),
        process_rss_bytes=process_rss_bytes(),
        requests=[RouteRequests(**route) for route in metrics.by_route()],
        request_buckets=list(REQUEST_SECONDS_BUCKETS),
        time=time.time(),
    )


class KeyView(BaseModel):
    role: str = Field(description="'admin', or 'devices' for a key limited to a prefix")
    prefix: str = Field(description="the IDs this key may touch start with this ('' for an admin)")


@router.get(
    "/v1/whoami",
    summary="What the caller's key may do: its role and device prefix",
    responses=documented(e401="needs an API key"),
)
async def whoami(principal: PrincipalDep) -> KeyView:
    """The dashboard asks it to show each key only what it may touch."""
    return KeyView(role=principal.role, prefix=principal.prefix)


@router.get(
    "/v1/fleet/shards",
    summary="The member view of a sharded fleet: its epoch and each shard's process",
    responses=documented(e401="needs an API key"),
)
async def shard_view(principal: PrincipalDep) -> ShardsView:
    """A single process has no shards: ``sharded`` is false and the list empty. Under
    ``fleet serve --shards N`` each shard's ``address`` takes device calls directly (the fast path:
    ``FleetClient(direct=True)``); a shard that does not own a device answers 421 with ``Fleet-Epoch``."""
    return ShardsView(epoch=0, sharded=False, shards=[])


@router.post(
    "/v1/fleet/shards",
    summary="Resize a sharded fleet while traffic flows",
    responses=documented(e403="needs an admin key", e409="the fleet is not sharded"),
)
async def resize(body: Resize, admin: AdminDep) -> ShardsView:
    """Devices that move keep their unsaved weights; calls to them wait (or get 503 with
    ``Retry-After``) for the moment they move. A single process answers 409."""
    raise NotSharded("this fleet runs in one process; start it with 'fleet serve --shards N' to resize")


@router.post(
    "/v1/devices/bulk-create", status_code=status.HTTP_201_CREATED, tags=["devices"], responses=BULK_ERRORS
)
async def bulk_create(body: BulkCreate, fleet: FleetDep, admin: AdminDep, request: Request) -> BulkResult:
    """Create many devices at once; all or nothing."""
    _check_size(request, len(body.ids) if body.ids is not None else body.count or 0)
    profiles = body.profiles()
    made = await in_thread(
        request,
        fleet.create_many,
        body.ids,
        count=body.count or 0,
        prefix=body.prefix,
        model=body.model,
        profiles=profiles,
    )
    return BulkResult(count=len(made), ids=[d.id for d in made])


@router.post("/v1/devices/bulk-delete", tags=["devices"], responses=BULK_ERRORS)
async def bulk_delete(body: BulkDelete, fleet: FleetDep, admin: AdminDep, request: Request) -> BulkResult:
    """Delete many devices and their directories; unknown IDs fail the request before any deletion."""
    _check_size(request, len(body.ids))
    count = await in_thread(request, fleet.delete_many, body.ids, dry_run=body.dry_run)
    return BulkResult(count=count, ids=body.ids)
