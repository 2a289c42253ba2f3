"""SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104) over many byte slices in one call.

The hits of a batch are keyed with HMAC-SHA256 under the operator key, so that a value written
today joins with the same value written by any earlier version.  Hashing them here, over the
batch's value buffer, saves a Python ``bytes`` object and a C call per distinct value.

* :func:`hmac_pads`: the two SHA-256 states after the key block XOR ipad / opad (the key
  schedule of RFC 2104, done once per key, not once per value);
* :func:`hmac_sha256_many`: ``HMAC(key, buf[starts[i]:ends[i]])`` for every ``i`` -> (n, 32) uint8;
* :func:`sha256_many`: ``SHA256(buf[starts[i]:ends[i]])`` -> (n, 32) uint8.

The state is ``uint32`` words; every sum is cast back to ``uint32``, so whatever width numba
promotes an intermediate to, the result is the arithmetic modulo 2**32 that SHA-256 specifies.  The public wrappers check dtypes, shapes and
every slice against the buffer before the kernel runs; the kernels check the slices again (numba
does not bounds-check) and raise on a bad one rather than read outside the buffer.
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


@kernel(inline="always")
def _rotr(x, n):
    return np.uint32((x >> np.uint32(n)) | (x << np.uint32(32 - n)))


@kernel(inline="always")
def _compress(h, w, src, pos):
    """One block ``src[pos:pos + 64]`` into the state ``h`` (8 words); ``w``: 64 words of scratch.
    The caller guarantees ``pos + 64 <= len(src)``.  Every sum is cut back to 32 bits."""
    for t in range(16):
        p = pos + 4 * t
        w[t] = np.uint32((np.uint32(src[p]) << np.uint32(24)) | (np.uint32(src[p + 1]) << np.uint32(16))
                         | (np.uint32(src[p + 2]) << np.uint32(8)) | np.uint32(src[p + 3]))
    for t in range(16, 64):
        x = w[t - 15]
        y = w[t - 2]
        s0 = _rotr(x, 7) ^ _rotr(x, 18) ^ np.uint32(x >> np.uint32(3))
        s1 = _rotr(y, 17) ^ _rotr(y, 19) ^ np.uint32(y >> np.uint32(10))
        w[t] = np.uint32(w[t - 16] + s0 + w[t - 7] + s1)
    a = h[0]
    b = h[1]
    c = h[2]
    d = h[3]
    e = h[4]
    f = h[5]
    g = h[6]
    k = h[7]
    for t in range(64):
        s1 = _rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)
        ch = np.uint32((e & f) ^ (np.uint32(~e) & g))
        t1 = np.uint32(k + s1 + ch + _K[t] + w[t])
        s0 = _rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)
        maj = np.uint32((a & b) ^ (a & c) ^ (b & c))
        t2 = np.uint32(s0 + maj)
        k = g
        g = f
        f = e
        e = np.uint32(d + t1)
        d = c
        c = b
        b = a
        a = np.uint32(t1 + t2)
    h[0] = np.uint32(h[0] + a)
    h[1] = np.uint32(h[1] + b)
    h[2] = np.uint32(h[2] + c)
    h[3] = np.uint32(h[3] + d)
    h[4] = np.uint32(h[4] + e)
    h[5] = np.uint32(h[5] + f)
    h[6] = np.uint32(h[6] + g)
    h[7] = np.uint32(h[7] + k)


@kernel(inline="always")
def _update_final(h, w, blk, buf, s, e, prefix):
    """Hash ``buf[s:e]`` into ``h``, which already holds ``prefix`` bytes (a multiple of 64), and
    pad (0x80, zeros, the bit length big-endian).  ``blk``: 64 bytes of scratch."""
    p = s
    while e - p >= BLOCK:
        _compress(h, w, buf, p)
        p += BLOCK
    r = e - p
    for i in range(r):
        blk[i] = buf[p + i]
    blk[r] = 0x80
    for i in range(r + 1, BLOCK):
        blk[i] = 0
    if r >= BLOCK - 8:                       # no room for the length: one more block
        _compress(h, w, blk, 0)
        for i in range(BLOCK - 8):
            blk[i] = 0
    bits = np.uint64(prefix + e - s) * np.uint64(8)
    for i in range(8):
        blk[BLOCK - 1 - i] = np.uint8((bits >> np.uint64(8 * i)) & np.uint64(0xFF))
    _compress(h, w, blk, 0)


@kernel(inline="always")
def _store(h, out, row):
    for i in range(8):
        x = h[i]
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
    h = state.copy()
    w = np.empty(64, np.uint32)
    _compress(h, w, block, 0)
    return h


@kernel
def _sha256_many(buf, starts, ends, out):
    _check_slices(buf.shape[0], starts, ends)
    if out.shape[0] != starts.shape[0] or out.shape[1] != DIGEST:
        raise ValueError("out must be (n, 32)")
    h = np.empty(8, np.uint32)
    w = np.empty(64, np.uint32)
    blk = np.empty(BLOCK, np.uint8)
    for i in range(starts.shape[0]):
        for j in range(8):
            h[j] = H0[j]
        _update_final(h, w, blk, buf, starts[i], ends[i], 0)
        _store(h, out, i)


@kernel
def _hmac_sha256_many(buf, starts, ends, istate, ostate, out):
    _check_slices(buf.shape[0], starts, ends)
    if out.shape[0] != starts.shape[0] or out.shape[1] != DIGEST:
        raise ValueError("out must be (n, 32)")
    if istate.shape[0] != 8 or ostate.shape[0] != 8:
        raise ValueError("a pad state has 8 words")
    h = np.empty(8, np.uint32)
    w = np.empty(64, np.uint32)
    blk = np.empty(BLOCK, np.uint8)
    inner = np.empty(DIGEST, np.uint8)
    for i in range(starts.shape[0]):
        for j in range(8):
            h[j] = istate[j]
        _update_final(h, w, blk, buf, starts[i], ends[i], BLOCK)     # H((K ^ ipad) || m)
        for j in range(8):
            x = h[j]
            inner[4 * j] = np.uint8(x >> np.uint32(24))
            inner[4 * j + 1] = np.uint8((x >> np.uint32(16)) & np.uint32(0xFF))
            inner[4 * j + 2] = np.uint8((x >> np.uint32(8)) & np.uint32(0xFF))
            inner[4 * j + 3] = np.uint8(x & np.uint32(0xFF))
            h[j] = ostate[j]
        _update_final(h, w, blk, inner, 0, DIGEST, BLOCK)           # H((K ^ opad) || inner)
        _store(h, out, i)


# -- public wrappers: dtypes, shapes and slices checked here ------------------------------------

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
    return (sha256_block_state(h0, readonly(k ^ np.uint8(0x36), np.uint8)),
            sha256_block_state(h0, readonly(k ^ np.uint8(0x5C), np.uint8)))


def hmac_sha256_many(buf, starts, ends, pads: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``HMAC-SHA256(key, buf[starts[i]:ends[i]])`` for every ``i``: (n, 32) uint8.  ``pads``:
    :func:`hmac_pads` of the key."""
    buf, starts, ends = _slices(buf, starts, ends)
    out = np.empty((starts.shape[0], DIGEST), np.uint8)
    istate = readonly(pads[0], np.uint32)
    ostate = readonly(pads[1], np.uint32)
    _hmac_sha256_many(buf, starts, ends, istate, ostate, out)
    return out


def sha256_many(buf, starts, ends) -> np.ndarray:
    """``SHA256(buf[starts[i]:ends[i]])`` for every ``i``: (n, 32) uint8."""
    buf, starts, ends = _slices(buf, starts, ends)
    out = np.empty((starts.shape[0], DIGEST), np.uint8)
    _sha256_many(buf, starts, ends, out)
    return out
