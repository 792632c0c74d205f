"""The front's routing against real shard apps (two service apps on loopback sharing a data directory,
no Ray): its routes split, merge and relay as a sharded fleet's, and a call to a device that a resize
moves waits at the front and lands at its new owner."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn
from fastapi import FastAPI
from starlette.requests import Request
from starlette.testclient import TestClient

from service.api.app import create_app
from service.cluster.front.app import create_front
from service.cluster.front.shards import Shards
from service.cluster.ownership import SlotOwnership
from service.cluster.state import ClusterState
from service.config import Settings
from service.errors import FleetError
from service.wire.view import MOVING_HEADER, owner_slot

TOKEN = b"front-token"
MOVER = next(f"phone-{i}" for i in range(100) if owner_slot(f"phone-{i}", 2) == 1)
IDS = [f"phone-{i}" for i in range(8)]
ON_0, ON_1 = (next(f"new-{i}" for i in range(100) if owner_slot(f"new-{i}", 2) == s) for s in (0, 1))


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` on a loopback port, by uvicorn in a thread; yields its address."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the shard app did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def shard_app(data_dir: Path, slot: int, shards: int, epoch: int) -> tuple[FastAPI, SlotOwnership]:
    ownership = SlotOwnership(slot, shards, epoch)
    return create_app(Settings(data_dir=data_dir), ownership=ownership, front_token=TOKEN), ownership


def request(method: str, path: str) -> Request:
    """A client's request as the front's route sees it."""
    return Request(
        {
            "type": "http",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
            "scheme": "http",
            "server": ("front", 80),
            "client": ("127.0.0.1", 5000),
        }
    )


def test_a_call_to_a_moving_device_waits_at_the_front_and_lands_at_its_new_owner(tmp_path: Path) -> None:
    old_app, old = shard_app(tmp_path, slot=0, shards=1, epoch=1)
    with serving(old_app) as old_address:
        with httpx.Client(base_url=old_address) as http:
            assert http.post("/v1/devices", json={"id": MOVER}).status_code == 201
            x = np.zeros((1, 28, 28), np.float32).tolist()
            body = {"inputs": {"x": x, "y": np.eye(10, dtype=np.float32)[:1].tolist()}}
            assert http.post(f"/v1/devices/{MOVER}/train", json=body).status_code == 200
            old.fence(2)  # a resize to 2 slots begins: the device moves to slot 1
            refused = http.post(f"/v1/devices/{MOVER}/train", json=body)
            assert refused.status_code == 503 and refused.headers[MOVING_HEADER] == "1", refused.text

        views: list[dict[str, Any]] = [{"epoch": 1, "shards": [{"slot": 0, "address": old_address}]}]

        async def fetch(slot: int | None) -> dict[str, Any]:
            return views[-1]

        def resize() -> None:  # what the coordinator does, half a second into the call
            time.sleep(0.5)
            assert old_app.state.fleet.hand_over([MOVER]) == [MOVER]
            old.commit(2, 2)
            new_app, _ = shard_app(tmp_path, slot=1, shards=2, epoch=2)
            address = stack.enter_context(serving(new_app))
            shards = [{"slot": 0, "address": old_address}, {"slot": 1, "address": address}]
            views.append({"epoch": 2, "shards": shards})

        async def through_front() -> tuple[int, bytes, float]:
            shards = Shards(fetch, TOKEN)
            started = time.monotonic()
            mover = threading.Thread(target=resize)
            mover.start()
            try:
                encoded = httpx.Request("POST", "/", json=body).content
                answer = await shards.call(
                    lambda view: owner_slot(MOVER, view.size),
                    request("POST", f"/v1/devices/{MOVER}/train"),
                    encoded,
                )
                return answer.status, answer.body, time.monotonic() - started
            finally:
                await asyncio.to_thread(mover.join, 60)
                await shards.pool.close()

        with ExitStack() as stack:
            try:
                # A loop of its own, in a thread: the browser tests leave one set on this thread.
                with ThreadPoolExecutor(1) as loop:
                    status, answer, waited = loop.submit(asyncio.run, through_front()).result()
            except FleetError as exc:
                raise AssertionError(f"the front gave up on the moving device: {exc}") from exc
            assert status == 200, answer
            assert waited >= 0.5  # it waited for the resize
            moved = httpx.get(f"{views[-1]['shards'][1]['address']}/v1/devices/{MOVER}").json()
            assert moved["train_steps"] == 2  # the new owner trained it, once, on the handed-over weights


class Remote:
    """An actor's method as the front calls it: ``await method.remote(*args)``."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self.method = method

    def remote(self, *args: Any) -> Any:
        async def call() -> Any:
            return self.method(*args)

        return call()


class Coordinator:
    """The coordinator actor's answers to the front, for shards that are already serving."""

    def __init__(self, addresses: list[str]) -> None:
        shards = [{"slot": slot, "address": address} for slot, address in enumerate(addresses)]
        self.view = Remote(lambda: {"epoch": 1, "shards": shards})
        self.refresh = Remote(lambda slot: self.view.method())
        self.shard_details = Remote(lambda: {"shards": shards, "spares": []})
        self.whoami = Remote(lambda: {"node": "here", "pid": 1})


def test_the_fronts_routes_split_merge_and_relay_over_two_shards(tmp_path: Path) -> None:
    (ClusterState(tmp_path).directory / "front-token").write_bytes(TOKEN)
    with ExitStack() as stack:
        addresses = [stack.enter_context(serving(shard_app(tmp_path, s, 2, 1)[0])) for s in (0, 1)]
        front = create_front(Settings(data_dir=tmp_path), Coordinator(addresses), keys=None)
        client = stack.enter_context(
            TestClient(front, client=("127.0.0.1", 5000), base_url="http://127.0.0.1")
        )
        assert client.get("/readyz").json() == {"status": "ready"}
        assert client.post("/v1/devices/bulk-create", json={"ids": IDS}).status_code == 201
        for slot, address in enumerate(addresses):  # each shard made the devices it owns
            held = [d["id"] for d in httpx.get(f"{address}/v1/devices").json()["devices"]]
            assert held == sorted(i for i in IDS if owner_slot(i, 2) == slot) and held
        listed = client.get("/v1/devices", params={"limit": 5}).json()
        assert [d["id"] for d in listed["devices"]] == sorted(IDS)[:5] and listed["total"] == len(IDS)
        assert all(client.get(f"/v1/devices/{i}").json()["id"] == i for i in IDS)
        missing = client.get("/v1/devices/nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "device_not_found"
        assert client.get("/v1/devices", params={"limit": "x"}).status_code == 422  # a shard's, relayed
        refused = client.post("/v1/devices/bulk-create", json={"ids": [ON_1, ON_0, IDS[0]]})
        assert refused.status_code == 409  # slot 1 made its part, slot 0 refused: slot 1 removes it
        assert client.get(f"/v1/devices/{ON_1}").status_code == 404
        assert client.get(f"/v1/devices/{ON_0}").status_code == 404
        assert client.get("/v1/rounds/selection", params={"all": "true"}).json() == {"ids": sorted(IDS)}
        profiled = client.post("/v1/profiles/assign", json={"mix": "phones", "all": True}).json()
        assert profiled["assigned"] == len(IDS) and sum(profiled["classes"].values()) == len(IDS)
        assert client.get("/v1/fleet").json()["devices"] == len(IDS)
        shards = client.get("/v1/fleet/shards").json()
        assert shards["sharded"] and shards["epoch"] == 1 and shards["coordinator"]["node"] == "here"
        assert client.get("/v1/models").json()["models"]  # no route of its own: slot 0 answers
        assert client.put("/v1/devices").status_code == 405
