"""A real exporter through the whole path: softflowd -> flowaudit collect -> Kafka -> flowaudit stream.

softflowd reads the corpus capture of remote-access sessions and exports IPFIX to ``collect`` on
loopback; the stream service consumes the topic as ``netflow`` with a zone policy and an operator
watchlist, and writes flows, transfers, messages and quarantine.  The flows must equal nfdump's
reading of the very datagrams in the topic, and the flows to the watchlisted address and the
remote-access flow out of the crane zone must be transfers.
"""
from __future__ import annotations

import collections

import pytest

from flowaudit.sinks.parquet import read_dataset

from .conftest import run_stream
from .test_collect import _ms, _stop, consume_all, nfdump_of, run_softflowd, start_collect

pytestmark = pytest.mark.slow

POLICY = """
version = "test-1"
format = 1
[network]
internal = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
[zones.crane_ot]          # test zone: the capture's TeamViewer client stands in for a crane HMI
kind = "ot"
cidrs = ["10.0.2.0/24"]
may_reach = ["tos"]
[zones.tos]
kind = "tos"
cidrs = ["10.10.0.0/16"]
may_reach = ["crane_ot"]
[zones.it]
kind = "it"
cidrs = ["192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/24"]
may_reach = ["internet", "internal"]
"""

WATCHLIST = """
version = "test-ops-1"
format = 1
[platforms.TestVendorCloud]
severity = "high"
source = "test fixture"
[[indicators]]
platform = "TestVendorCloud"
type = "cidr"
value = "82.81.46.0/24"
source = "test fixture: a destination in the corpus capture"
"""


def test_softflowd_to_stream_flows_and_transfers(broker, tmp_path):
    topic = "netflow-e2e"
    broker.create_topics({topic: 1})
    collect, port = start_collect(broker.bootstrap, topic)
    try:
        sent = run_softflowd(10, port, tmp_path)
        msgs = consume_all(broker.bootstrap, topic, sent)
    finally:
        _stop(collect)
        collect.communicate(timeout=10)
    assert len(msgs) == sent

    (tmp_path / "policy.toml").write_text(POLICY)
    (tmp_path / "wl").mkdir()
    (tmp_path / "wl" / "ops.toml").write_text(WATCHLIST)
    root = tmp_path / "out"
    r = run_stream(broker.bootstrap, {"netflow": topic}, root, "--until-drained", "--group", "g-nf",
                   "--metrics-port", "0", "--policy", str(tmp_path / "policy.toml"),
                   "--watchlist-dir", str(tmp_path / "wl"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "flows " in r.stdout

    # every datagram is accounted for once
    m = read_dataset(root, "messages").to_pylist()
    q = read_dataset(root, "quarantine").to_pylist()
    assert not q
    assert sorted(row["offset"] for row in m) == [x.offset() for x in msgs]
    assert {row["msg_type"] for row in m} == {"ipfix"} and {row["format"] for row in m} == {"netflow"}

    # the flows equal nfdump's reading of the same datagrams
    flows = read_dataset(root, "flows").to_pylist()
    truth = nfdump_of([x.value() for x in msgs], tmp_path)
    got = collections.Counter((f["src_addr"], f["dst_addr"], f["src_port"], f["protocol"], f["bytes"],
                               f["packets"], f["first_ns"] // 1_000_000) for f in flows)
    # nfdump 1.7.1 swaps IPFIX flowStart/EndSysUpTime (IE 22/21; see tests/test_collect.py): its
    # "last" is the flow start
    want = collections.Counter((t.get("src4_addr") or t.get("src6_addr"), t.get("dst4_addr") or t.get("dst6_addr"),
                                t.get("src_port", 0), t.get("proto", 0), t.get("in_bytes", 0),
                                t.get("in_packets", 0), _ms(t["last"])) for t in truth)
    assert got == want
    assert sum(row["n_segments"] for row in m) == len(flows)

    # transfers: the watchlisted destination, and TeamViewer out of the crane zone
    transfers = read_dataset(root, "transfers").to_pylist()
    to_vendor = [t for t in transfers if t["platform"] == "TestVendorCloud"]
    # both directions of each session: the request (seen as NETFLOW_DST) and the reply (NETFLOW_SRC)
    want_vendor = collections.Counter(
        (f["src_addr"], f["src_port"], f["dst_addr"], f["dst_port"],
         "NETFLOW_DST" if f["dst_addr"].startswith("82.81.46.") else "NETFLOW_SRC")
        for f in flows if f["dst_addr"].startswith("82.81.46.") or f["src_addr"].startswith("82.81.46."))
    assert want_vendor
    assert collections.Counter((t["src_addr"], t["src_port"], t["dst_addr"], t["dst_port"], t["seen_where"])
                               for t in to_vendor) == want_vendor
    assert all(t["indicator"] == "82.81.46.0/24" and t["indicator_type"] == "cidr" for t in to_vendor)
    tv = [t for t in transfers if t["dst_port"] == 5938]
    assert tv and all(t["src_zone"] == "crane_ot" and t["src_addr"] == "10.0.2.15" for t in tv)
    assert {t["rule"] for t in tv} != {"watchlist"}
    # bytes are raw, with the sampling interval beside them; scaled bytes claim the total
    assert all(t["bytes_scaled"] == t["bytes"] * t["sampling_interval"] for t in transfers if t["bytes"] is not None)
    # nothing in this capture may be attributed to LOGINK
    assert not [t for t in transfers if t["platform"] == "LOGINK"]
