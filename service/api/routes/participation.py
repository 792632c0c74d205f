"""A device's part in federated learning: evaluate a version on its data, adopt one, train as a round's
participant for another shard, and its assignment."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from service.api.auth import tenant
from service.api.codecs import JSON, NPZ, decode_npz, json_object, media_type
from service.api.deps import (
    DeviceDep,
    FederationDep,
    PrincipalDep,
    device_model,
    in_thread,
)
from service.api.errors import documented, validated
from service.api.routes.round_privacy import PrivatizeBody
from service.errors import InvalidTensor
from service.federated.local import INFER_SIGNATURE, LocalTraining
from service.federated.participants import Participation
from service.federated.task import ClientTask
from service.federated.wire import encode_update

router = APIRouter(prefix="/v1/devices/{device_id}", tags=["federated"])

DEVICE_ERRORS = documented(e400="invalid device ID", e404="unknown device")


class EvaluateOn(BaseModel):
    dataset: str | None = Field(
        None, description="a dataset's split; default: the device's own assigned data"
    )
    split: str = Field("test", description="with a dataset: its split; else the device's train or test data")
    limit: int | None = Field(None, ge=1, le=10_000_000, description="the first N samples only")
    version: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        description="evaluate this version of the device's model instead of its current weights",
    )


class Adopt(BaseModel):
    version: int | None = Field(None, ge=0, le=2**63 - 1, description="default: the model's latest version")
    save: bool = Field(False, description="also save the adopted weights as the device's checkpoint")


@router.post(
    "/evaluate",
    summary="Accuracy of the device's weights on its local test data, a dataset split, or a given batch",
    responses=documented(
        e400="bad split or limit, or a dataset without labels",
        e404="unknown device, dataset or version",
        e409="the device has no assigned data",
        e422="samples that do not match the infer signature",
    ),
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {
                JSON: {"schema": EvaluateOn.model_json_schema()},
                NPZ: {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": "numpy.savez of the infer inputs and a label array (?label=)",
                    }
                },
            },
        }
    },
)
async def evaluate(
    device: DeviceDep,
    federation: FederationDep,
    principal: PrincipalDep,
    request: Request,
    label: Annotated[str, Query(description="with a batch in the body: the label array's name")] = "y",
    version: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="with a batch: evaluate this model version")
    ] = None,
) -> dict[str, object]:
    """A JSON body says where (``EvaluateOn``); an npz body is the batch itself: the ``infer``
    inputs and a label array (integer classes or one-hot rows). Nothing is downloaded."""
    model = await device_model(request, device)
    if media_type(request.headers.get("content-type")) == NPZ:
        arrays = await _batch(request, label)
        signature = model.signature(INFER_SIGNATURE)
        samples = {
            **signature.check({s.name: arrays[s.name] for s in signature.inputs if s.name in arrays}),
            label: arrays[label],
        }
        on: dict[str, object] = {"batch": len(arrays[label])}
    else:
        body = validated(EvaluateOn, json_object(await request.body()))
        version = body.version

        def gather() -> tuple[Any, str]:
            return federation.samples_of(device, body.dataset, body.split, body.limit)

        samples, label = await in_thread(request, gather)
        on = (
            {"dataset": body.dataset, "split": body.split, "limit": body.limit}
            if body.dataset
            else {"assigned": body.split, "limit": body.limit}
        )
    result = await in_thread(request, federation.evaluate, device, samples, label, version, tenant(principal))
    return {"device": device.id, "model": model.name, "version": version, "on": on, **result.describe()}


async def _batch(request: Request, label: str) -> dict[str, np.ndarray]:
    settings = request.app.state.settings
    arrays = await in_thread(
        request, decode_npz, await request.body(), settings.max_body_bytes, settings.max_npz_members
    )
    if label not in arrays:
        raise InvalidTensor(
            f"the batch has no label array '{label}' (it has {sorted(arrays)}); name it with ?label="
        )
    rows = {name: len(a) if a.ndim else None for name, a in arrays.items()}
    if len(set(rows.values())) != 1 or None in rows.values():
        raise InvalidTensor(f"the batch's arrays must have the same number of rows; they have {rows}")
    return arrays


@router.post(
    "/adopt",
    summary="Replace the device's weights with a version of its model's global weights",
    responses=documented(
        e404="unknown device or version", e409="the device runs a job", e507="no space for the checkpoint"
    ),
)
async def adopt(
    device: DeviceDep, federation: FederationDep, body: Adopt, principal: PrincipalDep, request: Request
) -> dict[str, object]:
    """The weights are unsaved unless ``save``: the device's checkpoint keeps its meaning."""
    return await in_thread(request, federation.adopt, device, body.version, body.save, tenant(principal))


class Participate(BaseModel):
    model: str | None = Field(None, description="the model the round trains; default: the device's")
    version: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        description="adopt this global version first and send back the trained weights; "
        "none: train from the device's own weights and send none",
    )
    epochs: int = Field(1, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1, le=100_000)
    shuffle: bool = True
    seed: list[Annotated[int, Field(ge=0, le=2**64 - 1)]] = Field(
        default_factory=lambda: [0],
        min_length=1,
        max_length=8,
        description="entropy of the participant's shuffle, each 0 to 2**64-1 (a round sends its seed, the "
        "round number and a 64-bit key of the device)",
    )
    local_accuracy: bool = Field(True, description="evaluate the trained weights on the local test data")
    device_weights: Literal["trained", "checkpoint", "saved"] = "trained"
    signature: Literal["train", "train_prox", "train_scaffold"] = Field(
        "train",
        description="what each local step runs: train; train_prox (FedProx: fed the version's weights and "
        "proximal_mu); train_scaffold (SCAFFOLD: corrected by control and the device's own control "
        "variate, whose change the answer carries as c/<tensor>)",
    )
    proximal_mu: float = Field(0.0, ge=0, le=1000, allow_inf_nan=False, description="train_prox's mu")
    control: str | None = Field(
        None,
        max_length=64,
        pattern=r"^[0-9a-f]{12}-[a-z]{1,16}-[0-9]{1,6}$",
        description="train_scaffold: the server control variate a round published",
    )
    privatize: PrivatizeBody | None = Field(
        None,
        description="differential privacy or secure aggregation: clip, noise and mask the update; the answer "
        "then carries only that vector, as p",
    )


@router.post(
    "/participate",
    summary="One participant's part of a federated round: adopt a version, train on the assigned data, "
    "send the update",
    response_class=Response,
    responses={
        **documented(e404="unknown device or version", e409="no assigned data, or the device runs a job"),
        200: {
            "description": "npz: the trained weights as w/<tensor> (with privatize: only the privatized "
            "vector, as p), SCAFFOLD's control change as c/<tensor>, and meta (JSON: samples, steps, "
            "mean_loss, local_accuracy, train_seconds)",
            "content": {NPZ: {"schema": {"type": "string", "format": "binary"}}},
        },
    },
)
async def participate(
    device: DeviceDep, federation: FederationDep, body: Participate, principal: PrincipalDep, request: Request
) -> Response:
    """What a round's server asks of each participant; an outside aggregator may ask it too."""
    model = body.model or (await device_model(request, device)).name
    if body.version is not None:
        await in_thread(request, federation.resolve_version, model, body.version, tenant(principal))
    asked = Participation(
        model,
        body.version,
        LocalTraining(body.epochs, body.batch_size, body.shuffle),
        tuple(body.seed),
        body.local_accuracy,
        body.device_weights,
        task=ClientTask(body.signature, body.proximal_mu, body.control),
        privatize=body.privatize.privatize() if body.privatize is not None else None,
    )
    update = await in_thread(request, federation.participate, device.id, asked)
    return Response(encode_update(update), media_type=NPZ)


@router.get(
    "/assignment",
    summary="The device's assigned data: dataset, scheme, sizes, label mix",
    responses=DEVICE_ERRORS,
)
async def assignment(device: DeviceDep, federation: FederationDep, request: Request) -> dict[str, object]:
    return {"device": device.id, "assignment": await in_thread(request, federation.assignment, device)}
