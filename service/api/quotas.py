"""Per-key quotas: what one ``devices`` key may hold at once, so that no tenant starves the others.

Admin keys (and loopback clients in protected mode) are the operator's, bounded by the fleet-wide
limits alone. A devices key is held, over the IDs with its prefix, to:

- ``FLEET_QUOTA_DEVICES`` devices;
- ``FLEET_QUOTA_RUNS`` round runs queued or running;
- ``FLEET_QUOTA_JOBS`` training jobs queued or running;
- ``FLEET_QUOTA_SAMPLE_BYTES`` bytes of uploaded samples on its devices.

Past one, the request answers 429 naming the setting, and nothing of it is kept. Datasets and models
are added by admins only. In a sharded fleet each shard counts what it holds of the key's devices.
"""

from __future__ import annotations

import threading
import time

from service.api.auth import Principal
from service.config import Settings
from service.errors import FleetError, QuotaExceeded
from service.federated.federation import Federation
from service.fleet import Fleet

SAMPLE_RECOUNT_SECONDS = 5.0
"""How long a prefix's sample bytes are carried forward by what was added before they are counted
again from the files (which also catches what deletions and resets freed)."""


def _refuse(principal: Principal, what: str, have: int, adding: int, quota: int, setting: str) -> None:
    if have + adding > quota:
        raise QuotaExceeded(
            f"the key of devices '{principal.prefix}*' has {have} {what}; {adding} more would pass its "
            f"quota of {quota} ({setting})"
        )


class Quotas:
    """The checks, against one process's fleet and rounds."""

    def __init__(self, settings: Settings, fleet: Fleet, federation: Federation) -> None:
        self.settings = settings
        self.fleet = fleet
        self.federation = federation
        self.creating = threading.Lock()
        """Held from a device quota's check to the creation, so two creations cannot both fit."""
        self._sample_bytes: dict[str, tuple[int, float]] = {}
        self._samples_lock = threading.Lock()

    def check_devices(self, principal: Principal, adding: int = 1) -> None:
        if not principal.is_admin:
            have = self.fleet.count(principal.prefix)
            _refuse(principal, "devices", have, adding, self.settings.quota_devices, "FLEET_QUOTA_DEVICES")

    def check_runs(self, principal: Principal) -> None:
        if not principal.is_admin:
            runs = self.federation.rounds.runs(principal.prefix)
            have = sum(1 for run in runs if run.get("state") in ("queued", "running"))
            _refuse(principal, "active round runs", have, 1, self.settings.quota_runs, "FLEET_QUOTA_RUNS")

    def check_jobs(self, principal: Principal) -> None:
        if not principal.is_admin:
            have = self.fleet.jobs.active_count(principal.prefix)
            _refuse(principal, "active jobs", have, 1, self.settings.quota_jobs, "FLEET_QUOTA_JOBS")

    def check_sample_bytes(self, principal: Principal, adding: int) -> None:
        """Before an upload of ``adding`` bytes of samples; ``added`` after it, with what it stored."""
        if principal.is_admin:
            return
        have, quota = self._samples_of(principal.prefix), self.settings.quota_sample_bytes
        _refuse(principal, "bytes of samples", have, adding, quota, "FLEET_QUOTA_SAMPLE_BYTES")

    def added(self, principal: Principal, delta: int) -> None:
        if principal.is_admin:
            return
        with self._samples_lock:
            held, at = self._sample_bytes.get(principal.prefix, (0, 0.0))
            self._sample_bytes[principal.prefix] = (held + delta, at)

    def _samples_of(self, prefix: str) -> int:
        """The prefix's sample bytes: counted from its devices' files every few seconds, carried
        forward meanwhile (never less than what is on disk)."""
        with self._samples_lock:
            held, at = self._sample_bytes.get(prefix, (0, 0.0))
            if time.monotonic() - at < SAMPLE_RECOUNT_SECONDS:
                return held
        counted = 0
        for device_id in self.fleet.ids(prefix):
            try:
                counted += self.fleet.get(device_id).samples.stats().bytes
            except FleetError:  # deleted meanwhile, or unreadable: it holds nothing here
                continue
        with self._samples_lock:
            self._sample_bytes[prefix] = (counted, time.monotonic())
        return counted
