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
(about 4x the throughput of one value at a time on this AVX-512 VM).  Where the CPU has the x86
SHA extensions (:data:`HAVE_SHA_NI`: most x86 server CPUs since 2017-2019), the wrappers take
:func:`_digest_many_ni` instead, one value at a time with ``sha256rnds2`` / ``sha256msg1`` /
``sha256msg2``, emitted through LLVM's intrinsics: 3x the multi-lane kernel on short values
(122 against 362 ns per HMAC here).  Numba compiles for the host CPU, and its cache is keyed by
the CPU's name and features, so a cached SHA-NI kernel never runs on a CPU without them.  The state is ``uint32`` words;
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
from llvmlite import ir
from numba.core import cgutils
from numba.core import types as nbtypes
from numba.extending import intrinsic

from ._jit import kernel, read_only

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


@kernel(inline="always")
def _word(buf, s, n, p):
    """The big-endian word at byte ``p`` of the padded message ``buf[s:s + n]``: its bytes, then
    0x80, then zeros (the last block's length words are set by the loaders).  Reads only
    ``buf[s:s + n]``."""
    if p + 4 <= n:
        return np.uint32((np.uint32(buf[s + p]) << np.uint32(24)) | (np.uint32(buf[s + p + 1]) << np.uint32(16))
                         | (np.uint32(buf[s + p + 2]) << np.uint32(8)) | np.uint32(buf[s + p + 3]))
    x = np.uint32(0)
    for r in range(4):
        b = np.uint32(0)
        if p + r < n:
            b = np.uint32(buf[s + p + r])
        elif p + r == n:
            b = np.uint32(0x80)
        x = np.uint32((x << np.uint32(8)) | b)
    return x


@kernel
def _load(buf, s, e, j, prefix, w, q):
    """Block ``j`` of the padded message ``buf[s:e]`` into lane ``q`` of ``w`` (rows 0..15);
    ``prefix``: bytes hashed before the message (in the length only)."""
    n = e - s
    for t in range(16):
        w[t, q] = _word(buf, s, n, BLOCK * j + 4 * t)
    if j == _n_blocks(n) - 1:                # the last block ends with the length in bits
        bits = np.uint64(prefix + n) * np.uint64(8)
        w[14, q] = np.uint32(bits >> np.uint64(32))
        w[15, q] = np.uint32(bits & np.uint64(0xFFFFFFFF))


@kernel
def _put_word(out, row, i, x):
    """Word ``i`` of a digest, big-endian, into ``out[row]``."""
    out[row, 4 * i] = np.uint8(x >> np.uint32(24))
    out[row, 4 * i + 1] = np.uint8((x >> np.uint32(16)) & np.uint32(0xFF))
    out[row, 4 * i + 2] = np.uint8((x >> np.uint32(8)) & np.uint32(0xFF))
    out[row, 4 * i + 3] = np.uint8(x & np.uint32(0xFF))


@kernel
def _store(st, q, out, row):
    for i in range(8):
        _put_word(out, row, i, st[i, q])


@kernel
def _check_slices(nbuf, starts, ends):
    if starts.shape[0] != ends.shape[0]:
        raise ValueError("starts and ends differ in length")
    for i in range(starts.shape[0]):
        if starts[i] < 0 or ends[i] < starts[i] or ends[i] > nbuf:
            raise ValueError("slice outside the buffer")


@kernel
def _check_args(buf, starts, ends, state, outer, out):
    """The digest kernels' arguments: slices inside ``buf``, ``out`` (n, 32), states of 8 words."""
    _check_slices(buf.shape[0], starts, ends)
    if out.shape[0] != starts.shape[0] or out.shape[1] != DIGEST:
        raise ValueError("out must be (n, 32)")
    if state.shape[0] != 8 or (outer.shape[0] != 8 and outer.shape[0] != 0):
        raise ValueError("a state has 8 words")


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
    _check_args(buf, starts, ends, state, outer, out)
    n = starts.shape[0]
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


# -- SHA extensions (x86 SHA-NI): one value at a time, four rounds an instruction -------------------

def _shuffle(builder, a, b, lanes):
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), 4), lanes))


@intrinsic
def _compress_ni(typingctx, state, w):
    """One SHA-256 compression of the 16 message words ``w`` (uint32, already big-endian
    decoded) into ``state`` (uint32[8], updated in place) with the SHA-NI instructions, in the
    order of Intel's reference code (state as ABEF / CDGH, four rounds per two ``sha256rnds2``,
    the schedule by ``sha256msg1`` / ``sha256msg2``).  No bounds check: the caller passes exactly
    8 and 16 words.  Only compiled where the CPU has SHA (:data:`HAVE_SHA_NI`)."""
    ok = all(isinstance(a, nbtypes.Array) and a.dtype == nbtypes.uint32 and a.ndim == 1 and a.layout == "C"
             for a in (state, w))
    if not ok:
        return None

    def codegen(context, builder, sig, args):
        v4 = ir.VectorType(ir.IntType(32), 4)
        mod = builder.module
        rnds2 = cgutils.get_or_insert_function(mod, ir.FunctionType(v4, [v4, v4, v4]), "llvm.x86.sha256rnds2")
        msg1 = cgutils.get_or_insert_function(mod, ir.FunctionType(v4, [v4, v4]), "llvm.x86.sha256msg1")
        msg2 = cgutils.get_or_insert_function(mod, ir.FunctionType(v4, [v4, v4]), "llvm.x86.sha256msg2")
        st = context.make_array(sig.args[0])(context, builder, args[0])
        wa = context.make_array(sig.args[1])(context, builder, args[1])

        def ptr(arr, i):
            return builder.bitcast(builder.gep(arr.data, [ir.Constant(ir.IntType(64), i)]), v4.as_pointer())

        def shuf(a, b, lanes):
            return _shuffle(builder, a, b, lanes)

        tmp = shuf(builder.load(ptr(st, 0), align=4), ir.Constant(v4, ir.Undefined), [1, 0, 3, 2])       # CDAB
        s1 = shuf(builder.load(ptr(st, 4), align=4), ir.Constant(v4, ir.Undefined), [3, 2, 1, 0])        # EFGH
        s0 = shuf(s1, tmp, [2, 3, 4, 5])                                                   # ABEF
        s1 = shuf(s1, tmp, [0, 1, 6, 7])                                                   # CDGH
        abef, cdgh = s0, s1
        m = [builder.load(ptr(wa, 4 * g), align=4) for g in range(4)]
        for g in range(16):
            k = ir.Constant(v4, [int(x) for x in _K[4 * g:4 * g + 4]])
            msg = builder.add(m[g % 4], k)
            s1 = builder.call(rnds2, [s1, s0, msg])
            if 3 <= g <= 14:         # the words of the group after next
                t = shuf(m[(g + 3) % 4], m[g % 4], [1, 2, 3, 4])                     # alignr(m[g], m[g-1], 4)
                m[(g + 1) % 4] = builder.call(msg2, [builder.add(m[(g + 1) % 4], t), m[g % 4]])
            msg = shuf(msg, ir.Constant(v4, ir.Undefined), [2, 3, 0, 0])
            s0 = builder.call(rnds2, [s0, s1, msg])
            if 1 <= g <= 12:
                m[(g + 3) % 4] = builder.call(msg1, [m[(g + 3) % 4], m[g % 4]])
        s0 = builder.add(s0, abef)
        s1 = builder.add(s1, cdgh)
        tmp = shuf(s0, ir.Constant(v4, ir.Undefined), [3, 2, 1, 0])                                     # FEBA
        s1 = shuf(s1, ir.Constant(v4, ir.Undefined), [1, 0, 3, 2])                                      # DCHG
        builder.store(shuf(tmp, s1, [0, 1, 6, 7]), ptr(st, 0), align=4)                    # DCBA
        builder.store(shuf(tmp, s1, [2, 3, 4, 5]), ptr(st, 4), align=4)                    # HGFE
        return context.get_dummy_value()
    return nbtypes.void(state, w), codegen


@kernel(_nrt=False)
def _load_one(buf, s, e, j, prefix, w):
    """Block ``j`` of the padded message ``buf[s:e]`` into ``w`` (16 words); as :func:`_load`."""
    n = e - s
    for t in range(16):
        w[t] = _word(buf, s, n, BLOCK * j + 4 * t)
    if j == _n_blocks(n) - 1:
        bits = np.uint64(prefix + n) * np.uint64(8)
        w[14] = np.uint32(bits >> np.uint64(32))
        w[15] = np.uint32(bits & np.uint64(0xFFFFFFFF))


@kernel(_nrt=True)
def _digest_many_ni(buf, starts, ends, state, prefix, outer, out):
    """:func:`_digest_many` with the SHA extensions, one value at a time."""
    _check_args(buf, starts, ends, state, outer, out)
    n = starts.shape[0]
    st = np.empty(8, np.uint32)
    w = np.empty(16, np.uint32)
    for i in range(n):
        s = starts[i]
        e = ends[i]
        for j in range(8):
            st[j] = state[j]
        for b in range(_n_blocks(e - s)):
            _load_one(buf, s, e, b, prefix, w)
            _compress_ni(st, w)
        if outer.shape[0] == 8:             # H((K ^ opad) || inner digest): one block
            for j in range(8):
                w[j] = st[j]
                st[j] = outer[j]
            w[8] = np.uint32(0x80000000)
            for j in range(9, 15):
                w[j] = 0
            w[15] = np.uint32((BLOCK + DIGEST) * 8)
            _compress_ni(st, w)
        for j in range(8):
            _put_word(out, i, j, st[j])


def _host_has_sha() -> bool:
    """Whether numba compiles for a CPU with the SHA extensions (its target is the host's)."""
    try:
        import llvmlite.binding as llvm

        return bool(llvm.get_host_cpu_features().get("sha", False))
    except Exception:  # noqa: BLE001 - no feature list: the portable kernel
        return False


HAVE_SHA_NI = _host_has_sha()


# -- public wrappers: dtypes, shapes and slices checked here ------------------------------------

def _digest():
    """The digest kernel this CPU runs (read at each call: the tests switch it)."""
    return _digest_many_ni if HAVE_SHA_NI else _digest_many


_NO_OUTER = np.zeros(0, np.uint32)
_NO_OUTER.flags.writeable = False

def _slices(buf, starts, ends):
    buf = read_only(buf, np.uint8)
    starts = read_only(starts, np.int64)
    ends = read_only(ends, np.int64)
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
    h0 = read_only(H0, np.uint32)
    return (read_only(sha256_block_state(h0, read_only(k ^ np.uint8(0x36), np.uint8)), np.uint32),
            read_only(sha256_block_state(h0, read_only(k ^ np.uint8(0x5C), np.uint8)), np.uint32))


def hmac_sha256_many(buf, starts, ends, pads: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``HMAC-SHA256(key, buf[starts[i]:ends[i]])`` for every ``i``: (n, 32) uint8.  ``pads``:
    :func:`hmac_pads` of the key."""
    buf, starts, ends = _slices(buf, starts, ends)
    out = np.empty((starts.shape[0], DIGEST), np.uint8)
    _digest()(buf, starts, ends, read_only(pads[0], np.uint32), BLOCK, read_only(pads[1], np.uint32), out)
    return out


def sha256_many(buf, starts, ends) -> np.ndarray:
    """``SHA256(buf[starts[i]:ends[i]])`` for every ``i``: (n, 32) uint8."""
    buf, starts, ends = _slices(buf, starts, ends)
    out = np.empty((starts.shape[0], DIGEST), np.uint8)
    _digest()(buf, starts, ends, read_only(H0, np.uint32), 0, _NO_OUTER, out)
    return out
