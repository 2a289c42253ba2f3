"""SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104) over many byte slices in one call.

The hits of a batch are keyed with HMAC-SHA256 under the operator key, so that a value written
today joins with the same value written by any earlier version.  Hashing them here, over the
batch's value buffer, saves a Python ``bytes`` object and a C call per distinct value.

* :func:`hmac_pads`: the two SHA-256 states after the key block XOR ipad / opad (the key
  schedule of RFC 2104, done once per key, not once per value);
* :func:`hmac_sha256_many`: ``HMAC(key, buf[starts[i]:ends[i]])`` for every ``i`` -> (n, 32) uint8;
* :func:`sha256_many`: ``SHA256(buf[starts[i]:ends[i]])`` -> (n, 32) uint8.

Multi-buffer: :data:`LANES` values are hashed side by side, word ``t`` of every lane next to each
other, so that LLVM turns each step of the compression into one vector instruction over all lanes
(about 4x the throughput of one value at a time on this AVX-512 VM).  The state is ``uint32`` words;
every sum is cast back to ``uint32``, so whatever width numba promotes an intermediate to, the
result is the arithmetic modulo 2**32 that SHA-256 specifies.  The public wrappers check
dtypes, shapes and every slice against the buffer before the kernel runs; the kernel checks the
slices again (numba does not bounds-check) and raises on a bad one rather than read outside
the buffer.
Tested against ``hashlib`` / ``hmac`` in tests/test_hmac_kernel.py.
"""
from __future__ import annotations

import hashlib

import numpy as np

from ._jit import kernel

BLOCK = 64
DIGEST = 32

_K = np.array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
], dtype=np.uint32)
H0 = np.array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19],
              dtype=np.uint32)


LANES = 16    # values hashed side by side: one 512-bit vector of 32-bit words per step


@kernel
def _rotr(x, n):
    return np.uint32((x >> np.uint32(n)) | (x << np.uint32(32 - n)))


@kernel
def _round(a, b, c, d, e, f, g, h, w, t):
    """Round ``t`` in every lane; the caller rotates the roles of the eight words instead of
    moving them, so a round writes only ``d`` and ``h``."""
    k = _K[t]
    for q in range(LANES):
        eq = e[q]
        aq = a[q]
        t1 = np.uint32(h[q] + (_rotr(eq, 6) ^ _rotr(eq, 11) ^ _rotr(eq, 25))
                       + ((eq & f[q]) ^ (np.uint32(~eq) & g[q])) + k + w[t, q])
        d[q] = np.uint32(d[q] + t1)
        h[q] = np.uint32(t1 + (_rotr(aq, 2) ^ _rotr(aq, 13) ^ _rotr(aq, 22))
                         + ((aq & b[q]) ^ (aq & c[q]) ^ (b[q] & c[q])))


@kernel
def _compress(st, w, v):
    """One block in each of the LANES lanes: ``st`` (8, LANES) the states, updated; ``w``
    (64, LANES) with the block's 16 big-endian words in rows 0..15; ``v`` (8, LANES) scratch."""
    for t in range(16, 64):
        for q in range(LANES):
            x = w[t - 15, q]
            y = w[t - 2, q]
            w[t, q] = np.uint32(w[t - 16, q] + (_rotr(x, 7) ^ _rotr(x, 18) ^ np.uint32(x >> np.uint32(3)))
                                + w[t - 7, q] + (_rotr(y, 17) ^ _rotr(y, 19) ^ np.uint32(y >> np.uint32(10))))
    for j in range(8):
        for q in range(LANES):
            v[j, q] = st[j, q]
    a = v[0]
    b = v[1]
    c = v[2]
    d = v[3]
    e = v[4]
    f = v[5]
    g = v[6]
    h = v[7]
    for t in range(0, 64, 8):
        _round(a, b, c, d, e, f, g, h, w, t)
        _round(h, a, b, c, d, e, f, g, w, t + 1)
        _round(g, h, a, b, c, d, e, f, w, t + 2)
        _round(f, g, h, a, b, c, d, e, w, t + 3)
        _round(e, f, g, h, a, b, c, d, w, t + 4)
        _round(d, e, f, g, h, a, b, c, w, t + 5)
        _round(c, d, e, f, g, h, a, b, w, t + 6)
        _round(b, c, d, e, f, g, h, a, w, t + 7)
    for j in range(8):
        for q in range(LANES):
            st[j, q] = np.uint32(st[j, q] + v[j, q])


@kernel
def _n_blocks(n):
    """Blocks of an ``n``-byte message once padded (0x80, zeros, 8 bytes of bit length)."""
    return (n + 8) // BLOCK + 1


@kernel
def _load(buf, s, e, j, prefix, w, q):
    """Block ``j`` of the padded message ``buf[s:e]`` into lane ``q`` of ``w`` (rows 0..15);
    ``prefix``: bytes hashed before the message (in the length only).  Reads only ``buf[s:e]``."""
    n = e - s
    base = BLOCK * j
    for t in range(16):
        x = np.uint32(0)
        for r in range(4):
            pos = base + 4 * t + r
            b = np.uint32(0)
            if pos < n:
                b = np.uint32(buf[s + pos])
            elif pos == n:
                b = np.uint32(0x80)
            x = np.uint32((x << np.uint32(8)) | b)
        w[t, q] = x
    if j == _n_blocks(n) - 1:                # the last block ends with the length in bits
        bits = np.uint64(prefix + n) * np.uint64(8)
        w[14, q] = np.uint32(bits >> np.uint64(32))
        w[15, q] = np.uint32(bits & np.uint64(0xFFFFFFFF))


@kernel
def _store(st, q, out, row):
    for i in range(8):
        x = st[i, q]
        out[row, 4 * i] = np.uint8(x >> np.uint32(24))
        out[row, 4 * i + 1] = np.uint8((x >> np.uint32(16)) & np.uint32(0xFF))
        out[row, 4 * i + 2] = np.uint8((x >> np.uint32(8)) & np.uint32(0xFF))
        out[row, 4 * i + 3] = np.uint8(x & np.uint32(0xFF))


@kernel
def _check_slices(nbuf, starts, ends):
    if starts.shape[0] != ends.shape[0]:
        raise ValueError("starts and ends differ in length")
    for i in range(starts.shape[0]):
        if starts[i] < 0 or ends[i] < starts[i] or ends[i] > nbuf:
            raise ValueError("slice outside the buffer")


@kernel
def sha256_block_state(state, block):
    """The state after compressing one 64-byte ``block`` into ``state`` (8 words, not changed)."""
    if state.shape[0] != 8 or block.shape[0] != BLOCK:
        raise ValueError("state must have 8 words and block 64 bytes")
    st = np.zeros((8, LANES), np.uint32)
    w = np.zeros((64, LANES), np.uint32)
    v = np.empty((8, LANES), np.uint32)
    for j in range(8):
        st[j, 0] = state[j]
    for t in range(16):
        w[t, 0] = np.uint32((np.uint32(block[4 * t]) << np.uint32(24)) | (np.uint32(block[4 * t + 1]) << np.uint32(16))
                            | (np.uint32(block[4 * t + 2]) << np.uint32(8)) | np.uint32(block[4 * t + 3]))
    _compress(st, w, v)
    return st[:, 0].copy()


@kernel
def _digest_many(buf, starts, ends, state, prefix, outer, out):
    """SHA-256 of each slice continued from ``state`` (after ``prefix`` bytes); when ``outer`` has
    8 words, that digest is hashed once more from ``outer`` (the HMAC outer hash, prefix 64).

    Values go through the lanes in groups of equal block count (nearly all values of a batch
    fit one block), so every lane of a group does the same work."""
    _check_slices(buf.shape[0], starts, ends)
    n = starts.shape[0]
    if out.shape[0] != n or out.shape[1] != DIGEST:
        raise ValueError("out must be (n, 32)")
    if state.shape[0] != 8 or (outer.shape[0] != 8 and outer.shape[0] != 0):
        raise ValueError("a state has 8 words")
    nb = np.empty(n, np.int64)
    same = True
    for i in range(n):
        nb[i] = _n_blocks(ends[i] - starts[i])
        if nb[i] != nb[0]:
            same = False
    order = np.arange(n) if same else np.argsort(nb, kind="mergesort")
    st = np.empty((8, LANES), np.uint32)
    w = np.zeros((64, LANES), np.uint32)
    v = np.empty((8, LANES), np.uint32)
    lane_row = np.empty(LANES, np.int64)
    g0 = 0
    while g0 < n:
        blocks = nb[order[g0]]
        m = 0                                   # lanes in use: up to LANES values of this block count
        while m < LANES and g0 + m < n and nb[order[g0 + m]] == blocks:
            lane_row[m] = order[g0 + m]
            m += 1
        for j in range(8):
            for q in range(LANES):
                st[j, q] = state[j]
        for b in range(blocks):
            for q in range(m):
                i = lane_row[q]
                _load(buf, starts[i], ends[i], b, prefix, w, q)
            _compress(st, w, v)                 # idle lanes hash what their row holds; never stored
        if outer.shape[0] == 8:                 # H((K ^ opad) || inner digest): one block
            for q in range(LANES):
                for j in range(8):
                    w[j, q] = st[j, q]
                    st[j, q] = outer[j]
                w[8, q] = np.uint32(0x80000000)
                for j in range(9, 15):
                    w[j, q] = 0
                w[15, q] = np.uint32((BLOCK + DIGEST) * 8)
            _compress(st, w, v)
        for q in range(m):
            _store(st, q, out, lane_row[q])
        g0 += m


# -- public wrappers: dtypes, shapes and slices checked here ------------------------------------

_NO_OUTER = np.zeros(0, np.uint32)
_NO_OUTER.flags.writeable = False

def readonly(a, dtype) -> np.ndarray:
    """A read-only contiguous view: the kernels see one array type, so they compile once."""
    v = np.ascontiguousarray(a, dtype=dtype).view()
    v.flags.writeable = False
    return v


def _slices(buf, starts, ends):
    buf = readonly(buf, np.uint8)
    starts = readonly(starts, np.int64)
    ends = readonly(ends, np.int64)
    if buf.ndim != 1 or starts.ndim != 1 or starts.shape != ends.shape:
        raise ValueError("buf must be 1-d and starts / ends 1-d of one length")
    if starts.size and (starts.min() < 0 or (ends < starts).any() or ends.max() > buf.shape[0]):
        raise ValueError("slice outside the buffer")
    return buf, starts, ends


def hmac_pads(key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The SHA-256 states after ``K ^ ipad`` and ``K ^ opad`` (RFC 2104; a key longer than the
    block is hashed first, a shorter one padded with zeros)."""
    key = bytes(key)
    if len(key) > BLOCK:
        key = hashlib.sha256(key).digest()
    k = np.zeros(BLOCK, np.uint8)
    k[:len(key)] = np.frombuffer(key, np.uint8)
    h0 = readonly(H0, np.uint32)
    return (readonly(sha256_block_state(h0, readonly(k ^ np.uint8(0x36), np.uint8)), np.uint32),
            readonly(sha256_block_state(h0, readonly(k ^ np.uint8(0x5C), np.uint8)), np.uint32))


def hmac_sha256_many(buf, starts, ends, pads: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``HMAC-SHA256(key, buf[starts[i]:ends[i]])`` for every ``i``: (n, 32) uint8.  ``pads``:
    :func:`hmac_pads` of the key."""
    buf, starts, ends = _slices(buf, starts, ends)
    out = np.empty((starts.shape[0], DIGEST), np.uint8)
    _digest_many(buf, starts, ends, readonly(pads[0], np.uint32), BLOCK, readonly(pads[1], np.uint32), out)
    return out


def sha256_many(buf, starts, ends) -> np.ndarray:
    """``SHA256(buf[starts[i]:ends[i]])`` for every ``i``: (n, 32) uint8."""
    buf, starts, ends = _slices(buf, starts, ends)
    out = np.empty((starts.shape[0], DIGEST), np.uint8)
    _digest_many(buf, starts, ends, readonly(H0, np.uint32), 0, _NO_OUTER, out)
    return out
