"""kernels/dedupe.py against a dict-based reference."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from flowaudit.kernels.dedupe import unique_slices


def reference(values: list[bytes], idx: list[int]):
    seen: dict[bytes, int] = {}
    uid, first = [], []
    for k, i in enumerate(idx):
        v = values[i]
        if v not in seen:
            seen[v] = len(seen)
            first.append(k)
        uid.append(seen[v])
    return uid, first


def layout(values):
    off = np.zeros(len(values) + 1, np.int64)
    np.cumsum([len(v) for v in values], out=off[1:])
    buf = np.frombuffer(b"".join(values), np.uint8) if any(values) else np.zeros(0, np.uint8)
    return buf, off


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=6), min_size=0, max_size=60), st.data())
def test_matches_reference(values, data):
    buf, off = layout(values)
    idx = data.draw(st.lists(st.integers(0, max(0, len(values) - 1)), max_size=80)) if values else []
    uid, first = unique_slices(buf, off, np.asarray(idx, np.int64))
    ruid, rfirst = reference(values, idx)
    assert uid.tolist() == ruid and first.tolist() == rfirst


def test_colliding_prefixes_and_empty_values():
    values = [b"MSCU1234565", b"", b"MSCU1234565", b"MSCU123456", b"", b"A"]
    buf, off = layout(values)
    uid, first = unique_slices(buf, off, np.arange(6, dtype=np.int64))
    assert uid.tolist() == [0, 1, 0, 2, 1, 3] and first.tolist() == [0, 1, 3, 5]
