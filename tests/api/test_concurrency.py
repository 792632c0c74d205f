"""A call waiting on a busy device holds neither the event loop nor other devices."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from service.api import create_app
from service.config import Settings
from tests.local import local_client


def in_background(call: Callable[[], int]) -> tuple[threading.Thread, list[int]]:
    """Start ``call`` (an HTTP request returning its status) in a thread; its status lands in the list."""
    statuses: list[int] = []
    thread = threading.Thread(target=lambda: statuses.append(call()), daemon=True)
    thread.start()
    return thread, statuses


def test_a_blocked_device_does_not_block_the_service(tmp_path: Path) -> None:
    body = {"inputs": {"x": np.zeros((1, 28, 28), np.float32).tolist()}}
    with local_client(create_app(Settings(data_dir=tmp_path))) as client:
        client.post("/v1/devices/bulk-create", json={"ids": ["busy", "free"]})
        busy = client.app.state.fleet.get("busy")  # type: ignore[attr-defined]
        with busy.lock:  # as a long call on "busy" would
            waiting, waiting_status = in_background(
                lambda: client.post("/v1/devices/busy/infer", json=body).status_code
            )
            waiting.join(timeout=0.5)
            assert waiting.is_alive(), "the call on the busy device should wait for its lock"
            # Meanwhile the event loop serves other requests, and other devices run. Had the waiting
            # call blocked the loop, these would never finish.
            for call in (
                lambda: client.get("/healthz").status_code,
                lambda: client.post("/v1/devices/free/infer", json=body).status_code,
                lambda: client.get("/v1/devices/busy").status_code,
            ):
                thread, status = in_background(call)
                thread.join(timeout=10)
                assert status == [200]
            assert waiting_status == []
        waiting.join(timeout=10)
        assert waiting_status == [200]
