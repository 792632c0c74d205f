"""Prometheus metrics of one app, in a registry of its own (several apps in one process never collide).

Requests are counted as they finish (``RequestMetrics``, a sink of ``RequestObserver``); the fleet's
own counts (``Fleet.stats``, ``Fleet.residency_stats()``, ``Fleet.jobs_by_state()``) are plain numbers
that ``FleetCollector`` reads at scrape time, so the fleet layer never imports prometheus_client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, ProcessCollector
from prometheus_client import Histogram as PromHistogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from service.api.observe import RequestRecord
from service.fleet import Fleet
from service.fleet.jobs import JobState
from service.fleet.stats import Histogram, HistogramSnapshot

REQUEST_SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""From an inference on a resident interpreter (under a millisecond) to a bulk creation (seconds)."""


class RequestMetrics:
    """Requests by method, route template and status; their durations by method and route template."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "fleet_http_requests", "HTTP requests finished", ["method", "route", "status"], registry=registry
        )
        self.seconds = PromHistogram(
            "fleet_http_request_duration_seconds",
            "HTTP request durations, from the first byte in to the last byte out",
            ["method", "route"],
            buckets=REQUEST_SECONDS_BUCKETS,
            registry=registry,
        )
        self._series: dict[tuple[str, str, int], tuple[Counter, PromHistogram, RouteTally]] = {}
        """Labelled children by (method, route, status): ``labels()`` costs more than the observation."""
        self._routes: dict[tuple[str, str], RouteTally] = {}
        """The same counts as plain numbers, for ``GET /v1/fleet`` (one per route template: bounded)."""

    def observe(self, record: RequestRecord) -> None:
        key = (record.method, record.route, record.status)
        series = self._series.get(key)
        if series is None:
            requests = self.requests.labels(record.method, record.route, str(record.status))
            tally = self._routes.setdefault((record.method, record.route), RouteTally())
            series = self._series[key] = (requests, self.seconds.labels(record.method, record.route), tally)
        series[0].inc()
        series[1].observe(record.seconds)
        series[2].observe(record.status, record.seconds)

    def by_route(self) -> list[dict[str, Any]]:
        """Per route since start: method, route, requests, errors (status 400 and up), seconds
        (sum) and cumulative counts at each of ``REQUEST_SECONDS_BUCKETS``, then the total."""
        return [
            {"method": method, "route": route, **tally.view()}
            for (method, route), tally in sorted(self._routes.copy().items())
        ]


class RouteTally:
    """One route's requests, errors and durations."""

    def __init__(self) -> None:
        self.errors = 0
        self.seconds = Histogram(REQUEST_SECONDS_BUCKETS)

    def observe(self, status: int, seconds: float) -> None:
        self.errors += status >= 400
        self.seconds.observe(seconds)

    def view(self) -> dict[str, Any]:
        snapshot = self.seconds.snapshot()
        return {
            "requests": snapshot.count,
            "errors": self.errors,
            "seconds": snapshot.sum,
            "buckets": list(snapshot.cumulative_counts),
        }


def _histogram_buckets(snapshot: HistogramSnapshot) -> list[tuple[str, float]]:
    bounds = [floatToGoString(b) for b in snapshot.bounds] + ["+Inf"]
    return list(zip(bounds, snapshot.cumulative_counts, strict=True))


class FleetCollector:
    """The fleet's counts at scrape time; nothing before the fleet is open (or after it closed)."""

    def __init__(self, fleet: Callable[[], Fleet | None]) -> None:
        self._fleet = fleet

    def collect(self) -> Iterator[Metric]:
        fleet = self._fleet()
        if fleet is None:
            return
        residency = fleet.residency_stats()
        yield GaugeMetricFamily("fleet_devices", "devices registered", value=len(fleet))
        yield GaugeMetricFamily(
            "fleet_interpreters_resident", "interpreters in memory", value=residency.resident
        )
        if residency.max_resident is not None:
            yield GaugeMetricFamily(
                "fleet_interpreters_max_resident",
                "the residency cap in interpreters",
                value=residency.max_resident,
            )
        yield CounterMetricFamily(
            "fleet_activations", "interpreters created (each restores a checkpoint or spill if any)",
            value=residency.activations,
        )  # fmt: skip
        yield CounterMetricFamily(
            "fleet_evictions", "interpreters evicted past the cap", value=residency.evictions
        )
        yield CounterMetricFamily(
            "fleet_spills", "evictions that wrote unsaved weights to a spill file", value=residency.spills
        )
        yield CounterMetricFamily(
            "fleet_train_steps", "training steps run", value=fleet.stats.train_steps.value
        )
        checkpoints = HistogramMetricFamily(
            "fleet_checkpoint_duration_seconds",
            "durations of the model's save and restore signatures (checkpoints, spills, activations)",
            labels=["operation"],
        )
        for operation, histogram in sorted(fleet.stats.checkpoint_seconds.items()):
            snapshot = histogram.snapshot()
            checkpoints.add_metric([operation], _histogram_buckets(snapshot), snapshot.sum)
        yield checkpoints
        jobs = GaugeMetricFamily("fleet_jobs", "background training jobs by state", labels=["state"])
        counts = fleet.jobs_by_state()
        for state in dict.fromkeys([*get_args(JobState), *counts]):  # every known state, even at zero
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs


class Metrics:
    """One app's registry: request metrics, the fleet's counts and the process's own."""

    def __init__(self, fleet: Callable[[], Fleet | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = RequestMetrics(self.registry)
        self.registry.register(FleetCollector(fleet))
        ProcessCollector(registry=self.registry)
