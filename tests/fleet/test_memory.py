"""glibc's allocator as ``fleet serve`` configures it (in a fresh process: the settings are global)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import TypedDict

import pytest

from service.fleet.memory import MMAP_THRESHOLD, TRIM_THRESHOLD, _libc

pytestmark = pytest.mark.skipif(_libc() is None, reason="glibc's malloc only")

PROBE = textwrap.dedent(
    """
    import ctypes, json, sys
    from service.fleet.memory import _libc, configure_allocator

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    libc = _libc()
    libc.mallinfo2.restype = Mallinfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    mode = sys.argv[1]
    made = None
    if mode == "configured":
        made = configure_allocator()
    elif mode == "mmap-only":  # the threshold fixed, the trim threshold left as glibc then leaves it
        made = configure_allocator(trim_threshold=None)
    # Freeing a mapped 8 MiB block raises glibc's own threshold past 4 MiB.
    libc.free(libc.malloc(8 << 20))
    before = libc.mallinfo2().hblks
    block = libc.malloc(4 << 20)
    mapped = libc.mallinfo2().hblks - before
    libc.free(block)
    # 4 MiB of small blocks at the heap's top, freed: kept for reuse, or given back to the OS?
    small = [libc.malloc(64 << 10) for _ in range(64)]
    for pointer in reversed(small):
        libc.free(pointer)
    kept = libc.mallinfo2().keepcost
    print(json.dumps({"made": made, "mapped": mapped, "kept_mib": kept >> 20}))
    """
)


class Probe(TypedDict):
    """What the probe process prints."""

    made: bool | None
    mapped: int
    kept_mib: int


def probe(mode: str) -> Probe:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_* from the caller's environment
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env, timeout=60
    )
    return json.loads(out.stdout)


def test_large_blocks_keep_pages_of_their_own_after_configuration() -> None:
    assert MMAP_THRESHOLD < 4 << 20
    default, configured = probe("default"), probe("configured")
    assert (default["made"], default["mapped"]) == (None, 0), "glibc's own threshold no longer rises"
    assert (configured["made"], configured["mapped"]) == (True, 1)


def test_freed_small_blocks_stay_for_reuse_up_to_the_trim_threshold() -> None:
    """Fixing the mmap threshold alone leaves glibc trimming every free past 128 KiB at a heap's top
    (each train step's tensors then fault fresh pages in); the trim threshold keeps them."""
    assert TRIM_THRESHOLD >= 4 << 20
    assert probe("mmap-only")["kept_mib"] == 0
    assert probe("configured")["kept_mib"] >= 4
