"""UN/EDIFACT tokenizer and rule-driven classifier (numba kernels over whole batches).

This module also holds the format-neutral machinery shared with :mod:`.x12` (both formats are
"segment / element / component" text with single-byte separators): the one-segment scanner
:func:`scan_segment`, the rule engine :func:`classify_message` and the token-table writer
:func:`tokenize_message`.  Each format only supplies its own envelope reader (``*_setup``) that
finds the separators and checks the interchange is terminated.

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

from ._jit import kernel
from .values import is_alnum, is_digit, is_upper, next_container, next_imo, parse_container, parse_imo

# status codes (flowaudit.decode.REASONS)
ST_OK = 0
ST_EMPTY = 1
ST_UNTERMINATED = 6
ST_BAD_SERVICE = 7
ST_RELEASE_AT_END = 8
ST_SEGMENT_TOO_LONG = 14
ST_TOO_MANY_COMPONENTS = 15
ST_BAD_ENVELOPE = 17

# default limits (the shells pass these; tests may pass smaller ones)
MAX_SEGMENT_BYTES = 65536
MAX_SEGMENT_TOKENS = 4096

# rule table columns (int64 matrix, one row per rule; see flowaudit/decode/edifact.py)
R_TAG0, R_TAG1, R_TAG2, R_TAGLEN = 0, 1, 2, 3
R_QEL, R_QCO, R_QNEG, R_NQ = 4, 5, 6, 7
R_KIND, R_CLASS, R_LOC, R_CONF, R_MODE, R_SHORT, R_NPARTS = 8, 9, 10, 11, 12, 13, 14
R_PARTS = 15  # (element, component) x 3 -> columns 15..20
R_NCOLS = 21
MAX_PARTS = 3
MAX_QVALS = 8
MAX_QLEN = 8

KIND_CONTAINER = 1
KIND_IMO = 2
KIND_CONTAINER_TEXT = 3
KIND_IMO_TEXT = 4

MODE_SHAPE = 0   # emit when the value has the shape (valid 1 / 0 from the check digit)
MODE_CHECK = 1   # emit only when the check digit is right (weak positions)

# counters in ``ctr`` (int64[4]): hits needed, value bytes needed, hits written, value bytes written
C_HITS, C_VALS, C_HW, C_VW = 0, 1, 2, 3
VAL_ROOM = 16  # values.parse_* write at most 11 bytes; they need 16 free


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


@kernel
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


@kernel
def find_token(t_el, t_co, n, el, co):
    for k in range(n):
        if t_el[k] == el and t_co[k] == co:
            return k
    return -1


@kernel
def token_equals(buf, s, e, rel, lit, litlen):
    """Unescaped ``buf[s:e]`` equals ``lit[:litlen]``."""
    j = 0
    i = s
    while i < e:
        c = buf[i]
        if c == rel and i + 1 < e:
            i += 1
            c = buf[i]
        if j >= litlen or lit[j] != c:
            return False
        j += 1
        i += 1
    return j == litlen


@kernel
def copy_unescaped(buf, s, e, rel, out, o, cap):
    """Copy ``buf[s:e]`` without release characters to ``out[o:]`` (at most ``cap`` bytes).

    Returns the new fill position, or -1 when the value does not fit (too long to be an ID).
    """
    i = s
    while i < e:
        c = buf[i]
        if c == rel and i + 1 < e:
            i += 1
            c = buf[i]
        if o >= cap:
            return -1
        out[o] = c
        o += 1
        i += 1
    return o


@kernel
def short_container(v, n, out, o):
    """``[A-Z]{3}[UJZ]`` + 6 digits (serial without check digit, X12 split numbers): 1 or -1."""
    k = 0
    m = 0
    for i in range(n):
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
def emit_hit(ctr, msg, cls, loc, valid, conf, hs, he, vlen,
             hit_msg, hit_class, hit_loc, hit_valid, hit_conf, hit_start, hit_end, val_off):
    """Record a hit whose value was already written at ``ctr[C_VW]`` (``vlen`` bytes)."""
    k = ctr[C_HW]
    hit_msg[k] = msg
    hit_class[k] = cls
    hit_loc[k] = loc
    hit_valid[k] = valid
    hit_conf[k] = conf
    hit_start[k] = hs
    hit_end[k] = he
    ctr[C_VW] += vlen
    val_off[k + 1] = ctr[C_VW]
    ctr[C_HW] = k + 1


@kernel
def room(ctr, hit_cap, val_cap):
    return ctr[C_HW] < hit_cap and ctr[C_VW] + VAL_ROOM <= val_cap


@kernel
def apply_rules(buf, msg, rel, t_el, t_co, t_s, t_e, n, rules, qvals, qlens, scratch,
                ctr, hit_cap, val_cap,
                hit_msg, hit_class, hit_loc, hit_valid, hit_conf, hit_start, hit_end, val_off, val_buf):
    """Apply every rule whose tag matches this segment (tokens ``0..n``)."""
    ts0 = t_s[0]
    tl = t_e[0] - ts0
    for r in range(rules.shape[0]):
        taglen = rules[r, R_TAGLEN]
        if tl != taglen:
            continue
        if buf[ts0] != rules[r, R_TAG0] or buf[ts0 + 1] != rules[r, R_TAG1]:
            continue
        if taglen == 3 and buf[ts0 + 2] != rules[r, R_TAG2]:
            continue
        # qualifier
        nq = rules[r, R_NQ]
        if nq > 0:
            kq = find_token(t_el, t_co, n, rules[r, R_QEL], rules[r, R_QCO])
            found = False
            if kq >= 0:
                for v in range(nq):
                    if token_equals(buf, t_s[kq], t_e[kq], rel, qvals[r, v], qlens[r, v]):
                        found = True
                        break
            if found == (rules[r, R_QNEG] != 0):
                continue
        kind = rules[r, R_KIND]
        cls = rules[r, R_CLASS]
        loc = rules[r, R_LOC]
        conf = rules[r, R_CONF]
        if kind == KIND_CONTAINER_TEXT or kind == KIND_IMO_TEXT:
            el = rules[r, R_PARTS]
            co = rules[r, R_PARTS + 1]
            for k in range(1, n):
                if t_el[k] != el:
                    continue
                if co > 0 and t_co[k] != co:
                    continue
                s = t_s[k]
                e = t_e[k]
                if co == 0:
                    # whole element: from its first component to its last one
                    while k + 1 < n and t_el[k + 1] == el:
                        k += 1
                    e = t_e[k]
                pos = s
                while pos < e:
                    if kind == KIND_CONTAINER_TEXT:
                        a, b = next_container(buf, pos, e)
                    else:
                        a, b = next_imo(buf, pos, e)
                    if a < 0:
                        break
                    ctr[C_HITS] += 1
                    ctr[C_VALS] += VAL_ROOM
                    if room(ctr, hit_cap, val_cap):
                        if kind == KIND_CONTAINER_TEXT:
                            res = parse_container(buf, a, b, val_buf, ctr[C_VW])
                            vlen = 11
                        else:
                            res = parse_imo(buf, a, b, val_buf, ctr[C_VW])
                            vlen = 7
                        if res >= 0:
                            emit_hit(ctr, msg, cls, loc, res, conf, a, b, vlen, hit_msg, hit_class,
                                     hit_loc, hit_valid, hit_conf, hit_start, hit_end, val_off)
                        else:
                            ctr[C_HITS] -= 1
                            ctr[C_VALS] -= VAL_ROOM
                    pos = b if b > pos else pos + 1
                if co == 0:
                    break
            continue
        # structural value: concatenate the parts (unescaped) into scratch
        np_ = rules[r, R_NPARTS]
        m = 0
        hs = -1
        he = -1
        ok = True
        for pi in range(np_):
            k = find_token(t_el, t_co, n, rules[r, R_PARTS + 2 * pi], rules[r, R_PARTS + 2 * pi + 1])
            if k < 0 or t_e[k] <= t_s[k]:
                if pi == 0 or pi == 1:
                    ok = False
                break
            if pi > 0 and kind == KIND_CONTAINER:
                # stop once the owner code + serial + check digit are complete
                cnt = 0
                for j in range(m):
                    if scratch[j] != 32 and scratch[j] != 45:
                        cnt += 1
                if cnt >= 11:
                    break
            m2 = copy_unescaped(buf, t_s[k], t_e[k], rel, scratch, m, scratch.shape[0])
            if m2 < 0:
                ok = False
                break
            m = m2
            if hs < 0:
                hs = t_s[k]
            he = t_e[k]
        if not ok or m == 0:
            continue
        ctr[C_HITS] += 1
        ctr[C_VALS] += VAL_ROOM
        if not room(ctr, hit_cap, val_cap):
            continue
        vo = ctr[C_VW]
        if kind == KIND_CONTAINER:
            res = parse_container(scratch, 0, m, val_buf, vo)
            vlen = 11
            if res < 0 and rules[r, R_SHORT] != 0:
                res = short_container(scratch, m, val_buf, vo)
                if res > 0:
                    res = -1
                    vlen = 10
                else:
                    res = -2
            elif res < 0:
                res = -2
        else:
            res = parse_imo(scratch, 0, m, val_buf, vo)
            vlen = 7
            if res < 0:
                res = -2
        if res == -2 or (rules[r, R_MODE] == MODE_CHECK and res != 1):
            ctr[C_HITS] -= 1
            ctr[C_VALS] -= VAL_ROOM
            continue
        emit_hit(ctr, msg, cls, loc, res, conf, hs, he, vlen, hit_msg, hit_class,
                 hit_loc, hit_valid, hit_conf, hit_start, hit_end, val_off)


@kernel
def classify_message(buf, msg, pos, end, comp, elem, term, rel, nlterm, max_seg, max_tok,
                     typ, typlen, typ_el, typ_co, rules, qvals, qlens,
                     t_el, t_co, t_s, t_e, scratch, ctr, hit_cap, val_cap,
                     hit_msg, hit_class, hit_loc, hit_valid, hit_conf, hit_start, hit_end, val_off, val_buf):
    """Walk the segments of one message and apply the rules.

    Returns ``(status, n_segments, type_start, type_end)``.  On a non-zero status the hits of
    this message are rolled back (a rejected message has no hits).
    """
    tab = np.empty(256, np.uint8)
    fill_class_table(tab, comp, elem, term, rel, nlterm)
    h0 = ctr[C_HITS]
    v0 = ctr[C_VALS]
    hw0 = ctr[C_HW]
    vw0 = ctr[C_VW]
    nseg = 0
    ms = -1
    me = -1
    p = pos
    while p < end:
        st, nxt, n = scan_segment(buf, p, end, tab, max_seg, max_tok, t_el, t_co, t_s, t_e)
        if st != ST_OK:
            ctr[C_HITS] = h0
            ctr[C_VALS] = v0
            ctr[C_HW] = hw0
            ctr[C_VW] = vw0
            return st, nseg, -1, -1
        if n == 0:
            break
        nseg += 1
        if ms < 0 and t_e[0] - t_s[0] == typlen and token_equals(buf, t_s[0], t_e[0], -1, typ, typlen):
            k = find_token(t_el, t_co, n, typ_el, typ_co)
            if k >= 0:
                ms = t_s[k]
                me = t_e[k]
        # cheap tag pre-filter: calling apply_rules costs reference-count traffic on ~20 arrays
        tl = t_e[0] - t_s[0]
        hit_tag = False
        if tl >= 2:
            b0 = buf[t_s[0]]
            b1 = buf[t_s[0] + 1]
            for r in range(rules.shape[0]):
                if rules[r, R_TAGLEN] == tl and rules[r, R_TAG0] == b0 and rules[r, R_TAG1] == b1:
                    hit_tag = True
                    break
        if hit_tag:
            apply_rules(buf, msg, rel, t_el, t_co, t_s, t_e, n, rules, qvals, qlens, scratch,
                        ctr, hit_cap, val_cap,
                        hit_msg, hit_class, hit_loc, hit_valid, hit_conf, hit_start, hit_end, val_off, val_buf)
        p = nxt if nxt > p else p + 1
    return ST_OK, nseg, ms, me


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
    m = sel.shape[0]
    status = np.zeros(m, np.int8)
    nsegs = np.zeros(m, np.int32)
    counts = np.zeros(m, np.int64)
    t_el = np.empty(max_tok, np.int64)
    t_co = np.empty(max_tok, np.int64)
    t_s = np.empty(max_tok, np.int64)
    t_e = np.empty(max_tok, np.int64)
    dummy = np.empty(0, np.int64)
    nb = offsets.shape[0] - 1
    for j in range(m):
        i = sel[j]
        if i < 0 or i >= nb:
            status[j] = ST_EMPTY
            continue
        s = max(offsets[i], 0)
        e = min(offsets[i + 1], buf.shape[0])
        st, p, q, comp, elem, term, rel = edifact_setup(buf, s, e)
        if st != ST_OK:
            status[j] = st
            continue
        st, ns, nt = tokenize_message(buf, i, p, q, comp, elem, term, rel, False, max_seg, max_tok,
                                      t_el, t_co, t_s, t_e, False, 0,
                                      dummy, dummy, dummy, dummy, dummy, dummy)
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
    for j in range(m):
        if counts[j] == 0:
            continue
        i = sel[j]
        s = max(offsets[i], 0)
        e = min(offsets[i + 1], buf.shape[0])
        st, p, q, comp, elem, term, rel = edifact_setup(buf, s, e)
        tokenize_message(buf, i, p, q, comp, elem, term, rel, False, max_seg, max_tok,
                         t_el, t_co, t_s, t_e, True, base, o_msg, o_seg, o_el, o_co, o_s, o_e)
        base += counts[j]
    return status, nsegs, o_msg, o_seg, o_el, o_co, o_s, o_e


@kernel
def classify(buf, offsets, sel, rules, qvals, qlens, max_seg, max_tok, hit_cap, val_cap):
    """Fused EDIFACT tokenize + classify over the selected messages.

    Returns ``(status, n_segments, type_start, type_end, hit_msg, hit_class, hit_loc, hit_valid,
    hit_conf, hit_start, hit_end, val_off, val_buf, ctr)``; ``ctr`` = (hits needed, value bytes
    needed, hits written, value bytes written).  When ``ctr[0] > ctr[2]`` the output arrays
    overflowed: call again with ``hit_cap >= ctr[0]`` and ``val_cap >= ctr[1]`` (upper bounds).
    """
    m = sel.shape[0]
    status = np.zeros(m, np.int8)
    nsegs = np.zeros(m, np.int32)
    mt_s = np.full(m, -1, np.int64)
    mt_e = np.full(m, -1, np.int64)
    hit_msg = np.empty(hit_cap, np.int64)
    hit_class = np.empty(hit_cap, np.int16)
    hit_loc = np.empty(hit_cap, np.int32)
    hit_valid = np.empty(hit_cap, np.int8)
    hit_conf = np.empty(hit_cap, np.uint8)
    hit_start = np.empty(hit_cap, np.int64)
    hit_end = np.empty(hit_cap, np.int64)
    val_off = np.zeros(hit_cap + 1, np.int64)
    val_buf = np.empty(val_cap, np.uint8)
    t_el = np.empty(max_tok, np.int64)
    t_co = np.empty(max_tok, np.int64)
    t_s = np.empty(max_tok, np.int64)
    t_e = np.empty(max_tok, np.int64)
    scratch = np.empty(64, np.uint8)
    ctr = np.zeros(4, np.int64)
    typ = np.array([85, 78, 72], np.uint8)  # UNH, S009 = element 2, comp 1 = message type
    nb = offsets.shape[0] - 1
    for j in range(m):
        i = sel[j]
        if i < 0 or i >= nb:
            status[j] = ST_EMPTY
            continue
        s = max(offsets[i], 0)
        e = min(offsets[i + 1], buf.shape[0])
        st, p, q, comp, elem, term, rel = edifact_setup(buf, s, e)
        if st != ST_OK:
            status[j] = st
            continue
        st, ns, a, b = classify_message(buf, i, p, q, comp, elem, term, rel, False, max_seg, max_tok,
                                        typ, 3, 2, 1, rules, qvals, qlens, t_el, t_co, t_s, t_e,
                                        scratch, ctr, hit_cap, val_cap, hit_msg, hit_class, hit_loc,
                                        hit_valid, hit_conf, hit_start, hit_end, val_off, val_buf)
        status[j] = st
        nsegs[j] = ns
        mt_s[j] = a
        mt_e[j] = b
    return (status, nsegs, mt_s, mt_e, hit_msg, hit_class, hit_loc, hit_valid, hit_conf,
            hit_start, hit_end, val_off, val_buf, ctr)
