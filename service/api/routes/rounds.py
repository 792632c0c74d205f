"""Federated rounds, model versions, and what a device does with them: evaluate, adopt, its assignment."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, Field

from service.api.auth import Principal
from service.api.codecs import JSON, NPZ, decode_npz, json_object, media_type
from service.api.deps import (
    DeviceDep,
    FederationDep,
    FleetDep,
    ModelName,
    PrincipalDep,
    QuotasDep,
    device_model,
    in_thread,
)
from service.api.errors import documented, validated
from service.api.routes.datasets import DeviceSelection
from service.errors import InvalidRequest, InvalidTensor
from service.federated.aggregation import MAX_SERVER_LEARNING_RATE, MAX_TAU, MIN_TAU, ServerOptimizer
from service.federated.federation import Selection
from service.federated.local import INFER_SIGNATURE, LocalTraining
from service.federated.participants import Participation
from service.federated.spec import (
    MAX_DEADLINE,
    MAX_ROUNDS,
    MAX_START_TIME,
    MIN_DEADLINE,
    Evaluation,
    RoundSpec,
)
from service.federated.wire import encode_update
from service.fleet.models import DEFAULT_MODEL

devices = APIRouter(prefix="/v1/devices/{device_id}", tags=["federated"])
versions = APIRouter(prefix="/v1/models/{model}/versions", tags=["federated"])
rounds = APIRouter(prefix="/v1/rounds", tags=["federated"])
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


@devices.post(
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


@devices.post(
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


@devices.post(
    "/participate",
    summary="One participant's part of a federated round: adopt a version, train on the assigned data, "
    "send the update",
    response_class=Response,
    responses={
        **documented(e404="unknown device or version", e409="no assigned data, or the device runs a job"),
        200: {
            "description": "npz: the trained weights as w/<tensor>, and meta (JSON: samples, steps, "
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
    )
    update = await in_thread(request, federation.participate, device.id, asked)
    return Response(encode_update(update), media_type=NPZ)


@devices.get(
    "/assignment",
    summary="The device's assigned data: dataset, scheme, sizes, label mix",
    responses=DEVICE_ERRORS,
)
async def assignment(device: DeviceDep, federation: FederationDep, request: Request) -> dict[str, object]:
    return {"device": device.id, "assignment": await in_thread(request, federation.assignment, device)}


@versions.get("", summary="The model's global weights by version (version 0: its own)")
async def list_versions(
    model: ModelName, federation: FederationDep, principal: PrincipalDep, request: Request
) -> dict[str, object]:
    def listing() -> dict[str, object]:
        federation.fleet.models.get(model)
        found = federation.versions.list(model, tenant(principal))
        return {"model": model, "latest": found[-1].number, "versions": [v.describe() for v in found]}

    return await in_thread(request, listing)


@versions.get(
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


@versions.post(
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


class EvaluationBody(BaseModel):
    dataset: str
    split: str = "test"
    limit: int | None = Field(None, ge=1, le=10_000_000)


class StartRounds(DeviceSelection):
    model: str | None = Field(None, description="default: the first selected device's model")
    rounds: int = Field(1, ge=1, le=MAX_ROUNDS)
    participants: int | None = Field(
        None, ge=1, le=1_000_000, description="devices picked per round; default: all"
    )
    epochs: int = Field(1, ge=1, le=10_000, description="local epochs per round")
    batch_size: int = Field(32, ge=1, le=100_000)
    aggregation: Literal["fedavg", "fedavgm", "fedadam", "none"] = "fedavg"
    server_learning_rate: float | None = Field(
        None,
        gt=0,
        le=MAX_SERVER_LEARNING_RATE,
        allow_inf_nan=False,
        description="default: 1.0 (fedavg, fedavgm), 0.01 (fedadam)",
    )
    server_momentum: float | None = Field(None, ge=0, lt=1, description="fedavgm; default 0.9")
    beta1: float | None = Field(None, ge=0, lt=1, description="fedadam; default 0.9")
    beta2: float | None = Field(None, ge=0, lt=1, description="fedadam; default 0.99")
    tau: float | None = Field(
        None, ge=MIN_TAU, le=MAX_TAU, allow_inf_nan=False, description="fedadam's adaptivity; default 0.001"
    )
    seed: int = Field(0, ge=0, le=2**63 - 1)
    start_version: int | None = Field(
        None, ge=0, le=2**63 - 1, description="default: the model's latest version"
    )
    evaluate_on: EvaluationBody | None = Field(
        None,
        description="where global accuracy is measured; default: the first device's dataset's test split",
    )
    local_accuracy: bool = Field(True, description="evaluate each participant on its local test data")
    global_accuracy: bool = Field(True, description="evaluate each new version on evaluate_on's split")
    device_weights: Literal["trained", "checkpoint", "saved"] = Field(
        "trained",
        description="after a participant's update: keep its trained weights unsaved, drop them (back to its "
        "checkpoint), or save them as its checkpoint",
    )
    deadline: float | None = Field(
        None,
        ge=MIN_DEADLINE,
        le=MAX_DEADLINE,
        allow_inf_nan=False,
        description="simulated seconds a round waits for its profiled participants; default: all of them",
    )
    stragglers: Literal["drop", "stale"] = Field(
        "drop",
        description="a participant past the deadline: drop its update, or add it (discounted) to the round "
        "it arrives in",
    )
    start_time: float = Field(
        0.0,
        ge=0,
        le=MAX_START_TIME,
        allow_inf_nan=False,
        description="the simulated time the first round starts at",
    )


ROUND_ERRORS = documented(e404="unknown round run")


def tenant(principal: Principal) -> str | None:
    """Whose runs and versions a key sees: all for an admin (None), else those its prefix's keys made
    (and, of versions, those an admin published)."""
    return None if principal.is_admin else principal.prefix


@rounds.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Run federated rounds over a set of devices in the background; poll the run",
    responses=documented(
        e400="a bad parameter, or a selection of no devices",
        e404="unknown device, model, dataset or version",
        e429="the key has FLEET_QUOTA_RUNS runs queued or running",
    ),
)
async def start_rounds(
    body: StartRounds,
    federation: FederationDep,
    fleet: FleetDep,
    principal: PrincipalDep,
    quotas: QuotasDep,
    request: Request,
) -> dict[str, object]:
    def start() -> dict[str, object]:
        quotas.check_runs(principal)
        sharded = fleet.ownership is not None  # the front gives every shard's devices by ID
        ids = federation.select(body.selection(), principal.may_touch, here=not sharded)
        if not ids:
            raise InvalidRequest("the run selects no devices: give IDs, a prefix that matches some, or all")
        first_here = fleet.ownership is None or fleet.ownership.owns(ids[0])
        model = body.model or (fleet.get(ids[0]).load().name if first_here else DEFAULT_MODEL)
        fleet.models.get(model)
        evaluation = None
        if not body.global_accuracy:
            pass
        elif body.evaluate_on is not None:
            evaluation = Evaluation(body.evaluate_on.dataset, body.evaluate_on.split, body.evaluate_on.limit)
            federation.datasets.get(evaluation.dataset).split(evaluation.split)
        elif first_here:
            found = federation.assignment(fleet.get(ids[0]))
            if found is not None and "test" in federation.datasets.get(str(found["dataset"])).splits:
                evaluation = Evaluation(str(found["dataset"]))
        server = None
        if body.aggregation != "none":
            server = ServerOptimizer.defaults(body.aggregation)
            given: dict[str, Any] = {
                "learning_rate": body.server_learning_rate,
                "momentum": body.server_momentum,
                "beta1": body.beta1,
                "beta2": body.beta2,
                "tau": body.tau,
            }
            server = replace(server, **{k: v for k, v in given.items() if v is not None})
        spec = RoundSpec(
            model=model,
            devices=tuple(ids),
            rounds=body.rounds,
            participants=body.participants,
            training=LocalTraining(body.epochs, body.batch_size),
            aggregation=body.aggregation,
            server=server,
            seed=body.seed,
            start_version=body.start_version,
            evaluation=evaluation,
            local_accuracy=body.local_accuracy,
            device_weights=body.device_weights,
            owner=tenant(principal) or "",
            deadline=body.deadline,
            stragglers=body.stragglers,
            start_time=body.start_time,
        )
        if spec.aggregation != "none":
            federation.resolve_version(model, spec.start_version, tenant(principal))
        return federation.rounds.start(spec)

    return await in_thread(request, start)


@rounds.get("/selection", summary="The devices a run with this selection would pick from (this process's)")
async def selection(
    federation: FederationDep,
    principal: PrincipalDep,
    request: Request,
    prefix: Annotated[str | None, Query(max_length=128)] = None,
    all: bool = False,
) -> dict[str, object]:
    ids = await in_thread(request, federation.select, Selection(None, prefix, all), principal.may_touch)
    return {"ids": ids}


@rounds.get("", summary="Round runs, newest last (without their per-round metrics)")
async def list_rounds(
    federation: FederationDep, principal: PrincipalDep, request: Request
) -> dict[str, object]:
    return {"runs": await in_thread(request, federation.rounds.runs, tenant(principal))}


@rounds.get("/{run_id}", summary="A run: its state, progress and per-round metrics", responses=ROUND_ERRORS)
async def get_round(
    run_id: str, federation: FederationDep, principal: PrincipalDep, request: Request
) -> dict[str, object]:
    return await in_thread(request, federation.rounds.get, run_id, tenant(principal))


@rounds.post(
    "/{run_id}/cancel",
    summary="Stop the run before its next training step; the round in progress makes no version",
    responses=documented(e404="unknown round run", e409="it already ended"),
)
async def cancel_round(
    run_id: str, federation: FederationDep, principal: PrincipalDep, request: Request
) -> dict[str, object]:
    return await in_thread(request, federation.rounds.cancel, run_id, tenant(principal))
