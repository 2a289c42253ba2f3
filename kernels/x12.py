"""ANSI ASC X12 tokenizer and classifier (numba kernels over whole batches).

Separators come from the ISA segment: the element separator is the byte right after ``ISA``;
the component separator (ISA16) and the segment terminator (the byte after ISA16) are found by
walking the 16 ISA elements.  The ISA must have one of two shapes: fixed width (every element
at its standard width, 106 bytes with the terminator: separators at bytes 3 ... 103, ISA16 at
104, terminator at 105), or fully compressed, as some senders write it (Hamburg Sud: no element
space-padded, a blank element is one space, ISA02/04/06/08 1 .. their width, every other
element at its exact width).  Anything in between (a fixed-width ISA with bytes missing or
added, a padded field next to a trimmed one) is ``bad_service_string``.  A newline (CR or LF)
as terminator (OopFactory files: ISA16 followed by CRLF) makes every CR / LF end a segment.  A terminator followed by CR/LF and indentation is accepted.
A message that starts with ``ST`` (no ISA/GS envelope) uses the defaults ``*`` ``~`` ``>``.

Rejected (whole message, no hits): ISA with fewer than 16 elements in its first 512 bytes, a
line break or terminator inside the ISA, alphanumeric / white-space / colliding separators, a
repetition separator (ISA11 from version 00402) equal to another delimiter, an ISA of neither
shape (``bad_service_string``); a missing final terminator (``unterminated_interchange``).  The
envelope (ISA..IEA, GS..GE, ST..SE: completeness, counts, control numbers) is checked by the
classifier, with the same rules as EDIFACT (kernels/edifact.py, above ``env_role``).

The segment scanner, token table writer and rule engine (``edifact.classify_batch``, fed with
the envelope table of :func:`x12_envelopes`) are shared with :mod:`.edifact`
(X12 has no release character: ``rel = -1``).  Element 0 is the segment tag; elements and
components count from 1.
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel
from .edifact import (E_COMP, E_ELEM, E_END, E_NL, E_POS, E_REL, E_ST, E_TERM, ST_BAD_SERVICE, ST_EMPTY, ST_OK,
                      ST_UNTERMINATED, bad_separator, skip_prefix, tokenize_envelopes, trailing_end)
from .values import is_digit

ISA_SCAN_LIMIT = 512
# standard widths of ISA01 .. ISA16
ISA_WIDTHS = np.array([2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1, 1], np.int64)


@kernel
def x12_setup(buf, s, e):
    """Envelope of one X12 message ``buf[s:e]``.

    Returns ``(status, pos, end, comp, elem, term, nlterm)``.  ``buf[s:e]`` is clipped to the
    buffer, so the ISA walk reads its indices unsigned (no negative-index wraparound code).
    """
    s = max(s, 0)
    e = min(e, buf.shape[0])
    p = skip_prefix(buf, s, e)
    elem = np.int64(42)
    comp = np.int64(62)
    term = np.int64(126)
    nl = False
    if p >= e:
        return ST_EMPTY, p, p, comp, elem, term, nl
    has_isa = e - p >= 3 and buf[p] == 73 and buf[p + 1] == 83 and buf[p + 2] == 65
    if has_isa:
        if e - p < 4:
            return ST_BAD_SERVICE, p, p, comp, elem, term, nl
        elem = np.int64(buf[p + 3])
        if bad_separator(elem):
            return ST_BAD_SERVICE, p, p, comp, elem, term, nl
        limit = min(e, p + ISA_SCAN_LIMIT)
        i = p + 3
        count = 0
        s11 = -1
        s12 = -1
        s13 = -1
        fixed = True        # every element so far at its standard width
        packed = True       # ... or compressed: none space-padded, variable ones 1..width
        prev = i
        while i < limit:
            c = buf[np.uint64(i)]
            if c == 10 or c == 13:
                return ST_BAD_SERVICE, p, p, comp, elem, term, nl
            if c == elem:
                if count >= 1:                          # ISA<count> is buf[prev + 1:i]
                    w = i - prev - 1
                    want = ISA_WIDTHS[count - 1]
                    if w != want:
                        fixed = False
                    var = count == 2 or count == 4 or count == 6 or count == 8
                    if w < 1 or w > want or (not var and w != want):
                        packed = False
                    elif w > 1 and buf[np.uint64(i - 1)] == 32:
                        packed = False
                prev = i
                count += 1
                if count == 11:
                    s11 = i + 1
                elif count == 12:
                    s12 = i + 1
                elif count == 13:
                    s13 = i + 1
                elif count == 16:
                    break
            i += 1
        if count < 16 or i + 2 >= e or not (fixed or packed):
            return ST_BAD_SERVICE, p, p, comp, elem, term, nl
        comp = np.int64(buf[i + 1])
        term = np.int64(buf[i + 2])
        nl = term == 10 or term == 13
        if bad_separator(comp) or comp == elem or term == elem or term == comp:
            return ST_BAD_SERVICE, p, p, comp, elem, term, nl
        if not nl and bad_separator(term):
            return ST_BAD_SERVICE, p, p, comp, elem, term, nl
        # the terminator must not occur inside the ISA
        for k in range(p, i + 1):
            if buf[np.uint64(k)] == term:
                return ST_BAD_SERVICE, p, p, comp, elem, term, nl
        # repetition separator (ISA11) from version 00402 on
        if s12 >= 0 and s13 - s12 == 6 and s12 - s11 == 2:
            ver = 0
            digits = True
            for k in range(5):
                c = buf[s12 + k]
                if not is_digit(c):
                    digits = False
                    break
                ver = ver * 10 + (c - 48)
            rep = np.int64(buf[s11])
            if digits and ver >= 402 and not bad_separator(rep):
                if rep == elem or rep == comp or rep == term:
                    return ST_BAD_SERVICE, p, p, comp, elem, term, nl
    q = trailing_end(buf, p, e)
    if q <= p:
        return ST_UNTERMINATED, p, p, comp, elem, term, nl
    if not nl and buf[q - 1] != term:
        return ST_UNTERMINATED, p, p, comp, elem, term, nl
    return ST_OK, p, q, comp, elem, term, nl


@kernel
def tokenize(buf, offsets, sel, max_seg, max_tok):
    """X12 token table of the selected messages (two passes: count, then fill).

    Same outputs as :func:`kernels.edifact.tokenize`.
    """
    return tokenize_envelopes(buf, x12_envelopes(buf, offsets, sel), sel, max_seg, max_tok)


@kernel
def x12_envelopes(buf, offsets, sel):
    """Envelope table (``edifact.E_*`` columns) of the selected X12 messages (no release char)."""
    m = sel.shape[0]
    env = np.zeros((m, 8), np.int64)
    nb = offsets.shape[0] - 1
    for j in range(m):
        i = sel[j]
        if i < 0 or i >= nb:
            env[j, E_ST] = ST_EMPTY
            continue
        s = max(offsets[i], 0)
        e = min(offsets[i + 1], buf.shape[0])
        st, p, q, comp, elem, term, nl = x12_setup(buf, s, e)
        env[j, E_ST] = st
        env[j, E_POS] = p
        env[j, E_END] = q
        env[j, E_COMP] = comp
        env[j, E_ELEM] = elem
        env[j, E_TERM] = term
        env[j, E_REL] = -1
        env[j, E_NL] = 1 if nl else 0
    return env
