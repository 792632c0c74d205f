"""What the front's routes share: the front's state, calls made on a client's behalf, and the two
ways a call is passed on as it is (to its device's owner, or to slot 0)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service.api.auth import Principal
from service.cluster.front.shards import Shards, fixed
from service.config import Settings
from service.storage import check_id

ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


@dataclass(frozen=True)
class Front:
    """What the routes work with: the settings, the coordinator actor, and the shards."""

    settings: Settings
    coordinator: Any
    shards: Shards


def front_of(request: Request) -> Front:
    """The state of the front app serving ``request`` (``create_front`` sets it)."""
    front: Front = request.app.state.front
    return front


def principal_of(request: Request) -> Principal:
    """The caller, as ``Authenticate`` found it."""
    principal: Principal = request.scope["state"]["principal"]
    return principal


def json_response(value: object, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")


def with_path(request: Request, path: str | None) -> Request:
    if path is None:
        return request
    scope = dict(request.scope)
    scope["path"], scope["raw_path"] = path, path.encode()
    return Request(scope, request.receive)


def with_query(request: Request, query: str) -> Request:
    scope = dict(request.scope)
    scope["query_string"] = query.encode()
    return Request(scope, request.receive)


def on_behalf(request: Request, method: str, path: str, query: str = "") -> Request:
    """Another call on behalf of the same client (its headers and key): ``method path?query``."""
    scope = dict(request.scope)
    scope["method"], scope["path"], scope["raw_path"] = method, path, path.encode()
    scope["query_string"] = query.encode()
    return Request(scope, request.receive)


async def to_owner(request: Request) -> Response:
    """A device's call, to the shard that owns the device."""
    device_id = check_id("device", request.path_params["device_id"])
    shards = front_of(request).shards
    return await shards.send(lambda view: view.owner(device_id).slot, request, await request.body())


async def to_first(request: Request) -> Response:
    """A call no shard owns more than another, to slot 0."""
    return await front_of(request).shards.send(fixed(0), request, await request.body())
