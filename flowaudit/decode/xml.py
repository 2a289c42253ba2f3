"""XML decoder shell: rules from schemas/catalog/xml.toml, kernel kernels/xmlscan.py.

``classify(buf, offsets, sel) -> FormatResult`` per the contract in ``flowaudit.decode``;
like JSON, the result carries ``flags`` (uint8 per selected message, an extra attribute): 8 a
leaf holding an EDIFACT interchange (decoded too, :mod:`flowaudit.decode.embedded`), 16 that
interchange could not be decoded.

The numba scanner is the only parser that sees the bytes: it refuses DOCTYPE/ENTITY
declarations, XInclude and unknown entity references outright (forbidden_xml_construct) and
rejects anything not well-formed.  There is deliberately no lxml fallback: the scanner's
grammar is checked against the hardened lxml parser of reliability.md section 3 in
tests/test_kernels_xml.py, and a permissive second parser would only add attack surface.
"""
from __future__ import annotations

import threading
import tomllib

import numpy as np

from flowaudit import schemas
from flowaudit.decode import FormatResult
from flowaudit.decode.detect import check_batch
from flowaudit.decode.json import compile_rules, run_kernel
from flowaudit.kernels.jsonscan import name_hash
from flowaudit.kernels.xmlscan import xml_scan

_lock = threading.Lock()
_cache: dict = {}


def _hashes(names) -> np.ndarray:
    return np.array([name_hash(n) for n in names], dtype=np.uint64)


def load_rules(path=None) -> dict:
    """Compile xml.toml into the kernel's rule tables (cached per path)."""
    path = str(path or schemas.path("catalog", "xml.toml"))
    with _lock:
        if path in _cache:
            return _cache[path]
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        compiled = compile_doc(doc)
        _cache[path] = compiled
        return compiled


def compile_doc(doc: dict) -> dict:
    """A parsed xml.toml -> the kernel's tables (rules, wrappers, documents)."""
    compiled = compile_rules(doc, "elements")
    mt = doc.get("message_type", {})
    compiled["wrappers"] = _hashes(mt.get("wrappers", []))
    compiled["documents"] = _hashes(mt.get("documents", []))
    return compiled


def classify(buf, offsets, sel, embedded: bool = True, rules: dict | None = None) -> FormatResult:
    """Scan and classify the XML messages ``sel`` of the batch (see ``flowaudit.decode``)."""
    buf, offsets, sel = check_batch(buf, offsets, sel)
    R = rules if rules is not None else load_rules()
    mt = np.full((sel.shape[0], 2), -1, dtype=np.int64)
    out = run_kernel(xml_scan, R, buf, offsets, sel, (R["wrappers"], R["documents"], mt))
    names: dict[bytes, str] = {}
    msg_type = []
    for a, b in mt.tolist():
        if a < 0:
            msg_type.append("")
            continue
        raw = bytes(buf[a:b])
        name = names.get(raw)
        if name is None:
            name = names[raw] = raw.decode("utf-8", "replace")
        msg_type.append(name)
    res = out.result(msg_type)
    if embedded:
        from flowaudit.decode import embedded as emb
        E, ebuf = out.embedded()
        res = emb.merge(res, E, ebuf, sel)
    return res


__all__ = ["classify", "load_rules", "compile_doc"]
