"""A server that wants keys, for the pages' tests (the browser fixtures come from ``tests.browser``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.server_process import ServerProcess
from tests.browser import ADMIN_KEY


def with_keys(root: Path, keys: str) -> ServerProcess:
    """A real ``fleet serve`` under ``root`` whose keys file holds ``keys`` (``KEY ROLE [PREFIX]`` lines)."""
    path = root / "keys"
    path.write_text(keys)
    return ServerProcess(root / "data", env={"FLEET_API_KEYS_FILE": str(path)})


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real ``fleet serve`` that wants keys: ``ADMIN_KEY`` is its one (admin) key."""
    with with_keys(tmp_path_factory.mktemp("keyed"), f"{ADMIN_KEY} admin\n") as running:
        yield running
