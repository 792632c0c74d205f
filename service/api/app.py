"""The FastAPI application: built by ``create_app(settings)``, no module-level state."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
from fastapi import FastAPI

from service import __version__
from service.api import errors, openapi
from service.api.auth import KeyRing, peer_token
from service.api.guards import guard
from service.api.metrics import Metrics
from service.api.observe import RequestObserver, RequestSink, enable_access_log, log_request
from service.api.quotas import Quotas
from service.api.realtime import RealTime, SimulatedTime
from service.api.routes import datasets, devices, fleet, health, jobs, metrics, models, profiles, rounds, v2
from service.cluster.ownership import SlotOwnership
from service.config import Settings
from service.federated.federation import Federation
from service.fleet import DEFAULT_MODEL, Fleet
from service.runtime.quiet import tensorflow_start_up_quiet
from service.ui import ui_routes

if TYPE_CHECKING:
    from service.cluster.participants import ViewSource


def create_app(
    settings: Settings | None = None,
    ownership: SlotOwnership | None = None,
    front_token: bytes | None = None,
    peers: ViewSource | None = None,
) -> FastAPI:
    """The service's app; a bad keys file fails here (InvalidRequest), before the fleet is opened.

    With ``ownership`` it serves one shard of a sharded fleet (``service.cluster``), takes requests
    bearing ``front_token`` as its front's, and runs rounds' participants on the shards ``peers``
    (the fleet's view) names.
    """
    settings = settings or Settings()
    keys = KeyRing.load(settings.api_keys_file) if settings.api_keys_file is not None else None
    simulated = SimulatedTime(settings.realtime_factor) if settings.realtime_factor > 0 else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.limiter = anyio.CapacityLimiter(settings.worker_threads)
        if simulated is not None:
            simulated.started = time.monotonic()  # simulated time starts with the app

        def open_fleet() -> Fleet:
            with tensorflow_start_up_quiet():  # TensorFlow is imported, and a first interpreter made, here
                return _open_fleet()

        def _open_fleet() -> Fleet:
            fleet = Fleet(
                settings.data_dir,
                settings.resident_cap(),
                settings.interpreter_threads,
                settings.sample_capacity,
                settings.job_workers,
                max_model_bytes=settings.max_model_bytes,
                sample_capacity_bytes=settings.sample_capacity_bytes,
                max_devices=settings.max_devices,
                max_job_steps=settings.max_job_steps,
                ownership=ownership,
                isolation=settings.isolation(),
            )
            fleet.models.get(DEFAULT_MODEL).interpreter()  # the first one logs its delegates: here, quietly
            return fleet

        fleet = await anyio.to_thread.run_sync(open_fleet)
        federation = Federation(
            fleet,
            max_dataset_bytes=settings.max_dataset_bytes,
            keep_versions=settings.keep_versions,
            round_workers=settings.round_workers,
            fashion_mnist_dir=settings.fashion_mnist_dir,
        )
        participants = None
        if ownership is not None and peers is not None and front_token is not None:
            from service.cluster.participants import ShardParticipants  # it imports service.api

            participants = ShardParticipants(federation, ownership, peers, peer_token(front_token))
            federation.rounds.participants = participants
        app.state.fleet, app.state.federation = fleet, federation
        app.state.quotas = Quotas(settings, fleet, federation)
        try:
            yield
        finally:
            app.state.fleet = app.state.federation = None
            await anyio.to_thread.run_sync(federation.close)
            if participants is not None:
                participants.close()
            await anyio.to_thread.run_sync(fleet.close)

    app = FastAPI(
        title="tflite-fleet",
        version=__version__,
        summary="A fleet of simulated phones doing on-device training with TensorFlow Lite.",
        lifespan=lifespan,
        docs_url=None,  # served from the package, not a CDN (service.ui)
        redoc_url=None,
    )
    app.router.routes.extend(ui_routes())
    app.state.settings = settings
    app.state.keys = keys
    app.state.fleet = app.state.federation = None
    errors.install(app)
    openapi.install(app)
    for router in (health.router, models.router, fleet.router, devices.router, jobs.router):
        app.include_router(router)
    for router in (datasets.router, profiles.router, rounds.devices, rounds.versions, rounds.rounds):
        app.include_router(router)
    for router in (v2.router, metrics.router):
        app.include_router(router)
    if simulated is not None:  # innermost: it sees the caller Authenticate found; off, it costs nothing
        app.add_middleware(RealTime, clock=simulated)
    guard(app, settings, keys, front_token)
    app.state.metrics = Metrics(lambda: app.state.fleet)
    sinks: list[RequestSink] = [app.state.metrics.requests.observe]
    if settings.log_json:
        enable_access_log()
        sinks.append(log_request)
    app.add_middleware(RequestObserver, sinks=sinks)  # outermost: it also sees what BodyLimit refuses
    return app
