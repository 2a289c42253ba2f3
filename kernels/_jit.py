"""The one decorator every flowaudit kernel uses.

Kernels are pure compute: numpy arrays and scalars in, arrays out; no I/O, no logging,
no Python objects.  ``kernel`` fixes the options in one place:

* ``nopython`` (via ``njit``): a kernel that cannot compile fails loudly at import/first call;
* ``cache=True``: machine code is cached next to the source (``__pycache__``), so a second
  process starts warm (the demo and the stream service pay the compile once per install);
* ``nogil=True``: the stream service may run kernels on worker threads;
* ``error_model="numpy"``: no Python exception machinery for division in hot loops.

Numba does not bounds-check array accesses.  Every kernel therefore checks each length it
reads from input against the end of the message before using it.  Tests run the kernels
against slow Python references (tests/test_kernels_*.py).
"""
from __future__ import annotations

import numba

OPTIONS = dict(cache=True, nogil=True, error_model="numpy")


def kernel(fn=None, **overrides):
    """Compile ``fn`` as a flowaudit kernel (``@kernel`` or ``@kernel(inline="always")``)."""
    opts = {**OPTIONS, **overrides}
    if fn is None:
        return lambda f: numba.njit(**opts)(f)
    return numba.njit(**opts)(fn)
