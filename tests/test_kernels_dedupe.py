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


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(600, 5000))
def test_matches_reference_while_the_table_grows(seed, n):
    """Thousands of distinct values of every length around the 8-byte steps: the table is
    rehashed several times on the way (it starts at 1024 slots)."""
    rng = np.random.default_rng(seed)
    values = [bytes(rng.integers(0, 4, rng.integers(0, 20)).astype(np.uint8)) for _ in range(n)]
    buf, off = layout(values)
    idx = rng.integers(0, n, 2 * n).astype(np.int64)
    uid, first = unique_slices(buf, off, idx)
    ruid, rfirst = reference(values, idx.tolist())
    assert uid.tolist() == ruid and first.tolist() == rfirst
    assert len(rfirst) > 512 or n < 1000


def test_colliding_prefixes_and_empty_values():
    values = [b"MSCU1234565", b"", b"MSCU1234565", b"MSCU123456", b"", b"A"]
    buf, off = layout(values)
    uid, first = unique_slices(buf, off, np.arange(6, dtype=np.int64))
    assert uid.tolist() == [0, 1, 0, 2, 1, 3] and first.tolist() == [0, 1, 3, 5]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 5)), max_size=80),
                 st.lists(st.tuples(st.integers(0, 8), st.sampled_from([0, 1, 62, 63])), max_size=80),
                 st.lists(st.tuples(st.integers(0, 8), st.integers(0, 130)), max_size=80)))
def test_unique_pairs_numbers_pairs_as_np_unique(pairs):
    """(value, class) pairs: the same numbering and first hits as np.unique gives, which is what the
    hits table's dictionaries were built from; classes below 64 (one set per value, the edges 0
    and 63 included) and beyond (the sorting path)."""
    from flowaudit.kernels.dedupe import unique_pairs
    vals = [b"v%d" % v for v, _ in pairs]
    buf, off = layout(vals)
    uid, first = unique_slices(buf, off, np.arange(len(vals), dtype=np.int64))
    cls = np.array([c for _, c in pairs], np.int32)
    pid, first_pair = unique_pairs(uid, cls, first)
    _keys, ref_first, ref_pid = np.unique(uid.astype(np.int64) * 256 + cls, return_index=True, return_inverse=True)
    assert pid.tolist() == ref_pid.tolist() and first_pair.tolist() == ref_first.tolist()


def test_gather_slices_and_bad_input():
    from flowaudit.kernels.dedupe import gather_slices, unique_pairs
    import pytest
    buf = np.frombuffer(b"abcdef", np.uint8)
    out = gather_slices(buf, np.array([4, 0, 2], np.int64), np.array([6, 0, 3], np.int64),
                        np.array([0, 2, 2, 3], np.int64))
    assert out.tobytes() == b"efc"
    assert gather_slices(buf, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(1, np.int64)).size == 0
    with pytest.raises(ValueError):
        gather_slices(buf, np.array([4], np.int64), np.array([7], np.int64), np.array([0, 3], np.int64))
    with pytest.raises(ValueError):
        gather_slices(buf, np.array([0], np.int64), np.array([2], np.int64), np.array([0, 3], np.int64))
    with pytest.raises(ValueError):      # first[] that does not belong to uid
        unique_pairs(np.array([0, 0], np.int64), np.array([1, 2], np.int32), np.array([5], np.int64))
    with pytest.raises(ValueError):      # a uid with no first hit
        unique_pairs(np.array([0, 1], np.int64), np.array([1, 2], np.int32), np.array([0], np.int64))
    pid, fp = unique_pairs(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64))
    assert pid.size == 0 and fp.size == 0


def test_unique_slices_rejects_an_index_outside_the_offsets():
    import pytest
    buf, off = layout([b"a", b"b"])
    for bad in ([2], [-1], [0, 5]):
        with pytest.raises(ValueError):
            unique_slices(buf, off, np.asarray(bad, np.int64))
