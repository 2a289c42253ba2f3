"""Single-pass, non-expanding XML scanner and classifier over whole batches.

The scanner walks the markup itself (no libxml2): start/end/empty-element tags (attributes are
skipped, but their values are checked), comments, CDATA sections, processing instructions and
the XML declaration.  It keeps a stack of element local names (prefixes stripped: rules are
namespace-agnostic), decodes the five predefined entities and character references in text, and
classifies the text of leaf elements by local-name path rules.

Refused before anything is classified:

* ``forbidden_xml_construct``: any ``<!DOCTYPE``/``<!ENTITY``/other ``<!`` declaration, an
  ``xi:include`` element or any attribute whose value is the XInclude namespace, a reference to
  any entity other than ``lt gt amp apos quot``.  Nothing is ever expanded or fetched.
* ``malformed_xml``: mismatched, unclosed or truncated tags, text outside the root, a second
  root, ``]]>`` in text, ``--`` inside a comment, bad character references, control characters,
  an XML declaration not at the start.
* ``too_deep``: more than ``MAX_DEPTH`` (256, libxml2's limit) nested elements.
* ``too_large``: one text run longer than ``MAX_TEXT`` (10 MB, libxml2's limit).
* ``invalid_utf8``: the bytes are not UTF-8; ``bad_charset``: the declaration names an encoding
  other than UTF-8 / ASCII.

Rules (compiled by flowaudit/decode/xml.py from schemas/catalog/xml.toml with the same compiler
and tables as JSON, see kernels/jsonscan.py): an element's LOCAL name plays the member name, its
parent element's local name the parent (``"$"``: the root element).  Only the text of leaf
elements is classified (text split by comments or CDATA sections is joined).  Plain rules emit
the text when the class's recogniser accepts it; typed rules take the class from a sibling
element (WCO ``BorderTransportMeans/ID`` by ``IdentificationTypeCode``: 10 IMO number, 11 vessel
name, none: an IMO number only when its check digit is right; UBL ``DocumentReference/ID`` by
``DocumentTypeCode``), decided when the parent element closes; free-text elements are searched
with the value recognisers (kernels/jsonscan.free_scan).  A leaf whose text is a candidate interchange or
layer (``jsonscan.edi_marker``: EDIFACT / X12 headers, long base64; also inside CDATA) is decoded
into ``ebuf``/``E`` for flowaudit/decode/embedded.py.

Names are hashed once per start tag, exactly (for the location hash) and normalised (for the
rules, memoised per call); the location ``/Root/Child/Leaf`` is built from the element stack
only when a new location is interned.

Message type: the root's local name, or, when the root is a wrapper (``wrappers``), the first
element named in ``documents`` (``MetaData/Declaration`` -> ``Declaration``); returned as a raw
byte span in ``mt``.  Outputs as for JSON (``st_out``, ``H``, ``vbuf``, locations, ``E``/``ebuf``,
``ctr``); returns an overflow code (0 none).
"""
from __future__ import annotations

import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from ._jit import kernel
from .detect import utf8_char
from .jsonscan import (B64_PACKED_MIN, C_ECUR, C_NE, C_NH, C_VCUR, E_END, E_LEN, E_LOC, E_MSG, E_OFF, E_START, FNV_OFF,
                       KIND_FREE, KIND_TYPEKEY, MAX_TSLOT, MEMO_SALT, MODE_CHECK, PATH_CAP, RI_CLASS,
                       RI_CONF, RI_GROUP, RI_KIND, RI_LEVEL, RI_MODE, ROOT_H, edi_marker, emit, free_scan,
                       b64_run, b64_text, edi_head, has_room, hstep, intern_add, intern_find, mix, name_hash, next_rule, rec_text, recognise,
                       resolve, rules_for, set_type)
from .dedupe import slice_hash
from .words import hex_digit, load_word, low_or_high

MAX_DEPTH = 256
MAX_TEXT = 10 * 1024 * 1024
VAL_ROOM_X = 256 + 32
KM_SIZE_X = 4096
FLAG_EMBEDDED = 8
ROOT_PARENT_X = np.uint64(0xCBF29CE484222325)   # name_hash("$"): the parent of the root element

ST_OK = 0
ST_EMPTY = 1
ST_TOO_LARGE = 3
ST_INVALID_UTF8 = 5
ST_MALFORMED = 10
ST_FORBIDDEN = 11
ST_TOO_DEEP = 12
ST_BAD_CHARSET = 13

_XINCLUDE_NS = np.frombuffer(b"http://www.w3.org/2001/XInclude", dtype=np.uint8).copy()


@kernel(_nrt=False)
def is_name_start(c):
    return (65 <= c <= 90) or (97 <= c <= 122) or c == 95 or c == 58 or c >= 128


@kernel(_nrt=False)
def is_name_char(c):
    return (65 <= c <= 90) or (97 <= c <= 122) or (48 <= c <= 57) or c == 95 or c == 58 or c == 45 or c == 46 or c >= 128


@kernel(_nrt=False)
def is_ws(c):
    return c == 32 or c == 9 or c == 10 or c == 13


@kernel(_nrt=False)
def prepass(buf, s, e):
    """0 ok, ST_INVALID_UTF8, or ST_MALFORMED (a control character XML does not allow).  Plain
    ASCII goes eight bytes a step; a control or non-ASCII byte is looked at on its own."""
    i = s
    while i < e:
        if i + 8 <= e:
            m = low_or_high(load_word(buf, i))
            if m == 0:
                i += 8
                continue
            i += np.int64(trailing_zeros(m)) >> 3
        c = buf[i]
        if c < 0x80:
            if c < 32 and c != 9 and c != 10 and c != 13:
                return ST_MALFORMED
            i += 1
            continue
        k = utf8_char(buf, i, e)
        if k < 0:
            return ST_INVALID_UTF8
        i += k
    return ST_OK


@kernel(_nrt=False)
def entity(buf, i, end):
    """Reference at ``buf[i] == '&'``.  Returns ``(next, code point, err)``: err 0 ok,
    ST_MALFORMED, or ST_FORBIDDEN (an entity other than the five predefined ones)."""
    j = i + 1
    if j >= end:
        return j, 0, ST_MALFORMED
    if buf[j] == 35:                                   # &#
        j += 1
        hexa = j < end and buf[j] == 120
        if hexa:
            j += 1
        ds = j
        v = 0
        while j < end and buf[j] != 59:
            c = buf[j]
            dgt = hex_digit(c) if hexa else (c - 48 if 48 <= c <= 57 else -1)
            if dgt < 0:
                return j, 0, ST_MALFORMED
            v = v * (16 if hexa else 10) + dgt
            if v > 0x10FFFF:
                return j, 0, ST_MALFORMED
            j += 1
        if j >= end or j == ds:
            return j, 0, ST_MALFORMED
        if not (v == 9 or v == 10 or v == 13 or (0x20 <= v <= 0xD7FF) or (0xE000 <= v <= 0xFFFD)
                or (0x10000 <= v <= 0x10FFFF)):
            return j, 0, ST_MALFORMED
        return j + 1, v, ST_OK
    if not is_name_start(buf[j]):
        return j, 0, ST_MALFORMED
    ns = j
    while j < end and is_name_char(buf[j]):
        j += 1
    if j >= end or buf[j] != 59:
        return j, 0, ST_MALFORMED
    n = j - ns
    a = buf[ns]
    v = -1
    if n == 2 and buf[ns + 1] == 116 and a == 108:
        v = 60                                          # lt
    elif n == 2 and buf[ns + 1] == 116 and a == 103:
        v = 62                                          # gt
    elif n == 3 and a == 97 and buf[ns + 1] == 109 and buf[ns + 2] == 112:
        v = 38                                          # amp
    elif n == 4 and a == 97 and buf[ns + 1] == 112 and buf[ns + 2] == 111 and buf[ns + 3] == 115:
        v = 39                                          # apos
    elif n == 4 and a == 113 and buf[ns + 1] == 117 and buf[ns + 2] == 111 and buf[ns + 3] == 116:
        v = 34                                          # quot
    if v < 0:
        return j, 0, ST_FORBIDDEN
    return j + 1, v, ST_OK


@kernel(_nrt=False)
def put_cp(out, o, cap, v):
    if v < 0x80:
        if o < cap:
            out[o] = v
            o += 1
    elif v < 0x800:
        if o + 2 <= cap:
            out[o] = 0xC0 | (v >> 6)
            out[o + 1] = 0x80 | (v & 0x3F)
            o += 2
    elif v < 0x10000:
        if o + 3 <= cap:
            out[o] = 0xE0 | (v >> 12)
            out[o + 1] = 0x80 | ((v >> 6) & 0x3F)
            out[o + 2] = 0x80 | (v & 0x3F)
            o += 3
    else:
        if o + 4 <= cap:
            out[o] = 0xF0 | (v >> 18)
            out[o + 1] = 0x80 | ((v >> 12) & 0x3F)
            out[o + 2] = 0x80 | ((v >> 6) & 0x3F)
            out[o + 3] = 0x80 | (v & 0x3F)
            o += 4
    return o


@kernel(_nrt=False)
def find2(buf, i, end, a, b, c):
    """Position of the 3-byte sequence ``a b c`` at or after ``i``, or -1."""
    while i + 2 < end:
        if buf[i] == a and buf[i + 1] == b and buf[i + 2] == c:
            return i
        i += 1
    return -1


@kernel(_nrt=False)
def decl_encoding_span(buf, s, e):
    """The ``encoding`` value of the XML declaration ``buf[s:e]``: ``(start, end)``, ``(-1, -1)``
    when absent, ``(-2, -2)`` when malformed."""
    i = s
    while i + 8 <= e:
        if (buf[i] == 101 and buf[i + 1] == 110 and buf[i + 2] == 99 and buf[i + 3] == 111
                and buf[i + 4] == 100 and buf[i + 5] == 105 and buf[i + 6] == 110 and buf[i + 7] == 103):
            j = i + 8
            while j < e and is_ws(buf[j]):
                j += 1
            if j >= e or buf[j] != 61:
                return -2, -2
            j += 1
            while j < e and is_ws(buf[j]):
                j += 1
            if j >= e or (buf[j] != 34 and buf[j] != 39):
                return -2, -2
            q = buf[j]
            j += 1
            vs = j
            while j < e and buf[j] != q:
                j += 1
            if j >= e:
                return -2, -2
            return vs, j
        i += 1
    return -1, -1


@kernel(_nrt=False)
def decl_encoding_ok(buf, s, e):
    """Is the ``encoding`` pseudo-attribute of the XML declaration ``buf[s:e]`` absent or UTF-8/ASCII?"""
    vs, ve = decl_encoding_span(buf, s, e)
    if vs == -1:
        return True
    if vs < 0:
        return False
    h = FNV_OFF
    for p in range(vs, ve):
        h = hstep(h, buf[p])
    return h == _H_UTF8 or h == _H_USASCII or h == _H_ASCII


@kernel
def declared_encoding(buf, offsets, sel):
    """Per selected message ``(declaration end, encoding start, encoding end, BOM)`` (int64, m x 4):
    the XML declaration ``<?xml ...?>`` at the start (after an optional UTF-8 BOM, BOM = 1) ends
    before ``declaration end`` (-1: no declaration); the ``encoding`` value is
    ``buf[start:end]`` (-1: none, -2: malformed).  Offsets are absolute in ``buf``."""
    m = sel.shape[0]
    out = np.full((m, 4), -1, np.int64)
    nb = buf.shape[0]
    nmsg = offsets.shape[0] - 1
    for j in range(m):
        k = sel[j]
        if k < 0 or k >= nmsg:
            continue
        s = min(max(offsets[k], 0), nb)
        e = min(max(offsets[k + 1], s), nb)
        i = s
        out[j, 3] = 0
        if i + 2 < e and buf[i] == 0xEF and buf[i + 1] == 0xBB and buf[i + 2] == 0xBF:
            i += 3
            out[j, 3] = 1
        if i + 5 < e and buf[i] == 60 and buf[i + 1] == 63 and buf[i + 2] == 120 and buf[i + 3] == 109 \
                and buf[i + 4] == 108 and is_ws(buf[i + 5]):
            q = i + 5
            while q + 1 < e and not (buf[q] == 63 and buf[q + 1] == 62):
                q += 1
            if q + 1 < e:
                out[j, 0] = q + 2
                vs, ve = decl_encoding_span(buf, i + 5, q)
                out[j, 1] = vs
                out[j, 2] = ve
    return out


def _h(name: str):
    return np.uint64(name_hash(name))


_H_UTF8 = _h("utf-8")
_H_USASCII = _h("us-ascii")
_H_ASCII = _h("ascii")
_H_INCLUDE = _h("include")
_H_XI = _h("xi")


@kernel(_nrt=False)
def text_head(buf, i, end):
    """``jsonscan.edi_head`` as a call: it is inlined at numba's IR level (typed and lowered again
    at every call site), and the scanner asks it only once per text run of a leaf without rules."""
    return edi_head(buf, i, end)


@kernel(_nrt=False, readonly=("buf",))
def leaf_text(buf, s, e, out, cap):
    """The character data of a leaf's content ``buf[s:e]``, which the scanner has already found
    well-formed, into ``out[:cap]`` (cut before the first character that does not fit); returns
    its length.  References are decoded, CDATA sections give their text, comments and processing
    instructions nothing."""
    n = 0
    i = s
    while i < e and n < cap:
        c = buf[i]
        if c == 38:
            i, v, err = entity(buf, i, e)
            if err != 0:
                return n
            k = put_cp(out, n, cap, v)
            if k == n:                  # the character does not fit: the text so far
                return n
            n = k
            continue
        if c == 60:
            if i + 8 < e and buf[i + 1] == 33 and buf[i + 2] == 91:          # <![CDATA[
                k = find2(buf, i + 9, e, 93, 93, 62)
                if k < 0:
                    return n
                for p in range(i + 9, k):
                    if n < cap:
                        out[n] = buf[p]
                        n += 1
                i = k + 3
            elif i + 3 < e and buf[i + 1] == 33 and buf[i + 2] == 45 and buf[i + 3] == 45:     # <!--
                k = find2(buf, i + 4, e, 45, 45, 62)
                if k < 0:
                    return n
                i = k + 3
            elif i + 1 < e and buf[i + 1] == 63:                               # <?
                k = i + 2
                while k + 1 < e and not (buf[k] == 63 and buf[k + 1] == 62):
                    k += 1
                i = k + 2
            else:
                return n
            continue
        out[n] = c
        n += 1
        i += 1
    return n


@kernel(_nrt=False, readonly=("buf",))
def leaf_marker(buf, i, end):
    """``jsonscan.edi_marker`` as a call (``buf``: the batch or the decoded text), once per leaf."""
    return edi_marker(buf, i, end)


@kernel(_nrt=False)
def in_set(arr, h):
    for r in range(arr.shape[0]):
        if arr[r] == h:
            return True
    return False


@kernel(_nrt=False)
def xml_path(buf, d, name_s, name_e, path):
    """``/Root/.../Leaf`` (local names) for the element at depth ``d``; returns its length."""
    pl = 0
    for lv in range(d + 1):
        if pl >= PATH_CAP:
            break
        path[pl] = 47
        pl += 1
        ls = name_s[lv]
        for p in range(name_s[lv], name_e[lv]):
            if buf[p] == 58:
                ls = p + 1
        for p in range(ls, name_e[lv]):
            if pl >= PATH_CAP:
                break
            path[pl] = buf[p]
            pl += 1
    return pl


def xml_scan(buf, offsets, sel, RH, RI, rtab, TH, TI, veto, P,
             st_out, H, vbuf, loc_hash, loc_off, loc_buf, loc_table, E, ebuf, ctr, scratch, kstack,
             wrappers, documents, mt):
    """Scan and classify the selected XML messages.  See the module docstring.
    (``kstack`` is unused: the JSON and XML kernels share one driver.)

    A Python function (nothing to compile): allocates the per-call work arrays and runs
    :func:`xml_scan_run`, compiled without reference counting (``_nrt=False``), like
    ``jsonscan.json_scan_run``."""
    D = MAX_DEPTH + 1
    name_s = np.zeros(D, dtype=np.int64)
    name_e = np.zeros(D, dtype=np.int64)
    lh = np.zeros(D, dtype=np.uint64)         # normalised local name
    ph = np.zeros(D + 1, dtype=np.uint64)     # path hash; ph[d + 1] = element at depth d
    rule = np.zeros(D, dtype=np.int64)        # first rule of the element's name under its parent
    rgen = np.zeros(D, dtype=np.int64)        # first generic rule of the element's name
    acc = np.zeros(D, dtype=np.int8)          # 1: its text is wanted (a rule, free text, type, EDIFACT)
    child = np.zeros(D, dtype=np.int8)
    first_hit = np.zeros(D, dtype=np.int64)
    npend = np.zeros(D, dtype=np.int64)
    tv_g = np.zeros((D, MAX_TSLOT), dtype=np.int64)
    tv_v = np.zeros((D, MAX_TSLOT), dtype=np.uint64)
    ntv = np.zeros(D, dtype=np.int64)
    path = np.zeros(PATH_CAP + 8, dtype=np.uint8)
    tmp = np.zeros(2 * VAL_ROOM_X + 16, dtype=np.uint8)
    km = np.zeros((KM_SIZE_X, 4), dtype=np.uint64)   # memo slot: key, normalised name, rule, generic rule
    msalt = np.zeros(D + 1, dtype=np.uint64)  # msalt[d + 1]: the element at depth d as a parent, salted
    return xml_scan_run(buf, offsets, sel, RH, RI, rtab, TH, TI, veto, P, st_out, H, vbuf, loc_hash, loc_off,
                        loc_buf, loc_table, E, ebuf, ctr, scratch, wrappers, documents, mt,
                        name_s, name_e, lh, ph, rule, rgen, acc, child, first_hit, npend, tv_g, tv_v, ntv, path, tmp,
                        km, msalt)


@kernel(_nrt=False)
def xml_scan_run(buf, offsets, sel, RH, RI, rtab, TH, TI, veto, P,
                 st_out, H, vbuf, loc_hash, loc_off, loc_buf, loc_table, E, ebuf, ctr, scratch,
                 wrappers, documents, mt, name_s, name_e, lh, ph, rule, rgen, acc, child, first_hit, npend, tv_g, tv_v,
                 ntv, path, tmp, km, msalt):
    """The scanner of :func:`xml_scan` (work arrays allocated and zeroed by it)."""
    nb = buf.shape[0]
    nmsg = offsets.shape[0] - 1
    scap = scratch.shape[0]
    km_fill = 0
    kmask = KM_SIZE_X - 1
    ph[0] = ROOT_H
    msalt[0] = mix(ROOT_PARENT_X, MEMO_SALT)
    for j in range(sel.shape[0]):
        m = sel[j]
        mt[j, 0] = -1
        mt[j, 1] = -1
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
        fl = 0
        i = s
        if i + 2 < e and buf[i] == 0xEF and buf[i + 1] == 0xBB and buf[i + 2] == 0xBF:
            i += 3
        doc0 = i
        st = ST_OK
        # a declared non-UTF-8 encoding is reported as such, before the bytes are checked
        if i + 5 < e and buf[i] == 60 and buf[i + 1] == 63 and buf[i + 2] == 120 and buf[i + 3] == 109 \
                and buf[i + 4] == 108 and is_ws(buf[i + 5]):
            q = i + 5
            while q + 1 < e and not (buf[q] == 63 and buf[q + 1] == 62):
                q += 1
            if q + 1 < e and not decl_encoding_ok(buf, i + 5, q):
                st = ST_BAD_CHARSET
        if st == ST_OK:
            st = prepass(buf, i, e)
        nel = 0
        d = -1
        done = False
        mts = -1
        mte = -1
        mt_final = False
        txt = 0                 # decoded text length in scratch (innermost element)
        simple = True           # scratch is byte-identical to buf[cstart:cstart+txt]
        cstart = 0
        while st == ST_OK:
            if i >= e:
                if d >= 0 or not done:
                    st = ST_MALFORMED
                break
            c = buf[i]
            if c != 60:
                # character data up to the next '<'
                if d < 0:
                    if is_ws(c):
                        i += 1
                        continue
                    st = ST_MALFORMED
                    break
                run0 = i
                if child[d] == 0 and acc[d] == 0 and txt == 0 and text_head(buf, i, e):
                    acc[d] = 1
                a = acc[d] if child[d] == 0 else 0
                while i < e:
                    c = buf[i]
                    if c == 60:
                        break
                    if c == 38:
                        i, v, err = entity(buf, i, e)
                        if err != 0:
                            st = err
                            break
                        simple = False
                        if a != 0:
                            txt = put_cp(scratch, txt, scap, v)
                        continue
                    if c == 62 and i - 2 >= run0 and buf[i - 1] == 93 and buf[i - 2] == 93:
                        st = ST_MALFORMED
                        break
                    if a != 0 and txt < scap:
                        scratch[txt] = c
                        txt += 1
                    i += 1
                if st != ST_OK:
                    break
                if i - run0 > MAX_TEXT:
                    st = ST_TOO_LARGE
                    break
                continue
            # markup
            if i + 1 >= e:
                st = ST_MALFORMED
                break
            c1 = buf[i + 1]
            if c1 == 33:                                       # <!
                if i + 3 < e and buf[i + 2] == 45 and buf[i + 3] == 45:
                    # find the first "--"; it must be followed by '>'
                    k = i + 4
                    while k + 1 < e and not (buf[k] == 45 and buf[k + 1] == 45):
                        k += 1
                    if k + 2 >= e or buf[k + 2] != 62:
                        st = ST_MALFORMED
                        break
                    simple = False
                    i = k + 3
                    continue
                if (i + 8 < e and buf[i + 2] == 91 and buf[i + 3] == 67 and buf[i + 4] == 68
                        and buf[i + 5] == 65 and buf[i + 6] == 84 and buf[i + 7] == 65 and buf[i + 8] == 91):
                    if d < 0:
                        st = ST_MALFORMED
                        break
                    k = find2(buf, i + 9, e, 93, 93, 62)
                    if k < 0:
                        st = ST_MALFORMED
                        break
                    if k - (i + 9) > MAX_TEXT:
                        st = ST_TOO_LARGE
                        break
                    simple = False
                    if child[d] == 0 and acc[d] == 0 and txt == 0 and leaf_marker(buf, i + 9, k):
                        acc[d] = 1
                    if acc[d] != 0 and child[d] == 0:
                        for p in range(i + 9, k):
                            if txt < scap:
                                scratch[txt] = buf[p]
                                txt += 1
                    i = k + 3
                    continue
                st = ST_FORBIDDEN                              # DOCTYPE, ENTITY, ...
                break
            if c1 == 63:                                       # <?
                k = i + 2
                if k >= e or not is_name_start(buf[k]):
                    st = ST_MALFORMED
                    break
                while k < e and is_name_char(buf[k]):
                    k += 1
                # the target ends at white space or at the closing ?> (lxml agrees)
                if k < e and not is_ws(buf[k]) and not (buf[k] == 63 and k + 1 < e and buf[k + 1] == 62):
                    st = ST_MALFORMED
                    break
                is_xml = (k - (i + 2) == 3 and (buf[i + 2] | 32) == 120 and (buf[i + 3] | 32) == 109
                          and (buf[i + 4] | 32) == 108)
                q = k
                while q + 1 < e and not (buf[q] == 63 and buf[q + 1] == 62):
                    q += 1
                if q + 1 >= e:
                    st = ST_MALFORMED
                    break
                if is_xml:
                    if i != doc0:
                        st = ST_MALFORMED
                        break
                    if not decl_encoding_ok(buf, k, q):
                        st = ST_BAD_CHARSET
                        break
                simple = False
                i = q + 2
                continue
            if c1 == 47:                                       # </
                if d < 0:
                    st = ST_MALFORMED
                    break
                k = i + 2
                ln = name_e[d] - name_s[d]
                if k + ln > e:
                    st = ST_MALFORMED
                    break
                same = True
                for p in range(ln):
                    if buf[k + p] != buf[name_s[d] + p]:
                        same = False
                        break
                if not same:
                    st = ST_MALFORMED
                    break
                cend = i
                k += ln
                if k < e and is_name_char(buf[k]):
                    st = ST_MALFORMED
                    break
                while k < e and is_ws(buf[k]):
                    k += 1
                if k >= e or buf[k] != 62:
                    st = ST_MALFORMED
                    break
                i = k + 1
                # a leaf no rule asked for, with references, CDATA or comments in its text: its
                # marker is judged on the decoded text, as an unescaped text's is (an interchange
                # written as &#85;NA... or base64 with &#43; is one all the same)
                late = False
                if child[d] == 0 and acc[d] == 0 and not simple and cend - cstart >= 4:
                    txt = leaf_text(buf, cstart, cend, scratch, scap)
                    late = text_head(scratch, 0, txt) or b64_text(scratch, 0, txt)
                # classify the leaf's text
                if child[d] == 0 and (acc[d] != 0 or late or (simple and cend - cstart >= B64_PACKED_MIN
                                                              and b64_run(buf, cstart, cend))):
                    if txt > scap:
                        txt = scap
                    if simple:
                        src = buf
                        s0 = cstart
                        e0 = cend
                    else:
                        src = scratch
                        s0 = 0
                        e0 = txt
                    lhh = ph[d + 1]
                    if lhh == 0:
                        lhh = np.uint64(1)
                    loc = intern_find(lhh, loc_hash, loc_table)
                    if loc < 0:
                        plen = xml_path(buf, d, name_s, name_e, path)
                        loc = intern_add(lhh, path, plen, loc_hash, loc_off, loc_buf, loc_table, ctr)
                        if loc < 0:
                            return 2
                    emb = late or leaf_marker(src, s0, e0)      # late: judged above already
                    if emb:
                        fl |= FLAG_EMBEDDED
                        ne_ = ctr[C_NE]
                        eo = ctr[C_ECUR]
                        if ne_ >= E.shape[0] or eo + (e0 - s0) > ebuf.shape[0]:
                            return 3
                        for p in range(s0, e0):
                            ebuf[eo + p - s0] = src[p]
                        E[ne_, E_MSG] = m
                        E[ne_, E_LOC] = loc
                        E[ne_, E_START] = cstart
                        E[ne_, E_END] = cend
                        E[ne_, E_OFF] = eo
                        E[ne_, E_LEN] = e0 - s0
                        ctr[C_NE] = ne_ + 1
                        ctr[C_ECUR] = eo + (e0 - s0)
                    plain = False
                    free = False
                    rg = rgen[d]
                    inspec = rule[d] >= 0
                    r = rule[d] if inspec else rg
                    while r >= 0:
                        if True:
                            rk = RI[r, RI_KIND]
                            if rk == KIND_TYPEKEY:
                                if d >= 1:
                                    th = FNV_OFF
                                    for p in range(s0, e0):
                                        th = hstep(th, src[p])
                                    set_type(tv_g[d - 1], tv_v[d - 1], ntv, d - 1, RI[r, RI_GROUP], th)
                            elif rk == KIND_FREE:
                                if not free and not emb:
                                    free = True
                                    if not free_scan(src, s0, e0, cstart, cend, simple, m, loc, P, veto, H, vbuf, ctr):
                                        return 1
                            elif RI[r, RI_GROUP] >= 0:
                                pd = d - 1 - RI[r, RI_LEVEL]
                                if pd >= 0:
                                    if not has_room(H, vbuf, ctr):
                                        return 1
                                    vo = ctr[C_VCUR]
                                    v, n = rec_text(src, s0, e0, vbuf, vo)
                                    if v >= 0:
                                        ctr[C_NH] = emit(H, ctr[C_NH], m, RI[r, RI_CLASS], loc, -1, RI[r, RI_CONF],
                                                         cstart, cend, 0, pd, vo, n, RI[r, RI_GROUP])
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
                                                     cstart, cend, 1, -1, vo, n, -1)
                                    ctr[C_VCUR] = vo + n
                        r, inspec = next_rule(RI, r, rg, inspec)
                if npend[d] > 0:
                    resolve(H, vbuf, d, first_hit[d], ctr[C_NH], tv_g[d], tv_v[d], ntv[d], TH, TI, tmp)
                    npend[d] = 0
                d -= 1
                if d < 0:
                    done = True
                continue
            # start tag
            if not is_name_start(c1):
                st = ST_MALFORMED
                break
            if done:
                st = ST_MALFORMED                                  # a second root
                break
            if d + 1 >= MAX_DEPTH:
                st = ST_TOO_DEEP
                break
            ns = i + 1
            k = ns
            colon = -1
            while k < e and is_name_char(buf[k]):
                if buf[k] == 58:
                    colon = k
                k += 1
            ne = k
            ls = colon + 1 if colon >= 0 else ns
            # exact local name (a word per multiply) -> its normalised name and first rules under
            # this parent, memoised per call: the normalised hash (a multiply per byte) is computed
            # once per distinct (name, parent), not per element.  The probe is json_scan_run's;
            # as a shared helper (inlined by numba or left to LLVM) it measured 10-15 % slower here
            hr = slice_hash(buf, ls, ne)
            par = lh[d] if d >= 0 else ROOT_PARENT_X
            mk = hr ^ msalt[d + 1]
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
                h = km[slot, 1]
                r0 = np.int64(km[slot, 2])
                rg = np.int64(km[slot, 3])
            else:
                h = FNV_OFF
                for p in range(ls, ne):
                    h = hstep(h, buf[p])
                r0, rg = rules_for(rtab, RH, RI, h, par)
                if km_fill < (KM_SIZE_X * 3) // 4:
                    km[slot, 0] = mk
                    km[slot, 1] = h
                    km[slot, 2] = np.uint64(r0)
                    km[slot, 3] = np.uint64(rg)
                    km_fill += 1
            if h == _H_INCLUDE and colon >= 0:
                pxh = FNV_OFF
                for p in range(ns, colon):
                    pxh = hstep(pxh, buf[p])
                if pxh == _H_XI:
                    st = ST_FORBIDDEN
                    break
            # attributes
            selfclose = False
            while True:
                ws = False
                while k < e and is_ws(buf[k]):
                    k += 1
                    ws = True
                if k >= e:
                    st = ST_MALFORMED
                    break
                if buf[k] == 62:
                    k += 1
                    break
                if buf[k] == 47:
                    if k + 1 < e and buf[k + 1] == 62:
                        selfclose = True
                        k += 2
                        break
                    st = ST_MALFORMED
                    break
                if not ws or not is_name_start(buf[k]):
                    st = ST_MALFORMED
                    break
                while k < e and is_name_char(buf[k]):
                    k += 1
                while k < e and is_ws(buf[k]):
                    k += 1
                if k >= e or buf[k] != 61:
                    st = ST_MALFORMED
                    break
                k += 1
                while k < e and is_ws(buf[k]):
                    k += 1
                if k >= e or (buf[k] != 34 and buf[k] != 39):
                    st = ST_MALFORMED
                    break
                q = buf[k]
                k += 1
                vs = k
                while k < e and buf[k] != q:
                    if buf[k] == 60:
                        st = ST_MALFORMED
                        break
                    if buf[k] == 38:
                        k, v, err = entity(buf, k, e)
                        if err != 0:
                            st = err
                            break
                        continue
                    k += 1
                if st != ST_OK:
                    break
                if k >= e:
                    st = ST_MALFORMED
                    break
                if k - vs == _XINCLUDE_NS.shape[0]:
                    same = True
                    for p in range(k - vs):
                        if buf[vs + p] != _XINCLUDE_NS[p]:
                            same = False
                            break
                    if same:
                        st = ST_FORBIDDEN
                        break
                k += 1
            if st != ST_OK:
                break
            nel += 1
            if d >= 0:
                child[d] = 1
            # message type
            if not mt_final:
                if d < 0:
                    mts = ls
                    mte = ne
                    mt_final = not in_set(wrappers, h)
                elif in_set(documents, h):
                    mts = ls
                    mte = ne
                    mt_final = True
            i = k
            if selfclose:
                if d < 0:
                    done = True
                continue
            d += 1
            name_s[d] = ns
            name_e[d] = ne
            lh[d] = h
            child[d] = 0
            npend[d] = 0
            ntv[d] = 0
            first_hit[d] = ctr[C_NH]
            ph[d + 1] = mix(ph[d], hr)             # the path hash: exact local names
            msalt[d + 1] = mix(h, MEMO_SALT)
            rule[d] = r0
            rgen[d] = rg
            acc[d] = 1 if (r0 >= 0 or rg >= 0) else 0
            txt = 0
            simple = True
            cstart = i
        st_out[j, 0] = st
        st_out[j, 1] = nel
        st_out[j, 2] = fl
        if st == ST_OK:
            mt[j, 0] = mts
            mt[j, 1] = mte
        else:
            ctr[C_NH] = nh0
            ctr[C_VCUR] = vc0
            ctr[C_NE] = ne0
            ctr[C_ECUR] = ec0
    return 0

