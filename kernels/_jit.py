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
  ``int64``/``bool`` instead (``types.unliteral``); README, "Cold start", has the figures.

``inline="always"`` inlines at numba's IR level: the callee's body is copied, typed and lowered
again at every call site, which is slow to compile.  LLVM inlines small kernels anyway (numba
links the callee's IR into the caller's module before optimising it), so kernels use it only
where a measurement shows it pays.

Numba does not bounds-check array accesses.  Every kernel therefore checks each length it
reads from input against the end of the message before using it.  Tests run the kernels
against slow Python references (tests/test_kernels_*.py).
"""
from __future__ import annotations

import numba
from numba.core import config, types
from numba.core.registry import CPUDispatcher

OPTIONS = dict(cache=True, nogil=True, error_model="numpy")


class KernelDispatcher(CPUDispatcher):
    """numba's CPU dispatcher, except that a call from another kernel is typed without literal
    arguments, so a kernel compiles once per array/scalar type, not once per constant."""

    def get_call_template(self, args, kws):
        return super().get_call_template(tuple(types.unliteral(a) for a in args),
                                         {k: types.unliteral(v) for k, v in kws.items()})


def _compile(fn, opts):
    if config.DISABLE_JIT:
        return numba.njit(**opts)(fn)
    opts = dict(opts)
    cache = opts.pop("cache", False)
    disp = KernelDispatcher(py_func=fn, locals={}, targetoptions={"nopython": True, "boundscheck": None, **opts})
    if cache:
        disp.enable_caching()
    return disp


def kernel(fn=None, **overrides):
    """Compile ``fn`` as a flowaudit kernel (``@kernel`` or ``@kernel(inline="always")``)."""
    opts = {**OPTIONS, **overrides}
    if fn is None:
        return lambda f: _compile(f, opts)
    return _compile(fn, opts)
