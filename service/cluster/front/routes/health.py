"""Liveness, and readiness: every shard has an address."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.cluster.front.calls import front_of, json_response
from service.errors import FleetError


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        view = await asyncio.wait_for(front_of(request).shards.current(), timeout=5)
    except (FleetError, TimeoutError):
        return json_response({"status": "starting"}, 503)
    ready = all(s.address for s in view.shards)
    return json_response({"status": "ready" if ready else "starting"}, 200 if ready else 503)


routes: list[BaseRoute] = [
    Route("/healthz", healthz),
    Route("/readyz", readyz),
]
