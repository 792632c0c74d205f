"""The cluster's durable state, in ``data_dir/cluster/`` on the disk every node shares.

``view.json`` holds the committed epoch and slot count, and the slot count of a resize in progress
(``pending``): whoever starts (a shard Ray restarted, a restarted coordinator) reads the truth here,
never from arguments given before the last resize. ``shard-<slot>.json`` counts that slot's
incarnations (each process taking the slot gets the next number) and names the Ray actor that took it
last, so that a restarted coordinator finds the slot's process.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from service.errors import CorruptState
from service.storage import read_json, write_json

CLUSTER_DIR = "cluster"


@dataclass(frozen=True)
class Membership:
    epoch: int
    shards: int
    pending: int | None = None
    """The slot count a resize in progress moves to."""


class ClusterState:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.directory = self.data_dir / CLUSTER_DIR
        self.directory.mkdir(parents=True, exist_ok=True)

    def membership(self) -> Membership | None:
        value = read_json(self.directory / "view.json", None, root=self.data_dir)
        if value is None:
            return None
        try:
            pending = value.get("pending")
            return Membership(
                int(value["epoch"]), int(value["shards"]), None if pending is None else int(pending)
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise CorruptState(f"{CLUSTER_DIR}/view.json is not a member view: {exc}") from exc

    def write_membership(self, membership: Membership) -> None:
        write_json(self.directory / "view.json", asdict(membership), durable=True, root=self.data_dir)

    def front_token(self) -> bytes:
        """The secret the front shows its shards (made on first use, readable by this user only)."""
        path = self.directory / "front-token"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes().strip()
        token = secrets.token_hex(32).encode()
        with os.fdopen(fd, "wb") as f:
            f.write(token)
            f.flush()
            os.fsync(f.fileno())
        return token

    def _slot(self, slot: int) -> tuple[int, str | None]:
        value = read_json(self.directory / f"shard-{slot}.json", {}, root=self.data_dir)
        try:
            holder = value.get("holder")
            return int(value.get("incarnation", 0)), None if holder is None else str(holder)
        except (AttributeError, TypeError, ValueError) as exc:
            raise CorruptState(f"{CLUSTER_DIR}/shard-{slot}.json is not an incarnation count") from exc

    def incarnation(self, slot: int) -> int:
        """The newest incarnation that took ``slot`` (0: none yet)."""
        return self._slot(slot)[0]

    def holder(self, slot: int) -> str | None:
        """The name of the process that took ``slot`` last (None: none yet, or not named)."""
        return self._slot(slot)[1]

    def next_incarnation(self, slot: int, holder: str | None = None) -> int:
        """Take ``slot`` for the process named ``holder``: the slot's next incarnation."""
        incarnation = self.incarnation(slot) + 1
        path = self.directory / f"shard-{slot}.json"
        value = {"incarnation": incarnation, "holder": holder}
        write_json(path, value, durable=True, root=self.data_dir)
        return incarnation
