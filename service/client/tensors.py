"""Tensors on the wire, as the client sends and reads them: npz (``binary``) or JSON."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import httpx
import numpy as np

NPZ = "application/x-npz"
Tensors = Mapping[str, Any]


def tensor_body(inputs: Tensors, binary: bool) -> dict[str, Any]:
    """Request arguments carrying ``inputs``: npz when ``binary``, else JSON; nothing when empty."""
    if not inputs:
        return {"headers": {}}
    if binary:
        buffer = io.BytesIO()
        np.savez(buffer, **{k: np.asarray(v) for k, v in inputs.items()})
        return {"content": buffer.getvalue(), "headers": {"content-type": NPZ}}
    return {"json": {"inputs": {k: np.asarray(v).tolist() for k, v in inputs.items()}}, "headers": {}}


def tensor_outputs(response: httpx.Response) -> dict[str, np.ndarray]:
    """A signature's outputs by name, from an npz or a JSON answer."""
    if response.headers.get("content-type", "").startswith(NPZ):
        with np.load(io.BytesIO(response.content), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    return {name: np.asarray(value) for name, value in response.json()["outputs"].items()}
