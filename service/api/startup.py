"""What ``fleet serve`` says first: where it listens, what it serves, and who may call it."""

from __future__ import annotations

from service.api.auth import KeyRing
from service.config import Settings
from service.fleet import DEFAULT_MODEL
from service.version import __version__


def banner(settings: Settings, keys: KeyRing | None) -> str:
    if keys is None:
        access = (
            "off: protected mode, only loopback clients are answered "
            "(set FLEET_API_KEYS_FILE to serve other hosts)"
        )
    else:
        access = f"on, {len(keys)} key(s) from {settings.api_keys_file}"
    upload = "on (admin keys)" if settings.allow_model_upload else "off (FLEET_ALLOW_MODEL_UPLOAD)"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return "\n".join(
        [
            f"tflite-fleet {__version__} listening on http://{host}:{settings.port}",
            f"  data directory: {settings.data_dir.resolve()}",
            f"  default model:  {DEFAULT_MODEL} (embedded)",
            f"  API keys:       {access}",
            f"  model upload:   {upload}",
            f"  dashboard:      http://{host}:{settings.port}/ui/ (API docs: /docs)",
        ]
    )
