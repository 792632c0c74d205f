"""The Ray names a fleet's processes find each other by: the namespace of its data directory, the
coordinator actor's name and the prefix of its shard actors' names.

Plain Python, no Ray: ``service.cluster.runtime`` names the actors with these, and a shard
(``service.cluster.shard``) finds the coordinator by them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

COORDINATOR = "fleet-coordinator"
SHARD_PREFIX = "fleet-shard-"


def namespace(data_dir: Path) -> str:
    """Ray namespace of the fleet in ``data_dir``: fleets of other data directories share a cluster
    without meeting each other's actors."""
    digest = hashlib.blake2b(str(data_dir.resolve()).encode(), digest_size=6).hexdigest()
    return f"tflite-fleet-{digest}"
