"""Assignments of a dataset's splits or of profiles: each shard assigns its own devices (a device's
split or profile depends on the seed and its ID alone), and the front sums their answers."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.api.codecs import json_object
from service.cluster.front.calls import front_of, json_response
from service.cluster.front.routes.selection import selected
from service.cluster.front.shards import fixed, relay
from service.cluster.merge import merge_profile_assigns
from service.data.disjoint_assign import DISJOINT_SCHEMES
from service.errors import InvalidRequest


async def each_assigns(request: Request) -> list[dict[str, Any]] | Response:
    """The assignment asked of each shard for its own selected devices: their answers, or the first
    failure's, relayed."""
    shards = front_of(request).shards
    wanted = json_object(await request.body())
    parts = await selected(request, wanted)
    if not parts:
        raise InvalidRequest("the assignment selects no devices")
    # A disjoint partition is over the whole selection: each shard is told every party, writes its own.
    disjoint = request.url.path.startswith("/v1/datasets/") and wanted.get("scheme") in DISJOINT_SCHEMES
    parties = {"parties": sorted(i for part in parts.values() for i in part)} if disjoint else {}
    results = []
    for slot, part in parts.items():
        body = orjson.dumps({**wanted, "ids": part, "prefix": None, "all": False, **parties})
        answer = await shards.call(fixed(slot), request, body)
        if answer.status >= 300:
            return relay(answer)
        results.append(orjson.loads(answer.body))
    return results


async def assign(request: Request) -> Response:
    """A dataset's splits, each shard's devices by that shard."""
    results = await each_assigns(request)
    if isinstance(results, Response):
        return results
    merged = {**results[0], "devices": sum(r["devices"] for r in results)}
    merged["seconds"] = max(r["seconds"] for r in results)
    return json_response(merged)


async def assign_profiles(request: Request) -> Response:
    """Profiles from a mix, each shard's devices by that shard."""
    results = await each_assigns(request)
    if isinstance(results, Response):
        return results
    return json_response(merge_profile_assigns(results))


routes: list[BaseRoute] = [
    Route("/v1/datasets/{name}/assign", assign, methods=["POST"]),
    Route("/v1/profiles/assign", assign_profiles, methods=["POST"]),
]
