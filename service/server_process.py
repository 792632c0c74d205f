"""Start ``fleet serve`` as a child process on a free loopback port, for harnesses and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A real uvicorn server in its own process, ready when the constructor returns.

    Use as a context manager, or call ``stop()``; its output goes to ``log``.
    """

    def __init__(
        self,
        data_dir: Path,
        *extra_args: str,
        log: Path | None = None,
        timeout: float = 90.0,
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        """Where to reach it from this host (loopback, whatever ``host`` it listens on)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = log or data_dir.parent / f"server-{self.port}.log"
        command = [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--host",
            host,
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
        ]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [*command, *extra_args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout} s:\n{self.log.read_text()[-3000:]}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown that persists device records), then SIGKILL after 30 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
