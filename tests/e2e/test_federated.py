"""A federated study against a real server, as a harness runs one: no image crosses the wire.

Assign devices data from the built-in Fashion-MNIST, evaluate them, train one over its assigned data,
run FedAvg rounds, adopt the result, and cancel a long run mid-round. The sharded fleet runs the same
functions (``tests/cluster/test_e2e_walkthroughs.py``).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from service.client import FleetClient
from service.errors import (
    DatasetNotFound,
    InvalidPrivacy,
    InvalidRequest,
    InvalidTensor,
    NoAssignment,
    RoundEnded,
)
from service.server_process import ServerProcess

DATASET = "fashion-mnist"


def make_devices(client: FleetClient, prefix: str, count: int) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(count)]
    client.create_devices(ids=ids)
    return ids


def test_federated_study(server: ServerProcess) -> None:
    with FleetClient(server.url, timeout=300) as client:
        ids = make_devices(client, "fl", 6)
        with pytest.raises(NoAssignment):
            client.evaluate(ids[0])
        assigned = client.assign(
            DATASET,
            prefix="fl-",
            scheme="dirichlet",
            alpha=0.5,
            seed=4,
            train_per_device=200,
            test_per_device=50,
        )
        assert assigned["devices"] == 6
        view = client.assignment(ids[0])
        assert view is not None and view["train_size"] == 200 and view["dataset"] == DATASET

        before = client.evaluate(ids[0])
        assert before["count"] == 50 and 0 < before["accuracy"] <= 1

        job = client.start_job(ids[1], epochs=1, batch_size=50, data="assigned")
        assert client.wait_job(ids[1], job["id"], timeout=60)["state"] == "succeeded"
        assert client.device(ids[1])["train_steps"] == 4

        run = client.start_rounds(
            prefix="fl-",
            rounds=2,
            participants=4,
            epochs=1,
            batch_size=25,
            seed=1,
            evaluate_on={"dataset": DATASET, "split": "test", "limit": 2000},
        )
        done = client.wait_rounds(run["id"], timeout=180)
        assert done["state"] == "succeeded", done
        assert [r["finished"] for r in done["rounds"]] == [4, 4], [r["failures"] for r in done["rounds"]]
        final = done["version"]
        assert client.versions("fashion_mnist")["latest"] == final

        client.adopt(ids[5], final)
        adopted = client.evaluate(ids[5], dataset=DATASET, limit=2000)
        assert adopted["accuracy"] == pytest.approx(done["rounds"][-1]["global_accuracy"])

        with pytest.raises(DatasetNotFound):
            client.assign("no-such-data", prefix="fl-")
        with pytest.raises(InvalidRequest, match=r"class \d needs 7000 examples but has 6000"):
            client.assign(
                DATASET,
                prefix="fl-",
                scheme="interest",
                classes_per_device=1,
                interest_share=1.0,
                train_per_device=7000,
                test_per_device=10,
            )
        grey = np.zeros((20, 28, 28), np.float32)
        labels = np.eye(10, dtype=np.float32)[np.arange(20) % 10]
        client.add_dataset(
            "wrong-inputs", **{"train/pixels": grey, "train/y": labels, "test/pixels": grey, "test/y": labels}
        )
        with pytest.raises(InvalidTensor, match="does not match signature 'train'"):
            client.assign("wrong-inputs", prefix="fl-", train_per_device=5, test_per_device=5)
        with pytest.raises(InvalidRequest):
            client.start_rounds(prefix="nobody-")


def test_a_long_run_is_cancelled_mid_round(server: ServerProcess) -> None:
    with FleetClient(server.url, timeout=120) as client:
        make_devices(client, "slow", 2)
        client.assign(DATASET, prefix="slow-", train_per_device=600, test_per_device=20)
        run = client.start_rounds(prefix="slow-", rounds=100, epochs=500, batch_size=4)
        deadline = time.monotonic() + 30
        while client.round_run(run["id"])["state"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.05)
        client.cancel_rounds(run["id"])
        ended = client.wait_rounds(run["id"], timeout=60)
        assert ended["state"] == "cancelled" and ended["rounds"] == []
        with pytest.raises(RoundEnded):
            client.cancel_rounds(run["id"])


def test_a_disjoint_partition_deals_the_dataset_among_the_sorted_devices(server: ServerProcess) -> None:
    """Every train example on one device (sizes add up, each device its own index of the sorted IDs),
    however the devices are spread over processes; the statistics and the heatmap without assigning."""
    with FleetClient(server.url, timeout=120) as client:
        ids = make_devices(client, "niid", 12)
        dealt = client.assign(DATASET, prefix="niid-", scheme="label_quantity", labels_per_device=2, seed=3)
        assert dealt["devices"] == 12 and dealt["train"]["distinct_examples"] == 60_000
        assert dealt["train"]["labels_on_no_device"] == []
        views = {i: client.assignment(i) for i in ids}
        order = sorted(ids)
        for device_id, view in views.items():
            assert view is not None and view["parameters"]["parties"] == 12
            assert view["parameters"]["device"] == order.index(device_id)
        assert sum(v["train_size"] for v in views.values() if v) == 60_000
        preview = client.partition(DATASET, "label_quantity", 12, labels_per_device=2, seed=3)
        assert preview["train"] == dealt["train"]
        assert client.partition_png(DATASET, "label_quantity", 12, labels_per_device=2)[:4] == b"\x89PNG"
        with pytest.raises(InvalidRequest, match="labels_per_device must be between 1 and the 10"):
            client.assign(DATASET, prefix="niid-", scheme="label_quantity", labels_per_device=11)


def test_a_private_secure_study_reports_epsilon_and_refuses_what_it_cannot_serve(
    server: ServerProcess,
) -> None:
    """DP-FedAvg with each device's share of the noise under SecAgg+, over a real server: epsilon per
    round, the protocol's survivors and bytes, and the budget and the cohort checked at the start."""
    with FleetClient(server.url, timeout=300) as client:
        make_devices(client, "dp", 6)
        client.assign(DATASET, prefix="dp-", scheme="iid", seed=2, train_per_device=100, test_per_device=20)
        private = {
            "prefix": "dp-",
            "participants": 5,
            "batch_size": 25,
            "seed": 3,
            "selection": "uniform",
            "privacy": {"mode": "distributed", "noise_multiplier": 1.0, "clip": 0.5, "target_epsilon": 40},
            "secure_aggregation": {"threshold": 2, "neighbors": 2},
        }
        run = client.start_rounds(rounds=2, **private)
        done = client.wait_rounds(run["id"], timeout=300)
        assert done["state"] == "succeeded", done
        privacy = [r["privacy"] for r in done["rounds"]]
        assert 0 < privacy[0]["epsilon"] < privacy[1]["epsilon"] <= 40
        assert all(p["secure"]["survivors"] == 5 and p["secure"]["upload_bytes"] > 0 for p in privacy)
        with pytest.raises(InvalidPrivacy, match="target_epsilon 40 would be exceeded"):
            client.start_rounds(rounds=200, **private)
        with pytest.raises(InvalidPrivacy, match="threshold"):
            client.start_rounds(**{**private, "secure_aggregation": {"threshold": 6}})
