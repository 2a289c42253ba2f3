"""JSON scanner/classifier (kernels/jsonscan.py via flowaudit.decode.json) against a slow
reference built on the stdlib json parser, on generated documents, the real corpus and the
hostile inputs of reliability.md (items 43-47)."""
from __future__ import annotations

import json
import re
import resource
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from flowaudit.decode import REASON_CODES
from flowaudit.decode import json as dj

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
JSON_DIR = CORPUS / "messages" / "json"
SETTINGS = settings(max_examples=200, deadline=None)
CONT, IMO = 1, 2
OK, MALFORMED, TOO_DEEP, BAD_UTF8 = 0, REASON_CODES["malformed_json"], REASON_CODES["too_deep"], REASON_CODES["invalid_utf8"]


def batch(msgs):
    offs = np.zeros(len(msgs) + 1, dtype=np.int64)
    np.cumsum([len(m) for m in msgs], out=offs[1:])
    return np.frombuffer(b"".join(msgs), dtype=np.uint8).copy(), offs


# The scanner is rule-driven; the reference below models the rule engine on this small rule
# set (plain container/IMO rules, a Terminal49-style typed rule one level up, free text), the
# catalogue's real rules are exercised by the corpus tests here and in test_corpus_jsonxml.py.
TEST_DOC = {
    "version": "test",
    "rule": [
        {"class": "container_number", "keys": ["equipmentReference", "equipmentReferences", "containerNumber",
                                               "containerNo", "containerId", "containerIdentification",
                                               "Equipment Identification Number", "unitNumber"]},
        {"class": "container_number", "keys": ["number", "id"], "parents": ["container", "equipment", "containers"]},
        {"class": "imo_number", "numbers": True, "keys": ["vesselIMONumber", "vesselImo", "imo", "imoNumber"]},
    ],
    "typed": [{"keys": ["number"], "parents": ["attributes"], "type_key": "type", "level": 1,
               "types": [{"value": "container", "class": "container_number"}]}],
    "free_text": {"confidence": 80, "keys": ["description", "remark", "remarks", "note", "comment", "freeText",
                                             "shippingMarks", "text", "messageRaw"]},
}
TEST_RULES = dj.compile_rules(TEST_DOC, "keys")


def run(msgs, rules=TEST_RULES, embedded=False):
    buf, offs = batch(msgs)
    return dj.classify(buf, offs, np.arange(len(msgs), dtype=np.int64), rules=rules, embedded=embedded)


def run_catalogue(msgs):
    return run(msgs, rules=None, embedded=True)


# the marker's rule (tests/test_embedded.py has its own reference), on the decoded text
_EDI_HEAD = re.compile(r"[ \t\r\n]*((UNA|UNB|UNH)[^A-Za-z0-9\"\\\x00-\x1f]|ISA[^A-Za-z0-9\"\\ \x00-\x1f]|GS\*|ST\*)")
_B64_TEXT = re.compile(r"[A-Za-z0-9+/= \t\r\n]*\Z")


def packed_ref(text: str) -> bool:
    """The text's first four characters are the base64 of a gzip, zstd or zlib header."""
    import base64

    head = text[:4]
    if not re.fullmatch(r"[A-Za-z0-9+/]{4}", head):
        return False
    h = base64.b64decode(head)
    return h in (b"\x1f\x8b\x08", b"\x28\xb5\x2f") or (h[0] == 0x78 and h[1] in (0x01, 0x5E, 0x9C, 0xDA))


class _EdiStart:
    """What kernels/jsonscan.edi_marker marks, judged on the decoded text: an EDIFACT or X12
    header, or (field layers) only base64 characters, at least B64_MIN (80) of the alphabet, or
    B64_PACKED_MIN (24) when the text opens with a gzip, zstd or zlib header's base64."""

    @staticmethod
    def match(text: str) -> bool:
        if _EDI_HEAD.match(text):
            return True
        packed = packed_ref(text)
        return bool(_B64_TEXT.match(text)) and len(re.findall(r"[A-Za-z0-9+/]", text)) >= (24 if packed else 80)


EDI_START = _EdiStart()


def hits_of(res, i):
    out = []
    for k in np.nonzero(res.hit_msg == i)[0]:
        val = bytes(res.val_buf[res.val_off[k]:res.val_off[k + 1]]).decode()
        out.append((int(res.hit_class[k]), val, int(res.hit_valid[k]), int(res.hit_conf[k]),
                    res.loc_names[res.hit_loc[k]]))
    return out


# ---------------------------------------------------------------- slow Python reference
_LETTER = {ch: v for ch, v in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                                  [10, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 26, 27, 28, 29,
                                   30, 31, 32, 34, 35, 36, 37, 38])}
CONT_RE = re.compile(r"[A-Za-z]{3}[UJZujz][ -]?[0-9]{6}[ -]?[0-9]")
IMO_RE = re.compile(r"(?:[Ii][Mm][Oo][ :.\-]*)?([0-9]{7})")
FREE_CONT = re.compile(r"(?<![A-Za-z0-9])[A-Z]{3}[UJZ] ?[0-9]{7}(?![A-Za-z0-9])")
FREE_IMO = re.compile(r"(?<![A-Za-z0-9])[Ii][Mm][Oo][ :.\-]{0,3}[0-9]{7}(?![A-Za-z0-9])")
WS = " \t\r\n"


def iso6346_ok(v: str) -> bool:
    total = sum((_LETTER[c] if i < 4 else int(c)) * (2 ** i) for i, c in enumerate(v[:10]))
    return (total % 11) % 10 == int(v[10])


def ref_container(text: str):
    t = text.strip(WS)
    if not CONT_RE.fullmatch(t):
        return None
    v = re.sub(r"[ -]", "", t).upper()
    return v, int(iso6346_ok(v))


def ref_imo(text: str):
    m = IMO_RE.fullmatch(text.strip(WS))
    if not m:
        return None
    v = m.group(1)
    return v, int(sum(int(v[i]) * (7 - i) for i in range(6)) % 10 == int(v[6]))


def norm(name: str) -> str:
    out = []
    for ch in name:
        if "A" <= ch <= "Z":
            out.append(ch.lower())
        elif ("a" <= ch <= "z") or ("0" <= ch <= "9") or ord(ch) >= 128:
            out.append(ch)
    return "".join(out)


def load_ref_rules():
    doc = TEST_DOC
    codes = {"container_number": CONT, "imo_number": IMO}
    rules = [dict(cls=codes[r["class"]], keys={norm(k) for k in r["keys"]},
                  parents={norm(p) for p in r.get("parents", [])}, otype="",
                  num=bool(r.get("numbers", False)), conf=int(r.get("confidence", 100)))
             for r in doc["rule"]]
    rules += [dict(cls=codes[t["types"][0]["class"]], keys={norm(k) for k in t["keys"]},
                   parents={norm(p) for p in t.get("parents", [])}, otype=norm(t["types"][0]["value"]),
                   num=False, conf=100) for t in doc["typed"]]
    ft = doc["free_text"]
    return rules, {norm(k) for k in ft["keys"]}, int(ft["confidence"])


RULES, FREE_KEYS, FREE_CONF = load_ref_rules()


class Obj(list):
    """A JSON object as its list of (name, value) pairs (keeps duplicates and order)."""


class Num(str):
    """A JSON number kept as its text."""


class Reject(Exception):
    pass


def _const(name):
    raise Reject(name)


def free_hits(text, path):
    out = []
    if EDI_START.match(text):       # an embedded interchange goes to the EDIFACT decoder instead
        return out
    for m in FREE_CONT.finditer(text):
        v, ok = ref_container(m.group())
        out.append((CONT, v, ok, FREE_CONF, path))
    for m in FREE_IMO.finditer(text):
        v, ok = ref_imo(m.group())
        out.append((IMO, v, ok, FREE_CONF, path))
    return out


def ref_json(msg: bytes):
    """(status, hits, flags, n_values) by the stdlib parser and a recursive walk."""
    if not msg:
        return 1, [], 0, 0
    try:
        text = msg.decode("utf-8")
    except UnicodeDecodeError:
        return BAD_UTF8, [], 0, 0
    try:
        doc = json.loads(text, object_pairs_hook=Obj, parse_float=Num, parse_int=Num, parse_constant=_const)
    except (ValueError, Reject, RecursionError):
        return MALFORMED, [], 0, 0
    state = dict(flags=0, n=0, bad=None, depth=0)
    hits = []

    def visit_scalar(v, key, parent, holder, path):
        if isinstance(v, Num):
            dec = Decimal(v)
            if not dec.is_zero():
                if dec.adjusted() > 308:
                    state["bad"] = MALFORMED
                if dec.adjusted() < -324:
                    state["flags"] |= 4
            if re.fullmatch(r"-?[0-9]+", v) and abs(int(v)) > 2 ** 53:
                state["flags"] |= 2
            if key is None:
                return
            for r in RULES:
                if r["num"] and key in r["keys"] and (not r["parents"] or parent in r["parents"]):
                    if r["cls"] == IMO and not r["otype"]:
                        got = ref_imo(v)
                        if got:
                            hits.append((IMO, got[0], got[1], r["conf"], path))
                    return
            return
        if not isinstance(v, str):
            return
        if EDI_START.match(v):
            state["flags"] |= 8
        if any(0xD800 <= ord(c) <= 0xDFFF for c in v):
            state["bad"] = state["bad"] or BAD_UTF8
        if key is None:
            if path == "$":                      # a bare string document is free text
                hits.extend(free_hits(v, path))
            return
        for r in RULES:
            if key in r["keys"] and (not r["parents"] or parent in r["parents"]):
                got = (ref_container if r["cls"] == CONT else ref_imo)(v)
                if got is None:
                    return
                if r["otype"]:
                    # the LAST string-valued "type" member of the holder decides
                    types = [norm(tv) for (k, tv) in holder if norm(k) == "type" and isinstance(tv, str)] \
                        if isinstance(holder, Obj) else []
                    if not types or types[-1] != r["otype"]:
                        return
                hits.append((r["cls"], got[0], got[1], r["conf"], path))
                return
        if key in FREE_KEYS:
            hits.extend(free_hits(v, path))

    def visit(v, key, parent, holder, path, depth):
        """key/parent: normalised context names; holder: the container holding v's container."""
        state["n"] += 1
        if isinstance(v, (Obj, list)):
            depth += 1
            state["depth"] = max(state["depth"], depth)
        if isinstance(v, Obj):
            names = [k for k, _ in v]
            if any(0xD800 <= ord(c) <= 0xDFFF for k in names for c in k):
                state["bad"] = state["bad"] or BAD_UTF8
            if len(set(names)) != len(names):
                state["flags"] |= 1
            for k, x in v:
                visit(x, norm(k), key, (v, holder), path + "." + k, depth)
        elif isinstance(v, list):
            for x in v:
                visit(x, key, parent, ("arr", holder), path + "[]", depth)
        else:
            # holder chain: (container of v, its holder); the type object is the container's holder
            h = holder[1][0] if holder and holder[1] else None
            visit_scalar(v, key, parent, h, path)

    # parent of members of an object = the name the object sits under; arrays inherit
    def visit_root(v):
        visit(v, None, None, None, "$", 0)

    visit_root(doc)
    if state["depth"] > 64:
        return TOO_DEEP, [], 0, 0
    if state["bad"]:
        return state["bad"], [], 0, 0
    return OK, hits, state["flags"], state["n"]


# The reference walk above passes `key` (the member name) down as the new `parent` of the members
# of an object; arrays pass their own parent through unchanged, matching the kernel's context.


def test_reference_self_check():
    doc = b'{"vessel": {"vesselIMONumber": "9074729"}, "a": [{"containerNumber": "CSQU3054383"}]}'
    st_, hits, flags, n = ref_json(doc)
    assert st_ == 0 and hits == [(IMO, "9074729", 1, 100, "$.vessel.vesselIMONumber"),
                                 (CONT, "CSQU3054383", 1, 100, "$.a[].containerNumber")]


# ---------------------------------------------------------------- generated documents
def check_digit(prefix: str) -> str:
    total = sum((_LETTER[c] if i < 4 else int(c)) * (2 ** i) for i, c in enumerate(prefix))
    return str((total % 11) % 10)


def imo_digit(six: str) -> str:
    return str(sum(int(six[i]) * (7 - i) for i in range(6)) % 10)


owner = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3)
containers = st.builds(lambda o, c, s, ok, fmt: (
    lambda full: [full, full[:4] + " " + full[4:], full.lower(), full[:4] + "-" + full[4:10] + "-" + full[10]][fmt])(
    o + c + s + (check_digit(o + c + s) if ok else str((int(check_digit(o + c + s)) + 1) % 10))),
    owner, st.sampled_from("UJZ"), st.text("0123456789", min_size=6, max_size=6), st.booleans(), st.integers(0, 3))
imos = st.builds(lambda s, ok, pre: pre + s + (imo_digit(s) if ok else str((int(imo_digit(s)) + 3) % 10)),
                 st.text("0123456789", min_size=6, max_size=6), st.booleans(), st.sampled_from(["", "IMO", "IMO ", "imo:"]))
free = st.builds(lambda a, c, b, i: f"{a} {c} {b} {i}.", st.text(max_size=8), containers, st.text(max_size=6), imos)
strings = st.one_of(st.text(max_size=10), containers, imos, free, st.sampled_from(["container", "Container", "vessel"]))
KEYS = ["equipmentReference", "EquipmentReference", "containerNumber", "container_number", "Container Number",
        "equipmentReferences", "number", "attributes", "type", "container", "equipment", "vessel", "imo", "IMO",
        "vesselIMONumber", "description", "remarks", "carrierBookingReference", "transportDocumentReference",
        "referenceValue", "data", "id", "a", "b", "ünï", "k\"q", "x.y"]
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=6))
numbers = st.one_of(st.integers(-10 ** 20, 10 ** 20).map(str), imos.filter(str.isdigit),
                    st.sampled_from(["0", "-0", "1.5", "1e5", "1E-400", "2.5e+10", "9007199254740993", "0.000"]))
scalars = st.one_of(strings, numbers.map(Num), st.sampled_from([True, False, None]))


def objects(children):
    return st.lists(st.tuples(keys, children), max_size=5).map(Obj)


docs = st.recursive(scalars, lambda ch: st.one_of(st.lists(ch, max_size=4), objects(ch)), max_leaves=25)
top_docs = st.one_of(objects(docs), st.lists(docs, max_size=4), docs)


def dump(v, rnd) -> str:
    """Serialise with random white space and random (valid) escapes."""
    ws = lambda: rnd.choice(["", "", " ", "\n  ", "\t"])
    if isinstance(v, Obj):
        return "{" + ws() + ("," + ws()).join(dump_str(k, rnd) + ws() + ":" + ws() + dump(x, rnd) for k, x in v) + ws() + "}"
    if isinstance(v, list):
        return "[" + ws() + ("," + ws()).join(dump(x, rnd) for x in v) + ws() + "]"
    if isinstance(v, Num):
        return str(v)
    if isinstance(v, str):
        return dump_str(v, rnd)
    return json.dumps(v)


def dump_str(s, rnd) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        r = rnd.random()
        if ch == '"' or ch == "\\" or o < 0x20 or r < 0.15:
            if o > 0xFFFF:
                o -= 0x10000
                out.append("\\u%04x\\u%04X" % (0xD800 + (o >> 10), 0xDC00 + (o & 0x3FF)))
            elif ch in '"\\/' and r < 0.5:
                out.append("\\" + ch)
            elif ch in "\n\t" and r < 0.1:
                out.append({"\n": "\\n", "\t": "\\t"}[ch])
            else:
                out.append("\\u%04x" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def compare(msgs):
    res = run(msgs)
    for i, m in enumerate(msgs):
        st_, hits, flags, n = ref_json(m)
        assert (res.status[i] == 0) == (st_ == 0), (m, res.status[i], st_)
        if st_ == 0:
            assert hits_of(res, i) == hits, m
            assert int(res.flags[i]) == flags, m
            assert int(res.n_segments[i]) == n, m
            assert res.msg_type[i] == "json"
        else:
            assert not (res.hit_msg == i).any()
    return res


@SETTINGS
@given(st.lists(st.tuples(top_docs, st.randoms(use_true_random=False)), min_size=1, max_size=4))
def test_kernel_matches_reference(items):
    msgs = [dump(d, rnd).encode("utf-8", "surrogatepass") for d, rnd in items]
    compare(msgs)


@SETTINGS
@given(top_docs, st.randoms(use_true_random=False), st.data())
def test_mutations_match_reference(d, rnd, data):
    m = dump(d, rnd).encode("utf-8", "surrogatepass")
    op = data.draw(st.integers(0, 3))
    pos = data.draw(st.integers(0, len(m)))
    if op == 0:
        m = m[:pos]
    elif op == 1:
        m = m[:pos] + data.draw(st.sampled_from([b"x", b",", b"}", b"]", b'"', b"\\", b"\xff", b"\xc3", b"\x00",
                                                  b"NaN", b"1", b" ", b"\xef\xbb\xbf"])) + m[pos:]
    elif op == 2:
        m = m[:pos] + m[pos + 1:]
    else:
        m = m + data.draw(st.sampled_from([b" ", b"x", b"{}", b"\n", b"0"]))
    compare([m])


# ---------------------------------------------------------------- targeted behaviour
def test_lookalikes_and_key_names():
    doc = json.dumps({
        "carrierBookingReference": "CSQU3054383", "transportDocumentReference": "CSQU3054383",
        "declarationReference": "VGM-CSQU3054383", "referenceValue": "CSQU3054383",
        "containerNumberX": "CSQU3054383", "xContainerNumber": "CSQU3054383",
        "Container_Number": "csqu 3054383", "seals": [{"number": "CSQU3054383"}],
        "container": {"number": "CSQU3054383"}}).encode()
    res = run([doc])
    assert hits_of(res, 0) == [(CONT, "CSQU3054383", 1, 100, "$.Container_Number"),
                               (CONT, "CSQU3054383", 1, 100, "$.container.number")]


def test_terminal49_type_rule_either_order():
    a = b'{"data":{"id":"c1","type":"container","attributes":{"number":"CSQU3054383"}}}'
    b = b'{"data":[{"attributes":{"number":"CSQU3054383"},"type":"container"},{"attributes":{"number":"CSQU3054383"},"type":"shipment"}]}'
    c = b'{"attributes":{"number":"CSQU3054383"}}'
    res = run([a, b, c])
    assert hits_of(res, 0) == [(CONT, "CSQU3054383", 1, 100, "$.data.attributes.number")]
    assert hits_of(res, 1) == [(CONT, "CSQU3054383", 1, 100, "$.data[].attributes.number")]
    assert hits_of(res, 2) == []


def test_raw_ranges_and_escapes():
    doc = b'{"remarks": "load CSQU3054383 on IMO 9074729", "containerNumber": "\\u0043SQU3054383", "imo": 9074729}'
    res = run([doc])
    assert [h[:3] for h in hits_of(res, 0)] == [(CONT, "CSQU3054383", 1), (IMO, "9074729", 1),
                                                 (CONT, "CSQU3054383", 1), (IMO, "9074729", 1)]
    spans = [doc[a:b] for a, b in zip(res.hit_start, res.hit_end)]
    assert spans == [b"CSQU3054383", b"IMO 9074729", b"\\u0043SQU3054383", b"9074729"]
    assert res.hit_conf.tolist() == [80, 80, 100, 100]


# ---------------------------------------------------------------- hostile inputs (43-47)
def test_hostile_inputs():
    cases = {
        b"[" * 1025 + b"]" * 1025: TOO_DEEP,
        b"[" * 65 + b"]" * 65: TOO_DEEP,
        b"[" * 64 + b"]" * 64: OK,
        b'{"a":' * 100000 + b"1" + b"}" * 100000: TOO_DEEP,
        b"[1e400]": MALFORMED,
        b"[-1E+309]": MALFORMED,
        b'{"a":NaN}': MALFORMED,
        b"[Infinity]": MALFORMED,
        b'{"a":1} x': MALFORMED,
        b'{"a":1}{"b":2}': MALFORMED,
        b'\xef\xbb\xbf{"a":1}': MALFORMED,
        b'["\\ud800"]': BAD_UTF8,
        b'["\\udc00\\ud800"]': BAD_UTF8,
        b'["\xed\xa0\x80"]': BAD_UTF8,
        b'["\xc0\xaf"]': BAD_UTF8,
        b'{"a": [1, 2': MALFORMED,
        b'{"vessel": IS_FYI_PLACEHOLDER}': MALFORMED,
        b"": REASON_CODES["empty_value"],
        b"   ": MALFORMED,
        b'["a\x01"]': MALFORMED,
        b"[01]": MALFORMED,
        b"[1.]": MALFORMED,
        b'["\\x"]': MALFORMED,
        b'"\\': MALFORMED,
    }
    msgs = list(cases)
    res = run(msgs)
    # linear time: measured in benchmarks/hostile.py, never asserted here
    assert res.status.tolist() == list(cases.values())
    assert res.n_hits == 0


def test_flags_big_ints_underflow_duplicates():
    msgs = [b'{"imo": 123456789012345678901234567890}', b'[9007199254740993]', b'[9007199254740992]',
            b'[1e-400]', b'[0e-999]', b'{"a":1,"a":2}', b'{"a":1,"A":2}', b'{"a":{"b":1},"b":{"b":2}}',
            b'{' + b",".join(b'"k%d":1' % i for i in range(200)) + b',"k7":2}',
            # one name written plainly and with escapes (the exact hash is of the decoded name)
            b'{"ab":1,"\\u0061b":2}', '{"\u00e9t\u00e9":1,"\\u00e9t\\u00e9":2}'.encode(),
            b'{"abcdefghij":1,"abcdefghiJ":2}']
    res = run(msgs)
    assert res.status.tolist() == [0] * len(msgs)
    assert res.flags.tolist() == [2, 2, 0, 4, 0, 1, 0, 0, 1, 1, 1, 0]
    assert res.n_hits == 0                       # 30 digits is no IMO number


def test_overflow_retry_and_many_messages():
    one = json.dumps({"events": [{"equipmentReference": "CSQU3054383", f"k{i}": {"remarks": "IMO 9074729"}}
                                 for i in range(400)]}).encode()
    res = run([one] * 20)
    assert res.n_hits == 20 * 800
    assert len(res.loc_names) == 401
    assert (res.status == 0).all()


def test_memory_bounded_on_large_input():
    big = b'["' + b"A" * (20 << 20) + b'"]'
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = run([big, b'{"a":' * 70000])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert res.status.tolist() == [0, TOO_DEEP]
    assert (after - before) < 300 * 1024          # KiB


# ---------------------------------------------------------------- corpus
# Expected hits derived by reading the files (README "CN (valid)" column and the DCSA/Terminal49/
# FIWARE/JAPDEVA field definitions): {file: (status, {(class, value, valid): count})}.
APZ = (CONT, "APZU4812090", 1)
EXPECTED = {
    "MJapdeva4302_ReadBaplie__BAPLIE_Export.json": {(CONT, "TEMU8304176", 1): 1, (CONT, "TEMU7503281", 1): 1,
                                                     (CONT, "TEMU9496900", 1): 1},
    "Terminal49_API__containers.events.json": {},
    "Terminal49_API__containers.get.include.json": {(IMO, "9728253", 1): 1},
    "Terminal49_API__search.shipment-bol.json": {},
    "Terminal49_API__shipments.get.include.json": {(IMO, "9728253", 1): 1},
    "Terminal49_API__tracking-requests.list.json": {(IMO, "9728253", 1): 1},
    "Terminal49_API__vessels.get-by-imo.json": {(IMO, "9301809", 1): 1},
    "csw823197541_cwpAutoStowage__5.25data_13445_P__HARB_BRI_Json_SHBTOS.CWPJUnitperstowage.txt": {},
    "dcsaorg_Conformance-Gateway__arrivalnotice-api-100-get-basic-response.json": {
        (CONT, "HLCU1234567", 0): 2, (CONT, "MSKU1234567", 0): 1, (CONT, "MSKU1234568", 0): 1},
    "dcsaorg_Conformance-Gateway__arrivalnotice-api-100-post-freighted-request.json": {(CONT, "HMMU5443121", 0): 2},
    "dcsaorg_Conformance-Gateway__booking-api-2.0.0-dg.json": {},
    "dcsaorg_Conformance-Gateway__booking-api-2.0.0-reefer.json": {},
    "dcsaorg_Conformance-Gateway__booking-api-2.0.0-store-door-at-origin.json": {},
    "dcsaorg_Conformance-Gateway__booking-request.json": {(IMO, "9298686", 1): 1},
    "dcsaorg_Conformance-Gateway__commercialschedules-api-1.0.0-ps.json": {(IMO, "9321483", 1): 1},
    "dcsaorg_Conformance-Gateway__commercialschedules-api-1.0.0-ptpnextpage.json": {
        (IMO, v, 1): 1 for v in ["9364992", "9867827", "9951549", "9894985", "9969390", "9938133"]},
    "dcsaorg_Conformance-Gateway__commercialschedules-api-1.0.0-vs.json": {(IMO, "9321483", 1): 1},
    "dcsaorg_Conformance-Gateway__ebl-api-3.0.0-2c2u.json": {(CONT, "ABCU1234567", 0): 3, (CONT, "XYZU9876543", 0): 3},
    "dcsaorg_Conformance-Gateway__ebl-api-3.0.0-dg.json": {(CONT, "MAEU1234567", 1): 2},
    "dcsaorg_Conformance-Gateway__ebl-api-3.0.0-negotiable-bl.json": {(CONT, "MAEU6543210", 0): 2},
    "dcsaorg_Conformance-Gateway__ebl-api-3.0.0-request.json": {(CONT, "MSCU9988776", 0): 4},
    "dcsaorg_Conformance-Gateway__ebl-api-3.0.0-straight-bl.json": {(CONT, "MSCU9988776", 0): 2},
    "dcsaorg_Conformance-Gateway__eblissuance-v3.0.0-request.json": {(CONT, "NARU3472484", 1): 2},
    "dcsaorg_Conformance-Gateway__jit-200-port-call-service-request.json": None,
    "dcsaorg_Conformance-Gateway__ovs-300-response.json": {(IMO, "9321483", 1): 1, (IMO, "9456789", 0): 1,
                                                            (IMO, "9876543", 1): 3},
    "dcsaorg_Conformance-Gateway__pint-3.0.0-transport-document.json": {(CONT, "NARU3472484", 1): 2},
    "dcsaorg_Conformance-Gateway__portcall-api-200-post-request.json": {(IMO, "9321483", 1): 1},
    "dcsaorg_Conformance-Gateway__tnt-220-response-wrong-structure.json": {APZ: 2, (IMO, "9321483", 1): 4},
    "dcsaorg_Conformance-Gateway__tnt-220-response.json": {APZ: 2, (IMO, "9321483", 1): 4},
    "dcsaorg_Conformance-Gateway__tnt-300-request-equipment.json": {APZ: 1},
    "dcsaorg_Conformance-Gateway__tnt-300-request-reefer.json": {APZ: 1},
    "dcsaorg_Conformance-Gateway__tnt-300-request-transport.json": {(IMO, "1234567", 1): 1},
    "dcsaorg_Conformance-Gateway__tnt-300-response.json": {APZ: 3, (IMO, "7654321", 0): 1},
    "dcsaorg_Conformance-Gateway__vgm-api-100-post-request.json": {APZ: 1},
    "dcsaorg_DCSA-JIT__TimestampSample_v1-2.json": {(IMO, "9321483", 1): 2},
    "smart-data-models_dataModel.MarineTransport__Company_example.json": {},
    "smart-data-models_dataModel.MarineTransport__EdiCodeco_example.json": {(IMO, "1111111", 0): 1},
    "smart-data-models_dataModel.MarineTransport__MasterVessel_example.json": {(IMO, "9863637", 1): 1},
    "smart-data-models_dataModel.MarineTransport__PortCall_example.json": {},
    "smart-data-models_dataModel.MarineTransport__Vessel_example.json": {(IMO, "9863637", 1): 1},
}
COARRI = "MJapdeva4302_ReadBaplie__Json_COARRI_Export_Ejemplo.JSON"


@pytest.fixture(scope="module")
def corpus():
    if not JSON_DIR.is_dir():
        pytest.fail("corpus not available")
    files = sorted(p for p in JSON_DIR.iterdir() if p.is_file())
    msgs = [p.read_bytes() for p in files]
    return [p.name for p in files], msgs, run_catalogue(msgs), run(msgs)


def test_corpus_expected_hits(corpus):
    names, msgs, res, _ = corpus
    assert set(names) == set(EXPECTED) | {COARRI}
    for i, name in enumerate(names):
        if name == COARRI:
            continue
        exp = EXPECTED[name]
        if exp is None:
            assert res.status[i] == MALFORMED, name
            continue
        assert res.status[i] == 0, name
        got = {}
        for cls, val, valid, conf, loc in hits_of(res, i):
            if cls not in (CONT, IMO) or ">" in loc:     # other classes, embedded EDIFACT: test_corpus_jsonxml.py
                continue
            got[(cls, val, valid)] = got.get((cls, val, valid), 0) + 1
        assert got == exp, name


def test_corpus_coarri_42_containers(corpus):
    names, msgs, res, _ = corpus
    i = names.index(COARRI)
    hits = [h for h in hits_of(res, i) if h[0] in (CONT, IMO)]
    conts = [h for h in hits if h[0] == CONT]
    assert len(conts) == 42 and len({h[1] for h in conts}) == 42
    assert all(h[2] == 1 and h[4] == "$.Equipments[].ContainerNumber" for h in conts)
    assert conts[0][1] == "TRIU8194081" and conts[-1][1] == "CXRU1621841"
    assert [h for h in hits if h[0] == IMO] == [(IMO, "9812456", 1, 100, "$.ArrivalData.IMO")]


def test_corpus_matches_reference(corpus):
    names, msgs, _, res = corpus
    for i, m in enumerate(msgs):
        st_, hits, flags, n = ref_json(m)
        assert res.status[i] == st_, names[i]
        if st_ == 0:
            assert hits_of(res, i) == hits, names[i]
            assert int(res.n_segments[i]) == n, names[i]


def split_hits_reference(H, nh, vbuf):
    """split_hits, obviously: the kept rows in order, each value copied on its own."""
    from flowaudit.kernels import jsonscan as K

    rows = [H[k] for k in range(nh) if H[k, K.H_KEEP] == 1]
    vals = [bytes(vbuf[r[K.H_VOFF]:r[K.H_VOFF] + r[K.H_VLEN]]) for r in rows]
    off = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(v) for v in vals], out=off[1:])
    col = lambda c, t: np.array([r[c] for r in rows], dtype=t)  # noqa: E731
    return (col(K.H_MSG, np.int64), col(K.H_CLASS, np.int16), col(K.H_LOC, np.int32), col(K.H_VALID, np.int8),
            col(K.H_CONF, np.uint8), col(K.H_START, np.int64), col(K.H_END, np.int64), off,
            np.frombuffer(b"".join(vals), dtype=np.uint8))


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 40), st.booleans()), max_size=60), st.randoms())
def test_split_hits_matches_reference(rows, rnd):
    """Kept rows and their values, whatever the gaps between values and the dropped rows: the
    kernel copies runs of adjacent values at once."""
    from flowaudit.kernels import jsonscan as K

    nh = len(rows)
    H = np.full((nh + 3, K.H_N), -7, dtype=np.int64)       # rows past nh are never read
    vbuf = np.frombuffer(rnd.randbytes(sum(g + n for g, n, _ in rows) + 8), dtype=np.uint8).copy()
    o = 0
    for k, (gap, ln, keep) in enumerate(rows):
        o += gap
        H[k, :] = [rnd.randrange(1000) for _ in range(K.H_N)]
        H[k, K.H_CLASS], H[k, K.H_VALID], H[k, K.H_CONF] = rnd.randrange(40), rnd.choice((-1, 0, 1)), rnd.randrange(100)
        H[k, K.H_VOFF], H[k, K.H_VLEN], H[k, K.H_KEEP] = o, ln, int(keep)
        o += ln
    got = K.split_hits(H, nh, vbuf)
    want = split_hits_reference(H, nh, vbuf)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        assert np.array_equal(g, w)


@SETTINGS
@given(st.lists(st.lists(st.tuples(st.text(alphabet="abcK\"é", max_size=3), st.sampled_from([0, 1, "x", "obj"])),
                         max_size=90), min_size=1, max_size=3), st.randoms(use_true_random=False))
def test_duplicate_names_in_large_and_nested_objects(objs, rnd):
    """The duplicate-name flag of objects of up to 90 names (many share a hash bit of the
    per-object set, so the exact comparison runs often) with nested objects whose names must not
    count for their parent, against the reference."""
    def value(v, i):
        return Obj([(f"n{i}", 1), ("a", 2)]) if v == "obj" else Num(str(v)) if isinstance(v, int) else v
    docs = [Obj([(k, value(v, i)) for i, (k, v) in enumerate(o)]) for o in objs]
    compare([dump(d, rnd).encode() for d in docs])


def test_an_escaped_interchange_is_still_one():
    """An interchange (or a base64 layer) written with \\u escapes is marked as the same text
    unescaped is: the marker looks at the decoded text, so escaping a header's letters does not
    hide the interchange from its decoder (nor turn it into free text)."""
    inter = "UNA:+.? 'UNB+UNOA:2+S+R+260301:1200+1'UNH+1+IFTSTA:D:99B:UN'EQD+CN+MSCU1234565'"
    esc = "".join("\\u%04x" % ord(c) for c in inter[:12]) + inter[12:]
    b64 = "QUJD" * 30
    docs = [b'{"remarks":"%s"}' % s.encode() for s in (inter, esc, "\\u0051" + b64[1:], b64[:40] + "\\/" + b64[40:])]
    res = compare(docs)
    assert [int(f) & 8 for f in res.flags] == [8, 8, 8, 8]
    assert res.n_hits == 0                       # not free text: the EDIFACT decoder reads it


def next_stop_reference(buf: bytes, i: int, end: int) -> int:
    """next_stop, obviously: the first byte in [i, end) that ends plain string text."""
    for p in range(i, end):
        c = buf[p]
        if c in (0x22, 0x5C) or c < 0x20 or c >= 0x80:
            return p
    return end


_PLAIN = [b"a"] * 12 + [b" ", b"~", b"\x7f", b"Z"]
_STOPS = [b'"', b"\\", b"\x1f", b"\x00", b"\x80", b"\xff", "\u00e9".encode()]


@SETTINGS
@given(st.lists(st.sampled_from(_PLAIN + _STOPS), max_size=40), st.data())
def test_next_stop_matches_reference(parts, data):
    """The word-at-a-time search for a string's next quote, backslash, control or non-ASCII byte,
    over any range of a mostly plain buffer: stops at every position of a word, stops past ``end``
    inside the buffer (not found), the buffer's last bytes (looked at one by one)."""
    from flowaudit.kernels import jsonscan as K

    text = b"".join(parts)
    buf = np.frombuffer(text, dtype=np.uint8)
    i = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(i, len(text)))
    assert K.next_stop(buf, i, end) == next_stop_reference(text, i, end)


@SETTINGS
@given(st.lists(st.sampled_from([b" ", b"\n", b"\r", b"\t", b" " * 9, b"a", b"\x0b", b"\x00", b"{"]), max_size=30),
       st.data())
def test_skip_ws_matches_reference(parts, data):
    """JSON whitespace skipped eight bytes a step: runs of any length, the four whitespace bytes
    and the control bytes that are not whitespace, any range of the buffer."""
    from flowaudit.kernels import jsonscan as K

    text = b"".join(parts)
    buf = np.frombuffer(text, dtype=np.uint8)
    i = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(i, len(text)))
    want = i
    while want < end and text[want] in b" \n\r\t":
        want += 1
    assert K.skip_ws(buf, i, end) == want


@SETTINGS
@given(st.lists(st.text(alphabet="aZ9-_ .é€\u00ff", max_size=12), max_size=8), st.data())
def test_name_hashes_match_name_hash(names, data):
    """The batch form of the normalised-name hash equals the Python twin the rules are compiled
    with, name by name; a slice outside the buffer hashes as the empty name."""
    from flowaudit.kernels import jsonscan as K

    raw = [n.encode("utf-8") for n in names]
    buf = np.frombuffer(b"".join(raw) + b"#", dtype=np.uint8)
    ends = np.cumsum([len(r) for r in raw], dtype=np.int64)
    starts = ends - np.array([len(r) for r in raw], dtype=np.int64)
    bad = data.draw(st.booleans())
    if bad and names:
        starts[0], ends[0] = 3, len(buf) + 5
    got = K.name_hashes(buf, starts, ends).tolist()
    want = [K.name_hash("" if bad and k == 0 else n) for k, n in enumerate(names)]
    assert got == want
