"""Metrics and JSON access logs from a real ``fleet serve --log-json`` process."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from service.server_process import ServerProcess


@pytest.fixture(scope="module")
def logging_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("logs") / "data", "--log-json") as running:
        yield running


def test_access_log_is_json_lines_only(logging_server: ServerProcess) -> None:
    with httpx.Client(base_url=logging_server.url) as http:
        assert http.post("/v1/devices", json={"id": "logged-phone"}).status_code == 201
        assert http.get("/v1/devices/logged-phone").status_code == 200
        metrics = http.get("/metrics").text
    assert (
        'fleet_http_requests_total{method="GET",route="/v1/devices/{device_id}",status="200"} 1.0' in metrics
    )
    lines = [
        orjson.loads(line) for line in logging_server.log.read_text().splitlines() if line.startswith("{")
    ]
    shown = next(line for line in lines if line["path"] == "/v1/devices/logged-phone")
    assert shown["route"] == "/v1/devices/{device_id}" and shown["device_id"] == "logged-phone"
    assert shown["client"] == "127.0.0.1" and shown["status"] == 200
    assert '"GET /v1/devices/logged-phone HTTP/1.1"' not in logging_server.log.read_text()  # uvicorn's own
