"""Browser fixtures for the pages (``/ui``, ``/docs``, ``/redoc``): Playwright driving Debian's Chromium.

A plugin of the whole suite (``tests/conftest.py``), so that the sharded fleet's tests use them too.

Every page a test opens proves, when the test ends, that the browser saw nothing wrong: no console
error, no uncaught exception, no failed request, and no request to a host but this machine's (those
go to a proxy that is not there, so they fail, and are reported). A test that expects an error, a 401
say, allows it with ``browser_log``.

Nothing is intercepted (``page.route``): with the sync API an intercepted request waits until Python
next calls Playwright, so a page's call would hang while the test waits on the server.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Request,
    ViewportSize,
    WebSocket,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium calls Google (updates, sync, field trials), which fails offline.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Off-machine requests go to a port nothing listens on, and fail; loopback ones go direct.
    "--proxy-server=http://127.0.0.1:9",
]
TIMEOUT_MS = 15_000
"""Every wait of a page (Playwright's ``expect`` and ``wait_for`` too) gives up after this long."""
expect.set_options(timeout=TIMEOUT_MS)
WIDE = ViewportSize(width=1280, height=800)
NARROW = ViewportSize(width=390, height=844)
"""A phone's viewport."""
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SCREENSHOTS = Path(os.environ.get("FLEET_SCREENSHOTS") or Path(tempfile.gettempdir()) / "fleet-screenshots")
"""Where the tests' screenshots go: a temporary folder, or ``FLEET_SCREENSHOTS=docs/screenshots`` to
renew the README's (a plain test run leaves the checkout as it was)."""
ADMIN_KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
KEY_STORAGE = "fleet-key"
"""Where the pages keep the API key: ``sessionStorage``, under this name."""


def screenshot(page: Page, name: str, *, full_page: bool = False) -> Path:
    """Writes ``{SCREENSHOTS}/{name}.png`` and returns its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path, full_page=full_page, animations="disabled")
    return path


def store_key(page: Page, key: str) -> None:
    """Has every document ``page`` loads from now on find ``key`` stored, as the dashboard leaves it."""
    page.add_init_script(f"sessionStorage.setItem({json.dumps(KEY_STORAGE)}, {json.dumps(key)})")


def on_this_machine(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme not in {"http", "https", "ws", "wss"} or parts.hostname in LOOPBACK_HOSTS


@dataclass
class BrowserLog:
    """What went wrong in a test's pages, and which console errors the test said to expect."""

    problems: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Console errors matching ``pattern`` (their text, then `` at URL``) are expected."""
        self.allowed.append(re.compile(pattern))

    def watch(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught exception: {error}"))
        page.on("request", self._request)
        page.on("requestfailed", self._failed)
        page.on("websocket", self._websocket)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            text = f"{message.text} at {message.location.get('url', '?')}"
            if not any(pattern.search(text) for pattern in self.allowed):
                self.problems.append(f"console error: {text}")

    def _request(self, request: Request) -> None:
        if not on_this_machine(request.url):
            self.problems.append(f"request off this machine: {request.method} {request.url}")

    def _failed(self, request: Request) -> None:
        if on_this_machine(request.url):  # an off-machine one is reported by _request
            self.problems.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def _websocket(self, socket: WebSocket) -> None:
        if not on_this_machine(socket.url):
            self.problems.append(f"WebSocket off this machine: {socket.url}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium "
            "(apt-get install chromium; Playwright's own browsers are not used)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def browser_log() -> BrowserLog:
    return BrowserLog()


OpenPage = Callable[[ViewportSize], Page]


@pytest.fixture
def open_page(browser: Browser, browser_log: BrowserLog) -> Iterator[OpenPage]:
    """Opens watched pages, each in a context of its own (its own sessionStorage); checks them at the end."""
    contexts = []

    def open_one(viewport: ViewportSize) -> Page:
        context = browser.new_context(viewport=viewport, service_workers="block")
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        browser_log.watch(page)
        return page

    yield open_one
    for context in contexts:
        with contextlib.suppress(PlaywrightError):  # the browser went away: the test failed already
            context.close()
    assert not browser_log.problems, "the browser saw:\n" + "\n".join(browser_log.problems)


@pytest.fixture
def page(open_page: OpenPage) -> Page:
    """A watched page, 1280 x 800."""
    return open_page(WIDE)


@pytest.fixture
def narrow_page(open_page: OpenPage) -> Page:
    """A watched page the size of a phone's screen, 390 x 844."""
    return open_page(NARROW)
