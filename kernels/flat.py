"""Flat files: the values of cells whose column header names a data class.

``flat_cells`` recognises each cell ``buf[starts[k]:ends[k]]`` as value kind ``kinds[k]`` (the
recognisers of kernels/jsonscan.py ``recognise``: container, IMO, e-mail, phone, LEI, USCI, EORI,
UN number, MMSI, or trimmed text) and writes the normalised value to ``out``.  Per cell:
``valid[k]`` 1 / 0 / -1 (check digit ok / wrong / none) or -2 (no hit: empty, not of the shape,
or a wrong check digit where ``modes[k]`` asks for a right one), ``voff[k]``, ``vlen[k]``.
Returns the bytes written to ``out``, or -1 when ``out`` is too small (it needs ``VAL_ROOM``
bytes per cell) or the arrays disagree in length.  Cell bounds are checked against ``buf``.
"""
from __future__ import annotations

from ._jit import kernel
from .jsonscan import MODE_CHECK, VAL_ROOM, recognise


@kernel
def flat_cells(buf, starts, ends, kinds, modes, out, voff, vlen, valid):
    n = starts.shape[0]
    if ends.shape[0] != n or kinds.shape[0] != n or modes.shape[0] != n or voff.shape[0] != n or \
            vlen.shape[0] != n or valid.shape[0] != n or out.shape[0] < n * VAL_ROOM:
        return -1
    o = 0
    nb = buf.shape[0]
    for k in range(n):
        valid[k] = -2
        voff[k] = o
        vlen[k] = 0
        s = starts[k]
        e = ends[k]
        if s < 0 or e > nb or e <= s:
            continue
        v, m = recognise(kinds[k], buf, s, e, out, o)
        if v == -2 or m <= 0 or (modes[k] == MODE_CHECK and v != 1):
            continue
        valid[k] = v
        vlen[k] = m
        o += m
    return o
