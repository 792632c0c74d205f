"""Hostile bodies against a real ``fleet serve``: each kind of bomb, its answer, and the server's peak
resident memory growth while it was answered (target: under 100 MB each).

A bomb is a body small on the wire that would be large in memory: a zip member that inflates to a
gigabyte, an npy header declaring more elements than it carries, JSON of millions of numbers within
the JSON cap, a label array that inflates, an evaluation over a huge batch, a model declaring huge
tensors, shapes with huge dimensions. The peak is the kernel's high-water mark of the server process
(``VmHWM``), reset before each bomb (``/proc/PID/clear_refs``); an added model's worker processes are
measured apart (they are killed past ``FLEET_MODEL_WORKER_MEMORY_BYTES``).

    .venv/bin/python -m benchmarks.bombs [--inflate-mb 1024]
"""

from __future__ import annotations

import argparse
import io
import struct
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import orjson

from benchmarks._common import machine, npz, table
from service.server_process import ServerProcess

NPZ = {"content-type": "application/x-npz"}
JSON = {"content-type": "application/json"}
LIMIT_MB = 100


def npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """The header ``numpy.save`` writes (version 1.0), padded to 64 bytes."""
    text = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape!r}, }}"
    pad = 64 - (10 + len(text) + 1) % 64
    header = (text + " " * pad + "\n").encode()
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def inflating(
    members: dict[str, tuple[str, tuple[int, ...]]], keep: dict[str, np.ndarray] | None = None
) -> bytes:
    """A deflated npz whose ``members`` are zeros of the given dtype and shape (they inflate)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, (dtype, shape) in members.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                member.write(npy_header(dtype, shape))
                left = int(np.prod(shape)) * np.dtype(dtype).itemsize
                chunk = bytes(1 << 22)
                while left > 0:
                    member.write(chunk[: min(left, len(chunk))])
                    left -= len(chunk)
        for name, value in (keep or {}).items():
            with archive.open(f"{name}.npy", "w") as member:
                np.save(member, value)
    return buffer.getvalue()


def lying_header() -> bytes:
    """A stored (uncompressed) npz whose header declares 10^9 images but carries 784 bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("x.npy", npy_header("<f4", (10**9, 28, 28)) + bytes(784))
        archive.writestr("y.npy", npy_header("<f4", (10**9, 10)) + bytes(40))
    return buffer.getvalue()


def huge_tensor_model(regressor: bytes) -> bytes:
    """The regressor with its weight tensor's shape rewritten to 100,000 x 100,000."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(regressor))
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            if tensor.shape is not None and len(tensor.shape) == 2 and list(tensor.shape) == [3, 1]:
                tensor.shape = np.array([100_000, 100_000], np.int32)
    del schema
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def answer(response: httpx.Response) -> str:
    """The error's message, whichever error shape (the service's, or the Open Inference Protocol's)."""
    try:
        said = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return response.text[:80]
    return str(said["message"] if isinstance(said, dict) else said)


def rss(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def bombs(images: int, regressor: bytes) -> list[tuple[str, str, str, dict[str, str], bytes]]:
    """(name, method, path, headers, body) of each bomb; inflating ones inflate to ``images`` images."""
    cap = 4 * 1024 * 1024  # FLEET_MAX_JSON_BODY_BYTES: the largest JSON body a client may send
    row = b"[" + b",".join([b"0"] * 784) + b"]"
    numbers = b'{"inputs": {"x": [' + b",".join([row] * ((cap - 64) // (len(row) + 1))) + b"]}}"
    ids = orjson.dumps({"ids": [f"d{i:07d}" for i in range((cap - 64) // 11)]})
    deep = b'{"inputs": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    shape = b",".join([b"9" * 3000] * 640)
    huge_shape = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [' + shape + b'], "data": [0]}]}'
    declared = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [10**6, 10**6], "data": [0.0]}]}
    batch = {"x": ("<f4", (images, 28, 28)), "y": ("<f4", (images, 10))}
    x = {"x": np.zeros((10, 28, 28), np.float32)}
    device = "/v1/devices/target"
    binary = {"content-type": "application/octet-stream"}
    oip, huge = "/v2/models/target/infer", huge_tensor_model(regressor)
    return [
        ("npz: train, a member inflating", "POST", f"{device}/train", NPZ, inflating(batch)),
        ("npz: infer, a header declaring 10^9 images", "POST", f"{device}/infer", NPZ, lying_header()),
        ("JSON: infer, 2M numbers filling the JSON cap", "POST", f"{device}/infer", JSON, numbers),
        ("JSON: a round run over 380,000 IDs", "POST", "/v1/rounds", JSON, ids),
        ("JSON: nested 100,000 deep", "POST", f"{device}/infer", JSON, deep),
        ("label: evaluate, an inflating label array", "POST", f"{device}/evaluate?label=y", NPZ,
         inflating({"y": ("<i8", (images * 98,))}, keep=x)),
        ("samples: an inflating upload", "POST", f"{device}/samples", NPZ, inflating(batch)),
        ("evaluate: an inflating batch", "POST", f"{device}/evaluate", NPZ,
         inflating({"x": batch["x"], "y": ("<i8", (images,))})),
        ("dataset: an inflating upload", "PUT", "/v1/datasets/bomb", NPZ,
         inflating({f"train/{k}": v for k, v in batch.items()})),
        ("v2: a shape of 640 huge integers", "POST", oip, JSON, huge_shape),
        ("v2: a shape declaring 10^12 elements", "POST", oip, JSON, orjson.dumps(declared)),
        ("model: a tensor declared 100,000 x 100,000", "PUT", "/v1/models/huge", binary, huge),
    ]  # fmt: skip


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--inflate-mb", type=int, default=1024, help="what each inflating bomb inflates to")
    args = parser.parse_args()
    from tests.regressor import build_regressor

    sent = bombs(args.inflate_mb * 1024 * 1024 // (28 * 28 * 4), build_regressor())
    rows = []
    worst = 0
    with tempfile.TemporaryDirectory() as tmp:
        env = {"FLEET_ALLOW_MODEL_UPLOAD": "true"}
        limits = httpx.Limits(
            max_keepalive_connections=0
        )  # an answer that closes its connection costs no other
        with (
            ServerProcess(Path(tmp) / "data", env=env) as server,
            httpx.Client(base_url=server.url, timeout=300, limits=limits) as http,
        ):
            pid = server.process.pid
            x, y = np.zeros((10, 28, 28), np.float32), np.eye(10, dtype=np.float32)
            assert http.post("/v1/devices", json={"id": "target"}).status_code == 201
            for route in ("train", "samples"):
                response = http.post(f"/v1/devices/target/{route}", content=npz(x=x, y=y), headers=NPZ)
                assert response.status_code == 200, response.text
            for name, method, path, headers, body in sent:
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak to what is resident now
                before = rss(pid, "VmRSS")
                started = time.perf_counter()
                try:
                    response = http.request(method, path, headers=headers, content=body)
                    status, said = response.status_code, answer(response)
                except httpx.TransportError as exc:
                    status, said = 0, f"{type(exc).__name__}: {exc}"
                seconds = time.perf_counter() - started
                growth = rss(pid, "VmHWM") - before
                worst = max(worst, growth)
                rows.append((name, status, f"{growth / 1e6:.1f}", f"{seconds:.2f}", said[:70]))
            assert http.get("/healthz").status_code == 200
    table(
        f"Bombs ({machine()}; inflating ones to {args.inflate_mb} MB; server peak RSS growth)",
        ["bomb", "status", "peak growth MB", "seconds", "answer"],
        rows,
    )
    verdict = "under" if worst < LIMIT_MB * 1e6 else "OVER"
    print(f"worst growth: {worst / 1e6:.1f} MB, {verdict} the {LIMIT_MB} MB target")


if __name__ == "__main__":
    main()
