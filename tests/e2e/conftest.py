"""A real ``fleet serve`` process on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.client import FleetClient
from service.server_process import ServerProcess

UPLOADS_ON = {"FLEET_ALLOW_MODEL_UPLOAD": "true"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # The walkthroughs add a second model: uploads are off unless the operator allows them.
    with ServerProcess(tmp_path_factory.mktemp("server") / "data", env=UPLOADS_ON) as running:
        yield running


@pytest.fixture
def client(server: ServerProcess) -> Iterator[FleetClient]:
    with FleetClient(server.url) as fleet_client:
        yield fleet_client
