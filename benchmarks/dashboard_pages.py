"""The dashboard over 100,000 devices: how fast its pages answer and render, and what staying open costs.

A real ``fleet serve`` gets ``--devices`` devices (one bulk request). Then:

- the API calls behind the pages (``GET /v1/devices?limit=100`` at the first page, half-way through the
  IDs, filtered by a prefix; ``GET /v1/fleet``; ``GET /v1/devices/{id}``), median and p95 of
  ``--calls`` each, beside the same page taken in-process (``Fleet.page`` and each device's record, on
  the same data directory once the server is gone): the ratio is what HTTP and JSON add;
- Chromium (Debian's, as the tests use it) opening the Fleet, Devices (first and a deep page) and Device
  pages until their figures show;
- the Fleet page left open for ``--soak`` seconds (it polls every second): the server's RSS and the
  page's JavaScript heap before and after, which must stay flat.

    .venv/bin/python -m benchmarks.dashboard_pages [--devices 100000] [--calls 30] [--soak 120]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect, sync_playwright

from benchmarks._common import machine, percentile, table
from service.fleet import Fleet
from service.server_process import ServerProcess
from tests.browser import CHROMIUM, CHROMIUM_ARGS

PREFIX = "bench-"


def timings(http: httpx.Client, path: str, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        http.get(path).raise_for_status()
        samples.append(time.perf_counter() - started)
    return samples


def in_process(data_dir: Path, after: str | None, prefix: str, calls: int) -> list[float]:
    fleet = Fleet(data_dir)
    try:
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            page = fleet.page(after, 100, prefix=prefix)
            [device.info() for device in page.devices]
            fleet.count(prefix)
            samples.append(time.perf_counter() - started)
        return samples
    finally:
        fleet.close()


def shown_in(page: Page, url: str, selector: str, text: str | None = None) -> float:
    """Seconds from navigation until ``selector`` is visible (and holds ``text``)."""
    started = time.perf_counter()
    page.goto(url)
    target = page.locator(selector).first
    expect(target).to_be_visible(timeout=30_000)
    if text is not None:
        expect(target).to_contain_text(text, timeout=30_000)
    return time.perf_counter() - started


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def heap_mib(page: Page) -> float:
    used: float = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : -1")
    return used / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--soak", type=float, default=120.0)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        with ServerProcess(data_dir, env={"FLEET_MAX_BULK": str(max(args.devices, 1000))}) as server:
            with httpx.Client(base_url=server.url, timeout=600) as http:
                started = time.perf_counter()
                ids = http.post("/v1/devices/bulk-create", json={"count": args.devices, "prefix": PREFIX})
                ids.raise_for_status()
                created = time.perf_counter() - started
                middle = sorted(ids.json()["ids"])[args.devices // 2]
                narrow = middle[: len(PREFIX) + 2]
                paths = {
                    "devices, first page": "/v1/devices?limit=100",
                    "devices, half-way": f"/v1/devices?limit=100&after={middle}",
                    f"devices, prefix {narrow}": f"/v1/devices?limit=100&prefix={narrow}",
                    "fleet status": "/v1/fleet",
                    "one device": f"/v1/devices/{middle}",
                }
                api = {name: timings(http, path, args.calls) for name, path in paths.items()}
            pid = server.pid
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM),
                    headless=True,
                    args=[*CHROMIUM_ARGS, "--enable-precise-memory-info"],
                )
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                ui = server.url + "/ui/#"
                total = f"of {args.devices:,}"
                pages = {
                    "Fleet": shown_in(page, ui + "/fleet", '[data-figure="devices"]', f"{args.devices:,}"),
                    "Devices, first page": shown_in(page, ui + "/devices", "#page-range", total),
                    "Devices, half-way": shown_in(
                        page, ui + f"/devices?after={middle}", "#page-range", total
                    ),
                    "Device": shown_in(page, ui + f"/devices/{middle}", '[data-figure="train_steps"]', "0"),
                }
                page.goto(ui + "/fleet")
                expect(page.locator('[data-figure="requests_rate"]')).not_to_have_text("—", timeout=30_000)
                rss_before, heap_before = rss_mib(pid), heap_mib(page)
                time.sleep(args.soak)
                page.evaluate("window.gc && window.gc()")
                rss_after, heap_after = rss_mib(pid), heap_mib(page)
                browser.close()
        local = {
            "devices, first page": in_process(data_dir, None, "", args.calls),
            "devices, half-way": in_process(data_dir, middle, "", args.calls),
            f"devices, prefix {narrow}": in_process(data_dir, None, narrow, args.calls),
        }

    print(f"{args.devices:,} devices created in one bulk request in {created:.1f} s")
    rows = []
    for name, samples in api.items():
        base = statistics.median(local[name]) if name in local else None
        median = statistics.median(samples)
        rows.append([
            name, f"{1000 * median:.1f}", f"{1000 * percentile(samples, 95):.1f}",
            "—" if base is None else f"{1000 * base:.1f}", "—" if base is None else f"{median / base:.1f}",
        ])  # fmt: skip
    table(
        f"API calls behind the pages ({args.calls} calls each)",
        ["call", "median ms", "p95 ms", "in-process ms", "HTTP / in-process"],
        rows,
    )
    table(
        "Pages in Chromium",
        ["page", "until its figures show, ms"],
        [[k, f"{1000 * v:.0f}"] for k, v in pages.items()],
    )
    table(
        f"The Fleet page open for {args.soak:.0f} s (one poll a second)",
        ["", "before", "after", "change"],
        [
            ["server RSS, MiB", f"{rss_before:.1f}", f"{rss_after:.1f}", f"{rss_after - rss_before:+.1f}"],
            [
                "page JS heap, MiB",
                f"{heap_before:.1f}",
                f"{heap_after:.1f}",
                f"{heap_after - heap_before:+.1f}",
            ],
        ],
    )


if __name__ == "__main__":
    main()
