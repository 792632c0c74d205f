"""Large request bodies are decoded in the worker pool, so that they stall no other request.

Small ones (a batch-1 inference) are decoded on the event loop, where that costs less than the trip to
a worker thread. Spies record, for each decoding call, whether it ran on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.api import codecs
from service.api.codecs import INLINE_BYTES, NPZ
from service.api.routes import v2
from service.runtime import TensorSpec

BIG = np.random.default_rng(5).random((100, 28, 28), dtype=np.float32)
ONE = BIG[:1]


def on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def spy(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[bool]:
    """Wrap ``owner.name``; each call appends whether it ran on the event loop."""
    original: Callable[..., Any] = getattr(owner, name)
    calls: list[bool] = []

    def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append(on_event_loop())
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, recorded)
    return calls


def npz(save: Callable[..., None], **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    save(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture
def phone(client: TestClient) -> str:
    assert client.post("/v1/devices", json={"id": "phone"}).status_code == 201
    return "/v1/devices/phone"


def test_large_json_is_decoded_in_the_worker_pool(
    client: TestClient, phone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = orjson.dumps({"inputs": {"x": BIG.tolist()}})
    assert len(body) > INLINE_BYTES
    converts = spy(monkeypatch, TensorSpec, "convert")
    loads = spy(monkeypatch, codecs, "decode_json_inputs")
    response = client.post(f"{phone}/infer", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert loads == [False] and converts == [False]


def test_a_batch_of_one_is_decoded_on_the_event_loop(
    client: TestClient, phone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    converts = spy(monkeypatch, TensorSpec, "convert")
    assert client.post(f"{phone}/infer", json={"inputs": {"x": ONE.tolist()}}).status_code == 200
    assert converts == [True]


@pytest.mark.parametrize(
    ("body", "off_loop"),
    [
        pytest.param(npz(np.savez, x=BIG), [], id="large-plain-npz-viewed-in-place"),
        pytest.param(npz(np.savez_compressed, x=ONE), [False], id="small-but-compressed-npz"),
        pytest.param(npz(np.savez, x=ONE), [], id="small-plain-npz-viewed-in-place"),
    ],
)
def test_npz_is_unpacked_in_the_worker_pool_unless_plain(
    client: TestClient, phone: str, monkeypatch: pytest.MonkeyPatch, body: bytes, off_loop: list[bool]
) -> None:
    unpacks = spy(monkeypatch, codecs, "decode_npz")
    response = client.post(f"{phone}/infer", content=body, headers={"content-type": NPZ})
    assert response.status_code == 200, response.text
    assert unpacks == off_loop


def test_large_samples_are_decoded_in_the_worker_pool(
    client: TestClient, phone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = np.eye(10, dtype=np.float32)[np.arange(100) % 10]
    body = orjson.dumps({"inputs": {"x": BIG.tolist(), "y": labels.tolist()}})
    converts = spy(monkeypatch, TensorSpec, "convert")
    response = client.post(f"{phone}/samples", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert converts == [False, False]


@pytest.mark.parametrize(("x", "on_loop"), [(BIG, False), (ONE, True)], ids=["large", "batch-of-one"])
def test_v2_decodes_large_requests_in_the_worker_pool(
    client: TestClient, phone: str, monkeypatch: pytest.MonkeyPatch, x: np.ndarray, on_loop: bool
) -> None:
    body = orjson.dumps(
        {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}]}
    )
    assert (len(body) <= INLINE_BYTES) == on_loop
    requests = spy(monkeypatch, v2, "decode_request")
    response = client.post("/v2/models/phone/infer", content=body)
    assert response.status_code == 200, response.text
    assert requests == [on_loop]
