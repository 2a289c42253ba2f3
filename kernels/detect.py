"""Format detection and UTF-8 validation over whole batches.

``detect_formats`` looks at the first meaningful bytes of each message (after any UTF-8 byte
order marks, ASCII white space and NUL bytes) and returns a ``FMT_*`` code
(flowaudit/decode/__init__.py):

* ``UNA`` / ``UNB`` (and ``UNH+``, an EDIFACT message without interchange envelope, as in the
  COPRAR load-order samples) -> edifact;
* ``ISA`` / ``GS*`` / ``ST*`` -> x12 (an X12 transaction set without envelope starts at ST);
* ``<`` -> xml; ``{`` or ``[`` -> json;
* a flat file (``looks_flat``): 0x1D / 0x1C field separators (ICES manifests), a header line
  with at least two ``,`` ``;`` TAB or ``|`` delimiters that the next line repeats, or a
  fixed-width table (a header of words separated by runs of blanks over equal-width lines);
* anything else, or nothing left, -> unknown.

``validate_utf8`` checks the selected messages are well-formed UTF-8 exactly as Python's
strict ``bytes.decode("utf-8")`` does: no overlong forms, no surrogates (U+D800..U+DFFF), nothing
above U+10FFFF, no truncated or stray continuation bytes.  ``utf8_char`` is the per-character
check the JSON and XML scanners reuse.
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel

FMT_UNKNOWN, FMT_EDIFACT, FMT_X12, FMT_XML, FMT_JSON = 0, 1, 2, 3, 4
FMT_FLAT = 8
FLAT_PROBE = 8192  # bytes of a message looked at to recognise a flat file


@kernel
def line_end(buf, i, e):
    """End of the line starting at ``i`` (the LF, or ``e``)."""
    while i < e and buf[i] != 10:
        i += 1
    return i


@kernel
def count_delim(buf, s, e, d):
    """``d`` bytes in ``buf[s:e]`` outside double quotes."""
    n = 0
    q = False
    for k in range(s, e):
        c = buf[k]
        if c == 34:
            q = not q
        elif c == d and not q:
            n += 1
    return n


@kernel
def looks_flat(buf, s, e):
    """True when ``buf[s:e]`` (after leading blanks) reads as a flat file; see the module doc."""
    lim = min(e, s + FLAT_PROBE)
    gs = 0
    for k in range(s, lim):
        c = buf[k]
        if c == 0:
            return False
        if c == 0x1D or c == 0x1C:
            gs += 1
    l1 = line_end(buf, s, lim)
    if l1 >= lim:
        return False
    if gs >= 2:
        return True
    h_end = l1 - 1 if l1 > s and buf[l1 - 1] == 13 else l1
    l2s = l1 + 1
    l2 = line_end(buf, l2s, lim)
    l2e = l2 - 1 if l2 > l2s and buf[l2 - 1] == 13 else l2
    if l2e <= l2s:
        return False
    letters = 0
    for k in range(s, h_end):
        if (65 <= buf[k] <= 90) or (97 <= buf[k] <= 122):
            letters += 1
    if letters < 3:
        return False
    for d in (44, 59, 9, 124):
        n1 = count_delim(buf, s, h_end, d)
        if n1 >= 2 and count_delim(buf, l2s, l2e, d) == n1:
            return True
    # fixed width: header words of letters / digits / _ . / separated by 2+ blanks, >= 3 columns,
    # and the next line reaches the last column, the one after it the second (empty trailing
    # columns may be cut)
    cols = 1
    k = s
    last = s
    second = s
    while k < h_end:
        c = buf[k]
        if c == 32:
            r = k
            while r < h_end and buf[r] == 32:
                r += 1
            if r - k >= 2 and r < h_end:
                cols += 1
                last = r
                if cols == 2:
                    second = r
            k = r
            continue
        if not ((65 <= c <= 90) or (97 <= c <= 122) or (48 <= c <= 57) or c == 95 or c == 46 or c == 47
                or c == 45 or c == 35):
            return False
        k += 1
    if cols < 3:
        return False
    if l2e - l2s <= last - s:
        return False
    l3s = l2 + 1
    l3 = line_end(buf, l3s, lim)
    l3e = l3 - 1 if l3 > l3s and buf[l3 - 1] == 13 else l3
    return l3e - l3s > second - s


@kernel
def utf8_char(buf, i, end):
    """Length (1..4) of the well-formed UTF-8 character at ``buf[i]`` (``i < end``), or -1."""
    c = buf[i]
    if c < 0x80:
        return 1
    if c < 0xC2 or c > 0xF4:          # continuation byte, overlong 2-byte lead, > U+10FFFF lead
        return -1
    if c < 0xE0:
        if i + 1 >= end:
            return -1
        c1 = buf[i + 1]
        if c1 < 0x80 or c1 > 0xBF:
            return -1
        return 2
    if c < 0xF0:
        if i + 2 >= end:
            return -1
        c1 = buf[i + 1]
        c2 = buf[i + 2]
        lo = 0x80
        hi = 0xBF
        if c == 0xE0:
            lo = 0xA0                 # overlong
        elif c == 0xED:
            hi = 0x9F                 # surrogates U+D800..U+DFFF
        if c1 < lo or c1 > hi or c2 < 0x80 or c2 > 0xBF:
            return -1
        return 3
    if i + 3 >= end:
        return -1
    c1 = buf[i + 1]
    c2 = buf[i + 2]
    c3 = buf[i + 3]
    lo = 0x80
    hi = 0xBF
    if c == 0xF0:
        lo = 0x90                     # overlong
    elif c == 0xF4:
        hi = 0x8F                     # > U+10FFFF
    if c1 < lo or c1 > hi or c2 < 0x80 or c2 > 0xBF or c3 < 0x80 or c3 > 0xBF:
        return -1
    return 4


@kernel
def utf8_valid_range(buf, s, e):
    """True when ``buf[s:e]`` is well-formed UTF-8."""
    i = s
    while i < e:
        if buf[i] < 0x80:
            i += 1
            continue
        n = utf8_char(buf, i, e)
        if n < 0:
            return False
        i += n
    return True


@kernel
def detect_formats(buf, offsets):
    """``uint8[n]`` format code per message of the batch ``buf``/``offsets``."""
    n = offsets.shape[0] - 1
    out = np.zeros(max(n, 0), dtype=np.uint8)
    nb = buf.shape[0]
    for m in range(n):
        s = offsets[m]
        e = offsets[m + 1]
        if s < 0:
            s = 0
        if e > nb:
            e = nb
        i = s
        while i < e:
            c = buf[i]
            if c == 32 or c == 9 or c == 10 or c == 13 or c == 0:
                i += 1
            elif c == 0xEF and i + 2 < e and buf[i + 1] == 0xBB and buf[i + 2] == 0xBF:
                i += 3
            else:
                break
        if i >= e:
            continue
        c = buf[i]
        if c == 60:                                   # <
            out[m] = FMT_XML
        elif c == 123 or c == 91:                     # { [
            out[m] = FMT_JSON
        elif i + 2 < e:
            c1 = buf[i + 1]
            c2 = buf[i + 2]
            if c == 85 and c1 == 78 and (c2 == 65 or c2 == 66):          # UNA UNB
                out[m] = FMT_EDIFACT
            elif c == 85 and c1 == 78 and c2 == 72 and i + 3 < e and buf[i + 3] == 43:  # UNH+
                out[m] = FMT_EDIFACT
            elif c == 73 and c1 == 83 and c2 == 65:                       # ISA
                out[m] = FMT_X12
            elif (c == 71 and c1 == 83 and c2 == 42) or (c == 83 and c1 == 84 and c2 == 42):  # GS* ST*
                out[m] = FMT_X12
        if out[m] == FMT_UNKNOWN and looks_flat(buf, i, e):
            out[m] = FMT_FLAT
    return out


@kernel
def validate_utf8(buf, offsets, sel):
    """``int8[len(sel)]``: 1 when message ``sel[k]`` is well-formed UTF-8, else 0."""
    k = sel.shape[0]
    out = np.zeros(k, dtype=np.int8)
    n = offsets.shape[0] - 1
    nb = buf.shape[0]
    for j in range(k):
        m = sel[j]
        if m < 0 or m >= n:
            continue
        s = offsets[m]
        e = offsets[m + 1]
        if s < 0 or e > nb or e < s:
            continue
        if utf8_valid_range(buf, s, e):
            out[j] = 1
    return out
