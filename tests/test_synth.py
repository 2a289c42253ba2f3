"""Tests for the synthetic port-traffic generator (flowaudit.synth)."""
from __future__ import annotations

import re
from collections import Counter
from xml.sax.saxutils import unescape as xml_unescape

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from flowaudit.synth import (QUARANTINE_REASONS, TOPICS, Label, SynthMessage, generate,
                             write_files)

N = 1500  # messages in the shared sample


@pytest.fixture(scope="module")
def sample() -> list[SynthMessage]:
    return list(generate(20260301, N))


# --------------------------------------------------------------------------- independent checks

def _letter_values() -> dict[str, int]:
    """ISO 6346 letter values, computed from the rule (A=10, skip multiples of 11)."""
    out, v = {}, 10
    for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        if v % 11 == 0:
            v += 1
        out[ch] = v
        v += 1
    return out


_LV = _letter_values()


def iso6346_ok(v: str) -> bool:
    total = sum((_LV[c] if i < 4 else int(c)) * 2 ** i for i, c in enumerate(v[:10]))
    return total % 11 % 10 == int(v[10])


def imo_ok(v: str) -> bool:
    return sum(int(v[i]) * (7 - i) for i in range(6)) % 10 == int(v[6])


def test_reference_check_digits():
    assert _LV["A"] == 10 and _LV["K"] == 21 and _LV["L"] == 23 and _LV["Z"] == 38
    assert iso6346_ok("CSQU3054383")   # ISO 6346 standard example
    assert not iso6346_ok("CSQU3054384")
    assert imo_ok("9074729") and not imo_ok("9074728")   # IMO's own example


_CONTAINER_SHAPE = re.compile(r"^[A-Z]{3}[UJZ][0-9]{7}$")
_TOKEN = re.compile(r"(?<![A-Za-z0-9])([A-Z]{3}[UJZ]) ?([0-9]{7})(?![A-Za-z0-9])")
_IMO_TOKEN = re.compile(r"(?<![A-Za-z0-9])[Ii][Mm][Oo][ :.\-]{0,3}([0-9]{7})(?![A-Za-z0-9])")
_RELEASE = re.compile(r"\?(.)", re.S)


def text_of(m: SynthMessage) -> str:
    """Decoded text as an auditor sees it (EDIFACT release characters and XML entities undone)."""
    v = m.value
    if v.startswith(b"\xef\xbb\xbf"):
        v = v[3:]
    if m.format == "edifact":
        t = v.decode("latin-1" if b"UNB+UNOC" in v[:40] else "ascii")
        return _RELEASE.sub(r"\1", t)
    t = v.decode("ascii" if m.format == "x12" else "utf-8")
    return xml_unescape(t) if m.format == "xml" else t


def edi_segments(text: str) -> list[str]:
    """Split an EDIFACT interchange on ' honouring the ? release character (default UNA)."""
    if text.startswith("UNA"):
        text = text[9:]
    segs, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "?":
            cur.append(text[i:i + 2])
            i += 2
        elif c == "'":
            segs.append("".join(cur).strip("\r\n"))
            cur = []
            i += 1
        else:
            cur.append(c)
            i += 1
    rest = "".join(cur).strip()
    if rest:
        segs.append(rest)
    return segs


def good(messages):
    return [m for m in messages if m.expect_quarantine is None]


# --------------------------------------------------------------------------- API / determinism

def test_api_shape(sample):
    assert TOPICS == {"edifact": "port.edifact", "x12": "port.x12", "xml": "port.xml",
                      "json": "port.json"}
    for m in sample[:50]:
        assert isinstance(m, SynthMessage)
        assert isinstance(m.key, bytes) and m.key
        assert isinstance(m.value, bytes) and m.value
        assert m.expect_quarantine is None
        assert all(isinstance(lab, Label) for lab in m.labels)
        assert m.labels, m.msg_type


def test_deterministic_same_seed():
    a = list(generate(7, 400, bad_fraction=0.1))
    b = list(generate(7, 400, bad_fraction=0.1))
    assert a == b
    assert [m.value for m in a] == [m.value for m in b]


def test_prefix_independent_of_n():
    assert list(generate(11, 50)) == list(generate(11, 200))[:50]


def test_different_seed_differs():
    a = [m.value for m in generate(1, 100)]
    b = [m.value for m in generate(2, 100)]
    assert sum(x != y for x, y in zip(a, b)) > 95


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**63), n=st.integers(min_value=0, max_value=40))
def test_property_deterministic_and_labelled(seed, n):
    a = list(generate(seed, n))
    assert len(a) == n
    assert a == list(generate(seed, n))
    for m in a:
        _check_labels_present(m)
        _check_no_unlabelled_tokens(m)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        list(generate(1, 1, formats=("csv",)))
    with pytest.raises(ValueError):
        list(generate(1, 1, bad_fraction=1.5))


# --------------------------------------------------------------------------- labels

def _container_forms(v: str) -> list[str]:
    return [v, f"{v[:4]} {v[4:]}", f"{v[:4]}*{v[4:]}"]


def _check_labels_present(m: SynthMessage):
    text = text_of(m)
    for lab in m.labels:
        if lab.data_class == "container_number":
            v = lab.value
            if any(f in text for f in _container_forms(v)):
                continue
            # X12 B4: 6-digit serial in B4-08 and the check digit in B4-13
            assert re.search(rf"{v[:4]}\*{v[4:10]}\*[^~]*\*{v[10]}~", text), (lab, m.msg_type)
        else:
            assert lab.value in text, (lab, m.format, m.msg_type)


def test_every_label_value_occurs(sample):
    for m in good(sample):
        _check_labels_present(m)


def test_label_fields(sample):
    classes = Counter()
    for m in sample:
        for lab in m.labels:
            classes[lab.data_class] += 1
            assert lab.value and lab.value == lab.value.strip()
            assert lab.location
            if lab.data_class in ("container_number", "imo_number"):
                assert lab.value == lab.value.upper() and " " not in lab.value
            else:
                assert lab.valid is None and not lab.lookalike, lab
    for c in ("container_number", "imo_number", "booking_reference", "bill_of_lading",
              "seal_number", "party_name", "contact_person", "email", "phone", "un_number",
              "vessel_name", "party_address", "tax_id", "eori", "call_sign"):
        assert classes[c] > 0, c


def test_container_validity_matches_iso6346(sample):
    n_valid = n_invalid = n_rail = 0
    for m in sample:
        for lab in m.labels:
            if lab.data_class != "container_number":
                continue
            if re.fullmatch(r"[A-Z]{4}[0-9]{7}", lab.value):
                assert lab.valid is iso6346_ok(lab.value), lab
                if not lab.lookalike:
                    assert _CONTAINER_SHAPE.match(lab.value)
                    n_valid += lab.valid
                    n_invalid += not lab.valid
            else:  # railcar reporting mark (ends in X) + number: never a container
                assert lab.lookalike and lab.valid is None, lab
                assert re.fullmatch(r"[A-Z]{3}X[0-9]{1,6}", lab.value), lab
                assert m.format == "x12" and lab.location in ("N7", "W2")
                n_rail += 1
    assert n_rail > 0
    assert 0.003 < n_invalid / (n_valid + n_invalid) < 0.06  # ~2 % mistyped


def test_imo_validity(sample):
    ok = bad = 0
    for m in sample:
        for lab in m.labels:
            if lab.data_class == "imo_number":
                assert re.fullmatch(r"[0-9]{7}", lab.value)
                assert lab.valid is imo_ok(lab.value)
                assert not lab.lookalike
                ok += lab.valid
                bad += not lab.valid
    assert ok > 100 and 0 < bad < 0.06 * (ok + bad)


def test_lookalike_bookings(sample):
    """Booking refs shaped like container numbers carry a lookalike container label beside them."""
    n_look = n_pass = 0
    for m in sample:
        bookings = {(lab.value, lab.location) for lab in m.labels
                    if lab.data_class == "booking_reference"}
        for lab in m.labels:
            if lab.data_class == "container_number" and lab.lookalike and \
                    _CONTAINER_SHAPE.match(lab.value):
                assert (lab.value, lab.location) in bookings, lab
                assert lab.value[3] == "U"
                n_look += 1
                n_pass += lab.valid
        # ...and every container-shaped booking is labelled so
        look = {(lab.value, lab.location) for lab in m.labels if lab.lookalike}
        for b in bookings:
            if _CONTAINER_SHAPE.match(b[0]):
                assert b in look
    assert n_look > 20 and 0 < n_pass < n_look


def _check_no_unlabelled_tokens(m: SynthMessage):
    text = text_of(m)
    containers = {lab.value for lab in m.labels if lab.data_class == "container_number"}
    for mt in _TOKEN.finditer(text):
        assert mt.group(1) + mt.group(2) in containers, (mt.group(0), m.msg_type)
    imos = {lab.value for lab in m.labels if lab.data_class == "imo_number"}
    for mt in _IMO_TOKEN.finditer(text):
        assert mt.group(1) in imos, (mt.group(0), m.msg_type)


def test_no_unlabelled_container_or_imo_shaped_tokens(sample):
    for m in good(sample):
        _check_no_unlabelled_tokens(m)


def test_free_text_mentions_are_labelled(sample):
    locs = Counter(lab.location for m in sample for lab in m.labels
                   if lab.data_class in ("container_number", "imo_number"))
    assert locs["FTX"] > 0
    assert locs["N10"] + locs["cbc:Description"] + locs["Commodity/Description"] > 0


# --------------------------------------------------------------------------- formats

def test_mix_of_formats_and_types(sample):
    fmts = Counter(m.format for m in sample)
    for f in TOPICS:
        assert fmts[f] > 0.1 * N, fmts
    types = Counter(m.msg_type for m in sample)
    for t in ("BAPLIE", "COPRAR", "COARRI", "CODECO", "IFTMIN", "CUSCAR", "301", "315", "322",
              "309", "Declaration", "Waybill", "Manifest", "dcsa-tnt-event", "dcsa-booking"):
        assert types[t] > 0, (t, types)
    sizes = sorted(len(m.value) for m in sample)
    assert 300 < sizes[len(sizes) // 2] < 3500
    assert sizes[-1] > 3000 and sizes[0] < 800


def test_formats_filter():
    for f in TOPICS:
        ms = list(generate(3, 60, formats=(f,), bad_fraction=0.2))
        assert {m.format for m in ms} == {f}


def test_edifact_envelope_and_unt_counts(sample):
    variants = Counter()
    for m in good(sample):
        if m.format != "edifact":
            continue
        raw = m.value[3:] if m.value.startswith(b"\xef\xbb\xbf") else m.value
        unoc = raw.startswith(b"UNB+UNOC") or raw[9:].lstrip(b"\r\n").startswith(b"UNB+UNOC")
        text = raw.decode("latin-1")
        if not unoc:
            raw.decode("ascii")
        if any(b > 127 for b in raw):
            variants["latin1"] += 1
            assert unoc
        variants["una"] += text.startswith("UNA:+.? '")
        variants["crlf"] += "'\r\n" in text
        variants["lines"] += "'\n" in text
        variants["oneline"] += "\n" not in text
        variants["release"] += "?'" in text or "?+" in text or "?:" in text
        segs = edi_segments(text)
        assert segs[0].startswith("UNB+UNO")
        unb = segs[0].split("+")
        assert re.fullmatch(r"[0-9]{6}:[0-9]{4}", unb[4])
        assert segs[-1] == f"UNZ+1+{unb[5]}"
        assert segs[1].startswith("UNH+")
        unh_ref = segs[1].split("+")[1]
        assert segs[1].split("+")[2].split(":")[0] == m.msg_type
        assert segs[-2].startswith("UNT+")
        _, count, ref = segs[-2].split("+")
        assert ref == unh_ref
        assert int(count) == len(segs) - 2  # UNH..UNT inclusive
        assert text.rstrip("\r\n").endswith("'")
        assert m.key.decode() == f"{unb[2]}:{unb[5]}"
        for seg in segs:  # EQD+CN element 2 is the container (maybe spaced / :6346:5)
            if seg.startswith("EQD+CN+"):
                variants["space" if " " in seg.split("+")[2] else "6346" if ":6346" in seg else "plain"] += 1
    for k in ("latin1", "una", "crlf", "lines", "oneline", "release", "space", "6346", "plain"):
        assert variants[k] > 0, (k, variants)


def test_x12_envelopes(sample):
    for m in good(sample):
        if m.format != "x12":
            continue
        raw = m.value[3:] if m.value.startswith(b"\xef\xbb\xbf") else m.value
        assert raw[:4] == b"ISA*" and raw[105:106] == b"~", raw[:110]
        isa = raw[:106].decode("ascii")
        assert len(isa) == 106 and isa[104] == ">" and isa.count("*") == 16
        text = raw.decode("ascii")
        segs = [s.strip() for s in text.split("~") if s.strip()]
        isa_f = segs[0].split("*")
        assert segs[-1] == f"IEA*1*{isa_f[13]}"
        gs = segs[1].split("*")
        assert gs[0] == "GS" and gs[8] == "004010"
        assert segs[-2] == f"GE*{sum(s.startswith('ST*') for s in segs)}*{gs[6]}"
        i = 2
        while i < len(segs) - 2:
            st_f = segs[i].split("*")
            assert st_f[0] == "ST" and st_f[1] == m.msg_type
            j = i
            while not segs[j].startswith("SE*"):
                j += 1
            se = segs[j].split("*")
            assert int(se[1]) == j - i + 1 and se[2] == st_f[2]
            i = j + 1


def test_json_and_xml_parse(sample):
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False)
    for m in good(sample):
        if m.format == "json":
            doc = orjson.loads(m.value)
            assert isinstance(doc, dict)
            if m.msg_type == "dcsa-tnt-event":
                assert "eventID" in doc
            elif m.msg_type == "logink-track":
                assert doc["method"] == "logink.track.customs" and m.egress == ("LOGINK",)
            else:
                assert doc["carrierBookingReference"]
        elif m.format == "xml":
            root = etree.fromstring(m.value, parser)
            assert etree.QName(root).localname == m.msg_type


def test_xml_namespaces(sample):
    prefixed = default = 0
    for m in sample:
        if m.msg_type == "Declaration":
            prefixed += m.value.find(b"<dec:Declaration") >= 0
            default += m.value.find(b"<Declaration xmlns=") >= 0
    assert prefixed and default


# --------------------------------------------------------------------------- bad messages

def test_bad_messages_are_what_they_say():
    ms = list(generate(99, 600, bad_fraction=0.25))
    bad = [m for m in ms if m.expect_quarantine is not None]
    assert 0.15 * len(ms) < len(bad) < 0.35 * len(ms)
    assert {m.expect_quarantine for m in bad} == set(QUARANTINE_REASONS)
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    for m in bad:
        assert m.msg_type == "bad" and m.labels == () and m.key
        r = m.expect_quarantine
        if r == "empty_value":
            assert m.value == b""
        elif r == "unterminated_interchange":
            assert m.format == "edifact"
            assert b"UNZ+1+" in m.value and not m.value.rstrip(b"\r\n").endswith(b"'")
        elif r == "malformed_json":
            assert m.format == "json"
            m.value.decode("utf-8")
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(m.value)
        elif r == "malformed_xml":
            assert m.format == "xml"
            m.value.decode("utf-8")
            with pytest.raises(etree.XMLSyntaxError):
                etree.fromstring(m.value, parser)
        elif r == "invalid_utf8":
            assert m.format == "json" and b"\xff\xfe" in m.value
            with pytest.raises(UnicodeDecodeError):
                m.value.decode("utf-8")
        else:
            pytest.fail(r)
    for m in ms:  # the good ones in a mixed stream are still fine
        if m.expect_quarantine is None:
            _check_labels_present(m)


def test_bad_fraction_zero_has_no_bad(sample):
    assert all(m.expect_quarantine is None and m.msg_type != "bad" for m in sample)


# --------------------------------------------------------------------------- files

def test_write_files(tmp_path):
    ms = list(generate(5, 120, bad_fraction=0.05))
    counts = write_files(ms, tmp_path)
    assert counts["messages"] == 120
    assert counts["bytes"] == sum(len(m.value) for m in ms)
    assert counts["labels"] == sum(len(m.labels) for m in ms)
    assert sum(counts["by_format"].values()) == 120
    lines = (tmp_path / "labels.jsonl").read_bytes().splitlines()
    assert len(lines) == 120
    for m, line in zip(ms, lines):
        rec = orjson.loads(line)
        assert rec["format"] == m.format and rec["msg_type"] == m.msg_type
        assert rec["key"].encode("latin-1") == m.key
        assert rec["file"].startswith(m.format + "/")
        assert (tmp_path / rec["file"]).read_bytes() == m.value
        assert [Label(**d) for d in rec["labels"]] == list(m.labels)
        assert rec.get("expect_quarantine") == m.expect_quarantine
