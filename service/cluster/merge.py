"""Merge the shards' answers to a fleet-wide GET into what one process holding all devices would answer.

Pure functions over decoded JSON and Prometheus text; the front does the fan-out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import ALLOWUTF8
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

_SUMMED_STATUS = (
    "devices", "resident", "activations", "evictions", "spills", "train_steps", "process_rss_bytes"
)  # fmt: skip
_CAP_STATUS = ("max_resident", "max_resident_bytes")
"""Residency caps: the fleet's cap is the sum of the shards' caps, and there is none if any shard has none."""
_SHARED_STATUS = ("interpreter_bytes", "request_buckets")
"""Settings every shard shares: taken from the first."""


def merge_pages(pages: Sequence[Mapping[str, Any]], limit: int) -> dict[str, Any]:
    """One ``GET /v1/devices?after=A&limit=L`` page from each shard's page for the same A and L.

    Each shard returns its first ``limit`` devices after A, so the fleet's first ``limit`` are among
    them; more follow if a shard had more, or if the shards together returned more than ``limit``.
    """
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    devices = sorted((device for page in pages for device in page["devices"]), key=lambda d: str(d["id"]))
    shown = devices[:limit]
    more = len(devices) > limit or any(page["next_after"] is not None for page in pages)
    return {
        "devices": shown,
        "total": sum(int(page["total"]) for page in pages),
        "next_after": shown[-1]["id"] if more and shown else None,
    }


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def merge_fleet_status(statuses: Sequence[Mapping[str, Any]], front_rss_bytes: int) -> dict[str, Any]:
    """One ``GET /v1/fleet`` answer from the shards' answers; the front's own memory counts too.

    Keys the front does not know are summed when every shard gives an int, else taken from the first.
    """
    if not statuses:
        raise ValueError("no shard status to merge")
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(key for status in statuses for key in status):
        values = [status[key] for status in statuses if key in status]
        if key in _CAP_STATUS:
            merged[key] = None if any(v is None for v in values) else sum(values)
        elif key == "jobs":
            merged[key] = sum_counts(values)
        elif key == "requests":
            merged[key] = _merge_routes(values)
        elif key == "time":
            merged[key] = max(values)
        elif key in _SHARED_STATUS:
            merged[key] = values[0]
        elif key in _SUMMED_STATUS or all(_is_int(v) for v in values):
            merged[key] = sum(values)
        else:
            merged[key] = values[0]
    merged["process_rss_bytes"] = merged.get("process_rss_bytes", 0) + front_rss_bytes
    return merged


def sum_counts(counts: Sequence[Mapping[str, int]]) -> dict[str, int]:
    """Counts by name, summed over the shards' answers (a name only some of them have counts too)."""
    total: dict[str, int] = {}
    for count in counts:
        for key, n in count.items():
            total[key] = total.get(key, 0) + n
    return total


def merge_profile_assigns(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The shards' answers to a profile assignment as one: devices and each class's count summed."""
    classes = sum_counts([r["classes"] for r in results])
    return {**results[0], "assigned": sum(r["assigned"] for r in results), "classes": classes}


def _merge_routes(lists: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The shards' per-route request counts, summed route by route (buckets element-wise)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for routes in lists:
        for route in routes:
            key = (route["method"], route["route"])
            seen = merged.get(key)
            if seen is None:
                merged[key] = {**route, "buckets": list(route["buckets"])}
                continue
            for field in ("requests", "errors", "seconds"):
                seen[field] += route[field]
            seen["buckets"] = [a + b for a, b in zip(seen["buckets"], route["buckets"], strict=True)]
    return [merged[key] for key in sorted(merged)]


class _Families(Collector):
    """Already merged families, for ``generate_latest`` to render."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _is_time(sample_name: str) -> bool:
    return sample_name.endswith("_created") or sample_name == "process_start_time_seconds"


def merge_metrics(texts: Sequence[str]) -> str:
    """One Prometheus text exposition (0.0.4) whose samples are the shards' samples summed.

    Samples match by name and label set, so a series only some shards have passes through. Values are
    summed, but for times (``*_created``, ``process_start_time_seconds``): the earliest. Each family
    keeps its first shard's HELP and TYPE, families and samples stay in first-seen order, and
    timestamps are dropped (a sum has no one time).
    """
    families: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], Sample]] = {}
    for text in texts:
        for metric in text_string_to_metric_families(text):
            if metric.name not in families:
                families[metric.name] = Metric(metric.name, metric.documentation, metric.type)
                sums[metric.name] = {}
            samples = sums[metric.name]
            for sample in metric.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                seen = samples.get(key)
                if seen is None:
                    samples[key] = Sample(sample.name, dict(sample.labels), sample.value)
                else:
                    both = (seen.value, sample.value)
                    samples[key] = seen._replace(value=min(both) if _is_time(sample.name) else sum(both))
    for name, family in families.items():
        family.samples = list(sums[name].values())
    # ALLOWUTF8: names pass through as parsed (quoted if they need it) instead of being rewritten.
    return generate_latest(_Families(list(families.values())), escaping=ALLOWUTF8).decode()
