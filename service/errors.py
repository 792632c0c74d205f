"""The one error vocabulary of tflite-fleet.

Every layer below the HTTP layer raises only these; the HTTP layer maps them to status codes in
one table (``service.api.errors``), and the client turns error responses back into them.

    FleetError
    ├── NotFound
    │   ├── DeviceNotFound
    │   ├── ModelNotFound
    │   ├── SignatureNotFound
    │   ├── JobNotFound
    │   ├── DatasetNotFound
    │   ├── VersionNotFound
    │   ├── RoundNotFound
    │   └── ProfileMixNotFound
    ├── Conflict
    │   ├── DeviceExists
    │   ├── ModelExists
    │   ├── NoCheckpoint
    │   ├── NoSamples
    │   ├── SamplesMismatch
    │   ├── JobEnded
    │   ├── DeviceBusy
    │   ├── ModelInUse
    │   ├── DatasetExists
    │   ├── NoAssignment        (a device without data assigned from a dataset)
    │   ├── RoundEnded
    │   └── NotSharded          (a resize asked of a single process)
    ├── AccessDenied
    │   ├── NotAuthenticated    (no key, or an unknown one)
    │   └── Forbidden           (a key that may not do this; protected mode)
    ├── InvalidRequest
    │   ├── InvalidId
    │   ├── InvalidTensor
    │   │   └── NotFinite       (a round's next global weights hold NaN or infinity)
    │   ├── InvalidModel
    │   ├── InvalidProfile      (a device profile or a profile mix, naming the field)
    │   ├── InvalidPartition    (a partition that cannot be made as asked, naming the setting)
    │   ├── BodyTooLarge
    │   ├── UnsupportedMediaType
    │   ├── LimitExceeded       (a setting's bound: devices, stored model bytes, job steps)
    │   └── QuotaExceeded       (a devices key's share: its devices, runs, jobs, sample bytes)
    ├── InvocationFailed        (the interpreter rejected a call that passed our checks)
    ├── ModelCrashed            (an isolated model's worker process died: a signal, memory, time)
    ├── StorageError            (the data directory failed us: unwritable, removed, I/O error)
    │   └── StorageFull         (no space left, or the file size limit)
    ├── CorruptState            (a device's file on disk cannot be read back)
    ├── Unavailable             (try again shortly: a shard restarts, a device moves between shards)
    │   ├── DeviceOffline       (real-time mode: the device's profile has it offline until Retry-After)
    │   └── DeviceMoving        (sharded fleet: the device moves, or just moved, to another shard)
    ├── NotOwner                (sharded fleet: another shard owns the device in the current epoch)
    ├── DatasetUnavailable
    └── ModelBuildError
"""

from __future__ import annotations


class FleetError(Exception):
    """Root of every error this package raises on purpose."""

    code = "fleet_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(FleetError):
    code = "not_found"


class DeviceNotFound(NotFound):
    code = "device_not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class SignatureNotFound(NotFound):
    code = "signature_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class DatasetNotFound(NotFound):
    code = "dataset_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class ProfileMixNotFound(NotFound):
    code = "profile_mix_not_found"


class RoundNotFound(NotFound):
    code = "round_not_found"


class Conflict(FleetError):
    code = "conflict"


class DeviceExists(Conflict):
    code = "device_exists"


class ModelExists(Conflict):
    code = "model_exists"


class NoCheckpoint(Conflict):
    code = "no_checkpoint"


class NoSamples(Conflict):
    code = "no_samples"


class SamplesMismatch(Conflict):
    code = "samples_mismatch"


class JobEnded(Conflict):
    code = "job_ended"


class DeviceBusy(Conflict):
    code = "device_busy"


class ModelInUse(Conflict):
    code = "model_in_use"


class DatasetExists(Conflict):
    code = "dataset_exists"


class NoAssignment(Conflict):
    code = "no_assignment"


class RoundEnded(Conflict):
    code = "round_ended"


class NotSharded(Conflict):
    code = "not_sharded"


class AccessDenied(FleetError):
    code = "access_denied"


class NotAuthenticated(AccessDenied):
    code = "not_authenticated"


class Forbidden(AccessDenied):
    code = "forbidden"


class InvalidRequest(FleetError):
    code = "invalid_request"


class InvalidId(InvalidRequest):
    code = "invalid_id"


class InvalidTensor(InvalidRequest):
    code = "invalid_tensor"


class NotFinite(InvalidTensor):
    code = "not_finite"


class InvalidProfile(InvalidRequest):
    code = "invalid_profile"


class InvalidPartition(InvalidRequest):
    code = "invalid_partition"


class InvalidPrivacy(InvalidRequest):
    """A run's differential privacy or secure aggregation settings cannot be used (named)."""

    code = "invalid_privacy"


class SecAggFailed(FleetError):
    """A secure-aggregation round that cannot produce its sum: too few survivors to rebuild a secret,
    too few masked inputs, a share that fails authentication, or a request a client refuses (the
    message says which device, how many shares, the threshold)."""

    code = "secagg_failed"


class InvalidModel(InvalidRequest):
    code = "invalid_model"


class BodyTooLarge(InvalidRequest):
    code = "body_too_large"


class UnsupportedMediaType(InvalidRequest):
    code = "unsupported_media_type"


class LimitExceeded(InvalidRequest):
    code = "limit_exceeded"


class QuotaExceeded(InvalidRequest):
    """Answered 429: the key may go on once it holds less (the message names the quota's setting)."""

    code = "quota_exceeded"


class InvocationFailed(FleetError):
    code = "invocation_failed"


class ModelCrashed(FleetError):
    code = "model_crashed"


class StorageError(FleetError):
    code = "storage_error"


class StorageFull(StorageError):
    code = "storage_full"


class CorruptState(FleetError):
    code = "corrupt_state"


class Unavailable(FleetError):
    """Worth retrying after ``retry_after`` seconds (the HTTP layer sends it as ``Retry-After``)."""

    code = "unavailable"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeviceOffline(Unavailable):
    code = "device_offline"


class DeviceMoving(Unavailable):
    """Refused, not applied: a resize moves the device to another shard (or just did); the same call
    succeeds at its owner once the resize commits, so a front retries it rather than relay it."""

    code = "device_moving"


class NotOwner(FleetError):
    """Asked of a shard that does not own the device; ``epoch`` is the view the shard holds."""

    code = "not_owner"

    def __init__(self, message: str, epoch: int = 0) -> None:
        super().__init__(message)
        self.epoch = epoch


class DatasetUnavailable(FleetError):
    code = "dataset_unavailable"


class ModelBuildError(FleetError):
    code = "model_build_error"


def _all_subclasses(cls: type[FleetError]) -> list[type[FleetError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


ERRORS_BY_CODE: dict[str, type[FleetError]] = {cls.code: cls for cls in _all_subclasses(FleetError)}
"""Every error class by its wire code; the client uses it to raise what the server raised."""
