"""The committed OpenAPI document is the app's, and it documents every body, response and error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.api import create_app
from service.api.openapi import COMMAND, render
from service.config import Settings

COMMITTED = Path(__file__).parents[2] / "openapi" / "openapi.json"
TENSOR_ROUTES = {
    "/v1/devices/{device_id}/train": "application/x-npz",
    "/v1/devices/{device_id}/infer": "application/x-npz",
    "/v1/devices/{device_id}/signatures/{signature}": "application/x-npz",
    "/v1/devices/{device_id}/samples": "application/x-npz",
    "/v2/models/{device_id}/infer": "application/octet-stream",
}
READINESS = {("/readyz", "503"), ("/v2/health/ready", "503")}
"""Not-ready answers: a readiness report, not an error body."""
NO_BODY = {"reset", "restart", "save", "restore", "cancel", "publish"}
"""POST routes that take no body: the last part of their path."""


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return create_app(Settings(data_dir=tmp_path_factory.mktemp("unused") / "data")).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in document["paths"].items() for method, op in ops.items()]


def test_committed_document_is_up_to_date(tmp_path: Path) -> None:
    fresh = render(create_app(Settings(data_dir=tmp_path / "data")))
    committed = COMMITTED.read_text(encoding="utf-8") if COMMITTED.exists() else ""
    assert committed == fresh, f"openapi/openapi.json is out of date with the app: run `{COMMAND}`"


def test_the_command_prints_it_without_tensorflow_or_a_data_dir(tmp_path: Path) -> None:
    script = (
        "import sys; from service.cli import main; main(['openapi']); "
        "sys.exit('tensorflow' in sys.modules and 'TensorFlow was imported')"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == render(create_app(Settings(data_dir=tmp_path / "data")))
    assert list(tmp_path.iterdir()) == []
    output = tmp_path / "out" / "openapi.json"
    subprocess.run(
        [sys.executable, "-m", "service.cli", "openapi", "--output", str(output)], check=True, timeout=120
    )
    assert output.read_text(encoding="utf-8") == done.stdout


def test_every_route_documents_success_and_errors_in_its_shape(document: dict[str, Any]) -> None:
    for path, method, op in operations(document):
        responses = op["responses"]
        assert any(status.startswith("2") for status in responses), (method, path)
        shape = "OIPError" if path.startswith("/v2") else "Error"
        errors = {s: r for s, r in responses.items() if s == "default" or int(s) >= 400}
        assert "default" in errors, (method, path)
        for status, response in errors.items():
            if (path, status) in READINESS:
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{shape}"}, (method, path, status)
    schemas = document["components"]["schemas"]
    assert schemas["Error"]["properties"]["error"]["required"] == ["code", "message"]
    assert schemas["OIPError"]["properties"]["error"]["type"] == "string"
    assert "HTTPValidationError" not in schemas


def test_every_body_is_documented(document: dict[str, Any]) -> None:
    for path, method, op in operations(document):
        if method in ("post", "put") and path.rsplit("/", 1)[-1] not in NO_BODY:
            assert op.get("requestBody", {}).get("content"), (method, path)
    for path, binary in TENSOR_ROUTES.items():
        content = document["paths"][path]["post"]["requestBody"]["content"]
        assert set(content) == {"application/json", binary}, path
    for path in ("/v1/devices/{device_id}/save", "/v1/devices/{device_id}/restore"):
        assert "requestBody" not in document["paths"][path]["post"], f"{path} takes no body"
