"""A server that wants keys, for the pages' tests (the browser fixtures come from ``tests.browser``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.server_process import ServerProcess
from tests.browser import ADMIN_KEY


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real ``fleet serve`` that wants keys: ``ADMIN_KEY`` is its one (admin) key."""
    root = tmp_path_factory.mktemp("keyed")
    keys = root / "keys"
    keys.write_text(f"{ADMIN_KEY} admin\n")
    with ServerProcess(root / "data", env={"FLEET_API_KEYS_FILE": str(keys)}) as running:
        yield running
