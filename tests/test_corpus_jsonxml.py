"""JSON and XML classification with the real catalogue (schemas/catalog/json.toml, xml.toml).

1. Corpus, file by file (../shared/corpus/messages/json and xml): every container number, IMO
   number, party name, bill of lading, seal, dangerous-goods UN number and e-mail address that
   the file carries in its structural position is found.  The expectations are derived HERE,
   independently of the classifier: the JSON files are walked with the stdlib parser and the
   XML files with the hardened lxml parser of reliability.md section 3, collecting the values at
   the keys / elements the standards define (DCSA, Terminal49, JAPDEVA, FIWARE, WCO DM, UBL).
   Nothing from the look-alike positions (booking references, B/L numbers, declaration
   references, malformed Terminal49 numbers) is reported as a container.
2. Synthetic ground truth (flowaudit.synth labels every value it places): precision >= 99.9%
   and recall 100% per class for structurally located values; free-text mentions found too.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from lxml import etree

from flowaudit import synth
from flowaudit.decode import json as dj
from flowaudit.decode import xml as dx

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "messages"
CODES = dj.class_codes()
NAMES = {v: k for k, v in CODES.items()}

_LETTER = dict(zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", [10, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 26, 27, 28,
                                                 29, 30, 31, 32, 34, 35, 36, 37, 38]))
CONT_SHAPE = re.compile(r"[A-Z]{3}[UJZ] ?[0-9]{6} ?[0-9]")


def iso_ok(v: str) -> bool:
    return sum((_LETTER[c] if i < 4 else int(c)) * 2 ** i for i, c in enumerate(v[:10])) % 11 % 10 == int(v[10])


def imo_ok(v: str) -> bool:
    return sum(int(v[i]) * (7 - i) for i in range(6)) % 10 == int(v[6])


def batch(msgs):
    offs = np.zeros(len(msgs) + 1, dtype=np.int64)
    np.cumsum([len(m) for m in msgs], out=offs[1:])
    return np.frombuffer(b"".join(msgs), dtype=np.uint8).copy(), offs


def classify(mod, msgs):
    buf, offs = batch(msgs)
    return mod.classify(buf, offs, np.arange(len(msgs), dtype=np.int64))


def hits(res, i):
    """[(class name, value, valid, conf, location)] of message ``i``."""
    out = []
    for k in np.flatnonzero(res.hit_msg == i):
        out.append((NAMES[int(res.hit_class[k])], bytes(res.val_buf[res.val_off[k]:res.val_off[k + 1]]).decode(),
                    int(res.hit_valid[k]), int(res.hit_conf[k]), res.loc_names[res.hit_loc[k]]))
    return out


def norm_key(k: str) -> str:
    return re.sub(r"[^a-z0-9\x80-\U0010ffff]", "", k.lower())


# ------------------------------------------------------------------ independent expectations (JSON)
J_CONT = {"equipmentreference", "equipmentreferences", "containernumber", "containeridentification",
          "equipmentidentificationnumber"}
J_IMO = {"vesselimonumber", "imo", "vesselimo", "podvesselimo"}
J_PARTY = {"partyname", "registeredname", "shippingline", "agentname"}
J_BL = {"transportdocumentreference", "billoflading", "billofladingnumber", "houseBillOfLadingReference".lower()}
J_SEAL = {"sealnumber", "containerseal"}
J_UN = {"unnumber"}
J_EMAIL = {"email", "shippinglinemail"}
# positions that hold references shaped (or mis-shaped) like containers: never a container hit
J_LOOKALIKE = {"carrierbookingreference", "transportdocumentreference", "declarationreference", "reference",
               "documentreferencevalue", "requestnumber", "normalizednumber", "billofladingnumber", "bookingcode"}


def json_expect(doc):
    """Counter of (class, value) the file carries structurally, and the look-alike values."""
    exp: Counter = Counter()
    look: set = set()

    def add(cls, v):
        if isinstance(v, (str, int)) and not isinstance(v, bool) and str(v).strip():
            exp[(cls, str(v).strip())] += 1

    def walk(v, key, parent, holder_type):
        if isinstance(v, dict):
            typ = v.get("type") if isinstance(v.get("type"), str) else None
            for k, x in v.items():
                nk = norm_key(k)
                if nk == "attributes" and isinstance(x, dict) and typ == "container":
                    num = x.get("number")
                    if isinstance(num, str) and CONT_SHAPE.fullmatch(num):
                        add("container_number", num.replace(" ", ""))
                    elif isinstance(num, str):
                        look.add(num)
                walk(x, nk, key, typ)
            return
        if isinstance(v, list):
            for x in v:
                walk(x, key, parent, holder_type)
            return
        if key in J_CONT and isinstance(v, str) and CONT_SHAPE.fullmatch(v.upper().strip()):
            add("container_number", v.upper().replace(" ", "").strip())
        elif key in J_IMO and re.fullmatch(r"(IMO)?[0-9]{7}", str(v)):
            add("imo_number", str(v)[-7:])
        elif key in J_PARTY:
            add("party_name", v)
        elif key in J_BL:
            add("bill_of_lading", v)
        elif key in J_SEAL or (key == "number" and parent == "seals"):
            add("seal_number", v)
        elif key in J_UN:
            add("un_number", v)
        elif key in J_EMAIL and isinstance(v, str) and "@" in v:
            add("email", v.lower())
        if key in J_LOOKALIKE and isinstance(v, str):
            look.add(v)

    walk(doc, None, None, None)
    return exp, look


def json_corpus():
    d = CORPUS / "json"
    if not d.is_dir():
        pytest.fail("corpus not available")
    return sorted(p for p in d.iterdir() if p.is_file())


@pytest.fixture(scope="module")
def jres():
    files = json_corpus()
    msgs = [p.read_bytes() for p in files]
    return files, msgs, classify(dj, msgs)


def test_json_corpus_structural_values_found(jres):
    files, msgs, res = jres
    checked = 0
    for i, p in enumerate(files):
        try:
            doc = json.loads(msgs[i])
        except ValueError:
            assert res.status[i] != 0, p.name          # templates with unquoted placeholders
            continue
        assert res.status[i] == 0, p.name
        exp, look = json_expect(doc)
        got = Counter((c, v) for c, v, *_ in hits(res, i))
        missing = {k: n - got[k] for k, n in exp.items() if got[k] < n}
        assert not missing, (p.name, missing)
        checked += sum(exp.values())
        for c, v, valid, conf, loc in hits(res, i):
            if c == "container_number":
                assert CONT_SHAPE.fullmatch(v) and valid == int(iso_ok(v)), (p.name, v)
                last = norm_key(re.split(r"[.>\[\]]+", loc.rstrip("[]"))[-1])
                assert last not in J_LOOKALIKE, (p.name, v, loc)
            if c == "imo_number" and ">" not in loc:
                assert valid == int(imo_ok(v)), (p.name, v)
        # a look-alike value is never a check-digit-valid container at its own position
        for c, v, valid, conf, loc in hits(res, i):
            if c == "container_number" and valid == 1 and ">" not in loc:
                assert v not in look or (("container_number", v) in exp), (p.name, v)
    assert checked > 250


def test_json_corpus_spot_checks(jres):
    files, msgs, res = jres
    by = {p.name: i for i, p in enumerate(files)}
    h = hits(res, by["MJapdeva4302_ReadBaplie__Json_COARRI_Export_Ejemplo.JSON"])
    assert ("email", "yirlen.araya@cr.seatrade.com", 1, 100, "$.ArrivalData.ShippingLineMail") in h
    assert ("tax_id", "3101521531", -1, 100, "$.ArrivalData.ShippingLineIdentification") in h
    assert sum(1 for x in h if x[0] == "customs_reference" and x[4] == "$.Equipments[].Dua") == 42
    assert sum(1 for x in h if x[0] == "vgm") == 42
    h = hits(res, by["smart-data-models_dataModel.MarineTransport__PortCall_example.json"])
    assert ("contact_person", "John Doe", -1, 100, "$.masterName") in h
    assert ("mmsi", "210049000", 1, 100, "$.mmsi") in h and ("call_sign", "5BP-*987C3", -1, 100, "$.callSign") in h
    h = hits(res, by["smart-data-models_dataModel.MarineTransport__Company_example.json"])
    assert {("tax_id", "B90244585"), ("email", "berge@puertohuelva.es"), ("phone", "900252526"),
            ("party_name", "BERGE Maritima SL")} <= {(c, v) for c, v, *_ in h}
    # DCSA eBL 3.0: the party role is in the path; LEI by its code list
    h = hits(res, by["dcsaorg_Conformance-Gateway__ebl-api-3.0.0-request.json"])
    assert ("party_name", "Global Retail Imports", -1, 100, "$.documentParties.consignee.partyName") in h
    assert any(c == "lei" and v == "111100T8BM49ADCSAO64" for c, v, *_ in h)
    # Terminal49: the shipment number of a search result is a B/L, the malformed container number no hit
    h = hits(res, by["Terminal49_API__search.shipment-bol.json"])
    assert ("bill_of_lading", "HLCUFAKE260003") in {(c, v) for c, v, *_ in h}
    h = hits(res, by["Terminal49_API__containers.get.include.json"])
    assert not any(c == "container_number" for c, *_ in h)
    # T&T 2.2: documentReferences typed by documentReferenceType
    h = hits(res, by["dcsaorg_Conformance-Gateway__tnt-220-response.json"])
    assert ("booking_reference", "ABC123123123") in {(c, v) for c, v, *_ in h}


# ------------------------------------------------------------------ independent expectations (XML)
def hardened():
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           attribute_defaults=False, huge_tree=False, recover=False, remove_pis=True)


def local(el) -> str:
    return etree.QName(el).localname


X_PARTY_PARENTS = {"PartyName", "Consignee", "Consignor", "Exporter", "Importer", "Declarant", "Carrier"}


def xml_expect(root):
    exp: Counter = Counter()
    for el in root.iter():
        if not isinstance(el.tag, str) or len([c for c in el if isinstance(c.tag, str)]):
            continue
        name = local(el)
        par = el.getparent()
        pname = local(par) if par is not None else ""
        text = "".join(el.itertext()).strip()
        if not text:
            continue
        sib = {local(s): "".join(s.itertext()).strip() for s in par if isinstance(s.tag, str)} if par is not None else {}
        if name == "ID" and pname == "TransportEquipment" and CONT_SHAPE.fullmatch(text):
            exp[("container_number", text.replace(" ", ""))] += 1
        elif name == "ID" and pname in ("Seal", "TransportEquipmentSeal"):
            exp[("seal_number", text)] += 1
        elif name == "VesselID" and pname == "MaritimeTransport" and re.fullmatch(r"[0-9]{7}", text):
            exp[("imo_number", text)] += 1
        elif name == "ID" and pname == "BorderTransportMeans" and sib.get("IdentificationTypeCode") == "10":
            exp[("imo_number", text)] += 1
        elif name == "Name" and pname in X_PARTY_PARENTS:
            exp[("party_name", text)] += 1
        elif name == "ID" and (pname in ("Waybill", "TransportContractDocument")
                               or (pname == "DocumentReference" and sib.get("DocumentType") == "BOL")):
            exp[("bill_of_lading", text)] += 1
        elif name in ("UNDGCode", "UNDGID"):
            exp[("un_number", text)] += 1
        elif name == "ElectronicMail":
            exp[("email", text.lower())] += 1
    return exp


def test_xml_corpus_structural_values_found():
    d = CORPUS / "xml"
    if not d.is_dir():
        pytest.fail("corpus not available")
    files = sorted(p for p in d.iterdir() if p.is_file())
    msgs = [p.read_bytes() for p in files]
    res = classify(dx, msgs)
    checked = 0
    for i, p in enumerate(files):
        assert res.status[i] == 0, p.name
        exp = xml_expect(etree.fromstring(msgs[i], hardened()))
        got = Counter((c, v) for c, v, *_ in hits(res, i))
        missing = {k: n - got[k] for k, n in exp.items() if got[k] < n}
        assert not missing, (p.name, missing)
        checked += sum(exp.values())
        for c, v, valid, conf, loc in hits(res, i):
            if c == "container_number":
                assert loc.endswith("TransportEquipment/ID") or conf < 100, (p.name, v, loc)
                assert valid == int(iso_ok(v))
            if c == "imo_number":
                assert "BorderTransportMeans" not in loc or conf == 100 or valid == 1
    assert checked > 100
    by = {p.name: i for i, p in enumerate(files)}
    h = hits(res, by["hmrc_customs-declarations__TT_EX041a.xml"])
    # the vessel name in BorderTransportMeans/ID (IdentificationTypeCode 11) is a vessel name, no IMO
    assert ("vessel_name", "CSCLGLOBE", -1, 100, "/MetaData/Declaration/BorderTransportMeans/ID") in h
    assert not any(c == "imo_number" for c, *_ in h)
    assert ("party_name", "Pat Liter") in {(c, v) for c, v, *_ in h}
    assert {("eori", "GB427168118378")} <= {(c, v) for c, v, *_ in h}
    h = hits(res, by["phax_ph-ubl__UBL-Waybill-2.0-Example-International.xml"])
    roles = {loc.split("/")[-3] for c, v, _, _, loc in h if c == "party_name"}
    assert {"ConsignorParty", "CarrierParty", "FreightForwarderParty"} <= roles


# ------------------------------------------------------------------ synthetic ground truth
SYN_CLASS: dict = {}  # synth labels use catalogue class names
FREE_LOCS = ("Description",)


def value_key(cls: str, v: str) -> str:
    if cls == "phone":
        return re.sub(r"[^0-9]", "", v)
    if cls in ("email", "eori", "container_number"):
        return v.lower().replace(" ", "")
    return v.strip()


@pytest.fixture(scope="module")
def synthetic():
    msgs = list(synth.generate(11, 2500, formats=("json", "xml")))
    out = {}
    for fmt, mod in (("json", dj), ("xml", dx)):
        sub = [m for m in msgs if m.format == fmt]
        out[fmt] = (sub, classify(mod, [m.value for m in sub]))
    return out


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_synthetic_precision_recall(synthetic, fmt):
    sub, res = synthetic[fmt]
    assert (res.status == 0).all()
    tp: Counter = Counter()
    n_lab: Counter = Counter()
    n_hit: Counter = Counter()
    free_missing = []
    labelled = {SYN_CLASS.get(lab.data_class, lab.data_class) for m in sub for lab in m.labels}
    for i, m in enumerate(sub):
        want: Counter = Counter()
        free: Counter = Counter()
        for lab in m.labels:
            if lab.lookalike:
                continue
            cls = SYN_CLASS.get(lab.data_class, lab.data_class)
            key = (cls, value_key(cls, lab.value))
            (free if lab.location.endswith(FREE_LOCS) else want)[key] += 1
        got: Counter = Counter()
        got_free: Counter = Counter()
        for c, v, valid, conf, loc in hits(res, i):
            if c not in labelled:
                continue
            free_pos = loc.endswith(FREE_LOCS) and c in ("container_number", "imo_number")
            (got_free if free_pos else got)[(c, value_key(c, v))] += 1
        for k, n in want.items():
            n_lab[k[0]] += n
            tp[k[0]] += min(n, got[k])
        for k, n in got.items():
            n_hit[k[0]] += n
        free_missing += [k for k, n in free.items() if got_free[k] + got[k] - want[k] < n]
    report = {c: (tp[c], n_lab[c], n_hit[c]) for c in sorted(n_lab)}
    for c in n_lab:
        assert tp[c] == n_lab[c], ("recall", c, report)
        assert tp[c] >= 0.999 * n_hit[c], ("precision", c, report)
    assert not free_missing
    assert len(n_lab) >= 12, report
    # look-alikes (container-shaped booking references) are never container hits
    for i, m in enumerate(sub):
        looks = {lab.value for lab in m.labels if lab.lookalike}
        real = {lab.value for lab in m.labels if lab.data_class == "container_number" and not lab.lookalike}
        for c, v, *_ in hits(res, i):
            if c == "container_number":
                assert v not in looks - real, (m.value, v)


# ----------------------------------------------------------------------------- declared encodings
# Issue 11 item 9d: XML in a declared single-byte encoding is read in it (flowaudit/decode/xml.py).
def reencode(doc: bytes, codec: str, name: str) -> bytes | None:
    """A UTF-8 corpus document re-encoded in ``codec``, its declaration naming ``name``."""
    text = doc.decode("utf-8-sig")
    if text.startswith("<?xml"):
        end = text.index("?>") + 2
        decl = re.sub(r"encoding\s*=\s*[\"'][^\"']*[\"']", "", text[:end - 2]).rstrip()
        text = decl + f' encoding="{name}"?>' + text[end:]
    else:
        text = f'<?xml version="1.0" encoding="{name}"?>\n' + text
    try:
        return text.encode(codec)
    except UnicodeEncodeError:
        return None


def test_xml_corpus_in_single_byte_encodings():
    """Every corpus XML file, re-encoded as ISO-8859-1 / windows-1252: the same values at the same
    locations, and the byte ranges point at the same text in the re-encoded bytes."""
    files = sorted((CORPUS / "xml").iterdir())
    assert len(files) >= 10
    originals = [f.read_bytes() for f in files]
    done = 0
    for codec, name in (("latin-1", "ISO-8859-1"), ("cp1252", "windows-1252")):
        pairs = [(o, reencode(o, codec, name)) for o in originals]
        pairs = [(o, r) for o, r in pairs if r is not None]
        res_u = classify(dx, [o for o, _ in pairs])
        res_r = classify(dx, [r for _, r in pairs])
        assert (res_r.status == 0).all() and (res_u.status == 0).all()
        base_u, base_r = np.cumsum([0] + [len(o) for o, _ in pairs]), np.cumsum([0] + [len(r) for _, r in pairs])
        for i, (o, r) in enumerate(pairs):
            hu, hr = hits(res_u, i), hits(res_r, i)
            assert hr == hu, (codec, files[i].name)
            ku, kr = np.flatnonzero(res_u.hit_msg == i), np.flatnonzero(res_r.hit_msg == i)
            for a, b in zip(ku.tolist(), kr.tolist()):
                tu = o[res_u.hit_start[a] - base_u[i]:res_u.hit_end[a] - base_u[i]].decode("utf-8")
                tr = r[res_r.hit_start[b] - base_r[i]:res_r.hit_end[b] - base_r[i]].decode(codec)
                assert tr == tu
            done += any(c > 127 for c in r)
    assert done >= 4                                    # real non-ASCII bytes (£, en dash, accents)


LATIN = ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<Declaration><GoodsShipment><Consignee><Name>Jürgen Müller '
         'Søn & Cie</Name></Consignee><Consignment><TransportEquipment><ID>MSCU1234565</ID></TransportEquipment>'
         '</Consignment></GoodsShipment></Declaration>').replace("&", "&amp;")


def test_latin1_xml_through_the_pipeline():
    from flowaudit.decode import FMT_XML
    from flowaudit.pipeline import Batch, Classifier
    from flowaudit.protect import Protector
    latin = LATIN.encode("latin-1")
    assert b"\xfc" in latin and b"\xf8" in latin
    cp = LATIN.replace("ISO-8859-1", "windows-1252").replace("Søn", "“Søn”").encode("cp1252")
    values = [latin, cp,
              latin.replace(b"ISO-8859-1", b"UTF-8"),                     # declares UTF-8: invalid bytes
              latin.split(b"?>", 1)[1],                                   # no declaration: UTF-8 required
              cp.replace("Søn".encode("cp1252"), b"S\x81n"),              # a byte windows-1252 lacks
              b"\xef\xbb\xbf" + latin,                                    # a UTF-8 BOM contradicts it
              latin.replace(b"ISO-8859-1", b"Shift_JIS")]                 # multi-byte: not read
    r = Classifier(Protector(b"x" * 32, raw=True)).run(Batch.from_values(values, FMT_XML))
    q = dict(zip(r.quarantine.column("offset").to_pylist(), r.quarantine.column("reason").to_pylist()))
    assert q == {2: "invalid_utf8", 3: "invalid_utf8", 4: "bad_charset", 5: "bad_charset", 6: "bad_charset"}
    assert r.quarantine.column("raw").to_pylist() == values[2:]
    rows = r.hits.to_pylist()
    names = {(h["offset"], h["value_raw"]) for h in rows if h["data_class"] == "party_name"}
    assert names == {(0, "Jürgen Müller Søn & Cie"), (1, "Jürgen Müller “Søn” & Cie")}
    for h in rows:                       # byte ranges refer to the bytes as received
        raw = values[h["offset"]][h["byte_start"]:h["byte_end"]].decode(["latin-1", "cp1252"][h["offset"]])
        assert raw.replace("&amp;", "&") == h["value_raw"]
    assert {h["value_raw"] for h in rows if h["data_class"] == "container_number"} == {"MSCU1234565"}


def ref_declared(doc: bytes):
    bom = doc.startswith(b"\xef\xbb\xbf")
    d = doc[3:] if bom else doc
    off = 3 if bom else 0
    if not (len(d) > 6 and d.startswith(b"<?xml") and d[5:6] in (b" ", b"\t", b"\r", b"\n")):
        return [-1, -1, -1, int(bom)]
    q = d.find(b"?>", 5)
    if q < 0:
        return [-1, -1, -1, int(bom)]
    head = d[5:q]
    k = head.find(b"encoding")
    if k < 0:
        return [q + 2 + off, -1, -1, int(bom)]
    m = re.match(rb"encoding[ \t\r\n]*=[ \t\r\n]*([\"'])", head[k:])
    if not m or head.find(m.group(1), k + m.end()) < 0:
        return [q + 2 + off, -2, -2, int(bom)]
    vs = 5 + k + m.end()
    return [q + 2 + off, vs + off, head.find(m.group(1), k + m.end()) + 5 + off, int(bom)]


@pytest.mark.parametrize("doc", [
    b'<?xml version="1.0" encoding="ISO-8859-1"?><a/>', b"<?xml version='1.0' encoding = 'cp1252' ?><a/>",
    b'\xef\xbb\xbf<?xml version="1.0"?><a/>', b'<?xml encoding="x', b'<?xml encoding=x?><a/>', b"<a/>",
    b'<?xml version="1.0" encoding="UTF-8"?>', b"<?xml?>", b"<?xmlx encoding='a'?>", b"",
])
def test_declared_encoding_kernel(doc):
    from flowaudit.kernels.xmlscan import declared_encoding
    buf, offs = batch([b"<pad/>", doc])
    got = declared_encoding(buf, offs, np.array([1], np.int64))[0].tolist()
    want = ref_declared(doc)
    shift = [6 if v >= 0 else 0 for v in want[:3]] + [0]
    assert got == [w + s for w, s in zip(want, shift)]


_piece = st.sampled_from(["<?xml", " ", "\n", "encoding", "=", '"', "'", "?>", "?", ">", "ISO-8859-1", "utf-8", "<a/>",
                          "version='1.0'", "x"])


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.lists(_piece, max_size=12), st.data())
def test_declared_encoding_kernel_matches_reference(bom, pieces, data):
    from flowaudit.kernels.xmlscan import declared_encoding
    docs = [(b"\xef\xbb\xbf" if bom else b"") + "".join(pieces).encode(),
            "".join(data.draw(st.lists(_piece, max_size=12))).encode()]
    buf, offs = batch(docs)
    got = declared_encoding(buf, offs, np.array([0, 1], np.int64)).tolist()
    want = []
    for i, d in enumerate(docs):
        w = ref_declared(d)
        want.append([v + int(offs[i]) if v >= 0 else v for v in w[:3]] + w[3:])
    assert got == want
