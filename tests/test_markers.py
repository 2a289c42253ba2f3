"""kernels/markers.py: the multi-literal matcher vs a regex reference; look-alikes never match."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from flowaudit.kernels import markers as M

SETTINGS = settings(max_examples=200, deadline=None)

PATTERNS = [
    (b"logink.cn", M.DOMAIN, True),
    (b"gateway.logink.cn", M.HOST, True),
    (b".teamviewer.com", M.HOST_SUFFIX, True),
    (b"LOGINK_CN_FREIGHTCHARGES", M.TOKEN, False),
    (b"LOGINK_CN_", M.TOKEN_PREFIX, False),
    (b"logink.track.customs", M.TOKEN, False),
    (b"ticket:", M.TOKEN, False),
    (b"/cuteinfo/services/ExchangeTransportService", M.PATH, False),
    (b"/ais/", M.PATH_PREFIX, False),
    (b"partyFunctionCode", M.KEY, True),
    (b"bG9naW5rLmNu", M.BASE64, False),          # logink.cn in base64, one alignment
]
# a one-byte literal: Patterns takes the every-position kernel (scan) instead of scan_filtered
SHORT = PATTERNS + [(b"X", M.TOKEN, True), (b"/a", M.PATH_PREFIX, False)]
H = r"[A-Za-z0-9_-]"
W = r"[A-Za-z0-9_]"


def ref_regex(lit: bytes, kind: int, ci: bool) -> re.Pattern:
    e = re.escape(lit.decode())
    first_w = bool(re.match(W, chr(lit[0])))
    last_w = bool(re.match(W, chr(lit[-1])))
    tok_l = rf"(?<!{W})(?<!{W}\.)" if first_w else ""
    tok_r = rf"(?!{W})(?!\.{W})" if last_w else ""
    host_r = rf"(?!{H})(?!\.{H})"
    body = {
        M.DOMAIN: rf"(?<!{H}){e}{host_r}",
        M.HOST: rf"(?<!{H})(?<!\.){e}{host_r}",
        M.HOST_SUFFIX: rf"{e}{host_r}",
        M.TOKEN: rf"{tok_l}{e}{tok_r}",
        M.KEY: rf"{tok_l}{e}{tok_r}",
        M.TOKEN_PREFIX: rf"{tok_l}{e}(?={W})",
        M.PATH: rf"{e}{tok_r}",
        M.PATH_PREFIX: e,
        M.BASE64: e,
    }[kind]
    return re.compile("(?=(" + body + "))", re.IGNORECASE if ci else 0)


def ref_scan(msgs: list[bytes], patterns=PATTERNS) -> list[tuple[int, int, int]]:
    out = []
    for mi, m in enumerate(msgs):
        s = m.decode("latin-1")
        for p, (lit, kind, ci) in enumerate(patterns):
            for mt in ref_regex(lit, kind, ci).finditer(s):
                out.append((mi, p, mt.start()))
    return sorted(out)


def run(msgs: list[bytes], patterns=PATTERNS):
    pats = M.Patterns(patterns)
    assert (pats.min_len >= 2) == (patterns is PATTERNS)
    buf = np.frombuffer(b"".join(msgs), np.uint8) if any(msgs) else np.zeros(0, np.uint8)
    off = np.zeros(len(msgs) + 1, np.int64)
    off[1:] = np.cumsum([len(m) for m in msgs])
    mm, pp, ss, ee = pats.scan(buf, off)
    assert np.all(ee - ss == np.array([len(patterns[p][0]) for p in pp], dtype=np.int64))
    return sorted((int(m), int(p), int(s - off[m])) for m, p, s in zip(mm, pp, ss))


PIECES = ["logink.cn", "LOGINK.CN", "gateway.logink.cn", "x.", "not", "b", ".", "-", "_", " ", "/", ":", "\"",
          "master1", ".teamviewer.com", "LOGINK_CN_", "FREIGHTCHARGES", "X", "logink.track.customs", "ticket:",
          "/cuteinfo/services/ExchangeTransportService", "/ais/", "partyFunctionCode", "PartyFunctionCode",
          "a", "1", "<", ">", "LoginKit", "blogink.org", ".evil", "bG9naW5rLmNu", "BG9NAW5RLMNU", "aHR0cHM6Ly9"]


@SETTINGS
@given(st.lists(st.lists(st.sampled_from(PIECES), max_size=12).map("".join), min_size=1, max_size=5))
def test_scan_matches_regex_reference(texts):
    msgs = [t.encode() for t in texts]
    assert run(msgs) == ref_scan(msgs)
    assert run(msgs, SHORT) == ref_scan(msgs, SHORT)


@SETTINGS
@given(st.lists(st.binary(max_size=60), min_size=1, max_size=4))
def test_scan_arbitrary_bytes(msgs):
    assert run(msgs) == ref_scan(msgs)
    assert run(msgs, SHORT) == ref_scan(msgs, SHORT)


@SETTINGS
@given(st.lists(st.lists(st.sampled_from(PIECES), max_size=12).map("".join), min_size=1, max_size=5),
       st.integers(0, 2))
def test_filtered_kernel_equals_every_position_kernel(texts, cut):
    """scan_filtered and scan give the same rows in the same order (the callers keep the first
    occurrence of an indicator per message), also for messages shorter than the shortest literal."""
    msgs = [t.encode()[cut:] for t in texts]
    buf = np.frombuffer(b"".join(msgs), np.uint8) if any(msgs) else np.zeros(0, np.uint8)
    off = np.zeros(len(msgs) + 1, np.int64)
    off[1:] = np.cumsum([len(m) for m in msgs])
    fast = M.Patterns(PATTERNS)
    every = M.Patterns(PATTERNS + [(b"\x01", M.TOKEN, False)])   # never in the texts: same matches
    a, b = fast.scan(buf, off), every.scan(buf, off)
    assert fast.min_len >= 2 and every.min_len == 1
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_lookalikes_never_match():
    msgs = [b"LoginKit and loginkit", b"https://notlogink.cn/x", b"blogink.org", b"logink.cn.example.com",
            b"my-logink.cn", b"LOGINK_CN", b"XLOGINK_CN_FOO", b"/aisx/", b"xlogink.track.customs"]
    got = run(msgs)
    assert [g for g in got if PATTERNS[g[1]][1] != M.PATH_PREFIX] == []


def test_hosts_case_insensitive_and_subdomains():
    got = run([b"GET https://X.LOGINK.CN/ais/q", b"Host: Gateway.Logink.CN\r\n"])
    kinds = {(m, PATTERNS[p][0]) for m, p, _ in got}
    assert (0, b"logink.cn") in kinds and (0, b"/ais/") in kinds
    assert (1, b"gateway.logink.cn") in kinds and (1, b"logink.cn") in kinds


def test_overflow_of_first_output_buffer_retries():
    msgs = [b"logink.cn " * 500]
    assert len(run(msgs)) == 500


def test_selection_only():
    pats = M.Patterns(PATTERNS)
    msgs = [b"logink.cn", b"logink.cn", b"logink.cn"]
    buf = np.frombuffer(b"".join(msgs), np.uint8)
    off = np.array([0, 9, 18, 27], np.int64)
    mm, *_ = pats.scan(buf, off, np.array([2], np.int64))
    assert mm.tolist() == [2]


def test_filtered_kernel_refuses_a_shortest_literal_under_two_bytes():
    """scan_filtered reads the two bytes where the shortest literal ends and a gram of q bytes
    inside its first min_len: a caller passing min_len < 2, or q outside 1..min(min_len, 8), gets
    an error, never reads outside the message (numba does not bounds-check)."""
    pats = M.Patterns(PATTERNS)
    buf = np.frombuffer(b"x logink.cn", np.uint8)
    outs = [np.empty(4, t) for t in (np.int64, np.int32, np.int64, np.int64)]
    for min_len, q in ((1, 1), (5, 0), (5, 6), (12, 9)):
        with pytest.raises(ValueError):
            M.scan_filtered(buf, np.array([0, 11], np.int64), np.array([0], np.int64), min_len, q, pats.grams,
                            pats.head, pats.tail, pats.c_off, pats.c_ids, pats.pat_buf, pats.pat_off, pats.pat_kind,
                            pats.pat_ci, *outs)


@SETTINGS
@given(st.lists(st.tuples(st.text("abAB.-_:/x1", min_size=2, max_size=9), st.sampled_from([M.DOMAIN, M.TOKEN,
                                                                                      M.PATH_PREFIX, M.BASE64]),
                          st.booleans()), min_size=1, max_size=6),
       st.data())
def test_filtered_kernel_equals_every_position_kernel_for_any_literals(lits, data):
    """Random literal sets (shortest 2 to 9 bytes: every gram size and sampling step) over texts
    made of their pieces and other bytes: scan_filtered gives the rows scan gives, in order, the
    last message's grams read byte by byte where fewer than eight bytes remain in the buffer."""
    pats = [(t.encode(), k, ci) for t, k, ci in lits]
    pieces = [p for p, _, _ in pats] + [p[:1] for p, _, _ in pats] + [p[1:] for p, _, _ in pats] + \
        [b" ", b"A", b"b", b".", b"\xe9", b"X1"]
    msgs = data.draw(st.lists(st.lists(st.sampled_from(pieces), max_size=10).map(b"".join), min_size=1, max_size=4))
    buf = np.frombuffer(b"".join(msgs), np.uint8) if any(msgs) else np.zeros(0, np.uint8)
    off = np.zeros(len(msgs) + 1, np.int64)
    off[1:] = np.cumsum([len(m) for m in msgs])
    fast = M.Patterns(pats)
    every = M.Patterns(pats + [(b"\x01", M.TOKEN, False)])
    assert fast.min_len >= 2 and fast.q == min(M.GRAM_MAX, fast.min_len)
    a, b = fast.scan(buf, off), every.scan(buf, off)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from([b"\\", b"u", b"&", b"#", b"%", b"2", b"E", b"g", b"a", b"\\u", b"&#",
                                          b"%2e", b"12345678", b"\xc3\xa9"]),
                         max_size=12).map(b"".join), max_size=12), st.data())
def test_escaped_matches_reference(msgs, data):
    """``escaped``: the selected messages holding ``\\u``, ``&#`` or ``%`` and two hex digits, in the
    selection's order, a word at a time and in the tail (sequences across the eight-byte steps,
    at the ends of messages)."""
    buf = np.frombuffer(b"".join(msgs), np.uint8) if any(msgs) else np.zeros(0, np.uint8)
    off = np.zeros(len(msgs) + 1, np.int64)
    off[1:] = np.cumsum([len(m) for m in msgs])
    sel = data.draw(st.lists(st.integers(0, max(0, len(msgs) - 1)), max_size=12, unique=True)) if msgs else []
    got = M.escaped(buf, off, np.asarray(sel, np.int64)).tolist()
    assert got == [m for m in sel if b"\\u" in msgs[m] or b"&#" in msgs[m]
                   or re.search(rb"%[0-9A-Fa-f]{2}", msgs[m])]


_ESCAPE = re.compile(rb"\\u([0-9A-Fa-f]{4})|&#([0-9]{1,7});|&#[xX]([0-9A-Fa-f]{1,6});|%([0-9A-Fa-f]{2})")


def unescape_reference(raw: bytes) -> bytes:
    """``kernels.markers.unescape``, obviously: one regular expression, each escape replaced."""
    def char(m: re.Match) -> bytes:
        h, d, x, pct = m.groups()
        if pct:
            return bytes((int(pct, 16),))
        cp = int(h, 16) if h else int(d) if d else int(x, 16)
        if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
            cp = 0xFFFD
        return chr(cp).encode("utf-8")
    return _ESCAPE.sub(char, raw)


_ESC_PIECES = [b"\\u", b"\\", b"u", b"002e", b"00e9", b"d83d", b"D800", b"ZZ", b"&#", b"&#x", b"&#X", b"&", b"#",
               b"x", b"46", b"1F600", b"110000", b"99999999", b"0", b";", b"%", b"2E", b"c3", b"%C3%A9", b"g",
               b"logink", b".", b"\xc3\xa9"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_ESC_PIECES), max_size=16).map(b"".join), max_size=8), st.data())
def test_unescape_matches_reference(msgs, data):
    """Escapes whole, cut at a message's end, out of range, with too many digits, lone surrogates,
    percent bytes: the kernel writes what the regular expression does, message by message."""
    buf = np.frombuffer(b"".join(msgs), np.uint8) if any(msgs) else np.zeros(0, np.uint8)
    off = np.zeros(len(msgs) + 1, np.int64)
    off[1:] = np.cumsum([len(m) for m in msgs])
    idx = data.draw(st.lists(st.integers(0, max(0, len(msgs) - 1)), max_size=8)) if msgs else []
    out, uoff = M.unescape(buf, off, np.asarray(idx, np.int64))
    got = [out[uoff[k]:uoff[k + 1]].tobytes() for k in range(len(idx))]
    assert got == [unescape_reference(msgs[m]) for m in idx]
