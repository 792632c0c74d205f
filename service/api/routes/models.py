"""Models: list, show, add (when uploads are allowed), delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from service.api.deps import AdminDep, FederationDep, FleetDep, ModelName, PrincipalDep, in_thread
from service.api.errors import documented
from service.errors import Forbidden

router = APIRouter(prefix="/v1/models", tags=["models"])
ERRORS = documented(e400="invalid model name", e404="unknown model")
UPLOAD_OFF = (
    "model upload is off: a model is a program that runs inside the service. An operator who trusts "
    "the people holding admin keys can turn it on with FLEET_ALLOW_MODEL_UPLOAD=true"
)


@router.get("", summary="The models this service knows, with their signatures")
async def list_models(
    fleet: FleetDep, principal: PrincipalDep, request: Request
) -> dict[str, list[dict[str, object]]]:
    models = await in_thread(request, lambda: [fleet.models.get(n).describe() for n in fleet.models.names()])
    return {"models": models}


@router.get("/{model}", summary="One model: every signature's inputs and outputs", responses=ERRORS)
async def get_model(
    model: ModelName, fleet: FleetDep, principal: PrincipalDep, request: Request
) -> dict[str, object]:
    return (await in_thread(request, fleet.models.get, model)).describe()


@router.put(
    "/{model}",
    status_code=status.HTTP_201_CREATED,
    summary="Add a model: the body is the .tflite file (admin; off unless FLEET_ALLOW_MODEL_UPLOAD)",
    responses=documented(
        e400="invalid model name",
        e403="uploads are off, or the key is not an admin's",
        e409="the name is taken",
        e413="body too large",
        e422="not a usable model, or one that runs operations the service does not allow",
        e507="the stored models would pass FLEET_MAX_MODEL_BYTES",
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def put_model(
    model: ModelName, fleet: FleetDep, admin: AdminDep, request: Request
) -> dict[str, object]:
    if not request.app.state.settings.allow_model_upload:
        raise Forbidden(UPLOAD_OFF)
    content = await request.body()
    return (await in_thread(request, fleet.models.add, model, content)).describe()


@router.delete(
    "/{model}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an added model (admin; 409 while devices use it)",
    responses=documented(
        e400="invalid model name",
        e403="needs an admin key",
        e404="unknown model",
        e409="devices use it, or it is the embedded default",
    ),
)
async def delete_model(
    model: ModelName,
    fleet: FleetDep,
    federation: FederationDep,
    admin: AdminDep,
    request: Request,
    dry_run: Annotated[bool, Query(description="only check that it could be deleted now")] = False,
) -> Response:
    await in_thread(request, fleet.delete_model, model, dry_run)
    if not dry_run:
        await in_thread(request, federation.versions.delete_model, model)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
