"""``flowaudit synth --dump`` (flowaudit.synth.write_dump): labelled Parquet archives of the synthetic
traffic in the flat (Kafka Connect sink), Redpanda Iceberg key_value, flows and goflow2 layouts.

The archive is read back with pyarrow and checked against schemas written out here, against the
generator itself, and against the real classifier, egress detector and findings correlation: the
labelled exposures must be exactly what flowaudit finds in the archive."""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from flowaudit import synth
from flowaudit.datasets import FLOWS

from .test_synth import _check_labels_present

N, SEED, FILES, RG = 2400, 11, 3, 64
HOUR_MS = 3_600_000

FLAT = pa.schema([
    pa.field("topic", pa.string(), nullable=False),
    pa.field("partition", pa.int32(), nullable=False),
    pa.field("offset", pa.int64(), nullable=False),
    pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("key", pa.binary()),
    pa.field("value", pa.binary()),
])
_HEADER = pa.struct([pa.field("key", pa.string()), pa.field("value", pa.binary())])
REDPANDA = pa.schema([
    pa.field("redpanda", pa.struct([
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("headers", pa.list_(pa.field("element", _HEADER))),
        pa.field("key", pa.binary()),
        pa.field("timestamp_type", pa.int32()),
    ]), nullable=False),
    pa.field("value", pa.binary()),
])
GOFLOW2 = {"type": pa.string(), "time_received_ns": pa.uint64(), "sequence_num": pa.uint32(),
           "sampling_rate": pa.uint64(), "sampler_address": pa.binary(), "time_flow_start_ns": pa.uint64(),
           "time_flow_end_ns": pa.uint64(), "bytes": pa.uint64(), "packets": pa.uint64(), "src_addr": pa.binary(),
           "dst_addr": pa.binary(), "etype": pa.uint32(), "proto": pa.uint32(), "src_port": pa.uint32(),
           "dst_port": pa.uint32(), "in_if": pa.uint32(), "out_if": pa.uint32(), "tcp_flags": pa.uint32(),
           "observation_domain_id": pa.uint32()}


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    root = tmp_path_factory.mktemp("dump") / "archive"
    labels = synth.write_dump(root, N, seed=SEED, files=FILES, row_group_rows=RG)
    return root, labels


def tree_hash(root) -> str:
    h = hashlib.sha256()
    for p in sorted(x for x in root.rglob("*") if x.is_file()):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def flat_rows(root) -> pa.Table:
    t = ds.dataset(root / "flat", partitioning="hive").to_table()
    return t.sort_by([("topic", "ascending"), ("partition", "ascending"), ("offset", "ascending")])


# ------------------------------------------------------------------------------ layouts

def test_flat_layout_is_hive_partitioned_by_topic_with_row_group_statistics(dump):
    root, labels = dump
    assert {p.name for p in (root / "flat").iterdir()} == {f"topic={t}" for t in synth.TOPICS.values()}
    multi = 0
    for f in sorted((root / "flat").rglob("*.parquet")):
        topic = f.parent.name.removeprefix("topic=")
        assert pq.read_schema(f).equals(FLAT, check_metadata=False), f
        t = pq.read_table(f)
        part, offs = t.column("partition").to_numpy(), t.column("offset").to_numpy()
        ts = pc.cast(t.column("timestamp"), pa.int64()).to_numpy()
        # one Kafka partition per file, named as the Kafka Connect sinks name it, ordered by offset
        assert set(t.column("topic").to_pylist()) == {topic} and len(set(part.tolist())) == 1
        assert f.name == f"{topic}+{part[0]}+{offs[0]:010d}.parquet"
        assert (np.diff(offs) == 1).all() and (np.diff(ts) >= 0).all()
        md = pq.ParquetFile(f).metadata
        multi += md.num_row_groups >= 2
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            assert rg.num_rows == RG or g == md.num_row_groups - 1
            lo = sum(md.row_group(k).num_rows for k in range(g))
            for name, col in (("offset", offs), ("timestamp", ts)):
                st = rg.column(FLAT.get_field_index(name)).statistics
                assert st is not None and st.has_min_max, (f, g, name)
                mn, mx = (int(st.min.timestamp() * 1000), int(st.max.timestamp() * 1000)) if name == "timestamp" \
                    else (st.min, st.max)
                assert (mn, mx) == (col[lo], col[lo + rg.num_rows - 1])
    assert multi >= 12, "several row groups per file"
    t = flat_rows(root)
    assert t.num_rows == labels["counts"]["messages"] == N + len(synth.exposure_scenario(SEED, background=0).messages)
    ts = pc.cast(t.column("timestamp"), pa.int64()).to_numpy()
    assert ts.min() >= labels["span"]["start_ms"] and ts.max() < labels["span"]["end_ms"]
    assert ts.max() - ts.min() > 5.5 * HOUR_MS
    # offsets are contiguous per topic partition across the files; partitions as the demo produces them
    from flowaudit.demo import hash_partition
    keys = t.column("key").to_pylist()
    assert t.column("partition").to_pylist() == [hash_partition(k, 3) for k in keys]
    for (topic, part), n in Counter(zip(t.column("topic").to_pylist(), t.column("partition").to_pylist())).items():
        sub = t.filter((pc.field("topic") == topic) & (pc.field("partition") == part))
        assert sub.column("offset").to_pylist() == list(range(n))


def test_time_filters_prune_row_groups_by_statistics(dump):
    """A --since/--until audit can skip row groups: the statistics alone select the right ones."""
    root, labels = dump
    lo = labels["span"]["start_ms"] + 2 * HOUR_MS
    hi = lo + 20 * 60_000
    lo_ts, hi_ts = pa.scalar(lo, pa.timestamp("ms", tz="UTC")), pa.scalar(hi, pa.timestamp("ms", tz="UTC"))
    picked, total, rows = 0, 0, []
    for f in sorted((root / "flat").rglob("*.parquet")):
        pf = pq.ParquetFile(f)
        for g in range(pf.metadata.num_row_groups):
            total += 1
            st = pf.metadata.row_group(g).column(FLAT.get_field_index("timestamp")).statistics
            if int(st.max.timestamp() * 1000) >= lo and int(st.min.timestamp() * 1000) < hi:
                picked += 1
                rows.append(pf.read_row_group(g))
    got = pa.concat_tables(rows).filter((pc.field("timestamp") >= lo_ts) & (pc.field("timestamp") < hi_ts))
    want = ds.dataset(root / "flat", partitioning="hive").to_table(
        filter=(ds.field("timestamp") >= lo_ts) & (ds.field("timestamp") < hi_ts))
    assert 0 < want.num_rows == got.num_rows
    assert sorted(zip(got.column("topic").to_pylist(), got.column("offset").to_pylist())) == \
        sorted(zip(want.column("topic").to_pylist(), want.column("offset").to_pylist()))
    assert picked * 4 < total


def test_redpanda_layout_holds_the_same_messages(dump):
    root, _ = dump
    files = sorted((root / "redpanda").rglob("*.parquet"))
    assert {f.parent.parent.name for f in files} == set(synth.TOPICS.values())
    assert all(f.parent.name == "data" for f in files)
    for f in files:
        assert re.fullmatch(r"\d+-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.parquet", f.name)
        s = pq.read_schema(f)
        assert s.equals(REDPANDA, check_metadata=False), f
        # Iceberg field ids on every column, nested ones included
        ids = [s.field("redpanda").metadata[b"PARQUET:field_id"], s.field("value").metadata[b"PARQUET:field_id"]]
        ids += [fl.metadata[b"PARQUET:field_id"] for fl in s.field("redpanda").type]
        assert len(set(ids)) == len(ids) == 8
        md = pq.ParquetFile(f).metadata
        paths = [md.row_group(0).column(i).path_in_schema for i in range(md.num_columns)]
        st = md.row_group(0).column(paths.index("redpanda.offset")).statistics
        assert st is not None and st.has_min_max
    rows = []
    for f in files:
        t = pq.read_table(f)
        meta = t.column("redpanda").combine_chunks()
        assert all(h == [] for h in meta.field("headers").to_pylist())
        assert set(meta.field("timestamp_type").to_pylist()) == {0}
        topic = f.parent.parent.name
        rows += list(zip([topic] * t.num_rows, meta.field("partition").to_pylist(), meta.field("offset").to_pylist(),
                         pc.cast(meta.field("timestamp"), pa.int64()).to_pylist(), meta.field("key").to_pylist(),
                         t.column("value").to_pylist()))
    flat = flat_rows(root)
    want = list(zip(flat.column("topic").to_pylist(), flat.column("partition").to_pylist(),
                    flat.column("offset").to_pylist(), [x * 1000 for x in pc.cast(flat.column("timestamp"), pa.int64()).to_pylist()],
                    flat.column("key").to_pylist(), flat.column("value").to_pylist()))
    assert sorted(rows) == want


# ------------------------------------------------------------------------------ labels

def test_messages_are_the_generators_and_every_label_occurs_in_its_value(dump):
    root, labels = dump
    flat = flat_rows(root)
    lm = pq.read_table(root / "labels" / "messages.parquet")
    lv = pq.read_table(root / "labels" / "values.parquet").to_pylist()
    value_of = {(t, p, o): (k, v) for t, p, o, k, v in zip(*(flat.column(c).to_pylist() for c in
                                                             ("topic", "partition", "offset", "key", "value")))}
    assert lm.num_rows == len(value_of)
    by_msg: dict = {}
    for r in lv:
        by_msg.setdefault((r["topic"], r["partition"], r["offset"]), []).append(
            synth.Label(r["data_class"], r["value"], r["valid"], r["lookalike"], r["location"]))
    background = synth.generate(SEED, N, bad_fraction=0.01)
    scenario = [m for _, m, _ in synth.exposure_scenario(SEED, background=0).messages]
    seen = {"background": [], "scenario": []}
    for r in lm.to_pylist():
        k = (r["topic"], r["partition"], r["offset"])
        key, value = value_of[k]
        assert r["key"] == key and r["bytes"] == len(value) and r["topic"] == synth.TOPICS[r["format"]]
        m = synth.SynthMessage(r["format"], r["msg_type"], key, value, tuple(by_msg.get(k, ())),
                               r["expect_quarantine"], tuple(r["egress"]))
        assert r["n_labels"] == len(m.labels)
        seen[r["origin"]].append((r["seq"], m))
        if m.expect_quarantine is None:
            _check_labels_present(m)
    # the background is generate(seed, n) message for message, the scenario's messages follow its own order
    assert [m for _, m in sorted(seen["background"], key=lambda x: x[0])] == list(background)
    assert [m for _, m in sorted(seen["scenario"], key=lambda x: x[0])] == scenario
    assert sum(len(v) for v in by_msg.values()) == labels["counts"]["labels"]
    assert labels["counts"]["quarantine"] == dict(sorted(Counter(
        x for x in lm.column("expect_quarantine").to_pylist() if x).items()))


def test_labels_json_lists_every_file_with_its_counts(dump):
    root, labels = dump
    assert labels == json.loads((root / "labels.json").read_text())
    for layout, glob in (("flat", "flat"), ("redpanda", "redpanda"), ("flows", "flows"), ("goflow2", "goflow2")):
        listed = labels["files"][layout]
        assert {r["path"] for r in listed} == {str(p.relative_to(root)) for p in (root / glob).rglob("*.parquet")}
        for r in listed:
            md = pq.ParquetFile(root / r["path"]).metadata
            assert (md.num_rows, md.num_row_groups, (root / r["path"]).stat().st_size) == \
                (r["rows"], r["row_groups"], r["bytes"])
    per_topic = Counter()
    for r in labels["files"]["flat"]:
        per_topic[r["topic"]] += r["rows"]
        t = pq.read_table(root / r["path"], columns=["offset"]).column("offset").to_pylist()
        assert (t[0], t[-1]) == (r["first_offset"], r["last_offset"])
    assert per_topic == {t: v["messages"] for t, v in labels["topics"].items()}
    assert sum(per_topic.values()) == labels["counts"]["messages"]
    assert sum(r["rows"] for r in labels["files"]["flows"]) == labels["counts"]["flows"]
    assert len(labels["files"]["flows"]) == FILES
    for name in ("flows", "goflow2", "dns", "policy", "watchlist_dir", "label_messages", "label_values"):
        assert (root / labels["inputs"][name]).exists(), name
    assert labels["span"]["scenario_hour_start"] == "2026-03-01T06:00:00.000Z"
    assert (root / "policy.toml").read_text() == synth.exposure_scenario(background=0).policy_toml


def test_flow_archives_hold_the_labelled_exposure_flows(dump):
    root, labels = dump
    flows = ds.dataset(root / "flows").to_table()
    assert flows.schema.equals(FLOWS, check_metadata=True)
    by_offset = {r["offset"]: r for r in flows.to_pylist()}
    assert len(by_offset) == flows.num_rows == labels["counts"]["flows"]
    refs = [f for e in labels["exposures"] for f in e.get("flows", [])]
    refs += [f for c in labels["controls"] for f in c.get("flows", [])]
    assert len(refs) == labels["counts"]["scenario_flows"] == len(synth.exposure_scenario(background=0).flows)
    for f in refs:
        r = by_offset[f["offset"]]
        assert (r["src_addr"], r["dst_addr"], r["src_port"], r["dst_port"], r["protocol"], r["bytes"],
                r["sampling_interval"], r["first_ns"]) == \
            (f["src_addr"], f["dst_addr"], f["src_port"], f["dst_port"], f["protocol"], f["bytes"],
             f["sampling_interval"], f["first_ns"])
    flow_borne = {e["entity"] for e in labels["exposures"] if e["correlation"] != "message_borne"}
    assert flow_borne == {"192.0.2.130", "10.40.1.5", "10.20.1.10", "10.20.1.11", "10.40.1.7", "192.0.2.140"}
    # goflow2: the same flows under goflow2's names and types
    gf = ds.dataset(root / "goflow2").to_table()
    assert {f.name: f.type for f in gf.schema} == GOFLOW2
    assert gf.num_rows == flows.num_rows
    for a, b in zip(gf.slice(0, 400).to_pylist(), flows.slice(0, 400).to_pylist()):
        assert str(ipaddress.ip_address(a["src_addr"])) == b["src_addr"]
        assert str(ipaddress.ip_address(a["dst_addr"])) == b["dst_addr"]
        assert str(ipaddress.ip_address(a["sampler_address"])) == b["exporter"]
        assert (a["src_port"], a["dst_port"], a["proto"], a["bytes"], a["packets"], a["sampling_rate"],
                a["time_flow_start_ns"], a["time_flow_end_ns"], a["time_received_ns"]) == \
            (b["src_port"], b["dst_port"], b["protocol"], b["bytes"], b["packets"], b["sampling_interval"],
             b["first_ns"], b["last_ns"], b["ts_ms"] * 1_000_000)


def _detect(root):
    """The real classifier over the flat archive, and the egress detector over the flow archive and
    the DNS log fed hour by hour (the DNS map forgets an answer an hour after the newest one)."""
    from flowaudit.detect import zones
    from flowaudit.detect.egress import EgressDetector
    from flowaudit.detect.watchlist import Watchlist
    from flowaudit.kernels.ipset import keys_of
    from flowaudit.pipeline import Batch, Classifier, format_code
    from flowaudit.protect import Protector

    t = flat_rows(root)
    fmt = {v: k for k, v in synth.TOPICS.items()}
    topics = sorted(synth.TOPICS.values())
    tp = t.column("topic").to_pylist()
    batch = Batch.from_values(t.column("value").to_pylist(), [format_code(fmt[x]) for x in tp], sources=topics,
                              source_idx=[topics.index(x) for x in tp], partition=t.column("partition").to_numpy(),
                              offset=t.column("offset").to_numpy(),
                              ts_ms=pc.cast(t.column("timestamp"), pa.int64()).to_numpy(),
                              keys=t.column("key").to_pylist())
    det = EgressDetector(Watchlist(root / "watchlist"), zones.load(root / "policy.toml"))
    res = Classifier(Protector(b"dump-test-key-0123456789"), egress=det).run(batch)
    flows = ds.dataset(root / "flows").to_table()
    dns = (root / "dns" / "dns.log").read_bytes().splitlines()
    dns_h = [int(json.loads(x)["ts"] // 3600) for x in dns]
    fl_h = flows.column("first_ns").to_numpy() // (HOUR_MS * 1_000_000)
    parts = [res.transfers]
    for h in sorted(set(dns_h) | set(fl_h.tolist())):
        parts.append(det.observe_dns([x for x, hh in zip(dns, dns_h) if hh == h], source="dns"))
        f = flows.filter(pa.array(fl_h == h))
        sh, sl = keys_of(f.column("src_addr").to_pylist())
        dh, dl = keys_of(f.column("dst_addr").to_pylist())
        arr = {"src_hi": sh, "src_lo": sl, "dst_hi": dh, "dst_lo": dl}
        arr |= {c: f.column(c).to_numpy() for c in ("src_port", "dst_port", "protocol", "bytes", "packets",
                                                    "first_ns", "sampling_interval")}
        parts.append(det.detect_flows(arr, source="netflow", partition=0, offset=f.column("offset").to_numpy()))
    return res, pa.concat_tables(parts)


def test_flowaudit_finds_exactly_the_labelled_exposures(dump):
    """Every labelled exposure window is one finding with the labelled severity, correlation, exposure
    and at least the labelled classes, at the labels' 300 s windows and at 1 h; nothing else is."""
    from flowaudit.detect import findings as F
    from flowaudit.detect.inventory import load as load_inventory

    root, labels = dump
    res, transfers = _detect(root)
    assert res.quarantine.num_rows == sum(labels["counts"]["quarantine"].values())
    inv = load_inventory(root / "policy.toml")
    for window_s in (labels["window_s"], 3600):
        W = window_s * 1_000_000_000
        out = F.correlate(transfers, res.hits, res.messages, inventory=inv, window_ns=W)
        got = {(r["platform"], r["rule"], r["entity"], r["window_start_ns"]): r for r in out.to_pylist()}
        want: dict = {}
        for e in labels["exposures"]:
            for w in e["windows"]:
                k = (e["platform"], e["rule"], e["entity"], w["start_ns"] // W * W)
                want.setdefault(k, (e, set()))[1].update(w["classes"])
        assert set(got) == set(want), (window_s, set(want) - set(got), set(got) - set(want))
        for k, (e, classes) in want.items():
            f = got[k]
            assert (f["severity"], f["correlation"], f["exposure"]) == (e["severity"], e["correlation"], e["exposure"]), \
                (k, f["score"], f["severity_reasons"])
            assert classes <= {c["data_class"] for c in f["data_classes"]}, k
    # the message-borne exposures name exactly the messages the payload scan flags
    msg_transfers = {(r["source"], r["partition"], r["offset"]) for r in res.transfers.to_pylist()}
    labelled = {(m["topic"], m["partition"], m["offset"]) for e in labels["exposures"] for m in e.get("messages", [])}
    assert msg_transfers == labelled
    assert sum(e["windows"][0]["messages"] > 0 for e in labels["exposures"]) == 3


# ------------------------------------------------------------------------------ determinism, CLI, errors

def test_same_arguments_write_identical_bytes(dump, tmp_path):
    root, labels = dump
    again = synth.write_dump(tmp_path / "again", N, seed=SEED, files=FILES, row_group_rows=RG)
    assert again == labels
    assert tree_hash(tmp_path / "again") == tree_hash(root)
    synth.write_dump(tmp_path / "other", N, seed=SEED + 1, files=FILES, row_group_rows=RG, layouts=("flat",))
    assert not (tmp_path / "other" / "redpanda").exists()
    assert (tmp_path / "other" / "labels" / "values.parquet").read_bytes() != \
        (root / "labels" / "values.parquet").read_bytes()


def test_cli_writes_the_same_archive_as_the_api(tmp_path):
    args = ["--messages", "300", "--seed", "5", "--files", "2", "--row-group", "50", "--layouts", "flat",
            "--start", "2026-03-02T00:30:00+01:00", "--hours", "2"]
    out = tmp_path / "cli"
    p = subprocess.run([sys.executable, "-m", "flowaudit", "synth", "--dump", str(out), *args],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "labels.json" in p.stdout
    lab = json.loads((out / "labels.json").read_text())
    # the audit command it prints (the README's example) finds every labelled exposure, the ones
    # only the operator watchlist and the DNS log beside the archive name included
    cmd = shlex.split(p.stdout.splitlines()[-1].removeprefix("audit it: "))
    assert cmd[:2] == ["flowaudit", "audit"] and cmd[cmd.index("--out") + 1] == f"{out}-audit"
    a = subprocess.run([sys.executable, "-m", "flowaudit", *cmd[1:]], capture_output=True, text=True, timeout=300)
    assert a.returncode == 0, a.stderr
    found = {(r["platform"], r["rule"], r["entity"])
             for r in ds.dataset(f"{out}-audit/dataset=findings", partitioning="hive").to_table().to_pylist()}
    assert found == {(e["platform"], e["rule"], e["entity"]) for e in lab["exposures"]}
    assert any(e["entity"] == "app:edi-gateway" for e in lab["exposures"])    # named by the operator watchlist
    assert Path(f"{out}-audit.html").stat().st_size > 0
    # `flowaudit audit --help` shows the same command for /tmp/dump
    h = subprocess.run([sys.executable, "-m", "flowaudit", "audit", "--help"], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, COLUMNS="400"))
    assert p.stdout.splitlines()[-1].removeprefix("audit it: ").replace(str(out), "/tmp/dump") in " ".join(h.stdout.split())
    assert lab["span"]["start"] == "2026-03-01T23:30:00.000Z" and lab["span"]["scenario_hour_start"] == "2026-03-02T00:00:00.000Z"
    assert lab["parameters"]["layouts"] == ["flat"] and not (out / "redpanda").exists()
    synth.write_dump(tmp_path / "api", 300, seed=5, files=2, row_group_rows=50, layouts=("flat",),
                     start="2026-03-01T23:30:00Z", hours=2)
    assert tree_hash(out) == tree_hash(tmp_path / "api")
    p = subprocess.run([sys.executable, "-m", "flowaudit", "synth", "--dump", str(out), *args],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "not an empty folder" in p.stderr


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path):
    for kw in ({"layouts": ("flat", "csv")}, {"layouts": ()}, {"hours": 1.5}, {"files": 0}, {"row_group_rows": 0},
               {"start": "yesterday"}, {"bad_fraction": 2.0},
               # an hours count that never ended, and starts whose times overflowed (tracebacks)
               {"hours": 1e9}, {"hours": float("nan")}, {"start": "9999-12-31T23:00:00"}, {"start": "1960-01-01"},
               {"start": -1}):
        with pytest.raises(ValueError):
            synth.write_dump(tmp_path / "x", 10, **kw)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("")
    with pytest.raises(FileExistsError):
        synth.write_dump(tmp_path / "full", 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
