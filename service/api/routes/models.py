"""Models: list, show, add."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from service.api.deps import FleetDep, ModelName, in_thread
from service.api.errors import documented

router = APIRouter(prefix="/v1/models", tags=["models"])
ERRORS = documented(
    e400="invalid model name",
    e404="unknown model",
    e409="the name is taken",
    e413="body too large",
    e422="not a usable model",
)


@router.get("", summary="The models this service knows, with their signatures")
async def list_models(fleet: FleetDep, request: Request) -> dict[str, list[dict[str, object]]]:
    models = await in_thread(request, lambda: [fleet.models.get(n).describe() for n in fleet.models.names()])
    return {"models": models}


@router.get("/{model}", summary="One model: every signature's inputs and outputs", responses=ERRORS)
async def get_model(model: ModelName, fleet: FleetDep, request: Request) -> dict[str, object]:
    return (await in_thread(request, fleet.models.get, model)).describe()


@router.put(
    "/{model}",
    status_code=status.HTTP_201_CREATED,
    summary="Add a model: the body is the .tflite file",
    responses=ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def put_model(model: ModelName, fleet: FleetDep, request: Request) -> dict[str, object]:
    content = await request.body()
    return (await in_thread(request, fleet.models.add, model, content)).describe()
