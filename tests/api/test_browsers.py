"""What a web page can make a browser send is refused (``service.api.browsers``); honest clients pass.

The requests here are the ones a page sends: its Host when its name was rebound to this machine, its
Origin and ``Sec-Fetch-Site``, the content types a page can send without a CORS preflight. The same
pages driven in Chromium are in ``tests/ui/test_cross_site.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from uvicorn.middleware.proxy_headers import _TrustedHosts

from service.api import create_app
from service.api.auth import LOOPBACK_PROXIES, is_loopback
from service.config import Settings
from tests.local import JSON_TYPE, LOOPBACK, local_client

KEY = "0123456789abcdef0123456789abcdef"
SERVICE = "localhost"
"""The Host the in-process client names, as ``local_client`` sets it."""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Protected mode (no keys), allowing one extra host and one page origin."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("browsers") / "data",
        allowed_hosts="fleet.internal, fleet.example:8443",
        allowed_origins="https://notebook.example/",
    )
    with local_client(create_app(settings)) as running:
        assert running.post("/v1/devices", json={"id": "victim"}).status_code == 201
        yield running


def devices(client: TestClient) -> list[str]:
    return [d["id"] for d in client.get("/v1/devices").json()["devices"]]


def refused(response, status: int, *words: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert all(word in message for word in words), message


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "fleet.internal.evil", "10.0.0.8"]
)
def test_a_rebound_name_is_refused_in_protected_mode(client: TestClient, host: str) -> None:
    refused(client.get("/v1/devices", headers={"host": host}), 403, repr(host), "DNS rebinding")
    refused(
        client.post("/v1/devices", json={"id": "planted"}, headers={"host": host}), 403, "FLEET_ALLOWED_HOSTS"
    )
    assert "planted" not in devices(client)


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8000",
        "127.0.0.1:8000",
        "127.8.9.10",
        "[::1]:8000",
        "app.localhost:3000",
        "fleet.internal",
        "FLEET.INTERNAL:9000",
        "fleet.example:8443",
    ],
)
def test_loopback_names_and_allowed_hosts_are_served(client: TestClient, host: str) -> None:
    assert client.get("/v1/devices", headers={"host": host}).status_code == 200


def test_probes_and_static_pages_answer_any_host(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/ui/", "/docs"):
        assert client.get(path, headers={"host": "10.1.2.3:8000"}).status_code == 200, path


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"origin": "http://localhost:3000"},  # another port of this machine is another origin
        {"origin": "null"},  # a sandboxed frame, a file:// page
        {"origin": "https://notebook.example.evil"},
        {"sec-fetch-site": "cross-site"},
        {"origin": "http://evil.example", "sec-fetch-site": "cross-site"},
    ],
)
def test_a_page_of_another_origin_can_change_nothing(client: TestClient, headers: dict[str, str]) -> None:
    refused(client.post("/v1/devices", json={"id": "planted"}, headers=headers), 403, "FLEET_ALLOWED_ORIGINS")
    refused(client.post("/v1/devices/victim/save", headers=headers), 403, "another")
    refused(client.get("/v1/devices", headers=headers), 403)
    assert "planted" not in devices(client)
    assert client.get("/v1/devices/victim").json()["has_checkpoint"] is False


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": f"http://{SERVICE}"},  # the service's own pages (the dashboard)
        {"origin": f"http://{SERVICE}", "sec-fetch-site": "same-origin"},
        {"origin": "https://notebook.example", "sec-fetch-site": "cross-site"},  # FLEET_ALLOWED_ORIGINS
        {"sec-fetch-site": "none"},  # typed into the address bar
    ],
)
def test_the_services_own_pages_and_allowed_origins_are_served(
    client: TestClient, headers: dict[str, str]
) -> None:
    assert client.get("/v1/devices", headers=headers).status_code == 200
    assert client.post("/v1/devices/victim/train", json={}, headers=headers).status_code != 403


@pytest.mark.parametrize(
    ("content_type", "shown"),
    [
        (None, "a body without a content type"),
        ("text/plain", "'text/plain'"),
        ("text/plain;charset=UTF-8", "'text/plain'"),
        ("application/x-www-form-urlencoded", "'application/x-www-form-urlencoded'"),
        ("multipart/form-data; boundary=x", "'multipart/form-data'"),
    ],
)
def test_a_post_a_page_can_send_without_a_preflight_is_refused(
    client: TestClient, content_type: str | None, shown: str
) -> None:
    """The issue's attack: ``fetch(url, {method: "POST", mode: "no-cors", body: blob})`` from a page."""
    headers = {} if content_type is None else {"content-type": content_type}
    request = client.build_request("POST", "/v1/devices", content=b'{"id": "planted"}', headers=headers)
    if content_type is None:
        assert "content-type" not in request.headers
    refused(client.send(request), 415, shown, "cross-site request forgery", "application/json")
    assert "planted" not in devices(client)


def test_declared_types_and_empty_posts_pass(client: TestClient) -> None:
    assert client.post("/v1/devices", content=b'{"id": "typed"}', headers=JSON_TYPE).status_code == 201
    assert client.post("/v1/devices/typed/save").status_code == 200  # no body: nothing to declare
    assert client.delete("/v1/devices/typed").status_code == 204  # PUT/DELETE need a preflight anyway


def test_with_keys_any_host_is_served_unless_hosts_are_listed(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY} admin\n")
    auth = {"authorization": f"Bearer {KEY}"}
    for listed, status in (("", 200), ("fleet.example", 403)):
        settings = Settings(data_dir=tmp_path / "data", api_keys_file=keys, allowed_hosts=listed)
        with TestClient(
            create_app(settings), client=("10.0.0.9", 5000), base_url="http://any.example"
        ) as keyed:
            assert keyed.get("/v1/devices", headers=auth).status_code == status
            assert keyed.get("/v1/devices", headers={**auth, "host": "fleet.example"}).status_code == 200


def test_a_keyed_client_may_post_a_body_without_a_type(tmp_path: Path) -> None:
    """A page cannot send an Authorization header to another origin without a preflight."""
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY} admin\n")
    settings = Settings(data_dir=tmp_path / "data", api_keys_file=keys)
    with TestClient(create_app(settings), client=LOOPBACK) as keyed:
        auth = {"authorization": f"Bearer {KEY}"}
        assert keyed.post("/v1/devices", json={"id": "keyed"}, headers=auth).status_code == 201
        body = orjson.dumps({"inputs": {"x": [[[0.0] * 28] * 28]}})
        request = keyed.build_request("POST", "/v1/devices/keyed/infer", content=body, headers=auth)
        assert "content-type" not in request.headers
        response = keyed.send(request)
        assert response.status_code == 200, response.text
        assert len(response.json()["outputs"]["logits"][0]) == 10


LOCAL = ["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "::ffff:127.0.0.1", "::ffff:127.3.2.1"]
REMOTE = ["10.0.0.1", "192.168.1.1", "::2", "::ffff:10.0.0.1", "0.0.0.0", "::", "fe80::1", "128.0.0.1"]


@pytest.mark.parametrize("address", LOCAL + REMOTE)
def test_loopback_and_the_trusted_proxies_are_the_same_addresses(address: str) -> None:
    """Protected mode's clients and the proxies whose X-Forwarded-For it believes: one set."""
    assert is_loopback(address) == (address in LOCAL)
    assert (address in _TrustedHosts(LOOPBACK_PROXIES)) == (address in LOCAL)
