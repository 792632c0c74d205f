"""``oort``: utility-based selection in the manner of Oort (loss and speed), from the runner's feedback:
it exploits high-loss fast devices, explores devices never heard from at the epsilon rate, picks only
online devices, keeps one entry per device that trained, and picks alike for the same seed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from service.api import create_app
from service.config import Settings
from service.federated import selectors
from service.federated.federation import Federation
from service.federated.selectors.base import Outcome, SelectorSettings
from service.federated.selectors.oort import Oort
from tests.federated.selectors.helpers import night, profiles
from tests.federated.test_round_profiles import FAST, SLOW, make, rounds_of, run
from tests.local import local_client

EXPLOIT_ONLY = SelectorSettings(epsilon=0.0, epsilon_min=0.0)


def oort(settings: SelectorSettings = EXPLOIT_ONLY, seed: int = 0) -> Oort:
    made = selectors.make("oort", settings, seed)
    assert isinstance(made, Oort)
    return made


def heard(selector: Oort, number: int, devices: Sequence[str], loss: float, seconds: float) -> None:
    selector.feedback(number, [Outcome(i, "on_time", seconds, 40, loss) for i in devices])


def groups() -> tuple[list[str], list[str], list[str], list[str]]:
    """Five devices each: high loss and fast, low loss and fast, high loss and slow, low loss and slow."""
    return tuple([f"{name}{i}" for i in range(5)] for name in ("hf", "lf", "hs", "ls"))  # type: ignore[return-value]


def fed(selector: Oort) -> list[str]:
    """The four groups heard from in round 1: loss 2.0 or 0.1, 1 s or 100 s; all of them."""
    high_fast, low_fast, high_slow, low_slow = groups()
    heard(selector, 1, high_fast, 2.0, 1.0)
    heard(selector, 1, low_fast, 0.1, 1.0)
    heard(selector, 1, high_slow, 2.0, 100.0)
    heard(selector, 1, low_slow, 0.1, 100.0)
    return high_fast + low_fast + high_slow + low_slow


def test_it_prefers_high_loss_fast_devices_over_low_loss_slow_ones() -> None:
    high_fast, low_fast, *_ = groups()
    for seed in range(5):
        selector = oort(seed=seed)
        devices = fed(selector)
        for number in range(2, 6):
            assert selector.pick(devices, profiles(), number, 5, 0.0).devices == high_fast
            # Among the fast, loss ranks; a slow device's utility is cut by (T / t) ** 2 = 1e-4.
            assert selector.pick(devices, profiles(), number, 10, 0.0).devices == sorted(high_fast + low_fast)
    selector = oort()
    fed(selector)
    s = selector.scores(sorted(selector.arms), 2)
    bonus = math.sqrt(0.1 * math.log(2) / 1)
    assert s["hf0"] == pytest.approx(1 + bonus, rel=1e-3) and s["lf0"] == pytest.approx(bonus, abs=1e-3)
    assert s["hs0"] == pytest.approx((1 + bonus) * (1 / 100) ** 2, rel=1e-3)
    assert s["hf0"] > s["lf0"] > s["hs0"] > s["ls0"]


def test_alpha_zero_ignores_speed_and_a_preferred_duration_spares_the_slow() -> None:
    high_fast, _, high_slow, _ = groups()
    for settings in (
        SelectorSettings(epsilon=0.0, epsilon_min=0.0, alpha=0.0),
        SelectorSettings(epsilon=0.0, epsilon_min=0.0, preferred_seconds=100.0),
    ):
        selector = oort(settings)
        devices = fed(selector)
        picked = selector.pick(devices, profiles(), 2, 10, 0.0).devices
        assert picked == sorted(high_fast + high_slow)


def test_it_explores_unexplored_devices_at_the_epsilon_rate() -> None:
    devices = [f"d{i:03d}" for i in range(200)]
    settings = SelectorSettings(epsilon=0.9, epsilon_decay=0.8, epsilon_min=0.3)
    selector = oort(settings, seed=1)
    for number in range(1, 11):
        epsilon = max(0.9 * 0.8 ** (number - 1), 0.3)
        assert selector.epsilon(number) == pytest.approx(epsilon)
        known = set(selector.arms)
        picked = selector.pick(devices, profiles(), number, 10, 0.0).devices
        new = [i for i in picked if i not in known]
        assert len(picked) == 10 and len(new) == 10 - min(int(10 * (1 - epsilon) + 1e-9), len(known))
        heard(selector, number, picked, 1.0 + number, 1.0)
    assert len(new) == 3  # epsilon at its floor: 3 of 10 explore, 7 exploit


def test_it_picks_only_online_devices_and_waits_when_none_is() -> None:
    devices = [f"d{i}" for i in range(12)]
    asleep = {i: night() for i in devices[::2]}
    selector = oort(SelectorSettings(epsilon=0.5, epsilon_min=0.5))
    heard(selector, 1, devices[:6], 2.0, 1.0)  # three of them asleep
    start, picked, offline = selector.pick(devices, profiles(asleep), 2, 4, 0.0)
    assert start == 0.0 and len(picked) == 4 and not set(picked) & set(asleep)
    assert offline >= 3  # the sleepers it heard from, and any unexplored ones met asleep
    everyone_asleep = dict.fromkeys(devices, night())
    start, picked, offline = selector.pick(devices, profiles(everyone_asleep), 2, 4, 300.0)
    assert start == 1100.0 and len(picked) == 4


def test_it_keeps_only_devices_that_trained_and_is_reproducible() -> None:
    devices = [f"d{i:04d}" for i in range(1000)]

    def picks(seed: int) -> tuple[list[list[str]], Oort]:
        # Equal utilities and a low cut-off: the exploitation draw has many to choose from.
        selector = oort(SelectorSettings(epsilon=0.5, epsilon_decay=1.0, epsilon_min=0.5, cut_off=0.5), seed)
        seen = []
        for number in range(1, 9):
            picked = selector.pick(devices, profiles(), number, 10, 0.0).devices
            seen.append(picked)
            fates = ["on_time", "straggler", "dropped", "failed"]
            selector.feedback(
                number,
                [Outcome(i, fates[k % 4], 1.0, 40, 1.0 if k % 4 < 2 else None) for k, i in enumerate(picked)],
            )
        return seen, selector

    first, selector = picks(5)
    again, _ = picks(5)
    other, _ = picks(6)
    assert first == again and first != other
    trained = {i for picked in first for k, i in enumerate(picked) if k % 4 < 2}
    assert set(selector.arms) == trained and len(selector.arms) <= 8 * 10


# -- through the runner and the API ------------------------------------------------------------


def test_a_run_feeds_the_selector_and_two_runs_with_one_seed_pick_alike(federation: Federation) -> None:
    ids = make(federation, "oort", [FAST, SLOW, FAST, SLOW, FAST, SLOW])
    options = SelectorSettings(epsilon=0.0, epsilon_min=0.0)
    spec: dict[str, Any] = {"rounds": 4, "participants": 2, "selection": "oort", "selection_options": options}
    view = run(federation, ids, **spec)
    assert view["state"] == "succeeded", view
    assert view["spec"]["selection"] == "oort" and view["spec"]["selection_options"]["epsilon"] == 0.0
    first, *later = [r["participants"] for r in rounds_of(view)]
    # Round 1 has heard from no one: it explores. With epsilon 0 every later round exploits what round 1
    # heard: the same two devices (if the runner did not feed it back, it would explore every round).
    assert all(picked == first for picked in later)
    again = run(federation, ids, **spec)
    assert [r["participants"] for r in rounds_of(again)] == [first, *later]


def test_the_rounds_api_takes_the_selection_and_refuses_bad_settings_by_name(tmp_path: Path) -> None:
    with local_client(create_app(Settings(data_dir=tmp_path / "data"))) as client:
        assert client.post("/v1/devices/bulk-create", json={"ids": ["sel-1"]}).status_code == 201
        for body, field in (
            ({"selection": "best"}, "selection"),
            ({"selection": "oort", "selection_options": {"epsilon": 1.5}}, "epsilon"),
            ({"selection": "oort", "selection_options": {"alpha": -1}}, "alpha"),
            ({"selection": "oort", "selection_options": {"preferred_seconds": 0}}, "preferred_seconds"),
            ({"selection": "oort", "selection_options": {"cut_off": 0}}, "cut_off"),
        ):
            response = client.post("/v1/rounds", json={"ids": ["sel-1"], **body})
            assert response.status_code == 422 and field in response.text, response.text
        crossed = {"selection": "oort", "selection_options": {"epsilon": 0.1, "epsilon_min": 0.5}}
        response = client.post("/v1/rounds", json={"ids": ["sel-1"], **crossed})
        assert response.status_code == 400 and "epsilon_min" in response.text, response.text
        good = {"selection": "oort", "selection_options": {"epsilon": 0.5, "preferred_seconds": 30}}
        response = client.post("/v1/rounds", json={"ids": ["sel-1"], **good})
        assert response.status_code == 202, response.text
        spec = response.json()["spec"]
        assert spec["selection"] == "oort" and spec["selection_options"]["preferred_seconds"] == 30
        default = client.post("/v1/rounds", json={"ids": ["sel-1"]}).json()["spec"]
        assert default["selection"] == "available"
