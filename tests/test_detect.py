"""Format detection and UTF-8 validation against slow Python references."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from flowaudit.decode import FMT_EDIFACT, FMT_JSON, FMT_UNKNOWN, FMT_X12, FMT_XML
from flowaudit.decode.detect import detect, utf8_ok

SETTINGS = settings(max_examples=200, deadline=None)


def batch(msgs):
    offs = np.zeros(len(msgs) + 1, dtype=np.int64)
    np.cumsum([len(m) for m in msgs], out=offs[1:])
    return np.frombuffer(b"".join(msgs), dtype=np.uint8).copy(), offs


def ref_detect(m: bytes) -> int:
    i = 0
    while i < len(m):
        if m[i] in b" \t\r\n\x00":
            i += 1
        elif m[i:i + 3] == b"\xef\xbb\xbf":
            i += 3
        else:
            break
    rest = m[i:]
    if not rest:
        return FMT_UNKNOWN
    if rest[:1] == b"<":
        return FMT_XML
    if rest[:1] in (b"{", b"["):
        return FMT_JSON
    if rest[:3] in (b"UNA", b"UNB") or rest[:4] == b"UNH+":
        return FMT_EDIFACT
    if rest[:3] == b"ISA" or rest[:3] in (b"GS*", b"ST*"):
        return FMT_X12
    return FMT_UNKNOWN


def ref_utf8(m: bytes) -> int:
    try:
        m.decode("utf-8")
        return 1
    except UnicodeDecodeError:
        return 0


PREFIX = st.lists(st.sampled_from([b" ", b"\t", b"\r\n", b"\x00", b"\xef\xbb\xbf", b"\n"]), max_size=4).map(b"".join)
HEAD = st.sampled_from([b"UNA:+.? '", b"UNB+UNOA:1", b"UNH+1+COPRAR", b"UNH", b"ISA*00*", b"GS*QO", b"ST*315",
                        b"<?xml ", b"<a/>", b"{}", b"[1]", b"UN", b"IS", b"G", b"", b"\xef\xbb", b"xml", b"S"])
MSG = st.tuples(PREFIX, HEAD, st.binary(max_size=12)).map(b"".join) | st.binary(max_size=20)


@SETTINGS
@given(st.lists(MSG, max_size=12))
def test_detect_matches_reference(msgs):
    buf, offs = batch(msgs)
    got = detect(buf, offs)
    assert got.dtype == np.uint8
    assert got.tolist() == [ref_detect(m) for m in msgs]


def test_detect_examples():
    msgs = [b"\xef\xbb\xbfUNB+UNOC:3", b"  \r\n<Declaration/>", b"\x00\x00{\"a\":1}", b"ISA*00", b"",
            b"   ", b"hello", b"ST*301*0001~", b"[", b"UNH+1+COPRAR:D:95B:UN'"]
    buf, offs = batch(msgs)
    assert detect(buf, offs).tolist() == [FMT_EDIFACT, FMT_XML, FMT_JSON, FMT_X12, FMT_UNKNOWN, FMT_UNKNOWN,
                                          FMT_UNKNOWN, FMT_X12, FMT_JSON, FMT_EDIFACT]


EDGE = [b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x9f\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
        b"\xf0\x80\x80\x80", b"\xf0\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff",
        b"\xe2\x82", b"\xe2", b"\x80", b"\xf0\x9f\x98", "€".encode(), "\U0010ffff".encode(),
        "\ud7ff".encode(), "\ue000".encode(), "ø".encode(), b"abc", b""]


@SETTINGS
@given(st.lists(st.binary(max_size=24) | st.text(max_size=12).map(lambda s: s.encode("utf-8", "surrogatepass"))
                | st.lists(st.sampled_from(EDGE), max_size=4).map(b"".join), max_size=10))
def test_utf8_matches_decode(msgs):
    buf, offs = batch(msgs)
    sel = np.arange(len(msgs), dtype=np.int64)[::-1].copy()
    got = utf8_ok(buf, offs, sel)
    assert got.dtype == np.int8
    assert got.tolist() == [ref_utf8(msgs[i]) for i in sel]


def test_utf8_edges():
    buf, offs = batch(EDGE)
    sel = np.arange(len(EDGE), dtype=np.int64)
    assert utf8_ok(buf, offs, sel).tolist() == [ref_utf8(m) for m in EDGE]
    assert utf8_ok(buf, offs, sel)[:11].tolist() == [0] * 11


def test_dtype_validation():
    buf, offs = batch([b"{}"])
    with pytest.raises(ValueError):
        detect(buf.astype(np.int8), offs)
    with pytest.raises(ValueError):
        detect(buf, offs.astype(np.int32))
    with pytest.raises(ValueError):
        detect(buf, np.array([0, 5], dtype=np.int64))
    with pytest.raises(ValueError):
        utf8_ok(buf, offs, np.array([1], dtype=np.int64))
    with pytest.raises(ValueError):
        utf8_ok(buf, offs, np.array([0], dtype=np.int32))
