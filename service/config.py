"""Settings, from arguments or ``FLEET_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_")

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, description="port to listen on")
    data_dir: Path = Field(Path("fleet-data"), description="devices, checkpoints and added models live here")
    max_body_bytes: int = Field(64 * 1024 * 1024, description="request bodies past this get 413")
    max_json_body_bytes: int = Field(
        4 * 1024 * 1024,
        description="JSON request bodies past this get 413: decoding JSON numbers takes up to 16 bytes of "
        "memory a byte (npz is far cheaper to decode)",
    )
    max_npz_members: int = Field(
        64, description="arrays one npz body may hold; its zip directory is refused past it"
    )
    api_keys_file: Path | None = Field(
        None, description="API keys, one per line: `KEY admin` or `KEY devices PREFIX` (none: protected mode)"
    )
    allowed_hosts: str = Field(
        "",
        description="comma-separated `Host` names served besides loopback ones in protected mode; with keys, "
        "when set, the only ones served (against DNS rebinding)",
    )
    allowed_origins: str = Field(
        "",
        description="comma-separated origins (`https://app.example`) of web pages allowed to call the API; "
        "pages of any other origin are refused",
    )
    allow_model_upload: bool = Field(False, description="allow `PUT /v1/models/{model}` (admin key only)")
    model_isolation: Literal["auto", "process", "none"] = Field(
        "auto",
        description="run added models' interpreters in worker processes (`process`), so that a crash costs "
        "that model's callers only, or in the service's (`none`); `auto`: `process` when model upload is on",
    )
    model_workers: int = Field(1, ge=1, le=64, description="worker processes per added model (isolated)")
    model_worker_memory_bytes: int = Field(
        2 * 1024**3,
        ge=256 * 1024**2,
        description="resident memory past which an added model's worker is killed",
    )
    model_call_seconds: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="seconds one call may take in an added model's worker (from sending its inputs to its "
        "answer) before the worker is killed",
    )
    max_model_bytes: int = Field(
        256 * 1024 * 1024, description="total bytes of added models kept in the data directory"
    )
    max_devices: int = Field(1_000_000, description="devices the fleet may hold")
    max_loaded_devices: int = Field(
        10_000, ge=1, description="idle device objects kept in memory (others are made again when asked for)"
    )
    max_resident: int | None = Field(
        None, description="cap on interpreters in memory; least recently used evicted past it (none: no cap)"
    )
    max_resident_bytes: int | None = Field(
        None,
        description="cap on interpreter memory, as resident devices x FLEET_INTERPRETER_BYTES (none: no cap)",
    )
    interpreter_bytes: int = Field(
        4_500_000, description="estimated memory of one trained interpreter, for FLEET_MAX_RESIDENT_BYTES"
    )
    interpreter_threads: int = Field(1, description="threads per TFLite interpreter")
    worker_threads: int = Field(16, description="threads running interpreter calls at once")
    sample_capacity: int = Field(10_000, description="samples kept per device; the oldest go first past it")
    sample_capacity_bytes: int = Field(
        64 * 1024 * 1024, description="bytes of samples kept per device; the oldest go first past it"
    )
    job_workers: int = Field(2, description="background training jobs running at once (fleet-wide)")
    max_job_steps: int = Field(1_000_000, description="training steps one job may take (epochs x batches)")
    fashion_mnist_dir: Path | None = Field(
        None,
        description="the built-in fashion-mnist dataset's four IDX files (none: Debian's "
        "/usr/share/datasets/fashion-mnist, else Keras' cache or download)",
    )
    max_dataset_bytes: int = Field(
        2 * 1024**3,
        description="total bytes of added datasets kept in the data directory (built-in ones aside)",
    )
    keep_versions: int = Field(
        20, ge=1, description="global versions kept per model and owner (the oldest go; version 0 stays)"
    )
    round_workers: int = Field(
        3,
        ge=1,
        description="participants of a federated round training at once (they spend part of "
        "their turn on files: one more than the cores keeps them busy)",
    )
    max_buffered_bytes: int = Field(
        1024**3,
        ge=1,
        description="bytes of updates a round of a robust strategy (median, trimmed_mean, krum) may keep in "
        "memory: a run whose participants' updates would take more is refused at its start",
    )
    quota_devices: int = Field(10_000, ge=0, description="devices one `devices` key may hold (429 past it)")
    quota_runs: int = Field(
        4, ge=0, description="round runs one `devices` key may have queued or running at once (429 past it)"
    )
    quota_jobs: int = Field(
        64,
        ge=0,
        description="training jobs one `devices` key may have queued or running at once (429 past it)",
    )
    quota_sample_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=0,
        description="bytes of uploaded samples one `devices` key's devices may hold in all (429 past it)",
    )
    max_bulk: int = Field(100_000, description="most devices one bulk request may create or delete")
    spare_shards: int = Field(
        1,
        ge=0,
        le=8,
        description="sharded: warm processes (TensorFlow imported) to replace a dead shard or grow the fleet",
    )
    log_json: bool = Field(
        False, description="log one JSON line per request to stdout, instead of uvicorn's access log"
    )
    realtime_factor: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="real seconds per simulated second: profiled devices answer 503 while offline and "
        "take their simulated time to answer (0: off)",
    )

    def models_isolated(self) -> bool:
        """Whether added models run in worker processes (see ``model_isolation``) or in-process."""
        mode = self.model_isolation
        return mode == "process" or (mode == "auto" and self.allow_model_upload)

    def resident_cap(self) -> int | None:
        """The residency cap in interpreters: the tighter of the count and the byte budget."""
        caps = [self.max_resident] if self.max_resident is not None else []
        if self.max_resident_bytes is not None:
            caps.append(max(1, self.max_resident_bytes // self.interpreter_bytes))
        return min(caps, default=None)


def settings_table() -> str:
    """Every setting as a Markdown table, as the README shows it (a test keeps the two equal)."""

    def shown(default: object) -> str:
        if default is None or default == "":
            return "none"
        return f"`{str(default).lower() if isinstance(default, bool) else default}`"

    prefix = Settings.model_config.get("env_prefix", "")
    rows = ["| setting | environment variable | default | description |", "| --- | --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | `{prefix}{name.upper()}` | {shown(field.default)} | {description} |")
    return "\n".join(rows) + "\n"
