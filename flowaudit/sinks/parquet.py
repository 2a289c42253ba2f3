"""Crash-safe, exactly-once-per-partition Parquet sink (the Kafka Connect HDFS/S3 recipe).

Layout (Hive style)::

    <root>/dataset=<hits|messages|quarantine>/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<first>+<last>.parquet

``first``/``last`` are the actual first and last Kafka offsets the file set covers (zero
padded to 20 digits).  One *file set* = the three files of one offset range; every offset of
the range is in exactly one of ``messages`` and ``quarantine``; ``hits`` refer to ``messages``.

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
"""
from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..datasets import SCHEMAS

COMMIT_DATASET = "messages"   # published last in every file set: its presence commits the set
_MIN_TS_MS = 946_684_800_000      # 2000-01-01
_MAX_TS_MS = 4_102_444_800_000    # 2100-01-01
_HOUR_MS = 3_600_000
_NAME = re.compile(r"^(?P<topic>[A-Za-z0-9._-]+)\+(?P<partition>\d+)\+(?P<first>\d{20})\+(?P<last>\d{20})\.parquet$")


class SinkError(RuntimeError):
    """A durability failure (fsync EIO, an existing file with other content): fatal by design."""


def file_name(topic: str, partition: int, first: int, last: int) -> str:
    return f"{topic}+{partition}+{first:020d}+{last:020d}.parquet"


def parse_name(name: str):
    m = _NAME.match(name)
    if not m:
        return None
    return m["topic"], int(m["partition"]), int(m["first"]), int(m["last"])


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(table: pa.Table, tmp: Path, compression: str, row_group_size: int) -> None:
    pq.write_table(table, tmp, compression=None if compression == "none" else compression,
                   row_group_size=row_group_size)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)  # an EIO here is fatal: the page cache may have dropped the data
    except OSError as exc:
        raise SinkError(f"fsync failed for {tmp}: {exc}") from exc
    finally:
        os.close(fd)


def committed_files(root: Path, dataset: str, topic: str, partition: int) -> list[tuple[int, int, Path]]:
    """(first, last, path) of the published files of one partition, sorted by offset."""
    base = root / f"dataset={dataset}"
    out = []
    if not base.is_dir():
        return out
    for p in base.glob(f"date=*/hour=*/{topic}+{partition}+*.parquet"):
        parsed = parse_name(p.name)
        if parsed and parsed[0] == topic and parsed[1] == partition:
            out.append((parsed[2], parsed[3], p))
    out.sort()
    return out


@dataclass
class _Open:
    """Rows buffered for the file set being filled (not yet on disk)."""

    hour: int
    first: int = -1
    last: int = -1
    count: int = 0
    tables: dict = field(default_factory=dict)  # dataset -> [pa.Table]


class PartitionWriter:
    """Buffers one topic-partition's rows and publishes them as immutable file sets."""

    def __init__(self, root: Path, topic: str, partition: int, rotate_records: int = 100_000,
                 compression: str = "zstd", row_group_size: int = 65536, on_publish=None):
        self.root = Path(root)
        self.topic = topic
        self.partition = partition
        self.rotate_records = rotate_records
        self.compression = compression
        self.row_group_size = row_group_size
        self.on_publish = on_publish   # callback(dataset, rows) for metrics
        self._open: _Open | None = None
        self._hour = 0
        self.next_offset: int | None = None  # first offset not yet durable in storage

    # -- recovery ----------------------------------------------------------------------------

    def recover(self) -> int | None:
        """Clean up after a crash and return the offset to resume from (None: nothing stored)."""
        prefix = f".{self.topic}+{self.partition}+"
        datasets = [p.name.split("=", 1)[1] for p in self.root.glob("dataset=*") if p.is_dir()]
        for d in datasets:
            for tmp in (self.root / f"dataset={d}").glob(f"date=*/hour=*/{prefix}*"):
                tmp.unlink(missing_ok=True)
        committed = committed_files(self.root, COMMIT_DATASET, self.topic, self.partition)
        names = {p.name for _, _, p in committed}
        for d in datasets:
            if d == COMMIT_DATASET:
                continue
            for _first, _last, p in committed_files(self.root, d, self.topic, self.partition):
                if p.name not in names:  # published before its commit record: an orphan
                    p.unlink()
                    _fsync_dir(p.parent)
        if not committed:
            self.next_offset = None
            return None
        first, last, newest = committed[-1]
        try:
            meta = pq.read_metadata(newest)
        except Exception as exc:
            raise SinkError(f"committed file {newest} is unreadable: {exc}") from exc
        if meta.num_rows > last - first + 1:
            raise SinkError(f"{newest} holds {meta.num_rows} rows, more than its offset range")
        self.next_offset = last + 1
        return self.next_offset

    # -- buffering ---------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return self._open.count if self._open else 0

    def add(self, offsets: np.ndarray, ts_ms: np.ndarray, tables: dict[str, tuple[pa.Table, np.ndarray]]) -> list[int]:
        """Buffer one batch's rows of this partition.

        ``offsets``/``ts_ms``: the partition's messages in this batch, in offset order.
        ``tables``: dataset -> (table, offset of each row).  Returns the ``last`` offsets of the
        file sets published while adding (the caller commits ``max + 1`` to Kafka).
        """
        published = []
        if offsets.size == 0:
            return published
        if self.next_offset is not None and offsets[0] < self.next_offset:
            # re-delivered after a seek/rebalance: already durable, drop (never written twice)
            keep = offsets >= self.next_offset
            offsets, ts_ms = offsets[keep], ts_ms[keep]
            if offsets.size == 0:
                return published
            lo = offsets[0]
            tables = {d: (t.filter(pa.array(o >= lo)), o[o >= lo]) for d, (t, o) in tables.items()}
        hours = hour_keys(ts_ms, self._open.hour if self._open else self._hour)
        i, n = 0, offsets.size
        while i < n:
            if self._open is None:
                self._open = _Open(hour=int(hours[i]))
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
                if cur.first < 0:
                    cur.first = lo
                cur.last = hi
                cur.count += j - i
                self._hour = cur.hour
            if cur.count >= self.rotate_records or j < n:
                last = self.flush()
                if last is not None:
                    published.append(last)
            i = j
        return published

    def discard(self) -> None:
        """Forget buffered rows (partition revoked: the next owner re-reads them from Kafka)."""
        self._open = None

    # -- publishing --------------------------------------------------------------------------

    def flush(self) -> int | None:
        """Publish the buffered file set, if any; returns its last offset."""
        cur, self._open = self._open, None
        if cur is None or cur.count == 0:
            return None
        name = file_name(self.topic, self.partition, cur.first, cur.last)
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
                directory = self.root / f"dataset={d}" / sub
                directory.mkdir(parents=True, exist_ok=True)
                tmp = directory / tmp_name
                _write_durable(table, tmp, self.compression, self.row_group_size)
                staged.append((d, tmp, directory / name, table.num_rows))
            for d, tmp, final, rows in staged:  # the commit dataset is last
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    if d == COMMIT_DATASET or pq.read_metadata(final).num_rows != rows:
                        raise SinkError(f"{final} already exists: refusing to overwrite") from None
                _fsync_dir(final.parent)
                if self.on_publish:
                    self.on_publish(d, rows)
        except OSError as exc:
            if exc.errno == errno.EIO:
                raise SinkError(f"I/O error while publishing {name}: {exc}") from exc
            raise
        finally:
            for _d, tmp, _final, _rows in staged:
                tmp.unlink(missing_ok=True)
        self.next_offset = cur.last + 1
        return cur.last


def split_by_partition(result_tables: dict[str, tuple[pa.Table, np.ndarray]], group: np.ndarray, n_groups: int):
    """Split batch-level tables into per-group tables; ``group`` maps batch index -> group id.

    ``result_tables``: dataset -> (table, batch index of each row).  Yields (g, dataset -> (table, rows' batch idx)).
    """
    out = [dict() for _ in range(n_groups)]
    for d, (t, idx) in result_tables.items():
        g = group[idx] if idx.size else np.zeros(0, np.int64)
        if n_groups == 1:
            out[0][d] = (t, idx)
            continue
        for k in range(n_groups):
            sel = g == k
            if sel.any():
                out[k][d] = (t.filter(pa.array(sel)), idx[sel])
    return out


def read_dataset(root: Path, dataset: str) -> pa.Table:
    """Read every published file of a dataset (hidden temp files are skipped)."""
    import pyarrow.dataset as ds

    base = Path(root) / f"dataset={dataset}"
    if not base.is_dir():
        return SCHEMAS[dataset].empty_table()
    return ds.dataset(base, format="parquet", partitioning="hive", schema=None).to_table()

