"""A real ``fleet serve``: its first words, API keys through FleetClient, protected mode on a socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.client import FleetClient
from service.errors import DeviceNotFound, Forbidden, NotAuthenticated
from service.server_process import ServerProcess

ADMIN = "e2e-admin-key-0123456789abcdef"
PHONES = "e2e-phones-key-0123456789abcdef"


def test_serve_starts_clean_and_says_where_and_how(
    tmp_path: Path, train_batch: tuple[np.ndarray, np.ndarray]
) -> None:
    data = tmp_path / "data"
    with ServerProcess(data) as server, FleetClient(server.url) as client:
        client.create_device("phone")
        client.train("phone", x=train_batch[0], y=train_batch[1])  # the Flex delegate's first run
        client.save("phone")
        log = server.log.read_text()
    head = log.splitlines()[:6]
    assert head[0].startswith("tflite-fleet ") and f"http://127.0.0.1:{server.port}" in head[0]
    assert str(data.resolve()) in head[1]
    assert "fashion_mnist" in head[2]
    assert "API keys" in head[3] and "protected mode" in head[3]
    assert f"dashboard:      http://127.0.0.1:{server.port}/ui/" in head[5]
    for noise in ("cuda", "XLA", "xla", "cuInit", "E0000", "W0000", "absl", "delegate"):
        assert noise not in log, f"{noise!r} in the server's output:\n{log[:3000]}"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("keyed")
    keys = root / "keys.txt"
    keys.write_text(f"{ADMIN} admin\n{PHONES} devices phone-\n", encoding="utf-8")
    with ServerProcess(root / "data", env={"FLEET_API_KEYS_FILE": str(keys)}) as server:
        yield server


def test_fleet_client_sends_its_key(
    keyed_server: ServerProcess, train_batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = train_batch
    assert "on, 2 key(s)" in keyed_server.log.read_text().splitlines()[3]
    with FleetClient(keyed_server.url) as anonymous, pytest.raises(NotAuthenticated):
        anonymous.devices().__next__()
    with (
        FleetClient(keyed_server.url, api_key=PHONES) as phones,
        FleetClient(keyed_server.url, api_key=ADMIN) as admin,
    ):
        admin.create_device("tablet-1")
        phones.create_device("phone-1")
        phones.train("phone-1", x=x, y=y)
        phones.save("phone-1")
        saved = phones.infer("phone-1", x=x[:3])["logits"]
        phones.restart("phone-1")
        np.testing.assert_array_equal(phones.infer("phone-1", x=x[:3])["logits"], saved)
        assert [d["id"] for d in phones.devices()] == ["phone-1"]
        with pytest.raises(DeviceNotFound):
            phones.device("tablet-1")
        with pytest.raises(Forbidden):
            phones.fleet()
        assert admin.fleet()["devices"] == 2


def _outward_address() -> str | None:
    """An address of this host that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, a route is chosen
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_protected_mode_refuses_a_client_on_another_address(tmp_path: Path) -> None:
    address = _outward_address()
    if address is None:
        pytest.skip("this host has no address besides loopback")
    # An operator trusting forwarded headers from anywhere must not let a client claim loopback.
    with ServerProcess(tmp_path / "data", host="0.0.0.0", env={"FORWARDED_ALLOW_IPS": "*"}) as server:
        outward = f"http://{address}:{server.port}"
        with httpx.Client(base_url=outward, trust_env=False) as http:
            assert http.get("/healthz").status_code == 200
            refused = http.get("/v1/devices")
            spoofed = http.get("/v1/fleet", headers={"x-forwarded-for": "127.0.0.1"})
        assert refused.status_code == 403 and spoofed.status_code == 403
        assert "FLEET_API_KEYS_FILE" in refused.json()["error"]["message"]
        assert httpx.get(f"{server.url}/v1/devices", trust_env=False).status_code == 200
