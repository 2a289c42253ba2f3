"""The one decorator every flowaudit kernel uses.

Kernels are pure compute: numpy arrays and scalars in, arrays out; no I/O, no logging,
no Python objects.  ``kernel`` fixes the options in one place:

* ``nopython`` (via ``njit``): a kernel that cannot compile fails loudly at import/first call;
* ``cache=True``: machine code is cached next to the source (``__pycache__``), so a second
  process starts warm (the demo and the stream service pay the compile once per install);
* ``nogil=True``: the stream service may run kernels on worker threads;
* ``error_model="numpy"``: no Python exception machinery for division in hot loops;
* one specialisation per argument type, never per constant: numba compiles a jitted callee
  once per *literal* argument a caller passes (``scan_str(buf, i, e, out, 0, 0, 1)`` and
  ``scan_str(..., 0, 0, 2)`` were two full compiles, ``free_one(0, ...)`` .. ``free_one(4, ...)``
  five).  :class:`KernelDispatcher` types every call from another kernel with plain
  ``int64``/``bool`` instead (``types.unliteral``); README, "Cold start", has the figures;
* ``readonly=("src", ...)``: those array parameters are typed read-only when another kernel calls,
  so a helper fed the (read-only) batch in one place and a writable scratch buffer in another
  compiles once (:class:`KernelDispatcher`);
* ``_nrt=False`` (per kernel): no reference counting, for loops that allocate nothing (the work
  arrays come from the caller).  numba compiles a callee with its caller's flag unless the callee
  sets it itself, so a helper that allocates says ``_nrt=True``.

``inline="always"`` inlines at numba's IR level: the callee's body is copied, typed and lowered
again at every call site, which is slow to compile.  LLVM inlines small kernels anyway (numba
links the callee's IR into the caller's module before optimising it), so kernels use it only
where a measurement shows it pays.

Numba does not bounds-check array accesses.  Every kernel therefore checks each length it
reads from input against the end of the message before using it.  Tests run the kernels
against slow Python references (tests/test_kernels_*.py).
"""
from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import numba
import numpy as np
from numba.core import config, types
from numba.core.caching import FunctionCache
from numba.core.registry import CPUDispatcher

OPTIONS = dict(cache=True, nogil=True, error_model="numpy")


def read_only(a, dtype=None) -> np.ndarray:
    """``a`` as a contiguous read-only array (a view where it is writable; ``dtype`` converts it
    first).  Kernels never write the arrays they read, and numba compiles (and caches, and
    ``flowaudit warmup`` warms) one specialisation per argument type, read-only or not: a poll's
    bytes are read-only, an Arrow column's buffer (the audit) or a decoded layer is not, and each
    was a second compile of every kernel it reached (59 kernels, 30 s, in the first audit after a
    warmup).  The shell hands kernels their inputs through this."""
    a = np.ascontiguousarray(a, dtype=dtype)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def sources_digest(folder: Path | str | None = None) -> str:
    """sha256 over the source of every kernel module (``folder``: default, this package)."""
    h = hashlib.sha256()
    for p in sorted(Path(folder or Path(__file__).parent).glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


SOURCES_DIGEST = sources_digest()


class KernelCache(FunctionCache):
    """numba's on-disk cache, keyed also by :data:`SOURCES_DIGEST`.  numba checks only the source
    file of the function itself, but a kernel's machine code holds the kernels it calls from other
    modules (compiled into it, often inlined): after a change in ``values.py`` the cached JSON,
    XML and salvage scanners would keep running the old parsers.  With every kernel source in the
    key, an upgrade recompiles instead (stale entries stay in the index until numba drops it)."""

    def _index_key(self, sig, codegen):
        return super()._index_key(sig, codegen) + (SOURCES_DIGEST,)


class KernelDispatcher(CPUDispatcher):
    """numba's CPU dispatcher, except that a call from another kernel is typed without literal
    arguments, so a kernel compiles once per array/scalar type, not once per constant; and the
    array arguments named in ``readonly`` are typed read-only, so a kernel that reads bytes from
    the (read-only) batch in one call and from a writable scratch buffer in another compiles once.
    A writable array converts to a read-only one safely (the cast is a no-op; the callee only
    loses the right to write to it, which numba checks when it types the callee)."""

    readonly_pos: frozenset = frozenset()
    readonly_names: frozenset = frozenset()

    def get_call_template(self, args, kws):
        args = tuple(types.unliteral(a) for a in args)
        kws = {k: types.unliteral(v) for k, v in kws.items()}
        if self.readonly_pos:
            args = tuple(_ro(a) if i in self.readonly_pos else a for i, a in enumerate(args))
            kws = {k: _ro(v) if k in self.readonly_names else v for k, v in kws.items()}
        return super().get_call_template(args, kws)


def _ro(t):
    return t.copy(readonly=True) if isinstance(t, types.Array) and t.mutable else t


def _compile(fn, opts):
    opts = dict(opts)
    readonly = tuple(opts.pop("readonly", ()))
    if config.DISABLE_JIT:
        return numba.njit(**opts)(fn)
    cache = opts.pop("cache", False)
    disp = KernelDispatcher(py_func=fn, locals={}, targetoptions={"nopython": True, "boundscheck": None, **opts})
    if readonly:
        params = list(inspect.signature(fn).parameters)
        disp.readonly_pos = frozenset(params.index(n) for n in readonly)
        disp.readonly_names = frozenset(readonly)
    if cache:
        disp._cache = KernelCache(fn)        # what enable_caching() does, with the wider key
    return disp


def kernel(fn=None, **overrides):
    """Compile ``fn`` as a flowaudit kernel (``@kernel`` or ``@kernel(inline="always")``).

    ``readonly=("src", ...)``: parameters typed read-only when another kernel calls this one (see
    :class:`KernelDispatcher`); ``_nrt=False``: no reference counting, for kernels that allocate
    nothing (numba passes the flag on to the kernels they call that do not set it themselves)."""
    opts = {**OPTIONS, **overrides}
    if fn is None:
        return lambda f: _compile(f, opts)
    return _compile(fn, opts)
