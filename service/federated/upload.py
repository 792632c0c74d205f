"""What a participant's sending costs and carries: its clock charged for the upload (``count_upload``),
and its update privatized before it leaves (``privatized``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.federated import private
from service.federated.checkpoints import Weights
from service.federated.participants import Participation
from service.federated.task import Privatize
from service.fleet.device import Device
from service.storage import storage_error


def count_upload(device: Device, version: Path) -> None:
    """A profiled device's clock counts sending its update, charged at the size of the version it trained
    from, the same model's weights (``local.participation_seconds`` plans with that size too)."""
    with device.lock:  # the profile is read where the clock advances: a profile set meanwhile is seen whole
        profile = device.read_record().profile  # in memory: the part loaded the device
        if profile is None:
            return
        try:
            size = version.stat().st_size
        except OSError as exc:
            raise storage_error(f"could not read the size of device '{device.id}''s update", exc) from exc
        device.advance(profile.upload_seconds(size))


def privatized(
    device: Device, asked: Participation, trained: Weights, global_weights: Weights, how: Privatize
) -> np.ndarray:
    """The participant's update as it sends it under privacy (``private.privatize``); its clock counts
    the secure aggregation protocol's time (``how.protocol_seconds``, from its profile)."""
    payload = private.privatize(trained, global_weights, how, asked.seed)
    if how.protocol_seconds:
        with device.lock:
            device.advance(how.protocol_seconds)
    return payload
