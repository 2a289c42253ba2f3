"""flowaudit/detect/dnsmap.py: TTL expiry on record time, bounded size, CNAME chains, array join,
Zeek's ASCII (tab-separated) logs and gzip-rotated files."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from flowaudit.detect.dnsmap import DnsMap, dns_log, log_files
from flowaudit.kernels import ipset as K
from flowaudit.sources.files import open_input
from flowaudit.sources.zeek import CONN_FIELDS, DNS_FIELDS, write_ascii

T0 = 1_700_000_000.0
NS = 1_000_000_000


def line(ts, query, answers, ttls, **kw):
    rec = {"ts": ts, "uid": "C1", "id.orig_h": "10.40.1.5", "id.resp_h": "10.40.0.53", "proto": "udp",
           "query": query, "qtype_name": "A", "rcode_name": "NOERROR", "answers": answers, "TTLs": ttls}
    rec.update(kw)
    return json.dumps(rec).encode()


def zeek_ascii(records, path: str = "dns", fields=None) -> bytes:
    """Records as Zeek's ASCII writer writes them (flowaudit.sources.zeek.write_ascii)."""
    return write_ascii(records, path, fields or (CONN_FIELDS if path == "conn" else DNS_FIELDS))


def test_ttl_on_record_time():
    d = DnsMap(skew_s=0, horizon_s=600)
    d.observe_lines([line(T0, "gateway.logink.cn", ["203.0.113.9"], [60.0])])
    t = int(T0 * NS)
    assert d.get("203.0.113.9", t + 30 * NS) == "gateway.logink.cn"
    assert d.get("203.0.113.9", t + 61 * NS) is None        # TTL over for a flow at that time
    assert d.get("203.0.113.9", t - 1 * NS) is None         # before the answer
    # a later answer within the horizon keeps the interval: a flow that started inside the TTL
    # may be exported long after (active timeout)
    d.observe_lines([line(T0 + 120, "other.example", ["198.51.100.1"], [60.0])])
    assert len(d) == 2 and d.get("203.0.113.9", t + 30 * NS) == "gateway.logink.cn"
    # record time moves past the horizon: the interval is dropped from the map
    d.observe_lines([line(T0 + 700, "third.example", ["198.51.100.2"], [60.0])])
    assert len(d) == 2 and d.stats["expired"] == 1
    assert d.get("203.0.113.9", t + 30 * NS) is None


def test_flow_start_time_against_answer_validity():
    """Answer A at t0 (TTL 300); a later answer B for another name at t0+200; a flow that started
    at t0+100 and is exported at t0+250 is A's, one that started at t0+400 nobody's -- also when B
    re-resolves the same address, and when B comes long after the flow's start (export lag)."""
    for b_addr, b_dt in (("198.51.100.1", 200), ("203.0.113.9", 200), ("198.51.100.1", 1000),
                         ("203.0.113.9", 1000)):
        d = DnsMap()   # default grace 5 s, horizon 1 h
        d.observe_lines([line(T0, "gateway.logink.cn", ["203.0.113.9"], [300.0])])
        d.observe_lines([line(T0 + b_dt, "cdn.example", [b_addr], [300.0])])
        hi, lo = K.keys_of(["203.0.113.9", "203.0.113.9"])
        idx, names = d.attribute(hi, lo, np.array([int((T0 + 100) * NS), int((T0 + 400) * NS)], np.int64))
        assert names[idx[0]] == "gateway.logink.cn", (b_addr, b_dt)
        assert idx[1] == -1 or (b_addr == "203.0.113.9" and b_dt == 200 and names[idx[1]] == "cdn.example")
        assert d.get("203.0.113.9", int((T0 + 100) * NS)) == "gateway.logink.cn"
        # grace: 5 s either side of [answer, answer + TTL]
        assert d.get("203.0.113.9", int((T0 - 4) * NS)) == "gateway.logink.cn"
        b_covers = b_addr == "203.0.113.9" and b_dt == 200      # B's own interval is [t0+195, t0+505]
        assert d.get("203.0.113.9", int((T0 + 304) * NS)) == ("cdn.example" if b_covers else "gateway.logink.cn")
        assert d.get("203.0.113.9", int((T0 + 306) * NS)) == ("cdn.example" if b_covers else None)


def test_state_round_trip_and_corrupt_state():
    d = DnsMap(skew_s=0)
    d.observe_lines([line(T0, "gateway.logink.cn", ["203.0.113.9", "2001:db8::5"], [300.0, 60.0]),
                     line(T0 + 10, "cdn.example", ["203.0.113.9"], [30.0])])
    state = json.loads(json.dumps(d.to_state()))
    e = DnsMap(skew_s=0)
    assert e.load_state(state) == 3
    for addr in ("203.0.113.9", "2001:db8::5", "192.0.2.1"):
        for dt in (0, 15, 50, 100, 400):
            assert e.get(addr, int((T0 + dt) * NS)) == d.get(addr, int((T0 + dt) * NS))
    assert e.now_ns == d.now_ns
    for bad in ({}, {"entries": 3, "now_ns": 1}, {"entries": [["not an ip", []]], "now_ns": 1},
                {"entries": [["192.0.2.1", [["x", "a", 1, 1]]]], "now_ns": 1}):
        f = DnsMap()
        try:
            f.load_state(bad)
            raise AssertionError("accepted a bad state")
        except ValueError:
            pass
        assert len(f) == 0


def test_iso_timestamps_and_bad_lines_counted():
    d = DnsMap()
    stored = d.observe_lines([b"not json", b"[1]", b"", b"#fields ts", line("2023-11-14T22:13:20Z", "a.example", ["192.0.2.1"], [10.0]),
                              json.dumps({"query": "x"}).encode()])
    assert len(stored) == 1 and d.stats["bad_lines"] == 3


def test_zeek_ascii_rows_read_as_the_json_writer_writes_them():
    """Zeek's default log format (tab-separated, after its header) gives the records its JSON
    writer gives: unset fields left out, numbers and booleans typed, vectors as lists, the empty
    vector ``[]``, ``\\xHH`` escapes undone."""
    recs = [json.loads(line(T0, "gateway.logink.cn", ["cname.logink.cn", "203.0.113.9"], [60.0, 30.5])),
            json.loads(line(T0 + 1.25, "odd\tname,x.example", [], [], rcode_name="NXDOMAIN")),
            {"ts": T0 + 2, "query": "ssl.logink.cn", "answers": ["2001:db8::5"], "TTLs": [5.0], "AA": False}]
    log = dns_log()
    got = [r for r in map(log.record, zeek_ascii(recs).splitlines()) if r is not None]
    assert got == recs
    # the same map from either writer's lines, and from a gzip-rotated file
    a, b = DnsMap(), DnsMap()
    a.observe_lines([json.dumps(r).encode() for r in recs])
    b.observe_lines(zeek_ascii(recs).splitlines())
    assert a.stats == b.stats and a.to_state() == b.to_state() and len(a) == 2


def test_zeek_ascii_rows_that_fit_no_header_are_bad_lines(tmp_path):
    """A row with more or fewer values than ``#fields`` names, or a row of another Zeek log (``#path
    conn``) is a bad line with the reason ``format_mismatch``; a JSON line among them stays JSON."""
    good = json.loads(line(T0, "gateway.logink.cn", ["203.0.113.9"], [60.0]))
    text = zeek_ascii([good]).splitlines()
    rows = text[:-1] + [b"1.0\tC1", text[-2] + b"\textra", line(T0, "ssl.logink.cn", ["203.0.113.10"], [60.0]),
                        b"{broken"]
    bad: list = []
    d = DnsMap()
    stored = d.observe_lines(rows, bad)
    assert [(s.addr, s.name) for s in stored] == [("203.0.113.9", "gateway.logink.cn"),
                                                  ("203.0.113.10", "ssl.logink.cn")]
    n = len(text) - 1
    assert [(i, r) for i, _l, r in bad] == [(n, "format_mismatch"), (n + 1, "format_mismatch"),
                                            (n + 3, "malformed_json")]
    conn = zeek_ascii([good], path="conn").splitlines()
    bad = []
    assert DnsMap().observe_lines(conn, bad) == [] and [r for _i, _l, r in bad] == ["format_mismatch"]
    # files: gzip as Zeek's rotation leaves them; folders give their dns* files; another log is refused
    day = tmp_path / "2026-03-01"
    day.mkdir()
    (day / "dns.06:00:00-07:00:00.log.gz").write_bytes(gzip.compress(zeek_ascii([good])))
    (day / "conn.06:00:00-07:00:00.log.gz").write_bytes(gzip.compress(b"\n".join(conn)))
    (tmp_path / "dns.log").write_bytes(line(T0, "a.example", ["192.0.2.1"], [1.0]) + b"\n")
    assert log_files([tmp_path]) == [str(day / "dns.06:00:00-07:00:00.log.gz"), str(tmp_path / "dns.log")]
    with open_input(day / "dns.06:00:00-07:00:00.log.gz") as f:
        assert [s.name for s in DnsMap().observe_lines(f)] == ["gateway.logink.cn"]
    with pytest.raises(ValueError, match="conn log, not its dns log"):
        log_files([day / "conn.06:00:00-07:00:00.log.gz"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without DNS logs"):
        log_files([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError):
        log_files([tmp_path / "missing.log"])


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


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 7), st.integers(1, 50)), max_size=40),
       st.integers(1, 6), st.integers(1, 3), st.integers(0, 300))
def test_model(events, cap, per_addr, probe):
    """Against a plain model: per address up to ``per_addr`` validity intervals (latest answers),
    LRU by answer over addresses, intervals expire ``horizon`` after their end (newest answer
    time), and a time is attributed to the latest answer whose interval holds it."""
    horizon = 20
    d = DnsMap(max_entries=cap, skew_s=0, horizon_s=horizon, max_per_addr=per_addr)
    model: dict[str, list[tuple[str, int, int]]] = {}
    order: list[str] = []
    now = 0
    for k, (dt, host, ttl) in enumerate(sorted(events)):
        addr = f"192.0.2.{host}"
        ts = T0 + dt
        d.observe_lines([line(ts, f"n{k}.example", [addr], [float(ttl)])])
        tsn = int(round(ts * NS))
        now = max(now, tsn)
        model[addr] = (model.get(addr, []) + [(f"n{k}.example", tsn, tsn + ttl * NS)])[-per_addr:]
        if addr in order:
            order.remove(addr)
        order.append(addr)
        while len(order) > cap:
            model.pop(order.pop(0))
        for a in list(model):
            model[a] = [iv for iv in model[a] if iv[2] >= now - horizon * NS]
            if not model[a]:
                model.pop(a)
                order.remove(a)
    assert len(d) == len(model) <= cap
    t = int(round((T0 + probe) * NS))
    addrs = [f"192.0.2.{host}" for host in range(8)]
    hi, lo = K.keys_of(addrs)
    idx, names = d.attribute(hi, lo, np.full(8, t, np.int64))
    for a, i in zip(addrs, idx.tolist()):
        inside = [iv[0] for iv in model.get(a, []) if iv[1] <= t <= iv[2]]
        want = inside[-1] if inside else None
        assert d.get(a, t) == want
        assert (names[i] if i >= 0 else None) == want
