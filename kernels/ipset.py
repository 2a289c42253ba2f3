"""IPv4/IPv6 address and CIDR set lookup: the most specific matching entry per address.

Addresses travel as two uint64 arrays (``hi``, ``lo``: the 128-bit address, big-endian halves),
IPv4 as IPv4-mapped IPv6 (``::ffff:a.b.c.d``: ``hi == 0``, ``lo >> 32 == 0xffff``), the
contract of the NetFlow decoder.

Layout (built once in Python by :class:`IPSet`, read by the kernels):

* The prefixes of each family are flattened into **sorted disjoint ranges** that tile the
  whole address space; each range carries the entry index of the longest prefix covering it
  (``-1``: none).  Prefixes nest or are disjoint, so one sweep with a stack does it.
* A **first-level table** over ``k`` address bits (about 8 buckets per range, 2**8..2**20
  buckets) gives, per bucket, either the entry itself (the bucket lies in one range: no search)
  or the index range of the candidate ranges, so the binary search runs over a handful of
  entries.  For IPv6 the table spans only the bits of ``hi`` that vary among the prefixes
  (they cluster: 2000::/3, one operator's /32); addresses outside that window search all ranges.

IPv4 and IPv6 are separate spaces, as in Python's ``ipaddress`` (an IPv4 address is never in an
IPv6 network): IPv4(-mapped) addresses are looked up among IPv4 entries only, every other
address among IPv6 entries.  An IPv6 entry written as an IPv4-mapped prefix
(``::ffff:192.0.2.0/120``) is stored as the IPv4 prefix it denotes.

Ties (the same prefix given twice) resolve to the lowest entry index.
"""
from __future__ import annotations

import ipaddress
import re

import numpy as np

from ._jit import kernel

_V4TAG = np.uint64(0xFFFF)      # bits 32..47 of an IPv4-mapped address (lo >> 32)
_U32 = np.uint64(32)
_ZERO = np.uint64(0)
_LOW32 = np.uint64(0xFFFFFFFF)
_M64 = (1 << 64) - 1


# ------------------------------------------------------------------------------ kernels
@kernel(inline="always")
def _find_v4(a, e4, b4, s4, v4, shift4):
    b = a >> shift4
    e = e4[b]
    if e < 0:  # the whole bucket lies in one range: its entry is stored inline as -(entry + 2)
        return -e - 2
    l = e
    r = b4[b + 1]
    while l < r:  # the last range start <= a within [l, r]
        m = (l + r + 1) >> 1
        if s4[m] <= a:
            l = m
        else:
            r = m - 1
    return v4[l]


@kernel(inline="always")
def _find_v6(hi, lo, e6, b6, h6, l6, v6, shift6, mask6, wshift, wtop):
    if wshift < 64 and (hi >> wshift) != wtop:
        l = 0  # outside the window the first-level table covers: search all ranges
        r = h6.shape[0] - 1
    else:
        b = (hi >> shift6) & mask6
        e = e6[b]
        if e < 0:
            return -e - 2
        l = e
        r = b6[b + 1]
    while l < r:
        m = (l + r + 1) >> 1
        mh = h6[m]
        if mh < hi or (mh == hi and l6[m] <= lo):
            l = m
        else:
            r = m - 1
    return v6[l]


@kernel
def lookup_kernel(hi, lo, e4, b4, s4, v4, shift4, e6, b6, h6, l6, v6, shift6, mask6, wshift, wtop, out):
    """``out[i]`` = entry index of the most specific prefix holding address ``i``, or -1."""
    n = hi.shape[0]
    for i in range(n):
        h = hi[i]
        w = lo[i]
        if h == _ZERO and (w >> _U32) == _V4TAG:
            out[i] = _find_v4(np.uint32(w & _LOW32), e4, b4, s4, v4, shift4)
        else:
            out[i] = _find_v6(h, w, e6, b6, h6, l6, v6, shift6, mask6, wshift, wtop)
    return out


@kernel
def exact_lookup(keys_hi, keys_lo, q_hi, q_lo, out):
    """Exact 128-bit key match over keys sorted by (hi, lo): index of the key or -1."""
    n = keys_hi.shape[0]
    for i in range(q_hi.shape[0]):
        h = q_hi[i]
        w = q_lo[i]
        l = 0
        r = n
        while l < r:  # first key >= (h, w)
            m = (l + r) >> 1
            kh = keys_hi[m]
            if kh < h or (kh == h and keys_lo[m] < w):
                l = m + 1
            else:
                r = m
        out[i] = l if (l < n and keys_hi[l] == h and keys_lo[l] == w) else -1
    return out


# ------------------------------------------------------------------------------ builder
def _sweep(prefixes: list[tuple[int, int, int]], bits: int) -> tuple[list[int], list[int]]:
    """(start, plen, entry) prefixes -> range starts and entry per range (tiling [0, 2**bits))."""
    top = (1 << bits) - 1
    items = sorted((s, p, e) for s, p, e in prefixes)  # start asc, enclosing first, lowest entry first
    starts: list[int] = []
    vals: list[int] = []

    def emit(pos: int, val: int) -> None:
        if pos > top:
            return
        if starts and starts[-1] == pos:
            starts.pop()
            vals.pop()
        if vals and vals[-1] == val:
            return
        starts.append(pos)
        vals.append(val)

    emit(0, -1)
    stack: list[tuple[int, int, int]] = []  # (start, end, entry)
    for s, p, e in items:
        end = s + (1 << (bits - p)) - 1
        while stack and stack[-1][1] < s:
            _, pend, _ = stack.pop()
            emit(pend + 1, stack[-1][2] if stack else -1)
        if stack and stack[-1][0] == s and stack[-1][1] == end:
            continue  # the same prefix again: the first entry keeps it
        emit(s, e)
        stack.append((s, end, e))
    while stack:
        _, pend, _ = stack.pop()
        emit(pend + 1, stack[-1][2] if stack else -1)
    return starts, vals


def _bucket_bits(n_ranges: int) -> int:
    """First-level table size: about 8 buckets per range, between 2**8 and 2**20 (4 MiB)."""
    return int(min(20, max(8, n_ranges.bit_length() + 3)))


def _first_level(b: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """Per bucket: the first candidate range, or -(entry + 2) when one range covers the bucket."""
    uniform = b[:-1] == b[1:]
    return np.where(uniform, -(vals[b[:-1]].astype(np.int64) + 2), b[:-1]).astype(np.int32)


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# dotted IPv4 as ipaddress reads it (no leading zeros), an optional /0../32 without leading zeros
_V4_PREFIX = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?:/(3[0-2]|[12]?[0-9]))?", re.ASCII)


def parse_prefix(text: str) -> tuple[int, int, int]:
    """'192.0.2.0/24', '2001:db8::/32', '192.0.2.1' -> (family 4|6, network int, prefix length).

    Host bits must be zero (``192.0.2.1/24`` is an error, as in ``ipaddress`` strict mode);
    an IPv4-mapped IPv6 prefix of length >= 96 is returned as the IPv4 prefix it denotes.
    """
    t = text.strip()
    m = _V4_PREFIX.fullmatch(t)
    if m is not None:                      # the common case, without ipaddress' objects (10x faster)
        a, b, c, d, n = m.groups()
        net = (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
        plen = 32 if n is None else int(n)
        if net & ((1 << (32 - plen)) - 1) == 0:
            return 4, net, plen
    net = ipaddress.ip_network(t, strict=True)     # anything else, and the errors, as ipaddress says
    if net.version == 6 and net.prefixlen >= 96 and net.network_address.ipv4_mapped is not None:
        return 4, int(net.network_address.ipv4_mapped), net.prefixlen - 96
    return net.version, int(net.network_address), net.prefixlen


def addr_key(text: str) -> tuple[int, int]:
    """An address as the (hi, lo) 128-bit key of the flow arrays (IPv4 -> IPv4-mapped)."""
    a = ipaddress.ip_address(text.strip())
    v = (0xFFFF << 32) | int(a) if a.version == 4 else int(a)
    return v >> 64, v & _M64


def key_text(hi: int, lo: int) -> str:
    """Inverse of :func:`addr_key`: IPv4-mapped keys print as dotted IPv4, others RFC 5952."""
    hi, lo = int(hi), int(lo)
    if hi == 0 and lo >> 32 == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def keys_of(texts) -> tuple[np.ndarray, np.ndarray]:
    """Address strings -> (hi, lo) uint64 arrays."""
    pairs = [addr_key(t) for t in texts]
    hi = np.fromiter((p[0] for p in pairs), np.uint64, count=len(pairs))
    lo = np.fromiter((p[1] for p in pairs), np.uint64, count=len(pairs))
    return hi, lo


class IPSet:
    """A compiled, immutable set of IPv4/IPv6 addresses and CIDR prefixes.

    ``IPSet(["192.0.2.0/24", "2001:db8::/32", ...])``: entry ``i`` is the i-th prefix (a bare
    address is a /32 or /128).  :meth:`lookup` returns, per address, the entry index of the most
    specific prefix containing it, or -1.
    """

    def __init__(self, prefixes, *, parsed: list[tuple[int, int, int]] | None = None):
        if parsed is None:
            parsed = [parse_prefix(p) for p in prefixes]
        self.n_entries = len(parsed)
        self.prefixes = parsed
        p4 = [(net, plen, i) for i, (fam, net, plen) in enumerate(parsed) if fam == 4]
        p6 = [(net, plen, i) for i, (fam, net, plen) in enumerate(parsed) if fam == 6]
        s4, v4 = _sweep(p4, 32)
        self.s4 = np.asarray(s4, dtype=np.uint32)
        self.v4 = np.asarray(v4, dtype=np.int32)
        k4 = _bucket_bits(len(s4))
        self.shift4 = np.uint32(32 - k4)
        firsts = np.arange(1 << k4, dtype=np.uint64) << np.uint64(32 - k4)
        b4 = np.searchsorted(self.s4.astype(np.uint64), firsts, side="right").astype(np.int64) - 1
        self.b4 = np.append(b4, len(s4) - 1).astype(np.int32)   # range holding each bucket's first address
        self.e4 = _first_level(self.b4, self.v4)

        s6, v6 = _sweep(p6, 128)
        self.h6 = np.fromiter((s >> 64 for s in s6), np.uint64, count=len(s6))
        self.l6 = np.fromiter((s & _M64 for s in s6), np.uint64, count=len(s6))
        self.v6 = np.asarray(v6, dtype=np.int32)
        # IPv6 prefixes cluster (2000::/3, one operator's /32 ...): the first-level table spans
        # only the bits of ``hi`` that vary among the range starts (the window); addresses
        # outside the window fall back to a binary search over all ranges
        n6 = len(s6)
        d = 64
        wtop = 0
        if n6 > 1:
            lo_h, hi_h = min(x >> 64 for x in s6[1:]), max(x >> 64 for x in s6[1:])
            d = (lo_h ^ hi_h).bit_length()
            wtop = lo_h >> d if d < 64 else 0
        k6 = min(_bucket_bits(n6), d)
        self.shift6 = np.uint64(d - k6)
        self.mask6 = np.uint64((1 << k6) - 1)
        self.wshift = np.uint64(d)
        self.wtop = np.uint64(wtop)
        base = np.uint64((wtop << d) & _M64) if d < 64 else np.uint64(0)
        firsts = base | (np.arange(1 << k6, dtype=np.uint64) << self.shift6)
        # the range holding address (first, 0): the last start <= (first, 0); starts are unique
        # and the first one is 0, so it is the first start >= (first, 0) when equal, else the one before
        i = np.searchsorted(self.h6, firsts, side="left").astype(np.int64)
        j = np.minimum(i, n6 - 1)
        exact = (i < n6) & (self.h6[j] == firsts) & (self.l6[j] == 0)
        self.b6 = np.append(np.where(exact, i, i - 1), n6 - 1).astype(np.int32)
        self.e6 = _first_level(self.b6, self.v6)
        self.n_ranges = len(s4) + len(s6)
        self.nbytes = sum(a.nbytes for a in (self.s4, self.v4, self.b4, self.e4, self.h6, self.l6,
                                             self.v6, self.b6, self.e6))

    def lookup(self, hi: np.ndarray, lo: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Entry index (int32) of the most specific prefix per address; -1: none."""
        hi = np.ascontiguousarray(hi, dtype=np.uint64)
        lo = np.ascontiguousarray(lo, dtype=np.uint64)
        if hi.shape != lo.shape or hi.ndim != 1:
            raise ValueError("ipset: hi and lo must be 1-d arrays of one length")
        if out is None:
            out = np.empty(hi.shape[0], dtype=np.int32)
        return lookup_kernel(hi, lo, self.e4, self.b4, self.s4, self.v4, self.shift4,
                             self.e6, self.b6, self.h6, self.l6, self.v6, self.shift6, self.mask6,
                             self.wshift, self.wtop, out)

    def lookup_text(self, addrs) -> np.ndarray:
        hi, lo = keys_of(addrs)
        return self.lookup(hi, lo)
