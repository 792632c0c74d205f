"""Tensors on the wire: JSON (nested lists) and ``application/x-npz`` (numpy's savez)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping

import numpy as np
from fastapi import Request, Response

from service.errors import InvalidTensor, UnsupportedMediaType
from service.runtime import SignatureSpec

NPZ = "application/x-npz"
JSON = "application/json"


def media_type(header: str | None) -> str:
    return (header or "").split(";")[0].strip().lower()


def decode_npz(body: bytes) -> dict[str, np.ndarray]:
    if not body.startswith(b"PK"):
        raise InvalidTensor(f"the body is not a {NPZ} archive (numpy.savez writes a zip file)")
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise InvalidTensor(f"the body is not a valid {NPZ} archive (numpy.savez): {exc}") from exc


def encode_npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(value) for name, value in arrays.items()})
    return buffer.getvalue()


def decode_json_inputs(body: bytes) -> Mapping[str, object]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidTensor(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("inputs", {}), dict):
        raise InvalidTensor('a JSON body must be an object {"inputs": {"<input name>": <nested lists>, ...}}')
    inputs: Mapping[str, object] = document.get("inputs", {})
    return inputs


async def read_inputs(request: Request, spec: SignatureSpec | None) -> dict[str, np.ndarray]:
    """Decode and check the request's tensors against ``spec``; an empty body means no inputs.

    ``spec`` None: the operation takes no inputs (the body must then be empty or carry none).
    """
    body = await request.body()
    kind = media_type(request.headers.get("content-type"))
    if kind not in (NPZ, JSON, ""):
        raise UnsupportedMediaType(f"content type {kind!r} is not supported; send {JSON} or {NPZ}")
    if spec is None:
        if body and (decode_npz(body) if kind == NPZ else decode_json_inputs(body)):
            raise InvalidTensor("this operation takes no inputs; send an empty body")
        return {}
    if kind == NPZ and body:
        return spec.check(decode_npz(body))
    return spec.coerce(decode_json_inputs(body) if body else {})


def to_json(value: object) -> object:
    """An array as nested lists; byte strings as text."""
    array = np.asarray(value)
    return (array.astype(str) if array.dtype.kind in "SO" else array).tolist()


def wants_npz(request: Request) -> bool:
    return NPZ in (request.headers.get("accept") or "")


def tensor_response(request: Request, outputs: Mapping[str, np.ndarray]) -> Response:
    if wants_npz(request):
        return Response(encode_npz(outputs), media_type=NPZ)
    body = {"outputs": {name: to_json(value) for name, value in outputs.items()}}
    return Response(json.dumps(body), media_type=JSON)
