"""A real ``fleet serve`` process on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.client import FleetClient
from service.server_process import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("server") / "data") as running:
        yield running


@pytest.fixture
def client(server: ServerProcess) -> Iterator[FleetClient]:
    with FleetClient(server.url) as fleet_client:
        yield fleet_client
