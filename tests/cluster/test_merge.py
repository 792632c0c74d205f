"""Merged shard answers equal what one process holding every device would answer."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.cluster.merge import merge_fleet_status, merge_metrics, merge_pages
from service.wire.view import owner_slot

IDS = sorted(f"phone-{i:04d}" for i in range(0, 400, 3))
DEVICES: list[dict[str, Any]] = [
    {"id": i, "model": "default", "resident": n % 4 == 0, "checkpoint": None} for n, i in enumerate(IDS)
]

Split = Callable[[int, str], int]
SPLITS: dict[str, Split] = {
    "rendezvous": lambda n, i: owner_slot(i, 3),
    "round-robin": lambda n, i: n % 3,
    "uneven, one empty": lambda n, i: 0 if n % 10 else 1,
    "all on the last": lambda n, i: 2,
}


def one_process(devices: Sequence[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    """``GET /v1/devices`` of one process holding ``devices`` (sorted by ID), as ``Fleet.page`` does it."""
    ids = [d["id"] for d in devices]
    start = bisect.bisect_right(ids, after) if after else 0
    shown = list(devices[start : start + limit])
    more = start + limit < len(ids)
    return {"devices": shown, "total": len(ids), "next_after": shown[-1]["id"] if more and shown else None}


def shards(split: Split) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = [[], [], []]
    for n, device in enumerate(DEVICES):
        out[split(n, device["id"])].append(device)
    return out


def fan_out(split: Split, after: str | None, limit: int) -> dict[str, Any]:
    return merge_pages([one_process(shard, after, limit) for shard in shards(split)], limit)


def test_the_splits_are_uneven_and_include_empty_shards() -> None:
    sizes = {name: sorted(len(shard) for shard in shards(split)) for name, split in SPLITS.items()}
    assert sizes["uneven, one empty"][0] == 0 and sizes["all on the last"] == [0, 0, len(IDS)]
    assert all(sum(s) == len(IDS) for s in sizes.values())


AFTERS = [None, "", "a", IDS[0], IDS[10], IDS[10] + "x", IDS[-8], IDS[-2], IDS[-1], "zzz"]
LIMITS = [1, 2, 7, 8, 50, len(IDS) - 11, len(IDS), 1000]


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
def test_merged_page_equals_the_one_process_page(split: Split) -> None:
    for after in AFTERS:
        for limit in LIMITS:
            assert fan_out(split, after, limit) == one_process(DEVICES, after, limit), (after, limit)


def test_the_last_page_ends_when_exactly_limit_devices_remain() -> None:
    after = IDS[-8]  # 7 devices follow it
    for split in SPLITS.values():
        assert fan_out(split, after, 7)["next_after"] is None
        assert fan_out(split, after, 6)["next_after"] == IDS[-2]


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
@pytest.mark.parametrize("limit", [1, 9, 40, 1000])
def test_walking_the_cursor_lists_every_device_once_in_order(split: Split, limit: int) -> None:
    seen: list[str] = []
    after: str | None = None
    for _ in range(len(IDS) + 1):
        page = fan_out(split, after, limit)
        assert page["total"] == len(IDS)
        seen += [d["id"] for d in page["devices"]]
        after = page["next_after"]
        if after is None:
            break
        assert len(page["devices"]) == limit
    assert after is None
    assert seen == IDS


def test_device_dicts_pass_through_unchanged() -> None:
    page = fan_out(SPLITS["round-robin"], IDS[3], 5)
    assert page["devices"] == DEVICES[4:9]
    assert all(a is b for a, b in zip(page["devices"], DEVICES[4:9], strict=True))


def test_no_pages_merge_to_an_empty_last_page() -> None:
    assert merge_pages([], 10) == {"devices": [], "total": 0, "next_after": None}


def status(devices: int, max_resident: int | None, rss: int, **extra: Any) -> dict[str, Any]:
    return {
        "devices": devices,
        "resident": devices // 2,
        "max_resident": max_resident,
        "max_resident_bytes": None if max_resident is None else max_resident * 1000,
        "interpreter_bytes": 1000,
        "activations": devices * 3,
        "evictions": devices + 1,
        "spills": devices - 1,
        "process_rss_bytes": rss,
        **extra,
    }


def test_fleet_status_sums_counts_caps_and_memory() -> None:
    shard_statuses = [status(10, 4, 100), status(20, 6, 200), status(30, 8, 300)]
    assert merge_fleet_status(shard_statuses, front_rss_bytes=7) == {
        "devices": 60,
        "resident": 5 + 10 + 15,
        "max_resident": 18,
        "max_resident_bytes": 18_000,
        "interpreter_bytes": 1000,
        "activations": 180,
        "evictions": 63,
        "spills": 57,
        "process_rss_bytes": 607,
    }


def test_fleet_has_no_cap_if_any_shard_has_none() -> None:
    merged = merge_fleet_status([status(10, 4, 100), status(20, None, 200)], front_rss_bytes=0)
    assert merged["max_resident"] is None
    assert merged["max_resident_bytes"] is None
    assert merged["devices"] == 30


def test_unknown_status_keys_sum_ints_else_take_the_first() -> None:
    merged = merge_fleet_status(
        [
            status(1, 1, 1, queued=2, draining=True, mode="shard", load=0.5),
            status(2, 1, 1, queued=5, draining=True, mode="other", load=0.25),
        ],
        front_rss_bytes=0,
    )
    assert merged["draining"] is True
    assert (merged["queued"], merged["mode"], merged["load"]) == (7, "shard", 0.5)


def test_jobs_and_requests_add_up_route_by_route() -> None:
    def route(
        method: str, path: str, n: int, errors: int, seconds: float | pytest.Approx[float], buckets: list[int]
    ) -> dict:
        return {"method": method, "route": path, "requests": n, "errors": errors, "seconds": seconds,
                "buckets": buckets}  # fmt: skip

    merged = merge_fleet_status(
        [
            status(1, 1, 1, jobs={"running": 1, "succeeded": 2}, time=10.0, request_buckets=[0.1],
                   requests=[route("GET", "/v1/fleet", 3, 1, 0.3, [2, 3])]),
            status(1, 1, 1, jobs={"succeeded": 4}, time=12.5, request_buckets=[0.1],
                   requests=[route("POST", "/v1/rounds", 1, 0, 0.5, [0, 1]),
                             route("GET", "/v1/fleet", 2, 0, 0.1, [2, 2])]),
        ],
        front_rss_bytes=0,
    )  # fmt: skip
    assert merged["jobs"] == {"running": 1, "succeeded": 6}
    assert merged["time"] == 12.5 and merged["request_buckets"] == [0.1]
    assert merged["requests"] == [
        route("GET", "/v1/fleet", 5, 1, pytest.approx(0.4), [4, 5]),
        route("POST", "/v1/rounds", 1, 0, 0.5, [0, 1]),
    ]


def test_fleet_status_needs_a_shard() -> None:
    with pytest.raises(ValueError):
        merge_fleet_status([], front_rss_bytes=1)


BUCKETS = (0.01, 0.1, 1.0)
SHARD_REQUESTS: list[dict[tuple[str, str], int]] = [
    {("GET", "200"): 5, ("POST", "201"): 2},
    {("GET", "200"): 7, ("GET", "404"): 1},
    {("GET", "200"): 11},
]
"""Requests per (method, status) label set; GET 404 and POST 201 are each on one shard only."""
SHARD_DEVICES = [10, 0, 32]
SHARD_OBSERVATIONS: list[dict[str, list[float]]] = [
    {"save": [0.005, 0.05, 0.5, 5.0]},
    {"save": [0.02, 0.2], "restore": [0.001, 2.0]},
    {},
]
"""Checkpoint seconds by operation; "restore" is on one shard only, the last shard observed nothing."""


def shard_exposition(shard: int) -> str:
    registry = CollectorRegistry()
    requests = Counter(
        "fleet_http_requests", "HTTP requests finished", ["method", "status"], registry=registry
    )
    for (method, code), n in SHARD_REQUESTS[shard].items():
        requests.labels(method, code).inc(n)
    Gauge("fleet_devices", "devices registered", registry=registry).set(SHARD_DEVICES[shard])
    seconds = Histogram(
        "fleet_checkpoint_duration_seconds", "checkpoint durations", ["operation"], buckets=BUCKETS,
        registry=registry,
    )  # fmt: skip
    for operation, values in SHARD_OBSERVATIONS[shard].items():
        for value in values:
            seconds.labels(operation).observe(value)
    if shard == 2:
        Gauge("fleet_only_here", "a family only the last shard has", registry=registry).set(3)
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in out, f"{key} twice"
            out[key] = sample.value
    return out


def series(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


@pytest.fixture(scope="module")
def merged() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return samples(merge_metrics([shard_exposition(s) for s in range(3)]))


def test_counters_sum_per_label_set_including_one_shard_sets(
    merged: Mapping[tuple[str, frozenset[tuple[str, str]]], float],
) -> None:
    expected: dict[tuple[str, str], int] = {}
    for shard in SHARD_REQUESTS:
        for key, n in shard.items():
            expected[key] = expected.get(key, 0) + n
    assert expected == {("GET", "200"): 23, ("POST", "201"): 2, ("GET", "404"): 1}
    for (method, code), n in expected.items():
        assert merged[series("fleet_http_requests_total", method=method, status=code)] == n
    assert len([k for k in merged if k[0] == "fleet_http_requests_total"]) == len(expected)


def test_gauges_sum_and_a_family_on_one_shard_passes_through(
    merged: Mapping[tuple[str, frozenset[tuple[str, str]]], float],
) -> None:
    assert merged[series("fleet_devices")] == sum(SHARD_DEVICES)
    assert merged[series("fleet_only_here")] == 3


def test_histogram_buckets_sums_and_counts_add_up(
    merged: Mapping[tuple[str, frozenset[tuple[str, str]]], float],
) -> None:
    name = "fleet_checkpoint_duration_seconds"
    for operation in ("save", "restore"):
        values = [v for shard in SHARD_OBSERVATIONS for v in shard.get(operation, [])]
        for bound in (*BUCKETS, math.inf):
            le = "+Inf" if bound == math.inf else repr(bound)
            assert merged[series(f"{name}_bucket", operation=operation, le=le)] == sum(
                v <= bound for v in values
            )
        assert merged[series(f"{name}_count", operation=operation)] == len(values)
        assert merged[series(f"{name}_sum", operation=operation)] == pytest.approx(sum(values))


def test_each_family_keeps_one_help_and_type_in_first_seen_order() -> None:
    texts = [shard_exposition(s) for s in range(3)]
    text = merge_metrics(texts)
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    helps = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")]
    first_seen = list(
        dict.fromkeys(line.split()[2] for t in texts for line in t.splitlines() if line[:6] == "# TYPE")
    )
    assert types == helps == first_seen
    assert types[-1] == "fleet_only_here"
    assert "# TYPE fleet_http_requests_total counter" in text.splitlines()
    families = {f.name: (f.type, f.documentation) for f in text_string_to_metric_families(text)}
    assert families["fleet_http_requests"] == ("counter", "HTTP requests finished")
    assert families["fleet_checkpoint_duration_seconds"] == ("histogram", "checkpoint durations")


def test_samples_keep_first_seen_order() -> None:
    text = merge_metrics([shard_exposition(s) for s in range(3)])
    family = next(f for f in text_string_to_metric_families(text) if f.name == "fleet_http_requests")
    assert [(s.labels["method"], s.labels["status"]) for s in family.samples] == [
        ("GET", "200"), ("POST", "201"), ("GET", "404"),
    ]  # fmt: skip


HAND_WRITTEN = """\
# HELP odd a counter written without _total, help with a \\\\ and a \\n in it
# TYPE odd counter
odd{path="C:\\\\dir",quote="say \\"hi\\"",nl="a\\nb"} 3
# HELP temps degrees
# TYPE temps gauge
temps{where="hot"} +Inf
temps{where="cold"} -Inf
temps{where="broken"} NaN
temps{where="tiny"} 1.5e-300
temps{where="huge"} 1.2345678901234e+21
temps{where="exact"} 0.1
# TYPE latency summary
latency{quantile="0.5"} 0.25
latency_sum 12.5
latency_count 50
stray_sample{a="b"} 42 1700000000000
# HELP "fleet.dotted" a UTF-8 name, quoted
# TYPE "fleet.dotted" gauge
{"fleet.dotted","lab.el"="v"} 4
"""


def families_of(text: str) -> list[tuple[str, str, str, list[tuple[str, dict[str, str], Any]]]]:
    """Names, help, type, and samples (NaN as a string so that it compares equal)."""
    return [
        (
            f.name,
            f.documentation,
            f.type,
            [(s.name, s.labels, "NaN" if math.isnan(s.value) else s.value) for s in f.samples],
        )
        for f in text_string_to_metric_families(text)
    ]


def real_exposition() -> str:
    registry = CollectorRegistry()
    Counter("c", "c", ["l"], registry=registry).labels('we\\ird "l"\nabel').inc(2.5)
    Counter("unused", "no series yet", ["l"], registry=registry)
    Summary("s", "s", registry=registry).observe(0.3)
    histogram = Histogram("h", "h", buckets=(1e-9, 0.1, 12345678.0), registry=registry)
    histogram.observe(0.05)
    histogram.observe(1e9)
    return generate_latest(registry).decode() + shard_exposition(1)


@pytest.mark.parametrize("text", [HAND_WRITTEN, real_exposition()], ids=["hand-written", "prometheus_client"])
def test_one_shard_round_trips(text: str) -> None:
    assert families_of(merge_metrics([text])) == families_of(text)


def test_values_parse_back_exactly() -> None:
    merged = samples(merge_metrics([HAND_WRITTEN, HAND_WRITTEN]))
    assert merged[series("temps", where="tiny")] == 2 * 1.5e-300
    assert merged[series("temps", where="huge")] == 2 * 1.2345678901234e21
    assert merged[series("temps", where="exact")] == 0.1 + 0.1
    assert merged[series("temps", where="hot")] == math.inf
    assert math.isnan(merged[series("temps", where="broken")])
    assert merged[series("odd_total", path="C:\\dir", quote='say "hi"', nl="a\nb")] == 6
    assert merged[series("latency_count")] == 100
    assert merged[series("stray_sample", a="b")] == 84
    assert merged[series("fleet.dotted", **{"lab.el": "v"})] == 8


def test_no_texts_merge_to_nothing() -> None:
    assert merge_metrics([]) == ""


def test_times_take_the_earliest_shards_not_their_sum() -> None:
    texts = [shard_exposition(s) for s in range(3)]
    created = [samples(t)[series("fleet_http_requests_created", method="GET", status="200")] for t in texts]
    out = samples(merge_metrics(texts))
    assert out[series("fleet_http_requests_created", method="GET", status="200")] == min(created)
    assert out[series("fleet_http_requests_total", method="GET", status="200")] == sum(
        samples(t)[series("fleet_http_requests_total", method="GET", status="200")] for t in texts
    )
