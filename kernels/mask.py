"""Masks of many values in one call: the per-class rules of flowaudit/protect.py over the batch's
value buffer, with the masked strings laid end to end (an Arrow string array's buffers).

``mask_values(buf, starts, ends, rule, param)`` -> ``(out, off, todo)``: the mask of value ``i``
is ``out[off[i]:off[i + 1]]`` (UTF-8); ``todo[i] == 1`` marks a value left to the Python rule
(empty in ``out``).

What the kernel does is what ``mask()`` does in Python, character by character:

* the value is decoded as ``bytes.decode("utf-8", errors="replace")`` decodes it: a valid
  sequence is one character; an invalid one becomes U+FFFD over its maximal valid prefix
  ("maximal subpart", Unicode chapter 3; CPython's decoder), a truncated one at the end too;
* characters are classified by tables built from Python's own ``str.isalnum``, ``isalpha``,
  ``isdigit`` and ``isspace`` for U+0000..U+00FF, so the kernel agrees with Python on every
  Latin-1 letter, digit (``²³¹`` are digits, ``¼½¾`` alphanumeric but not digits) and space
  (``\\x1c``-``\\x1f``, ``\\x85``, ``\\xa0``); U+FFFD is none of them;
* a value with any other character (U+0100 and above, e.g. ``Ł`` or CJK) is left to Python
  (``todo``), so no Unicode table beyond Latin-1 is needed here;
* the ``IMO`` / ``UN`` prefixes compare ASCII letters case-insensitively: no other character of
  U+0080..U+00FF has an upper case of the same length made of ASCII letters (``ß`` -> ``SS`` is
  longer), so ``"".join(head).upper() == "IMO"`` holds exactly when this comparison does.

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
Every slice is checked against the buffer; the output holds at most 3 bytes per input byte
(an invalid byte becomes the 3-byte U+FFFD), which the kernel allocates up front.
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

# character classes of U+0000..U+00FF, from Python itself
ALNUM, ALPHA, DIGIT, SPACE = 1, 2, 4, 8
_PROP = np.array([(ALNUM if chr(c).isalnum() else 0) | (ALPHA if chr(c).isalpha() else 0)
                  | (DIGIT if chr(c).isdigit() else 0) | (SPACE if chr(c).isspace() else 0) for c in range(256)],
                 np.uint8)
REPLACEMENT = 0xFFFD
assert not ("\ufffd".isalnum() or "\ufffd".isspace())
_ASTERISK = 42


@kernel
def _prop(c):
    return _PROP[c] if c < 256 else np.uint8(0)


@kernel
def _cont(b):
    return 0x80 <= b <= 0xBF


@kernel
def _decode(buf, s, e, cp):
    """The characters of ``buf[s:e]`` into ``cp`` as ``decode("utf-8", errors="replace")`` gives
    them; the count, or -1 when one is outside U+0000..U+00FF and not U+FFFD."""
    m = 0
    p = s
    while p < e:
        b0 = np.int64(buf[p])
        c = REPLACEMENT
        step = 1
        if b0 < 0x80:
            c = b0
        elif 0xC2 <= b0 <= 0xDF:
            if p + 1 < e and _cont(buf[p + 1]):
                c = ((b0 & 0x1F) << 6) | (np.int64(buf[p + 1]) & 0x3F)
                step = 2
        elif 0xE0 <= b0 <= 0xEF:
            lo = 0xA0 if b0 == 0xE0 else 0x80
            hi = 0x9F if b0 == 0xED else 0xBF
            if p + 1 < e and lo <= buf[p + 1] <= hi:
                if p + 2 < e and _cont(buf[p + 2]):
                    c = ((b0 & 0x0F) << 12) | ((np.int64(buf[p + 1]) & 0x3F) << 6) | (np.int64(buf[p + 2]) & 0x3F)
                    step = 3
                    if c != REPLACEMENT:        # a valid U+0800..U+FFFF other than U+FFFD itself
                        return -1
                else:
                    step = 2
        elif 0xF0 <= b0 <= 0xF4:
            lo = 0x90 if b0 == 0xF0 else 0x80
            hi = 0x8F if b0 == 0xF4 else 0xBF
            if p + 1 < e and lo <= buf[p + 1] <= hi:
                if p + 2 < e and _cont(buf[p + 2]):
                    if p + 3 < e and _cont(buf[p + 3]):
                        return -1               # a valid U+10000..U+10FFFF
                    step = 3
                else:
                    step = 2
        if c >= 0x100 and c != REPLACEMENT:
            return -1
        cp[m] = c
        m += 1
        p += step
    return m


@kernel
def _nth_alnum(cp, m, k):
    """Index of the k-th (0-based) letter/digit of ``cp[:m]``; -1: fewer."""
    seen = 0
    for j in range(m):
        if _prop(cp[j]) & ALNUM:
            if seen == k:
                return j
            seen += 1
    return -1


@kernel
def _keep_head(cp, m, o, k):
    """Restore the first ``k`` letters/digits."""
    kept = 0
    j = 0
    while kept < k and j < m:
        if _prop(cp[j]) & ALNUM:
            o[j] = cp[j]
            kept += 1
        j += 1


@kernel
def _identifier(cp, m, o, na):
    """Keep the first min(4, na // 3) letters/digits while they are letters (in ASCII text that
    is what ``(?:[^A-Za-z0-9]*[A-Za-z]){0,k}`` keeps: the separators between them are kept anyway)."""
    k = min(4, na // 3)
    kept = 0
    j = 0
    while kept < k and j < m:
        pr = _prop(cp[j])
        if pr & ALNUM:
            if not (pr & ALPHA):
                break
            o[j] = cp[j]
            kept += 1
        j += 1


@kernel
def _upper_is(c, letter):
    """``c`` is the ASCII ``letter`` (upper case) in either case."""
    return c == letter or c == letter + 32


@kernel
def _rule(cp, m, rule, param, o):
    """The mask of the characters ``cp[:m]`` into ``o[:m]``."""
    na = 0
    for j in range(m):                      # starred, and the count of letters and digits
        if _prop(cp[j]) & ALNUM:
            o[j] = _ASTERISK
            na += 1
        else:
            o[j] = cp[j]
    if rule == IDENTIFIER:
        _identifier(cp, m, o, na)
    elif rule == CONTAINER:
        ok = na == 11
        if ok:
            seen = 0
            for j in range(m):
                pr = _prop(cp[j])
                if pr & ALNUM:
                    if (seen < 4 and not (pr & ALPHA)) or (seen >= 4 and not (pr & DIGIT)):
                        ok = False
                        break
                    seen += 1
        if ok:
            _keep_head(cp, m, o, 4)
            last = _nth_alnum(cp, m, 10)
            o[last] = cp[last]
        else:
            _identifier(cp, m, o, na)
    elif rule == IMO:
        kept = 0
        if na >= 3:
            i0 = _nth_alnum(cp, m, 0)
            i1 = _nth_alnum(cp, m, 1)
            i2 = _nth_alnum(cp, m, 2)
            if _upper_is(cp[i0], 73) and _upper_is(cp[i1], 77) and _upper_is(cp[i2], 79):     # I M O
                _keep_head(cp, m, o, 3)
                kept = 3
        if na > kept + 3:
            last = _nth_alnum(cp, m, na - 1)
            if _prop(cp[last]) & DIGIT:
                o[last] = cp[last]
    elif rule == FIRST:
        if na >= 3 * param:
            _keep_head(cp, m, o, param)
    elif rule == COUNTRY:
        if na >= param and na >= 2:
            i0 = _nth_alnum(cp, m, 0)
            i1 = _nth_alnum(cp, m, 1)
            if (_prop(cp[i0]) & ALPHA) and (_prop(cp[i1]) & ALPHA):
                _keep_head(cp, m, o, 2)
    elif rule == UN:
        if na >= 2:
            i0 = _nth_alnum(cp, m, 0)
            i1 = _nth_alnum(cp, m, 1)
            if _upper_is(cp[i0], 85) and _upper_is(cp[i1], 78):                                # U N
                _keep_head(cp, m, o, 2)
    elif rule == INITIALS:
        count = 0
        first = 0
        for j in range(m + 1):             # a space after the end closes the last word
            if j == m or (_prop(cp[j]) & SPACE):
                if count >= 2:
                    o[first] = cp[first]
                count = 0
            elif _prop(cp[j]) & ALNUM:
                if count == 0:
                    first = j
                count += 1
    elif rule == EMAIL:
        at = -1
        for j in range(m - 1, -1, -1):
            if cp[j] == 64:                 # @
                at = j
                break
        if at <= 0:
            _identifier(cp, m, o, na)
        else:
            for j in range(m):
                o[j] = _ASTERISK if j < at else cp[j]
    elif rule == PHONE:
        lead = 0
        while lead < m and (_prop(cp[lead]) & SPACE):
            lead += 1
        skip = 0
        if lead < m and cp[lead] == 43:                                   # +
            skip = 1
        elif lead + 1 < m and cp[lead] == 48 and cp[lead + 1] == 48:      # 00
            skip = 2
        if skip:
            cut = lead + skip
            n_rest = 0
            d0 = -1                         # the first two letters/digits after the prefix
            d1 = -1
            for j in range(cut, m):
                if _prop(cp[j]) & ALNUM:
                    if n_rest == 0:
                        d0 = cp[j]
                    elif n_rest == 1:
                        d1 = cp[j]
                    n_rest += 1
            cc = 3
            if d0 == 49 or d0 == 55:                                      # 1, 7
                cc = 1
            elif 48 <= d0 <= 57 and 48 <= d1 <= 57 and _CC2[(d0 - 48) * 10 + d1 - 48]:
                cc = 2
            if n_rest > cc + 3:
                kept = 0
                for j in range(m):
                    if _prop(cp[j]) & ALNUM:
                        if j < cut:
                            o[j] = cp[j]
                        elif kept < cc:
                            o[j] = cp[j]
                            kept += 1
    elif rule == DIGITS:
        for j in range(m):
            o[j] = _ASTERISK if _prop(cp[j]) & DIGIT else cp[j]
    # never the value itself
    same = True
    for j in range(m):
        if o[j] != cp[j]:
            same = False
            break
    if same:
        for j in range(m):
            if _prop(cp[j]) & ALNUM:
                o[j] = _ASTERISK


@kernel
def _encode(o, m, out, pos):
    """``o[:m]`` (U+0000..U+00FF and U+FFFD) as UTF-8 at ``out[pos:]``; the new position."""
    for j in range(m):
        c = o[j]
        if c < 0x80:
            out[pos] = c
            pos += 1
        elif c < 0x800:
            out[pos] = 0xC0 | (c >> 6)
            out[pos + 1] = 0x80 | (c & 0x3F)
            pos += 2
        else:
            out[pos] = 0xE0 | (c >> 12)
            out[pos + 1] = 0x80 | ((c >> 6) & 0x3F)
            out[pos + 2] = 0x80 | (c & 0x3F)
            pos += 3
    return pos


@kernel
def mask_values(buf, starts, ends, rule, param):
    """The masks of ``buf[starts[i]:ends[i]]`` under ``rule[i]`` / ``param[i]``: ``(out, off,
    todo)`` (see the module).  Raises on a slice outside ``buf``."""
    n = starts.shape[0]
    if ends.shape[0] != n or rule.shape[0] != n or param.shape[0] != n:
        raise ValueError("starts, ends, rule and param differ in length")
    nbuf = buf.shape[0]
    total = 0
    longest = 0
    for i in range(n):
        s = starts[i]
        e = ends[i]
        if s < 0 or e < s or e > nbuf:
            raise ValueError("slice outside the buffer")
        total += e - s
        longest = max(longest, e - s)
    out = np.empty(3 * total, np.uint8)     # a character takes at most 3 bytes, and 1 byte at least
    off = np.zeros(n + 1, np.int64)
    todo = np.zeros(n, np.uint8)
    cp = np.empty(longest, np.int64)
    o = np.empty(longest, np.int64)
    pos = 0
    for i in range(n):
        m = _decode(buf, starts[i], ends[i], cp)
        if pos + 3 * m > out.shape[0]:
            raise ValueError("mask outside the output")
        if m < 0:
            todo[i] = 1
        else:
            _rule(cp, m, rule[i], param[i], o)
            pos = _encode(o, m, out, pos)
        off[i + 1] = pos
    return out[:pos], off, todo
