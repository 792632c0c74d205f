"""Server faults over HTTP: corrupt files and a full disk are 5xx in our error shape, never a 422."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from service.api import create_app
from service.api.codecs import NPZ
from service.config import Settings
from tests.fleet.test_recovery import file_size_limit
from tests.local import local_client

Batch = tuple[np.ndarray, np.ndarray]


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def train(client: TestClient, device: str, batch: Batch) -> int:
    body = npz(x=batch[0], y=batch[1])
    return client.post(f"/v1/devices/{device}/train", content=body, headers={"content-type": NPZ}).status_code


def error_of(response: object, status: int, code: str, tmp_path: Path) -> str:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert error["code"] == code
    assert str(tmp_path) not in error["message"]
    return str(error["message"])


def test_a_corrupt_record_is_listed_with_its_problem_and_reset_over_http(
    tmp_path: Path, train_batch: Batch
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with local_client(create_app(settings)) as client:
        for device in ("victim", "other"):
            assert client.post("/v1/devices", json={"id": device}).status_code == 201
            assert train(client, device, train_batch) == 200
            assert client.post(f"/v1/devices/{device}/save").status_code == 200
    (tmp_path / "data" / "devices" / "victim" / "device.json").write_bytes(b"\x00{not json")
    with local_client(create_app(settings)) as client:
        listing = client.get("/v1/devices")
        assert listing.status_code == 200
        shown = {d["id"]: d for d in listing.json()["devices"]}
        assert "device.json" in shown["victim"]["problem"] and shown["other"]["problem"] is None
        assert client.get("/v1/devices/victim").json()["problem"] == shown["victim"]["problem"]
        message = error_of(
            client.post("/v1/devices/victim/infer", json={"inputs": {}}), 500, "corrupt_state", tmp_path
        )
        assert "reset" in message
        assert train(client, "other", train_batch) == 200
        reset = client.post("/v1/devices/victim/reset")
        assert reset.status_code == 200 and reset.json()["problem"] is None
        assert train(client, "victim", train_batch) == 200


def test_an_unreadable_checkpoint_is_a_500_naming_it_not_a_422(tmp_path: Path, train_batch: Batch) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with local_client(create_app(settings)) as client:
        assert client.post("/v1/devices", json={"id": "phone"}).status_code == 201
        assert train(client, "phone", train_batch) == 200
        assert client.post("/v1/devices/phone/save").status_code == 200
    (tmp_path / "data" / "devices" / "phone" / "checkpoint.ckpt").write_bytes(b"garbage" * 100)
    with local_client(create_app(settings)) as client:
        response = client.post(
            "/v1/devices/phone/infer", content=npz(x=train_batch[0][:1]), headers={"content-type": NPZ}
        )
        message = error_of(response, 500, "corrupt_state", tmp_path)
        assert "checkpoint of device 'phone' cannot be restored" in message
        assert client.post("/v1/devices/phone/reset").status_code == 200
        assert train(client, "phone", train_batch) == 200


def test_a_full_disk_is_507_and_the_previous_checkpoint_stays(tmp_path: Path, train_batch: Batch) -> None:
    with local_client(create_app(Settings(data_dir=tmp_path / "data"))) as client:
        assert client.post("/v1/devices", json={"id": "phone"}).status_code == 201
        assert train(client, "phone", train_batch) == 200
        assert client.post("/v1/devices/phone/save").status_code == 200
        checkpoint = tmp_path / "data" / "devices" / "phone" / "checkpoint.ckpt"
        saved = checkpoint.read_bytes()
        assert train(client, "phone", train_batch) == 200
        with file_size_limit(100_000):
            response = client.post("/v1/devices/phone/save")
        error_of(response, 507, "storage_full", tmp_path)
        assert checkpoint.read_bytes() == saved
        assert client.post("/v1/devices/phone/save").status_code == 200
        assert checkpoint.read_bytes() != saved
