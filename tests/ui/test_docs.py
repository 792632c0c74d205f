"""The API docs' pages against a real server that wants keys: Swagger UI (``/docs``) and ReDoc (``/redoc``).

The pages and their assets are open, ``/openapi.json`` is not: the pages fetch it with the key the
dashboard stored, or ask for one. The ``page`` fixture checks that nothing reached another host.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from service.server_process import ServerProcess
from tests.browser import ADMIN_KEY, KEY_STORAGE, BrowserLog, screenshot, store_key

REFUSED_SPEC = r"status of 401 .* at http://127\.0\.0\.1:\d+/openapi\.json$"
"""Chromium's console error for the page's own fetch of ``/openapi.json`` without a key."""


@pytest.fixture(scope="module")
def spec(keyed_server: ServerProcess) -> dict[str, Any]:
    answer = httpx.get(f"{keyed_server.url}/openapi.json", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    answer.raise_for_status()
    document: dict[str, Any] = answer.json()
    return document


def operation(page: Page, method: str, path: str) -> Locator:
    """Swagger UI's block for one operation."""
    return page.locator(f".opblock-{method.lower()}").filter(has=page.locator(f'[data-path="{path}"]'))


def operation_blocks(spec: dict[str, Any]) -> int:
    """How many blocks Swagger UI shows: one per operation and tag (untagged ones under "default")."""
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    operations = [op for item in spec["paths"].values() for method, op in item.items() if method in methods]
    return sum(max(1, len(op.get("tags", []))) for op in operations)


def test_the_document_still_needs_a_key_but_the_pages_do_not(keyed_server: ServerProcess) -> None:
    assert httpx.get(f"{keyed_server.url}/openapi.json").status_code == 401
    for path in ("/docs", "/redoc"):
        answer = httpx.get(keyed_server.url + path)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        assert "<script>" not in answer.text  # no inline script: the CSP allows none
        sources = re.findall(r'(?:src|href)="([^"]+)"', answer.text)
        assert sources and all(source.startswith(("/", "data:")) for source in sources), sources
        for source in (source for source in sources if source.startswith("/ui/")):
            assert httpx.get(keyed_server.url + source).status_code == 200, source


def test_swagger_ui_lists_every_operation(
    page: Page, keyed_server: ServerProcess, spec: dict[str, Any]
) -> None:
    store_key(page, ADMIN_KEY)
    page.goto(f"{keyed_server.url}/docs")
    expect(operation(page, "GET", "/v1/devices")).to_be_visible()
    expect(page.locator(".opblock")).to_have_count(operation_blocks(spec))
    expect(page.locator("#docs-key")).to_be_hidden()
    expect(page.locator("#docs-status")).to_be_hidden()
    screenshot(page, "docs")


def test_try_it_out_sends_the_stored_key(page: Page, keyed_server: ServerProcess) -> None:
    store_key(page, ADMIN_KEY)
    page.goto(f"{keyed_server.url}/docs")
    models = operation(page, "GET", "/v1/models")
    models.locator(".opblock-summary").click()
    models.get_by_role("button", name="Try it out").click()
    with page.expect_response(f"{keyed_server.url}/v1/models") as answered:
        models.get_by_role("button", name="Execute").click()
    assert answered.value.status == 200
    assert answered.value.request.headers["authorization"] == f"Bearer {ADMIN_KEY}"
    expect(models.locator(".live-responses-table tr.response .response-col_status")).to_have_text("200")


def test_without_a_key_the_page_asks_for_one(
    page: Page, keyed_server: ServerProcess, browser_log: BrowserLog
) -> None:
    browser_log.allow(REFUSED_SPEC)
    page.goto(f"{keyed_server.url}/docs")
    form = page.locator("#docs-key")
    expect(form).to_be_visible()
    expect(form).to_contain_text("needs an API key")
    expect(page.locator(".opblock")).to_have_count(0)

    form.get_by_label("API key").fill("not-the-key-0123456789")
    form.get_by_role("button", name="Use this key").click()
    expect(form).to_contain_text("refused this key (401)")

    form.get_by_label("API key").fill(ADMIN_KEY)
    form.get_by_role("button", name="Use this key").click()
    expect(operation(page, "GET", "/v1/devices")).to_be_visible()
    expect(form).to_be_hidden()
    assert page.evaluate(f"sessionStorage.getItem('{KEY_STORAGE}')") == ADMIN_KEY


def test_redoc_renders_the_document(page: Page, keyed_server: ServerProcess, spec: dict[str, Any]) -> None:
    store_key(page, ADMIN_KEY)
    page.goto(f"{keyed_server.url}/redoc")
    redoc = page.locator("#redoc")
    expect(redoc.locator("h1")).to_contain_text(spec["info"]["title"])
    summary = spec["paths"]["/v1/devices"]["get"]["summary"]
    expect(redoc.locator("h2").filter(has_text=summary)).to_be_visible()  # the operation's section
    expect(redoc.get_by_role("menu").get_by_text(summary)).to_be_attached()  # and its menu entry


def test_the_pages_fit_a_phone(narrow_page: Page, keyed_server: ServerProcess) -> None:
    store_key(narrow_page, ADMIN_KEY)
    for path in ("/docs", "/redoc"):
        narrow_page.goto(keyed_server.url + path)
        expect(narrow_page.locator(".opblock, #redoc h1").first).to_be_visible()
        width = narrow_page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide on a 390 px screen"
