"""``fleet serve --shards N`` / ``--ray-address ADDR``: Ray up, the coordinator and its shards, the front."""

from __future__ import annotations

import asyncio

import ray
from starlette.applications import Starlette

from service.api.auth import KeyRing
from service.cluster.front.app import create_front
from service.cluster.runtime import connect, coordinator
from service.config import Settings

STOP_TIMEOUT = 30.0


def sharded_app(settings: Settings, shards: int | None, address: str | None) -> Starlette:
    """The front's app, once every shard serves. The actors are detached: a shard outlives a
    crashed coordinator, and in a cluster both outlive the front (a new front finds them). Local (no
    ``address``): the Ray runtime is this process's, and its shards stop with it, their fleets
    closed first."""
    keys = KeyRing.load(settings.api_keys_file) if settings.api_keys_file is not None else None
    paths = {"data_dir": settings.data_dir.resolve()}  # shards may run in another working directory
    if settings.api_keys_file is not None:
        paths["api_keys_file"] = settings.api_keys_file.resolve()
    settings = settings.model_copy(update=paths)
    local = address is None
    connect(settings, address, shards or 1)
    coord = coordinator(settings, shard_host="127.0.0.1" if local else None)
    ray.get(coord.start.remote(shards))

    async def stop() -> None:
        if local:  # bounded: Ctrl-C in a terminal may have stopped Ray's own processes too
            await asyncio.wait_for(asyncio.wrap_future(coord.stop.remote().future()), STOP_TIMEOUT)

    return create_front(settings, coord, keys, on_shutdown=stop)


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()
