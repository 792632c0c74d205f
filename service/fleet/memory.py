"""Keeping a process that makes and frees interpreters all day at a flat size (glibc's malloc).

Two calls: ``configure_allocator()`` once at start-up, before any thread exists, and
``release_free_memory()`` now and then (the residency budget calls it every few evictions).
Elsewhere than glibc both do nothing and say so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
"""``mallopt`` parameter: free memory at the top of a heap past this much goes back to the OS."""
M_MMAP_THRESHOLD = -3
"""``mallopt`` parameter: blocks at least this large get pages of their own (``mmap``)."""
M_ARENA_MAX = -8
"""``mallopt`` parameter: the most malloc arenas (glibc's default: 8 per core)."""
ARENAS = 2
"""Arenas for the service: with 16 worker threads and 2 TensorFlow threads per interpreter, glibc
would make 16 on 2 cores, each keeping the freed pages of the interpreters it served."""
MMAP_THRESHOLD = 1 << 20
"""A fixed 1 MiB, where glibc's own starts at 128 KiB and rises to the largest block freed (up to
32 MiB): after an interpreter's first free its multi-megabyte blocks come from the heap, where they
fragment it. Measured (1,000 devices, cap 100, 1,000 activations a pass, in one process): RSS swung
8% over a 4-pass period with glibc's threshold, 3% with 1 MiB, 0.6% with 128 KiB, which cost 25% of
the passes' speed (each train step's 100-image tensors then got and returned fresh pages)."""
TRIM_THRESHOLD = 8 << 20
"""Fixing the mmap threshold also fixes the trim threshold at glibc's starting 128 KiB (a dynamic mmap
threshold would have raised it to twice itself): every free that left more than that at a heap's top
gave the pages back, and the next allocations faulted them in again. Measured (100 devices in federated
rounds, 3 threads): 900 minor page faults a participant with 128 KiB, 185 with 8 MiB (32 MiB: 184).
At most 8 MiB a heap stays mapped beyond what it holds; ``release_free_memory`` still trims all."""


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def _malloc_trim() -> Callable[[int], int] | None:
    libc = _libc()
    return None if libc is None else libc.malloc_trim


def configure_allocator(
    arenas: int | None = ARENAS,
    mmap_threshold: int | None = MMAP_THRESHOLD,
    trim_threshold: int | None = TRIM_THRESHOLD,
) -> bool:
    """Cap glibc's malloc arenas and fix its mmap and trim thresholds; call before threads start.

    Freed interpreter memory stays in the arena of the thread that freed it, and each arena keeps its
    own free pages; fewer arenas reuse them instead (arenas made before the call stay). Large blocks
    with pages of their own go back to the OS when freed, not into a heap; small ones are kept for
    reuse up to ``trim_threshold`` at a heap's top. ``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_`` or
    ``MALLOC_TRIM_THRESHOLD_`` in the environment is the operator's choice and wins. Returns whether
    every setting asked for was made here.
    """
    libc = _libc()
    if libc is None:
        return False
    made = True
    for param, env, value in (
        (M_ARENA_MAX, "MALLOC_ARENA_MAX", arenas),
        (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", mmap_threshold),
        (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", trim_threshold),
    ):
        if value is None or env in os.environ:
            made = False
        elif libc.mallopt(param, value) != 1:
            log.warning("mallopt(%d, %d) failed", param, value)
            made = False
    return made


def release_free_memory() -> bool:
    """Return freed heap pages to the OS (glibc's ``malloc_trim``); False where there is none.

    Interpreters are made and freed all the time under a residency cap; glibc keeps the freed
    pages, and the process grows by about the size of the resident set again (measured: 200 resident
    interpreters with churn, 2.2 GB RSS untrimmed, 1.4 GB trimmed every 50 evictions at ~7 ms a trim).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
