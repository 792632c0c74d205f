"""A real multi-node Ray cluster on loopback (a head and two worker nodes), and the service joined to it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.server_process import ServerProcess, free_port

RAY = str(Path(sys.executable).with_name("ray"))
NODE_TIMEOUT = 120.0


class RayCluster:
    """``ray start --head`` and ``ray start --address`` nodes, each a ``--block`` process we own."""

    def __init__(self, workers: int = 2) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's sockets live here
        self.log_dir = Path(self.temp_dir)
        self.nodes: list[subprocess.Popen[bytes]] = []
        common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
        try:
            head = [
                "--head",
                "--port",
                str(self.port),
                "--temp-dir",
                self.temp_dir,
                "--include-dashboard",
                "false",
            ]
            self._start("head", [*head, "--resources", '{"head": 1}', *common])
            self._wait_nodes(1)
            for i in range(workers):  # one at a time: nodes starting together time out on 2 cores
                self._start(
                    f"worker-{i}",
                    ["--address", self.address, "--resources", json.dumps({f"worker_{i}": 1}), *common],
                )
                self._wait_nodes(2 + i)
        except BaseException:
            self.stop()
            raise

    def _start(self, name: str, args: list[str]) -> None:
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        with open(self.log_dir / f"{name}.log", "wb") as out:
            self.nodes.append(
                subprocess.Popen(
                    [RAY, "start", *args],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            )

    def alive_nodes(self) -> int:
        out = subprocess.run(
            [RAY, "status", "--address", self.address], capture_output=True, text=True, timeout=60
        )
        if out.returncode != 0:
            return 0
        active = out.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return sum(1 for line in active.splitlines() if "node_" in line)

    def _wait_nodes(self, count: int) -> None:
        deadline = time.monotonic() + NODE_TIMEOUT
        while time.monotonic() < deadline:
            if any(node.poll() is not None for node in self.nodes):
                raise RuntimeError(f"a Ray node exited; logs in {self.log_dir}")
            if self.alive_nodes() >= count:
                return
            time.sleep(1)
        raise RuntimeError(f"{count} Ray nodes not up in {NODE_TIMEOUT} s; logs in {self.log_dir}")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGTERM)
        for node in self.nodes:
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait(timeout=10)


@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[RayCluster]:
    cluster = RayCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


def sharded_server(
    data_dir: Path, cluster: RayCluster, shards: int, *args: str, env: dict[str, str] | None = None
) -> ServerProcess:
    return ServerProcess(
        data_dir, "--ray-address", cluster.address, "--shards", str(shards), *args, timeout=240, env=env
    )


def ready_spares(shards: Callable[[], dict[str, Any]], timeout: float = 120) -> list[dict[str, Any]]:
    """The spares in ``shards()`` (GET /v1/fleet/shards) once there is one and each has imported
    TensorFlow (they start in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spares = list(shards()["spares"])
        if spares and all(s["state"] == "ready" for s in spares):
            return spares
        time.sleep(0.2)
    raise AssertionError(f"the spares were not ready within {timeout} s")
