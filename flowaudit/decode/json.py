"""JSON decoder shell: rules from schemas/catalog/json.toml, kernel kernels/jsonscan.py.

``classify(buf, offsets, sel) -> FormatResult`` per the contract in ``flowaudit.decode``.
Besides the contract fields the result carries ``flags`` (uint8 per selected message:
1 duplicate member names, 2 an integer beyond 2**53 (kept as text), 4 a number that
underflows to 0.0) as an extra attribute.
"""
from __future__ import annotations

import threading
import tomllib

import numpy as np

from flowaudit import schemas
from flowaudit.decode import FormatResult
from flowaudit.decode.detect import check_batch
from flowaudit.kernels import jsonscan
from flowaudit.kernels.jsonscan import PATH_CAP, VAL_STRIDE, json_scan, name_hash

_lock = threading.Lock()
_cache: dict = {}


def class_codes() -> dict[str, int]:
    with open(schemas.path("catalog", "classes.toml"), "rb") as f:
        cat = tomllib.load(f)
    return {name: int(c["code"]) for name, c in cat["classes"].items()}


def load_rules(path=None) -> dict:
    """Compile json.toml into the kernel's rule arrays (cached per path)."""
    path = str(path or schemas.path("catalog", "json.toml"))
    with _lock:
        if path in _cache:
            return _cache[path]
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        codes = class_codes()
        keys, parents, types, classes, confs, nums = [], [], [], [], [], []
        for rule in doc.get("rule", []):
            cls = codes[rule["class"]]
            ptab = [name_hash(p) for p in rule.get("parents", [])] or [0]
            typ = name_hash(rule["object_type"]) if rule.get("object_type") else 0
            for k in rule["keys"]:
                for p in ptab:
                    keys.append(name_hash(k))
                    parents.append(p)
                    types.append(typ)
                    classes.append(cls)
                    confs.append(int(rule.get("confidence", 100)))
                    nums.append(1 if rule.get("numbers", False) else 0)
        ft = doc.get("free_text", {})
        compiled = dict(
            version=doc["version"],
            r_key=np.array(keys, dtype=np.uint64),
            r_parent=np.array(parents, dtype=np.uint64),
            r_type=np.array(types, dtype=np.uint64),
            r_class=np.array(classes, dtype=np.int16),
            r_conf=np.array(confs, dtype=np.uint8),
            r_num=np.array(nums, dtype=np.uint8),
            ft_keys=np.array([name_hash(k) for k in ft.get("keys", [])], dtype=np.uint64),
            ft_conf=np.uint8(ft.get("confidence", 80)),
            c_cont=np.int16(codes["container_number"]),
            c_imo=np.int16(codes["imo_number"]),
            type_key=np.uint64(name_hash("type")),
            type_val=np.uint64(next((name_hash(r["object_type"]) for r in doc.get("rule", [])
                                     if r.get("object_type")), 0)),
        )
        _cache[path] = compiled
        return compiled


class Outputs:
    """Pre-allocated kernel outputs for one batch (hits, values, location table)."""

    def __init__(self, k: int, cap_hits: int, cap_locs: int):
        self.status = np.zeros(k, dtype=np.int8)
        self.n_seg = np.zeros(k, dtype=np.int32)
        self.flags = np.zeros(k, dtype=np.uint8)
        self.hit_msg = np.zeros(cap_hits, dtype=np.int64)
        self.hit_class = np.zeros(cap_hits, dtype=np.int16)
        self.hit_loc = np.zeros(cap_hits, dtype=np.int32)
        self.hit_valid = np.zeros(cap_hits, dtype=np.int8)
        self.hit_conf = np.zeros(cap_hits, dtype=np.uint8)
        self.hit_start = np.zeros(cap_hits, dtype=np.int64)
        self.hit_end = np.zeros(cap_hits, dtype=np.int64)
        self.hit_keep = np.zeros(cap_hits, dtype=np.int8)
        self.hit_pend = np.zeros(cap_hits, dtype=np.int64)
        self.val_buf = np.zeros(cap_hits * VAL_STRIDE + VAL_STRIDE, dtype=np.uint8)
        self.loc_hash = np.zeros(cap_locs, dtype=np.uint64)
        self.loc_off = np.zeros(cap_locs + 1, dtype=np.int64)
        self.loc_buf = np.zeros(cap_locs * (PATH_CAP + 8), dtype=np.uint8)
        tsize = 1
        while tsize < 2 * cap_locs:
            tsize *= 2
        self.loc_table = np.zeros(tsize, dtype=np.int64)

    def result(self, nh: int, nloc: int, msg_type: list, c_cont: int) -> FormatResult:
        keep = self.hit_keep[:nh] == 1
        idx = np.nonzero(keep)[0]
        cls = self.hit_class[idx]
        vlen = np.where(cls == c_cont, 11, 7).astype(np.int64)
        val_off = np.zeros(idx.shape[0] + 1, dtype=np.int64)
        np.cumsum(vlen, out=val_off[1:])
        # gather each kept hit's normalised value (stride VAL_STRIDE in val_buf)
        if idx.shape[0]:
            pos = np.repeat(idx * VAL_STRIDE, vlen) + (np.arange(val_off[-1]) - np.repeat(val_off[:-1], vlen))
            val_buf = self.val_buf[pos]
        else:
            val_buf = np.zeros(0, dtype=np.uint8)
        loc_names = [bytes(self.loc_buf[self.loc_off[i]:self.loc_off[i + 1]]).decode("utf-8", "replace")
                     for i in range(nloc)]
        res = FormatResult(
            status=self.status, msg_type=msg_type, n_segments=self.n_seg,
            hit_msg=self.hit_msg[idx], hit_class=cls, hit_loc=self.hit_loc[idx],
            hit_valid=self.hit_valid[idx], hit_conf=self.hit_conf[idx],
            hit_start=self.hit_start[idx], hit_end=self.hit_end[idx],
            val_off=val_off, val_buf=val_buf, loc_names=loc_names)
        res.flags = self.flags
        return res


def initial_caps(buf, offsets, sel) -> tuple[int, int, int]:
    """(hit capacity, location capacity, largest selected message length)."""
    if sel.shape[0] == 0:
        return 16, 64, 0
    lens = offsets[sel + 1] - offsets[sel]
    total = int(lens.sum())
    return 256 + total // 128, 1024, int(lens.max())


def classify(buf, offsets, sel) -> FormatResult:
    """Scan and classify the JSON messages ``sel`` of the batch (see ``flowaudit.decode``)."""
    buf, offsets, sel = check_batch(buf, offsets, sel)
    R = load_rules()
    k = sel.shape[0]
    cap_hits, cap_locs, maxlen = initial_caps(buf, offsets, sel)
    scratch = np.zeros(maxlen + 16, dtype=np.uint8)
    kstack = np.zeros(min(maxlen // 4 + 16, 1 << 20), dtype=np.uint64)
    while True:
        out = Outputs(k, cap_hits, cap_locs)
        nh, nloc, ovf = json_scan(
            buf, offsets, sel,
            R["r_key"], R["r_parent"], R["r_type"], R["r_class"], R["r_conf"], R["r_num"],
            R["ft_keys"], R["ft_conf"], R["c_cont"], R["c_imo"], R["type_key"],
            R["type_val"],
            out.status, out.n_seg, out.flags,
            out.hit_msg, out.hit_class, out.hit_loc, out.hit_valid, out.hit_conf,
            out.hit_start, out.hit_end, out.hit_keep, out.hit_pend, out.val_buf,
            out.loc_hash, out.loc_off, out.loc_buf, out.loc_table, scratch, kstack)
        if ovf == 1:
            cap_hits *= 4
        elif ovf == 2:
            cap_locs *= 4
        else:
            break
    msg_type = ["json" if s == 0 else "" for s in out.status.tolist()]
    return out.result(int(nh), int(nloc), msg_type, int(R["c_cont"]))


__all__ = ["classify", "load_rules", "class_codes", "jsonscan"]
