"""A lean HTTP/1.1 load generator: pre-built requests on keep-alive connections, in asyncio.

On a 2-core machine the load generator shares the cores with the server, so its own cost is part
of what is measured. httpx spends about as much CPU per request as the server does; this spends a
few microseconds, so the figures describe the server. (It expects Content-Length responses, which
is what the service sends.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from urllib.parse import urlsplit


def request_head(method: str, path: str, content_type: str, accept: str, length: int) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n"
        f"Accept: {accept}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


async def run(
    url: str,
    heads: Sequence[bytes],
    body: bytes,
    concurrency: int,
    seconds: float | None = None,
    requests: int | None = None,
) -> list[float]:
    """Send ``heads[k % len(heads)] + body`` for k = 0, 1, ... from ``concurrency`` connections.

    Connection i sends k = i, i + concurrency, ...: with ``requests`` = len(heads), every head goes
    exactly once. Stops after ``seconds`` or ``requests``; raises on any non-2xx response.
    Returns each request's latency.
    """
    parts = urlsplit(url)
    stop = time.perf_counter() + seconds if seconds is not None else float("inf")
    total = requests if requests is not None else float("inf")
    latencies: list[float] = []

    async def user(index: int) -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        k = index
        try:
            while time.perf_counter() < stop and k < total:
                start = time.perf_counter()
                writer.write(heads[k % len(heads)])
                writer.write(body)
                status, payload = await _read_response(reader)
                if not 200 <= status < 300:
                    raise RuntimeError(f"HTTP {status}: {payload[:300]!r}")
                latencies.append(time.perf_counter() - start)
                k += concurrency
        finally:
            writer.close()

    await asyncio.gather(*(user(i) for i in range(concurrency)))
    return latencies
