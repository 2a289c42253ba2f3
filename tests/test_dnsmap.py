"""flowaudit/dnsmap.py: TTL expiry on record time, bounded size, CNAME chains, array join."""
from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings, strategies as st

from flowaudit.dnsmap import DnsMap
from flowaudit.kernels import ipset as K

T0 = 1_700_000_000.0
NS = 1_000_000_000


def line(ts, query, answers, ttls, **kw):
    rec = {"ts": ts, "uid": "C1", "id.orig_h": "10.40.1.5", "id.resp_h": "10.40.0.53", "proto": "udp",
           "query": query, "qtype_name": "A", "rcode_name": "NOERROR", "answers": answers, "TTLs": ttls}
    rec.update(kw)
    return json.dumps(rec).encode()


def test_ttl_on_record_time():
    d = DnsMap(skew_s=0)
    d.observe_lines([line(T0, "gateway.logink.cn", ["203.0.113.9"], [60.0])])
    t = int(T0 * NS)
    assert d.get("203.0.113.9", t + 30 * NS) == "gateway.logink.cn"
    assert d.get("203.0.113.9", t + 61 * NS) is None        # TTL over for a flow at that time
    assert d.get("203.0.113.9", t - 1 * NS) is None         # before the answer
    # record time moves on (a later answer): the expired entry is dropped from the map
    d.observe_lines([line(T0 + 120, "other.example", ["198.51.100.1"], [60.0])])
    assert len(d) == 1 and d.stats["expired"] == 1


def test_iso_timestamps_and_bad_lines_counted():
    d = DnsMap()
    stored = d.observe_lines([b"not json", b"[1]", b"", b"#fields ts", line("2023-11-14T22:13:20Z", "a.example", ["192.0.2.1"], [10.0]),
                              json.dumps({"query": "x"}).encode()])
    assert len(stored) == 1 and d.stats["bad_lines"] == 3


def test_bounded_lru():
    d = DnsMap(max_entries=3)
    for i in range(10):
        d.observe_lines([line(T0 + i, f"h{i}.example", [f"192.0.2.{i}"], [3600.0])])
    assert len(d) == 3 and d.stats["evicted"] == 7
    assert d.get("192.0.2.9", int((T0 + 10) * NS)) == "h9.example"
    assert d.get("192.0.2.0", int((T0 + 10) * NS)) is None


def test_keep_filter_and_cname_chain():
    d = DnsMap(keep=lambda n: n.rstrip(".").lower().endswith("logink.cn"))
    stored = d.observe_lines([
        line(T0, "portal.example.com", ["portal.gateway.logink.cn", "203.0.113.7"], [30.0, 30.0]),
        line(T0, "www.example.com", ["192.0.2.8"], [30.0]),
        line(T0, "gateway.logink.cn", ["2001:db8::7"], [30.0], qtype_name="AAAA"),
        line(T0, "gateway.logink.cn", [], [], rcode_name="NXDOMAIN"),
    ])
    assert [(s.addr, s.name) for s in stored] == [("203.0.113.7", "portal.gateway.logink.cn"),
                                                  ("2001:db8::7", "gateway.logink.cn")]
    assert len(d) == 2


def test_attribute_arrays_join():
    d = DnsMap(skew_s=0)
    d.observe_lines([line(T0, "gateway.logink.cn", ["203.0.113.9", "203.0.113.10"], [60.0, 10.0]),
                     line(T0, "ssl.logink.cn", ["2001:db8::5"], [60.0])])
    hi, lo = K.keys_of(["203.0.113.9", "203.0.113.10", "2001:db8::5", "192.0.2.1"])
    t = np.full(4, int((T0 + 30) * NS), np.int64)
    idx, names = d.attribute(hi, lo, t)
    assert [names[i] if i >= 0 else None for i in idx] == ["gateway.logink.cn", None, "ssl.logink.cn", None]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 7), st.integers(1, 50)), max_size=40),
       st.integers(1, 6), st.integers(0, 300))
def test_model(events, cap, probe):
    """Against a plain dict model: last answer per address wins, LRU by answer, TTL window."""
    d = DnsMap(max_entries=cap, skew_s=0)
    model: dict[str, tuple[str, int, int]] = {}
    order: list[str] = []
    now = 0
    for k, (dt, host, ttl) in enumerate(sorted(events)):
        addr = f"192.0.2.{host}"
        ts = T0 + dt
        d.observe_lines([line(ts, f"n{k}.example", [addr], [float(ttl)])])
        tsn = int(round(ts * NS))
        now = max(now, tsn)
        model[addr] = (f"n{k}.example", tsn, tsn + ttl * NS)
        if addr in order:
            order.remove(addr)
        order.append(addr)
        while len(order) > cap:
            model.pop(order.pop(0))
        for a in list(model):
            if model[a][2] < now:
                model.pop(a)
                order.remove(a)
    assert len(d) == len(model) <= cap
    t = int(round((T0 + probe) * NS))
    for host in range(8):
        a = f"192.0.2.{host}"
        m = model.get(a)
        want = m[0] if m and m[1] <= t <= m[2] else None
        assert d.get(a, t) == want
