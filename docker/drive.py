"""Drive the containerised fleet service over HTTP for docker/test.sh (standard library only).

    python3 drive.py wait      BASE_URL [TIMEOUT_S]  poll /healthz, then /readyz, until both answer 200
    python3 drive.py before    BASE_URL STATE.json   create, train, save, infer; record the logits
    python3 drive.py after     BASE_URL STATE.json   the checkpoint is still there; restore, infer, compare
    python3 drive.py protected BASE_URL              no keys configured: a client off the container's
                                                     loopback is refused with how to configure keys
    python3 drive.py shards    BASE_URL COUNT        a sharded fleet has COUNT shards, each serving
    python3 drive.py resize    BASE_URL COUNT        resize a sharded fleet to COUNT shards
    python3 drive.py owner     BASE_URL              print the host name of the node whose shard owns the device
    python3 drive.py device    BASE_URL TIMEOUT_S    poll until the device answers (its shard is back)
    python3 drive.py federated BASE_URL              assign devices data from the built-in dataset,
                                                     run two FedAvg rounds, check their versions
    python3 drive.py pages     BASE_URL              the dashboard and the API docs answer without a key,
                                                     from the image's own files; the fleet's figures with one

Requests carry ``Authorization: Bearer $FLEET_API_KEY`` when that variable is set; ``before`` also
checks that a request without it is refused. Exits non-zero with a message on the first failed check.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
import urllib.error
import urllib.request
from typing import Any

DEVICE = "docker-dev"
TRAIN_STEPS = 5
TOLERANCE = 1e-6
# Never send loopback requests through a proxy that the environment may name.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CheckFailed(Exception):
    pass


def request(
    base: str, method: str, path: str, body: Any = None, timeout: float = 60.0, key: bool = True
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    req.add_header("accept", "application/json")
    if key and os.environ.get("FLEET_API_KEY"):
        req.add_header("authorization", f"Bearer {os.environ['FLEET_API_KEY']}")
    try:
        with OPENER.open(req, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode(errors="replace")
    return status, payload


def call(base: str, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, payload = request(base, method, path, body)
    if status != expect:
        raise CheckFailed(f"{method} {path}: HTTP {status}, expected {expect}: {str(payload)[:500]}")
    print(f"  {method} {path} -> {status}")
    return payload


def batch() -> dict[str, Any]:
    """Two fixed 28x28 images in [0, 1] and their one-hot labels."""
    rng = random.Random(20261128)
    x = [[[round(rng.random(), 6) for _ in range(28)] for _ in range(28)] for _ in range(2)]
    y = [[1.0 if c == label else 0.0 for c in range(10)] for label in (3, 7)]
    return {"x": x, "y": y}


def logits(base: str) -> list[list[float]]:
    outputs = call(base, "POST", f"/v1/devices/{DEVICE}/infer", {"inputs": {"x": batch()["x"]}})["outputs"]
    values = outputs["logits"]
    if len(values) != 2 or any(len(row) != 10 for row in values):
        raise CheckFailed(f"infer: logits of unexpected shape: {str(values)[:200]}")
    return values


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    pairs = (pq for row_a, row_b in zip(a, b, strict=True) for pq in zip(row_a, row_b, strict=True))
    return max(abs(p - q) for p, q in pairs)


def device(base: str) -> dict[str, Any]:
    info: dict[str, Any] = call(base, "GET", f"/v1/devices/{DEVICE}")
    return info


def wait(base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for path in ("/healthz", "/readyz"):
        last = "no answer"
        while True:
            try:
                status, payload = request(base, "GET", path, timeout=5)
                if status == 200:
                    print(f"  GET {path} -> 200 {payload}")
                    break
                last = f"HTTP {status} {payload}"
            except (OSError, urllib.error.URLError) as exc:  # refused, reset, empty reply while starting
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise CheckFailed(f"GET {path}: not ready after {timeout:.0f} s (last: {last})")
            time.sleep(1)


def refused(base: str, path: str, status: int, needle: str) -> None:
    got, payload = request(base, "GET", path, key=False)
    message = payload.get("error", {}).get("message", "") if isinstance(payload, dict) else str(payload)
    if got != status or needle not in message:
        raise CheckFailed(
            f"GET {path} without a key: HTTP {got} {payload}, expected {status} naming {needle}"
        )
    print(f"  GET {path} without a key -> {got} ({message[:70]}...)")


def protected(base: str) -> None:
    refused(base, "/v1/devices", 403, "FLEET_API_KEYS_FILE")
    status, _ = request(base, "GET", "/healthz", key=False)
    if status != 200:
        raise CheckFailed(f"GET /healthz in protected mode: HTTP {status}, expected 200")


def before(base: str, state_path: str) -> None:
    if os.environ.get("FLEET_API_KEY"):
        refused(base, "/v1/devices", 401, "API key")
    created = call(base, "POST", "/v1/devices", {"id": DEVICE}, expect=201)
    if created["id"] != DEVICE or created["has_checkpoint"]:
        raise CheckFailed(f"create: unexpected device {created}")
    baseline = logits(base)
    inputs = batch()
    losses = []
    for _ in range(TRAIN_STEPS):
        outputs = call(base, "POST", f"/v1/devices/{DEVICE}/train", {"inputs": inputs})["outputs"]
        losses.append(float(outputs["loss"]))
    print(f"  losses: {', '.join(f'{v:.4f}' for v in losses)}")
    if not all(math.isfinite(v) for v in losses) or not losses[-1] < losses[0]:
        raise CheckFailed(f"train: the loss did not fall: {losses}")
    call(base, "POST", f"/v1/devices/{DEVICE}/save")
    info = device(base)
    if not info["has_checkpoint"] or info["train_steps"] != TRAIN_STEPS:
        raise CheckFailed(f"after save: expected a checkpoint and {TRAIN_STEPS} train steps: {info}")
    saved = logits(base)
    moved = max_diff(baseline, saved)
    if moved <= TOLERANCE:
        raise CheckFailed(f"training did not move the logits (max diff {moved:g}): a vacuous check")
    print(f"  logits after save recorded (moved {moved:.4g} from the untrained model)")
    with open(state_path, "w") as f:
        json.dump({"baseline": baseline, "saved": saved, "checkpoint_bytes": info["checkpoint_bytes"]}, f)


def after(base: str, state_path: str) -> None:
    with open(state_path) as f:
        state = json.load(f)
    info = device(base)
    if not info["has_checkpoint"] or info["checkpoint_bytes"] != state["checkpoint_bytes"]:
        raise CheckFailed(f"after the restart: the checkpoint is gone or changed: {info}")
    call(base, "POST", f"/v1/devices/{DEVICE}/restore")
    restored = logits(base)
    diff = max_diff(state["saved"], restored)
    print(f"  max |logits after restore - logits after save| = {diff:g}")
    if diff > TOLERANCE:
        raise CheckFailed(f"restored logits differ from the saved ones by {diff:g} (> {TOLERANCE:g})")


def shards(base: str, count: int) -> list[dict[str, Any]]:
    view = call(base, "GET", "/v1/fleet/shards")
    serving = [s for s in view["shards"] if s.get("state") == "serving"]
    if not view["sharded"] or len(serving) != count:
        raise CheckFailed(f"expected {count} serving shards: {view}")
    nodes = sorted({s["node"] for s in serving})
    print(f"  epoch {view['epoch']}: {count} shards on nodes {', '.join(nodes)}")
    return serving


def resize(base: str, count: int) -> None:
    before = call(base, "GET", "/v1/fleet/shards")["epoch"]
    started = time.monotonic()
    after = call(base, "POST", "/v1/fleet/shards", {"count": count})
    if after["epoch"] != before + 1 or len(after["shards"]) != count:
        raise CheckFailed(f"resize to {count}: {after}")
    print(f"  resized to {count} shards in {time.monotonic() - started:.1f} s (epoch {after['epoch']})")
    steps = device(base)["train_steps"]
    if steps != TRAIN_STEPS:
        raise CheckFailed(f"after the resize the device has {steps} train steps, not {TRAIN_STEPS}")


def owner(base: str) -> None:
    """Prints the node's host name alone (the caller reads it): requests here print nothing."""
    status, view = request(base, "GET", "/v1/fleet/shards")
    if status != 200:
        raise CheckFailed(f"GET /v1/fleet/shards: HTTP {status}")
    slot = _owner_slot(DEVICE, len(view["shards"]))
    print(next(s for s in view["shards"] if s["slot"] == slot)["node"])


def _owner_slot(device_id: str, shards: int) -> int:
    """The service's rendezvous hashing (service/wire/view.py), with the standard library only."""
    import hashlib

    def score(slot: int) -> int:
        digest = hashlib.blake2b(f"{slot}\0{device_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")

    return max(range(shards), key=score)


def device_back(base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    while time.monotonic() < deadline:
        try:
            status, body = request(base, "GET", f"/v1/devices/{DEVICE}", timeout=10)
        except OSError as exc:  # URLError, a timeout: the front itself is busy or restarting
            status, body = 0, repr(exc)
        if status == 200:
            print(f"  the device answers again after {time.monotonic() - started:.1f} s")
            return
        time.sleep(1)
    raise CheckFailed(f"the device did not answer within {timeout:.0f} s (last: HTTP {status} {body})")


def federated(base: str, timeout: float = 300.0) -> None:
    ids = [f"docker-fl-{i}" for i in range(4)]
    call(base, "POST", "/v1/devices/bulk-create", {"ids": ids}, expect=201)
    scheme = {"ids": ids, "scheme": "iid", "train_per_device": 100, "test_per_device": 20, "seed": 1}
    assigned = call(base, "POST", "/v1/datasets/fashion-mnist/assign", scheme)
    if assigned["devices"] != len(ids):
        raise CheckFailed(f"assign: {assigned}")
    body = {
        "ids": ids,
        "rounds": 2,
        "participants": 3,
        "batch_size": 20,
        "seed": 1,
        "evaluate_on": {"dataset": "fashion-mnist", "limit": 1000},
    }
    run = call(base, "POST", "/v1/rounds", body, expect=202)
    deadline = time.monotonic() + timeout
    while run["state"] in ("queued", "running"):
        if time.monotonic() > deadline:
            raise CheckFailed(f"the rounds did not end within {timeout:.0f} s: {run['progress']}")
        time.sleep(0.5)
        run = call(base, "GET", f"/v1/rounds/{run['id']}")
    if run["state"] != "succeeded" or [r["finished"] for r in run["rounds"]] != [3, 3]:
        raise CheckFailed(f"the rounds: {run['state']} {run.get('error')} {run['rounds']}")
    latest = call(base, "GET", "/v1/models/fashion_mnist/versions")["latest"]
    if latest != run["version"]:
        raise CheckFailed(f"latest version {latest}, the run made {run['version']}")
    accuracy = ", ".join(f"{r['global_accuracy']:.3f}" for r in run["rounds"])
    print(f"  2 rounds of 3 participants: versions up to {latest}, global accuracy {accuracy}")


PAGE_FILES = (
    "/ui/", "/ui/app.js", "/ui/charts.js", "/ui/app.css", "/docs", "/redoc",
    "/ui/vendor/swagger-ui/swagger-ui-bundle.js", "/ui/vendor/redoc/redoc.standalone.js",
)  # fmt: skip


def pages(base: str) -> None:
    """The pages are open and come from the package (a wheel without its static files fails here)."""
    for path in PAGE_FILES:
        status, body = request(base, "GET", path, key=False)
        if status != 200 or not body:
            raise CheckFailed(f"GET {path} without a key: HTTP {status}, expected 200 and a body")
        print(f"  GET {path} -> {status} ({len(body)} characters)")
    status = call(base, "GET", "/v1/fleet")
    missing = {"train_steps", "jobs", "requests", "time"} - set(status)
    if missing:
        raise CheckFailed(f"GET /v1/fleet lacks the dashboard's figures: {sorted(missing)}")


def main(argv: list[str]) -> int:
    try:
        if len(argv) >= 2 and argv[0] == "wait":
            wait(argv[1].rstrip("/"), float(argv[2]) if len(argv) > 2 else 120.0)
        elif len(argv) == 3 and argv[0] in ("before", "after"):
            (before if argv[0] == "before" else after)(argv[1].rstrip("/"), argv[2])
        elif len(argv) == 2 and argv[0] == "protected":
            protected(argv[1].rstrip("/"))
        elif len(argv) == 3 and argv[0] == "shards":
            shards(argv[1].rstrip("/"), int(argv[2]))
        elif len(argv) == 3 and argv[0] == "resize":
            resize(argv[1].rstrip("/"), int(argv[2]))
        elif len(argv) == 2 and argv[0] == "owner":
            owner(argv[1].rstrip("/"))
        elif len(argv) == 3 and argv[0] == "device":
            device_back(argv[1].rstrip("/"), float(argv[2]))
        elif len(argv) == 2 and argv[0] == "federated":
            federated(argv[1].rstrip("/"))
        elif len(argv) == 2 and argv[0] == "pages":
            pages(argv[1].rstrip("/"))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except CheckFailed as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
