"""The peers: what a user would pick instead of flowaudit, each doing the same work on the same bytes.

Every peer is a :class:`Peer`: a name, the version of the library it runs, and a ``work(ds)``
that returns the callable the suite times (the callable returns a dict of counts).  A peer whose
library is not importable is *skipped with the reason*, never dropped.

Regex engines (python ``re``, google-re2 with ``Options.encoding = LATIN1``, python-hyperscan in
block mode) run one pattern set per format (:data:`PATTERN_SETS`), each as a per-pattern loop
(``re``/RE2 ``findall``) or one database (Hyperscan).  The patterns are written so that every
match has exactly one possible end (a fixed length, ``\\b`` after a maximal run, or a consumed
delimiter) and no look-around: then Hyperscan's "every end offset" equals ``findall``'s
non-overlapping matches, and the three engines' per-pattern counts must agree (checked each run).

The container/IMO recognisers (:func:`values_peers`) find ``[A-Z]{3}[UJZ] ?[0-9]{7}`` (and
``IMO`` + up to 3 separators + 7 digits), reject a match that touches an ASCII letter or digit on
either side, and compute the ISO 6346 / IMO check digit in Python: exactly the semantics of
``kernels/values.py`` ``next_container``/``next_imo`` + ``parse_container``/``imo_check_ok``,
so their counts must equal flowaudit's.

Parsers: pydifact (EDIFACT segments; ``UNA`` is a service string advice, not a segment, for
flowaudit), orjson ``loads`` + iterative walk (every JSON node; values under the catalogue's
sensitive member names), lxml with a hardened parser (no entities, no DTD, no network) +
compiled XPath, and lxml ``iterparse`` (elements; sensitive elements by local name).
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import logging
import re
import tomllib
import warnings
from dataclasses import dataclass, field
from io import BytesIO
from typing import Callable


from flowaudit import schemas

from .corpus import Dataset


def version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


@dataclass
class Peer:
    name: str
    version: str
    # ds -> zero-argument callable returning counts; None when skipped
    work: Callable[[Dataset], Callable[[], dict]] | None
    skipped: str | None = None
    # counts that must equal flowaudit's (peer key -> flowaudit key); others are informational
    compare: dict = field(default_factory=dict)
    # why the remaining counts are not comparable
    note: str = ""
    # a slow peer runs on a prefix of whole messages sized to this many seconds per run
    slow: bool = False
    # regex engines: counts must agree between these engines (same pattern set)
    engine_group: str | None = None
    # items for items/s: a count key (default: the messages scanned)
    items_key: tuple = ()
    item_unit: str = "messages"


def _skip(name: str, dist: str, exc: Exception) -> Peer:
    return Peer(name, version(dist), None, skipped=f"{dist} not importable: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------ pattern sets
# One per format.  No look-around; each match has exactly one possible end (see module doc).

EDIFACT_PATTERNS = {
    "container_no": rb"\b[A-Z]{3}[UJZ] ?[0-9]{7}\b",
    "imo_no": rb"\b[0-9]{7}:146\b",
    "call_sign": rb"\+[A-Z0-9]{4,7}:103\b",
    "email": rb"[A-Za-z0-9._%-]+@[A-Za-z0-9.-]+:EM\b",
    "phone": rb"\+[0-9 ?+()/-]{6,25}:TE\b",
    "lei": rb"\b[0-9A-Z]{18}[0-9]{2}\b",
    "cn_usci": rb"\b[0-9]{8}[0-9A-HJ-NPQRTUWXY]{10}\b",
    "hs_code": rb"PIA\+[0-9]\+[0-9]{4,10}:HS\b",
    "un_number": rb"DGS\+IMD\+[0-9.]{1,4}\+[0-9]{4}\b",
    "bl_ref": rb"RFF\+BM:[A-Z0-9]{1,35}\b",
    "booking_ref": rb"RFF\+BN:[A-Z0-9]{1,35}\b",
    "customs_mrn": rb"RFF\+ABT:[A-Z0-9]{1,35}\b",
    "vat_no": rb"RFF\+VA:[A-Z0-9]{1,35}\b",
    "seal_no": rb"SEL\+[A-Z0-9]{1,35}\b",
    "party_name": rb"NAD\+(?:CZ|CN|NI|FW|DP|OS|SH|CA|CF)\+[^+']*\+[^+']*\+[^+':?']{2,}['+:]",
    "contact_name": rb"CTA\+[A-Z]{0,3}\+[^+':]*:[^+':?']{2,}'",
    "eori": rb"\b(?:DE|NL|BE|FR|GB|ES|IT|PL|DK|CN)[0-9]{9,15}\b",
    "iban": rb"\b(?:AT|LU|DE|NL|BE|FR)[0-9]{2}[A-Z0-9]{12,30}\b",
    "stowage": rb"LOC\+147\+[0-9]{6,7}\b",
    "vgm": rb"MEA\+[A-Z]{2,3}\+VGM\+KGM:[0-9.,]+'",
}
X12_PATTERNS = {
    "container_no": rb"\b[A-Z]{3}[UJZ] ?[0-9]{7}\b",
    "n7_equipment": rb"N7\*[A-Z]{2,4}\*[0-9]{1,10}\b",
    "b4_equipment": rb"B4\*[^*~]*\*[^*~]*\*[^*~]*\*[^*~]*\*[^*~]*\*[^*~]*\*[A-Z]{4}\*[0-9]{6,7}\b",
    "imo_no": rb"(?:V1|Q2)\*[0-9]{7}\b",
    "bl_ref": rb"N9\*BM\*[A-Z0-9]{1,30}\b",
    "booking_ref": rb"N9\*BN\*[A-Z0-9]{1,30}\b",
    "seal_no": rb"(?:M7|N9\*SN)\*[A-Z0-9]{1,30}\b",
    "party_name": rb"N1\*(?:SH|CN|N1|UC|SF|PF|DR|CA)\*[^*~\n]{2,}[*~\n]",
    "street": rb"N3\*[^*~\n]{2,}[*~\n]",
    "contact": rb"PER\*[A-Z]{2}\*[^*~\n]{2,}[*~\n]",
    "port": rb"R4\*[A-Z0-9]\*UN\*[A-Z]{5}\b",
    "un_number": rb"H1\*[0-9]{4}\b",
}
JSON_PATTERNS = {
    "container_no": rb"\b[A-Z]{3}[UJZ] ?[0-9]{7}\b",
    "imo_no": rb"\"(?:vesselIMONumber|imoNumber|IMO)\": ?\"?[0-9]{7}\b",
    "email": rb"[A-Za-z0-9._%-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\"",
    "lei": rb"\b[0-9A-Z]{18}[0-9]{2}\b",
    "party_name": rb"\"partyName\": ?\"[^\"]*\"",
    "booking_ref": rb"\"carrierBookingReference\": ?\"[^\"]*\"",
    "bl_ref": rb"\"transportDocumentReference\": ?\"[^\"]*\"",
    "seal_no": rb"\"(?:number|sealNumber)\": ?\"[^\"]*\"",
    "phone": rb"\"phone\": ?\"[^\"]*\"",
    "call_sign": rb"\"vesselCallSign(?:Number)?\": ?\"[^\"]*\"",
    "un_number": rb"\"UNNumber\": ?\"[^\"]*\"",
}
XML_PATTERNS = {
    "container_no": rb"\b[A-Z]{3}[UJZ] ?[0-9]{7}\b",
    "email": rb">[A-Za-z0-9._%-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}<",
    "name": rb"<(?:[A-Za-z]+:)?Name>[^<]*<",
    "id": rb"<(?:[A-Za-z]+:)?ID(?: [^>]*)?>[^<]*<",
    "street": rb"<(?:[A-Za-z]+:)?StreetName>[^<]*<",
    "phone": rb"<(?:[A-Za-z]+:)?Telephone>[^<]*<",
    "transport_equipment": rb"<(?:[A-Za-z]+:)?TransportEquipment\b",
    "seal": rb"<(?:[A-Za-z]+:)?(?:Seal|TransportEquipmentSeal)\b",
    "lei": rb"\b[0-9A-Z]{18}[0-9]{2}\b",
    "un_number": rb"<(?:[A-Za-z]+:)?UNDGCode>[^<]*<",
}
PATTERN_SETS = {"edifact": EDIFACT_PATTERNS, "x12": X12_PATTERNS, "json": JSON_PATTERNS, "xml": XML_PATTERNS}


def _buf_bytes(ds: Dataset) -> bytes:
    return ds.buf.tobytes()


def re_peer(patterns: dict) -> Peer:
    def work(ds):
        data = _buf_bytes(ds)
        rxs = [(k, re.compile(p)) for k, p in patterns.items()]
        return lambda: {k: len(rx.findall(data)) for k, rx in rxs}
    return Peer("python re (per-pattern loop)", _py_version(), work, slow=True, engine_group="regex",
                note=f"{len(patterns)} patterns; pattern matches are not catalogued hits")


def re2_peer(patterns: dict) -> Peer:
    try:
        import re2
    except Exception as exc:  # noqa: BLE001 - any import failure is a skip reason
        return _skip("google-re2 (LATIN1, per-pattern loop)", "google-re2", exc)

    def work(ds):
        data = _buf_bytes(ds)
        o = re2.Options()
        o.encoding = re2.Options.Encoding.LATIN1
        rxs = [(k, re2.compile(p, options=o)) for k, p in patterns.items()]
        return lambda: {k: len(rx.findall(data)) for k, rx in rxs}
    return Peer("google-re2 (LATIN1, per-pattern loop)", version("google-re2"), work, slow=True,
                engine_group="regex", note=f"{len(patterns)} patterns; pattern matches are not catalogued hits")


def hyperscan_peer(patterns: dict) -> Peer:
    try:
        import hyperscan
    except Exception as exc:  # noqa: BLE001
        return _skip("python-hyperscan (block mode, one database)", "hyperscan", exc)

    def work(ds):
        data = _buf_bytes(ds)
        names = list(patterns)
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        db.compile(expressions=[patterns[k] for k in names], ids=list(range(len(names))),
                   elements=len(names), flags=[0] * len(names))

        def run():
            counts = [0] * len(names)

            def on_match(i, _f, _t, _fl, _c):
                counts[i] += 1
            db.scan(data, match_event_handler=on_match)
            return dict(zip(names, counts))
        return run
    return Peer("python-hyperscan (block mode, one database)", version("hyperscan") + " (bundled Vectorscan)",
                work, engine_group="regex", note=f"{len(patterns)} patterns, no SOM; pattern matches are not catalogued hits")


def regex_peers(fmt: str) -> list[Peer]:
    p = PATTERN_SETS[fmt]
    return [re_peer(p), re2_peer(p), hyperscan_peer(p)]


def _py_version() -> str:
    import platform
    return "CPython " + platform.python_version()


# ------------------------------------------------------------------------ value recognisers
_ISO_LETTER = dict(zip(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                       (10, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 26, 27, 28,
                        29, 30, 31, 32, 34, 35, 36, 37, 38)))
_ALNUM = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
CONTAINER_RX = rb"[A-Z]{3}[UJZ] ?[0-9]{7}"
IMO_RX = rb"[Ii][Mm][Oo][ :.\-]{0,3}[0-9]{7}"


def iso6346_ok(token: bytes) -> bool:
    t = token.replace(b" ", b"")
    total = 0
    for i in range(10):
        c = t[i]
        total += (_ISO_LETTER[c] if i < 4 else c - 48) << i
    return (total % 11) % 10 == t[10] - 48


def imo_ok(token: bytes) -> bool:
    d = token[-7:]
    return sum((d[i] - 48) * (7 - i) for i in range(6)) % 10 == d[6] - 48


def _bounded(data: bytes, s: int, e: int) -> bool:
    return (s == 0 or data[s - 1] not in _ALNUM) and (e == len(data) or data[e] not in _ALNUM)


def _tally(data: bytes, spans, check) -> tuple[int, int]:
    cand = valid = 0
    for s, e in spans:
        if _bounded(data, s, e):
            cand += 1
            valid += check(data[s:e])
    return cand, valid


def _value_counts(data, c_spans, i_spans) -> dict:
    cc, cv = _tally(data, c_spans, iso6346_ok)
    ic, iv = _tally(data, i_spans, imo_ok)
    return {"container_candidates": cc, "container_valid": cv, "imo_candidates": ic, "imo_valid": iv}


VALUE_KEYS = {k: k for k in ("container_candidates", "container_valid", "imo_candidates", "imo_valid")}
_CAND = dict(items_key=("container_candidates", "imo_candidates"), item_unit="candidates")


def values_peers() -> list[Peer]:
    note = "same token rules as next_container/next_imo; check digits in Python"

    def re_work(ds):
        data = _buf_bytes(ds)
        c, i = re.compile(CONTAINER_RX), re.compile(IMO_RX)
        return lambda: _value_counts(data, (m.span() for m in c.finditer(data)),
                                     (m.span() for m in i.finditer(data)))
    peers = [Peer("python re + Python check digit", _py_version(), re_work, compare=VALUE_KEYS, note=note, **_CAND)]
    try:
        import re2
        o = re2.Options()
        o.encoding = re2.Options.Encoding.LATIN1

        def re2_work(ds):
            data = _buf_bytes(ds)
            c, i = re2.compile(CONTAINER_RX, options=o), re2.compile(IMO_RX, options=o)
            return lambda: _value_counts(data, ((m.start(), m.end()) for m in c.finditer(data)),
                                         ((m.start(), m.end()) for m in i.finditer(data)))
        peers.append(Peer("google-re2 (LATIN1) + Python check digit", version("google-re2"), re2_work,
                          compare=VALUE_KEYS, note=note, **_CAND))
    except Exception as exc:  # noqa: BLE001
        peers.append(_skip("google-re2 (LATIN1) + Python check digit", "google-re2", exc))
    try:
        import hyperscan

        def hs_work(ds):
            data = _buf_bytes(ds)
            db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            db.compile(expressions=[CONTAINER_RX, IMO_RX], ids=[0, 1], elements=2,
                       flags=[hyperscan.HS_FLAG_SOM_LEFTMOST] * 2)

            def run():
                spans = ([], [])

                def on_match(i, f, t, _fl, _c):
                    spans[i].append((f, t))
                db.scan(data, match_event_handler=on_match)
                return _value_counts(data, spans[0], spans[1])
            return run
        peers.append(Peer("python-hyperscan (SOM) + Python check digit", version("hyperscan"), hs_work,
                          compare=VALUE_KEYS, note=note, **_CAND))
    except Exception as exc:  # noqa: BLE001
        peers.append(_skip("python-hyperscan (SOM) + Python check digit", "hyperscan", exc))
    return peers


# ---------------------------------------------------------------------------------- parsers

def pydifact_peer() -> Peer:
    try:
        from pydifact.parser import Parser
    except Exception as exc:  # noqa: BLE001
        return _skip("pydifact (segment parse)", "pydifact", exc)

    def work(ds):
        vals = ds.values()

        def run():
            segs = errors = 0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                logging.disable(logging.WARNING)
                try:
                    for v in vals:
                        if v.startswith(b"\xef\xbb\xbf"):
                            v = v[3:]
                        try:
                            for s in Parser().parse(v.decode("latin-1")):
                                segs += s.tag != "UNA"
                        except Exception:  # noqa: BLE001 - a peer's parse error is a count
                            errors += 1
                finally:
                    logging.disable(logging.NOTSET)
            return {"segments": segs, "parse_errors": errors}
        return run
    return Peer("pydifact (segment parse)", version("pydifact"), work, compare={"segments": "segments"},
                slow=True, note="segments excluding UNA (a service string advice, not a segment)")


def x12_split_peer() -> Peer:
    def work(ds):
        vals = ds.values()

        def run():
            segs = 0
            for v in vals:
                if v.startswith(b"\xef\xbb\xbf"):
                    v = v[3:]
                term = v[105:106] if v.startswith(b"ISA") and len(v) > 106 else b"~"
                segs += sum(1 for s in v.split(term) if s.strip())
            return {"segments": segs}
        return run
    return Peer("python bytes.split (X12 segments)", _py_version(), work, compare={"segments": "segments"},
                note="segment terminator from the fixed-width ISA")


def json_sensitive_keys() -> frozenset:
    with open(schemas.path("catalog", "json.toml"), "rb") as f:
        doc = tomllib.load(f)
    keys = set()
    for r in doc.get("rule", []) + doc.get("rules", []):
        keys.update(_norm(k) for k in r.get("keys", []))
    return frozenset(keys)


def _norm(name: str) -> str:
    return "".join(c for c in name.lower() if c.isascii() and c.isalnum())


def orjson_peer() -> Peer:
    try:
        import orjson
    except Exception as exc:  # noqa: BLE001
        return _skip("orjson loads + walk", "orjson", exc)
    sens = json_sensitive_keys()

    def work(ds):
        vals = ds.values()
        norm_cache: dict = {}

        def run():
            nodes = hits = 0
            loads = orjson.loads
            for v in vals:
                stack = [(loads(v), False)]
                while stack:
                    x, hot = stack.pop()
                    nodes += 1
                    if isinstance(x, dict):
                        for k, y in x.items():
                            h = norm_cache.get(k)
                            if h is None:
                                h = norm_cache[k] = _norm(k) in sens
                            stack.append((y, h))
                    elif isinstance(x, list):
                        stack.extend((y, hot) for y in x)
                    elif hot and x is not None and x != "":
                        hits += 1
            return {"nodes": nodes, "sensitive_values": hits}
        return run
    return Peer("orjson loads + iterative walk", version("orjson"), work, compare={"nodes": "segments"},
                note="nodes = objects+arrays+scalars (flowaudit n_segments); sensitive_values = "
                     "non-empty values under the catalogue's member names (no recogniser, not comparable "
                     "with hits)")


def xml_sensitive_paths() -> list[tuple[str, str]]:
    """(parent local name or "", element local name) of every catalogue rule."""
    with open(schemas.path("catalog", "xml.toml"), "rb") as f:
        doc = tomllib.load(f)
    ok = re.compile(r"[A-Za-z_][\w.-]*")
    out: list[tuple[str, str]] = []
    for r in doc.get("rule", []) + doc.get("rules", []):
        parents = [p for p in r.get("parents", []) if p != "$"] or [""]
        for e in r.get("elements", []):
            for par in parents:
                if ok.fullmatch(e) and (not par or ok.fullmatch(par)) and (par, e) not in out:
                    out.append((par, e))
    return out


def _hardened_parser(etree):
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_comments=True)


def lxml_xpath_peer() -> Peer:
    try:
        from lxml import etree
    except Exception as exc:  # noqa: BLE001
        return _skip("lxml hardened parse + XPath", "lxml", exc)

    def work(ds):
        vals = ds.values()
        parser = _hardened_parser(etree)
        paths = xml_sensitive_paths()
        anywhere = frozenset(e for p, e in paths if not p)
        under = frozenset((p, e) for p, e in paths if p)
        names = frozenset(e for _p, e in paths)
        # ONE compiled XPath for the leaf elements with text; names and parents checked in Python.
        # (A `|` union of one path per rule is quadratic in libxml2, and one predicate with 72
        # local-name() tests runs at about 2 MB/s: both slower than this.)
        xp = etree.XPath("//*[not(*)][text()]")

        def run():
            values = errors = 0
            for v in vals:
                try:
                    root = etree.fromstring(v, parser)
                except etree.XMLSyntaxError:
                    errors += 1
                    continue
                for el in xp(root):
                    name = el.tag.rpartition("}")[2]
                    if name not in names or not el.text.strip():
                        continue
                    par = el.getparent()
                    if name in anywhere or (par is not None and (par.tag.rpartition("}")[2], name) in under):
                        values += 1
            return {"sensitive_values": values, "parse_errors": errors}
        return run
    return Peer("lxml hardened parse + XPath", version("lxml"), work, slow=True,
                compare={}, note="one compiled XPath (leaf elements with text), catalogue local names and "
                                 "parents checked in Python; sensitive_values = non-empty catalogue leaves (no recogniser, "
                                 "not comparable with hits)")


def lxml_iterparse_peer() -> Peer:
    try:
        from lxml import etree
    except Exception as exc:  # noqa: BLE001
        return _skip("lxml iterparse", "lxml", exc)

    def work(ds):
        vals = ds.values()
        paths = xml_sensitive_paths()
        anywhere = frozenset(e for p, e in paths if not p)
        under = frozenset((p, e) for p, e in paths if p)

        def run():
            elements = values = errors = 0
            for v in vals:
                try:
                    for _ev, el in etree.iterparse(BytesIO(v), events=("end",), resolve_entities=False,
                                                   no_network=True, load_dtd=False, huge_tree=False,
                                                   remove_comments=True, remove_pis=True):
                        elements += 1
                        if el.text and len(el) == 0:
                            name = el.tag.rpartition("}")[2]
                            par = el.getparent()
                            if (name in anywhere or (par is not None and (par.tag.rpartition("}")[2], name) in under)) \
                                    and el.text.strip():
                                values += 1
                        el.clear(keep_tail=True)
                except etree.XMLSyntaxError:
                    errors += 1
            return {"elements": elements, "sensitive_values": values, "parse_errors": errors}
        return run
    return Peer("lxml iterparse (hardened)", version("lxml"), work, compare={"elements": "segments"}, slow=True,
                note="elements counted at their end event and cleared as it goes")


def format_peers(fmt: str, source: str = "synth") -> list[Peer]:
    peers = regex_peers(fmt)
    if source != "synth":
        return peers
    extra = {"edifact": [pydifact_peer], "x12": [x12_split_peer], "json": [orjson_peer],
             "xml": [lxml_xpath_peer, lxml_iterparse_peer]}[fmt]
    return peers + [f() for f in extra]


def external(module: str):
    """``benchmarks.<module>`` and its ``run``/``measure`` function, or (None, reason)."""
    try:
        mod = importlib.import_module(f".{module}", __package__)
    except ModuleNotFoundError as exc:
        if exc.name == f"{__package__}.{module}":
            return None, f"module not available (benchmarks/{module}.py does not exist yet)"
        return None, f"module not available: {type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - a peer module mid-edit must not stop the run
        return None, f"module not available: {type(exc).__name__}: {exc}"
    for name in ("run", "measure"):
        fn = getattr(mod, name, None)
        if callable(fn):
            return fn, ""
    return None, f"module not available: benchmarks/{module}.py has no run()/measure() returning a dict"


__all__ = ["Peer", "PATTERN_SETS", "format_peers", "values_peers", "external", "version"]
