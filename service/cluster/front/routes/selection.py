"""Which devices a selection (``ids``, ``prefix`` or ``all``) names, across the shards."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.cluster.front.calls import front_of, json_response, on_behalf
from service.errors import InvalidRequest
from service.storage import check_id


async def selected(request: Request, wanted: dict[str, Any]) -> dict[int, list[str]]:
    """The devices a selection (``ids``, ``prefix`` or ``all``) names, by the slot that owns them."""
    shards = front_of(request).shards
    given = [key for key in ("ids", "prefix") if wanted.get(key) is not None] + (
        ["all"] if wanted.get("all") else []
    )
    if len(given) != 1:
        raise InvalidRequest("select devices with exactly one of: ids, prefix, all")
    ids = wanted.get("ids")
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InvalidRequest("ids must be a list of device IDs")
        return (await shards.current()).partition(check_id("device", i) for i in dict.fromkeys(ids))
    query = urlencode({"prefix": wanted["prefix"]} if wanted.get("prefix") is not None else {"all": "true"})
    answers = await shards.each(on_behalf(request, "GET", "/v1/rounds/selection", query))
    found = {slot: list(orjson.loads(a.body)["ids"]) for slot, a in enumerate(answers)}
    return {slot: part for slot, part in found.items() if part}


async def selection(request: Request) -> Response:
    answers = await front_of(request).shards.each(request)
    return json_response({"ids": sorted(i for a in answers for i in orjson.loads(a.body)["ids"])})


routes: list[BaseRoute] = [
    Route("/v1/rounds/selection", selection, methods=["GET"]),
]
