"""flowaudit/detect/dnsmap.py: TTL expiry on record time, bounded size, CNAME chains, array join,
names seen on connections (TLS server names, HTTP Hosts), Zeek's ASCII (tab-separated) logs and
gzip-rotated files."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from flowaudit.detect.dnsmap import DnsMap, dns_log, log_files
from flowaudit.kernels import ipset as K
from flowaudit.sources.files import open_input
from flowaudit.sources.zeek import CONN_FIELDS, DNS_FIELDS, HTTP_FIELDS, SSL_FIELDS, write_ascii

T0 = 1_700_000_000.0
NS = 1_000_000_000


def line(ts, query, answers, ttls, **kw):
    rec = {"ts": ts, "uid": "C1", "id.orig_h": "10.40.1.5", "id.resp_h": "10.40.0.53", "proto": "udp",
           "query": query, "qtype_name": "A", "rcode_name": "NOERROR", "answers": answers, "TTLs": ttls}
    rec.update(kw)
    return json.dumps(rec).encode()


def seen_line(ts, name, addr, via="tls_sni", **kw):
    """A Zeek ssl.log (``via`` tls_sni) or http.log (http_host) record of a connection to ``addr``
    that named ``name`` (None: left out, as Zeek leaves an unset field out)."""
    rec = {"ts": ts, "uid": "C2", "id.orig_h": "10.40.1.5", "id.orig_p": 51000, "id.resp_h": addr, "id.resp_p": 443}
    if via == "tls_sni":
        rec.update({"version": "TLSv13", "cipher": "TLS_AES_128_GCM_SHA256", "resumed": False, "established": True})
        if name is not None:
            rec["server_name"] = name
    else:
        rec.update({"id.resp_p": 80, "trans_depth": 1, "method": "POST", "uri": "/authapi/rest/auth/apply"})
        if name is not None:
            rec["host"] = name
    rec.update(kw)
    return json.dumps(rec).encode()


_FIELDS = {"conn": CONN_FIELDS, "ssl": SSL_FIELDS, "http": HTTP_FIELDS}


def zeek_ascii(records, path: str = "dns", fields=None) -> bytes:
    """Records as Zeek's ASCII writer writes them (flowaudit.sources.zeek.write_ascii)."""
    return write_ascii(records, path, fields or _FIELDS.get(path, DNS_FIELDS))


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
        idx, names, _vias = d.attribute(hi, lo, np.array([int((T0 + 100) * NS), int((T0 + 400) * NS)], np.int64))
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


def test_tls_server_names_and_http_hosts_name_addresses(tmp_path):
    """A connection that named a host in its TLS ClientHello (ssl.log ``server_name``) or its
    HTTP request (http.log ``host``, its port dropped) makes its responder mean that name for the
    default TTL from the connection's time, as a DNS answer without a TTL would; the map says how
    it learned the name.  Address literals and connections without a name name nothing and are no
    bad lines; a name that is no text is one.  Zeek's ASCII logs read as its JSON lines."""
    keep = lambda n: n.endswith(("logink.cn", "logink.org"))  # noqa: E731
    recs = [seen_line(T0, "Gateway.LOGINK.cn.", "203.0.113.9"),
            seen_line(T0 + 1, None, "203.0.113.20"),                              # no SNI
            seen_line(T0 + 2, "www.example.com", "192.0.2.7"),                    # not watched
            seen_line(T0 + 3, "exa.logink.org:81", "203.0.113.10", "http_host"),
            seen_line(T0 + 4, "203.0.113.11", "203.0.113.11", "http_host"),       # an address literal
            seen_line(T0 + 5, "[2001:db8::1]:8080", "2001:db8::1", "http_host"),
            seen_line(T0 + 6, None, "203.0.113.12", "http_host"),
            seen_line(T0 + 7, "a" * 300 + ".logink.cn", "203.0.113.14", "http_host")]    # no host name
    bad: list = []
    d = DnsMap(skew_s=0, keep=keep, default_ttl_s=300)
    stored = d.observe_lines(recs + [seen_line(T0, 7, "203.0.113.13")], bad)
    assert [(s.addr, s.name, s.via, s.client, s.ttl_s) for s in stored] == [
        ("203.0.113.9", "gateway.logink.cn", "tls_sni", "10.40.1.5", 300.0),
        ("203.0.113.10", "exa.logink.org", "http_host", "10.40.1.5", 300.0)]
    assert [(i, r) for i, _l, r in bad] == [(8, "malformed_json")] and d.stats["bad_lines"] == 1
    for dt, want in ((-1, None), (0, "gateway.logink.cn"), (300, "gateway.logink.cn"), (301, None)):
        assert d.get("203.0.113.9", int((T0 + dt) * NS)) == want
    hi, lo = K.keys_of(["203.0.113.9", "203.0.113.10", "192.0.2.7"])
    idx, names, vias = d.attribute(hi, lo, np.full(3, int((T0 + 10) * NS), np.int64))
    assert [(names[i], vias[i]) if i >= 0 else None for i in idx] == [
        ("gateway.logink.cn", "tls_sni"), ("exa.logink.org", "http_host"), None]
    # a DNS answer for the same address and name is kept beside the SNI, and the later one wins
    d.observe_lines([line(T0 + 20, "gateway.logink.cn", ["203.0.113.9"], [60.0])])
    idx, names, vias = d.attribute(hi[:1], lo[:1], np.array([int((T0 + 30) * NS)], np.int64))
    assert vias[idx[0]] == "dns"
    idx, names, vias = d.attribute(hi[:1], lo[:1], np.array([int((T0 + 200) * NS)], np.int64))
    assert vias[idx[0]] == "tls_sni"
    # the state keeps how each name was learned; a snapshot from before (four values) is DNS
    e = DnsMap(skew_s=0)
    e.load_state(json.loads(json.dumps(d.to_state())))
    assert e.arrays()[7:] == d.arrays()[7:]
    old = {"now_ns": int(T0 * NS), "entries": [["192.0.2.1", [["a.example", int(T0 * NS), int(T0 * NS) + 1, int(T0 * NS)]]]]}
    f = DnsMap()
    assert f.load_state(old) == 1 and f.arrays()[7:] == (["a.example"], ["dns"])
    with pytest.raises(ValueError):
        DnsMap().load_state({"now_ns": 1, "entries": [["192.0.2.1", [["a.example", 0, 1, 0, "smtp"]]]]})
    # Zeek's ASCII logs: the same names as the JSON lines; a folder gives its dns, ssl and http logs
    ssl = [json.loads(r) for r in recs[:3]]
    http = [json.loads(r) for r in recs[3:]]
    (tmp_path / "ssl.log").write_bytes(zeek_ascii(ssl, "ssl"))
    (tmp_path / "http.log.gz").write_bytes(gzip.compress(zeek_ascii(http, "http")))
    (tmp_path / "conn.log").write_bytes(zeek_ascii([], "conn"))
    assert log_files([tmp_path]) == [str(tmp_path / "http.log.gz"), str(tmp_path / "ssl.log")]
    g = DnsMap(skew_s=0, keep=keep, default_ttl_s=300)
    for f in log_files([tmp_path]):
        with open_input(f) as fh:
            g.observe_lines(fh)
    assert sorted((a, iv[0], iv[4]) for a, ivs in g.to_state()["entries"] for iv in ivs) == [
        ("203.0.113.10", "exa.logink.org", "http_host"), ("203.0.113.9", "gateway.logink.cn", "tls_sni")]
    assert g.stats["bad_lines"] == 0


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
    with pytest.raises(ValueError, match="conn log, not its dns, ssl or http log"):
        log_files([day / "conn.06:00:00-07:00:00.log.gz"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without DNS, SSL, HTTP or EVE logs"):
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
    idx, names, vias = d.attribute(hi, lo, t)
    assert [names[i] if i >= 0 else None for i in idx] == ["gateway.logink.cn", None, "ssl.logink.cn", None]
    assert {vias[i] for i in idx if i >= 0} == {"dns"}


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 7), st.integers(1, 50),
                          st.sampled_from(["dns", "tls_sni", "http_host"])), max_size=40),
       st.integers(1, 6), st.integers(1, 3), st.integers(0, 300))
def test_model(events, cap, per_addr, probe):
    """Against a plain model: per address up to ``per_addr`` validity intervals (latest answers,
    or names seen on connections: valid for the default TTL), LRU by answer over addresses,
    intervals expire ``horizon`` after their end (newest answer time), and a time is attributed
    to the latest answer whose interval holds it, with how that name was learned."""
    horizon, default_ttl = 20, 25
    d = DnsMap(max_entries=cap, skew_s=0, horizon_s=horizon, max_per_addr=per_addr, default_ttl_s=default_ttl)
    model: dict[str, list[tuple[str, int, int, str]]] = {}
    order: list[str] = []
    now = 0
    for k, (dt, host, ttl, via) in enumerate(sorted(events)):
        addr = f"192.0.2.{host}"
        ts = T0 + dt
        name = f"n{k}.example"
        if via == "dns":
            d.observe_lines([line(ts, name, [addr], [float(ttl)])])
        else:
            d.observe_lines([seen_line(ts, name, addr, via)])
            ttl = default_ttl
        tsn = int(round(ts * NS))
        now = max(now, tsn)
        model[addr] = (model.get(addr, []) + [(name, tsn, tsn + ttl * NS, via)])[-per_addr:]
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
    idx, names, vias = d.attribute(hi, lo, np.full(8, t, np.int64))
    for a, i in zip(addrs, idx.tolist()):
        inside = [(iv[0], iv[3]) for iv in model.get(a, []) if iv[1] <= t <= iv[2]]
        want = inside[-1] if inside else None
        assert d.get(a, t) == (want[0] if want else None)
        assert ((names[i], vias[i]) if i >= 0 else None) == want


def test_a_log_is_read_a_record_at_a_time(tmp_path):
    """A log's records go into the map as they are read (a day's DNS or HTTP log is gigabytes:
    it was held whole, as dicts, before any went in), unless the lines are one message that a bad
    line quarantines whole.  The audit's units keep only the records that name a watched host."""
    from flowaudit.audit.work import Spec, dns_log as unit_log

    d = DnsMap(keep=lambda n: n.endswith("logink.cn"))

    def lines():
        yield line(T0, "gateway.logink.cn", ["203.0.113.9"], [60.0])
        assert len(d) == 1            # in the map before the next line is read
        yield seen_line(T0 + 1, "ssl.logink.cn", "203.0.113.10")
        assert len(d) == 2
        yield b"{broken"

    bad: list = []
    assert len(d.observe_lines(lines(), bad)) == 2 and len(bad) == 1
    e = DnsMap()
    assert e.observe_lines([line(T0, "a.example", ["192.0.2.1"], [60.0]), b"{broken"], [], whole=True) == []
    assert len(e) == 0
    keep = lambda n: n.rstrip(".").lower().endswith("logink.cn")  # noqa: E731
    recs = [line(T0 + 3, "www.example.com", ["192.0.2.1"], [60.0]),
            line(T0 + 2, "portal.example.com", ["gateway.logink.cn.", "203.0.113.7"], [60.0, 60.0]),  # a CNAME
            line(T0 + 1, "gateway.logink.cn", [], [], rcode_name="NXDOMAIN"),
            seen_line(T0, "SSL.LOGINK.CN", "203.0.113.10"), seen_line(T0, None, "203.0.113.11"),
            seen_line(T0, "exa.logink.org", "203.0.113.12", "http_host"), b"{broken",
            eve("tls", {"sni": "gateway.logink.cn"}, ts="2023-11-14T22:13:21+0000"),     # Suricata: T0 + 1
            eve("alert", {"signature": "x"})]
    (tmp_path / "dns.log").write_bytes(b"\n".join(recs) + b"\n")
    ats, kept = unit_log(Spec(out=str(tmp_path / "out"), key=b"k" * 32, dns_files=(str(tmp_path / "dns.log"),)), keep)
    assert [k.rstrip() for k in kept] == [recs[3], recs[7], recs[1]]
    assert ats.tolist() == [int(T0 * NS), int((T0 + 1) * NS), int((T0 + 2) * NS)]
    # the audit's driver gathers the same records as it reads the log for its rows (its units then
    # take them from memory: seed_dns_log)
    watched: list = []
    DnsMap(keep=keep).observe_lines((tmp_path / "dns.log").read_bytes().splitlines(keepends=True), watched=watched)
    assert sorted(watched) == list(zip(ats.tolist(), kept))


def eve(et, body, ts="2023-11-14T22:13:20.000000+0000", src="10.40.1.5", dst="203.0.113.9", sport=51000, dport=443):
    """A Suricata eve.json event (its header, and the event type's object)."""
    return json.dumps({"timestamp": ts, "flow_id": 1, "event_type": et, "src_ip": src, "src_port": sport,
                       "dest_ip": dst, "dest_port": dport, "proto": "TCP", et: body}).encode()


def test_suricata_eve_names_addresses_as_zeek_logs_do(tmp_path):
    """Suricata's eve.json: DNS answers in each of its formats (1: an event an answer; 2: detailed
    ``answers`` or ``grouped``; 3: ``queries`` and ``answers``), TLS ``sni`` and HTTP ``hostname``
    name addresses as Zeek's dns, ssl and http logs do; query events and other event types (an
    alert, a flow) name nothing and are no bad lines; an event without a readable timestamp is."""
    keep = lambda n: n.rstrip(".").lower().endswith(("logink.cn", "logink.org"))  # noqa: E731
    lines = [
        eve("dns", {"type": "query", "rrname": "gateway.logink.cn", "rrtype": "A"}, src="10.40.1.5", dst="10.40.0.53",
            sport=53000, dport=53),
        eve("dns", {"type": "answer", "rrname": "gateway.logink.cn", "rrtype": "A", "ttl": 60, "rdata": "203.0.113.1",
                    "rcode": "NOERROR"}, src="10.40.0.53", dst="10.40.1.5", sport=53, dport=53000),      # format 1
        eve("dns", {"version": 2, "type": "answer", "rrname": "api.logink.org", "rrtype": "A", "rcode": "NOERROR",
                    "answers": [{"rrname": "api.logink.org", "rrtype": "A", "ttl": 30, "rdata": "203.0.113.2"}]},
            src="10.40.0.53", dst="10.40.1.6", sport=53, dport=53001),
        eve("dns", {"version": 2, "type": "answer", "rrname": "portal.example.com", "rrtype": "A", "rcode": "NOERROR",
                    "grouped": {"CNAME": ["test.logink.org"], "A": ["203.0.113.3"]}}, src="10.40.0.53", dst="10.40.1.7",
            sport=53, dport=53002),
        eve("dns", {"version": 3, "type": "response", "rcode": "NOERROR", "queries": [{"rrname": "jc.logink.org",
                    "rrtype": "AAAA"}], "answers": [{"rrname": "jc.logink.org", "rrtype": "AAAA", "ttl": 90,
                                                      "rdata": "2001:db8::4"}]}, src="10.40.0.53", dst="10.40.1.8",
            sport=53, dport=53003),
        eve("dns", {"version": 3, "type": "response", "rcode": "NXDOMAIN", "queries": [{"rrname": "x.logink.cn"}]},
            src="10.40.0.53", dst="10.40.1.8", sport=53, dport=53004),
        eve("tls", {"subject": "CN=gateway.logink.cn", "sni": "Gateway.Logink.CN", "version": "TLS 1.2"}, dst="203.0.113.5"),
        eve("http", {"hostname": "exa.logink.org", "url": "/authapi/rest/auth/apply", "http_method": "POST"},
            dst="203.0.113.6", dport=81),
        eve("alert", {"signature": "ET POLICY something", "severity": 2}),
        eve("flow", {"pkts_toserver": 3, "bytes_toserver": 400}),
        eve("tls", {"subject": "CN=x"}),                                                        # no SNI logged
        json.dumps({"event_type": "tls", "tls": {"sni": "gateway.logink.cn"}}).encode(),        # no timestamp
    ]
    bad: list = []
    d = DnsMap(skew_s=0, keep=keep, default_ttl_s=300)
    stored = d.observe_lines(lines, bad)
    assert [(s.name, s.addr, s.via, s.client, s.ttl_s) for s in stored] == [
        ("gateway.logink.cn", "203.0.113.1", "dns", "10.40.1.5", 60.0),
        ("api.logink.org", "203.0.113.2", "dns", "10.40.1.6", 30.0),
        ("test.logink.org", "203.0.113.3", "dns", "10.40.1.7", 300.0),      # grouped: no TTL, the default
        ("jc.logink.org", "2001:db8::4", "dns", "10.40.1.8", 90.0),
        ("gateway.logink.cn", "203.0.113.5", "tls_sni", "10.40.1.5", 300.0),
        ("exa.logink.org", "203.0.113.6", "http_host", "10.40.1.5", 300.0)]
    assert [(i, r) for i, _l, r in bad] == [(11, "malformed_json")]
    assert d.stats["lines"] == 12 and d.last_log == "suricata"
    # a folder gives its eve files beside Zeek's logs
    (tmp_path / "eve.json").write_bytes(b"\n".join(lines[:-1]) + b"\n")
    (tmp_path / "stats.log").write_bytes(b"")
    assert log_files([tmp_path]) == [str(tmp_path / "eve.json")]


def test_suricata_format_1_cname_chain_names_the_last_target_s_address():
    """Suricata's eve DNS format 1 logs a chain a record an event: the CNAME of a watched name is
    its own event, and the A record's owner is the chain's last target.  The target is the watched
    name for the CNAME's TTL, so the address is the watched name's (two hops here); after the TTL,
    or for a chain no watched name starts, it is nobody's.  A restart snapshot keeps the chain."""
    import time as _t

    keep = lambda n: n.rstrip(".").lower().endswith("logink.cn")  # noqa: E731
    iso = lambda s: _t.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", _t.gmtime(s))  # noqa: E731

    def rr(ts, owner, rrtype, rdata, ttl):
        return eve("dns", {"type": "answer", "rrname": owner, "rrtype": rrtype, "ttl": ttl, "rdata": rdata,
                           "rcode": "NOERROR"}, ts=iso(ts), src="10.40.0.53", dst="10.40.1.5", sport=53, dport=53000)

    d = DnsMap(skew_s=0, keep=keep)
    stored = d.observe_lines([rr(T0, "gateway.logink.cn", "CNAME", "Gw.Edge.example.net.", 60),
                              rr(T0, "gw.edge.example.net", "CNAME", "e1.cdn.example", 60),
                              rr(T0, "e1.cdn.example", "A", "203.0.113.50", 30),
                              rr(T0, "www.example.com", "CNAME", "e2.cdn.example", 60),
                              rr(T0, "e2.cdn.example", "A", "203.0.113.51", 30)])
    assert [(s.query, s.name, s.addr) for s in stored] == [("e1.cdn.example", "gateway.logink.cn", "203.0.113.50")]
    assert d.get("203.0.113.50", int((T0 + 10) * NS)) == "gateway.logink.cn"
    assert d.get("203.0.113.51", int((T0 + 10) * NS)) is None
    # the chain outlived its TTL: a later answer for its target names nobody
    assert d.observe_lines([rr(T0 + 61, "e1.cdn.example", "A", "203.0.113.52", 30)]) == []
    # a restart snapshot keeps it (and one written before the map kept chains still loads)
    e = DnsMap(skew_s=0, keep=keep)
    state = json.loads(json.dumps(DnsMap(skew_s=0, keep=keep).to_state() | {"aliases": d.to_state()["aliases"]}))
    e.load_state(state)
    assert [s.name for s in e.observe_lines([rr(T0 + 5, "e1.cdn.example", "A", "203.0.113.53", 30)])] == [
        "gateway.logink.cn"]
    old = d.to_state()
    del old["aliases"]
    assert DnsMap().load_state(old) == len(d)
    try:
        DnsMap().load_state(dict(old, aliases=[["x", "y", "soon"]]))
        raise AssertionError("accepted a bad alias")
    except ValueError:
        pass


def test_the_audit_gathers_a_format_1_chain_among_other_lookups(tmp_path):
    """The audit keeps only the --dns records that name a watched host (a map of one address
    judges them, its chains bounded on their own): a format 1 chain's CNAME and A events are both
    kept, with other lookups and chains between them, in order, so its units' maps name the
    address too."""
    import time as _t

    keep = lambda n: n.rstrip(".").lower().endswith("logink.cn")  # noqa: E731
    iso = _t.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", _t.gmtime(T0))

    def rr(owner, rrtype, rdata):
        return eve("dns", {"type": "answer", "rrname": owner, "rrtype": rrtype, "ttl": 60, "rdata": rdata,
                           "rcode": "NOERROR"}, ts=iso, src="10.40.0.53", dst="10.40.1.5", sport=53, dport=53000)

    # other lookups between the two events, other watched names' chains among them
    noise = [rr(f"h{i}.example.org" if i % 2 else f"s{i}.logink.cn", "CNAME", f"c{i}.cdn.example") for i in range(50)]
    log = tmp_path / "eve.json"
    log.write_bytes(b"\n".join([rr("gateway.logink.cn", "CNAME", "gw.edge.example.net"), *noise,
                                rr("gw.edge.example.net", "A", "203.0.113.50")]) + b"\n")
    rows: list = []          # as flowaudit.audit.work.dns_log gathers them
    with open(log, "rb") as fh:
        DnsMap(1, keep=keep).observe_lines(fh, watched=rows)
    lines = [x for _ts, x in sorted(rows, key=lambda r: r[0])]
    kept = [json.loads(x)["dns"]["rrname"] for x in lines]
    assert kept == ["gateway.logink.cn", *(f"s{i}.logink.cn" for i in range(0, 50, 2)), "gw.edge.example.net"]
    d = DnsMap(skew_s=0, keep=keep)
    d.observe_lines(lines)
    assert d.get("203.0.113.50", int((T0 + 1) * NS)) == "gateway.logink.cn"
