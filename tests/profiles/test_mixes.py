"""Profile mixes: shares, reproducible assignment, shared class profiles, refusals, files."""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from service.errors import InvalidProfile, ProfileMixNotFound
from service.profiles import parse_profile
from service.profiles.mixes import (
    BUILTIN,
    SOURCES,
    ProfileMix,
    builtin_mixes,
    find_mix,
    load_mix,
    resolve_mix,
)

MIX: dict[str, object] = {
    "name": "three",
    "classes": [
        {"class": "low", "share": 0.2, "speed": {"lognormal": {"median": 0.25, "sigma": 0.3}}},
        {"class": "mid", "share": 0.3, "speed": 1},
        {"class": "high", "share": 0.5, "speed": {"uniform": [1.5, 2.5]}, "dropout": 0.05},
    ],
}
IDS = [f"phone-{i}" for i in range(10_000)]


def mix_with(change: dict[str, object], index: int = 0) -> dict[str, object]:
    value = copy.deepcopy(MIX)
    classes = value["classes"]
    assert isinstance(classes, list)
    classes[index].update(change)
    return value


def test_shares_are_respected_over_many_devices() -> None:
    assigned = ProfileMix.parse(MIX).assign(IDS, seed=3)
    counts = Counter(p.profile.device_class for p in assigned.values())
    for name, share in (("low", 0.2), ("mid", 0.3), ("high", 0.5)):
        assert counts[name] / len(IDS) == pytest.approx(share, abs=0.02)


def test_shares_need_not_add_up_to_one() -> None:
    value = copy.deepcopy(MIX)
    classes = value["classes"]
    assert isinstance(classes, list)
    for item, share in zip(classes, (1, 1, 2), strict=True):
        item["share"] = share
    counts = Counter(p.profile.device_class for p in ProfileMix.parse(value).assign(IDS).values())
    assert counts["high"] / len(IDS) == pytest.approx(0.5, abs=0.02)
    assert counts["low"] / len(IDS) == pytest.approx(0.25, abs=0.02)


def test_speeds_follow_each_class_distribution() -> None:
    assigned = ProfileMix.parse(MIX).assign(IDS, seed=3).values()
    by_class: dict[str, list[float]] = {}
    for profile in assigned:
        by_class.setdefault(profile.profile.device_class, []).append(profile.speed)
    assert set(by_class["mid"]) == {1.0}
    assert all(1.5 <= s <= 2.5 for s in by_class["high"])
    low = sorted(by_class["low"])
    assert low[len(low) // 2] == pytest.approx(0.25, rel=0.05)  # the median


def test_same_seed_same_assignment_whatever_order_or_subset() -> None:
    mix = ProfileMix.parse(MIX)
    everyone = mix.assign(IDS[:2000], seed=11)
    subset = IDS[1500:100:-7]  # reversed, and a part only
    alone = mix.assign(subset, seed=11)
    assert {i: everyone[i] for i in subset} == alone
    again = ProfileMix.parse(MIX).assign(IDS[:2000], seed=11)
    assert again == everyone
    other = mix.assign(IDS[:2000], seed=12)
    assert sum(other[i] != everyone[i] for i in IDS[:2000]) > 1000


def test_class_profiles_are_shared_objects_across_devices() -> None:
    assigned = ProfileMix.parse(MIX).assign(IDS[:3000], seed=1)
    by_class: dict[str, set[int]] = {}
    for profile in assigned.values():
        by_class.setdefault(profile.profile.device_class, set()).add(id(profile.profile))
    assert sorted(by_class) == ["high", "low", "mid"]
    assert all(len(ids) == 1 for ids in by_class.values()), by_class


def test_the_mix_seed_seeds_the_class_profiles() -> None:
    assigned = ProfileMix.parse(MIX).assign(IDS[:10], seed=42)
    assert {p.profile.seed for p in assigned.values()} == {42}


def test_parse_profile_shares_equal_class_profiles() -> None:
    value = {"class": "x", "compute": {"speed": 2}, "network": {"rtt_ms": 80}}
    first, second = parse_profile({**value, "speed": 1.5}), parse_profile({**value, "speed": 0.5})
    assert first.profile is second.profile
    assert (first.speed, second.speed) == (1.5, 0.5)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_mixes_parse_and_cite_their_sources(name: str) -> None:
    mix = find_mix(name)
    assert mix.name == name and mix.source == "built-in"
    assert sum(c.share for c in mix.classes) == pytest.approx(1.0)
    assert resolve_mix(name) == mix
    assert mix.assign(["a", "b"])  # assignable
    for aspect in ("compute", "network", "availability", "dropout"):
        assert len(SOURCES[aspect]) > 40
    assert [m.name for m in builtin_mixes()] == sorted(BUILTIN, key=list(BUILTIN).index)


def test_phones_always_on_never_drops_out_and_is_always_online() -> None:
    for c in find_mix("phones-always-on").classes:
        assert c.profile.dropout == 0 and c.profile.availability.kind == "always"


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (mix_with({"speed": -1}), "mix.classes[0].speed"),
        (
            mix_with({"speed": {"lognormal": {"median": -0.5, "sigma": 0.3}}}),
            "mix.classes[0].speed.lognormal.median",
        ),
        (
            mix_with({"availability": {"kind": "trace", "intervals": [[0, 10], [5, 20]]}}, 1),
            "mix.classes[1].availability.intervals[1]",
        ),
        (
            mix_with({"availability": {"kind": "trace", "intervals": [[0, 10], [20, 130]], "period": 100}}),
            "mix.classes[0].availability.intervals",
        ),
        (mix_with({"dropout": 1.5}, 2), "mix.classes[2].dropout"),
        (mix_with({"dropout": -0.1}, 2), "mix.classes[2].dropout"),
        (mix_with({"colour": "red"}), "mix.classes[0] has unknown field(s) ['colour']"),
        (mix_with({"network": {"uplink": 3}}), "mix.classes[0].network has unknown field(s) ['uplink']"),
        (mix_with({"seed": 3}), "mix.classes[0] has unknown field(s) ['seed']"),
        (mix_with({"class": "mid"}), "mix.classes repeat a class name"),
        (mix_with({"share": 0}), "mix.classes[0].share"),
        (mix_with({"share": -0.2}), "mix.classes[0].share"),
        ({"name": "x", "classes": []}, "mix.classes"),
        ({"name": "x", "classes": MIX["classes"], "shares": 1}, "mix has unknown field(s) ['shares']"),
    ],
)
def test_bad_mixes_are_refused_naming_the_field(value: object, field: str) -> None:
    with pytest.raises(InvalidProfile, match=re.escape(field)):
        ProfileMix.parse(value)


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"speed": -2}, "profile.speed"),
        ({"speed": 0}, "profile.speed"),
        ({"compute": {"speed": -1}}, "profile.compute.speed"),
        ({"compute": {"train_ms_per_sample": -1}}, "profile.compute.train_ms_per_sample"),
        ({"network": {"downlink_mbps": 0}}, "profile.network.downlink_mbps"),
        ({"dropout": 2}, "profile.dropout"),
        ({"availability": {"kind": "trace", "intervals": [[5, 3]]}}, "profile.availability.intervals[0]"),
        (
            {"availability": {"kind": "markov", "mean_on_s": 0, "mean_off_s": 5}},
            "profile.availability.mean_on_s",
        ),
        ({"availability": {"kind": "weekly"}}, "profile.availability.kind"),
        ({"availability": {"kind": "always", "period": 5}}, "profile.availability"),
        ({"wifi": True}, "profile has unknown field(s) ['wifi']"),
        ({"seed": -1}, "profile.seed"),
    ],
)
def test_bad_profiles_are_refused_naming_the_field(value: object, field: str) -> None:
    with pytest.raises(InvalidProfile, match=re.escape(field)):
        parse_profile(value)


def test_unknown_mix_name_is_not_found() -> None:
    with pytest.raises(ProfileMixNotFound, match="no profile mix 'tablets'"):
        find_mix("tablets")
    with pytest.raises(ProfileMixNotFound):
        resolve_mix("tablets")


def test_json_and_yaml_files_load(tmp_path: Path) -> None:
    (tmp_path / "three.json").write_text(json.dumps(MIX))
    (tmp_path / "three.yaml").write_text(yaml.safe_dump(MIX))
    from_json, from_yaml = load_mix(tmp_path / "three.json"), resolve_mix(str(tmp_path / "three.yaml"))
    assert from_json.classes == from_yaml.classes == ProfileMix.parse(MIX).classes
    assert from_json.name == "three" and from_json.source == str(tmp_path / "three.json")


def test_a_described_mix_loads_back(tmp_path: Path) -> None:
    """The module's promise: a mix file has the shape ``describe()`` gives."""
    described = find_mix("phones").describe()
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(described))
    loaded = load_mix(tmp_path / "mine.yaml")
    assert loaded.classes == find_mix("phones").classes


def test_bad_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InvalidProfile, match="not valid JSON"):
        load_mix(tmp_path / "broken.json")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(mix_with({"dropout": 3})))
    with pytest.raises(InvalidProfile, match=re.escape("classes[0].dropout")):
        load_mix(tmp_path / "bad.yaml")
    with pytest.raises(InvalidProfile, match="could not read"):
        load_mix(tmp_path / "missing.json")
