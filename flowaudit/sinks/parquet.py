"""Crash-safe, exactly-once-per-partition Parquet sink (the Kafka Connect HDFS/S3 recipe).

Layout (Hive style)::

    <root>/dataset=<hits|messages|quarantine>/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<first>+<last>.parquet

``first``/``last`` are the actual first and last Kafka offsets the file set covers (zero
padded to 20 digits).  One *file set* = the three files of one offset range; every offset of
the range is in exactly one of ``messages`` and ``quarantine``; ``hits`` refer to ``messages`` (``salvaged`` ones to ``quarantine``).

Publishing a file set:

1. write each dataset's rows (hits, quarantine, flows, transfers, ...) to a hidden temp file (``.<name>.tmp-<pid>``) in its final
   directory (readers and ``pyarrow.dataset`` skip ``.``-prefixed files), close, ``fsync``;
2. ``os.link`` every dataset but messages to its final name (fails if the name exists: never an
   overwrite), ``fsync`` their directories;
3. ``os.link`` the **messages** file last: it is the commit record of the set; ``fsync`` its
   directory; remove the temp files;
4. only then the caller commits the Kafka offset ``last + 1``.

Recovery (:meth:`PartitionWriter.recover`, on every partition assignment): delete this
partition's leftover temp files, delete files of other datasets that have no messages file of
the same name (published by a process that died before step 3), check the newest committed
files' footers, and resume from the highest ``last`` among the messages files + 1.  Storage,
not Kafka, is the source of truth.

Rotation is by record count (``rotate_records`` messages per file set) and record time (a file
set never spans two hours of Kafka record timestamps); never by wall clock.  A record whose
timestamp is missing or implausible (before 2000 or after 2100) is stored as is but never
drives rotation: it joins the current hour.

Fencing: a writer publishes only while it holds the partition's lock
(:class:`PartitionLock`, an ``flock`` on ``<root>/.locks/<topic>+<partition>.lock``), so a
member that was paused past its session (a zombie) and a member that took its partitions over
can never both write the same offsets: the new owner recovers from storage only after the old
one let go, or died (the kernel drops an ``flock`` with its process).  Every member of a group
must therefore share one storage root (it is the source of truth anyway).

Epochs: when the broker's log of a partition is no longer the log the files were written from
(the topic was recreated, retention or an unclean leader election truncated it), the service
either stops or starts a new *epoch* (``sink.on_log_reset``).  Files of epoch ``k > 0`` are named
``<topic>+<partition>+<first>+<last>+e<k>.parquet`` so they never collide with the old ones;
recovery resumes from the newest epoch.  The newest messages file of each set records the
timestamp and size of its last message in its footer (``flowaudit.last_ts_ms``,
``flowaudit.last_bytes``), the fingerprint the service compares with the broker on resume.

Files are created 0640 and folders 0750, whatever the umask.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..datasets import SCHEMAS, checked_parquet, parquet_options

COMMIT_DATASET = "messages"   # published last in every file set: its presence commits the set
_MIN_TS_MS = 946_684_800_000      # 2000-01-01
_MAX_TS_MS = 4_102_444_800_000    # 2100-01-01
_HOUR_MS = 3_600_000
_NAME = re.compile(r"^(?P<topic>[A-Za-z0-9._-]+)\+(?P<partition>\d+)\+(?P<first>\d{20})\+(?P<last>\d{20})"
                   r"(?:\+e(?P<epoch>[1-9]\d{0,8}))?\.parquet$")
FILE_MODE = 0o640
DIR_MODE = 0o750
# storage faults the service waits out (pause, back off, retry); anything else is fatal
RETRYABLE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EAGAIN, errno.ENOMEM})


class SinkError(RuntimeError):
    """A publish that must not be retried: an existing file with other content, a broken footer."""


class StorageUnreadable(SinkError):
    """A partition's newest committed file cannot be read back, so storage cannot say where the
    partition resumes: the service stops (exit 5) rather than guess."""


class StorageFault(OSError):
    """A publish failed for a reason that may pass (disk full, read-only remount, EIO); buffered
    rows are kept and the publish can be retried."""


class PublishAborted(RuntimeError):
    """The caller gave up on a failing publish (stop requested, partition revoked)."""


def retryable(exc: BaseException) -> bool:
    return isinstance(exc, StorageFault) or (isinstance(exc, OSError) and exc.errno in RETRYABLE_ERRNOS)


def file_name(topic: str, partition: int, first: int, last: int, epoch: int = 0) -> str:
    suffix = f"+e{epoch}" if epoch else ""
    return f"{topic}+{partition}+{first:020d}+{last:020d}{suffix}.parquet"


def parse_name(name: str):
    """(topic, partition, first, last, epoch) of a published file name, else None."""
    m = _NAME.match(name)
    if not m:
        return None
    return m["topic"], int(m["partition"]), int(m["first"]), int(m["last"]), int(m["epoch"] or 0)


def makedirs(path: Path, mode: int = DIR_MODE) -> None:
    """``mkdir -p`` where every folder created gets ``mode`` (Path.mkdir gives parents the umask's)."""
    path = Path(path)
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=mode)
            os.chmod(p, mode)  # the umask may have taken bits mode keeps
        except FileExistsError:
            pass


class PartitionLock:
    """An exclusive ``flock`` on ``<root>/.locks/<topic>+<partition>.lock`` while a partition is owned.

    :meth:`try_acquire` never blocks; the holder's pid and host are written into the file for the
    operator's log line.  The kernel releases the lock when the holder closes it or dies.
    """

    def __init__(self, root: Path, topic: str, partition: int):
        self.path = Path(root) / ".locks" / f"{topic}+{partition}.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        makedirs(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode())
        except OSError:
            pass  # the note is for humans; the lock is what counts
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing drops the flock


def hour_dir(hour_key: int) -> str:
    t = datetime.fromtimestamp(hour_key * 3600, tz=timezone.utc)
    return f"date={t:%Y-%m-%d}/hour={t:%H}"


def hour_keys(ts_ms: np.ndarray, current: int) -> np.ndarray:
    """Hour bucket of each record; implausible timestamps inherit the previous record's hour."""
    good = (ts_ms >= _MIN_TS_MS) & (ts_ms < _MAX_TS_MS)
    keys = np.where(good, ts_ms // _HOUR_MS, -1)
    if good.all():
        return keys
    idx = np.where(good, np.arange(keys.size), -1)
    np.maximum.accumulate(idx, out=idx)
    out = np.where(idx >= 0, keys[np.maximum(idx, 0)], current)
    return out


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomic(path: Path, data: bytes) -> None:
    """Replace a small state file atomically and durably: hidden temp file (0640), fsync, rename,
    fsync of the folder.  A reader sees the old content or the new one, never a part."""
    path = Path(path)
    makedirs(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def _write_durable(table: pa.Table, tmp: Path, compression: str, row_group_size: int) -> None:
    """Write ``table`` to ``tmp`` (mode 0640) and fsync it.  An fsync EIO is a StorageFault: the
    page cache may have dropped the data, so the caller rewrites the file from the rows it still
    holds in memory rather than trusting what is on disk."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.close(fd)
    os.chmod(tmp, FILE_MODE)
    pq.write_table(table, tmp, **parquet_options(table.schema, compression, row_group_size))
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        raise StorageFault(exc.errno, f"fsync failed for {tmp}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def committed_files(root: Path, dataset: str, topic: str, partition: int,
                    epoch: int | None = None) -> list[tuple[int, int, Path]]:
    """(first, last, path) of the published files of one partition (of one epoch, if given),
    sorted by epoch, then offset."""
    base = root / f"dataset={dataset}"
    out = []
    if not base.is_dir():
        return out
    for p in base.glob(f"date=*/hour=*/{topic}+{partition}+*.parquet"):
        parsed = parse_name(p.name)
        if parsed and parsed[0] == topic and parsed[1] == partition and epoch in (None, parsed[4]):
            out.append((parsed[4], parsed[2], parsed[3], p))
    out.sort()
    return [(first, last, p) for _e, first, last, p in out]


def newest_epoch(root: Path, topic: str, partition: int) -> int:
    base = Path(root) / f"dataset={COMMIT_DATASET}"
    epochs = [parse_name(p.name) for p in base.glob(f"date=*/hour=*/{topic}+{partition}+*.parquet")] \
        if base.is_dir() else []
    return max((e[4] for e in epochs if e and e[0] == topic and e[1] == partition), default=0)


@dataclass
class _Open:
    """Rows buffered for the file set being filled (not yet on disk)."""

    hour: int
    epoch: int = 0             # the writer's epoch when the set was opened (part of the file name)
    first: int = -1
    last: int = -1
    count: int = 0
    last_ts_ms: int = -1       # fingerprint of the message at ``last`` (footer of the messages file)
    last_bytes: int = -1
    nbytes: int = 0            # Arrow bytes of the buffered tables (a slice counts its share)
    tables: dict = field(default_factory=dict)  # dataset -> [pa.Table]


class PartitionWriter:
    """Buffers one topic-partition's rows and publishes them as immutable file sets.

    ``on_fault(exc, attempt) -> bool`` is called when a publish fails with a retryable storage
    error (see :data:`RETRYABLE_ERRNOS`): it waits (back-off) and returns True to retry, or False
    to give up (:class:`PublishAborted`).  The buffered rows survive a failed publish, so a retry
    writes the same file set.  Without ``on_fault`` the error propagates.

    Write-behind: with ``handoff`` set, a file set that :meth:`add` closes (rotation, hour
    change) is *sealed* and passed to ``handoff(writer, sealed)`` instead of being published in
    the caller's thread; the owner of the hand-off publishes it with :meth:`publish_sealed`, in
    the order the sets were sealed (one thread per writer at a time), and :meth:`add` returns no
    offsets for it.  ``next_offset`` and ``fingerprint`` move when the publish is durable.  A
    sealed set that could not be published marks the writer ``broken``: later sealed sets of
    the writer are not published (a gap), :meth:`flush` refuses, and the caller discards.
    """

    def __init__(self, root: Path, topic: str, partition: int, rotate_records: int = 100_000,
                 compression: str = "zstd", row_group_size: int = 65536, on_publish=None, on_fault=None):
        self.root = Path(root)
        self.topic = topic
        self.partition = partition
        self.rotate_records = rotate_records
        self.compression = compression
        self.row_group_size = row_group_size
        self.on_publish = on_publish   # callback(dataset, rows) for metrics
        self.on_fault = on_fault
        self._open: _Open | None = None
        self._hour = 0
        self.epoch = 0
        self.next_offset: int | None = None  # first offset not yet durable in storage
        self.high = -1                       # highest offset buffered or durable (-1: none)
        self.fingerprint: tuple[int, int] | None = None  # (ts_ms, bytes) of the message at next_offset - 1
        self.lost = False   # buffered rows were discarded: no more rows until recover() (no gap ever)
        self.handoff = None  # callable(writer, sealed): publish closed file sets elsewhere (write-behind)
        self.broken: BaseException | None = None  # a sealed set was not published: nothing after it may be

    # -- recovery ----------------------------------------------------------------------------

    def recover(self) -> int | None:
        """Clean up after a crash and return the offset to resume from (None: nothing stored)."""
        prefix = f".{self.topic}+{self.partition}+"
        datasets = [p.name.split("=", 1)[1] for p in self.root.glob("dataset=*") if p.is_dir()]
        for d in datasets:
            for tmp in (self.root / f"dataset={d}").glob(f"date=*/hour=*/{prefix}*"):
                tmp.unlink(missing_ok=True)
        self.lost = False
        self.broken = None
        self._open = None
        committed = committed_files(self.root, COMMIT_DATASET, self.topic, self.partition)
        names = {p.name for _, _, p in committed}
        for d in datasets:
            if d == COMMIT_DATASET:
                continue
            for _first, _last, p in committed_files(self.root, d, self.topic, self.partition):
                if p.name not in names:  # published before its commit record: an orphan
                    p.unlink()
                    fsync_dir(p.parent)
        self.epoch = newest_epoch(self.root, self.topic, self.partition)
        committed = committed_files(self.root, COMMIT_DATASET, self.topic, self.partition, self.epoch)
        if not committed:
            self.next_offset = None
            self.high = -1
            self.fingerprint = None
            return None
        first, last, newest = committed[-1]
        aside = (f"restore it, or move it aside (the other datasets' files of offsets {first}..{last} are then "
                 f"dropped as orphans and the range is read again from the broker)")
        try:
            meta = pq.read_metadata(newest)
        except Exception as exc:
            why = " ".join(str(exc).split())[:200]
            raise StorageUnreadable(f"committed file {newest} is unreadable ({why}): {aside}") from exc
        if meta.num_rows > last - first + 1:
            raise StorageUnreadable(f"committed file {newest} holds {meta.num_rows} rows, more than its offset "
                                    f"range: {aside}")
        kv = meta.metadata or {}
        try:
            self.fingerprint = (int(kv[b"flowaudit.last_ts_ms"]), int(kv[b"flowaudit.last_bytes"]))
        except (KeyError, ValueError):
            self.fingerprint = None   # written before fingerprints existed
        self.next_offset = last + 1
        self.high = last
        return self.next_offset

    def start_epoch(self, resume: int | None = None) -> None:
        """The broker's log no longer matches the files: publish what is buffered under the old
        epoch, then file everything from here on under the next one."""
        self.flush()
        self.epoch += 1
        self.next_offset = resume
        self.high = -1 if resume is None else resume - 1
        self.fingerprint = None

    # -- buffering ---------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return self._open.count if self._open else 0

    @property
    def buffered_bytes(self) -> int:
        return self._open.nbytes if self._open else 0

    def add(self, offsets: np.ndarray, ts_ms: np.ndarray, tables: dict[str, tuple[pa.Table, np.ndarray]],
            sizes: np.ndarray | None = None) -> list[int]:
        """Buffer one batch's rows of this partition.

        ``offsets``/``ts_ms``/``sizes``: the partition's messages in this batch, in offset order
        (``sizes``: value bytes, for the fingerprint).  ``tables``: dataset -> (table, offset of
        each row).  Returns the ``last`` offsets of the file sets published while adding (the
        caller commits ``max + 1`` to Kafka).  Offsets already durable or buffered are dropped,
        so a re-delivered message is never written twice.
        """
        published = []
        if self.lost:
            raise SinkError(f"{self.topic}+{self.partition}: buffered rows were discarded; recover() before adding "
                            "more (a later file set would leave a gap)")
        if offsets.size == 0:
            return published
        if sizes is None:
            sizes = np.full(offsets.size, -1, np.int64)
        if offsets[0] <= self.high:
            keep = offsets > self.high
            offsets, ts_ms, sizes = offsets[keep], ts_ms[keep], sizes[keep]
            if offsets.size == 0:
                return published
            lo = offsets[0]
            tables = {d: (t.filter(pa.array(o >= lo)), o[o >= lo]) for d, (t, o) in tables.items()}
        hours = hour_keys(ts_ms, self._open.hour if self._open else self._hour)
        i, n = 0, offsets.size
        while i < n:
            if self._open is None:
                self._open = _Open(hour=int(hours[i]), epoch=self.epoch)
            cur = self._open
            room = self.rotate_records - cur.count
            j = min(n, i + room)
            same = np.flatnonzero(hours[i:j] != cur.hour)
            if same.size:
                j = i + int(same[0])
            if j > i:
                lo, hi = int(offsets[i]), int(offsets[j - 1])
                for d, (t, o) in tables.items():
                    sel = (o >= lo) & (o <= hi)
                    if sel.all():
                        part = t
                    elif sel.any():
                        part = t.filter(pa.array(sel))
                    else:
                        continue
                    cur.tables.setdefault(d, []).append(part)
                    cur.nbytes += part.nbytes
                if cur.first < 0:
                    cur.first = lo
                cur.last = hi
                cur.last_ts_ms, cur.last_bytes = int(ts_ms[j - 1]), int(sizes[j - 1])
                cur.count += j - i
                self.high = hi
                self._hour = cur.hour
            if cur.count >= self.rotate_records or j < n:
                if self.handoff is not None:
                    sealed = self.seal()
                    if sealed is not None:
                        self.handoff(self, sealed)
                else:
                    last = self.flush()
                    if last is not None:
                        published.append(last)
            i = j
        return published

    def discard(self) -> None:
        """Forget buffered rows (partition revoked, or a publish abandoned: the next owner re-reads
        them from Kafka).  The writer takes no more rows until :meth:`recover`."""
        if (self._open is not None and self._open.count) or self.broken is not None:
            self.lost = True
        self.broken = None
        self._open = None
        self.high = -1 if self.next_offset is None else self.next_offset - 1

    # -- publishing --------------------------------------------------------------------------

    def flush(self) -> int | None:
        """Publish the buffered file set, if any; returns its last offset.

        A retryable storage error keeps the rows buffered and goes to ``on_fault``; the publish
        is retried until it succeeds or ``on_fault`` gives up."""
        cur = self._open
        if cur is None or cur.count == 0:
            self._open = None
            return None
        if self.broken is not None:
            raise PublishAborted(f"{self.topic}+{self.partition}: an earlier file set was not published "
                                 f"({self.broken})")
        last = self.publish_sealed(cur)
        self._open = None
        return last

    def seal(self) -> _Open | None:
        """Take the buffered file set out of the writer, to be published by :meth:`publish_sealed`
        (write-behind).  The writer keeps buffering after it; ``high`` stays where it is."""
        cur, self._open = self._open, None
        return cur if cur is not None and cur.count else None

    def publish_sealed(self, cur: _Open) -> int:
        """Publish one file set (the one :meth:`flush` holds, or a sealed one: sealed sets must be
        published in the order they were sealed); returns its last offset.  A retryable storage
        error goes to ``on_fault`` (retry or :class:`PublishAborted`)."""
        attempt = 0
        while True:
            try:
                self._publish(cur, retry=attempt > 0)
                break
            except (OSError, StorageFault) as exc:
                if not retryable(exc) or self.on_fault is None:
                    if isinstance(exc, OSError) and not isinstance(exc, StorageFault) and exc.errno == errno.EIO:
                        raise StorageFault(exc.errno, f"I/O error while publishing: {exc}") from exc
                    raise
                attempt += 1
                if not self.on_fault(exc, attempt):
                    raise PublishAborted(f"{self.topic}+{self.partition}: publish abandoned after {attempt} "
                                         f"failure(s): {exc}") from exc
        self.next_offset = cur.last + 1
        self.fingerprint = (cur.last_ts_ms, cur.last_bytes)
        return cur.last

    def _publish(self, cur: _Open, retry: bool = False) -> None:
        name = file_name(self.topic, self.partition, cur.first, cur.last, cur.epoch)
        sub = hour_dir(cur.hour)
        tmp_name = f".{name}.tmp-{os.getpid()}"
        staged = []
        try:
            order = sorted(d for d in cur.tables if d != COMMIT_DATASET) + [COMMIT_DATASET]
            for d in order:
                parts = cur.tables.get(d, [])
                if d != COMMIT_DATASET and not parts:
                    continue  # other datasets' files exist only when they have rows
                table = pa.concat_tables(parts) if parts else SCHEMAS[d].empty_table()
                if d == COMMIT_DATASET:
                    meta = dict(table.schema.metadata or {})
                    meta[b"flowaudit.last_ts_ms"] = str(cur.last_ts_ms).encode()
                    meta[b"flowaudit.last_bytes"] = str(cur.last_bytes).encode()
                    table = table.replace_schema_metadata(meta)
                directory = self.root / f"dataset={d}" / sub
                makedirs(directory)
                tmp = directory / tmp_name
                staged.append((d, tmp, directory / name, table.num_rows))
                _write_durable(table, tmp, self.compression, self.row_group_size)
            for d, tmp, final, rows in staged:  # the commit dataset is last
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    # a retry after a failure between two links (our own file), or a file another
                    # writer made: only the first is accepted, and only with the same rows
                    if (d == COMMIT_DATASET and not retry) or pq.read_metadata(final).num_rows != rows:
                        raise SinkError(f"{final} already exists: refusing to overwrite") from None
                    continue
                fsync_dir(final.parent)
                if self.on_publish:
                    self.on_publish(d, rows)
        finally:
            for _d, tmp, _final, _rows in staged:
                try:
                    tmp.unlink(missing_ok=True)
                except OSError:
                    pass  # a read-only remount: recover() removes it on the next assignment


def unreadable(paths, whole: bool = False) -> list[tuple[str, str]]:
    """``(path, why)`` of the Parquet files among ``paths`` that do not read back: their footer
    (``whole``: every page too, with its CRC32 where the writer stored one) does not open.  The
    error path of readers that met an Arrow error and must name the damaged files (Arrow's own
    message often names none)."""
    bad = []
    for p in paths:
        try:
            pq.read_table(p, page_checksum_verification=True) if whole else pq.read_metadata(p)
        except (OSError, pa.ArrowException) as exc:
            bad.append((str(p), " ".join(str(exc).split())[:200]))
    return bad


def read_dataset(root: Path, dataset: str) -> pa.Table:
    """Read every published file of a dataset (hidden temp files are skipped)."""
    import pyarrow.dataset as ds

    base = Path(root) / f"dataset={dataset}"
    if not base.is_dir():
        return SCHEMAS[dataset].empty_table()
    return ds.dataset(base, format=checked_parquet(), partitioning="hive", schema=None).to_table()

