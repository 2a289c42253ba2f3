"""Layers (issue 12 part 1): payloads wrapped in a JSON string, base64, gzip/zlib/zstd or MIME
are looked through before classifying, with limits; bombs are quarantined with a reason.

Real shapes from the shared corpus: the FIWARE EdiCodeco JSON (raw CODECO in ``messageRaw``),
the JAPDEVA COARRI (exported by its tool as one JSON string; the corpus keeps the .edi, the
test wraps it the way the tool does), XML and X12 files; synthetic wrappers around them.
"""
from __future__ import annotations

import base64
import gzip
import json
import zlib

import numpy as np
import pytest

from flowaudit.decode import REASONS, layers
from flowaudit.pipeline import FMT_AUTO, Batch, Classifier
from flowaudit.protect import Protector

from .conftest import CORPUS

MSG = CORPUS / "messages"
COARRI = MSG / "edifact" / "MJapdeva4302_ReadBaplie__COARRI.edi"
CODECO_JSON = MSG / "json" / "smart-data-models_dataModel.MarineTransport__EdiCodeco_example.json"
X12 = MSG / "x12" / "EdiFabric_X12.NET__ShipmentStatus.txt"
XML = MSG / "xml" / "hmrc_customs-declarations__New_Export_C21e_Consignor_Sample.xml"


@pytest.fixture(scope="module")
def clf():
    return Classifier(Protector(b"test-key-0123456789abcdef"))


def run(clf, values, declared=FMT_AUTO):
    return clf.run(Batch.from_values(list(values), declared))


def hit_rows(res, i):
    t = res.hits.to_pydict()
    return [(t["data_class"][k], t["value_masked"][k], t["location"][k], t["layer"][k], t["byte_start"][k],
             t["byte_end"][k]) for k in np.flatnonzero(res.h_idx == i)]


def plain_hits(clf, value):
    res = run(clf, [value])
    assert res.status[0] == 0
    return [(c, m, loc, s, e) for c, m, loc, lay, s, e in hit_rows(res, 0)], res


def reason(res, i):
    return REASONS[int(res.status[i])]


# -- the layers, each on real corpus content ----------------------------------------------------

def test_json_string_document_holding_a_coarri(clf):
    """The JAPDEVA tool's export: the whole COARRI as one JSON string (unknown_format before)."""
    edi = COARRI.read_bytes()
    wrapped = json.dumps(edi.decode("utf-8")).encode()
    ref, _ = plain_hits(clf, edi)
    assert len(ref) > 20
    res = run(clf, [wrapped])
    assert res.status[0] == 0 and res.messages.column("format").to_pylist() == ["edifact"]
    assert "layered" in res.messages.column("flags")[0].as_py()
    got = hit_rows(res, 0)
    assert {lay for *_, lay, _s, _e in got} == {"json-string>edifact"}
    # the same hits, positions inside the innermost layer (the JSON string's value)
    assert [(c, m, loc, s, e) for c, m, loc, lay, s, e in got] == ref
    assert res.messages.column("bytes").to_pylist() == [len(wrapped)]


def test_edi_in_a_json_field_and_in_xml_cdata_are_decoded(clf):
    """FIWARE EdiCodeco (CODECO in ``messageRaw``) and EDIFACT in a CDATA section."""
    res = run(clf, [CODECO_JSON.read_bytes()])
    assert res.status[0] == 0
    emb = [h for h in hit_rows(res, 0) if h[2].startswith("$.messageRaw>")]
    assert emb and {h[3] for h in emb} == {"json-field>edifact"}
    assert {h[3] for h in hit_rows(res, 0) if not h[2].startswith("$.messageRaw>")} == {""}
    edi = COARRI.read_bytes()
    xml = b"<Envelope><Body><Payload><![CDATA[" + edi + b"]]></Payload></Body></Envelope>"
    res = run(clf, [xml])
    assert res.status[0] == 0
    got = hit_rows(res, 0)
    assert len(got) >= len(plain_hits(clf, edi)[0]) and {h[3] for h in got} == {"xml-text>edifact"}


def test_base64_gzip_zlib_zstd_of_real_files(clf):
    edi, x12, xml = COARRI.read_bytes(), X12.read_bytes(), XML.read_bytes()
    cases = {
        base64.b64encode(edi): ("base64>edifact", edi),
        base64.encodebytes(edi): ("base64>edifact", edi),           # 76-column lines
        gzip.compress(edi): ("gzip>edifact", edi),
        zlib.compress(xml): ("zlib>xml", xml),
        base64.b64encode(gzip.compress(x12)): ("base64>gzip>x12", x12),
    }
    if layers._zstd is not None:
        cases[layers._zstd.ZstdCompressor().compress(edi)] = ("zstd>edifact", edi)
        # a streamed frame: no content size in its header
        cobj = layers._zstd.ZstdCompressor(write_content_size=False).compressobj()
        cases[cobj.compress(x12) + cobj.flush()] = ("zstd>x12", x12)
    values = list(cases)
    res = run(clf, values)
    for i, v in enumerate(values):
        path, inner = cases[v]
        assert res.status[i] == 0, (path, reason(res, i))
        ref, _ = plain_hits(clf, inner)
        got = hit_rows(res, i)
        assert ref and {h[3] for h in got} == {path}, path
        assert [(c, m, loc, s, e) for c, m, loc, lay, s, e in got] == ref, path
        # the positions point into the innermost bytes
        c, m, loc, lay, s, e = got[0]
        assert 0 <= s < e <= len(inner)


def test_mime_multipart_as2_and_email(clf):
    edi, xml = COARRI.read_bytes(), XML.read_bytes()
    b64 = base64.encodebytes(edi).decode()
    mime = ("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
            "--XX\r\nContent-Type: text/plain\r\n\r\nPlease find the COARRI attached.\r\n"
            "--XX\r\nContent-Type: application/EDIFACT\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64 +
            "--XX\r\nContent-Type: application/xml\r\n\r\n" + xml.decode() + "\r\n--XX--\r\n").encode()
    res = run(clf, [mime])
    assert res.status[0] == 0
    assert res.messages.column("format").to_pylist() == ["edifact"]
    lays = {h[3] for h in hit_rows(res, 0)}
    assert lays == {"mime>base64>edifact", "mime>xml"}
    n_edi = sum(h[3] == "mime>base64>edifact" for h in hit_rows(res, 0))
    assert n_edi == len(plain_hits(clf, edi)[0])


def test_plain_messages_unchanged(clf):
    """Messages without layers: byte-identical tables with the pre-pass on and off."""
    vals = [p.read_bytes() for p in [COARRI, X12, XML, CODECO_JSON]] + [b"hello world, not a format", b"", None]
    on = run(clf, vals)
    clf.layers_enabled = False
    try:
        off = run(clf, vals)
    finally:
        clf.layers_enabled = True
    assert on.hits.equals(off.hits) and on.messages.equals(off.messages)
    assert np.array_equal(on.status, off.status)
    assert set(on.hits.column("layer").to_pylist()) <= {"", "json-field>edifact"}


def test_unknown_stays_unknown(clf):
    """Look-alikes of a layer that hold nothing known stay unknown_format."""
    vals = [b"ABCDEFGHIJKLMNOPQRSTUVWX", b'"just a string"', base64.b64encode(b"\x00\x01binary" * 20),
            gzip.compress(b"plain text, no format"), b"MIME-Version: 1.0\r\n\r\nhello"]
    res = run(clf, vals)
    assert [reason(res, i) for i in range(len(vals))] == ["unknown_format"] * len(vals)


def test_plain_text_inside_a_layer_is_salvaged_and_scanned_for_egress():
    """gzip and base64 + gzip of free text, and a MIME text part: no decoder reads them, so they
    stay unknown_format, but the salvage recognisers and the egress scan read the decoded bytes
    (the compressed bytes hide everything): the same hits as the plain text, with the layer path
    and positions inside the decoded text, and the LOGINK host inside each."""
    from flowaudit.detect.egress import EgressDetector
    c = Classifier(Protector(b"test-key-0123456789abcdef"), egress=EgressDetector())
    prose = (b"Please upload the manifest to www.logink.cn today. Contact j.smith@maersk.com, "
             b"TEL +31 10 2521010, B/L NO MAEU123456789.")
    mime = ("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\n"
            "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(prose).decode() + "--XX--\r\n").encode()
    vals = [gzip.compress(prose), base64.b64encode(gzip.compress(prose)), mime, prose]
    res = c.run(Batch.from_values(vals, FMT_AUTO))
    assert [reason(res, i) for i in range(4)] == ["unknown_format"] * 4      # quarantined, as before
    plain = hit_rows(res, 3)
    assert {h[0] for h in plain} >= {"email", "phone", "bill_of_lading"}
    layers_seen = set()
    for i in range(3):
        rows = hit_rows(res, i)
        assert [(h[0], h[1], h[4], h[5]) for h in rows] == [(h[0], h[1], h[4], h[5]) for h in plain]
        assert len({h[3] for h in rows}) == 1
        layers_seen |= {h[3] for h in rows}
    assert layers_seen == {"gzip", "base64>gzip", "mime>base64"}
    assert set(res.hits.column("salvaged").to_pylist()) == {True}
    t = res.transfers
    assert sorted(zip(res.t_idx.tolist(), t.column("platform").to_pylist())) == [(i, "LOGINK") for i in range(4)]
    # an opaque layer with nothing in it adds nothing (tests/negative holds more look-alikes)
    quiet = c.run(Batch.from_values([gzip.compress(b"plain text, no format"), base64.b64encode(b"\x00\x01" * 60)],
                                    FMT_AUTO))
    assert quiet.hits.num_rows == 0 and (quiet.transfers is None or quiet.transfers.num_rows == 0)


# -- limits: bombs are quarantined with their reason and never expanded fully ------------------

def test_gzip_bomb_over_the_ratio(clf, monkeypatch):
    bomb = gzip.compress(b"UNB+UNOA:2+A+B+260301:1200+1'" + b"\x00" * (16 << 20))   # 16 MiB -> ~16 KiB
    assert len(bomb) < 100_000
    produced = []
    real = zlib.decompressobj

    def spy(*a):
        d = real(*a)

        class D:
            def decompress(self, data, max_length=0):
                out = d.decompress(data, max_length)
                produced.append(len(out))
                return out

            def __getattr__(self, name):
                return getattr(d, name)
        return D()
    monkeypatch.setattr(layers.zlib, "decompressobj", spy)
    res = run(clf, [bomb, base64.b64encode(bomb)])
    assert [reason(res, i) for i in range(2)] == ["layer_bomb", "layer_bomb"]
    assert sum(produced) <= 2 * (200 * len(base64.b64encode(bomb)) + 1)   # stopped at the ratio
    assert res.quarantine.column("reason").to_pylist() == ["layer_bomb", "layer_bomb"]
    assert res.messages.num_rows == 0


def test_output_over_the_size_cap(clf):
    edi = COARRI.read_bytes()
    big = gzip.compress(edi * 40)
    old = clf.layer_limits
    clf.layer_limits = layers.Limits(max_bytes=len(edi) * 10)
    try:
        res = run(clf, [big, gzip.compress(edi)])
    finally:
        clf.layer_limits = old
    assert reason(res, 0) == "layer_too_large" and res.status[1] == 0


def test_nesting_deeper_than_the_limit(clf):
    v = COARRI.read_bytes()
    for _ in range(layers.Limits.max_depth):
        v = base64.b64encode(v)
    ok = v
    deep = base64.b64encode(v)
    res = run(clf, [ok, deep])
    assert res.status[0] == 0 and reason(res, 1) == "layer_too_deep"
    assert set(hit_rows(res, 0)[0][3].split(">")) == {"base64", "edifact"}


def test_corrupt_wrapper_and_too_many_parts(clf):
    trunc = gzip.compress(COARRI.read_bytes())[:200]
    parts = "".join(f"--XX\r\nContent-Type: text/plain\r\n\r\npart {k}\r\n" for k in range(100))
    many = ("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n" + parts + "--XX--\r\n")
    res = run(clf, [trunc, many.encode()])
    assert [reason(res, i) for i in range(2)] == ["layer_corrupt", "layer_bomb"]


def test_declared_topic_and_exactly_once(clf):
    """A topic that declares edifact: a gzip'd interchange decodes, a gzip'd XML is a mismatch;
    every message lands in exactly one of messages / quarantine."""
    edi, xml = COARRI.read_bytes(), XML.read_bytes()
    vals = [gzip.compress(edi), gzip.compress(xml), edi, b"garbage!"]
    res = clf.run(Batch.from_values(vals, 1))
    assert res.status[0] == 0 and reason(res, 1) == "format_mismatch" and res.status[2] == 0
    assert sorted(res.m_idx.tolist() + res.q_idx.tolist()) == list(range(len(vals)))


def test_unwrap_never_raises_on_junk():
    rng = np.random.default_rng(12)
    seeds = [b"\x1f\x8b", b"\x78\x9c", b"\x28\xb5\x2f\xfd", b'"', b"MIME-Version: 1.0\r\n", b"QUJD"]
    for k in range(600):
        v = seeds[k % len(seeds)] + rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
        inner, why = layers.unwrap(v)
        assert why is None or why in REASONS.values()


def test_plain_text_inside_a_field_layer_is_salvaged_and_scanned_for_egress():
    """A JSON member / XML text holding base64 of gzip'd free text: the outer message stays
    decoded with its own hits; the text's e-mail and phone are salvage hits of it with the field's
    location and range, layer ``json-field>base64>gzip``; the LOGINK host inside is a transfer.
    A base64 image-like blob (control bytes) is not scanned."""
    from flowaudit.detect.egress import EgressDetector
    c = Classifier(Protector(b"test-key-0123456789abcdef"), egress=EgressDetector())
    prose = (b"Manifest forwarded to https://www.logink.cn/api/upload by j.smith@maersk.com, "
             b"TEL +31 10 2521010, B/L NO MAEU123456789. " * 2)
    blob = base64.b64encode(gzip.compress(prose)).decode()
    js = json.dumps({"equipmentReference": "MSCU1234565", "payload": blob}).encode()
    xml = (f"<Msg><TransportEquipment><ID>MSCU1234565</ID></TransportEquipment><Attachment>{blob}</Attachment>"
           f"</Msg>").encode()
    junk = json.dumps({"image": base64.b64encode(bytes(range(256)) * 2).decode()}).encode()
    res = c.run(Batch.from_values([js, xml, junk], FMT_AUTO))
    assert res.status.tolist() == [0, 0, 0]
    for i, lay in ((0, "json-field>base64>gzip"), (1, "xml-text>base64>gzip")):
        rows = hit_rows(res, i)
        inner = [h for h in rows if h[3] == lay]
        assert {h[0] for h in inner} >= {"email", "phone", "bill_of_lading"}, rows
        assert len({(h[4], h[5]) for h in inner}) == 1              # the field's own byte range
        assert any(h[3] == "" for h in rows)                        # the message's own hits stay
        assert all(">" in h[2] for h in inner)                      # outer location > salvage kind
    assert hit_rows(res, 2) == []
    t = res.transfers
    assert sorted(set(zip(res.t_idx.tolist(), t.column("platform").to_pylist()))) == [(0, "LOGINK"), (1, "LOGINK")]
