"""Names and files on disk: safe IDs, paths kept inside the data directory, atomic replacement."""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from service.errors import CorruptState, InvalidId, StorageError

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""Device and model IDs: a letter or digit, then letters, digits, ``_``, ``.`` or ``-``; at most 128."""


def check_id(kind: str, value: str) -> str:
    """``value`` if it is a safe ID (no separators, no ``..``, bounded length); else InvalidId."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or ".." in value:
        shown = value if isinstance(value, str) and len(value) <= 64 else f"{str(value)[:64]}..."
        raise InvalidId(
            f"{kind} ID {shown!r} is not allowed: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit, without '..'"
        )
    return value


def child(root: Path, name: str) -> Path:
    """``root / name``, refusing anything that would resolve outside ``root`` (a second line of defence)."""
    path = (root / name).resolve()
    if path.parent != root.resolve():
        raise InvalidId(f"{name!r} does not name an entry of {root}")
    return path


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_target(path: Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    A crash before the rename leaves the previous file intact; on error the temporary is removed.
    With ``durable``, the data and the rename are flushed to disk first.
    """
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"could not write {path.name} in {path.parent}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    with atomic_target(path, durable) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, value: object, durable: bool = False) -> None:
    """Compact JSON (orjson: a non-finite float becomes null, so the file always reads back)."""
    write_atomic(path, orjson.dumps(value), durable)


def read_json(path: Path, default: object = None) -> Any:
    """``path``'s JSON, or ``default`` when it does not exist; CorruptState when it cannot be read."""
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return default
    except (OSError, orjson.JSONDecodeError) as exc:
        raise CorruptState(f"{path.parent.name}/{path.name} cannot be read: {exc}") from exc
