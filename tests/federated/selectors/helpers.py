"""What the selectors' tests share: profiles read from a dict, devices online or offline by hand."""

from __future__ import annotations

from collections.abc import Mapping

from service.federated.selectors.order import Profiles
from service.profiles import DeviceProfile, parse_profile


def night() -> DeviceProfile:
    """Online from 100 s to 200 s of every 1000 s: offline at 0 s."""
    return parse_profile(
        {
            "class": "test",
            "compute": {"train_ms_per_sample": 1.0, "infer_ms_per_sample": 0.0},
            "network": {"uplink_mbps": 1000.0, "downlink_mbps": 1000.0, "rtt_ms": 0.0},
            "speed": 1.0,
            "availability": {"kind": "trace", "intervals": [[100, 200]], "period": 1000},
        }
    )


class Known:
    """Participants whose only part picking uses, ``profile``: read from a dict, unprofiled if absent."""

    def __init__(self, profiles: Mapping[str, DeviceProfile | None] | None = None) -> None:
        self.profiles = profiles or {}

    def profile(self, device_id: str) -> DeviceProfile | None:
        return self.profiles.get(device_id)


def profiles(known: Mapping[str, DeviceProfile | None] | None = None) -> Profiles:
    return Profiles(Known(known))  # type: ignore[arg-type]
