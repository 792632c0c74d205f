"""glibc's allocator as ``fleet serve`` configures it (in a fresh process: the settings are global)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from service.fleet.memory import MMAP_THRESHOLD, _libc

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
    made = configure_allocator() if sys.argv[1] == "configured" else None
    # Freeing a mapped 8 MiB block raises glibc's own threshold past 4 MiB.
    libc.free(libc.malloc(8 << 20))
    before = libc.mallinfo2().hblks
    block = libc.malloc(4 << 20)
    mapped = libc.mallinfo2().hblks - before
    libc.free(block)
    print(json.dumps({"made": made, "mapped": mapped}))
    """
)


def probe(mode: str) -> dict[str, object]:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_* from the caller's environment
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env, timeout=60
    )
    return json.loads(out.stdout)


def test_large_blocks_keep_pages_of_their_own_after_configuration() -> None:
    assert MMAP_THRESHOLD < 4 << 20
    assert probe("default") == {"made": None, "mapped": 0}, "glibc's own threshold no longer rises"
    assert probe("configured") == {"made": True, "mapped": 1}
