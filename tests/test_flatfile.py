"""Flat files (issue 12 part 3): format ``flat`` (flowaudit/decode/flat.py, kernels/flat.py,
``looks_flat`` in kernels/detect.py): the ICES 1.5 IGM of the shared corpus, CSV / TSV with a
header, fixed width; detection; the format in every list of formats."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowaudit.config import FORMATS
from flowaudit.decode import FMT_FLAT, FMT_UNKNOWN, FORMAT_CODES, FORMAT_NAMES
from flowaudit.decode import flat as F
from flowaudit.decode.detect import detect
from flowaudit.pipeline import _FORMAT_LIST, FMT_AUTO, Batch, Classifier, format_code
from flowaudit.protect import Protector

KEY = b"flatfile-test-key-0123456789abcdef"
IGM = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "messages" / "other" / \
    "cplsupport9123_ICES-IGM-parser__igm.sgm"


@pytest.fixture(scope="module")
def clf():
    return Classifier(Protector(KEY, raw=True))


def _run(clf, values, declared=FMT_AUTO):
    r = clf.run(Batch.from_values(values, declared))
    return r, r.hits.to_pylist()


def test_format_code_is_appended_and_listed():
    assert FMT_FLAT == 8 and FORMAT_NAMES[FMT_FLAT] == "flat" and FORMAT_CODES["flat"] == 8
    assert [FORMAT_CODES[n] for n in ("unknown", "edifact", "x12", "xml", "json", "netflow", "goflow", "dns")] == \
        list(range(8))                                   # earlier codes unchanged
    assert _FORMAT_LIST[FMT_FLAT] == "flat" and format_code("flat") == FMT_FLAT and "flat" in FORMATS


def _det(values):
    buf = np.frombuffer(b"".join(values), np.uint8).copy()
    off = np.zeros(len(values) + 1, np.int64)
    off[1:] = np.cumsum([len(v) for v in values])
    return detect(buf, off).tolist()


def test_detection():
    flat = [b"a,b,c\r\n1,2,3\r\n", b"name\timo\tcontainer\nX\t9321483\tRMCU0105038\n",
            b'id;"name; full";x\n1;"a; b";2\n', b"HREC\x1dZZ\x1dX\r\n<vesinfo>\r\nF\x1dA\r\n",
            b"NAME      IMO       CONTAINER\nACME      9321483   RMCU0105038\nBETA      9321483   MAGU5200808\n"]
    other = [b"hello, world", b"a,b,c", b"a,b,c\n1,2\n", b"1,2,3\n4,5,6\n", b"free text with, two, commas\nand more\n",
             b"LOC+9+NLRTM'EQD+CN+X'\n", b"a,b,c\n1,\x002,3\n", b"NAME IMO CONTAINER\nACME 9321483 X\n"]
    assert _det(flat) == [FMT_FLAT] * len(flat)
    assert _det(other) == [FMT_UNKNOWN] * len(other)
    # the earlier formats win; flat detection never overrides a declared format
    assert _det([b"UNB+UNOA:2+A+B,C,D\n1,2,3\n", b'{"a,b,c": 1}\n']) == [1, 4]
    clf = Classifier(Protector(KEY))
    r = clf.run(Batch.from_values([b"a,b,c\r\n1,2,3\r\n"], 4))            # declared JSON: malformed, no mismatch
    assert r.quarantine.column("reason").to_pylist() == ["malformed_json"]


def test_ices_igm_from_the_corpus(clf):
    if not IGM.is_file():
        pytest.skip(f"shared corpus file missing: {IGM}")
    data = IGM.read_bytes()
    r, hits = _run(clf, [data])
    assert r.q_idx.size == 0
    m = r.messages.to_pylist()[0]
    assert m["format"] == "flat" and m["msg_type"] == "ICES" and m["n_hits"] == len(hits)
    assert not any(h["salvaged"] for h in hits)
    by = Counter((h["data_class"], h["location"]) for h in hits)
    raw = {(h["data_class"], h["location"]): set() for h in hits}
    for h in hits:
        raw[(h["data_class"], h["location"])].add(h["value_raw"])
    # the vessel: IMO (check digit right), call sign, voyage; the master by name
    assert raw[("imo_number", "ICES/vesinfo/imo_code")] == {"9813888"}
    assert raw[("contact_person", "ICES/vesinfo/master_name")] == {"THANGAMUTHU KARUPPIAH"}
    assert raw[("call_sign", "ICES/vesinfo/call_sign")] == {"9M2379"}
    # consignees (importers) and notify parties with their addresses, on every cargo line
    cargo_lines = data.count(b"\r\nF\x1d") - 1
    assert by[("party_name", "ICES/cargo/importer_name")] == cargo_lines == 47
    assert "TO THE ORDER OF HDFC BANK LIMITED," in raw[("party_name", "ICES/cargo/importer_name")]
    assert by[("party_address", "ICES/cargo/importer_address1")] == 47
    assert by[("bill_of_lading", "ICES/cargo/bl_no")] == 47
    # containers and seals of the <contain> section (check digits right)
    conts = [h for h in hits if h["location"] == "ICES/contain/container_no"]
    assert len(conts) == 171 and all(h["check_digit_valid"] for h in conts)
    assert {"RMCU0105038", "MAGU5200808"} <= {h["value_raw"] for h in conts}
    assert by[("seal_number", "ICES/contain/seal_no")] == 171
    # phones and the e-mail (its '@' lost) inside marks and address lines, found by shape and label
    phones = {h["value_raw"] for h in hits if h["data_class"] == "phone"}
    assert {"977015426330", "919831048366"} <= phones
    assert "roshan@fujitogrp.com" in {h["value_raw"] for h in hits if h["data_class"] == "email"}
    # every hit's byte range is inside the message and holds the value's digits / letters
    for h in hits:
        assert 0 <= h["byte_start"] < h["byte_end"] <= len(data)


def test_csv_tsv_with_headers(clf):
    csv = (b'Container No,IMO,Consignee Name,Email,Phone,Seal,Remarks\r\n'
           b'RMCU0105038,9813888,"ACME, LTD",ops@acme.example,+91 98310 48366,SL123456,"call TEL 033 2222 3333"\r\n'
           b'MAGU5200808,9813889,BETA CO,,,,\r\n')
    tsv = b"container\tconsignee\tnote\tB/L No\nMAGU5200808\tJOHN DOE\tsee B/L SES00159685\tMEDU1234567\n"
    semi = b"booking;vessel;pod\nBKG778899;MSC ANNA;NLRTM\n"
    r, hits = _run(clf, [csv, tsv, semi])
    assert r.q_idx.size == 0 and r.messages.column("msg_type").to_pylist() == ["csv", "tsv", "ssv"]
    got = {(h["offset"], h["data_class"], h["location"], h["value_raw"]) for h in hits}
    assert got == {
        (0, "container_number", "CSV/Container No", "RMCU0105038"),
        (0, "container_number", "CSV/Container No", "MAGU5200808"),
        (0, "imo_number", "CSV/IMO", "9813888"),             # 9813889: wrong check digit, IMO columns need it right
        (0, "party_name", "CSV/Consignee Name", "ACME, LTD"),
        (0, "party_name", "CSV/Consignee Name", "BETA CO"),
        (0, "email", "CSV/Email", "ops@acme.example"),
        (0, "phone", "CSV/Phone", "+919831048366"),
        (0, "seal_number", "CSV/Seal", "SL123456"),
        (0, "phone", "CSV/Remarks", "03322223333"),           # a text column: shapes and labels
        (1, "container_number", "TSV/container", "MAGU5200808"),
        (1, "party_name", "TSV/consignee", "JOHN DOE"),
        (1, "bill_of_lading", "TSV/note", "SES00159685"),
        (1, "bill_of_lading", "TSV/B/L No", "MEDU1234567"),     # a header with a slash
        (2, "booking_reference", "SSV/booking", "BKG778899"),
        (2, "vessel_name", "SSV/vessel", "MSC ANNA"),
        (2, "port_of_call", "SSV/pod", "NLRTM"),
    }
    # the byte range of a quoted cell is inside the quotes
    h = next(h for h in hits if h["value_raw"] == "ACME, LTD")
    assert csv[h["byte_start"]:h["byte_end"]] == b"ACME, LTD"
    # header-named cells are confident, shapes in text columns less so
    conf = {h["location"]: h["confidence"] for h in hits}
    assert conf["CSV/Container No"] == 90 and conf["CSV/Remarks"] == 40


def test_fixed_width(clf):
    fixed = (b"CONTAINER    CONSIGNEE        IMO       NOTE\n"
             b"MAGU5200808  ACME LTD         9813888   TEL +31 10 252 1010\n"
             b"RMCU0105038  BETA CO          9813888\n")
    r, hits = _run(clf, [fixed])
    assert r.messages.column("msg_type").to_pylist() == ["fixed"]
    got = sorted((h["data_class"], h["location"], h["value_raw"]) for h in hits)
    assert got == sorted([
        ("container_number", "FIXED/CONTAINER", "MAGU5200808"), ("container_number", "FIXED/CONTAINER", "RMCU0105038"),
        ("party_name", "FIXED/CONSIGNEE", "ACME LTD"), ("party_name", "FIXED/CONSIGNEE", "BETA CO"),
        ("imo_number", "FIXED/IMO", "9813888"), ("imo_number", "FIXED/IMO", "9813888"),
        ("phone", "FIXED/NOTE", "+31102521010")])


def test_header_names_through_the_catalogue():
    names = F.rules()["names"]
    # flat.toml's own names and json.toml's member names
    for header, cls in (("Consignee", 21), ("IMO No.", 2), ("container_number", 1), ("vesselIMONumber", 2),
                        ("consigneeName", 21), ("Master Name", 29), ("e-mail", 30)):
        assert names[F.normalise(header)][0] == cls, header
    assert F.normalise("note") not in names and F.normalise("reference") not in names


@settings(max_examples=120, deadline=None)
@given(st.lists(st.sampled_from([b",", b"\t", b";", b"|", b"\x1d", b"\x1c", b"\r\n", b"\n", b'"', b"  ", b" ",
                                 b"<cargo>", b"<END-cargo>", b"<contain>", b"container", b"consignee", b"IMO",
                                 b"RMCU0105038", b"9813888", b"TEL 033 2222 3333", b"x@y.com", b"\xff", b"B/L"]),
                max_size=40))
def test_hostile_flat_input_never_raises(parts):
    """Any bytes routed to the flat decoder: no exception, hits inside their message."""
    data = b"".join(parts)
    values = [data, b"a,b,c\n" + data, b"HREC\x1d\x1d\n<cargo>\n" + data]
    buf = np.frombuffer(b"".join(values), np.uint8).copy()
    off = np.zeros(4, np.int64)
    off[1:] = np.cumsum([len(v) for v in values])
    r = F.classify(buf, off, np.arange(3, dtype=np.int64))
    assert r.status.tolist() == [0, 0, 0] and len(r.msg_type) == 3
    for k in range(r.n_hits):
        m = int(r.hit_msg[k])
        assert off[m] <= r.hit_start[k] < r.hit_end[k] <= off[m + 1]
        assert r.val_off[k + 1] - r.val_off[k] > 0
