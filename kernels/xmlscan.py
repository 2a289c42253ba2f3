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

Rules (compiled by flowaudit/decode/xml.py from schemas/catalog/xml.toml), over normalised
name hashes (kernels/jsonscan.hstep: ASCII lower case, ``[a-z0-9]`` and non-ASCII bytes):
``r_elem``/``r_parent`` (0 = any parent), ``r_class``, ``r_conf``, ``r_mode`` (0: the element
text is the value; 1: conditional IMO, WCO ``*TransportMeans/ID``: the value must have the IMO
shape and is kept only when a sibling ``type_elem`` says ``type_imo`` (confidence 100), or,
without such a sibling, when its check digit is right (confidence ``r_conf``); a sibling type
code with any other value (e.g. 11, vessel name) drops it.  ``ft_elems``: free-text elements
scanned with values.next_container / next_imo at ``ft_conf``.

Message type: the root's local name, or, when the root is a wrapper (``wrappers``), the first
element named in ``documents`` (``MetaData/Declaration`` -> ``Declaration``); returned as a raw
byte span.  Locations are ``/Root/Child/Leaf`` local-name paths, interned like the JSON paths.
Returns ``(n_hits, n_locs, overflow)``.
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel
from .detect import utf8_char
from .jsonscan import FNV_OFF, PATH_CAP, VAL_STRIDE, emit, free_text, hstep, intern_loc, name_hash
from .values import parse_container, parse_imo

MAX_DEPTH = 256
MAX_TEXT = 10 * 1024 * 1024

ST_OK = 0
ST_EMPTY = 1
ST_TOO_LARGE = 3
ST_INVALID_UTF8 = 5
ST_MALFORMED = 10
ST_FORBIDDEN = 11
ST_TOO_DEEP = 12
ST_BAD_CHARSET = 13

_XINCLUDE_NS = np.frombuffer(b"http://www.w3.org/2001/XInclude", dtype=np.uint8).copy()


@kernel(inline="always")
def is_name_start(c):
    return (65 <= c <= 90) or (97 <= c <= 122) or c == 95 or c == 58 or c >= 128


@kernel(inline="always")
def is_name_char(c):
    return (65 <= c <= 90) or (97 <= c <= 122) or (48 <= c <= 57) or c == 95 or c == 58 or c == 45 or c == 46 or c >= 128


@kernel(inline="always")
def is_ws(c):
    return c == 32 or c == 9 or c == 10 or c == 13


@kernel
def prepass(buf, s, e):
    """0 ok, ST_INVALID_UTF8, or ST_MALFORMED (a control character XML does not allow)."""
    i = s
    while i < e:
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


@kernel
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
            if 48 <= c <= 57:
                dgt = c - 48
            elif hexa and 97 <= c <= 102:
                dgt = c - 87
            elif hexa and 65 <= c <= 70:
                dgt = c - 55
            else:
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


@kernel(inline="always")
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


@kernel
def find2(buf, i, end, a, b, c):
    """Position of the 3-byte sequence ``a b c`` at or after ``i``, or -1."""
    while i + 2 < end:
        if buf[i] == a and buf[i + 1] == b and buf[i + 2] == c:
            return i
        i += 1
    return -1


@kernel
def decl_encoding_ok(buf, s, e):
    """Is the ``encoding`` pseudo-attribute of the XML declaration ``buf[s:e]`` absent or UTF-8/ASCII?"""
    i = s
    while i + 8 <= e:
        if (buf[i] == 101 and buf[i + 1] == 110 and buf[i + 2] == 99 and buf[i + 3] == 111
                and buf[i + 4] == 100 and buf[i + 5] == 105 and buf[i + 6] == 110 and buf[i + 7] == 103):
            j = i + 8
            while j < e and is_ws(buf[j]):
                j += 1
            if j >= e or buf[j] != 61:
                return False
            j += 1
            while j < e and is_ws(buf[j]):
                j += 1
            if j >= e or (buf[j] != 34 and buf[j] != 39):
                return False
            q = buf[j]
            j += 1
            vs = j
            while j < e and buf[j] != q:
                j += 1
            if j >= e:
                return False
            h = FNV_OFF
            for p in range(vs, j):
                h = hstep(h, buf[p])
            return h == _H_UTF8 or h == _H_USASCII or h == _H_ASCII
        i += 1
    return True


def _h(name: str):
    return np.uint64(name_hash(name))


_H_UTF8 = _h("utf-8")
_H_USASCII = _h("us-ascii")
_H_ASCII = _h("ascii")
_H_INCLUDE = _h("include")
_H_XI = _h("xi")


@kernel
def in_set(arr, h):
    for r in range(arr.shape[0]):
        if arr[r] == h:
            return True
    return False


@kernel
def xml_scan(buf, offsets, sel,
             r_elem, r_parent, r_class, r_conf, r_mode, ft_elems, ft_conf,
             c_cont, c_imo, type_elem, type_imo, wrappers, documents,
             status, n_seg, mt_start, mt_end,
             hit_msg, hit_class, hit_loc, hit_valid, hit_conf, hit_start, hit_end, hit_keep,
             hit_pend, val_buf,
             loc_hash, loc_off, loc_buf, loc_table, scratch):
    """Scan and classify the selected XML messages.  See the module docstring."""
    nb = buf.shape[0]
    nmsg = offsets.shape[0] - 1
    cap_hits = hit_msg.shape[0]
    scap = scratch.shape[0]
    D = MAX_DEPTH + 1
    name_s = np.zeros(D, dtype=np.int64)
    name_e = np.zeros(D, dtype=np.int64)
    lh = np.zeros(D, dtype=np.uint64)
    rule = np.zeros(D, dtype=np.int64)
    acc = np.zeros(D, dtype=np.int8)          # 1 rule, 2 free text, 3 type code
    child = np.zeros(D, dtype=np.int8)
    tcode = np.zeros(D, dtype=np.int8)        # children's type code: 0 none, 1 IMO, 2 other
    pend_end = np.zeros(D, dtype=np.int64)    # path length after this element
    first_hit = np.zeros(D, dtype=np.int64)
    npend = np.zeros(D, dtype=np.int64)
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
                # classify the leaf's text
                if child[d] == 0 and acc[d] != 0:
                    a = acc[d]
                    if a == 3:
                        if d >= 1:
                            th = FNV_OFF
                            for p in range(txt):
                                th = hstep(th, scratch[p])
                            tcode[d - 1] = 1 if th == type_imo else 2
                    elif a == 2 or a == 1:
                        plen = pend_end[d]
                        loc, nloc = intern_loc(path, plen, loc_hash, loc_off, loc_buf, loc_table, nloc)
                        if loc < 0:
                            return nh, nloc, 2
                        if a == 2:
                            nh = free_text(scratch, 0, txt, cstart, cend, simple, m, loc, ft_conf, c_cont,
                                           c_imo, nh, hit_msg, hit_class, hit_loc, hit_valid, hit_conf,
                                           hit_start, hit_end, hit_keep, hit_pend, val_buf)
                            if nh < 0:
                                return cap_hits, nloc, 1
                        else:
                            r = rule[d]
                            cls = r_class[r]
                            if nh >= cap_hits:
                                return nh, nloc, 1
                            if cls == c_cont and r_mode[r] == 0:
                                v = parse_container(scratch, 0, txt, val_buf, nh * VAL_STRIDE)
                            elif cls == c_imo:
                                v = parse_imo(scratch, 0, txt, val_buf, nh * VAL_STRIDE)
                            else:
                                v = -1
                            if v >= 0:
                                if r_mode[r] == 1 and d >= 1:
                                    npend[d - 1] += 1
                                    nh = emit(nh, m, cls, loc, v, r_conf[r], cstart, cend, 0, d - 1,
                                              hit_msg, hit_class, hit_loc, hit_valid, hit_conf,
                                              hit_start, hit_end, hit_keep, hit_pend)
                                elif r_mode[r] == 0:
                                    nh = emit(nh, m, cls, loc, v, r_conf[r], cstart, cend, 1, -1,
                                              hit_msg, hit_class, hit_loc, hit_valid, hit_conf,
                                              hit_start, hit_end, hit_keep, hit_pend)
                if npend[d] > 0:
                    for h2 in range(first_hit[d], nh):
                        if hit_pend[h2] == d:
                            hit_pend[h2] = -1
                            if tcode[d] == 1:
                                hit_keep[h2] = 1
                                hit_conf[h2] = 100
                            elif tcode[d] == 0 and hit_valid[h2] == 1:
                                hit_keep[h2] = 1
                            else:
                                hit_keep[h2] = 0
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
            h = FNV_OFF
            for p in range(ls, ne):
                h = hstep(h, buf[p])
            if h == _H_INCLUDE and colon >= 0:
                ph = FNV_OFF
                for p in range(ns, colon):
                    ph = hstep(ph, buf[p])
                if ph == _H_XI:
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
                parent_h = lh[d]
                p0 = pend_end[d]
            else:
                parent_h = np.uint64(0)
                p0 = 0
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
            tcode[d] = 0
            npend[d] = 0
            first_hit[d] = nh
            # path /a/b/c (cut at PATH_CAP)
            pl = p0
            if pl < PATH_CAP:
                path[pl] = 47
                pl += 1
                for p in range(ls, ne):
                    if pl >= PATH_CAP:
                        break
                    path[pl] = buf[p]
                    pl += 1
            pend_end[d] = pl
            # which rule applies to this element's text
            r = -1
            for rr in range(r_elem.shape[0]):
                if r_elem[rr] == h and (r_parent[rr] == 0 or r_parent[rr] == parent_h):
                    r = rr
                    break
            rule[d] = r
            if r >= 0:
                acc[d] = 1
            elif in_set(ft_elems, h):
                acc[d] = 2
            elif h == type_elem:
                acc[d] = 3
            else:
                acc[d] = 0
            txt = 0
            simple = True
            cstart = i
        status[j] = st
        n_seg[j] = nel
        if st == ST_OK:
            mt_start[j] = mts
            mt_end[j] = mte
        else:
            mt_start[j] = -1
            mt_end[j] = -1
            nh = msg_hit0
    return nh, nloc, 0

