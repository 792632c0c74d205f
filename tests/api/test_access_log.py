"""One JSON line per request when FLEET_LOG_JSON is on, and none when it is off."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from service.api import create_app
from service.api.observe import ACCESS_LOG
from service.config import Settings
from tests.local import local_client


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(record.getMessage()))


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler, level = Lines(), ACCESS_LOG.level
    ACCESS_LOG.addHandler(handler)
    ACCESS_LOG.setLevel(logging.INFO)  # so that "off" is the app's doing, not the logger's level
    yield handler
    ACCESS_LOG.removeHandler(handler)
    ACCESS_LOG.setLevel(level)


def test_one_line_per_request_with_route_and_device(tmp_path: Path, lines: Lines) -> None:
    with local_client(create_app(Settings(data_dir=tmp_path, log_json=True))) as client:
        client.post("/v1/devices", json={"id": "phone"})
        client.get("/v1/devices/phone?verbose=1")
        client.post("/v1/devices/ghost/infer", json={})
        client.get("/nowhere")
    created, shown, missing, nowhere = lines.lines
    assert created["route"] == "/v1/devices" and created["status"] == 201 and "device_id" not in created
    assert shown == shown | {
        "method": "GET", "route": "/v1/devices/{device_id}", "path": "/v1/devices/phone", "status": 200,
        "device_id": "phone", "client": "127.0.0.1",
    }  # fmt: skip
    assert isinstance(shown["duration_ms"], float) and shown["duration_ms"] > 0 and "time" in shown
    assert (missing["route"], missing["device_id"], missing["status"]) == (
        "/v1/devices/{device_id}/infer",
        "ghost",
        404,
    )
    assert (nowhere["route"], nowhere["status"]) == ("unmatched", 404)


def test_no_lines_when_off(tmp_path: Path, lines: Lines) -> None:
    with local_client(create_app(Settings(data_dir=tmp_path))) as client:
        client.get("/healthz")
    assert lines.lines == []
