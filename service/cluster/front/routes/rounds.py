"""Runs of federated rounds: slot 0 runs every run; a new one gets its devices by ID, and the model
and evaluation split of its first device, which another shard may own."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.api import errors
from service.api.codecs import json_object
from service.api.routes.rounds import StartRounds
from service.cluster.front.calls import front_of, on_behalf, to_first
from service.cluster.front.routes.selection import selected
from service.cluster.front.shards import Shards, fixed, relay
from service.errors import InvalidRequest


async def rounds(request: Request) -> Response:
    if request.method != "POST":
        return await to_first(request)
    shards = front_of(request).shards
    wanted = json_object(await request.body())
    errors.validated(StartRounds, wanted)
    parts = await selected(request, wanted)
    ids = (
        [i for i in wanted["ids"] if isinstance(i, str)]
        if wanted.get("ids")
        else sorted(i for part in parts.values() for i in part)
    )
    if not ids:
        raise InvalidRequest("the run selects no devices: give IDs, a prefix that matches some, or all")
    first = ids[0]
    if not wanted.get("model"):
        device = await shards.call(
            lambda view: view.owner(first).slot, on_behalf(request, "GET", f"/v1/devices/{first}"), b""
        )
        if device.status >= 300:
            return relay(device)
        wanted["model"] = orjson.loads(device.body)["model"]
    if not wanted.get("evaluate_on"):
        evaluate_on = await _test_split_of(shards, request, first)
        if evaluate_on is not None:
            wanted["evaluate_on"] = evaluate_on
    body = orjson.dumps({**wanted, "ids": ids, "prefix": None, "all": False})
    return await shards.send(fixed(0), request, body)


async def _test_split_of(shards: Shards, request: Request, device_id: str) -> dict[str, Any] | None:
    """The test split of the dataset assigned to ``device_id``, if it has one."""
    path = f"/v1/devices/{device_id}/assignment"
    found = await shards.call(lambda view: view.owner(device_id).slot, on_behalf(request, "GET", path), b"")
    assignment = orjson.loads(found.body).get("assignment") if found.status == 200 else None
    if assignment:
        dataset = await shards.call(
            fixed(0), on_behalf(request, "GET", f"/v1/datasets/{assignment['dataset']}"), b""
        )
        if dataset.status == 200 and "test" in orjson.loads(dataset.body).get("splits", {}):
            return {"dataset": assignment["dataset"], "split": "test"}
    return None


routes: list[BaseRoute] = [
    Route("/v1/rounds", rounds, methods=["GET", "POST"]),
]
