"""Shell around kernels/detect.py: dtype checks, then the kernels over the whole batch."""
from __future__ import annotations

import numpy as np

from flowaudit.kernels._jit import read_only
from flowaudit.kernels.detect import detect_formats, validate_utf8


def check_batch(buf, offsets, sel=None):
    """Validate the batch layout; returns contiguous ``(buf, offsets, sel)`` or raises ValueError.

    A malformed *batch* (wrong dtype, offsets outside ``buf`` or decreasing) is a caller bug,
    not bad input, so it raises; bad *messages* never raise.
    """
    buf = read_only(np.ascontiguousarray(buf))
    offsets = np.ascontiguousarray(offsets)
    if buf.dtype != np.uint8 or buf.ndim != 1:
        raise ValueError(f"buf must be a 1-d uint8 array, got {buf.dtype} ndim={buf.ndim}")
    if offsets.dtype != np.int64 or offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError("offsets must be a non-empty 1-d int64 array (n+1 entries)")
    if offsets[0] < 0 or offsets[-1] > buf.shape[0] or np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must be non-decreasing and inside buf")
    if sel is not None:
        sel = np.ascontiguousarray(sel)
        if sel.dtype != np.int64 or sel.ndim != 1:
            raise ValueError("sel must be a 1-d int64 array")
        n = offsets.shape[0] - 1
        if sel.shape[0] and (sel.min() < 0 or sel.max() >= n):
            raise ValueError("sel holds an index outside the batch")
    return buf, offsets, sel


def detect(buf, offsets) -> np.ndarray:
    """``uint8[n]`` FMT_* code per message."""
    buf, offsets, _ = check_batch(buf, offsets)
    return detect_formats(buf, offsets)


def utf8_ok(buf, offsets, sel) -> np.ndarray:
    """``int8[len(sel)]``: 1 when the selected message is well-formed UTF-8, else 0."""
    buf, offsets, sel = check_batch(buf, offsets, sel)
    return validate_utf8(buf, offsets, sel)
