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

The price of a low threshold is page faults: every block above it is a fresh mapping, and every
page of it is faulted in again.  ``flowaudit audit`` works through far more data than the
stream holds (1M messages: 25.6 M hits), and at 128 KiB it took 4.8 M minor faults and 11.7 s of
system time in a 24 s run.  It takes :data:`BATCH_HEAP` instead -- blocks up to 4 MiB from the
arenas, 64 MiB of free memory kept at a heap's top -- and trims between its phases: 0.9 M faults,
3.6 s of system time, 19.1 s in all, peak 0.76 GB against 0.68 (``python -m benchmarks.audit``).
The stream keeps 128 KiB: at 4 MiB its 1M-message peak rose from 473-478 to 498-499 MB, against
a 500 MB target (benchmarks/HISTORY.md, "Page faults").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_TRIM_THRESHOLD = -1   # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
STREAM_HEAP = (128 << 10, None)          # (mmap threshold, trim threshold: None keeps glibc's)
BATCH_HEAP = (4 << 20, 64 << 20)


@functools.cache
def _libc():
    """libc, loaded once (``find_library`` runs ``ldconfig``: not on every publish)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def fix_mmap_threshold(nbytes: int = STREAM_HEAP[0], keep: int | None = STREAM_HEAP[1]) -> bool:
    """Pin glibc's mmap threshold (disables its dynamic raise) and, when ``keep`` is given, its
    trim threshold: the free bytes a heap keeps at its top rather than handing back; False where
    libc is not glibc."""
    try:
        libc = _libc()
        return bool(libc.mallopt(M_MMAP_THRESHOLD, int(nbytes))
                    and (keep is None or libc.mallopt(M_TRIM_THRESHOLD, int(keep))))
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


# each long-running command's process settings: (glibc heap: mmap and trim thresholds or None for
# glibc's dynamic ones, Arrow pool); the benchmarks take the same, to measure what the command runs
COMMANDS = {"stream": (STREAM_HEAP, "system"), "demo": (STREAM_HEAP, "system"),
            "audit": (BATCH_HEAP, ARROW_POOL), "scan": (None, ARROW_POOL)}


def heap_env(nbytes: int, keep: int | None = None) -> dict:
    """The environment that gives a process started later the heap :func:`fix_mmap_threshold`
    gives this one (glibc reads these variables at start-up)."""
    env = {"MALLOC_MMAP_THRESHOLD_": str(int(nbytes))}
    if keep is not None:
        env["MALLOC_TRIM_THRESHOLD_"] = str(int(keep))
    return env


def for_command(command: str):
    """Apply ``command``'s process settings (:data:`COMMANDS`): the heap, now and for the
    processes started after this call (Dask's LocalCluster workers, whose nanny otherwise sets
    ``MALLOC_TRIM_THRESHOLD_=65536``; a 2-worker audit of 1M messages took 25.8-30.1 s with that,
    21.9-23.4 s with the audit's heap), and the Arrow pool as :func:`arrow_pool` does (Arrow's C++
    side too when pyarrow is not yet imported); returns the pool."""
    heap, pool = COMMANDS[command]
    if heap is not None:
        fix_mmap_threshold(*heap)
        os.environ.update(heap_env(*heap))
    return arrow_pool(default=pool)


MADV_DONTNEED = 4    # <asm-generic/mman-common.h>
MADV_PAGEOUT = 21    # Linux 5.4+
LLVM_LIBRARY = "libllvmlite"


def _clean_file_ranges(name: str, smaps: str = "/proc/self/smaps") -> list[tuple[int, int, int]]:
    """``(start, end, rss bytes)`` of each read-only mapping of a file whose name contains
    ``name`` and that holds no private (copy-on-write) page: the text and constant data of a
    shared library, never its relocated or writable segments."""
    out, cur, rss = [], None, 0
    try:
        with open(smaps) as f:
            for line in f:
                p = line.split()
                if len(p) >= 5 and "-" in p[0] and ":" not in p[0]:     # a mapping's header line
                    cur = p if len(p) > 5 and name in p[5] and "w" not in p[1] else None
                elif cur is None:
                    continue
                elif p[0] == "Rss:":
                    rss = int(p[1]) << 10
                elif p[0] == "Anonymous:" and int(p[1]) == 0:
                    lo, hi = (int(x, 16) for x in cur[0].split("-"))
                    out.append((lo, hi, rss))
    except OSError:
        return []
    return out


def release_library_pages(name: str = LLVM_LIBRARY) -> int:
    """Hand a shared library's resident text and constant pages back to the kernel; returns the
    bytes of resident pages released.

    LLVM (libllvmlite, 180 MB of code) is needed while numba compiles or loads kernels.  Loading
    them faults in about 70 MB of it (the kernel maps 64 KiB around each fault), which then stay
    in the process's RSS for good although nothing runs them.  ``MADV_PAGEOUT`` (Linux 5.4+)
    reclaims the pages that no other process maps; ``MADV_DONTNEED`` then drops this process's
    mappings of the rest (they stay in the page cache for the processes that use them).  Only
    read-only mappings without a private page are touched, so nothing is lost: a later compile
    or kernel load faults back what it reads."""
    libc = _libc()
    ranges = _clean_file_ranges(name)
    if libc is None or not ranges:
        return 0
    madvise = libc.madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    released = 0
    for lo, hi, rss in ranges:
        madvise(lo, hi - lo, MADV_PAGEOUT)              # EINVAL before Linux 5.4: DONTNEED alone
        if madvise(lo, hi - lo, MADV_DONTNEED) == 0:
            released += rss
    return released
