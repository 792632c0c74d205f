"""The dashboard and the API docs served by a sharded fleet's front, in Chromium: the same pages, with
the shards' numbers merged and each shard shown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from service.client import FleetClient
from service.server_process import ServerProcess
from service.wire.view import View
from tests.cluster.conftest import RayCluster, sharded_server

DEVICES = 40


@pytest.fixture(scope="module")
def server(ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with sharded_server(tmp_path_factory.mktemp("dashboard") / "data", ray_cluster, 2) as running:
        with FleetClient(running.url) as client:
            client.create_devices(count=DEVICES, prefix="d-")
            client.assign("fashion-mnist", all=True, train_per_device=64, test_per_device=16)
        yield running


def test_the_fleet_page_merges_the_shards_and_lists_them(page: Page, server: ServerProcess) -> None:
    with FleetClient(server.url) as client:
        status, view = client.fleet(), client.shards()
    page.goto(f"{server.url}/ui/#/fleet")
    expect(page.locator('[data-figure="devices"]')).to_have_text(f"{DEVICES}")
    expect(page.locator('[data-figure="shards"]')).to_have_text("2")
    expect(page.locator('[data-figure="train_steps"]')).to_have_text(f"{status['train_steps']:,}")
    rows = page.locator("#shards tbody tr")
    expect(rows).to_have_count(2)
    for row, shard in zip(rows.all(), view["shards"], strict=True):
        expect(row.locator("td").nth(1)).to_have_text(shard["address"])
        expect(row.locator("td").nth(4)).to_have_text(f"{shard['devices']:,}")


def test_a_device_on_either_shard_trains_from_its_page(page: Page, server: ServerProcess) -> None:
    with FleetClient(server.url) as client:
        by_shard = View.parse(client.shards()).partition(d["id"] for d in client.devices())
        assert len(by_shard) == 2
        for device_id in (ids[0] for ids in by_shard.values()):
            before = client.device(device_id)["train_steps"]
            page.goto(f"{server.url}/ui/#/devices/{device_id}")
            steps = page.locator('[data-figure="train_steps"]')
            expect(steps).to_have_text(f"{before:,}")
            page.get_by_role("button", name="Train one batch").click()
            expect(steps).to_have_text(f"{before + 1:,}", timeout=3_000)
            assert client.device(device_id)["train_steps"] == before + 1


def test_the_api_docs_render_from_the_front(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/docs")
    expect(
        page.locator(".opblock-get").filter(has=page.locator('[data-path="/v1/fleet/shards"]'))
    ).to_be_visible()
