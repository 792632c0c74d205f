"""The browser harness itself: what a page sends off this machine never leaves and is reported, and
what it sends to the server goes through while the test waits on the server rather than the page."""

from __future__ import annotations

import time

import httpx
from playwright.sync_api import Browser

from service.server_process import ServerProcess
from tests.browser import ADMIN_KEY, BrowserLog, OpenPage, store_key


def test_a_request_off_this_machine_goes_to_the_dead_proxy_and_is_reported(browser: Browser) -> None:
    log = BrowserLog()
    failures: list[str | None] = []
    context = browser.new_context()
    try:
        page = context.new_page()
        log.watch(page)
        page.on("requestfailed", lambda request: failures.append(request.failure))
        outcome = page.evaluate(
            "fetch('http://192.0.2.1/probe').then(() => 'reached', (error) => 'failed: ' + error)"
        )
    finally:
        context.close()
    assert outcome.startswith("failed"), outcome
    assert failures == ["net::ERR_PROXY_CONNECTION_FAILED"]  # not sent to the address itself
    assert "request off this machine: GET http://192.0.2.1/probe" in log.problems, log.problems


def test_a_pages_call_reaches_the_server_while_the_test_waits_on_the_server(
    open_page: OpenPage, keyed_server: ServerProcess
) -> None:
    page = open_page({"width": 800, "height": 600})
    store_key(page, ADMIN_KEY)
    page.goto(f"{keyed_server.url}/ui/#/devices")
    page.evaluate(  # not awaited: the page sends it while Python calls no Playwright
        """() => { fetch('/v1/devices', { method: 'POST', body: JSON.stringify({ id: 'from-the-page' }),
            headers: { 'content-type': 'application/json',
                       authorization: 'Bearer ' + sessionStorage.getItem('fleet-key') } }); }"""
    )
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    deadline = time.monotonic() + 10
    with httpx.Client(base_url=keyed_server.url, headers=headers) as http:
        while http.get("/v1/devices/from-the-page").status_code != 200:
            assert time.monotonic() < deadline, "the page's call did not reach the server"
            time.sleep(0.1)
