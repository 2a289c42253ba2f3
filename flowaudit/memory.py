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
import os

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


ARROW_POOL = "jemalloc"
_POOLS = ("jemalloc", "system", "mimalloc")


def preselect_arrow_pool(name: str | None = None, default: str = ARROW_POOL) -> str:
    """The pool :func:`arrow_pool` takes (``name``, else the variable, else ``default``), set in
    ``ARROW_DEFAULT_MEMORY_POOL`` while pyarrow is not yet imported, so that Arrow's C++ default
    is that pool too; returns its name.  ``flowaudit`` calls it before building its parser, which
    may import pyarrow."""
    import sys

    name = name or os.environ.get("ARROW_DEFAULT_MEMORY_POOL") or default
    if name not in _POOLS:
        name = "system"
    if "pyarrow" not in sys.modules:
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = name
    return name


def arrow_pool(name: str | None = None, default: str = ARROW_POOL):
    """Make Arrow's ``default`` pool (jemalloc) the process's Arrow allocator and the default of
    the processes started after this call (``ARROW_DEFAULT_MEMORY_POOL``: Dask's LocalCluster
    workers); returns the pool.  The variable, when set, chooses another: jemalloc, system or
    mimalloc.

    Called before pyarrow's first import (or after :func:`preselect_arrow_pool`), Arrow's own
    default -- the one its C++ side takes: dataset scans, the Parquet writer's and readers'
    internals -- is this pool too; once pyarrow is imported, only Python's default changes
    (:func:`pyarrow.set_memory_pool`: Parquet file reads and writes, compute, conversions).

    pyarrow's default, mimalloc, kept the pages freed by the threads that decode Parquet: the
    driver's RSS grew with every window of findings correlation while Arrow held one window's
    evidence (1M messages: 403 -> 655 MB over 72 windows of 30 MB each).  With jemalloc (or the
    system allocator) RSS stays at what is live.

    ``flowaudit stream`` takes the system allocator, whose free pages :func:`trim` gives back:
    300k messages peaked at 539 MB against 568-585 MB with mimalloc and 550 with jemalloc
    (``python -m benchmarks.memory``, with the pool set through the variable).  Set before the
    import as well, mimalloc's arena (which held up to 60 MB by the end of a 1M-message run) is
    never made: the run's peak fell from 667-681 to 617 MB."""
    name = preselect_arrow_pool(name, default)
    import pyarrow as pa

    if name not in pa.supported_memory_backends():
        name = "system"
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = name
    pool = getattr(pa, f"{name}_memory_pool")()
    pa.set_memory_pool(pool)
    return pool
