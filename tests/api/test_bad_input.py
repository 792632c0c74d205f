"""Bad input gets a clear 4xx in the one error shape, and loses nothing."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.api.codecs import NPZ
from service.config import Settings
from tests.api.conftest import MAX_BODY
from tests.local import local_client

Batch = tuple[np.ndarray, np.ndarray]


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def compressed_npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def zip_of(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def npy_header(shape: tuple[int, ...]) -> bytes:
    """A .npy header declaring ``shape`` of float32 (Fortran order, which np.load reads)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": True, "shape": shape})
    return buffer.getvalue()


def chunked(body: bytes, size: int = 65536) -> Iterator[bytes]:
    """The body as a stream of chunks: httpx then sends it without a Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def with_nan(shape: tuple[int, ...], value: float = np.nan) -> np.ndarray:
    array = np.zeros(shape, np.float32)
    array.flat[-1] = value
    return array


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
        {
            # 4.4 MB of zeros deflate to a few KB: the limit holds for what the archive unpacks to.
            "content": compressed_npz(
                x=np.zeros((1400, 28, 28), np.float32), y=np.zeros((1400, 10), np.float32)
            ),
            "headers": {"content-type": NPZ},
        },
        413,
        "bytes uncompressed, more than the limit of 4194304 bytes",
        id="npz-compressed-past-the-limit",
    ),
    pytest.param(
        {
            "content": zip_of({"x.npy": npy_header((1,)) + bytes(4), "notes.txt": b"hello"}),
            "headers": {"content-type": NPZ},
        },
        422,
        "member 'notes.txt' of the application/x-npz archive is not an array",
        id="npz-not-an-array-member",
    ),
    pytest.param(
        {
            "content": zip_of({"x.npy": npy_header((2**30, 28, 28)) + bytes(64), "y.npy": b""}),
            "headers": {"content-type": NPZ},
        },
        422,
        "member 'x.npy' declares shape [1073741824, 28, 28]",
        id="npz-declares-more-than-it-holds",
    ),
    pytest.param(
        {
            "content": zip_of({"x.npy": npy_header((2**30, 28, 28)) + bytes(64)}, zipfile.ZIP_DEFLATED),
            "headers": {"content-type": NPZ},
        },
        422,
        "member 'x.npy' declares shape [1073741824, 28, 28]",
        id="npz-compressed-declares-more-than-it-holds",
    ),
    pytest.param(
        {"content": zip_of({"x.npy": b"\x93NUMPY" * 10}, zipfile.ZIP_LZMA), "headers": {"content-type": NPZ}},
        422,
        "compressed with method 14; use numpy.savez or numpy.savez_compressed",
        id="npz-lzma",
    ),
    pytest.param(
        {
            "content": npz(x=with_nan((2, 28, 28)), y=np.eye(10, dtype=np.float32)[:2]),
            "headers": {"content-type": NPZ},
        },
        422,
        "input 'x' holds NaN or infinite values",
        id="npz-nan",
    ),
    pytest.param(
        {
            "content": npz(x=np.zeros((2, 28, 28), np.float32), y=with_nan((2, 10), np.inf)),
            "headers": {"content-type": NPZ},
        },
        422,
        "input 'y' holds NaN or infinite values",
        id="npz-infinity",
    ),
    pytest.param(
        {"json": {"inputs": {"x": [[[1e39] * 28] * 28], "y": y_list(1)}}},
        422,
        "input 'x' holds values beyond the range of float32",
        id="json-past-float32",
    ),
    pytest.param(
        {"content": b"x=1", "headers": {"content-type": "text/plain"}},
        415,
        "'text/plain' is refused",
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


def test_streamed_oversized_bodies_of_pydantic_routes_get_413(client: TestClient) -> None:
    """FastAPI turns any error raised while it reads a pydantic body into a 400: the limit answers first."""
    ids = b'{"ids": [' + b", ".join(b'"d-%07d"' % i for i in range(MAX_BODY // 10)) + b"]}"
    assert len(ids) > MAX_BODY
    for path, body in (
        ("/v1/devices/bulk-create", ids),
        ("/v1/devices", b'{"id": "' + b"a" * MAX_BODY + b'"}'),
    ):
        response = client.post(path, content=chunked(body), headers={"content-type": "application/json"})
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "body_too_large"
    assert client.get("/v1/devices").json()["total"] == 0


def test_streamed_bodies_within_the_limit_are_read_whole(client: TestClient, train_batch: Batch) -> None:
    response = client.post(
        "/v1/devices", content=chunked(b'{"id": "streamed"}', 4), headers={"content-type": "application/json"}
    )
    assert response.status_code == 201, response.text
    x, y = train_batch
    body = npz(x=x, y=y)
    assert len(body) > 65536 * 4  # many chunks
    streamed = client.post("/v1/devices/streamed/train", content=chunked(body), headers={"content-type": NPZ})
    assert streamed.status_code == 200, streamed.text
    client.post("/v1/devices", json={"id": "sized"})
    sized = client.post("/v1/devices/sized/train", content=body, headers={"content-type": NPZ})
    assert streamed.json() == sized.json()


def test_compressed_npz_within_the_limit_works_as_plain_npz(client: TestClient, train_batch: Batch) -> None:
    client.post("/v1/devices", json={"id": "phone"})
    x = train_batch[0][:5]
    plain = client.post("/v1/devices/phone/infer", content=npz(x=x), headers={"content-type": NPZ})
    compressed = client.post(
        "/v1/devices/phone/infer", content=compressed_npz(x=x), headers={"content-type": NPZ}
    )
    assert plain.status_code == compressed.status_code == 200, compressed.text
    assert plain.json() == compressed.json()


def test_nan_never_reaches_the_weights(client: TestClient, saved_device: Path) -> None:
    """Refused NaN leaves the device as it was: its loss and predictions stay finite."""
    x = np.zeros((2, 28, 28), np.float32)
    y = np.eye(10, dtype=np.float32)[:2]
    refused = client.post(
        "/v1/devices/phone/train", content=npz(x=with_nan(x.shape), y=y), headers={"content-type": NPZ}
    )
    assert refused.status_code == 422
    loss = client.post("/v1/devices/phone/train", content=npz(x=x, y=y), headers={"content-type": NPZ})
    assert np.isfinite(loss.json()["outputs"]["loss"])
    logits = client.post("/v1/devices/phone/infer", json={"inputs": {"x": x.tolist()}}).json()["outputs"][
        "logits"
    ]
    assert np.isfinite(np.asarray(logits, dtype=np.float32)).all()


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


def test_bad_models_are_refused_and_not_kept(tmp_path: Path) -> None:
    with local_client(create_app(Settings(data_dir=tmp_path / "data", allow_model_upload=True))) as client:
        _refused_and_not_kept(client, tmp_path)


def _refused_and_not_kept(client: TestClient, tmp_path: Path) -> None:
    for body in (b"", b"not a flatbuffer at all" * 10):
        response = client.put("/v1/models/broken", content=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_model"
    assert client.get("/v1/models/broken").status_code == 404
    assert not list((tmp_path / "data" / "models").iterdir())
    assert client.put("/v1/models/..%2Fescape", content=b"x").status_code in (400, 404)
    assert client.put("/v1/models/fashion_mnist", content=b"x").status_code == 409


HUGE = 10**2999  # 3,000 digits


def test_huge_npz_dims_are_refused_before_any_arithmetic(client: TestClient) -> None:
    """A .npy header declaring a dimension of 3,000 digits (in both decoders) is a 422, at once."""
    assert client.post("/v1/devices", json={"id": "phone"}).status_code == 201
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (%d, 28, 28), }" % HUGE
    member = b"\x93NUMPY\x02\x00" + len(header + b"\n").to_bytes(4, "little") + header + b"\n"
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        response = client.post(
            "/v1/devices/phone/infer",
            content=zip_of({"x.npy": member + bytes(16)}, compression),
            headers={"content-type": NPZ},
        )
        assert response.status_code == 422, response.text
        assert "huge integer" in response.json()["error"]["message"]


@pytest.mark.parametrize("seed", [-1, 2**63, 10**30])
def test_job_seeds_out_of_range_are_422_and_leave_the_device_usable(
    client: TestClient, train_batch: Batch, seed: int
) -> None:
    assert client.post("/v1/devices", json={"id": "phone"}).status_code == 201
    x, y = train_batch
    samples = client.post("/v1/devices/phone/samples", content=npz(x=x, y=y), headers={"content-type": NPZ})
    assert samples.is_success, samples.text
    response = client.post("/v1/devices/phone/jobs", json={"seed": seed})
    assert response.status_code == 422, response.text
    assert "seed" in response.json()["error"]["message"]
    assert client.post("/v1/devices/phone/jobs", json={"seed": 2**63 - 1}).status_code == 202


@pytest.mark.parametrize("body", [{"version": {}}, {"version": 10**30}, {"limit": "x"}, {"split": []}])
def test_evaluate_bodies_validated_by_hand_are_422_like_fastapis(client: TestClient, body: dict) -> None:
    """The evaluate route reads its JSON body itself; its failures look exactly like FastAPI's own."""
    assert client.post("/v1/devices", json={"id": "phone"}).status_code == 201
    by_hand = client.post("/v1/devices/phone/evaluate", json=body)
    assert by_hand.status_code == 422, by_hand.text
    by_fastapi = client.post("/v1/devices/phone/participate", json={"version": body.get("version", {})})
    assert by_fastapi.status_code == 422
    assert by_hand.json()["error"]["code"] == by_fastapi.json()["error"]["code"] == "invalid_request"
    assert by_hand.json()["error"]["message"].startswith("request does not match the schema: body.")


def test_evaluate_batches_of_mismatched_rows_are_422(client: TestClient) -> None:
    """Found by the schema fuzzer: 2 inputs and 3 labels once failed in the accuracy count (500)."""
    assert client.post("/v1/devices", json={"id": "phone"}).status_code == 201
    x = np.zeros((2, 28, 28), np.float32)
    for y in (np.zeros((3, 10), np.float32), np.zeros((1, 10), np.float32), np.float32(1)):
        body = npz(x=x, y=y)
        response = client.post("/v1/devices/phone/evaluate", content=body, headers={"content-type": NPZ})
        assert response.status_code == 422, response.text
        assert "same number of rows" in response.json()["error"]["message"]
