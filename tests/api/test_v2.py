"""The Open Inference Protocol, spoken by a third-party client (Triton's) to a real server."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.client import FleetClient
from service.server_process import ServerProcess

Batch = tuple[np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("v2") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def fleet(server: ServerProcess) -> Iterator[FleetClient]:
    with FleetClient(server.url) as client:
        yield client


@pytest.fixture(scope="module")
def oip(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def personalized(fleet: FleetClient, fashion_mnist) -> str:
    """A device trained on shoes only and saved, then restarted: its weights are its checkpoint's."""
    device = fleet.create_device("shoe-lover")["id"]
    shoes = np.isin(fashion_mnist.train_labels, [5, 7, 9])
    images = fashion_mnist.train_images[shoes][:300]
    labels = np.eye(10, dtype=np.float32)[fashion_mnist.train_labels[shoes][:300]]
    for start in range(0, 300, 100):
        fleet.train(device, x=images[start : start + 100], y=labels[start : start + 100])
    fleet.save(device)
    fleet.restart(device)
    return device


def test_server_and_models_report_readiness(oip: triton.InferenceServerClient, personalized: str) -> None:
    assert oip.is_server_live()
    assert oip.is_server_ready()
    assert oip.get_server_metadata()["name"] == "tflite-fleet"
    assert oip.is_model_ready(personalized)
    assert not oip.is_model_ready("nobody-here")


def test_model_metadata_is_the_infer_signature(
    oip: triton.InferenceServerClient, fleet: FleetClient, personalized: str
) -> None:
    model = fleet.model(fleet.device(personalized)["model"])
    infer = next(s for s in model["signatures"] if s["name"] == "infer")
    metadata = oip.get_model_metadata(personalized)
    assert metadata["name"] == personalized and metadata["platform"] == "tflite"
    for side in ("inputs", "outputs"):
        expected = [{"name": t["name"], "datatype": "FP32", "shape": t["shape"]} for t in infer[side]]
        assert expected and all(t["dtype"] == "float32" for t in infer[side])
        assert metadata[side] == expected
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 28, 28]}]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_matches_v1_on_a_personalized_device(
    oip: triton.InferenceServerClient, fleet: FleetClient, personalized: str, fashion_mnist, binary: bool
) -> None:
    x = fashion_mnist.test_images[:7]
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    wanted = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("logits", "output")]
    result = oip.infer(personalized, [tensor], outputs=wanted, request_id="req-1")

    ours = fleet.infer(personalized, x=x)
    baseline = fleet.infer(fleet.create_device()["id"], x=x)
    for name in ("logits", "output"):
        theirs = result.as_numpy(name)
        assert theirs.dtype == np.float32 and theirs.shape == (7, 10)
        np.testing.assert_array_equal(theirs, ours[name])
        assert not np.array_equal(theirs, baseline[name]), "the device should answer with its own weights"
    response = result.get_response()
    assert response["model_name"] == personalized and response["id"] == "req-1"
    assert [o["name"] for o in response["outputs"]] == ["logits", "output"]
    assert all(("binary_data_size" in (o.get("parameters") or {})) == binary for o in response["outputs"])


def test_infer_with_the_clients_defaults_and_one_output(
    oip: triton.InferenceServerClient, fleet: FleetClient, personalized: str, fashion_mnist
) -> None:
    x = fashion_mnist.test_images[:3]
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)  # binary input, and all outputs asked for as binary
    result = oip.infer(personalized, [tensor])
    np.testing.assert_array_equal(result.as_numpy("output"), fleet.infer(personalized, x=x)["output"])
    only = oip.infer(personalized, [tensor], outputs=[triton.InferRequestedOutput("output")])
    assert only.as_numpy("logits") is None and only.as_numpy("output") is not None


def test_errors_reach_the_client_with_status_and_message(
    oip: triton.InferenceServerClient, personalized: str
) -> None:
    def call(model: str, shape: list[int], datatype: str = "FP32") -> InferenceServerException:
        tensor = triton.InferInput("x", shape, datatype)
        tensor.set_data_from_numpy(np.zeros(shape, dtype=np.float64 if datatype == "FP64" else np.float32))
        with pytest.raises(InferenceServerException) as caught:
            oip.infer(model, [tensor])
        return caught.value

    unknown = call("nobody-here", [1, 28, 28])
    assert unknown.status() == "404" and "nobody-here" in unknown.message()
    shape = call(personalized, [2, 28, 27])
    assert shape.status() == "422" and "'x'" in shape.message() and "[2, 28, 27]" in shape.message()
    dtype = call(personalized, [1, 28, 28], "FP64")
    assert dtype.status() == "422" and "'x'" in dtype.message() and "float64" in dtype.message()
    with pytest.raises(InferenceServerException) as caught:
        oip.get_model_metadata("nobody-here")
    assert caught.value.status() == "404"
