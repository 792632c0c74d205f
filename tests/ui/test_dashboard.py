"""The dashboard (``/ui``) in Chromium against a real server that wants keys.

Each page must show what the API answers, follow the fleet live (within about 2 s), and work on a
phone-sized window; the ``page`` fixtures fail a test on any console error or off-machine request.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from service.client import FleetClient
from service.server_process import ServerProcess
from tests.browser import ADMIN_KEY, NARROW, BrowserLog, OpenPage, screenshot, store_key
from tests.ui.conftest import with_keys

DEVICES_KEY = "d0d1d2d3d4d5d6d7d8d9dadbdcdddedfd0d1d2d3d4d5d6d7"
"""A ``devices`` key for the IDs starting with ``lab-``."""
PHONES = 250
LIVE_MS = 3_000
"""How soon a live page must show a change: its refresh period (1-2 s) and a margin."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    keys = f"{ADMIN_KEY} admin\n{DEVICES_KEY} devices lab-\n"
    with with_keys(tmp_path_factory.mktemp("dashboard"), keys) as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[FleetClient]:
    with FleetClient(server.url, api_key=ADMIN_KEY) as client:
        yield client


@pytest.fixture(scope="module")
def study(admin: FleetClient) -> dict[str, Any]:
    """250 phones from the built-in mix and two lab devices (ideal phones: no dropout), all with
    Fashion-MNIST assigned; a finished run of three rounds whose deadline leaves slow phones behind."""
    admin.create_devices(count=PHONES, prefix="phone-", profile_mix="phones")
    admin.create_devices(["lab-1", "lab-2"])
    admin.assign("fashion-mnist", all=True, scheme="iid", train_per_device=100, test_per_device=20)
    run = admin.start_rounds(prefix="phone-", rounds=3, participants=6, deadline=20, seed=3)
    return admin.wait_rounds(run["id"], timeout=300)


def open_dashboard(page: Page, server: ServerProcess, route: str, key: str | None = ADMIN_KEY) -> Page:
    if key is not None:
        store_key(page, key)
    page.goto(f"{server.url}/ui/#{route}")
    return page


def shown(first: int, last: int, total: int) -> str:
    """The devices page's range line: "1\u2013100 of 252"."""
    return f"{first:,}\u2013{last:,} of {total:,}"


def percent(fraction: float) -> str:
    """As the page shows it: JavaScript's ``(100 * v).toFixed(1)`` rounds an exact tie up (85.25 ->
    85.3: 341 of 400 right), where Python's ``:.1f`` rounds it to even (85.2)."""
    tenths = Decimal(100 * fraction).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    return f"{tenths}%"


def figure(page: Page, name: str) -> Locator:
    return page.locator(f'[data-figure="{name}"]')


def first_column(page: Page, table: str) -> list[str]:
    return page.locator(f"#{table} tbody tr td:first-child").all_inner_texts()


def test_the_fleet_page_shows_the_apis_numbers_and_follows_training(
    page: Page, server: ServerProcess, admin: FleetClient, study: dict[str, Any]
) -> None:
    open_dashboard(page, server, "/fleet")
    status = admin.fleet()
    expect(figure(page, "devices")).to_have_text(f"{status['devices']:,}")
    expect(figure(page, "train_steps")).to_have_text(f"{status['train_steps']:,}")
    expect(figure(page, "shards")).to_have_text("one process")
    expect(page.locator("#routes")).to_contain_text("/v1/rounds/{run_id}")

    job = admin.start_job("lab-1", steps=5, batch_size=10, data="assigned")
    assert admin.wait_job("lab-1", job["id"], timeout=60)["state"] == "succeeded"
    trained = admin.fleet()["train_steps"]
    assert trained >= status["train_steps"] + 5
    expect(figure(page, "train_steps")).to_have_text(f"{trained:,}", timeout=LIVE_MS)
    for state, count in admin.fleet()["jobs"].items():
        expect(page.locator("#jobs tr", has_text=state)).to_contain_text(f"{count:,}", timeout=LIVE_MS)
    rate = figure(page, "requests_rate")
    expect(rate).not_to_have_text("—", timeout=LIVE_MS)  # a rate needs two snapshots
    assert float(rate.inner_text().replace(",", "")) > 0  # the page's own polling, at least

    long = admin.start_job("lab-1", epochs=1_000, batch_size=1, data="assigned")  # trains while we look
    steps_chart = page.locator("figure.chart figcaption").first
    expect(steps_chart).to_have_text(re.compile(r"over ([6-9]|\d{2,}) points"), timeout=10_000)  # 1 a second
    expect(figure(page, "train_steps_rate")).not_to_have_text(re.compile(r"^(0\.0|—)$"))
    screenshot(page, "fleet", full_page=True)
    admin.cancel_job("lab-1", long["id"])
    admin.wait_job("lab-1", long["id"], timeout=15)


def test_the_devices_page_pages_through_the_fleet_a_page_at_a_time(
    page: Page, server: ServerProcess, admin: FleetClient, study: dict[str, Any]
) -> None:
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/v1/devices?" in r.url else None)
    everyone = [d["id"] for d in admin.devices()]
    open_dashboard(page, server, "/devices?limit=100")
    total = len(everyone)
    expect(page.locator("#page-range")).to_have_text(shown(1, 100, total))
    assert first_column(page, "devices") == everyone[:100]
    page.get_by_role("link", name="Next").click()
    expect(page.locator("#page-range")).to_have_text(shown(101, 200, total))
    assert first_column(page, "devices") == everyone[100:200]
    page.get_by_role("link", name="Next").click()
    expect(page.locator("#page-range")).to_have_text(shown(201, total, total))
    expect(page.get_by_role("link", name="Next")).to_have_count(0)
    page.get_by_role("link", name="Previous").click()
    expect(page.locator("#page-range")).to_have_text(shown(101, 200, total))
    assert first_column(page, "devices") == everyone[100:200]
    assert asked and all("limit=100" in url for url in asked), asked  # never the whole fleet

    page.get_by_label("Filter").fill("lab-")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#page-range")).to_have_text(shown(1, 2, 2))
    assert first_column(page, "devices") == ["lab-1", "lab-2"]
    phone = admin.device(next(i for i in everyone if i.startswith("phone-")))
    page.get_by_label("Filter").fill(phone["id"])
    page.get_by_role("button", name="Show").click()
    row = page.locator("#devices tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(phone["profile"]["class"])
    expect(row.locator("td").nth(3)).to_have_text(f"{phone['train_steps']:,}")
    page.get_by_label("Filter").fill("")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#page-range")).to_have_text(shown(1, 100, total))
    screenshot(page, "devices")


def test_training_from_the_device_page_moves_its_chart_and_counters(
    page: Page, server: ServerProcess, admin: FleetClient, study: dict[str, Any]
) -> None:
    phone = admin.device(study["rounds"][0]["participants"][0])
    open_dashboard(page, server, f"/devices/{phone['id']}")
    expect(figure(page, "train_steps")).to_have_text(f"{phone['train_steps']:,}")
    expect(page.locator("#profile")).to_contain_text(phone["profile"]["class"])
    device_id = "lab-2"  # no dropout: its one batch always trains
    before = admin.device(device_id)
    history = admin.history(device_id)
    page.goto(f"{server.url}/ui/#/devices/{device_id}")
    expect(figure(page, "train_steps")).to_have_text(f"{before['train_steps']:,}")
    caption = page.locator("figure.chart figcaption")
    expect(caption).to_contain_text(f"{len(history):,} steps" if history else "No training steps yet.")
    expect(page.locator("#profile")).to_contain_text("None: an ideal phone.")

    page.get_by_role("button", name="Train one batch").click()
    expect(figure(page, "train_steps")).to_have_text(f"{before['train_steps'] + 1:,}", timeout=LIVE_MS)
    expect(caption).to_contain_text(f"{len(history) + 1:,} steps", timeout=LIVE_MS)
    after = admin.device(device_id)
    assert after["train_steps"] == before["train_steps"] + 1
    expect(figure(page, "last_loss")).to_contain_text(f"{after['last_loss']:.4g}"[:5])
    expect(page.locator("#jobs tbody tr").first).to_contain_text("succeeded", timeout=LIVE_MS)

    assert not before["has_checkpoint"]
    page.get_by_role("button", name="Save").click()
    expect(figure(page, "checkpoint")).to_have_text(re.compile(r"s ago$"), timeout=LIVE_MS)
    assert admin.device(device_id)["has_checkpoint"]
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Reset").click()
    expect(figure(page, "checkpoint")).to_have_text("none", timeout=LIVE_MS)
    assert not admin.device(device_id)["has_checkpoint"]
    screenshot(page, "device", full_page=True)


def test_a_running_job_is_cancelled_from_the_device_page(
    page: Page, server: ServerProcess, admin: FleetClient, study: dict[str, Any]
) -> None:
    """By a click held down across a refresh, and by the keyboard on a button focused across one: the
    page refreshes under the user's hand without losing the click or the focus."""
    device_id = "lab-1"
    open_dashboard(page, server, f"/devices/{device_id}")
    for how in ("mouse", "keyboard"):
        job = admin.start_job(device_id, epochs=10_000, batch_size=1, data="assigned")
        row = page.locator("#jobs tbody tr", has_text=job["id"])
        expect(row.locator("progress")).to_be_visible(timeout=LIVE_MS)
        cancel = row.get_by_role("button", name="Cancel")
        if how == "mouse":
            cancel.hover()
            page.mouse.down()
        else:
            cancel.focus()
        shown = page.locator("#updated").text_content()
        expect(page.locator("#updated")).not_to_have_text(shown or "", timeout=LIVE_MS)  # a refresh came
        if how == "mouse":
            page.mouse.up()
        else:
            page.keyboard.press("Enter")
        assert admin.wait_job(device_id, job["id"], timeout=15)["state"] == "cancelled", how
        expect(row).to_contain_text("cancelled", timeout=LIVE_MS)
        expect(cancel).to_have_count(0)


def test_the_round_page_shows_every_rounds_metrics(
    page: Page, server: ServerProcess, study: dict[str, Any]
) -> None:
    open_dashboard(page, server, "/rounds")
    page.get_by_role("link", name=study["id"]).click()
    rounds = study["rounds"]
    last = rounds[-1]
    expect(figure(page, "state")).to_have_text("succeeded")
    expect(figure(page, "global_accuracy")).to_have_text(percent(last["global_accuracy"]))
    expect(figure(page, "local_accuracy")).to_have_text(percent(last["mean_local_accuracy"]))
    rows = page.locator("#per-round tbody tr")
    expect(rows).to_have_count(len(rounds))
    for row, metrics in zip(rows.all(), reversed(rounds), strict=True):
        cells = row.locator("td")
        assert cells.nth(0).inner_text() == str(metrics["round"])
        assert cells.nth(2).inner_text() == str(metrics["picked"])
        assert cells.nth(3).inner_text() == str(metrics["finished"])
        assert cells.nth(5).inner_text() == str(metrics["straggled"])
        expect(cells.last).to_contain_text(f"{len(metrics['participants'])} participants")
    assert sum(r["finished"] for r in rounds) > 0
    charts = page.locator("figure.chart")
    expect(charts).to_have_count(2)
    accuracy = charts.first.locator("figcaption")
    expect(accuracy).to_contain_text(f"last {last['global_accuracy']:.4g}")
    for chart in charts.all():  # every chart says its figures in text, for readers who cannot see it
        assert chart.locator("> svg").get_attribute("aria-label") == chart.locator("figcaption").inner_text()
    participants = rows.first.locator("details").first
    participants.locator("summary").click()
    expect(participants).to_have_attribute("open", "")
    shown = page.locator("#updated").text_content()
    expect(page.locator("#updated")).not_to_have_text(shown or "", timeout=LIVE_MS)  # a refresh came
    expect(rows.first.locator("details").first).to_have_attribute("open", "")  # and left it open
    screenshot(page, "round", full_page=True)


def test_the_round_page_shows_the_runs_strategy_and_selection(
    open_page: OpenPage, server: ServerProcess, admin: FleetClient, study: dict[str, Any]
) -> None:
    """The strategy, the options it was given, the server optimizer and the selection, as the run's
    record holds them (FedProx with mu 0.25 and a server learning rate of 0.5, uniform selection)."""
    started = admin.start_rounds(
        ids=["lab-1", "lab-2"],
        aggregation="fedprox",
        options={"proximal_mu": 0.25},
        server_learning_rate=0.5,
        selection="uniform",
        evaluate_on={"dataset": "fashion-mnist", "limit": 100},
        seed=5,
    )
    run = admin.wait_rounds(started["id"], timeout=120)
    assert run["state"] == "succeeded", run
    page = open_dashboard(open_page(NARROW), server, f"/rounds/{run['id']}")
    facts = page.locator("#strategy dl")
    expect(facts).to_contain_text("Strategyfedprox")
    expect(facts).to_contain_text("proximal_mu 0.25")
    expect(facts).to_contain_text("Server optimizerfedprox: learning_rate 0.5")
    expect(facts).to_contain_text("Selectionuniform")
    expect(facts).not_to_contain_text("epsilon")  # uniform reads none of Oort's settings
    expect(facts).to_contain_text("Evaluated onfashion-mnist test, first 100")
    expect(facts).to_contain_text("Partitioniid (replace false), seed 0, fashion-mnist")
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the run's page is {overflow} px wider than a 390 px screen"


def test_the_round_page_shows_a_private_runs_settings_and_epsilon(
    open_page: OpenPage, server: ServerProcess, admin: FleetClient, study: dict[str, Any]
) -> None:
    """Differential privacy and secure aggregation as the run was given them, epsilon so far in a card
    and over the rounds in a chart of its own."""
    started = admin.start_rounds(
        ids=["lab-1", "lab-2"],
        rounds=2,
        selection="uniform",
        privacy={"mode": "central", "noise_multiplier": 1.5, "clip": 0.5, "delta": 1e-6},
        secure_aggregation={"threshold": 2},
        evaluate_on={"dataset": "fashion-mnist", "limit": 100},
    )
    run = admin.wait_rounds(started["id"], timeout=120)
    assert run["state"] == "succeeded", run
    page = open_dashboard(open_page(NARROW), server, f"/rounds/{run['id']}")
    facts = page.locator("#strategy dl")
    expect(facts).to_contain_text("Privacycentral DP: noise multiplier 1.5, clip 0.5, delta 0.000001, rdp")
    expect(facts).to_contain_text("Secure aggregationSecAgg (every pair), threshold 2")
    epsilon = run["rounds"][-1]["privacy"]["epsilon"]
    expect(figure(page, "epsilon")).to_have_text(f"{epsilon:.4g}")
    chart = page.locator("figure.chart").nth(2)
    expect(chart.locator("figcaption")).to_contain_text("Privacy spent: epsilon at delta 0.000001")


def test_a_devices_key_sees_only_its_devices(
    page: Page, server: ServerProcess, browser_log: BrowserLog, study: dict[str, Any]
) -> None:
    browser_log.allow(r"status of 403 .*/v1/fleet$")  # the fleet page's call: it needs an admin key
    open_dashboard(page, server, "/devices", key=DEVICES_KEY)
    expect(page.locator("#key-state")).to_have_text("devices 'lab-*'")
    expect(page.locator("#page-range")).to_have_text(shown(1, 2, 2))
    assert first_column(page, "devices") == ["lab-1", "lab-2"]
    page.goto(f"{server.url}/ui/#/fleet")
    expect(page.locator("#banner")).to_contain_text("needs an admin key")


def test_without_a_key_the_dashboard_asks_for_one(
    page: Page, server: ServerProcess, browser_log: BrowserLog, study: dict[str, Any]
) -> None:
    browser_log.allow(r"status of 401")  # the refused calls, before the key is typed in
    open_dashboard(page, server, "/fleet", key=None)
    expect(page.locator("#banner")).to_contain_text("needs an API key")
    expect(figure(page, "devices")).to_have_count(0)
    page.get_by_label("API key").fill(ADMIN_KEY)
    page.get_by_role("button", name="Use").click()
    expect(page.locator("#key-state")).to_have_text("admin")
    expect(figure(page, "devices")).to_have_text(f"{PHONES + 2:,}")
    expect(page.locator("#banner")).to_be_hidden()


@pytest.mark.parametrize("route", ["/fleet", "/devices", "/rounds"])
def test_pages_fit_a_phone_screen(
    open_page: OpenPage, server: ServerProcess, study: dict[str, Any], route: str
) -> None:
    page = open_dashboard(open_page(NARROW), server, route)
    expect(page.locator("#view h1")).to_be_visible()
    expect(page.locator("#view table").first).to_be_visible()
    time.sleep(0.5)  # a refresh or two: the layout settles
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{route} is {overflow} px wider than a 390 px screen"
    if route == "/fleet":
        screenshot(page, "fleet-narrow", full_page=True)
