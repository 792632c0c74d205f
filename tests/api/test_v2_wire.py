"""The Open Inference Protocol's wire details and error bodies, over the in-process client."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.api.codecs import check_shape
from service.api.oip import decode_request
from service.errors import InvalidTensor
from tests.api.conftest import MAX_BODY
from tests.local import local_client

X = np.random.default_rng(3).random((2, 28, 28), dtype=np.float32)
INFER = "/v2/models/phone/infer"


def tensor(data: object, shape: list[int] | None = None, datatype: str = "FP32", name: str = "x") -> dict:
    return {"name": name, "shape": shape or [2, 28, 28], "datatype": datatype, "data": data}


@pytest.fixture
def phone(client: TestClient) -> np.ndarray:
    """A device named phone; returns its /v1 logits for ``X``."""
    assert client.post("/v1/devices", json={"id": "phone"}).status_code == 201
    response = client.post("/v1/devices/phone/infer", json={"inputs": {"x": X.tolist()}})
    return np.asarray(response.json()["outputs"]["logits"], dtype=np.float32)


def test_flat_and_nested_data_give_v1s_answer(client: TestClient, phone: np.ndarray) -> None:
    for data in (X.ravel().tolist(), X.tolist()):
        body = {"id": "abc", "inputs": [tensor(data)], "outputs": [{"name": "logits"}]}
        response = client.post(INFER, json=body)
        assert response.status_code == 200, response.text
        document = response.json()
        assert document["model_name"] == "phone" and document["id"] == "abc"
        [output] = document["outputs"]
        assert (output["name"], output["datatype"], output["shape"]) == ("logits", "FP32", [2, 10])
        assert len(output["data"]) == 20  # flat, as the protocol sends it
        np.testing.assert_array_equal(np.asarray(output["data"], dtype=np.float32).reshape(2, 10), phone)


def test_all_outputs_without_an_id_and_integers_for_floats(client: TestClient, phone: np.ndarray) -> None:
    response = client.post(INFER, json={"inputs": [tensor(np.zeros(1568, dtype=int).tolist())]})
    document = response.json()
    assert "id" not in document
    assert [o["name"] for o in document["outputs"]] == ["logits", "output"]


def test_binary_inputs_and_outputs(client: TestClient, phone: np.ndarray) -> None:
    raw = X.astype("<f4").tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 28, 28],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "output"}, {"name": "logits", "parameters": {"binary_data": True}}],
        }
    )
    response = client.post(
        INFER, content=header + raw, headers={"inference-header-content-length": str(len(header))}
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    document = orjson.loads(response.content[:length])
    output, logits = document["outputs"]
    assert "data" in output and "data" not in logits
    assert logits["parameters"]["binary_data_size"] == len(response.content) - length == 2 * 10 * 4
    np.testing.assert_array_equal(np.frombuffer(response.content[length:], "<f4").reshape(2, 10), phone)


def binary_body(
    declared: int, payload: bytes, shape: tuple[int, ...] = (2, 28, 28)
) -> tuple[bytes, dict[str, str]]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": declared},
                }
            ]
        }
    )
    return header + payload, {"inference-header-content-length": str(len(header))}


BAD_BODIES = [
    pytest.param(
        {"json": {"inputs": [tensor([0.0] * 10)]}},
        422,
        "holds 1568 values, the data has 10",
        id="data-vs-shape",
    ),
    pytest.param(
        {"json": {"inputs": [tensor(X.tolist(), [2, 28, 28], "FP64")]}},
        422,
        "'x' has dtype float64, expected float32",
        id="datatype",
    ),
    pytest.param(
        {"json": {"inputs": [tensor(X.tolist(), datatype="BF16")]}},
        422,
        "'x' has datatype 'BF16'",
        id="unknown-datatype",
    ),
    pytest.param(
        {"json": {"inputs": [tensor(X[:, :, :27].tolist(), [2, 28, 27])]}},
        422,
        "'x' has shape [2, 28, 27], expected [-1, 28, 28]",
        id="shape",
    ),
    pytest.param(
        {"json": {"inputs": [tensor([["a"] * 28] * 56)]}}, 422, "'x' must hold numbers", id="strings"
    ),
    pytest.param({"json": {"inputs": [tensor(None)]}}, 422, "'x' has no data", id="no-data"),
    pytest.param(
        {"json": {"inputs": [tensor(X.tolist()), tensor(X.tolist())]}}, 422, "'x' is given twice", id="twice"
    ),
    pytest.param(
        {"json": {"inputs": [tensor(X.tolist(), name="y")]}},
        422,
        "unexpected input(s) ['y']",
        id="wrong-name",
    ),
    pytest.param(
        {"json": {"inputs": [tensor(X.tolist())], "outputs": [{"name": "nope"}]}},
        422,
        "no output(s) ['nope']",
        id="unknown-output",
    ),
    pytest.param(
        {"json": {"inputs": [{"name": "x", "shape": [-1, 28, 28], "datatype": "FP32", "data": []}]}},
        422,
        "inputs.0.shape.0",
        id="negative-dim",
    ),
    pytest.param({"json": {"outputs": []}}, 422, "inputs: Field required", id="no-inputs"),
    pytest.param({"content": b"{nope"}, 422, "not an inference request", id="not-json"),
    pytest.param(
        {"content": b"{}", "headers": {"inference-header-content-length": "99"}},
        422,
        "does not fit a 2-byte body",
        id="header-length",
    ),
    pytest.param(
        dict(zip(("content", "headers"), binary_body(6272, b"\0" * 100), strict=True)),
        422,
        "runs past the body's end",
        id="binary-short",
    ),
    pytest.param(
        dict(zip(("content", "headers"), binary_body(100, b"\0" * 100), strict=True)),
        422,
        "takes 6272 bytes",
        id="binary-size",
    ),
    pytest.param(
        dict(zip(("content", "headers"), binary_body(6272, b"\0" * 6280), strict=True)),
        422,
        "8 bytes after",
        id="binary-extra",
    ),
    pytest.param(
        {"content": b"\x1f\x8b", "headers": {"content-encoding": "gzip"}},
        415,
        "'gzip' is not supported",
        id="gzip",
    ),
    pytest.param({"content": b"0" * (MAX_BODY + 1)}, 413, "larger than the limit", id="too-large"),
    pytest.param(
        {"json": {"inputs": [tensor(["é"], [1], "BYTES")]}},
        422,
        "'x' has dtype string, expected float32",
        id="bytes-non-ascii",
    ),
    pytest.param(
        {"json": {"inputs": [tensor(["abc", "d"], [2], "BYTES")]}},
        422,
        "'x' has dtype string, expected float32",
        id="bytes-ascii",
    ),
    pytest.param(
        {"content": b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [NaN]}]}'},
        422,
        "input 'x' holds NaN or infinite values",
        id="nan",
    ),
    pytest.param(
        dict(
            zip(
                ("content", "headers"), binary_body(6272, np.full(1568, np.inf, "<f4").tobytes()), strict=True
            )
        ),
        422,
        "input 'x' holds NaN or infinite values",
        id="binary-infinity",
    ),
    pytest.param(
        {"json": {"inputs": [tensor(X.tolist(), datatype="INT8")]}},
        422,
        "'x' must hold integers (int8)",
        id="fractions-for-int8",
    ),
    pytest.param(
        {"json": {"inputs": [tensor([300], [1], "UINT8")]}},
        422,
        "'x' holds values from 300 to 300; uint8 takes 0 to 255",
        id="past-uint8",
    ),
    pytest.param(
        {"json": {"inputs": [tensor([[]], [1, 0, 10**30])]}},
        422,
        "inputs.0.shape.2: Input should be less than or equal to 2147483647",
        id="no-values-vast-shape",
    ),
    pytest.param(
        {"json": {"inputs": [tensor([], [0, 2**31 - 1, 2**31 - 1, 2**31 - 1])]}},
        422,
        "is not an array shape",
        id="no-values-too-big-shape",
    ),
    pytest.param(
        {"json": {"inputs": [tensor([1.0], [1] * 65)]}},
        422,
        "inputs.0.shape: List should have at most 32 items",
        id="too-many-dimensions",
    ),
    pytest.param(
        {"json": {"inputs": [tensor([1.0], [10**9, 10**9])]}},
        422,
        "holds 1000000000000000000 values, the data has 1",
        id="vast-shape",
    ),
    pytest.param(
        dict(
            zip(
                ("content", "headers"), binary_body(0, b"", (0, 2**31 - 1, 2**31 - 1, 2**31 - 1)), strict=True
            )
        ),
        422,
        "is not an array shape",
        id="binary-no-values-vast-shape",
    ),
    pytest.param(
        dict(zip(("content", "headers"), binary_body(True, b"\0"), strict=True)),
        422,
        "binary_data_size True is not a byte count",
        id="binary-size-bool",
    ),
]


@pytest.mark.parametrize(("request_kwargs", "status", "message"), BAD_BODIES)
def test_bad_requests_get_the_protocols_error_body(
    client: TestClient, phone: np.ndarray, request_kwargs: dict, status: int, message: str
) -> None:
    response = client.post(INFER, **request_kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    assert message in body["error"]


def test_every_v2_error_takes_the_protocols_shape_and_v1_keeps_its_own(client: TestClient) -> None:
    for method, path, status in [
        ("GET", "/v2/models/nobody", 404),
        ("GET", "/v2/models/nobody/ready", 404),
        ("POST", "/v2/models/nobody/infer", 404),
        ("GET", "/v2/models/..bad/ready", 400),
        ("GET", "/v2/no/such/route", 404),
        ("DELETE", "/v2/health/live", 405),
    ]:
        response = client.request(method, path)
        assert response.status_code == status, (path, response.text)
        assert isinstance(response.json()["error"], str), path
    response = client.get("/v1/devices/nobody")
    assert response.json()["error"]["code"] == "device_not_found"
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_readiness_before_the_fleet_is_open(tmp_path) -> None:
    from service.api import create_app
    from service.config import Settings

    client = local_client(create_app(Settings(data_dir=tmp_path / "data")))  # no `with`: no lifespan
    assert client.get("/v2/health/live").status_code == 200
    response = client.get("/v2/health/ready")
    assert response.status_code == 503 and response.json() == {"ready": False}


def test_streamed_oversized_body_gets_413_in_the_protocols_shape(
    client: TestClient, phone: np.ndarray
) -> None:
    def chunks():  # no Content-Length
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"0" * 65536

    response = client.post(INFER, content=chunks())
    assert response.status_code == 413
    assert "larger than the limit" in response.json()["error"]


def test_streamed_body_within_the_limit_is_read_whole(client: TestClient, phone: np.ndarray) -> None:
    body = orjson.dumps({"inputs": [tensor(X.tolist())], "outputs": [{"name": "logits"}]})
    response = client.post(INFER, content=(body[i : i + 1000] for i in range(0, len(body), 1000)))
    assert response.status_code == 200, response.text
    logits = np.asarray(response.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, 10)
    np.testing.assert_array_equal(logits, phone)


@pytest.mark.parametrize("length", ["\u00b2", "\u0661", "-1", " 2", ""])
def test_a_header_length_of_other_digits_is_refused(length: str) -> None:
    """Servers decode headers as latin-1: a raw 0xb2 byte arrives as '²', which str.isdigit() accepts."""
    with pytest.raises(InvalidTensor, match="does not fit a 2-byte body"):
        decode_request(b"{}", {"inference-header-content-length": length})


def test_vast_declared_shapes_are_422_at_once_and_stall_nothing(
    client: TestClient, phone: np.ndarray
) -> None:
    """640 dims of 3,000 digits each once kept the event loop busy for seconds (math.prod), then 500."""
    huge = 10**2999
    for shape in ([huge] * 640, [huge, 28, 28], [2**31, 1], [1] * 33, [-1, 28, 28]):
        started = time.perf_counter()
        response = client.post(INFER, json={"inputs": [tensor([0.0], shape)]})
        assert response.status_code == 422, response.text
        assert "shape" in response.json()["error"]
        assert time.perf_counter() - started < 1.0, shape[:3]
    for shape in ([huge, 28, 28], [1] * 33, [True], ["1"]):  # the bound the npz decoders use too
        with pytest.raises(InvalidTensor, match="dimension"):
            check_shape("x", shape)
