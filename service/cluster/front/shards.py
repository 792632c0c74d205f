"""The one address of a sharded fleet: routes each device's calls to its owner, merges fleet-wide answers.

Device routes are forwarded as HTTP to the owning shard's own server (one hop for the tensor body).
The front holds a cached member view; a shard that answers 421 (not the owner) makes it fetch the
view again and retry, as does a shard that cannot be reached (it is restarting: its address changes).
A call that reached a shard which then failed is not retried: it may have been applied, and a train
step must not apply twice. Such a call gets 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.api import errors
from service.api.auth import FRONT_HEADER, PEER_HEADER, KeyRing, Principal
from service.api.codecs import json_object
from service.api.guards import guard
from service.api.routes.fleet import BulkCreate, BulkDelete, Resize
from service.api.routes.rounds import StartRounds
from service.cluster import merge
from service.cluster.forward import Answer, Broken, NotSent, Pool
from service.cluster.state import ClusterState
from service.config import Settings
from service.errors import FleetError, InvalidRequest, LimitExceeded, Unavailable
from service.fleet.fleet import process_rss_bytes
from service.storage import check_id
from service.ui import ui_routes
from service.wire.view import MOVING_HEADER, View

log = logging.getLogger(__name__)

PROFILE_FIELDS = ("profile", "profile_mix", "profile_seed")
"""What of a bulk-create's body profiles the devices (passed on to each shard)."""
ROUTE_DEADLINE = 10.0
"""Seconds the front keeps retrying a call no shard could take yet (a restart, a resize)."""
CALL_TIMEOUT = 120.0
MOVE_POLL = 0.05
"""Seconds between the front's tries of a call to a device moving between shards (a resize)."""
MOVING = MOVING_HEADER.lower().encode()
HOP_HEADERS = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"content-length",
        b"te",
        b"upgrade",
        b"proxy-connection",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        FRONT_HEADER,
        PEER_HEADER,
    }
)
ViewSource = Callable[[int | None], Awaitable[dict[str, Any]]]
"""Fetches the view from the coordinator; given a slot, asks that slot's process anew first."""
SlotPicker = Callable[[View], int]


def fixed(slot: int) -> SlotPicker:
    return lambda _view: slot


class Shards:
    """The cached view and the connections to each shard."""

    def __init__(self, fetch: ViewSource, token: bytes) -> None:
        self._fetch = fetch
        self.token = token
        self.view: View | None = None
        self.pool = Pool(timeout=CALL_TIMEOUT)
        self._refreshing: asyncio.Lock | None = None

    async def current(self) -> View:
        if self.view is None:
            await self.refresh()
        assert self.view is not None
        return self.view

    async def refresh(self, slot: int | None = None, seen: View | None = None) -> View:
        """A newer view; calls made with the same stale ``seen`` view share one fetch."""
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            if seen is not None and self.view is not None and self.view is not seen:
                return self.view
            self.view = View.parse(await self._fetch(slot))
            return self.view

    async def call(self, slot_of: SlotPicker, request: Request, body: bytes) -> Answer:
        """The request's answer from the slot ``slot_of`` picks in the current view, retrying what is
        safe: a call that could not be sent, one refused as not the owner's, one of a moving device."""
        deadline = time.monotonic() + ROUTE_DEADLINE
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        headers = _forwarded_headers(request, self.token)
        while True:
            view = await self.current()
            slot = slot_of(view)
            if slot >= len(view.shards):  # a fleet-wide call to each shard, and a resize took one away
                raise Unavailable("the fleet was resized during the call; retry", retry_after=1)
            shard = view.shards[slot]
            retry_after = 0.2
            try:
                if shard.address is None:
                    raise NotSent("no address yet")
                answer = await self.pool.request(shard.address, request.method, target, headers, body)
            except NotSent:  # safe to try again once the slot has a process
                with contextlib.suppress(FleetError):
                    await self.refresh(shard.slot, view)
            except Broken as exc:
                with contextlib.suppress(FleetError):
                    if shard.slot >= len((await self.refresh(None, view)).shards):
                        # A slot a resize took away owns nothing: the call was refused there, not applied.
                        continue
                log.warning("shard %d failed during %s %s: %s", shard.slot, request.method, target, exc)
                asyncio.get_running_loop().create_task(self._quiet_refresh(shard.slot, view))
                raise Unavailable(
                    f"shard {shard.slot} failed during the call; it may or may not have been applied: "
                    "check the device, then retry",
                    retry_after=2,
                ) from exc
            else:
                if answer.status == 421:
                    await self.refresh(None, view)
                elif answer.status == 503 and answer.header(MOVING) is not None:
                    retry_after = MOVE_POLL  # the commit ends it: look again soon
                else:
                    return answer
            if time.monotonic() + retry_after > deadline:
                raise Unavailable(
                    "no shard could take the call in time (restarting or resizing)", retry_after=2
                )
            await asyncio.sleep(retry_after)

    async def send(self, slot_of: SlotPicker, request: Request, body: bytes) -> Response:
        """``call``, relayed as the front's answer."""
        return _relay(await self.call(slot_of, request, body))

    async def _quiet_refresh(self, slot: int, seen: View) -> None:
        try:
            await self.refresh(slot, seen)
        except Exception:
            log.exception("could not refresh the view of shard %d", slot)

    async def each(self, request: Request, body: bytes = b"") -> list[Answer]:
        """The same request to every shard at once; the first error answer is relayed as it is."""
        view = await self.current()
        answers = await asyncio.gather(*(self.call(fixed(s.slot), request, body) for s in view.shards))
        for answer in answers:
            if answer.status >= 400:
                raise _Relayed(answer)
        return answers


class _Relayed(Exception):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer


def _forwarded_headers(request: Request, token: bytes) -> list[tuple[bytes, bytes]]:
    headers = [(k, v) for k, v in request.scope["headers"] if k not in HOP_HEADERS]
    headers.append((FRONT_HEADER, token))
    client = request.scope.get("client")
    if client:
        headers.append((b"x-forwarded-for", client[0].encode()))
    return headers


def _with_path(request: Request, path: str | None) -> Request:
    if path is None:
        return request
    scope = dict(request.scope)
    scope["path"], scope["raw_path"] = path, path.encode()
    return Request(scope, request.receive)


def _as(request: Request, method: str, path: str, query: str = "") -> Request:
    """Another call on behalf of the same client (its headers and key): ``method path?query``."""
    scope = dict(request.scope)
    scope["method"], scope["path"], scope["raw_path"] = method, path, path.encode()
    scope["query_string"] = query.encode()
    return Request(scope, request.receive)


def _with_query(request: Request, query: str) -> Request:
    scope = dict(request.scope)
    scope["query_string"] = query.encode()
    return Request(scope, request.receive)


def _principal(request: Request) -> Principal:
    principal: Principal = request.scope["state"]["principal"]
    return principal


def _json(value: object, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")


def create_front(
    settings: Settings,
    coordinator: Any,
    keys: KeyRing | None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    """The front's app over the coordinator actor's view."""

    async def fetch(slot: int | None) -> dict[str, Any]:
        method = coordinator.view if slot is None else coordinator.refresh
        args = () if slot is None else (slot,)
        try:
            return await method.remote(*args)
        except FleetError:
            raise
        except Exception as exc:  # Ray's errors: the coordinator itself restarts
            raise Unavailable(
                f"the coordinator does not answer ({type(exc).__name__})", retry_after=2
            ) from exc

    shards = Shards(fetch, ClusterState(settings.data_dir).front_token())

    async def body_of(request: Request) -> bytes:
        return await request.body()

    async def to_owner(request: Request) -> Response:
        device_id = check_id("device", request.path_params["device_id"])
        return await shards.send(lambda view: view.owner(device_id).slot, request, await body_of(request))

    async def to_first(request: Request) -> Response:
        return await shards.send(fixed(0), request, await body_of(request))

    async def devices(request: Request) -> Response:
        if request.method == "GET":
            pages = [orjson.loads(a.body) for a in await shards.each(request)]  # the shards check the query
            return _json(merge.merge_pages(pages, int(request.query_params.get("limit", "100"))))
        wanted = json_object(await body_of(request))  # not JSON, or not an object: 400, never 500
        device_id = wanted.get("id") or _random_id(_principal(request).prefix)
        wanted["id"] = check_id("device", str(device_id))
        return await shards.send(lambda view: view.owner(wanted["id"]).slot, request, orjson.dumps(wanted))

    async def bulk_create(request: Request) -> Response:
        """Each shard creates its own devices; profiles drawn from a mix come out the same on any shard."""
        _principal(request).require_admin("POST /v1/devices/bulk-create")
        wanted = json_object(await body_of(request))
        errors.validated(BulkCreate, wanted)  # 422 as a single process answers; the checks below are its own
        ids = wanted.get("ids")
        if ids is None:
            count = wanted.get("count")
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise InvalidRequest("give either ids or count (a positive integer)")
            _check_bulk(settings, count)
            prefix = str(wanted.get("prefix", ""))
            ids = list(dict.fromkeys(_random_id(prefix) for _ in range(count)))
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InvalidRequest("ids must be a list of device IDs")
        _check_bulk(settings, len(ids))
        view = await shards.current()
        parts = view.partition(check_id("device", i) for i in ids)
        made: list[tuple[int, list[str]]] = []
        failure: Response | None = None
        for slot, part in parts.items():
            profiled = {k: wanted[k] for k in PROFILE_FIELDS if k in wanted}  # drawn per ID: same anywhere
            part_body = orjson.dumps({"ids": part, "model": wanted.get("model"), **profiled})
            reply = await shards.send(fixed(slot), request, part_body)
            if reply.status_code >= 300:
                failure = reply
                break
            made.append((slot, part))
        if failure is not None:  # all or nothing: remove what the other shards made
            for slot, part in made:
                undo = _with_path(request, "/v1/devices/bulk-delete")
                await shards.send(fixed(slot), undo, orjson.dumps({"ids": part}))
            return failure
        return _json({"count": len(ids), "ids": ids}, status=201)

    async def bulk_delete(request: Request) -> Response:
        _principal(request).require_admin("POST /v1/devices/bulk-delete")
        wanted = json_object(await body_of(request))
        errors.validated(BulkDelete, wanted)
        ids = wanted.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InvalidRequest("ids must be a list of device IDs")
        _check_bulk(settings, len(ids))
        view = await shards.current()
        parts = view.partition(check_id("device", i) for i in dict.fromkeys(ids))
        for check_only in (True, False):  # unknown IDs fail the request before any deletion
            for slot, part in parts.items():
                part_body = orjson.dumps({"ids": part, "dry_run": check_only})
                reply = await shards.send(fixed(slot), request, part_body)
                if reply.status_code >= 300:
                    return reply
        return _json({"count": sum(len(p) for p in parts.values()), "ids": ids})

    async def model(request: Request) -> Response:
        """Models live in the shared directory: any shard stores one; a deletion must find no user
        on any shard first, then every shard forgets the model."""
        if request.method != "DELETE":
            return await to_first(request)
        _principal(request).require_admin(f"DELETE {request.url.path}")
        if request.query_params.get("dry_run", "false").lower() in ("1", "true"):
            await shards.each(request)
            return Response(status_code=204)
        view = await shards.current()
        await shards.each(_with_query(request, "dry_run=true"))
        done = await shards.send(fixed(0), request, b"")
        if done.status_code >= 300:
            return done
        for shard in view.shards[1:]:
            await shards.send(fixed(shard.slot), request, b"")  # each forgets it (its 404 is expected)
        return done

    async def selected(request: Request, wanted: dict[str, Any]) -> dict[int, list[str]]:
        """The devices a selection (``ids``, ``prefix`` or ``all``) names, by the slot that owns them."""
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
        query = urlencode(
            {"prefix": wanted["prefix"]} if wanted.get("prefix") is not None else {"all": "true"}
        )
        answers = await shards.each(_as(request, "GET", "/v1/rounds/selection", query))
        found = {slot: list(orjson.loads(a.body)["ids"]) for slot, a in enumerate(answers)}
        return {slot: part for slot, part in found.items() if part}

    async def selection(request: Request) -> Response:
        answers = await shards.each(request)
        return _json({"ids": sorted(i for a in answers for i in orjson.loads(a.body)["ids"])})

    async def each_assigns(request: Request) -> list[dict[str, Any]] | Response:
        """The assignment asked of each shard for its own selected devices: their answers, or the first
        failure's, relayed."""
        wanted = json_object(await body_of(request))
        parts = await selected(request, wanted)
        if not parts:
            raise InvalidRequest("the assignment selects no devices")
        results = []
        for slot, part in parts.items():
            body = orjson.dumps({**wanted, "ids": part, "prefix": None, "all": False})
            answer = await shards.call(fixed(slot), request, body)
            if answer.status >= 300:
                return _relay(answer)
            results.append(orjson.loads(answer.body))
        return results

    async def assign(request: Request) -> Response:
        """Each shard assigns its own devices: a device's split depends on the seed and its ID alone."""
        results = await each_assigns(request)
        if isinstance(results, Response):
            return results
        merged = {**results[0], "devices": sum(r["devices"] for r in results)}
        merged["seconds"] = max(r["seconds"] for r in results)
        return _json(merged)

    async def assign_profiles(request: Request) -> Response:
        """Each shard profiles its own devices: a device's profile depends on the seed and its ID alone."""
        results = await each_assigns(request)
        if isinstance(results, Response):
            return results
        return _json(merge_profile_assigns(results))

    async def rounds(request: Request) -> Response:
        """Slot 0 runs every run; a new one gets its devices by ID, and the model and evaluation split
        of its first device, which another shard may own."""
        if request.method != "POST":
            return await to_first(request)
        wanted = json_object(await body_of(request))
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
                lambda view: view.owner(first).slot, _as(request, "GET", f"/v1/devices/{first}"), b""
            )
            if device.status >= 300:
                return _relay(device)
            wanted["model"] = orjson.loads(device.body)["model"]
        if not wanted.get("evaluate_on"):
            path = f"/v1/devices/{first}/assignment"
            found = await shards.call(lambda view: view.owner(first).slot, _as(request, "GET", path), b"")
            assignment = orjson.loads(found.body).get("assignment") if found.status == 200 else None
            if assignment:
                dataset = await shards.call(
                    fixed(0), _as(request, "GET", f"/v1/datasets/{assignment['dataset']}"), b""
                )
                if dataset.status == 200 and "test" in orjson.loads(dataset.body).get("splits", {}):
                    wanted["evaluate_on"] = {"dataset": assignment["dataset"], "split": "test"}
        body = orjson.dumps({**wanted, "ids": ids, "prefix": None, "all": False})
        return await shards.send(fixed(0), request, body)

    async def fleet_status(request: Request) -> Response:
        statuses = [orjson.loads(a.body) for a in await shards.each(request)]
        return _json(merge.merge_fleet_status(statuses, process_rss_bytes()))

    async def metrics(request: Request) -> Response:
        texts = [a.body.decode() for a in await shards.each(request)]
        return Response(merge.merge_metrics(texts), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def shard_list(request: Request) -> Response:
        principal = _principal(request)
        if request.method == "POST":
            principal.require_admin("POST /v1/fleet/shards")
            count = errors.validated(Resize, json_object(await body_of(request))).count
            from ray.exceptions import RayError  # only a sharded front runs this, and it has Ray

            try:
                await coordinator.resize.remote(count)
            except RayError as exc:  # a shard died mid-resize; every step is idempotent: ask again
                raise Unavailable(f"the resize to {count} shards failed: {type(exc).__name__}", 2) from exc
            await shards.refresh()
        view = await shards.refresh()
        details, whoami = await asyncio.gather(
            coordinator.shard_details.remote(), coordinator.whoami.remote()
        )
        return _json({"epoch": view.epoch, "sharded": True, "coordinator": whoami, **details})

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            view = await asyncio.wait_for(shards.current(), timeout=5)
        except (FleetError, TimeoutError):
            return _json({"status": "starting"}, 503)
        ready = all(s.address for s in view.shards)
        return _json({"status": "ready" if ready else "starting"}, 200 if ready else 503)

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/v1/fleet/shards", shard_list, methods=["GET", "POST"]),
        Route("/v1/fleet", fleet_status),
        Route("/metrics", metrics),
        Route("/v1/devices", devices, methods=["GET", "POST"]),
        Route("/v1/devices/bulk-create", bulk_create, methods=["POST"]),
        Route("/v1/devices/bulk-delete", bulk_delete, methods=["POST"]),
        Route("/v1/devices/{device_id}", to_owner, methods=ALL_METHODS),
        Route("/v1/devices/{device_id}/{rest:path}", to_owner, methods=ALL_METHODS),
        Route("/v2/models/{device_id}", to_owner, methods=ALL_METHODS),
        Route("/v2/models/{device_id}/{rest:path}", to_owner, methods=ALL_METHODS),
        Route("/v1/models/{model}", model, methods=ALL_METHODS),
        Route("/v1/datasets/{name}/assign", assign, methods=["POST"]),
        Route("/v1/profiles/assign", assign_profiles, methods=["POST"]),
        Route("/v1/rounds/selection", selection, methods=["GET"]),
        Route("/v1/rounds", rounds, methods=["GET", "POST"]),
        *ui_routes(),
        Route("/{rest:path}", to_first, methods=ALL_METHODS),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        try:
            yield
        finally:
            await shards.pool.close()
            if on_shutdown is not None:
                await on_shutdown()

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={_Relayed: _relayed})
    errors.install(app)  # FleetError as the service answers it
    app.state.shards = shards
    app.state.keys = keys
    guard(app, settings, keys)
    return app


ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


def _relay(answer: Answer) -> Response:
    """A shard's answer as the front's: its status, body and headers, less the hop's own."""
    response = Response(answer.body, status_code=answer.status)
    response.raw_headers = [(k, v) for k, v in answer.headers if k not in HOP_HEADERS]
    response.raw_headers.append((b"content-length", str(len(answer.body)).encode()))
    return response


async def _relayed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Relayed)
    return _relay(exc.answer)


def merge_profile_assigns(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The shards' answers to a profile assignment as one: devices and each class's count summed."""
    classes = merge.sum_counts([r["classes"] for r in results])
    return {**results[0], "assigned": sum(r["assigned"] for r in results), "classes": classes}


def _random_id(prefix: str) -> str:
    return check_id("device", f"{prefix}{secrets.token_hex(6)}")


def _check_bulk(settings: Settings, n: int) -> None:
    if n > settings.max_bulk:
        raise LimitExceeded(f"{n} devices in one request; the limit is {settings.max_bulk} (FLEET_MAX_BULK)")
