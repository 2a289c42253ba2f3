"""Salvage scan (issue 12 part 2): quarantined and unknown messages still go through the shape
recognisers with their context rules (kernels/salvage.py, flowaudit/decode/salvage.py).

* the kernel against a slow Python reference of its context rules (hypothesis);
* each salvage path through ``Classifier.run``: unknown format, a headless EDIFACT fragment cut
  from a shared-corpus interchange, malformed JSON and XML, truncated X12; the quarantine row
  is unchanged and the hits are flagged ``salvaged`` on the quarantined message's provenance;
* the negative corpus (tests/negative/): zero hits, zero LOGINK transfers.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowaudit.decode import FMT_EDIFACT, FMT_JSON, FMT_X12, FMT_XML
from flowaudit.decode import salvage as S
from flowaudit.kernels import salvage as K
from flowaudit.kernels import values as V
from flowaudit.pipeline import FMT_AUTO, Batch, Classifier
from flowaudit.protect import Protector

KEY = b"salvage-test-key-0123456789abcdef"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "messages"
NEGATIVE = Path(__file__).parent / "negative"


@pytest.fixture(scope="module")
def clf():
    return Classifier(Protector(KEY))


def arr(b: bytes) -> np.ndarray:
    return np.frombuffer(b, np.uint8).copy()


# ------------------------------------------------------------------ slow reference of the rules
_SEP = set(b' :#.="\'>+\t-(),')
_SUFFIX = re.compile(rb"[ _.\-]{0,4}(?:NUMBER|NBR|NUM|REF|NO|NR|ID)(?![A-Za-z])", re.I)


def _alnum(c):
    return chr(c).isascii() and chr(c).isalnum()


def _letter(c):
    return chr(c).isascii() and chr(c).isalpha()


def _parse(fn, text: bytes, a: int, b: int):
    out = np.zeros(128, np.uint8)
    r = fn(arr(text), a, b, out, 0)
    st_, n = (r, {V.parse_container: 11, V.parse_imo: 7}[fn]) if isinstance(r, (int, np.integer)) else r
    return int(st_), bytes(out[:n]) if st_ >= 0 else b""


def _date(tok: bytes) -> bool:
    if len(tok) == 10 and (re.fullmatch(rb"\d{4}([-./])\d{2}\1\d{2}", tok) or re.fullmatch(rb"\d{2}([-./])\d{2}\1\d{4}", tok)):
        return True
    if re.fullmatch(rb"\d{8}", tok):
        y1, m1, d1 = int(tok[:2]), int(tok[4:6]), int(tok[6:])
        d2, m2, y2 = int(tok[:2]), int(tok[2:4]), int(tok[4:6])
        return (y1 in (19, 20) and 1 <= m1 <= 12 and 1 <= d1 <= 31) or (y2 in (19, 20) and 1 <= m2 <= 12 and 1 <= d2 <= 31)
    return False


def _value(kind, t: bytes, v: int):
    """(valid, stop, value) of the labelled value at ``v`` or None."""
    e = len(t)
    if v >= e:
        return None
    if kind in (K.K_IMO, K.K_UN):
        w = 7 if kind == K.K_IMO else 4
        m = re.compile(rb"\d{%d}(?![A-Za-z0-9])" % w).match(t, v)
        if not m:
            return None
        st_, val = _parse(V.parse_imo if kind == K.K_IMO else V.parse_un_number, t, v, v + w)
        return (1, v + w, val) if st_ == 1 else None
    if kind == K.K_PHONE:
        m = re.compile(rb"\+?[0-9 .()\-]*").match(t, v)
        b = min(m.end(), v + 24)
        while b > v and not chr(t[b - 1]).isdigit():
            b -= 1
        if (b < e and _alnum(t[b])) or b <= v or _date(t[v:b]):
            return None
        st_, val = _parse(V.parse_phone, t, v, b)
        return (1, b, val) if st_ == 1 else None
    if kind == K.K_EMAIL:
        m = re.compile(rb"([A-Za-z0-9._\-]{1,63}) ([A-Za-z0-9.\-]{1,64})").match(t, v)
        if not m or (m.end(1) < e and t[m.end(1)] != 32):
            return None
        local, dom = m.group(1), m.group(2)
        if m.end(2) - m.start(2) == 64 and m.end(2) < e and (_alnum(t[m.end(2)]) or t[m.end(2)] in b".-"):
            return None  # the kernel stops at 64 bytes of domain: keep the reference as strict
        f = m.end(2)
        dom = dom.rstrip(b".")
        f = m.start(2) + len(dom)
        dot = dom.rfind(b".")
        if (dot <= 0 or dot >= len(dom) - 2 or (f < e and t[f] == 64) or len(local) + 1 + len(dom) > V.VALUE_ROOM
                or not dom[dot + 1:].isalpha()):
            return None
        return 0, f, local.lower() + b"@" + dom.lower()
    m = re.compile(rb"[A-Za-z0-9]{0,21}").match(t, v)
    b = m.end()
    if b < e and _alnum(t[b]):
        return None
    if kind == K.K_EORI:
        st_, val = _parse(V.parse_eori, t, v, b)
        return (1, b, val) if st_ == 1 else None
    tok = t[v:b]
    if not (K.MIN_REF <= len(tok) <= K.MAX_REF) or not re.search(rb"\d", tok):
        return None
    return -1, b, tok.upper()


def reference(t: bytes) -> list:
    """(kind, label index, valid, start, end, value) as kernels/salvage.py finds them."""
    rows = []
    for kind, finder, parser in ((K.K_CONT, V.next_container, V.parse_container), (K.K_EMAIL, V.next_email, V.parse_email),
                                 (K.K_LEI, V.next_lei, V.parse_lei), (K.K_USCI, V.next_usci, V.parse_usci)):
        p = 0
        while p < len(t):
            a, b = finder(arr(t), p, len(t))
            if a < 0:
                break
            st_, val = _parse(parser, t, a, b)
            if (st_ == 1 if kind == K.K_CONT else st_ >= 0) and val:
                rows.append((kind, -1, st_, a, b, val))
            p = b
    labels = [re.compile(re.escape(lab[:1].encode()) + b"".join(b"[ _\\-]*" + re.escape(c.encode()) for c in lab[1:]), re.I)
              for lab, _, _ in S.LABELS]
    i = 0
    while i < len(t):
        nxt = i + 1
        if _letter(t[i]) and (i == 0 or not _alnum(t[i - 1])):
            for j, (lab, kind, _cls) in enumerate(S.LABELS):
                m = labels[j].match(t, i)
                if not m:
                    continue
                p = m.end()
                s2 = _SUFFIX.match(t, p)
                if s2:
                    p = s2.end()
                if p < len(t) and lab[-1].isalpha() and (_letter(t[p]) if kind in (K.K_IMO, K.K_UN) else _alnum(t[p])):
                    continue
                v, k = p, 0
                while v < len(t) and k < 6 and t[v] in _SEP and not (
                        kind == K.K_PHONE and t[v] == 43 and v + 1 < len(t) and chr(t[v + 1]).isdigit()):
                    v += 1
                    k += 1
                got = _value(kind, t, v)
                if got is None:
                    continue
                rows.append((kind, j, got[0], v, got[1], got[2]))
                nxt = got[1]
                break
        i = max(nxt, i + 1)
    return sorted(rows)


def kernel_rows(t: bytes) -> list:
    rows, vbuf = S.scan_ranges(arr(t), np.array([0], np.int64), np.array([len(t)], np.int64))
    return sorted((int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), bytes(vbuf[r[6]:r[6] + r[7]])) for r in rows)


_WORDS = [lab for lab, _, _ in S.LABELS] + [
    "bl", "B/L No.", "Booking Number", "bookingNumber", "imoNumber", "TEL.", "Tel:", "E-MAIL", "UN NO.", "RFF+BM:",
    "RFF+BN:", "COM+", "BLUE", "TELL", "UNH", "UNT+12+1", "EORI No", "IMO9321483", "IMO 9321484", "9321483",
    "UN1203", "UN 9999", "1203", "+31 10 252 1010", "0044 20 7946 0958", "2024-03-15", "20240315", "15.03.2024",
    "977-01-5426330", "MEDUAB123456", "SES00159685", "ABCDEF", "A1", "DE123456789012345", "ROSHAN", "FUJITOGRP.COM",
    "x@y.com", "RMCU0105038", "RMCU 0105038", "MSKU1234567", "UTLX 123456", "5493001KJTIIGC8Y1R12",
    "AT611904300234573201", "006141411234567890", "91350211M0000FLU37", "LoginKit", "CNNGB", "NO", "number", "ID",
]
_SEPS = [" ", "  ", ":", ": ", "'", "+", "\r\n", "\x1d", ",", "-", "/", "", ".", "#", '"']


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_WORDS), st.sampled_from(_SEPS)), max_size=14))
def test_kernel_matches_reference(parts):
    t = "".join(w + s for w, s in parts).encode()
    assert kernel_rows(t) == reference(t)


def test_rules_by_example():
    def found(t):
        return {(S.LABELS[r[1]][0] if r[1] >= 0 else K.KIND_NAMES[r[0]], r[5].decode()) for r in kernel_rows(t)}

    assert found(b"RFF+BM:MEDUAB123456'COM+0044 20 7946 0958:TE'EQD+CN+RMCU0105038:6346:5'") == {
        ("RFF+BM", "MEDUAB123456"), ("COM+", "00442079460958"), ("container", "RMCU0105038")}
    assert found(b"PHONE:977-01-5426330/5011598. EMAIL:ROSHAN FUJITOGRP.COM; MOB: 91 98310 48366") == {
        ("PHONE", "977015426330"), ("EMAIL", "roshan@fujitogrp.com"), ("MOB", "919831048366")}
    assert found(b'IMO NO: 9813888 "imoNumber":"9321483" UN1203 UN NO. 3082 EORI: DE123456789012345') == {
        ("IMO", "9813888"), ("IMO", "9321483"), ("UN", "1203"), ("UN", "3082"), ("EORI", "DE123456789012345")}
    # no label, wrong check digit, dates after a phone label, out-of-range UN number: nothing
    assert found(b"REF MEDUAB123456 MSKU1234567 IMO 9321484 TEL 2024-03-15 FAX: 20240315 UN 9999 UNH+1") == set()


def test_kernel_bounds_and_overflow():
    t = b"TEL +31 10 252 1010 " * 50
    buf = arr(t)
    lab = S.tables()
    H = np.zeros((3, K.H_COLS), np.int64)
    vb = np.zeros(3 * V.VALUE_ROOM, np.uint8)
    assert K.salvage_scan(buf, np.array([0], np.int64), np.array([len(t)], np.int64), lab.labels, lab.lab_off,
                          lab.lab_kind, H, vb) == -1      # full: the shell grows and reruns
    rows, _ = S.scan_ranges(buf, np.array([0, 5, len(t)], np.int64), np.array([len(t), 3, len(t) + 9], np.int64))
    assert rows.shape[0] == 50 and set(rows[:, 0]) == {0}  # empty / reversed / outside ranges skipped
    for cut in range(0, 21):                              # a value cut at the range end: never read past it
        rows, vb2 = S.scan_ranges(buf, np.array([0], np.int64), np.array([cut], np.int64))
        assert all(r[5] <= cut for r in rows)


# ------------------------------------------------------------------ salvage paths through the pipeline
def _run(clf, values, declared):
    r = clf.run(Batch.from_values(values, declared))
    reasons = dict(zip(r.q_idx.tolist(), r.quarantine.column("reason").to_pylist()))
    hits = r.hits.to_pylist()
    return r, reasons, hits


def _corpus_file(name):
    p = CORPUS / name
    if not p.is_file():
        pytest.skip(f"shared corpus file missing: {p}")
    return p.read_bytes()


def test_headless_edifact_fragment_from_the_corpus(clf):
    """A corpus COARRI cut mid-segment (its UNB/UNH lost): quarantined as headless_fragment, as
    before, and its containers are salvaged hits on the fragment's own offset."""
    whole = _corpus_file("edifact/php-edifact_edifact__D95BCOARRI.edi")
    r0 = clf.run(Batch.from_values([whole], FMT_EDIFACT))
    want = {h["value_hmac"] for h in r0.hits.to_pylist()
            if h["data_class"] == "container_number" and h["check_digit_valid"]}
    assert want
    cut = whole.index(b"'", whole.index(b"UNH")) - 5          # inside the UNH segment
    frag = whole[cut:]
    r, reasons, hits = _run(clf, [b'{"a": 1}', frag], [FMT_JSON, FMT_EDIFACT])
    assert reasons == {1: "headless_fragment"} and r.m_idx.tolist() == [0]
    row = r.quarantine.to_pylist()[0]
    assert row["offset"] == 1 and row["bytes"] == len(frag)
    cont = {h["value_hmac"] for h in hits if h["data_class"] == "container_number"}
    assert cont == want
    assert all(h["salvaged"] and h["offset"] == 1 and h["confidence"] < 100 and h["location"].startswith("salvage:")
               for h in hits)
    assert all(frag[h["byte_start"]:h["byte_end"]].replace(b" ", b"") in frag for h in hits)
    assert r.messages.column("n_hits").to_pylist() == [0]      # n_hits counts the messages row's own hits only


def test_unknown_malformed_and_truncated_paths(clf):
    cont = b"RMCU0105038"
    values = [
        b"Manifest note: container RMCU0105038, B/L SES00159685, TEL +91 33 2222 3333, ops@port.example",
        b'{"equipmentReference": "RMCU0105038", "consignee": {"email": "ops@port.example"',     # truncated JSON
        b"<Doc><TransportEquipment><ID>RMCU0105038</ID></TransportEquipment><Contact>ops@port.example</Cont",
        b"ISA*00*          *00*          *ZZ*A              *ZZ*B              *260301*1200*U*00401*000000001*0*P*>~"
        b"GS*QO*A*B*20260301*1200*1*X*004010~ST*315*0001~N7*RMCU*0105038~N9*BM*SES00159685~",   # no SE/GE/IEA
        b"",
        None,
    ]
    r, reasons, hits = _run(clf, values, [FMT_AUTO, FMT_JSON, FMT_XML, FMT_X12, FMT_AUTO, FMT_AUTO])
    assert reasons == {0: "unknown_format", 1: "malformed_json", 2: "malformed_xml", 3: "unterminated_interchange",
                       4: "empty_value", 5: "null_value"}
    assert r.messages.num_rows == 0
    by = {}
    for h in hits:
        assert h["salvaged"] and h["schema_version"] == "3"
        by.setdefault(h["offset"], set()).add((h["data_class"], h["location"]))
    assert by[0] == {("container_number", "salvage:container"), ("bill_of_lading", "salvage:B/L"),
                     ("phone", "salvage:TEL"), ("email", "salvage:email")}
    assert by[1] == {("container_number", "salvage:container"), ("email", "salvage:email")}
    assert by[2] == {("container_number", "salvage:container"), ("email", "salvage:email")}
    # X12's container is split over two elements (N7*RMCU*0105038): not a free-text shape; the
    # reference behind N9*BM has no label the salvage rules know: nothing but what has its own proof
    assert 3 not in by or by[3] <= {("container_number", "salvage:container")}
    assert {4, 5}.isdisjoint(by)
    for h in hits:
        v = values[h["offset"]]
        assert h["byte_end"] <= len(v) and (h["data_class"] != "container_number" or cont in v)
    # hit counts feed the metrics like any hit
    assert r.hit_counts[("unknown", "phone")] == 1


def test_ices_igm_unknown_when_declared_as_another_format_is_still_salvaged(clf):
    """The ICES IGM declared as EDIFACT is refused (headless), not lost: salvage finds its phones."""
    data = _corpus_file("other/cplsupport9123_ICES-IGM-parser__igm.sgm")
    r, reasons, hits = _run(clf, [data], FMT_EDIFACT)
    assert list(reasons.values())[0] != "ok" and r.messages.num_rows == 0
    classes = {h["data_class"] for h in hits}
    assert {"container_number", "phone", "email"} <= classes
    assert all(h["salvaged"] for h in hits)


# ------------------------------------------------------------------ negative corpus
def _negative_files():
    files = sorted(p for p in NEGATIVE.iterdir() if p.name.startswith("lookalikes"))
    assert len(files) >= 10
    return files


def test_negative_corpus_gives_no_hits(clf, tmp_path):
    from flowaudit import schemas
    from flowaudit.detect import egress as E
    from flowaudit.detect import watchlist as W
    from flowaudit.detect import zones as Z

    files = _negative_files()
    values = [p.read_bytes() for p in files]
    egress = E.EgressDetector(W.Watchlist(tmp_path), Z.load(schemas.path("zones.example.toml")))
    c = Classifier(Protector(KEY), egress=egress)
    # as they come (auto), and each as salvage input (declared a format it is not: quarantined)
    for declared in (FMT_AUTO, FMT_EDIFACT, FMT_JSON):
        r = c.run(Batch.from_values(values, declared))
        assert r.hits.num_rows == 0, [(files[h["offset"]].name, h["data_class"], h["location"])
                                      for h in r.hits.to_pylist()]
        assert r.transfers is None or r.transfers.num_rows == 0
    # every path is exercised: decoded formats and quarantined ones
    r = c.run(Batch.from_values(values, FMT_AUTO))
    fmts = {files[i].suffix: f for i, f in zip(r.m_idx.tolist(), r.messages.column("format").to_pylist())}
    assert {"flat", "json", "xml"} <= set(fmts.values())
    assert set(r.quarantine.column("reason").to_pylist()) >= {"unknown_format", "malformed_json", "malformed_xml",
                                                              "unterminated_interchange"}
    # the headless EDIFACT fragment on an EDIFACT topic: headless_fragment, and still no hit
    frag = (NEGATIVE / "lookalikes_headless.edi").read_bytes()
    r, reasons, hits = _run(c, [frag], FMT_EDIFACT)
    assert reasons == {0: "headless_fragment"} and hits == []
