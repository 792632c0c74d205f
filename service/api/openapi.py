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
            app.openapi_schema = document_errors(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def render(app: FastAPI) -> str:
    """The document as committed: sorted keys, two-space indents, a final newline."""
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
