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
from service.storage import ID_PATTERN

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
            app.openapi_schema = document_links(
                document_parameters(document_errors(document_security(schema)))
            )
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


ID_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "pattern": r"^[A-Za-z0-9](?:\.?[A-Za-z0-9_-])*\.?$",
    "description": f"{ID_PATTERN.pattern} without '..'",
}
"""``check_id`` as a schema: 1-128 letters, digits, ``_``, ``.`` or ``-``, a letter or digit first, and
no ``..`` (each dot followed by another character or the end)."""
SHORT_ID_SCHEMA = {"type": "string", "pattern": "^[0-9a-f]{12}$", "description": "12 hex digits"}
"""Job and round run IDs: the first 12 hex digits of a UUID; anything else is unknown (404)."""
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "device_id": ID_SCHEMA,
    "model": ID_SCHEMA,
    "name": ID_SCHEMA,  # datasets and profile mixes
    "job_id": SHORT_ID_SCHEMA,
    "run_id": SHORT_ID_SCHEMA,
}


def document_parameters(openapi: dict[str, Any]) -> dict[str, Any]:
    """Give path parameters the pattern and length their checks enforce (FastAPI documents a bare string)."""
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                extra = PATH_PARAMETERS.get(parameter["name"]) if parameter["in"] == "path" else None
                if extra is not None:
                    parameter["schema"] = {**parameter.get("schema", {}), **extra}
    return openapi


DEVICE_ROUTES = ("/v1/devices/{device_id}", "/v2/models/{device_id}")
LINKS: tuple[tuple[str, str, str, tuple[str, ...], dict[str, str]], ...] = (
    ("post", "/v1/devices", "201", DEVICE_ROUTES, {"device_id": "$response.body#/id"}),
    ("post", "/v1/devices/bulk-create", "201", DEVICE_ROUTES, {"device_id": "$response.body#/ids/0"}),
    ("put", "/v1/datasets/{name}", "201", ("/v1/datasets/{name}",), {"name": "$request.path.name"}),
    ("put", "/v1/models/{model}", "201", ("/v1/models/{model}",), {"model": "$request.path.model"}),
    ("post", "/v1/rounds", "202", ("/v1/rounds/{run_id}",), {"run_id": "$response.body#/id"}),
    (
        "post",
        "/v1/devices/{device_id}/jobs",
        "202",
        ("/v1/devices/{device_id}/jobs/{job_id}",),
        {"device_id": "$request.path.device_id", "job_id": "$response.body#/id"},
    ),
)
"""Operations that create something, the answer that says so, the routes that use it, and where each
of their path parameters comes from (the created thing's ID in the answer, or the request's path)."""


def document_links(openapi: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI ``links`` from each creating operation to the operations that use what it created, so a
    stateful fuzzer (and a reader) goes from ``POST /v1/devices`` to the device's routes."""
    paths = openapi.get("paths", {})
    for method, path, status, targets, sources in LINKS:
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        links: dict[str, Any] = {}
        for target, operations in paths.items():
            if not target.startswith(targets):
                continue
            for operation in operations.values():
                names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
                if names <= set(sources) and "operationId" in operation:
                    links[operation["operationId"]] = {
                        "operationId": operation["operationId"],
                        "parameters": {name: sources[name] for name in sorted(names)},
                    }
        response["links"] = dict(sorted(links.items()))
    return openapi
