"""Process memory settings for the long-running commands (``stream``, ``audit``).

glibc serves blocks above its mmap threshold (128 KiB) with mmap and returns them to the system
when freed; but after the first such free it raises the threshold (up to 32 MiB), and later
large blocks -- a batch's value buffer, a kernel's output arrays -- come from heap arenas that
are seldom returned.  A batch pipeline allocating and freeing tens of MiB per batch then keeps
its high-water mark for good.  Fixing the threshold keeps RSS near the working set
(``python -m benchmarks.memory``: 951 -> 818 MB over 300k messages, budget unchanged).

Small blocks (Python objects, Arrow's and numba's small buffers) still come from the arenas,
and glibc returns the free pages inside them only on :func:`trim` (``malloc_trim``).  The
stream calls it after each buffer-budget publish, when the most has just been freed: about
50 MB less peak RSS over 300k messages, for a few milliseconds per publish.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3   # glibc <malloc.h>


@functools.cache
def _libc():
    """libc, loaded once (``find_library`` runs ``ldconfig``: not on every publish)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def fix_mmap_threshold(nbytes: int = 128 << 10) -> bool:
    """Pin glibc's mmap threshold (disables its dynamic raise); False where libc is not glibc."""
    try:
        return bool(_libc().mallopt(M_MMAP_THRESHOLD, int(nbytes)))
    except AttributeError:   # no libc, or not glibc
        return False


def trim() -> bool:
    """Give the arenas' free pages back to the system (glibc ``malloc_trim(0)``); False where
    libc is not glibc."""
    try:
        return bool(_libc().malloc_trim(0))
    except AttributeError:
        return False
