"""The end-to-end walkthroughs of ``tests/e2e``, unchanged, against the sharded fleet.

The service joins the test cluster with ``--ray-address`` (2 shards, each on a node of its own) and
runs in protected mode: the walkthroughs' client is on loopback, and the shards take the front's
calls by its token. The functions are imported, so pytest runs them here with this module's
``server`` and ``client``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from service.client import FleetClient
from service.federated.strategies import NAMES
from service.model.build import BuildResult
from service.server_process import ServerProcess
from service.wire.view import owner_slot
from tests.cluster.conftest import RayCluster, sharded_server
from tests.e2e.conftest import UPLOADS_ON
from tests.e2e.test_federated import (
    test_a_disjoint_partition_deals_the_dataset_among_the_sorted_devices,
    test_a_long_run_is_cancelled_mid_round,
    test_federated_study,
)
from tests.e2e.test_second_model import test_second_model_through_the_generic_route
from tests.e2e.test_walkthrough import (
    test_concurrent_train_calls_on_one_device_all_count,
    test_devices_trained_differently_stay_independent,
    test_models_describe_signatures_from_the_interpreter,
    test_reset_gives_back_the_baseline,
    test_restart_alone_restores_the_checkpoint,
    test_walkthrough,
)

__all__ = [
    "test_a_disjoint_partition_deals_the_dataset_among_the_sorted_devices",
    "test_a_long_run_is_cancelled_mid_round",
    "test_concurrent_train_calls_on_one_device_all_count",
    "test_devices_trained_differently_stay_independent",
    "test_federated_study",
    "test_models_describe_signatures_from_the_interpreter",
    "test_reset_gives_back_the_baseline",
    "test_restart_alone_restores_the_checkpoint",
    "test_second_model_through_the_generic_route",
    "test_walkthrough",
]


@pytest.fixture(scope="module")
def server(ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("walkthroughs") / "data"
    with sharded_server(data, ray_cluster, 2, env=UPLOADS_ON) as running:
        with FleetClient(running.url) as client:
            view = client.shards()
        assert view["sharded"] and len({s["node_id"] for s in view["shards"]}) == 2
        yield running


@pytest.fixture
def client(server: ServerProcess) -> Iterator[FleetClient]:
    with FleetClient(server.url) as fleet_client:
        yield fleet_client


def study(url: str, profiled: bool = False) -> list[list[Any]]:
    """A seeded federated study's per-round metrics (devices of two shards when sharded); ``profiled``:
    on phones of the ``phones`` mix (offline ones, dropouts), with a deadline that leaves some late."""
    with FleetClient(url, timeout=300) as fleet:
        ids = [f"twin-{i}" for i in range(6)]
        profile: dict[str, Any] = {"profile_mix": "phones", "profile_seed": 5} if profiled else {}
        fleet.create_devices(ids=ids, **profile)
        fleet.assign(
            "fashion-mnist",
            prefix="twin-",
            scheme="shards",
            classes_per_device=2,
            train_per_device=120,
            test_per_device=30,
            seed=3,
        )
        run = fleet.start_rounds(
            prefix="twin-",
            rounds=3 if profiled else 2,
            participants=4,
            batch_size=20,
            seed=8,
            aggregation="fedadam",
            start_version=0,
            evaluate_on={"dataset": "fashion-mnist", "limit": 1000},
            **({"deadline": 0.5, "stragglers": "stale"} if profiled else {}),
        )
        done = fleet.wait_rounds(run["id"], timeout=300)
        assert done["state"] == "succeeded", done
        keys = ["participants", "finished", "samples", "mean_loss", "global_accuracy", "mean_local_accuracy"]
        if profiled:
            keys += ["offline", "dropped", "straggled", "stragglers", "stale_added", "simulated_seconds"]
        return [[r[k] for k in keys] for r in done["rounds"]]


def test_a_sharded_study_gives_what_one_process_gives(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    sharded = study(server.url)
    slots = [{owner_slot(str(i), 2) for i in participants} for participants, *_ in sharded]
    assert {0, 1} in slots, slots  # a round had participants of both shards
    with ServerProcess(tmp_path_factory.mktemp("one") / "data") as alone:
        single = study(alone.url)
    assert sharded == single


def test_a_sharded_study_on_profiled_phones_gives_what_one_process_gives(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Profiles drawn per device on each shard, read by the coordinator from the shared records."""
    with FleetClient(server.url) as fleet:
        fleet.delete_devices([d["id"] for d in fleet.devices() if d["id"].startswith("twin-")])
    sharded = study(server.url, profiled=True)
    with ServerProcess(tmp_path_factory.mktemp("one-profiled") / "data") as alone:
        single = study(alone.url, profiled=True)
    assert sharded == single
    late_or_away = sum(int(r[6]) + int(r[7]) + int(r[8]) for r in sharded)  # offline, dropped, straggled
    assert late_or_away > 0, sharded  # the profiles shaped the rounds


STRATEGIES = [name for name in ("fedprox", "scaffold", "fednova", "krum", "fedbuff") if name in NAMES]
STUDIES = [*STRATEGIES, "private"]
OPTIONS: dict[str, dict[str, Any]] = {
    "fedbuff": {"options": {"buffer_size": 3, "concurrency": 3}},
    "private": {
        "aggregation": "fedavg",
        "selection": "uniform",
        "privacy": {"mode": "distributed", "noise_multiplier": 0.5, "clip": 1.0},
        "secure_aggregation": {"threshold": 3, "neighbors": 3},
    },
}
"""Strategies whose participants do more than FedAvg's (extra inputs, control variates kept per device),
whose server needs every update (Krum) or runs asynchronously (FedBuff), and FedAvg with distributed DP
under secure aggregation (each participant clips, noises and masks on its own shard), sharded against one
process."""


def strategy_study(url: str, model: bytes) -> dict[str, list[list[Any]]]:
    """Per-round metrics of a seeded run of each of ``STRATEGIES`` on a model with their signatures."""
    keys = ["participants", "finished", "samples", "mean_loss", "global_accuracy"]
    studies: dict[str, list[list[Any]]] = {}
    with FleetClient(url, timeout=300) as fleet:
        fleet.add_model("strategic", model)
        fleet.create_devices(ids=[f"strat-{i}" for i in range(6)], model="strategic")
        fleet.assign(
            "fashion-mnist",
            prefix="strat-",
            scheme="dirichlet",
            alpha=0.3,
            train_per_device=80,
            test_per_device=20,
            seed=4,
        )
        for strategy in STUDIES:
            body: dict[str, Any] = {"aggregation": strategy, **OPTIONS.get(strategy, {})}
            run = fleet.start_rounds(
                prefix="strat-",
                rounds=2,
                participants=5,
                batch_size=20,
                seed=9,
                start_version=0,
                evaluate_on={"dataset": "fashion-mnist", "limit": 500},
                **body,
            )
            done = fleet.wait_rounds(run["id"], timeout=300)
            assert done["state"] == "succeeded", done
            studies[strategy] = [[r[k] for k in keys] for r in done["rounds"]]
    return studies


def test_sharded_strategies_give_what_one_process_gives(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory, tiny_build: BuildResult
) -> None:
    sharded = strategy_study(server.url, tiny_build.model)
    with ServerProcess(tmp_path_factory.mktemp("one-strategies") / "data", env=UPLOADS_ON) as alone:
        single = strategy_study(alone.url, tiny_build.model)
    assert sharded == single and set(sharded) == set(STUDIES)
