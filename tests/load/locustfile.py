"""Load test: every Locust user is one phone running the personalization flow on its own device.

A user creates its device on start, trains it on its own data (a device of an "interest" partition of
Fashion-MNIST: mostly one class), saves, restarts (an app relaunch), restores and, above all, infers.
Request bodies are npz, encoded once per process when this file is imported; requests are named per
route (``/v1/devices/[id]/train``), not per device ID, so the statistics group by route.

    pip install -e '.[load]'
    fleet serve --port 8000 &
    locust -f tests/load/locustfile.py --headless -u 20 -r 5 -t 30s --host http://127.0.0.1:8000 \\
        --csv reports/locust

Against a service with API keys, set ``FLEET_API_KEY`` (sent as ``Authorization: Bearer``); a
``devices`` key needs ``FLEET_DEVICE_PREFIX`` set to its prefix (device IDs are PREFIX + random hex;
default ``locust-``).

Against a sharded fleet (``fleet serve --shards N``), ``FLEET_DIRECT=1`` takes the fast path: each
phone asks ``GET /v1/fleet/shards`` for its device's owner and sends its calls there, one hop instead
of two. A shard that no longer owns the device (a resize; 421) or cannot be reached (a restart) sends
the phone back to the front for that call, and it asks for the view again.

Not collected by pytest (the name does not match ``test_*.py``).
"""

from __future__ import annotations

import io
import itertools
import os
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from locust import between, task
from locust.contrib.fasthttp import FastHttpUser

from service.data.partition import partition
from service.data.spec import PartitionSpec
from service.model.dataset import load_fashion_mnist, one_hot
from service.wire.view import View

NPZ = "application/x-npz"
PROFILES = 32
"""Distinct devices' data sets; users take them in turn."""
BATCH = 32
TRAIN_BATCHES = 4
AUTH_HEADERS = (
    {"authorization": f"Bearer {os.environ['FLEET_API_KEY']}"} if os.environ.get("FLEET_API_KEY") else {}
)
DEVICE_PREFIX = os.environ.get("FLEET_DEVICE_PREFIX", "locust-")
DIRECT = os.environ.get("FLEET_DIRECT", "").lower() in ("1", "true", "yes")
NPZ_HEADERS = {"content-type": NPZ, "accept": NPZ, **AUTH_HEADERS}


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@dataclass(frozen=True)
class Profile:
    """One device's encoded request bodies: a few train batches and an infer batch."""

    train_bodies: tuple[bytes, ...]
    infer_body: bytes


def build_profiles() -> list[Profile]:
    data = load_fashion_mnist()
    spec = PartitionSpec(
        "interest",
        devices=PROFILES,
        train_per_device=BATCH * TRAIN_BATCHES,
        test_per_device=BATCH,
        classes_per_device=1,
        interest_share=0.9,
        seed=0,
    )
    profiles = []
    for split in partition(data.train_labels, data.test_labels, spec):
        x, y = data.train_images[split.train_indices], one_hot(data.train_labels[split.train_indices])
        bodies = tuple(npz(x=x[i : i + BATCH], y=y[i : i + BATCH]) for i in range(0, len(x), BATCH))
        profiles.append(Profile(bodies, npz(x=data.test_images[split.test_indices])))
    return profiles


PROFILE_DATA = build_profiles()
_next_profile = itertools.count()


class Phone(FastHttpUser):
    """A phone with its own device: mostly inference, regular training, occasional save and relaunch."""

    wait_time = between(0.05, 0.25)

    def on_start(self) -> None:
        self.device_id = f"{DEVICE_PREFIX}{uuid.uuid4().hex[:12]}"
        self.profile = PROFILE_DATA[next(_next_profile) % len(PROFILE_DATA)]
        self.batches = itertools.cycle(self.profile.train_bodies)
        self.client.post("/v1/devices", json={"id": self.device_id}, name="/v1/devices", headers=AUTH_HEADERS)
        self.owner = self.find_owner()
        self.train()
        self.save()  # so that restore always has a checkpoint

    def on_stop(self) -> None:
        self.client.request("DELETE", self.path(""), name="/v1/devices/[id]", headers=AUTH_HEADERS)

    def path(self, route: str) -> str:
        return f"/v1/devices/{self.device_id}{route}"

    def find_owner(self) -> str:
        """The owning shard's address on the fast path; "" for the front."""
        if not DIRECT:
            return ""
        reply = self.client.get("/v1/fleet/shards", name="/v1/fleet/shards", headers=AUTH_HEADERS)
        view = reply.json() if reply.status_code == 200 else {}
        return (View.parse(view).owner(self.device_id).address or "") if view.get("sharded") else ""

    def post(self, route: str, headers: dict[str, str] = AUTH_HEADERS, **kwargs: Any) -> None:
        name = f"/v1/devices/[id]{route}"
        if self.owner:
            url = self.owner + self.path(route)
            with self.client.post(url, name=name, headers=headers, catch_response=True, **kwargs) as reply:
                if reply.status_code not in (0, 421):
                    return
                reply.success()  # not the owner any more, or restarting: nothing done; via the front
            self.owner = self.find_owner()
        self.client.post(self.path(route), name=name, headers=headers, **kwargs)

    @task(10)
    def infer(self) -> None:
        self.post("/infer", data=self.profile.infer_body, headers=NPZ_HEADERS)

    @task(6)
    def train(self) -> None:
        self.post("/train", data=next(self.batches), headers=NPZ_HEADERS)

    @task(2)
    def save(self) -> None:
        self.post("/save")

    @task(1)
    def restart(self) -> None:
        self.post("/restart")

    @task(1)
    def restore(self) -> None:
        self.post("/restore")
