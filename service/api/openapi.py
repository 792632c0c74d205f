"""The OpenAPI document: generated from the app, error responses filled in, rendered stably.

``fleet openapi`` writes what ``render`` returns to ``openapi/openapi.json``, and a test fails when the
committed file drifts from the app. Building the document needs neither TensorFlow nor a data dir:
``create_app`` does no work until its lifespan starts.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.api.auth import OPEN_PATHS
from service.api.errors import document_errors

COMMAND = "fleet openapi --output openapi/openapi.json"
"""What regenerates the committed document (``.venv/bin/fleet openapi > openapi/openapi.json`` too)."""


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and so ``/openapi.json`` and ``/docs``) return the completed document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = document_errors(document_security(schema))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "an API key from FLEET_API_KEYS_FILE ('KEY admin' or 'KEY devices PREFIX'). With no "
    "keys configured (protected mode), loopback clients need none and others are refused (403).",
}


def document_security(openapi: dict[str, Any]) -> dict[str, Any]:
    """Every operation needs a bearer key, but the health probes; 401 and 403 are documented.

    Runs before ``document_errors``, which gives those responses their body schema.
    """
    openapi.setdefault("components", {}).setdefault("securitySchemes", {})["apiKey"] = SECURITY_SCHEME
    openapi["security"] = [{"apiKey": []}]
    for path, operations in openapi.get("paths", {}).items():
        for operation in operations.values():
            if path in OPEN_PATHS:
                operation["security"] = []
                continue
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", {"description": "no API key, or an unknown one"})
            responses.setdefault("403", {"description": "protected mode (no keys) refuses this client"})
    return openapi


def render(app: FastAPI) -> str:
    """The document as committed: sorted keys, two-space indents, a final newline."""
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
