"""The models a fleet knows: the embedded default and the ones users add, stored under the data dir."""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path

from service.errors import InvalidModel, ModelExists, ModelNotFound, StorageError
from service.fleet.files import check_id, child, write_atomic
from service.runtime import CompiledModel

DEFAULT_MODEL = "fashion_mnist"


def embedded_model_path() -> Path:
    """The package's own default model (built by ``fleet build-model`` with the tutorial's settings)."""
    return Path(str(resources.files("service") / "models" / f"{DEFAULT_MODEL}.tflite"))


class ModelStore:
    """Compiled models by name, loaded once and shared by every device that uses them."""

    def __init__(self, directory: Path, num_threads: int = 1) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._num_threads = num_threads
        self._loaded: dict[str, CompiledModel] = {}
        self._lock = threading.Lock()

    def _path(self, name: str) -> Path:
        if name == DEFAULT_MODEL:
            return embedded_model_path()
        return child(self.directory, f"{check_id('model', name)}.tflite")

    def names(self) -> list[str]:
        stored = {p.stem for p in self.directory.glob("*.tflite")}
        return sorted(stored | {DEFAULT_MODEL})

    def get(self, name: str) -> CompiledModel:
        with self._lock:
            model = self._loaded.get(name)
            if model is None:
                path = self._path(name)
                if not path.is_file():
                    raise ModelNotFound(f"no model '{name}'; known: {self.names()}")
                try:
                    content = path.read_bytes()
                except OSError as exc:
                    raise StorageError(f"could not read model '{name}': {exc}") from exc
                model = CompiledModel.load(name, content, self._num_threads)
                self._loaded[name] = model
            return model

    def add(self, name: str, content: bytes) -> CompiledModel:
        """Check that ``content`` is a usable model and keep it; a bad file is not kept."""
        path = self._path(name)
        if not content:
            raise InvalidModel(f"model '{name}': the body is empty; send the .tflite file's bytes")
        self._refuse_existing(name, path)
        model = CompiledModel.load(name, content, self._num_threads)  # slow: outside the lock
        with self._lock:
            self._refuse_existing(name, path)
            write_atomic(path, content)
            self._loaded[name] = model
            return model

    def _refuse_existing(self, name: str, path: Path) -> None:
        if name in self._loaded or path.exists():
            raise ModelExists(f"model '{name}' exists; models are immutable, add it under a new name")
