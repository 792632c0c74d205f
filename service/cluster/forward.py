"""A lean HTTP/1.1 client for the front's hop to a shard: pooled keep-alive connections, asyncio streams.

httpx spent about 4 ms of CPU a request on this hop (measured: ``benchmarks/cluster.py``), more than
the shard's whole request; this writes the request in one piece and reads a Content-Length (or
chunked) answer. Errors say whether the request could have reached the shard: ``NotSent`` (it
could not: safe to send again) or ``Broken`` (it may have been applied).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import urlsplit

IDLE_REUSE = 2.0
"""Seconds an idle connection is reused for; uvicorn closes them after 5, and a request written to
one it is closing could neither be trusted as sent nor as not sent."""
MAX_IDLE = 64
"""Idle connections kept per shard."""
MAX_HEAD = 64 * 1024


class NotSent(Exception):
    """The request did not leave: no connection could be made."""


class Broken(Exception):
    """The connection failed after the request was written: it may have been applied."""


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0


class Pool:
    """Keep-alive connections by shard address (``http://host:port``)."""

    def __init__(self, connect_timeout: float = 5.0, timeout: float = 120.0) -> None:
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._idle: dict[str, list[_Connection]] = defaultdict(list)

    async def _connection(self, address: str) -> _Connection:
        idle = self._idle[address]
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if now - connection.idle_since < IDLE_REUSE and not connection.reader.at_eof():
                return connection
            connection.writer.close()
        parts = urlsplit(address)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname, parts.port, limit=MAX_HEAD), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise NotSent(f"cannot connect to {address}: {exc!r}") from exc
        return _Connection(reader, writer)

    async def request(
        self, address: str, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Answer:
        connection = await self._connection(address)
        head = [f"{method} {target} HTTP/1.1\r\n".encode(), b"host: shard\r\n"]
        head += [k + b": " + v + b"\r\n" for k, v in headers]
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        try:
            connection.writer.write(b"".join(head) + body)
            answer, keep = await asyncio.wait_for(_read_answer(connection.reader), self.timeout)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
            TimeoutError,
        ) as exc:
            connection.writer.close()
            raise Broken(f"{address} failed mid-call: {exc!r}") from exc
        if keep and len(self._idle[address]) < MAX_IDLE:
            connection.idle_since = time.monotonic()
            self._idle[address].append(connection)
        else:
            connection.writer.close()
        return answer

    async def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.writer.close()
        self._idle.clear()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[Answer, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    chunked = False
    keep = True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep = value.lower() != b"close"
        headers.append((name, value))
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    elif length is not None:
        body = await reader.readexactly(length)
    else:  # no length: the body runs to the end of the connection
        body, keep = await reader.read(), False
    return Answer(status, headers, body), keep
