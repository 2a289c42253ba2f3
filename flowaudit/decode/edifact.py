"""EDIFACT decoder shell: compiles schemas/catalog/edifact.toml and runs kernels/edifact.py.

The rule-compilation and kernel-driving helpers here are shared with :mod:`.x12`.
"""
from __future__ import annotations

import threading
import tomllib
from functools import lru_cache

import numpy as np

from flowaudit import schemas
from flowaudit.kernels import edifact as _k

from . import FLAG_BITS, FormatResult
from ..kernels._jit import read_only

KINDS = {"container": _k.KIND_CONTAINER, "imo": _k.KIND_IMO, "text": _k.KIND_TEXT, "lei": _k.KIND_LEI,
         "usci": _k.KIND_USCI, "eori": _k.KIND_EORI, "email": _k.KIND_EMAIL, "phone": _k.KIND_PHONE,
         "un_number": _k.KIND_UN, "mmsi": _k.KIND_MMSI, "free_text": _k.KIND_FREE_TEXT,
         "code": _k.KIND_CODE, "locode": _k.KIND_LOCODE, "digits": _k.KIND_DIGITS, "number": _k.KIND_NUMBER,
         # 0.1.0 names: free text scanned for one class
         "container_text": _k.KIND_FREE_TEXT, "imo_text": _k.KIND_FREE_TEXT}
MODES = {"shape": _k.MODE_SHAPE, "check": _k.MODE_CHECK}
# free-text classes (rule ``classes = [...]``) -> the kernel's FT_* bit and its code column
FREE_TEXT = {"container_number": (_k.FT_CONTAINER, 0), "imo_number": (_k.FT_IMO, 1), "lei": (_k.FT_LEI, 2),
             "cn_usci": (_k.FT_USCI, 3), "email": (_k.FT_EMAIL, 4)}
# default (min_len, max_len) per kind
LENGTHS = {_k.KIND_TEXT: (1, 70), _k.KIND_CODE: (1, 35), _k.KIND_DIGITS: (1, 10)}
# segments with envelope logic in the kernel (message type, charset, envelope integrity)
SPECIAL = {"edifact": {"UNB": _k.SP_UNB, "UNH": _k.SP_UNH, "UNZ": _k.SP_UNZ, "UNG": _k.SP_UNG, "UNE": _k.SP_UNE,
                       "UNT": _k.SP_UNT},
           "x12": {"ST": _k.SP_ST, "ISA": _k.SP_ISA, "IEA": _k.SP_IEA, "GS": _k.SP_GS, "GE": _k.SP_GE,
                   "SE": _k.SP_SE}}
# the kernel's envelope flag bits (F_MSG_COUNT, F_MSG_REF, F_GRP_COUNT, F_GRP_REF, F_ICH_COUNT,
# F_ICH_REF, F_NESTING, F_NO_INTERCHANGE) -> flowaudit.decode.FLAGS, per format
_ENV_FLAGS = {
    "edifact": ("unt_count_mismatch", "unt_ref_mismatch", "une_count_mismatch", "une_ref_mismatch",
                "unz_count_mismatch", "unz_ref_mismatch", "envelope_nesting", "no_interchange_header"),
    "x12": ("se_count_mismatch", "se_ref_mismatch", "ge_count_mismatch", "ge_ref_mismatch",
            "iea_count_mismatch", "iea_ref_mismatch", "envelope_nesting", "no_interchange_header"),
}


def envelope_flags(kmask: np.ndarray, fmt: str) -> np.ndarray:
    """Kernel envelope flag bits -> :data:`flowaudit.decode.FLAGS` bits (uint32)."""
    kmask = np.asarray(kmask, np.int64)
    out = np.zeros(kmask.shape[0], np.uint32)
    for k, name in enumerate(_ENV_FLAGS[fmt]):
        out[(kmask >> k & 1).astype(bool)] |= np.uint32(FLAG_BITS[name])
    return out


def pack(value: bytes) -> int:
    """A qualifier value as the kernel compares it (byte k at bits 8k)."""
    return int.from_bytes(value, "little")


def tag_index(tag: bytes) -> int:
    def ch(c):
        if 65 <= c <= 90:
            return c - 64
        if 48 <= c <= 57:
            return c - 21
        raise ValueError(tag)
    cs = [ch(c) for c in tag] + [0] * (3 - len(tag))
    return (cs[0] * _k.TAG_BASE + cs[1]) * _k.TAG_BASE + cs[2]


class RuleError(ValueError):
    """A rule file is malformed (raised at load time, never on message input)."""


@lru_cache(maxsize=None)
def class_codes() -> dict:
    with open(schemas.path("catalog", "classes.toml"), "rb") as f:
        doc = tomllib.load(f)
    return {name: int(c["code"]) for name, c in doc["classes"].items()}


MAX_DISPATCH = 1 << 22   # candidate-list entries of one catalogue (edifact.toml NAD: 22 lists of <= 28 rules)


def _resolved(tab: np.ndarray, r: int, qq: int) -> bool:
    """Is qualifier ``qq`` of rule ``r`` a test of the token at element 1, component 1 (the
    segment's own qualifier: NAD+CN, RFF+BM, N1*SH ...)?  Those are decided by the dispatch."""
    base = _k.R_Q + qq * _k.Q_STRIDE
    return bool(tab[r, base + 3]) and tab[r, base] == 1 and tab[r, base + 1] == 1


def _dispatch(tab: np.ndarray, tagtab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on tag and qualifier before any rule loop.

    Most rules test the token at element 1, component 1 (NAD+CN, RFF+BM, N1*SH ...), plainly or
    negated ("any other role").  Per tag, every value any such test names gets its own list of
    candidate rules (``clist[start:start + n]``, rule order), with those tests already decided;
    ``dkey`` rows are ``(packed value, start, n)``, ``tagtab[tag, T_K0:T_K0 + T_KN]``.  Every
    other value (and a missing, empty or longer-than-8-byte token) takes the tag's default list
    (``tagtab[tag, T_L0]``, ``T_LN``).  A segment thus evaluates only the rules that can apply to
    it, and never re-tests its own qualifier (rule column ``R_QRES``: qualifiers decided here)."""
    clist: list[int] = []
    keys: list[tuple[int, int, int]] = []
    for ti in np.flatnonzero(tagtab[:, _k.T_RN]):
        r0, rn = int(tagtab[ti, _k.T_R0]), int(tagtab[ti, _k.T_RN])
        values: set[int] = set()
        for r in range(r0, r0 + rn):
            for qq in range(_k.MAX_QUALS):
                if _resolved(tab, r, qq):
                    tab[r, _k.R_QRES] |= 1 << qq
                    base = _k.R_Q + qq * _k.Q_STRIDE
                    values.update(int(v) for v in tab[r, base + 4:base + 4 + tab[r, base + 3]])

        def candidates(v):
            out = []
            for r in range(r0, r0 + rn):
                ok = True
                for qq in range(_k.MAX_QUALS):
                    if _resolved(tab, r, qq):
                        base = _k.R_Q + qq * _k.Q_STRIDE
                        found = v is not None and v in tab[r, base + 4:base + 4 + tab[r, base + 3]].tolist()
                        ok = ok and found != bool(tab[r, base + 2])
                if ok:
                    out.append(r)
            return out

        default = candidates(None)
        tagtab[ti, _k.T_L0] = len(clist)
        tagtab[ti, _k.T_LN] = len(default)
        clist += default
        tagtab[ti, _k.T_K0] = len(keys)
        for v in sorted(values):
            c = candidates(v)
            keys.append((v, len(clist), len(c)))
            clist += c
            if len(clist) > MAX_DISPATCH:
                raise RuleError(f"qualifier dispatch lists over {MAX_DISPATCH} entries (too many rules x values per tag)")
        tagtab[ti, _k.T_KN] = len(keys) - tagtab[ti, _k.T_K0]
    return np.asarray(clist + [0], np.int64), np.asarray(keys + [(0, 0, 0)], np.int64).reshape(-1, 3)


def compile_rules(doc: dict) -> dict:
    """Rule file (parsed TOML) -> numpy arrays for the kernels.

    Rows are sorted by segment tag (stable: file order within a tag) and indexed by the tag
    table ``tagtab[tag_index] = (first row, row count, special, ...)``; see :func:`_dispatch` for
    the candidate lists.
    """
    codes = class_codes()
    rules = doc.get("rules", [])
    fmt = doc.get("format", "edifact")
    order = sorted(range(len(rules)), key=lambda r: rules[r]["segment"])
    tab = np.zeros((len(rules), _k.R_NCOLS), np.int64)
    loc_names: list[str] = []
    for r in rules:  # location names in file order (stable indices)
        if r["loc"] not in loc_names:
            loc_names.append(r["loc"])
    tagtab = np.zeros((_k.TAGTAB_SIZE, _k.T_NCOLS), np.int32)
    for row, r in enumerate(order):
        rule = rules[r]
        try:
            tag = rule["segment"].encode("ascii")
            ti = tag_index(tag)
        except (UnicodeEncodeError, ValueError):
            raise RuleError(f"rule {r}: segment tag {rule['segment']!r}") from None
        if not 2 <= len(tag) <= 3:
            raise RuleError(f"rule {r}: segment tag {rule['segment']!r}")
        for i, c in enumerate(tag):
            tab[row, _k.R_TAG0 + i] = c
        tab[row, _k.R_TAGLEN] = len(tag)
        if tagtab[ti, 1] == 0:
            tagtab[ti, 0] = row
        tagtab[ti, 1] += 1
        quals = rule.get("qualifier")
        quals = [] if not quals else ([quals] if isinstance(quals, dict) else list(quals))
        if len(quals) > _k.MAX_QUALS:
            raise RuleError(f"rule {r}: at most {_k.MAX_QUALS} qualifiers")
        for qi, q in enumerate(quals):
            vals = [v.encode("ascii") for v in q["values"]]
            if not 1 <= len(vals) <= _k.MAX_QVALS or any(not 1 <= len(v) <= _k.MAX_QLEN for v in vals):
                raise RuleError(f"rule {r}: qualifier values {q['values']!r}")
            base = _k.R_Q + qi * _k.Q_STRIDE
            tab[row, base] = int(q["element"])
            tab[row, base + 1] = int(q.get("component", 1))
            tab[row, base + 2] = 1 if q.get("negate", False) else 0
            tab[row, base + 3] = len(vals)
            for v, b in enumerate(vals):
                tab[row, base + 4 + v] = pack(b)
        if rule["kind"] not in KINDS:
            raise RuleError(f"rule {r}: unknown kind {rule['kind']!r}")
        kind = KINDS[rule["kind"]]
        tab[row, _k.R_KIND] = kind
        if kind == _k.KIND_FREE_TEXT:
            if rule["kind"] == "container_text":
                classes = ["container_number"]
            elif rule["kind"] == "imo_text":
                classes = ["imo_number"]
            else:
                classes = rule.get("classes", [])
            if not classes or any(c not in FREE_TEXT for c in classes):
                raise RuleError(f"rule {r}: free-text classes {classes!r} (one of {sorted(FREE_TEXT)})")
            mask = 0
            for c in classes:
                bit, col = FREE_TEXT[c]
                mask |= bit
                tab[row, _k.R_FTCLS + col] = codes[c]
            tab[row, _k.R_FTMASK] = mask
            tab[row, _k.R_CLASS] = codes[classes[0]]
        else:
            if rule.get("class") not in codes:
                raise RuleError(f"rule {r}: unknown class {rule.get('class')!r}")
            tab[row, _k.R_CLASS] = codes[rule["class"]]
        tab[row, _k.R_MODE] = MODES[rule.get("mode", "shape")]
        tab[row, _k.R_CONF] = int(rule.get("confidence", 100))
        tab[row, _k.R_SHORT] = 1 if rule.get("no_check_digit", False) else 0
        lo, hi = LENGTHS.get(kind, (1, 64))
        lo, hi = int(rule.get("min_len", lo)), int(rule.get("max_len", hi))
        if not 1 <= lo <= hi <= 512:
            raise RuleError(f"rule {r}: min_len/max_len {lo}/{hi}")
        tab[row, _k.R_MINLEN] = lo
        tab[row, _k.R_MAXLEN] = hi
        tab[row, _k.R_ROOM] = max(_k.VAL_ROOM, 2 * hi + 8) if kind == _k.KIND_TEXT else _k.VAL_ROOM
        parts = rule["value"]
        if not 1 <= len(parts) <= _k.MAX_PARTS or (kind == _k.KIND_FREE_TEXT and len(parts) != 1):
            raise RuleError(f"rule {r}: value positions {parts!r}")
        tab[row, _k.R_NPARTS] = len(parts)
        for i, (el, co) in enumerate(parts):
            if el < 0 or co < 0 or (co == 0 and kind in (_k.KIND_CONTAINER, _k.KIND_IMO)):
                raise RuleError(f"rule {r}: value position {[el, co]!r}")
            tab[row, _k.R_PARTS + 2 * i] = el
            tab[row, _k.R_PARTS + 2 * i + 1] = co
        tab[row, _k.R_LOC] = loc_names.index(rule["loc"])
    for tag, sp in SPECIAL.get(fmt, {}).items():
        tagtab[tag_index(tag.encode()), 2] = sp
    clist, dkey = _dispatch(tab, tagtab)
    limits = doc.get("limits", {})
    return {
        "version": doc["version"], "format": fmt,
        "rules": tab, "tagtab": tagtab, "clist": clist, "dkey": dkey, "loc_names": loc_names,
        "max_seg": int(limits.get("max_segment_bytes", _k.MAX_SEGMENT_BYTES)),
        "max_tok": int(limits.get("max_segment_tokens", _k.MAX_SEGMENT_TOKENS)),
    }


@lru_cache(maxsize=None)
def load_rules(name: str) -> dict:
    """Compiled rules of ``schemas/catalog/<name>`` (cached per process)."""
    with open(schemas.path("catalog", name), "rb") as f:
        return compile_rules(tomllib.load(f))


_OUT = threading.local()


def _scratch_outputs(m: int, need_hits: int, need_vals: int):
    """Per-thread hit table and value buffer, reused across batches (grown, never shrunk, and
    at most 2x what a batch needed): touching fresh pages costs more than classifying them."""
    hits = getattr(_OUT, "hits", None)
    vbuf = getattr(_OUT, "vbuf", None)
    want_h = max(4096, 4 * m, need_hits + 1)
    want_v = max(want_h * _k.VAL_ROOM, need_vals + _k.VAL_ROOM)
    if hits is None or hits.shape[1] < want_h:
        hits = _OUT.hits = np.empty((_k.H_NCOLS, max(want_h, 2 * (0 if hits is None else hits.shape[1]))), np.int64)
    if vbuf is None or vbuf.shape[0] < want_v:
        vbuf = _OUT.vbuf = np.empty(max(want_v, 2 * (0 if vbuf is None else vbuf.shape[0])), np.uint8)
    return hits, vbuf


def run_classify(env_fn, buf, offsets, sel, compiled) -> FormatResult:
    """Envelopes, then the classify kernel; retry once with exact capacities if its outputs
    overflowed.  ``env_fn(buf, offsets, sel)`` is the format's envelope kernel."""
    buf = read_only(np.ascontiguousarray(buf, dtype=np.uint8))
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    sel = np.ascontiguousarray(sel, dtype=np.int64)
    env = env_fn(buf, offsets, sel)
    m = len(sel)
    mout = np.zeros((m, _k.M_NCOLS), np.int64)
    ctr = np.zeros(4, np.int64)
    for _ in range(3):
        hits, vbuf = _scratch_outputs(m, int(ctr[_k.C_HITS]), int(ctr[_k.C_VALS]))
        ctr[:] = 0
        _k.classify_batch(buf, env, sel, compiled["rules"], compiled["tagtab"], compiled["clist"], compiled["dkey"],
                          compiled["max_seg"], compiled["max_tok"], mout, hits, vbuf, ctr)
        if ctr[_k.C_HITS] <= ctr[_k.C_HW]:
            break
    else:  # pragma: no cover - the second run has exact upper bounds
        raise RuntimeError("classify kernel overflowed twice")
    nh = int(ctr[_k.C_HW])
    nv = int(ctr[_k.C_VW])
    h = hits[:, :nh]                    # one contiguous row per field
    val_off = np.zeros(nh + 1, np.int64)
    val_off[1:] = h[_k.H_VEND]
    return FormatResult(
        status=mout[:, _k.M_STATUS].astype(np.int8), msg_type=message_types(buf, mout[:, _k.M_TS], mout[:, _k.M_TE]),
        n_segments=mout[:, _k.M_NSEG].astype(np.int32),
        hit_msg=h[_k.H_MSG].copy(), hit_class=h[_k.H_CLASS].astype(np.int16),
        hit_loc=h[_k.H_LOC].astype(np.int32), hit_valid=h[_k.H_VALID].astype(np.int8),
        hit_conf=h[_k.H_CONF].astype(np.uint8),
        hit_start=h[_k.H_START].copy(), hit_end=h[_k.H_END].copy(), hit_sub=h[_k.H_SUB].astype(np.int32),
        val_off=val_off, val_buf=vbuf[:nv].copy(),
        loc_names=list(compiled["loc_names"]),
        flags=envelope_flags(mout[:, _k.M_FLAGS], compiled["format"]), ikey=mout[:, _k.M_IKEY].view(np.uint64).copy())


def message_types(buf: np.ndarray, ts: np.ndarray, te: np.ndarray) -> list:
    """``buf[ts[j]:te[j]]`` as Latin-1 text per message ("" where ``ts[j] < 0``), decoding each
    distinct type once: types of up to 7 bytes are packed with their length into one int64 key
    each (a batch has a handful of types; a Python slice per message cost a fifth of the EDIFACT
    decoder's time)."""
    n = ts.shape[0]
    ln = np.where(ts >= 0, te - ts, 0)
    short = (ln >= 0) & (ln <= 7)
    key = np.zeros(n, np.int64)
    for k in range(7):
        take = short & (ln > k)
        key[take] |= buf[ts[take] + k].astype(np.int64) << (8 * k + 4)
    key |= np.where(short, ln, 0)               # the length in the low 4 bits ("A" != "A\0")
    key[~short] = -1                            # longer ones: decoded one by one below
    uniq, inv = np.unique(key, return_inverse=True)
    inv = inv.reshape(-1)
    first = np.zeros(uniq.shape[0], np.int64)
    first[inv] = np.arange(n)                   # a message of each distinct key (any one)
    names = [bytes(buf[ts[j]:te[j]]).decode("latin-1") if short[j] and ln[j] > 0 else "" for j in first.tolist()]
    out = [names[i] for i in inv.tolist()]
    for j in np.flatnonzero(~short).tolist():
        out[j] = bytes(buf[ts[j]:te[j]]).decode("latin-1")
    return out


# each message is classified on its own against a fixed location table: the pipeline may classify
# pieces of a selection side by side (pipeline.Classifier._pieces)
PIECEWISE = True


def classify_with(buf: np.ndarray, offsets: np.ndarray, sel: np.ndarray, compiled: dict) -> FormatResult:
    """Classify with an explicitly compiled rule set (tests, operators' own catalogues)."""
    return run_classify(_k.edifact_envelopes, buf, offsets, sel, compiled)


def classify(buf: np.ndarray, offsets: np.ndarray, sel: np.ndarray) -> FormatResult:
    """Classify the EDIFACT messages ``sel`` of the batch (see :mod:`flowaudit.decode`)."""
    return classify_with(buf, offsets, sel, load_rules("edifact.toml"))


def tokenize(buf: np.ndarray, offsets: np.ndarray, sel: np.ndarray):
    """Token table of the EDIFACT messages ``sel`` (see :func:`kernels.edifact.tokenize`)."""
    c = load_rules("edifact.toml")
    return _k.tokenize(np.ascontiguousarray(buf, dtype=np.uint8), np.ascontiguousarray(offsets, dtype=np.int64),
                       np.ascontiguousarray(sel, dtype=np.int64), c["max_seg"], c["max_tok"])
