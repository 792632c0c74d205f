"""Devices: the fleet's list merged from each shard's, a new device made by its owner, bulk creation
and deletion split by owner (all or nothing), and each device's own calls passed to its owner."""

from __future__ import annotations

import secrets

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.api import errors
from service.api.codecs import json_object
from service.api.routes.fleet import BulkCreate, BulkDelete
from service.cluster import merge
from service.cluster.front.calls import (
    ALL_METHODS,
    front_of,
    json_response,
    principal_of,
    to_owner,
    with_path,
)
from service.cluster.front.shards import fixed
from service.config import Settings
from service.errors import InvalidRequest, LimitExceeded
from service.storage import check_id

PROFILE_FIELDS = ("profile", "profile_mix", "profile_seed")
"""What of a bulk-create's body profiles the devices (passed on to each shard)."""


async def devices(request: Request) -> Response:
    shards = front_of(request).shards
    if request.method == "GET":
        pages = [orjson.loads(a.body) for a in await shards.each(request)]  # the shards check the query
        return json_response(merge.merge_pages(pages, int(request.query_params.get("limit", "100"))))
    wanted = json_object(await request.body())  # not JSON, or not an object: 400, never 500
    device_id = wanted.get("id") or _random_id(principal_of(request).prefix)
    wanted["id"] = check_id("device", str(device_id))
    return await shards.send(lambda view: view.owner(wanted["id"]).slot, request, orjson.dumps(wanted))


async def bulk_create(request: Request) -> Response:
    """Each shard creates its own devices; profiles drawn from a mix come out the same on any shard."""
    front = front_of(request)
    principal_of(request).require_admin("POST /v1/devices/bulk-create")
    wanted = json_object(await request.body())
    errors.validated(BulkCreate, wanted)  # 422 as a single process answers; the checks below are its own
    ids = wanted.get("ids")
    if ids is None:
        count = wanted.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise InvalidRequest("give either ids or count (a positive integer)")
        _check_bulk(front.settings, count)
        prefix = str(wanted.get("prefix", ""))
        ids = list(dict.fromkeys(_random_id(prefix) for _ in range(count)))
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InvalidRequest("ids must be a list of device IDs")
    _check_bulk(front.settings, len(ids))
    view = await front.shards.current()
    parts = view.partition(check_id("device", i) for i in ids)
    made: list[tuple[int, list[str]]] = []
    failure: Response | None = None
    for slot, part in parts.items():
        profiled = {k: wanted[k] for k in PROFILE_FIELDS if k in wanted}  # drawn per ID: same anywhere
        part_body = orjson.dumps({"ids": part, "model": wanted.get("model"), **profiled})
        reply = await front.shards.send(fixed(slot), request, part_body)
        if reply.status_code >= 300:
            failure = reply
            break
        made.append((slot, part))
    if failure is not None:  # all or nothing: remove what the other shards made
        for slot, part in made:
            undo = with_path(request, "/v1/devices/bulk-delete")
            await front.shards.send(fixed(slot), undo, orjson.dumps({"ids": part}))
        return failure
    return json_response({"count": len(ids), "ids": ids}, status=201)


async def bulk_delete(request: Request) -> Response:
    front = front_of(request)
    principal_of(request).require_admin("POST /v1/devices/bulk-delete")
    wanted = json_object(await request.body())
    errors.validated(BulkDelete, wanted)
    ids = wanted.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InvalidRequest("ids must be a list of device IDs")
    _check_bulk(front.settings, len(ids))
    view = await front.shards.current()
    parts = view.partition(check_id("device", i) for i in dict.fromkeys(ids))
    for check_only in (True, False):  # unknown IDs fail the request before any deletion
        for slot, part in parts.items():
            part_body = orjson.dumps({"ids": part, "dry_run": check_only})
            reply = await front.shards.send(fixed(slot), request, part_body)
            if reply.status_code >= 300:
                return reply
    return json_response({"count": sum(len(p) for p in parts.values()), "ids": ids})


def _random_id(prefix: str) -> str:
    return check_id("device", f"{prefix}{secrets.token_hex(6)}")


def _check_bulk(settings: Settings, n: int) -> None:
    if n > settings.max_bulk:
        raise LimitExceeded(f"{n} devices in one request; the limit is {settings.max_bulk} (FLEET_MAX_BULK)")


routes: list[BaseRoute] = [
    Route("/v1/devices", devices, methods=["GET", "POST"]),
    Route("/v1/devices/bulk-create", bulk_create, methods=["POST"]),
    Route("/v1/devices/bulk-delete", bulk_delete, methods=["POST"]),
    Route("/v1/devices/{device_id}", to_owner, methods=ALL_METHODS),
    Route("/v1/devices/{device_id}/{rest:path}", to_owner, methods=ALL_METHODS),
    Route("/v2/models/{device_id}", to_owner, methods=ALL_METHODS),
    Route("/v2/models/{device_id}/{rest:path}", to_owner, methods=ALL_METHODS),
]
