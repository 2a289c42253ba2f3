"""flowaudit/detect/egress.py: flows, DNS attribution, policy and messages -> TRANSFERS rows."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from flowaudit.detect import egress as E
from flowaudit import schemas
from flowaudit.detect import watchlist as W
from flowaudit.detect import zones as Z
from flowaudit.datasets import TRANSFERS
from flowaudit.kernels import ipset as K

T0 = 1_700_000_000
NS = 1_000_000_000
OPS = """
version = "ops-1"
[[indicators]]
platform = "LOGINK"
type = "cidr"
value = "203.0.113.0/28"
source = "operator: EXAMPLE documentation range"
[[indicators]]
platform = "LOGINK"
type = "edi_party"
value = "LOGINKHUB"
source = "operator: EXAMPLE"
"""


def flows(rows, sampling=1):
    """rows: (src, dst, src_port, dst_port, proto, bytes)."""
    sh, sl = K.keys_of([r[0] for r in rows])
    dh, dl = K.keys_of([r[1] for r in rows])
    n = len(rows)
    return {"src_hi": sh, "src_lo": sl, "dst_hi": dh, "dst_lo": dl,
            "src_port": np.array([r[2] for r in rows], np.uint16), "dst_port": np.array([r[3] for r in rows], np.uint16),
            "protocol": np.array([r[4] for r in rows], np.uint8), "tcp_flags": np.zeros(n, np.uint8),
            "bytes": np.array([r[5] for r in rows], np.uint64), "packets": np.full(n, 3, np.uint64),
            "first_ns": np.full(n, (T0 + 10) * NS, np.int64), "last_ns": np.full(n, (T0 + 11) * NS, np.int64),
            "sampling_interval": np.full(n, sampling, np.uint32), "exporter_idx": np.zeros(n, np.int32),
            "ip_version": np.full(n, 4, np.uint8)}


def detector(tmp_path):
    (tmp_path / "ops.toml").write_text(OPS)
    return E.EgressDetector(W.Watchlist(tmp_path), Z.load(schemas.path("zones.example.toml")))


def dns_line(query, answers, ttl=60.0, client="10.40.1.5"):
    return json.dumps({"ts": float(T0), "id.orig_h": client, "query": query, "qtype_name": "A",
                       "rcode_name": "NOERROR", "answers": answers, "TTLs": [ttl] * len(answers)}).encode()


def test_flow_rows(tmp_path):
    det = detector(tmp_path)
    dns = det.observe_dns([dns_line("gateway.logink.cn", ["gw.cdn.example", "198.18.0.9"]),
                           dns_line("www.example.com", ["198.18.0.10"]),
                           dns_line("notlogink.cn", ["198.18.0.11"])], source="dns")
    assert dns.schema.equals(TRANSFERS) and dns.num_rows == 1
    assert dns["seen_where"].to_pylist() == ["DNS_ANSWER"] and dns["src_zone"].to_pylist() == ["it"]
    rows = [
        ("10.40.1.5", "203.0.113.5", 50000, 443, 6, 1000),    # 0 LOGINK by CIDR (operator file)
        ("203.0.113.5", "10.40.1.5", 443, 50000, 6, 900),     # 1 the reply: NETFLOW_SRC
        ("10.40.1.5", "198.18.0.9", 50001, 443, 6, 500),      # 2 LOGINK by DNS answer
        ("10.40.1.5", "198.18.0.10", 50002, 443, 6, 500),     # 3 www.example.com: nothing
        ("10.40.1.5", "198.18.0.11", 50003, 443, 6, 500),     # 4 notlogink.cn: nothing (never stored)
        ("10.20.1.10", "203.0.113.5", 50004, 443, 6, 700),    # 5 crane to LOGINK: platform + OT rule
        ("10.20.1.10", "8.8.8.8", 50005, 5938, 6, 100),       # 6 crane to internet on TeamViewer port
        ("10.40.1.5", "10.20.1.10", 50006, 3389, 6, 100),     # 7 RDP it -> crane
        ("10.40.1.5", "8.8.8.8", 50007, 443, 6, 100),         # 8 it -> internet: allowed
    ]
    t = det.detect_flows(flows(rows, sampling=10), exporters=["192.0.2.1"], source="netflow", partition=0,
                         offset=np.arange(100, 100 + len(rows)))
    assert t.schema.equals(TRANSFERS)
    got = {r["offset"] - 100: r for r in t.to_pylist()}
    assert sorted(got) == [0, 1, 2, 5, 6, 7]
    assert (got[0]["platform"], got[0]["indicator"], got[0]["indicator_type"], got[0]["seen_where"]) == \
        ("LOGINK", "203.0.113.0/28", "cidr", "NETFLOW_DST")
    assert got[1]["seen_where"] == "NETFLOW_SRC" and got[1]["platform"] == "LOGINK"
    assert (got[2]["indicator"], got[2]["seen_where"]) == ("gateway.logink.cn", "DNS_ANSWER")
    assert (got[5]["platform"], got[5]["rule"], got[5]["severity"]) == ("LOGINK", "ot_zone_to_internet", "critical")
    assert (got[6]["platform"], got[6]["rule"]) == ("policy", "ot_zone_to_internet")
    assert (got[7]["rule"], got[7]["indicator"], got[7]["src_zone"], got[7]["dst_zone"]) == \
        ("remote_access:rdp", "tcp/3389", "it", "crane_ot")
    assert got[0]["bytes"] == 1000 and got[0]["bytes_scaled"] == 10000 and got[0]["sampling_interval"] == 10
    assert got[0]["exporter"] == "192.0.2.1" and got[0]["src_addr"] == "10.40.1.5"
    assert got[0]["watchlist_version"].startswith("2026") and got[0]["policy_version"] == "example-1"
    for r in got.values():
        assert r["indicator_source"]


def test_service_column_names_remote_access_on_every_row(tmp_path):
    """Remote access from the internet into an OT zone is an internet_to_ot_zone row, and the row
    names the service, so a query for RDP/SSH/... finds it; watchlist and zone rows carry it too."""
    det = detector(tmp_path)
    rows = [
        ("8.8.8.8", "10.20.1.10", 50000, 3389, 6, 100),      # internet -> crane RDP
        ("8.8.8.8", "10.20.1.10", 50001, 22, 6, 100),        # internet -> crane SSH
        ("8.8.8.8", "10.20.1.10", 50002, 5938, 17, 100),     # internet -> crane TeamViewer (udp)
        ("8.8.8.8", "10.20.1.10", 50003, 502, 6, 100),       # internet -> crane Modbus
        ("8.8.8.8", "10.20.1.10", 50004, 8443, 6, 100),      # internet -> crane, no service on the port
        ("10.40.1.5", "10.20.1.10", 50005, 23, 6, 100),      # it -> crane telnet: the service rule
        ("10.40.1.5", "203.0.113.5", 50006, 22, 6, 100),     # it -> LOGINK on the SSH port: platform row
        ("10.40.1.5", "10.20.1.10", 50007, 502, 17, 100),    # Modbus is tcp: no service on udp/502
    ]
    t = det.detect_flows(flows(rows))
    assert t.schema.equals(TRANSFERS)
    got = [(r["platform"], r["rule"], r["service"]) for r in t.to_pylist()]
    assert got == [("policy", "internet_to_ot_zone", "rdp"), ("policy", "internet_to_ot_zone", "ssh"),
                   ("policy", "internet_to_ot_zone", "teamviewer"), ("policy", "internet_to_ot_zone", "modbus"),
                   ("policy", "internet_to_ot_zone", None), ("policy", "remote_access:telnet", "telnet"),
                   ("LOGINK", "remote_access:ssh", "ssh"), ("policy", "zone_not_allowed", None)]
    # DNS and message rows have no port: the column is null there
    dns = det.observe_dns([dns_line("gateway.logink.cn", ["198.18.0.9"])])
    assert dns["service"].to_pylist() == [None]


def test_dns_ttl_expiry_ends_attribution(tmp_path):
    det = detector(tmp_path)
    det.observe_dns([dns_line("ssl.logink.cn", ["198.18.0.20"], ttl=4.0)])
    f = flows([("10.40.1.5", "198.18.0.20", 1, 443, 6, 10)])  # starts at T0 + 10: after TTL + 5 s grace
    assert det.detect_flows(f).num_rows == 0
    det.observe_dns([dns_line("ssl.logink.cn", ["198.18.0.20"], ttl=60.0)])
    assert det.detect_flows(f)["indicator"].to_pylist() == ["ssl.logink.cn"]


def test_flows_named_by_tls_server_name_or_http_host(tmp_path):
    """Without a DNS log, a connection's TLS server name (ssl.log) or HTTP Host (http.log) names
    its responder: the connection is a ``name_seen`` row (TLS_SNI / HTTP_HOST, no finding by
    itself) and the flows to that address are watchlist rows that say how the name was learned.
    A DNS answer for another address keeps its own evidence.  A responder inside the zone policy
    (a proxy) is named by no connection."""
    from .test_dnsmap import seen_line

    det = detector(tmp_path)
    seen = det.observe_dns([seen_line(float(T0), "gateway.logink.cn", "198.18.0.30"),
                            seen_line(float(T0), "exa.logink.org:81", "198.18.0.31", "http_host", **{"id.orig_h": "10.20.1.10"}),
                            seen_line(float(T0), "www.example.com", "198.18.0.32"),
                            dns_line("ssl.logink.cn", ["198.18.0.33"])], source="zeek-names")
    assert seen.schema.equals(TRANSFERS)
    assert [(r["seen_where"], r["rule"], r["indicator"], r["src_addr"], r["dst_addr"], r["src_zone"])
            for r in seen.to_pylist()] == [
        ("TLS_SNI", "name_seen", "gateway.logink.cn", "10.40.1.5", "198.18.0.30", "it"),
        ("HTTP_HOST", "name_seen", "exa.logink.org", "10.20.1.10", "198.18.0.31", "crane_ot"),
        ("DNS_ANSWER", "dns_lookup", "ssl.logink.cn", "10.40.1.5", "198.18.0.33", "it")]
    assert seen["indicator_source"][0].as_py().startswith("TLS server name (SNI); watchlist ")
    assert seen["indicator_source"][1].as_py().startswith("HTTP Host; watchlist ")
    t = det.detect_flows(flows([("10.40.1.5", "198.18.0.30", 50000, 443, 6, 4000),
                                ("10.40.1.5", "198.18.0.31", 50001, 81, 6, 300),
                                ("10.40.1.5", "198.18.0.32", 50002, 443, 6, 100),
                                ("10.40.1.5", "198.18.0.33", 50003, 443, 6, 200)]))
    assert [(r["seen_where"], r["rule"], r["indicator"], r["platform"], r["bytes"]) for r in t.to_pylist()] == [
        ("TLS_SNI", "watchlist", "gateway.logink.cn", "LOGINK", 4000),
        ("HTTP_HOST", "watchlist", "exa.logink.org", "LOGINK", 300),
        ("DNS_ANSWER", "watchlist", "ssl.logink.cn", "LOGINK", 200)]
    assert [r["indicator_source"].split(";")[0] for r in t.to_pylist()] == [
        "TLS server name (SNI)", "HTTP Host", "DNS answer"]
    m = det.metrics()["transfers_total"]
    assert m[("LOGINK", "it", "name_seen")] == 1 and m[("LOGINK", "crane_ot", "name_seen")] == 1
    # through a proxy inside the port (an HTTP CONNECT, TLS inside it): the connection is a row,
    # but the proxy's address is not LOGINK's, so the other flows to the proxy stay unnamed
    via_proxy = det.observe_dns([seen_line(float(T0), "gateway.logink.cn", "10.40.9.9", **{"id.resp_p": 3128})])
    assert [(r["seen_where"], r["dst_addr"], r["dst_zone"]) for r in via_proxy.to_pylist()] == [
        ("TLS_SNI", "10.40.9.9", "it")]
    assert det.detect_flows(flows([("10.40.1.6", "10.40.9.9", 50004, 3128, 6, 5000)])).num_rows == 0
    assert det.dns.get("10.40.9.9", (T0 + 10) * NS) is None
    assert "name_seen" in det.metric_label_values()["rule"]


def test_teamviewer_severity_depends_on_zone(tmp_path):
    det = detector(tmp_path)
    det.observe_dns([dns_line("master3.teamviewer.com", ["198.18.1.1"]),
                     dns_line("router1.teamviewer.com", ["198.18.1.2"], client="10.20.1.10")])
    t = det.detect_flows(flows([("10.40.1.5", "198.18.1.1", 1, 5938, 6, 10),      # it: info + service rule
                                ("10.20.1.10", "198.18.1.2", 1, 443, 6, 10)]))   # crane: high + OT rule
    r = t.to_pylist()
    assert r[0]["platform"] == "TeamViewer" and r[0]["rule"] == "remote_access:teamviewer"
    assert r[0]["severity"] == "medium"   # platform info in IT, the service rule medium
    assert r[1]["platform"] == "TeamViewer" and r[1]["severity"] == "critical"


def test_no_rows_and_bad_input(tmp_path):
    det = detector(tmp_path)
    assert det.detect_flows(flows([("10.40.1.5", "10.40.1.6", 1, 443, 6, 1)])).num_rows == 0
    import pytest
    f = flows([("10.40.1.5", "10.40.1.6", 1, 443, 6, 1)])
    del f["bytes"]
    with pytest.raises(ValueError):
        det.detect_flows(f)


def batch(msgs):
    buf = np.frombuffer(b"".join(msgs), np.uint8)
    off = np.zeros(len(msgs) + 1, np.int64)
    off[1:] = np.cumsum([len(m) for m in msgs])
    return buf, off


def test_messages(tmp_path):
    det = detector(tmp_path)
    msgs = [
        b'{"containerNumber":"MSCU1234565","partyFunctionCode":"CNNGB"}',                       # 0 JSON_PATH
        b"UNB+UNOA:2+SENDER:ZZ+LOGINKHUB:ZZ+260301:1200+1'UNH+1+COPRAR:D:95B:UN'LOC+9+CNNGB'",  # 1 EDI_UNB only
        b"UNB+UNOA:2+A+B+260301:1200+1'NAD+CA+CNNGB'LOC+11+CNNGB:139:6'",                       # 2 nothing
        b"<SendRequest><ToAddress>jyzx00002</ToAddress><ActionType>LOGINK_CN_FREIGHTCHARGES</ActionType>"
        b"<x>ticket:abc</x></SendRequest>",                                                      # 3 XML_ELEMENT
        b"POST https://gateway.logink.cn/ais/getVesselBaseInfo HTTP/1.1\r\nX-Ca-Key: 1\r\n",     # 4 PAYLOAD
        b"GET /ais/foo LoginKit notlogink.cn blogink.org ticket:x X-Ca-Key",                     # 5 nothing
        b'{"note":"see www.logink.org.example.net","PortCodeList":"CNNGB,JPOSA"}',               # 6 nothing
        b'{"method":"logink.track.customs","biz_content":{"PartyFunctionCode":"ZJEPORT"}}',      # 7 JSON_PATH
        b"ISA*00*          *00*          *ZZ*SENDER         *ZZ*LOGINKHUB      *260301*1200*U*00401*000000001*0*P*>~"
        b"GS*QO*SENDER*LOGINKHUB*20260301*1200*1*X*004010~ST*315*0001~SE*2*0001~GE*1*1~IEA*1*000000001~",  # 8
    ]
    buf, off = batch(msgs)
    rec = E.envelope_recipients(buf, off)
    assert (1, "LOGINKHUB", "EDI_UNB") in rec and (8, "LOGINKHUB", "X12_ISA") in rec and (8, "LOGINKHUB", "X12_GS") in rec
    t = det.detect_messages(buf, off, recipients=rec, partition=3, offset=np.arange(len(msgs)) + 1000,
                            ts_ms=np.full(len(msgs), T0 * 1000))
    assert t.schema.equals(TRANSFERS)
    got: dict[int, set] = {}
    for r in t.to_pylist():
        got.setdefault(r["offset"] - 1000, set()).add((r["indicator"], r["indicator_type"], r["seen_where"]))
    assert got[0] == {("partyFunctionCode=CNNGB", "party_code", "JSON_PATH")}
    assert got[1] == {("LOGINKHUB", "edi_party", "EDI_UNB")}
    assert 2 not in got and 5 not in got and 6 not in got
    assert got[3] == {("ToAddress=jyzx00002", "party_code", "XML_ELEMENT"),
                      ("LOGINK_CN_FREIGHTCHARGES", "payload_marker", "XML_ELEMENT"),
                      ("ticket:", "payload_marker", "XML_ELEMENT")}
    assert got[4] == {("gateway.logink.cn", "host", "PAYLOAD"), ("/ais/", "url_path", "PAYLOAD"),
                      ("X-Ca-Key", "payload_marker", "PAYLOAD")}
    assert got[7] == {("logink.track.customs", "payload_marker", "JSON_PATH"),
                      ("partyFunctionCode=ZJEPORT", "party_code", "JSON_PATH")}
    assert got[8] == {("LOGINKHUB", "edi_party", "X12_ISA"), ("LOGINKHUB", "edi_party", "X12_GS")}
    assert set(t["time_ns"].to_pylist()) == {T0 * NS}


def test_window_aggregates(tmp_path):
    det = detector(tmp_path)
    f = flows([("10.40.1.5", "203.0.113.5", 1, 443, 6, 100), ("10.40.1.5", "203.0.113.6", 2, 443, 6, 50),
               ("10.40.1.6", "203.0.113.5", 3, 443, 6, 7)], sampling=4)
    f["first_ns"] = np.array([T0 * NS, T0 * NS + 10, (T0 + 70) * NS], np.int64)
    t = pa.concat_tables([det.detect_flows(f), det.observe_dns([dns_line("gateway.logink.cn", ["198.18.0.1"])])])
    agg = E.window_aggregates(t, 60 * NS).to_pylist()
    assert [(a["src_addr"], a["platform"], a["flows"], a["bytes"], a["bytes_scaled"]) for a in agg] == [
        ("10.40.1.5", "LOGINK", 2, 150, 600), ("10.40.1.6", "LOGINK", 1, 7, 28)]
    assert agg[0]["window_start_ns"] == T0 * NS - (T0 * NS) % (60 * NS)


def test_metrics_labels_bounded(tmp_path):
    det = detector(tmp_path)
    det.detect_flows(flows([("10.40.1.5", "203.0.113.5", 1, 443, 6, 100), ("10.20.1.10", "8.8.8.8", 1, 3389, 6, 1)]))
    m = det.metrics()
    allowed = det.metric_label_values()
    assert m["transfers_total"]
    for platform, zone, rule in m["transfers_total"]:
        assert platform in allowed["platform"] and zone in allowed["zone"] and rule in allowed["rule"]
    assert m["transfer_bytes_total"][("LOGINK", "it", "watchlist")] == 100
    # label values come from configuration only, never from traffic (addresses, ports, indicators)
    for v in sum(allowed.values(), []):
        assert not any(x in v for x in ("10.40.1.5", "203.0.113", "8.8.8.8", "3389", "logink.cn"))


def test_reload_is_picked_up(tmp_path):
    det = detector(tmp_path)
    f = flows([("10.40.1.5", "198.51.100.77", 1, 443, 6, 1)])
    assert det.detect_flows(f).num_rows == 0
    (tmp_path / "more.toml").write_text('version = "m"\n[[indicators]]\nplatform = "Nuctech"\ntype = "ip"\n'
                                        'value = "198.51.100.77"\nsource = "operator: EXAMPLE"\n')
    assert det._watchlist.poll()
    t = det.detect_flows(f)
    assert t["platform"].to_pylist() == ["Nuctech"] and t["severity"].to_pylist() == ["info"]


def test_markers_inside_layers_and_in_quarantined_messages(tmp_path):
    """The message-side scan sees inside whole-message layers (base64 of gzip), inside field
    layers (a base64 JSON member) and the raw bytes of quarantined messages (malformed, unknown
    format); one row per indicator per message, at the message's batch index and offset."""
    import base64
    import gzip

    from flowaudit.pipeline import FMT_AUTO, Batch, Classifier
    from flowaudit.protect import Protector

    js = b'{"endpoint":"https://gateway.logink.cn/ais/getVesselBaseInfo","containerNumber":"MSCU1234565"}'
    z = base64.b64encode(gzip.compress(js))
    msgs = [
        z,                                                            # 0 whole-message layers
        b'{"id":1,"payload":"%s"}' % z,                               # 1 a field layer
        b'{"broken": "https://gateway.logink.cn/ais/x", ',             # 2 malformed JSON (quarantined)
        b"\x00\x01 junk POST https://gateway.logink.cn/ais/x",         # 3 unknown format (quarantined)
        b'{"note":"LoginKit","x":"%s"}' % base64.b64encode(gzip.compress(b'{"note":"LoginKit notlogink.cn"}')),
        base64.b64encode(gzip.compress(b'{"client":"LoginKit"}')),     # 5 nothing, layered
        b'{"url":"https://gateway.logink.cn/ais/a","payload":"%s"}' % z,  # 6 in clear AND in the layer
    ]
    clf = Classifier(Protector(b"egress-layers-key-0123456789abcd"), egress=detector(tmp_path))
    r = clf.run(Batch.from_values(msgs, FMT_AUTO, offset=np.arange(len(msgs)) + 500))
    assert sorted(r.q_idx.tolist()) == [2, 3]
    got: dict[int, list] = {}
    for i, row in zip(r.t_idx.tolist(), r.transfers.to_pylist()):
        assert row["offset"] == 500 + i
        got.setdefault(i, []).append((row["indicator"], row["indicator_type"]))
    for i in (0, 1, 2, 3, 6):
        assert ("gateway.logink.cn", "host") in got[i], i
        assert ("/ais/", "url_path") in got[i], i
    assert 4 not in got and 5 not in got
    assert sorted(got[6]) == sorted(set(got[6]))                      # each indicator once per message
    assert r.t_idx.tolist() == sorted(r.t_idx.tolist())
    # without the egress detector's view inside layers, 0 and 1 would have no row
    plain = clf.egress.detect_messages(Batch.from_values(msgs, FMT_AUTO).buf,
                                       Batch.from_values(msgs, FMT_AUTO).offsets, np.array([0, 1], np.int64))
    assert plain.num_rows == 0


def test_a_short_compressed_field_is_opened(tmp_path):
    """A gzip, zlib or zstd payload in a JSON member or an XML leaf is opened however short its
    base64 (under ``B64_MIN`` characters: ``B64_PACKED_MIN`` after a compressed header), so the
    host it carries is found; compression hides it from the base64 aliases.  A short token that
    only starts like one (``eJA...``: 78 90, no zlib header) gives nothing, not even a flag."""
    import base64
    import gzip
    import zlib

    from flowaudit.decode import layers as L
    from flowaudit.kernels.jsonscan import B64_MIN, B64_PACKED_MIN
    from flowaudit.pipeline import FMT_AUTO, Batch, Classifier
    from flowaudit.protect import Protector

    host = b"https://gateway.logink.cn/"
    packed = [base64.b64encode(gzip.compress(host, mtime=0)), base64.b64encode(zlib.compress(host, 9)),
              base64.b64encode(L._zstd.ZstdCompressor().compress(host))]
    assert all(B64_PACKED_MIN <= len(f) < B64_MIN and not f.startswith(b"aHR0") for f in packed)
    msgs = [b'{"cb":"%s"}' % f for f in packed] + [b"<a><cb>%s</cb></a>" % packed[0],
                                                   b'{"t":"eJABCDEFGHIJKLMNOPQRSTUVWXYZ"}']
    clf = Classifier(Protector(b"egress-packed-key-0123456789abcd"), egress=detector(tmp_path))
    r = clf.run(Batch.from_values(msgs, FMT_AUTO, offset=np.arange(len(msgs))))
    got: dict[int, set] = {}
    for i, row in zip(r.t_idx.tolist(), r.transfers.to_pylist()):
        got.setdefault(i, set()).add((row["platform"], row["indicator"]))
    assert sorted(got) == [0, 1, 2, 3], got
    assert all(("LOGINK", "gateway.logink.cn") in got[i] for i in range(4)), got
    flags = dict(zip(r.m_idx.tolist(), r.messages.column("flags").to_pylist()))
    assert flags == {i: [] for i in range(len(msgs))}


def both_paths(tmp_path, msgs):
    """The transfers of ``msgs`` (offset = batch index) from ``detect_messages`` alone, then
    through the classifier with its prescan."""
    from flowaudit.pipeline import FMT_AUTO, Batch, Classifier
    from flowaudit.protect import Protector

    buf, off = batch(msgs)
    yield detector(tmp_path).detect_messages(buf, off, offset=np.arange(len(msgs)))
    clf = Classifier(Protector(b"egress-both-paths-key-0123456789"), egress=detector(tmp_path))
    yield clf.run(Batch.from_values(msgs, FMT_AUTO, offset=np.arange(len(msgs)))).transfers


def test_hosts_written_with_escapes_or_character_references(tmp_path):
    """A watched host spelled with JSON \\u escapes, XML character references or URL
    percent-encoding is the same host:
    found in the message's decoded text, by ``detect_messages`` alone and through the classifier's
    prescan; one row per indicator per message; look-alikes stay unmatched and bad escapes are
    left as they are."""
    msgs = [
        b'{"callback":"https:\\/\\/gateway\\u002elogink\\u002ecn\\/api"}',         # 0 JSON escapes
        b'<cb>https://gateway&#46;logink&#x2E;cn/api</cb>',                          # 1 XML references
        b'{"a":"gateway.logink.cn","b":"gateway\\u002elogink.cn"}',                 # 2 raw and escaped
        b'{"a":"not\\u006cogink.cn \\uZZZZ &#99999999; \\ud800"}',                   # 3 a look-alike, bad escapes
        b'{"a":"caf\\u00e9","b":"https://gateway.logink.cn/"}',                      # 4 an escape elsewhere
        b'{"callback":"https://gateway.logink.cn/api"}',                             # 5 plain
        b'GET https://%67ateway%2Elogink%2ecn/api?q=a%20b HTTP/1.1\r\n',              # 6 percent-encoded
    ]
    for t in both_paths(tmp_path, msgs):
        got: dict[int, list] = {}
        for r in t.to_pylist():
            got.setdefault(r["offset"], []).append((r["indicator"], r["seen_where"]))
        assert got[0] == [("gateway.logink.cn", "JSON_PATH")]
        assert got[1] == [("gateway.logink.cn", "XML_ELEMENT")]
        assert got[2] == [("gateway.logink.cn", "JSON_PATH")]
        assert 3 not in got
        assert got[4] == got[5] == [("gateway.logink.cn", "JSON_PATH")]
        assert ("gateway.logink.cn", "PAYLOAD") in got[6]


def test_names_hidden_in_short_base64_fields(tmp_path):
    """A watched host or marker inside a base64 field too short to be decoded as a layer (under
    ``kernels/jsonscan.B64_MIN`` characters) is found through its base64 aliases, in any
    alignment and either alphabet; the run is decoded and matched as text, so look-alikes and
    unlisted hosts stay unmatched; a name seen in clear too is shown as in clear.  The same rows
    come from ``detect_messages`` alone and through the classifier's prescan."""
    import base64

    from flowaudit.kernels.jsonscan import B64_MIN

    b64, safe = base64.b64encode, base64.urlsafe_b64encode
    fields = [
        b64(b"https://gateway.logink.cn/ais/x"),                       # 0 host and path
        b64(b"xhttps://gateway.logink.cn/"),                           # 1 another alignment
        safe(b"ab?>LOGINK_CN_FREIGHTCHARGES?>"),                       # 2 a marker, URL-safe alphabet
        b64(b"https://notlogink.cn/"),                                 # 3 a look-alike
        b64(b"https://gateway.logink.cn/"),                            # 4 in clear as well (below)
        b64(b"http://x.teamviewer.com/"),                              # 5 not a listed host
        b64(b"http://master12.teamviewer.com/"),                       # 6 a host pattern's host
        b64(b"\x8f\x01random bytes of a token\xfe"),                   # 7 nothing
        b64(b"HTTPS://GATEWAY.LOGINK.CN/"),                            # 8 a host in upper case
    ]
    assert all(len(f) < B64_MIN and b"logink" not in f.lower() for f in fields)
    msgs = [b'{"cb":"%s"}' % f for f in fields]
    msgs[4] = b'{"cb":"%s","u":"https://gateway.logink.cn/"}' % fields[4]
    for t in both_paths(tmp_path, msgs):
        got: dict[int, set] = {}
        for r in t.to_pylist():
            got.setdefault(r["offset"], set()).add((r["platform"], r["indicator"], r["indicator_type"],
                                                    r["seen_where"]))
        assert got[0] == {("LOGINK", "gateway.logink.cn (base64)", "host", "JSON_PATH"),
                          ("LOGINK", "/ais/ (base64)", "url_path", "JSON_PATH")}
        assert got[1] == {("LOGINK", "gateway.logink.cn (base64)", "host", "JSON_PATH")}
        assert got[2] == {("LOGINK", "LOGINK_CN_FREIGHTCHARGES (base64)", "payload_marker", "JSON_PATH")}
        assert got[4] == {("LOGINK", "gateway.logink.cn", "host", "JSON_PATH")}
        assert {(p, i) for p, i, _t, _w in got[6]} == {("TeamViewer", "master12.teamviewer.com (base64)")}
        assert got[8] == {("LOGINK", "gateway.logink.cn (base64)", "host", "JSON_PATH")}
        assert not {3, 5, 7} & set(got)
    # one long run holding the alias thousands of times: decoded once, one row
    many = b"FTX+AAI+++%s'" % b64(b"see ssl.logink.cn " * 5000)
    buf, off = batch([many])
    rows = detector(tmp_path).detect_messages(buf, off, offset=np.arange(1)).to_pylist()
    assert [(r["indicator"], r["seen_where"]) for r in rows] == [("ssl.logink.cn (base64)", "PAYLOAD")]


def test_retro_hunt_treats_names_seen_as_dns(tmp_path):
    """A retro-hunt given name logs (--dns) recomputes the flows named through a TLS server name or
    HTTP Host and the names seen, so the carried ones are dropped; without them they are carried
    while today's watchlist still lists the host."""
    from flowaudit.audit.retro import Retro

    from .test_dnsmap import seen_line

    det = detector(tmp_path)
    carried = pa.concat_tables([
        det.observe_dns([seen_line(float(T0), "gateway.logink.cn", "198.18.0.30"),
                         seen_line(float(T0), "exa.logink.org", "198.18.0.31", "http_host")]),
        det.detect_flows(flows([("10.40.1.5", "198.18.0.30", 50000, 443, 6, 4000),
                                ("10.40.1.5", "198.18.0.31", 50001, 81, 6, 300)]))])
    assert sorted(carried["seen_where"].to_pylist()) == ["HTTP_HOST", "HTTP_HOST", "TLS_SNI", "TLS_SNI"]
    assert Retro(det, b"k" * 32, dns_given=True).keep(carried).num_rows == 0
    kept = Retro(det, b"k" * 32, dns_given=False).keep(carried)
    assert kept.num_rows == 4
    only = tmp_path / "only.toml"        # today's watchlist lists one of the two hosts
    only.write_text('version = "t"\n[platforms.LOGINK]\nseverity = "low"\nsource = "test"\n[[indicators]]\n'
                    'platform = "LOGINK"\ntype = "host"\nvalue = "exa.logink.org"\nsource = "test"\n')
    kept = Retro(E.EgressDetector(W.compile_files([only])), b"k" * 32, dns_given=False).keep(carried)
    assert sorted(kept["indicator"].to_pylist()) == ["exa.logink.org", "exa.logink.org"]
