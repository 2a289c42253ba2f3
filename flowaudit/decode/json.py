"""JSON decoder shell: rules from schemas/catalog/json.toml, kernel kernels/jsonscan.py.

``classify(buf, offsets, sel) -> FormatResult`` per the contract in ``flowaudit.decode``.

Besides the contract fields the result carries ``flags`` (uint8 per selected message, an extra
attribute, not part of the FormatResult contract): 1 duplicate member names, 2 an integer beyond
2**53 (kept as text), 4 a number that underflows to 0.0, 8 a string value holding an EDIFACT or
X12 interchange or a base64 / compressed document (decoded too, see
:mod:`flowaudit.decode.embedded`), 16 that embedded value could not be decoded (refused, or its
layer a bomb or corrupt: the message itself stays decoded).

The rule compiler here is shared with :mod:`flowaudit.decode.xml` (same rule model: names,
parents, typed siblings, free text).
"""
from __future__ import annotations

import threading
import tomllib

import numpy as np

from flowaudit import schemas
from flowaudit.decode import FormatResult
from flowaudit.decode.detect import check_batch
from flowaudit.kernels._jit import read_only
from flowaudit.kernels import jsonscan as K
from flowaudit.kernels.jsonscan import PATH_CAP, json_scan, name_hash

_lock = threading.Lock()
_cache: dict = {}

FLAG_EMBEDDED_BAD = 16

# value kind per class when a rule does not name one
DEFAULT_KIND = {"container_number": "container", "imo_number": "imo", "email": "email",
                "phone": "phone", "lei": "lei", "cn_usci": "usci", "eori": "eori",
                "un_number": "un_number", "mmsi": "mmsi"}


class RuleError(ValueError):
    """A rule file is malformed (raised at load time, never on message input)."""


def class_codes() -> dict[str, int]:
    with open(schemas.path("catalog", "classes.toml"), "rb") as f:
        cat = tomllib.load(f)
    return {name: int(c["code"]) for name, c in cat["classes"].items()}


def _kind(rule: dict, cls: str) -> int:
    k = rule.get("kind", DEFAULT_KIND.get(cls, "text"))
    if k not in K.KINDS:
        raise RuleError(f"unknown kind {k!r}")
    return K.KINDS[k]


def _mode(rule: dict) -> int:
    m = rule.get("mode", "shape")
    if m not in ("shape", "check"):
        raise RuleError(f"unknown mode {m!r}")
    return K.MODE_CHECK if m == "check" else K.MODE_SHAPE


def compile_rules(doc: dict, key_field: str, parent_field: str = "parents") -> dict:
    """Rule file (parsed TOML) -> the kernels' tables.  ``key_field``: ``keys`` (JSON) or
    ``elements`` (XML)."""
    codes = class_codes()
    rows: list[tuple] = []      # (key hash, parent hash, class, conf, kind, mode, num, group, level)

    def code(name):
        if name not in codes:
            raise RuleError(f"unknown class {name!r}")
        return codes[name]

    for rule in doc.get("rule", []):
        cls = rule["class"]
        parents = [name_hash(p) for p in rule.get(parent_field, [])] or [0]
        for k in rule[key_field]:
            for p in parents:
                rows.append((name_hash(k), p, code(cls), int(rule.get("confidence", 100)), _kind(rule, cls),
                             _mode(rule), 1 if rule.get("numbers", False) else 0, -1, 0))
    th, ti = [], []
    for g, t in enumerate(doc.get("typed", [])):
        parents = [name_hash(p) for p in t.get(parent_field, [])] or [0]
        level = int(t.get("level", 0))
        if level < 0 or level > 4:
            raise RuleError(f"typed rule level {level}")
        for k in t[key_field]:
            for p in parents:
                rows.append((name_hash(k), p, 0, int(t.get("confidence", 100)), K.KIND_TEXT, 0, 0, g, level))
        rows.append((name_hash(t["type_key"]), 0, 0, 0, K.KIND_TYPEKEY, 0, 0, g, 0))
        for tv in t["types"]:
            val = tv["value"]
            hv = int(K.TV_NONE) if val == "" else int(K.TV_ANY) if val == "*" else name_hash(val)
            if hv in (0, 1) and val not in ("", "*"):
                raise RuleError(f"type value {val!r} hashes to a reserved value")
            cls = tv["class"]
            th.append(hv)
            ti.append((g, code(cls), int(tv.get("confidence", t.get("confidence", 100))), _kind(tv, cls), _mode(tv)))
    ft = doc.get("free_text", {})
    for k in ft.get(key_field, []):
        rows.append((name_hash(k), 0, 0, int(ft.get("confidence", 80)), K.KIND_FREE, 0, 0, -1, 0))
    # chain rows with the same name: parent-specific rules first (grouped by parent), then
    # the generic ones, each group in file order
    order = sorted(range(len(rows)), key=lambda r: (rows[r][0], rows[r][1] == 0, rows[r][1], r))
    rows = [rows[r] for r in order]
    n = len(rows)
    RH = np.zeros((max(n, 1), 2), np.uint64)
    RI = np.full((max(n, 1), K.RI_N), -1, np.int64)
    first: dict[int, int] = {}
    for r, (kh, ph, cls, conf, kind, mode, num, g, level) in enumerate(rows):
        RH[r] = (kh, ph)
        RI[r, K.RI_CLASS], RI[r, K.RI_CONF], RI[r, K.RI_KIND] = cls, conf, kind
        RI[r, K.RI_MODE], RI[r, K.RI_NUM], RI[r, K.RI_GROUP], RI[r, K.RI_LEVEL] = mode, num, g, level
        RI[r, K.RI_NEXT] = r + 1 if r + 1 < n and rows[r + 1][0] == kh else -1
        RI[r, K.RI_NEXTP] = r + 1 if r + 1 < n and rows[r + 1][:2] == (kh, ph) else -1
        first.setdefault(kh, r)
    size = 16
    while size < 4 * max(len(first), 1):
        size *= 2
    rtab = np.zeros(size, np.int64)
    for kh, r in first.items():
        slot = kh & (size - 1)
        while rtab[slot]:
            slot = (slot + 1) & (size - 1)
        rtab[slot] = r + 1
    if n == 0:
        RH = RH[:0]
        RI = RI[:0]
    P = np.zeros(K.P_N, np.int64)
    P[K.P_FT_CONF] = int(ft.get("confidence", 80))
    P[K.P_C_CONT], P[K.P_C_IMO] = codes["container_number"], codes["imo_number"]
    P[K.P_C_EMAIL], P[K.P_C_LEI], P[K.P_C_USCI] = codes["email"], codes["lei"], codes["cn_usci"]
    return dict(
        version=doc["version"], RH=RH, RI=RI, rtab=rtab,
        TH=np.array(th, np.uint64), TI=np.array(ti, np.int64).reshape(-1, K.TI_N),
        veto=np.array([name_hash(w) for w in ft.get("veto_words", [])], np.uint64), P=P)


def load_rules(path=None) -> dict:
    """Compile json.toml into the kernel's rule tables (cached per path)."""
    path = str(path or schemas.path("catalog", "json.toml"))
    with _lock:
        if path in _cache:
            return _cache[path]
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        compiled = compile_rules(doc, "keys")
        _cache[path] = compiled
        return compiled


class Outputs:
    """Pre-allocated kernel outputs for one batch (hits, values, locations, embedded strings)."""

    def __init__(self, k: int, cap_hits: int, cap_locs: int, cap_emb: int):
        self.st = np.zeros((k, 3), dtype=np.int32)
        # written by the kernel before they are read (rows < ctr[C_NH], bytes < ctr[C_VCUR])
        self.H = np.empty((cap_hits, K.H_N), dtype=np.int64)
        self.vbuf = np.empty(cap_hits * 24 + 4 * K.VAL_ROOM, dtype=np.uint8)
        self.loc_hash = np.zeros(cap_locs, dtype=np.uint64)
        self.loc_off = np.zeros(cap_locs + 1, dtype=np.int64)
        self.loc_buf = np.zeros(cap_locs * 64 + PATH_CAP + 8, dtype=np.uint8)
        tsize = 1
        while tsize < 2 * cap_locs:
            tsize *= 2
        self.loc_table = np.zeros(tsize, dtype=np.int64)
        self.E = np.zeros((16, K.E_N), dtype=np.int64)
        self.ebuf = np.zeros(cap_emb, dtype=np.uint8)
        self.ctr = np.zeros(K.C_N, dtype=np.int64)

    def result(self, msg_type: list) -> FormatResult:
        nh = int(self.ctr[K.C_NH])
        nloc = int(self.ctr[K.C_NLOC])
        msg, cls, loc, valid, conf, start, end, val_off, val_buf = K.split_hits(self.H, nh, self.vbuf[:int(self.ctr[K.C_VCUR])])
        loc_names = [bytes(self.loc_buf[self.loc_off[i]:self.loc_off[i + 1]]).decode("utf-8", "replace")
                     for i in range(nloc)]
        res = FormatResult(
            status=self.st[:, 0].astype(np.int8), msg_type=msg_type, n_segments=self.st[:, 1].copy(),
            hit_msg=msg, hit_class=cls, hit_loc=loc, hit_valid=valid, hit_conf=conf, hit_start=start,
            hit_end=end, val_off=val_off, val_buf=val_buf, loc_names=loc_names)
        res.flags = self.st[:, 2].astype(np.uint8)
        return res

    def embedded(self):
        """(E rows, ebuf) of the string values marked as candidate interchanges / layers."""
        ne = int(self.ctr[K.C_NE])
        return self.E[:ne], self.ebuf[:int(self.ctr[K.C_ECUR])]


def initial_caps(buf, offsets, sel) -> tuple[int, int, int, int]:
    """(hit capacity, location capacity, largest selected message length, embedded bytes)."""
    if sel.shape[0] == 0:
        return 16, 64, 0, 16
    lens = offsets[sel + 1] - offsets[sel]
    total = int(lens.sum())
    return 256 + total // 64, 1024, int(lens.max()), 4096 + total // 16


def run_kernel(scan, R, buf, offsets, sel, extra_out=None):
    """Run ``scan`` (json_scan / xml_scan) with growing outputs until nothing overflows."""
    buf, offsets, sel = read_only(buf), read_only(offsets), read_only(sel)
    k = sel.shape[0]
    cap_hits, cap_locs, maxlen, cap_emb = initial_caps(buf, offsets, sel)
    scratch = np.zeros(maxlen + 16, dtype=np.uint8)
    kstack = np.zeros(min(maxlen // 4 + 16, 1 << 20), dtype=np.uint64)
    cap_e = 16
    while True:
        out = Outputs(k, cap_hits, cap_locs, cap_emb)
        out.E = np.zeros((cap_e, K.E_N), dtype=np.int64)
        ovf = scan(buf, offsets, sel, R["RH"], R["RI"], R["rtab"], R["TH"], R["TI"], R["veto"], R["P"],
                   out.st, out.H, out.vbuf, out.loc_hash, out.loc_off, out.loc_buf, out.loc_table,
                   out.E, out.ebuf, out.ctr, scratch, kstack, *(extra_out or ()))
        if ovf == 1:
            cap_hits *= 4
        elif ovf == 2:
            cap_locs *= 4
        elif ovf == 3:
            cap_e *= 4
            cap_emb = cap_emb * 4 + maxlen
        else:
            return out


def classify(buf, offsets, sel, embedded: bool = True, rules: dict | None = None) -> FormatResult:
    """Scan and classify the JSON messages ``sel`` of the batch (see ``flowaudit.decode``).

    ``embedded``: also decode the interchanges and layers held in string values
    (:mod:`flowaudit.decode.embedded`); ``rules``: compiled
    rules (``compile_rules``) instead of schemas/catalog/json.toml (tests, alternative catalogues)."""
    buf, offsets, sel = check_batch(buf, offsets, sel)
    R = rules if rules is not None else load_rules()
    out = run_kernel(json_scan, R, buf, offsets, sel)
    msg_type = ["json" if s == 0 else "" for s in out.st[:, 0].tolist()]
    res = out.result(msg_type)
    if embedded:
        from flowaudit.decode import embedded as emb
        E, ebuf = out.embedded()
        res = emb.merge(res, E, ebuf, sel, "json-field")
    return res


__all__ = ["classify", "load_rules", "class_codes", "compile_rules", "run_kernel", "Outputs"]
