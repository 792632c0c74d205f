"""The FastAPI application: built by ``create_app(settings)``, no module-level state."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
import anyio.to_thread
from fastapi import FastAPI

from service.api import errors, openapi
from service.api.auth import KeyRing
from service.api.guards import guard
from service.api.metrics import Metrics
from service.api.observe import RequestObserver, RequestSink, enable_access_log, log_request
from service.api.pool import WorkerPool
from service.api.quotas import Quotas
from service.api.realtime import RealTime, SimulatedTime
from service.api.routes import (
    datasets,
    devices,
    fleet,
    health,
    jobs,
    metrics,
    models,
    participation,
    profiles,
    rounds,
    signature_route,
    v2,
    versions,
)
from service.config import Settings
from service.federated.federation import Federation, RemoteParticipants
from service.fleet import DEFAULT_MODEL, Fleet
from service.fleet.fleet import Ownership
from service.runtime.isolation import Isolation
from service.runtime.quiet import tensorflow_start_up_quiet
from service.ui import ui_routes
from service.version import __version__

ParticipantsFactory = Callable[[Federation], RemoteParticipants]
"""Makes a round's participants on other processes for a federation (a sharded fleet's shards)."""


def open_fleet(settings: Settings, ownership: Ownership | None = None) -> Fleet:
    """The fleet ``settings`` describe, its default model compiled (TensorFlow is imported here, quietly)."""
    with tensorflow_start_up_quiet():
        fleet = Fleet(
            settings.data_dir,
            settings.resident_cap(),
            settings.interpreter_threads,
            settings.sample_capacity,
            settings.job_workers,
            max_model_bytes=settings.max_model_bytes,
            sample_capacity_bytes=settings.sample_capacity_bytes,
            max_devices=settings.max_devices,
            max_loaded=settings.max_loaded_devices,
            max_job_steps=settings.max_job_steps,
            ownership=ownership,
            isolation=Isolation.of(settings),
        )
        fleet.models.get(DEFAULT_MODEL).interpreter()  # the first one logs its delegates: here, quietly
        return fleet


def _lifespan(
    settings: Settings,
    ownership: Ownership | None,
    participants: ParticipantsFactory | None,
    simulated: SimulatedTime | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Opens the fleet and its federation when the app starts, and closes them when it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = pool = WorkerPool(settings.worker_threads)
        if simulated is not None:
            simulated.started = time.monotonic()  # simulated time starts with the app
        fleet = await anyio.to_thread.run_sync(open_fleet, settings, ownership)
        federation = Federation(
            fleet,
            max_dataset_bytes=settings.max_dataset_bytes,
            keep_versions=settings.keep_versions,
            round_workers=settings.round_workers,
            fashion_mnist_dir=settings.fashion_mnist_dir,
            max_buffered_bytes=settings.max_buffered_bytes,
        )
        remote = participants(federation) if participants is not None else None
        if remote is not None:
            federation.rounds.participants = remote
        app.state.fleet, app.state.federation = fleet, federation
        app.state.quotas = Quotas(settings, fleet, federation)
        try:
            yield
        finally:
            app.state.fleet = app.state.federation = app.state.pool = None
            await anyio.to_thread.run_sync(pool.close)  # the calls still running finish first
            await anyio.to_thread.run_sync(federation.close)
            if remote is not None:
                remote.close()
            await anyio.to_thread.run_sync(fleet.close)

    return lifespan


def create_app(
    settings: Settings | None = None,
    ownership: Ownership | None = None,
    front_token: bytes | None = None,
    participants: ParticipantsFactory | None = None,
) -> FastAPI:
    """The service's app; a bad keys file fails here (InvalidRequest), before the fleet is opened.

    With ``ownership`` it serves one shard of a sharded fleet (``service.cluster`` passes it), takes
    requests bearing ``front_token`` as its front's, and runs rounds' participants where
    ``participants`` puts them (the other shards).
    """
    settings = settings or Settings()
    keys = KeyRing.load(settings.api_keys_file) if settings.api_keys_file is not None else None
    simulated = SimulatedTime(settings.realtime_factor) if settings.realtime_factor > 0 else None
    app = FastAPI(
        title="tflite-fleet",
        version=__version__,
        summary="A fleet of simulated phones doing on-device training with TensorFlow Lite.",
        lifespan=_lifespan(settings, ownership, participants, simulated),
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
    for router in (datasets.router, profiles.router, participation.router, versions.router, rounds.router):
        app.include_router(router)
    for router in (v2.router, metrics.router):
        app.include_router(router)
    # The signature routes' POSTs, without FastAPI's per-request machinery:
    signature_route.install(app, devices.router)
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
