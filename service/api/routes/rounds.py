"""Federated round runs: start one over a selection of devices, list, get and cancel them."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, Field

from service.api.auth import tenant
from service.api.deps import (
    FederationDep,
    FleetDep,
    PrincipalDep,
    QuotasDep,
    in_thread,
)
from service.api.errors import documented
from service.api.routes.datasets import DeviceSelection
from service.api.routes.round_privacy import PrivacyBody, SecureAggregationBody
from service.errors import InvalidRequest
from service.federated.federation import Selection
from service.federated.local import LocalTraining
from service.federated.selectors import DEFAULT as DEFAULT_SELECTION
from service.federated.selectors import NAMES as SELECTIONS
from service.federated.selectors.base import MAX_ALPHA, MAX_PREFERRED_SECONDS, SelectorSettings
from service.federated.spec import (
    AGGREGATIONS,
    MAX_DEADLINE,
    MAX_ROUNDS,
    MAX_START_TIME,
    MIN_DEADLINE,
    Evaluation,
    RoundSpec,
)
from service.federated.strategies import server_defaults
from service.federated.strategies.base import (
    MAX_SERVER_LEARNING_RATE,
    MAX_TAU,
    MIN_TAU,
    ServerOptimizer,
    StrategySettings,
)
from service.federated.strategies.buffered import check_buffer
from service.federated.strategies.fedbuff import MAX_BUFFER_SIZE, MAX_CONCURRENCY, MAX_STALENESS_LIMIT
from service.federated.strategies.krum import MAX_COUNT as MAX_KRUM_COUNT
from service.fleet.models import DEFAULT_MODEL

router = APIRouter(prefix="/v1/rounds", tags=["federated"])


class EvaluationBody(BaseModel):
    dataset: str
    split: str = "test"
    limit: int | None = Field(None, ge=1, le=10_000_000)


class StrategyOptions(BaseModel):
    """The strategies' own settings (``StrategySettings``); each strategy reads the ones it uses."""

    proximal_mu: float = Field(
        0.01, ge=0, le=1000, allow_inf_nan=False, description="fedprox: the proximal term's weight"
    )
    trim_fraction: float = Field(
        0.2,
        ge=0,
        lt=0.5,
        allow_inf_nan=False,
        description="trimmed_mean: the fraction of updates cut from each end of every coordinate "
        "(Flower's beta)",
    )
    byzantine: int = Field(
        0,
        ge=0,
        le=MAX_KRUM_COUNT,
        description="krum: the faulty participants f it tolerates; each update is scored by the squared "
        "distances to its n - f - 2 nearest others",
    )
    krum_keep: int = Field(
        0,
        ge=0,
        le=MAX_KRUM_COUNT,
        description="krum: 0 takes the best-scored update (Krum); m > 0 the sample-weighted mean of the m "
        "best (multi-Krum)",
    )
    buffer_size: int = Field(
        10,
        ge=1,
        le=MAX_BUFFER_SIZE,
        description="fedbuff: the server steps every K updates (the buffer's size)",
    )
    concurrency: int = Field(
        10,
        ge=1,
        le=MAX_CONCURRENCY,
        description="fedbuff: devices training at once (at most the run's devices)",
    )
    max_staleness: int = Field(
        100,
        ge=0,
        le=MAX_STALENESS_LIMIT,
        description="fedbuff: an update downloaded more than this many server steps ago is dropped",
    )


SELECTOR_DEFAULTS = SelectorSettings()


class SelectionOptions(BaseModel):
    """The selectors' settings (``SelectorSettings``): Oort's; ``available`` and ``uniform`` take none."""

    epsilon: float = Field(
        SELECTOR_DEFAULTS.epsilon,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="oort: the share of round 1's participants drawn from devices never heard from",
    )
    epsilon_decay: float = Field(
        SELECTOR_DEFAULTS.epsilon_decay,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="oort: epsilon is multiplied by this every round after the first",
    )
    epsilon_min: float = Field(
        SELECTOR_DEFAULTS.epsilon_min, ge=0, le=1, allow_inf_nan=False, description="oort: epsilon's floor"
    )
    alpha: float = Field(
        SELECTOR_DEFAULTS.alpha,
        ge=0,
        le=MAX_ALPHA,
        allow_inf_nan=False,
        description="oort: a device slower than the preferred duration T has its utility times (T/t)^alpha",
    )
    preferred_seconds: float | None = Field(
        None,
        gt=0,
        le=MAX_PREFERRED_SECONDS,
        allow_inf_nan=False,
        description="oort: the preferred duration T (simulated seconds); default: the 10th percentile of "
        "the durations heard",
    )
    cut_off: float = Field(
        SELECTOR_DEFAULTS.cut_off,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="oort: draw among devices scoring at least this times the last exploited one's score",
    )


class StartRounds(DeviceSelection):
    model: str | None = Field(None, description="default: the first selected device's model")
    rounds: int = Field(1, ge=1, le=MAX_ROUNDS)
    participants: int | None = Field(
        None, ge=1, le=1_000_000, description="devices picked per round; default: all"
    )
    epochs: int = Field(1, ge=1, le=10_000, description="local epochs per round")
    batch_size: int = Field(32, ge=1, le=100_000)
    aggregation: Literal[AGGREGATIONS] = Field(  # type: ignore[valid-type]
        "fedavg",
        description="the strategy (see docs/strategies.md), or none: local training only, nothing aggregated",
    )
    server_learning_rate: float | None = Field(
        None,
        gt=0,
        le=MAX_SERVER_LEARNING_RATE,
        allow_inf_nan=False,
        description="default: 0.1 (fedadagrad), 0.01 (fedadam, fedyogi), 1.0 (the others)",
    )
    server_momentum: float | None = Field(None, ge=0, lt=1, description="fedavgm; default 0.9")
    beta1: float | None = Field(None, ge=0, lt=1, description="fedadam, fedyogi; default 0.9 (fedadagrad: 0)")
    beta2: float | None = Field(None, ge=0, lt=1, description="fedadam, fedyogi; default 0.99")
    tau: float | None = Field(
        None,
        ge=MIN_TAU,
        le=MAX_TAU,
        allow_inf_nan=False,
        description="fedadam, fedadagrad, fedyogi: the adaptivity; default 0.001",
    )
    options: StrategyOptions = Field(
        default_factory=StrategyOptions, description="the strategy's own settings (fedprox's mu, ...)"
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
    # ``selection`` in the body; ``DeviceSelection.selection()`` (which devices) keeps its name.
    selector: Literal[SELECTIONS] = Field(  # type: ignore[valid-type]
        DEFAULT_SELECTION,
        alias="selection",
        description="who takes part in each round: available (the first online in a seeded order), uniform "
        "(a seeded sample, online or not) or oort (utility: loss and speed); see docs/rounds.md",
    )
    selection_options: SelectionOptions = Field(
        default_factory=SelectionOptions, description="the selector's settings (oort's)"
    )
    privacy: PrivacyBody | None = Field(
        None, description="differential privacy; needs selection poisson or uniform (docs/privacy.md)"
    )
    secure_aggregation: SecureAggregationBody | None = Field(
        None, description="secure aggregation (SecAgg+): the server sees only the sum"
    )


PER_DEVICE = ("device", "sigma")
"""Assignment parameters that are one device's (its index, its noise), not the partition's."""


def partition_of(assignment: dict[str, object] | None) -> dict[str, object] | None:
    """What a run records of its devices' partition, from one device's assignment (None without one)."""
    if assignment is None:
        return None
    parameters = assignment.get("parameters")
    shared = (
        {k: v for k, v in parameters.items() if k not in PER_DEVICE} if isinstance(parameters, dict) else {}
    )
    return {
        "dataset": assignment.get("dataset"),
        "scheme": assignment.get("scheme"),
        "parameters": shared,
        "seed": assignment.get("seed"),
    }


def _server(body: StartRounds) -> ServerOptimizer | None:
    """The strategy's server optimizer with the settings the body gives (None: nothing aggregated)."""
    if body.aggregation == "none":
        return None
    given: dict[str, Any] = {
        "learning_rate": body.server_learning_rate,
        "momentum": body.server_momentum,
        "beta1": body.beta1,
        "beta2": body.beta2,
        "tau": body.tau,
    }
    return replace(server_defaults(body.aggregation), **{k: v for k, v in given.items() if v is not None})


ROUND_ERRORS = documented(e404="unknown round run")


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Run federated rounds over a set of devices in the background; poll the run",
    responses=documented(
        e400="a bad parameter, or a selection of no devices",
        e404="unknown device, model, dataset or version",
        e422="privacy or secure aggregation settings that cannot be used (named), or a budget exceeded",
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
        ids = federation.select(body.selection(), principal.touches, here=not sharded)
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
        partition = partition_of(federation.assignment(fleet.get(ids[0]))) if first_here else None
        spec = RoundSpec(
            model=model,
            devices=tuple(ids),
            rounds=body.rounds,
            participants=body.participants,
            training=LocalTraining(body.epochs, body.batch_size),
            aggregation=body.aggregation,
            server=_server(body),
            options=StrategySettings(**body.options.model_dump()),
            seed=body.seed,
            start_version=body.start_version,
            evaluation=evaluation,
            local_accuracy=body.local_accuracy,
            device_weights=body.device_weights,
            owner=tenant(principal) or "",
            deadline=body.deadline,
            stragglers=body.stragglers,
            start_time=body.start_time,
            selection=body.selector,
            selection_options=SelectorSettings(**body.selection_options.model_dump()),
            partition=partition,
            privacy=body.privacy.settings() if body.privacy is not None else None,
            secure_aggregation=(
                body.secure_aggregation.settings() if body.secure_aggregation is not None else None
            ),
        )
        if spec.aggregation != "none":
            version = federation.resolve_version(model, spec.start_version, tenant(principal))
            check_buffer(
                spec.strategy(),
                spec.participants or len(ids),
                federation.version_size(model, version),
                request.app.state.settings.max_buffered_bytes,
            )
            has = fleet.models.get(model).signatures
            missing = [name for name in spec.strategy().signatures if name not in has]
            if missing:
                raise InvalidRequest(
                    f"strategy '{spec.aggregation}' needs the model's {', '.join(missing)} signature(s); "
                    f"model '{model}' has {', '.join(sorted(has))} (`fleet build-model` builds them)"
                )
        return federation.rounds.start(spec)

    return await in_thread(request, start)


@router.get("/selection", summary="The devices a run with this selection would pick from (this process's)")
async def selection(
    federation: FederationDep,
    principal: PrincipalDep,
    request: Request,
    prefix: Annotated[str | None, Query(max_length=128)] = None,
    all: bool = False,
) -> dict[str, object]:
    ids = await in_thread(request, federation.select, Selection(None, prefix, all), principal.touches)
    return {"ids": ids}


@router.get("", summary="Round runs, newest last (without their per-round metrics)")
async def list_rounds(
    federation: FederationDep, principal: PrincipalDep, request: Request
) -> dict[str, object]:
    return {"runs": await in_thread(request, federation.rounds.runs, tenant(principal))}


@router.get("/{run_id}", summary="A run: its state, progress and per-round metrics", responses=ROUND_ERRORS)
async def get_round(
    run_id: str, federation: FederationDep, principal: PrincipalDep, request: Request
) -> dict[str, object]:
    return await in_thread(request, federation.rounds.get, run_id, tenant(principal))


@router.post(
    "/{run_id}/cancel",
    summary="Stop the run before its next training step; the round in progress makes no version",
    responses=documented(e404="unknown round run", e409="it already ended"),
)
async def cancel_round(
    run_id: str, federation: FederationDep, principal: PrincipalDep, request: Request
) -> dict[str, object]:
    return await in_thread(request, federation.rounds.cancel, run_id, tenant(principal))
