"""Nothing blocks the event loop: no file I/O, no fleet-wide work, however hostile the request.

Two witnesses. A spy (a Python audit hook) records every file opened, listed, renamed or removed from
the event loop's thread while a whole device life runs through the API. A watchdog coroutine on the
loop measures how late it wakes while the worst requests we know run: if any of them ran on the loop,
the watchdog would wake as late as that request took.
"""

from __future__ import annotations

import asyncio
import io
import struct
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import fastapi.telemetry._runtime  # noqa: F401 (FastAPI imports it lazily as an app starts, on the loop)
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.api.codecs import NPZ
from service.config import Settings
from tests.local import local_client

FILE_EVENTS = frozenset(
    {"open", "os.listdir", "os.scandir", "os.remove", "os.rename", "os.mkdir", "os.rmdir", "shutil.rmtree"}
)
_watching: list[list[str]] = []
"""While a test watches, the file events seen on an event loop's thread (audit hooks are for good)."""


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _watching and event in FILE_EVENTS and _on_loop():
        _watching[-1].append(f"{event} {args[0]!r}")


sys.addaudithook(_audit)


@pytest.fixture
def file_io_on_loop() -> Iterator[list[str]]:
    seen: list[str] = []
    _watching.append(seen)
    try:
        yield seen
    finally:
        _watching.remove(seen)


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def device_life(client: TestClient, device: str, batch: tuple[np.ndarray, np.ndarray]) -> None:
    """Every kind of call a device sees, each one checked for success."""
    x, y = batch
    train, infer = npz(x=x, y=y), npz(x=x[:1])
    url = f"/v1/devices/{device}"
    calls = [
        ("POST", "/v1/devices", {"json": {"id": device}}),
        ("GET", url, {}),
        ("POST", f"{url}/train", {"content": train, "headers": {"content-type": NPZ}}),
        ("POST", f"{url}/infer", {"content": infer, "headers": {"content-type": NPZ, "accept": NPZ}}),
        ("POST", f"{url}/infer", {"json": {"inputs": {"x": x[:1].tolist()}}}),
        ("POST", f"{url}/save", {}),
        ("POST", f"{url}/restart", {}),
        ("POST", f"{url}/restore", {}),
        ("GET", f"/v2/models/{device}", {}),
        ("POST", f"{url}/samples", {"content": train, "headers": {"content-type": NPZ}}),
        ("GET", f"{url}/samples", {}),
        ("GET", f"{url}/history", {}),
        ("GET", f"{url}/jobs", {}),
        ("GET", "/v1/devices", {}),
        ("GET", "/v1/fleet", {}),
        ("GET", "/metrics", {}),
        ("GET", "/v1/models", {}),
        ("POST", "/v1/devices/bulk-create", {"json": {"count": 3, "prefix": f"{device}-"}}),
        ("POST", f"{url}/reset", {}),
        ("DELETE", url, {}),
    ]
    for method, path, kwargs in calls:
        response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
        assert response.is_success, (method, path, response.text)


def test_no_file_is_touched_on_the_event_loop(
    tmp_path: Path, train_batch: tuple[np.ndarray, np.ndarray], file_io_on_loop: list[str]
) -> None:
    # A cap of one interpreter: every other call activates, evicts and spills, the fleet's busiest path.
    with local_client(create_app(Settings(data_dir=tmp_path / "data", max_resident=1))) as client:
        _watching.remove(file_io_on_loop)
        device_life(client, "warm-up", train_batch)  # lazy imports open files once; not what we watch
        _watching.append(file_io_on_loop)
        device_life(client, "phone", train_batch)
        device_life(client, "tablet", train_batch)
    assert file_io_on_loop == []


def test_the_spy_sees_file_io_on_the_loop(file_io_on_loop: list[str], tmp_path: Path) -> None:
    """The witness above is not blind: a file opened inside a coroutine is seen."""

    async def careless() -> None:
        (tmp_path / "f").write_bytes(b"x")

    asyncio.run(careless())
    assert any(event.startswith("open") for event in file_io_on_loop)


class Watchdog:
    """Wakes every 10 ms on the app's event loop and keeps the longest delay past that."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.running = True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.running:
            started = loop.time()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, loop.time() - started - 0.01)


def many_members(count: int) -> bytes:
    """A zip of ``count`` empty members: its directory alone takes zipfile seconds to parse."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(count):
            archive.writestr(f"{i}.npy", b"")
    return buffer.getvalue()


def lying_directory(count: int) -> bytes:
    """``count`` entries in the directory, an end record that claims one."""
    body = bytearray(many_members(count))
    end = body.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", body, end + 8, 1, 1)
    return bytes(body)


LOOP_LAG_BOUND = 1.0
"""Generous: on a busy 2-core machine a 10 ms sleep wakes tens of ms late, and a worker thread that
holds the GIL (orjson parsing 9 MB, a garbage collection) delays it by up to about 0.3 s. The bulk
requests below take many seconds, all of which the watchdog would see if they ran on the loop."""


def test_the_worst_requests_do_not_stall_the_event_loop(
    tmp_path: Path, train_batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = train_batch
    settings = Settings(
        data_dir=tmp_path / "data", max_body_bytes=32 * 1024 * 1024, max_json_body_bytes=16 * 1024 * 1024
    )
    with local_client(create_app(settings)) as client:
        assert client.post("/v1/devices", json={"id": "phone"}).status_code == 201
        watchdog = Watchdog()
        assert client.portal is not None
        client.portal.start_task_soon(watchdog.run)
        try:
            send_the_worst(client, x, y)
        finally:
            watchdog.running = False  # else leaving the client waits for the watchdog forever
    assert watchdog.worst < LOOP_LAG_BOUND, f"the event loop stalled for {watchdog.worst:.3f} s"


def send_the_worst(client: TestClient, x: np.ndarray, y: np.ndarray) -> None:
    hostile = [
        ("POST", "/v1/devices/phone/train", many_members(20_000), NPZ, 422),
        ("POST", "/v1/devices/phone/train", lying_directory(20_000), NPZ, 422),
        ("POST", "/v1/devices/phone/train", npz(x=np.repeat(x, 20, 0), y=np.repeat(y, 20, 0)), NPZ, 200),
        (
            "POST",
            "/v1/devices/phone/infer",
            b'{"inputs": {"x": ' + b"[" * 100_000,
            "application/json",
            422,
        ),
    ]
    for method, path, body, kind, expected in hostile:
        response = client.request(method, path, content=body, headers={"content-type": kind})
        assert response.status_code == expected, (path, response.text[:300])
    big_json = {"inputs": {"x": np.repeat(x, 6, 0).tolist()}}  # 600 images: ~9 MB of JSON
    assert client.post("/v1/devices/phone/infer", json=big_json).status_code == 200
    bulk_started = time.monotonic()
    bulk = client.post("/v1/devices/bulk-create", json={"count": 20_000, "prefix": "bulk-"})
    assert bulk.status_code == 201
    assert time.monotonic() - bulk_started > 2 * LOOP_LAG_BOUND, "too quick to show a stall"
    ids = bulk.json()["ids"]
    assert client.get("/v1/devices", params={"limit": 1000}).status_code == 200
    assert client.post("/v1/devices/bulk-delete", json={"ids": ids}).status_code == 200


def test_a_device_first_seen_through_its_samples_reads_its_files_off_the_loop(
    tmp_path: Path, train_batch: tuple[np.ndarray, np.ndarray], file_io_on_loop: list[str]
) -> None:
    """After a restart a device's record is unread: a samples upload must not read it on the loop."""
    settings = Settings(data_dir=tmp_path / "data")
    with local_client(create_app(settings)) as client:
        assert client.post("/v1/devices", json={"id": "phone"}).status_code == 201
        assert client.post("/v1/devices", json={"id": "warm-up"}).status_code == 201
    body = npz(x=train_batch[0], y=train_batch[1])
    with local_client(create_app(settings)) as client:
        _watching.remove(file_io_on_loop)
        warm = client.post("/v1/devices/warm-up/samples", content=body, headers={"content-type": NPZ})
        assert warm.status_code == 200, warm.text
        _watching.append(file_io_on_loop)
        added = client.post("/v1/devices/phone/samples", content=body, headers={"content-type": NPZ})
        assert added.status_code == 200, added.text
    assert file_io_on_loop == []
