"""kernels/ipset.py: CIDR set lookup vs Python's ipaddress (slow, obviously correct)."""
from __future__ import annotations

import ipaddress

import numpy as np
from hypothesis import given, settings, strategies as st

from flowaudit.kernels import ipset as K

SETTINGS = settings(max_examples=150, deadline=None)


def ref_lookup(prefixes: list[str], addr: str) -> int:
    """Longest matching prefix by brute force; ties: the lowest entry index."""
    a = ipaddress.ip_address(addr)
    if a.version == 6 and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    best, best_len = -1, -1
    for i, p in enumerate(prefixes):
        n = ipaddress.ip_network(p)
        if n.version == 6 and n.prefixlen >= 96 and n.network_address.ipv4_mapped is not None:
            n = ipaddress.ip_network((n.network_address.ipv4_mapped, n.prefixlen - 96))
        if n.version == a.version and a in n and n.prefixlen > best_len:
            best, best_len = i, n.prefixlen
    return best


def v4_prefix(draw_int, plen):
    return str(ipaddress.IPv4Network(((draw_int >> (32 - plen)) << (32 - plen), plen)))


@st.composite
def v4_case(draw):
    # a small universe (one /16) so prefixes nest and collide often
    base = 0xC0A80000
    pre = []
    for _ in range(draw(st.integers(0, 12))):
        plen = draw(st.integers(16, 32))
        pre.append(v4_prefix(base | draw(st.integers(0, 0xFFFF)), plen))
    if draw(st.booleans()):
        pre.append(v4_prefix(draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 32))))
    addrs = [str(ipaddress.IPv4Address(base | draw(st.integers(0, 0xFFFF)))) for _ in range(20)]
    addrs += [str(ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))) for _ in range(5)]
    addrs += ["0.0.0.0", "255.255.255.255"]
    return pre, addrs


@st.composite
def v6_case(draw):
    base = 0x20010DB8 << 96
    pre = []
    for _ in range(draw(st.integers(0, 12))):
        plen = draw(st.integers(32, 128))
        x = base | draw(st.integers(0, 2**96 - 1)) & ~((1 << 64) - 1) | draw(st.integers(0, 3))
        pre.append(str(ipaddress.IPv6Network(((x >> (128 - plen)) << (128 - plen), plen))))
    if draw(st.booleans()):
        pre.append(draw(st.sampled_from(["::/0", "2000::/3", "::ffff:0:0/96", "::ffff:192.168.0.0/112"])))
    addrs = []
    for _ in range(20):
        x = base | (draw(st.integers(0, 2**32 - 1)) << 64 if draw(st.booleans()) else 0) | draw(st.integers(0, 3))
        addrs.append(str(ipaddress.IPv6Address(x)))
    addrs += ["::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::", "192.168.1.1", "::1"]
    return pre, addrs


def _check(pre, addrs):
    s = K.IPSet(pre)
    got = s.lookup_text(addrs)
    want = [ref_lookup(pre, a) for a in addrs]
    assert got.tolist() == want, (pre, addrs)


@SETTINGS
@given(v4_case())
def test_ipv4_matches_reference(case):
    _check(*case)


@SETTINGS
@given(v6_case())
def test_ipv6_matches_reference(case):
    _check(*case)


@SETTINGS
@given(v4_case(), v6_case())
def test_mixed_families_stay_apart(c4, c6):
    _check(c4[0] + c6[0], c4[1] + c6[1])


def test_larger_random_set_matches_numpy_peer():
    rng = np.random.default_rng(3)
    pre = []
    for _ in range(3000):
        plen = int(rng.integers(8, 33))
        pre.append(v4_prefix(int(rng.integers(0, 2**32)), plen))
    s = K.IPSet(pre)
    q = rng.integers(0, 2**32, size=20000, dtype=np.uint64)
    got = s.lookup(np.zeros_like(q), q | np.uint64(0xFFFF << 32))
    sample = rng.choice(q.size, 300, replace=False)
    for i in sample:
        assert got[i] == ref_lookup(pre, str(ipaddress.IPv4Address(int(q[i])))), i
    # the numpy peer over the same ranges agrees everywhere
    assert np.array_equal(got, s.v4[np.searchsorted(s.s4, q.astype(np.uint32), side="right") - 1])


def test_keys_roundtrip_and_mapped_contract():
    hi, lo = K.keys_of(["192.0.2.1", "2001:db8::1"])
    assert int(hi[0]) == 0 and int(lo[0]) == (0xFFFF << 32) | 0xC0000201   # ::ffff:192.0.2.1
    assert K.key_text(hi[0], lo[0]) == "192.0.2.1"
    assert K.key_text(hi[1], lo[1]) == "2001:db8::1"


def test_empty_set_and_duplicates():
    assert K.IPSet([]).lookup_text(["1.2.3.4", "::1"]).tolist() == [-1, -1]
    s = K.IPSet(["10.0.0.0/8", "10.0.0.0/8", "10.1.0.0/16"])
    assert s.lookup_text(["10.2.0.1", "10.1.2.3", "11.0.0.0"]).tolist() == [0, 2, -1]


def _ref_prefix(text: str):
    """parse_prefix by ipaddress alone: (family, network, length), or the error's type."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        return type(e)
    if net.version == 6 and net.prefixlen >= 96 and net.network_address.ipv4_mapped is not None:
        return 4, int(net.network_address.ipv4_mapped), net.prefixlen - 96
    return net.version, int(net.network_address), net.prefixlen


def _prefix_text():
    num = st.one_of(st.integers(0, 300).map(str), st.sampled_from(["00", "01", "010", "", "-1", "1a", "٣"]))
    v4 = st.builds(lambda a, b, c, d, n, sp: f"{sp}{a}.{b}.{c}.{d}{n}{sp}", num, num, num, num,
                   st.one_of(st.just(""), num.map(lambda x: "/" + x)), st.sampled_from(["", " ", "\t"]))
    return st.one_of(v4, st.builds(lambda n, k: str(ipaddress.IPv4Network((n, k), strict=False)),
                                   st.integers(0, 2**32 - 1), st.integers(0, 32)),
                     st.text(alphabet="0123456789./:af ", max_size=24))


@given(st.lists(_prefix_text(), min_size=1, max_size=40))
@SETTINGS
def test_parse_prefix_equals_ipaddress(texts):
    """The dotted-IPv4 fast path gives what ipaddress gives, and refuses what it refuses."""
    for t in texts:
        try:
            got = K.parse_prefix(t)
        except ValueError as e:
            got = type(e)
        assert got == _ref_prefix(t), t


def test_strict_prefixes_rejected():
    import pytest
    with pytest.raises(ValueError):
        K.IPSet(["192.0.2.1/24"])


def test_exact_lookup_kernel():
    keys = sorted({(int(a), int(b)) for a, b in np.random.default_rng(1).integers(0, 5, size=(50, 2))})
    kh = np.array([k[0] for k in keys], np.uint64)
    kl = np.array([k[1] for k in keys], np.uint64)
    qh = np.arange(6, dtype=np.uint64).repeat(6)
    ql = np.tile(np.arange(6, dtype=np.uint64), 6)
    out = K.exact_lookup(kh, kl, qh, ql, np.empty(36, np.int64))
    want = [keys.index((int(h), int(w))) if (int(h), int(w)) in keys else -1 for h, w in zip(qh, ql)]
    assert out.tolist() == want
