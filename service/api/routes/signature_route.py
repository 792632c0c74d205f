"""The signature routes' POSTs (``/v1/devices/{device_id}/train`` and its kin), served as raw ASGI.

A train step of batch 100 takes about 0.35 ms in the interpreter; FastAPI's per-request machinery
(solving the route's dependencies, validating path parameters, wrapping the endpoint) cost about as
much again. ``SignatureRoute`` stands just before each documented route in the router and answers its
POSTs itself, doing the same work in the same order (the caller, the ID and its scope, the device, the
body checked against the signature, the step, the answer) through the same functions, so every answer,
error or not, is the one the documented route gave. Other methods fall through to the documented
route (405), and the OpenAPI document, which lists only ``APIRoute``s, does not change.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match, NoMatchFound, get_route_path
from starlette.types import Receive, Scope, Send

from service.api.deps import get_device, get_principal
from service.api.routes.devices import run_signature


class SignatureRoute(BaseRoute):
    """POST of ``route`` (a signature route of ``devices``), without FastAPI's dependency machinery."""

    def __init__(self, route: APIRoute, signature: str | None) -> None:
        self.route = route
        self.path = route.path
        self.path_format = route.path_format
        """What the request metrics name it by: the documented route's template."""
        self.path_regex = route.path_regex
        self.name = route.name
        self.methods = {"POST"}
        self.include_in_schema = False
        self.signature = signature
        """The signature it runs; None: the one in the path (``/signatures/{signature}``)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != "POST":
            return Match.NONE, {}
        match = self.path_regex.match(get_route_path(scope))
        if match is None:
            return Match.NONE, {}
        # Both parameters are plain strings (Starlette's "str" converter returns what it matched).
        return Match.FULL, {"route": self, "endpoint": self.route.endpoint, "path_params": match.groupdict()}

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)  # the documented route answers for the name

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        params: dict[str, str] = scope["path_params"]
        principal = await get_principal(request)
        device = await get_device(request.app.state.fleet, principal, params["device_id"])
        signature = self.signature if self.signature is not None else params["signature"]
        response = await run_signature(device, signature, request)
        await response(scope, receive, send)


SIGNATURE_ROUTES = {
    "/v1/devices/{device_id}/train": "train",
    "/v1/devices/{device_id}/infer": "infer",
    "/v1/devices/{device_id}/save": "save",
    "/v1/devices/{device_id}/restore": "restore",
    "/v1/devices/{device_id}/signatures/{signature}": None,
}


def install(app: FastAPI, router: APIRouter) -> None:
    """Put a ``SignatureRoute`` for each signature route of ``router`` (the devices') first in ``app``'s
    routes, where the router matches nothing else before it (every route takes a few microseconds to
    refuse a path); just before where ``app`` includes ``router`` if any route up to there matches
    such a POST, so that precedence never changes (``tests/api/test_signature_route.py``)."""
    fast = [
        SignatureRoute(route, SIGNATURE_ROUTES[route.path])
        for route in router.routes
        if isinstance(route, APIRoute) and route.path in SIGNATURE_ROUTES and "POST" in (route.methods or ())
    ]
    routes = app.router.routes
    index = next(i for i, r in enumerate(routes) if getattr(r, "original_router", None) is router)
    samples = [_post(route.path.format(device_id="d", signature="s")) for route in fast]
    if not any(r.matches(scope)[0] != Match.NONE for r in routes[:index] for scope in samples):
        index = 0
    routes[index:index] = fast


def _post(path: str) -> Scope:
    return {"type": "http", "method": "POST", "path": path, "root_path": "", "headers": []}
