"""Single-pass strict JSON (RFC 8259) scanner and classifier over whole batches.

One loop per message, an explicit stack (never recursion) capped at ``MAX_DEPTH`` containers.
It validates the grammar (no NaN/Infinity, no unquoted tokens, no trailing data, no BOM, no
control characters in strings, no lone surrogate escapes, well-formed UTF-8), decodes string
escapes only where a value must be classified, and classifies scalar values by where they sit.

Names
-----
Member names are compared after normalisation (ASCII lower case, only ``[a-z0-9]`` and non-ASCII
bytes kept), as 64-bit FNV-1a hashes: ``containerNumber``, ``container_number`` and
``Container Number`` are one name; ``carrierBookingReference`` is not ``reference``.  Each
member name is hashed ONCE, exactly (``dedupe.slice_hash`` over its decoded bytes, a word per
multiply; the exact hash lives only for the call); a per-call memo maps the
exact hash to the normalised hash and the first rule for that name, so the normalised hash is
computed once per distinct name and batch.  The exact hashes serve duplicate detection
(``{"a":1,"A":2}`` is no duplicate) and the location hash.

Locations
---------
A hit's location is its JSON path with array indices as ``[]`` (``$.events[].equipmentReference``).
The path is never copied per member: each depth keeps an incremental path hash
(``mix(parent hash, exact name hash)``; arrays mix a constant) and the raw span of its current
member name.  Only when a hit's path hash is not yet in the location table is the path string
built from the stack (``PATH_CAP`` bytes at most).

Rules (compiled by flowaudit/decode/json.py from schemas/catalog/json.toml)
---------------------------------------------------------------------------
``RH`` uint64 ``(n, 2)``: name hash, parent hash (0 = any; the parent is the name of the member
holding the value's object; array elements take the array's name).  ``RI`` int64 ``(n, RI_N)``:
class, confidence, value kind (``KIND_*``), mode (``MODE_CHECK``: only check-digit-valid values),
numbers allowed, next rule with the same name (-1), typed group (-1) and level.  ``rtab``: open
addressing table name hash -> first rule.

* A plain rule emits the value when its kind's recogniser accepts it (``KIND_TEXT``: any
  non-empty trimmed text, cut at ``VAL_MAX`` bytes; ``hit_valid`` -1).  The first plain rule
  that matches wins.
* ``KIND_FREE``: free text, searched for containers, IMO numbers, e-mail addresses, LEIs and
  USCIs (``free_scan``) at ``P[P_FT_CONF]``; a token whose preceding word is one of ``veto``
  (``booking``, ``iban``, ``sscc`` ...) is left out.
* Typed rules (group ``g``): the class comes from a sibling *type member* in the object
  ``level`` levels up (``documentReferenceType: "BKG"`` -> booking reference; Terminal49
  ``"type": "container"`` one level up).  The hit is pending until that object closes; then the
  type table ``TH``/``TI`` (value hash -> class, confidence, kind, mode; ``TV_NONE`` = no type
  member, ``TV_ANY`` = any other value) decides, and the kind's recogniser runs on the stored text.
  A ``KIND_TYPEKEY`` rule of group ``g`` marks the member that carries the type.

Embedded interchanges and field layers: every string value whose text starts (after white
space) with ``UNA``, ``UNB`` or ``UNH`` and a separator, ``ISA`` and a separator, ``GS*`` or ``ST*``,
or is a base64 run of at least ``B64_MIN`` characters (``B64_PACKED_MIN`` when it opens with a
gzip, zstd or zlib header; ``edi_marker``) is decoded into ``ebuf``
and listed in ``E`` (message, location, raw range, decoded offset and length) for
flowaudit/decode/embedded.py, which decides what it holds.

Outputs
-------
``st_out`` int32 ``(k, 3)``: status (REASONS code), values seen, flags (``FLAG_DUP_KEY``,
``FLAG_BIG_INT`` an integer beyond 2**53 (kept as text: numbers are never converted),
``FLAG_UNDERFLOW`` a number whose magnitude is below 1e-324 and not zero, ``FLAG_EMBEDDED`` a
string holding an EDIFACT interchange).  A number whose decimal exponent exceeds 308 (``1e400``)
is ``malformed_json``; a lone surrogate escape or invalid UTF-8 is ``invalid_utf8``.  A message
with a non-zero status has no hits.  ``H`` int64 ``(cap, H_N)`` hits, ``vbuf`` normalised values,
``loc_*`` the location table, ``ctr`` the counters.  Returns an overflow code: 0 none, 1 hit or
value arrays full, 2 location table full, 3 embedded arrays full: the shell reruns the batch with
bigger arrays.
"""
from __future__ import annotations

import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from ._jit import kernel
from .dedupe import slice_hash
from .detect import utf8_char
from .words import HIGH, ONES, copy_bytes, hex_digit, load_word, low_or_high, sep_mask
from .values import (next_container, next_email, next_imo, next_lei, next_usci, parse_container, parse_email,
                     parse_eori, parse_imo, parse_lei, parse_mmsi, parse_phone, parse_un_number, parse_usci)

MAX_DEPTH = 64
PATH_CAP = 256
VAL_MAX = 256          # text values are cut here (at a UTF-8 character boundary)
VAL_ROOM = VAL_MAX + 32
VAL_STRIDE = 16        # kept for callers of the old fixed-stride layout

FLAG_DUP_KEY = 1
FLAG_BIG_INT = 2
FLAG_UNDERFLOW = 4
FLAG_EMBEDDED = 8

ST_OK = 0
ST_EMPTY = 1
ST_INVALID_UTF8 = 5
ST_MALFORMED = 9
ST_TOO_DEEP = 12

# value kinds (recognisers)
KIND_TEXT, KIND_CONT, KIND_IMO, KIND_EMAIL, KIND_PHONE, KIND_LEI, KIND_USCI, KIND_EORI, \
    KIND_UN, KIND_MMSI = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9
KIND_FREE = 20
KIND_TYPEKEY = 21
KINDS = {"text": KIND_TEXT, "container": KIND_CONT, "imo": KIND_IMO, "email": KIND_EMAIL,
         "phone": KIND_PHONE, "lei": KIND_LEI, "usci": KIND_USCI, "eori": KIND_EORI,
         "un_number": KIND_UN, "mmsi": KIND_MMSI}
MODE_SHAPE = 0
MODE_CHECK = 1

# rule table columns
RH_KEY, RH_PARENT = 0, 1
RI_CLASS, RI_CONF, RI_KIND, RI_MODE, RI_NUM, RI_NEXT, RI_GROUP, RI_LEVEL, RI_NEXTP, RI_N = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9
# typed table columns
TI_GROUP, TI_CLASS, TI_CONF, TI_KIND, TI_MODE, TI_N = 0, 1, 2, 3, 4, 5
TV_NONE = np.uint64(0)
TV_ANY = np.uint64(1)
# hit columns
H_MSG, H_CLASS, H_LOC, H_VALID, H_CONF, H_START, H_END, H_KEEP, H_PEND, H_VOFF, H_VLEN, H_GROUP, H_N = \
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
# embedded columns
E_MSG, E_LOC, E_START, E_END, E_OFF, E_LEN, E_N = 0, 1, 2, 3, 4, 5, 6
# params
P_FT_CONF, P_C_CONT, P_C_IMO, P_C_EMAIL, P_C_LEI, P_C_USCI, P_N = 0, 1, 2, 3, 4, 5, 6
# counters
C_NH, C_NLOC, C_VCUR, C_NE, C_ECUR, C_N = 0, 1, 2, 3, 4, 5

MAX_TSLOT = 8          # type members remembered per object
KM_SIZE = 4096         # member-name memo slots per call

_TWO53 = np.frombuffer(b"9007199254740992", dtype=np.uint8).copy()

FNV_OFF = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
ARR_TOK = np.uint64(0x5B5D5B5D5B5D5B5D)
MEMO_SALT = np.uint64(0x9E3779B97F4A7C15)   # makes the (name, parent) memo key asymmetric
_QUOTES = np.uint64(0x2222222222222222)
_BSLASHES = np.uint64(0x5C5C5C5C5C5C5C5C)
_WS_SP, _WS_LF, _WS_CR, _WS_TAB = (ONES * np.uint64(c) for c in (32, 10, 13, 9))
ROOT_H = np.uint64(0x2424242424242424)
ROOT_PARENT = np.uint64(0xCBF29CE484222325)   # name_hash("$"): the parent of top-level members

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


@kernel(_nrt=False)
def hstep(h, b):
    """One step of the normalised-name hash (FNV-1a over lower-cased ``[a-z0-9]`` and non-ASCII)."""
    if 65 <= b <= 90:
        return (h ^ np.uint64(b + 32)) * FNV_PRIME
    if (97 <= b <= 122) or (48 <= b <= 57) or b >= 128:
        return (h ^ np.uint64(b)) * FNV_PRIME
    return h


@kernel
def name_hashes(buf, starts, ends):
    """:func:`name_hash` of each ``buf[starts[k]:ends[k]]`` (an empty or out-of-range slice hashes
    as the empty name), for names a shell would otherwise hash one Python loop each."""
    n = starts.shape[0]
    if ends.shape[0] != n:
        raise ValueError("starts and ends differ in length")
    out = np.empty(n, np.uint64)
    nb = buf.shape[0]
    for k in range(n):
        h = FNV_OFF
        s = starts[k]
        e = ends[k]
        if 0 <= s <= e <= nb:
            for p in range(s, e):
                h = hstep(h, buf[p])
        out[k] = h
    return out


@kernel(_nrt=False)
def mix(h, t):
    """Path hash step: parent path hash and one component's token."""
    h = (h ^ t) * FNV_PRIME
    return h ^ (h >> np.uint64(29))


@kernel(_nrt=False)
def hex4(buf, i, end):
    if i + 4 > end:
        return -1
    v = 0
    for k in range(4):
        d = hex_digit(buf[i + k])
        if d < 0:
            return -1
        v = v * 16 + d
    return v


@kernel(_nrt=False)
def _put(h, n, b, out, o, cap, mode):
    if mode >= 1:
        h = hstep(h, b)
    if mode == 2 and o + n < cap:
        out[o + n] = b
        n += 1
    return h, n


@kernel(_nrt=False)
def scan_str(buf, i, end, out, o, cap, mode):
    """Scan a JSON string whose opening quote is at ``i - 1``.

    ``mode`` 0 validates only, 1 also hashes the decoded name (normalised, :func:`hstep`), 2
    also writes the decoded bytes to ``out[o:cap]`` (silently cut at ``cap``).  Returns
    ``(next, n_written, normalised hash, escaped, err)``
    with err 0 ok, 1 malformed, 2 invalid UTF-8 / lone surrogate.
    """
    h = FNV_OFF
    n = 0
    esc = False
    while True:
        if i >= end:
            return i, n, h, esc, 1
        c = buf[i]
        if c == 34:
            return i + 1, n, h, esc, 0
        if c == 92:
            esc = True
            if i + 1 >= end:
                return i, n, h, esc, 1
            c1 = buf[i + 1]
            if c1 == 117:
                v = hex4(buf, i + 2, end)
                if v < 0:
                    return i, n, h, esc, 1
                i += 6
                if 0xD800 <= v <= 0xDBFF:
                    if i + 1 < end and buf[i] == 92 and buf[i + 1] == 117:
                        lo = hex4(buf, i + 2, end)
                        if lo < 0:
                            return i, n, h, esc, 1
                        if lo < 0xDC00 or lo > 0xDFFF:
                            return i, n, h, esc, 2
                        v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00)
                        i += 6
                    else:
                        return i, n, h, esc, 2
                elif 0xDC00 <= v <= 0xDFFF:
                    return i, n, h, esc, 2
                if mode >= 1:
                    if v < 0x80:
                        h, n = _put(h, n, v, out, o, cap, mode)
                    elif v < 0x800:
                        h, n = _put(h, n, 0xC0 | (v >> 6), out, o, cap, mode)
                        h, n = _put(h, n, 0x80 | (v & 0x3F), out, o, cap, mode)
                    elif v < 0x10000:
                        h, n = _put(h, n, 0xE0 | (v >> 12), out, o, cap, mode)
                        h, n = _put(h, n, 0x80 | ((v >> 6) & 0x3F), out, o, cap, mode)
                        h, n = _put(h, n, 0x80 | (v & 0x3F), out, o, cap, mode)
                    else:
                        h, n = _put(h, n, 0xF0 | (v >> 18), out, o, cap, mode)
                        h, n = _put(h, n, 0x80 | ((v >> 12) & 0x3F), out, o, cap, mode)
                        h, n = _put(h, n, 0x80 | ((v >> 6) & 0x3F), out, o, cap, mode)
                        h, n = _put(h, n, 0x80 | (v & 0x3F), out, o, cap, mode)
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
                return i, n, h, esc, 1
            if mode >= 1:
                h, n = _put(h, n, b, out, o, cap, mode)
            i += 2
            continue
        if c < 0x20:
            return i, n, h, esc, 1
        if c < 0x80:
            if mode >= 1:
                h, n = _put(h, n, c, out, o, cap, mode)
            i += 1
            continue
        k = utf8_char(buf, i, end)
        if k < 0:
            return i, n, h, esc, 2
        if mode >= 1:
            for t in range(k):
                h, n = _put(h, n, buf[i + t], out, o, cap, mode)
        i += k


@kernel(_nrt=False)
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




# --------------------------------------------------------------------------- recognisers
@kernel(_nrt=False, readonly=("buf",))
def rec_text(buf, s, e, out, o):
    """Trimmed text ``buf[s:e]`` into ``out[o:]`` (cut at ``VAL_MAX`` on a character boundary).
    Returns ``(2, n)`` (2: a value without a check digit) or ``(-1, 0)`` when empty."""
    while s < e and (buf[s] == 32 or buf[s] == 9 or buf[s] == 10 or buf[s] == 13):
        s += 1
    while e > s and (buf[e - 1] == 32 or buf[e - 1] == 9 or buf[e - 1] == 10 or buf[e - 1] == 13):
        e -= 1
    n = e - s
    if n <= 0:
        return -1, 0
    if n > VAL_MAX:
        n = VAL_MAX
        while n > 0 and (buf[s + n] & 0xC0) == 0x80:
            n -= 1
    copy_bytes(out, o, buf, s, n)
    return 2, n


@kernel(_nrt=False)
def next_none(buf, pos, end):
    return -1, -1


# Recognisers of kernels/values.py.  NB numba's cache does not track changes in values.py:
# clear kernels/__pycache__ after changing a recogniser there.
_parse_email = parse_email
_parse_phone = parse_phone
_parse_lei = parse_lei
_parse_usci = parse_usci
_parse_eori = parse_eori
_parse_un = parse_un_number
_parse_mmsi = parse_mmsi
_next_email = next_email
_next_lei = next_lei
_next_usci = next_usci


@kernel(_nrt=False, readonly=("src",))
def recognise(kind, src, s, e, out, o):
    """Value of kind ``kind`` in ``src[s:e]`` normalised into ``out[o:]``.

    Returns ``(valid, n)``: valid 1 check ok, 0 check wrong, -1 no check digit, -2 not this
    kind (no hit).  ``out`` has ``VAL_ROOM`` bytes free at ``o``."""
    if kind == KIND_CONT:
        v = parse_container(src, s, e, out, o)
        return (-2, 0) if v < 0 else (v, 11)
    if kind == KIND_IMO:
        v = parse_imo(src, s, e, out, o)
        return (-2, 0) if v < 0 else (v, 7)
    if kind == KIND_TEXT:
        v, n = rec_text(src, s, e, out, o)
    elif kind == KIND_EMAIL:
        v, n = _parse_email(src, s, e, out, o)
    elif kind == KIND_PHONE:
        v, n = _parse_phone(src, s, e, out, o)
    elif kind == KIND_LEI:
        v, n = _parse_lei(src, s, e, out, o)
    elif kind == KIND_USCI:
        v, n = _parse_usci(src, s, e, out, o)
    elif kind == KIND_EORI:
        v, n = _parse_eori(src, s, e, out, o)
    elif kind == KIND_UN:
        v, n = _parse_un(src, s, e, out, o)
    elif kind == KIND_MMSI:
        v, n = _parse_mmsi(src, s, e, out, o)
    else:
        v, n = rec_text(src, s, e, out, o)
    if v < 0 or n <= 0:
        return -2, 0
    if n > VAL_ROOM:
        n = VAL_ROOM
    if v == 2:
        return -1, n
    return v, n


# --------------------------------------------------------------------------- hits
@kernel(_nrt=False)
def emit(H, nh, m, cls, loc, valid, conf, rs, re_, keep, pend, voff, vlen, group):
    H[nh, H_MSG] = m
    H[nh, H_CLASS] = cls
    H[nh, H_LOC] = loc
    H[nh, H_VALID] = valid
    H[nh, H_CONF] = conf
    H[nh, H_START] = rs
    H[nh, H_END] = re_
    H[nh, H_KEEP] = keep
    H[nh, H_PEND] = pend
    H[nh, H_VOFF] = voff
    H[nh, H_VLEN] = vlen
    H[nh, H_GROUP] = group
    return nh + 1


@kernel(_nrt=False)
def has_room(H, vbuf, ctr):
    return ctr[C_NH] < H.shape[0] and ctr[C_VCUR] + VAL_ROOM <= vbuf.shape[0]


@kernel(_nrt=False, readonly=("src",))
def prev_word_hash(src, s, a):
    """Normalised hash of the word before ``a`` (skipping separators ``:#.-/`` and white space,
    and ``no``/``nr``/``number``), or 0 when there is none."""
    p = a
    for _round in range(2):
        while p > s and (src[p - 1] == 32 or src[p - 1] == 58 or src[p - 1] == 35 or src[p - 1] == 46
                         or src[p - 1] == 45 or src[p - 1] == 47 or src[p - 1] == 9 or src[p - 1] == 40
                         or src[p - 1] == 41):
            p -= 1
        q = p
        while q > s and q > p - 16 and ((65 <= src[q - 1] <= 90) or (97 <= src[q - 1] <= 122)):
            q -= 1
        if q == p:
            return np.uint64(0)
        h = FNV_OFF
        for k in range(q, p):
            h = hstep(h, src[k])
        if h != _H_NO and h != _H_NR and h != _H_NUMBER and h != _H_REF:
            return h
        p = q
    return np.uint64(0)


def _h(name):
    return np.uint64(name_hash(name))


_H_NO = _h("no")
_H_NR = _h("nr")
_H_NUMBER = _h("number")
_H_REF = _h("ref")


@kernel(_nrt=False, readonly=("src",))
def vetoed(veto, src, s, a):
    if veto.shape[0] == 0:
        return False
    h = prev_word_hash(src, s, a)
    if h == 0:
        return False
    for k in range(veto.shape[0]):
        if veto[k] == h:
            return True
    return False


@kernel(_nrt=False, readonly=("src",))
def free_one(finder, kind, cls, src, s, e, raw_s, raw_e, simple, m, loc, conf, veto, H, vbuf, ctr):
    """All tokens of one kind in ``src[s:e]``; False when the arrays are full."""
    p = s
    while p < e:
        if finder == 0:
            a, b = next_container(src, p, e)
        elif finder == 1:
            a, b = next_imo(src, p, e)
        elif finder == 2:
            a, b = _next_email(src, p, e)
        elif finder == 3:
            a, b = _next_lei(src, p, e)
        else:
            a, b = _next_usci(src, p, e)
        if a < 0 or b <= a or a < p or b > e:
            break
        if finder != 2 and finder != 1 and vetoed(veto, src, s, a):
            p = b
            continue
        if not has_room(H, vbuf, ctr):
            return False
        vo = ctr[C_VCUR]
        v, n = recognise(kind, src, a, b, vbuf, vo)
        if v != -2:
            rs = raw_s + (a - s) if simple else raw_s
            rend = raw_s + (b - s) if simple else raw_e
            ctr[C_NH] = emit(H, ctr[C_NH], m, cls, loc, v, conf, rs, rend, 1, -1, vo, n, -1)
            ctr[C_VCUR] = vo + n
        p = b
    return True


@kernel(_nrt=False, readonly=("src",))
def free_scan(src, s, e, raw_s, raw_e, simple, m, loc, P, veto, H, vbuf, ctr):
    """Containers, IMO numbers, e-mails, LEIs and USCIs in the decoded text ``src[s:e]``.

    ``simple``: the text is byte-for-byte the raw text at ``raw_s`` (no escapes), so a token's
    raw range is exact; otherwise the whole value ``[raw_s, raw_e)`` is reported."""
    conf = P[P_FT_CONF]
    if not free_one(0, KIND_CONT, P[P_C_CONT], src, s, e, raw_s, raw_e, simple, m, loc, conf, veto, H, vbuf, ctr):
        return False
    if not free_one(1, KIND_IMO, P[P_C_IMO], src, s, e, raw_s, raw_e, simple, m, loc, conf, veto, H, vbuf, ctr):
        return False
    if P[P_C_EMAIL] >= 0 and not free_one(2, KIND_EMAIL, P[P_C_EMAIL], src, s, e, raw_s, raw_e, simple, m,
                                          loc, conf, veto, H, vbuf, ctr):
        return False
    if P[P_C_LEI] >= 0 and not free_one(3, KIND_LEI, P[P_C_LEI], src, s, e, raw_s, raw_e, simple, m, loc,
                                        conf, veto, H, vbuf, ctr):
        return False
    if P[P_C_USCI] >= 0 and not free_one(4, KIND_USCI, P[P_C_USCI], src, s, e, raw_s, raw_e, simple, m, loc,
                                         conf, veto, H, vbuf, ctr):
        return False
    return True


@kernel(_nrt=False)
def set_type(tg, tv, ntv, d, g, th):
    """Remember the type value ``th`` of group ``g`` for the object at depth ``d`` (the last
    type member of a group wins; at most ``MAX_TSLOT`` groups per object)."""
    if th == TV_NONE or th == TV_ANY:
        th = np.uint64(2)
    for t in range(ntv[d]):
        if tg[t] == g:
            tv[t] = th
            return
    if ntv[d] < MAX_TSLOT:
        tg[ntv[d]] = g
        tv[ntv[d]] = th
        ntv[d] += 1


@kernel(_nrt=False)
def resolve(H, vbuf, d, h0, nh, tv_g, tv_v, ntv, TH, TI, tmp):
    """Decide the pending hits of depth ``d`` (hits ``h0..nh``) when that object closes."""
    for k in range(h0, nh):
        if H[k, H_PEND] != d:
            continue
        H[k, H_PEND] = -1
        H[k, H_KEEP] = 0
        g = H[k, H_GROUP]
        val = TV_NONE
        for t in range(ntv):
            if tv_g[t] == g:
                val = tv_v[t]
        row = -1
        alt = -1
        for t in range(TH.shape[0]):
            if TI[t, TI_GROUP] != g:
                continue
            if TH[t] == val:
                row = t
                break
            if val != TV_NONE and TH[t] == TV_ANY:
                alt = t
        if row < 0:
            row = alt
        if row < 0:
            continue
        vo = H[k, H_VOFF]
        vl = H[k, H_VLEN]
        for p in range(vl):
            tmp[p] = vbuf[vo + p]
        v, n = recognise(TI[row, TI_KIND], tmp, 0, vl, tmp, VAL_ROOM)
        if v == -2 or (TI[row, TI_MODE] == MODE_CHECK and v != 1):
            continue
        if n > vl + 16:
            n = vl + 16
        for p in range(n):
            vbuf[vo + p] = tmp[VAL_ROOM + p]
        H[k, H_VLEN] = n
        H[k, H_VALID] = v
        H[k, H_CLASS] = TI[row, TI_CLASS]
        H[k, H_CONF] = TI[row, TI_CONF]
        H[k, H_KEEP] = 1


# --------------------------------------------------------------------------- locations
@kernel(_nrt=False)
def intern_find(h, loc_hash, loc_table):
    """Index of the location with path hash ``h`` or -1; ``h`` must not be 0."""
    mask = loc_table.shape[0] - 1
    slot = np.int64(h & np.uint64(mask))
    while True:
        t = loc_table[slot]
        if t == 0:
            return -1
        if loc_hash[t - 1] == h:
            return t - 1
        slot = (slot + 1) & mask


@kernel(_nrt=False)
def intern_add(h, path, plen, loc_hash, loc_off, loc_buf, loc_table, ctr):
    """Add location ``path[:plen]`` with hash ``h``; its index, or -1 when the table is full."""
    nloc = ctr[C_NLOC]
    if nloc >= loc_hash.shape[0] or 2 * (nloc + 1) > loc_table.shape[0]:
        return -1
    o = loc_off[nloc]
    if o + plen > loc_buf.shape[0]:
        return -1
    for p in range(plen):
        loc_buf[o + p] = path[p]
    loc_off[nloc + 1] = o + plen
    loc_hash[nloc] = h
    mask = loc_table.shape[0] - 1
    slot = np.int64(h & np.uint64(mask))
    while loc_table[slot] != 0:
        slot = (slot + 1) & mask
    loc_table[slot] = nloc + 1
    ctr[C_NLOC] = nloc + 1
    return nloc


@kernel(_nrt=False)
def json_path(buf, e, d, kind, kst, ken, kesc, path):
    """Build ``$.a[].b`` for a value at depth ``d`` from the stack; returns its length."""
    path[0] = 36
    pl = 1
    for lv in range(d + 1):
        if kind[lv] == K_ARR:
            if pl + 2 <= PATH_CAP:
                path[pl] = 91
                path[pl + 1] = 93
                pl += 2
        else:
            if pl + 1 > PATH_CAP:
                break
            path[pl] = 46
            pl += 1
            if kesc[lv]:
                _, nw, _, _, _ = scan_str(buf, kst[lv], e, path, pl, PATH_CAP, 2)
                pl += nw
            else:
                for p in range(kst[lv], ken[lv]):
                    if pl >= PATH_CAP:
                        break
                    path[pl] = buf[p]
                    pl += 1
    return pl


@kernel(_nrt=False)
def find_rule(rtab, RH, h):
    mask = rtab.shape[0] - 1
    slot = np.int64(h & np.uint64(mask))
    while True:
        t = rtab[slot]
        if t == 0:
            return -1
        if RH[t - 1, RH_KEY] == h:
            return t - 1
        slot = (slot + 1) & mask


@kernel(_nrt=False)
def rules_for(rtab, RH, RI, h, par):
    """First rule of name ``h`` under parent ``par`` and first generic rule of ``h`` (-1 none).
    Rows of one (name, parent) are chained by ``RI_NEXTP``."""
    r = find_rule(rtab, RH, h)
    rs = -1
    rg = -1
    while r >= 0:
        p = RH[r, RH_PARENT]
        if p == 0:
            if rg < 0:
                rg = r
        elif p == par and rs < 0:
            rs = r
        r = RI[r, RI_NEXT]
    return rs, rg


@kernel(_nrt=False)
def next_rule(RI, r, rg, inspec):
    """The next rule of the walk: the parent-specific chain, then the generic one."""
    nx = RI[r, RI_NEXTP]
    if nx < 0 and inspec:
        return rg, False
    return nx, inspec


B64_MIN = 80   # base64-alphabet characters that make a string a candidate layer (> a hex SHA-256)
# ... or this many when the run opens with the base64 of a gzip, zstd or zlib header: a compressed
# layer however short (the gzip of a host name is ~40 bytes, 52 characters)
B64_PACKED_MIN = 24


@kernel(inline="always")
def b64_class(c):
    """1 for a base64 alphabet byte, 0 for padding and white space, -1 for anything else."""
    if (65 <= c <= 90) or (97 <= c <= 122) or (48 <= c <= 57) or c == 43 or c == 47:
        return 1
    if c == 61 or c == 32 or c == 10 or c == 13 or c == 9:
        return 0
    return -1


@kernel(inline="always")
def b64_digit(c):
    """The value (0..63) of a base64 alphabet byte (``b64_class`` 1), -1 for any other byte."""
    if 65 <= c <= 90:
        return c - 65
    if 97 <= c <= 122:
        return c - 71
    if 48 <= c <= 57:
        return c + 4
    if c == 43:
        return 62
    if c == 47:
        return 63
    return -1


@kernel(inline="always")
def b64_packed(buf, i, end):
    """Do the text's first four characters decode to a compressed stream's header: gzip
    (1f 8b 08, ``H4sI``), zstd (28 b5 2f, ``KLUv``) or zlib (78 and a check byte of 01, 5e, 9c
    or da)?  Four bytes of the text, about one random token in 16,000 (the zlib case)."""
    if end - i < 4:
        return False
    v0 = b64_digit(buf[i])
    v1 = b64_digit(buf[i + 1])
    v2 = b64_digit(buf[i + 2])
    v3 = b64_digit(buf[i + 3])
    if v0 < 0 or v1 < 0 or v2 < 0 or v3 < 0:
        return False
    b0 = (v0 << 2) | (v1 >> 4)
    b1 = ((v1 & 15) << 4) | (v2 >> 2)
    b2 = ((v2 & 3) << 6) | v3
    if b0 == 0x1F:
        return b1 == 0x8B and b2 == 8
    if b0 == 0x28:
        return b1 == 0xB5 and b2 == 0x2F
    return b0 == 0x78 and (b1 == 0x01 or b1 == 0x5E or b1 == 0x9C or b1 == 0xDA)


@kernel(inline="always")
def b64_need(buf, i, end):
    """The alphabet characters the text at ``i`` needs to be a layer: ``B64_PACKED_MIN`` after a
    compressed header (``b64_packed``), else ``B64_MIN``; 0 when the text is shorter than that."""
    if end - i < B64_PACKED_MIN:
        return 0
    need = B64_PACKED_MIN if b64_packed(buf, i, end) else B64_MIN
    return need if end - i >= need else 0


@kernel(_nrt=False)
def b64_run(buf, i, end):                    # not inlined: only long values get here
    """Is the text at ``i`` base64 up to its end (``"``, ``<`` or ``end``): at least ``B64_MIN``
    alphabet characters (``B64_PACKED_MIN`` after a compressed header, ``b64_packed``), then only
    padding, white space and the JSON escapes ``\\/ \\n \\r``?  Stops at the first other byte,
    and at once when the text is shorter than that: give it the string's end where it is known,
    so that a short value costs one comparison."""
    need = b64_need(buf, i, end)
    if need == 0:
        return False
    n = 0
    while i < end:
        c = buf[i]
        k = b64_class(c)
        if k == 1:
            n += 1
        elif c == 34 or c == 60:
            break
        elif c == 92 and i + 1 < end and (buf[i + 1] == 47 or buf[i + 1] == 110 or buf[i + 1] == 114):
            if buf[i + 1] == 47:
                n += 1
            i += 1
        elif k < 0:
            return False
        i += 1
    return n >= need


@kernel(inline="always")
def edi_head(buf, i, end):
    """Does the text at ``i`` start (after white space) with an interchange: ``UNA``, ``UNB`` or
    ``UNH`` followed by a separator (not a letter or digit: ``UNBELIEVABLE`` is prose; nor a
    quote, backslash or control character), ``ISA`` and a separator (not a space either),
    ``GS*`` or ``ST*`` (X12)?"""
    while i < end and (buf[i] == 32 or buf[i] == 10 or buf[i] == 13 or buf[i] == 9):
        i += 1
    if i + 3 >= end:
        return False
    a = buf[i]
    if a != 85 and a != 73 and a != 71 and a != 83:     # U I G S: most values stop here
        return False
    b = buf[i + 1]
    c = buf[i + 2]
    d = buf[i + 3]
    sep = not ((48 <= d <= 57) or (65 <= d <= 90) or (97 <= d <= 122) or d == 34 or d == 92 or d < 32)
    if a == 85 and b == 78 and (c == 65 or c == 66 or c == 72):
        return sep
    if a == 73 and b == 83 and c == 65 and sep and d != 32:
        return True
    return c == 42 and ((a == 71 and b == 83) or (a == 83 and b == 84))


@kernel(inline="always")
def edi_marker(buf, i, end):
    """``edi_head``, or a long base64 run (``b64_run``: base64, maybe of gzip / zlib / zstd;
    flowaudit/decode/embedded.py decides what it holds)."""
    return edi_head(buf, i, end) or (end - i >= B64_PACKED_MIN and b64_run(buf, i, end))


@kernel(_nrt=False)                          # not inlined: only escaped strings get here
def b64_text(buf, i, end):
    """Is ``buf[i:end]`` (a decoded text, its exact range) base64: only the alphabet, padding and
    white space, with at least ``B64_MIN`` alphabet characters (``B64_PACKED_MIN`` after a
    compressed header)?"""
    need = b64_need(buf, i, end)
    if need == 0:
        return False
    n = 0
    while i < end:
        k = b64_class(buf[i])
        if k < 0:
            return False
        n += k
        i += 1
    return n >= need


@kernel(inline="always")
def str_stops(w):
    """High bit set in each byte of the word ``w`` that ends a plain run of string text: ``"``,
    ``\\``, a control byte (< 0x20) or a non-ASCII byte.  The lowest set bit is exact (the
    borrows of the subtractions reach only bytes above a true stop)."""
    q = w ^ _QUOTES
    b = w ^ _BSLASHES
    return ((((q - ONES) & ~q) | ((b - ONES) & ~b)) & HIGH) | low_or_high(w)


@kernel(inline="always")
def next_stop(buf, i, end):
    """The first ``p`` in ``[i, end)`` where ``buf[p]`` is a :func:`str_stops` byte, else ``end``:
    eight bytes per step (a word load may read past ``end``, inside the buffer; its stops there
    are masked off)."""
    nb = buf.shape[0]
    while i < end:
        if i + 8 <= nb:
            m = str_stops(load_word(buf, i))
            r = end - i
            if r < 8:
                m &= (np.uint64(1) << np.uint64(8 * r)) - np.uint64(1)
            if m != 0:
                return i + (np.int64(trailing_zeros(m)) >> 3)
            i += 8
            continue
        c = buf[i]
        if c == 34 or c == 92 or c < 0x20 or c >= 0x80:
            return i
        i += 1
    return end


@kernel(inline="always")
def skip_ws(buf, i, end):
    """The first index in ``[i, end)`` that is not JSON whitespace, else ``end``.  Most tokens
    follow no whitespace (one compare); runs (indentation) go eight bytes a step."""
    if i >= end or buf[i] > 32:
        return i
    while i + 8 <= end:
        m = ~sep_mask(load_word(buf, i), _WS_SP, _WS_LF, _WS_CR, _WS_TAB) & HIGH
        if m != 0:
            return i + (np.int64(trailing_zeros(m)) >> 3)
        i += 8
    while i < end and (buf[i] == 32 or buf[i] == 10 or buf[i] == 13 or buf[i] == 9):
        i += 1
    return i


@kernel(inline="always")
def skip_str(buf, i, end):
    """Validate a string whose quote is at ``i - 1``; ``(next, err, escaped)`` (fast path)."""
    while True:
        i = next_stop(buf, i, end)
        if i >= end:
            return end, 1, False
        c = buf[i]
        if c == 34:
            return i + 1, 0, False
        if c == 92:
            return i, -1, True              # escapes: the caller rescans with scan_str
        if c < 0x20:
            return i, 1, False
        k = utf8_char(buf, i, end)
        if k < 0:
            return i, 2, False
        i += k


@kernel(inline="always")
def key_str(buf, i, end):
    """Member name at ``i`` (quote at ``i - 1``): ``(next, exact hash, err)`` for plain ASCII
    names; err -1 when the name needs the slow path (escapes, non-ASCII).  The exact hash is
    :func:`~kernels.dedupe.slice_hash` of the name's bytes, a word per multiply (FNV-1a's
    multiply per byte was a quarter of the JSON scan)."""
    p = next_stop(buf, i, end)
    if p >= end:
        return end, np.uint64(0), 1
    if buf[p] == 34:
        return p + 1, slice_hash(buf, i, p), 0
    return p, np.uint64(0), -1


# --------------------------------------------------------------------------- the scanner
def json_scan(buf, offsets, sel, RH, RI, rtab, TH, TI, veto, P,
              st_out, H, vbuf, loc_hash, loc_off, loc_buf, loc_table, E, ebuf, ctr, scratch, kstack):
    """Scan and classify the selected JSON messages.  See the module docstring.

    A Python function (nothing to compile): allocates the per-call work arrays and runs
    :func:`json_scan_run`, which is compiled without reference counting (``_nrt=False``: no
    atomic increments for every array a helper is handed)."""
    D = MAX_DEPTH + 1
    kind = np.zeros(D, dtype=np.int8)
    knorm = np.zeros(D, dtype=np.uint64)      # normalised name of the current member
    krule = np.full(D, -1, dtype=np.int64)    # first rule of that name under this parent
    kgen = np.full(D, -1, dtype=np.int64)     # first generic rule of that name
    parh = np.zeros(D, dtype=np.uint64)       # normalised name the object sits under
    ph = np.zeros(D + 1, dtype=np.uint64)     # path hash; ph[d + 1] = depth d
    kst = np.zeros(D, dtype=np.int64)
    ken = np.zeros(D, dtype=np.int64)
    kesc = np.zeros(D, dtype=np.bool_)
    first_hit = np.zeros(D, dtype=np.int64)
    npend = np.zeros(D, dtype=np.int64)
    kstart = np.zeros(D, dtype=np.int64)
    tv_g = np.zeros((D, MAX_TSLOT), dtype=np.int64)
    tv_v = np.zeros((D, MAX_TSLOT), dtype=np.uint64)
    ntv = np.zeros(D, dtype=np.int64)
    path = np.zeros(PATH_CAP + 8, dtype=np.uint8)
    tmp = np.zeros(2 * VAL_ROOM + 16, dtype=np.uint8)
    km = np.zeros((KM_SIZE, 4), dtype=np.uint64)   # memo slot: key, normalised name, rule, generic rule
    kbits = np.zeros(D, dtype=np.uint64)      # per object: one bit per name hash's top 6 bits
    msalt = np.zeros(D, dtype=np.uint64)      # per object: its parent's name, salted, for the memo key
    kdup = np.zeros(D, dtype=np.bool_)        # per object: a name seen twice
    return json_scan_run(buf, offsets, sel, RH, RI, rtab, TH, TI, veto, P, st_out, H, vbuf, loc_hash, loc_off,
                         loc_buf, loc_table, E, ebuf, ctr, scratch, kstack,
                         kind, knorm, krule, kgen, parh, ph, kst, ken, kesc, first_hit, npend, kstart, tv_g, tv_v,
                         ntv, path, tmp, km, kbits, kdup, msalt)


@kernel(_nrt=False)
def json_scan_run(buf, offsets, sel, RH, RI, rtab, TH, TI, veto, P,
                  st_out, H, vbuf, loc_hash, loc_off, loc_buf, loc_table, E, ebuf, ctr, scratch, kstack,
                  kind, knorm, krule, kgen, parh, ph, kst, ken, kesc, first_hit, npend, kstart, tv_g, tv_v, ntv,
                  path, tmp, km, kbits, kdup, msalt):
    """The scanner of :func:`json_scan` (work arrays allocated by it, zeroed; ``krule`` and ``kgen``
    filled with -1)."""
    nb = buf.shape[0]
    nmsg = offsets.shape[0] - 1
    kcap = kstack.shape[0]
    scap = scratch.shape[0]
    km_fill = 0
    kmask = KM_SIZE - 1
    ph[0] = ROOT_H
    for j in range(sel.shape[0]):
        m = sel[j]
        if m < 0 or m >= nmsg:
            st_out[j, 0] = ST_MALFORMED
            continue
        s = offsets[m]
        e = offsets[m + 1]
        if s < 0 or e > nb or e < s:
            st_out[j, 0] = ST_MALFORMED
            continue
        if e == s:
            st_out[j, 0] = ST_EMPTY
            continue
        nh0 = ctr[C_NH]
        vc0 = ctr[C_VCUR]
        ne0 = ctr[C_NE]
        ec0 = ctr[C_ECUR]
        st = ST_OK
        fl = 0
        nv = 0
        d = -1
        ktop = 0
        state = S_VALUE
        done = False
        i = s
        while True:
            i = skip_ws(buf, i, e)
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
                    ks = i + 1
                    hn = FNV_OFF
                    i, hr, err = key_str(buf, ks, e)
                    esc = False
                    if err == -1:
                        # escapes or non-ASCII: the exact hash is of the decoded name, so that
                        # "a" and "\u0061" are one name (duplicates, memo, path)
                        esc = True
                        i, nw, hn, _e2, err = scan_str(buf, ks, e, scratch, 0, scap, 2)
                        if err != 0:
                            st = ST_MALFORMED if err == 1 else ST_INVALID_UTF8
                            break
                        hr = slice_hash(scratch, 0, nw if nw <= scap else scap)
                    elif err != 0:
                        st = ST_MALFORMED
                        break
                    kst[d] = ks
                    ken[d] = i - 1
                    kesc[d] = esc
                    # (exact name, parent) -> normalised name and its rules, memoised per call
                    # memo key: one xor (the parent's share is mixed once, when the object opens;
                    # hr and the parent's hash are different functions, so (a, b) is not (b, a))
                    mk = hr ^ msalt[d]
                    if mk == 0:
                        mk = np.uint64(1)
                    slot = np.int64(mk & np.uint64(kmask))
                    found = False
                    while km[slot, 0] != 0:
                        if km[slot, 0] == mk:
                            found = True
                            break
                        slot = (slot + 1) & kmask
                    if found:
                        hn = km[slot, 1]
                        r0 = np.int64(km[slot, 2])
                        rg = np.int64(km[slot, 3])
                    else:
                        if not esc:
                            hn = FNV_OFF
                            for p in range(ks, i - 1):
                                hn = hstep(hn, buf[p])
                        r0, rg = rules_for(rtab, RH, RI, hn, parh[d])
                        if km_fill < (KM_SIZE * 3) // 4:
                            km[slot, 0] = mk
                            km[slot, 1] = hn
                            km[slot, 2] = np.uint64(r0)
                            km[slot, 3] = np.uint64(rg)
                            km_fill += 1
                    knorm[d] = hn
                    krule[d] = r0
                    kgen[d] = rg
                    ph[d + 1] = mix(ph[d], hr)
                    if ktop < kcap:
                        # duplicates: exact names, not normalised; the object's names are compared
                        # only when the name's bit is already set (not all pairs at the close)
                        bit = np.uint64(1) << (hr >> np.uint64(58))
                        if kbits[d] & bit:
                            for q in range(kstart[d], ktop):
                                if kstack[q] == hr:
                                    kdup[d] = True
                                    break
                        kbits[d] |= bit
                        kstack[ktop] = hr
                        ktop += 1
                    i = skip_ws(buf, i, e)
                    if i >= e or buf[i] != 58:
                        st = ST_MALFORMED
                        break
                    i += 1
                    state = S_VALUE
                    continue
                else:
                    st = ST_MALFORMED
                    break
            elif c == 93 and state == S_VALUE_OR_END:
                state = -1
            if state == -1:
                # close the container at depth d
                if kind[d] == K_OBJ:
                    if kdup[d]:
                        fl |= FLAG_DUP_KEY
                    ktop = kstart[d]
                if npend[d] > 0:
                    resolve(H, vbuf, d, first_hit[d], ctr[C_NH], tv_g[d], tv_v[d], ntv[d], TH, TI, tmp)
                    npend[d] = 0
                d -= 1
                i += 1
                state = S_AFTER
                if d < 0:
                    done = True
                continue
            # a value is expected (S_VALUE or S_VALUE_OR_END)
            nv += 1
            if c == 123 or c == 91:
                if d + 1 >= MAX_DEPTH:
                    st = ST_TOO_DEEP
                    break
                if d >= 0:
                    ckey = knorm[d]
                    cpar = parh[d]
                    crule = krule[d]
                    cgen = kgen[d]
                else:
                    ckey = ROOT_PARENT
                    cpar = ROOT_PARENT
                    crule = -1
                    cgen = -1
                d += 1
                first_hit[d] = ctr[C_NH]
                npend[d] = 0
                ntv[d] = 0
                if c == 123:
                    kind[d] = K_OBJ
                    parh[d] = ckey
                    msalt[d] = mix(ckey, MEMO_SALT)
                    knorm[d] = np.uint64(0)
                    krule[d] = -1
                    kgen[d] = -1
                    kstart[d] = ktop
                    kbits[d] = np.uint64(0)
                    kdup[d] = False
                    ph[d + 1] = ph[d]
                    state = S_KEY_OR_END
                else:
                    kind[d] = K_ARR
                    knorm[d] = ckey
                    krule[d] = crule
                    kgen[d] = cgen
                    parh[d] = cpar
                    ph[d + 1] = mix(ph[d], ARR_TOK)
                    state = S_VALUE_OR_END
                i += 1
                continue
            state = S_AFTER
            if d < 0:
                done = True
            if c == 34:
                cs = i + 1
                r0 = krule[d] if d >= 0 else -1
                rg = kgen[d] if d >= 0 else -1
                inspec = r0 >= 0
                if not inspec:
                    r0 = rg
                i, err, esc = skip_str(buf, cs, e)
                if err > 0:
                    st = ST_MALFORMED if err == 1 else ST_INVALID_UTF8
                    break
                if err == 0:
                    # no escapes: the raw bytes are the text, classified in place
                    emb = edi_marker(buf, cs, i)         # b64_run stops at the closing quote
                    if r0 < 0 and not emb and d >= 0:
                        continue
                    src = buf
                    s0 = cs
                    e0 = i - 1
                else:
                    # escapes: the decoded text is what is looked at (an interchange or a layer
                    # written with \u escapes is one all the same)
                    i, nw, hv, esc, err = scan_str(buf, cs, e, scratch, 0, scap, 2)
                    if err != 0:
                        st = ST_MALFORMED if err == 1 else ST_INVALID_UTF8
                        break
                    src = scratch
                    s0 = 0
                    e0 = nw if nw <= scap else scap
                    emb = edi_head(scratch, 0, e0) or b64_text(scratch, 0, e0)
                    if r0 < 0 and not emb and d >= 0:
                        continue
                ce = i - 1
                cpar = parh[d] if d >= 0 else ROOT_PARENT
                loc = -1
                lh = ph[d + 1]
                if lh == 0:
                    lh = np.uint64(1)
                loc = intern_find(lh, loc_hash, loc_table)
                if loc < 0:
                    plen = json_path(buf, e, d, kind, kst, ken, kesc, path)
                    loc = intern_add(lh, path, plen, loc_hash, loc_off, loc_buf, loc_table, ctr)
                    if loc < 0:
                        return 2
                if emb:
                    fl |= FLAG_EMBEDDED
                    ne = ctr[C_NE]
                    eo = ctr[C_ECUR]
                    nw = e0 - s0
                    if ne >= E.shape[0] or eo + nw > ebuf.shape[0]:
                        return 3
                    for p in range(nw):
                        ebuf[eo + p] = src[s0 + p]
                    E[ne, E_MSG] = m
                    E[ne, E_LOC] = loc
                    E[ne, E_START] = cs
                    E[ne, E_END] = ce
                    E[ne, E_OFF] = eo
                    E[ne, E_LEN] = nw
                    ctr[C_NE] = ne + 1
                    ctr[C_ECUR] = eo + nw
                if d < 0 and not emb:
                    # a bare string document is free text
                    if not free_scan(src, s0, e0, cs, ce, not esc, m, loc, P, veto, H, vbuf, ctr):
                        return 1
                    continue
                plain = False
                free = False
                r = r0
                while r >= 0:
                    if True:
                        rk = RI[r, RI_KIND]
                        if rk == KIND_TYPEKEY:
                            th = FNV_OFF
                            for p in range(s0, e0):
                                th = hstep(th, src[p])
                            set_type(tv_g[d], tv_v[d], ntv, d, RI[r, RI_GROUP], th)
                        elif rk == KIND_FREE:
                            if not free and not emb:
                                free = True
                                if not free_scan(src, s0, e0, cs, ce, not esc, m, loc, P, veto, H, vbuf, ctr):
                                    return 1
                        elif RI[r, RI_GROUP] >= 0:
                            pd = d - RI[r, RI_LEVEL]
                            if pd >= 0 and kind[pd] == K_OBJ:
                                if not has_room(H, vbuf, ctr):
                                    return 1
                                vo = ctr[C_VCUR]
                                v, n = rec_text(src, s0, e0, vbuf, vo)
                                if v >= 0:
                                    ctr[C_NH] = emit(H, ctr[C_NH], m, RI[r, RI_CLASS], loc, -1, RI[r, RI_CONF],
                                                     cs, ce, 0, pd, vo, n, RI[r, RI_GROUP])
                                    ctr[C_VCUR] = vo + n + 16
                                    npend[pd] += 1
                        elif not plain:
                            if not has_room(H, vbuf, ctr):
                                return 1
                            vo = ctr[C_VCUR]
                            v, n = recognise(rk, src, s0, e0, vbuf, vo)
                            if v != -2 and not (RI[r, RI_MODE] == MODE_CHECK and v != 1):
                                plain = True
                                ctr[C_NH] = emit(H, ctr[C_NH], m, RI[r, RI_CLASS], loc, v, RI[r, RI_CONF],
                                                 cs, ce, 1, -1, vo, n, -1)
                                ctr[C_VCUR] = vo + n
                    r, inspec = next_rule(RI, r, rg, inspec)
                continue
            if c == 45 or (48 <= c <= 57):
                ns = i
                i, err, nf = scan_number(buf, i, e)
                if err != 0:
                    st = ST_MALFORMED
                    break
                fl |= nf
                if d >= 0 and (krule[d] >= 0 or kgen[d] >= 0):
                    rg = kgen[d]
                    inspec = krule[d] >= 0
                    r = krule[d] if inspec else rg
                    while r >= 0:
                        if RI[r, RI_NUM] == 1 and RI[r, RI_GROUP] < 0:
                            if not has_room(H, vbuf, ctr):
                                return 1
                            vo = ctr[C_VCUR]
                            v, n = recognise(RI[r, RI_KIND], buf, ns, i, vbuf, vo)
                            if v != -2 and not (RI[r, RI_MODE] == MODE_CHECK and v != 1):
                                lh = ph[d + 1]
                                if lh == 0:
                                    lh = np.uint64(1)
                                loc = intern_find(lh, loc_hash, loc_table)
                                if loc < 0:
                                    plen = json_path(buf, e, d, kind, kst, ken, kesc, path)
                                    loc = intern_add(lh, path, plen, loc_hash, loc_off, loc_buf, loc_table, ctr)
                                    if loc < 0:
                                        return 2
                                ctr[C_NH] = emit(H, ctr[C_NH], m, RI[r, RI_CLASS], loc, v, RI[r, RI_CONF],
                                                 ns, i, 1, -1, vo, n, -1)
                                ctr[C_VCUR] = vo + n
                            break
                        r, inspec = next_rule(RI, r, rg, inspec)
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
        st_out[j, 0] = st
        st_out[j, 1] = nv
        st_out[j, 2] = fl
        if st != ST_OK:
            ctr[C_NH] = nh0
            ctr[C_VCUR] = vc0
            ctr[C_NE] = ne0
            ctr[C_ECUR] = ec0
    return 0


@kernel
def split_hits(H, nh, vbuf):
    """The kept hits of ``H[:nh]`` as FormatResult columns and contiguous values (``vbuf``: at
    least the bytes the rows point into).

    One pass over the rows: the columns are allocated for all ``nh`` rows and the values for all
    of ``vbuf``, and views of the part written are returned (a first pass to count the kept rows
    read every row twice).  The kept values mostly lie back to back in ``vbuf`` already (gaps
    only after grouped and dropped hits), so they are copied a run of adjacent values at a time,
    not value by value."""
    msg = np.empty(nh, dtype=np.int64)
    cls = np.empty(nh, dtype=np.int16)
    loc = np.empty(nh, dtype=np.int32)
    valid = np.empty(nh, dtype=np.int8)
    conf = np.empty(nh, dtype=np.uint8)
    start = np.empty(nh, dtype=np.int64)
    end = np.empty(nh, dtype=np.int64)
    val_off = np.empty(nh + 1, dtype=np.int64)
    vals = np.empty(vbuf.shape[0], dtype=np.uint8)
    val_off[0] = 0
    j = 0
    run_src = 0            # the run of adjacent values not yet copied: vbuf[run_src:run_src + run_len]
    run_len = 0
    for k in range(nh):
        if H[k, H_KEEP] == 1:
            msg[j] = H[k, H_MSG]
            cls[j] = H[k, H_CLASS]
            loc[j] = H[k, H_LOC]
            valid[j] = H[k, H_VALID]
            conf[j] = H[k, H_CONF]
            start[j] = H[k, H_START]
            end[j] = H[k, H_END]
            ln = H[k, H_VLEN]
            o = H[k, H_VOFF]
            if o < 0 or ln < 0 or o + ln > vbuf.shape[0] or val_off[j] + ln > vals.shape[0]:
                raise ValueError("a hit's value lies outside vbuf, or values overlap")
            if o != run_src + run_len:
                b = val_off[j] - run_len
                copy_bytes(vals, b, vbuf, run_src, run_len)
                run_src = o
                run_len = 0
            run_len += ln
            val_off[j + 1] = val_off[j] + ln
            j += 1
    nv = val_off[j]
    copy_bytes(vals, nv - run_len, vbuf, run_src, run_len)
    return (msg[:j], cls[:j], loc[:j], valid[:j], conf[:j], start[:j], end[:j], val_off[:j + 1], vals[:nv])
