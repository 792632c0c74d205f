"""A schema fuzzer against the live OpenAPI of a real ``fleet serve``: no server errors (a 503 with
Retry-After, a shard restarting, is a deliberate answer), no call unanswered, and the event loop's longest
stall while it ran is reported.

Schemathesis runs every phase (examples, coverage, fuzzing, and stateful sequences that follow the
OpenAPI links from what creates a device, dataset, round or job to what uses it), with a fixed seed and a
small budget; ``python -m benchmarks.schema_fuzz`` runs the full one and prints what each operation
answered.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from benchmarks.schema_fuzz import Report, fuzz, fuzz_server
from service.server_process import ServerProcess

SEED = 22
MAX_STALL = 2.0
"""Seconds: no probe of /healthz may wait longer (a shape of 3,000-digit dims once took 7-20 s)."""


def _check(report: Report, shards: int) -> None:
    print(
        f"\n{shards} shard(s): {report.calls} calls in {report.seconds:.0f} s, "
        f"{len(report.statuses)} operations called, {len(report.reached())} reached past 404/405/422; "
        f"longest event-loop stall {report.longest_stall * 1000:.0f} ms over {report.probes} probes"
    )
    assert report.calls > 500, report.output
    assert not report.server_errors, "\n".join(report.server_errors[:20])
    assert report.timeouts == 0, report.output
    assert report.longest_stall < MAX_STALL


def test_single_process_answers_no_server_error(tmp_path: Path) -> None:
    report = fuzz_server(tmp_path / "data", seed=SEED, max_examples=10, max_time=60)
    _check(report, 1)
    assert len(report.statuses) >= 55  # of 60 operations: every one is called


def test_two_shards_answer_no_server_error(tmp_path: Path) -> None:
    """The front checks some bodies itself before it forwards them: the same answers as one process."""
    pytest.importorskip("ray")
    with ServerProcess(tmp_path / "data", "--shards", "2", timeout=240) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            json = {"content-type": "application/json"}
            assert client.post("/v1/devices", content=b"\x00", headers=json).status_code == 400
            for body in ({"count": 65}, {"count": "two"}, {}):
                assert client.post("/v1/fleet/shards", json=body).status_code == 422, body
            assert client.post("/v1/devices/bulk-create", json={"count": 0}).status_code == 422
            assert client.post("/v1/rounds", json={"all": True, "seed": 2**63}).status_code == 422
        report = fuzz(server.url, seed=SEED, max_examples=5, max_time=60)
    _check(report, 2)
