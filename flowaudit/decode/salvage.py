"""Salvage scan: the shape recognisers with their context rules over raw message bytes.

A message that ends in quarantine (malformed, headless, truncated, unknown format) keeps its
quarantine row and reason, and is still scanned here (kernels/salvage.py), so that "malformed"
never means "unexamined".  The hits are ordinary hits on the message's provenance with
``salvaged = true`` and a lower confidence.  Flat files use the same scan on the cells of
columns whose header names no data class.

:func:`scan` returns a :class:`flowaudit.decode.FormatResult` whose per-message arrays are
empty: only the hit arrays are meaningful.
"""
from __future__ import annotations

import numpy as np

from flowaudit import catalog as _catalog
from flowaudit.decode import FormatResult
from flowaudit.kernels import salvage as _k

from .detect import check_batch

# confidence in percent: a shape with its own check (container check digit, LEI / USCI checks,
# an e-mail) against a value found only through a label, and an e-mail whose ``@`` was lost
CONF_SHAPE = 60
CONF_LABEL = 40
CONF_MANGLED = 30

# label -> value kind and data class.  Upper case; blanks, ``_`` and ``-`` in the text are ignored
# inside a label, and an optional NO / NR / NBR / NUM / NUMBER / ID / REF word may follow it.
# Longer labels first where one is the prefix of another.
LABELS = (
    ("BILLOFLADING", _k.K_REF, "bill_of_lading"),
    ("B/L", _k.K_REF, "bill_of_lading"),
    ("BL", _k.K_REF, "bill_of_lading"),
    ("BOL", _k.K_REF, "bill_of_lading"),
    ("HBL", _k.K_REF, "bill_of_lading"),
    ("MBL", _k.K_REF, "bill_of_lading"),
    ("RFF+BM", _k.K_REF, "bill_of_lading"),      # EDIFACT reference qualifier BM: bill of lading
    ("BOOKING", _k.K_REF, "booking_reference"),
    ("BKG", _k.K_REF, "booking_reference"),
    ("RFF+BN", _k.K_REF, "booking_reference"),   # EDIFACT reference qualifier BN: booking number
    ("TELEPHONE", _k.K_PHONE, "phone"),
    ("TELEFAX", _k.K_PHONE, "phone"),
    ("TEL", _k.K_PHONE, "phone"),
    ("PHONE", _k.K_PHONE, "phone"),
    ("FAX", _k.K_PHONE, "phone"),
    ("MOBILE", _k.K_PHONE, "phone"),
    ("MOB", _k.K_PHONE, "phone"),
    ("COM+", _k.K_PHONE, "phone"),               # EDIFACT COM: a number (the :TE / :FX qualifier follows)
    ("EORI", _k.K_EORI, "eori"),
    ("EMAIL", _k.K_EMAIL, "email"),
    ("IMO", _k.K_IMO, "imo_number"),
    ("UNDG", _k.K_UN, "un_number"),
    ("UN", _k.K_UN, "un_number"),
)
SHAPE_CLASSES = {_k.K_CONT: "container_number", _k.K_EMAIL: "email", _k.K_LEI: "lei", _k.K_USCI: "cn_usci"}


class _Tables:
    def __init__(self):
        cat = _catalog.load()
        raw = [lab.encode() for lab, _, _ in LABELS]
        self.labels = np.frombuffer(b"".join(raw), np.uint8).copy()
        self.lab_off = np.zeros(len(raw) + 1, np.int64)
        np.cumsum([len(r) for r in raw], out=self.lab_off[1:])
        self.lab_kind = np.array([k for _, k, _ in LABELS], np.int64)
        self.lab_class = np.array([cat.by_name(c).code for _, _, c in LABELS], np.int16)
        self.shape_class = np.full(len(_k.KIND_NAMES), -1, np.int16)
        for kind, c in SHAPE_CLASSES.items():
            self.shape_class[kind] = cat.by_name(c).code
        # locations: one per shape kind, then one per label
        self.loc_names = [f"salvage:{_k.KIND_NAMES[k]}" for k in range(len(_k.KIND_NAMES))] + [
            f"salvage:{lab}" for lab, _, _ in LABELS]


_TABLES: _Tables | None = None


def tables() -> _Tables:
    global _TABLES
    if _TABLES is None:
        _TABLES = _Tables()
    return _TABLES


def scan_ranges(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """Raw kernel rows (int64 ``[n, 8]``, see kernels/salvage.py) and the value buffer."""
    t = tables()
    starts = np.ascontiguousarray(starts, np.int64)
    ends = np.ascontiguousarray(ends, np.int64)
    total = int(np.sum(np.maximum(ends - starts, 0))) if starts.size else 0
    cap = total // 64 + 64
    while True:
        H = np.zeros((cap, _k.H_COLS), np.int64)
        vbuf = np.zeros(cap * _k.VALUE_ROOM, np.uint8)
        nh = _k.salvage_scan(buf, starts, ends, t.labels, t.lab_off, t.lab_kind, H, vbuf)
        if nh >= 0:
            return H[:nh], vbuf
        cap *= 4


def result_from_rows(rows: np.ndarray, vbuf: np.ndarray, range_msg: np.ndarray) -> FormatResult:
    """Kernel rows -> the hit arrays of a FormatResult (message = ``range_msg[row range]``)."""
    t = tables()
    nh = rows.shape[0]
    kind = rows[:, 1]
    lab = rows[:, 2]
    shape = lab < 0
    cls = np.where(shape, t.shape_class[kind], t.lab_class[np.maximum(lab, 0)]).astype(np.int16)
    loc = np.where(shape, kind, len(_k.KIND_NAMES) + lab).astype(np.int32)
    valid = rows[:, 3].astype(np.int8)
    conf = np.where(shape, CONF_SHAPE, np.where((kind == _k.K_EMAIL) & (valid == 0), CONF_MANGLED, CONF_LABEL))
    val_off = np.zeros(nh + 1, np.int64)
    np.cumsum(rows[:, 7], out=val_off[1:])
    idx = np.concatenate([np.arange(o, o + n) for o, n in zip(rows[:, 6], rows[:, 7])]) if nh else np.zeros(0, np.int64)
    val_buf = np.ascontiguousarray(vbuf[idx.astype(np.int64)])
    if val_buf.size == 0:
        val_buf = np.zeros(1, np.uint8)
    return FormatResult(
        status=np.zeros(0, np.int8), msg_type=[], n_segments=np.zeros(0, np.int32),
        hit_msg=np.asarray(range_msg, np.int64)[rows[:, 0]] if nh else np.zeros(0, np.int64),
        hit_class=cls, hit_loc=loc, hit_valid=valid, hit_conf=conf.astype(np.uint8),
        hit_start=rows[:, 4].copy(), hit_end=rows[:, 5].copy(), val_off=val_off, val_buf=val_buf,
        loc_names=list(t.loc_names))


def scan(buf: np.ndarray, offsets: np.ndarray, sel: np.ndarray) -> FormatResult:
    """Salvage hits of the messages ``sel`` (batch indices), in message order."""
    buf, offsets, sel = check_batch(buf, offsets, np.asarray(sel, np.int64))
    rows, vbuf = scan_ranges(buf, offsets[sel], offsets[sel + 1])
    return result_from_rows(rows, vbuf, sel)
