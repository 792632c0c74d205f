"""tflite-fleet: a fleet of simulated phones doing on-device training with TensorFlow Lite.

Importing the package is light (no TensorFlow): it gives the client and the error classes.
"""

from service.client import FleetClient
from service.errors import (
    Conflict,
    DeviceExists,
    DeviceNotFound,
    FleetError,
    InvalidId,
    InvalidModel,
    InvalidRequest,
    InvalidTensor,
    ModelNotFound,
    NoCheckpoint,
    NotFound,
    SignatureNotFound,
)
from service.version import __version__

__all__ = [
    "Conflict",
    "DeviceExists",
    "DeviceNotFound",
    "FleetClient",
    "FleetError",
    "InvalidId",
    "InvalidModel",
    "InvalidRequest",
    "InvalidTensor",
    "ModelNotFound",
    "NoCheckpoint",
    "NotFound",
    "SignatureNotFound",
    "__version__",
]
