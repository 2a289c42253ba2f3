"""XML decoder shell: rules from schemas/catalog/xml.toml, kernel kernels/xmlscan.py.

``classify(buf, offsets, sel) -> FormatResult`` per the contract in ``flowaudit.decode``.

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
from flowaudit.decode.json import Outputs, class_codes, initial_caps
from flowaudit.kernels.jsonscan import name_hash
from flowaudit.kernels.xmlscan import xml_scan

_lock = threading.Lock()
_cache: dict = {}


def _hashes(names) -> np.ndarray:
    return np.array([name_hash(n) for n in names], dtype=np.uint64)


def load_rules(path=None) -> dict:
    """Compile xml.toml into the kernel's rule arrays (cached per path)."""
    path = str(path or schemas.path("catalog", "xml.toml"))
    with _lock:
        if path in _cache:
            return _cache[path]
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        codes = class_codes()
        elems, parents, classes, confs, modes = [], [], [], [], []
        type_elem, type_val = 0, 0
        for rule in doc.get("rule", []):
            mode = {"value": 0, "imo_if_typed": 1}[rule.get("mode", "value")]
            if mode == 1:
                # the kernel supports one type element and one IMO code (WCO: IdentificationTypeCode 10)
                type_elem = name_hash(rule["type_element"])
                type_val = name_hash(rule["type_values"][0])
            for el in rule["elements"]:
                for p in rule.get("parents", []) or [""]:
                    elems.append(name_hash(el))
                    parents.append(name_hash(p) if p else 0)
                    classes.append(codes[rule["class"]])
                    confs.append(int(rule.get("confidence", 100)))
                    modes.append(mode)
        ft = doc.get("free_text", {})
        mt = doc.get("message_type", {})
        compiled = dict(
            version=doc["version"],
            r_elem=np.array(elems, dtype=np.uint64), r_parent=np.array(parents, dtype=np.uint64),
            r_class=np.array(classes, dtype=np.int16), r_conf=np.array(confs, dtype=np.uint8),
            r_mode=np.array(modes, dtype=np.int8),
            ft_elems=_hashes(ft.get("elements", [])), ft_conf=np.uint8(ft.get("confidence", 80)),
            c_cont=np.int16(codes["container_number"]), c_imo=np.int16(codes["imo_number"]),
            type_elem=np.uint64(type_elem), type_imo=np.uint64(type_val),
            wrappers=_hashes(mt.get("wrappers", [])), documents=_hashes(mt.get("documents", [])),
        )
        _cache[path] = compiled
        return compiled


def classify(buf, offsets, sel) -> FormatResult:
    """Scan and classify the XML messages ``sel`` of the batch (see ``flowaudit.decode``)."""
    buf, offsets, sel = check_batch(buf, offsets, sel)
    R = load_rules()
    k = sel.shape[0]
    cap_hits, cap_locs, maxlen = initial_caps(buf, offsets, sel)
    scratch = np.zeros(maxlen + 16, dtype=np.uint8)
    mt_start = np.full(k, -1, dtype=np.int64)
    mt_end = np.full(k, -1, dtype=np.int64)
    while True:
        out = Outputs(k, cap_hits, cap_locs)
        nh, nloc, ovf = xml_scan(
            buf, offsets, sel,
            R["r_elem"], R["r_parent"], R["r_class"], R["r_conf"], R["r_mode"],
            R["ft_elems"], R["ft_conf"], R["c_cont"], R["c_imo"], R["type_elem"], R["type_imo"],
            R["wrappers"], R["documents"],
            out.status, out.n_seg, mt_start, mt_end,
            out.hit_msg, out.hit_class, out.hit_loc, out.hit_valid, out.hit_conf,
            out.hit_start, out.hit_end, out.hit_keep, out.hit_pend, out.val_buf,
            out.loc_hash, out.loc_off, out.loc_buf, out.loc_table, scratch)
        if ovf == 1:
            cap_hits *= 4
        elif ovf == 2:
            cap_locs *= 4
        else:
            break
    names: dict[bytes, str] = {}
    msg_type = []
    for a, b in zip(mt_start.tolist(), mt_end.tolist()):
        if a < 0:
            msg_type.append("")
            continue
        raw = bytes(buf[a:b])
        name = names.get(raw)
        if name is None:
            name = names[raw] = raw.decode("utf-8", "replace")
        msg_type.append(name)
    return out.result(int(nh), int(nloc), msg_type, int(R["c_cont"]))


__all__ = ["classify", "load_rules"]
