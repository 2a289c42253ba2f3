"""UN/EDIFACT tokenizer and rule-driven classifier (numba kernels over whole batches).

This module also holds the format-neutral machinery shared with :mod:`.x12` (both formats are
"segment / element / component" text with single-byte separators): the token-table tokenizer
(:func:`scan_segment`, :func:`tokenize_message`; exact, not tuned for speed) and the fused
classifier :func:`classify_batch` (its own inline segment scan, candidate rules looked up by tag
and element-1 qualifier, the rule engine inline, outputs in one int64 hit table and one value
buffer; the work runs in :func:`classify_run`, compiled without reference counting).  Each format only
supplies its own envelope reader (``*_setup`` / ``*_envelopes``) that finds the separators and
checks the interchange is terminated.

Charset (UNB S001, first segment): UNOA..UNOK and UNOX are read as 8-bit text (a value that is
not valid UTF-8 is Latin-1 and transcoded: UNOC); UNOW / UNOY must be valid UTF-8 (else
``invalid_utf8``); any other syntax identifier (UNOZ ...) is ``bad_charset``.

Envelope integrity (both formats, in :func:`classify_batch`; the rules are above
:func:`env_role`): an incomplete envelope (no UNZ / IEA, a headless fragment, the tail of a split
interchange, data after the last trailer) refuses the message; count / reference mismatches
(UNT 0074 / 0062, UNE, UNZ; SE, GE, IEA), nesting faults and bare messages only set flags
(``mout[:, M_FLAGS]``).  The token table kernels (:func:`tokenize`) check syntax only.

Message layout (EDIFACT, ISO 9735):

* optional UTF-8 BOM, then optional white space / NUL bytes: skipped (documented treatment,
  reliability.md item 23);
* optional ``UNA`` service string advice: exactly 6 characters after ``UNA``: component
  separator, element separator, decimal mark, release character, reserved, segment terminator.
  Shorter than 9 bytes, duplicate or alphanumeric/white-space separators -> ``bad_service_string``.
  A release character of space means "no release character";
* without UNA: defaults ``:+.? '``; an interchange whose ``UNB`` tag is followed by byte 0x1D uses
  the control-character set of syntax level B (UNOB..UNOF / UNOY without UNA: IS1 0x1F component,
  IS3 0x1D element, IS4 0x1C segment, no release character).  The separators actually present
  decide: real UNOB/UNOC senders that use ``+`` (corpus CUSCAR/IFTSTA) keep the defaults;
* CR / LF / blanks between segments are ignored (also blank lines, one-line interchanges);
* the last significant byte must be an unreleased segment terminator, else the whole message is
  rejected: ``release_at_end`` (odd run of release characters at the end) or
  ``unterminated_interchange``;
* release character parity: ``X??'`` ends the segment, ``X?'`` does not.

Token numbering: element 0 is the segment tag; elements count from 1, components from 1; every
component (empty ones too) is one token with its raw byte range (release characters included).
The UNA service string is not a segment (not tokenized, not counted).

Every index read from input is compared against the message end before use; every loop advances
by at least one byte per iteration.
"""
from __future__ import annotations

import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from ._jit import kernel
from .words import load_word, sep_mask, sep_pattern
from .values import (copy_text, is_alnum, is_digit, is_upper, next_email, parse_container, parse_email, parse_eori,
                     parse_imo, parse_lei, parse_mmsi, parse_phone, parse_un_number, parse_usci, trim, utf8_ok)
from .values import iban_ok, lei_mod97, usci_token_ok

# status codes (flowaudit.decode.REASONS)
ST_OK = 0
ST_EMPTY = 1
ST_UNTERMINATED = 6
ST_BAD_SERVICE = 7
ST_RELEASE_AT_END = 8
ST_SEGMENT_TOO_LONG = 14
ST_TOO_MANY_COMPONENTS = 15
ST_BAD_ENVELOPE = 17
ST_HEADLESS = 18

# default limits (the shells pass these; tests may pass smaller ones)
MAX_SEGMENT_BYTES = 65536
MAX_SEGMENT_TOKENS = 4096

# status codes also used by the classifier
ST_INVALID_UTF8 = 5
ST_BAD_CHARSET = 13

# rule table columns (int64 matrix, one row per rule, rows sorted by tag; see
# flowaudit/decode/edifact.py).  Qualifier values (at most 8 bytes) are packed into one int64
# each (byte k at bits 8k..8k+7), so a qualifier test is integer compares.
R_TAG0, R_TAG1, R_TAG2, R_TAGLEN = 0, 1, 2, 3
MAX_QUALS = 2
MAX_QVALS = 16
MAX_QLEN = 8
R_Q = 4            # qualifier q (0, 1) at R_Q + q * Q_STRIDE: element, component, negate, count, values x 8
Q_STRIDE = 4 + MAX_QVALS
R_KIND = R_Q + MAX_QUALS * Q_STRIDE   # 28
R_CLASS, R_LOC, R_CONF, R_MODE, R_SHORT = R_KIND + 1, R_KIND + 2, R_KIND + 3, R_KIND + 4, R_KIND + 5
R_MINLEN, R_MAXLEN, R_ROOM, R_FTMASK = R_KIND + 6, R_KIND + 7, R_KIND + 8, R_KIND + 9
R_FTCLS = R_KIND + 10   # class codes of the free-text kinds (container, imo, lei, usci, email)
N_FT = 5
R_NPARTS = R_FTCLS + N_FT
R_PARTS = R_NPARTS + 1  # (element, component) x MAX_PARTS
MAX_PARTS = 5
R_QRES = R_PARTS + 2 * MAX_PARTS   # bit q: qualifier q is decided by the dispatch (element 1, component 1)
R_NCOLS = R_QRES + 1

# value kinds (what the rule does with the value at its position)
KIND_CONTAINER = 1   # ISO 6346 (valid from the check digit)
KIND_IMO = 2         # IMO number (valid from the check digit)
KIND_TEXT = 5        # names, addresses, descriptions: as is (UTF-8), trimmed, cut at max_len
KIND_LEI = 6
KIND_USCI = 7
KIND_EORI = 8
KIND_EMAIL = 9
KIND_PHONE = 10
KIND_UN = 11
KIND_MMSI = 12
KIND_FREE_TEXT = 13  # scan the text for the shaped classes of R_FTMASK
KIND_CODE = 14       # reference / identifier: printable, letters digits and " -/._", min..max length
KIND_LOCODE = 15     # UN/LOCODE: 2 letters + 3 letters or digits 2-9
KIND_DIGITS = 16     # digits (dots and blanks dropped), min..max length: stowage, HS code, DUNS
KIND_NUMBER = 17     # decimal number (weights, amounts): optional sign, one '.' or ','

FT_CONTAINER, FT_IMO, FT_LEI, FT_USCI, FT_EMAIL = 1, 2, 4, 8, 16

MODE_SHAPE = 0   # emit when the value has the shape (valid 1 / 0 from the check)
MODE_CHECK = 1   # emit only when the check holds (weak / guessed positions)

# special segments (tag table column 2): message type / charset logic and the envelope
SP_NONE, SP_UNB, SP_UNH, SP_ST = 0, 1, 2, 3
SP_UNZ, SP_UNG, SP_UNE, SP_UNT = 4, 5, 6, 7
SP_ISA, SP_IEA, SP_GS, SP_GE, SP_SE = 8, 9, 10, 11, 12

# envelope integrity flags (``mout[j, M_FLAGS]``; flowaudit/decode/edifact.py names them per
# format, see flowaudit.decode.FLAGS).  Level 0 interchange (UNB/UNZ, ISA/IEA), 1 group
# (UNG/UNE, GS/GE), 2 message (UNH/UNT, ST/SE); per level a count and a reference bit.
F_MSG_COUNT, F_MSG_REF, F_GRP_COUNT, F_GRP_REF, F_ICH_COUNT, F_ICH_REF = 1, 2, 4, 8, 16, 32
F_NESTING = 64          # a header / trailer out of place inside a complete interchange
F_NO_INTERCHANGE = 128  # bare message(s) or group(s): no UNB / ISA in the value
TAG_BASE = 37
TAGTAB_SIZE = TAG_BASE * TAG_BASE * TAG_BASE

# tag table columns: rule range of the tag, special segment, the default candidate list
# (clist[l0:l0+ln]) and the qualifier keys (dkey[k0:k0+kn] rows (packed element-1 qualifier,
# start, n): that qualifier's candidate list clist[start:start+n]); flowaudit/decode/edifact.py
# ``_dispatch`` builds them
T_R0, T_RN, T_SP, T_L0, T_LN, T_K0, T_KN = 0, 1, 2, 3, 4, 5, 6
T_NCOLS = 7

# hit table rows (int64 matrix H_NCOLS x capacity, one column per hit: each field is contiguous,
# so the shell takes it with one copy)
H_MSG, H_CLASS, H_LOC, H_VALID, H_CONF, H_START, H_END, H_VEND = 0, 1, 2, 3, 4, 5, 6, 7
H_SUB = 8          # message ordinal in the interchange (UNH / ST count, 1-based; 0 = envelope)
H_NCOLS = 9
MAX_SUBMSG = 4096  # UNH / ST positions remembered per interchange (later ones count as the last)
# per-message output columns: status, segments, message type range, envelope flags (F_*),
# interchange key (hash of sender and control reference of the first UNB / ISA; 0 = none)
M_STATUS, M_NSEG, M_TS, M_TE, M_FLAGS, M_IKEY = 0, 1, 2, 3, 4, 5
M_NCOLS = 6
# envelope table columns (edifact_envelopes / x12_envelopes)
E_ST, E_POS, E_END, E_COMP, E_ELEM, E_TERM, E_REL, E_NL = 0, 1, 2, 3, 4, 5, 6, 7

# counters in ``ctr`` (int64[4]): hits needed, value bytes needed, hits written, value bytes written
C_HITS, C_VALS, C_HW, C_VW = 0, 1, 2, 3
VAL_ROOM = 64      # value bytes reserved per hit (values.VALUE_ROOM); text rules reserve more
SCRATCH = 1024     # longest structural value assembled (longer: no hit)


@kernel(inline="always")
def is_ws(c):
    return c == 32 or c == 9 or c == 10 or c == 13


@kernel
def skip_prefix(buf, s, e):
    """Skip a UTF-8 BOM, then white space and NUL bytes (reliability.md item 23)."""
    p = s
    if e - p >= 3 and buf[p] == 0xEF and buf[p + 1] == 0xBB and buf[p + 2] == 0xBF:
        p += 3
    while p < e and (is_ws(buf[p]) or buf[p] == 0):
        p += 1
    return p


@kernel
def trailing_end(buf, p, e):
    """End of ``buf[p:e]`` without trailing white space / NUL bytes."""
    q = e
    while q > p and (is_ws(buf[q - 1]) or buf[q - 1] == 0):
        q -= 1
    return q


@kernel
def bad_separator(c):
    return is_alnum(c) or c == 32 or c == 9 or c == 10 or c == 13 or c == 0


@kernel
def edifact_setup(buf, s, e):
    """Envelope of one EDIFACT message ``buf[s:e]``.

    Returns ``(status, pos, end, comp, elem, term, rel)``: segments are scanned in
    ``buf[pos:end]``; ``rel`` is -1 when there is no release character.
    """
    p = skip_prefix(buf, s, e)
    comp = 58
    elem = 43
    term = 39
    rel = 63
    if p >= e:
        return ST_EMPTY, p, p, comp, elem, term, rel
    if e - p >= 3 and buf[p] == 85 and buf[p + 1] == 78 and buf[p + 2] == 65:  # UNA
        if e - p < 9:
            return ST_BAD_SERVICE, p, p, comp, elem, term, rel
        comp = np.int64(buf[p + 3])
        elem = np.int64(buf[p + 4])
        dec = np.int64(buf[p + 5])
        rel = np.int64(buf[p + 6])
        res = np.int64(buf[p + 7])
        term = np.int64(buf[p + 8])
        if rel == 32:
            rel = -1
        if bad_separator(comp) or bad_separator(elem) or bad_separator(term):
            return ST_BAD_SERVICE, p, p, comp, elem, term, rel
        if comp == elem or comp == term or elem == term:
            return ST_BAD_SERVICE, p, p, comp, elem, term, rel
        if rel >= 0 and (bad_separator(rel) or rel == comp or rel == elem or rel == term):
            return ST_BAD_SERVICE, p, p, comp, elem, term, rel
        if dec == comp or dec == elem or dec == term or dec == rel:
            return ST_BAD_SERVICE, p, p, comp, elem, term, rel
        if res != 32 and (res == comp or res == elem or res == term or res == rel or res == dec):
            return ST_BAD_SERVICE, p, p, comp, elem, term, rel
        p += 9
    elif e - p >= 4 and buf[p] == 85 and buf[p + 1] == 78 and buf[p + 2] == 66 and buf[p + 3] == 0x1D:
        # UNB with syntax level B control-character separators and no UNA
        comp = 0x1F
        elem = 0x1D
        term = 0x1C
        rel = -1
    q = trailing_end(buf, p, e)
    if q <= p:
        return ST_UNTERMINATED, p, p, comp, elem, term, rel
    last = np.int64(buf[q - 1])
    if rel >= 0 and last == rel:
        k = q - 1
        while k > p and buf[k - 1] == rel:
            k -= 1
        if (q - k) % 2 == 1:
            return ST_RELEASE_AT_END, p, p, comp, elem, term, rel
        return ST_UNTERMINATED, p, p, comp, elem, term, rel
    if last != term:
        return ST_UNTERMINATED, p, p, comp, elem, term, rel
    if rel >= 0:
        k = q - 1
        while k > p and buf[k - 1] == rel:
            k -= 1
        if (q - 1 - k) % 2 == 1:
            return ST_UNTERMINATED, p, p, comp, elem, term, rel
    return ST_OK, p, q, comp, elem, term, rel


CL_DATA, CL_COMP, CL_ELEM, CL_TERM, CL_REL = 0, 1, 2, 3, 4


@kernel(_nrt=False)
def fill_class_table(tab, comp, elem, term, rel, nlterm):
    """Byte class table of the separators: one load per byte in the scanner's hot loop."""
    for c in range(256):
        tab[c] = CL_DATA
    tab[comp] = CL_COMP
    tab[elem] = CL_ELEM
    tab[term] = CL_TERM
    if nlterm:
        tab[10] = CL_TERM
        tab[13] = CL_TERM
    if rel >= 0:
        tab[rel] = CL_REL


# ---------------------------------------------------------------- word-at-a-time separator scan
# The classifier's data-byte loops look at 8 bytes per step: one unaligned uint64 load, then per
# separator byte ``x`` (component, element, terminator, release) the exact zero-byte test of
# ``w ^ x * 0x0101..``; the lowest flagged byte is the next separator.  Only words that lie wholly
# before the scan limit are loaded (``i + 8 <= limit``, and every limit is at most the buffer
# length); the tail is the byte-class loop.  X12 newline mode (CR and LF end segments) uses the
# byte loop throughout.
@kernel(_nrt=False)
def skip_data(buf, i, limit, tab, p0, p1, p2, p3, swar):
    """First index in ``buf[i:limit]`` whose byte is not a data byte (``tab`` class), or ``limit``
    (``i`` when ``i >= limit``).  ``swar``: 8 bytes a step (patterns ``p0 .. p3`` are the
    separators of ``tab``); ``0 <= i`` and ``limit <= len(buf)``, so indices are read unsigned
    (numba then skips its negative-index wraparound code)."""
    e8 = min(i + 8, limit)                      # short runs (most tokens): byte by byte
    while i < e8 and tab[buf[np.uint64(i)]] == CL_DATA:
        i += 1
    if i < e8:
        return i
    if swar:
        while i + 8 <= limit:
            m = sep_mask(load_word(buf, i), p0, p1, p2, p3)
            if m != np.uint64(0):
                return i + (np.int64(trailing_zeros(m)) >> 3)
            i += 8
    while i < limit and tab[buf[np.uint64(i)]] == CL_DATA:
        i += 1
    return i


@kernel
def scan_segment(buf, pos, end, tab, max_seg, max_tok, t_el, t_co, t_s, t_e):
    """Scan one segment of ``buf[pos:end]`` into the per-segment token arrays.

    ``tab`` is the byte class table of the separators (:func:`fill_class_table`; X12 newline
    mode makes CR and LF terminators).  White space (CR, LF, blank, tab) before the segment tag
    is skipped.  Returns ``(status, next_pos, n_tokens)``; ``n_tokens == 0`` means no further
    segment.  Reaching ``end`` without a terminator ends the segment (the envelope readers have
    already checked the interchange is terminated).
    """
    p = pos
    while p < end and is_ws(buf[p]):
        p += 1
    if p >= end:
        return ST_OK, end, 0
    seg_start = p
    limit = end
    if limit - seg_start > max_seg:
        limit = seg_start + max_seg
    el = 0
    co = 1
    ts = p
    n = 0
    i = p
    while i < limit:
        k = tab[buf[i]]
        if k == CL_DATA:
            i += 1
            continue
        if k == CL_REL:
            if i + 1 >= end:
                return ST_RELEASE_AT_END, end, n
            i += 2
            continue
        if n >= max_tok:
            return ST_TOO_MANY_COMPONENTS, i, n
        t_el[n] = el
        t_co[n] = co
        t_s[n] = ts
        t_e[n] = i
        n += 1
        if k == CL_TERM:
            return ST_OK, i + 1, n
        if k == CL_ELEM:
            el += 1
            co = 1
        else:
            co += 1
        ts = i + 1
        i += 1
    if limit < end:
        return ST_SEGMENT_TOO_LONG, limit, n
    if n >= max_tok:
        return ST_TOO_MANY_COMPONENTS, end, n
    # last segment without terminator (only X12 newline mode gets here with data)
    t_el[n] = el
    t_co[n] = co
    t_s[n] = ts
    t_e[n] = min(i, end)
    return ST_OK, end, n + 1


@kernel(_nrt=False)
def copy_unescaped(buf, s, e, rel, out, o, cap):
    """Copy ``buf[s:e]`` without release characters to ``out[o:]`` (at most ``cap`` bytes).

    Returns the new fill position, or -1 when the value does not fit (too long to be an ID).
    """
    i = s
    while i < e:                            # 0 <= s, 0 <= o: read / write unsigned
        c = buf[np.uint64(i)]
        if c == rel and i + 1 < e:
            i += 1
            c = buf[np.uint64(i)]
        if o >= cap:
            return -1
        out[np.uint64(o)] = c
        o += 1
        i += 1
    return o


@kernel(_nrt=False)
def short_container(v, s, e, out, o):
    """``v[s:e]`` is ``[A-Z]{3}[UJZ]`` + 6 digits (serial without check digit, X12 split numbers): 1 or -1."""
    k = 0
    m = 0
    for i in range(s, e):
        c = v[i]
        if c == 32:
            continue
        if 97 <= c <= 122:
            c -= 32
        if m >= 10:
            return -1
        if m < 4:
            if not is_upper(c):
                return -1
        elif not is_digit(c):
            return -1
        out[o + m] = c
        m += 1
        k += 1
    if m != 10:
        return -1
    cat = out[o + 3]
    if cat != 85 and cat != 74 and cat != 90:
        return -1
    return 1


@kernel
def tokenize_message(buf, msg, pos, end, comp, elem, term, rel, nlterm, max_seg, max_tok,
                     t_el, t_co, t_s, t_e, fill, base,
                     o_msg, o_seg, o_el, o_co, o_s, o_e):
    """Tokens of one message; writes them at ``base`` when ``fill``.  Returns ``(status, nseg, ntok)``."""
    tab = np.empty(256, np.uint8)
    fill_class_table(tab, comp, elem, term, rel, nlterm)
    nseg = 0
    ntok = 0
    p = pos
    while p < end:
        st, nxt, n = scan_segment(buf, p, end, tab, max_seg, max_tok, t_el, t_co, t_s, t_e)
        if st != ST_OK:
            return st, nseg, 0
        if n == 0:
            break
        if fill:
            for k in range(n):
                o_msg[base + ntok + k] = msg
                o_seg[base + ntok + k] = nseg
                o_el[base + ntok + k] = t_el[k]
                o_co[base + ntok + k] = t_co[k]
                o_s[base + ntok + k] = t_s[k]
                o_e[base + ntok + k] = t_e[k]
        ntok += n
        nseg += 1
        p = nxt if nxt > p else p + 1
    return ST_OK, nseg, ntok


@kernel
def tokenize(buf, offsets, sel, max_seg, max_tok):
    """EDIFACT token table of the selected messages (two passes: count, then fill).

    Returns ``(status int8[m], n_segments int32[m], tok_msg, tok_seg, tok_elem, tok_comp,
    tok_start, tok_end)`` (token arrays int64, in message / segment / position order; ``tok_msg``
    holds batch indices).  Messages with a non-zero status contribute no tokens.
    """
    return tokenize_envelopes(buf, edifact_envelopes(buf, offsets, sel), sel, max_seg, max_tok)


@kernel
def tokenize_envelopes(buf, env, sel, max_seg, max_tok):
    """The token table from an envelope table (``E_*`` columns, one row per selected message:
    EDIFACT's :func:`edifact_envelopes` or ``x12.x12_envelopes``); see :func:`tokenize`."""
    m = sel.shape[0]
    status = np.zeros(m, np.int8)
    nsegs = np.zeros(m, np.int32)
    counts = np.zeros(m, np.int64)
    t_el = np.empty(max_tok, np.int64)
    t_co = np.empty(max_tok, np.int64)
    t_s = np.empty(max_tok, np.int64)
    t_e = np.empty(max_tok, np.int64)
    dummy = np.empty(0, np.int64)
    for j in range(m):                      # pass 1: statuses and token counts
        if env[j, E_ST] != ST_OK:
            status[j] = env[j, E_ST]
            continue
        st, ns, nt = tokenize_message(buf, sel[j], env[j, E_POS], env[j, E_END], env[j, E_COMP], env[j, E_ELEM],
                                      env[j, E_TERM], env[j, E_REL], env[j, E_NL] != 0, max_seg, max_tok,
                                      t_el, t_co, t_s, t_e, False, 0, dummy, dummy, dummy, dummy, dummy, dummy)
        status[j] = st
        nsegs[j] = ns
        counts[j] = nt if st == ST_OK else 0
    total = 0
    for j in range(m):
        total += counts[j]
    o_msg = np.empty(total, np.int64)
    o_seg = np.empty(total, np.int64)
    o_el = np.empty(total, np.int64)
    o_co = np.empty(total, np.int64)
    o_s = np.empty(total, np.int64)
    o_e = np.empty(total, np.int64)
    base = 0
    for j in range(m):                      # pass 2: fill
        if counts[j] == 0:
            continue
        tokenize_message(buf, sel[j], env[j, E_POS], env[j, E_END], env[j, E_COMP], env[j, E_ELEM],
                         env[j, E_TERM], env[j, E_REL], env[j, E_NL] != 0, max_seg, max_tok,
                         t_el, t_co, t_s, t_e, True, base, o_msg, o_seg, o_el, o_co, o_s, o_e)
        base += counts[j]
    return status, nsegs, o_msg, o_seg, o_el, o_co, o_s, o_e




# =========================================================================================
# Classifier: one kernel over the whole batch (both formats).
#
# Per segment: read the tag, look it up in the tag table (``tagtab[idx]``: rule count, special
# segment, candidate lists); a segment no rule and no envelope logic needs is skipped with a
# byte-class loop (separators counted for the component cap); otherwise it is tokenised into
# small per-segment arrays with an element index (``efirst``: O(1) token lookup), its element-1
# qualifier picks the candidate list, and those rules are applied inline.  Outputs: one int64
# hit table and one value byte buffer.


@kernel(inline="always")
def tag_char(c):
    if 65 <= c <= 90:
        return c - 64
    if 48 <= c <= 57:
        return c - 21
    return -1


@kernel(inline="always")
def tag_index(buf, s, n):
    """Index of a 2- or 3-character tag (A-Z, 0-9) in the tag table, or -1."""
    if n < 2 or n > 3:
        return -1
    a = tag_char(buf[s])
    b = tag_char(buf[s + 1])
    c = 0
    if n == 3:
        c = tag_char(buf[s + 2])
    if a < 0 or b < 0 or c < 0:
        return -1
    return (a * TAG_BASE + b) * TAG_BASE + c


@kernel(inline="always")
def pack_token(buf, s, e, rel):
    """Unescaped ``buf[s:e]`` packed into an int64 (byte k at bits 8k); -1 when longer than 8."""
    v = np.int64(0)
    nb = 0
    i = s
    while i < e:                            # 0 <= s (token bounds): read unsigned
        c = buf[np.uint64(i)]
        if c == rel and i + 1 < e:
            i += 1
            c = buf[np.uint64(i)]
        if nb >= 8:
            return np.int64(-1)
        v |= np.int64(c) << (8 * nb)
        nb += 1
        i += 1
    return v


@kernel(inline="always")
def tok_at(efirst, nel, el, co):
    """Token index of (element, component) or -1 (``efirst[nel]`` = token count)."""
    if el < 0 or el >= nel or co < 1:
        return -1
    k = efirst[np.uint64(el)] + co - 1
    if k >= efirst[np.uint64(el + 1)]:
        return -1
    return k


@kernel(_nrt=False)
def parse_scratch(kind, sc, s0, e0, out, o, minlen, maxlen, short):
    """Normalise the value ``sc[s0:e0]`` (release characters removed: the assembled scratch value,
    or one token in place in the message) of a structural rule into ``out[o:]``.  Indices are
    non-negative (``0 <= s0 <= e0``, ``o >= 0``) and read unsigned: no wraparound code.  Returns ``(valid, n)``: valid 1 / 0 from a check, -1 no check;
    ``n < 0`` when the value has no shape of its kind (no hit)."""
    if kind == KIND_CONTAINER:
        res = parse_container(sc, s0, e0, out, o)
        if res >= 0:
            return res, 11
        if short != 0 and short_container(sc, s0, e0, out, o) > 0:
            return -1, 10
        return 0, -1
    if kind == KIND_IMO:
        res = parse_imo(sc, s0, e0, out, o)
        return res, (7 if res >= 0 else -1)
    if kind == KIND_LEI:
        res, n = parse_lei(sc, s0, e0, out, o)
        return res, (n if res >= 0 else -1)
    if kind == KIND_USCI:
        res, n = parse_usci(sc, s0, e0, out, o)
        return res, (n if res >= 0 else -1)
    if kind == KIND_EORI:
        res, n = parse_eori(sc, s0, e0, out, o)
        return -1, (n if res >= 0 else -1)
    if kind == KIND_EMAIL:
        res, n = parse_email(sc, s0, e0, out, o)
        return -1, (n if res >= 0 else -1)
    if kind == KIND_PHONE:
        res, n = parse_phone(sc, s0, e0, out, o)
        return -1, (n if res >= 0 else -1)
    if kind == KIND_UN:
        res, n = parse_un_number(sc, s0, e0, out, o)
        return (-1 if res > 0 else 0), (n if res >= 0 else -1)
    if kind == KIND_MMSI:
        res, n = parse_mmsi(sc, s0, e0, out, o)
        return (-1 if res > 0 else 0), (n if res >= 0 else -1)
    s, e = trim(sc, s0, e0)
    n = e - s
    if kind == KIND_LOCODE:
        if n != 5:
            return 0, -1
        for i in range(5):
            c = sc[np.uint64(s + i)]
            if 97 <= c <= 122:
                c -= 32
            if not (is_upper(c) or (i >= 2 and 50 <= c <= 57)):
                return 0, -1
            out[np.uint64(o + i)] = c
        return -1, 5
    if kind == KIND_DIGITS:
        w = 0
        for i in range(s, e):
            c = sc[np.uint64(i)]
            if c == 32 or c == 46:
                continue
            if not is_digit(c) or w >= maxlen:
                return 0, -1
            out[np.uint64(o + w)] = c
            w += 1
        if w < minlen or w == 0:
            return 0, -1
        return -1, w
    if kind == KIND_NUMBER:
        if n < 1 or n > 24:
            return 0, -1
        nd = 0
        nsep = 0
        for i in range(n):
            c = sc[np.uint64(s + i)]
            if is_digit(c):
                nd += 1
            elif c == 46 or c == 44:
                nsep += 1
                if nsep > 1:
                    return 0, -1
            elif not (i == 0 and (c == 45 or c == 43)):
                return 0, -1
            out[np.uint64(o + i)] = c
        if nd == 0:
            return 0, -1
        return -1, n
    if kind == KIND_CODE:
        if n < minlen or n > maxlen or n == 0:
            return 0, -1
        na = 0
        for i in range(n):
            c = sc[np.uint64(s + i)]
            if is_alnum(c):
                na += 1
            elif not (c == 32 or c == 45 or c == 47 or c == 46 or c == 95):
                return 0, -1
            out[np.uint64(o + i)] = c
        if na == 0:
            return 0, -1
        return -1, n
    # KIND_TEXT: UTF-8 (Latin-1 transcoded), at most maxlen bytes
    if n < minlen or n == 0:
        return 0, -1
    w = copy_text(sc, s, e, -1, out, o, maxlen)
    if w == 0:
        return 0, -1
    return -1, w


@kernel(_nrt=False)
def assemble(buf, rel, kind, rules, r, npart, t_s, t_e, efirst, nel, scratch):
    """The value of structural rule ``r`` assembled in ``scratch``: its parts unescaped, text parts
    joined by a blank (component 0 = every component of the element).  Returns ``(n, start, end)``:
    ``n`` bytes in ``scratch`` (``n <= 0``: no value) and the raw range of the parts in ``buf``."""
    sm = 0
    hs = -1
    he = -1
    ok = True
    for pi in range(npart):
        el = rules[r, R_PARTS + 2 * pi]
        co = rules[r, R_PARTS + 2 * pi + 1]
        if co == 0:
            if el >= nel:
                continue
            ka = efirst[el]
            kb = efirst[el + 1]
        else:
            ka = tok_at(efirst, nel, el, co)
            kb = ka + 1
        if ka < 0 or (kind == KIND_CONTAINER and t_e[ka] <= t_s[ka]):
            if kind == KIND_CONTAINER and pi <= 1:
                ok = False
            if kind == KIND_CONTAINER:
                break
            continue
        if pi > 0 and kind == KIND_CONTAINER:
            cnt = 0
            for jj in range(sm):
                if scratch[jj] != 32 and scratch[jj] != 45:
                    cnt += 1
            if cnt >= 11:
                break
        for kk in range(ka, kb):
            if t_e[kk] <= t_s[kk]:
                continue
            if sm > 0 and kind != KIND_CONTAINER and kind != KIND_IMO:
                if sm >= scratch.shape[0]:
                    ok = False
                    break
                scratch[sm] = 32
                sm += 1
            sm2 = copy_unescaped(buf, t_s[kk], t_e[kk], rel, scratch, sm, scratch.shape[0])
            if sm2 < 0:
                ok = False
                break
            sm = sm2
            if hs < 0:
                hs = t_s[kk]
            he = t_e[kk]
        if not ok:
            break
    if not ok:
        return -1, hs, he
    return sm, hs, he


@kernel(inline="always")
def ft_candidate(buf, i, j, e, mask):
    """Free-text token ``buf[i:j]`` (a maximal alphanumeric run; ``e`` the text end): the kind
    (FT_* bit) and the end of the candidate value, or (0, j)."""
    n = j - i
    if mask & FT_CONTAINER:
        if n == 11 or (n == 4 and j + 8 <= e and buf[j] == 32):
            ok = True
            for k in range(4):
                if not is_upper(buf[i + k]):
                    ok = False
                    break
            if ok:
                cat = buf[i + 3]
                ok = cat == 85 or cat == 74 or cat == 90
            if ok:
                d = i + 4 if n == 11 else j + 1
                for k in range(7):
                    if not is_digit(buf[d + k]):
                        ok = False
                        break
                if ok and n == 4 and d + 7 < e and is_alnum(buf[d + 7]):
                    ok = False
                if ok:
                    return FT_CONTAINER, d + 7
    if mask & FT_IMO:
        if (n == 3 or n == 10) and (buf[i] | 32) == 105 and (buf[i + 1] | 32) == 109 and (buf[i + 2] | 32) == 111:
            if n == 10:
                ok = True
                for k in range(3, 10):
                    if not is_digit(buf[i + k]):
                        ok = False
                        break
                if ok:
                    return FT_IMO, j
            else:
                d = j
                while d < e and d < i + 6 and (buf[d] == 32 or buf[d] == 58 or buf[d] == 46 or buf[d] == 45):
                    d += 1
                if d + 7 <= e:
                    ok = True
                    for k in range(7):
                        if not is_digit(buf[d + k]):
                            ok = False
                            break
                    if ok and (d + 7 == e or not is_alnum(buf[d + 7])):
                        return FT_IMO, d + 7
    if (mask & FT_LEI) and n == 20 and is_digit(buf[j - 1]) and is_digit(buf[j - 2]):
        if lei_mod97(buf, i, 20) == 1 and not iban_ok(buf, i, 20):
            k = i - 1
            while k >= 0 and k > i - 4 and not is_alnum(buf[k]):
                k -= 1
            ctx = k >= 3 and (buf[k - 3] | 32) == 105 and (buf[k - 2] | 32) == 98 and (
                buf[k - 1] | 32) == 97 and (buf[k] | 32) == 110
            if not ctx:
                return FT_LEI, j
    if (mask & FT_USCI) and n == 18 and usci_token_ok(buf, i):
        return FT_USCI, j
    return 0, j


@kernel(inline="always")
def reserve(ctr, room, hit_cap, val_cap):
    """Count one more hit needing ``room`` value bytes; True when it fits the outputs."""
    ctr[C_HITS] += 1
    ctr[C_VALS] += room
    return ctr[C_HW] < hit_cap and ctr[C_VW] + room <= val_cap


@kernel(inline="always")
def unreserve(ctr, room):
    ctr[C_HITS] -= 1
    ctr[C_VALS] -= room


@kernel(inline="always")
def emit(hits, ctr, msg, cls, loc, valid, conf, hs, he, vlen):
    k = ctr[C_HW]
    ku = np.uint64(k)                       # 0 <= k < capacity (reserve): no wraparound code
    hits[H_MSG, ku] = msg
    hits[H_CLASS, ku] = cls
    hits[H_LOC, ku] = loc
    hits[H_VALID, ku] = valid
    hits[H_CONF, ku] = conf
    hits[H_START, ku] = hs
    hits[H_END, ku] = he
    ctr[C_VW] += vlen
    hits[H_VEND, ku] = ctr[C_VW]
    ctr[C_HW] = k + 1


@kernel(_nrt=False)
def free_text(buf, s, e, mask, rules, r, msg, hits, vbuf, ctr, hit_cap, val_cap):
    """Scan ``buf[s:e]`` (one element of a free-text segment) for the shaped classes."""
    loc = rules[r, R_LOC]
    conf = rules[r, R_CONF]
    i = s
    while i < e:                            # 0 <= s: read unsigned
        if not is_alnum(buf[np.uint64(i)]):
            i += 1
            continue
        j = i + 1
        while j < e and is_alnum(buf[np.uint64(j)]):
            j += 1
        kind, b = ft_candidate(buf, i, j, e, mask)
        if kind != 0:
            if reserve(ctr, VAL_ROOM, hit_cap, val_cap):
                vo = ctr[C_VW]
                if kind == FT_CONTAINER:
                    res = parse_container(buf, i, b, vbuf, vo)
                    n = 11
                    cls = rules[r, R_FTCLS]
                elif kind == FT_IMO:
                    res = parse_imo(buf, i, b, vbuf, vo)
                    n = 7
                    cls = rules[r, R_FTCLS + 1]
                elif kind == FT_LEI:
                    res, n = parse_lei(buf, i, b, vbuf, vo)
                    cls = rules[r, R_FTCLS + 2]
                else:
                    res, n = parse_usci(buf, i, b, vbuf, vo)
                    cls = rules[r, R_FTCLS + 3]
                if res >= 0:
                    emit(hits, ctr, msg, cls, loc, res, conf, i, b, n)
                else:
                    unreserve(ctr, VAL_ROOM)
            j = b
        i = j
    if mask & FT_EMAIL:
        p = s
        while p < e:
            a, b = next_email(buf, p, e)
            if a < 0:
                break
            if reserve(ctr, VAL_ROOM, hit_cap, val_cap):
                res, n = parse_email(buf, a, b, vbuf, ctr[C_VW])
                if res >= 0:
                    emit(hits, ctr, msg, rules[r, R_FTCLS + 4], loc, -1, conf, a, b, n)
                else:
                    unreserve(ctr, VAL_ROOM)
            p = b if b > p else p + 1


@kernel(_nrt=False)
def charset_status(buf, rel, p, q, t_s, t_e, efirst, nel):
    """UNB S001 syntax identifier: UNOA..UNOK / UNOX ok, UNOW / UNOY need valid UTF-8
    (``invalid_utf8``), anything else is ``bad_charset``; missing or empty: no check."""
    k = tok_at(efirst, nel, 1, 1)
    if k < 0 or t_e[k] <= t_s[k]:
        return ST_OK
    v = pack_token(buf, t_s[k], t_e[k], rel)
    if v < 0 or (v & 0xFFFFFF) != 0x4F4E55 or (v >> 32) != 0:   # "UNO" + one letter
        return ST_BAD_CHARSET
    c = (v >> 24) & 0xFF
    if 65 <= c <= 75 or c == 88:
        return ST_OK
    if c == 87 or c == 89:
        return ST_OK if utf8_ok(buf, p, q) else ST_INVALID_UTF8
    return ST_BAD_CHARSET


# ---------------------------------------------------------------- envelope integrity
# The value must be a sequence of one or more complete envelopes of the level its first segment
# opens: interchanges (UNB..UNZ / ISA..IEA) or, without an interchange header, bare groups
# (UNG..UNE / GS..GE) or messages (UNH..UNT / ST..SE).  Refused (status, no hits):
#   * headless_fragment: the first segment is no header, or a trailer of a level the value does
#     not open (UNZ after bare messages): the tail of a split interchange;
#   * unterminated_interchange: the value ends inside its top-level envelope (no UNZ / IEA, the
#     head of a split interchange), or a new top-level header starts before the trailer;
#   * bad_envelope: anything but a top-level header after a top-level trailer (trailing garbage),
#     or a header of a level above the top (a UNB after bare messages).
# Flagged, not refused (the data is all there): count / reference mismatches of each trailer
# (UNT 0074 / 0062, UNE 0060 / 0048, UNZ 0036 / 0020; SE01 / SE02, GE01 / GE02, IEA01 / IEA02),
# envelope nesting faults inside (a message not closed before the next one, a trailer without
# its header, ST outside GS), and bare messages (no interchange header).


@kernel(inline="always")
def env_role(sp):
    """Envelope role of a special segment: ``(level, kind, header reference element)``;
    kind 1 header, 2 trailer, 0 none."""
    if sp == SP_UNB:
        return 0, 1, 5
    if sp == SP_ISA:
        return 0, 1, 13
    if sp == SP_UNZ or sp == SP_IEA:
        return 0, 2, 2
    if sp == SP_UNG:
        return 1, 1, 5
    if sp == SP_GS:
        return 1, 1, 6
    if sp == SP_UNE or sp == SP_GE:
        return 1, 2, 2
    if sp == SP_UNH:
        return 2, 1, 1
    if sp == SP_ST:
        return 2, 1, 2
    if sp == SP_UNT or sp == SP_SE:
        return 2, 2, 2
    return -1, 0, 0


@kernel(inline="always")
def parse_count(buf, s, e):
    """The decimal number ``buf[s:e]`` (digits only, at most 18), or -1."""
    if e <= s or e - s > 18:
        return np.int64(-1)
    v = np.int64(0)
    for i in range(s, e):
        c = buf[i]
        if c < 48 or c > 57:
            return np.int64(-1)
        v = v * 10 + (c - 48)
    return v


@kernel(inline="always")
def same_value(buf, a, b, c, d, rel):
    """Are ``buf[a:b]`` and ``buf[c:d]`` equal once release characters are removed?"""
    i = a
    k = c
    while i < b and k < d:
        x = buf[i]
        if x == rel and i + 1 < b:
            i += 1
            x = buf[i]
        y = buf[k]
        if y == rel and k + 1 < d:
            k += 1
            y = buf[k]
        if x != y:
            return False
        i += 1
        k += 1
    return i >= b and k >= d


FNV64_OFF = np.uint64(14695981039346656037)
FNV64_PRIME = np.uint64(1099511628211)


@kernel(inline="always")
def fnv_value(h, buf, s, e, rel, trim):
    """FNV-1a of ``buf[s:e]`` (release characters removed; trailing blanks dropped when
    ``trim``), continuing from ``h``, then a 0 byte as field separator."""
    if trim:
        while e > s and buf[e - 1] == 32:
            e -= 1
    i = s
    while i < e:
        c = buf[i]
        if c == rel and i + 1 < e:
            i += 1
            c = buf[i]
        h = (h ^ np.uint64(c)) * FNV64_PRIME
        i += 1
    return h * FNV64_PRIME


@kernel(_nrt=False)
def interchange_key(buf, sp, rel, t_s, t_e, efirst, nel):
    """Hash of (format, sender, sender qualifier, control reference) of an UNB / ISA segment
    (UNB S002 0004 : 0007 and 0020; ISA06, ISA05 and ISA13); 0 when the reference is empty."""
    if sp == SP_UNB:
        ks = tok_at(efirst, nel, 2, 1)
        kq = tok_at(efirst, nel, 2, 2)
        kr = tok_at(efirst, nel, 5, 1)
        h = (FNV64_OFF ^ np.uint64(1)) * FNV64_PRIME
    else:
        ks = tok_at(efirst, nel, 6, 1)
        kq = tok_at(efirst, nel, 5, 1)
        kr = tok_at(efirst, nel, 13, 1)
        h = (FNV64_OFF ^ np.uint64(2)) * FNV64_PRIME
    if kr < 0:
        return np.uint64(0)
    re_ = t_e[kr]
    while re_ > t_s[kr] and buf[re_ - 1] == 32:
        re_ -= 1
    if re_ <= t_s[kr]:
        return np.uint64(0)
    h = fnv_value(h, buf, t_s[ks], t_e[ks], rel, True) if ks >= 0 else h * FNV64_PRIME
    h = fnv_value(h, buf, t_s[kq], t_e[kq], rel, True) if kq >= 0 else h * FNV64_PRIME
    h = fnv_value(h, buf, t_s[kr], re_, rel, True)
    return h if h != np.uint64(0) else np.uint64(1)


@kernel
def classify_batch(buf, env, sel, rules, tagtab, clist, dkey, max_seg, max_tok, mout, hits, vbuf, ctr):
    """Fused tokenize + classify of the selected messages (EDIFACT or X12, from ``env``).

    ``env`` (int64, one row per selected message) is the envelope table of
    :func:`edifact_envelopes` / ``x12.x12_envelopes``.  Outputs are the caller's (reused
    across batches: fresh pages are expensive): ``mout[j] = (status, n_segments, type_start,
    type_end, envelope flags, interchange key)`` (int64, m x M_NCOLS; see the envelope rules
    above :func:`env_role`); ``hits`` (int64, H_NCOLS x capacity: ``hits[H_*, k]`` are the fields
    of hit ``k``, ``H_VEND`` = end of its value in ``vbuf``); ``ctr`` (zeroed by the caller) =
    (hits needed, value bytes needed, hits written, value bytes written).  When ``ctr[0] >
    ctr[2]`` the outputs overflowed: call again with ``hits.shape[1] >= ctr[0]`` and ``len(vbuf)
    >= ctr[1]``.  A message with a non-zero status has
    no hits.
    """
    classify_run(buf, env, sel, rules, tagtab, clist, dkey, max_seg, max_tok, mout, hits, vbuf, ctr,
                 np.empty(max_tok + 1, np.int64), np.empty(max_tok + 1, np.int64), np.empty(max_tok + 2, np.int64),
                 np.empty(SCRATCH, np.uint8), np.empty(256, np.uint8), np.empty(MAX_SUBMSG, np.int64),
                 np.zeros(3, np.bool_), np.zeros((3, 3), np.int64))


@kernel(_nrt=False)
def classify_run(buf, env, sel, rules, tagtab, clist, dkey, max_seg, max_tok, mout, hits, vbuf, ctr,
                 t_s, t_e, efirst, scratch, tab, sub_pos, e_open, e_lv):
    """:func:`classify_batch` with its work arrays passed in: compiled without the runtime's
    reference counting (``_nrt=False``), which otherwise costs two atomic operations per array
    per inlined helper and call in the hot loops (measured: half the kernel's time)."""
    m = sel.shape[0]
    hit_cap = hits.shape[1]
    val_cap = vbuf.shape[0]
    e_seg0 = e_lv[0]                     # segment number of the level's header (per level: 0 interchange,
    e_rs = e_lv[1]                       # 1 group, 2 message), the header's reference value (buf range, -1 none)
    e_re = e_lv[2]
    for j in range(m):
        mout[j, M_TS] = -1
        mout[j, M_TE] = -1
        mout[j, M_FLAGS] = 0
        mout[j, M_IKEY] = 0
        st = env[j, E_ST]
        if st != ST_OK:
            mout[j, M_STATUS] = st
            continue
        p = max(env[j, E_POS], 0)
        q = min(env[j, E_END], buf.shape[0])           # every scan limit is at most len(buf)
        rel = env[j, E_REL]
        fill_class_table(tab, env[j, E_COMP], env[j, E_ELEM], env[j, E_TERM], rel, env[j, E_NL] != 0)
        swar = env[j, E_NL] == 0                        # newline mode: CR / LF are terminators too
        p0 = sep_pattern(env[j, E_COMP])
        p1 = sep_pattern(env[j, E_ELEM])
        p2 = sep_pattern(env[j, E_TERM])
        p3 = sep_pattern(rel if rel >= 0 else env[j, E_TERM])
        msg = sel[j]
        h0 = ctr[C_HITS]
        v0 = ctr[C_VALS]
        hw0 = ctr[C_HW]
        vw0 = ctr[C_VW]
        nseg = 0
        n_sub = 0
        status = ST_OK
        first = True
        top = -1            # level of the value's first header
        between = False     # after a top-level trailer
        eflags = 0
        ikey = np.uint64(0)
        n_grp = 0           # groups / messages of the open interchange, messages of the open group
        n_msg0 = 0
        n_msg1 = 0
        for lv in range(3):
            e_open[lv] = False
        while p < q:
            while p < q and is_ws(buf[p]):
                p += 1
            if p >= q:
                break
            seg0 = p
            limit = q if q - p <= max_seg else p + max_seg
            i = skip_data(buf, p, limit, tab, p0, p1, p2, p3, swar)
            ti = tag_index(buf, p, i - p)
            rn = 0
            sp = SP_NONE
            if ti >= 0:
                rn = tagtab[np.uint64(ti), T_RN]
                sp = tagtab[np.uint64(ti), T_SP]
            nseg += 1
            lvl, role, href = env_role(sp)
            if rn == 0 and sp == SP_NONE:
                # fast path: to the terminator, counting tokens for the component cap
                ntok = 0
                done = False
                while i < limit:
                    if swar and i + 8 <= limit:                 # a whole word from one mask (as below)
                        m = sep_mask(load_word(buf, i), p0, p1, p2, p3)
                        nxt = i + 8
                        pos = i
                        while m != np.uint64(0):
                            pos = i + (np.int64(trailing_zeros(m)) >> 3)
                            m &= m - np.uint64(1)
                            k = tab[buf[np.uint64(pos)]]
                            if k == CL_REL:
                                if pos + 1 >= q:
                                    status = ST_RELEASE_AT_END
                                    break
                                if pos + 1 < nxt:
                                    m &= ~(np.uint64(0x80) << np.uint64(8 * (pos + 1 - i)))
                                else:
                                    nxt = pos + 2
                                continue
                            if ntok >= max_tok:
                                status = ST_TOO_MANY_COMPONENTS
                                break
                            ntok += 1
                            if k == CL_TERM:
                                done = True
                                break
                        if status != ST_OK or done:
                            i = pos
                            break
                        i = nxt
                        continue
                    i = skip_data(buf, i, limit, tab, p0, p1, p2, p3, swar)   # data bytes: 8 at a time
                    if i >= limit:
                        break
                    k = tab[buf[np.uint64(i)]]
                    if k == CL_REL:
                        if i + 1 >= q:
                            status = ST_RELEASE_AT_END
                            break
                        i += 2
                        continue
                    if ntok >= max_tok:
                        status = ST_TOO_MANY_COMPONENTS
                        break
                    ntok += 1
                    if k == CL_TERM:
                        done = True
                        break
                    i += 1
                if status != ST_OK:
                    break
                if done:
                    p = i + 1
                elif limit < q:
                    status = ST_SEGMENT_TOO_LONG
                    break
                elif ntok >= max_tok:
                    status = ST_TOO_MANY_COMPONENTS
                    break
                else:
                    p = q
                if first:                                   # no envelope header first
                    status = ST_HEADLESS
                    break
                if between:                                 # data after the last trailer
                    status = ST_BAD_ENVELOPE
                    break
                continue
            # tokenise (same rules as scan_segment)
            ts = p
            n = 0
            nel = 1
            efirst[0] = 0
            i = p
            done = False
            segrel = False                                      # a release character in the segment
            while i < limit:
                if swar and i + 8 <= limit:
                    # a whole word: every separator in it from one mask, lowest first
                    m = sep_mask(load_word(buf, i), p0, p1, p2, p3)
                    nxt = i + 8
                    pos = i
                    while m != np.uint64(0):
                        pos = i + (np.int64(trailing_zeros(m)) >> 3)
                        m &= m - np.uint64(1)
                        k = tab[buf[np.uint64(pos)]]
                        if k == CL_REL:
                            if pos + 1 >= q:
                                status = ST_RELEASE_AT_END
                                break
                            segrel = True
                            if pos + 1 < nxt:                   # the released byte is data
                                m &= ~(np.uint64(0x80) << np.uint64(8 * (pos + 1 - i)))
                            else:
                                nxt = pos + 2
                            continue
                        if n >= max_tok:
                            status = ST_TOO_MANY_COMPONENTS
                            break
                        t_s[np.uint64(n)] = ts
                        t_e[np.uint64(n)] = pos
                        n += 1
                        if k == CL_TERM:
                            done = True
                            break
                        efirst[np.uint64(nel)] = n
                        nel += 1 if k == CL_ELEM else 0
                        ts = pos + 1
                    if status != ST_OK or done:
                        i = pos
                        break
                    i = nxt
                    continue
                i = skip_data(buf, i, limit, tab, p0, p1, p2, p3, swar)  # data bytes: 8 at a time, a
                if i >= limit:                                  # loop of its own (as one loop with the
                    break                                       # separators, LLVM reloaded spilled state)
                k = tab[buf[np.uint64(i)]]
                if k == CL_REL:
                    if i + 1 >= q:
                        status = ST_RELEASE_AT_END
                        break
                    segrel = True
                    i += 2
                    continue
                if n >= max_tok:
                    status = ST_TOO_MANY_COMPONENTS
                    break
                t_s[np.uint64(n)] = ts
                t_e[np.uint64(n)] = i
                n += 1
                if k == CL_TERM:
                    done = True
                    break
                efirst[np.uint64(nel)] = n                                 # no branch on element / component
                nel += 1 if k == CL_ELEM else 0                 # (unpredictable): a component's write
                ts = i + 1                                      # is overwritten by the next element's
                i += 1                                          # or the final count below
            if status != ST_OK:
                break
            if done:
                p = i + 1
            elif limit < q:
                status = ST_SEGMENT_TOO_LONG
                break
            elif n >= max_tok:
                status = ST_TOO_MANY_COMPONENTS
                break
            else:
                t_s[n] = ts
                t_e[n] = min(i, q)
                n += 1
                p = q
            efirst[nel] = n
            if (first and role != 1) or (between and not (role == 1 and lvl == top)):
                status = ST_HEADLESS if (first or (role == 2 and lvl < top)) else ST_BAD_ENVELOPE
                break
            if sp == SP_UNB and first:
                status = charset_status(buf, rel, env[j, E_POS], q, t_s, t_e, efirst, nel)
                if status != ST_OK:
                    break
            if role == 1:                                   # envelope header
                if top < 0:
                    top = lvl
                    if top > 0:
                        eflags |= F_NO_INTERCHANGE
                if lvl < top:
                    status = ST_BAD_ENVELOPE
                    break
                if lvl == top and e_open[top]:
                    status = ST_UNTERMINATED
                    break
                for lv in range(lvl, 3):                    # deeper levels left open
                    if e_open[lv]:
                        eflags |= F_NESTING
                        e_open[lv] = False
                if sp == SP_ST and top < 2 and not e_open[1]:
                    eflags |= F_NESTING                     # X12: a transaction set outside GS
                e_open[lvl] = True
                e_seg0[lvl] = nseg
                kr = tok_at(efirst, nel, href, 1)
                e_rs[lvl] = t_s[kr] if kr >= 0 else -1
                e_re[lvl] = t_e[kr] if kr >= 0 else -1
                if lvl == 0:
                    n_grp = 0
                    n_msg0 = 0
                    if ikey == np.uint64(0):
                        ikey = interchange_key(buf, sp, rel, t_s, t_e, efirst, nel)
                elif lvl == 1:
                    n_grp += 1
                    n_msg1 = 0
                else:
                    n_msg0 += 1
                    n_msg1 += 1
                between = False
            elif role == 2:                                 # envelope trailer
                if lvl < top:
                    status = ST_HEADLESS
                    break
                if not e_open[lvl]:
                    eflags |= F_NESTING
                else:
                    for lv in range(lvl + 1, 3):
                        if e_open[lv]:
                            eflags |= F_NESTING
                            e_open[lv] = False
                    if lvl == 2:
                        want = nseg - e_seg0[2] + 1
                    elif lvl == 1:
                        want = n_msg1
                    else:
                        want = n_grp if (n_grp > 0 or sp == SP_IEA) else n_msg0
                    kc = tok_at(efirst, nel, 1, 1)
                    if kc < 0 or parse_count(buf, t_s[kc], t_e[kc]) != want:
                        eflags |= 1 << (2 * (2 - lvl))
                    kr = tok_at(efirst, nel, 2, 1)
                    rs = t_s[kr] if kr >= 0 else 0
                    re_ = t_e[kr] if kr >= 0 else 0
                    hs_ = e_rs[lvl] if e_rs[lvl] >= 0 else 0
                    he_ = e_re[lvl] if e_rs[lvl] >= 0 else 0
                    if not same_value(buf, rs, re_, hs_, he_, rel):
                        eflags |= 2 << (2 * (2 - lvl))
                    e_open[lvl] = False
                    if lvl == top:
                        between = True
            if (sp == SP_UNH or sp == SP_ST) and n_sub < MAX_SUBMSG:
                sub_pos[n_sub] = seg0
                n_sub += 1
            if (sp == SP_UNH or sp == SP_ST) and mout[j, M_TS] < 0:
                k = tok_at(efirst, nel, 2 if sp == SP_UNH else 1, 1)
                if k >= 0:
                    mout[j, M_TS] = t_s[k]
                    mout[j, M_TE] = t_e[k]
            first = False
            # the segment's rules, inline (a call with this many arrays costs more than the rules):
            # the candidate list of its tag and element-1 qualifier (rule order; the qualifier tests
            # on element 1 already decided, see flowaudit/decode/edifact.py _dispatch)
            c0 = 0
            cn = 0
            if rn > 0:
                c0 = tagtab[np.uint64(ti), T_L0]
                cn = tagtab[np.uint64(ti), T_LN]
                kn = tagtab[np.uint64(ti), T_KN]
                if kn > 0:
                    kq = tok_at(efirst, nel, 1, 1)
                    if kq >= 0 and t_e[np.uint64(kq)] > t_s[np.uint64(kq)]:
                        q11 = pack_token(buf, t_s[np.uint64(kq)], t_e[np.uint64(kq)], rel)
                        if q11 >= 0:
                            k0 = tagtab[np.uint64(ti), T_K0]
                            for x in range(k0, k0 + kn):
                                if dkey[np.uint64(x), 0] == q11:
                                    c0 = dkey[np.uint64(x), 1]
                                    cn = dkey[np.uint64(x), 2]
                                    break
            for ci in range(c0, c0 + cn):
                r = clist[np.uint64(ci)]
                ru = np.uint64(r)                           # rows read unsigned: no wraparound code
                # the rule's qualifiers, inline (as a function this costs ~4x more per rule)
                ok = True
                qres = rules[ru, R_QRES]
                for qq in range(MAX_QUALS):
                    base = R_Q + qq * Q_STRIDE
                    nq = rules[ru, np.uint64(base + 3)]
                    if nq == 0 or (qres >> qq) & 1:
                        continue
                    kq = tok_at(efirst, nel, rules[ru, base], rules[ru, base + 1])
                    found = False
                    if kq >= 0 and t_e[np.uint64(kq)] > t_s[np.uint64(kq)]:
                        pv = pack_token(buf, t_s[np.uint64(kq)], t_e[np.uint64(kq)], rel)
                        if pv >= 0:
                            for v in range(nq):
                                if rules[ru, np.uint64(base + 4 + v)] == pv:
                                    found = True
                                    break
                    if found == (rules[ru, base + 2] != 0):
                        ok = False
                        break
                if not ok:
                    continue
                kind = rules[ru, R_KIND]
                if kind == KIND_FREE_TEXT:
                    el = rules[ru, R_PARTS]
                    co = rules[ru, R_PARTS + 1]
                    if el >= nel:
                        continue
                    k0 = efirst[el]
                    k1 = efirst[el + 1] - 1
                    if co > 0:
                        k0 = tok_at(efirst, nel, el, co)
                        if k0 < 0:
                            continue
                        k1 = k0
                    if t_e[k1] > t_s[k0]:
                        free_text(buf, t_s[k0], t_e[k1], rules[ru, R_FTMASK], rules, r, msg, hits, vbuf, ctr,
                                  hit_cap, val_cap)
                    continue
                # structural value: one token of a segment without release characters is parsed in
                # place (most values); otherwise the parts, unescaped, into scratch (text parts joined
                # by a blank; component 0 = every component of the element).  One parse call site for
                # both (from a second call site it measured 1.5x slower: worse code for the loop).
                npart = rules[ru, R_NPARTS]
                kd = -1
                if npart == 1 and not segrel:
                    el = rules[ru, R_PARTS]
                    co = rules[ru, R_PARTS + 1]
                    if co == 0:
                        if el < nel and efirst[np.uint64(el + 1)] - efirst[np.uint64(el)] == 1:
                            kd = efirst[np.uint64(el)]
                    else:
                        kd = tok_at(efirst, nel, el, co)
                        if kd < 0:
                            continue
                if kd >= 0:
                    hs = t_s[np.uint64(kd)]
                    he = t_e[np.uint64(kd)]
                    if he <= hs or he - hs > scratch.shape[0]:   # empty, or longer than any assembled value
                        continue
                    src = buf
                    s0 = hs
                    e0 = he
                else:
                    sm, hs, he = assemble(buf, rel, kind, rules, r, npart, t_s, t_e, efirst, nel, scratch)
                    if sm <= 0:
                        continue
                    src = scratch
                    s0 = 0
                    e0 = sm
                room = rules[ru, R_ROOM]
                if not reserve(ctr, room, hit_cap, val_cap):
                    continue
                valid, vn = parse_scratch(kind, src, s0, e0, vbuf, ctr[C_VW], rules[ru, R_MINLEN], rules[ru, R_MAXLEN],
                                          rules[ru, R_SHORT])
                if vn < 0 or (rules[ru, R_MODE] == MODE_CHECK and valid != 1):
                    unreserve(ctr, room)
                    continue
                emit(hits, ctr, msg, rules[ru, R_CLASS], rules[ru, R_LOC], valid, rules[ru, R_CONF], hs, he, vn)
        if status == ST_OK and not between:
            status = ST_UNTERMINATED                        # the top-level envelope is still open
        mout[j, M_NSEG] = nseg
        mout[j, M_FLAGS] = eflags
        mout[j, M_IKEY] = np.int64(ikey)
        if status == ST_OK:
            # each hit's message ordinal: how many UNH / ST segments start at or before it
            x = 0
            for k in range(hw0, ctr[C_HW]):
                pos = hits[H_START, np.uint64(k)]
                while x < n_sub and sub_pos[np.uint64(x)] <= pos:
                    x += 1
                hits[H_SUB, k] = x
        if status != ST_OK:
            mout[j, M_STATUS] = status
            mout[j, M_NSEG] = 0
            mout[j, M_TS] = -1
            mout[j, M_TE] = -1
            mout[j, M_FLAGS] = 0
            mout[j, M_IKEY] = 0
            ctr[C_HITS] = h0
            ctr[C_VALS] = v0
            ctr[C_HW] = hw0
            ctr[C_VW] = vw0


@kernel
def edifact_envelopes(buf, offsets, sel):
    """Envelope table (``E_*`` columns) of the selected EDIFACT messages."""
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
        st, p, q, comp, elem, term, rel = edifact_setup(buf, s, e)
        env[j, E_ST] = st
        env[j, E_POS] = p
        env[j, E_END] = q
        env[j, E_COMP] = comp
        env[j, E_ELEM] = elem
        env[j, E_TERM] = term
        env[j, E_REL] = rel
    return env
