"""``flowaudit stream``: the consumer-group service.

poll -> batch -> pipeline (kernels) -> partition writers (Parquet) -> offset commit.

Threads
-------
*Only the main thread touches the Kafka consumer*: it polls, gathers each poll into a
:class:`~flowaudit.pipeline.Batch`, runs the rebalance callbacks, pauses and resumes
partitions, and commits offsets.  A worker thread (``kafka.pipeline_depth`` > 0) classifies
batches and publishes file sets; it never calls the consumer, so nothing the main thread waits
for (a revocation waiting for batches in flight, a full hand-off queue) can wait on the consumer.
When the next batch is already queued, the worker starts its kernels (on the kernel pool,
``kafka.kernel_threads``) before it finishes the batch before, so they run beside its tables.
The worker hands the offsets it made durable back through an outbox that the main thread
commits after each poll.

Write-behind (``sink.write_behind``, on by default): with a worker, a third thread (the writer) publishes the file sets the worker
closes (a full file set, an hour change, the buffer budget): Parquet encoding, compression,
``fsync`` and the links of batch N overlap the kernels of batch N+1 (both release the GIL).
One hand-off is in flight at a time (the worker waits for the previous one before handing the
next), so the rows held in memory stay bounded as before.  The writer publishes in the order
the sets were sealed, so each partition's files keep their order and their names; it puts the
offsets it made durable in the outbox, so offsets are still committed only after their files
are durable.  Barriers (every sealed set durable first): before a findings window closes (the
sets are sealed with the batch that makes the window due, the window closes once they are
durable, before the next batch touches a writer or a window), before a flow-path checkpoint,
a new epoch, a revocation and the final publish at stop.  A storage fault in the writer pauses
consumption as before; a fatal one stops the service as a worker error does.

Exactly once
------------
A writer publishes a partition's rows only while it holds the partition's lock
(:class:`~flowaudit.sinks.parquet.PartitionLock`).  On assignment a partition is paused until
its lock is free (a zombie member may still hold it), then its writer recovers from storage and
the consumer seeks to the offset after the last durable file.  Offsets are committed only after
the files are durable; storage, not Kafka, is the source of truth.

The broker's log and the files
------------------------------
On resume the service compares storage with the broker: the resume offset above the high
watermark (the topic was recreated or truncated), the fingerprint of the last stored message
(timestamp and size) differing from the broker's message at that offset (the log was
rewritten), or a later message at an offset already stored.  Each is logged as an error,
counted in ``flowaudit_log_resets_total{topic,kind}`` and handled by ``sink.on_log_reset``:
``stop`` (default: exit 3, nothing written) or ``new_epoch`` (files of the new log get an
``+e<k>`` suffix and never collide with the old ones).  Messages that expired from the log
before they were read are counted in ``flowaudit_log_gap_messages_total{topic}``.

Storage faults
--------------
Disk full, a read-only remount or an fsync EIO pause consumption (membership is kept), are
counted and logged at a limited rate, and the publish is retried with back-off from the rows
still in memory; consumption resumes once a publish succeeds.

Stop: SIGTERM / Ctrl-C finish the current batch, publish what is buffered, commit, exit 0.
"""
from __future__ import annotations

import errno
import logging
import queue
import struct
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
from confluent_kafka import (OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException,
                             TopicPartition)

from .config import ConfigError, Settings, hmac_key
from .decode import TELEMETRY_NAMES
from .detect.flowpath import FlowPath
from .memory import release_library_pages, trim
from .metrics import Metrics
from .pipeline import Batch, Classifier, format_code
from .protect import Protector
from .sinks.parquet import PartitionLock, PartitionWriter, PublishAborted, SinkError, StorageUnreadable, replace_atomic
from .sources.dnssync import DnsSync
from .sources.kafka import EARLIEST, LATEST, check_broker, consumer_config, log_offsets
from .workers import FLOW_FORMATS, NAME_FORMATS

log = logging.getLogger("flowaudit.stream")
_NOTHING = object()   # the worker found the queue empty; handle() was given no started batch
# a poll's telemetry kinds, names first (dns topics, then eve topics, which take their names before
# their flows): a flow in the same poll as the answer that names its address is attributed
_NAMES_FIRST = sorted(TELEMETRY_NAMES.items(), key=lambda kv: (kv[1] != "dns", kv[1] not in NAME_FORMATS))
# a poll that only brought ends of partitions: the worker looks at the findings windows again (an
# idle partition may let one close; no batch follows to do it, and the rows would wait in memory)
_WINDOWS = object()

EXIT_LOG_RESET = 3      # sink.on_log_reset = "stop" and the broker's log no longer matches the files
EXIT_STALLED = 4        # --until-drained made no progress for kafka.drain_stall_s
EXIT_STORAGE = 5        # a partition's newest committed file cannot be read back (sinks.parquet.StorageUnreadable)
# --until-drained: the poll timeout while every partition is at its end and only the worker is busy
DRAIN_POLL_S: float | None = 0.02
# --until-drained, members sharing the topics: how often a member whose own partitions are at
# their end asks whether the group's commits reach the others' ends.  Often, because the first
# member to see the group drained leaves it, and a member that had not looked yet is then held
# in the rebalance that follows (seconds on the embedded broker) instead of ending with it.
GROUP_CHECK_S = 0.25
# the buffer budget counts the rows of the hand-off in flight: the worker waits for the writer
# rather than hold more than sink.buffer_budget_mb (False: only the buffered rows count)
BUDGET_COUNTS_IN_FLIGHT = True


class LogResetError(RuntimeError):
    """The broker's log of a partition is not the log the files were written from."""


class StartupInterrupted(Exception):
    """SIGTERM / SIGINT before the consume loop started."""


class RateLimitedLog:
    """At most one line per key every ``every`` seconds; the lines held back are counted in the next."""

    def __init__(self, logger: logging.Logger, every: float = 10.0):
        self.logger, self.every = logger, every
        self._last: dict = {}
        self._held: Counter = Counter()
        self._mu = threading.Lock()

    def __call__(self, level: int, key, msg: str, *args) -> None:
        now = time.monotonic()
        with self._mu:
            if now - self._last.get(key, -1e18) < self.every:
                self._held[key] += 1
                return
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            msg += f" ({held} similar message(s) held back in the last {self.every:.0f} s)"
        self.logger.log(level, msg, *args)


def _short_of(committed, logs: dict) -> list[str]:
    """The partitions whose committed offset is short of the end of their non-empty log, as
    ``topic+partition (committed C of END)``; ``logs``: (start, end) by (topic, partition)."""
    out = []
    for tp in committed:
        lo_hi = logs.get((tp.topic, tp.partition))
        if lo_hi is not None and lo_hi[1] > lo_hi[0] and tp.offset < lo_hi[1]:   # start -1: not asked
            out.append(f"{tp.topic}+{tp.partition} (committed {max(tp.offset, lo_hi[0])} of {lo_hi[1]})")
    return out


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
    first_message_at: float = 0.0  # wall clock (time.time()) of the first message received, 0: none
    write_behind_seconds: float = 0.0   # the writer thread publishing sealed file sets
    write_wait_seconds: float = 0.0     # the worker waiting for the writer thread (barriers, one in flight)
    log_resets: Counter = field(default_factory=Counter)    # kind -> n
    log_gap_messages: int = 0
    storage_faults: int = 0
    budget_flushes: int = 0       # times the buffer budget made every partition publish
    dns_sync_timeouts: int = 0    # flow messages sent on by kafka.dns_wait_s before DNS caught up
    findings: int = 0             # findings rows written by closed windows
    findings_seconds: float = 0.0  # time spent keeping evidence and closing windows (correlate, write)
    top_findings: list = field(default_factory=list)   # worst findings first (demo)
    exit_code: int = 0
    error: str = ""
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
    from .detect import watchlist
    from .detect.egress import EgressDetector

    try:
        wl = watchlist.Watchlist(e.watchlist_dir or None)
        return EgressDetector(wl, e.policy_file or None, dns_max_entries=e.dns_max_entries)
    except (ValueError, OSError) as exc:  # WatchlistError / policy errors are one line already
        raise ConfigError(str(exc).splitlines()[0]) from None


@dataclass(eq=False)
class _Slot:
    """One assigned partition.  Created and dropped by the main thread (rebalance callbacks)."""

    topic: str
    partition: int
    lock: PartitionLock
    ready: bool = False                  # lock held, storage recovered, consumer positioned
    verify: tuple | None = None          # (offset, (ts_ms, bytes)): the broker's message there must match
    resume: int = -1                     # first offset not in storage (-1: storage had nothing)
    fetch_from: int = 0                  # where the consumer was positioned on activation
    last_seen: int = -1                  # highest offset handed to the pipeline since assignment
    epoch_at_next: bool = False          # new_epoch: the next message delivered starts the new epoch
    handed: bool = False                 # a message was handed to the pipeline since assignment
    aborted: bool = False                # revoked or stopping: a failing publish gives up
    eof: bool = False
    eof_at: int = -1                     # the offset the last end-of-partition event was at
    end_committed: int = -1              # consumer position committed at the partition's end (past markers)
    waiting_since: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple[str, int]:
        return self.topic, self.partition


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
        self._starting = True
        self._old_handlers: dict = {}
        self.topics = dict(settings.kafka.topics)
        self.topic_names = list(self.topics)
        self.topic_idx = {t: i for i, t in enumerate(self.topic_names)}
        self.topic_fmt = np.array([format_code(self.topics[t]) for t in self.topic_names], np.uint8)
        key, _src = hmac_key(settings, self.root)
        self.egress = make_egress(settings)
        self.classifier = Classifier(Protector(key, raw=settings.sink.raw_values),
                                     max_message_bytes=settings.kafka.max_message_bytes, egress=self.egress,
                                     dedupe_entries=settings.kafka.dedupe_entries,
                                     threads=settings.kafka.kernel_threads)
        if self.metrics and self.egress is not None:
            self.metrics.init_egress(self.egress.metric_label_values())
        # topics of network telemetry (netflow / goflow / zeek_conn / dns / eve) take the flow path, the rest
        # the message path
        self.telemetry_kind = np.array([self.topic_fmt[i] if self.topic_fmt[i] in TELEMETRY_NAMES else 0
                                        for i in range(len(self.topic_names))], np.uint8)
        self.flowpath = FlowPath(self.egress, write_flows=settings.egress.write_flows,
                                 template_ttl_s=settings.netflow.template_ttl_s,
                                 silent_window_s=settings.egress.silent_window_s,
                                 protector=self.classifier.protector)
        self._nf_seen: dict[str, int] = {}
        # flow topics wait for the topics of names by record time (flowaudit/sources/dnssync.py); an eve
        # topic is both
        kinds = {t: TELEMETRY_NAMES.get(int(self.telemetry_kind[i])) for i, t in enumerate(self.topic_names)}
        self.dnssync = DnsSync([t for t, k in kinds.items() if k in NAME_FORMATS],
                               [t for t, k in kinds.items() if k in FLOW_FORMATS],
                               settings.kafka.dns_wait_s)
        self.findings = self._make_findings(settings)
        self._fp_restored = not self.telemetry_kind.any()   # nothing to restore without telemetry topics
        self.state_path = self.root / ".state" / "flowpath.state"
        self.slots: dict[tuple[str, int], _Slot] = {}
        self.writers: dict[tuple[str, int], PartitionWriter] = {}
        self.summary = Summary(root=str(self.root))
        self.consumer: Consumer | None = None
        self.expected_partitions = 0
        self._topic_parts: dict[str, int] = {}
        self._assigned = False          # an assignment is in force (False between revoke and assign)
        self._joined = False            # an assignment came once (the member has been in the group)
        self._closing = False           # in Consumer.close(): an assignment it serves is not taken up
        self._group_check = (0.0, False, "")   # --until-drained, members sharing topics: (at, drained, what)
        self._others_seen = ""                 # the others' commits and logs the last group check saw
        self._other_logs: tuple = (0.0, {})    # (at, {(topic, partition): (log start, log end)}), every partition
        self._ratelog = RateLimitedLog(log)
        # pipelining: the main thread consumes and gathers batch N+1 while a worker thread runs the
        # kernels (which release the GIL), builds tables and publishes files for batch N
        depth = settings.kafka.pipeline_depth
        self._queue: queue.Queue | None = queue.Queue(maxsize=depth) if depth > 0 else None
        self._worker: threading.Thread | None = None
        self._worker_error: BaseException | None = None
        self._held: list = []                       # batches waiting for room while consumption is paused
        self._outbox: dict[tuple[str, int], int] = {}   # worker -> main: offsets made durable
        self._outbox_mu = threading.Lock()
        self._fault_since: float | None = None      # a storage fault is being waited out
        # write-behind (see the module docstring): worker -> writer thread, one hand-off in flight
        self._wq: queue.Queue | None = None
        self._writer: threading.Thread | None = None
        self._sealed: list = []          # (writer, sealed set, slot) sealed by the batch being handled
        self._inflight_bytes = 0         # Arrow bytes of the hand-off in flight
        self._pending_close: tuple | None = None   # (window starts, partitions): closed once durable
        self._paused: set[tuple[str, int]] = set()
        self._hold_pause = False                    # all partitions paused: storage fault or a full queue

    def _make_findings(self, settings: Settings):
        f = settings.findings
        if not f.enabled or self.egress is None:
            return None
        from .detect import findings as _findings
        from .detect.windows import FindingsWindows

        try:
            inventory = _findings.load_inventory(settings.egress.policy_file or None)
            model = _findings._sev.load(f.severity_model or None)
        except (ValueError, OSError) as exc:
            raise ConfigError(str(exc).splitlines()[0]) from None
        return FindingsWindows(self.root, f.window_s, f.lateness_s, f.lookback_s, inventory=inventory, model=model,
                               metrics=self.metrics, policy_file=settings.egress.policy_file,
                               severity_model=f.severity_model, memory_bytes=f.memory_mb << 20)

    # -- signals -----------------------------------------------------------------------------

    def request_stop(self, *_args) -> None:
        self.stopping = True
        if self._starting:
            raise StartupInterrupted()

    def install_signal_handlers(self) -> None:
        """SIGTERM / SIGINT stop the service; before the consume loop they end start-up at once."""
        if self._old_handlers or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers[sig] = signal.signal(sig, self.request_stop)

    def _restore_signal_handlers(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}

    # -- partitions: assignment, locks, positions ----------------------------------------------

    def _new_writer(self, topic: str, partition: int) -> PartitionWriter:
        s = self.settings.sink
        w = PartitionWriter(self.root, topic, partition, rotate_records=s.rotate_records,
                            compression=s.compression, row_group_size=s.row_group_size,
                            on_publish=self._on_publish, on_fault=None)
        if self._wq is not None:
            w.handoff = self._handoff
        return w

    def open_partition(self, topic: str, partition: int) -> int | None:
        """Own a partition without Kafka (tests, replays): lock it, recover it; returns the resume offset."""
        slot = _Slot(topic, partition, PartitionLock(self.root, topic, partition))
        if not slot.lock.try_acquire():
            raise SinkError(f"{topic}+{partition} is locked by {slot.lock.holder()}")
        w = self._new_writer(topic, partition)
        w.on_fault = lambda exc, attempt, slot=slot: self._on_fault(slot, exc, attempt)
        resume = w.recover()
        if self.findings is not None:
            self.findings.activate(slot.key, w.next_offset, w.epoch)
            if w.fingerprint is not None:
                self.findings.seed(slot.key, w.fingerprint[0], w.next_offset - 1)
        slot.ready = True
        self.slots[slot.key] = slot
        self.writers[slot.key] = w
        return resume

    def _on_assign(self, consumer, partitions):
        if self._closing:
            # an assignment that came just before the stop, served by close() itself: the member is
            # leaving, so it takes nothing up (its committed offsets can no longer be asked: the
            # handle is being destroyed); the client assigns, then revokes, and the next owner reads
            log.info("assigned while closing, not taken up: %s", [(p.topic, p.partition) for p in partitions])
            return
        pending, locked = [], []
        for p in partitions:
            slot = _Slot(p.topic, p.partition, PartitionLock(self.root, p.topic, p.partition))
            self.slots[slot.key] = slot
            try:
                got = slot.lock.try_acquire()
            except OSError as exc:   # the lock folder is on a full / read-only disk: try again later
                self._ratelog(logging.ERROR, ("lock", exc.errno), "cannot open the lock of %s+%d: %s",
                              p.topic, p.partition, exc)
                got = False
            if got:
                locked.append((p, slot, *self._recover(slot)))
            else:
                pending.append(p)
        # where each partition's log starts and ends, for all of them in two requests
        marks = self._log_marks(consumer, [slot.key for _p, slot, _w, resume in locked if resume is not None])
        for p, slot, w, resume in locked:
            p.offset = self._start_at(consumer, slot, w, resume, marks)
        consumer.assign(partitions)
        self.dnssync.assign([(p.topic, p.partition) for p in partitions])
        self._check_dns_coverage()
        if pending:
            log.warning("waiting for the storage locks of %s (held by another member, e.g. one that was "
                        "paused past its session)", [f"{p.topic}+{p.partition}" for p in pending])
        self._apply_pauses(consumer)
        self._assigned = self._joined = True
        log.info("assigned %s", [(p.topic, p.partition, p.offset) for p in partitions])

    def _check_dns_coverage(self) -> None:
        """A member holding flow partitions without every DNS partition attributes their flows only
        through the answers it reads itself: said in the log and in ``flowaudit_dns_partitions_missing``
        (``--workers N`` gives the telemetry topics to worker 0; members on several hosts need the
        same, README *Flows wait for their answers*)."""
        sync = self.dnssync
        if not sync.dns_topics or not sync.flow_topics:
            return
        flows = sorted(f"{t}+{p}" for t, p in self.slots if t in sync.flow_topics)
        missing = [f"{t}+{p}" for t in sorted(sync.dns_topics) for p in range(self._topic_parts.get(t, 0))
                   if (t, p) not in self.slots] if flows else []
        if self.metrics:
            self.metrics.dns_partitions_missing.set(len(missing))
        if missing:
            log.warning("this member holds the flow partitions %s without the DNS partitions %s: their flows "
                        "are attributed only through the DNS answers it reads (give every telemetry topic to "
                        "one member)", flows, missing)

    def _activate(self, consumer, slot: _Slot) -> int:
        """Lock held: recover the partition's storage and return the offset to fetch from.

        The consumer fetches the last stored message again and :meth:`_verify` compares its
        fingerprint (then drops it): the broker's own messages decide whether its log is still
        the one the files came from.  ListOffsets only chooses where to start reading: when it
        says the log ends before storage does, reading starts a little earlier, so that a broker
        whose answer is low (Tansu answers with the base offset of the last batch) re-reads a few
        stored messages (dropped) instead of waiting at an offset it never answers for, and a
        log that really is shorter ends (EOF) before the stored message: storage is ahead."""
        w, resume = self._recover(slot)
        return self._start_at(consumer, slot, w, resume)

    def _recover(self, slot: _Slot) -> tuple[PartitionWriter, int | None]:
        """The partition's writer, recovered from storage, and the offset storage resumes at."""
        w = self._new_writer(slot.topic, slot.partition)
        w.on_fault = lambda exc, attempt, slot=slot: self._on_fault(slot, exc, attempt)
        return w, w.recover()

    @staticmethod
    def _log_marks(consumer, keys: list) -> dict:
        """(start, end) of each partition's log, asked together (``log_offsets``); {} when that
        fails, and each partition asks on its own."""
        if not keys:
            return {}
        tps = [TopicPartition(t, p) for t, p in keys]
        try:
            lo, hi = log_offsets(consumer, tps, EARLIEST), log_offsets(consumer, tps, LATEST)
        except KafkaException as exc:
            log.info("listing the offsets of %d partitions together failed (%s); one at a time", len(keys), exc)
            return {}
        return {k: (lo[k], hi[k]) for k in keys if k in lo and k in hi}

    def _start_at(self, consumer, slot: _Slot, w: PartitionWriter, resume: int | None, marks=None) -> int:
        """The offset to fetch ``slot`` from, ``w`` recovered with storage at ``resume``
        (:meth:`_activate`); ``marks``: the logs' (start, end) where already asked."""
        tp = TopicPartition(slot.topic, slot.partition)
        if resume is None:
            committed = consumer.committed([tp], timeout=10)[0].offset
            if committed >= 0:
                start = committed
            else:
                start = OFFSET_BEGINNING if self.settings.kafka.auto_offset_reset == "earliest" else OFFSET_END
        else:
            got = (marks or {}).get(slot.key)
            lo, hi = got if got is not None else consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            v_off = resume - 1
            if lo > resume:
                self._log_gap(slot.topic, slot.partition, resume, lo)
                start = lo
            elif lo == resume:
                start = resume          # nothing before it left to compare
            else:
                slot.verify = (v_off, w.fingerprint)
                start = v_off if hi > v_off else max(lo, min(v_off, hi - 1))
        self.writers[slot.key] = w
        if self.findings is not None:
            self.findings.activate(slot.key, w.next_offset, w.epoch)
            if w.fingerprint is not None:
                self.findings.seed(slot.key, w.fingerprint[0], w.next_offset - 1)
        slot.ready = True
        slot.fetch_from = start if start >= 0 else 0
        slot.resume = -1 if resume is None else resume
        slot.last_seen = -1 if resume is None else resume - 1
        return start

    def _verify(self, s: _Slot, m, resets: dict) -> bool:
        """A message of a partition whose last stored message is being looked for; returns
        whether to keep it."""
        v_off, fp = s.verify
        off = m.offset()
        if off < s.fetch_from:
            s.verify = None
            self._log_reset(s, "storage_ahead", f"storage resumes at offset {s.resume} but the broker's log "
                                                f"restarts at {off}: the topic was recreated or truncated")
            resets[s.key] = off
            s.last_seen = off - 1
            return True
        if off < v_off:
            return False                  # stored already (read again to reach v_off)
        s.verify = None
        if off == v_off:
            mfp = (m.timestamp()[1], len(m.value() or b""))
            if fp is None or mfp == fp:
                return False              # the last stored message, as stored
            self._log_reset(s, "log_rewritten", f"the broker's message at offset {off} (timestamp, bytes) {mfp} is "
                                                f"not the stored one {fp}: the log was rewritten")
            resets[s.key] = off
            s.last_seen = off - 1
            return True
        if off > s.resume:
            self._log_gap(s.topic, s.partition, s.resume, off)
        return True

    def _log_reset(self, slot: _Slot, kind: str, detail: str) -> None:
        """The broker's log of ``slot`` is not the one the files came from: apply sink.on_log_reset
        (stop: raise LogResetError).  The caller starts the new epoch with the batch that carries
        the new log's first message."""
        policy = self.settings.sink.on_log_reset
        self.summary.log_resets[kind] += 1
        if self.metrics:
            self.metrics.log_resets.labels(slot.topic, kind).inc()
        msg = f"{slot.topic}+{slot.partition}: {detail} ({kind})"
        if policy == "stop":
            log.error("%s; stopping (sink.on_log_reset = 'stop'; 'new_epoch' files the new log beside the old "
                      "one)", msg)
            raise LogResetError(msg)
        log.error("%s; filing the new log as a new epoch (sink.on_log_reset = 'new_epoch')", msg)

    def _reset_from_start(self, slot: _Slot, kind: str, detail: str) -> None:
        """The log ends before what is stored: stop, or read the new log from its start."""
        self._log_reset(slot, kind, detail)
        slot.verify = None
        slot.epoch_at_next = True
        slot.eof = False
        slot.last_seen = -1
        try:
            self.consumer.seek(TopicPartition(slot.topic, slot.partition, OFFSET_BEGINNING))
        except KafkaException as exc:
            log.error("%s+%d: cannot seek to the start of the log: %s", slot.topic, slot.partition, exc)

    def _log_gap(self, topic: str, partition: int, frm: int, to: int | None) -> None:
        n = (to - frm) if to is not None and to > frm else 0
        self.summary.log_gap_messages += n
        if self.metrics and n:
            self.metrics.log_gap_messages.labels(topic).inc(n)
        log.error("%s+%d: messages %s expired from the broker's log before they were audited",
                  topic, partition, f"{frm}..{to - 1}" if n else f"from {frm}")

    def _try_pending(self, consumer) -> None:
        """Partitions waiting for their lock: take the lock when it is free, then seek and resume."""
        for slot in list(self.slots.values()):
            if slot.ready or slot.aborted:
                continue
            try:
                got = slot.lock.try_acquire()
            except OSError:
                got = False
            if not got:
                waited = time.monotonic() - slot.waiting_since
                self._ratelog(logging.WARNING, ("locked", slot.key),
                              "%s+%d: still locked by %s after %.0f s", slot.topic, slot.partition,
                              slot.lock.holder(), waited)
                continue
            start = self._activate(consumer, slot)
            try:
                consumer.seek(TopicPartition(slot.topic, slot.partition, start))
            except KafkaException as exc:   # e.g. the fetcher is not started yet: again next poll
                log.info("%s+%d: seek to %s failed (%s); retried", slot.topic, slot.partition, start, exc)
                slot.ready = False
                self.writers.pop(slot.key, None)
                continue
            log.info("%s+%d: lock taken, resuming at %s", slot.topic, slot.partition, start)

    def _on_revoke(self, consumer, partitions):
        self._assigned = False
        keys = [(p.topic, p.partition) for p in partitions]
        for k in keys:
            if k in self.slots:
                self.slots[k].aborted = True   # a publish stuck on a storage fault gives up now
        self._held = []                        # consumed under the old assignment: re-read by the owner
        self.dnssync.revoke(keys)              # the same for flow messages waiting for DNS
        self._wait_idle(raise_error=False)     # the worker never needs the consumer: this always returns
        self._barrier(raise_error=False)       # every sealed set durable (or given up), pending closes done
        commits = []
        for k in keys:
            slot = self.slots.pop(k, None)
            w = self.writers.pop(k, None)
            if w is not None and slot is not None and slot.ready:
                try:   # publish what is buffered while the lock still fences the partition
                    last = w.flush()
                    if last is not None:
                        commits.append(TopicPartition(k[0], k[1], last + 1))
                except (PublishAborted, OSError, SinkError) as exc:
                    log.warning("%s+%d: buffered rows not published on revocation (the next owner re-reads "
                                "them): %s", k[0], k[1], exc)
                    w.discard()
            if slot is not None:
                slot.lock.release()
            if self.findings is not None:
                self.findings.release(k)
            self._paused.discard(k)
            with self._outbox_mu:
                off = self._outbox.pop(k, None)
            if off is not None:
                commits.append(TopicPartition(k[0], k[1], off))
            if self.metrics:
                try:
                    self.metrics.consumer_lag.remove(k[0], str(k[1]))
                except KeyError:
                    pass
        self._commit(commits, asynchronous=False)
        consumer.unassign()

    def _apply_pauses(self, consumer) -> None:
        """Pause partitions waiting for a lock, flow partitions whose messages wait for the DNS
        partitions (:mod:`flowaudit.sources.dnssync`), and all of them while a storage fault or a
        full hand-off queue holds consumption; resume the rest."""
        want = {k for k, s in self.slots.items() if not s.ready or self._hold_pause or k in self.dnssync.waiting}
        pause = [TopicPartition(*k) for k in want - self._paused]
        resume = [TopicPartition(*k) for k in self._paused - want if k in self.slots]
        try:
            if pause:
                consumer.pause(pause)
            if resume:
                consumer.resume(resume)
        except KafkaException as exc:
            self._ratelog(logging.WARNING, "pause", "pause/resume failed (retried): %s", exc)
            return
        self._paused = want

    # -- storage faults --------------------------------------------------------------------------

    def _on_fault(self, slot: _Slot, exc: OSError, attempt: int) -> bool:
        """A publish failed with a retryable storage error: wait (back-off) and retry, unless the
        service is stopping or the partition was revoked.  Consumption is paused meanwhile."""
        name = errno.errorcode.get(exc.errno or 0, "EIO")
        if self.metrics:
            self.metrics.storage_errors.labels(name).inc()
        if self._fault_since is None:
            self._fault_since = time.monotonic()
            self.summary.storage_faults += 1
            if self.metrics:
                self.metrics.storage_paused.set(1)
        if self.stopping or slot.aborted:
            return False
        delay = min(30.0, 0.5 * 2 ** min(attempt - 1, 6))
        self._ratelog(logging.ERROR, ("storage", name),
                      "storage fault (%s) publishing %s+%d: %s; consumption paused, retry %d in %.1f s",
                      name, slot.topic, slot.partition, exc, attempt, delay)
        end = time.monotonic() + delay
        while time.monotonic() < end:
            if self.stopping or slot.aborted:
                return False
            time.sleep(0.05)
        return True

    def _fault_cleared(self) -> None:
        if self._fault_since is not None:
            log.warning("storage writable again after %.1f s; consumption resumes",
                        time.monotonic() - self._fault_since)
            self._fault_since = None
            if self.metrics:
                self.metrics.storage_paused.set(0)

    # -- callbacks --------------------------------------------------------------------------------

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

    def _on_error(self, err) -> None:
        # a broker outage makes librdkafka report every failed connection attempt
        self._ratelog(logging.WARNING, ("kafka", err.code()), "kafka: %s", err)

    # -- main loop ---------------------------------------------------------------------------

    def run(self) -> Summary:
        if self.install_signals:
            self.install_signal_handlers()
        t0 = time.monotonic()
        try:
            parts = check_broker(self.settings)
            self._topic_parts = parts
            self.expected_partitions = sum(parts.values())
            # only the formats the topics declare ("auto": all): the others compile on first use
            self.summary.warmup_seconds = self.classifier.warmup(set(self.topic_fmt.tolist()))
            # the kernels are loaded: LLVM's pages go back to the system (flowaudit/memory.py)
            log.debug("released %.0f MB of LLVM's pages", release_library_pages() / 1e6)
        except StartupInterrupted:
            self._restore_signal_handlers()
            self.summary.seconds = time.monotonic() - t0
            return self.summary
        conf = consumer_config(self.settings, **{"statistics.interval.ms": 1000, "stats_cb": self._on_stats,
                                                 "error_cb": self._on_error})
        self.consumer = c = Consumer(conf)
        self._starting = False
        t_first = None
        try:
            k = self.settings.kafka
            t_reload = time.monotonic()
            progress = _Progress(self, k.drain_stall_s)
            if self._queue is not None:
                if self.settings.sink.write_behind:
                    self._wq = queue.Queue()
                    self._writer = threading.Thread(target=self._write_loop, name="flowaudit-writer", daemon=True)
                    self._writer.start()
                self._worker = threading.Thread(target=self._work_loop, name="flowaudit-worker", daemon=True)
                self._worker.start()
            # after the writer thread exists: writers made on assignment hand their file sets to it
            c.subscribe(self.topic_names, on_assign=self._on_assign, on_revoke=self._on_revoke,
                        on_lost=self._on_revoke)
            while not self.stopping:
                if self.max_seconds is not None and time.monotonic() - t0 > self.max_seconds:
                    break
                if self._worker_error is not None:
                    break
                self._try_pending(c)
                self._offer_held()
                self._hold_pause = bool(self._held) or self._fault_since is not None
                self._apply_pauses(c)
                self._room_for_a_batch()
                msgs = c.consume(num_messages=k.poll_max_messages, timeout=self._poll_timeout())
                got = len(msgs)
                if got and t_first is None:
                    t_first = time.monotonic()
                    self.summary.first_message_at = time.time()
                if self.dnssync.enabled:
                    msgs = self._synchronise(msgs)
                if msgs:
                    self.process(msgs)
                # the batch holds the payloads now: the poll's messages go before the next poll
                # fills another list (about 20 MB less peak RSS over 1M messages)
                msgs = None
                self._commit_outbox()
                if self.egress is not None and time.monotonic() - t_reload > 10:
                    t_reload = time.monotonic()   # operator watchlist edits: atomic reload
                    self.egress.reload_watchlist()
                if self.until_drained:
                    if self._drained():
                        log.info("--until-drained: at the end: %s", self._drain_evidence())
                        break
                    if progress.stalled(got):
                        self.summary.exit_code = EXIT_STALLED
                        self.summary.error = progress.reason
                        break
            self._stop_worker()
            self.flush_all()
            if t_first is not None:
                self.summary.active_seconds = time.monotonic() - t_first
        except LogResetError as exc:
            self.summary.exit_code, self.summary.error = EXIT_LOG_RESET, str(exc)
            self._abandon()
        except StorageUnreadable as exc:       # raised while recovering an assigned partition
            self.summary.exit_code, self.summary.error = EXIT_STORAGE, str(exc)
            self._abandon()
        except BaseException:
            self._abandon()
            raise
        finally:
            self.summary.seconds = time.monotonic() - t0
            self._closing = True
            try:
                c.close()
            finally:
                for slot in self.slots.values():
                    slot.lock.release()
                self._restore_signal_handlers()
        if isinstance(self._worker_error, LogResetError):
            self.summary.exit_code, self.summary.error = EXIT_LOG_RESET, str(self._worker_error)
        return self.summary

    def _synchronise(self, msgs: list) -> list:
        """The poll's messages that go on now: flow messages wait for the DNS partitions this
        member holds to catch up by record time (:mod:`flowaudit.sources.dnssync`)."""
        def ready(key):
            s = self.slots.get(key)
            return s is not None and s.ready

        msgs, forced = self.dnssync.admit(msgs, ready)
        if forced:
            self.summary.dns_sync_timeouts += forced
            if self.metrics:
                self.metrics.dns_sync_timeouts.inc(forced)
            self._ratelog(logging.WARNING, "dns_sync",
                          "%d flow message(s) sent on after kafka.dns_wait_s = %g s with the DNS partitions "
                          "behind them in record time: their flows may lack DNS attribution", forced,
                          self.dnssync.wait_s)
        return msgs

    def _abandon(self) -> None:
        """Stop without publishing (a fatal error): buffered rows are re-read on the next start."""
        self.stopping = True
        for slot in self.slots.values():
            slot.aborted = True
        try:
            self._stop_worker()
        except BaseException:  # already being reported
            pass
        self._pending_close = None   # a window sealed for closing closes on the next start (from storage)
        for w in self.writers.values():
            w.discard()

    def _poll_timeout(self) -> float:
        """``kafka.poll_timeout_s``, except while ``--until-drained`` has read every partition to
        its end and only waits for the worker: then a short poll (the group is still served), so
        that the run ends when the worker does, not up to a poll timeout later.  A member sharing
        the topics whose own partitions are at their end polls every ``GROUP_CHECK_S``, the
        pace at which it asks for the group's commits."""
        t = self.settings.kafka.poll_timeout_s
        if not (self.until_drained and self._assigned and all(s.ready and s.eof for s in self.slots.values())):
            return t
        if len(self.slots) < self.expected_partitions:    # waiting for the group's commits
            return min(t, GROUP_CHECK_S)
        if DRAIN_POLL_S is not None and self._queue is not None and self._queue.unfinished_tasks:
            return min(t, DRAIN_POLL_S)
        return t

    def _drained(self) -> bool:
        """Every partition this member holds is read to its end and its rows handed on; and the
        partitions it does not hold (members sharing the topics) are drained by the group: its
        committed offsets reach their ends (asked every ``GROUP_CHECK_S``).  A member alone, or
        with every partition, needs no broker round trip.

        A member in a rebalance (its partitions revoked, their rows published) holds nothing and
        asks the group's commits of every partition: when the others end at the same time, the
        rebalance their leaving starts can wait long for them (on the embedded broker, past the
        40 s stall limit of a test), and the commits already say the group is done."""
        if not ((self._assigned or (self._joined and not self.slots))
                and all(s.ready and s.eof for s in self.slots.values()) and not self._held
                and not self.dnssync.waiting
                and (self._queue is None or self._queue.unfinished_tasks == 0)):
            return False
        if len(self.slots) >= self.expected_partitions:
            return True
        # members sharing the topics wait for each other's commits: publish and commit what this
        # one buffers first (the worker is idle; like a buffer-budget publish), or they never would
        keys = [k for k, w in self.writers.items() if w.buffered]
        done: dict = {}
        if keys and self._publish_all(keys, done, "--until-drained: publish before waiting for the group") is None:
            return False
        tps = [TopicPartition(t, p, o) for (t, p), o in done.items()] + self._ends_past_markers()
        if tps:
            self._commit(tps, asynchronous=False)
        at, drained, _what = self._group_check
        if time.monotonic() - at >= GROUP_CHECK_S:
            drained, what = self._group_drained()
            self._group_check = (time.monotonic(), drained, what)
        return drained

    def _ends_past_markers(self) -> list[TopicPartition]:
        """Partitions read to their end with every row durable, whose consumer position is past
        the offset their files end at: the offsets between hold a transactional producer's commit
        markers (or aborted records), which no consumer receives.  Committed, the position lets
        the group's offsets reach the partition's end, which members sharing the topics wait for
        (``--until-drained``) and external lag monitors (``kafka-consumer-groups``) read."""
        out = []
        if self.consumer is None:
            return out
        for k, s in self.slots.items():
            w = self.writers.get(k)
            if w is None or not s.eof or not s.ready or s.aborted or w.buffered or k in self.dnssync.waiting:
                continue   # (messages waiting for DNS were delivered: the position is past them)
            durable = w.next_offset if w.next_offset is not None else (0 if s.last_seen < 0 else None)
            if durable is None or (s.last_seen >= 0 and durable != s.last_seen + 1):
                continue   # rows seen but not yet durable
            try:
                pos = self.consumer.position([TopicPartition(*k)])[0].offset
            except KafkaException:
                continue
            if pos > durable and pos > s.end_committed:
                s.end_committed = pos
                out.append(TopicPartition(k[0], k[1], pos))
        return out

    def _group_drained(self) -> tuple[bool, str]:
        """(drained, what it waits for): the group's committed offset of each partition this
        member does not hold is at the partition's end (or the partition is empty), and each
        partition it holds had its end-of-partition event at or past the log's end.

        The commits are asked every time (a cheap OffsetFetch); the logs' ends and starts
        (ListOffsets, 0.5 s a request on the embedded broker) once every 5 s.  Between, the
        commits are compared with the ends of that answer: as a member alone stops at the ends
        it saw (EOF) when it saw them, the group counts as drained once its commits reach the
        ends known a few seconds ago.

        This member's own partitions ride in the same ListOffsets request: an end-of-partition
        event below the log's end (seen once under load: a member left the group without reading
        its partition, exit 0, and the member waiting for that partition's commit stalled) is not
        trusted.  The partition reads on, and the ``--until-drained`` stall limit ends the run
        if nothing more comes."""
        others = [TopicPartition(t, p) for t, n in self._topic_parts.items() for p in range(n)
                  if (t, p) not in self.slots]
        own = [TopicPartition(t, p, s.eof_at) for (t, p), s in self.slots.items()]
        try:
            committed = self.consumer.committed(others, timeout=5)
            bad = [tp for tp in committed if tp.error is not None]
            if bad:
                return False, f"the group's offset of {bad[0].topic}+{bad[0].partition}: {bad[0].error.str()}"
            at, known = self._other_logs
            if not (time.monotonic() - at < 5.0
                    and all((tp.topic, tp.partition) in known for tp in committed + own)):
                # the logs' ends in one request; their starts only where an offset is short of
                # the end, to tell an empty log (nothing to wait for) from one not yet read
                hi = log_offsets(self.consumer, committed + own, LATEST, timeout=5)
                short = [tp for tp in committed + own if tp.offset < hi[(tp.topic, tp.partition)]]
                lo = log_offsets(self.consumer, short, EARLIEST, timeout=5)
                known = {k: (lo.get(k, -1), e) for k, e in hi.items()}   # -1: not asked, it was at the end
                self._other_logs = (time.monotonic(), known)
        except KafkaException as exc:
            return False, f"the group's offsets: {exc.args[0].str()}"
        early = []
        for tp in own:
            if _short_of([tp], known):
                end = known[(tp.topic, tp.partition)][1]
                log.warning("%s+%d: end of partition reported at offset %d, but the log ends at %d: reading on",
                            tp.topic, tp.partition, tp.offset, end)
                self.slots[(tp.topic, tp.partition)].eof = False
                early.append(f"{tp.topic}+{tp.partition} (end of partition at {tp.offset} of {end})")
        if early:
            return False, ", ".join(early)
        waiting = _short_of(committed, known)
        self._others_seen = ", ".join(f"{tp.topic}+{tp.partition} committed {tp.offset} "
                                      f"(log {known.get((tp.topic, tp.partition))})" for tp in committed)
        return not waiting, ", ".join(waiting)

    def _drain_evidence(self) -> str:
        """What ``--until-drained`` ended on, for the log: each partition held (where its end of
        partition event was, the last offset read) and, members sharing the topics, the group's
        commits of the others against their logs' (start, end) as last asked."""
        own = ", ".join(f"{t}+{p} end at {s.eof_at} (last read {s.last_seen})" for (t, p), s in self.slots.items())
        if len(self.slots) >= self.expected_partitions:
            return own or "no partition"
        return f"{own or 'no partition held'}; the others: {self._others_seen}"

    def _work_loop(self) -> None:
        """Handle the queue's batches in order.  While a batch's kernels run on the kernel pool,
        this thread builds the tables of the batch before: a batch already queued is started
        (:meth:`start_batch`) before the one before it is finished.  A started batch is never
        held while the queue is empty, so the queue's ``join`` (revocation, stop) still means that
        every batch taken is handled."""
        q = self._queue
        started = None          # (work, its started classification) of the batch taken before
        while True:
            if started is None:
                work = q.get()
            else:
                try:
                    work = q.get_nowait()
                except queue.Empty:
                    work = _NOTHING
            nxt, error = None, None
            if work is not None and work is not _NOTHING and self._worker_error is None:
                try:
                    nxt = (work, None if work is _WINDOWS else self.start_batch(work[0]))
                except BaseException as exc:  # after the batch before is handled, as in order
                    error = exc
            if started is not None:
                try:
                    if self._worker_error is None:
                        self._run(*started)
                except BaseException as exc:  # surfaced in the main thread, which stops
                    self._worker_error = exc
                finally:
                    started = None   # the batch goes now, not when the next one arrives
                    q.task_done()
            if error is not None and self._worker_error is None:
                self._worker_error = error
            if work is _NOTHING:
                continue
            if nxt is not None and self._worker_error is None:
                started = nxt
                continue
            nxt = None
            q.task_done()       # the stop (None), or a batch dropped after an error
            if work is None:
                return

    def _wait_idle(self, raise_error: bool = True) -> None:
        if self._queue is not None and self._worker is not None:
            self._queue.join()
        if raise_error and self._worker_error is not None:
            raise self._worker_error

    def _stop_worker(self) -> None:
        if self._worker is not None:
            while True:
                try:
                    self._queue.put(None, timeout=0.1)
                    break
                except queue.Full:
                    if not self._worker.is_alive():
                        break
            self._worker.join()
            self._worker = None
        if self._writer is not None:
            self._barrier(raise_error=False, close=False)   # the worker's last sealed sets; then the writer ends
            self._wq.put(None)
            self._writer.join()
            self._writer = None
            self._wq = None
            for w in self.writers.values():
                w.handoff = None
        if self._worker_error is not None and not isinstance(self._worker_error, LogResetError):
            raise self._worker_error

    # -- write-behind: the writer thread ---------------------------------------------------------

    def _handoff(self, w: PartitionWriter, sealed) -> None:
        """A writer closed a file set while adding (worker thread): published with the batch's others."""
        self._sealed.append((w, sealed, self.slots.get((w.topic, w.partition))))

    def _seal(self, w: PartitionWriter, key) -> None:
        sealed = w.seal()
        if sealed is not None:
            self._sealed.append((w, sealed, self.slots.get(key)))

    def _submit_sealed(self) -> None:
        """Hand the sets this batch sealed to the writer thread, once the previous hand-off is
        durable: one hand-off in flight, so write-behind never holds more rows than before."""
        if not self._sealed:
            return
        items, self._sealed = self._sealed, []
        self._join_writer()
        self._inflight_bytes = sum(cur.nbytes for _w, cur, _s in items)
        self._wq.put(items)

    def _join_writer(self) -> None:
        t0 = time.perf_counter()
        self._wq.join()
        self.summary.write_wait_seconds += time.perf_counter() - t0

    def _write_loop(self) -> None:
        """The writer thread: publish sealed file sets in order; their offsets go to the outbox."""
        while True:
            items = self._wq.get()
            try:
                if items is None:
                    return
                t0 = time.perf_counter()
                for w, cur, slot in items:
                    if w.broken is not None:
                        continue   # an earlier set of this partition was not published: no gap
                    if self._worker_error is not None:
                        w.broken = self._worker_error   # stopping on an error: re-read on the next start
                        continue
                    try:
                        last = w.publish_sealed(cur)
                    except PublishAborted as exc:
                        log.warning("%s+%d: %s; the rows are re-read by the partition's owner", w.topic, w.partition,
                                    exc)
                        w.broken = exc
                        if slot is not None:
                            slot.aborted = True   # later batches of this assignment are dropped too
                        continue
                    except BaseException as exc:  # surfaced in the main thread, which stops
                        w.broken = exc
                        if self._worker_error is None:
                            self._worker_error = exc
                        continue
                    key = (w.topic, w.partition)
                    with self._outbox_mu:
                        self._outbox[key] = max(self._outbox.get(key, -1), last + 1)
                    self._fault_cleared()
                items = w = cur = slot = None   # the published tables go now, not after the next get:
                trim()   # then their pages go back, as after a publish in the worker (_enforce_budget)
                self.summary.write_behind_seconds += time.perf_counter() - t0
            except BaseException as exc:  # a fault outside a publish: the thread lives on to drain
                # the queue (the worker waits on it: a dead writer would hang the service), the
                # sets after it are not published, and the main thread stops with the error
                if self._worker_error is None:
                    self._worker_error = exc
                for w, _cur, _slot in items or ():   # no later set of these partitions is published
                    if w.broken is None:
                        w.broken = exc
                items = w = None
            finally:
                self._wq.task_done()

    def _barrier(self, raise_error: bool = True, close: bool = True) -> bool:
        """Every file set sealed so far is durable, or given up (the worker's thread, or the main
        thread while the worker is idle).  Writers whose sealed set was given up discard what they
        buffer (the partition's owner re-reads it).  ``close``: then close the findings windows a
        previous batch sealed the sets of.  Returns False when a set was given up."""
        ok = True
        if self._wq is not None:
            if self._sealed:
                items, self._sealed = self._sealed, []
                self._wq.put(items)
            self._join_writer()
            self._inflight_bytes = 0
            for k, w in list(self.writers.items()):
                if w.broken is not None:
                    ok = False
                    w.discard()
                    if self.findings is not None:   # file sets published before the abort never reached memory
                        self.findings.from_storage_only(k)
            if raise_error and self._worker_error is not None:
                raise self._worker_error
        if close and self._pending_close is not None:
            due, keys = self._pending_close
            self._pending_close = None
            if ok:
                self._close_due(due, self._flushed(keys))
        return ok

    def _offer_held(self) -> None:
        while self._held:
            try:
                self._queue.put_nowait(self._held[0])
            except queue.Full:
                return
            self._held.pop(0)

    def _room_for_a_batch(self, timeout: float = 1.0) -> None:
        """Before a poll, wait (at most ``timeout``) for room in the worker's queue: a batch built
        while it is full only waits in memory (one batch more at the peak, ~15 MB at 5000
        messages).  Not while batches are held aside (a storage fault): then this thread polls,
        paused, to serve the group; and never longer than ``timeout``, so it polls at least that
        often (rebalances, SIGTERM)."""
        q = self._queue
        if q is None or self._worker is None or self._held or self._fault_since is not None:
            return
        with q.not_full:    # the queue's own condition (its lock guards q.queue)
            q.not_full.wait_for(lambda: len(q.queue) < q.maxsize or self.stopping or self._worker_error is not None,
                                timeout)

    def _enqueue(self, work) -> None:
        """Hand a batch to the worker.  While the worker is slower, wait a little (back-pressure);
        while it waits out a storage fault, keep the batch aside and pause consumption, so that
        this thread keeps serving the group (rebalances, SIGTERM)."""
        if self._held:
            self._held.append(work)
            return
        deadline = time.monotonic() + 2.0
        while True:
            try:
                self._queue.put(work, timeout=0.05)
                return
            except queue.Full:
                if self.stopping or self._worker_error is not None:
                    return   # never committed: re-read on the next start
                if self._fault_since is not None or time.monotonic() > deadline:
                    self._held.append(work)
                    return

    def flush_all(self) -> None:
        """At stop: close the findings windows the consumed data has passed, publish what every
        writer buffers, checkpoint the flow path, commit."""
        done: dict[tuple[str, int], int] = {}
        if self.findings is not None:
            self._close_windows(done)
        for (topic, part), w in list(self.writers.items()):
            slot = self.slots.get((topic, part))
            if slot is not None and not slot.ready:
                continue
            try:
                last = w.flush()
            except PublishAborted as exc:
                log.error("%s+%d: %d buffered message(s) not published (%s); they are re-read on the next "
                          "start", topic, part, w.buffered, exc)
                continue
            if last is not None:
                done[(topic, part)] = last + 1
        if self._fp_restored and any(self._is_telemetry(k) and w.buffered == 0 for k, w in self.writers.items()):
            self._checkpoint_flowpath({})
        commits = [TopicPartition(t, p, o) for (t, p), o in done.items()] + self._ends_past_markers()
        with self._outbox_mu:
            commits += [TopicPartition(t, p, o) for (t, p), o in self._outbox.items()]
            self._outbox.clear()
        self._commit(commits, asynchronous=False)

    def _commit_outbox(self) -> None:
        with self._outbox_mu:
            if not self._outbox:
                return
            tps = [TopicPartition(t, p, o) for (t, p), o in self._outbox.items()]
            self._outbox.clear()
        self._commit(tps, asynchronous=True)

    def _commit(self, tps: list[TopicPartition], asynchronous: bool = True) -> None:
        """Commit offsets made durable (main thread only).  A failed commit is harmless: storage
        is the source of truth on resume."""
        if not tps or self.consumer is None:
            return
        best: dict = {}
        for tp in tps:
            k = (tp.topic, tp.partition)
            best[k] = max(best.get(k, -1), tp.offset)
        tps = [TopicPartition(t, p, o) for (t, p), o in best.items()]
        try:
            self.consumer.commit(offsets=tps, asynchronous=asynchronous)
            if self.metrics:
                self.metrics.offsets_committed.inc()
        except KafkaException as exc:  # e.g. during a rebalance
            self._ratelog(logging.WARNING, "commit", "offset commit failed (resume comes from storage): %s", exc)

    def process(self, msgs: list) -> None:
        """Gather one poll into a batch (main thread) and hand it to the worker."""
        t_batch = time.perf_counter()
        values, src, parts, offs, tss, keys, groups = [], [], [], [], [], [], []
        group_of: dict[tuple[str, int], int] = {}
        group_slots: list[_Slot] = []
        resets: dict[tuple[str, int], int] = {}
        eof_code = KafkaError._PARTITION_EOF
        newly_eof = False
        topic_idx = self.topic_idx
        slots = self.slots
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == eof_code:
                    s = slots.get((m.topic(), m.partition()))
                    if s is not None and s.ready:
                        newly_eof = newly_eof or not s.eof
                        s.eof, s.eof_at = True, m.offset()
                        if s.verify is not None and m.offset() <= s.verify[0]:
                            self._reset_from_start(s, "storage_ahead",
                                                   f"storage resumes at offset {s.resume} but the broker's log "
                                                   f"ends at {m.offset()}: the topic was recreated or truncated")
                elif err.code() == KafkaError._AUTO_OFFSET_RESET:
                    # the fetch position fell out of the log; what comes next says which way
                    self._ratelog(logging.ERROR, ("reset", m.topic(), m.partition()), "%s", err)
                else:
                    self._ratelog(logging.WARNING, ("consume", err.code()), "consume error: %s", err)
                continue
            key = (m.topic(), m.partition())
            g = group_of.get(key)
            if g is None:
                s = slots.get(key)
                if s is None or not s.ready:
                    continue   # not ours (any more), or still waiting for its lock: refetched later
                off = m.offset()
                if s.epoch_at_next:
                    s.epoch_at_next = False
                    resets[key] = off
                    s.last_seen = off - 1
                elif s.verify is not None:
                    if not self._verify(s, m, resets):
                        continue
                elif off <= s.last_seen:
                    self._log_reset(s, "offset_regressed",
                                    f"offset {off} arrived after offset {s.last_seen}: the log went backwards")
                    resets[key] = off
                    s.last_seen = off - 1
                g = group_of[key] = len(group_slots)
                group_slots.append(s)
                s.eof = False
                s.handed = True
            s = group_slots[g]
            off = m.offset()
            if off > s.last_seen:
                s.last_seen = off
            groups.append(g)
            values.append(m.value())
            src.append(topic_idx[key[0]])
            parts.append(key[1])
            offs.append(off)
            tss.append(m.timestamp()[1])
            keys.append(m.key())
        if not values:
            if newly_eof and self.findings is not None:
                self._hand_on(_WINDOWS)
            return
        src_a = np.asarray(src, np.int32)
        if not self._fp_restored and self.telemetry_kind[src_a].any():
            self._restore_flowpath()
        batch = Batch.from_values(values, self.topic_fmt[src_a], sources=self.topic_names, source_idx=src_a,
                                  partition=parts, offset=offs, ts_ms=tss, keys=keys)
        self._hand_on((batch, np.asarray(groups, np.int64), [s.key for s in group_slots], t_batch, group_slots,
                       resets))

    def _hand_on(self, work) -> None:
        """A poll's work (a batch, or ``_WINDOWS``) to the worker; without one (``pipeline_depth``
        0), done here and its offsets committed."""
        if self._worker is None:
            self._run(work)
            self._commit_outbox()
        else:
            self._enqueue(work)

    def _run(self, work, started=_NOTHING) -> None:
        """Do one piece of queued work: :meth:`windows_tick` for ``_WINDOWS``, else :meth:`handle`."""
        if work is _WINDOWS:
            self.windows_tick()
        else:
            self.handle(*work, started=started)

    def start_batch(self, batch: Batch):
        """The first half of classifying ``batch``'s messages (:meth:`Classifier.start`: its kernels
        start on the kernel pool); None when it has none (telemetry only).  :meth:`handle` takes it
        as ``started``; batches are handled in the order they were started."""
        text = np.flatnonzero(self.telemetry_kind[batch.source_idx] == 0)
        if not text.size:
            return None
        tb = batch if text.size == len(batch) else batch.take(text)
        return text, tb, self.classifier.start(tb)

    def handle(self, batch: Batch, group: np.ndarray, group_keys: list, t_batch: float,
               group_slots: list | None = None, resets: dict | None = None, started=_NOTHING) -> None:
        """Classify a batch and hand its rows to the partition writers; the offsets they made
        durable go to the outbox, which the consuming thread commits.  ``started``: what
        :meth:`start_batch` returned for it, when the caller started it before."""
        parts: dict[str, list] = {}
        kinds = self.telemetry_kind[batch.source_idx]
        if started is _NOTHING:
            started = self.start_batch(batch)
        if started is not None:
            text, tb, st = started
            result = self.classifier.finish(st)
            self._account(tb, result)
            for d, (t, rows) in (("messages", (result.messages, result.m_idx)), ("hits", (result.hits, result.h_idx)),
                                 ("quarantine", (result.quarantine, result.q_idx)),
                                 ("transfers", (result.transfers, result.t_idx))):
                if t is not None and (t.num_rows or d == "messages"):
                    parts.setdefault(d, []).append((t, text[rows] if tb is not batch else rows))
        for code, kind in _NAMES_FIRST:
            idx = np.flatnonzero(kinds == code)
            if idx.size:
                fr = self.flowpath.run(batch, idx, kind)
                self._account_flows(batch, idx, fr)
                for d, (t, rows) in fr.tables.items():
                    parts.setdefault(d, []).append((t, rows))
        tables = {d: (pa.concat_tables([t for t, _ in ps]), np.concatenate([r for _, r in ps]).astype(np.int64))
                  for d, ps in parts.items()}
        # each dataset's rows ordered by partition once; every partition then takes a zero-copy slice
        ngroups = len(group_keys)
        split = {}
        for d, (t, rows) in tables.items():
            g = group[rows]
            order = np.argsort(g, kind="stable")
            if ngroups > 1 and not np.all(order[:-1] < order[1:]):
                t, rows, g = t.take(pa.array(order)), rows[order], g[order]
            split[d] = (t, rows, np.searchsorted(g, np.arange(ngroups + 1)))
        sizes = np.diff(batch.offsets)
        done: dict[tuple[str, int], int] = {}
        if self._pending_close is not None:   # the windows the previous batch made due: before any writer or window moves
            self._barrier()
        for g, key in enumerate(group_keys):
            w = self.writers.get(key)
            if w is None:
                continue  # revoked while this batch was in flight
            if group_slots is not None:
                slot = group_slots[g]
                if self.slots.get(key) is not slot or slot.aborted:
                    continue  # consumed under an earlier assignment: the current owner re-reads it
            idx = np.flatnonzero(group == g)
            if self.findings is not None:
                self.findings.observe(key, batch.offset[idx], batch.ts_ms[idx])
            sub = {}
            for d, (t, rows, bounds) in split.items():
                lo, hi = int(bounds[g]), int(bounds[g + 1])
                if hi > lo:
                    sub[d] = (t.slice(lo, hi - lo), batch.offset[rows[lo:hi]])
            try:
                if resets and key in resets:
                    self._barrier()   # the old epoch's sets are published before the new one starts
                    w.start_epoch(resume=resets[key])
                above = w.high
                published = w.add(batch.offset[idx], batch.ts_ms[idx], sub, sizes[idx])
            except PublishAborted as exc:
                log.warning("%s+%d: %s; the rows are re-read by the partition's owner", key[0], key[1], exc)
                w.discard()
                if self.findings is not None:   # file sets published before the abort never reached memory
                    self.findings.from_storage_only(key)
                if group_slots is not None:
                    group_slots[g].aborted = True   # later batches of this assignment are dropped too
                continue
            if self.findings is not None:   # the windows keep what can be evidence: no read-back at close
                t_ev = time.perf_counter()
                self.findings.absorb(key, sub, batch.offset[idx], batch.ts_ms[idx], above, w.epoch)
                self.summary.findings_seconds += time.perf_counter() - t_ev
            if published:
                done[key] = max(published) + 1
                self._fault_cleared()
        self._enforce_budget(done)
        self._after_publish(done)
        self.summary.batches += 1
        if self.metrics:
            self.metrics.batch_seconds.observe(time.perf_counter() - t_batch)
            self.metrics.batch_messages.observe(len(batch))

    def _after_publish(self, done: dict) -> None:
        """After a batch's rows went to the writers (``done``: the offsets they made durable): close
        the findings windows now due, checkpoint the flow path, hand sealed sets to the writer
        thread, and put the offsets in the outbox for the consuming thread to commit."""
        if self.findings is not None:
            self._close_windows(done)
        if any(self._is_telemetry(k) for k in done) or any(self._is_telemetry((w.topic, w.partition))
                                                             for w, _c, _s in self._sealed):
            self._checkpoint_flowpath(done)
        if self._wq is not None and threading.current_thread() is self._worker:
            self._submit_sealed()
        if done:
            with self._outbox_mu:
                for k, off in done.items():
                    self._outbox[k] = max(self._outbox.get(k, -1), off)

    def windows_tick(self) -> None:
        """A poll brought only ends of partitions (no batch): look at the findings windows again,
        in the worker's order.  A partition that reached its end after its last batch was handled
        holds no window open any more; without this, the window (and every partition's rows
        buffered since its last file) waited for the next message or for the stop."""
        done: dict[tuple[str, int], int] = {}
        if self._pending_close is not None:
            self._barrier()
        self._after_publish(done)

    def _enforce_budget(self, done: dict) -> None:
        """Bound the buffered rows in bytes across all partitions: when the writers together hold
        more than ``sink.buffer_budget_mb`` of Arrow data, every writer publishes what it has
        (partition slices share their batch's buffers, so only publishing them all frees them).  File names
        stay offset ranges; only where a file set ends moves, never what is in it."""
        before = sum(w.buffered_bytes for w in self.writers.values())
        budget = self.settings.sink.buffer_budget_mb << 20
        if BUDGET_COUNTS_IN_FLIGHT and self._inflight_bytes and before + self._inflight_bytes > budget:
            self._join_writer()   # rows in flight still take memory: the peak stays where it was
            self._inflight_bytes = 0
        if before <= budget:
            return
        keys = [k for k, w in self.writers.items() if w.buffered]
        if self._async():
            for k in keys:
                self._seal(self.writers[k], k)
        else:
            self._publish_all(keys, done, "buffer budget: publish abandoned")
            trim()                # the arenas' free pages back to the system (flowaudit/memory.py)
        self.summary.budget_flushes += 1
        if self.metrics:
            self.metrics.budget_flushes.inc()
        log.debug("buffer budget: %d partition(s) published %d MB of buffered rows", len(keys), before >> 20)

    # -- findings: event-time windows ----------------------------------------------------------

    def _async(self) -> bool:
        """Write-behind applies: the worker thread, with a writer thread."""
        return self._wq is not None and threading.current_thread() is self._worker

    def _close_windows(self, done: dict) -> None:
        """Close the findings windows the watermark has passed: every writer publishes first, so
        the window is read back from storage (see :mod:`flowaudit.detect.windows`).  Write-behind:
        the writers' sets are sealed now and the windows close once they are durable (the
        barrier before the next batch moves a writer or a window, or any other barrier)."""
        fw = self.findings
        if self._pending_close is not None:
            self._barrier()
        idle = {k: s.eof and (not s.handed or fw.handled_up_to(k) >= s.last_seen)
                for k, s in list(self.slots.items()) if s.ready and not s.aborted}
        try:
            due = fw.due(idle)
        except OSError as exc:   # its state file on a full disk (the writer may be waiting it out): next batch
            self._ratelog(logging.ERROR, "findings", "findings windows not checked (%s); retried", exc)
            return
        if not due:
            return
        keys = [k for k in self.writers if k in idle]
        if self._async():
            for k in keys:
                self._seal(self.writers[k], k)
            self._pending_close = (due, keys)
            return
        flushed = self._publish_all(keys, done, "findings window not closed")
        if flushed is None:
            return
        self._close_due(due, flushed)

    def _flushed(self, keys: list) -> dict[str, int]:
        """``topic+partition`` -> the offset its durable files end at (every sealed set published)."""
        return {f"{k[0]}+{k[1]}": w.next_offset for k in keys
                if (w := self.writers.get(k)) is not None and w.next_offset is not None}

    def _close_due(self, due: list, flushed: dict[str, int]) -> None:
        fw = self.findings
        t0 = time.perf_counter()
        for start in due:
            try:
                found = fw.close(start, flushed)
            except OSError as exc:   # retried with the next batch (the intent is kept)
                self._ratelog(logging.ERROR, "findings", "findings window at %d not written (%s); retried", start,
                              exc)
                return
            if self.metrics:
                self.metrics.findings_windows.inc()
            self.summary.findings += int(found.num_rows)
        self.summary.findings_seconds += time.perf_counter() - t0

    def _publish_all(self, keys: list, done: dict, what: str) -> dict[str, int] | None:
        """Publish the buffered rows of these partitions' writers (worker, or main once the worker
        stopped); their new durable ends go to ``done``.  Returns ``topic+partition`` -> the
        offset each one's files end at, or None when a publish was abandoned.  Sets sealed for
        the writer thread are published first (a barrier)."""
        if not self._barrier(close=False):
            log.warning("%s: an earlier file set was abandoned", what)
            return None
        flushed = {}
        for k in keys:
            w = self.writers.get(k)
            if w is None:
                continue
            try:
                last = w.flush()
            except PublishAborted as exc:
                log.warning("%s+%d: %s: %s", k[0], k[1], what, exc)
                return None
            if last is not None:
                done[k] = last + 1
            if w.next_offset is not None:
                flushed[f"{k[0]}+{k[1]}"] = w.next_offset
        return flushed

    # -- NetFlow templates, held sets and the DNS map across restarts ----------------------------

    def _is_telemetry(self, key: tuple[str, int]) -> bool:
        i = self.topic_idx.get(key[0])
        return i is not None and bool(self.telemetry_kind[i])

    def _checkpoint_flowpath(self, done: dict) -> None:
        """Publish every telemetry partition's buffered rows, then snapshot the flow path beside
        the files (``<root>/.state/flowpath.state``, written atomically) with the offset each
        partition's files end at.  The snapshot is never ahead of the published files: a held
        set released after a resume point cannot be missing from it."""
        tele = [k for k in list(self.writers) if self._is_telemetry(k)
                and (self.slots.get(k) is None or (self.slots[k].ready and not self.slots[k].aborted))]
        flushed = self._publish_all(tele, done, "flow path not checkpointed")
        if flushed is None:
            return
        head = orjson.dumps({"format": 1, "partitions": flushed})
        try:
            replace_atomic(self.state_path, struct.pack("<I", len(head)) + head + self.flowpath.state())
        except OSError as exc:   # the files are published; only the restart state is behind
            self._ratelog(logging.ERROR, "checkpoint", "flow path state not saved (%s): a restart re-learns "
                          "templates from the exporters", exc)

    def _restore_flowpath(self) -> None:
        """Before the first telemetry batch: load the snapshot if it was taken exactly where the
        assigned telemetry partitions' files end (else say why not)."""
        self._fp_restored = True
        try:
            blob = self.state_path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("flow path state %s unreadable (%s): starting without templates and held sets",
                      self.state_path, exc)
            return
        try:
            (n,) = struct.unpack_from("<I", blob)
            head = orjson.loads(blob[4:4 + n])
            saved = {str(k): int(v) for k, v in head["partitions"].items() if v is not None}
        except (struct.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            log.error("flow path state %s is damaged (%s): starting without templates and held sets",
                      self.state_path, exc)
            return
        now = {f"{t}+{p}": w.next_offset for (t, p), w in list(self.writers.items())
               if self._is_telemetry((t, p)) and w.next_offset is not None}
        if any(saved.get(k) != v for k, v in now.items()) or not set(now) <= set(saved):
            log.error("flow path state not restored: it was taken at %s, the files end at %s (a crash between a "
                      "publish and its checkpoint, or another member's partitions); templates are re-learned "
                      "from the exporters and sets held then are counted as missing_template", saved, now)
            return
        if self.flowpath.restore(blob[4 + n:]):
            log.info("flow path state restored (templates, held sets, DNS map) at %s", saved)

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


class _Progress:
    """``--until-drained`` bookkeeping: a progress line every 30 s while waiting, and a stall
    (no message and no partition change for ``stall_s``) ends the run with a reason."""

    def __init__(self, service: StreamService, stall_s: float):
        self.svc, self.stall_s = service, stall_s
        self.t_progress = self.t_log = time.monotonic()
        self.state = None
        self.reason = ""

    def stalled(self, n_msgs: int) -> bool:
        now = time.monotonic()
        svc = self.svc
        state = (len(svc.slots), sum(s.ready for s in svc.slots.values()), sum(s.eof for s in svc.slots.values()),
                 svc._group_check[2])   # the other members' partitions still moving is progress too
        if n_msgs or state != self.state:
            self.t_progress, self.state = now, state
        waiting = [f"{s.topic}+{s.partition}" + ("" if s.ready else " (locked)")
                   for s in svc.slots.values() if not (s.ready and s.eof)]
        desc = (f"{len(svc.slots)}/{svc.expected_partitions} partitions assigned; not at the end: "
                f"{', '.join(waiting[:8]) or 'none'}{' ...' if len(waiting) > 8 else ''}")
        if svc._group_check[2]:
            desc += f"; other members' partitions not yet committed to their end: {svc._group_check[2]}"
        if now - self.t_log >= 30:
            self.t_log = now
            log.warning("--until-drained: still waiting: %s; %d messages so far", desc, svc.summary.messages)
        if self.stall_s > 0 and now - self.t_progress > self.stall_s:
            self.reason = f"no progress for {self.stall_s:.0f} s (kafka.drain_stall_s): {desc}"
            log.error("--until-drained: %s", self.reason)
            return True
        return False


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
    if s.storage_faults:
        lines.append(f"  storage faults  {s.storage_faults} (consumption paused while they lasted)")
    if s.write_behind_seconds:
        lines.append(f"  write-behind    {s.write_behind_seconds:.1f} s publishing beside the worker, which waited "
                     f"{s.write_wait_seconds:.1f} s for it")
    if s.dns_sync_timeouts:
        lines.append(f"  DNS sync        {s.dns_sync_timeouts:,} flow message(s) sent on after kafka.dns_wait_s "
                     "before the DNS partitions caught up (their flows may lack attribution)")
    if s.budget_flushes:
        lines.append(f"  buffer budget   reached {s.budget_flushes} time(s): every partition published what it had")
    if s.log_resets or s.log_gap_messages:
        lines.append(f"  broker log      resets {dict(s.log_resets)}, messages expired unread {s.log_gap_messages:,}")
    if s.findings:
        lines.append(f"  findings        {s.findings:,} written by closed event-time windows "
                     f"({s.findings_seconds:.1f} s to close them)")
    if s.metrics_url:
        lines.append(f"  metrics         {s.metrics_url} (served while running)")
    if s.error:
        lines.append(f"  STOPPED         {s.error}")
    if s.top_findings:
        from .detect.findings import format_table

        lines.append("  findings, worst first (flowaudit findings ROOT):")
        lines += ["    " + ln for ln in format_table(s.top_findings).splitlines()]
    return "\n".join(lines)
