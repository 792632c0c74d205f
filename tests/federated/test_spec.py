"""A run's spec: the values its fields may take, and how it shows."""

from __future__ import annotations

import math
from typing import Any

import pytest

from service.errors import InvalidRequest
from service.federated.spec import RoundSpec

MODEL = "fashion_mnist"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"deadline": -1.0}, "deadline"),
        ({"deadline": 0.0}, "deadline"),
        ({"deadline": math.inf}, "deadline"),
        ({"deadline": 5e-324}, "deadline"),
        ({"deadline": 0.0009}, "deadline"),
        ({"deadline": 1e10}, "deadline"),
        ({"deadline": math.nan}, "deadline"),
        ({"start_time": math.inf}, "start_time"),
        ({"start_time": math.nan}, "start_time"),
        ({"start_time": 1e13}, "start_time"),
        ({"stragglers": "wait"}, "stragglers"),
        ({"start_time": -5.0}, "start_time"),
    ],
)
def test_bad_specs_are_refused_naming_the_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidRequest, match=named):
        RoundSpec(MODEL, ("a",), **fields).check()


def test_spec_view_shows_the_new_fields() -> None:
    view = RoundSpec(MODEL, ("a", "b"), deadline=2.5, stragglers="stale", start_time=10.0).view()
    assert (view["deadline"], view["stragglers"], view["start_time"]) == (2.5, "stale", 10.0)


def test_the_smallest_and_largest_deadlines_and_start_times_are_taken() -> None:
    for fields in ({"deadline": 0.001}, {"deadline": 1e9}, {"start_time": 1e12}, {"start_time": 0}):
        RoundSpec(MODEL, ("a",), **fields).check()


def test_a_runs_view_shows_only_the_settings_its_strategy_and_selector_read() -> None:
    def view(aggregation: str, selection: str = "available") -> dict[str, Any]:
        spec = RoundSpec("m", ("a", "b"), aggregation=aggregation, selection=selection)
        return spec.view()

    fedavg = view("fedavg")
    assert fedavg["options"] == {} and fedavg["selection_options"] == {}
    assert fedavg["server"] == {"kind": "fedavg", "learning_rate": 1.0}
    assert view("fedprox")["options"] == {"proximal_mu": 0.01}
    assert set(view("krum")["options"]) == {"byzantine", "krum_keep"}
    assert set(view("fedadam")["server"]) == {"kind", "learning_rate", "beta1", "beta2", "tau"}
    assert view("fedavgm")["server"]["momentum"] == 0.9
    assert view("none")["server"] is None
    assert "epsilon" in view("fedavg", "oort")["selection_options"]
    assert view("fedavg", "uniform")["selection_options"] == {}
