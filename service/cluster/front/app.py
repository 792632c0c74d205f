"""The front's app: the routes of ``service.cluster.front.routes`` over one ``Front``, behind the
service's own guards and error answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route

from service.api import errors
from service.api.auth import KeyRing
from service.api.guards import guard
from service.cluster.front.calls import ALL_METHODS, Front, to_first
from service.cluster.front.routes import assign, devices, fleet, health, models, rounds, selection
from service.cluster.front.shards import Relayed, Shards, ViewSource, relayed
from service.cluster.state import ClusterState
from service.config import Settings
from service.errors import FleetError, Unavailable
from service.ui import ui_routes


def create_front(
    settings: Settings,
    coordinator: Any,
    keys: KeyRing | None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    """The front's app over the coordinator actor's view."""
    shards = Shards(_views_of(coordinator), ClusterState(settings.data_dir).front_token())
    app = Starlette(
        routes=_routes(),
        lifespan=_lifespan(shards, on_shutdown),
        exception_handlers={Relayed: relayed},
    )
    errors.install(app)  # FleetError as the service answers it
    app.state.front = Front(settings, coordinator, shards)
    app.state.shards = shards
    app.state.keys = keys
    guard(app, settings, keys)
    return app


def _routes() -> list[BaseRoute]:
    """In the order they are matched: the last passes whatever no other route takes to slot 0."""
    return [
        *health.routes,
        *fleet.routes,
        *devices.routes,
        *models.routes,
        *assign.routes,
        *selection.routes,
        *rounds.routes,
        *ui_routes(),
        Route("/{rest:path}", to_first, methods=ALL_METHODS),
    ]


def _views_of(coordinator: Any) -> ViewSource:
    """The coordinator actor's view, or given a slot, its view once it asked that slot anew."""

    async def fetch(slot: int | None) -> dict[str, Any]:
        method = coordinator.view if slot is None else coordinator.refresh
        args = () if slot is None else (slot,)
        try:
            view: dict[str, Any] = await method.remote(*args)
            return view
        except FleetError:
            raise
        except Exception as exc:  # Ray's errors: the coordinator itself restarts
            raise Unavailable(
                f"the coordinator does not answer ({type(exc).__name__})", retry_after=2
            ) from exc

    return fetch


def _lifespan(
    shards: Shards, on_shutdown: Callable[[], Awaitable[None]] | None
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """Closes the connections to the shards when the app stops, then runs ``on_shutdown``."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await shards.pool.close()
            if on_shutdown is not None:
                await on_shutdown()

    return lifespan
