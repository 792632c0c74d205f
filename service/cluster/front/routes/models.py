"""Models live in the shared directory: any shard stores one; a deletion must find no user on any
shard first, then every shard forgets the model."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.cluster.front.calls import ALL_METHODS, front_of, principal_of, to_first, with_query
from service.cluster.front.shards import fixed


async def model(request: Request) -> Response:
    if request.method != "DELETE":
        return await to_first(request)
    shards = front_of(request).shards
    principal_of(request).require_admin(f"DELETE {request.url.path}")
    if request.query_params.get("dry_run", "false").lower() in ("1", "true"):
        await shards.each(request)
        return Response(status_code=204)
    view = await shards.current()
    await shards.each(with_query(request, "dry_run=true"))
    done = await shards.send(fixed(0), request, b"")
    if done.status_code >= 300:
        return done
    for shard in view.shards[1:]:
        await shards.send(fixed(shard.slot), request, b"")  # each forgets it (its 404 is expected)
    return done


routes: list[BaseRoute] = [
    Route("/v1/models/{model}", model, methods=ALL_METHODS),
]
