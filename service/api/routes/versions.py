"""A model's global weights by version: list, get, publish."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.api.auth import tenant
from service.api.deps import (
    FederationDep,
    ModelName,
    PrincipalDep,
    in_thread,
)
from service.api.errors import documented

router = APIRouter(prefix="/v1/models/{model}/versions", tags=["federated"])


@router.get("", summary="The model's global weights by version (version 0: its own)")
async def list_versions(
    model: ModelName, federation: FederationDep, principal: PrincipalDep, request: Request
) -> dict[str, object]:
    def listing() -> dict[str, object]:
        federation.fleet.models.get(model)
        found = federation.versions.list(model, tenant(principal))
        return {"model": model, "latest": found[-1].number, "versions": [v.describe() for v in found]}

    return await in_thread(request, listing)


@router.get(
    "/{number}",
    summary="One version of the model's global weights",
    responses=documented(e404="unknown model or version"),
)
async def get_version(
    model: ModelName, number: int, federation: FederationDep, principal: PrincipalDep, request: Request
) -> dict[str, object]:
    def one() -> dict[str, object]:
        federation.fleet.models.get(model)
        return federation.versions.get(model, number, tenant(principal)).describe()

    return await in_thread(request, one)


@router.post(
    "/{number}/publish",
    summary="Make a version visible to every key (admin): devices keys see only their own and published ones",
    responses=documented(e403="not an admin key", e404="unknown model or version"),
)
async def publish_version(
    model: ModelName, number: int, federation: FederationDep, principal: PrincipalDep, request: Request
) -> dict[str, object]:
    principal.require_admin("publishing a model version")

    def publish() -> dict[str, object]:
        federation.fleet.models.get(model)
        return federation.versions.publish(model, number).describe()

    return await in_thread(request, publish)
