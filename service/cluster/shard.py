"""One shard: the service's own app over a fleet of the devices its slot owns, served on its own port.

Plain Python, no Ray: ``service.cluster.runtime`` makes it a Ray actor. It serves HTTP itself so that
tensor bodies reach it in one hop (from the front, or straight from a client on the fast path).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.cluster.ownership import SlotOwnership
from service.cluster.state import ClusterState
from service.config import Settings
from service.errors import FleetError, Unavailable
from service.fleet.memory import configure_allocator

log = logging.getLogger(__name__)

START_TIMEOUT = 120.0
"""Seconds a shard may take to open its fleet (TensorFlow's import, scanning the devices)."""
SHARD_HEADER = b"fleet-shard"
"""On every answer of a shard: ``<slot>/<incarnation>``, so that callers can tell who answered."""


class ShardHeaders:
    """Adds ``Fleet-Shard`` and ``Fleet-Epoch`` to every answer."""

    def __init__(self, app: ASGIApp, shard: ShardServer) -> None:
        self.app = app
        self.shard = shard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        shard = self.shard

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (SHARD_HEADER, f"{shard.slot}/{shard.incarnation}".encode()),
                    (b"fleet-epoch", str(shard.ownership.epoch).encode()),
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ShardServer:
    """Serves ``slot`` on ``host`` (an ephemeral port) until ``stop``."""

    def __init__(self, settings: dict[str, Any], slot: int, host: str = "127.0.0.1") -> None:
        started = time.monotonic()
        configure_allocator()  # Ray's threads exist already; the mmap threshold still holds
        import uvicorn

        from service.api import create_app

        self.settings = Settings(**settings)
        self.slot = slot
        self.state = ClusterState(self.settings.data_dir)
        membership = self.state.membership()
        if membership is None:
            raise FleetError(
                "no member view in the data directory: the coordinator writes it before any shard"
            )
        self.incarnation = self.state.next_incarnation(slot)
        self.ownership = SlotOwnership(
            slot, membership.shards, membership.epoch, self.state, self.incarnation
        )
        if membership.pending is not None:
            self.ownership.fence(membership.pending)
        self.app = create_app(self.settings, ownership=self.ownership, front_token=self.state.front_token())
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        self.host, self.port = host, sock.getsockname()[1]
        config = uvicorn.Config(
            ShardHeaders(self.app, self),
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, name=f"shard-{slot}-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise Unavailable(f"shard {slot} could not start its HTTP server", retry_after=5)
            time.sleep(0.02)
        log.warning(
            "shard %d incarnation %d serving %d devices at %s (epoch %d), %.2f s after it started",
            slot, self.incarnation, len(self.app.state.fleet), self.address, self.ownership.epoch,
            time.monotonic() - started,
        )  # fmt: skip

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _fleet(self) -> Any:
        fleet = self.app.state.fleet
        if fleet is None:
            raise Unavailable(f"shard {self.slot} is starting", retry_after=1)
        return fleet

    def info(self) -> dict[str, Any]:
        fleet = self.app.state.fleet
        return {
            "slot": self.slot,
            "address": self.address,
            "node": socket.gethostname(),
            "pid": os.getpid(),
            "incarnation": self.incarnation,
            "epoch": self.ownership.epoch,
            "devices": len(fleet) if fleet is not None else 0,
            "resident": fleet.residency_stats().resident if fleet is not None else 0,
        }

    def fence(self, new_shards: int) -> int:
        """Stop serving the devices a resize to ``new_shards`` moves away, and hand them over."""
        self.ownership.fence(new_shards)
        fleet = self._fleet()
        moving = [d.id for d in fleet.page(limit=len(fleet) + 1).devices if self.ownership.moving(d.id)]
        return len(fleet.hand_over(moving))

    def commit(self, epoch: int, shards: int) -> int:
        """Adopt the committed view and take over the devices it now owns; returns how many."""
        self.ownership.commit(epoch, shards)
        return self._fleet().take_over(None)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)
