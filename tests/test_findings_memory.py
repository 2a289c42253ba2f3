"""Findings windows from the evidence kept in memory equal windows read back from storage.

The exposure scenario (labelled LOGINK messages, the EDI gateway's flows, a DNS-attributed
flow, zone-policy flows, repeated so that series go on across windows) goes through
StreamService.handle (no broker) with the application inventory; the findings dataset must be
the same row for row whether each window's rows come from memory or from Parquet, after a
crash and restart mid-stream, when the evidence outgrows its memory bound, and after a log
reset (a new epoch).
"""
from __future__ import annotations

import json
import random

import numpy as np
import orjson
import pyarrow as pa
import pytest

from flowaudit import synth
from flowaudit.config import Settings
from flowaudit.demo import hash_partition
from flowaudit.detect import windows as W
from flowaudit.pipeline import Batch
from flowaudit.service import StreamService
from flowaudit.sinks.parquet import read_dataset

T0_MS = synth.SCENARIO_T0_MS
TOPICS = {**{t: f for f, t in synth.TOPICS.items()}, "goflow.flows": "goflow", "zeek.dns": "dns"}
PARTS = 2


def _rows(seed=3, flows=True):
    """(topic, partition, offset, key, value, record time ms) in arrival order, a little out of time order."""
    sc = synth.exposure_scenario(seed=seed, background=400, spacing_ms=6000)
    msgs = [(t, m.key, m.value, ts) for t, m, ts in sc.messages]
    for shift in (0, 5, 10, 30) if flows else ():     # minutes: series that go on, and stop
        for k, (src, dst, sp, dp, proto, nb, first_ns, samp) in enumerate(sc.flows):
            if shift and k % 3:
                continue
            t_ns = first_ns + shift * 60 * 10**9
            v = orjson.dumps({"type": "NETFLOW_V9", "time_received_ns": t_ns, "sampling_rate": samp,
                              "sampler_address": "192.0.2.1", "time_flow_start_ns": t_ns,
                              "time_flow_end_ns": t_ns + 10**9, "bytes": nb, "packets": max(1, nb // 1000),
                              "src_addr": src, "dst_addr": dst, "etype": "IPv4",
                              "proto": "TCP" if proto == 6 else "UDP", "src_port": sp, "dst_port": dp})
            msgs.append(("goflow.flows", b"192.0.2.1", v, t_ns // 10**6))
        for d in sc.dns:
            dd = json.loads(d)
            dd["ts"] += shift * 60
            msgs.append(("zeek.dns", None, json.dumps(dd).encode(), int(dd["ts"] * 1000)))
    last = max(x[3] for x in msgs) + 900_000
    for k in range(4):                                # every partition passes the last window
        for t in TOPICS:
            for p in range(PARTS):
                msgs.append((t, f"tail{k}-{p}".encode(), b"{}", last + k))
    msgs.sort(key=lambda x: x[3])
    rng = random.Random(seed)
    for i in range(len(msgs) - 1):                    # late data: within the lateness and beyond it
        if rng.random() < 0.03:
            j = min(len(msgs) - 1, i + rng.randint(1, 15))
            msgs[i], msgs[j] = msgs[j], msgs[i]
    offs: dict = {}
    out = []
    for t, key, v, ts in msgs:
        p = hash_partition(key, PARTS) if key else rng.randrange(PARTS)
        o = offs.get((t, p), 0)
        offs[(t, p)] = o + 1
        out.append((t, p, o, key, v, ts))
    return sc, out


@pytest.fixture(scope="module")
def scenario():
    return _rows()


def _service(root, wl, policy, **windows):
    st = Settings()
    st.kafka.topics = TOPICS
    st.sink.root = str(root)
    st.sink.rotate_records = 45
    st.security.hmac_key = "findings-memory-test-key"
    st.kafka.pipeline_depth = 0
    st.egress.watchlist_dir, st.egress.policy_file = str(wl), str(policy)
    st.findings.window_s, st.findings.lateness_s, st.findings.lookback_s = 300, 60, 120
    svc = StreamService(st.validate(), metrics=None, install_signals=False)
    if windows:
        fw = svc.findings
        svc.findings = W.FindingsWindows(svc.root, 300, 60, 120, inventory=fw.inventory, model=fw.model, **windows)
    resume = {(t, p): svc.open_partition(t, p) or 0 for t in TOPICS for p in range(PARTS)}
    return svc, resume


def _spy(fw, reads):
    """FindingsWindows._read, noting the datasets whose Parquet files a window opened."""
    read = fw._read if not hasattr(fw._read, "spied") else fw._read.spied

    def spied(name, *a, **k):
        t = read(name, *a, **k)
        if t is not None:
            reads.append(name)
        return t
    spied.spied = read
    return spied


def _run(tmp_path, scenario, name, batch=29, crash_at=(), reset_at=None, **windows):
    """Feed the rows in batches; ``crash_at``: batch numbers after which the process dies
    (nothing more published) and a new one resumes from the files; ``reset_at``: the batch at
    which port.json+0's log is found reset (the writer starts a new epoch)."""
    sc, rows = scenario
    (tmp_path / "wl").mkdir(exist_ok=True)
    (tmp_path / "wl" / "ops.toml").write_text(sc.watchlist_toml)
    (tmp_path / "policy.toml").write_text(sc.policy_toml)
    root = tmp_path / name
    svc, resume = _service(root, tmp_path / "wl", tmp_path / "policy.toml", **windows)
    reads = []
    pos = n = 0
    while pos < len(rows):
        chunk = [r for r in rows[pos:pos + batch] if r[2] >= resume[(r[0], r[1])]]
        pos += batch
        n += 1
        if chunk:
            keys = sorted({(r[0], r[1]) for r in chunk})
            for k, s in svc.slots.items():            # a partition without rows in this batch is at its end
                s.eof, s.handed = k not in keys, k in keys
            g = {k: i for i, k in enumerate(keys)}
            chunk.sort(key=lambda r: (g[(r[0], r[1])], r[2]))
            src = [svc.topic_idx[r[0]] for r in chunk]
            b = Batch.from_values([r[4] for r in chunk], svc.topic_fmt[np.asarray(src)], sources=svc.topic_names,
                                  source_idx=src, partition=[r[1] for r in chunk], offset=[r[2] for r in chunk],
                                  ts_ms=[r[5] for r in chunk], keys=[r[3] for r in chunk])
            resets = None
            if n == reset_at and ("port.json", 0) in g:
                resets = {("port.json", 0): min(r[2] for r in chunk if r[:2] == ("port.json", 0))}
            svc.findings._read = _spy(svc.findings, reads)
            svc.handle(b, np.asarray([g[(r[0], r[1])] for r in chunk], np.int64), keys, 0.0, resets=resets)
        if n in crash_at:
            for s in svc.slots.values():
                s.lock.release()
            svc, resume = _service(root, tmp_path / "wl", tmp_path / "policy.toml", **windows)
            pos = min(i for i, r in enumerate(rows) if r[2] >= resume[(r[0], r[1])])
    for s in svc.slots.values():
        s.eof, s.handed = True, False
    svc.flush_all()
    got = sorted(read_dataset(root, "findings").to_pylist(), key=lambda r: (r["window_start_ns"], r["finding_id"]))
    return got, svc.findings, reads


def _statuses(tmp_path, scenario):
    """The statuses the window closes wrote (a later close rewrites a window with its closed rows)."""
    seen = set()
    close = W.FindingsWindows.close

    def spy(self, start, flushed):
        found = close(self, start, flushed)
        seen.update(found.column("status").to_pylist())
        return found
    W.FindingsWindows.close = spy
    try:
        _run(tmp_path, scenario, "statuses")
    finally:
        W.FindingsWindows.close = close
    return seen


@pytest.fixture(scope="module")
def no_flows():
    return _rows(seed=4, flows=False)


@pytest.fixture(scope="module")
def from_storage(tmp_path_factory, scenario):
    return _run(tmp_path_factory.mktemp("storage"), scenario, "out", memory=False)[0]


def test_the_scenario_makes_findings_of_every_kind(tmp_path, scenario, from_storage):
    kinds = {(f["correlation"], f["exposure"]) for f in from_storage}
    assert {("message_borne", "observed"), ("flow_borne", "inferred"), ("zone_policy", "none")} <= kinds
    assert _statuses(tmp_path, scenario) == {"new", "ongoing", "closed"}
    assert any(f["occurrences"] > len(f["samples"]) for f in from_storage)   # sample selection matters


def test_windows_from_memory_equal_windows_from_storage(tmp_path, scenario, from_storage):
    got, fw, reads = _run(tmp_path, scenario, "out")
    assert got == from_storage
    assert fw.closed >= 10 and fw.from_storage == 0 and fw.spills == 0
    assert reads == []                                # nothing read back from Parquet


def test_after_a_crash_and_restart_the_rest_is_read_from_storage(tmp_path, scenario, from_storage):
    got, fw, reads = _run(tmp_path, scenario, "out", crash_at=(5, 9, 14))
    assert got == from_storage
    assert "hits" in reads                            # the files published before the restarts


def test_evidence_over_its_memory_bound_is_read_from_storage(tmp_path, scenario, from_storage):
    got, fw, reads = _run(tmp_path, scenario, "out", memory_bytes=40_000)
    assert got == from_storage
    assert fw.spills >= 2                             # dropped, and taken up again at a later close


def test_a_reset_log_is_read_from_storage(tmp_path, scenario):
    want = _run(tmp_path, scenario, "storage", reset_at=12, memory=False)[0]
    got, fw, reads = _run(tmp_path, scenario, "memory", reset_at=12)
    assert got == want
    assert fw._parts["port.json+0"].floor is None and fw._parts["port.json+0"].sticky


def test_cuts_and_rows_from_memory_equal_those_read_from_storage(tmp_path, scenario):
    """Before any window closes: for thresholds and windows all along the data, the cut of every
    partition, and the transfers, evidence hits and exposing messages a window selects, are the
    same from memory as from the Parquet files."""
    sc, rows = scenario
    (tmp_path / "wl").mkdir()
    (tmp_path / "wl" / "ops.toml").write_text(sc.watchlist_toml)
    (tmp_path / "policy.toml").write_text(sc.policy_toml)
    svc, _ = _service(tmp_path / "out", tmp_path / "wl", tmp_path / "policy.toml")
    fw = svc.findings
    fw.window_ns = 10 * 86400 * 10**9                # no window is due: nothing closes or is pruned
    for lo in range(0, len(rows), 31):
        chunk = sorted(rows[lo:lo + 31], key=lambda r: (r[0], r[1], r[2]))
        keys = sorted({(r[0], r[1]) for r in chunk})
        g = {k: i for i, k in enumerate(keys)}
        src = [svc.topic_idx[r[0]] for r in chunk]
        b = Batch.from_values([r[4] for r in chunk], svc.topic_fmt[np.asarray(src)], sources=svc.topic_names,
                              source_idx=src, partition=[r[1] for r in chunk], offset=[r[2] for r in chunk],
                              ts_ms=[r[5] for r in chunk], keys=[r[3] for r in chunk])
        svc.handle(b, np.asarray([g[(r[0], r[1])] for r in chunk], np.int64), keys, 0.0)
    flushed = svc._publish_all(list(svc.writers), {}, "test")
    disk = W.FindingsWindows(svc.root, 300, 60, 120, inventory=fw.inventory, model=fw.model, memory=False)
    ts = sorted(r[5] for r in rows)
    inv = {t for a in fw.inventory.applications for t in a.topics}

    def keyed(t, name, exposing):
        if t is None:
            return []
        out = []
        for r in t.to_pylist():
            msg = (r["source"], r["partition"], r["offset"])
            if name == "hits" and r["source"] not in inv and msg not in exposing:
                continue            # not evidence: memory does not keep it (and correlate never uses it)
            if name == "messages" and msg not in exposing:
                continue
            out.append(repr(sorted((k, v) for k, v in r.items() if k in W._SCHEMAS[name].names)))
        return sorted(out)

    checked = inside = 0
    for t_ms in range(ts[0] - ts[0] % 60_000, ts[-1] + 120_000, 60_000):
        thr = t_ms * 1_000_000
        cut = fw._cuts(thr, flushed)
        assert cut == disk._cuts(thr, flushed), t_ms
        inside += sum(cut[k] < flushed[k] for k in cut)
        start, end = thr - 300 * 10**9, thr
        tr = fw._gather("transfers", start, end, cut, None, True)
        assert keyed(tr, "transfers", set()) == keyed(disk._read("transfers", start, end, cut), "transfers", set())
        topics = fw._evidence_topics(tr)
        if not topics:
            continue
        exposing = {(r["source"], r["partition"], r["offset"]) for r in tr.to_pylist()
                    if r["seen_where"] in W._f.MESSAGE_WHERE}
        for name, lo_ns in (("hits", start - fw.lookback_ns), ("messages", start)):
            mem = fw._gather(name, lo_ns, end, cut, topics, True)
            assert keyed(mem, name, exposing) == \
                keyed(disk._read(name, lo_ns, end, cut, list(W._SCHEMAS[name].names), topics), name, exposing)
        checked += 1
    assert checked >= 5 and fw.from_storage == 0
    assert inside > 20                                # cuts inside the data, not only at its end


def test_without_flows_a_window_takes_only_the_exposing_messages_hits(tmp_path, no_flows):
    """The inventory's topics carry most hits, but with no flow from an inventory host they are
    evidence of nothing: the windows correlate only the exposing messages' hits, from memory or
    from storage, to the same rows as with every hit of those topics."""
    every = W.may_be_flow_borne
    W.may_be_flow_borne = lambda transfers: True      # the reference: every hit of the evidence topics
    try:
        want = _run(tmp_path, no_flows, "storage", memory=False)[0]
    finally:
        W.may_be_flow_borne = every
    sizes = []
    correlate = W._f.correlate

    def spy(transfers, hits, *a, **k):
        sizes.append(0 if hits is None else hits.num_rows)
        return correlate(transfers, hits, *a, **k)
    W._f.correlate = spy
    try:
        got, fw, reads = _run(tmp_path, no_flows, "memory")
    finally:
        W._f.correlate = correlate
    assert got == want and reads == []
    assert any(f["correlation"] == "message_borne" and f["occurrences"] for f in got)
    assert max(sizes) < 200                            # a few messages' hits, not the topics'
    # from storage (memory off, or a window whose evidence outgrew it) the same rows, read the same way
    sizes.clear()
    W._f.correlate = spy
    try:
        got, fw, reads = _run(tmp_path, no_flows, "storage-only", memory=False)
    finally:
        W._f.correlate = correlate
    assert got == want and "hits" in reads and 0 < max(sizes) < 200


def test_a_window_close_keeps_the_earlier_windows_other_findings(tmp_path):
    """The stream writes what a window close changed: the earlier window's findings it closes
    replace their own rows, and that window's findings that go on stay in its file."""
    import pyarrow.compute as pc

    from flowaudit.datasets import FINDINGS
    from flowaudit.detect import findings as F
    from flowaudit.sinks.parquet import read_dataset

    from .findings_fixtures import transfers

    two = F.correlate(transfers([{"src_addr": "10.40.1.5"}, {"src_addr": "10.40.1.6"}]), None,
                      window_ns=300 * 10**9)
    assert two.num_rows == 2
    F.write_findings(tmp_path, two, prune=False)
    rows = two.to_pylist()
    closed = pa.Table.from_pylist([dict(rows[0], status="closed")], schema=FINDINGS)
    F.write_findings(tmp_path, closed, prune=False)
    got = read_dataset(tmp_path, "findings")
    status = dict(zip(got["finding_id"].to_pylist(), pc.cast(got["status"], pa.string()).to_pylist()))
    assert status == {rows[0]["finding_id"]: "closed", rows[1]["finding_id"]: "new"}
    # the batch way (prune) writes complete windows: the file is exactly what was given
    F.write_findings(tmp_path, closed, prune=True)
    assert read_dataset(tmp_path, "findings")["finding_id"].to_pylist() == [rows[0]["finding_id"]]


def test_rows_of_other_partitions_take_their_own_cut_and_message_list():
    """Held NetFlow rows in a chunk belong to other partitions: their cut and the exposing-message
    list are looked up per partition (``_own_cut``, ``_own_isin``), as a per-row loop would."""
    from flowaudit.detect.windows import _own_cut, _own_isin

    rng = random.Random(5)
    for n in (0, 1, 7, 300):
        keys = [f"t{k}+{p}" for k in range(2) for p in range(3)]
        own = np.asarray([rng.choice(keys) for _ in range(n)], object)
        off = np.asarray([rng.randrange(50) for _ in range(n)], np.int64)
        cut = {k: rng.randrange(60) for k in keys[:4]}
        only = {k: np.asarray(sorted(rng.sample(range(50), rng.randrange(0, 20))), np.int64) for k in keys[1:5]}
        codes = np.unique(own, return_inverse=True)
        assert _own_cut(codes, cut).tolist() == [cut.get(x, -1) for x in own]
        assert _own_isin(codes, off, only).tolist() == [int(o) in only.get(x, []) for x, o in zip(own, off)]
