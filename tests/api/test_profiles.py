"""Device profiles over HTTP: creating profiled devices, their clocks, mixes, assignment, keys, and
real-time mode (offline devices refused with Retry-After), on the real interpreter and data directory."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.api import create_app
from service.api.codecs import NPZ
from service.client import FleetClient
from service.cluster.merge import merge_profile_assigns
from service.config import Settings
from service.errors import DeviceOffline, InvalidProfile, ProfileMixNotFound
from service.profiles import parse_profile
from service.profiles.mixes import SOURCES, find_mix, resolve_mix
from tests.api.test_auth import ADMIN, ALICE, REMOTE, bearer
from tests.api.test_federated import npz
from tests.local import LOCAL_URL, local_client

Batch = tuple[np.ndarray, np.ndarray]
PROFILE = {
    "class": "test-phone",
    "compute": {"train_ms_per_sample": 3.0, "infer_ms_per_sample": 0.5},
    "network": {"uplink_mbps": 5, "downlink_mbps": 20, "rtt_ms": 80},
    "speed": 2.0,
}
FAR = 1_000_000.0
"""Simulated seconds no test runs to, with the factor 1: a trace starting there is offline now."""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("profiles") / "data"
    with local_client(create_app(Settings(data_dir=data_dir))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def realtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A service in real-time mode: one real second per simulated second."""
    data_dir = tmp_path_factory.mktemp("realtime") / "data"
    with local_client(create_app(Settings(data_dir=data_dir, realtime_factor=1.0))) as test_client:
        yield test_client


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["error"]["message"]
    return message


def create(client: TestClient, device_id: str, **body: Any) -> dict[str, Any]:
    view: dict[str, Any] = ok(client.post("/v1/devices", json={"id": device_id, **body}), 201)
    return view


def train(client: TestClient, device_id: str, x: np.ndarray, y: np.ndarray) -> Any:
    return client.post(f"/v1/devices/{device_id}/train", content=npz(x=x, y=y), headers={"content-type": NPZ})


def infer(client: TestClient, device_id: str, x: np.ndarray) -> Any:
    return client.post(f"/v1/devices/{device_id}/infer", content=npz(x=x), headers={"content-type": NPZ})


def trace(*intervals: tuple[float, float]) -> dict[str, Any]:
    return {**PROFILE, "availability": {"kind": "trace", "intervals": [list(i) for i in intervals]}}


# -- profiles and clocks ------------------------------------------------------------------------


def test_a_device_created_with_a_profile_shows_it_and_a_clock_at_zero(client: TestClient) -> None:
    view = create(client, "made-with-profile", profile=PROFILE)
    assert view["profile"] == parse_profile(PROFILE).describe()
    assert view["profile"]["class"] == "test-phone" and view["profile"]["speed"] == 2.0
    assert view["clock"] == 0.0
    assert ok(client.get("/v1/devices/made-with-profile"))["profile"] == view["profile"]
    plain = create(client, "made-without-profile")
    assert plain["profile"] is None and plain["clock"] == 0.0


def test_the_clock_advances_by_the_profiles_compute_time(client: TestClient, train_batch: Batch) -> None:
    create(client, "clocked", profile=PROFILE)
    create(client, "unclocked")
    x, y = train_batch[0][:20], train_batch[1][:20]
    train_ms, infer_ms, speed = 3.0, 0.5, 2.0
    ok(train(client, "clocked", x, y))
    after_train = 20 * train_ms / speed / 1000
    assert ok(client.get("/v1/devices/clocked"))["clock"] == pytest.approx(after_train, rel=1e-12, abs=0)
    ok(infer(client, "clocked", x[:7]))
    after_infer = after_train + 7 * infer_ms / speed / 1000
    assert ok(client.get("/v1/devices/clocked"))["clock"] == pytest.approx(after_infer, rel=1e-12, abs=0)
    ok(train(client, "unclocked", x, y))
    assert ok(client.get("/v1/devices/unclocked"))["clock"] == 0.0
    listed = {d["id"]: d for d in ok(client.get("/v1/devices", params={"limit": 1000}))["devices"]}
    assert listed["clocked"]["clock"] == pytest.approx(after_infer, rel=1e-12, abs=0)
    assert listed["clocked"]["profile"]["class"] == "test-phone" and listed["unclocked"]["profile"] is None


def run_jobs(client: TestClient, batch: Batch, job: dict[str, Any], *device_ids: str) -> dict[str, Any]:
    """Upload ``batch`` to each device, start ``job`` on each, and wait for them: their last views."""
    for device_id in device_ids:
        body = npz(x=batch[0], y=batch[1])
        ok(client.post(f"/v1/devices/{device_id}/samples", content=body, headers={"content-type": NPZ}))
        ok(client.post(f"/v1/devices/{device_id}/jobs", json=job), 202)
    views: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while len(views) < len(device_ids):
        assert time.monotonic() < deadline, "the jobs did not finish"
        for device_id in device_ids:
            view = ok(client.get(f"/v1/devices/{device_id}/jobs"))["jobs"][-1]
            if view["state"] not in ("queued", "running"):
                views[device_id] = view
        time.sleep(0.05)
    return views


def test_a_job_reports_the_simulated_seconds_of_its_steps(client: TestClient, train_batch: Batch) -> None:
    create(client, "jobbed", profile=PROFILE)
    create(client, "plain-jobbed")
    batch = (train_batch[0][:30], train_batch[1][:30])
    views = run_jobs(client, batch, {"epochs": 2, "batch_size": 10}, "jobbed", "plain-jobbed")
    train_ms, speed = 3.0, 2.0  # PROFILE's: 2 epochs of 30 samples
    assert views["jobbed"]["simulated_seconds"] == pytest.approx(60 * train_ms / speed / 1000, rel=1e-9)
    assert views["plain-jobbed"]["simulated_seconds"] is None


def test_a_phone_drops_out_of_a_job_as_its_profile_says(client: TestClient, train_batch: Batch) -> None:
    create(client, "flaky", profile={**PROFILE, "dropout": 1.0})
    create(client, "steady", profile={**PROFILE, "dropout": 0.0})
    create(client, "coin-a", profile={**PROFILE, "dropout": 0.5})
    create(client, "coin-b", profile={**PROFILE, "dropout": 0.5})
    batch = (train_batch[0][:40], train_batch[1][:40])
    job = {"epochs": 5, "batch_size": 10, "seed": 3, "save": True}
    views = run_jobs(client, batch, job, "flaky", "steady", "coin-a", "coin-b")
    flaky = views["flaky"]
    assert flaky["state"] == "dropped" and "dropped out after" in flaky["error"]
    assert flaky["steps_done"] < flaky["steps_total"] == 20
    assert not ok(client.get("/v1/devices/flaky"))["has_checkpoint"]  # a dropped job does not save
    assert views["steady"]["state"] == "succeeded" and views["steady"]["steps_done"] == 20
    assert {views["coin-a"]["state"], views["coin-b"]["state"]} == {"dropped"}  # seed 3 draws both out
    for device_id in ("coin-a", "coin-b"):
        ok(client.delete(f"/v1/devices/{device_id}/samples"), 204)
    again = run_jobs(client, batch, job, "coin-a", "coin-b")  # the same seed: the same draws
    for device_id in ("coin-a", "coin-b"):
        assert (again[device_id]["state"], again[device_id]["steps_done"]) == (
            views[device_id]["state"],
            views[device_id]["steps_done"],
        )


def test_a_profile_is_set_and_removed_and_survives_a_restart(
    client: TestClient, tmp_path: Path, train_batch: Batch
) -> None:
    create(client, "reprofiled")
    view = ok(client.put("/v1/devices/reprofiled/profile", json=PROFILE))
    assert view["profile"] == parse_profile(PROFILE).describe()
    ok(train(client, "reprofiled", *[a[:10] for a in train_batch]))
    assert ok(client.post("/v1/devices/reprofiled/save"))  # writes the record with its clock
    data_dir = client.app.state.settings.data_dir  # type: ignore[attr-defined]
    record = json.loads((data_dir / "devices" / "reprofiled" / "device.json").read_text())
    assert record["profile"]["class"] == "test-phone" and record["clock"] > 0
    assert client.delete("/v1/devices/reprofiled/profile").status_code == 204
    view = ok(client.get("/v1/devices/reprofiled"))
    assert view["profile"] is None and view["clock"] == 0.0
    record = json.loads((data_dir / "devices" / "reprofiled" / "device.json").read_text())
    assert "profile" not in record


def test_a_device_created_from_a_mix_gets_the_profile_its_id_draws(client: TestClient) -> None:
    view = create(client, "from-mix", profile_mix="phones", profile_seed=3)
    expected = find_mix("phones").assign(["from-mix"], 3)["from-mix"]
    assert view["profile"] == expected.describe()
    assert view["profile"]["class"] in ("low", "mid", "high")


def test_a_profile_and_a_mix_together_are_refused_before_anything_is_made(client: TestClient) -> None:
    body = {"id": "both", "profile": PROFILE, "profile_mix": "phones"}
    assert "not both" in error(client.post("/v1/devices", json=body), 400)
    assert client.get("/v1/devices/both").status_code == 404


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "field"),
    [
        ({"speed": -1}, "profile.speed"),
        (
            {"availability": {"kind": "trace", "intervals": [[0, 10], [5, 20]]}},
            "profile.availability.intervals[1]",
        ),
        ({"dropout": 1.5}, "profile.dropout"),
        ({"colour": "red"}, "colour"),
        ({"compute": {"train_ms_per_sample": -2}}, "profile.compute.train_ms_per_sample"),
    ],
)
def test_bad_profiles_are_refused_naming_the_field(
    client: TestClient, profile: dict[str, Any], field: str
) -> None:
    created = client.post("/v1/devices", json={"id": "badly-profiled", "profile": profile})
    assert field in error(created, 422)
    assert created.json()["error"]["code"] == "invalid_profile"
    assert client.get("/v1/devices/badly-profiled").status_code == 404  # nothing was made
    create(client, "to-reprofile-badly")
    assert field in error(client.put("/v1/devices/to-reprofile-badly/profile", json=profile), 422)
    assert ok(client.get("/v1/devices/to-reprofile-badly"))["profile"] is None
    ok(client.delete("/v1/devices/to-reprofile-badly"), 204)


def test_an_unknown_mix_is_not_found(client: TestClient) -> None:
    found = client.get("/v1/profiles/mixes/no-such-mix")
    assert "no-such-mix" in error(found, 404) and found.json()["error"]["code"] == "profile_mix_not_found"
    create(client, "mixless")
    assert "no-such-mix" in error(
        client.post("/v1/profiles/assign", json={"mix": "no-such-mix", "all": True}), 404
    )
    made = client.post("/v1/devices", json={"id": "mixless-2", "profile_mix": "no-such-mix"})
    assert "no-such-mix" in error(made, 404)
    assert client.get("/v1/devices/mixless-2").status_code == 404


def test_a_bad_mix_object_is_refused_naming_the_field(client: TestClient) -> None:
    mix = {"name": "bad", "classes": [{"class": "a", "share": 0, "speed": 1}]}
    create(client, "bad-mix-target")
    body = {"mix": mix, "ids": ["bad-mix-target"]}
    assert "mix.classes[0].share" in error(client.post("/v1/profiles/assign", json=body), 422)


def test_an_assignment_must_select_exactly_one_way_and_some_devices(client: TestClient) -> None:
    both = {"mix": "phones", "prefix": "x", "all": True}
    assert "exactly one" in error(client.post("/v1/profiles/assign", json=both), 400)
    none = {"mix": "phones", "prefix": "nothing-starts-with-this-"}
    assert "selects no devices" in error(client.post("/v1/profiles/assign", json=none), 400)


# -- mixes and assignment -----------------------------------------------------------------------


def test_the_mixes_are_listed_with_their_sources(client: TestClient) -> None:
    listed = ok(client.get("/v1/profiles/mixes"))
    assert listed["sources"] == SOURCES
    names = [m["name"] for m in listed["mixes"]]
    assert {"phones", "phones-always-on", "phones-at-night"} <= set(names)
    assert ok(client.get("/v1/profiles/mixes/phones")) == find_mix("phones").describe()
    assert listed["mixes"][names.index("phones")] == find_mix("phones").describe()


def profiles_of(client: TestClient, ids: list[str]) -> dict[str, tuple[str, float]]:
    views = [ok(client.get(f"/v1/devices/{i}")) for i in ids]
    return {v["id"]: (v["profile"]["class"], v["profile"]["speed"]) for v in views}


def test_assigning_a_mix_to_a_prefix_is_reproducible_by_its_seed(client: TestClient) -> None:
    ids = [f"rep-{i}" for i in range(40)]
    ok(client.post("/v1/devices/bulk-create", json={"ids": ids}), 201)
    create(client, "other-prefix")
    first = ok(client.post("/v1/profiles/assign", json={"mix": "phones", "prefix": "rep-", "seed": 1}))
    assert first["assigned"] == 40 and sum(first["classes"].values()) == 40
    assert set(first["classes"]) <= {"low", "mid", "high"} and len(first["classes"]) > 1
    drawn = profiles_of(client, ids)
    counted = {c: sum(1 for cls, _ in drawn.values() if cls == c) for c in first["classes"]}
    assert counted == first["classes"]
    assert ok(client.get("/v1/devices/other-prefix"))["profile"] is None  # outside the prefix
    again = ok(client.post("/v1/profiles/assign", json={"mix": "phones", "prefix": "rep-", "seed": 1}))
    assert again["classes"] == first["classes"] and profiles_of(client, ids) == drawn
    ok(client.post("/v1/profiles/assign", json={"mix": "phones", "prefix": "rep-", "seed": 2}))
    redrawn = profiles_of(client, ids)
    assert redrawn != drawn
    assert sum(drawn[i][1] != redrawn[i][1] for i in ids) > 30  # speeds are continuous: nearly all differ
    # a device's draw depends on its ID alone, not on which devices are assigned with it
    ok(client.post("/v1/profiles/assign", json={"mix": "phones", "ids": ["rep-7"], "seed": 1}))
    assert profiles_of(client, ["rep-7"])["rep-7"] == drawn["rep-7"]


def test_a_mix_object_is_assigned_and_recorded_durably(client: TestClient) -> None:
    mix = {
        "name": "mine",
        "classes": [
            {"class": "slow", "share": 1, "speed": {"uniform": [0.5, 0.6]}, "dropout": 0.2},
            {"class": "never", "share": 0.000001, "speed": 1},
        ],
    }
    ids = [f"mine-{i}" for i in range(5)]
    ok(client.post("/v1/devices/bulk-create", json={"ids": ids}), 201)
    result = ok(client.post("/v1/profiles/assign", json={"mix": mix, "ids": ids, "seed": 9}))
    assert result["assigned"] == 5 and result["classes"] == {"slow": 5} and result["mix"] == "mine"
    data_dir = client.app.state.settings.data_dir  # type: ignore[attr-defined]
    for device_id in ids:
        record = json.loads((data_dir / "devices" / device_id / "device.json").read_text())
        assert record["profile"]["class"] == "slow" and record["profile"]["dropout"] == 0.2
        assert 0.5 <= record["profile"]["speed"] <= 0.6 and record["profile"]["seed"] == 9


def test_the_front_merges_the_shards_assignments() -> None:
    merged = merge_profile_assigns(
        [
            {"mix": "phones", "seed": 1, "assigned": 3, "classes": {"low": 1, "mid": 2}},
            {"mix": "phones", "seed": 1, "assigned": 2, "classes": {"mid": 1, "high": 1}},
        ]
    )
    assert merged == {"mix": "phones", "seed": 1, "assigned": 5, "classes": {"low": 1, "mid": 3, "high": 1}}


# -- keys ---------------------------------------------------------------------------------------


def test_a_devices_key_assigns_and_profiles_only_under_its_prefix(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{ADMIN} admin\n{ALICE} devices alice-\n", encoding="utf-8")
    settings = Settings(data_dir=tmp_path / "data", api_keys_file=keys)
    with TestClient(create_app(settings), client=REMOTE) as keyed:
        admin, alice = bearer(ADMIN), bearer(ALICE)
        for device_id in ("alice-1", "bob-1"):
            ok(keyed.post("/v1/devices", json={"id": device_id}, headers=admin), 201)

        def assign(**body: Any) -> Any:
            return keyed.post("/v1/profiles/assign", json={"mix": "phones", **body}, headers=alice)

        assert keyed.post("/v1/profiles/assign", json={"mix": "phones", "all": True}).status_code == 401
        assert error(assign(ids=["bob-1"]), 404)
        assert "selects no devices" in error(assign(prefix="bob-"), 400)
        assert error(keyed.put("/v1/devices/bob-1/profile", json=PROFILE, headers=alice), 404)
        made = keyed.post("/v1/devices", json={"id": "bob-2", "profile": PROFILE}, headers=alice)
        assert made.status_code == 403
        assert ok(assign(all=True))["assigned"] == 1
        assert ok(keyed.get("/v1/devices/bob-1", headers=admin))["profile"] is None
        assert ok(keyed.get("/v1/devices/alice-1", headers=alice))["profile"] is not None
        assert ok(keyed.get("/v1/profiles/mixes", headers=alice))["mixes"]
        assert ok(assign(ids=["alice-1"]))["assigned"] == 1


# -- real-time mode -----------------------------------------------------------------------------


def test_off_real_time_mode_ignores_availability(client: TestClient, train_batch: Batch) -> None:
    create(client, "offline-but-off", profile=trace((FAR, 2 * FAR)))
    ok(train(client, "offline-but-off", *[a[:5] for a in train_batch]))


def test_an_offline_device_answers_503_with_retry_after_and_loses_nothing(
    realtime: TestClient, train_batch: Batch
) -> None:
    x, y = train_batch[0][:10], train_batch[1][:10]
    create(realtime, "sleeper", profile=trace((0, 2 * FAR)))
    ok(realtime.post("/v1/devices/sleeper/samples", content=npz(x=x, y=y), headers={"content-type": NPZ}))
    ok(train(realtime, "sleeper", x, y))
    ok(realtime.post("/v1/devices/sleeper/save"))
    before = ok(realtime.get("/v1/devices/sleeper"))
    samples = ok(realtime.get("/v1/devices/sleeper/samples"))
    ok(realtime.put("/v1/devices/sleeper/profile", json=trace((FAR, 2 * FAR))))  # asleep until FAR
    refused = train(realtime, "sleeper", x, y)
    message = error(refused, 503)
    assert refused.json()["error"]["code"] == "device_offline"
    assert "sleeper" in message and "come online at 1000000.0" in message
    retry_after = int(refused.headers["retry-after"])
    assert FAR - 3600 < retry_after <= FAR  # until it comes online, at one real second per simulated one
    for call in (
        lambda: infer(realtime, "sleeper", x),
        lambda: realtime.post(
            "/v1/devices/sleeper/samples", content=npz(x=x, y=y), headers={"content-type": NPZ}
        ),
        lambda: realtime.delete("/v1/devices/sleeper/samples"),
        lambda: realtime.post("/v1/devices/sleeper/reset"),
        lambda: realtime.get("/v1/devices/sleeper/history"),
        lambda: realtime.get("/v2/models/sleeper"),
    ):
        assert call().status_code == 503
    view = ok(realtime.get("/v1/devices/sleeper"))  # the server's own record answers while offline
    assert view["profile"]["availability"]["intervals"] == [[FAR, 2 * FAR]]
    for field in ("train_steps", "last_loss", "clock", "has_checkpoint", "checkpoint_saved_at"):
        assert view[field] == before[field], field
    ok(realtime.put("/v1/devices/sleeper/profile", json=trace((0, 2 * FAR))))  # awake again
    assert ok(realtime.get("/v1/devices/sleeper/samples")) == samples
    ok(train(realtime, "sleeper", x, y))
    view = ok(realtime.get("/v1/devices/sleeper"))
    assert view["train_steps"] == before["train_steps"] + 1
    assert view["clock"] == pytest.approx(before["clock"] + 10 * 3.0 / 2.0 / 1000, rel=1e-12)


def test_a_device_whose_trace_has_ended_is_offline_for_good(realtime: TestClient, train_batch: Batch) -> None:
    create(realtime, "retired", profile=trace((0, 0.001)))
    refused = infer(realtime, "retired", train_batch[0][:3])
    assert "never" in error(refused, 503) and int(refused.headers["retry-after"]) >= 1


def test_in_real_time_online_and_unprofiled_devices_answer(realtime: TestClient, train_batch: Batch) -> None:
    create(realtime, "awake", profile={**PROFILE, "availability": "always"})
    create(realtime, "ideal")
    x, y = train_batch[0][:4], train_batch[1][:4]
    for device_id in ("awake", "ideal"):
        ok(train(realtime, device_id, x, y))
        ok(infer(realtime, device_id, x))
    assert ok(realtime.get("/v1/devices/awake"))["clock"] > 0
    assert error(realtime.post("/v1/devices/nobody/train"), 404)


def test_in_real_time_an_offline_device_outside_the_keys_prefix_looks_absent(
    tmp_path: Path, train_batch: Batch
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{ADMIN} admin\n{ALICE} devices alice-\n", encoding="utf-8")
    settings = Settings(data_dir=tmp_path / "data", api_keys_file=keys, realtime_factor=1.0)
    with TestClient(create_app(settings), client=REMOTE) as keyed:
        asleep = {"id": "bob-asleep", "profile": trace((FAR, 2 * FAR))}
        ok(keyed.post("/v1/devices", json=asleep, headers=bearer(ADMIN)), 201)
        x = train_batch[0][:2]
        as_alice = keyed.post(
            "/v1/devices/bob-asleep/infer", content=npz(x=x), headers={"content-type": NPZ, **bearer(ALICE)}
        )
        assert as_alice.status_code == 404 and "retry-after" not in as_alice.headers
        as_admin = keyed.post(
            "/v1/devices/bob-asleep/infer", content=npz(x=x), headers={"content-type": NPZ, **bearer(ADMIN)}
        )
        assert as_admin.status_code == 503


def test_the_client_raises_device_offline_with_its_retry_after(
    realtime: TestClient, train_batch: Batch
) -> None:
    create(realtime, "client-sleeper", profile=trace((FAR, 2 * FAR)))
    with pytest.raises(DeviceOffline, match="client-sleeper") as raised:
        fleet_client(realtime).infer("client-sleeper", x=train_batch[0][:2])
    assert FAR - 3600 < raised.value.retry_after <= FAR


# -- the client ---------------------------------------------------------------------------------


def fleet_client(client: TestClient) -> FleetClient:
    """The harness's client over the in-process app (the test client's transport, from loopback)."""
    return FleetClient(LOCAL_URL, transport=client._transport)


def test_the_client_covers_the_profile_routes(client: TestClient) -> None:
    fleet = fleet_client(client)
    assert {m["name"] for m in fleet.profile_mixes()} >= {"phones"}
    assert fleet.profile_mix("phones") == find_mix("phones").describe()
    with pytest.raises(ProfileMixNotFound):
        fleet.profile_mix("no-such-mix")
    ids = fleet.create_devices(count=6, prefix="cli-mix-", profile_mix="phones", profile_seed=4)
    expected = find_mix("phones").assign(ids, 4)
    assert {i: fleet.device(i)["profile"] for i in ids} == {i: p.describe() for i, p in expected.items()}
    same = fleet.create_devices([f"cli-one-{i}" for i in range(3)], profile={**PROFILE, "seed": 5})
    wanted = parse_profile({**PROFILE, "seed": 5}).describe()
    assert all(fleet.device(i)["profile"] == wanted for i in same)
    result = fleet.assign_profiles("phones-always-on", prefix="cli-one-", seed=1)
    assert result["assigned"] == 3
    assert fleet.set_profile("cli-one-0", None) is None
    assert fleet.device("cli-one-0")["profile"] is None
    view = fleet.set_profile("cli-one-0", PROFILE)
    assert view is not None and view["profile"]["class"] == "test-phone"
    one = fleet.create_device("cli-single", profile_mix="phones", profile_seed=4)
    assert one["profile"] == find_mix("phones").assign(["cli-single"], 4)["cli-single"].describe()


def test_the_clients_bulk_creation_with_a_bad_profile_leaves_no_devices(client: TestClient) -> None:
    fleet = fleet_client(client)
    with pytest.raises(InvalidProfile, match="dropout"):
        fleet.create_devices([f"cli-bad-{i}" for i in range(3)], profile={"dropout": 2})
    assert not [d for d in fleet.devices() if d["id"].startswith("cli-bad-")]
    with pytest.raises(ProfileMixNotFound):
        fleet.create_devices(["cli-bad-mix"], profile_mix="no-such-mix")
    assert not [d for d in fleet.devices() if d["id"] == "cli-bad-mix"]


# -- settings and mix files ---------------------------------------------------------------------


def test_the_realtime_factor_is_read_from_the_environment_and_not_negative(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().realtime_factor == 0.0
    monkeypatch.setenv("FLEET_REALTIME_FACTOR", "0.25")
    assert Settings().realtime_factor == 0.25
    for bad in ("-1", "nan", "inf"):
        monkeypatch.setenv("FLEET_REALTIME_FACTOR", bad)
        with pytest.raises(ValidationError):
            Settings()


MIX_YAML = """\
name: my-phones
classes:
  - class: low
    share: 0.3
    speed: {lognormal: {median: 0.25, sigma: 0.3}}
    network: {uplink_mbps: 2, downlink_mbps: 10, rtt_ms: 120}
    availability: {kind: markov, mean_on_s: 1800, mean_off_s: 5400}
    dropout: 0.1
  - class: high
    share: 0.7
    speed: 2
"""


def test_user_mix_files_load_from_yaml_and_json(tmp_path: Path) -> None:
    yaml_path = tmp_path / "mine.yaml"
    yaml_path.write_text(MIX_YAML)
    from_yaml = resolve_mix(str(yaml_path))
    assert from_yaml.name == "my-phones" and [c.profile.device_class for c in from_yaml.classes] == [
        "low",
        "high",
    ]
    assert from_yaml.classes[0].profile.availability.kind == "markov"
    assert from_yaml.classes[0].profile.network.rtt_ms == 120.0
    json_path = tmp_path / "mine.json"
    json_path.write_text(json.dumps({k: v for k, v in from_yaml.describe().items() if k != "source"}))
    from_json = resolve_mix(str(json_path))
    assert from_json.classes == from_yaml.classes
    ids = [f"d{i}" for i in range(20)]
    assert from_json.assign(ids, 3) == from_yaml.assign(ids, 3)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InvalidProfile, match=r"broken\.json"):
        resolve_mix(str(broken))
