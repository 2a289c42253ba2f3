"""kernels/hmac.py against a slow, obvious SHA-256 (FIPS 180-4) and against hashlib / hmac."""
from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowaudit.kernels import hmac as H
from flowaudit.kernels.hmac import hmac_pads, hmac_sha256_many, sha256_many

# every test runs with each implementation this CPU can run: the portable multi-lane kernel, and
# the SHA-NI one where the CPU has the SHA extensions (the wrappers take it there)
IMPLEMENTATIONS = ["lanes"] + (["sha_ni"] if H.HAVE_SHA_NI else [])


@pytest.fixture(autouse=True, scope="module", params=IMPLEMENTATIONS)
def implementation(request):
    was = H.HAVE_SHA_NI
    H.HAVE_SHA_NI = request.param == "sha_ni"
    try:
        yield request.param
    finally:
        H.HAVE_SHA_NI = was

# ----------------------------------------------------------------------------- naive reference
_K = [int((p ** (1 / 3) % 1) * 2 ** 32) for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61,
                                                  67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137,
                                                  139, 149, 151, 157, 163, 167, 173, 179, 181, 191, 193, 197, 199, 211,
                                                  223, 227, 229, 233, 239, 241, 251, 257, 263, 269, 271, 277, 281, 283,
                                                  293, 307, 311)]
_H0 = [int((p ** 0.5 % 1) * 2 ** 32) for p in (2, 3, 5, 7, 11, 13, 17, 19)]


def naive_sha256(m: bytes) -> bytes:
    """FIPS 180-4 section 6.2, written out: pad, split into 512-bit blocks, 64 rounds each."""
    def rotr(x, n):
        return ((x >> n) | (x << (32 - n))) & 0xFFFFFFFF

    m = m + b"\x80" + b"\x00" * ((55 - len(m)) % 64) + (8 * len(m)).to_bytes(8, "big")
    assert len(m) % 64 == 0
    h = list(_H0)
    for blk in range(0, len(m), 64):
        w = [int.from_bytes(m[blk + 4 * t: blk + 4 * t + 4], "big") for t in range(16)]
        for t in range(16, 64):
            s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
            s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
            w.append((w[t - 16] + s0 + w[t - 7] + s1) % 2 ** 32)
        a, b, c, d, e, f, g, k = h
        for t in range(64):
            t1 = (k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + _K[t] + w[t]) % 2 ** 32
            t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) % 2 ** 32
            a, b, c, d, e, f, g, k = (t1 + t2) % 2 ** 32, a, b, c, (d + t1) % 2 ** 32, e, f, g
        h = [(x + y) % 2 ** 32 for x, y in zip(h, (a, b, c, d, e, f, g, k))]
    return b"".join(x.to_bytes(4, "big") for x in h)


def naive_hmac(key: bytes, m: bytes) -> bytes:
    """RFC 2104: H((K ^ opad) || H((K ^ ipad) || m)), K hashed first when longer than a block."""
    if len(key) > 64:
        key = naive_sha256(key)
    key = key.ljust(64, b"\x00")
    return naive_sha256(bytes(x ^ 0x5C for x in key) + naive_sha256(bytes(x ^ 0x36 for x in key) + m))


def _layout(values: list[bytes], gap: bytes = b"") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The values end to end (with ``gap`` between them, so no slice reads its neighbour by luck)."""
    buf, starts, ends, pos = [], [], [], 0
    for v in values:
        starts.append(pos)
        ends.append(pos + len(v))
        buf.append(v + gap)
        pos += len(v) + len(gap)
    return np.frombuffer(b"".join(buf) or b"\x00", np.uint8), np.array(starts, np.int64), np.array(ends, np.int64)


BOUNDARY = [0, 1, 3, 31, 32, 54, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 183, 184, 191, 192, 300]


def test_naive_reference_is_sha256():
    for n in BOUNDARY:
        v = bytes(range(256)) * 2
        assert naive_sha256(v[:n]) == hashlib.sha256(v[:n]).digest()
    assert naive_hmac(b"key", b"The quick brown fox jumps over the lazy dog").hex() == \
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"          # RFC 2104 test vector


def test_sha256_every_length_around_the_padding_boundaries():
    values = [bytes((i * 7 + j) & 0xFF for j in range(n)) for i, n in enumerate(list(range(0, 200)) + [300, 1000])]
    out = sha256_many(*_layout(values, gap=b"\xaa"))
    assert out.shape == (len(values), 32) and out.dtype == np.uint8
    for v, d in zip(values, out):
        assert d.tobytes() == hashlib.sha256(v).digest(), len(v)
    assert naive_sha256(values[56]) == out[56].tobytes()


def test_hmac_rfc4231_vectors():
    cases = [(b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
             (b"Jefe", b"what do ya want for nothing?",
              "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
             (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
              "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")]
    for key, msg, hexdigest in cases:
        out = hmac_sha256_many(*_layout([msg]), hmac_pads(key))
        assert out[0].tobytes().hex() == hexdigest


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=0, max_size=200),
       st.lists(st.one_of(st.binary(max_size=300),
                          st.sampled_from([0, 55, 56, 63, 64, 65, 119, 120, 128]).map(lambda n: b"\x5c" * n)),
                max_size=12))
def test_hmac_equals_python_hmac(key, values):
    out = hmac_sha256_many(*_layout(values, gap=b"\x36"), hmac_pads(key))
    assert out.shape == (len(values), 32)
    for v, d in zip(values, out):
        assert d.tobytes() == hmac.digest(key, v, "sha256")


def test_hmac_naive_reference_on_the_key_and_value_boundaries():
    keys = [b"", b"k", b"x" * 63, b"x" * 64, b"x" * 65, bytes(range(200))]
    values = [bytes(range(n)) for n in (0, 55, 56, 64, 65, 200)]
    for key in keys:
        out = hmac_sha256_many(*_layout(values), hmac_pads(key))
        for v, d in zip(values, out):
            assert d.tobytes() == naive_hmac(key, v)


def test_overlapping_and_unordered_slices_of_one_buffer():
    data = bytes(range(256)) * 3
    buf = np.frombuffer(data, np.uint8)           # read-only, as a batch buffer is
    starts = np.array([700, 0, 5, 5, 767, 100], np.int64)
    ends = np.array([768, 768, 5, 69, 768, 356], np.int64)
    out = hmac_sha256_many(buf, starts, ends, hmac_pads(b"op-key"))
    for s, e, d in zip(starts, ends, out):
        assert d.tobytes() == hmac.digest(b"op-key", data[s:e], "sha256")
    assert hmac_sha256_many(buf, starts[:0], ends[:0], hmac_pads(b"k")).shape == (0, 32)


@pytest.mark.parametrize("starts,ends", [([-1], [3]), ([4], [3]), ([0], [11]), ([0, 1], [2])])
def test_slices_outside_the_buffer_raise(starts, ends):
    buf = np.zeros(10, np.uint8)
    with pytest.raises(ValueError):
        hmac_sha256_many(buf, np.array(starts), np.array(ends), hmac_pads(b"k"))
    with pytest.raises(ValueError):
        sha256_many(buf, np.array(starts), np.array(ends))


def test_the_kernel_checks_slices_itself(implementation):
    """The wrappers check first; the kernel checks again, since numba does not bounds-check."""
    from flowaudit.kernels._jit import read_only
    from flowaudit.kernels.hmac import BLOCK
    _digest_many = H._digest_many_ni if implementation == "sha_ni" else H._digest_many
    buf = read_only(np.zeros(10, np.uint8), np.uint8)       # the wrappers' array types: no new compile
    pads = hmac_pads(b"k")
    for s, e in (([0], [11]), ([-1], [2]), ([3], [2])):
        with pytest.raises(ValueError):
            _digest_many(buf, read_only(s, np.int64), read_only(e, np.int64), pads[0], BLOCK, pads[1],
                         np.empty((1, 32), np.uint8))
    with pytest.raises(ValueError):      # output of the wrong shape
        _digest_many(buf, read_only([0], np.int64), read_only([1], np.int64), pads[0], BLOCK, pads[1],
                     np.empty((2, 32), np.uint8))


def test_many_values_of_mixed_block_counts_fill_and_leave_lanes():
    """More values than lanes, block counts interleaved (1, 2, 3 and 17 blocks), a group that does
    not fill the lanes: each digest lands in its own row."""
    rng = np.random.default_rng(7)
    lens = rng.choice([0, 11, 55, 56, 64, 119, 120, 1000, 33], size=203)
    values = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in lens]
    out = hmac_sha256_many(*_layout(values, gap=b"\x00"), hmac_pads(b"lanes"))
    assert [d.tobytes() for d in out] == [hmac.digest(b"lanes", v, "sha256") for v in values]
    out = sha256_many(*_layout(values))
    assert [d.tobytes() for d in out] == [hashlib.sha256(v).digest() for v in values]
