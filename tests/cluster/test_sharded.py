"""The sharded fleet on a real three-node Ray cluster: one API, no update lost, faults survived."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.client import FleetClient
from service.fleet.models import embedded_model_path
from service.model.dataset import FashionMNIST, one_hot
from service.runtime import CompiledModel
from service.server_process import ServerProcess
from service.wire.view import View
from tests.cluster.conftest import RayCluster, ready_spares, sharded_server

NPZ = "application/x-npz"
LOAD_DEVICES = 60
ADMIN_KEY = "cluster-admin-key-0123456789abcdef"
AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
"""Shards on other nodes take calls from other hosts: a multi-node fleet runs with keys."""


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def outputs(response: httpx.Response) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(response.content), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


@pytest.fixture(scope="module")
def server(ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("sharded")
    keys = root / "keys.txt"
    keys.write_text(f"{ADMIN_KEY} admin\n")
    env = {"FLEET_API_KEYS_FILE": str(keys), "FLEET_ALLOW_MODEL_UPLOAD": "true"}
    with sharded_server(root / "data", ray_cluster, 2, env=env) as running:
        yield running


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60, headers=AUTH) as client:
        yield client


def shards(http: httpx.Client) -> dict[str, Any]:
    response = http.get("/v1/fleet/shards")
    assert response.status_code == 200, response.text
    return dict(response.json())


def batch_of(data: FashionMNIST, index: int) -> tuple[np.ndarray, np.ndarray]:
    start = (index % 500) * 100
    return data.train_images[start : start + 100], one_hot(data.train_labels[start : start + 100])


class TrainLoad:
    """Threads training their devices over and over; counts the trains each device acknowledged."""

    def __init__(self, url: str, ids: list[str], data: FashionMNIST, threads: int = 4) -> None:
        self.acked: dict[str, int] = defaultdict(int)
        self.statuses: dict[int, int] = defaultdict(int)
        self.answered_by: dict[tuple[str, str], set[str]] = defaultdict(set)
        """(device, epoch) -> the shards (slot/incarnation) that acknowledged a train of it."""
        self.refusals: list[str] = []
        """What each answer other than 200 said: its status, Retry-After and message."""
        self._bodies = {
            device: npz(x=x, y=y) for device, (x, y) in ((d, batch_of(data, i)) for i, d in enumerate(ids))
        }
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(url, ids[i::threads]), daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, url: str, ids: list[str]) -> None:
        with httpx.Client(base_url=url, timeout=60, headers=AUTH) as client:
            while not self._stop.is_set():
                for device in ids:
                    try:
                        response = client.post(
                            f"/v1/devices/{device}/train",
                            content=self._bodies[device],
                            headers={"content-type": NPZ, "accept": NPZ},
                        )
                    except httpx.TransportError:
                        with self._lock:
                            self.statuses[-1] += 1
                        continue
                    with self._lock:
                        self.statuses[response.status_code] += 1
                        if response.status_code == 200:
                            self.acked[device] += 1
                            key = (device, response.headers.get("fleet-epoch", "?"))
                            self.answered_by[key].add(response.headers.get("fleet-shard", "?"))
                        else:
                            retry = f"Retry-After {response.headers.get('retry-after')}"
                            self.refusals.append(f"{response.status_code} ({retry}): {response.text}")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        assert not any(t.is_alive() for t in self._threads)


def twin_logits(data: FashionMNIST, index: int, trains: int, probe: np.ndarray) -> np.ndarray:
    """The same device trained ``trains`` times with its batch, in this process."""
    model = CompiledModel.load("fashion_mnist", embedded_model_path().read_bytes())
    interpreter = model.interpreter()
    x, y = batch_of(data, index)
    for _ in range(trains):
        interpreter.run("train", {"x": x, "y": y})
    return interpreter.run("infer", {"x": probe})["logits"]


def warm_spares(http: httpx.Client) -> list[dict[str, Any]]:
    return ready_spares(lambda: shards(http))


def wait_until(condition: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def test_shards_are_spread_over_the_cluster_nodes(http: httpx.Client) -> None:
    view = shards(http)
    assert view["sharded"] is True and len(view["shards"]) == 2
    assert all(s["state"] == "serving" for s in view["shards"])
    for shard in view["shards"]:  # each serves HTTP itself, with the same keys
        assert httpx.get(f"{shard['address']}/v1/devices", headers=AUTH).status_code == 200
        assert httpx.get(f"{shard['address']}/v1/devices").status_code == 401
    assert len({s["node_id"] for s in view["shards"]}) == 2, "SPREAD puts the two shards on two nodes"
    assert len({s["pid"] for s in view["shards"]}) == 2


def test_every_route_kind_works_at_the_one_address(
    server: ServerProcess, fashion_mnist: FashionMNIST
) -> None:
    x, y = batch_of(fashion_mnist, 0)
    with FleetClient(server.url, binary=True, api_key=ADMIN_KEY) as client:
        client.create_device("walker")
        for _ in range(3):
            client.train("walker", x=x, y=y)
        client.save("walker")
        saved = client.infer("walker", x=x[:4])["logits"]
        client.train("walker", x=x, y=y)
        client.restore("walker")
        np.testing.assert_array_equal(client.infer("walker", x=x[:4])["logits"], saved)
        assert [e["step"] for e in client.history("walker")] == [1, 2, 3, 4]
        assert client.device("walker")["train_steps"] == 4
        client.add_samples("walker", x=x, y=y)
        job = client.start_job("walker", epochs=1, batch_size=50)
        assert client.wait_job("walker", job["id"], timeout=60)["state"] == "succeeded"
        assert client.device("walker")["train_steps"] == 6
        now = client.infer("walker", x=x[:1])["logits"]
    with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as http:
        v2 = http.post(
            "/v2/models/walker/infer",
            json={
                "inputs": [
                    {"name": "x", "shape": [1, 28, 28], "datatype": "FP32", "data": x[:1].ravel().tolist()}
                ]
            },
        )
        assert v2.status_code == 200, v2.text
        np.testing.assert_allclose(np.asarray(v2.json()["outputs"][0]["data"]), now[0], rtol=1e-5)
        assert http.get("/v1/models").status_code == 200
        missing = http.post("/v1/devices/nobody/train", content=npz(x=x, y=y), headers={"content-type": NPZ})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "device_not_found"
        assert http.delete("/v1/devices/walker").status_code == 204


def test_a_page_of_another_origin_is_refused_at_the_front_and_the_fleets_own_pass(
    server: ServerProcess, http: httpx.Client
) -> None:
    """The front checks what a browser sent; its shards, which see another Host, take its word."""
    evil = http.post("/v1/devices", json={"id": "cross"}, headers={"origin": "http://evil.example"})
    assert evil.status_code == 403 and "FLEET_ALLOWED_ORIGINS" in evil.text
    own = {"origin": server.url}
    assert http.post("/v1/devices", json={"id": "cross"}, headers=own).status_code == 201
    assert http.post("/v1/devices/cross/save", headers=own).status_code == 200
    assert http.delete("/v1/devices/cross", headers=own).status_code == 204


def test_fast_path_goes_straight_to_the_owner_and_survives_a_stale_view(
    server: ServerProcess, fashion_mnist: FashionMNIST
) -> None:
    x, y = batch_of(fashion_mnist, 2)
    with FleetClient(server.url, direct=True, api_key=ADMIN_KEY) as client:
        sent: list[str] = []
        client._http.event_hooks["request"].append(lambda request: sent.append(str(request.url)))
        client.create_device("fast")
        view = View.parse(client.shards())
        owner = view.owner("fast")
        client.train("fast", x=x, y=y)
        assert sent[-1] == f"{owner.address}/v1/devices/fast/train", sent
        # A stale view that names the other shard: it answers 421, the call goes through the front.
        other = view.shards[1 - owner.slot]
        client._view = View(epoch=0, shards=tuple(replace(s, address=other.address) for s in view.shards))
        sent.clear()
        client.train("fast", x=x, y=y)
        assert sent == [f"{other.address}/v1/devices/fast/train", f"{server.url}/v1/devices/fast/train"]
        assert client.device("fast")["train_steps"] == 2  # each call applied exactly once
        client.train("fast", x=x, y=y)
        assert sent[-1] == f"{owner.address}/v1/devices/fast/train", "the view was fetched again"
        client.delete_device("fast")


def test_a_model_is_added_once_and_deleted_only_when_no_shard_uses_it(
    http: httpx.Client, regressor_model: bytes
) -> None:
    assert http.put("/v1/models/reg", content=regressor_model).status_code == 201
    ids = [f"reg-{i}" for i in range(8)]
    assert http.post("/v1/devices/bulk-create", json={"ids": ids, "model": "reg"}).status_code == 201
    owners = {View.parse(shards(http)).owner(i).slot for i in ids}
    assert owners == {0, 1}, "the model's devices are on both shards"
    last = next(i for i in ids if View.parse(shards(http)).owner(i).slot == 1)
    assert (
        http.post("/v1/devices/bulk-delete", json={"ids": [i for i in ids if i != last]}).status_code == 200
    )
    refused = http.delete("/v1/models/reg")  # shard 0 has no user left; shard 1 has one
    assert refused.status_code == 409 and last in refused.json()["error"]["message"]
    assert http.get("/v1/models/reg").status_code == 200
    assert http.delete(f"/v1/devices/{last}").status_code == 204
    assert http.delete("/v1/models/reg").status_code == 204
    assert http.get("/v1/models/reg").status_code == 404
    made = http.post("/v1/devices/bulk-create", json={"ids": ids, "model": "reg"})
    assert made.status_code == 404, "no shard still knows the deleted model"


def test_fleet_wide_answers_equal_a_single_process(http: httpx.Client, tmp_path: Path) -> None:
    ids = [f"bulk-{i:05d}" for i in range(10_000)]
    with ServerProcess(tmp_path / "single") as single, httpx.Client(base_url=single.url, timeout=60) as one:
        for client in (http, one):
            made = client.post("/v1/devices/bulk-create", json={"ids": ids})
            assert made.status_code == 201, made.text
            assert made.json()["count"] == 10_000

        def pages(client: httpx.Client) -> list[list[str]]:
            walked, after = [], None
            while True:
                params: dict[str, Any] = {"limit": 1000, **({"after": after} if after else {})}
                page = client.get("/v1/devices", params=params).json()
                walked.append([d["id"] for d in page["devices"]])
                assert page["total"] == 10_000
                after = page["next_after"]
                if after is None:
                    return walked

        sharded_pages, single_pages = pages(http), pages(one)
        assert sharded_pages == single_pages
        assert sorted(i for p in sharded_pages for i in p) == ids
        prefix = http.get("/v1/devices", params={"limit": 5, "after": "bulk-00100"}).json()
        assert prefix == one.get("/v1/devices", params={"limit": 5, "after": "bulk-00100"}).json() | {
            "devices": prefix["devices"]
        }
        assert [d["id"] for d in prefix["devices"]] == ids[101:106]

        for client in (http, one):
            status = client.get("/v1/fleet").json()
            assert status["devices"] == 10_000

        # All or nothing: one unknown ID fails the request before any device is deleted.
        for client in (http, one):
            refused = client.post("/v1/devices/bulk-delete", json={"ids": [*ids[:5000], "nobody"]})
            assert refused.status_code == 404, refused.text
            assert client.get("/v1/fleet").json()["devices"] == 10_000
            gone = client.post("/v1/devices/bulk-delete", json={"ids": ids})
            assert gone.status_code == 200 and gone.json()["count"] == 10_000
            assert client.get("/v1/devices").json()["total"] == 0

        def families(client: httpx.Client) -> set[str]:
            text = client.get("/metrics").text
            return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}

        assert families(http) == families(one)


def test_resize_under_load_loses_no_update(
    server: ServerProcess, http: httpx.Client, fashion_mnist: FashionMNIST
) -> None:
    ids = [f"load-{i:03d}" for i in range(LOAD_DEVICES)]
    assert http.post("/v1/devices/bulk-create", json={"ids": ids}).status_code == 201
    epoch = shards(http)["epoch"]
    load = TrainLoad(server.url, ids, fashion_mnist)
    try:
        time.sleep(3)
        for count in (3, 2):
            started = time.monotonic()
            resized = http.post("/v1/fleet/shards", json={"count": count})
            assert resized.status_code == 200, resized.text
            assert len(resized.json()["shards"]) == count
            assert time.monotonic() - started < 60
            time.sleep(3)
    finally:
        load.stop()
    assert shards(http)["epoch"] == epoch + 2
    assert load.statuses[200] > 0
    # A moving device's calls wait at the front, and a slot taken away refuses what reaches it late:
    # the resizes cost the clients time, never an error.
    assert set(load.statuses) == {200}, (dict(load.statuses), load.refusals)
    many = {key: who for key, who in load.answered_by.items() if len(who) > 1}
    assert not many, f"devices answered by two shards in one epoch: {many}"
    probe = fashion_mnist.test_images[:8]
    for index, device in enumerate(ids):
        info = http.get(f"/v1/devices/{device}").json()
        assert info["train_steps"] == load.acked[device], device
        served = http.post(
            f"/v1/devices/{device}/infer", content=npz(x=probe), headers={"content-type": NPZ, "accept": NPZ}
        )
        np.testing.assert_array_equal(
            outputs(served)["logits"],
            twin_logits(fashion_mnist, index, load.acked[device], probe),
            err_msg=device,
        )


def test_killed_shard_comes_back_from_checkpoints_and_others_do_not_notice(
    server: ServerProcess, http: httpx.Client, fashion_mnist: FashionMNIST
) -> None:
    ids = [f"crash-{i:02d}" for i in range(20)]
    assert http.post("/v1/devices/bulk-create", json={"ids": ids}).status_code == 201
    x, y = batch_of(fashion_mnist, 1)
    probe = fashion_mnist.test_images[:8]
    body, probe_body = npz(x=x, y=y), npz(x=probe)
    headers = {"content-type": NPZ, "accept": NPZ}
    saved: dict[str, np.ndarray] = {}
    owner: dict[str, str] = {}
    for device in ids:
        trained = http.post(f"/v1/devices/{device}/train", content=body, headers=headers)
        owner[device] = trained.headers["fleet-shard"].split("/")[0]
        assert http.post(f"/v1/devices/{device}/save").status_code == 200
        saved[device] = outputs(
            http.post(f"/v1/devices/{device}/infer", content=probe_body, headers=headers)
        )["logits"]
        http.post(f"/v1/devices/{device}/train", content=body, headers=headers)  # unsaved: lost in the crash
    spare = warm_spares(http)[0]
    victim = shards(http)["shards"][0]
    survivors = [d for d in ids if owner[d] != str(victim["slot"])]
    load = TrainLoad(server.url, survivors, fashion_mnist, threads=2)
    try:
        time.sleep(1)
        os.kill(victim["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        statuses: list[int] = []
        moved = [d for d in ids if owner[d] == str(victim["slot"])]

        def serves_again() -> bool:
            reply = http.post(f"/v1/devices/{moved[0]}/infer", content=probe_body, headers=headers)
            statuses.append(reply.status_code)
            if reply.status_code == 503:
                assert "retry-after" in reply.headers
            return reply.status_code == 200

        wait_until(serves_again, 60, "the killed shard's devices serve again")
        back_after = time.monotonic() - killed_at
        time.sleep(1)
    finally:
        load.stop()
    assert set(statuses) <= {200, 503}, statuses
    assert set(load.statuses) == {200}, f"the other shard's devices noticed: {dict(load.statuses)}"
    after = shards(http)["shards"][0]
    assert after["pid"] == spare["pid"] != victim["pid"], "the warm spare took the dead shard's slot"
    assert after["incarnation"] == victim["incarnation"] + 1
    assert warm_spares(http)[0]["pid"] not in (spare["pid"], victim["pid"]), "a new spare replaced it"
    for device in moved:
        info = http.get(f"/v1/devices/{device}").json()
        assert info["has_checkpoint"] and info["train_steps"] >= 1
        assert info["resident"] == (device == moved[0])  # only the one probed is back in memory
        logits = outputs(http.post(f"/v1/devices/{device}/infer", content=probe_body, headers=headers))[
            "logits"
        ]
        np.testing.assert_array_equal(logits, saved[device], err_msg=device)  # the checkpoint, bit for bit
    assert back_after < 60


def test_killed_coordinator_recovers_one_view(server: ServerProcess, http: httpx.Client) -> None:
    spares = warm_spares(http)
    before = shards(http)
    os.kill(before["coordinator"]["pid"], signal.SIGKILL)
    assert (
        http.get("/v1/devices", params={"limit": 1}).status_code == 200
    )  # device traffic needs no coordinator

    def answers() -> bool:
        return http.get("/v1/fleet/shards").status_code == 200

    wait_until(answers, 60, "a restarted coordinator answers")
    after = shards(http)
    assert after["coordinator"]["pid"] != before["coordinator"]["pid"]
    assert after["epoch"] == before["epoch"]
    assert [s["address"] for s in after["shards"]] == [s["address"] for s in before["shards"]]
    assert [s["pid"] for s in warm_spares(http)] == [s["pid"] for s in spares], "the spares adopted"
    grown = http.post("/v1/fleet/shards", json={"count": 3})
    assert grown.status_code == 200 and grown.json()["epoch"] == before["epoch"] + 1
    shrunk = http.post("/v1/fleet/shards", json={"count": 2})
    assert shrunk.status_code == 200 and shrunk.json()["epoch"] == before["epoch"] + 2


def test_a_resize_interrupted_by_a_killed_coordinator_ends_in_one_view(
    server: ServerProcess, http: httpx.Client
) -> None:
    ids = [f"halfway-{i:02d}" for i in range(30)]
    assert http.post("/v1/devices/bulk-create", json={"ids": ids}).status_code == 201
    for spare in warm_spares(http):  # the third shard then needs a new process: seconds to start
        os.kill(spare["pid"], signal.SIGKILL)
    before = shards(http)
    answers: list[httpx.Response] = []
    resize = threading.Thread(
        target=lambda: answers.append(http.post("/v1/fleet/shards", json={"count": 3}, timeout=180))
    )
    view_file = server.data_dir / "cluster" / "view.json"

    def resizing() -> bool:
        return json.loads(view_file.read_text()).get("pending") == 3

    resize.start()
    wait_until(resizing, 30, "the coordinator records the resize")
    os.kill(before["coordinator"]["pid"], signal.SIGKILL)
    assert resizing(), "the coordinator was killed halfway: the resize is not committed"
    resize.join(timeout=180)
    assert not resize.is_alive()
    assert answers[0].status_code in (200, 503), answers[0].text  # Ray retried it, or it said to retry
    wait_until(lambda: http.get("/v1/fleet/shards").status_code == 200, 60, "the coordinator answers")
    after = shards(http)
    assert after["coordinator"]["pid"] != before["coordinator"]["pid"]
    assert len(after["shards"]) == 3 and after["epoch"] == before["epoch"] + 1, after
    assert all(s["epoch"] == after["epoch"] for s in after["shards"]), "every shard committed the view"
    total = http.get("/v1/devices", params={"limit": 1}).json()["total"]
    assert sum(s["devices"] for s in after["shards"]) == total, "each device registered on one shard"
    view = View.parse(after)
    for device in ids:
        reply = http.get(f"/v1/devices/{device}")
        assert reply.status_code == 200
        assert reply.headers["fleet-shard"].split("/")[0] == str(view.owner(device).slot)
    assert http.post("/v1/fleet/shards", json={"count": 2}).status_code == 200


def test_a_shard_whose_node_is_lost_starts_again_on_another(
    ray_cluster: RayCluster, http: httpx.Client, fashion_mnist: FashionMNIST
) -> None:
    """Last in the module: it takes a node away from the cluster."""
    x, y = batch_of(fashion_mnist, 3)
    view = shards(http)
    nodes_by_session = {node.pid: node for node in ray_cluster.nodes[1:]}  # the workers, not the head
    victim = next(s for s in view["shards"] if os.getsid(s["pid"]) in nodes_by_session)
    owned = next(
        i for i in (f"lost-{n}" for n in range(100)) if View.parse(view).owner(i).slot == victim["slot"]
    )
    assert http.post("/v1/devices", json={"id": owned}).status_code == 201
    assert (
        http.post(
            f"/v1/devices/{owned}/train", content=npz(x=x, y=y), headers={"content-type": NPZ}
        ).status_code
        == 200
    )
    assert http.post(f"/v1/devices/{owned}/save").status_code == 200
    os.killpg(os.getsid(victim["pid"]), signal.SIGKILL)  # the node: its raylet, its workers, the shard

    def back() -> bool:
        return http.get(f"/v1/devices/{owned}").status_code == 200

    took = wait_until(back, 120, "the lost node's shard serves again elsewhere")
    after = next(s for s in shards(http)["shards"] if s["slot"] == victim["slot"])
    assert after["node_id"] != victim["node_id"] and after["pid"] != victim["pid"]
    assert http.get(f"/v1/devices/{owned}").json()["has_checkpoint"]
    assert took < 120
