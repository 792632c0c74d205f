"""A page on another origin, in the dashboard tests' Chromium, can neither change nor read a protected-mode
fleet on this machine: not by forged requests (``no-cors`` fetches, forms) and not by rebinding its own
name to 127.0.0.1. The same page, served by the fleet itself, can; so the checks are what stops it.

Chromium resolves ``evil.example`` to 127.0.0.1 here (``--host-resolver-rules``), as a rebinding
attacker's DNS would; every other name still goes to the dead proxy of ``tests.browser``.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page

from service.server_process import ServerProcess, free_port
from tests.browser import CHROMIUM, CHROMIUM_ARGS, BrowserLog

EVIL = "evil.example"
ATTACK = """async (fleet) => {
    const create = JSON.stringify({ id: 'planted' });
    const step = JSON.stringify({ inputs: { x: [Array(28).fill(Array(28).fill(0.5))],
                                            y: [[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]] } });
    const sent = [
        fetch(fleet + '/v1/devices/victim/train', { method: 'POST', mode: 'no-cors',
                                                    body: new Blob([step]) }),
        fetch(fleet + '/v1/devices/victim/train', { method: 'POST', mode: 'no-cors', body: step }),
        fetch(fleet + '/v1/devices', { method: 'POST', mode: 'no-cors', body: new Blob([create]) }),
        fetch(fleet + '/v1/devices', { method: 'POST', mode: 'no-cors', body: create }),  // text/plain
        fetch(fleet + '/v1/devices', { method: 'POST', mode: 'no-cors',
                                       body: new URLSearchParams({ id: 'planted' }) }),
        fetch(fleet + '/v1/devices/victim/save', { method: 'POST', mode: 'no-cors' }),
        fetch(fleet + '/v1/devices', { method: 'POST', body: create,  // preflighted: refused by Chromium
                                       headers: { 'content-type': 'application/json' } }),
    ];
    const form = document.createElement('form');  // a form posted into a frame, as old-style CSRF does
    form.method = 'POST'; form.action = fleet + '/v1/devices'; form.target = 'sink';
    form.enctype = 'text/plain';
    const field = document.createElement('input');
    field.name = '{"id": "planted", "x": "'; field.value = '"}';
    form.appendChild(field);
    const sink = document.createElement('iframe'); sink.name = 'sink';
    document.body.append(sink, form);
    const posted = new Promise((resolve) => { sink.onload = resolve; });
    form.submit();
    await posted;
    await Promise.allSettled(sent);
    const read = await fetch(fleet + '/v1/devices').then((r) => r.text(), (e) => 'failed: ' + e);
    return read;
}"""


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>a page on the web</title><p>nothing to see"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def attacker() -> Iterator[int]:
    """The port of a web server on this machine serving an attacker's page."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A protected-mode ``fleet serve`` (no keys) with one device, ``victim``."""
    with ServerProcess(tmp_path_factory.mktemp("cross-site") / "data") as running:
        assert httpx.post(f"{running.url}/v1/devices", json={"id": "victim"}).status_code == 201
        yield running


@pytest.fixture(scope="module")
def rebinding(browser: Browser) -> Iterator[Browser]:
    """Chromium as the dashboard's tests run it, whose resolver gives ``evil.example`` 127.0.0.1."""
    args = [*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {EVIL} 127.0.0.1", f"--proxy-bypass-list={EVIL}"]
    launched = browser.browser_type.launch(executable_path=str(CHROMIUM), headless=True, args=args)
    yield launched
    launched.close()


def opened(browser: Browser, url: str, log: BrowserLog) -> Page:
    page = browser.new_context().new_page()
    log.watch(page)
    page.goto(url)
    return page


def state(fleet: ServerProcess) -> tuple[list[str], int, bool]:
    """The fleet's devices, and the victim's train steps and whether it has a checkpoint."""
    with httpx.Client(base_url=fleet.url) as http:
        ids = sorted(d["id"] for d in http.get("/v1/devices").json()["devices"])
        victim = http.get("/v1/devices/victim").json()
        return ids, victim["train_steps"], victim["has_checkpoint"]


def test_a_page_of_another_site_can_neither_change_nor_read_the_fleet(
    rebinding: Browser, fleet: ServerProcess, attacker: int
) -> None:
    log = BrowserLog()
    page = opened(rebinding, f"http://{EVIL}:{attacker}/", log)
    read = page.evaluate(ATTACK, fleet.url)
    page.context.close()
    assert read.startswith("failed"), read  # Chromium's CORS keeps the answer from the page
    assert state(fleet) == (["victim"], 0, False)


def test_a_page_whose_name_is_rebound_to_this_machine_is_refused(
    rebinding: Browser, fleet: ServerProcess
) -> None:
    """Same origin for Chromium (``evil.example:PORT`` is the fleet's port), not for the fleet: its Host."""
    log = BrowserLog()
    page = opened(rebinding, f"http://{EVIL}:{fleet.port}/ui/", log)  # the static page is served to all
    answers = page.evaluate(
        """async () => [
            await fetch('/v1/devices').then((r) => r.status + ' ' + r.statusText),
            await fetch('/v1/devices', { method: 'POST', body: JSON.stringify({ id: 'planted' }),
                                          headers: { 'content-type': 'application/json' } })
                  .then((r) => r.status + ' ' + r.statusText),
        ]"""
    )
    page.context.close()
    assert answers == ["403 Forbidden", "403 Forbidden"]
    assert state(fleet) == (["victim"], 0, False)


def test_the_fleets_own_page_can_do_what_the_others_cannot(rebinding: Browser, fleet: ServerProcess) -> None:
    """The control: the attack's own requests, from the fleet's origin, change the fleet."""
    log = BrowserLog()
    log.allow("Failed to load resource")
    page = opened(rebinding, f"{fleet.url}/ui/", log)
    page.evaluate(
        """async () => {
            await fetch('/v1/devices', { method: 'POST', body: JSON.stringify({ id: 'own' }),
                                         headers: { 'content-type': 'application/json' } });
            await fetch('/v1/devices/own/save', { method: 'POST' });
        }"""
    )
    page.context.close()
    deadline = time.monotonic() + 10
    with httpx.Client(base_url=fleet.url) as http:
        while http.get("/v1/devices/own").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert http.get("/v1/devices/own").json()["has_checkpoint"] is True
        assert http.delete("/v1/devices/own").status_code == 204
