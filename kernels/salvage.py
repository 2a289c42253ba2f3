"""Salvage scan: shape recognisers with context rules over raw bytes (no structure needed).

Used on messages that end in quarantine (and as the value-shape pass of flat files), so that
"malformed" never means "unexamined".  Every range ``buf[starts[r]:ends[r]]`` is scanned for

* shapes that carry their own proof: ISO 6346 container numbers with a *valid* check digit,
  e-mail addresses, LEIs (mod 97-10), China USCIs (mod-31), ``UN`` + 4 digits;
* labelled values: a label from the ``labels`` table (``B/L``, ``BOOKING``, ``TEL``, ``EORI``,
  ``IMO``, ``RFF+BM`` ...; spaces, ``_`` and ``-`` inside the label ignored, an optional
  ``NO``/``NR``/``NUMBER`` suffix) followed by separators and a value of the label's kind.
  IMO numbers must pass their check digit; phone numbers that have a date's shape are refused.

Output rows of ``H`` (int64): range index, kind, label index (-1: shape), valid (1 / 0 / -1),
raw start, raw end, value offset, value length; the normalised value is in ``vbuf``.  Returns
the number of rows, or -1 when ``H`` or ``vbuf`` is full (the caller grows them and reruns).
Pure numba: every index is checked against the range end before it is read.
"""
from __future__ import annotations

from ._jit import kernel
from .values import (VALUE_ROOM, is_alnum, is_digit, next_container, next_email, next_lei, next_usci, parse_container,
                     parse_email, parse_eori, parse_imo, parse_lei, parse_phone, parse_un_number, parse_usci)

K_CONT, K_IMO, K_EMAIL, K_LEI, K_USCI, K_UN, K_PHONE, K_EORI, K_REF = range(9)
KIND_NAMES = ("container", "imo", "email", "lei", "usci", "un_number", "phone", "eori", "reference")
H_COLS = 8
MAX_REF = 20
MIN_REF = 6

_next_email = next_email
_next_lei = next_lei
_next_usci = next_usci


@kernel
def _is_letter(c):
    return (65 <= c <= 90) or (97 <= c <= 122)


@kernel
def _sep(c):
    # separators between a label and its value: blank : # . = " ' > + tab - ( ) ,
    return (c == 32 or c == 58 or c == 35 or c == 46 or c == 61 or c == 34 or c == 39 or c == 62 or c == 43
            or c == 9 or c == 45 or c == 40 or c == 41 or c == 44)


@kernel
def match_label(buf, i, e, lab, lo, hi):
    """End of the label ``lab[lo:hi]`` matched at ``buf[i:]`` (case-insensitive; text blanks,
    ``_`` and ``-`` inside the label skipped), or -1."""
    t = i
    k = lo
    while k < hi:
        if t >= e:
            return -1
        c = buf[t]
        if 97 <= c <= 122:
            c -= 32
        if c == lab[k]:
            t += 1
            k += 1
        elif k > lo and (c == 32 or c == 95 or c == 45):
            t += 1
        else:
            return -1
    return t


@kernel
def skip_suffix(buf, t, e):
    """After a label: skip separators and one ``NO``/``NR``/``NBR``/``NUM``/``NUMBER``/``ID``/``REF``
    word (glued or not); returns the position of the value (or ``t`` when nothing to skip)."""
    p = t
    n = 0
    while p < e and n < 4 and (buf[p] == 32 or buf[p] == 95 or buf[p] == 45 or buf[p] == 46):
        p += 1
        n += 1
    q = p
    while q < e and q < p + 7 and _is_letter(buf[q]):
        q += 1
    if q < e and _is_letter(buf[q]):
        return t
    w = q - p
    if w == 0:
        return t
    a = buf[p] | 32
    b = buf[p + 1] | 32 if w >= 2 else 0
    if w == 2 and ((a == 110 and (b == 111 or b == 114)) or (a == 105 and b == 100)):   # no nr id
        return q
    if w == 3 and a == 110 and ((b == 98 and (buf[p + 2] | 32) == 114) or (b == 117 and (buf[p + 2] | 32) == 109)):
        return q                                                                          # nbr num
    if w == 3 and a == 114 and b == 101 and (buf[p + 2] | 32) == 102:                     # ref
        return q
    if w == 6 and a == 110 and b == 117 and (buf[p + 2] | 32) == 109 and (buf[p + 3] | 32) == 98 and (
            buf[p + 4] | 32) == 101 and (buf[p + 5] | 32) == 114:                          # number
        return q
    return t


@kernel
def date_shaped(buf, a, b):
    """True when ``buf[a:b]`` reads as a date: dddd-dd-dd / dd-dd-dddd (any of ``-./``) or 8 digits
    YYYYMMDD / DDMMYYYY with a plausible month and day."""
    n = b - a
    if n == 10:
        c4, c7, c2, c5 = buf[a + 4], buf[a + 7], buf[a + 2], buf[a + 5]
        if (c4 == 45 or c4 == 46 or c4 == 47) and c4 == c7:
            return True
        if (c2 == 45 or c2 == 46 or c2 == 47) and c2 == c5:
            return True
    if n == 8:
        for k in range(8):
            if not is_digit(buf[a + k]):
                return False
        y1 = (buf[a] - 48) * 10 + buf[a + 1] - 48
        m1 = (buf[a + 4] - 48) * 10 + buf[a + 5] - 48
        d1 = (buf[a + 6] - 48) * 10 + buf[a + 7] - 48
        if (y1 == 19 or y1 == 20) and 1 <= m1 <= 12 and 1 <= d1 <= 31:
            return True
        d2 = (buf[a] - 48) * 10 + buf[a + 1] - 48
        m2 = (buf[a + 2] - 48) * 10 + buf[a + 3] - 48
        y2 = (buf[a + 4] - 48) * 10 + buf[a + 5] - 48
        if (y2 == 19 or y2 == 20) and 1 <= m2 <= 12 and 1 <= d2 <= 31:
            return True
    return False


@kernel
def labelled_value(kind, buf, v, e, out, o):
    """The value of ``kind`` starting at ``v`` (after a label): ``(valid, stop, n)``, valid -2 = none."""
    if v >= e:
        return -2, v, 0
    if kind == K_IMO or kind == K_UN:
        want = 7 if kind == K_IMO else 4
        if v + want > e:
            return -2, v, 0
        for k in range(want):
            if not is_digit(buf[v + k]):
                return -2, v, 0
        if v + want < e and is_alnum(buf[v + want]):
            return -2, v, 0
        if kind == K_IMO:
            st = parse_imo(buf, v, v + want, out, o)
            return (1, v + want, 7) if st == 1 else (-2, v, 0)
        st, n = parse_un_number(buf, v, v + want, out, o)
        return (st, v + want, n) if st == 1 else (-2, v, 0)
    if kind == K_PHONE:
        b = v
        if buf[b] == 43:
            b += 1
        while b < e and b < v + 24 and (is_digit(buf[b]) or buf[b] == 32 or buf[b] == 45 or buf[b] == 46
                                        or buf[b] == 40 or buf[b] == 41):
            b += 1
        while b > v and not is_digit(buf[b - 1]):
            b -= 1
        if b < e and is_alnum(buf[b]):
            return -2, v, 0
        if b <= v or date_shaped(buf, v, b):
            return -2, v, 0
        st, n = parse_phone(buf, v, b, out, o)
        return (1, b, n) if st == 1 else (-2, v, 0)
    if kind == K_EMAIL:
        # an address whose ``@`` became a blank ("ROSHAN FUJITOGRP.COM"); real ones: the shape finder
        b = v
        while b < e and b < v + 64 and (is_alnum(buf[b]) or buf[b] == 46 or buf[b] == 95 or buf[b] == 45):
            b += 1
        if b == v or b >= e or buf[b] != 32 or b - v > 63:
            return -2, v, 0
        d = b + 1
        f = d
        dot = -1
        while f < e and f < d + 64 and (is_alnum(buf[f]) or buf[f] == 46 or buf[f] == 45):
            if buf[f] == 46:
                dot = f
            f += 1
        while f > d and buf[f - 1] == 46:
            f -= 1
        if dot < 0 or dot >= f - 2 or dot == d or (f < e and buf[f] == 64) or b - v + 1 + f - d > VALUE_ROOM:
            return -2, v, 0
        for k in range(dot + 1, f):
            if not _is_letter(buf[k]):
                return -2, v, 0
        n = 0
        for k in range(v, b):
            out[o + n] = buf[k] | 32 if _is_letter(buf[k]) else buf[k]
            n += 1
        out[o + n] = 64
        n += 1
        for k in range(d, f):
            out[o + n] = buf[k] | 32 if _is_letter(buf[k]) else buf[k]
            n += 1
        return 0, f, n
    # EORI and references: one alphanumeric token
    b = v
    while b < e and b < v + MAX_REF + 1 and is_alnum(buf[b]):
        b += 1
    if b < e and is_alnum(buf[b]):
        return -2, v, 0
    if kind == K_EORI:
        st, n = parse_eori(buf, v, b, out, o)
        return (1, b, n) if st == 1 else (-2, v, 0)
    n = b - v
    if n < MIN_REF or n > MAX_REF:
        return -2, v, 0
    digits = 0
    for k in range(n):
        c = buf[v + k]
        if is_digit(c):
            digits += 1
        out[o + k] = c - 32 if 97 <= c <= 122 else c
    if digits == 0:
        return -2, v, 0
    return -1, b, n


@kernel
def _room(H, nh, vbuf, vcur):
    return nh < H.shape[0] and vcur + VALUE_ROOM <= vbuf.shape[0]


@kernel
def _emit(H, nh, r, kind, lab, valid, a, b, vo, n):
    H[nh, 0] = r
    H[nh, 1] = kind
    H[nh, 2] = lab
    H[nh, 3] = valid
    H[nh, 4] = a
    H[nh, 5] = b
    H[nh, 6] = vo
    H[nh, 7] = n
    return nh + 1


@kernel
def salvage_scan(buf, starts, ends, labels, lab_off, lab_kind, H, vbuf):
    """Scan every range; see the module docstring.  ``labels``: upper-case label bytes,
    label ``j`` is ``labels[lab_off[j]:lab_off[j+1]]`` of value kind ``lab_kind[j]``."""
    nh = 0
    vcur = 0
    nlab = lab_kind.shape[0]
    if lab_off.shape[0] != nlab + 1 or H.shape[1] < H_COLS or starts.shape[0] != ends.shape[0]:
        return -1
    for r in range(starts.shape[0]):
        s = starts[r]
        e = ends[r]
        if s < 0 or e > buf.shape[0] or e <= s:
            continue
        for kind in (K_CONT, K_EMAIL, K_LEI, K_USCI):
            p = s
            while p < e:
                if kind == K_CONT:
                    a, b = next_container(buf, p, e)
                elif kind == K_EMAIL:
                    a, b = _next_email(buf, p, e)
                elif kind == K_LEI:
                    a, b = _next_lei(buf, p, e)
                else:
                    a, b = _next_usci(buf, p, e)
                if a < 0 or b <= a or a < p or b > e:
                    break
                if not _room(H, nh, vbuf, vcur):
                    return -1
                if kind == K_CONT:
                    v = parse_container(buf, a, b, vbuf, vcur)
                    n = 11
                    if v != 1:
                        v = -2
                elif kind == K_EMAIL:
                    v, n = parse_email(buf, a, b, vbuf, vcur)
                elif kind == K_LEI:
                    v, n = parse_lei(buf, a, b, vbuf, vcur)
                else:
                    v, n = parse_usci(buf, a, b, vbuf, vcur)
                if v >= 0 and n > 0:
                    nh = _emit(H, nh, r, kind, -1, v, a, b, vcur, n)
                    vcur += n
                p = b
        # labelled values: at each word start, the labels of the table
        i = s
        while i < e:
            c = buf[i]
            if not _is_letter(c) or (i > s and is_alnum(buf[i - 1])):
                i += 1
                continue
            if 97 <= c <= 122:
                c -= 32
            nxt = i + 1
            for j in range(nlab):
                lo = lab_off[j]
                hi = lab_off[j + 1]
                if hi <= lo or labels[lo] != c:
                    continue
                t = match_label(buf, i, e, labels, lo, hi)
                if t < 0:
                    continue
                kind = lab_kind[j]
                t = skip_suffix(buf, t, e)
                # the label must end a word (unless it ends in punctuation, as ``COM+`` does)
                if t < e and _is_letter(labels[hi - 1]) and (
                        _is_letter(buf[t]) if (kind == K_IMO or kind == K_UN) else is_alnum(buf[t])):
                    continue
                v = t
                k = 0
                while v < e and k < 6 and _sep(buf[v]) and not (kind == K_PHONE and buf[v] == 43 and v + 1 < e
                                                                 and is_digit(buf[v + 1])):
                    v += 1
                    k += 1
                if not _room(H, nh, vbuf, vcur):
                    return -1
                valid, b, n = labelled_value(kind, buf, v, e, vbuf, vcur)
                if valid == -2 or n <= 0:
                    continue
                nh = _emit(H, nh, r, kind, j, valid, v, b, vcur, n)
                vcur += n
                nxt = b
                break
            i = nxt if nxt > i else i + 1
    return nh
