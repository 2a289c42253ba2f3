"""EDIFACT decoder shell: compiles schemas/catalog/edifact.toml and runs kernels/edifact.py.

The rule-compilation and kernel-driving helpers here are shared with :mod:`.x12`.
"""
from __future__ import annotations

import tomllib
from functools import lru_cache

import numpy as np

from flowaudit import schemas
from flowaudit.kernels import edifact as _k

from . import FormatResult

KINDS = {"container": _k.KIND_CONTAINER, "imo": _k.KIND_IMO,
         "container_text": _k.KIND_CONTAINER_TEXT, "imo_text": _k.KIND_IMO_TEXT}
MODES = {"shape": _k.MODE_SHAPE, "check": _k.MODE_CHECK}


class RuleError(ValueError):
    """A rule file is malformed (raised at load time, never on message input)."""


@lru_cache(maxsize=None)
def class_codes() -> dict:
    with open(schemas.path("catalog", "classes.toml"), "rb") as f:
        doc = tomllib.load(f)
    return {name: int(c["code"]) for name, c in doc["classes"].items()}


def compile_rules(doc: dict) -> dict:
    """Rule file (parsed TOML) -> numpy arrays for the kernels."""
    codes = class_codes()
    rules = doc.get("rules", [])
    n = len(rules)
    tab = np.zeros((n, _k.R_NCOLS), np.int64)
    qvals = np.zeros((n, _k.MAX_QVALS, _k.MAX_QLEN), np.uint8)
    qlens = np.zeros((n, _k.MAX_QVALS), np.int64)
    loc_names: list[str] = []
    for r, rule in enumerate(rules):
        tag = rule["segment"].encode("ascii")
        if not 2 <= len(tag) <= 3:
            raise RuleError(f"rule {r}: segment tag {rule['segment']!r}")
        for i, c in enumerate(tag):
            tab[r, _k.R_TAG0 + i] = c
        tab[r, _k.R_TAGLEN] = len(tag)
        q = rule.get("qualifier")
        if q:
            vals = [v.encode("ascii") for v in q["values"]]
            if not 1 <= len(vals) <= _k.MAX_QVALS or any(len(v) > _k.MAX_QLEN for v in vals):
                raise RuleError(f"rule {r}: qualifier values {q['values']!r}")
            tab[r, _k.R_QEL] = int(q["element"])
            tab[r, _k.R_QCO] = int(q.get("component", 1))
            tab[r, _k.R_QNEG] = 1 if q.get("negate", False) else 0
            tab[r, _k.R_NQ] = len(vals)
            for v, b in enumerate(vals):
                qvals[r, v, :len(b)] = np.frombuffer(b, np.uint8)
                qlens[r, v] = len(b)
        if rule["class"] not in codes:
            raise RuleError(f"rule {r}: unknown class {rule['class']!r}")
        tab[r, _k.R_CLASS] = codes[rule["class"]]
        kind = KINDS[rule["kind"]]
        tab[r, _k.R_KIND] = kind
        tab[r, _k.R_MODE] = MODES[rule.get("mode", "shape")]
        tab[r, _k.R_CONF] = int(rule.get("confidence", 100))
        tab[r, _k.R_SHORT] = 1 if rule.get("no_check_digit", False) else 0
        parts = rule["value"]
        if not 1 <= len(parts) <= _k.MAX_PARTS or (kind in (3, 4) and len(parts) != 1):
            raise RuleError(f"rule {r}: value positions {parts!r}")
        tab[r, _k.R_NPARTS] = len(parts)
        for i, (el, co) in enumerate(parts):
            if el < 1 or co < 0 or (co == 0 and kind not in (3, 4)):
                raise RuleError(f"rule {r}: value position {[el, co]!r}")
            tab[r, _k.R_PARTS + 2 * i] = el
            tab[r, _k.R_PARTS + 2 * i + 1] = co
        loc = rule["loc"]
        if loc not in loc_names:
            loc_names.append(loc)
        tab[r, _k.R_LOC] = loc_names.index(loc)
    limits = doc.get("limits", {})
    return {
        "version": doc["version"],
        "rules": tab, "qvals": qvals, "qlens": qlens, "loc_names": loc_names,
        "max_seg": int(limits.get("max_segment_bytes", _k.MAX_SEGMENT_BYTES)),
        "max_tok": int(limits.get("max_segment_tokens", _k.MAX_SEGMENT_TOKENS)),
    }


@lru_cache(maxsize=None)
def load_rules(name: str) -> dict:
    """Compiled rules of ``schemas/catalog/<name>`` (cached per process)."""
    with open(schemas.path("catalog", name), "rb") as f:
        return compile_rules(tomllib.load(f))


def run_classify(kernel_fn, buf, offsets, sel, compiled) -> FormatResult:
    """Drive a classify kernel; retry once with exact capacities if its outputs overflowed."""
    buf = np.ascontiguousarray(buf, dtype=np.uint8)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    sel = np.ascontiguousarray(sel, dtype=np.int64)
    m = len(sel)
    hit_cap = max(64, 4 * m)
    val_cap = hit_cap * _k.VAL_ROOM
    for _ in range(3):
        out = kernel_fn(buf, offsets, sel, compiled["rules"], compiled["qvals"], compiled["qlens"],
                        compiled["max_seg"], compiled["max_tok"], hit_cap, val_cap)
        ctr = out[-1]
        if ctr[_k.C_HITS] <= ctr[_k.C_HW]:
            break
        hit_cap = int(ctr[_k.C_HITS]) + 1
        val_cap = int(ctr[_k.C_VALS]) + _k.VAL_ROOM
    else:  # pragma: no cover - the second run has exact upper bounds
        raise RuntimeError("classify kernel overflowed twice")
    (status, nsegs, mt_s, mt_e, hit_msg, hit_class, hit_loc, hit_valid, hit_conf,
     hit_start, hit_end, val_off, val_buf, ctr) = out
    nh = int(ctr[_k.C_HW])
    nv = int(ctr[_k.C_VW])
    msg_type = [bytes(buf[a:b]).decode("latin-1") if a >= 0 else "" for a, b in zip(mt_s, mt_e)]
    return FormatResult(
        status=status, msg_type=msg_type, n_segments=nsegs,
        hit_msg=hit_msg[:nh].copy(), hit_class=hit_class[:nh].copy(), hit_loc=hit_loc[:nh].copy(),
        hit_valid=hit_valid[:nh].copy(), hit_conf=hit_conf[:nh].copy(),
        hit_start=hit_start[:nh].copy(), hit_end=hit_end[:nh].copy(),
        val_off=val_off[:nh + 1].copy(), val_buf=val_buf[:nv].copy(),
        loc_names=list(compiled["loc_names"]))


def classify(buf: np.ndarray, offsets: np.ndarray, sel: np.ndarray) -> FormatResult:
    """Classify the EDIFACT messages ``sel`` of the batch (see :mod:`flowaudit.decode`)."""
    return run_classify(_k.classify, buf, offsets, sel, load_rules("edifact.toml"))


def tokenize(buf: np.ndarray, offsets: np.ndarray, sel: np.ndarray):
    """Token table of the EDIFACT messages ``sel`` (see :func:`kernels.edifact.tokenize`)."""
    c = load_rules("edifact.toml")
    return _k.tokenize(np.ascontiguousarray(buf, dtype=np.uint8), np.ascontiguousarray(offsets, dtype=np.int64),
                       np.ascontiguousarray(sel, dtype=np.int64), c["max_seg"], c["max_tok"])
