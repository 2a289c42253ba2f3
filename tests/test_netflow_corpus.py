"""Every export capture of the shared NetFlow corpus through ``flowaudit flows``, record for record
against the tshark ground truth (``X.tshark.csv``) -- and, where tshark and nfdump disagree
(corpus README), against the standard, with the reason next to the case.

Comparison per capture frame (tshark's 1-based ``frame`` = our ``offset`` + 1): the multiset of
(src, dst, src_port, dst_port, protocol, octets, packets, rev_octets, rev_packets) must be equal,
and start/end times must agree to 1 ms where tshark has an absolute time (v5 ``unix_nsecs`` gives
sub-ms precision, v9 whole export seconds, IPFIX what the time IE carries).
"""
from __future__ import annotations

import argparse
import collections
import csv
import json
import struct
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from flowaudit import flows

from .conftest import stream_env

CORPUS_NF = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "netflow"
csv.field_size_limit(1 << 30)


def _manifest():
    if not (CORPUS_NF / "MANIFEST.csv").is_file():
        return []
    with open(CORPUS_NF / "MANIFEST.csv") as f:
        return [r for r in csv.DictReader(f)]


MANIFEST = _manifest()
PCAPS = [r["path"] for r in MANIFEST]

# Cases where tshark's reading is not the standard's; each is compared against nfdump instead
# (or against an explicit expectation) -- see the corpus README, "tshark vs nfdump".
FOLLOW_NFDUMP = {
    # RFC 3954 5.1: the v9 header count is "the total number of records in the export packet"; a
    # collector walks the FlowSets by their lengths (the datagram has no other length).  tshark
    # stops at the (too small) count and shows 0 flows; nfdump and we decode both data records.
    "logstash_nf9_invalid01.pcap",
    # The H3C template declares field type 43 with length 2.  Type 43 is not an address in
    # RFC 3954 nor in the IANA IPFIX registry (vendor/reserved); Wireshark decodes it as an IPv4
    # "router shortcut" address, flags the record malformed and abandons the packet after the first
    # record.  We skip the unknown field by its declared length and decode all 16, like nfdump.
    "logstash_nf9_h3c.pcap",
}
# v5 (Cisco): count is 1..30.  count=55582 in a 1464-byte datagram is a corrupt header; tshark
# decodes the 30 records that fit (their octet counts are garbage such as 3405774888 for 1 packet),
# nfdump drops the packet, and so do we (status v5_bad_count -> quarantine).
REJECTED = {"logstash_nf5_invalid01.pcap": "v5_bad_count"}
# The template and the data of this capture were recorded 15 days apart (two .dat files glued).
# RFC 7011 8.4 requires a template lifetime over UDP; with the default 1 h lifetime the template
# expires and the data is counted (template_expired + missing_template).  The record comparison
# runs with the lifetime disabled; test_template_lifetime_expires_stitched_capture checks the default.
TTL_OFF = {"logstash_ipfix_netscaler_varlen.pcap"}


def _tshark_rows(stem: Path):
    with open(str(stem) + ".tshark.csv") as f:
        return [r for r in csv.DictReader(f) if r["record_type"] == "flow"]


def _i(v, default=0):
    return int(v) if v not in ("", None) else default


def _key_t(r):
    rev_o, rev_p = _i(r["rev_octets"], None), _i(r["rev_packets"], None)
    if rev_o is None:
        # RFC 5103 reverse *total* counters (PEN 29305, IE 85/86, e.g. YAF) appear in tshark as the
        # second cflow.permanent_octets / permanent_packets; the CSV's rev_* columns only track IE 1/2
        extra = json.loads(r["extra"] or "{}")
        po, pp = extra.get("cflow.permanent_octets"), extra.get("cflow.permanent_packets")
        if isinstance(po, list) and len(po) == 2 and isinstance(pp, list) and len(pp) == 2:
            rev_o, rev_p = int(po[1]), int(pp[1])
    return (r["src_addr"], r["dst_addr"], _i(r["src_port"]), _i(r["dst_port"]), _i(r["protocol"]),
            _i(r["octets"]), _i(r["packets"]), rev_o, rev_p)


def _key_o(row):
    return (row["src_addr"], row["dst_addr"], row["src_port"], row["dst_port"], row["protocol"],
            row["bytes"], row["packets"], row["rev_bytes"], row["rev_packets"])


def _run(pcap: Path, tmp_path: Path, *extra):
    out = tmp_path / (pcap.stem + ".parquet")
    q = tmp_path / (pcap.stem + ".quarantine.parquet")
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers()
    flows.add_parsers(sub)
    args = ap.parse_args(["flows", str(pcap), "--out", str(out), "--quarantine", str(q), "--json", *extra])
    assert args.fn(args) == 0
    return pq.read_table(out).to_pylist(), pq.read_table(q).to_pylist()


def _nfdump_rows(stem: Path):
    with open(str(stem) + ".nfdump.json") as f:
        recs = json.load(f)
    out = []
    for r in recs:
        src = r.get("src4_addr") or r.get("src6_addr") or ""
        dst = r.get("dst4_addr") or r.get("dst6_addr") or ""
        out.append((src, dst, r.get("src_port", 0), r.get("dst_port", 0), r.get("proto", 0),
                    r.get("in_bytes", 0), r.get("in_packets", 0)))
    return out


@pytest.mark.parametrize("rel", PCAPS, ids=[Path(p).stem[:60] for p in PCAPS])
def test_capture_matches_ground_truth(rel, tmp_path):
    pcap = CORPUS_NF / rel
    stem = pcap.with_suffix("")
    name = pcap.name
    meta = next(r for r in MANIFEST if r["path"] == rel)
    extra = ["--template-ttl", "0"] if name in TTL_OFF else []
    rows, quarantine = _run(pcap, tmp_path, *extra)
    truth = _tshark_rows(stem)

    if name in REJECTED:
        assert rows == []
        assert [q["reason"] for q in quarantine] == [REJECTED[name]]
        return
    if name in FOLLOW_NFDUMP:
        ours = collections.Counter(_key_o(r)[:7] for r in rows)
        assert ours == collections.Counter(_nfdump_rows(stem)), name
        # and the records tshark did decode are among ours
        assert not (collections.Counter(_key_t(r)[:7] for r in truth) - ours)
        return

    # group per capture frame: tshark frame = our offset + 1
    by_frame_t = collections.defaultdict(list)
    for r in truth:
        by_frame_t[int(r["frame"])].append(r)
    by_frame_o = collections.defaultdict(list)
    for r in rows:
        by_frame_o[r["offset"] + 1].append(r)
    extra_frames = set(by_frame_o) - set(by_frame_t)
    sets_without_template = int(meta["sets_without_template"] or 0)
    for frame, trs in by_frame_t.items():
        ors = by_frame_o.get(frame, [])
        ct = collections.Counter(_key_t(r) for r in trs)
        co = collections.Counter(_key_o(r) for r in ors)
        if sets_without_template:
            # tshark cannot decode a data set that precedes its template; we hold it and decode it
            # once the template arrives, so we may have *more* records in such a frame
            assert not (ct - co), (name, frame, ct - co)
        else:
            assert ct == co, (name, frame, ct - co, co - ct)
        # times, where tshark has an absolute time for the record
        for tr in trs:
            cands = [o for o in ors if _key_o(o) == _key_t(tr)]
            for col_t, col_o in (("start_ms", "first_ns"), ("end_ms", "last_ns")):
                if tr[col_t] == "":
                    continue
                want = float(tr[col_t])
                assert any(abs(o[col_o] / 1e6 - want) <= 1.0 for o in cands), (name, frame, col_t, want,
                                                                                [o[col_o] for o in cands])
    if not sets_without_template:
        assert not extra_frames, (name, sorted(extra_frames)[:5])
    assert sum(len(v) for v in by_frame_o.values()) >= len(truth)
    # every row carries provenance and an exporter that is the capture's UDP source
    exporters = {r["exporter"] for r in truth}
    assert {r["exporter"] for r in rows} <= exporters | {""}
    assert all(r["source"] == name and r["partition"] == -1 for r in rows)


def test_held_sets_decode_like_a_second_pass(tmp_path):
    """A data set that precedes its template (same datagram) is held and decoded when the template
    arrives: the result equals decoding the capture a second time with the template known."""
    from flowaudit.decode.netflow import NetflowDecoder

    pcap = CORPUS_NF / "public" / "akvorado" / "akvorado_nf9_data+templates.pcap"
    dec = NetflowDecoder()
    t1, dg, status, _ = flows.decode_pcaps([pcap], decoder=dec)
    assert dec.counters["held_decoded"] >= 1 and dec.counters["missing_template"] == 0
    t2, _, _, _ = flows.decode_pcaps([pcap], decoder=dec)
    key = lambda t: sorted(map(tuple, (r.values() for r in t.drop_columns(["source"]).to_pylist())))  # noqa: E731
    assert key(t1) == key(t2)


def test_template_lifetime_expires_stitched_capture(tmp_path):
    """With the default template lifetime (1 h of exporter time) the 15-day-old template of the
    stitched Netscaler capture is expired and its data counted, never decoded with a stale layout."""
    pcap = CORPUS_NF / "public" / "logstash" / "logstash_ipfix_netscaler_varlen.pcap"
    table, _, _, dec = flows.decode_pcaps([pcap])
    assert table.num_rows == 0
    assert dec.counters["template_expired"] >= 1 and dec.counters["missing_template"] >= 1


def test_no_templates_capture_counts_missing(tmp_path):
    pcap = CORPUS_NF / "public" / "ndpi" / "ndpi_netflowv9_no_templates.pcap"
    table, _, status, dec = flows.decode_pcaps([pcap])
    assert table.num_rows == 0 and not status.any()
    assert dec.counters["missing_template"] == 23   # tshark: 23 sets without template


# ====================================================================== inputs: link types, pcapng, goflow2 JSON, CLI
def _export_payloads():
    from flowaudit.sources.pcap import read_datagrams

    dg = read_datagrams([CORPUS_NF / "public" / "pynetflow" / "pynetflow_nf9_softflowd.pcap"])
    return [bytes(dg.buf[dg.offsets[i]:dg.offsets[i + 1]]) for i in range(len(dg))]


def _frames(linktype, payload, src6=False, vlan=0):
    import dpkt

    udp = dpkt.udp.UDP(sport=40001, dport=2055, data=payload)
    udp.ulen = 8 + len(payload)
    if src6:
        ip = dpkt.ip6.IP6(src=bytes.fromhex("20010db8" + "00" * 11 + "01"), dst=bytes.fromhex("20010db8" + "00" * 11 + "02"),
                          nxt=17, hlim=64, data=udp)
        ip.plen = len(bytes(udp))
        et = 0x86DD
    else:
        ip = dpkt.ip.IP(src=bytes([192, 0, 2, 77]), dst=bytes([192, 0, 2, 1]), p=17, data=udp)
        ip.len = 20 + len(bytes(udp))
        et = 0x0800
    l3 = bytes(ip)
    if linktype == 1:
        tag = struct.pack(">HH", 0x8100, vlan) if vlan else b""
        return b"\x02" * 6 + b"\x04" * 6 + tag + struct.pack(">H", et) + l3
    if linktype == 101:
        return l3
    if linktype == 113:
        return struct.pack(">HHH", 0, 1, 6) + b"\x00" * 8 + struct.pack(">H", et) + l3
    if linktype == 276:
        return struct.pack(">HHIHBB", et, 0, 1, 1, 0, 6) + b"\x00" * 8 + l3
    if linktype == 0:
        return struct.pack("<I", 30 if src6 else 2) + l3
    raise ValueError(linktype)


@pytest.mark.parametrize("linktype,src6,vlan,fmt", [
    (1, False, 0, "pcap"), (1, False, 100, "pcap"), (1, True, 0, "pcapng"), (101, False, 0, "pcap"),
    (113, False, 0, "pcap"), (276, True, 0, "pcap"), (0, False, 0, "pcapng"),
])
def test_link_types_and_pcapng(tmp_path, linktype, src6, vlan, fmt):
    """Ethernet (+802.1Q), raw IP, Linux cooked SLL and SLL2, BSD loopback; IPv4 and IPv6
    transport; pcap and pcapng -- all give the same flows, and the exporter is the IP source."""
    import dpkt

    payloads = _export_payloads()
    path = tmp_path / f"x.{fmt}"
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=linktype) if fmt == "pcap" else dpkt.pcapng.Writer(f, linktype=linktype)
        w.writepkt(b"\x00" * 30, ts=1.0)   # junk frame: skipped and counted, never raised
        for i, p in enumerate(payloads):
            w.writepkt(_frames(linktype, p, src6, vlan), ts=1_000_000 + i)
    table, dg, status, dec = flows.decode_pcaps([path])
    ref, _, _, _ = flows.decode_pcaps([CORPUS_NF / "public" / "pynetflow" / "pynetflow_nf9_softflowd.pcap"])
    assert table.num_rows == ref.num_rows == 44 and not status.any()
    cols = ["src_addr", "dst_addr", "src_port", "dst_port", "protocol", "bytes", "packets", "first_ns", "last_ns"]
    assert table.select(cols).to_pylist() == ref.select(cols).to_pylist()
    assert set(table.column("exporter").to_pylist()) == {"2001:db8::1" if src6 else "192.0.2.77"}
    assert sum(dg.skipped.values()) == 1


def test_non_udp_frames_are_skipped(tmp_path):
    """pmacct 4xx/5xx captures carry BMP/BGP over TCP next to IPFIX: skipped and counted."""
    pcap = CORPUS_NF / "public" / "pmacct" / "pmacct_500-IPFIXv10-BGP-CISCO-SRv6__traffic-00.pcap"
    table, dg, status, _ = flows.decode_pcaps([pcap])
    assert dg.skipped == {"not_udp": 3} and table.num_rows == 43


def test_goflow2_json_messages():
    from flowaudit.datasets import FLOWS
    from flowaudit.decode.netflow import decode_goflow_json

    msgs = [
        # goflow2 v2 rendering (textual etype/proto)
        b'{"type":"IPFIX","time_received_ns":1767324720787460121,"sequence_num":65361,"sampling_rate":0,'
        b'"sampler_address":"192.168.88.1","time_flow_start_ns":1767324720000000000,"time_flow_end_ns":1767324721000000000,'
        b'"bytes":143,"packets":1,"src_addr":"192.168.89.2","dst_addr":"192.168.88.30","etype":"IPv4","proto":"UDP",'
        b'"src_port":53,"dst_port":55743,"tcp_flags":0}',
        # goflow2 v1 rendering (numbers), IPv6, sampled
        b'{"type":"NETFLOW_V9","sampling_rate":1000,"sampler_address":"2001:db8::9","time_flow_start_ns":5,'
        b'"time_flow_end_ns":6,"bytes":1500,"packets":3,"src_addr":"2001:db8::1","dst_addr":"2001:db8:ffff::2",'
        b'"etype":34525,"proto":6,"src_port":443,"dst_port":50001,"tcp_flags":24,"observation_domain_id":7}',
        b'not json', b'[1,2]', None, b'{"type":"SFLOW_5","src_addr":"x","dst_addr":"y"}',
    ]
    table, status = decode_goflow_json(msgs, sources=["goflow"], partition=[0] * 6, offset=list(range(100, 106)),
                                       ts_ms=[1] * 6)
    assert table.schema == FLOWS
    assert status.tolist() == [0, 0, 1, 1, 1, 2]
    a, b = table.to_pylist()
    assert (a["exporter"], a["version"], a["src_addr"], a["dst_addr"], a["protocol"], a["bytes"], a["packets"],
            a["sampling_interval"], a["first_ns"], a["last_ns"], a["offset"]) == (
        "192.168.88.1", 10, "192.168.89.2", "192.168.88.30", 17, 143, 1, 1, 1767324720000000000,
        1767324721000000000, 100)
    assert (b["exporter"], b["version"], b["obs_domain"], b["src_addr"], b["dst_addr"], b["protocol"],
            b["sampling_interval"], b["tcp_flags"]) == ("2001:db8::9", 9, 7, "2001:db8::1", "2001:db8:ffff::2", 6, 1000, 24)


def test_flows_cli_pcap_and_jsonl_and_help(tmp_path, capsys):
    src = tmp_path / "g.jsonl"
    src.write_bytes(b'{"type":"NETFLOW_V5","sampler_address":"10.0.0.1","bytes":1,"packets":1,'
                    b'"src_addr":"10.1.1.1","dst_addr":"203.0.113.5","proto":"TCP","src_port":1,"dst_port":443}\n\n')
    pcap = CORPUS_NF / "generated" / "synthetic" / "synth_v5_1k.pcap"
    out = tmp_path / "f.parquet"
    assert flows.main(["flows", str(pcap), str(src), "--out", str(out)]) == 0
    t = pq.read_table(out)
    assert t.num_rows == 1001
    assert "1,001 flows" in capsys.readouterr().out
    assert flows.main(["flows", str(tmp_path / "missing.pcap"), "--out", str(out)]) == 2
    # a folder contributes its captures (recursively, sorted), not its other files: the public
    # captures decoded from their folder give the rows of each decoded on its own
    pub = CORPUS_NF / "public"
    caps = sorted(str(f) for f in pub.rglob("*") if f.suffix in (".pcap", ".pcapng", ".cap"))
    assert len(caps) >= 40 and any(f.suffix == ".json" for f in pub.rglob("*"))
    capsys.readouterr()
    assert flows.main(["flows", str(pub), "--out", str(out)]) == 0
    whole = pq.read_table(out)
    one = []
    for c in caps:
        assert flows.main(["flows", c, "--out", str(tmp_path / "one.parquet")]) == 0
        one.append(pq.read_table(tmp_path / "one.parquet"))
    assert whole.num_rows == sum(t.num_rows for t in one) > 600
    key = ["source", "offset", "src_addr", "dst_addr", "bytes", "packets"]
    assert sorted(tuple(r.values()) for r in whole.select(key).to_pylist()) == sorted(
        tuple(r.values()) for t in one for r in t.select(key).to_pylist())
    capsys.readouterr()
    assert flows.main(["flows", str(tmp_path), "--out", str(tmp_path / "none.parquet")]) == 2
    assert "a folder without capture files" in capsys.readouterr().err
    for cmd, envs in (("flows", ["FLOWAUDIT_NETFLOW_TEMPLATE_TTL_S"]),
                      ("collect", ["FLOWAUDIT_COLLECT_LISTEN", "FLOWAUDIT_KAFKA_BOOTSTRAP_SERVERS",
                                   "FLOWAUDIT_COLLECT_TOPIC", "FLOWAUDIT_COLLECT_SOCKETS",
                                   "FLOWAUDIT_COLLECT_RCVBUF_BYTES"])):
        with pytest.raises(SystemExit):
            flows.main([cmd, "--help"])
        text = capsys.readouterr().out
        for e in envs:
            assert e in text, (cmd, e)


def test_gzip_captures_and_json_lines_read_as_the_plain_files(tmp_path, capsys):
    """Rotated captures are often gzip (tcpdump -z gzip): a .pcap.gz, .pcapng.gz or .jsonl.gz gives
    the rows of the plain file; a folder contributes its gzip captures; a gzip capture cut short
    ends at its last whole record (counted as ``corrupt_record``), and gzip JSON lines cut short
    are a one-line error naming the file."""
    import gzip

    import dpkt

    key = ["offset", "exporter", "src_addr", "dst_addr", "bytes", "packets", "first_ns"]
    v5 = CORPUS_NF / "generated" / "synthetic" / "synth_v5_1k.pcap"
    ng = tmp_path / "synth_v5_1k.pcapng"            # the same frames as pcapng
    with open(v5, "rb") as f, open(ng, "wb") as o:
        rd = dpkt.pcap.Reader(f)
        w = dpkt.pcapng.Writer(o, linktype=rd.datalink())
        for ts, frame in rd:
            w.writepkt(frame, ts=ts)
    pcaps = [CORPUS_NF / "generated" / "synthetic" / "synth_v9_1k.pcap", ng]
    src = tmp_path / "g.jsonl"
    src.write_bytes(b'{"type":"NETFLOW_V5","sampler_address":"10.0.0.1","bytes":1,"packets":1,'
                    b'"src_addr":"10.1.1.1","dst_addr":"203.0.113.5","proto":"TCP","src_port":1,"dst_port":443}\n')
    (tmp_path / "rot" / "day").mkdir(parents=True)
    for f in [*pcaps, src]:
        plain, packed = tmp_path / "plain.parquet", tmp_path / "packed.parquet"
        gz = tmp_path / "rot" / "day" / (f.name + ".gz")
        gz.write_bytes(gzip.compress(f.read_bytes()))
        assert flows.main(["flows", str(f), "--out", str(plain)]) == 0
        assert flows.main(["flows", str(gz), "--out", str(packed)]) == 0
        a, b = pq.read_table(plain), pq.read_table(packed)
        assert a.num_rows > 0 and a.select(key).to_pylist() == b.select(key).to_pylist()
        assert set(b.column("source").to_pylist()) == {gz.name}
    capsys.readouterr()
    assert flows.main(["flows", str(tmp_path / "rot"), "--out", str(tmp_path / "all.parquet")]) == 0
    assert pq.read_table(tmp_path / "all.parquet").num_rows == _rows(pcaps, tmp_path)   # the captures, not the JSON
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(gzip.compress(pcaps[0].read_bytes())[:5000])
    capsys.readouterr()
    assert flows.main(["flows", str(cut), "--out", str(tmp_path / "cut.parquet"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped_frames"] == {"corrupt_record": 1} and 0 < summary["rows"] < _rows(pcaps[:1], tmp_path)
    bad = tmp_path / "cut.jsonl.gz"
    bad.write_bytes(gzip.compress(src.read_bytes() * 50)[:40])
    capsys.readouterr()
    assert flows.main(["flows", str(bad), "--out", str(tmp_path / "bad.parquet")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not readable" in err and "Traceback" not in err


def test_zeek_conn_logs_are_flows(tmp_path, capsys):
    """A Zeek conn.log (Zeek's ASCII log or JSON lines, gzip-rotated or not, in a log folder) gives
    the flow records a NetFlow exporter would have sent: the originator's and, when it answered,
    the responder's, with IP bytes, packets, ``ts`` .. ``ts + duration``; a row that does not fit
    its header or has no address is counted, not a flow.  Audited, a connection to a watchlisted
    address is a finding for its originator."""
    import gzip

    from .test_dnsmap import zeek_ascii

    t = 1_772_352_000.5
    recs = [
        {"ts": t, "uid": "C1", "id.orig_h": "10.40.1.5", "id.orig_p": 40000, "id.resp_h": "203.0.113.9",
         "id.resp_p": 443, "proto": "tcp", "service": "ssl", "duration": 2.25, "orig_bytes": 1000,
         "resp_bytes": 5000, "conn_state": "SF", "missed_bytes": 0, "history": "ShADadFf", "orig_pkts": 10,
         "orig_ip_bytes": 1520, "resp_pkts": 8, "resp_ip_bytes": 5416, "tunnel_parents": []},
        {"ts": t + 1, "uid": "C2", "id.orig_h": "10.40.1.6", "id.orig_p": 5353, "id.resp_h": "198.51.100.7",
         "id.resp_p": 53, "proto": "udp", "conn_state": "S0", "orig_pkts": 1, "orig_ip_bytes": 70, "resp_pkts": 0,
         "resp_ip_bytes": 0},
        {"ts": t + 2, "uid": "C3", "id.orig_h": "2001:db8::1", "id.orig_p": 128, "id.resp_h": "2001:db8::2",
         "id.resp_p": 129, "proto": "icmp", "duration": 0.5, "orig_pkts": 2, "orig_ip_bytes": 208, "resp_pkts": 2,
         "resp_ip_bytes": 208},
    ]
    ns = lambda x: int(round(x * 1e9))  # noqa: E731
    want = [(1, "10.40.1.5", "203.0.113.9", 40000, 443, 6, 1520, 10, ns(t), ns(t) + ns(2.25)),
            (1, "203.0.113.9", "10.40.1.5", 443, 40000, 6, 5416, 8, ns(t), ns(t) + ns(2.25)),
            (2, "10.40.1.6", "198.51.100.7", 5353, 53, 17, 70, 1, ns(t + 1), ns(t + 1)),
            (3, "2001:db8::1", "2001:db8::2", 128, 129, 58, 208, 2, ns(t + 2), ns(t + 2) + ns(0.5)),
            (3, "2001:db8::2", "2001:db8::1", 129, 128, 58, 208, 2, ns(t + 2), ns(t + 2) + ns(0.5))]
    text = zeek_ascii(recs, "conn").splitlines()
    # a row with a value too many, and one without an address: counted, not flows
    text[-1:-1] = [text[-2] + b"\tx", text[-2].replace(b"2001:db8::1", b"not-an-address")]
    (tmp_path / "zeek" / "2026-03-01").mkdir(parents=True)
    ascii_log = tmp_path / "zeek" / "2026-03-01" / "conn.06:00:00-07:00:00.log.gz"
    ascii_log.write_bytes(gzip.compress(b"\n".join(text) + b"\n"))
    json_log = tmp_path / "conn.log"
    json_log.write_bytes(b"".join(json.dumps({k: v for k, v in r.items() if v is not None}).encode() + b"\n"
                                  for r in recs))
    cols = ["offset", "src_addr", "dst_addr", "src_port", "dst_port", "protocol", "bytes", "packets", "first_ns",
            "last_ns"]
    for src, offsets in ((tmp_path / "zeek", (8, 8, 9, 10, 10)), (json_log, (0, 0, 1, 2, 2))):
        out = tmp_path / "f.parquet"
        capsys.readouterr()
        assert flows.main(["flows", str(src), "--out", str(out)]) == 0
        said = capsys.readouterr().out
        got = pq.read_table(out)
        rows = [tuple(r.values()) for r in got.select(cols).to_pylist()]
        assert rows == [(o, *w[1:]) for o, w in zip(offsets, want)]
        assert set(got.column("exporter").to_pylist()) == {"zeek"} and set(got.column("sampling_interval").to_pylist()) == {1}
        assert "Zeek conn logs: 3 connections" in said
        assert ("2 lines not connections" in said) == (src != json_log)
    # the two lines that are no connection, kept with --quarantine (they were counted only)
    q = tmp_path / "q.parquet"
    capsys.readouterr()
    assert flows.main(["flows", str(tmp_path / "zeek"), "--out", str(tmp_path / "f.parquet"), "--quarantine",
                       str(q)]) == 0
    rows = pq.read_table(q).to_pylist()
    assert [(r["source"], r["offset"], r["format"], r["reason"]) for r in rows] == [
        (ascii_log.name, 11, "zeek_conn", "format_mismatch"), (ascii_log.name, 12, "zeek_conn", "format_mismatch")]
    assert rows[0]["raw_encoding"] == "aes-256-gcm/v1"
    r = subprocess.run([sys.executable, "-m", "flowaudit", "quarantine", "show", str(q), ascii_log.name, "-1", "12"],
                       capture_output=True, text=True, env=stream_env(FLOWAUDIT_SECURITY_HMAC_KEY=""), timeout=120)
    assert r.returncode == 0 and "not-an-address" in r.stdout, r.stderr
    # audited with a watchlist that lists 203.0.113.0/28: the connection is a finding for 10.40.1.5
    wl = tmp_path / "wl"
    wl.mkdir()
    (wl / "ops.toml").write_text('version = "t"\n[[indicators]]\nplatform = "LOGINK"\ntype = "cidr"\n'
                                 'value = "203.0.113.0/28"\nsource = "operator: RFC 5737 documentation range"\n')
    r = subprocess.run([sys.executable, "-m", "flowaudit", "audit", str(tmp_path / "f.parquet"), "--out",
                        str(tmp_path / "root"), "--watchlist-dir", str(wl)], capture_output=True, text=True,
                       env=stream_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    found = pads.dataset(tmp_path / "root" / "dataset=findings", format="parquet", partitioning="hive").to_table()
    assert {(f["platform"], f["src_host"]) for f in found.to_pylist()} >= {("LOGINK", "10.40.1.5")}


def test_suricata_eve_flow_events_are_flows(tmp_path, capsys):
    """Suricata's eve.json: a ``flow`` event is the two directions' flow records (packets and bytes
    to the server and back, start .. end), a ``netflow`` event one direction; an alert (whose
    ``flow`` object is a snapshot, no flow record), a DNS event and the like give none and are no
    rejected lines; an event without addresses is one.  The exporter is the sensor (``host``)."""
    import gzip

    def ev(et, body, **kw):
        rec = {"timestamp": "2026-03-01T06:30:01.000000+0000", "event_type": et, "src_ip": "10.40.1.5",
               "src_port": 50000, "dest_ip": "203.0.113.5", "dest_port": 443, "proto": "TCP", et: body}
        rec.update(kw)
        return json.dumps(rec).encode()

    lines = [ev("flow", {"pkts_toserver": 12, "pkts_toclient": 9, "bytes_toserver": 9000, "bytes_toclient": 800,
                         "start": "2026-03-01T06:30:00.000000+0000", "end": "2026-03-01T06:30:01.500000+0000",
                         "state": "closed"}, host="crane-sensor-1"),
             ev("netflow", {"pkts": 4, "bytes": 320, "start": "2026-03-01T06:31:00.000000+0000",
                            "end": "2026-03-01T06:31:02.000000+0000"}, src_ip="10.20.1.10", proto="UDP"),
             ev("alert", {"signature": "ET POLICY x", "severity": 2},
                flow={"pkts_toserver": 3, "bytes_toserver": 200, "start": "2026-03-01T06:30:00.000000+0000"}),
             ev("dns", {"type": "answer", "rrname": "gateway.logink.cn"}),
             ev("flow", {"pkts_toserver": 1, "bytes_toserver": 60}, src_ip="not-an-address")]
    (tmp_path / "eve").mkdir()
    (tmp_path / "eve" / "eve-2026-03-01.json.gz").write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    out = tmp_path / "f.parquet"
    capsys.readouterr()
    assert flows.main(["flows", str(tmp_path / "eve"), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    got = pq.read_table(out).to_pylist()
    t0 = 1_772_346_600 * 10**9          # 2026-03-01T06:30:00Z
    assert [(r["offset"], r["exporter"], r["src_addr"], r["dst_addr"], r["protocol"], r["bytes"], r["packets"],
             r["first_ns"], r["last_ns"]) for r in got] == [
        (0, "crane-sensor-1", "10.40.1.5", "203.0.113.5", 6, 9000, 12, t0, t0 + 1_500_000_000),
        (0, "crane-sensor-1", "203.0.113.5", "10.40.1.5", 6, 800, 9, t0, t0 + 1_500_000_000),
        (1, "suricata", "10.20.1.10", "203.0.113.5", 17, 320, 4, t0 + 60 * 10**9, t0 + 62 * 10**9)]
    assert "Suricata eve.json: 2 connections, 1 lines not connections" in said


def test_a_template_ttl_from_the_environment_is_checked(tmp_path, monkeypatch, capsys):
    """FLOWAUDIT_NETFLOW_TEMPLATE_TTL_S that is not a count of seconds up to 366 days is one line,
    exit 2 (text was a ValueError traceback, 1e20 a numba TypingError)."""
    pcap = CORPUS_NF / "generated" / "synthetic" / "synth_v9_1k.pcap"
    for bad, why in (("abc", "expected int, got 'abc'"), (str(10**20), "must be 0..31622400")):
        monkeypatch.setenv("FLOWAUDIT_NETFLOW_TEMPLATE_TTL_S", bad)
        capsys.readouterr()
        assert flows.main(["flows", str(pcap), "--out", str(tmp_path / "f.parquet")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("flowaudit: FLOWAUDIT_NETFLOW_TEMPLATE_TTL_S") and why in err and len(err.splitlines()) == 1


def _rows(paths, tmp_path) -> int:
    n = 0
    for p in paths:
        assert flows.main(["flows", str(p), "--out", str(tmp_path / "n.parquet")]) == 0
        n += pq.read_table(tmp_path / "n.parquet").num_rows
    return n


def test_synthetic_truth_totals():
    """The generator's exact truth for the synthetic 1k captures: flows, bytes, packets, the
    logistics-platform stand-in (203.0.113.0/24) and the top-10 destinations by bytes."""
    for name in ("synth_v5_1k", "synth_v9_1k"):
        stem = CORPUS_NF / "generated" / "synthetic" / name
        truth = json.loads((stem.parent / (name + ".truth.json")).read_text())
        rows = flows.decode_pcaps([stem.with_suffix(".pcap")])[0].to_pylist()
        assert len(rows) == truth["flows"]
        assert sum(r["bytes"] for r in rows) == truth["bytes"]
        assert sum(r["packets"] for r in rows) == truth["packets"]
        logink = [r for r in rows if r["dst_addr"].startswith("203.0.113.")]
        assert len(logink) == truth["flows_logink_like"]
        assert sum(r["bytes"] for r in logink) == truth["bytes_logink_like"]
        per_dst = collections.Counter()
        for r in rows:
            per_dst[r["dst_addr"]] += r["bytes"]
        assert [[d, b] for d, b in per_dst.most_common(10)] == truth["top10_dst_by_bytes"]


# ====================================================================== exporter restart: template ids redefined
def test_restarted_exporter_redefines_templates_record_for_record():
    """Two real softflowd runs from one address and observation domain: plain IPFIX, then a restart
    with RFC 5103 biflows, which re-sends template ids 1024/2048/... with new definitions.  The
    collector joins the first run mid-stream (its data datagrams before the one datagram that carries
    the templates).  Every record must equal tshark's for its own run, whether the stream is one batch
    (``flowaudit flows``) or one datagram per batch (the stream): the data sets that waited for the
    first run's templates are decoded with those, never with the restart's redefinitions."""
    import numpy as np

    from flowaudit.decode.netflow import NetflowDecoder
    from flowaudit.sources.pcap import read_datagrams

    runs = [CORPUS_NF / "generated" / "softflowd" / f"remote_access_sfd_{n}.pcap" for n in ("ipfix", "ipfix_biflow")]
    datagrams, truth = [], collections.Counter()
    for run, pcap in enumerate(runs):
        dg = read_datagrams([pcap])
        order = list(range(1, len(dg))) + [0] if run == 0 else list(range(len(dg)))
        datagrams += [(run, bytes(dg.buf[dg.offsets[i]:dg.offsets[i + 1]])) for i in order]
        truth += collections.Counter((run,) + _key_t(r) for r in _tshark_rows(pcap.with_suffix("")))
    assert {d[:2] for _, d in datagrams} == {b"\x00\x0a"}

    def decode(batches):
        dec = NetflowDecoder()
        got = collections.Counter()
        for batch in batches:
            buf = b"".join(d for _, d in batch)
            offsets = np.zeros(len(batch) + 1, np.int64)
            np.cumsum([len(d) for _, d in batch], out=offsets[1:])
            res = dec.decode_result(np.frombuffer(buf, np.uint8), offsets, ["127.0.0.1"], np.zeros(len(batch)),
                                    offset=[run for run, _ in batch])
            assert not res.status.any()
            got += collections.Counter((r["offset"],) + _key_o(r) for r in res.table.to_pylist())
        return got, dec

    for batches in ([datagrams], [[d] for d in datagrams]):
        got, dec = decode(batches)
        assert got == truth, (len(batches), sum(got.values()), sum(truth.values()))
        assert dec.counters["templates_updated"] >= 4 and dec.counters["held_decoded"] >= 5
        assert dec.counters["missing_template"] == 0 and dec.counters["records_truncated"] == 0
        assert dec.held == 0
