"""Masks of many ASCII values in one call: the per-class rules of flowaudit/protect.py over bytes.

``mask_ascii(buf, starts, ends, rule, param, out, out_off, done)`` writes the mask of
``buf[starts[i]:ends[i]]`` to ``out[out_off[i]:out_off[i] + ends[i] - starts[i]]`` when every byte
of the value is ASCII, and sets ``done[i]``; a value with any byte >= 0x80 is left to the Python
rule (which decodes UTF-8, replacement characters included, and knows Unicode letters), so the
two always agree.  Every rule keeps the length and position of each character: an ASCII mask is
the value with some letters and digits replaced by ``*``.

Character classes are Python's for ASCII ``str``: ``isalnum`` is ``[0-9A-Za-z]`` and
``isspace`` is ``\\t \\n \\v \\f \\r``, the separators ``\\x1c``-``\\x1f`` and the space.

Rule codes (the parameter in brackets; flowaudit.protect.RULES maps each data class to one):

====  ==================  =====================================================================
code  rule                keeps
====  ==================  =====================================================================
0     STAR                nothing but separators
1     IDENTIFIER          a leading run of letters: at most 4 and a third of letters + digits
2     CONTAINER           4 owner/category letters and the check digit of an 11-character number
3     IMO                 an ``IMO`` prefix and the last digit (if 4 more remain starred)
4     FIRST (n)           the first n letters/digits, if there are at least 3n
5     COUNTRY (min)       two leading letters, in values of at least ``min`` letters/digits
6     UN                  a ``UN`` prefix
7     INITIALS            the first letter/digit of every word of two or more
8     EMAIL               everything from the last ``@`` (not at 0); else IDENTIFIER
9     PHONE               ``+`` / ``00`` and the country code, if 4 or more digits remain
10    DIGITS              every character but digits
====  ==================  =====================================================================

A mask equal to the value (nothing was starred) becomes STAR: never the value itself.
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel

STAR, IDENTIFIER, CONTAINER, IMO, FIRST, COUNTRY, UN, INITIALS, EMAIL, PHONE, DIGITS = range(11)

# ITU-T E.164 country codes of two digits (one digit: 1 and 7; every other code has three)
CC2 = (20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54, 55, 56, 57, 58, 60,
       61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98)
_CC2 = np.zeros(100, np.bool_)
_CC2[list(CC2)] = True

_ASTERISK = 42
_AT = 64


@kernel(inline="always")
def _digit(b):
    return 48 <= b <= 57


@kernel(inline="always")
def _alpha(b):
    return 65 <= b <= 90 or 97 <= b <= 122


@kernel(inline="always")
def _alnum(b):
    return 48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122


@kernel(inline="always")
def _space(b):
    return b == 32 or 9 <= b <= 13 or 28 <= b <= 31


@kernel(inline="always")
def _upper(b):
    return b - 32 if 97 <= b <= 122 else b


@kernel(inline="always")
def _nth_alnum(buf, s, e, k):
    """Offset (from ``s``) of the k-th (0-based) letter/digit of ``buf[s:e]``; -1: fewer."""
    seen = 0
    for j in range(e - s):
        if _alnum(buf[s + j]):
            if seen == k:
                return j
            seen += 1
    return -1


@kernel(inline="always")
def _keep_head(buf, s, e, out, o, k):
    """Restore the first ``k`` letters/digits."""
    kept = 0
    j = 0
    while kept < k and j < e - s:
        if _alnum(buf[s + j]):
            out[o + j] = buf[s + j]
            kept += 1
        j += 1


@kernel(inline="always")
def _identifier(buf, s, e, out, o, na):
    """Starred already; keep the leading run of up to min(4, na // 3) letters (separators between
    them included), as ``(?:[^A-Za-z0-9]*[A-Za-z]){0,k}`` matches it."""
    k = min(4, na // 3)
    n = e - s
    end = 0
    for _r in range(k):
        j = end
        while j < n and not _alnum(buf[s + j]):
            j += 1
        if j < n and _alpha(buf[s + j]):
            end = j + 1
        else:
            break
    for j in range(end):
        out[o + j] = buf[s + j]


@kernel(inline="always")
def _mask_one(buf, s, e, rule, param, out, o):
    n = e - s
    na = 0
    for j in range(n):                      # starred, and the count of letters and digits
        b = buf[s + j]
        if _alnum(b):
            out[o + j] = _ASTERISK
            na += 1
        else:
            out[o + j] = b
    if rule == IDENTIFIER:
        _identifier(buf, s, e, out, o, na)
    elif rule == CONTAINER:
        ok = na == 11
        if ok:
            m = 0
            for j in range(n):
                b = buf[s + j]
                if _alnum(b):
                    if (m < 4 and not _alpha(b)) or (m >= 4 and not _digit(b)):
                        ok = False
                        break
                    m += 1
        if ok:
            _keep_head(buf, s, e, out, o, 4)
            last = _nth_alnum(buf, s, e, 10)
            out[o + last] = buf[s + last]
        else:
            _identifier(buf, s, e, out, o, na)
    elif rule == IMO:
        kept = 0
        if na >= 3:
            i0 = _nth_alnum(buf, s, e, 0)
            i1 = _nth_alnum(buf, s, e, 1)
            i2 = _nth_alnum(buf, s, e, 2)
            if _upper(buf[s + i0]) == 73 and _upper(buf[s + i1]) == 77 and _upper(buf[s + i2]) == 79:   # I M O
                _keep_head(buf, s, e, out, o, 3)
                kept = 3
        if na > kept + 3:
            last = _nth_alnum(buf, s, e, na - 1)
            if _digit(buf[s + last]):
                out[o + last] = buf[s + last]
    elif rule == FIRST:
        if na >= 3 * param:
            _keep_head(buf, s, e, out, o, param)
    elif rule == COUNTRY:
        if na >= param and na >= 2:
            i0 = _nth_alnum(buf, s, e, 0)
            i1 = _nth_alnum(buf, s, e, 1)
            if _alpha(buf[s + i0]) and _alpha(buf[s + i1]):
                _keep_head(buf, s, e, out, o, 2)
    elif rule == UN:
        if na >= 2:
            i0 = _nth_alnum(buf, s, e, 0)
            i1 = _nth_alnum(buf, s, e, 1)
            if _upper(buf[s + i0]) == 85 and _upper(buf[s + i1]) == 78:     # U N
                _keep_head(buf, s, e, out, o, 2)
    elif rule == INITIALS:
        count = 0
        first = 0
        for j in range(n + 1):             # a space after the end closes the last word
            if j == n or _space(buf[s + j]):
                if count >= 2:
                    out[o + first] = buf[s + first]
                count = 0
            elif _alnum(buf[s + j]):
                if count == 0:
                    first = j
                count += 1
    elif rule == EMAIL:
        at = -1
        for j in range(n - 1, -1, -1):
            if buf[s + j] == _AT:
                at = j
                break
        if at <= 0:
            _identifier(buf, s, e, out, o, na)
        else:
            for j in range(n):
                out[o + j] = _ASTERISK if j < at else buf[s + j]
    elif rule == PHONE:
        lead = 0
        while lead < n and _space(buf[s + lead]):
            lead += 1
        skip = 0
        if lead < n and buf[s + lead] == 43:                                   # +
            skip = 1
        elif lead + 1 < n and buf[s + lead] == 48 and buf[s + lead + 1] == 48:  # 00
            skip = 2
        if skip:
            cut = lead + skip
            n_rest = 0
            d0 = -1                         # the first two letters/digits after the prefix
            d1 = -1
            for j in range(cut, n):
                b = buf[s + j]
                if _alnum(b):
                    if n_rest == 0:
                        d0 = b
                    elif n_rest == 1:
                        d1 = b
                    n_rest += 1
            cc = 3
            if d0 == 49 or d0 == 55:                                          # 1, 7
                cc = 1
            elif _digit(d0) and _digit(d1) and _CC2[(d0 - 48) * 10 + d1 - 48]:
                cc = 2
            if n_rest > cc + 3:
                kept = 0
                for j in range(n):
                    b = buf[s + j]
                    if _alnum(b):
                        if j < cut:
                            out[o + j] = b
                        elif kept < cc:
                            out[o + j] = b
                            kept += 1
    elif rule == DIGITS:
        for j in range(n):
            b = buf[s + j]
            if _alpha(b):
                out[o + j] = b
    # never the value itself
    same = True
    for j in range(n):
        if out[o + j] != buf[s + j]:
            same = False
            break
    if same:
        for j in range(n):
            if _alnum(buf[s + j]):
                out[o + j] = _ASTERISK


@kernel
def ascii_slices(buf, starts, ends):
    """1 where every byte of ``buf[starts[i]:ends[i]]`` is below 0x80 (an empty slice is ASCII)."""
    n = starts.shape[0]
    if ends.shape[0] != n:
        raise ValueError("starts and ends differ in length")
    out = np.zeros(n, np.uint8)
    nbuf = buf.shape[0]
    for i in range(n):
        s = starts[i]
        e = ends[i]
        if s < 0 or e < s or e > nbuf:
            raise ValueError("slice outside the buffer")
        ok = 1
        for p in range(s, e):
            if buf[p] >= 0x80:
                ok = 0
                break
        out[i] = ok
    return out


@kernel
def mask_ascii(buf, starts, ends, rule, param, out, out_off, ascii):
    """The mask of every ASCII value (``ascii[i] == 1``) into ``out[out_off[i]:]``; the other rows
    are left alone.  Raises on a slice outside ``buf`` or a mask outside ``out``."""
    n = starts.shape[0]
    if ends.shape[0] != n or rule.shape[0] != n or param.shape[0] != n or ascii.shape[0] != n \
            or out_off.shape[0] != n + 1:
        raise ValueError("starts, ends, rule, param, ascii (n) and out_off (n + 1) differ in length")
    nbuf = buf.shape[0]
    nout = out.shape[0]
    for i in range(n):
        if ascii[i] == 0:
            continue
        s = starts[i]
        e = ends[i]
        o = out_off[i]
        if s < 0 or e < s or e > nbuf:
            raise ValueError("slice outside the buffer")
        if o < 0 or out_off[i + 1] - o != e - s or o + (e - s) > nout:
            raise ValueError("mask outside the output")
        _mask_one(buf, s, e, rule[i], param[i], out, o)
