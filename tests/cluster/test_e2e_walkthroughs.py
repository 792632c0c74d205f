"""The end-to-end walkthroughs of ``tests/e2e``, unchanged, against the sharded fleet.

The service joins the test cluster with ``--ray-address`` (2 shards, each on a node of its own) and
runs in protected mode: the walkthroughs' client is on loopback, and the shards take the front's
calls by its token. The functions are imported, so pytest runs them here with this module's
``server`` and ``client``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.client import FleetClient
from service.server_process import ServerProcess
from tests.cluster.conftest import RayCluster, sharded_server
from tests.e2e.conftest import UPLOADS_ON
from tests.e2e.test_federated import test_a_long_run_is_cancelled_mid_round, test_federated_study
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
    "test_a_long_run_is_cancelled_mid_round",
    "test_federated_study",
    "test_concurrent_train_calls_on_one_device_all_count",
    "test_devices_trained_differently_stay_independent",
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
