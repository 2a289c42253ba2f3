"""Findings in the stream: event-time windows through StreamService.handle (no broker needed).

A window closes when every owned partition has passed its end plus the allowed lateness; a row
counts for it when its partition had not yet passed that point (late data within the lateness
updates the finding); a row arriving after the window closed is counted, not written.
"""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flowaudit.config import Settings
from flowaudit.metrics import Metrics
from flowaudit.pipeline import Batch
from flowaudit.service import StreamService
from flowaudit.sinks.parquet import read_dataset

T0_MS = 1_772_323_200_000  # 2026-03-01T00:00:00Z, a window boundary
S = 1000
QUERY = b'{"method": "logink.track.customs", "equipmentReference": "SUDU1234569", "blNumber": "MAEU123456789"}'
PLAIN = b'{"equipmentReference": "MSCU1234565"}'


def service(tmp_path, metrics=None):
    st = Settings()
    st.kafka.topics = {"port.json": "json"}
    st.sink.root = str(tmp_path / "out")
    st.security.hmac_key = "findings-window-test-key"
    st.kafka.pipeline_depth = 0
    st.findings.window_s, st.findings.lateness_s = 300, 60
    svc = StreamService(st.validate(), metrics=metrics, install_signals=False)
    svc.open_partition("port.json", 0)
    return svc


def feed(svc, rows):
    """rows: (offset, record time ms, value) of partition 0, in offset order, as one batch."""
    b = Batch.from_values([v for *_, v in rows], svc.topic_fmt[np.zeros(len(rows), np.int32)],
                          sources=svc.topic_names, source_idx=[0] * len(rows), partition=[0] * len(rows),
                          offset=[o for o, *_ in rows], ts_ms=[t for _, t, _ in rows], keys=[b"k"] * len(rows))
    svc.handle(b, np.zeros(len(rows), np.int64), [("port.json", 0)], 0.0)


def findings(svc):
    return read_dataset(svc.root, "findings").to_pylist()


def test_a_window_closes_after_its_lateness_with_the_late_rows_inside_it(tmp_path):
    m = Metrics({"port.json": "json"})
    svc = service(tmp_path, m)
    feed(svc, [(0, T0_MS + 10 * S, QUERY), (1, T0_MS + 20 * S, PLAIN), (2, T0_MS + 100 * S, QUERY)])
    feed(svc, [(3, T0_MS + 310 * S, PLAIN), (4, T0_MS + 200 * S, QUERY), (5, T0_MS + 330 * S, QUERY)])
    assert findings(svc) == []                     # the partition has not passed 300 + 60 s yet
    feed(svc, [(6, T0_MS + 400 * S, QUERY)])       # now it has: the first window closes
    rows = findings(svc)
    assert [(r["platform"], r["correlation"], r["window_start_ns"], r["messages"]) for r in rows] == [
        ("LOGINK", "message_borne", T0_MS * 1_000_000, 3)]   # offsets 0, 2 and the late-but-in-time 4
    assert {c["data_class"] for c in rows[0]["data_classes"]} >= {"container_number", "bill_of_lading"}
    assert {s["offset"] for s in rows[0]["samples"]} == {0, 2, 4}
    # the window's rows were published before it was read back: storage is the source of truth
    assert sorted(read_dataset(svc.root, "messages").column("offset").to_pylist()) == list(range(7))
    before = [p.read_bytes() for p in sorted((svc.root / "dataset=findings").rglob("*.parquet"))]
    # a row of the closed window arriving now is beyond the lateness: counted, left out
    feed(svc, [(7, T0_MS + 50 * S, QUERY)])
    assert svc.findings.late == 1
    assert [p.read_bytes() for p in sorted((svc.root / "dataset=findings").rglob("*.parquet"))] == before
    text = m.registry.get_sample_value
    assert text("flowaudit_findings_late_total") == 1
    assert text("flowaudit_findings_windows_closed_total") == 1
    assert text("flowaudit_findings_total", {"platform": "LOGINK", "severity": rows[0]["severity"]}) == 1
    assert text("flowaudit_exposed_values_total", {"platform": "LOGINK", "data_class": "container_number"}) == 1


def test_a_restart_between_intent_and_findings_recomputes_the_same_window(tmp_path):
    """The intent (window and per-partition cuts) is written before the findings: a process that
    dies in between leaves it, and the next one writes exactly what the first would have."""
    svc = service(tmp_path)
    feed(svc, [(0, T0_MS + 10 * S, QUERY), (1, T0_MS + 100 * S, QUERY), (2, T0_MS + 500 * S, QUERY)])
    want = pq.read_table(next((svc.root / "dataset=findings").rglob("*.parquet")))
    # simulate the crash: the findings file is gone, the intent is back
    state = svc.findings.state_path
    for p in (svc.root / "dataset=findings").rglob("*.parquet"):
        p.unlink()
    import orjson
    cut = svc.findings._cuts(T0_MS * 1_000_000 + 360 * 10**9, {"port.json+0": 3})
    assert cut == {"port.json+0": 2}            # the first message at or after 300 + 60 s
    state.write_bytes(orjson.dumps({"closed_until": None,
                                    "closing": {"start": T0_MS * 1_000_000, "cut": cut}}))
    for slot in svc.slots.values():
        slot.lock.release()                      # the first process is gone
    svc2 = StreamService(svc.settings, metrics=None, install_signals=False)
    svc2.open_partition("port.json", 0)
    feed(svc2, [(3, T0_MS + 520 * S, PLAIN)])   # any batch: the pending window is closed first
    got = pq.read_table(next((svc2.root / "dataset=findings").rglob("*.parquet")))
    assert got.equals(want)


def member(root, partitions):
    """A member of a group (no broker) owning these partitions of port.json under ``root``."""
    st = Settings()
    st.kafka.topics = {"port.json": "json"}
    st.sink.root = str(root)
    st.security.hmac_key = "findings-window-test-key"
    st.kafka.pipeline_depth = 0
    st.findings.window_s, st.findings.lateness_s = 300, 60
    svc = StreamService(st.validate(), metrics=None, install_signals=False)
    for p in partitions:
        svc.open_partition("port.json", p)
    return svc


def feed_part(svc, part, rows):
    b = Batch.from_values([v for *_, v in rows], svc.topic_fmt[np.zeros(len(rows), np.int32)],
                          sources=svc.topic_names, source_idx=[0] * len(rows), partition=[part] * len(rows),
                          offset=[o for o, *_ in rows], ts_ms=[t for _, t, _ in rows], keys=[b"k"] * len(rows))
    svc.handle(b, np.zeros(len(rows), np.int64), [("port.json", part)], 0.0)


def test_members_write_their_own_files_and_a_reader_sees_each_finding_whole(tmp_path):
    """Two members own one partition each; the LOGINK queries of the first window lie on both.
    Each writes its own file for the window (two rows, one finding_id, part of the evidence
    each); read back, there is one finding with all of it, as one member owning both writes.
    A member that takes both partitions over later (a rebalance) closes no window twice."""
    from flowaudit.detect.windows import read_findings

    p0 = [(0, T0_MS + 10 * S, QUERY), (1, T0_MS + 100 * S, QUERY), (2, T0_MS + 400 * S, PLAIN)]
    p1 = [(0, T0_MS + 50 * S, QUERY), (1, T0_MS + 200 * S, PLAIN), (2, T0_MS + 420 * S, PLAIN)]
    root = tmp_path / "group"
    a, b = member(root, [0]), member(root, [1])
    feed_part(a, 0, p0)
    feed_part(b, 1, p1)
    files = sorted((root / "dataset=findings").rglob("*.parquet"))
    assert len(files) == 2 and a.findings.tag != b.findings.tag
    parts = [pq.read_table(f).to_pylist() for f in files]
    assert sorted(r["messages"] for rows in parts for r in rows) == [1, 2]          # the evidence, split
    assert len({r["finding_id"] for rows in parts for r in rows}) == 1

    one = member(tmp_path / "one", [0, 1])
    feed_part(one, 0, p0)
    feed_part(one, 1, p1)
    want = read_dataset(one.root, "findings").drop_columns(["date", "hour"]).to_pylist()
    got, info = read_findings(root)
    assert got.to_pylist() == want and info["recomputed_windows"] == 1
    assert want[0]["messages"] == 3
    assert {(s["partition"], s["offset"]) for s in want[0]["samples"]} == {(0, 0), (0, 1), (1, 0)}

    # a rebalance: both partitions to a new member; the window both closed is not closed again
    for svc in (a, b):
        for slot in svc.slots.values():
            slot.lock.release()
    before = [f.read_bytes() for f in files]
    c = member(root, [0, 1])
    assert c.findings.closed_until == (T0_MS + 300 * S) * 1_000_000
    feed_part(c, 0, [(3, T0_MS + 800 * S, PLAIN)])
    feed_part(c, 1, [(3, T0_MS + 800 * S, PLAIN)])
    assert c.findings.closed_until > (T0_MS + 300 * S) * 1_000_000
    assert sorted((root / "dataset=findings").rglob("*.parquet")) == files
    assert [f.read_bytes() for f in files] == before
    assert read_findings(root)[0].to_pylist() == want


def test_a_dataset_folder_with_no_file_yet_does_not_stop_the_first_window(tmp_path):
    """Members share a root: another member (or this one's writer thread) makes a dataset's hour
    folder before its first file lands.  The first window is then taken from what is there (here:
    nothing but this member's rows), not a crash on a dataset with no columns."""
    svc = service(tmp_path)
    for name in ("messages", "quarantine"):
        (svc.root / f"dataset={name}" / "hour=2026-03-01T00").mkdir(parents=True)
    feed(svc, [(0, T0_MS + 10 * S, QUERY), (1, T0_MS + 400 * S, PLAIN)])
    assert [(r["platform"], r["window_start_ns"]) for r in findings(svc)] == [("LOGINK", T0_MS * 1_000_000)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["port.json", "port.xml", None]), st.integers(-2, 1), st.integers(0, 6)),
                max_size=60),
       st.dictionaries(st.sampled_from(["port.json+0", "port.json+-2", "port.xml+1", "port.xml+0", "None+0"]),
                       st.lists(st.integers(0, 6), max_size=5)),
       st.booleans(), st.integers(1, 3))
@example([(None, 0, 5), ("port.json", 0, 5)], {"None+0": [5]}, False, 1)
def test_only_mask_is_set_membership(rows, only, dictionary, chunks):
    """``windows.only_mask`` (the findings' evidence filter, shared by the stream and the audit)
    against plain set membership, over plain or dictionary topics in several chunks, negative
    partitions and null topics (never wanted)."""
    import pyarrow as pa

    from flowaudit.detect.windows import only_mask

    want = {k: np.unique(np.asarray(v, np.int64)) for k, v in only.items()}
    src = pa.array([r[0] for r in rows], pa.string())
    if dictionary:
        src = src.dictionary_encode()
    cuts = sorted({0, len(rows)} | {len(rows) * i // chunks for i in range(chunks)})
    t = pa.table({"source": pa.chunked_array([src[a:b] for a, b in zip(cuts, cuts[1:])], src.type),
                  "partition": pa.array([r[1] for r in rows], pa.int32()),
                  "offset": pa.array([r[2] for r in rows], pa.int64())})
    ref = [r[0] is not None and r[2] in set(only.get(f"{r[0]}+{r[1]}", [])) for r in rows]
    assert only_mask(t, want).tolist() == ref


def test_a_damaged_stored_file_is_left_out_of_the_windows_not_the_end_of_the_service(tmp_path, caplog):
    """A stored hits file that does not read back (a bad disk) stopped the service at the next
    window that read it.  The windows now go on without its rows: the file is named once in the
    log and counted in flowaudit_storage_unreadable_files, and the finding still comes from the
    messages and transfers that do read back."""
    from flowaudit.detect import windows as W

    m = Metrics({"port.json": "json"})
    svc = service(tmp_path, m)
    fw = svc.findings
    svc.findings = W.FindingsWindows(svc.root, 300, 60, 0, inventory=fw.inventory, model=fw.model, metrics=m,
                                     memory=False)
    feed(svc, [(0, T0_MS + 10 * S, QUERY), (1, T0_MS + 20 * S, PLAIN), (2, T0_MS + 100 * S, QUERY)])
    svc._publish_all(list(svc.writers), {}, "test")
    (hits,) = (svc.root / "dataset=hits").rglob("*.parquet")
    hits.write_bytes(hits.read_bytes()[:120])
    with caplog.at_level("ERROR", logger="flowaudit.findings"):
        feed(svc, [(3, T0_MS + 400 * S, PLAIN)])                 # the first window closes, reading storage
    rows = findings(svc)
    assert [(r["platform"], r["window_start_ns"], r["messages"]) for r in rows] == [("LOGINK", T0_MS * 1_000_000, 2)]
    assert rows[0]["data_classes"] == [] or rows[0]["data_classes"] is None     # the hits were in that file
    assert svc.findings.damaged == {str(hits)}
    assert m.registry.get_sample_value("flowaudit_storage_unreadable_files") == 1
    assert sum(str(hits) in r.getMessage() for r in caplog.records) == 1
    feed(svc, [(4, T0_MS + 410 * S, QUERY), (5, T0_MS + 800 * S, PLAIN)])   # and the next window, once more
    assert sum(str(hits) in r.getMessage() for r in caplog.records) == 1
    assert [r["window_start_ns"] for r in findings(svc)] == [T0_MS * 1_000_000, (T0_MS + 300 * S) * 1_000_000]
