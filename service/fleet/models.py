"""The models a fleet knows: the embedded default and the ones users add, stored under the data dir."""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path

from service.errors import FleetError, InvalidModel, ModelExists, ModelInUse, ModelNotFound, StorageFull
from service.runtime import CompiledModel
from service.runtime.inspection import check_operators
from service.runtime.isolation import Isolation, load_isolated
from service.runtime.trials import Trials
from service.storage import check_id, child, storage_error, write_atomic

DEFAULT_MODEL = "fashion_mnist"


def embedded_model_path() -> Path:
    """The package's own default model (built by ``fleet build-model`` with the tutorial's settings)."""
    return Path(str(resources.files("service") / "models" / f"{DEFAULT_MODEL}.tflite"))


class ModelStore:
    """Compiled models by name, loaded once and shared by every device that uses them."""

    def __init__(
        self,
        directory: Path,
        num_threads: int = 1,
        max_bytes: int | None = None,
        isolation: Isolation | None = None,
    ) -> None:
        """``isolation``: added models run in worker processes so (the embedded default never does)."""
        self.directory = directory
        self.isolation = isolation
        self.trials = Trials()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._num_threads = num_threads
        self.max_bytes = max_bytes
        """Cap on the total size of added models (the embedded default does not count)."""
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
                    raise storage_error(f"could not read model '{name}'", exc) from exc
                model = self._compile(name, content)
                self._loaded[name] = model
            return model

    def _compile(self, name: str, content: bytes) -> CompiledModel:
        """The embedded model as it is; an added one once it survived its trial (in a process of its
        own), in its worker processes when they are asked for."""
        if name == DEFAULT_MODEL:
            return CompiledModel.load(name, content, self._num_threads)
        check_operators(name, content)  # no trial process for what the checks refuse
        self.trials.admit(name, content)
        if self.isolation is None:
            return CompiledModel.load(name, content, self._num_threads)
        return load_isolated(name, content, self._num_threads, self.isolation)

    def add(self, name: str, content: bytes) -> CompiledModel:
        """Check that ``content`` is a usable model and keep it; a bad file is not kept."""
        path = self._path(name)
        if not content:
            raise InvalidModel(f"model '{name}': the body is empty; send the .tflite file's bytes")
        self._refuse_existing(name, path)
        self._check_room(len(content))
        model = self._compile(name, content)  # slow: outside the lock
        try:
            with self._lock:
                self._refuse_existing(name, path)
                self._check_room(len(content))
                write_atomic(path, content, root=self.directory.parent)
                self._loaded[name] = model
                return model
        except FleetError:
            model.close()
            raise

    def stored_bytes(self) -> int:
        try:
            return sum(p.stat().st_size for p in self.directory.glob("*.tflite"))
        except OSError as exc:
            raise storage_error("could not list the stored models", exc) from exc

    def _check_room(self, size: int) -> None:
        if self.max_bytes is None:
            return
        stored = self.stored_bytes()
        if stored + size > self.max_bytes:
            raise StorageFull(
                f"a model of {size} bytes does not fit: added models take {stored} of the "
                f"{self.max_bytes} bytes allowed (FLEET_MAX_MODEL_BYTES); delete one first"
            )

    def delete(self, name: str, dry_run: bool = False) -> None:
        """Forget an added model and remove its file; the caller makes sure no device uses it.

        A model whose file another process sharing the directory removed is forgotten here too
        (ModelNotFound all the same). ``dry_run``: only the checks.
        """
        if name == DEFAULT_MODEL:
            raise ModelInUse(f"model '{name}' is the embedded default; it cannot be deleted")
        path = self._path(name)
        with self._lock:
            if not path.is_file():
                self._loaded.pop(name, None)
                raise ModelNotFound(f"no model '{name}'; known: {self.names()}")
            if dry_run:
                return
            try:
                path.unlink()
            except OSError as exc:
                raise storage_error(f"could not delete model '{name}'", exc) from exc
            dropped = self._loaded.pop(name, None)
        if dropped is not None:
            dropped.close()

    def close(self) -> None:
        """Stop the added models' worker processes."""
        with self._lock:
            models, self._loaded = list(self._loaded.values()), {}
        for model in models:
            model.close()
        self.trials.close()

    def _refuse_existing(self, name: str, path: Path) -> None:
        if name in self._loaded or path.exists():
            raise ModelExists(f"model '{name}' exists; models are immutable, add it under a new name")
