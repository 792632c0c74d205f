"""``fleet serve --shards 2`` on a local Ray runtime of its own: the one command, a crash, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from service.client import FleetClient
from service.model.dataset import FashionMNIST, one_hot
from service.server_process import ServerProcess
from tests.cluster.conftest import ready_spares


def test_local_shards_survive_their_coordinator_and_stop_cleanly(
    tmp_path: Path, fashion_mnist: FashionMNIST
) -> None:
    x, y = fashion_mnist.train_images[:100], one_hot(fashion_mnist.train_labels[:100])
    data = tmp_path / "data"
    with ServerProcess(data, "--shards", "2", timeout=240) as server, FleetClient(server.url) as client:
        view = client.shards()
        assert view["sharded"] and len(view["shards"]) == 2
        assert all(s["address"].startswith("http://127.0.0.1:") for s in view["shards"])  # this machine only
        ids = client.create_devices(count=6, prefix="local-")
        for device in ids:
            client.train(device, x=x, y=y)
        spares = [s["pid"] for s in ready_spares(client.shards)]
        os.kill(view["coordinator"]["pid"], signal.SIGKILL)
        for device in ids:  # the shards are not the coordinator's: they and their weights stay
            client.train(device, x=x, y=y)
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/v1/fleet/shards", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "the coordinator came back"
            time.sleep(0.2)
        after = client.shards()
        assert [s["pid"] for s in after["shards"]] == [s["pid"] for s in view["shards"]]
        assert [s["pid"] for s in after["spares"]] == spares, "the new coordinator adopted the spare"
        assert all(client.device(d)["train_steps"] == 2 for d in ids)
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=60)
    for device in ids:  # written by the shards as the front stopped them: nothing was saved by hand
        record = json.loads((data / "devices" / device / "device.json").read_text())
        assert record["train_steps"] == 2, record
    assert np.isfinite(record["last_loss"])


def test_the_single_process_service_never_imports_ray(tmp_path: Path) -> None:
    """Without --shards or --ray-address: the app opened and serving, the client's fast path, the CLI."""
    probe = f"""
import sys
from fastapi.testclient import TestClient
import service.cli
from service.api import create_app
from service.client import FleetClient
from service.config import Settings
app = create_app(Settings(data_dir={str(tmp_path / "data")!r}))
with TestClient(app, client=("127.0.0.1", 5000), base_url="http://127.0.0.1") as client:
    assert client.post("/v1/devices", json={{"id": "solo"}}).status_code == 201
    assert client.get("/v1/fleet/shards").json()["sharded"] is False
FleetClient("http://127.0.0.1:9", direct=True).close()
loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
print(loaded)
sys.exit(1 if loaded else 0)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
