"""Settings, from arguments or ``FLEET_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_")

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, description="port to listen on")
    data_dir: Path = Field(Path("fleet-data"), description="devices, checkpoints and added models live here")
    max_body_bytes: int = Field(64 * 1024 * 1024, description="request bodies past this get 413")
    max_resident: int | None = Field(
        None, description="cap on interpreters in memory; least recently used evicted past it (none: no cap)"
    )
    interpreter_threads: int = Field(1, description="threads per TFLite interpreter")
    worker_threads: int = Field(16, description="threads running interpreter calls at once")
    log_json: bool = Field(False, description="log one JSON line per request")
