"""The stream's worker thread (no broker needed): it starts the kernels of the next queued batch
before it finishes the one before, and what it publishes equals handling the batches one by one
on the consuming thread (``kafka.pipeline_depth = 0``)."""
from __future__ import annotations

import threading

import numpy as np

from flowaudit import synth
from flowaudit.config import Settings
from flowaudit.pipeline import Batch
from flowaudit.service import StreamService
from flowaudit.sinks.parquet import read_dataset

T0_MS = 1_772_323_200_000
TOPICS = {t: f for f, t in synth.TOPICS.items()}


def service(root, depth: int) -> StreamService:
    st = Settings()
    st.kafka.topics = dict(TOPICS)
    st.kafka.pipeline_depth = depth
    st.kafka.kernel_threads = 2
    st.sink.root = str(root)
    st.sink.write_behind = False
    st.security.hmac_key = "stream-worker-test-key"
    svc = StreamService(st.validate(), metrics=None, install_signals=False)
    for t in svc.topic_names:
        for p in range(2):
            svc.open_partition(t, p)
    return svc


def polls(n_batches: int = 6, per: int = 300):
    """Polls of synthetic traffic over every topic and two partitions each, offsets rising."""
    msgs = list(synth.generate(seed=5, n=n_batches * per, bad_fraction=0.02))
    nxt: dict = {}
    for b in range(n_batches):
        rows = []
        for i, m in enumerate(msgs[b * per:(b + 1) * per]):
            key = (synth.TOPICS[m.format], i % 2)
            off = nxt[key] = nxt.get(key, -1) + 1
            rows.append((key, off, T0_MS + (b * per + i) * 10, m.value))
        rows.sort(key=lambda r: r[0])            # a poll's messages come partition by partition
        yield rows


def work(svc: StreamService, rows) -> tuple:
    keys = sorted({k for k, *_ in rows})
    gi = {k: g for g, k in enumerate(keys)}
    src = np.array([svc.topic_idx[k[0]] for k, *_ in rows], np.int32)
    b = Batch.from_values([v for *_, v in rows], svc.topic_fmt[src], sources=svc.topic_names, source_idx=src,
                          partition=[k[1] for k, *_ in rows], offset=[o for _, o, _, _ in rows],
                          ts_ms=[t for _, _, t, _ in rows], keys=[b"k"] * len(rows))
    return b, np.array([gi[k] for k, *_ in rows], np.int64), keys, 0.0


def published(svc: StreamService) -> dict:
    svc.flush_all()
    out = {}
    for d in ("messages", "hits", "quarantine", "transfers"):
        t = read_dataset(svc.root, d)
        rows = t.drop_columns([c for c in t.column_names if c == "raw"]).to_pylist()
        out[d] = sorted(rows, key=repr)
    return out


def test_the_worker_starts_the_next_batch_before_it_finishes_one_and_writes_the_same_rows(tmp_path):
    batches = list(polls())
    inline = service(tmp_path / "inline", 0)
    for rows in batches:
        inline.handle(*work(inline, rows))
    expected = published(inline)
    assert expected["hits"] and expected["quarantine"]

    svc = service(tmp_path / "worker", len(batches))
    events: list = []
    start, handle = svc.start_batch, svc.handle

    def start_batch(batch):
        events.append(("start", int(batch.offset[0]), int(batch.offset[-1])))
        return start(batch)

    def handle_(batch, *a, **k):
        handle(batch, *a, **k)
        events.append(("handled", int(batch.offset[0]), int(batch.offset[-1])))

    svc.start_batch, svc.handle = start_batch, handle_
    for rows in batches:          # every batch queued before the worker runs: each has a next one
        svc._queue.put(work(svc, rows))
    svc._worker = threading.Thread(target=svc._work_loop, daemon=True)
    svc._worker.start()
    svc._wait_idle()
    svc._stop_worker()
    kinds = [e[0] for e in events]
    # start 1, start 2, handled 1, start 3, handled 2, ...: the next batch's kernels run while
    # the one before is finished; the last is finished once the queue is empty
    assert kinds == ["start"] + ["start", "handled"] * (len(batches) - 1) + ["handled"]
    assert [e[1:] for e in events if e[0] == "handled"] == [e[1:] for e in events if e[0] == "start"]
    assert published(svc) == expected


def test_ends_of_partitions_alone_let_the_findings_windows_close(tmp_path):
    """A poll that brings only ends of partitions (no batch) has the worker look at the findings
    windows again: partition 0's records end early and hold the windows open until it is at its
    end; once both are, the windows close and every partition's buffered rows are published.
    Before, nothing did that until the next message or the stop (a two-member stream test waited
    60 s for rows still in memory, about one run in ten on loaded cores)."""
    from flowaudit.sinks.parquet import read_dataset

    st = Settings()
    topic = synth.TOPICS["json"]
    st.kafka.topics = {topic: "json"}
    st.sink.root = str(tmp_path / "out")
    st.sink.write_behind = False
    st.findings.window_s, st.findings.lateness_s = 5, 0
    st.security.hmac_key = "stream-worker-test-key"
    svc = StreamService(st.validate(), metrics=None, install_signals=False)
    assert svc.findings is not None
    for p in (0, 1):
        svc.open_partition(topic, p)
    vals = [m.value for m in synth.generate(seed=9, n=60, formats=("json",))]
    # partition 0: 10 records in the first 2 s; partition 1: 50 over 18 s
    rows = [((topic, 0), i, T0_MS + i * 200, v) for i, v in enumerate(vals[:10])]
    rows += [((topic, 1), i, T0_MS + i * 360, v) for i, v in enumerate(vals[10:])]
    svc.handle(*work(svc, rows))

    def stored():
        return sum(read_dataset(svc.root, d).num_rows for d in ("messages", "quarantine"))

    svc.windows_tick()
    assert stored() == 0                  # partition 0 not at its end: its 2 s hold every window
    for s in svc.slots.values():
        s.eof = True                      # what the consuming thread records from the poll
    svc.windows_tick()
    assert stored() == len(rows)          # windows up to 15 s closed; both partitions published
    for s in svc.slots.values():
        s.lock.release()
