"""Value recognisers and check digits, shared by every format kernel.

All functions take the batch buffer and a half-open byte range ``[s, e)`` and never read
outside it.  Normalised values are written into an output byte array ``out`` at ``o``; the
caller guarantees ``len(out) - o >= 16``.

Return convention for the ``parse_*`` functions: ``-1`` the bytes do not have the shape,
``0`` shape ok but the check digit is wrong (a mistyped value: still sensitive), ``1`` valid.
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel

# ISO 6346 letter values: A=10 and upwards, skipping multiples of 11 (11, 22, 33).
_ISO6346_LETTER = np.array(
    [10, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 34,
     35, 36, 37, 38], dtype=np.int64)

CONTAINER_LEN = 11
IMO_LEN = 7


@kernel(inline="always")
def is_upper(c):
    return 65 <= c <= 90


@kernel(inline="always")
def is_digit(c):
    return 48 <= c <= 57


@kernel(inline="always")
def is_alnum(c):
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122)


@kernel(inline="always")
def is_space(c):
    return c == 32 or c == 9 or c == 10 or c == 13


@kernel
def iso6346_check_digit(v, o):
    """Check digit of the 10 bytes ``v[o:o+10]`` (owner code, category, serial); -1 if bad."""
    total = 0
    weight = 1
    for i in range(10):
        c = v[o + i]
        if i < 4:
            if not is_upper(c):
                return -1
            x = _ISO6346_LETTER[c - 65]
        else:
            if not is_digit(c):
                return -1
            x = c - 48
        total += x * weight
        weight *= 2
    return (total % 11) % 10


@kernel
def imo_check_ok(v, o):
    """IMO number check: digits 1..6 weighted 7..2, sum mod 10 equals digit 7."""
    total = 0
    for i in range(6):
        total += (v[o + i] - 48) * (7 - i)
    return total % 10 == v[o + 6] - 48


@kernel
def trim(buf, s, e):
    """Strip ASCII white space from both ends of ``buf[s:e]``."""
    while s < e and is_space(buf[s]):
        s += 1
    while e > s and is_space(buf[e - 1]):
        e -= 1
    return s, e


@kernel
def parse_container(buf, s, e, out, o):
    """Normalise an ISO 6346 container number in ``buf[s:e]`` into ``out[o:o+11]``.

    Accepted shapes (after trimming): ``ABCU1234565``, ``ABCU 1234565``, ``ABCU-123456-5``,
    ``ABCU 123456 5`` and lower case letters (written upper case).  Category letter U, J or Z.
    """
    s, e = trim(buf, s, e)
    n = 0
    i = s
    while i < e:
        c = buf[i]
        if 97 <= c <= 122:
            c -= 32
        if c == 32 or c == 45:
            # one separator allowed after the owner code and one before the check digit
            if not (n == 4 or n == 10) or i + 1 >= e or buf[i + 1] == 32 or buf[i + 1] == 45:
                return -1
        else:
            if n >= CONTAINER_LEN:
                return -1
            if n < 4:
                if not is_upper(c):
                    return -1
            elif not is_digit(c):
                return -1
            out[o + n] = c
            n += 1
        i += 1
    if n != CONTAINER_LEN:
        return -1
    cat = out[o + 3]
    if cat != 85 and cat != 74 and cat != 90:  # U J Z
        return -1
    cd = iso6346_check_digit(out, o)
    return 1 if cd == out[o + 10] - 48 else 0


@kernel
def parse_imo(buf, s, e, out, o):
    """Normalise an IMO ship number (``9118018``, ``IMO9118018``, ``IMO 9118018``) to 7 digits."""
    s, e = trim(buf, s, e)
    if e - s >= 3 and (buf[s] | 32) == 105 and (buf[s + 1] | 32) == 109 and (buf[s + 2] | 32) == 111:
        s += 3
        while s < e and (buf[s] == 32 or buf[s] == 58 or buf[s] == 46 or buf[s] == 45):
            s += 1
    if e - s != IMO_LEN:
        return -1
    for i in range(IMO_LEN):
        c = buf[s + i]
        if not is_digit(c):
            return -1
        out[o + i] = c
    return 1 if imo_check_ok(out, o) else 0


@kernel
def next_container(buf, pos, end):
    """Next container-number-shaped token in free text ``buf[pos:end]``.

    A token is ``[A-Z]{3}[UJZ]`` + optional single space + 7 digits, bounded by a
    non-alphanumeric byte (or the range ends) on both sides.  Returns ``(start, stop)`` of the
    raw token or ``(-1, -1)``.  Upper case only: free text in lower case is prose.
    """
    i = pos
    while i + CONTAINER_LEN <= end:
        if i > pos and is_alnum(buf[i - 1]):
            i += 1
            continue
        ok = True
        for k in range(4):
            if not is_upper(buf[i + k]):
                ok = False
                break
        if ok:
            cat = buf[i + 3]
            if cat != 85 and cat != 74 and cat != 90:
                ok = False
        if not ok:
            i += 1
            continue
        j = i + 4
        if j < end and buf[j] == 32:
            j += 1
        if j + 7 > end:
            i += 1
            continue
        for k in range(7):
            if not is_digit(buf[j + k]):
                ok = False
                break
        if ok and j + 7 < end and is_alnum(buf[j + 7]):
            ok = False
        if ok:
            return i, j + 7
        i += 1
    return -1, -1


@kernel
def next_imo(buf, pos, end):
    """Next ``IMO`` + optional separators + 7 digits in free text; ``(start, stop)`` or -1s."""
    i = pos
    while i + 10 <= end:
        if (buf[i] | 32) == 105 and (buf[i + 1] | 32) == 109 and (buf[i + 2] | 32) == 111 and (
                i == pos or not is_alnum(buf[i - 1])):
            j = i + 3
            while j < end and j < i + 6 and (buf[j] == 32 or buf[j] == 58 or buf[j] == 46 or buf[j] == 45):
                j += 1
            if j + 7 <= end:
                ok = True
                for k in range(7):
                    if not is_digit(buf[j + k]):
                        ok = False
                        break
                if ok and (j + 7 == end or not is_alnum(buf[j + 7])):
                    return i, j + 7
        i += 1
    return -1, -1
