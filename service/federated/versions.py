"""Versions of a model's global weights: what each federated round's aggregate becomes.

``data_dir/versions/<model>/<n>.ckpt`` holds version ``n``'s weights (the format the model's own
``save`` writes, so its ``restore`` reads them) and ``<n>.json`` what made it: the round, the
aggregation, the participants and samples, the accuracy measured on it. Version 0 is the model's own
weights (a fresh interpreter's), written the first time it is asked for.

Versions belong to whoever made them: ``owner`` is the prefix of the devices key whose run made one,
or ``""`` for an admin's. A ``viewer`` (a devices key's prefix; None for an admin) sees version 0, its
own, and those an admin published; any other answers VersionNotFound, exactly as a missing one,
so one tenant can neither adopt, evaluate, build on nor learn of another's. Past ``keep`` versions of
one owner the oldest go, except version 0 and versions a running round holds (``pinned``): one
tenant's runs never prune what another uses.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from service.errors import FleetError, VersionNotFound
from service.federated.checkpoints import Weights, read_weights, write_weights
from service.storage import check_id, read_json, remove_tree, storage_error, utc_now, write_json

log = logging.getLogger(__name__)

VERSIONS_DIR = "versions"
KEEP_VERSIONS = 20

BaseWriter = Callable[[str, Path], None]
"""Writes a model's own weights (a fresh interpreter's) to a path: version 0."""


@dataclass(frozen=True)
class Version:
    model: str
    number: int
    created_at: str
    parent: int | None = None
    round_id: str | None = None
    round: int | None = None
    """The round (1-based) of ``round_id`` whose aggregate this is."""
    aggregation: str | None = None
    participants: int = 0
    samples: int = 0
    global_accuracy: float | None = None
    """Accuracy on the round's evaluation split, measured on these weights."""
    owner: str = ""
    """The prefix of the devices key whose run made it; "" for an admin's (and version 0)."""
    published: bool = False
    """An admin made it visible to every key."""

    def describe(self) -> dict[str, object]:
        return asdict(self)

    def visible_to(self, viewer: str | None) -> bool:
        """Whether the key ``viewer`` (a devices key's prefix; None: an admin) may see and use it."""
        return viewer is None or self.number == 0 or self.published or self.owner == viewer


class VersionStore:
    def __init__(self, data_dir: Path, base: BaseWriter, keep: int = KEEP_VERSIONS) -> None:
        self.data_dir = data_dir
        self.directory = data_dir / VERSIONS_DIR
        self.keep = max(1, keep)
        self._base = base
        self._pins: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()

    def _dir(self, model: str) -> Path:
        return self.directory / check_id("model", model)

    def _numbers(self, model: str) -> list[int]:
        try:
            names = [p.stem for p in self._dir(model).glob("*.json")]
        except OSError as exc:
            raise storage_error(f"could not list the versions of model '{model}'", exc) from exc
        return sorted(int(n) for n in names if n.isdigit())

    def latest(self, model: str, viewer: str | None = None) -> int:
        """The newest version's number ``viewer`` sees (0, the model's own weights, before any round)."""
        if viewer is None:
            return max(self._numbers(model), default=0)
        return max((v.number for v in self.list(model, viewer)), default=0)

    def get(self, model: str, number: int, viewer: str | None = None) -> Version:
        if number == 0:
            self._ensure_base(model)
        found = self._read(model, number)
        if found is None or not found.visible_to(viewer):
            known = (
                [v.number for v in self.list(model, viewer)] if viewer is not None else self._numbers(model)
            )
            raise VersionNotFound(
                f"model '{model}' has no version {number}; it has "
                f"{', '.join(map(str, known)) if len(known) > 1 else 'only version 0 (its own weights)'}"
            )
        return found

    def _read(self, model: str, number: int) -> Version | None:
        value = read_json(self._dir(model) / f"{number}.json", None, root=self.data_dir)
        if not isinstance(value, dict):
            return None
        return Version(**{k: v for k, v in value.items() if k in Version.__dataclass_fields__})

    def resolve(self, model: str, number: int | None, viewer: str | None = None) -> Version:
        """``number``, or the latest ``viewer`` sees when None."""
        return self.get(model, self.latest(model, viewer) if number is None else number, viewer)

    def list(self, model: str, viewer: str | None = None) -> list[Version]:
        """The versions ``viewer`` sees, oldest first (a version pruned meanwhile is left out)."""
        self._ensure_base(model)
        found = (self._read(model, number) for number in self._numbers(model))
        return [v for v in found if v is not None and v.visible_to(viewer)]

    def publish(self, model: str, number: int) -> Version:
        """Make a version visible to every key (an admin's act); it then counts as the admin's."""
        with self._lock:
            version = replace(self.get(model, number), published=True)
            if number != 0:
                write_json(self._dir(model) / f"{number}.json", version.describe(), root=self.data_dir)
        return version

    def path(self, model: str, number: int) -> Path:
        """The version's weights file (VersionNotFound if it is gone). Every participant of a round
        asks, so this looks for the version's description without reading it."""
        if number != 0 and (self._dir(model) / f"{number}.json").is_file():
            return self._dir(model) / f"{number}.ckpt"
        self.get(model, number)
        return self._dir(model) / f"{number}.ckpt"

    def weights(self, model: str, number: int) -> Weights:
        return read_weights(self.path(model, number), root=self.data_dir)

    def _ensure_base(self, model: str) -> None:
        directory = self._dir(model)
        if (directory / "0.json").exists():
            return
        with self._lock:
            if (directory / "0.json").exists():
                return
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise storage_error(f"could not create {VERSIONS_DIR}/{model}/", exc) from exc
            self._base(model, directory / "0.ckpt")
            write_json(directory / "0.json", Version(model, 0, utc_now()).describe(), root=self.data_dir)

    def add(self, model: str, weights: Weights, **meta: object) -> Version:
        """Store ``weights`` as the model's next version; its owner's oldest past ``keep`` go."""
        self._ensure_base(model)
        directory = self._dir(model)
        with self._lock:
            number = self.latest(model) + 1
            write_weights(directory / f"{number}.ckpt", weights)
            version = Version(model, number, utc_now(), **meta)  # type: ignore[arg-type]
            write_json(directory / f"{number}.json", version.describe(), root=self.data_dir)
            self._prune(model, version.owner)
        return version

    def _prune(self, model: str, owner: str) -> None:
        """Past ``keep`` of ``owner``'s versions, the oldest (published ones are the admin's)."""
        mine = [v for v in self.list(model) if v.number > 0 and (v.owner if not v.published else "") == owner]
        numbers = [v.number for v in mine]
        for number in numbers[: max(0, len(numbers) - self.keep)]:
            if self._pins[(model, number)]:
                continue
            for suffix in (".json", ".ckpt"):
                with contextlib.suppress(OSError):
                    (self._dir(model) / f"{number}{suffix}").unlink()

    @contextlib.contextmanager
    def pinned(self, model: str, number: int) -> Iterator[None]:
        """Keep version ``number`` while the block runs (a round gives it to its participants)."""
        with self._lock:
            self._pins[(model, number)] += 1
        try:
            yield
        finally:
            with self._lock:
                self._pins[(model, number)] -= 1
                if not self._pins[(model, number)]:
                    del self._pins[(model, number)]

    def delete_model(self, model: str) -> None:
        """Forget every version of a deleted model."""
        try:
            remove_tree(self._dir(model), self.data_dir)
        except FleetError as exc:
            log.warning("could not remove the versions of model %s: %s", model, exc.message)
