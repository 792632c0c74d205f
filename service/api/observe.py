"""Every HTTP request, timed once and handed to sinks: the request metrics and the JSON access log.

A pure ASGI middleware (no ``BaseHTTPMiddleware``, which copies each body through a queue). It names a
request by its route template (``/v1/devices/{device_id}/train``), never by its path, so metrics get one
series per route however many devices there are.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"
"""The route label of requests that reach no route: unknown paths, and bodies refused by their length."""

ACCESS_LOG = logging.getLogger("service.access")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    method: str
    route: str
    """The route template, or ``UNMATCHED``."""
    path: str
    status: int
    seconds: float
    device_id: str | None
    client: str | None


RequestSink = Callable[[RequestRecord], None]


def _route_of(scope: Scope) -> tuple[str, dict[str, str]]:
    """The matched route's template and path parameters, which the router leaves in the scope.

    A request refused before routing (a 413 on its Content-Length) has none: it counts as unmatched.
    """
    template = getattr(scope.get("route"), "path_format", None)
    return (template or UNMATCHED), (scope.get("path_params") or {})


class RequestObserver:
    def __init__(self, app: ASGIApp, sinks: Sequence[RequestSink]) -> None:
        self.app = app
        self.sinks = tuple(sinks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.sinks:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app raises before answering, the server's error handler sends a 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            seconds = time.perf_counter() - started
            route, params = _route_of(scope)
            client = scope.get("client")
            record = RequestRecord(
                method=scope["method"],
                route=route,
                path=scope["path"],
                status=status,
                seconds=seconds,
                device_id=params.get("device_id"),
                client=client[0] if client else None,
            )
            for sink in self.sinks:
                sink(record)


def log_request(record: RequestRecord) -> None:
    """One JSON line on the access log."""
    line: dict[str, object] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "method": record.method,
        "route": record.route,
        "path": record.path,
        "status": record.status,
        "duration_ms": round(record.seconds * 1000, 3),
        "client": record.client,
    }
    if record.device_id is not None:
        line["device_id"] = record.device_id
    ACCESS_LOG.info(orjson.dumps(line).decode())


class _JsonLinesHandler(logging.StreamHandler):
    """Writes each access record's message, already a JSON line, to stdout as is."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.setFormatter(logging.Formatter("%(message)s"))


def enable_access_log() -> None:
    """Send the access log to stdout, once per process however many apps are built."""
    ACCESS_LOG.setLevel(logging.INFO)
    ACCESS_LOG.propagate = False
    if not any(isinstance(h, _JsonLinesHandler) for h in ACCESS_LOG.handlers):
        ACCESS_LOG.addHandler(_JsonLinesHandler())
