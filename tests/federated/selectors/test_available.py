"""``available``, the default: today's picking (the first online devices in the round's seeded order),
through the selector interface."""

from __future__ import annotations

import pytest

from service.errors import InvalidRequest
from service.federated import selectors
from service.federated.selection import pick
from service.federated.selectors.available import Available
from service.federated.selectors.base import Outcome, SelectorSettings
from service.federated.spec import RoundSpec
from tests.federated.selectors.helpers import night, profiles


def test_the_default_selector_picks_exactly_what_pick_does() -> None:
    devices = [f"d{i:03d}" for i in range(200)]
    asleep = {i: night() for i in devices[::3]}
    selector = selectors.make(RoundSpec("m", tuple(devices)).selection, seed=5)
    assert isinstance(selector, Available)
    for number in range(1, 6):
        for at in (0.0, 150.0, 300.0):
            expected = pick(devices, profiles(asleep), 5, number, 7, at)
            assert tuple(selector.pick(devices, profiles(asleep), number, 7, at)) == expected
            selector.feedback(number, [Outcome(devices[0], "on_time", 1.0, 40, 2.0)])  # learns nothing


def test_a_round_with_none_online_waits_for_the_first() -> None:
    devices = ["a", "b", "c"]
    start, picked, offline = selectors.make("available").pick(
        devices, profiles(dict.fromkeys(devices, night())), 1, 2, 300.0
    )
    assert start == 1100.0 and len(picked) == 2 and offline == 0


def test_unknown_selection_and_bad_settings_are_refused_by_name() -> None:
    with pytest.raises(
        InvalidRequest, match="unknown selection 'best'; choose one of available, uniform, oort"
    ):
        RoundSpec("m", ("a",), selection="best").check()
    bad = SelectorSettings(alpha=-1.0)
    with pytest.raises(InvalidRequest, match="alpha"):
        RoundSpec("m", ("a",), selection="oort", selection_options=bad).check()
    assert RoundSpec("m", ("a",)).view()["selection"] == "available"
