"""Interchanges and field layers in JSON strings and XML text (flowaudit/decode/embedded.py).

The wrapped interchange (EDIFACT, X12, or a base64 / gzip / zlib / zstd document) must give
exactly the hits its decoder gives on the bare one, mapped to the outer message: same classes,
values and check-digit validity, the location prefixed with the outer JSON path / XML element
path and ``>``, the byte range of the outer string."""
from __future__ import annotations

import base64
import gzip
import json
import re
import zlib
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flowaudit import synth
from flowaudit.decode import edifact
from flowaudit.decode import json as dj
from flowaudit.decode import layers as L
from flowaudit.decode import x12
from flowaudit.decode import xml as dx
from flowaudit.decode.embedded import FLAG_EMBEDDED_BAD
from flowaudit.kernels import jsonscan as K

from .test_kernels_json import packed_ref

CODECO = (Path(__file__).resolve().parents[2] / "shared" / "corpus" / "messages" / "json"
          / "smart-data-models_dataModel.MarineTransport__EdiCodeco_example.json")


def batch(msgs):
    offs = np.zeros(len(msgs) + 1, dtype=np.int64)
    np.cumsum([len(m) for m in msgs], out=offs[1:])
    return np.frombuffer(b"".join(msgs), dtype=np.uint8).copy(), offs


def classify(mod, msgs):
    buf, offs = batch(msgs)
    return mod.classify(buf, offs, np.arange(len(msgs), dtype=np.int64))


def hits(res, i):
    return [(int(res.hit_class[k]), bytes(res.val_buf[res.val_off[k]:res.val_off[k + 1]]).decode(),
             int(res.hit_valid[k]), int(res.hit_conf[k]), res.loc_names[res.hit_loc[k]],
             int(res.hit_start[k]), int(res.hit_end[k]))
            for k in np.flatnonzero(res.hit_msg == i)]


def direct(interchange: bytes):
    res = classify(edifact, [interchange])
    assert res.status[0] == 0
    return [(c, v, ok, conf, loc) for c, v, ok, conf, loc, _, _ in hits(res, 0)]


def embedded_part(res, i, prefix):
    """Hits of message ``i`` whose location starts with ``prefix + '>'``, prefix removed."""
    out = []
    for c, v, ok, conf, loc, a, b in hits(res, i):
        if loc.startswith(prefix + ">"):
            out.append(((c, v, ok, conf, loc[len(prefix) + 1:]), (a, b)))
    return out


@pytest.fixture(scope="module")
def coarri() -> bytes:
    for m in synth.generate(5, 400, formats=("edifact",)):
        if m.msg_type == "COARRI" and sum(lab.data_class == "container_number" for lab in m.labels) >= 2:
            return m.value
    raise AssertionError("no COARRI in the synthetic stream")


def test_fiware_edicodeco_message_raw():
    if not CODECO.is_file():
        pytest.fail("corpus not available")
    raw = CODECO.read_bytes()
    inner = json.loads(raw)["messageRaw"].encode("utf-8")
    res = classify(dj, [raw])
    assert res.status[0] == 0 and res.flags[0] & 8
    got = embedded_part(res, 0, "$.messageRaw")
    assert [g for g, _ in got] == direct(inner)
    # the hit range is the outer string (between its quotes)
    a = raw.index(b'"messageRaw"')
    a = raw.index(b'"', a + len(b'"messageRaw"') + 1) + 1
    assert {r for _, r in got} == {(a, raw.index(b'"', a))}
    # independently of the EDIFACT rules: the containers are the EQD+CN ids with an ISO 6346
    # category letter (U/J/Z); the FIWARE example's TESI1120274 (category I) is none
    eqd = re.findall(r"EQD\+CN\+([A-Z]{3}[UJZ][0-9]{7})", inner.decode())
    assert sorted(v for (c, v, *_), _ in got if c == 1) == sorted(eqd)
    assert ("imo_number" and (2, "1111111", 0, 100, "TDT/C222.8213")) in [g for g, _ in got]


def test_json_string_holding_a_coarri(coarri):
    want = direct(coarri)
    conts = [w for w in want if w[0] == 1]
    assert len(conts) >= 2
    bare = json.dumps(coarri.decode("utf-8")).encode()                      # the whole document is a string
    nested = json.dumps({"id": 1, "payload": {"edi": "\n" + coarri.decode("utf-8")}}).encode()
    res = classify(dj, [bare, nested])
    assert (res.status == 0).all()
    assert [g for g, _ in embedded_part(res, 0, "$")] == want
    assert [g for g, _ in embedded_part(res, 1, "$.payload.edi")] == want
    # no double reporting: the free-text scan does not run over an embedded interchange
    assert all(">" in h[4] for h in hits(res, 0))


def test_xml_text_and_cdata_holding_a_coarri(coarri):
    want = direct(coarri)
    text = coarri.decode("utf-8")
    esc = f"<Envelope><Body><Edi>{escape(text)}</Edi></Body></Envelope>".encode()
    cdata = f"<Envelope><Body><Edi><![CDATA[{text}]]></Edi></Body></Envelope>".encode()
    res = classify(dx, [esc, cdata])
    assert (res.status == 0).all()
    for i in range(2):
        assert [g for g, _ in embedded_part(res, i, "/Envelope/Body/Edi")] == want
        assert res.flags[i] & 8


def test_an_interchange_written_with_references_or_escapes_is_one(coarri):
    """Character references in XML (``&#85;NA``, ``&#x55;NB``) and \\u escapes in JSON do not hide an
    interchange: the marker is judged on the decoded text, and the interchange is decoded as the
    plain one is (an evasion a sender could otherwise use on a leaf no rule names)."""
    want = direct(coarri)
    text = coarri.decode("utf-8")
    refs = "".join(f"&#{ord(c)};" for c in text[:4]) + escape(text[4:])
    hexr = "<!-- c -->" + "".join(f"&#x{ord(c):X};" for c in text[:3]) + escape(text[3:])
    rx = classify(dx, [f"<Envelope><Body><Edi>{t}</Edi></Body></Envelope>".encode() for t in (refs, hexr)])
    assert (rx.status == 0).all()
    for i in range(2):
        assert [g for g, _ in embedded_part(rx, i, "/Envelope/Body/Edi")] == want
        assert rx.flags[i] & 8
    uesc = "".join("\\u%04x" % ord(c) for c in text[:5]) + json.dumps(text[5:])[1:-1]
    rj = classify(dj, [b'{"payload": {"edi": "%s"}}' % uesc.encode()])
    assert rj.status.tolist() == [0]
    assert [g for g, _ in embedded_part(rj, 0, "$.payload.edi")] == want
    assert all(">" in h[4] for h in hits(rj, 0))      # no free-text double reporting


def test_broken_embedded_interchange_is_flagged_not_fatal():
    res = classify(dj, [b'{"messageRaw": "UNB+UNOA:1+A+B+230811:1450+1\'UNH+1+CODECO:D:95B:UN\'EQD+CN+MSCU1234565"}',
                        b'{"note": "UNBELIEVABLE"}'])
    assert res.status.tolist() == [0, 0]
    assert res.flags[0] & FLAG_EMBEDDED_BAD
    assert res.flags[1] & (8 | FLAG_EMBEDDED_BAD) == 0


# -- field layers: X12 in a field, base64 (of gzip / zlib / zstd) in a field (issue 12) ------------
MSGS = CODECO.parents[1]
X12_FILE = MSGS / "x12" / "EdiFabric_X12.NET__ShipmentStatus.txt"
COARRI_FILE = MSGS / "edifact" / "MJapdeva4302_ReadBaplie__COARRI.edi"
XML_FILE = MSGS / "xml" / "hmrc_customs-declarations__New_Export_C21e_Consignor_Sample.xml"
JSON_FILE = MSGS / "json" / "dcsaorg_Conformance-Gateway__booking-request.json"


def layered(res, i, prefix):
    """(hit, layer name) of message ``i``'s hits under the outer location ``prefix``."""
    return [(h, res.layer_names[res.hit_layer[k]])
            for h, k in zip(hits(res, i), np.flatnonzero(res.hit_msg == i)) if h[4].startswith(prefix + ">")]


def reference(mod, inner: bytes):
    res = mod.classify(*batch([inner]), np.arange(1, dtype=np.int64), **({"embedded": False} if mod in (dj, dx) else {}))
    assert res.status[0] == 0
    return [(c, v, ok, conf, loc) for c, v, ok, conf, loc, _, _ in hits(res, 0)]


def test_x12_in_a_json_field_and_in_xml_text_and_cdata():
    raw = X12_FILE.read_bytes().decode("utf-8-sig").encode()
    want = reference(x12, raw)
    assert len(want) >= 3
    js = json.dumps({"id": 7, "edi": raw.decode()}).encode()
    text = f"<Envelope><Body><X12>{escape(raw.decode())}</X12></Body></Envelope>".encode()
    cdata = b"<Envelope><Body><X12><![CDATA[" + raw + b"]]></X12></Body></Envelope>"
    rj = classify(dj, [js])
    rx = classify(dx, [text, cdata])
    assert rj.status.tolist() == [0] and rx.status.tolist() == [0, 0]
    got = layered(rj, 0, "$.edi")
    assert [(c, v, ok, conf, loc.split(">", 1)[1]) for (c, v, ok, conf, loc, *_), _ in got] == want
    assert {lay for _, lay in got} == {"json-field>x12"} and rj.flags[0] & 8 and not rj.flags[0] & FLAG_EMBEDDED_BAD
    for i in range(2):
        got = layered(rx, i, "/Envelope/Body/X12")
        assert [(c, v, ok, conf, loc.split(">", 1)[1]) for (c, v, ok, conf, loc, *_), _ in got] == want
        assert {lay for _, lay in got} == {"xml-text>x12"} and rx.flags[i] & 8


def _wrapped_cases():
    edi, x, xml, js = (p.read_bytes() for p in (COARRI_FILE, X12_FILE, XML_FILE, JSON_FILE))
    cases = [
        (base64.b64encode(edi), "base64>edifact", edifact, edi),
        (base64.encodebytes(gzip.compress(x)), "base64>gzip>x12", x12, x),     # 76-column lines
        (base64.b64encode(zlib.compress(xml)), "base64>zlib>xml", dx, xml),
        (base64.b64encode(js), "base64>json", dj, js),
    ]
    if L._zstd is not None:
        cases.append((base64.b64encode(L._zstd.ZstdCompressor().compress(edi)), "base64>zstd>edifact", edifact, edi))
    return cases


def test_base64_and_compressed_values_in_fields_are_classified_with_their_path():
    """Real corpus files, base64 (of gzip / zlib / zstd) in a JSON member and in XML text: the
    same hits as the bare file, the layer path ``json-field>base64>gzip>x12`` ..., the outer
    message's own hits kept, the outer string's raw range."""
    cases = _wrapped_cases()
    msgs = [b'{"containerNumber":"MSCU1234565","payload":"%s"}' % v.replace(b"\n", b"\\n") for v, *_ in cases]
    msgs += [b"<Doc><TransportEquipment><ID>MSCU1234565</ID></TransportEquipment><Payload>\n" + v + b"</Payload></Doc>"
             for v, *_ in cases]
    rj = classify(dj, msgs[:len(cases)])
    rx = classify(dx, msgs[len(cases):])
    for res, outer, prefix in ((rj, "json-field", "$.payload"), (rx, "xml-text", "/Doc/Payload")):
        assert (res.status == 0).all()
        for i, (v, path, mod, inner) in enumerate(cases):
            got = layered(res, i, prefix)
            want = reference(mod, inner)
            assert want, path
            assert [(c, val, ok, conf, loc.split(">", 1)[1]) for (c, val, ok, conf, loc, *_), _ in got] == want, path
            assert {lay for _, lay in got} == {f"{outer}>{path}"}
            assert res.flags[i] & 8 and not res.flags[i] & FLAG_EMBEDDED_BAD
            # the outer message's own value is still there, with no layer
            own = [h for h, k in zip(hits(res, i), np.flatnonzero(res.hit_msg == i)) if res.hit_layer[k] == 0]
            assert any(h[1] == "MSCU1234565" for h in own), (outer, path)
            # the byte range is the outer string's: the JSON string between its quotes, the text
            ranges = {(h[5], h[6]) for h, _ in got}
            assert len(ranges) == 1
            a, b = ranges.pop()                 # batch positions: the sub-batch's own offsets
            m = msgs[i if outer == "json-field" else len(cases) + i]
            base = sum(map(len, msgs[:i] if outer == "json-field" else msgs[len(cases):len(cases) + i]))
            a, b = a - base, b - base
            enc = v.replace(b"\n", b"\\n") if outer == "json-field" else v
            assert m[a:b].strip() == enc.strip()
    assert rj.layer_values and {i for i, _ in rj.layer_values} == set(range(len(cases)))


def test_a_bad_field_flags_its_message_and_keeps_it():
    """A gzip bomb, a corrupt gzip stream and a refused (truncated) X12 interchange in fields: the
    outer message stays decoded with its own hits and gets flag 16 (``embedded_edifact_bad``)."""
    bomb = base64.b64encode(gzip.compress(b"UNB+UNOA:2+A+B+260301:1200+1'" + b"\x00" * (4 << 20)))
    corrupt = base64.b64encode(gzip.compress(COARRI_FILE.read_bytes())[:300])
    deep = COARRI_FILE.read_bytes()
    for _ in range(L.Limits.max_depth + 1):
        deep = base64.b64encode(deep)
    trunc = X12_FILE.read_bytes().decode("utf-8-sig")[:200]
    vals = [bomb.decode(), corrupt.decode(), deep.decode(), trunc]
    res = classify(dj, [json.dumps({"containerNumber": "MSCU1234565", "p": v}).encode() for v in vals])
    assert res.status.tolist() == [0] * len(vals)
    for i in range(len(vals)):
        assert res.flags[i] & FLAG_EMBEDDED_BAD, i
        assert "MSCU1234565" in [h[1] for h in hits(res, i) if ">" not in h[4]], i
    assert all(">" not in h[4] for i in range(3) for h in hits(res, i))      # nothing from the bad layers
    assert [res.flags[i] & 8 for i in range(3)] == [0, 0, 0] and res.flags[3] & 8   # X12 was there, refused


def test_lookalikes_are_not_layers():
    """A base64 string of garbage, a hex SHA-256, the bare word ``ISA``, ``ISA`` in prose, short
    base64: no hit from them, no flag, the message's other values as before."""
    garbage = base64.b64encode(bytes(range(256)) * 2).decode()
    sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    vals = [garbage, sha, "ISA", "ISA Smith, ops", "ISA ", "GS", base64.b64encode(b"UNB+UNOA").decode(),
            "U" * 200, "UNB", "ST"]
    msgs = [json.dumps({"note": v, "containerNumber": "MSCU1234565"}).encode() for v in vals]
    res = classify(dj, msgs)
    assert res.status.tolist() == [0] * len(vals)
    for i in range(len(vals)):
        assert res.flags[i] & (8 | FLAG_EMBEDDED_BAD) == 0, vals[i]
        assert [h[1] for h in hits(res, i)] == ["MSCU1234565"], vals[i]
    assert not getattr(res, "layer_values", None)
    rx = classify(dx, [f"<a><n>{v}</n><ID>MSCU1234565</ID></a>".encode() for v in vals])
    assert rx.status.tolist() == [0] * len(vals)
    assert all(rx.flags[i] & (8 | FLAG_EMBEDDED_BAD) == 0 for i in range(len(vals)))


# the marker (kernels/jsonscan.edi_marker): a slow, obvious reference and a property test
_B64_TAIL = re.compile(rb'((?:[A-Za-z0-9+/= \t\r\n]|\\[/nr])*)(?:["<]|$)')


def b64_need(t: bytes) -> int:
    """The alphabet characters a value needs (test_kernels_json's reference of the header)."""
    return K.B64_PACKED_MIN if packed_ref(t.decode("latin-1")) else K.B64_MIN


def marker_ref(t: bytes) -> bool:
    need = b64_need(t)                      # judged on the value as it starts
    t = t.lstrip(b" \t\r\n")
    if len(t) < 4:
        return False
    d = t[3]
    sep = not (chr(d).isascii() and chr(d).isalnum()) and d not in b'"\\' and d >= 32
    if t[:3] in (b"UNA", b"UNB", b"UNH") and sep:
        return True
    if t[:3] == b"ISA" and sep and d != 32:
        return True
    if t[:3] in (b"GS*", b"ST*"):
        return True
    m = _B64_TAIL.match(t)
    # the escapes are tokens of their own: the n of an escaped line break is no base64 letter
    tokens = re.findall(rb"\\[/nr]|[A-Za-z0-9+/]", m.group(1)) if m else []
    return sum(tok not in (b"\\n", b"\\r") for tok in tokens) >= need


_PIECES = [b"A", b"z", b"9", b"+", b"/", b"=", b" ", b"\n", b"\\/", b"\\n", b"\\", b'"', b"<", b"-", b"*", b":",
           b"UNB", b"UNA", b"UNH", b"ISA", b"GS*", b"ST*", b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldY", b"\xc3\xa9",
           b"H4sI", b"KLUv", b"eJw", b"eNo", b"eJA", b"H4s", b"KLUv_"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40), st.binary(max_size=3))
@example([b"UNB"] + [b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"] * 3, b"")   # base64 that starts with UNB: a run
@example([b"A"] * 4 + [b"\\n"] + [b"UNB"] * 3 + [b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"] * 2, b"/A")  # 79 letters: no run
@example([b"H4sI"] + [b"A"] * 20, b"")                                   # gzip, 24 letters: a run
@example([b"H4sI"] + [b"A"] * 19, b"")                                   # 23: none
@example([b" ", b"H4sI"] + [b"A"] * 30, b"")                             # the header after a space: 80 needed
def test_marker_matches_its_reference(pieces, tail):
    t = b"".join(pieces) + tail
    a = np.frombuffer(t, np.uint8).copy() if t else np.zeros(0, np.uint8)
    assert bool(K.edi_marker(a, 0, len(t))) == marker_ref(t), t


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"A", b"z", b"9", b"+", b"/", b"=", b" ", b"\n", b"\t", b'"', b"<", b"\\", b"-",
                                 b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldY", b"H4sI", b"eNo", b"eJA", b"KLUv"]), max_size=12))
def test_b64_text_matches_its_reference(pieces):
    """``b64_text`` (a decoded JSON string's exact range): only the alphabet, padding and white
    space, and at least B64_MIN alphabet characters (B64_PACKED_MIN after a compressed header);
    no byte ends it early."""
    t = b"".join(pieces)
    a = np.frombuffer(t, np.uint8).copy() if t else np.zeros(0, np.uint8)
    want = (re.fullmatch(rb"[A-Za-z0-9+/= \t\r\n]*", t) is not None
            and len(re.findall(rb"[A-Za-z0-9+/]", t)) >= b64_need(t))
    assert bool(K.b64_text(a, 0, len(t))) == want, t
