"""The disjoint partitions through the datasets API: assignment, the device's view of it, statistics,
the heatmap, feature noise in training and evaluation, and 422s naming the setting. In-process, on a
dataset cut from Fashion-MNIST (real images and labels) with a group array of writers."""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.api.codecs import NPZ
from service.config import Settings
from service.data.assignment import Assignment, read_assignment
from service.model.dataset import FashionMNIST, one_hot
from tests.local import local_client

NAME = "fm-writers"
TRAIN, TEST, WRITERS = 3000, 600, 40
LETTERS = "qwertyuiop"  # device IDs not in sorted order


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def put(client: TestClient, name: str, arrays: dict[str, np.ndarray], **params: str) -> Any:
    return client.put(
        f"/v1/datasets/{name}", content=npz(**arrays), headers={"content-type": NPZ}, params=params
    )


@pytest.fixture(scope="module")
def arrays(fashion_mnist: FashionMNIST) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "train/x": fashion_mnist.train_images[:TRAIN],
        "train/y": one_hot(fashion_mnist.train_labels[:TRAIN]),
        "train/writer": rng.integers(0, WRITERS, TRAIN).astype(np.int32),
        "test/x": fashion_mnist.test_images[:TEST],
        "test/y": one_hot(fashion_mnist.test_labels[:TEST]),
        "test/writer": rng.integers(0, WRITERS, TEST).astype(np.int32),
    }


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, arrays: dict[str, np.ndarray]) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("partitions") / "data", max_body_bytes=64 << 20)
    with local_client(create_app(settings)) as test_client:
        assert put(test_client, NAME, arrays, group="writer").status_code == 201
        plain = {k: v for k, v in arrays.items() if not k.endswith("writer")}
        assert put(test_client, "fm-plain", plain).status_code == 201
        yield test_client


def error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["error"]["message"]
    return message


def devices(client: TestClient, prefix: str, count: int = 10) -> list[str]:
    ids = [f"{prefix}-{LETTERS[i]}" for i in range(count)]
    assert client.post("/v1/devices/bulk-create", json={"ids": ids}).status_code == 201
    return ids


def assign(client: TestClient, prefix: str, dataset: str = NAME, **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/datasets/{dataset}/assign", json={"prefix": prefix, **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def files(client: TestClient, ids: list[str]) -> dict[str, Assignment]:
    data_dir = Path(client.app.state.settings.data_dir)  # type: ignore[attr-defined]
    found = {i: read_assignment(data_dir / "devices" / i, data_dir) for i in ids}
    assert all(a is not None for a in found.values())
    return found  # type: ignore[return-value]


def test_a_disjoint_assignment_deals_every_example_once_and_each_device_says_which_part(
    client: TestClient,
) -> None:
    ids = devices(client, "quantity")
    result = assign(
        client, "quantity", scheme="label_quantity", labels_per_device=2, seed=4, train_per_device=9
    )
    assert result["devices"] == 10 and result["parties"] == 10 and result["scheme"] == "label_quantity"
    assert result["ignored"] == ["train_per_device"]  # said, not refused: every example is used
    assert result["train"]["distinct_examples"] == TRAIN and result["train"]["labels_on_no_device"] == []
    assert result["test"]["examples"] == TEST
    found = files(client, ids)
    for split, count in (("train", TRAIN), ("test", TEST)):
        joined = np.concatenate([getattr(a, split).astype(np.int64) for a in found.values()])
        assert np.array_equal(np.sort(joined), np.arange(count))  # disjoint and complete
    for i, device_id in enumerate(sorted(ids)):
        view = client.get(f"/v1/devices/{device_id}/assignment").json()["assignment"]
        assert view["scheme"] == "label_quantity" and view["seed"] == 4
        assert view["parameters"] == {"labels_per_device": 2, "device": i, "parties": 10}
        assert view["train_size"] == result["train"]["examples_per_device"][i]
        assert i % 10 in view["preferred_classes"] and len(view["preferred_classes"]) == 2


def test_the_partition_route_reports_what_the_assignment_dealt(client: TestClient) -> None:
    devices(client, "dirichlet")
    result = assign(client, "dirichlet", scheme="label_dirichlet", beta=0.3, seed=2)
    query = {"scheme": "label_dirichlet", "beta": 0.3, "seed": 2, "devices": 10}
    preview = client.get(f"/v1/datasets/{NAME}/partition", params=query).json()
    assert preview["train"] == result["train"] and preview["test"] == result["test"]
    assert preview["parameters"] == {"beta": 0.3} and "seconds" not in preview


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize(
    ("scheme", "count", "split"), [("quantity_skew", 10, "train"), ("homogeneous", 2500, "test")]
)
def test_the_heatmap_is_a_png_of_bounded_size(
    client: TestClient, scheme: str, count: int, split: str
) -> None:
    response = client.get(
        f"/v1/datasets/{NAME}/partition.png", params={"scheme": scheme, "devices": count, "split": split}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    width, height = png_size(response.content)
    assert 200 < width <= 720 and 200 < height <= 560


def test_natural_deals_by_the_datasets_writers(client: TestClient, arrays: dict[str, np.ndarray]) -> None:
    view = client.get(f"/v1/datasets/{NAME}").json()
    assert view["group"] == "writer" and "writer" not in view["splits"]["train"]["arrays"]
    ids = devices(client, "natural")
    assign(client, "natural", scheme="natural", group="writer")
    owner: dict[int, str] = {}
    for device_id, a in files(client, ids).items():
        for split, rows in (("train", a.train), ("test", a.test)):
            for writer in set(arrays[f"{split}/writer"][rows].tolist()):
                assert owner.setdefault(writer, device_id) == device_id
    assert len(owner) == WRITERS


def loss_of_a_round(client: TestClient, device: str, seed: int = 3) -> float:
    body = {
        "ids": [device],
        "rounds": 1,
        "participants": 1,
        "epochs": 1,
        "batch_size": 50,
        "seed": seed,
        "start_version": 0,
    }
    response = client.post("/v1/rounds", json=body)
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 60
    while (view := client.get(f"/v1/rounds/{response.json()['id']}").json())["state"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
    assert view["state"] == "succeeded", view
    loss: float = view["rounds"][0]["mean_loss"]
    return loss


def loss_of_a_job(client: TestClient, device: str) -> float:
    response = client.post(f"/v1/devices/{device}/jobs", json={"epochs": 1, "batch_size": 100, "seed": 2})
    assert response.status_code == 202, response.text
    job, deadline = response.json(), time.monotonic() + 60
    while job["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
        job = client.get(f"/v1/devices/{device}/jobs/{job['id']}").json()
    assert job["state"] == "succeeded", job
    assert client.post(f"/v1/devices/{device}/restart").status_code == 200, "back to its checkpoint"
    loss: float = job["epoch_losses"][0]
    return loss


def test_feature_noise_reaches_training_and_evaluation_reproducibly(client: TestClient) -> None:
    ids = sorted(devices(client, "noisy"))
    result = assign(client, "noisy", scheme="feature_noise", noise=50.0, seed=1)
    assert result["sigma"][0] == 0 and result["sigma"][-1] == 50.0
    clean, loud = ids[0], ids[-1]
    assert client.get(f"/v1/devices/{loud}/assignment").json()["assignment"]["parameters"]["sigma"] == 50.0
    accuracy = {
        d: client.post(f"/v1/devices/{d}/evaluate", json={}).json()["accuracy"] for d in (clean, loud)
    }
    assert accuracy[clean] > 0.6 > 0.3 > accuracy[loud], accuracy  # noise of sigma 50 drowns the images
    assert client.post(f"/v1/devices/{loud}/evaluate", json={}).json()["accuracy"] == accuracy[loud]
    losses = {d: loss_of_a_round(client, d) for d in (clean, loud)}
    assert losses[loud] > 10 * losses[clean], losses
    assert loss_of_a_round(client, loud) == losses[loud]  # the same seeds, the same noise
    assert loss_of_a_round(client, loud, seed=4) != losses[loud]
    jobs = {d: loss_of_a_job(client, d) for d in (clean, loud)}  # jobs over assigned data: noisy too
    assert jobs[loud] > 10 * jobs[clean], jobs


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"scheme": "label_dirichlet", "beta": 0}, "beta: Input should be greater than 0"),
        ({"scheme": "feature_noise", "noise": -0.5}, "noise: Input should be greater than or equal to 0"),
        (
            {"scheme": "label_quantity", "labels_per_device": 11},
            "labels_per_device must be between 1 and the 10",
        ),
        ({"scheme": "label_quantity", "labels_per_device": 0}, "labels_per_device: Input should be greater"),
        ({"scheme": "natural", "group": "user"}, "no group array 'user'"),
    ],
)
def test_a_partition_that_cannot_be_made_is_a_422_naming_the_setting(
    client: TestClient, body: dict[str, Any], message: str
) -> None:
    devices(client, f"bad{len(message)}", 3)
    response = client.post(f"/v1/datasets/{NAME}/assign", json={"prefix": f"bad{len(message)}", **body})
    assert message in error(response, 422)


def test_partitions_the_dataset_cannot_supply_are_422s(
    client: TestClient, arrays: dict[str, np.ndarray]
) -> None:
    route = f"/v1/datasets/{NAME}/partition"
    many = client.get(route, params={"scheme": "homogeneous", "devices": TRAIN + 1})
    assert f"cannot split {TRAIN} examples among {TRAIN + 1} devices" in error(many, 422)
    writers = client.get(route, params={"scheme": "natural", "devices": WRITERS + 1})
    assert f"cannot split {WRITERS} groups" in error(writers, 422)
    plain = client.get("/v1/datasets/fm-plain/partition", params={"scheme": "natural", "devices": 3})
    assert "a natural split needs one; add the dataset with ?group=writer" in error(plain, 422)
    assert "devices" in error(client.get(route, params={"scheme": "homogeneous"}), 422)
    bad_group = {
        **arrays,
        "train/writer": arrays["train/writer"].astype(np.float32),
        "test/writer": arrays["test/writer"].astype(np.float32),
    }
    assert "must hold one integer per sample" in error(
        put(client, "fm-bad-group", bad_group, group="writer"), 422
    )


def test_a_run_records_its_devices_partition_without_per_device_parameters(client: TestClient) -> None:
    devices(client, "recorded", count=4)
    assign(client, "recorded", scheme="feature_noise", noise=0.2, seed=3)
    started = client.post(
        "/v1/rounds", json={"prefix": "recorded", "rounds": 1, "batch_size": 50, "local_accuracy": False}
    )
    assert started.status_code == 202, started.text
    assert started.json()["spec"]["partition"] == {
        "dataset": NAME,
        "scheme": "feature_noise",
        "parameters": {"noise": 0.2, "parties": 4},  # not the first device's index nor its sigma
        "seed": 3,
    }
    run_id = started.json()["id"]
    deadline = time.monotonic() + 120
    while client.get(f"/v1/rounds/{run_id}").json()["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.1)
