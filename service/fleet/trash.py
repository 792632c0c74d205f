"""The trash, ``data_dir/trash/``: a deleted device's directory moves there in one rename, which frees
its ID at once, then is removed there. What a crash left in it is removed when the fleet next starts.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path

from service.fleet.record import TRASH
from service.storage import remove_tree, shown, storage_error

log = logging.getLogger(__name__)


def move_to_trash(directory: Path, data_dir: Path, device_id: str) -> Path | None:
    """Move a device's directory into ``data_dir/trash/`` in one rename; where it went, or None if
    it was gone already. StorageError if it cannot be moved (then it is where it was)."""
    trash = data_dir / TRASH
    moved_to = trash / f"{device_id}-{uuid.uuid4().hex[:12]}"
    try:
        trash.mkdir(exist_ok=True)
        os.rename(directory, moved_to)
    except FileNotFoundError:  # its directory is gone already
        return None
    except OSError as exc:
        raise storage_error(f"could not move {shown(directory, data_dir)} to {TRASH}/", exc) from exc
    return moved_to


def empty_trash(trash_dir: Path, data_dir: Path) -> threading.Thread | None:
    """Remove what interrupted deletions left in the trash, in a thread (started and returned; None
    when there is nothing to remove): no request waits for it."""
    try:
        leftovers = [Path(entry.path) for entry in os.scandir(trash_dir)]
    except OSError as exc:
        log.error("could not list %s/: %s", TRASH, exc.strerror)
        return None
    if not leftovers:
        return None
    log.info("removing %d entries left in %s/ by interrupted deletions", len(leftovers), TRASH)

    def empty() -> None:
        for path in leftovers:
            if path.is_dir() and not path.is_symlink():
                remove_tree(path, data_dir)
                continue
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not remove %s/%s: %s", TRASH, path.name, exc.strerror)

    cleaner = threading.Thread(target=empty, name="fleet-trash", daemon=True)
    cleaner.start()
    return cleaner
