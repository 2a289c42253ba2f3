"""Interchange splitter: where one EDI archive file (EDIFACT and X12 end to end) cuts into
interchanges.  One pass, left to right, each byte read a bounded number of times: O(n).

:func:`split_interchanges` returns ``(cuts, kinds)``: piece ``k`` is ``buf[cuts[k]:cuts[k+1]]``,
``cuts[0] == start``, ``cuts[-1] == end``; the pieces cover the range without gap or overlap,
so no byte is ever dropped.  ``kinds[k]`` says what the splitter saw (the classifier decides the
status; these are for the shell and the tests):

* ``K_WHOLE``: the data does not start (after a UTF-8 BOM, white space and NUL bytes) like EDI
  (``UNA``, ``UNB``, ``UNH+``, ``ISA``, ``GS*``, ``ST*``, as :mod:`.detect` decides): one piece;
* ``K_EDIFACT`` / ``K_X12``: an interchange from its header (an optional BOM, ``UNA``, ``UNB``,
  ``ISA``) through the terminator of its ``UNZ`` / ``IEA`` segment, plus the white space and NUL
  bytes after it;
* ``K_EDIFACT_OPEN`` / ``K_X12_OPEN``: an interchange cut before the end of any ``UNZ`` / ``IEA``
  segment, by the next interchange header or by the end of the data (the classifier refuses it:
  ``unterminated_interchange``; an X12 trailer with a CR / LF terminator that runs to the end of
  the data counts as closed, as kernels/x12.py accepts it);
* ``K_OTHER``: bytes between interchanges that do not start with a header (garbage, a bare
  message, a trailer without its interchange): up to the next header.

Rules (reliability.md section 5):

* an interchange header is ``UNA`` followed by its 6 service characters, or ``UNB`` / ``ISA``
  followed by a byte that is not a letter, digit or white space; a UTF-8 BOM (then white space /
  NUL bytes) may precede it;
* EDIFACT separators: from the UNA service string advice when it is valid (segment terminator =
  its 6th character, release character = its 4th, a space meaning none), else the defaults
  ``'`` and ``?``; a ``UNB`` followed by 0x1D and no UNA uses the syntax level B set (terminator
  0x1C, no release character).  A released terminator (odd run of release characters before it)
  does not end a segment;
* X12 separators: the element separator is the byte after ``ISA``; the 16th element separator
  (within the first 512 bytes, no line break before it) is followed by ISA16 and then the segment
  terminator; a CR or LF terminator makes every CR / LF end a segment.  An ISA that does not yield
  a usable terminator is split with ``~``;
* white space (CR, LF, blanks, tabs) and NUL bytes between segments are skipped; a segment start that is an
  interchange header cuts the current interchange, except the first segment after a UNA (its
  own UNB) and the interchange's own header.  A line break inside a segment that is directly
  followed by a header also cuts (the segment was never terminated: keep the next interchange
  whole instead of swallowing it);
* between interchanges, a header may start at any byte that follows white space, NUL, ``'``,
  ``~``, 0x1C or the terminator of the interchange before.

Every index is compared with ``end`` before it is read.
"""
from __future__ import annotations

import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from ._jit import kernel
from .words import load_word, sep_mask, sep_pattern

K_WHOLE = 0
K_EDIFACT = 1
K_X12 = 2
K_EDIFACT_OPEN = 3
K_X12_OPEN = 4
K_OTHER = 5
KIND_NAMES = ("whole", "edifact", "x12", "edifact_open", "x12_open", "other")
_P_LF = np.uint64(0x0A0A0A0A0A0A0A0A)
_P_CR = np.uint64(0x0D0D0D0D0D0D0D0D)

H_NONE = 0
H_UNA = 1
H_UNB = 2
H_ISA = 3

ISA_SCAN_LIMIT = 512


@kernel
def _ws(c):
    return c == 32 or c == 9 or c == 10 or c == 13


@kernel
def _alnum(c):
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122)


@kernel
def _alnum_ws(c):
    return _alnum(c) or _ws(c)


@kernel
def _bad_sep(c):
    return _alnum_ws(c) or c == 0


@kernel
def header_at(buf, i, end):
    """Interchange header at ``buf[i]``: ``H_UNA`` / ``H_UNB`` / ``H_ISA`` or ``H_NONE``."""
    if i < 0 or i + 3 >= end:
        return H_NONE
    a = buf[i]
    b = buf[i + 1]
    c = buf[i + 2]
    if a == 85 and b == 78:                          # UN
        if c == 65:                                  # UNA + 6 service characters
            return H_UNA if end - i >= 9 else H_NONE
        if c == 66 and not _alnum_ws(buf[i + 3]):    # UNB + separator
            return H_UNB
    elif a == 73 and b == 83 and c == 65 and not _alnum_ws(buf[i + 3]):   # ISA + separator
        return H_ISA
    return H_NONE


@kernel
def header_here(buf, i, end):
    """``(kind, position)`` of a header at ``buf[i]``, or after a UTF-8 BOM (then white space /
    NUL bytes) at ``buf[i]``."""
    if i + 2 < end and buf[i] == 0xEF and buf[i + 1] == 0xBB and buf[i + 2] == 0xBF:
        j = i + 3
        while j < end and (_ws(buf[j]) or buf[j] == 0):
            j += 1
        return header_at(buf, j, end), j
    return header_at(buf, i, end), i


@kernel
def edi_head(buf, p, end):
    """Does ``buf[p:end]`` start like EDI (the EDIFACT / X12 starts of :mod:`.detect`)?"""
    if p + 2 >= end:
        return False
    a = buf[p]
    b = buf[p + 1]
    c = buf[p + 2]
    if a == 85 and b == 78 and (c == 65 or c == 66):                 # UNA UNB
        return True
    if a == 85 and b == 78 and c == 72 and p + 3 < end and buf[p + 3] == 43:    # UNH+
        return True
    if a == 73 and b == 83 and c == 65:                               # ISA
        return True
    return (a == 71 and b == 83 and c == 42) or (a == 83 and b == 84 and c == 42)   # GS* ST*


@kernel
def edifact_separators(buf, p, end, h):
    """``(term, rel, first)`` of the EDIFACT interchange whose header is at ``p``: the segment
    terminator, the release character (-1: none) and where its first segment starts."""
    term = np.int64(39)
    rel = np.int64(63)
    if h == H_UNA:
        if p + 9 > end:
            return term, rel, end
        comp = np.int64(buf[p + 3])
        elem = np.int64(buf[p + 4])
        r = np.int64(buf[p + 6])
        t = np.int64(buf[p + 8])
        if r == 32:
            r = -1
        ok = not (_bad_sep(comp) or _bad_sep(elem) or _bad_sep(t))
        ok = ok and comp != elem and comp != t and elem != t
        ok = ok and (r < 0 or not (_bad_sep(r) or r == comp or r == elem or r == t))
        if ok:
            term = t
            rel = r
        return term, rel, p + 9
    if p + 3 < end and buf[p + 3] == 0x1D:
        return np.int64(0x1C), np.int64(-1), p
    return term, rel, p


@kernel
def x12_separators(buf, p, end):
    """``(term, nl)`` of the X12 interchange whose ISA is at ``p``: the segment terminator and
    whether CR / LF end segments; ``~`` when the ISA yields no usable terminator."""
    if p + 3 >= end:
        return np.int64(126), False
    elem = buf[p + 3]
    limit = min(end, p + ISA_SCAN_LIMIT)
    i = p + 3
    count = 0
    while i < limit:
        c = buf[i]
        if c == 10 or c == 13:
            break
        if c == elem:
            count += 1
            if count == 16:
                break
        i += 1
    if count < 16 or i + 2 >= end:
        return np.int64(126), False
    comp = np.int64(buf[i + 1])
    term = np.int64(buf[i + 2])
    if term == 10 or term == 13:
        return term, True
    if _bad_sep(term) or term == elem or term == comp:
        return np.int64(126), False
    return term, False


@kernel
def _push(cuts, kinds, n, stop, kind):
    """Append piece ``n`` (ending at ``stop``), growing the arrays by doubling when full."""
    if n >= kinds.shape[0]:
        cap = max(16, 2 * kinds.shape[0])
        c2 = np.empty(cap + 1, np.int64)
        c2[:n + 1] = cuts[:n + 1]
        k2 = np.empty(cap, np.uint8)
        k2[:n] = kinds[:n]
        cuts = c2
        kinds = k2
    kinds[n] = kind
    cuts[n + 1] = stop
    return cuts, kinds


@kernel
def split_interchanges(buf, start, end):
    """``(cuts int64[n+1], kinds uint8[n])`` of ``buf[start:end]`` (see the module doc)."""
    nb = buf.shape[0]
    if start < 0:
        start = 0
    if end > nb:
        end = nb
    if end < start:
        end = start
    cuts = np.empty(65, np.int64)
    kinds = np.empty(64, np.uint8)
    cuts[0] = start
    n = 0
    if start >= end:
        return cuts[:1].copy(), kinds[:0].copy()
    p = start
    while p < end:                       # BOMs, white space and NUL bytes, as kernels/detect.py
        if _ws(buf[p]) or buf[p] == 0:
            p += 1
        elif p + 2 < end and buf[p] == 0xEF and buf[p + 1] == 0xBB and buf[p + 2] == 0xBF:
            p += 3
        else:
            break
    if not edi_head(buf, p, end):
        cuts, kinds = _push(cuts, kinds, n, end, K_WHOLE)
        return cuts[:2].copy(), kinds[:1].copy()

    prev_term = np.int64(-1)
    piece = start
    while piece < end:
        q = piece
        while q < end and (_ws(buf[q]) or buf[q] == 0):
            q += 1
        if q >= end:                     # only white space left (a file of blanks after its head)
            cuts, kinds = _push(cuts, kinds, n, end, K_OTHER)
            n += 1
            break
        h, hp = header_here(buf, q, end)
        if h == H_NONE:
            # not an interchange: up to the next header that follows a separator-like byte
            i = q + 1
            while i < end:
                c = np.int64(buf[i - 1])
                if _ws(c) or c == 0 or c == 39 or c == 126 or c == 0x1C or c == prev_term:
                    hh, _hp = header_here(buf, i, end)
                    if hh != H_NONE:
                        break
                i += 1
            cuts, kinds = _push(cuts, kinds, n, i, K_OTHER)
            n += 1
            piece = i
            continue

        x12 = h == H_ISA
        nl = False
        if x12:
            term, nl = x12_separators(buf, hp, end)
            rel = np.int64(-1)
            i = hp
        else:
            term, rel, i = edifact_separators(buf, hp, end, h)
        # the bytes a segment's scan stops at, eight bytes a step: release, terminator, LF, CR
        p_rel = sep_pattern(rel if rel >= 0 else term)
        p_term = sep_pattern(term)
        nseg = 0
        closed = False
        cut = end
        while True:
            while i < end and (_ws(buf[i]) or buf[i] == 0):
                i += 1
            if i >= end:
                cut = end
                break
            hh, _hp = header_here(buf, i, end)
            if hh != H_NONE and (nseg > 0 or hh == H_UNA):
                cut = i
                break
            trailer = False
            if i + 3 < end and not _alnum(buf[i + 3]):
                a = buf[i]
                b = buf[i + 1]
                c = buf[i + 2]
                if x12:
                    trailer = a == 73 and b == 69 and c == 65          # IEA
                else:
                    trailer = a == 85 and b == 78 and c == 90          # UNZ
            j = i
            broken = -1
            while j < end:
                if j + 8 <= end:
                    m = sep_mask(load_word(buf, j), p_rel, p_term, _P_LF, _P_CR)
                    if m == 0:
                        j += 8
                        continue
                    j += np.int64(trailing_zeros(m)) >> 3
                c = np.int64(buf[j])
                if c == rel:
                    j += 2
                    continue
                if c == term:
                    break
                if c == 10 or c == 13:
                    if nl:
                        break
                    if j + 1 < end:
                        hb, _hb = header_here(buf, j + 1, end)
                        if hb != H_NONE:
                            broken = j + 1
                            break
                j += 1
            if broken >= 0:
                cut = broken
                break
            if j >= end:
                cut = end
                closed = trailer and nl        # a CR / LF terminator may be missing at the very end
                break
            i = j + 1
            nseg += 1
            if trailer:
                closed = True
                while i < end and (_ws(buf[i]) or buf[i] == 0):
                    i += 1
                cut = i
                break
        if closed:
            kind = K_X12 if x12 else K_EDIFACT
        else:
            kind = K_X12_OPEN if x12 else K_EDIFACT_OPEN
        cuts, kinds = _push(cuts, kinds, n, cut, kind)
        n += 1
        prev_term = term
        piece = cut
    return cuts[:n + 1].copy(), kinds[:n].copy()
