"""Device-local samples, background jobs and loss history, through the in-process client."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.api.codecs import NPZ
from service.config import Settings
from tests.local import local_client

Batch = tuple[np.ndarray, np.ndarray]
SAMPLE_BYTES = (28 * 28 + 10) * 4
"""One sample of the default model's train signature: x and y, float32."""
# Long jobs below stay within FLEET_MAX_JOB_STEPS (1,000,000): 10,000 epochs of at most 100 batches.


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def upload(client: TestClient, device: str, x: np.ndarray, y: np.ndarray) -> dict:
    response = client.post(
        f"/v1/devices/{device}/samples", content=npz(x=x, y=y), headers={"content-type": NPZ}
    )
    assert response.status_code == 200, response.text
    return response.json()


def wait(client: TestClient, device: str, job: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/v1/devices/{device}/jobs/{job}").json()
        if view["state"] not in ("queued", "running"):
            return view
        time.sleep(0.05)
    raise AssertionError(f"job {job} did not finish: {view}")


@pytest.fixture
def small_client(tmp_path: Path) -> Iterator[TestClient]:
    with local_client(create_app(Settings(data_dir=tmp_path / "data", sample_capacity=250))) as client:
        client.post("/v1/devices", json={"id": "phone"})
        yield client


def test_samples_are_bounded_and_keep_the_newest(small_client: TestClient, fashion_mnist) -> None:
    x, labels = fashion_mnist.train_images[:300], fashion_mnist.train_labels[:300]
    y = np.eye(10, dtype=np.float32)[labels]
    assert upload(small_client, "phone", x[:100], y[:100]) == {
        "count": 100,
        "capacity": 250,
        "signature": "train",
        "added": 100,
        "dropped": 0,
        "bytes": 100 * SAMPLE_BYTES,
        "capacity_bytes": 64 * 1024 * 1024,
    }
    assert upload(small_client, "phone", x[100:200], y[100:200])["count"] == 200
    assert upload(small_client, "phone", x[200:300], y[200:300]) == {
        "count": 250,
        "capacity": 250,
        "signature": "train",
        "added": 100,
        "dropped": 50,
        "bytes": 250 * SAMPLE_BYTES,
        "capacity_bytes": 64 * 1024 * 1024,
    }
    device = small_client.app.state.fleet.get("phone")  # type: ignore[attr-defined]
    signature, stored = device.samples.load()
    assert signature == "train"
    np.testing.assert_array_equal(stored["x"], x[50:300])
    np.testing.assert_array_equal(stored["y"], y[50:300])
    bad = small_client.post(
        "/v1/devices/phone/samples", json={"inputs": {"x": x[:2].tolist(), "y": [[1.0] * 9] * 2}}
    )
    assert bad.status_code == 422 and "'y' has shape [2, 9]" in bad.json()["error"]["message"]
    assert small_client.get("/v1/devices/phone/samples").json()["count"] == 250
    assert small_client.delete("/v1/devices/phone/samples").status_code == 204
    assert small_client.get("/v1/devices/phone/samples").json()["count"] == 0


def test_job_trains_on_samples_saves_and_records_history(small_client: TestClient, fashion_mnist) -> None:
    x = fashion_mnist.train_images[:200]
    y = np.eye(10, dtype=np.float32)[fashion_mnist.train_labels[:200]]
    assert (
        small_client.post("/v1/devices/phone/jobs", json={"epochs": 1}).status_code == 409
    )  # no samples yet
    upload(small_client, "phone", x, y)
    response = small_client.post(
        "/v1/devices/phone/jobs", json={"epochs": 3, "batch_size": 50, "save": True, "seed": 1}
    )
    assert response.status_code == 202, response.text
    job = wait(small_client, "phone", response.json()["id"])
    assert job["state"] == "succeeded", job
    assert (job["steps_done"], job["steps_total"], job["epoch"]) == (12, 12, 3)
    assert len(job["epoch_losses"]) == 3 and job["epoch_losses"][-1] < job["epoch_losses"][0]
    info = small_client.get("/v1/devices/phone").json()
    assert info["has_checkpoint"] and info["train_steps"] == 12
    history = small_client.get("/v1/devices/phone/history").json()["history"]
    assert [h["step"] for h in history] == list(range(1, 13)) and {h["source"] for h in history} == {"job"}
    assert small_client.get("/v1/devices/phone/jobs").json()["jobs"][0]["id"] == job["id"]
    assert small_client.get("/v1/devices/phone/jobs/nope").status_code == 404


def test_one_job_at_a_time_and_cancel(small_client: TestClient, fashion_mnist) -> None:
    x = fashion_mnist.train_images[:250]
    y = np.eye(10, dtype=np.float32)[fashion_mnist.train_labels[:250]]
    upload(small_client, "phone", x, y)
    job = small_client.post("/v1/devices/phone/jobs", json={"epochs": 10_000, "batch_size": 4}).json()
    second = small_client.post("/v1/devices/phone/jobs", json={"epochs": 1})
    assert second.status_code == 409 and second.json()["error"]["code"] == "device_busy"
    cancelled = small_client.post(f"/v1/devices/phone/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    final = wait(small_client, "phone", job["id"])
    assert final["state"] == "cancelled" and final["steps_done"] < final["steps_total"]
    assert (
        small_client.post("/v1/devices/phone/jobs", json={"epochs": 1, "batch_size": 250}).status_code == 202
    )


def test_bad_job_requests(small_client: TestClient) -> None:
    for body, status in (({"epochs": 0}, 422), ({"batch_size": -1}, 422), ({"signature": "nope"}, 404)):
        response = small_client.post("/v1/devices/phone/jobs", json=body)
        assert response.status_code == status, response.text


def test_jobs_and_history_survive_a_restart(tmp_path: Path, fashion_mnist) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    x = fashion_mnist.train_images[:64]
    y = np.eye(10, dtype=np.float32)[fashion_mnist.train_labels[:64]]
    with local_client(create_app(settings)) as client:
        client.post("/v1/devices", json={"id": "phone"})
        upload(client, "phone", x, y)
        done = wait(
            client,
            "phone",
            client.post("/v1/devices/phone/jobs", json={"epochs": 2, "batch_size": 32}).json()["id"],
        )
        running = client.post("/v1/devices/phone/jobs", json={"epochs": 10_000, "batch_size": 1}).json()
        while client.get(f"/v1/devices/phone/jobs/{running['id']}").json()["state"] == "queued":
            time.sleep(0.01)
    with local_client(create_app(settings)) as client:
        jobs = {j["id"]: j for j in client.get("/v1/devices/phone/jobs").json()["jobs"]}
        assert jobs[done["id"]]["state"] == "succeeded"
        assert jobs[running["id"]]["state"] == "interrupted"
        history = client.get("/v1/devices/phone/history").json()["history"]
        assert len(history) >= 4 and history[0]["step"] == 1
        assert client.get("/v1/devices/phone/samples").json()["count"] == 64


def test_samples_of_one_signature_at_a_time(small_client: TestClient, fashion_mnist) -> None:
    x = fashion_mnist.train_images[:20]
    y = np.eye(10, dtype=np.float32)[fashion_mnist.train_labels[:20]]
    response = small_client.post(
        "/v1/devices/phone/samples?signature=infer", content=npz(x=x), headers={"content-type": NPZ}
    )
    assert response.status_code == 200 and response.json()["signature"] == "infer"
    mixed = small_client.post(
        "/v1/devices/phone/samples", content=npz(x=x, y=y), headers={"content-type": NPZ}
    )
    assert mixed.status_code == 409 and mixed.json()["error"]["code"] == "samples_mismatch"
    job = small_client.post("/v1/devices/phone/jobs", json={"signature": "train"})
    assert job.status_code == 409 and job.json()["error"]["code"] == "samples_mismatch"
    for signature in ("save", "restore"):
        response = small_client.post(
            f"/v1/devices/phone/samples?signature={signature}", json={"inputs": {"checkpoint_path": "/etc/x"}}
        )
        assert response.status_code == 422, response.text
    small_client.delete("/v1/devices/phone/samples")
    upload(small_client, "phone", x, y)
    assert small_client.post("/v1/devices/phone/jobs", json={"seed": -1}).status_code == 422
    assert small_client.post("/v1/devices/phone/jobs", json={"signature": "save"}).status_code == 422


def test_reset_and_restart_stop_a_running_job(small_client: TestClient, fashion_mnist) -> None:
    x = fashion_mnist.train_images[:200]
    y = np.eye(10, dtype=np.float32)[fashion_mnist.train_labels[:200]]
    upload(small_client, "phone", x, y)
    baseline = small_client.post(
        "/v1/devices/phone/infer", content=npz(x=x[:5]), headers={"content-type": NPZ}
    )
    for action in ("reset", "restart"):
        job = small_client.post("/v1/devices/phone/jobs", json={"epochs": 10_000, "batch_size": 4}).json()
        while small_client.get(f"/v1/devices/phone/jobs/{job['id']}").json()["steps_done"] < 3:
            time.sleep(0.01)
        assert small_client.post(f"/v1/devices/phone/{action}").status_code == 200
        ended = small_client.get(f"/v1/devices/phone/jobs/{job['id']}").json()
        assert ended["state"] == "cancelled" and action in ended["error"]
        steps = small_client.get("/v1/devices/phone").json()["train_steps"]
        time.sleep(0.2)
        assert small_client.get("/v1/devices/phone").json()["train_steps"] == steps, "the job kept training"
        cancel = small_client.post(f"/v1/devices/phone/jobs/{job['id']}/cancel")
        assert cancel.status_code == 409 and cancel.json()["error"]["code"] == "job_ended"
    after = small_client.post("/v1/devices/phone/infer", content=npz(x=x[:5]), headers={"content-type": NPZ})
    assert after.content == baseline.content  # reset gave the baseline; restart kept it (nothing saved)


def test_a_deleted_device_s_jobs_do_not_follow_its_id(small_client: TestClient, fashion_mnist) -> None:
    x = fashion_mnist.train_images[:50]
    y = np.eye(10, dtype=np.float32)[fashion_mnist.train_labels[:50]]
    upload(small_client, "phone", x, y)
    small_client.post("/v1/devices/phone/jobs", json={"epochs": 10_000, "batch_size": 1})
    assert small_client.delete("/v1/devices/phone").status_code == 204
    assert small_client.post("/v1/devices", json={"id": "phone"}).status_code == 201
    time.sleep(0.2)  # the old job's worker notices its cancellation and ends
    assert small_client.get("/v1/devices/phone/jobs").json()["jobs"] == []
    assert small_client.get("/v1/devices/phone/samples").json()["count"] == 0


def test_a_job_past_the_step_limit_is_refused_naming_the_setting(
    small_client: TestClient, fashion_mnist
) -> None:
    x = fashion_mnist.train_images[:250]
    y = np.eye(10, dtype=np.float32)[fashion_mnist.train_labels[:250]]
    upload(small_client, "phone", x, y)
    response = small_client.post("/v1/devices/phone/jobs", json={"epochs": 10_000, "batch_size": 1})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "limit_exceeded" and "FLEET_MAX_JOB_STEPS" in error["message"]
    assert "2,500,000 training steps" in error["message"]
    assert small_client.get("/v1/devices/phone/jobs").json()["jobs"] == []


def test_a_short_job_is_not_starved_by_a_long_one(tmp_path: Path, fashion_mnist) -> None:
    """One job worker: a 5-step job started behind a 500,000-step one ends within seconds."""
    x = fashion_mnist.train_images[:50]
    y = np.eye(10, dtype=np.float32)[fashion_mnist.train_labels[:50]]
    with local_client(create_app(Settings(data_dir=tmp_path / "data", job_workers=1))) as client:
        for device in ("long", "short"):
            client.post("/v1/devices", json={"id": device})
            upload(client, device, x, y)
        long = client.post("/v1/devices/long/jobs", json={"epochs": 10_000, "batch_size": 1}).json()
        deadline = time.monotonic() + 30
        while client.get(f"/v1/devices/long/jobs/{long['id']}").json()["steps_done"] < 10:
            assert time.monotonic() < deadline, "the long job did not start"
            time.sleep(0.01)
        short = client.post("/v1/devices/short/jobs", json={"epochs": 1, "batch_size": 10}).json()
        assert wait(client, "short", short["id"], timeout=15)["state"] == "succeeded"
        still = client.get(f"/v1/devices/long/jobs/{long['id']}").json()
        assert still["state"] == "running" and still["steps_done"] < still["steps_total"]
        assert client.post(f"/v1/devices/long/jobs/{long['id']}/cancel").status_code == 200
        assert wait(client, "long", long["id"], timeout=10)["state"] == "cancelled"


def test_a_corrupt_jobs_file_blocks_no_listing_start_reset_or_delete(
    small_client: TestClient, fashion_mnist
) -> None:
    x = fashion_mnist.train_images[:50]
    y = np.eye(10, dtype=np.float32)[fashion_mnist.train_labels[:50]]
    upload(small_client, "phone", x, y)
    jobs_file = small_client.app.state.fleet.get("phone").directory / "jobs.json"  # type: ignore[attr-defined]
    jobs_file.write_bytes(b"{not json")
    assert small_client.get("/v1/devices/phone/jobs").json() == {"jobs": []}
    jobs_file.write_bytes(b"[1, 2, 3]")
    started = small_client.post("/v1/devices/phone/jobs", json={"epochs": 1, "batch_size": 25})
    assert started.status_code == 202, started.text
    assert wait(small_client, "phone", started.json()["id"])["state"] == "succeeded"
    assert [j["id"] for j in small_client.get("/v1/devices/phone/jobs").json()["jobs"]] == [
        started.json()["id"]
    ]
    for action in ("reset", "restart"):
        jobs_file.write_bytes(b"\xff\xfe")
        assert small_client.post(f"/v1/devices/phone/{action}").status_code == 200
    jobs_file.write_bytes(b"garbage")
    assert small_client.delete("/v1/devices/phone").status_code == 204
