"""Bad input gets a clear 4xx in the one error shape, and loses nothing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.codecs import NPZ
from tests.api.conftest import MAX_BODY

Batch = tuple[np.ndarray, np.ndarray]


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture
def saved_device(client: TestClient, train_batch: Batch) -> Path:
    """A device with a checkpoint; returns the checkpoint's path."""
    assert client.post("/v1/devices", json={"id": "phone"}).status_code == 201
    x, y = train_batch
    assert client.post(
        "/v1/devices/phone/train", content=npz(x=x, y=y), headers={"content-type": NPZ}
    ).is_success
    assert client.post("/v1/devices/phone/save").is_success
    return Path(client.app.state.fleet.get("phone").checkpoint_path)  # type: ignore[attr-defined]


def x_list(n: int = 2) -> list:
    return np.zeros((n, 28, 28), np.float32).tolist()


def y_list(n: int = 2) -> list:
    return np.eye(10, dtype=np.float32)[:n].tolist()


BAD_TRAIN_BODIES = [
    pytest.param(
        {"json": {"inputs": {"x": x_list(), "y": [[0.0] * 9] * 2}}},
        422,
        "'y' has shape [2, 9], expected [-1, 10]",
        id="wrong-shape",
    ),
    pytest.param(
        {"json": {"inputs": {"x": np.zeros((2, 28)).tolist(), "y": y_list()}}},
        422,
        "'x' has shape [2, 28]",
        id="wrong-rank",
    ),
    pytest.param({"json": {"inputs": {"x": x_list()}}}, 422, "missing input(s) ['y']", id="missing-input"),
    pytest.param(
        {"json": {"inputs": {"x": x_list(), "y": y_list(), "z": [1]}}},
        422,
        "unexpected input(s) ['z']",
        id="extra-input",
    ),
    pytest.param(
        {"json": {"inputs": {"x": [["a"] * 28] * 28, "y": y_list()}}},
        422,
        "'x' must hold numbers",
        id="strings",
    ),
    pytest.param(
        {"json": {"inputs": {"x": [[[None] * 28] * 28], "y": y_list(1)}}},
        422,
        "'x' is not a rectangular array of numbers",
        id="nulls",
    ),
    pytest.param(
        {"json": {"inputs": {"x": [[[0.0] * 28] * 28, [[0.0] * 27] * 28], "y": y_list()}}},
        422,
        "'x' is not a rectangular array",
        id="ragged",
    ),
    pytest.param(
        {"json": {"inputs": {"x": [], "y": []}}},
        422,
        "'x' has shape [0], expected [-1, 28, 28]",
        id="empty-lists",
    ),
    pytest.param(
        {
            "content": npz(x=np.zeros((0, 28, 28), np.float32), y=np.zeros((0, 10), np.float32)),
            "headers": {"content-type": NPZ},
        },
        422,
        "'x' is empty",
        id="empty-batch",
    ),
    pytest.param(
        {"json": {"x": x_list(), "y": y_list()}}, 422, "missing input(s) ['x', 'y']", id="no-inputs-key"
    ),
    pytest.param({"json": [1, 2]}, 422, '{"inputs"', id="not-an-object"),
    pytest.param(
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        422,
        "not valid JSON",
        id="bad-json",
    ),
    pytest.param({"content": b""}, 422, "missing input(s) ['x', 'y']", id="empty-body"),
    pytest.param(
        {
            "content": npz(x=np.zeros((2, 28, 28), np.float64), y=np.eye(10, dtype=np.float32)[:2]),
            "headers": {"content-type": NPZ},
        },
        422,
        "'x' has dtype float64, expected float32",
        id="npz-wrong-dtype",
    ),
    pytest.param(
        {
            "content": npz(x=np.zeros((2, 28, 28), np.int32), y=np.eye(10, dtype=np.float32)[:2]),
            "headers": {"content-type": NPZ},
        },
        422,
        "'x' has dtype int32",
        id="npz-int",
    ),
    pytest.param(
        {
            "content": npz(x=np.zeros((3, 28, 28), np.float32), y=np.eye(10, dtype=np.float32)[:2]),
            "headers": {"content-type": NPZ},
        },
        422,
        "disagree on the batch size: 'x' has 3, 'y' has 2",
        id="npz-batch-mismatch",
    ),
    pytest.param(
        {"content": b"PK\x03\x04 truncated", "headers": {"content-type": NPZ}},
        422,
        "not a valid application/x-npz",
        id="npz-corrupt",
    ),
    pytest.param(
        {"content": b"garbage", "headers": {"content-type": NPZ}},
        422,
        "not a application/x-npz archive",
        id="npz-not-zip",
    ),
    pytest.param(
        {"content": b"x=1", "headers": {"content-type": "text/plain"}},
        415,
        "'text/plain' is not supported",
        id="media-type",
    ),
    pytest.param(
        {"content": b"0" * (MAX_BODY + 1), "headers": {"content-type": "application/json"}},
        413,
        "larger than the limit",
        id="oversized",
    ),
]


@pytest.mark.parametrize(("request_kwargs", "status", "message"), BAD_TRAIN_BODIES)
def test_bad_train_bodies_get_4xx_and_keep_the_checkpoint(
    client: TestClient, saved_device: Path, request_kwargs: dict, status: int, message: str | None
) -> None:
    before = saved_device.read_bytes()
    steps = client.get("/v1/devices/phone").json()["train_steps"]
    response = client.post("/v1/devices/phone/train", **request_kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message"}
    if message:
        assert message in error["message"]
    assert saved_device.read_bytes() == before
    assert client.get("/v1/devices/phone").json()["train_steps"] == steps


def test_streamed_oversized_body_without_length_gets_413(client: TestClient, saved_device: Path) -> None:
    def chunks():  # no Content-Length: the limit must hold while streaming
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"0" * 65536

    response = client.post("/v1/devices/phone/train", content=chunks(), headers={"content-type": NPZ})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize(
    "device_id",
    [
        "..",
        "...",
        "a..b",
        ".hidden",
        "-dash",
        "x" * 129,
        "semi;colon",
        "sp ace",
        "ünïcode",
        "%2e%2e",
        "a%2Fb",
    ],
)
def test_hostile_ids_are_refused_and_nothing_is_written(
    client: TestClient, tmp_path: Path, device_id: str
) -> None:
    before = sorted(p for p in tmp_path.rglob("*"))
    response = client.post("/v1/devices", json={"id": device_id})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_id"
    for path in (f"/v1/devices/{device_id}", f"/v1/devices/{device_id}/save"):
        status = client.post(path).status_code if path.endswith("save") else client.get(path).status_code
        assert status in (400, 404, 405)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_unknown_things_are_404(client: TestClient, saved_device: Path) -> None:
    cases = {
        ("GET", "/v1/devices/nobody"): "device_not_found",
        ("POST", "/v1/devices/nobody/infer"): "device_not_found",
        ("GET", "/v1/models/nothing"): "model_not_found",
        ("POST", "/v1/devices/phone/signatures/nothing"): "signature_not_found",
        ("GET", "/v1/nothing"): "not_found",
    }
    for (method, path), code in cases.items():
        response = client.request(method, path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == code


def test_conflicts_are_409(client: TestClient) -> None:
    assert client.post("/v1/devices", json={"id": "one"}).status_code == 201
    response = client.post("/v1/devices", json={"id": "one"})
    assert response.status_code == 409 and response.json()["error"]["code"] == "device_exists"
    response = client.post("/v1/devices/one/restore")
    assert response.status_code == 409 and response.json()["error"]["code"] == "no_checkpoint"


def test_checkpoint_signatures_take_no_path_from_clients(client: TestClient, tmp_path: Path) -> None:
    client.post("/v1/devices", json={"id": "one"})
    outside = tmp_path / "outside.ckpt"
    for path in ("/v1/devices/one/save", "/v1/devices/one/signatures/save", "/v1/devices/one/restore"):
        response = client.post(path, json={"inputs": {"checkpoint_path": str(outside)}})
        assert response.status_code == 422, response.text
        assert "takes no inputs" in response.json()["error"]["message"]
    assert not outside.exists()


def test_bad_models_are_refused_and_not_kept(client: TestClient, tmp_path: Path) -> None:
    for body in (b"", b"not a flatbuffer at all" * 10):
        response = client.put("/v1/models/broken", content=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_model"
    assert client.get("/v1/models/broken").status_code == 404
    assert not list((tmp_path / "data" / "models").iterdir())
    assert client.put("/v1/models/..%2Fescape", content=b"x").status_code in (400, 404)
    assert client.put("/v1/models/fashion_mnist", content=b"x").status_code == 409
