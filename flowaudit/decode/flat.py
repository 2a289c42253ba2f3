"""Flat-file decoder (format ``flat``): ICES 0x1D/0x1C manifests, CSV / TSV / ``;`` / ``|`` with a
header line, and fixed-width tables.

The shell finds the layout of each message (kernels/detect.py ``looks_flat`` chose the format):

* **ICES** (India ICES 1.5 IGM, SACHI): records of 0x1D-separated fields (0x1C taken alike) in
  CRLF lines, grouped by pseudo-tags ``<vesinfo>`` .. ``<END-vesinfo>``; the field names of each
  section are in schemas/catalog/flat.toml ``[ices.<section>]``;
* **delimited**: the delimiter is the one of ``,`` ``;`` TAB ``|`` that the header line holds at
  least twice and the next line repeats; fields may be double-quoted (``""`` inside);
* **fixed width**: the columns start where the header's words start.

Each column is classified by its header name through the catalogue (flat.toml ``[[header]]``,
then json.toml's member names), each cell of such a column through the value recognisers
(kernels/flat.py); every cell that is not of a value-shaped class (and every line outside an
ICES section) is also scanned with the salvage recognisers (kernels/salvage.py), so a phone in a
marks column or an e-mail in an address line is found.  Locations: ``ICES/<section>/<field>``,
``CSV/<header>`` (``TSV``, ``SSV`` for ``;``, ``PSV`` for ``|``), ``FIXED/<header>``, ``FLAT/line``.

Splitting lines and fields uses ``bytes`` methods (C loops); a file with quoted fields is split
by a small Python loop per quoted line.
"""
from __future__ import annotations

import re
import threading
import tomllib

import numpy as np

from flowaudit import schemas
from flowaudit.decode import FormatResult
from flowaudit.decode import salvage as _salvage
from flowaudit.decode.detect import check_batch
from flowaudit.decode.json import DEFAULT_KIND, class_codes
from flowaudit.kernels import jsonscan as K
from flowaudit.kernels.flat import flat_cells

CONF_HEADER = 90          # a column whose header names the class
CHUNK = 1 << 16           # cells per kernel call (out: VAL_ROOM bytes per cell)
_DELIMS = {b",": "CSV", b"\t": "TSV", b";": "SSV", b"|": "PSV"}
_TAG = re.compile(rb"^<(END-)?([A-Za-z]+)>$")
_lock = threading.Lock()
_rules: dict | None = None


def normalise(name: str) -> str:
    """A header name as JSON member names are matched: ASCII lower case, only [a-z0-9] kept."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def rules() -> dict:
    """``{"names": {normalised header: (class code, kind, mode, confidence)}, "ices": {section: [names]}}``."""
    global _rules
    with _lock:
        if _rules is not None:
            return _rules
        codes = class_codes()
        names: dict[str, tuple] = {}
        flat = tomllib.loads(schemas.path("catalog", "flat.toml").read_text(encoding="utf-8"))
        jsn = tomllib.loads(schemas.path("catalog", "json.toml").read_text(encoding="utf-8"))
        for src, conf in ((flat.get("header", []), CONF_HEADER), (jsn.get("rule", []), CONF_HEADER)):
            for rule in src:
                if rule.get("parents"):
                    continue
                cls = rule["class"]
                kind = K.KINDS[rule.get("kind", DEFAULT_KIND.get(cls, "text"))]
                mode = K.MODE_CHECK if rule.get("mode") == "check" else K.MODE_SHAPE
                for k in rule["keys"]:
                    names.setdefault(normalise(k), (codes[cls], kind, mode, int(rule.get("confidence", conf))))
        ices = {sec: list(spec["columns"]) for sec, spec in flat.get("ices", {}).items()}
        _rules = {"names": names, "ices": ices}
        return _rules


# ---------------------------------------------------------------------------- layouts
def _lines(data: bytes, base: int):
    """(start, end) of each line (CR / LF stripped), absolute."""
    pos = 0
    n = len(data)
    while pos < n:
        j = data.find(b"\n", pos)
        if j < 0:
            j = n
        e = j - 1 if j > pos and data[j - 1] == 13 else j
        yield base + pos, base + e
        pos = j + 1


def _split(data: bytes, s: int, e: int, d: int) -> list[tuple[int, int]]:
    """Fields of ``data[s:e]`` split on byte ``d``; double quotes honoured (the cell is the text
    inside the quotes)."""
    line = data[s:e]
    if b'"' not in line:
        out, p = [], 0
        for part in line.split(bytes([d])):
            out.append((s + p, s + p + len(part)))
            p += len(part) + 1
        return out
    out, p, start, q = [], 0, 0, False
    while p < len(line):
        c = line[p]
        if c == 34:
            q = not q
        elif c == d and not q:
            out.append((s + start, s + p))
            start = p + 1
        p += 1
    out.append((s + start, s + len(line)))
    return [(a + 1, b - 1) if b - a >= 2 and data[a] == 34 and data[b - 1] == 34 else (a, b) for a, b in out]


def _count(line: bytes, d: bytes) -> int:
    """``d`` bytes in ``line`` outside double quotes."""
    if b'"' not in line:
        return line.count(d)
    return sum(1 for k, part in enumerate(line.split(b'"')) if k % 2 == 0 for _ in range(part.count(d)))


def layout(data: bytes):
    """``(msg_type, [(loc name | None, header name, field start, field end)])`` of one flat file
    (offsets relative to ``data``); loc None: a line outside any section, scanned whole."""
    names = rules()["ices"]
    cells: list[tuple] = []
    lines = list(_lines(data, 0))
    probe = data[:8192]
    if b"\x1d" in probe or b"\x1c" in probe:
        section = None
        for s, e in lines:
            m = _TAG.match(data[s:e].strip())
            if m:
                section = None if m.group(1) else m.group(2).decode().lower()
                continue
            if section is None or section not in names:
                cells.append((None, "", s, e))
                continue
            cols = names[section]
            line = data[s:e].replace(b"\x1c", b"\x1d")
            p = s
            for k, part in enumerate(line.split(b"\x1d")):
                nm = cols[k] if k < len(cols) and cols[k] else f"f{k + 1}"
                cells.append((f"ICES/{section}/{nm}", nm, p, p + len(part)))
                p += len(part) + 1
        return "ICES", cells
    if not lines:
        return "flat", cells
    hs, he = lines[0]
    head = data[hs:he]
    nxt = data[lines[1][0]:lines[1][1]] if len(lines) > 1 else b""
    best = None
    for d, tag in _DELIMS.items():
        n1 = _count(head, d)
        if n1 >= 2 and _count(nxt, d) == n1 and (best is None or n1 > best[1]):
            best = (d, n1, tag)
    if best is not None:
        d, _, tag = best
        header = [data[a:b].decode("utf-8", "replace").strip() for a, b in _split(data, hs, he, d[0])]
        for s, e in lines[1:]:
            for k, (a, b) in enumerate(_split(data, s, e, d[0])):
                nm = header[k] if k < len(header) and header[k] else f"f{k + 1}"
                cells.append((f"{tag}/{nm}", nm, a, b))
        return tag.lower(), cells
    # fixed width: columns start where the header's words start (words split by 2+ blanks)
    starts = [m.start() for m in re.finditer(rb"(?:^|(?<=  ))\S", head)]
    header = [head[a:b].decode("utf-8", "replace").strip() for a, b in zip(starts, starts[1:] + [len(head)])]
    for s, e in lines[1:]:
        for k, a in enumerate(starts):
            b = starts[k + 1] if k + 1 < len(starts) else e - s
            if s + a < e:
                cells.append((f"FIXED/{header[k]}", header[k], s + a, min(s + b, e)))
    return "fixed", cells


# ---------------------------------------------------------------------------- classify
def classify(buf: np.ndarray, offsets: np.ndarray, sel: np.ndarray) -> FormatResult:
    buf, offsets, sel = check_batch(buf, offsets, sel)
    names = rules()["names"]
    loc_names: list[str] = []
    loc_of: dict[str, int] = {}
    msg_type: list[str] = []
    n_segments = np.zeros(sel.size, np.int32)
    # value cells (column names a class) and scan ranges (everything else that is text)
    v_msg, v_s, v_e, v_cls, v_kind, v_mode, v_conf, v_loc = [], [], [], [], [], [], [], []
    r_msg, r_s, r_e, r_loc = [], [], [], []
    for j, m in enumerate(sel.tolist()):
        base = int(offsets[m])
        data = buf[base:int(offsets[m + 1])].tobytes()
        mtype, cells = layout(data)
        msg_type.append(mtype)
        n_segments[j] = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        for loc, head, a, b in cells:
            if b <= a:
                continue
            name = loc or "FLAT/line"
            li = loc_of.get(name)
            if li is None:
                li = loc_of[name] = len(loc_names)
                loc_names.append(name)
            rule = names.get(normalise(head)) if loc else None
            if rule is not None:
                v_msg.append(m)
                v_s.append(base + a)
                v_e.append(base + b)
                v_cls.append(rule[0])
                v_kind.append(rule[1])
                v_mode.append(rule[2])
                v_conf.append(rule[3])
                v_loc.append(li)
            if rule is None or rule[1] == K.KIND_TEXT:
                r_msg.append(m)
                r_s.append(base + a)
                r_e.append(base + b)
                r_loc.append(li)
    parts = []
    # header-named cells, through the value recognisers
    if v_msg:
        for c0 in range(0, len(v_msg), CHUNK):
            sl = slice(c0, c0 + CHUNK)
            st = np.array(v_s[sl], np.int64)
            en = np.array(v_e[sl], np.int64)
            k = st.size
            out = np.zeros(k * K.VAL_ROOM, np.uint8)
            voff = np.zeros(k, np.int64)
            vlen = np.zeros(k, np.int64)
            valid = np.zeros(k, np.int64)
            used = flat_cells(buf, st, en, np.array(v_kind[sl], np.int64), np.array(v_mode[sl], np.int64),
                              out, voff, vlen, valid)
            if used < 0:
                raise RuntimeError("flat_cells: output arrays too small")
            keep = np.flatnonzero(valid != -2)
            parts.append(dict(msg=np.array(v_msg[sl], np.int64)[keep], cls=np.array(v_cls[sl], np.int16)[keep],
                              loc=np.array(v_loc[sl], np.int32)[keep], valid=valid[keep].astype(np.int8),
                              conf=np.array(v_conf[sl], np.uint8)[keep], start=st[keep], end=en[keep],
                              vals=[out[voff[i]:voff[i] + vlen[i]] for i in keep]))
    # every other text cell: the salvage shapes and labels (a hit's location is its column)
    if r_msg:
        rows, vbuf = _salvage.scan_ranges(buf, np.array(r_s, np.int64), np.array(r_e, np.int64))
        if rows.shape[0]:
            res = _salvage.result_from_rows(rows, vbuf, np.array(r_msg, np.int64))
            loc = np.array(r_loc, np.int32)[rows[:, 0]]
            parts.append(dict(msg=res.hit_msg, cls=res.hit_class, loc=loc, valid=res.hit_valid, conf=res.hit_conf,
                              start=res.hit_start, end=res.hit_end,
                              vals=[res.val_buf[res.val_off[i]:res.val_off[i + 1]] for i in range(res.n_hits)]))
    return _result(parts, sel, msg_type, n_segments, loc_names)


def _result(parts, sel, msg_type, n_segments, loc_names) -> FormatResult:
    cat = lambda key, dt: (np.concatenate([p[key] for p in parts]).astype(dt) if parts  # noqa: E731
                           else np.zeros(0, dt))
    msg = cat("msg", np.int64)
    vals = [v for p in parts for v in p["vals"]]
    val_off = np.zeros(len(vals) + 1, np.int64)
    np.cumsum([len(v) for v in vals], out=val_off[1:])
    val_buf = np.concatenate(vals).astype(np.uint8) if vals else np.zeros(1, np.uint8)
    order = np.argsort(msg, kind="stable")
    cols = {k: cat(k, dt)[order] for k, dt in (("cls", np.int16), ("loc", np.int32), ("valid", np.int8),
                                                ("conf", np.uint8), ("start", np.int64), ("end", np.int64))}
    lens = np.diff(val_off)[order]
    new_off = np.zeros(len(vals) + 1, np.int64)
    np.cumsum(lens, out=new_off[1:])
    if len(vals):
        idx = np.concatenate([np.arange(val_off[i], val_off[i + 1]) for i in order])
        val_buf = np.ascontiguousarray(val_buf[idx.astype(np.int64)]) if idx.size else np.zeros(1, np.uint8)
    return FormatResult(
        status=np.zeros(sel.size, np.int8), msg_type=msg_type, n_segments=n_segments,
        hit_msg=msg[order], hit_class=cols["cls"], hit_loc=cols["loc"], hit_valid=cols["valid"],
        hit_conf=cols["conf"], hit_start=cols["start"], hit_end=cols["end"], val_off=new_off,
        val_buf=val_buf if val_buf.size else np.zeros(1, np.uint8), loc_names=loc_names)
