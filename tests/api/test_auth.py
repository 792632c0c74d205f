"""API keys, protected mode, and what each key may do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.api.auth import KeyRing, is_loopback
from service.config import Settings
from service.errors import InvalidRequest
from tests.local import LOOPBACK, local_client

ADMIN = "admin-key-0123456789abcdef"
ALICE = "alice-key-0123456789abcdef"
REMOTE = ("203.0.113.7", 40000)
"""A client address off this host (TEST-NET-3)."""


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.txt"
    path.write_text(
        f"# the operator\n{ADMIN} admin\n\n{ALICE}   devices alice-   # one user's phones\n", encoding="utf-8"
    )
    return path


@pytest.fixture
def keyed(tmp_path: Path, keys_file: Path) -> Iterator[TestClient]:
    """A service with keys, called from off the host."""
    settings = Settings(data_dir=tmp_path / "data", api_keys_file=keys_file)
    with TestClient(create_app(settings), client=REMOTE) as client:
        yield client


def test_the_keys_file_is_parsed_and_errors_name_the_line_not_the_key() -> None:
    ring = KeyRing.parse(f"{ADMIN} admin\n# comment\n{ALICE} devices alice-\n")
    assert len(ring) == 2
    assert ring.identify(ADMIN.encode()) is not None and ring.identify(ADMIN.encode()).is_admin  # type: ignore[union-attr]
    alice = ring.identify(ALICE.encode())
    assert alice is not None and not alice.is_admin and alice.prefix == "alice-"
    assert ring.identify(b"not-a-key-at-all-0000") is None
    for text, problem in [
        ("short admin\n", "16-256 printable"),
        (f"{ADMIN} root\n", "expected 'KEY admin'"),
        (f"{ADMIN} devices\n", "expected 'KEY admin'"),
        (f"{ADMIN} devices ../x\n", "expected 'KEY admin'"),
        (f"{ADMIN} admin\n{ADMIN} devices a\n", "already given"),
        ("# nothing but a comment\n", "holds no keys"),
    ]:
        with pytest.raises(InvalidRequest, match=problem) as caught:
            KeyRing.parse(text)
        assert ADMIN not in caught.value.message
    with pytest.raises(InvalidRequest, match="line 2"):
        KeyRing.parse(f"{ADMIN} admin\n{ALICE} devices\n")


def test_loopback_in_every_form_is_local_and_nothing_else_is() -> None:
    host: str | None
    for host in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        assert is_loopback(host), host
    for host in ("10.0.0.1", "::ffff:10.0.0.1", "fe80::1", "localhost", "testclient", "", None):
        assert not is_loopback(host), host


def test_a_hash_cannot_be_part_of_a_key() -> None:
    with pytest.raises(InvalidRequest, match="16-256 printable"):
        KeyRing.parse("abcdefgh#ijklmnopqrstuvwxyz admin\n")


def test_protected_mode_answers_loopback_and_refuses_others_with_how_to_configure(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data"))
    with local_client(app) as local:
        assert local.get("/v1/devices").status_code == 200
        assert local.post("/v1/devices", json={"id": "phone"}).status_code == 201
    with TestClient(app, client=REMOTE) as remote:
        for method, path in [("GET", "/v1/devices"), ("GET", "/v1/devices/phone"), ("GET", "/nowhere")]:
            response = remote.request(method, path)
            assert response.status_code == 403, path
            message = response.json()["error"]["message"]
            assert "protected mode" in message and "FLEET_API_KEYS_FILE" in message
        oip = remote.get("/v2/models/phone")  # the Open Inference Protocol's own error shape
        assert oip.status_code == 403 and "protected mode" in oip.json()["error"]
        for probe in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
            assert remote.get(probe).status_code == 200, probe


def test_in_protected_mode_a_shard_takes_its_fronts_token_and_nothing_else(tmp_path: Path) -> None:
    token = b"f" * 64
    app = create_app(Settings(data_dir=tmp_path / "data"), front_token=token)
    with TestClient(app, client=REMOTE) as remote:
        assert remote.get("/v1/devices", headers={"fleet-front": token.decode()}).status_code == 200
        for wrong in ("f" * 63, "g" * 64, ""):
            assert remote.get("/v1/devices", headers={"fleet-front": wrong}).status_code == 403, wrong
        assert remote.get("/v1/devices").status_code == 403


def test_a_stranger_cannot_make_the_service_read_a_body(tmp_path: Path) -> None:
    """Refused before the body is read: a stranger's 60 MB upload gets 403 at once, not 413."""
    with TestClient(
        create_app(Settings(data_dir=tmp_path / "data", max_body_bytes=1024)), client=REMOTE
    ) as c:
        response = c.post(
            "/v1/devices/x/train", content=b"\0" * 4096, headers={"content-type": "application/x-npz"}
        )
        assert response.status_code == 403


def test_with_keys_every_route_but_the_probes_needs_a_valid_key(keyed: TestClient) -> None:
    for headers in ({}, {"authorization": "Basic abc"}, bearer("wrong-key-0123456789abcdef")):
        response = keyed.get("/v1/devices", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        assert "API key" in response.json()["error"]["message"]
    assert keyed.get("/v1/devices", headers=bearer(ADMIN)).status_code == 200
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/openapi.json").status_code == 401
    assert keyed.get("/openapi.json", headers=bearer(ALICE)).status_code == 200


def test_keys_apply_to_loopback_clients_too(tmp_path: Path, keys_file: Path) -> None:
    with TestClient(
        create_app(Settings(data_dir=tmp_path / "d", api_keys_file=keys_file)), client=LOOPBACK
    ) as c:
        assert c.get("/v1/devices").status_code == 401


def test_a_devices_key_touches_only_its_prefix_and_others_look_absent(keyed: TestClient) -> None:
    admin, alice = bearer(ADMIN), bearer(ALICE)
    assert keyed.post("/v1/devices", json={"id": "bob-1"}, headers=admin).status_code == 201
    assert keyed.post("/v1/devices", json={"id": "alice-1"}, headers=alice).status_code == 201
    made = keyed.post("/v1/devices", json={}, headers=alice)
    assert made.status_code == 201 and made.json()["id"].startswith("alice-")
    refused = keyed.post("/v1/devices", json={"id": "bob-2"}, headers=alice)
    assert refused.status_code == 403 and "alice-" in refused.json()["error"]["message"]

    absent = keyed.get("/v1/devices/nobody-1", headers=alice)
    hidden = keyed.get("/v1/devices/bob-1", headers=alice)
    assert hidden.status_code == absent.status_code == 404
    assert hidden.json()["error"]["message"] == "no device 'bob-1'"
    for method, path in [
        ("POST", "/v1/devices/bob-1/infer"),
        ("POST", "/v1/devices/bob-1/save"),
        ("POST", "/v1/devices/bob-1/reset"),
        ("DELETE", "/v1/devices/bob-1"),
        ("GET", "/v1/devices/bob-1/jobs"),
        ("GET", "/v1/devices/bob-1/history"),
        ("GET", "/v2/models/bob-1"),
    ]:
        assert keyed.request(method, path, headers=alice).status_code == 404, path
    assert keyed.get("/v1/devices/bob-1", headers=admin).status_code == 200

    listing = keyed.get("/v1/devices", headers=alice).json()
    assert {d["id"] for d in listing["devices"]} == {"alice-1", made.json()["id"]}
    assert listing["total"] == 2
    assert keyed.get("/v1/devices", headers=admin).json()["total"] == 3
    assert keyed.post("/v1/devices/alice-1/restart", headers=alice).status_code == 200
    assert keyed.delete("/v1/devices/alice-1", headers=alice).status_code == 204


def test_fleet_wide_and_model_operations_need_an_admin(keyed: TestClient) -> None:
    alice = bearer(ALICE)
    for method, path, body in [
        ("GET", "/v1/fleet", None),
        ("GET", "/metrics", None),
        ("POST", "/v1/devices/bulk-create", {"count": 2, "prefix": "alice-"}),
        ("POST", "/v1/devices/bulk-delete", {"ids": ["alice-1"]}),
        ("PUT", "/v1/models/mine", None),
        ("DELETE", "/v1/models/fashion_mnist", None),
    ]:
        response = keyed.request(method, path, json=body, headers=alice)
        assert response.status_code == 403, path
        assert "admin key" in response.json()["error"]["message"]
    assert keyed.get("/v1/models", headers=alice).status_code == 200
    admin = bearer(ADMIN)
    assert keyed.get("/v1/fleet", headers=admin).status_code == 200
    assert keyed.get("/metrics", headers=admin).status_code == 200
    assert keyed.post("/v1/devices/bulk-create", json={"count": 2}, headers=admin).status_code == 201


def test_model_upload_is_off_by_default(keyed: TestClient, regressor_model: bytes) -> None:
    response = keyed.put("/v1/models/regressor", content=regressor_model, headers=bearer(ADMIN))
    assert response.status_code == 403
    assert "FLEET_ALLOW_MODEL_UPLOAD" in response.json()["error"]["message"]
    assert keyed.get("/v1/models/regressor", headers=bearer(ADMIN)).status_code == 404


def test_uploads_when_allowed_are_for_admins_and_models_delete_when_unused(
    tmp_path: Path, keys_file: Path, regressor_model: bytes
) -> None:
    settings = Settings(data_dir=tmp_path / "data", api_keys_file=keys_file, allow_model_upload=True)
    admin, alice = bearer(ADMIN), bearer(ALICE)
    with TestClient(create_app(settings), client=REMOTE) as client:
        assert client.put("/v1/models/regressor", content=regressor_model, headers=alice).status_code == 403
        assert client.put("/v1/models/regressor", content=regressor_model, headers=admin).status_code == 201
        assert (
            client.post(
                "/v1/devices", json={"id": "alice-r", "model": "regressor"}, headers=alice
            ).status_code
            == 201
        )
        in_use = client.delete("/v1/models/regressor", headers=admin)
        assert in_use.status_code == 409 and "alice-r" in in_use.json()["error"]["message"]
        assert client.delete("/v1/models/fashion_mnist", headers=admin).status_code == 409
        assert client.delete("/v1/devices/alice-r", headers=alice).status_code == 204
        assert client.delete("/v1/models/regressor", headers=admin).status_code == 204
        assert client.get("/v1/models/regressor", headers=admin).status_code == 404
        assert client.delete("/v1/models/regressor", headers=admin).status_code == 404
        assert not (tmp_path / "data" / "models" / "regressor.tflite").exists()
        # Deleted, the name is free again.
        assert client.put("/v1/models/regressor", content=regressor_model, headers=admin).status_code == 201


def test_stored_models_are_capped_in_bytes(tmp_path: Path, regressor_model: bytes) -> None:
    cap = len(regressor_model) + len(regressor_model) // 2
    settings = Settings(data_dir=tmp_path / "data", allow_model_upload=True, max_model_bytes=cap)
    with local_client(create_app(settings)) as client:
        assert client.put("/v1/models/one", content=regressor_model).status_code == 201
        response = client.put("/v1/models/two", content=regressor_model)
        assert response.status_code == 507, response.text
        assert "FLEET_MAX_MODEL_BYTES" in response.json()["error"]["message"]
        assert not (tmp_path / "data" / "models" / "two.tflite").exists()
        assert client.delete("/v1/models/one").status_code == 204
        assert client.put("/v1/models/two", content=regressor_model).status_code == 201


def test_the_openapi_document_declares_the_bearer_scheme(keyed: TestClient) -> None:
    document = keyed.get("/openapi.json", headers=bearer(ADMIN)).json()
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert document["security"] == [{"apiKey": []}]
    assert document["paths"]["/healthz"]["get"]["security"] == []
    assert "401" in document["paths"]["/v1/devices"]["get"]["responses"]


def test_a_bad_keys_file_stops_the_service_before_it_starts(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("too-short admin\n", encoding="utf-8")
    with pytest.raises(InvalidRequest, match="line 1"):
        create_app(Settings(data_dir=tmp_path / "data", api_keys_file=path))
    with pytest.raises(InvalidRequest, match="cannot read"):
        create_app(Settings(data_dir=tmp_path / "data", api_keys_file=tmp_path / "missing.txt"))


def test_a_devices_key_assigns_and_runs_rounds_on_its_own_devices_and_sees_only_its_runs(
    keyed: TestClient,
) -> None:
    admin, alice = bearer(ADMIN), bearer(ALICE)
    ids = {"ids": ["alice-1", "alice-2", "bob-1"]}
    assert keyed.post("/v1/devices/bulk-create", json=ids, headers=admin).status_code == 201
    assert keyed.put("/v1/datasets/mine", content=b"", headers=alice).status_code == 403
    assert keyed.delete("/v1/datasets/fashion-mnist", headers=alice).status_code == 403
    assert keyed.get("/v1/datasets", headers=alice).status_code == 200
    scheme = {"train_per_device": 40, "test_per_device": 10}
    assert (
        keyed.post(
            "/v1/datasets/fashion-mnist/assign", json={"ids": ["bob-1"], **scheme}, headers=alice
        ).status_code
        == 404
    )
    assigned = keyed.post("/v1/datasets/fashion-mnist/assign", json={"all": True, **scheme}, headers=alice)
    assert assigned.status_code == 200 and assigned.json()["devices"] == 2, assigned.text
    assert keyed.get("/v1/devices/bob-1/assignment", headers=admin).json()["assignment"] is None

    mine = keyed.post("/v1/rounds", json={"all": True, "global_accuracy": False}, headers=alice)
    assert mine.status_code == 202, mine.text
    theirs = keyed.post(
        "/v1/rounds", json={"ids": ["alice-1"], "global_accuracy": False}, headers=admin
    ).json()
    assert keyed.get(f"/v1/rounds/{theirs['id']}", headers=alice).status_code == 404
    assert keyed.post(f"/v1/rounds/{theirs['id']}/cancel", headers=alice).status_code == 404
    assert [r["id"] for r in keyed.get("/v1/rounds", headers=alice).json()["runs"]] == [mine.json()["id"]]
    assert {r["id"] for r in keyed.get("/v1/rounds", headers=admin).json()["runs"]} == {
        mine.json()["id"],
        theirs["id"],
    }
    assert keyed.get(f"/v1/rounds/{mine.json()['id']}", headers=alice).json()["spec"]["devices"] == 2
    for path in ("/v1/datasets", "/v1/rounds", "/v1/models/fashion_mnist/versions"):
        assert keyed.get(path).status_code == 401, path


def test_the_pages_are_open_but_nothing_behind_them(keyed: TestClient) -> None:
    for path in ("/ui/", "/ui/app.js", "/ui/vendor/swagger-ui/swagger-ui.css", "/docs", "/redoc"):
        answer = keyed.get(path)
        assert answer.status_code == 200, path
        assert "default-src 'self'" in answer.headers["content-security-policy"], path
    assert keyed.get("/ui", follow_redirects=False).headers["location"] == "/ui/"
    for path in ("/openapi.json", "/v1/fleet", "/v1/whoami", "/ui/../v1/fleet", "/ui/%2e%2e/v1/fleet"):
        answer = keyed.get(path)
        assert answer.status_code in (401, 404), path  # never the API's answer without a key
        assert "devices" not in answer.text, path
    outside = keyed.get("/ui/..%2f..%2fconfig.py")  # StaticFiles keeps to its folder
    assert outside.status_code == 404 and "Settings" not in outside.text


def test_whoami_says_what_a_key_may_touch(keyed: TestClient) -> None:
    assert keyed.get("/v1/whoami", headers=bearer(ADMIN)).json() == {"role": "admin", "prefix": ""}
    assert keyed.get("/v1/whoami", headers=bearer(ALICE)).json() == {"role": "devices", "prefix": "alice-"}
    assert keyed.get("/v1/whoami").status_code == 401


def test_a_listing_filtered_by_prefix_stays_within_the_keys_prefix(keyed: TestClient) -> None:
    admin, alice = bearer(ADMIN), bearer(ALICE)
    ids = ["alice-1", "alice-2", "alice-20", "bob-1"]
    assert keyed.post("/v1/devices/bulk-create", json={"ids": ids}, headers=admin).status_code == 201

    def listed(prefix: str, headers: dict[str, str]) -> tuple[list[str], int]:
        page = keyed.get("/v1/devices", params={"prefix": prefix}, headers=headers).json()
        return [d["id"] for d in page["devices"]], page["total"]

    assert listed("alice-2", admin) == (["alice-2", "alice-20"], 2)
    assert listed("", admin) == (ids, 4)
    assert listed("b", admin) == (["bob-1"], 1)
    assert listed("alice-2", alice) == (["alice-2", "alice-20"], 2)  # within the key's prefix
    assert listed("a", alice) == (["alice-1", "alice-2", "alice-20"], 3)  # narrowed to it
    assert listed("bob-", alice) == ([], 0)  # outside it: nothing, not even a count
    too_long = keyed.get("/v1/devices", params={"prefix": "a" * 129}, headers=admin)
    assert too_long.status_code == 422 and "prefix" in too_long.text
