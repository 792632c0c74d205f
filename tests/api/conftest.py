from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.config import Settings
from tests.local import local_client

MAX_BODY = 4 * 1024 * 1024


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with local_client(
        create_app(Settings(data_dir=tmp_path / "data", max_body_bytes=MAX_BODY))
    ) as test_client:
        yield test_client
