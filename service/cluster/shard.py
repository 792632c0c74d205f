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

from service.cluster.names import COORDINATOR, namespace
from service.cluster.ownership import SlotOwnership
from service.cluster.state import ClusterState
from service.config import Settings
from service.errors import FleetError, Unavailable
from service.fleet.memory import configure_allocator
from service.wire.view import View

log = logging.getLogger(__name__)

START_TIMEOUT = 120.0
"""Seconds a shard may take to open its fleet (TensorFlow's import, scanning the devices)."""
BACKGROUND_NICE = 10
"""Added to a spare's nice value while it imports TensorFlow (never lowered: that needs privilege)."""
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


def _import_service(nice: int = 0) -> None:
    """Import what serving needs (TensorFlow's import is most of it), at ``nice`` added to this thread's
    nice value."""
    if nice:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + nice)
    import tensorflow  # noqa: F401
    import uvicorn  # noqa: F401

    from service import api  # noqa: F401


class ShardServer:
    """A process that serves one slot on ``host`` (an ephemeral port) until ``stop``.

    Made, it is a warm spare: TensorFlow and the service are imported (most of a new process's
    start-up), and it serves nothing until ``serve`` gives it a slot. ``name`` is how the slot's
    record on disk names it (its Ray actor's name). With ``background``, the imports run at a low
    CPU priority: a spare warming up beside serving shards takes only the CPU they leave.
    """

    def __init__(
        self,
        settings: dict[str, Any],
        host: str = "127.0.0.1",
        name: str | None = None,
        background: bool = False,
    ) -> None:
        self.born = time.monotonic()
        configure_allocator()  # Ray's threads exist already; the mmap threshold still holds
        if background:  # in a thread of its own: on Linux a nice value is a thread's, not the process's
            importer = threading.Thread(target=_import_service, args=(BACKGROUND_NICE,), name="spare-import")
            importer.start()
            importer.join()
        else:
            _import_service()
        self.settings = Settings(**settings)
        self.host = host
        self.name = name
        self.slot: int | None = None
        self.incarnation = 0
        self.state = ClusterState(self.settings.data_dir)

    def serve(self, slot: int, incarnation: int) -> dict[str, Any]:
        """Serve ``slot`` as its ``incarnation``, if the slot's record on disk gives it to this process;
        returns ``info``. Idempotent."""
        if self.slot is not None:
            if (self.slot, self.incarnation) != (slot, incarnation):
                raise FleetError(f"this process serves slot {self.slot} already")
            return self.info()
        if (self.state.holder(slot), self.state.incarnation(slot)) != (self.name, incarnation):
            raise FleetError(f"slot {slot} incarnation {incarnation} was given to another process since")
        import uvicorn

        from service.api import create_app
        from service.api.auth import peer_token
        from service.cluster.participants import ShardParticipants
        from service.federated.federation import Federation

        started = time.monotonic()
        membership = self.state.membership()
        if membership is None:
            raise FleetError(
                "no member view in the data directory: the coordinator writes it before any shard"
            )
        self.incarnation = incarnation
        self.ownership = SlotOwnership(
            slot, membership.shards, membership.epoch, self.state, self.incarnation
        )
        if membership.pending is not None:
            self.ownership.fence(membership.pending)
        front_token = self.state.front_token()

        def participants(federation: Federation) -> ShardParticipants:
            return ShardParticipants(federation, self.ownership, self._peers, peer_token(front_token))

        self.app = create_app(
            self.settings, ownership=self.ownership, front_token=front_token, participants=participants
        )
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
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
        self.slot = slot
        log.warning(
            "shard %d incarnation %d serving %d devices at %s (epoch %d) in %.2f s, %.2f s after its process",
            slot, self.incarnation, len(self.app.state.fleet), self.address, self.ownership.epoch,
            time.monotonic() - started, time.monotonic() - self.born,
        )  # fmt: skip
        return self.info()

    def _peers(self) -> View:
        """The fleet's view, from the coordinator: where a round's participants are asked."""
        import ray  # not above: this module is plain Python; only a shard Ray made an actor asks

        coordinator: Any = ray.get_actor(COORDINATOR, namespace=namespace(self.settings.data_dir))
        view: dict[str, Any] = ray.get(coordinator.view.remote(), timeout=10)
        return View.parse(view)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _fleet(self) -> Any:
        if self.slot is None:
            raise FleetError("a spare process serves no slot")
        fleet = self.app.state.fleet
        if fleet is None:
            raise Unavailable(f"shard {self.slot} is starting", retry_after=1)
        return fleet

    def info(self) -> dict[str, Any]:
        """Who this process is; a spare's has ``slot`` None."""
        process = {"slot": self.slot, "node": socket.gethostname(), "pid": os.getpid(), "name": self.name}
        if self.slot is None:
            return process
        fleet = self.app.state.fleet
        return {
            **process,
            "address": self.address,
            "incarnation": self.incarnation,
            "epoch": self.ownership.epoch,
            "devices": len(fleet) if fleet is not None else 0,
            "resident": fleet.residency_stats().resident if fleet is not None else 0,
        }

    def fence(self, new_shards: int) -> int:
        """Stop serving the devices a resize to ``new_shards`` moves away, and hand them over."""
        fleet = self._fleet()
        self.ownership.fence(new_shards)
        moving = [i for i in fleet.ids() if self.ownership.moving(i)]  # IDs: no device object made
        return len(fleet.hand_over(moving))

    def commit(self, epoch: int, shards: int) -> int:
        """Adopt the committed view and take over the devices it now owns; returns how many."""
        fleet = self._fleet()
        self.ownership.commit(epoch, shards)
        return int(fleet.take_over(None))

    def stop(self) -> None:
        if self.slot is None:
            return
        self.server.should_exit = True
        self._thread.join(timeout=15)
