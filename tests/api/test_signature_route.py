"""The signature routes' raw-ASGI POSTs (``SignatureRoute``) answer exactly as the documented routes do."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import Match

from service.api import create_app
from service.api.routes import devices
from service.api.routes.signature_route import SIGNATURE_ROUTES, SignatureRoute
from service.config import Settings
from tests.local import local_client


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _app(data: Path, fast: bool) -> FastAPI:
    app = create_app(Settings(data_dir=data))
    if not fast:
        app.router.routes[:] = [r for r in app.router.routes if not isinstance(r, SignatureRoute)]
    return app


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[tuple[TestClient, TestClient]]:
    with (
        local_client(_app(tmp_path / "fast", True)) as fast,
        local_client(_app(tmp_path / "slow", False)) as slow,
    ):
        for client in (fast, slow):
            client.post("/v1/devices", json={"id": "phone"}).raise_for_status()
        yield fast, slow


X = np.zeros((1, 28, 28), np.float32)
NPZ = {"content-type": "application/x-npz", "accept": "application/x-npz"}
REQUESTS = [
    ("POST", "/v1/devices/phone/infer", npz(x=X), NPZ),
    (
        "POST",
        "/v1/devices/phone/infer",
        b'{"inputs": {"x": [[[0.5]]]}}',
        {"content-type": "application/json"},
    ),
    ("POST", "/v1/devices/phone/signatures/infer", npz(x=X), NPZ),
    ("POST", "/v1/devices/phone/signatures/nope", npz(x=X), NPZ),
    ("POST", "/v1/devices/phone/signatures/save", npz(x=X), NPZ),
    ("POST", "/v1/devices/absent/infer", npz(x=X), NPZ),
    ("POST", "/v1/devices/a..b/infer", npz(x=X), NPZ),
    ("POST", "/v1/devices/phone/infer", b"PK not a zip", NPZ),
    ("POST", "/v1/devices/phone/infer", npz(x=X.astype(np.float64)), NPZ),
    ("POST", "/v1/devices/phone/infer", npz(x=X + np.nan), NPZ),
    ("POST", "/v1/devices/phone/infer", npz(y=X), NPZ),
    ("POST", "/v1/devices/phone/infer", b"x", {"content-type": "text/plain"}),
    ("POST", "/v1/devices/phone/train", npz(x=X), NPZ),
    ("POST", "/v1/devices/phone/restore", b"", {}),
    ("POST", "/v1/devices/phone/save", b"{}", {"content-type": "application/json"}),
    ("GET", "/v1/devices/phone/train", b"", {}),
    ("PUT", "/v1/devices/phone/signatures/infer", b"", {}),
]


@pytest.mark.parametrize(("method", "path", "body", "headers"), REQUESTS)
def test_answers_as_the_documented_route(
    clients: tuple[TestClient, TestClient], method: str, path: str, body: bytes, headers: dict[str, str]
) -> None:
    fast, slow = (c.request(method, path, content=body, headers=headers) for c in clients)
    assert (fast.status_code, fast.headers.get("content-type"), fast.content) == (
        slow.status_code,
        slow.headers.get("content-type"),
        slow.content,
    )


def test_metrics_name_the_route_template(clients: tuple[TestClient, TestClient]) -> None:
    fast, _ = clients
    fast.post("/v1/devices/phone/infer", content=npz(x=X), headers=NPZ).raise_for_status()
    routes = {(r["method"], r["route"]) for r in fast.get("/v1/fleet").json()["requests"]}
    assert ("POST", "/v1/devices/{device_id}/infer") in routes


def test_first_only_where_nothing_before_matches(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    routes = app.router.routes
    fast = [i for i, r in enumerate(routes) if isinstance(r, SignatureRoute)]
    assert sorted(r.path for r in routes if isinstance(r, SignatureRoute)) == sorted(SIGNATURE_ROUTES)
    included = next(i for i, r in enumerate(routes) if getattr(r, "original_router", None) is devices.router)
    for path in SIGNATURE_ROUTES:
        scope = {"type": "http", "method": "POST", "path": path.format(device_id="x", signature="y")}
        scope |= {"root_path": "", "headers": []}
        before = [r for i, r in enumerate(routes[:included]) if i not in fast]
        assert all(r.matches(scope)[0] == Match.NONE for r in before)
