"""Server-side datasets, assignments, evaluation, model versions and federated rounds, in-process.

One service for the module: a small dataset cut from Fashion-MNIST (2,000 train, 500 test images) is
uploaded once; each test makes devices of its own (IDs with the test's prefix).
"""

from __future__ import annotations

import io
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
from service.model.dataset import FashionMNIST, one_hot
from service.profiles import parse_profile
from tests.local import local_client

SMALL = "fm-small"
TRAIN, TEST = 2000, 500


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def small_dataset(data: FashionMNIST) -> dict[str, np.ndarray]:
    return {
        "train/x": data.train_images[:TRAIN],
        "train/y": one_hot(data.train_labels[:TRAIN]),
        "test/x": data.test_images[:TEST],
        "test/y": one_hot(data.test_labels[:TEST]),
    }


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, fashion_mnist: FashionMNIST) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("federated") / "data"
    settings = Settings(data_dir=data_dir, max_body_bytes=64 * 1024 * 1024, keep_versions=5)
    with local_client(create_app(settings)) as test_client:
        put = test_client.put(
            f"/v1/datasets/{SMALL}",
            content=npz(**small_dataset(fashion_mnist)),
            headers={"content-type": NPZ},
        )
        assert put.status_code == 201, put.text
        yield test_client


def error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["error"]["message"]
    return message


def devices(client: TestClient, prefix: str, count: int) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(count)]
    response = client.post("/v1/devices/bulk-create", json={"ids": ids})
    assert response.status_code == 201, response.text
    return ids


def assign(client: TestClient, prefix: str, **params: Any) -> dict[str, Any]:
    body = {"prefix": prefix, "train_per_device": 120, "test_per_device": 40, **params}
    response = client.post(f"/v1/datasets/{SMALL}/assign", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def wait_run(client: TestClient, run_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view: dict[str, Any] = client.get(f"/v1/rounds/{run_id}").json()
        if view["state"] not in ("queued", "running"):
            return view
        time.sleep(0.05)
    raise AssertionError(f"round run {run_id} did not end in {timeout} s: {view['progress']}")


def start_run(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/rounds", json=body)
    assert response.status_code == 202, response.text
    view: dict[str, Any] = response.json()
    return view


# -- datasets ---------------------------------------------------------------------------------


def test_the_uploaded_dataset_is_described_with_its_splits_and_classes(client: TestClient) -> None:
    view = client.get(f"/v1/datasets/{SMALL}").json()
    assert view["splits"]["train"]["count"] == TRAIN and view["splits"]["test"]["count"] == TEST
    assert view["splits"]["train"]["arrays"]["x"] == {"dtype": "float32", "shape": [None, 28, 28]}
    assert view["label"] == "y" and view["num_classes"] == 10 and not view["builtin"]
    names = [d["name"] for d in client.get("/v1/datasets").json()["datasets"]]
    assert SMALL in names and "fashion-mnist" in names


def test_the_builtin_dataset_is_fashion_mnist_stored_once(client: TestClient, tmp_path: Path) -> None:
    view = client.get("/v1/datasets/fashion-mnist").json()
    assert view["builtin"] and view["splits"]["train"]["count"] == 60_000
    assert view["splits"]["test"]["count"] == 10_000
    ids = devices(client, "builtin", 2)
    result = client.post(
        "/v1/datasets/fashion-mnist/assign", json={"ids": ids, "train_per_device": 50, "test_per_device": 10}
    )
    assert result.status_code == 200, result.text
    directory = Path(client.app.state.settings.data_dir)  # type: ignore[attr-defined]
    stored = list((directory / "devices" / ids[0]).iterdir())
    # the device keeps an index view, not images: its files are small
    assert sum(p.stat().st_size for p in stored) < 20_000, [(p.name, p.stat().st_size) for p in stored]


def test_an_upload_that_cannot_be_samples_is_refused_naming_the_problem(client: TestClient) -> None:
    x = np.zeros((10, 28, 28), np.float32)
    y = np.zeros((10, 10), np.float32)
    put = lambda name, body, **kw: client.put(  # noqa: E731
        f"/v1/datasets/{name}", content=body, headers={"content-type": NPZ}, **kw
    )
    assert "different numbers of samples" in error(put("bad1", npz(x=x, y=y[:5])), 422)
    assert "label array 'y'" in error(put("bad2", npz(x=x, z=y)), 422)
    assert "same arrays" in error(put("bad3", npz(**{"train/x": x, "train/y": y, "test/x": x})), 422)
    poisoned = x.copy()
    poisoned[7, 3, 3] = np.nan  # a batch of it would make every weight NaN: refused where it is stored
    assert "'train/x' holds NaN or infinite values" in error(put("bad5", npz(x=poisoned, y=y)), 422)
    assert "not allowed" in error(put("bad..name", npz(x=x, y=y)), 400)
    assert "exists" in error(put(SMALL, npz(x=x, y=y)), 409)
    assert "built-in" in error(put("fashion-mnist", npz(x=x, y=y)), 409)
    wrong_type = client.put("/v1/datasets/bad4", content=b"{}", headers={"content-type": "application/json"})
    assert wrong_type.status_code == 415
    assert error(client.get("/v1/datasets/nowhere"), 404).startswith("no dataset 'nowhere'")
    assert [d for d in client.get("/v1/datasets").json()["datasets"] if d["name"].startswith("bad")] == []


def test_a_dataset_can_be_deleted_and_its_devices_are_told(
    client: TestClient, fashion_mnist: FashionMNIST
) -> None:
    arrays = small_dataset(fashion_mnist)
    body = npz(**{k: v[:200] for k, v in arrays.items()})
    assert (
        client.put("/v1/datasets/short-lived", content=body, headers={"content-type": NPZ}).status_code == 201
    )
    ids = devices(client, "doomed", 1)
    response = client.post(
        "/v1/datasets/short-lived/assign", json={"ids": ids, "train_per_device": 20, "test_per_device": 5}
    )
    assert response.status_code == 200, response.text
    assert client.delete("/v1/datasets/short-lived").status_code == 204
    assert "no dataset 'short-lived'" in error(client.post(f"/v1/devices/{ids[0]}/evaluate", json={}), 404)
    # added again with other contents: the device's old index view is not applied to it
    again = npz(**{k: v[200:400] for k, v in arrays.items()})
    assert (
        client.put("/v1/datasets/short-lived", content=again, headers={"content-type": NPZ}).status_code
        == 201
    )
    assert "assign the device again" in error(client.post(f"/v1/devices/{ids[0]}/evaluate", json={}), 409)


# -- assignments ------------------------------------------------------------------------------


def test_an_assignment_is_seeded_per_device_whatever_else_is_assigned(client: TestClient) -> None:
    ids = devices(client, "seeded", 4)
    assign(client, "seeded", scheme="dirichlet", alpha=0.3, seed=7)
    first = [client.get(f"/v1/devices/{i}/assignment").json()["assignment"] for i in ids]
    assert first[0]["scheme"] == "dirichlet" and first[0]["train_size"] == 120
    assert len({str(a["label_distribution"]) for a in first}) == 4  # each device its own mix
    client.post(
        f"/v1/datasets/{SMALL}/assign",
        json={
            "ids": ids[2:3],
            "train_per_device": 120,
            "test_per_device": 40,
            "scheme": "dirichlet",
            "alpha": 0.3,
            "seed": 7,
        },
    )
    again = client.get(f"/v1/devices/{ids[2]}/assignment").json()["assignment"]
    assert again["label_distribution"] == first[2]["label_distribution"]


def test_an_assignment_asking_more_than_a_class_has_is_refused(client: TestClient) -> None:
    devices(client, "greedy", 1)
    response = client.post(
        f"/v1/datasets/{SMALL}/assign",
        json={
            "prefix": "greedy",
            "scheme": "interest",
            "classes_per_device": 1,
            "interest_share": 1.0,
            "train_per_device": 1000,
            "test_per_device": 10,
        },
    )
    message = error(response, 400)
    assert "class" in message and "has" in message


def test_an_assignment_of_no_devices_or_unknown_ones_is_refused(client: TestClient) -> None:
    assert "selects no devices" in error(
        client.post(f"/v1/datasets/{SMALL}/assign", json={"prefix": "none-"}), 400
    )
    assert error(client.post(f"/v1/datasets/{SMALL}/assign", json={"ids": ["ghost"]}), 404)
    assert "exactly one" in error(client.post(f"/v1/datasets/{SMALL}/assign", json={}), 400)
    assert error(client.post("/v1/datasets/nowhere/assign", json={"all": True}), 404)


def test_a_dataset_that_does_not_match_the_training_signature_is_refused(client: TestClient) -> None:
    arrays = {
        "train/a": np.zeros((50, 4), np.float32),
        "train/y": np.eye(10, dtype=np.float32)[np.arange(50) % 10],
        "test/a": np.zeros((20, 4), np.float32),
        "test/y": np.eye(10, dtype=np.float32)[np.arange(20) % 10],
    }
    put = client.put("/v1/datasets/other-inputs", content=npz(**arrays), headers={"content-type": NPZ})
    assert put.status_code == 201, put.text
    devices(client, "mismatch", 1)
    response = client.post(
        "/v1/datasets/other-inputs/assign",
        json={"prefix": "mismatch", "train_per_device": 10, "test_per_device": 5},
    )
    assert "does not match signature 'train'" in error(response, 422)


# -- jobs and evaluation ----------------------------------------------------------------------


def test_a_job_trains_over_the_assigned_data(client: TestClient) -> None:
    (device,) = devices(client, "jobber", 1)
    assign(client, "jobber")
    response = client.post(f"/v1/devices/{device}/jobs", json={"epochs": 2, "batch_size": 40})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["data"] == "assigned" and job["steps_total"] == 2 * 3
    deadline = time.monotonic() + 60
    while job["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
        job = client.get(f"/v1/devices/{device}/jobs/{job['id']}").json()
    assert job["state"] == "succeeded", job
    assert client.get(f"/v1/devices/{device}").json()["train_steps"] == 6


def test_evaluation_reports_accuracy_on_local_dataset_and_given_data(
    client: TestClient, fashion_mnist: FashionMNIST
) -> None:
    (device,) = devices(client, "judged", 1)
    assert "no data assigned" in error(client.post(f"/v1/devices/{device}/evaluate", json={}), 409)
    assign(client, "judged")
    local = client.post(f"/v1/devices/{device}/evaluate", json={}).json()
    assert local["count"] == 40 and 0.5 < local["accuracy"] <= 1.0  # the embedded model is pre-trained
    on_split = client.post(f"/v1/devices/{device}/evaluate", json={"dataset": SMALL, "split": "test"}).json()
    assert on_split["count"] == TEST
    x, labels = fashion_mnist.test_images[:TEST], fashion_mnist.test_labels[:TEST]
    given = client.post(
        f"/v1/devices/{device}/evaluate",
        content=npz(x=x, y=labels.astype(np.int64)),
        headers={"content-type": NPZ},
    ).json()
    assert (
        given["count"] == TEST and given["correct"] == on_split["correct"]
    )  # the same images, labels as classes
    assert "no split 'nope'" in error(
        client.post(f"/v1/devices/{device}/evaluate", json={"dataset": SMALL, "split": "nope"}), 400
    )
    bad = client.post(
        f"/v1/devices/{device}/evaluate", content=npz(x=x[:, :27], y=labels), headers={"content-type": NPZ}
    )
    assert bad.status_code == 422, bad.text


# -- rounds and versions ----------------------------------------------------------------------


def test_fedavg_rounds_make_versions_any_device_can_adopt(client: TestClient) -> None:
    ids = devices(client, "fed", 6)
    assign(client, "fed", scheme="iid", seed=3)
    run = start_run(client, prefix="fed", rounds=3, participants=4, epochs=1, batch_size=20, seed=5)
    view = wait_run(client, run["id"])
    assert view["state"] == "succeeded", view
    assert [r["round"] for r in view["rounds"]] == [1, 2, 3]
    for metrics in view["rounds"]:
        assert metrics["finished"] == 4 and metrics["failed"] == 0 and len(metrics["participants"]) == 4
        assert metrics["samples"] == 4 * 120 and metrics["mean_loss"] > 0
        assert 0 < metrics["global_accuracy"] <= 1 and 0 < metrics["mean_local_accuracy"] <= 1
    versions = client.get("/v1/models/fashion_mnist/versions").json()
    latest = versions["latest"]
    assert latest == view["version"] and view["rounds"][-1]["version"] == latest
    assert [v["round"] for v in versions["versions"] if v.get("round_id") == run["id"]] == [1, 2, 3]
    outsider = devices(client, "adopter", 1)[0]
    assign(client, "adopter")
    adopted = client.post(f"/v1/devices/{outsider}/adopt", json={}).json()
    assert adopted["version"] == latest
    mine = client.post(f"/v1/devices/{outsider}/evaluate", json={"dataset": SMALL}).json()
    theirs = client.post(f"/v1/devices/{ids[0]}/evaluate", json={"dataset": SMALL, "version": latest}).json()
    assert mine["correct"] == theirs["correct"]
    assert mine["accuracy"] == pytest.approx(view["rounds"][-1]["global_accuracy"])


def test_two_runs_with_the_same_seed_give_identical_metrics(client: TestClient) -> None:
    devices(client, "twin", 5)
    assign(client, "twin", scheme="dirichlet", alpha=0.5, seed=11)
    body = {
        "prefix": "twin",
        "rounds": 2,
        "participants": 3,
        "batch_size": 16,
        "seed": 9,
        "start_version": 0,
        "aggregation": "fedavgm",
    }
    first = wait_run(client, start_run(client, **body)["id"])
    second = wait_run(client, start_run(client, **body)["id"])
    keys = ("participants", "samples", "mean_loss", "global_accuracy", "mean_local_accuracy")
    assert first["state"] == second["state"] == "succeeded"
    assert [[r[k] for k in keys] for r in first["rounds"]] == [[r[k] for k in keys] for r in second["rounds"]]
    other = wait_run(client, start_run(client, **{**body, "seed": 10})["id"])
    assert [r["participants"] for r in other["rounds"]] != [r["participants"] for r in first["rounds"]] or [
        r["mean_loss"] for r in other["rounds"]
    ] != [r["mean_loss"] for r in first["rounds"]]


def test_server_optimizers_differ_and_none_makes_no_version(client: TestClient) -> None:
    devices(client, "opt", 4)
    assign(client, "opt", seed=2)
    accuracy = {}
    for aggregation in ("fedavg", "fedadam"):
        view = wait_run(
            client, start_run(client, prefix="opt", rounds=2, aggregation=aggregation, start_version=0)["id"]
        )
        assert view["state"] == "succeeded", view
        accuracy[aggregation] = view["rounds"][-1]["global_accuracy"]
    assert accuracy["fedavg"] != accuracy["fedadam"]
    before = client.get("/v1/models/fashion_mnist/versions").json()["latest"]
    view = wait_run(client, start_run(client, prefix="opt", rounds=2, aggregation="none")["id"])
    assert view["state"] == "succeeded" and view["version"] is None
    assert all(r["version"] is None and r["global_accuracy"] is None for r in view["rounds"])
    assert all(r["mean_local_accuracy"] > 0 for r in view["rounds"])
    assert client.get("/v1/models/fashion_mnist/versions").json()["latest"] == before


def test_a_round_leaves_user_checkpoints_alone_unless_asked(client: TestClient) -> None:
    (device,) = devices(client, "keeper", 1)
    assign(client, "keeper")
    assert client.post(f"/v1/devices/{device}/save").status_code == 200
    directory = Path(client.app.state.settings.data_dir) / "devices" / device  # type: ignore[attr-defined]
    saved = (directory / "checkpoint.ckpt").read_bytes()
    assert wait_run(client, start_run(client, ids=[device], rounds=1)["id"])["state"] == "succeeded"
    assert (directory / "checkpoint.ckpt").read_bytes() == saved
    assert (
        wait_run(client, start_run(client, ids=[device], device_weights="saved")["id"])["state"]
        == "succeeded"
    )
    assert (directory / "checkpoint.ckpt").read_bytes() != saved
    assert not (directory / "outgoing.ckpt").exists() and not (directory / "incoming.ckpt").exists()


def test_bad_round_requests_are_refused(client: TestClient) -> None:
    devices(client, "badround", 2)
    assert "selects no devices" in error(client.post("/v1/rounds", json={"prefix": "nobody-"}), 400)
    assert "participants" in error(
        client.post("/v1/rounds", json={"prefix": "badround", "participants": 3}), 400
    )
    assert (
        client.post("/v1/rounds", json={"prefix": "badround", "aggregation": "fedmagic"}).status_code == 422
    )
    assert error(client.post("/v1/rounds", json={"prefix": "badround", "start_version": 999}), 404)
    assert error(client.get("/v1/rounds/abcdef123456"), 404)
    assert error(
        client.post("/v1/rounds", json={"prefix": "badround", "evaluate_on": {"dataset": "nowhere"}}), 404
    )


def test_bad_deadlines_straggler_policies_and_start_times_are_refused_naming_the_field(
    client: TestClient,
) -> None:
    devices(client, "badclock", 2)
    for body, field in (
        ({"deadline": -1}, "deadline"),
        ({"deadline": 0}, "deadline"),
        ({"deadline": 5e-324}, "deadline"),
        ({"deadline": 1e10}, "deadline"),
        ({"stragglers": "wait"}, "stragglers"),
        ({"start_time": -5}, "start_time"),
        ({"start_time": 1e13}, "start_time"),
    ):
        assert field in error(client.post("/v1/rounds", json={"prefix": "badclock", **body}), 422), body


def test_a_deadline_leaves_out_the_slow_phones_update(client: TestClient) -> None:
    ids = devices(client, "deadline", 3)
    assign(client, "deadline", seed=4)
    fleet = client.app.state.fleet  # type: ignore[attr-defined]
    network = {"uplink_mbps": 1000, "downlink_mbps": 1000, "rtt_ms": 0}
    for device_id, speed in zip(ids, (1.0, 0.01, 1.0), strict=True):  # 120 samples: 0.12 s or 12 s
        fleet.get(device_id).set_profile(parse_profile({"network": network, "speed": speed}))
    body = {"prefix": "deadline", "rounds": 2, "batch_size": 40, "deadline": 2.0, "start_time": 10}
    run = start_run(client, **body)
    spec = run["spec"]
    assert (spec["deadline"], spec["stragglers"], spec["start_time"]) == (2.0, "drop", 10)
    view = wait_run(client, run["id"])
    assert view["state"] == "succeeded", view
    for metrics in view["rounds"]:
        assert metrics["finished"] == 2 and metrics["straggled"] == 1 and metrics["stragglers"] == [ids[1]]
        assert metrics["samples"] == 2 * 120 and metrics["simulated_seconds"] == 2.0
    assert [r["simulated_start"] for r in view["rounds"]] == [10, 12] and view["simulated_time"] == 14


def test_participants_without_data_fail_the_round_with_their_reason(client: TestClient) -> None:
    devices(client, "nodata", 2)
    view = wait_run(client, start_run(client, prefix="nodata")["id"])
    assert view["state"] == "failed" and "no data assigned" in view["error"]


def test_cancel_stops_a_run_mid_round_and_makes_no_version(client: TestClient) -> None:
    devices(client, "long", 3)
    assign(client, "long")
    before = client.get("/v1/models/fashion_mnist/versions").json()["latest"]
    run = start_run(client, prefix="long", rounds=50, epochs=200, batch_size=8)
    deadline = time.monotonic() + 30
    while client.get(f"/v1/rounds/{run['id']}").json()["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    cancelled = client.post(f"/v1/rounds/{run['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    view = wait_run(client, run["id"], timeout=30)
    assert view["state"] == "cancelled" and view["rounds"] == []
    assert client.get("/v1/models/fashion_mnist/versions").json()["latest"] == before
    assert "already ended" in error(client.post(f"/v1/rounds/{run['id']}/cancel"), 409)


def test_the_builtin_dataset_reads_the_files_the_setting_names(tmp_path: Path) -> None:
    from service.model.dataset import DEBIAN_DIR, FILES

    elsewhere = tmp_path / "idx"
    elsewhere.mkdir()
    for name in FILES.values():
        (elsewhere / name).symlink_to(DEBIAN_DIR / name)
    settings = Settings(data_dir=tmp_path / "data", fashion_mnist_dir=elsewhere)
    with local_client(create_app(settings)) as other:
        view = other.get("/v1/datasets/fashion-mnist").json()
        assert view["splits"]["test"]["count"] == 10_000
    (elsewhere / FILES["test_labels"]).unlink()
    (elsewhere / FILES["test_labels"]).write_bytes(b"not gzip")
    with local_client(
        create_app(Settings(data_dir=tmp_path / "data2", fashion_mnist_dir=elsewhere))
    ) as broken:
        message = error(broken.get("/v1/datasets/fashion-mnist"), 503)
        assert "not a readable gzip'd IDX file" in message


def test_a_device_in_a_round_starts_no_job_until_its_part_is_done(client: TestClient) -> None:
    (device,) = devices(client, "claimed", 1)
    assign(client, "claimed")
    run = start_run(client, ids=[device], rounds=1, epochs=300, batch_size=4, global_accuracy=False)
    deadline = time.monotonic() + 30
    while client.get(f"/v1/devices/{device}").json()["train_steps"] == 0:  # its part has begun
        assert time.monotonic() < deadline, "the participant never trained"
        time.sleep(0.02)
    refused = client.post(f"/v1/devices/{device}/jobs", json={"epochs": 1})
    assert "trains in a federated round" in error(refused, 409)
    assert "trains in a federated round" in error(client.post(f"/v1/devices/{device}/adopt", json={}), 409)
    client.post(f"/v1/rounds/{run['id']}/cancel")
    assert wait_run(client, run["id"], timeout=60)["state"] == "cancelled"
    started = client.post(f"/v1/devices/{device}/jobs", json={"epochs": 1})
    assert started.status_code == 202, started.text
