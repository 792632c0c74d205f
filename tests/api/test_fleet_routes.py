"""Bulk operations, pagination and fleet status over the in-process client."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from service.api import create_app
from service.config import Settings
from tests.local import local_client


def test_bulk_create_list_and_delete(client: TestClient) -> None:
    response = client.post("/v1/devices/bulk-create", json={"count": 120, "prefix": "load-"})
    assert response.status_code == 201, response.text
    ids = response.json()["ids"]
    assert len(ids) == 120 and all(i.startswith("load-") for i in ids)
    response = client.post("/v1/devices/bulk-create", json={"ids": ["a", "b", "c"]})
    assert response.json() == {"count": 3, "ids": ["a", "b", "c"]}

    listed, after = [], None
    while True:
        page = client.get("/v1/devices", params={"limit": 50} | ({"after": after} if after else {})).json()
        assert page["total"] == 123
        listed += [d["id"] for d in page["devices"]]
        if not (after := page["next_after"]):
            break
    assert listed == sorted([*ids, "a", "b", "c"])

    response = client.post("/v1/devices/bulk-delete", json={"ids": ids[:100]})
    assert response.json()["count"] == 100
    assert client.get("/v1/fleet").json()["devices"] == 23
    assert not any((client.app.state.fleet.devices_dir / i).exists() for i in ids[:100])  # type: ignore[attr-defined]


def test_bulk_requests_are_all_or_nothing(client: TestClient) -> None:
    client.post("/v1/devices", json={"id": "taken"})
    cases = [
        ({"ids": ["new", "taken"]}, 409),
        ({"ids": ["ok", "../bad"]}, 400),
        ({"count": 5, "prefix": "../"}, 400),
        ({"count": 0}, 422),
        ({}, 422),
        ({"ids": ["x"], "count": 1}, 422),
        ({"count": 2, "model": "missing"}, 404),
    ]
    for body, status in cases:
        response = client.post("/v1/devices/bulk-create", json=body)
        assert response.status_code == status, (body, response.text)
        assert set(response.json()["error"]) == {"code", "message"}
    assert client.get("/v1/fleet").json()["devices"] == 1
    response = client.post("/v1/devices/bulk-delete", json={"ids": ["taken", "nobody"]})
    assert response.status_code == 404
    assert client.get("/v1/devices/taken").status_code == 200


def test_bulk_size_is_limited(tmp_path: Path) -> None:
    with local_client(create_app(Settings(data_dir=tmp_path, max_bulk=10))) as client:
        response = client.post("/v1/devices/bulk-create", json={"count": 11})
        assert response.status_code == 400 and "FLEET_MAX_BULK" in response.json()["error"]["message"]


def test_fleet_status_counts_residency(tmp_path: Path, train_batch: tuple[np.ndarray, np.ndarray]) -> None:
    settings = Settings(data_dir=tmp_path, max_resident_bytes=9_000_000, interpreter_bytes=4_500_000)
    with local_client(create_app(settings)) as client:
        client.post("/v1/devices/bulk-create", json={"ids": ["a", "b", "c", "d"]})
        body = {"inputs": {"x": train_batch[0][:2].tolist(), "y": train_batch[1][:2].tolist()}}
        for device in "abcd":
            assert client.post(f"/v1/devices/{device}/train", json=body).status_code == 200
        status = client.get("/v1/fleet").json()
        assert status["max_resident"] == 2 and status["resident"] == 2
        assert (status["activations"], status["evictions"], status["spills"]) == (4, 2, 2)
        assert status["devices"] == 4 and status["process_rss_bytes"] > 100_000_000
        resident = [d["id"] for d in client.get("/v1/devices").json()["devices"] if d["resident"]]
        assert resident == ["c", "d"]
