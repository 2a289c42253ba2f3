"""``flowaudit stream``: the consumer-group service.

Each poll becomes one :class:`~flowaudit.pipeline.Batch`; the kernels classify it as a whole;
rows go to one :class:`~flowaudit.sinks.parquet.PartitionWriter` per assigned partition; a
writer publishes a file set when it rotates, and only then is the Kafka offset committed.
On assignment a writer recovers its partition from storage and the consumer seeks to the
offset after the last durable file, so a crash at any moment neither loses nor duplicates an
offset.  SIGTERM / Ctrl-C: finish the current batch, publish what is buffered, commit, exit 0.
"""
from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from ..config import ConfigError, Settings, hmac_key
from ..decode import TELEMETRY_NAMES
from ..flowpath import FlowPath
from ..metrics import Metrics
from ..pipeline import Batch, Classifier, format_code
from ..protect import Protector
from ..sinks.parquet import PartitionWriter

log = logging.getLogger("flowaudit.stream")


@dataclass
class Summary:
    messages: int = 0
    bytes: int = 0
    seconds: float = 0.0
    warmup_seconds: float = 0.0
    hits: Counter = field(default_factory=Counter)          # data_class -> n
    quarantined: Counter = field(default_factory=Counter)   # reason -> n
    transfers: Counter = field(default_factory=Counter)     # (platform, seen_where) -> n
    flows: int = 0
    files: Counter = field(default_factory=Counter)         # dataset -> n
    rows: Counter = field(default_factory=Counter)          # dataset -> n
    batches: int = 0
    active_seconds: float = 0.0  # first message received -> last file published (no group join)
    root: str = ""
    metrics_url: str = ""

    @property
    def rate(self) -> float:
        """Messages per second from the first message received to the last file published."""
        return self.messages / self.active_seconds if self.active_seconds else 0.0


def make_egress(settings: Settings):
    """The watchlist / DNS / zone-policy detector of the settings, or None when disabled."""
    e = settings.egress
    if not e.enabled:
        return None
    from .. import watchlist
    from ..egress import EgressDetector

    try:
        wl = watchlist.Watchlist(e.watchlist_dir or None)
        return EgressDetector(wl, e.policy_file or None, dns_max_entries=e.dns_max_entries)
    except (ValueError, OSError) as exc:  # WatchlistError / policy errors are one line already
        raise ConfigError(str(exc).splitlines()[0]) from None


def consumer_config(settings: Settings, **extra) -> dict:
    k = settings.kafka
    conf = {
        "bootstrap.servers": k.bootstrap_servers,
        "group.id": k.group_id,
        "auto.offset.reset": k.auto_offset_reset,
        "enable.auto.commit": False,          # offsets are committed only after a durable publish
        "enable.auto.offset.store": False,
        "session.timeout.ms": k.session_timeout_ms,
        "heartbeat.interval.ms": max(500, k.session_timeout_ms // 3),
        "enable.partition.eof": True,
        "max.partition.fetch.bytes": max(1 << 20, k.max_message_bytes + 1024),
        "fetch.max.bytes": max(64 << 20, k.max_message_bytes + 1024),
        "queued.max.messages.kbytes": 256 * 1024,
    }
    conf.update(k.extra)
    conf.update(extra)
    return conf


def check_broker(settings: Settings, timeout: float = 10.0) -> dict[str, int]:
    """Reach the broker and the topics, or raise a one-line ConfigError; returns partitions per topic."""
    conf = {"bootstrap.servers": settings.kafka.bootstrap_servers, **settings.kafka.extra}
    try:
        md = AdminClient(conf).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ConfigError(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc.args[0].str()}") from None
    missing = [t for t in settings.kafka.topics if t not in md.topics]
    if missing:
        raise ConfigError(f"topic(s) not found on {settings.kafka.bootstrap_servers}: {', '.join(missing)}")
    return {t: len(md.topics[t].partitions) for t in settings.kafka.topics}


class StreamService:
    def __init__(self, settings: Settings, metrics: Metrics | None = None, until_drained: bool = False,
                 max_seconds: float | None = None, install_signals: bool = True):
        self.settings = settings
        self.root = Path(settings.sink.root)
        self.metrics = metrics
        self.until_drained = until_drained
        self.max_seconds = max_seconds
        self.install_signals = install_signals
        self.stopping = False
        self.topics = dict(settings.kafka.topics)
        self.topic_names = list(self.topics)
        self.topic_idx = {t: i for i, t in enumerate(self.topic_names)}
        self.topic_fmt = np.array([format_code(self.topics[t]) for t in self.topic_names], np.uint8)
        key, _src = hmac_key(settings, self.root)
        self.egress = make_egress(settings)
        self.classifier = Classifier(Protector(key, raw=settings.sink.raw_values),
                                     max_message_bytes=settings.kafka.max_message_bytes, egress=self.egress,
                                     dedupe_entries=settings.kafka.dedupe_entries)
        if self.metrics and self.egress is not None:
            self.metrics.init_egress(self.egress.metric_label_values())
        # topics of network telemetry (netflow / goflow / dns) take the flow path, the rest the message path
        self.telemetry_kind = np.array([self.topic_fmt[i] if self.topic_fmt[i] in TELEMETRY_NAMES else 0
                                        for i in range(len(self.topic_names))], np.uint8)
        self.flowpath = FlowPath(self.egress, write_flows=settings.egress.write_flows,
                                 template_ttl_s=settings.netflow.template_ttl_s,
                                 silent_window_s=settings.egress.silent_window_s)
        self._nf_seen: dict[str, int] = {}
        self.writers: dict[tuple[str, int], PartitionWriter] = {}
        self.eof: dict[tuple[str, int], bool] = {}
        self.summary = Summary(root=str(self.root))
        self.consumer: Consumer | None = None
        self.expected_partitions = 0
        # pipelining: the main thread consumes and gathers batch N+1 while a worker thread runs the
        # kernels (which release the GIL), builds tables and publishes files for batch N
        depth = settings.kafka.pipeline_depth
        self._queue: queue.Queue | None = queue.Queue(maxsize=depth) if depth > 0 else None
        self._worker: threading.Thread | None = None
        self._worker_error: BaseException | None = None

    # -- signals -----------------------------------------------------------------------------

    def request_stop(self, *_args) -> None:
        self.stopping = True

    # -- rebalance callbacks -----------------------------------------------------------------

    def _on_assign(self, consumer, partitions):
        s = self.settings.sink
        for p in partitions:
            key = (p.topic, p.partition)
            w = PartitionWriter(self.root, p.topic, p.partition, rotate_records=s.rotate_records,
                                compression=s.compression, row_group_size=s.row_group_size,
                                on_publish=self._on_publish)
            resume = w.recover()
            if resume is not None:
                p.offset = resume     # storage is the source of truth
            self.writers[key] = w
            self.eof[key] = False
        consumer.assign(partitions)
        log.info("assigned %s", [(p.topic, p.partition, p.offset) for p in partitions])

    def _on_revoke(self, consumer, partitions):
        self._wait_idle(raise_error=False)  # batches in flight finish before their writers go
        for p in partitions:
            key = (p.topic, p.partition)
            w = self.writers.pop(key, None)
            if w is not None:
                w.discard()   # unpublished rows are re-read by the next owner
            self.eof.pop(key, None)
            if self.metrics:
                try:
                    self.metrics.consumer_lag.remove(p.topic, str(p.partition))
                except KeyError:
                    pass
        consumer.unassign()

    def _on_publish(self, dataset: str, rows: int) -> None:
        self.summary.files[dataset] += 1
        self.summary.rows[dataset] += rows
        if self.metrics:
            self.metrics.files_committed.labels(dataset).inc()
            self.metrics.rows_written.labels(dataset).inc(rows)

    def _on_stats(self, raw: str) -> None:
        if not self.metrics:
            return
        try:
            stats = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        for topic, t in stats.get("topics", {}).items():
            for pid, p in t.get("partitions", {}).items():
                if pid == "-1" or (topic, int(pid)) not in self.writers:
                    continue
                # position-based lag: librdkafka's consumer_lag is relative to the committed
                # offset, which trails the position by up to one file set here
                hi, pos = p.get("hi_offset", -1), p.get("app_offset", -1)
                if hi >= 0 and pos >= 0:
                    self.metrics.consumer_lag.labels(topic, pid).set(max(0, hi - pos))

    # -- main loop ---------------------------------------------------------------------------

    def run(self) -> Summary:
        parts = check_broker(self.settings)
        self.expected_partitions = sum(parts.values())
        self.summary.warmup_seconds = self.classifier.warmup()
        conf = consumer_config(self.settings, **{"statistics.interval.ms": 1000, "stats_cb": self._on_stats,
                                                 "error_cb": lambda e: log.warning("kafka: %s", e)})
        self.consumer = c = Consumer(conf)
        old = {}
        if self.install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                old[sig] = signal.signal(sig, self.request_stop)
        t0 = time.monotonic()
        try:
            c.subscribe(self.topic_names, on_assign=self._on_assign, on_revoke=self._on_revoke,
                        on_lost=self._on_revoke)
            k = self.settings.kafka
            t_first = None
            t_reload = time.monotonic()
            if self._queue is not None:
                self._worker = threading.Thread(target=self._work_loop, name="flowaudit-worker", daemon=True)
                self._worker.start()
            while not self.stopping:
                if self.max_seconds is not None and time.monotonic() - t0 > self.max_seconds:
                    break
                msgs = c.consume(num_messages=k.poll_max_messages, timeout=k.poll_timeout_s)
                if msgs:
                    if t_first is None:
                        t_first = time.monotonic()
                    self.process(msgs)
                if self._worker_error is not None:
                    break
                if self.egress is not None and time.monotonic() - t_reload > 10:
                    t_reload = time.monotonic()   # operator watchlist edits: atomic reload
                    self.egress.reload_watchlist()
                if self.until_drained and self._drained():
                    break
            self._stop_worker()
            self.flush_all()
            if t_first is not None:
                self.summary.active_seconds = time.monotonic() - t_first
        finally:
            self.summary.seconds = time.monotonic() - t0
            try:
                c.close()
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)
        return self.summary

    def _drained(self) -> bool:
        return len(self.eof) >= self.expected_partitions and all(self.eof.values())

    def _work_loop(self) -> None:
        while True:
            work = self._queue.get()
            try:
                if work is None:
                    return
                if self._worker_error is None:
                    self.handle(*work)
            except BaseException as exc:  # surfaced in the main thread, which stops
                self._worker_error = exc
            finally:
                self._queue.task_done()

    def _wait_idle(self, raise_error: bool = True) -> None:
        if self._queue is not None and self._worker is not None:
            self._queue.join()
        if raise_error and self._worker_error is not None:
            raise self._worker_error

    def _stop_worker(self) -> None:
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()
            self._worker = None
        if self._worker_error is not None:
            raise self._worker_error

    def flush_all(self) -> None:
        commits = []
        for (topic, part), w in self.writers.items():
            last = w.flush()
            if last is not None:
                commits.append(TopicPartition(topic, part, last + 1))
        self._commit(commits)

    def _commit(self, tps: list[TopicPartition]) -> None:
        if not tps or self.consumer is None:
            return
        try:
            self.consumer.commit(offsets=tps, asynchronous=False)
            if self.metrics:
                self.metrics.offsets_committed.inc()
        except KafkaException as exc:  # e.g. during a rebalance: storage stays the source of truth
            log.warning("offset commit failed (resume comes from storage): %s", exc)

    def process(self, msgs: list) -> None:
        """Gather one poll into a batch (main thread) and hand it to the worker."""
        t_batch = time.perf_counter()
        values, src, parts, offs, tss, keys, groups = [], [], [], [], [], [], []
        group_of: dict[tuple[str, int], int] = {}
        group_keys: list[tuple[str, int]] = []
        eof_code = KafkaError._PARTITION_EOF
        topic_idx = self.topic_idx
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == eof_code:
                    self.eof[(m.topic(), m.partition())] = True
                else:
                    log.warning("consume error: %s", err)
                continue
            key = (m.topic(), m.partition())
            g = group_of.get(key)
            if g is None:
                g = group_of[key] = len(group_keys)
                group_keys.append(key)
                self.eof[key] = False
            groups.append(g)
            values.append(m.value())
            src.append(topic_idx[key[0]])
            parts.append(key[1])
            offs.append(m.offset())
            tss.append(m.timestamp()[1])
            keys.append(m.key())
        if not values:
            return
        src_a = np.asarray(src, np.int32)
        batch = Batch.from_values(values, self.topic_fmt[src_a], sources=self.topic_names, source_idx=src_a,
                                  partition=parts, offset=offs, ts_ms=tss, keys=keys)
        work = (batch, np.asarray(groups, np.int64), group_keys, t_batch)
        if self._worker is None:
            self.handle(*work)
        else:
            self._queue.put(work)  # blocks at pipeline_depth batches in flight: back-pressure

    def handle(self, batch: Batch, group: np.ndarray, group_keys: list, t_batch: float) -> None:
        """Classify a batch, hand its rows to the partition writers, commit what they published."""
        parts: dict[str, list] = {}
        kinds = self.telemetry_kind[batch.source_idx]
        text = np.flatnonzero(kinds == 0)
        if text.size:
            tb = batch if text.size == len(batch) else batch.take(text)
            result = self.classifier.run(tb)
            self._account(tb, result)
            for d, (t, rows) in (("messages", (result.messages, result.m_idx)), ("hits", (result.hits, result.h_idx)),
                                 ("quarantine", (result.quarantine, result.q_idx)),
                                 ("transfers", (result.transfers, result.t_idx))):
                if t is not None and (t.num_rows or d == "messages"):
                    parts.setdefault(d, []).append((t, text[rows] if tb is not batch else rows))
        # DNS answers first: a flow in the same poll as the answer that names its address is attributed
        for code, kind in sorted(TELEMETRY_NAMES.items(), key=lambda kv: kv[1] != "dns"):
            idx = np.flatnonzero(kinds == code)
            if idx.size:
                fr = self.flowpath.run(batch, idx, kind)
                self._account_flows(batch, idx, fr)
                for d, (t, rows) in fr.tables.items():
                    parts.setdefault(d, []).append((t, rows))
        tables = {d: (pa.concat_tables([t for t, _ in ps]), np.concatenate([r for _, r in ps]).astype(np.int64))
                  for d, ps in parts.items()}
        commits = []
        # each dataset's rows ordered by partition once; every partition then takes a zero-copy slice
        ngroups = len(group_keys)
        split = {}
        for d, (t, rows) in tables.items():
            g = group[rows]
            order = np.argsort(g, kind="stable")
            if ngroups > 1 and not np.all(order[:-1] < order[1:]):
                t, rows, g = t.take(pa.array(order)), rows[order], g[order]
            split[d] = (t, rows, np.searchsorted(g, np.arange(ngroups + 1)))
        for g, key in enumerate(group_keys):
            w = self.writers.get(key)
            if w is None:
                continue  # revoked while this batch was in flight
            idx = np.flatnonzero(group == g)
            sub = {}
            for d, (t, rows, bounds) in split.items():
                lo, hi = int(bounds[g]), int(bounds[g + 1])
                if hi > lo:
                    sub[d] = (t.slice(lo, hi - lo), batch.offset[rows[lo:hi]])
            published = w.add(batch.offset[idx], batch.ts_ms[idx], sub)
            if published:
                commits.append(TopicPartition(key[0], key[1], max(published) + 1))
        self._commit(commits)
        self.summary.batches += 1
        if self.metrics:
            self.metrics.batch_seconds.observe(time.perf_counter() - t_batch)
            self.metrics.batch_messages.observe(len(batch))

    def _account_flows(self, batch: Batch, idx: np.ndarray, fr) -> None:
        s = self.summary
        lens = np.diff(batch.offsets)[idx]
        s.messages += idx.size
        s.bytes += int(lens.sum())
        s.flows += fr.flows
        for (fmt, reason), c in fr.quarantine_counts.items():
            s.quarantined[reason] += c
        t = fr.tables.get("transfers")
        if t is not None:
            s.transfers.update(zip(t[0].column("platform").to_pylist(), t[0].column("seen_where").to_pylist()))
        m = self.metrics
        if not m:
            return
        src = batch.source_idx[idx]
        for i in np.unique(src):
            sel = src == i
            m.consumed_messages.labels(self.topic_names[i]).inc(int(sel.sum()))
            m.consumed_bytes.labels(self.topic_names[i]).inc(float(lens[sel].sum()))
        for (fmt, reason), c in fr.quarantine_counts.items():
            m.quarantined.labels(fmt, reason).inc(c)
        for kname, secs in fr.kernel_seconds.items():
            m.kernel_seconds.labels(kname).inc(secs)
        m.flows.inc(fr.flows)
        if fr.late_dropped:
            m.flows_late_dropped.inc(fr.late_dropped)
        counters = self.flowpath.decoder.counters
        for reason, total in counters.items():
            prev = self._nf_seen.get(reason, 0)
            if total > prev:
                m.netflow_events.labels(reason).inc(total - prev)
                self._nf_seen[reason] = total
        m.netflow_templates.set(self.flowpath.decoder.template_count)
        if self.egress is not None:
            m.update_egress(self.egress.metrics())

    def _account(self, batch: Batch, result) -> None:
        s = self.summary
        n = len(batch)
        lens = np.diff(batch.offsets)
        s.messages += n
        s.bytes += int(lens.sum())
        for (fmt, cls), c in result.hit_counts.items():
            s.hits[cls] += c
        for (fmt, reason), c in result.quarantine_counts.items():
            s.quarantined[reason] += c
        if result.transfers is not None and result.transfers.num_rows:
            s.transfers.update(zip(result.transfers.column("platform").to_pylist(),
                                   result.transfers.column("seen_where").to_pylist()))
        m = self.metrics
        if not m:
            return
        per_topic_n = np.bincount(batch.source_idx, minlength=len(self.topic_names))
        per_topic_b = np.bincount(batch.source_idx, weights=lens, minlength=len(self.topic_names))
        for i, t in enumerate(self.topic_names):
            if per_topic_n[i]:
                m.consumed_messages.labels(t).inc(int(per_topic_n[i]))
                m.consumed_bytes.labels(t).inc(float(per_topic_b[i]))
        for (fmt, cls), c in result.hit_counts.items():
            m.hits.labels(fmt, cls).inc(c)
        for (fmt, reason), c in result.quarantine_counts.items():
            m.quarantined.labels(fmt, reason).inc(c)
        for kname, secs in result.kernel_seconds.items():
            m.kernel_seconds.labels(kname).inc(secs)
        if self.egress is not None:
            m.update_egress(self.egress.metrics())


def format_summary(s: Summary) -> str:
    lines = [
        "",
        "flowaudit summary",
        f"  messages        {s.messages:,}",
        f"  volume          {s.bytes / 1e6:.1f} MB",
        f"  elapsed         {s.seconds:.1f} s  (kernel warm-up {s.warmup_seconds:.1f} s, group join and drain included)",
        f"  rate            {s.rate:,.0f} messages/s, {s.bytes / 1e6 / s.active_seconds if s.active_seconds else 0:.1f} MB/s"
        f"  (first message to last file published: {s.active_seconds:.1f} s)",
        "  hits by data class:",
    ]
    for cls, c in sorted(s.hits.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {cls:<26} {c:>10,}")
    total_q = sum(s.quarantined.values())
    lines.append(f"  quarantined     {total_q:,}")
    for reason, c in sorted(s.quarantined.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {reason:<26} {c:>10,}")
    if s.flows:
        lines.append(f"  flows           {s.flows:,} decoded (NetFlow / IPFIX / goflow2)")
    lines.append(f"  transfers       {sum(s.transfers.values()):,}  (to watchlisted platforms or against zone policy)")
    for (platform, where), c in sorted(s.transfers.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {platform + ' via ' + where:<26} {c:>10,}")
    lines.append("  files written:  " + ", ".join(f"{d} {s.files[d]}" for d in sorted(s.files)))
    lines.append(f"  parquet         {Path(s.root).resolve()}/dataset=<{'|'.join(sorted(s.files)) or 'messages'}>/")
    if s.metrics_url:
        lines.append(f"  metrics         {s.metrics_url} (served while running)")
    return "\n".join(lines)
