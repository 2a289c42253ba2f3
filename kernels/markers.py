"""Multi-literal matcher over a whole message batch, with host and token boundaries.

One pass over each selected message.  A gram of three bytes sampled every ``min_len - 2`` bytes
(``min_len``: the shortest literal), looked up by its hash in an 8 KiB bit table, skips the
windows around it where no literal's first ``min_len`` bytes hold it (98-99 % of samples in port
traffic); around the others, two 16 KiB tables keyed by the first two bytes of a position and by
the two bytes where the shortest literal would end (ASCII letters folded) let through the few
positions where a pattern can start, and there the patterns with those first bytes are compared
in full.  Patterns are short and few (a watchlist's hosts, paths and markers), so this beats
building an automaton (:func:`scan`, which looks up candidates at every byte, remains for pattern
sets with a one-byte literal).

Pattern kinds and their boundaries (``hostchar`` = ``[A-Za-z0-9_-]``, ``wordchar`` = ``[A-Za-z0-9_]``):

* ``DOMAIN``: a registered domain; left: start, or a byte that is not a host char (a ``.``
  means a subdomain: ``x.logink.cn``); right: the host ends (not a host char, and not a ``.``
  followed by a host char).  ``notlogink.cn``, ``blogink.org``, ``logink.cn.example`` fail.
* ``HOST``: an exact host; as DOMAIN, and the left byte may not be ``.`` either.
* ``HOST_SUFFIX``: the literal after the ``*`` of a host pattern; the right boundary is checked
  here, the label before it by the caller (:mod:`flowaudit.watchlist`).
* ``TOKEN``: a marker; where the pattern starts (ends) with a word char, the byte before (after)
  must not be a word char, nor a ``.`` joined to a word char (``x.logink.track.customs.v2`` fails).
* ``TOKEN_PREFIX``: a marker prefix (``LOGINK_CN_``): left as TOKEN, and at least one word char follows.
* ``PATH`` / ``PATH_PREFIX``: a URL path; PATH's right boundary as TOKEN, PATH_PREFIX none.
* ``KEY``: a field name whose value the caller reads (party codes); boundaries as TOKEN.
* ``BASE64``: one alignment of a literal's base64 encoding (a name hidden in a base64 field too
  short to be decoded as a layer); no boundaries, case-sensitive.

Case: patterns flagged case-insensitive are stored lower-case and compared on folded bytes.
"""
from __future__ import annotations

import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from ._jit import kernel
from .words import ONES, copy_bytes, hex_digit, load_word, sep_mask
from .jsonscan import hex4
from .xmlscan import put_cp

DOMAIN, HOST, HOST_SUFFIX, TOKEN, TOKEN_PREFIX, PATH, PATH_PREFIX, KEY, BASE64 = range(9)
KIND_NAMES = ("domain", "host", "host_suffix", "token", "token_prefix", "path", "path_prefix", "key", "base64")


@kernel
def _fold(c):
    return c + 32 if 65 <= c <= 90 else c


@kernel
def _word(c):
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c == 95


@kernel
def _hostc(c):
    return _word(c) or c == 45


@kernel
def _host_end_ok(buf, e, end):
    if e >= end:
        return True
    c = buf[e]
    if _hostc(c):
        return False
    if c == 46 and e + 1 < end and _hostc(buf[e + 1]):
        return False
    return True


@kernel
def _token_left_ok(buf, s, start):
    if s <= start:
        return True
    c = buf[s - 1]
    if _word(c):
        return False
    if c == 46 and s - 2 >= start and _word(buf[s - 2]):
        return False
    return True


@kernel
def _token_right_ok(buf, e, end):
    if e >= end:
        return True
    c = buf[e]
    if _word(c):
        return False
    if c == 46 and e + 1 < end and _word(buf[e + 1]):
        return False
    return True


@kernel
def _boundary_ok(kind, buf, s, e, start, end, pat_first, pat_last):
    if kind == 0:  # DOMAIN
        return (s <= start or not _hostc(buf[s - 1])) and _host_end_ok(buf, e, end)
    if kind == 1:  # HOST
        return (s <= start or (not _hostc(buf[s - 1]) and buf[s - 1] != 46)) and _host_end_ok(buf, e, end)
    if kind == 2:  # HOST_SUFFIX
        return _host_end_ok(buf, e, end)
    left = (not _word(pat_first)) or _token_left_ok(buf, s, start)
    if kind == 3 or kind == 7:  # TOKEN, KEY
        return left and ((not _word(pat_last)) or _token_right_ok(buf, e, end))
    if kind == 4:  # TOKEN_PREFIX
        return left and e < end and _word(buf[e])
    if kind == 5:  # PATH
        return (not _word(pat_last)) or _token_right_ok(buf, e, end)
    return True  # PATH_PREFIX, BASE64


@kernel
def _match_at(buf, i, start, end, p, pat_buf, pat_off, pat_kind, pat_ci):
    """Pattern ``p`` occurs at ``i`` (inside ``[start, end)``) with its boundaries."""
    ps = pat_off[p]
    pe = pat_off[p + 1]
    plen = pe - ps
    if i + plen > end:
        return False
    ci = pat_ci[p]
    for t in range(plen):
        b = buf[i + t]
        if ci:
            b = _fold(b)
        if b != pat_buf[ps + t]:
            return False
    return _boundary_ok(pat_kind[p], buf, i, i + plen, start, end, pat_buf[ps], pat_buf[pe - 1])


@kernel
def _record(buf, i, start, end, p, mi, n, pat_buf, pat_off, pat_kind, pat_ci, out_msg, out_pat, out_start, out_end):
    """Match ``n`` is pattern ``p`` at ``i`` of message ``mi``, when it occurs there (written
    while the outputs have room); returns the match count after it."""
    if not _match_at(buf, i, start, end, p, pat_buf, pat_off, pat_kind, pat_ci):
        return n
    if n < out_msg.shape[0]:
        out_msg[n] = mi
        out_pat[n] = p
        out_start[n] = i
        out_end[n] = i + pat_off[p + 1] - pat_off[p]
    return n + 1


@kernel(_nrt=False)   # allocates nothing: no reference counting of the arrays it passes on
def scan(buf, offsets, sel, pat_buf, pat_off, pat_kind, pat_ci, fb_off, fb_ids,
         out_msg, out_pat, out_start, out_end):
    """Find every pattern occurrence in the selected messages, trying the candidates of every
    position (the path for a pattern set with one-byte literals; :func:`scan_filtered` otherwise).

    Returns the number of matches; only the first ``len(out_msg)`` are written (call again
    with larger outputs when the count exceeds them).  Offsets in ``out_start``/``out_end`` are
    absolute positions in ``buf``.
    """
    n = 0
    nbuf = buf.shape[0]
    for k in range(sel.shape[0]):
        mi = sel[k]
        start = offsets[mi]
        end = offsets[mi + 1]
        if start < 0 or end > nbuf or end < start:
            continue
        for i in range(start, end):
            # candidates keyed by the first two bytes, folded (one-byte patterns: key c * 256 + 256
            # is never a two-byte key, see Patterns)
            c = np.int64(_fold(buf[i])) * 257
            lo1 = fb_off[c + 256]
            hi1 = fb_off[c + 257]
            lo = np.int64(0)
            hi = np.int64(0)
            if i + 1 < end:
                c2 = c + np.int64(_fold(buf[i + 1]))
                lo = fb_off[c2]
                hi = fb_off[c2 + 1]
            n2 = hi - lo
            for jj in range(n2 + hi1 - lo1):
                j = lo + jj if jj < n2 else lo1 + jj - n2
                n = _record(buf, i, start, end, fb_ids[j], mi, n, pat_buf, pat_off, pat_kind, pat_ci,
                            out_msg, out_pat, out_start, out_end)
    return n


@kernel
def _key7(a, b):
    """Two bytes as a 14-bit key, ASCII letters folded (``| 32``; other bytes collide, which
    only lets more positions through the filters)."""
    return ((np.uint64(a) | np.uint64(32)) & np.uint64(127)) * np.uint64(128) + \
        ((np.uint64(b) | np.uint64(32)) & np.uint64(127))


GRAM_MAX = 3                    # bytes of the sampled grams (fewer where the shortest literal is shorter)
GRAM_BITS = 16                  # the grams' hash: 2**16 bits, an 8 KiB table (L1)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_FOLD8 = np.uint64(0x2020202020202020)


@kernel(inline="always")
def _gram_hash(w, mask):
    """A gram of bytes (the low bytes of ``w`` that ``mask`` keeps), each ``| 0x20`` (ASCII letters
    folded; other bytes collide, which only lets more windows through), hashed to ``GRAM_BITS``."""
    return (((w | _FOLD8) & mask) * _GOLD) >> np.uint64(64 - GRAM_BITS)


@kernel(inline="always")
def _next_sample(buf, p, lim, step, q, mask, grams):
    """The first sample from ``p`` on (every ``step`` bytes, at most ``lim``; ``lim + q`` inside
    ``buf``) whose gram of ``q`` bytes has its hash in ``grams``, or a position past ``lim``: one
    unaligned word load per sample while eight bytes remain in the buffer (a bounds branch in
    every sample instead cost a third of the speed), then the buffer's last samples byte by byte."""
    one = np.uint64(1)
    nbuf = np.uint64(buf.shape[0])
    if nbuf >= np.uint64(8):
        wide = min(lim, nbuf - np.uint64(8))    # the samples with eight bytes from them in the buffer
        while p <= wide:
            h = _gram_hash(load_word(buf, p), mask)
            if ((grams[h >> np.uint64(6)] >> (h & np.uint64(63))) & one) != 0:
                return p
            p += step
    while p <= lim:
        w = np.uint64(0)
        for t in range(q):
            w |= np.uint64(buf[p + np.uint64(t)]) << np.uint64(8 * t)
        h = _gram_hash(w, mask)
        if ((grams[h >> np.uint64(6)] >> (h & np.uint64(63))) & one) != 0:
            return p
        p += step
    return p


@kernel(_nrt=False)
def scan_filtered(buf, offsets, sel, min_len, q, grams, head, tail, c_off, c_ids, pat_buf, pat_off, pat_kind, pat_ci,
                  out_msg, out_pat, out_start, out_end):
    """:func:`scan` for a pattern set whose literals are all at least ``min_len >= 2`` bytes.

    A match's first ``min_len`` bytes hold ``min_len - q + 1`` grams of ``q`` bytes, so a gram
    sampled every ``min_len - q + 1`` bytes falls inside each window that could start one; where
    the sampled gram's hash is not among those of the literals' first ``min_len`` bytes
    (``grams``, a bit per hash), none of the windows around it can start a match, and they are
    skipped (98-99 % of samples in port traffic, against 84 % for the byte pairs sampled before).
    The windows around the other samples are tried where their first two bytes start a literal
    (``head``) and the two bytes ending their first ``min_len`` end one's (``tail``); each window
    belongs to exactly one sample, so they are tried once each, in order.  The samples do not
    depend on each other (no chain of loads from one step to the next).  Positions count in
    unsigned integers (no negative-index wraparound in the hot loop).  Same results, in the same
    order, as :func:`scan`."""
    n = 0
    if min_len < 2 or q < 1 or q > min_len or q > 8:   # a caller's mistake (Patterns never makes it)
        raise ValueError("scan_filtered needs 2 <= min_len and 1 <= q <= min(min_len, 8)")
    back = np.uint64(min_len - q)                 # a sample's first window starts this far before it
    step = back + np.uint64(1)
    m1 = np.uint64(min_len - 1)
    one = np.uint64(1)
    mask = (one << np.uint64(8 * q)) - one
    for k in range(sel.shape[0]):
        mi = sel[k]
        start = offsets[mi]
        end = offsets[mi + 1]
        if start < 0 or end > buf.shape[0] or end - start < min_len:
            continue
        last = np.uint64(end - min_len)               # the last start with a whole window
        p = np.uint64(start) + back                   # a sampled gram: buf[p:p + q], p + q <= end
        while True:
            p = _next_sample(buf, p, last + back, step, q, mask, grams)
            if p - back > last:
                break
            hi = p if p <= last else last
            for ui in range(p - back, hi + one):      # the windows holding this gram, in order
                key = _key7(buf[ui], buf[ui + one])
                if head[key] == 0 or tail[_key7(buf[ui + m1 - one], buf[ui + m1])] == 0:
                    continue
                i = np.int64(ui)
                for j in range(c_off[key], c_off[key + 1]):
                    n = _record(buf, i, start, end, c_ids[j], mi, n, pat_buf, pat_off, pat_kind, pat_ci,
                                out_msg, out_pat, out_start, out_end)
            p += step
    return n


def gram_hash_py(g: bytes) -> int:
    """:func:`_gram_hash` in Python (the table's entries)."""
    w = int.from_bytes(bytes(c | 32 for c in g), "little")
    return ((w * int(_GOLD)) & 0xFFFFFFFFFFFFFFFF) >> (64 - GRAM_BITS)


@kernel(inline="always")
def _escape_at(buf, p, e):
    """Does ``buf[p:e]`` start with ``\\u``, ``&#`` or ``%`` and two hex digits?"""
    c = buf[p]
    if c == 92 or c == 38:
        return p + 1 < e and buf[p + 1] == (117 if c == 92 else 35)
    return c == 37 and p + 2 < e and hex_digit(buf[p + 1]) >= 0 and hex_digit(buf[p + 2]) >= 0


# a backslash, an ampersand and a percent sign in every byte of a word (words.sep_mask's patterns)
_PB, _PA, _PP = (ONES * np.uint64(c) for c in (92, 38, 37))


@kernel
def _next_special(buf, i, e):
    """The first backslash, ampersand or percent sign in ``buf[i:e]`` (``e`` when none), eight
    bytes per step (``words.sep_mask``)."""
    while i + 8 <= e:
        mk = sep_mask(load_word(buf, i), _PB, _PA, _PP, _PB)
        if mk != np.uint64(0):
            return i + (np.int64(trailing_zeros(mk)) >> 3)
        i += 8
    while i < e:
        c = buf[i]
        if c == 92 or c == 38 or c == 37:
            return i
        i += 1
    return e


@kernel(_nrt=True)
def escaped(buf, offsets, sel):
    """The messages of ``sel`` whose bytes hold ``\\u`` (a JSON escape), ``&#`` (an XML character
    reference) or ``%`` and two hex digits (URL percent-encoding), in ``sel``'s order: the
    literals above are bytes, and a host written as ``gateway\\u002elogink.cn``,
    ``gateway&#46;logink.cn`` or ``%67ateway.logink.cn`` is the same host (the shell scans those
    messages again, decoded).  Eight bytes per step: the backslashes, ampersands and percent signs
    of a word are found at once (:func:`_next_special`), then the bytes after each are looked at."""
    nb = buf.shape[0]
    nm = offsets.shape[0] - 1
    out = np.empty(sel.shape[0], np.int64)
    k = 0
    for j in range(sel.shape[0]):
        m = sel[j]
        if m < 0 or m >= nm:
            continue
        s = offsets[m]
        e = offsets[m + 1]
        if s < 0 or e > nb or e <= s:
            continue
        found = False
        i = _next_special(buf, s, e)
        while i < e and not found:
            found = _escape_at(buf, i, e)
            i = _next_special(buf, i + 1, e)
        if found:
            out[k] = m
            k += 1
    return out[:k].copy()


@kernel
def _scalar(cp):
    """``cp``, or U+FFFD where it is a surrogate or past U+10FFFF (as Python's decoders replace)."""
    return 0xFFFD if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF else cp


@kernel(_nrt=True)
def unescape(buf, offsets, idx):
    """Messages ``idx`` end to end, with JSON ``\\uXXXX`` escapes, XML character references
    (``&#`` and 1-7 digits, or ``&#x`` and 1-6 hex digits, then ``;``) and URL percent-encoding
    (``%HH``: the byte) written as what they stand for, every other byte as it is; returns
    ``(bytes, offsets)``, message ``k`` being ``bytes[offsets[k]:offsets[k + 1]]``.  What the
    watchlist's literals are matched against a second time in the messages :func:`escaped` finds.
    The plain bytes between escapes are copied a run at a time (the next backslash, ampersand or
    percent sign found eight bytes per step; 3.6 GB/s).  Every escape is at least as long as what
    it stands for, so the output fits in the input's length (``xmlscan.put_cp`` writes a code
    point); every read is checked against the message's end."""
    nb = buf.shape[0]
    nm = offsets.shape[0] - 1
    total = 0
    for j in range(idx.shape[0]):
        m = idx[j]
        if 0 <= m < nm and 0 <= offsets[m] <= offsets[m + 1] <= nb:
            total += offsets[m + 1] - offsets[m]
    out = np.empty(total, np.uint8)
    off = np.zeros(idx.shape[0] + 1, np.int64)
    o = 0
    for j in range(idx.shape[0]):
        m = idx[j]
        if not (0 <= m < nm and 0 <= offsets[m] <= offsets[m + 1] <= nb):
            off[j + 1] = o
            continue
        i = offsets[m]
        e = offsets[m + 1]
        while i < e:
            p = _next_special(buf, i, e)       # the plain bytes before it: one copy
            if p > i:
                copy_bytes(out, o, buf, i, p - i)
                o += p - i
                i = p
                if i >= e:
                    break
            c = buf[i]
            if c == 92 and i + 1 < e and buf[i + 1] == 117:
                v = hex4(buf, i + 2, e)
                if v >= 0:
                    o = put_cp(out, o, total, _scalar(v))
                    i += 6
                    continue
            elif c == 38 and i + 3 < e and buf[i + 1] == 35:
                hexa = buf[i + 2] == 120 or buf[i + 2] == 88
                q = i + 3 if hexa else i + 2
                v = 0
                nd = 0
                while q < e and nd <= 7:
                    h = hex_digit(buf[q]) if hexa else (buf[q] - 48 if 48 <= buf[q] <= 57 else -1)
                    if h < 0:
                        break
                    v = v * (16 if hexa else 10) + h
                    nd += 1
                    q += 1
                if 1 <= nd <= (6 if hexa else 7) and q < e and buf[q] == 59:
                    o = put_cp(out, o, total, _scalar(v))
                    i = q + 1
                    continue
            elif c == 37 and i + 2 < e:
                a = hex_digit(buf[i + 1])
                b = hex_digit(buf[i + 2])
                if a >= 0 and b >= 0:
                    out[o] = a * 16 + b
                    o += 1
                    i += 3
                    continue
            out[o] = c
            o += 1
            i += 1
        off[j + 1] = o
    return out, off         # out[off[-1]:] is unused room, not copied away


def _key7_py(a: int, b: int) -> int:
    """:func:`_key7` in Python (the tables' keys)."""
    return ((a | 32) & 127) * 128 + ((b | 32) & 127)


class Patterns:
    """Compiled literals for :func:`scan_filtered` (or :func:`scan`, where a literal is one byte
    long), built by :mod:`flowaudit.watchlist`."""

    def __init__(self, literals: list[tuple[bytes, int, bool]]):
        """``literals``: (bytes, kind, case_insensitive) per pattern; pattern id = list index."""
        self.n = len(literals)
        parts, kinds, ci = [], [], []
        off = [0]
        for lit, kind, insens in literals:
            if not lit:
                raise ValueError("markers: empty pattern")
            b = lit.lower() if insens else lit
            parts.append(b)
            off.append(off[-1] + len(b))
            kinds.append(kind)
            ci.append(1 if insens else 0)
        self.pat_buf = np.frombuffer(b"".join(parts), np.uint8).copy() if parts else np.zeros(1, np.uint8)
        self.pat_off = np.asarray(off, np.int64)
        self.pat_kind = np.asarray(kinds, np.uint8) if kinds else np.zeros(0, np.uint8)
        self.pat_ci = np.asarray(ci, np.uint8) if ci else np.zeros(0, np.uint8)
        self.min_len = min(off[i + 1] - off[i] for i in range(self.n)) if parts else 0
        if self.min_len >= 2:
            # scan_filtered: the 14-bit keys of each pattern's first two bytes (with the candidates
            # under them, in pattern order) and of the two bytes ending its first min_len
            m = self.min_len
            head_keys = np.array([_key7_py(b[0], b[1]) for b in parts], np.int64)
            self.head = np.zeros(128 * 128, np.uint8)
            self.head[head_keys] = 1
            self.tail = np.zeros(128 * 128, np.uint8)
            self.tail[[_key7_py(b[m - 2], b[m - 1]) for b in parts]] = 1
            # the hash of every gram of q bytes in a pattern's first min_len (the samples' filter)
            self.q = q = min(GRAM_MAX, m)
            bits = np.zeros(1 << GRAM_BITS, np.bool_)
            bits[[gram_hash_py(b[o:o + q]) for b in parts for o in range(m - q + 1)]] = True
            self.grams = np.packbits(bits, bitorder="little").view(np.uint64).copy()
            self.c_ids = np.argsort(head_keys, kind="stable").astype(np.int32)
            self.c_off = np.zeros(128 * 128 + 1, np.int32)
            np.cumsum(np.bincount(head_keys, minlength=128 * 128), out=self.c_off[1:])
            return
        # scan: candidate table keyed by the first two bytes, lower-cased: key = b0 * 257 + b1, and
        # b0 * 257 + 256 for one-byte patterns (checked at every position that starts with b0)
        def key(p: bytes) -> int:
            low = p.lower()
            return low[0] * 257 + (low[1] if len(low) > 1 else 256)
        keys = np.array([key(p) for p in parts], np.int64) if parts else np.zeros(0, np.int64)
        order = np.argsort(keys, kind="stable")
        self.fb_ids = order.astype(np.int32)
        nkeys = 256 * 257
        counts = np.bincount(keys, minlength=nkeys) if parts else np.zeros(nkeys, np.int64)
        self.fb_off = np.zeros(nkeys + 1, np.int64)
        np.cumsum(counts[:nkeys], out=self.fb_off[1:])

    def scan(self, buf: np.ndarray, offsets: np.ndarray, sel: np.ndarray | None = None):
        """(msg, pattern, start, end) arrays of every match; ``start``/``end`` absolute in ``buf``."""
        buf = np.ascontiguousarray(buf, dtype=np.uint8)
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        if sel is None:
            sel = np.arange(offsets.shape[0] - 1, dtype=np.int64)
        sel = np.ascontiguousarray(sel, dtype=np.int64)
        if sel.size and (sel.min() < 0 or sel.max() >= offsets.shape[0] - 1):
            raise ValueError("markers: selection outside the batch")
        cap = max(64, sel.shape[0])
        while True:
            out = (np.empty(cap, np.int64), np.empty(cap, np.int32), np.empty(cap, np.int64), np.empty(cap, np.int64))
            if self.n == 0:
                return tuple(a[:0] for a in out)
            if self.min_len >= 2:
                n = scan_filtered(buf, offsets, sel, self.min_len, self.q, self.grams, self.head, self.tail, self.c_off,
                                  self.c_ids, self.pat_buf, self.pat_off, self.pat_kind, self.pat_ci, *out)
            else:
                n = scan(buf, offsets, sel, self.pat_buf, self.pat_off, self.pat_kind, self.pat_ci,
                         self.fb_off, self.fb_ids, *out)
            if n <= cap:
                return tuple(a[:n] for a in out)
            cap = n
