"""The fleet as a whole: its shards (and resizing them), its status and its metrics, merged."""

from __future__ import annotations

import asyncio

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.api import errors
from service.api.codecs import json_object
from service.api.routes.fleet import Resize
from service.cluster import merge
from service.cluster.front.calls import front_of, json_response, principal_of
from service.errors import Unavailable
from service.fleet.fleet import process_rss_bytes


async def shard_list(request: Request) -> Response:
    """The view and each shard's own account; a POST resizes the fleet first."""
    front = front_of(request)
    principal = principal_of(request)
    if request.method == "POST":
        principal.require_admin("POST /v1/fleet/shards")
        count = errors.validated(Resize, json_object(await request.body())).count
        from ray.exceptions import RayError  # only a sharded front runs this, and it has Ray

        try:
            await front.coordinator.resize.remote(count)
        except RayError as exc:  # a shard died mid-resize; every step is idempotent: ask again
            raise Unavailable(f"the resize to {count} shards failed: {type(exc).__name__}", 2) from exc
        await front.shards.refresh()
    view = await front.shards.refresh()
    details, whoami = await asyncio.gather(
        front.coordinator.shard_details.remote(), front.coordinator.whoami.remote()
    )
    return json_response({"epoch": view.epoch, "sharded": True, "coordinator": whoami, **details})


async def fleet_status(request: Request) -> Response:
    statuses = [orjson.loads(a.body) for a in await front_of(request).shards.each(request)]
    return json_response(merge.merge_fleet_status(statuses, process_rss_bytes()))


async def metrics(request: Request) -> Response:
    texts = [a.body.decode() for a in await front_of(request).shards.each(request)]
    return Response(merge.merge_metrics(texts), media_type="text/plain; version=0.0.4; charset=utf-8")


routes: list[BaseRoute] = [
    Route("/v1/fleet/shards", shard_list, methods=["GET", "POST"]),
    Route("/v1/fleet", fleet_status),
    Route("/metrics", metrics),
]
