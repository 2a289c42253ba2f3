"""The stream's telemetry path without Kafka: DNS answers, goflow2 flows and NetFlow datagrams in
one batch through StreamService.handle, into the partition writers."""
from __future__ import annotations

import json
import struct
import time

import numpy as np
import orjson

from flowaudit.config import Settings
from flowaudit.pipeline import Batch
from flowaudit.quarantine import open_row
from flowaudit.sinks.parquet import read_dataset
from flowaudit.service import StreamService

T0_MS = 1_772_323_200_000  # 2026-03-01T00:00:00Z


def service(tmp_path, topics):
    st = Settings()
    st.kafka.topics = topics
    st.sink.root = str(tmp_path / "out")
    st.security.hmac_key = "flowpath-test-key-0123"
    st.kafka.pipeline_depth = 0
    svc = StreamService(st.validate(), metrics=None, install_signals=False)
    for t in topics:
        assert svc.open_partition(t, 0) is None   # locked and recovered, as on assignment
    return svc


def batch_of(svc, rows):
    """rows: (topic, offset, key, value)"""
    src = [svc.topic_idx[t] for t, *_ in rows]
    return Batch.from_values([v for *_, v in rows], svc.topic_fmt[np.asarray(src)], sources=svc.topic_names,
                             source_idx=src, partition=[0] * len(rows), offset=[o for _, o, *_ in rows],
                             ts_ms=[T0_MS] * len(rows), keys=[k for _, _, k, _ in rows])


def v5(src: str, dst: str, dport: int, nbytes: int) -> bytes:
    """One NetFlow v5 datagram with one record (RFC-less but well known layout: 24 + 48 bytes)."""
    ip = lambda a: bytes(int(x) for x in a.split("."))  # noqa: E731
    secs = T0_MS // 1000
    head = struct.pack("!HHIIIIBBH", 5, 1, 100_000, secs, 0, 1, 0, 0, 0)
    rec = ip(src) + ip(dst) + ip("0.0.0.0") + struct.pack("!HHIIIIHHBBBBHHBBH", 1, 2, 10, nbytes, 90_000, 99_000,
                                                              40_000, dport, 0, 0x18, 6, 0, 0, 0, 0, 0, 0)
    return head + rec


def test_dns_goflow_netflow_in_one_batch(tmp_path):
    topics = {"zeek.dns": "dns", "goflow.flows": "goflow", "netflow.raw": "netflow", "port.json": "json"}
    svc = service(tmp_path, topics)
    dns = orjson.dumps({"ts": T0_MS / 1000 - 5, "id.orig_h": "10.0.0.5", "query": "gateway.logink.cn",
                        "qtype_name": "A", "answers": ["198.51.100.7"], "TTLs": [300.0]})
    gf = orjson.dumps({"type": "NETFLOW_V9", "time_received_ns": T0_MS * 1_000_000, "sampling_rate": 10,
                       "sampler_address": "192.0.2.1", "time_flow_start_ns": T0_MS * 1_000_000,
                       "time_flow_end_ns": (T0_MS + 1000) * 1_000_000, "bytes": 1200, "packets": 3,
                       "src_addr": "10.0.0.5", "dst_addr": "198.51.100.7", "etype": "IPv4", "proto": "TCP",
                       "src_port": 40000, "dst_port": 443})
    rows = [("goflow.flows", 0, b"192.0.2.1", gf), ("zeek.dns", 0, None, dns),
            ("netflow.raw", 0, b"192.0.2.9", v5("10.0.0.6", "203.0.113.9", 3389, 500)),
            ("netflow.raw", 1, b"192.0.2.9", b"\x00\x05\x00\x09"),          # truncated v5 header
            ("zeek.dns", 1, None, b"{not json"),
            ("goflow.flows", 1, b"192.0.2.1", b'{"type": "SFLOW_5", "src_addr": "x", "dst_addr": "y"}'),
            ("port.json", 0, b"k", b'{"method": "logink.track.customs", "equipmentReference": "SUDU1234569"}')]
    b = batch_of(svc, rows)
    group = np.zeros(len(rows), np.int64)
    for i, (t, *_rest) in enumerate(rows):
        group[i] = list(topics).index(t)
    svc.handle(b, group, [(t, 0) for t in topics], 0.0)
    svc.flush_all()
    root = svc.root
    msgs = read_dataset(root, "messages").to_pylist()
    quar = read_dataset(root, "quarantine").to_pylist()
    assert sorted((m["source"], m["offset"]) for m in msgs) == [("goflow.flows", 0), ("netflow.raw", 0),
                                                                 ("port.json", 0), ("zeek.dns", 0)]
    assert [h["value_masked"] for h in read_dataset(root, "hits").to_pylist()] == ["SUDU******9"]
    reasons = {(q["source"], q["offset"]): q["reason"] for q in quar}
    assert set(reasons) == {("netflow.raw", 1), ("zeek.dns", 1), ("goflow.flows", 1)}
    assert reasons[("zeek.dns", 1)] == "malformed_json"
    assert reasons[("goflow.flows", 1)] == "no_usable_address"     # JSON, but no address (was malformed_json)
    # keys (here the exporter address) are masked and keyed; payloads are sealed with their key
    key_of = {(m["source"], m["offset"]): m for m in msgs}
    assert key_of[("netflow.raw", 0)]["key_masked"] == "***.*.*.*" and key_of[("zeek.dns", 0)]["key_masked"] is None
    assert key_of[("netflow.raw", 0)]["key_hmac"] == svc.classifier.protector.hmac(b"192.0.2.9")
    assert all(m["key_raw"] is None for m in msgs)
    opened = {(q["source"], q["offset"]): open_row(svc.classifier.protector, q) for q in quar}
    assert opened == {("netflow.raw", 1): (b"192.0.2.9", b"\x00\x05\x00\x09"), ("zeek.dns", 1): (None, b"{not json"),
                      ("goflow.flows", 1): (b"192.0.2.1", b'{"type": "SFLOW_5", "src_addr": "x", "dst_addr": "y"}')}
    assert {q["raw_encoding"] for q in quar} == {"aes-256-gcm/v1"}
    flows = read_dataset(root, "flows").to_pylist()
    assert sorted((f["source"], f["dst_addr"], f["dst_port"], f["sampling_interval"]) for f in flows) == [
        ("goflow.flows", "198.51.100.7", 443, 10), ("netflow.raw", "203.0.113.9", 3389, 1)]
    tr = read_dataset(root, "transfers").to_pylist()
    # the DNS answer itself, and the flow to the address that resolved from gateway.logink.cn
    by_where = {t["seen_where"]: t for t in tr}
    assert by_where["DNS_ANSWER"]["indicator"] == "gateway.logink.cn"
    assert by_where["DNS_ANSWER"]["source"] == "zeek.dns" and by_where["DNS_ANSWER"]["offset"] == 0
    assert [t["indicator"] for t in tr if t["source"] == "port.json"] == ["logink.track.customs"]
    f = [t for t in tr if t["source"] == "goflow.flows"]
    assert len(f) == 1 and f[0]["platform"] == "LOGINK" and f[0]["dst_addr"] == "198.51.100.7"
    assert f[0]["bytes"] == 1200 and f[0]["bytes_scaled"] == 12000
    # no zones configured: the built-in remote-access rules still flag RDP from an internal
    # (RFC 1918) address to the internet
    nf = [(t["platform"], t["rule"], t["indicator"], t["src_zone"], t["dst_zone"]) for t in tr
          if t["source"] == "netflow.raw"]
    assert nf == [("policy", "remote_access:rdp", "tcp/3389", "internal", "internet")]


def test_silent_crane_hosts_per_window(tmp_path):
    """Inventory crane hosts that send nothing through the exporters in a window of flow time."""
    policy = tmp_path / "zones.toml"
    policy.write_text('version = "t-1"\nformat = 1\n[network]\ninternal = ["10.0.0.0/8"]\n'
                      '[zones.crane_ot]\nkind = "ot"\ncidrs = ["10.20.0.0/16"]\nmay_reach = []\n'
                      '[inventory]\nhosts = ["10.20.1.10", "10.20.1.11"]\nzones = ["crane_ot"]\n')
    topics = {"goflow.flows": "goflow"}
    st = Settings()
    st.kafka.topics = topics
    st.sink.root = str(tmp_path / "out")
    st.security.hmac_key = "flowpath-test-key-0123"
    st.kafka.pipeline_depth = 0
    st.egress.policy_file = str(policy)
    st.egress.silent_window_s = 60
    svc = StreamService(st.validate(), metrics=None, install_signals=False)
    svc.open_partition("goflow.flows", 0)

    def flow(src, t_s):
        return orjson.dumps({"type": "IPFIX", "sampling_rate": 1, "sampler_address": "192.0.2.1",
                             "time_flow_start_ns": int(t_s * 1e9), "time_flow_end_ns": int(t_s * 1e9) + 1,
                             "bytes": 100, "packets": 1, "src_addr": src, "dst_addr": "10.10.0.1",
                             "etype": "IPv4", "proto": "TCP", "src_port": 1000, "dst_port": 2000})

    base = T0_MS / 1000
    # window 1: both cranes talk; window 2: only .10 talks; a flow in window 3 closes window 2
    values = [flow("10.20.1.10", base + 1), flow("10.20.1.11", base + 2), flow("10.20.1.10", base + 61),
              flow("10.20.1.10", base + 125)]
    rows = [("goflow.flows", i, b"192.0.2.1", v) for i, v in enumerate(values)]
    svc.handle(batch_of(svc, rows), np.zeros(len(rows), np.int64), [("goflow.flows", 0)], 0.0)
    svc.flush_all()
    tr = read_dataset(svc.root, "transfers").to_pylist()
    # (crane_ot may reach nothing, so every crane flow is also a zone_not_allowed transfer)
    assert {t["rule"] for t in tr} == {"zone_not_allowed", "silent_zone"}
    tr = [t for t in tr if t["rule"] == "silent_zone"]
    assert [(t["indicator"], t["seen_where"], t["rule"], t["src_zone"], t["offset"]) for t in tr] == [
        ("10.20.1.11", "NETFLOW_ABSENT", "silent_zone", "crane_ot", 3)]
    assert tr[0]["time_ns"] == (T0_MS // 60_000 * 60_000 + 60_000) * 1_000_000


def test_aggregates_command_over_the_transfers_dataset(tmp_path):
    import subprocess
    import sys

    import pyarrow.parquet as pq

    test_dns_goflow_netflow_in_one_batch(tmp_path)
    out = tmp_path / "agg.parquet"
    r = subprocess.run([sys.executable, "-m", "flowaudit", "aggregates", str(tmp_path / "out"), "--window", "60",
                        "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = pq.read_table(out).to_pylist()
    by = {(x["src_addr"], x["platform"]): x for x in rows}
    assert by[("10.0.0.5", "LOGINK")]["bytes"] == 1200 and by[("10.0.0.5", "LOGINK")]["bytes_scaled"] == 12000
    assert by[("10.0.0.6", "policy")]["flows"] == 1
    assert all(x["window_start_ns"] % 60_000_000_000 == 0 for x in rows)


def test_aggregates_of_a_root_without_transfers(tmp_path):
    """A root where nothing was transferred (no dataset=transfers) has no rows, exit 0, and an
    empty --out file; a folder that is no flowaudit root is a usage error."""
    import subprocess
    import sys

    import pyarrow.parquet as pq

    root = tmp_path / "clean"
    (root / "dataset=messages").mkdir(parents=True)
    out = tmp_path / "agg.parquet"
    r = subprocess.run([sys.executable, "-m", "flowaudit", "aggregates", str(root), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "0 (window, host, platform) rows" in r.stdout and pq.read_table(out).num_rows == 0
    r = subprocess.run([sys.executable, "-m", "flowaudit", "aggregates", str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "not a flowaudit root" in r.stderr


def test_transfers_source_is_each_rows_own_topic(tmp_path):
    """Two goflow2 topics (and two NetFlow topics) in one batch: every transfers row names the topic
    of its own message, like the flows rows do."""
    topics = {"goflow.a": "goflow", "goflow.b": "goflow", "netflow.a": "netflow", "netflow.b": "netflow"}
    svc = service(tmp_path, topics)

    def gf(dst, dport):
        return orjson.dumps({"type": "IPFIX", "sampling_rate": 1, "sampler_address": "192.0.2.1",
                             "time_flow_start_ns": T0_MS * 1_000_000, "time_flow_end_ns": T0_MS * 1_000_000,
                             "bytes": 10, "packets": 1, "src_addr": "10.0.0.5", "dst_addr": dst, "etype": "IPv4",
                             "proto": "TCP", "src_port": 40000, "dst_port": dport})

    rows = [("goflow.a", 0, b"192.0.2.1", gf("203.0.113.1", 3389)),
            ("goflow.b", 0, b"192.0.2.1", gf("203.0.113.2", 3389)),
            ("goflow.b", 1, b"192.0.2.1", gf("203.0.113.3", 5900)),
            ("goflow.a", 1, b"192.0.2.1", gf("203.0.113.4", 22)),
            ("netflow.b", 0, b"192.0.2.9", v5("10.0.0.6", "203.0.113.5", 3389, 500)),
            ("netflow.a", 0, b"192.0.2.9", v5("10.0.0.6", "203.0.113.6", 3389, 500))]
    group = np.array([list(topics).index(t) for t, *_ in rows], np.int64)
    svc.handle(batch_of(svc, rows), group, [(t, 0) for t in topics], 0.0)
    svc.flush_all()
    flows = {(f["dst_addr"]): (f["source"], f["offset"]) for f in read_dataset(svc.root, "flows").to_pylist()}
    tr = {(t["dst_addr"]): (t["source"], t["offset"], t["service"])
          for t in read_dataset(svc.root, "transfers").to_pylist()}
    assert flows == {"203.0.113.1": ("goflow.a", 0), "203.0.113.2": ("goflow.b", 0), "203.0.113.3": ("goflow.b", 1),
                     "203.0.113.4": ("goflow.a", 1), "203.0.113.5": ("netflow.b", 0),
                     "203.0.113.6": ("netflow.a", 0)}
    assert tr == {"203.0.113.1": ("goflow.a", 0, "rdp"), "203.0.113.2": ("goflow.b", 0, "rdp"),
                  "203.0.113.3": ("goflow.b", 1, "vnc"), "203.0.113.4": ("goflow.a", 1, "ssh"),
                  "203.0.113.5": ("netflow.b", 0, "rdp"), "203.0.113.6": ("netflow.a", 0, "rdp")}


# ---------------------------------------------------------------------------------------- restart state
def _restart_inputs(corpus):
    """(topic, kind, offset, key, value) in stream order: a real softflowd IPFIX export, a DNS answer
    for a watched name, and an exporter whose data set arrives one datagram before its template."""
    from flowaudit.sources.pcap import read_datagrams

    dg = read_datagrams([corpus / "netflow" / "generated" / "softflowd" / "remote_access_sfd_ipfix.pcap"])
    real = [bytes(dg.buf[dg.offsets[i]:dg.offsets[i + 1]]) for i in range(len(dg))]
    t0 = 1_740_988_800                          # the mix's first packet (corpus README)
    fields = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 4), (2, 4), (150, 4)]
    tpl = struct.pack(">HH", 300, len(fields)) + b"".join(struct.pack(">HH", ie, ln) for ie, ln in fields)

    def rec(dst, dport, start):
        return bytes([10, 40, 1, 5]) + bytes(int(x) for x in dst.split(".")) + struct.pack(">HHBIII", 40000, dport,
                                                                                           6, 900, 3, start)

    def ipfix(seq, *sets):
        body = b"".join(struct.pack(">HH", sid, 4 + len(b)) + b for sid, b in sets)
        return struct.pack(">HHIII", 10, 16 + len(body), t0 + 400, seq, 7) + body

    held = ipfix(0, (300, rec("198.51.100.7", 443, t0 + 100) + rec("8.8.8.8", 3389, t0 + 100)))
    tdg = ipfix(1, (2, tpl), (300, rec("198.51.100.7", 8443, t0 + 390)))
    dns = orjson.dumps({"ts": t0, "id.orig_h": "10.40.1.5", "query": "gateway.logink.cn", "qtype_name": "A",
                        "rcode_name": "NOERROR", "answers": ["198.51.100.7"], "TTLs": [300.0]})
    later_dns = orjson.dumps({"ts": t0 + 380, "id.orig_h": "10.40.1.5", "query": "www.example.com",
                              "qtype_name": "A", "rcode_name": "NOERROR", "answers": ["198.51.100.9"],
                              "TTLs": [60.0]})
    rows = [("zeek.dns", "dns", 0, None, dns)]
    rows += [("netflow.raw", "netflow", i, b"127.0.0.1", v) for i, v in enumerate(real[:3])]
    rows += [("netflow.raw", "netflow", 3, b"192.0.2.77", held)]
    # -- the snapshot is taken here --
    rows += [("zeek.dns", "dns", 1, None, later_dns), ("netflow.raw", "netflow", 4, b"192.0.2.77", tdg)]
    rows += [("netflow.raw", "netflow", 5 + i, b"127.0.0.1", v) for i, v in enumerate(real[3:])]
    return rows, 5


def _flowpath(tmp_path=None):
    from flowaudit import schemas
    from flowaudit.detect.egress import EgressDetector
    from flowaudit.detect.flowpath import FlowPath

    from flowaudit.protect import Protector

    return FlowPath(EgressDetector(policy=schemas.path("zones.example.toml")), silent_window_s=60,
                    protector=Protector(b"flowpath-test-key-0123"))


def _run_rows(fp, rows):
    """One batch per input message (the worst case for state carried between batches)."""
    from flowaudit.pipeline import format_code

    out = {"flows": [], "transfers": []}
    for topic, kind, off, key, value in rows:
        b = Batch.from_values([value], format_code(kind), sources=[topic], source_idx=[0], partition=[0],
                              offset=[off], ts_ms=[T0_MS], keys=[key])
        res = fp.run(b, np.arange(1), kind)
        for d in out:
            if d in res.tables:
                out[d] += res.tables[d][0].to_pylist()
    return out


def _canon(rows):
    return sorted(tuple(sorted((k, str(v)) for k, v in r.items())) for r in rows)


def test_state_restore_continues_like_one_uninterrupted_flowpath(corpus, caplog):
    rows, cut = _restart_inputs(corpus)
    whole = _run_rows(_flowpath(), rows)
    a = _flowpath()
    first = _run_rows(a, rows[:cut])
    assert a.decoder.held == 1 and a.decoder.template_count >= 4
    blob = a.state()
    b = _flowpath()
    assert b.restore(blob)
    assert b.decoder.held == 1 and b.decoder.templates() == a.decoder.templates()
    second = _run_rows(b, rows[cut:])
    for d in ("flows", "transfers"):
        assert _canon(first[d] + second[d]) == _canon(whole[d]), d
    # what the restart had to carry really mattered: the held set's flows, attributed through the
    # DNS answer of the first part (flow start inside the TTL, exported after a later answer)
    held = [f for f in second["flows"] if f["exporter"] == "192.0.2.77" and f["offset"] == 3]
    assert sorted(f["dst_addr"] for f in held) == ["198.51.100.7", "8.8.8.8"]
    logink = [t for t in second["transfers"] if t["dst_addr"] == "198.51.100.7"]
    assert [(t["offset"], t["platform"], t["seen_where"], t["indicator"]) for t in logink] == [
        (3, "LOGINK", "DNS_ANSWER", "gateway.logink.cn")]
    assert whole["flows"] and len(first["flows"]) + len(second["flows"]) == len(whole["flows"]) == 161 + 3
    # without the snapshot the held set is lost and the softflowd data after the cut has no template
    c = _flowpath()
    lost = _run_rows(c, rows[cut:])
    assert len(lost["flows"]) < len(second["flows"])


def test_replay_after_restore_never_holds_or_decodes_twice(corpus):
    """The stream resumes from the committed offset, which may lie before the snapshot: the held
    set's datagram comes again and replaces the held copy instead of doubling it."""
    rows, cut = _restart_inputs(corpus)
    a = _flowpath()
    _run_rows(a, rows[:cut])
    b = _flowpath()
    assert b.restore(a.state())
    replay = _run_rows(b, rows[cut - 1:])      # the held set's own datagram again, then the rest
    assert b.decoder.counters["held_duplicate"] == 1
    held = [f for f in replay["flows"] if f["exporter"] == "192.0.2.77" and f["offset"] == 3]
    assert sorted(f["dst_addr"] for f in held) == ["198.51.100.7", "8.8.8.8"]


def test_restore_ignores_corrupt_or_foreign_state(corpus, caplog):
    import logging
    import zlib

    from flowaudit.detect.flowpath import _STATE_HEAD, STATE_MAGIC

    rows, cut = _restart_inputs(corpus)
    a = _flowpath()
    _run_rows(a, rows[:cut])
    blob = a.state()
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0xFF
    payload = zlib.compress(b"\x05\x00\x00\x00" + b"[1,2]")
    forged = _STATE_HEAD.pack(STATE_MAGIC, 1, zlib.crc32(payload), len(payload)) + payload
    zeros = zlib.compress(bytes(1 << 20))        # a valid envelope around 1 MiB of nothing
    empty = _STATE_HEAD.pack(STATE_MAGIC, 1, zlib.crc32(zeros), len(zeros)) + zeros
    newer = _STATE_HEAD.pack(STATE_MAGIC, 2, 0, 0)
    for bad in (b"", b"garbage", blob[:-1], bytes(flipped), forged, empty, newer, b"PAR1" + blob[4:]):
        b = _flowpath()
        with caplog.at_level(logging.WARNING, logger="flowaudit.detect.flowpath"):
            assert b.restore(bad) is False
        assert "restart state ignored" in caplog.text
        caplog.clear()
        assert b.decoder.held == 0 and b.decoder.template_count == 0 and len(b.egress.dns) == 0
        assert len(_run_rows(b, rows[:1])["transfers"]) == 1          # and it still works


def test_dns_messages_in_zeek_ascii(tmp_path):
    """A DNS topic's message in Zeek's default log format (its header, then tab-separated rows, as a
    log shipper that forwards whole files sends it) names its answers as a JSON line does; a row
    that does not fit the header quarantines the message with the reason ``format_mismatch``."""
    from .test_dnsmap import zeek_ascii

    svc = service(tmp_path, {"zeek.dns": "dns"})
    rec = {"ts": T0_MS / 1000 - 5, "id.orig_h": "10.0.0.5", "query": "gateway.logink.cn", "qtype_name": "A",
           "rcode_name": "NOERROR", "answers": ["198.51.100.7"], "TTLs": [300.0]}
    good = zeek_ascii([rec])
    # a message whose second row does not fit the header: quarantined whole, and its good first
    # row names no flow either (no attribution through a record the datasets do not hold)
    other = zeek_ascii([{**rec, "answers": ["198.51.100.8"]}, rec]).splitlines()
    other[-2] = other[-2].replace(b"\t198.51.100.7\t", b"\t198.51.100.7\tone-too-many\t")
    rows = [("zeek.dns", 0, None, good), ("zeek.dns", 1, None, b"\n".join(other))]
    svc.handle(batch_of(svc, rows), np.zeros(2, np.int64), [("zeek.dns", 0)], 0.0)
    svc.flush_all()
    tr = read_dataset(svc.root, "transfers").to_pylist()
    assert [(t["seen_where"], t["indicator"], t["dst_addr"], t["offset"]) for t in tr] == [
        ("DNS_ANSWER", "gateway.logink.cn", "198.51.100.7", 0)]
    assert [(q["offset"], q["reason"]) for q in read_dataset(svc.root, "quarantine").to_pylist()] == [
        (1, "format_mismatch")]
    assert [m["offset"] for m in read_dataset(svc.root, "messages").to_pylist()] == [0]
    t_ns = int(rec["ts"] * 1e9)
    assert svc.flowpath.egress.dns.get("198.51.100.7", t_ns) == "gateway.logink.cn"
    assert svc.flowpath.egress.dns.get("198.51.100.8", t_ns) is None


def test_dns_topic_takes_tls_server_names_and_http_hosts(tmp_path):
    """A dns topic also takes Zeek's ssl.log and http.log records and Suricata's eve.json events: a
    connection that named a watchlisted host names its responder (a TLS_SNI / HTTP_HOST row, rule
    name_seen), and a flow from a Zeek conn topic to it is that platform's, seen as TLS_SNI; the
    messages are zeek-ssl, zeek-http, suricata-tls (suricata-eve: an event that names nothing).  A
    server name that is no text quarantines its message."""
    from .test_dnsmap import eve, seen_line, zeek_ascii

    svc = service(tmp_path, {"zeek.ssl": "dns", "zeek.http": "dns", "zeek.conn": "zeek_conn", "suricata.eve": "dns"})
    t = T0_MS / 1000
    ssl = zeek_ascii([orjson.loads(seen_line(t - 1, "gateway.logink.cn", "198.51.100.7"))], "ssl")
    http = seen_line(t - 1, "exa.logink.org:81", "198.51.100.9", "http_host")
    conn = {"ts": t, "uid": "C1", "id.orig_h": "10.0.0.5", "id.orig_p": 40000, "id.resp_h": "198.51.100.7",
            "id.resp_p": 443, "proto": "tcp", "duration": 1.5, "orig_pkts": 12, "orig_ip_bytes": 9000,
            "resp_pkts": 0, "resp_ip_bytes": 0}
    rows = [("zeek.ssl", 0, None, ssl), ("zeek.ssl", 1, None, seen_line(t, ["x"], "198.51.100.8")),
            ("zeek.http", 0, None, http), ("zeek.conn", 0, None, orjson.dumps(conn)),
            ("suricata.eve", 0, None, eve("tls", {"sni": "api.logink.org"}, ts=time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(t)),
                                          dst="198.51.100.10")),
            ("suricata.eve", 1, None, eve("alert", {"signature": "x"}))]
    svc.handle(batch_of(svc, rows), np.array([0, 1, 0, 0, 0, 1]),
               [("zeek.ssl", 0), ("zeek.http", 0), ("zeek.conn", 0), ("suricata.eve", 0)], 0.0)
    svc.flush_all()
    tr = read_dataset(svc.root, "transfers").to_pylist()
    assert sorted((t["source"], t["seen_where"], t["rule"], t["indicator"], t["dst_addr"], t["bytes"]) for t in tr) == [
        ("suricata.eve", "TLS_SNI", "name_seen", "api.logink.org", "198.51.100.10", None),
        ("zeek.conn", "TLS_SNI", "watchlist", "gateway.logink.cn", "198.51.100.7", 9000),
        ("zeek.http", "HTTP_HOST", "name_seen", "exa.logink.org", "198.51.100.9", None),
        ("zeek.ssl", "TLS_SNI", "name_seen", "gateway.logink.cn", "198.51.100.7", None)]
    msgs = read_dataset(svc.root, "messages").to_pylist()
    assert sorted((m["source"], m["offset"], m["msg_type"]) for m in msgs) == [
        ("suricata.eve", 0, "suricata-tls"), ("suricata.eve", 1, "suricata-eve"), ("zeek.conn", 0, "zeek-conn"),
        ("zeek.http", 0, "zeek-http"), ("zeek.ssl", 0, "zeek-ssl")]
    assert [(q["source"], q["offset"], q["reason"]) for q in read_dataset(svc.root, "quarantine").to_pylist()] == [
        ("zeek.ssl", 1, "malformed_json")]


def test_zeek_conn_topic_gives_flows_named_by_dns(tmp_path):
    """A Zeek conn topic (Zeek's Kafka writer: a JSON connection a message; or its ASCII log with
    the header): each connection gives the originator's and the responder's flow records; a flow
    to an address that a DNS answer named is LOGINK's; a message with a line that is no
    connection is quarantined whole, none of its connections a flow."""
    from .test_dnsmap import zeek_ascii

    svc = service(tmp_path, {"zeek.dns": "dns", "zeek.conn": "zeek_conn"})
    t = T0_MS / 1000
    dns = orjson.dumps({"ts": t - 5, "id.orig_h": "10.0.0.5", "query": "gateway.logink.cn", "qtype_name": "A",
                        "answers": ["198.51.100.7"], "TTLs": [300.0]})
    conn = {"ts": t, "uid": "C1", "id.orig_h": "10.0.0.5", "id.orig_p": 40000, "id.resp_h": "198.51.100.7",
            "id.resp_p": 443, "proto": "tcp", "duration": 1.5, "orig_pkts": 12, "orig_ip_bytes": 9000,
            "resp_pkts": 9, "resp_ip_bytes": 800}
    other = dict(conn, uid="C2", **{"id.orig_h": "10.0.0.6", "id.resp_h": "192.0.2.80", "id.resp_p": 80},
                 resp_pkts=0, resp_ip_bytes=0)
    bad = zeek_ascii([other, conn], "conn").splitlines()
    bad[-2] += b"\tone-too-many"
    rows = [("zeek.dns", 0, None, dns), ("zeek.conn", 0, None, orjson.dumps(conn)),
            ("zeek.conn", 1, None, zeek_ascii([other], "conn")),
            ("zeek.conn", 2, None, b"\n".join(bad)), ("zeek.conn", 3, None, b'{"ts": "yesterday"}')]
    svc.handle(batch_of(svc, rows), np.array([0, 1, 1, 1, 1]), [("zeek.dns", 0), ("zeek.conn", 0)], 0.0)
    svc.flush_all()
    flows = read_dataset(svc.root, "flows").to_pylist()
    assert sorted((f["offset"], f["src_addr"], f["dst_addr"], f["bytes"], f["packets"]) for f in flows) == [
        (0, "10.0.0.5", "198.51.100.7", 9000, 12), (0, "198.51.100.7", "10.0.0.5", 800, 9),
        (1, "10.0.0.6", "192.0.2.80", 9000, 12)]
    assert {f["source"] for f in flows} == {"zeek.conn"} and {f["exporter"] for f in flows} == {"zeek"}
    tr = [t for t in read_dataset(svc.root, "transfers").to_pylist() if t["source"] == "zeek.conn"]
    # (a flow named through DNS is seen as DNS_ANSWER; the answer back from the platform is its flow
    # record too, as NetFlow's would be)
    assert sorted((t["platform"], t["seen_where"], t["src_addr"], t["dst_addr"], t["indicator"], t["bytes"])
                  for t in tr) == [("LOGINK", "DNS_ANSWER", "10.0.0.5", "198.51.100.7", "gateway.logink.cn", 9000),
                                   ("LOGINK", "DNS_ANSWER", "198.51.100.7", "10.0.0.5", "gateway.logink.cn", 800)]
    quar = read_dataset(svc.root, "quarantine").to_pylist()
    assert sorted((q["offset"], q["reason"]) for q in quar) == [(2, "format_mismatch"), (3, "malformed_json")]
    msgs = read_dataset(svc.root, "messages").to_pylist()
    assert sorted((m["source"], m["offset"], m["msg_type"]) for m in msgs) == [
        ("zeek.conn", 0, "zeek-conn"), ("zeek.conn", 1, "zeek-conn"), ("zeek.dns", 0, "zeek-dns")]


def test_zeek_conn_topic_takes_suricata_flow_events(tmp_path):
    """A zeek_conn topic also takes Suricata's eve.json: a flow event is its two directions' flow
    records, named by an eve TLS server name on a dns topic; an alert is read and gives no flow
    (not quarantined); an event without addresses is quarantined."""
    from .test_dnsmap import eve

    svc = service(tmp_path, {"suricata.names": "dns", "suricata.flows": "zeek_conn"})
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(T0_MS / 1000))
    flow = json.dumps({"timestamp": iso, "event_type": "flow", "src_ip": "10.0.0.5", "src_port": 40000,
                       "dest_ip": "198.51.100.7", "dest_port": 443, "proto": "TCP",
                       "flow": {"pkts_toserver": 12, "pkts_toclient": 9, "bytes_toserver": 9000, "bytes_toclient": 800,
                                "start": iso, "end": iso}}).encode()
    rows = [("suricata.names", 0, None, eve("tls", {"sni": "gateway.logink.cn"}, ts=iso, src="10.0.0.5",
                                            dst="198.51.100.7")),
            ("suricata.flows", 0, None, flow), ("suricata.flows", 1, None, eve("alert", {"signature": "x"}, ts=iso)),
            ("suricata.flows", 2, None, eve("flow", {"pkts_toserver": 1}, ts=iso, src="nowhere"))]
    svc.handle(batch_of(svc, rows), np.array([0, 0, 1, 1]), [("suricata.names", 0), ("suricata.flows", 0)], 0.0)
    svc.flush_all()
    flows = read_dataset(svc.root, "flows").to_pylist()
    assert sorted((f["offset"], f["src_addr"], f["dst_addr"], f["bytes"], f["exporter"]) for f in flows) == [
        (0, "10.0.0.5", "198.51.100.7", 9000, "suricata"), (0, "198.51.100.7", "10.0.0.5", 800, "suricata")]
    tr = [t for t in read_dataset(svc.root, "transfers").to_pylist() if t["source"] == "suricata.flows"]
    assert {(t["seen_where"], t["indicator"], t["platform"]) for t in tr} == {("TLS_SNI", "gateway.logink.cn", "LOGINK")}
    assert [(q["offset"], q["reason"]) for q in read_dataset(svc.root, "quarantine").to_pylist()] == [
        (2, "malformed_json")]
    # its messages say they were Suricata's, not Zeek's
    msgs = read_dataset(svc.root, "messages").to_pylist()
    assert sorted((m["source"], m["offset"], m["msg_type"]) for m in msgs) == [
        ("suricata.flows", 0, "suricata-flow"), ("suricata.flows", 1, "suricata-eve"),
        ("suricata.names", 0, "suricata-tls")]


def _eve_flow(iso: str, src: str, dst: str, to_server: int, to_client: int) -> bytes:
    return json.dumps({"timestamp": iso, "event_type": "flow", "src_ip": src, "src_port": 40000, "dest_ip": dst,
                       "dest_port": 443, "proto": "TCP",
                       "flow": {"pkts_toserver": 12, "pkts_toclient": 9, "bytes_toserver": to_server,
                                "bytes_toclient": to_client, "start": iso, "end": iso}}).encode()


def test_eve_topic_takes_its_names_then_its_flows(tmp_path):
    """A Suricata ``eve`` topic (every event type on one topic, as a shipper sends eve.json): its
    DNS answers name addresses, its flow events are flows matched against those names, its alerts
    are read and give nothing; each message is one messages or quarantine row.  A message with a
    bad line is quarantined whole: its TLS name names nothing and its flow is no flow."""
    from .test_dnsmap import eve

    svc = service(tmp_path, {"suricata.eve": "eve"})
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(T0_MS / 1000))
    answer = eve("dns", {"type": "answer", "rrname": "gateway.logink.cn", "rrtype": "A", "rcode": "NOERROR",
                         "answers": [{"rrname": "gateway.logink.cn", "rrtype": "A", "ttl": 300,
                                      "rdata": "198.51.100.7"}]},
                 ts=iso, src="10.40.0.53", dst="10.0.0.5", sport=53, dport=53000)
    bad = b"\n".join([eve("tls", {"sni": "api.logink.org"}, ts=iso, src="10.0.0.6", dst="198.51.100.99"),
                      _eve_flow(iso, "10.0.0.6", "198.51.100.99", 700, 70),
                      eve("dns", {"type": "answer", "rrname": "x.example"}, ts="yesterday")])
    rows = [("suricata.eve", 0, None, answer),
            ("suricata.eve", 1, None, _eve_flow(iso, "10.0.0.5", "198.51.100.7", 9000, 800)),
            ("suricata.eve", 2, None, eve("alert", {"signature": "x"}, ts=iso)),
            ("suricata.eve", 3, None, bad),
            ("suricata.eve", 4, None, _eve_flow(iso, "10.0.0.6", "198.51.100.99", 500, 50))]
    svc.handle(batch_of(svc, rows), np.zeros(len(rows), np.int64), [("suricata.eve", 0)], 0.0)
    svc.flush_all()
    flows = read_dataset(svc.root, "flows").to_pylist()
    assert sorted((f["offset"], f["src_addr"], f["dst_addr"], f["bytes"], f["exporter"]) for f in flows) == [
        (1, "10.0.0.5", "198.51.100.7", 9000, "suricata"), (1, "198.51.100.7", "10.0.0.5", 800, "suricata"),
        (4, "10.0.0.6", "198.51.100.99", 500, "suricata"), (4, "198.51.100.99", "10.0.0.6", 50, "suricata")]
    tr = read_dataset(svc.root, "transfers").to_pylist()
    assert sorted((t["offset"], t["rule"], t["seen_where"], t["dst_addr"], t["bytes"]) for t in tr) == [
        (0, "dns_lookup", "DNS_ANSWER", "198.51.100.7", None),
        (1, "watchlist", "DNS_ANSWER", "10.0.0.5", 800), (1, "watchlist", "DNS_ANSWER", "198.51.100.7", 9000)]
    assert {(t["platform"], t["indicator"]) for t in tr} == {("LOGINK", "gateway.logink.cn")}
    assert [(q["offset"], q["format"], q["reason"]) for q in read_dataset(svc.root, "quarantine").to_pylist()] == [
        (3, "eve", "malformed_json")]
    msgs = read_dataset(svc.root, "messages").to_pylist()
    # (a telemetry message's n_segments: the flows decoded from it; n_hits: the transfers it made)
    assert sorted((m["offset"], m["format"], m["msg_type"], m["n_segments"], m["n_hits"]) for m in msgs) == [
        (0, "eve", "suricata-dns", 0, 1), (1, "eve", "suricata-flow", 2, 2), (2, "eve", "suricata-eve", 0, 0),
        (4, "eve", "suricata-flow", 2, 0)]


def test_eve_topic_through_the_stream_waits_for_its_own_other_partition(broker, tmp_path):
    """A real broker, one eve topic of two partitions: the DNS answer on partition 0, the flow it
    names (a second later, by event and record time) on partition 1.  Partition 0's storage lock is
    held while partition 1 is read to its end, the consumer's worst order: the flow waits for
    partition 0's names (flowaudit/sources/dnssync.py), neither partition waits for itself or holds
    the other up for the bound, and the flow is LOGINK's."""
    from confluent_kafka import Producer

    from .conftest import stream_with_a_partition_locked
    from .test_dnsmap import eve

    topic = "t-eve.suricata"
    broker.create_topics({topic: 2})
    t0 = T0_MS
    iso = lambda ms: time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(ms / 1000))  # noqa: E731
    answer = eve("dns", {"type": "answer", "rrname": "gateway.logink.cn", "rrtype": "A", "rcode": "NOERROR",
                         "answers": [{"rrname": "gateway.logink.cn", "rrtype": "A", "ttl": 300,
                                      "rdata": "198.51.100.7"}]},
                 ts=iso(t0), src="10.40.0.53", dst="10.0.0.5", sport=53, dport=53000)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce(topic, answer, partition=0, timestamp=t0)
    p.produce(topic, eve("alert", {"signature": "x"}, ts=iso(t0 + 500)), partition=0, timestamp=t0 + 500)
    p.produce(topic, _eve_flow(iso(t0 + 1000), "10.0.0.5", "198.51.100.7", 9000, 800), partition=1,
              timestamp=t0 + 1000)
    p.produce(topic, _eve_flow(iso(t0 + 2000), "10.0.0.6", "192.0.2.80", 500, 50), partition=1, timestamp=t0 + 2000)
    assert p.flush(30) == 0

    root = tmp_path / "out"
    t_start = time.monotonic()
    rc, out, text = stream_with_a_partition_locked(broker.bootstrap, f"{topic}=eve", root, (topic, 0),
                                                   tmp_path / "stream.log", "g-eve", FLOWAUDIT_KAFKA_DNS_WAIT_S="120")
    assert rc == 0, text[-3000:]
    assert "DNS sync" not in out and time.monotonic() - t_start < 100    # the bound was not waited out
    tr = read_dataset(root, "transfers").to_pylist()
    assert sorted((t["partition"], t["offset"], t["rule"], t["seen_where"], t["src_addr"], t["dst_addr"])
                  for t in tr) == [(0, 0, "dns_lookup", "DNS_ANSWER", "10.0.0.5", "198.51.100.7"),
                                   (1, 0, "watchlist", "DNS_ANSWER", "10.0.0.5", "198.51.100.7"),
                                   (1, 0, "watchlist", "DNS_ANSWER", "198.51.100.7", "10.0.0.5")]
    msgs = read_dataset(root, "messages").to_pylist()
    assert sorted((m["partition"], m["offset"], m["msg_type"]) for m in msgs) == [
        (0, 0, "suricata-dns"), (0, 1, "suricata-eve"), (1, 0, "suricata-flow"), (1, 1, "suricata-flow")]

