"""EDIFACT embedded in JSON strings and XML text (flowaudit/decode/embedded.py).

The wrapped interchange must give exactly the hits the EDIFACT decoder gives on the bare
interchange, mapped to the outer message: same classes, values and check-digit validity, the
location prefixed with the outer JSON path / XML element path and ``>``, the byte range of the
outer string."""
from __future__ import annotations

import json
import re
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest

from flowaudit import synth
from flowaudit.decode import edifact
from flowaudit.decode import json as dj
from flowaudit.decode import xml as dx
from flowaudit.decode.embedded import FLAG_EMBEDDED_BAD

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


def test_broken_embedded_interchange_is_flagged_not_fatal():
    res = classify(dj, [b'{"messageRaw": "UNB+UNOA:1+A+B+230811:1450+1\'UNH+1+CODECO:D:95B:UN\'EQD+CN+MSCU1234565"}',
                        b'{"note": "UNBELIEVABLE"}'])
    assert res.status.tolist() == [0, 0]
    assert res.flags[0] & FLAG_EMBEDDED_BAD
    assert res.flags[1] & (8 | FLAG_EMBEDDED_BAD) == 0
