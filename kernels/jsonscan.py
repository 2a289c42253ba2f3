"""Single-pass strict JSON (RFC 8259) scanner and classifier over whole batches.

One loop per message, an explicit stack (never recursion) capped at ``MAX_DEPTH`` containers.
It validates the grammar (no NaN/Infinity, no unquoted tokens, no trailing data, no BOM, no
control characters in strings, no lone surrogate escapes, well-formed UTF-8), decodes string
escapes only where a value must be classified, and classifies scalar values by where they sit:

* ``key``: the hash of the nearest member name (array elements inherit the array's name);
* ``parent``: the hash of the member name of the object holding that member;
* ``type``: for JSON:API resources (Terminal49), whether the object that holds the value's
  object has a member ``"type": "container"``.  That member may come after ``attributes``, so
  such a hit stays *pending* until that object closes.

Names are compared after normalisation (ASCII lower case, only ``[a-z0-9]`` and non-ASCII bytes
kept), as 64-bit FNV-1a hashes: ``containerNumber``, ``container_number`` and
``Container Number`` are the same name; ``carrierBookingReference`` is not ``reference``.

Rule arrays (compiled by flowaudit/decode/json.py from schemas/catalog/json.toml):
``r_key``/``r_parent``/``r_type`` uint64 (0 = any), ``r_class`` int16, ``r_conf`` uint8,
``r_num`` uint8 (1: a JSON number is also a candidate, for IMO numbers), ``ft_keys`` uint64
(free-text member names, scanned with values.next_container/next_imo at ``ft_conf``).

Per message: ``status`` (REASONS code), ``n_values`` (values seen), ``flags``
(``FLAG_DUP_KEY``, ``FLAG_BIG_INT`` an integer beyond 2**53 (kept as text: numbers are never
converted), ``FLAG_UNDERFLOW`` a number whose magnitude is below 1e-324 and not zero).
A number whose decimal exponent exceeds 308 (``1e400``) is ``malformed_json``; a lone surrogate
escape or invalid UTF-8 is ``invalid_utf8``.  A message with a non-zero status has no hits.

Hit locations are JSON paths with array indices as ``[]`` (``$.events[].equipmentReference``),
interned in a table (``loc_hash``/``loc_off``/``loc_buf``), paths cut at ``PATH_CAP`` bytes.
The kernel returns ``(n_hits, n_locs, overflow)``; overflow 1 = hit arrays full, 2 = location
table full: the shell reruns the batch with bigger arrays.
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel
from .detect import utf8_char
from .values import next_container, next_imo, parse_container, parse_imo

MAX_DEPTH = 64
PATH_CAP = 256
VAL_STRIDE = 16

FLAG_DUP_KEY = 1
FLAG_BIG_INT = 2
FLAG_UNDERFLOW = 4

ST_OK = 0
ST_EMPTY = 1
ST_INVALID_UTF8 = 5
ST_MALFORMED = 9
ST_TOO_DEEP = 12

_TWO53 = np.frombuffer(b"9007199254740992", dtype=np.uint8).copy()

FNV_OFF = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)

K_OBJ = 1
K_ARR = 2

S_VALUE = 0          # a value is expected
S_VALUE_OR_END = 1   # first element of an array, or ']'
S_KEY = 2            # a member name is expected
S_KEY_OR_END = 3     # first member of an object, or '}'
S_AFTER = 4          # ',' or the closing bracket (or the end, at the top)


def name_hash(name: str) -> int:
    """Python twin of ``hstep``: the normalised-name hash the rules are compiled to."""
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        if 65 <= b <= 90:
            b += 32
        elif not (97 <= b <= 122 or 48 <= b <= 57 or b >= 128):
            continue
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@kernel(inline="always")
def hstep(h, b):
    """One step of the normalised-name hash (FNV-1a over lower-cased ``[a-z0-9]`` and non-ASCII)."""
    if 65 <= b <= 90:
        return (h ^ np.uint64(b + 32)) * FNV_PRIME
    if (97 <= b <= 122) or (48 <= b <= 57) or b >= 128:
        return (h ^ np.uint64(b)) * FNV_PRIME
    return h


@kernel(inline="always")
def hex4(buf, i, end):
    if i + 4 > end:
        return -1
    v = 0
    for k in range(4):
        c = buf[i + k]
        if 48 <= c <= 57:
            d = c - 48
        elif 97 <= c <= 102:
            d = c - 87
        elif 65 <= c <= 70:
            d = c - 55
        else:
            return -1
        v = v * 16 + d
    return v


@kernel(inline="always")
def _put(h, hr, n, b, out, o, cap, mode):
    if mode >= 1:
        h = hstep(h, b)
        hr = (hr ^ np.uint64(b)) * FNV_PRIME
    if mode == 2 and o + n < cap:
        out[o + n] = b
        n += 1
    return h, hr, n


@kernel
def scan_str(buf, i, end, out, o, cap, mode):
    """Scan a JSON string whose opening quote is at ``i - 1``.

    ``mode`` 0 validates only, 1 also hashes the decoded name, 2 also writes the decoded bytes
    to ``out[o:cap]`` (silently cut at ``cap``).  Returns
    ``(next, n_written, normalised hash, raw hash, escaped, err)``
    with err 0 ok, 1 malformed, 2 invalid UTF-8 / lone surrogate.
    """
    h = FNV_OFF
    hr = FNV_OFF
    n = 0
    esc = False
    while True:
        if i >= end:
            return i, n, h, hr, esc, 1
        c = buf[i]
        if c == 34:
            return i + 1, n, h, hr, esc, 0
        if c == 92:
            esc = True
            if i + 1 >= end:
                return i, n, h, hr, esc, 1
            c1 = buf[i + 1]
            if c1 == 117:
                v = hex4(buf, i + 2, end)
                if v < 0:
                    return i, n, h, hr, esc, 1
                i += 6
                if 0xD800 <= v <= 0xDBFF:
                    if i + 1 < end and buf[i] == 92 and buf[i + 1] == 117:
                        lo = hex4(buf, i + 2, end)
                        if lo < 0:
                            return i, n, h, hr, esc, 1
                        if lo < 0xDC00 or lo > 0xDFFF:
                            return i, n, h, hr, esc, 2
                        v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00)
                        i += 6
                    else:
                        return i, n, h, hr, esc, 2
                elif 0xDC00 <= v <= 0xDFFF:
                    return i, n, h, hr, esc, 2
                if mode >= 1:
                    if v < 0x80:
                        h, hr, n = _put(h, hr, n, v, out, o, cap, mode)
                    elif v < 0x800:
                        h, hr, n = _put(h, hr, n, 0xC0 | (v >> 6), out, o, cap, mode)
                        h, hr, n = _put(h, hr, n, 0x80 | (v & 0x3F), out, o, cap, mode)
                    elif v < 0x10000:
                        h, hr, n = _put(h, hr, n, 0xE0 | (v >> 12), out, o, cap, mode)
                        h, hr, n = _put(h, hr, n, 0x80 | ((v >> 6) & 0x3F), out, o, cap, mode)
                        h, hr, n = _put(h, hr, n, 0x80 | (v & 0x3F), out, o, cap, mode)
                    else:
                        h, hr, n = _put(h, hr, n, 0xF0 | (v >> 18), out, o, cap, mode)
                        h, hr, n = _put(h, hr, n, 0x80 | ((v >> 12) & 0x3F), out, o, cap, mode)
                        h, hr, n = _put(h, hr, n, 0x80 | ((v >> 6) & 0x3F), out, o, cap, mode)
                        h, hr, n = _put(h, hr, n, 0x80 | (v & 0x3F), out, o, cap, mode)
                continue
            if c1 == 34 or c1 == 92 or c1 == 47:
                b = c1
            elif c1 == 98:
                b = 8
            elif c1 == 102:
                b = 12
            elif c1 == 110:
                b = 10
            elif c1 == 114:
                b = 13
            elif c1 == 116:
                b = 9
            else:
                return i, n, h, hr, esc, 1
            if mode >= 1:
                h, hr, n = _put(h, hr, n, b, out, o, cap, mode)
            i += 2
            continue
        if c < 0x20:
            return i, n, h, hr, esc, 1
        if c < 0x80:
            if mode >= 1:
                h, hr, n = _put(h, hr, n, c, out, o, cap, mode)
            i += 1
            continue
        k = utf8_char(buf, i, end)
        if k < 0:
            return i, n, h, hr, esc, 2
        if mode >= 1:
            for t in range(k):
                h, hr, n = _put(h, hr, n, buf[i + t], out, o, cap, mode)
        i += k


@kernel
def scan_number(buf, i, end):
    """Scan a JSON number at ``i``.  Returns ``(next, err, flags)``; err 1 malformed/overflow."""
    j = i
    if j < end and buf[j] == 45:
        j += 1
    if j >= end:
        return j, 1, 0
    c = buf[j]
    int_s = j
    if c == 48:
        j += 1
    elif 49 <= c <= 57:
        while j < end and 48 <= buf[j] <= 57:
            j += 1
    else:
        return j, 1, 0
    int_e = j
    frac_s = j
    frac_e = j
    if j < end and buf[j] == 46:
        j += 1
        frac_s = j
        while j < end and 48 <= buf[j] <= 57:
            j += 1
        frac_e = j
        if frac_e == frac_s:
            return j, 1, 0
    ex = 0
    has_exp = False
    if j < end and (buf[j] == 101 or buf[j] == 69):
        has_exp = True
        j += 1
        neg = False
        if j < end and (buf[j] == 43 or buf[j] == 45):
            neg = buf[j] == 45
            j += 1
        es = j
        while j < end and 48 <= buf[j] <= 57:
            if ex < 100000000:
                ex = ex * 10 + (buf[j] - 48)
            j += 1
        if j == es:
            return j, 1, 0
        if neg:
            ex = -ex
    flags = 0
    # adjusted decimal exponent of the first non-zero digit
    adj = 0
    nz = False
    for p in range(int_s, int_e):
        if buf[p] != 48:
            adj = (int_e - 1 - p) + ex
            nz = True
            break
    if not nz:
        for p in range(frac_s, frac_e):
            if buf[p] != 48:
                adj = -(p - frac_s + 1) + ex
                nz = True
                break
    if nz:
        if adj > 308:
            return j, 1, 0
        if adj < -324:
            flags |= FLAG_UNDERFLOW
    if not has_exp and frac_e == frac_s:
        nd = int_e - int_s
        if nd > 16:
            flags |= FLAG_BIG_INT
        elif nd == 16:
            for p in range(16):
                a = buf[int_s + p]
                b = _TWO53[p]
                if a != b:
                    if a > b:
                        flags |= FLAG_BIG_INT
                    break
    return j, 0, flags


@kernel(inline="always")
def raw_hash(a, s, e):
    h = FNV_OFF
    for p in range(s, e):
        h = (h ^ np.uint64(a[p])) * FNV_PRIME
    return h


@kernel
def intern_loc(path, plen, loc_hash, loc_off, loc_buf, table, nloc):
    """Index of the location ``path[:plen]`` in the table; adds it; -1 when the table is full."""
    h = raw_hash(path, 0, plen)
    if h == 0:
        h = np.uint64(1)
    mask = table.shape[0] - 1
    slot = np.int64(h & np.uint64(mask))
    while True:
        t = table[slot]
        if t == 0:
            break
        if loc_hash[t - 1] == h:
            return t - 1, nloc
        slot = (slot + 1) & mask
    if nloc >= loc_hash.shape[0]:
        return -1, nloc
    o = loc_off[nloc]
    if o + plen > loc_buf.shape[0]:
        return -1, nloc
    for p in range(plen):
        loc_buf[o + p] = path[p]
    loc_off[nloc + 1] = o + plen
    loc_hash[nloc] = h
    table[slot] = nloc + 1
    return nloc, nloc + 1


@kernel
def emit(nh, m, cls, loc, valid, conf, rs, re_, keep, pend,
         hit_msg, hit_class, hit_loc, hit_valid, hit_conf, hit_start, hit_end, hit_keep, hit_pend):
    hit_msg[nh] = m
    hit_class[nh] = cls
    hit_loc[nh] = loc
    hit_valid[nh] = valid
    hit_conf[nh] = conf
    hit_start[nh] = rs
    hit_end[nh] = re_
    hit_keep[nh] = keep
    hit_pend[nh] = pend
    return nh + 1


@kernel
def free_text(src, s, e, raw_s, raw_e, simple, m, loc, conf, c_cont, c_imo, nh,
              hit_msg, hit_class, hit_loc, hit_valid, hit_conf, hit_start, hit_end, hit_keep,
              hit_pend, val_buf):
    """Scan decoded text ``src[s:e]`` for container and IMO tokens; returns new nh or -1 (full).

    ``simple``: the decoded text is byte-for-byte the raw text at ``raw_s`` (no escapes), so a
    token's raw range is exact; otherwise the whole value ``[raw_s, raw_e)`` is reported.
    """
    cap = hit_msg.shape[0]
    p = s
    while p < e:
        a, b = next_container(src, p, e)
        if a < 0:
            break
        if nh >= cap:
            return -1
        v = parse_container(src, a, b, val_buf, nh * VAL_STRIDE)
        if v >= 0:
            rs = raw_s + (a - s) if simple else raw_s
            rend = raw_s + (b - s) if simple else raw_e
            nh = emit(nh, m, c_cont, loc, v, conf, rs, rend, 1, -1, hit_msg, hit_class, hit_loc,
                      hit_valid, hit_conf, hit_start, hit_end, hit_keep, hit_pend)
        p = b if b > p else p + 1
    p = s
    while p < e:
        a, b = next_imo(src, p, e)
        if a < 0:
            break
        if nh >= cap:
            return -1
        v = parse_imo(src, a, b, val_buf, nh * VAL_STRIDE)
        if v >= 0:
            rs = raw_s + (a - s) if simple else raw_s
            rend = raw_s + (b - s) if simple else raw_e
            nh = emit(nh, m, c_imo, loc, v, conf, rs, rend, 1, -1, hit_msg, hit_class, hit_loc,
                      hit_valid, hit_conf, hit_start, hit_end, hit_keep, hit_pend)
        p = b if b > p else p + 1
    return nh


@kernel
def match_rule(r_key, r_parent, r_num, key, parent, is_num):
    for r in range(r_key.shape[0]):
        if r_key[r] == key and (r_parent[r] == 0 or r_parent[r] == parent) and (not is_num or r_num[r] == 1):
            return r
    return -1


@kernel
def is_free(ft_keys, key):
    for r in range(ft_keys.shape[0]):
        if ft_keys[r] == key:
            return True
    return False


@kernel
def dup_in(ks, s, e):
    n = e - s
    if n < 2:
        return False
    if n <= 32:
        for a in range(s, e):
            for b in range(a + 1, e):
                if ks[a] == ks[b]:
                    return True
        return False
    srt = np.sort(ks[s:e])
    for a in range(1, n):
        if srt[a] == srt[a - 1]:
            return True
    return False


@kernel
def json_scan(buf, offsets, sel,
              r_key, r_parent, r_type, r_class, r_conf, r_num, ft_keys, ft_conf,
              c_cont, c_imo, type_key, type_val,
              status, n_values, flags,
              hit_msg, hit_class, hit_loc, hit_valid, hit_conf, hit_start, hit_end, hit_keep,
              hit_pend, val_buf,
              loc_hash, loc_off, loc_buf, loc_table, scratch, kstack):
    """Scan and classify the selected JSON messages.  See the module docstring."""
    nb = buf.shape[0]
    nmsg = offsets.shape[0] - 1
    cap_hits = hit_msg.shape[0]
    kcap = kstack.shape[0]
    scap = scratch.shape[0]
    kind = np.zeros(MAX_DEPTH + 1, dtype=np.int8)
    keyh = np.zeros(MAX_DEPTH + 1, dtype=np.uint64)
    parh = np.zeros(MAX_DEPTH + 1, dtype=np.uint64)
    tflag = np.zeros(MAX_DEPTH + 1, dtype=np.int8)
    base = np.zeros(MAX_DEPTH + 1, dtype=np.int64)
    first_hit = np.zeros(MAX_DEPTH + 1, dtype=np.int64)
    npend = np.zeros(MAX_DEPTH + 1, dtype=np.int64)
    kstart = np.zeros(MAX_DEPTH + 1, dtype=np.int64)
    path = np.zeros(PATH_CAP + 8, dtype=np.uint8)
    nh = 0
    nloc = 0
    for j in range(sel.shape[0]):
        m = sel[j]
        if m < 0 or m >= nmsg:
            status[j] = ST_MALFORMED
            continue
        s = offsets[m]
        e = offsets[m + 1]
        if s < 0 or e > nb or e < s:
            status[j] = ST_MALFORMED
            continue
        if e == s:
            status[j] = ST_EMPTY
            continue
        msg_hit0 = nh
        st = ST_OK
        fl = 0
        nv = 0
        d = -1
        ktop = 0
        state = S_VALUE
        done = False
        path[0] = 36  # $
        plen = 1
        i = s
        while True:
            while i < e and (buf[i] == 32 or buf[i] == 10 or buf[i] == 13 or buf[i] == 9):
                i += 1
            if i >= e:
                if not done:
                    st = ST_MALFORMED
                break
            c = buf[i]
            if state == S_AFTER:
                if d < 0:
                    st = ST_MALFORMED        # trailing data
                    break
                if c == 44:
                    state = S_KEY if kind[d] == K_OBJ else S_VALUE
                    i += 1
                    continue
                if (c == 125 and kind[d] == K_OBJ) or (c == 93 and kind[d] == K_ARR):
                    state = -1               # close below
                else:
                    st = ST_MALFORMED
                    break
            elif state == S_KEY or state == S_KEY_OR_END:
                if c == 125 and state == S_KEY_OR_END:
                    state = -1
                elif c == 34:
                    path[base[d]] = 46   # .
                    i, nw, h, hr, esc, err = scan_str(buf, i + 1, e, path, base[d] + 1, PATH_CAP, 2)
                    if err != 0:
                        st = ST_MALFORMED if err == 1 else ST_INVALID_UTF8
                        break
                    plen = base[d] + 1 + nw
                    keyh[d] = h
                    if ktop < kcap:
                        kstack[ktop] = hr      # duplicates: exact names, not normalised
                        ktop += 1
                    while i < e and (buf[i] == 32 or buf[i] == 10 or buf[i] == 13 or buf[i] == 9):
                        i += 1
                    if i >= e or buf[i] != 58:
                        st = ST_MALFORMED
                        break
                    i += 1
                    state = S_VALUE
                    continue
                else:
                    st = ST_MALFORMED
                    break
            if state == -1:
                # close the container at depth d
                if kind[d] == K_OBJ:
                    if dup_in(kstack, kstart[d], ktop):
                        fl |= FLAG_DUP_KEY
                    ktop = kstart[d]
                if npend[d] > 0:
                    for h2 in range(first_hit[d], nh):
                        if hit_pend[h2] == d:
                            hit_pend[h2] = -1
                            hit_keep[h2] = tflag[d]
                    npend[d] = 0
                d -= 1
                i += 1
                state = S_AFTER
                if d < 0:
                    done = True
                continue
            # a value is expected (S_VALUE or S_VALUE_OR_END)
            if c == 93 and state == S_VALUE_OR_END:
                state = -1
                # re-dispatch the close
                if npend[d] > 0:
                    for h2 in range(first_hit[d], nh):
                        if hit_pend[h2] == d:
                            hit_pend[h2] = -1
                            hit_keep[h2] = tflag[d]
                    npend[d] = 0
                d -= 1
                i += 1
                state = S_AFTER
                if d < 0:
                    done = True
                continue
            if d >= 0:
                ckey = keyh[d]
                cpar = parh[d]
                if kind[d] == K_ARR:
                    plen = base[d]
            else:
                ckey = np.uint64(0)
                cpar = np.uint64(0)
            nv += 1
            if c == 123 or c == 91:
                if d + 1 >= MAX_DEPTH:
                    st = ST_TOO_DEEP
                    break
                d += 1
                first_hit[d] = nh
                npend[d] = 0
                tflag[d] = 0
                if c == 123:
                    kind[d] = K_OBJ
                    parh[d] = ckey
                    keyh[d] = np.uint64(0)
                    base[d] = plen
                    kstart[d] = ktop
                    state = S_KEY_OR_END
                else:
                    kind[d] = K_ARR
                    keyh[d] = ckey
                    parh[d] = cpar
                    if plen + 2 <= PATH_CAP:
                        path[plen] = 91
                        path[plen + 1] = 93
                        plen += 2
                    base[d] = plen
                    state = S_VALUE_OR_END
                i += 1
                continue
            state = S_AFTER
            if d < 0:
                done = True
            if c == 34:
                is_type = d >= 0 and kind[d] == K_OBJ and ckey == type_key
                r = -1
                ft = False
                if d >= 0:
                    r = match_rule(r_key, r_parent, r_num, ckey, cpar, False)
                    if r < 0:
                        ft = is_free(ft_keys, ckey)
                else:
                    ft = True        # a bare string document (e.g. an embedded interchange)
                mode = 2 if (r >= 0 or ft) else (1 if is_type else 0)
                cs = i + 1
                i, nw, h, hr, esc, err = scan_str(buf, i + 1, e, scratch, 0, scap, mode)
                if err != 0:
                    st = ST_MALFORMED if err == 1 else ST_INVALID_UTF8
                    break
                ce = i - 1
                if is_type and h == type_val:
                    tflag[d] = 1
                if r >= 0 or ft:
                    loc, nloc = intern_loc(path, plen, loc_hash, loc_off, loc_buf, loc_table, nloc)
                    if loc < 0:
                        return nh, nloc, 2
                if r >= 0:
                    cls = r_class[r]
                    if nh >= cap_hits:
                        return nh, nloc, 1
                    if cls == c_cont:
                        v = parse_container(scratch, 0, nw, val_buf, nh * VAL_STRIDE)
                    elif cls == c_imo:
                        v = parse_imo(scratch, 0, nw, val_buf, nh * VAL_STRIDE)
                    else:
                        v = -1
                    if v >= 0:
                        keep = 1
                        pend = -1
                        if r_type[r] != 0:
                            if d >= 1 and kind[d - 1] == K_OBJ:
                                if tflag[d - 1] == 0:
                                    keep = 0
                                    pend = d - 1
                                    npend[d - 1] += 1
                            else:
                                keep = 0
                        if keep == 1 or pend >= 0:
                            nh = emit(nh, m, cls, loc, v, r_conf[r], cs, ce, keep, pend, hit_msg,
                                      hit_class, hit_loc, hit_valid, hit_conf, hit_start, hit_end,
                                      hit_keep, hit_pend)
                elif ft:
                    nh = free_text(scratch, 0, nw, cs, ce, not esc, m, loc, ft_conf, c_cont, c_imo,
                                   nh, hit_msg, hit_class, hit_loc, hit_valid, hit_conf, hit_start,
                                   hit_end, hit_keep, hit_pend, val_buf)
                    if nh < 0:
                        return cap_hits, nloc, 1
                continue
            if c == 45 or (48 <= c <= 57):
                ns = i
                i, err, nf = scan_number(buf, i, e)
                if err != 0:
                    st = ST_MALFORMED
                    break
                fl |= nf
                if d >= 0:
                    r = match_rule(r_key, r_parent, r_num, ckey, cpar, True)
                    if r >= 0 and r_class[r] == c_imo and r_type[r] == 0:
                        if nh >= cap_hits:
                            return nh, nloc, 1
                        v = parse_imo(buf, ns, i, val_buf, nh * VAL_STRIDE)
                        if v >= 0:
                            loc, nloc = intern_loc(path, plen, loc_hash, loc_off, loc_buf, loc_table, nloc)
                            if loc < 0:
                                return nh, nloc, 2
                            nh = emit(nh, m, c_imo, loc, v, r_conf[r], ns, i, 1, -1, hit_msg,
                                      hit_class, hit_loc, hit_valid, hit_conf, hit_start, hit_end,
                                      hit_keep, hit_pend)
                continue
            if c == 116 and i + 4 <= e and buf[i + 1] == 114 and buf[i + 2] == 117 and buf[i + 3] == 101:
                i += 4
                continue
            if c == 102 and i + 5 <= e and buf[i + 1] == 97 and buf[i + 2] == 108 and buf[i + 3] == 115 and buf[i + 4] == 101:
                i += 5
                continue
            if c == 110 and i + 4 <= e and buf[i + 1] == 117 and buf[i + 2] == 108 and buf[i + 3] == 108:
                i += 4
                continue
            st = ST_MALFORMED
            break
        status[j] = st
        n_values[j] = nv
        flags[j] = fl
        if st != ST_OK:
            nh = msg_hit0
    return nh, nloc, 0
