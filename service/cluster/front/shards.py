"""The front's hop to the shards: the cached member view, and each call sent to the slot that owns it.

Device routes are forwarded as HTTP to the owning shard's own server (one hop for the tensor body).
The front holds a cached member view; a shard that answers 421 (not the owner) makes it fetch the
view again and retry, as does a shard that cannot be reached (it is restarting: its address changes).
A call that reached a shard which then failed is not retried: it may have been applied, and a train
step must not apply twice. Such a call gets 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from service.api.auth import FRONT_HEADER, PEER_HEADER
from service.cluster.forward import Answer, Broken, NotSent, Pool
from service.errors import FleetError, Unavailable
from service.wire.view import MOVING_HEADER, View

log = logging.getLogger(__name__)

ROUTE_DEADLINE = 10.0
"""Seconds the front keeps retrying a call no shard could take yet (a restart, a resize)."""
CALL_TIMEOUT = 120.0
MOVE_POLL = 0.05
"""Seconds between the front's tries of a call to a device moving between shards (a resize)."""
MOVING = MOVING_HEADER.lower().encode()
HOP_HEADERS = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"content-length",
        b"te",
        b"upgrade",
        b"proxy-connection",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        FRONT_HEADER,
        PEER_HEADER,
    }
)
ViewSource = Callable[[int | None], Awaitable[dict[str, Any]]]
"""Fetches the view from the coordinator; given a slot, asks that slot's process anew first."""
SlotPicker = Callable[[View], int]


def fixed(slot: int) -> SlotPicker:
    return lambda _view: slot


class Shards:
    """The cached view and the connections to each shard."""

    def __init__(self, fetch: ViewSource, token: bytes) -> None:
        self._fetch = fetch
        self.token = token
        self.view: View | None = None
        self.pool = Pool(timeout=CALL_TIMEOUT)
        self._refreshing: asyncio.Lock | None = None

    async def current(self) -> View:
        if self.view is None:
            await self.refresh()
        assert self.view is not None
        return self.view

    async def refresh(self, slot: int | None = None, seen: View | None = None) -> View:
        """A newer view; calls made with the same stale ``seen`` view share one fetch."""
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            if seen is not None and self.view is not None and self.view is not seen:
                return self.view
            self.view = View.parse(await self._fetch(slot))
            return self.view

    async def call(self, slot_of: SlotPicker, request: Request, body: bytes) -> Answer:
        """The request's answer from the slot ``slot_of`` picks in the current view, retrying what is
        safe: a call that could not be sent, one refused as not the owner's, one of a moving device."""
        deadline = time.monotonic() + ROUTE_DEADLINE
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        headers = _forwarded_headers(request, self.token)
        while True:
            view = await self.current()
            slot = slot_of(view)
            if slot >= len(view.shards):  # a fleet-wide call to each shard, and a resize took one away
                raise Unavailable("the fleet was resized during the call; retry", retry_after=1)
            shard = view.shards[slot]
            retry_after = 0.2
            try:
                if shard.address is None:
                    raise NotSent("no address yet")
                answer = await self.pool.request(shard.address, request.method, target, headers, body)
            except NotSent:  # safe to try again once the slot has a process
                with contextlib.suppress(FleetError):
                    await self.refresh(shard.slot, view)
            except Broken as exc:
                with contextlib.suppress(FleetError):
                    if shard.slot >= len((await self.refresh(None, view)).shards):
                        # A slot a resize took away owns nothing: the call was refused there, not applied.
                        continue
                log.warning("shard %d failed during %s %s: %s", shard.slot, request.method, target, exc)
                asyncio.get_running_loop().create_task(self._quiet_refresh(shard.slot, view))
                raise Unavailable(
                    f"shard {shard.slot} failed during the call; it may or may not have been applied: "
                    "check the device, then retry",
                    retry_after=2,
                ) from exc
            else:
                if answer.status == 421:
                    await self.refresh(None, view)
                elif answer.status == 503 and answer.header(MOVING) is not None:
                    retry_after = MOVE_POLL  # the commit ends it: look again soon
                else:
                    return answer
            if time.monotonic() + retry_after > deadline:
                raise Unavailable(
                    "no shard could take the call in time (restarting or resizing)", retry_after=2
                )
            await asyncio.sleep(retry_after)

    async def send(self, slot_of: SlotPicker, request: Request, body: bytes) -> Response:
        """``call``, relayed as the front's answer."""
        return relay(await self.call(slot_of, request, body))

    async def _quiet_refresh(self, slot: int, seen: View) -> None:
        try:
            await self.refresh(slot, seen)
        except Exception:
            log.exception("could not refresh the view of shard %d", slot)

    async def each(self, request: Request, body: bytes = b"") -> list[Answer]:
        """The same request to every shard at once; the first error answer is relayed as it is."""
        view = await self.current()
        answers = await asyncio.gather(*(self.call(fixed(s.slot), request, body) for s in view.shards))
        for answer in answers:
            if answer.status >= 400:
                raise Relayed(answer)
        return answers


class Relayed(Exception):
    """A shard's error answer, to be the front's answer as it is (``relayed`` answers it)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer


def _forwarded_headers(request: Request, token: bytes) -> list[tuple[bytes, bytes]]:
    headers = [(k, v) for k, v in request.scope["headers"] if k not in HOP_HEADERS]
    headers.append((FRONT_HEADER, token))
    client = request.scope.get("client")
    if client:
        headers.append((b"x-forwarded-for", client[0].encode()))
    return headers


def relay(answer: Answer) -> Response:
    """A shard's answer as the front's: its status, body and headers, less the hop's own."""
    response = Response(answer.body, status_code=answer.status)
    response.raw_headers = [(k, v) for k, v in answer.headers if k not in HOP_HEADERS]
    response.raw_headers.append((b"content-length", str(len(answer.body)).encode()))
    return response


async def relayed(request: Request, exc: Exception) -> Response:
    """The app's handler of ``Relayed``."""
    assert isinstance(exc, Relayed)
    return relay(exc.answer)
