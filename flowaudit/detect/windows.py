"""Findings in the stream: event-time windows, closed from storage, written exactly once.

The stream service feeds every batch's record times to :class:`FindingsWindows`.  Event time is
the Kafka record time; a window ``[start, start + window)`` is *due* once the newest record time
seen passes its end plus the allowed lateness.  Closing it:

1. every partition writer publishes what it buffers, so storage (the source of truth) holds
   every row of the window that arrived in time;
2. each partition's cut is found in storage (its first message at or after the window's end
   plus the lateness, else the end of its files) and the intent is written
   (``<root>/.state/findings.json``: the window and the cuts);
3. the window's ``transfers``, ``hits`` and ``messages`` are read back from storage, only rows
   below the cuts, and :func:`flowaudit.detect.findings.correlate` turns them into findings,
   with the previous window's findings for ``new`` / ``ongoing`` / ``closed``;
4. the findings are written with deterministic names (one file per window); then the intent
   becomes ``closed_until``.

The event-time watermark is the least newest-record-time over the owned partitions (one at its
end holds nothing back), so a slow partition keeps a window open.  A restart after a crash at
any step recomputes the same window from the same rows (the cuts depend on the data alone), so the ``findings`` dataset ends up with the same
rows as an uninterrupted run.  Late data within the lateness is in its window; data beyond it
(record time before a closed window's end) is counted in ``flowaudit_findings_late_total`` and
left out of the findings already written.

Each member of a group closes windows over the partitions it owns: with several members the
stream's findings are per member, and ``flowaudit findings ROOT`` gives the whole picture.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ..datasets import TRANSFERS
from ..sinks.parquet import hour_dir, replace_atomic
from . import findings as _f

log = logging.getLogger("flowaudit.findings")
NS = 1_000_000_000
MS = 1_000_000


class FindingsWindows:
    def __init__(self, root: Path, window_s: int, lateness_s: int, lookback_s: int, inventory=None, model=None,
                 metrics=None):
        if window_s <= 0 or lateness_s < 0 or lookback_s < 0:
            raise ValueError("findings: window_s > 0, lateness_s >= 0 and lookback_s >= 0")
        self.root = Path(root)
        self.window_ns, self.lateness_ns, self.lookback_ns = window_s * NS, lateness_s * NS, lookback_s * NS
        self.inventory = inventory or _f.Inventory()
        self.model = model or _f._sev.load()
        self.metrics = metrics
        self.state_path = self.root / ".state" / "findings.json"
        self._seen: dict[tuple[str, int], tuple[int | None, int]] = {}   # key -> (newest record ns, offset)
        self._oldest: dict[tuple[str, int], int] = {}
        self.late = 0
        self.closed = 0
        state = self._load_state()
        self.closed_until: int | None = state.get("closed_until")
        self.pending: dict | None = state.get("closing")

    # -- state -------------------------------------------------------------------------------

    def _load_state(self) -> dict:
        try:
            doc = orjson.loads(self.state_path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            log.error("findings window state %s unreadable (%s): windows restart from the data", self.state_path, exc)
            return {}
        return doc if isinstance(doc, dict) else {}

    def _save_state(self, doc: dict) -> None:
        replace_atomic(self.state_path, orjson.dumps(doc))

    # -- event time ----------------------------------------------------------------------------

    def observe(self, key: tuple[str, int], offsets: np.ndarray, ts_ms: np.ndarray) -> None:
        """A partition's messages of one batch, in offset order (record times in ms, -1: absent)."""
        good = ts_ms > 0
        if not good.any():
            if offsets.size:
                self._seen[key] = (self._seen.get(key, (None, -1))[0], int(offsets[-1]))
            return
        t = ts_ms[good] * MS
        if self.closed_until is not None:
            late = int(np.count_nonzero(t < self.closed_until))
            if late:
                self.late += late
                if self.metrics:
                    self.metrics.findings_late.inc(late)
        hi = int(t.max())
        lo = int(t.min())
        if lo < self._oldest.get(key, lo + 1):
            self._oldest[key] = lo
        prev = self._seen.get(key, (None, -1))[0]
        self._seen[key] = (hi if prev is None else max(prev, hi), int(offsets[-1]))

    def seed(self, key: tuple[str, int], last_ts_ms: int, last_offset: int) -> None:
        """A partition resumed from storage: its last stored message's record time and offset
        count as seen (the watermark must not forget what was published before a restart)."""
        if last_ts_ms > 0:
            hi = self._seen.get(key, (None, -1))[0]
            self._seen[key] = (last_ts_ms * MS if hi is None else max(hi, last_ts_ms * MS),
                               max(last_offset, self._seen.get(key, (None, -1))[1]))

    def watermark(self, idle: dict) -> int | None:
        """Event time every owned partition has passed: the least of their newest record times,
        where a partition that is at its end (``idle[key]``) holds nothing back.  None: no data."""
        marks, newest = [], None
        for key, is_idle in idle.items():
            hi = self._seen.get(key, (None, -1))[0]
            if hi is not None:
                newest = hi if newest is None else max(newest, hi)
            if not is_idle:
                if hi is None:
                    return None          # a partition not read yet holds every window open
                marks.append(hi)
        return min(marks) if marks else newest

    def handled_up_to(self, key: tuple[str, int]) -> int:
        return self._seen.get(key, (None, -1))[1]

    def due(self, idle: dict) -> list[int]:
        """Starts of the windows whose end plus the lateness the watermark has passed."""
        if self.pending is not None:
            return [int(self.pending["start"])]
        wm = self.watermark(idle)
        if wm is None:
            return []
        last_end = wm - self.lateness_ns        # windows ending at or before this are due
        first = self.closed_until
        if first is None:
            first = self._first_start()
            if first is None:
                return []
        out = []
        s = first
        while s + self.window_ns <= last_end and len(out) < 10_000:
            out.append(s)
            s += self.window_ns
        return out

    def _first_start(self) -> int | None:
        """The first run on this root: the window of the oldest record time, over what storage holds
        and what this process read since (the same whatever crashed in between)."""
        los = list(self._oldest.values())
        for name in ("messages", "quarantine"):
            base = self.root / f"dataset={name}"
            if base.is_dir():
                t = ds.dataset(base, format="parquet", partitioning="hive").to_table(
                    columns=["ts_ms"], filter=ds.field("ts_ms") > 0)
                if t.num_rows:
                    los.append(int(pc.min(t.column("ts_ms")).as_py()) * MS)
        if not los:
            return None
        first = min(los) // self.window_ns * self.window_ns
        self.closed_until = first
        self._save_state({"closed_until": first})
        return first

    # -- closing ---------------------------------------------------------------------------------

    def close(self, start: int, flushed: dict[str, int]) -> pa.Table:
        """Close the window at ``start``.  ``flushed``: ``topic+partition`` -> the offset that
        partition's files end at, taken after every writer published (a resumed intent keeps its
        own).  A row counts for the window when its partition had not yet passed the window's
        end plus the lateness: it precedes that partition's first message with a record time at
        or after it.  That cut depends on the data alone, not on polls, batches or restarts."""
        end = start + self.window_ns
        if self.pending is not None and int(self.pending["start"]) == start:
            cut = self.pending["cut"]          # a crash between intent and done: the same rows
        else:
            cut = self._cuts(end + self.lateness_ns, flushed)
            self.pending = {"start": start, "cut": cut}
            self._save_state({"closed_until": self.closed_until, "closing": self.pending})
        transfers = self._read("transfers", start, end, cut)
        hits = messages = None
        topics = self._evidence_topics(transfers)
        if topics:
            hits = self._read("hits", start - self.lookback_ns, end, cut, list(_f._H_COLS), topics)
            messages = self._read("messages", start, end, cut, list(_f._M_COLS), topics)
        previous = self._read_findings(start - self.window_ns)
        found = _f.correlate(transfers if transfers is not None else TRANSFERS.empty_table(), hits, messages,
                             window_ns=self.window_ns, lookback_ns=self.lookback_ns, window_start_ns=start,
                             inventory=self.inventory, model=self.model, previous=previous, watermark_ns=end)
        _f.write_findings(self.root, found, prune=False)
        self.closed_until = end
        self.pending = None
        self._save_state({"closed_until": end})
        self.closed += 1
        if self.metrics:
            self._count(found, start)
        return found

    def _cuts(self, threshold_ns: int, flushed: dict[str, int]) -> dict[str, int]:
        """Per partition: the first offset (below the flushed end) whose record time is at or
        after ``threshold_ns``, else the flushed end."""
        cut = dict(flushed)
        thr_ms = -(-threshold_ns // MS)
        hour0 = threshold_ns // (3600 * NS)
        for name in ("messages", "quarantine"):
            base = self.root / f"dataset={name}"
            if not base.is_dir():
                continue
            files = [str(p) for d in base.glob("date=*/hour=*") if _hour_of(d) >= hour0 for p in d.glob("*.parquet")]
            if not files:
                continue
            t = ds.dataset(files, format="parquet").to_table(columns=["source", "partition", "offset"],
                                                              filter=ds.field("ts_ms") >= thr_ms)
            if not t.num_rows:
                continue
            import polars as pl

            first = (pl.from_arrow(t).group_by(["source", "partition"]).agg(pl.col("offset").min())
                     .with_columns(pl.col("source").cast(pl.Utf8)))
            for s_, p_, o in first.iter_rows():
                k = f"{s_}+{p_}"
                if k in cut and o < cut[k]:
                    cut[k] = o
        return cut

    def _count(self, found: pa.Table, start: int) -> None:
        mine = found.filter(pc.equal(found.column("window_start_ns"), start)) if found.num_rows else found
        for r in mine.select(["platform", "severity", "data_classes"]).to_pylist():
            self.metrics.findings.labels(r["platform"], r["severity"]).inc()
            for c in r["data_classes"] or []:
                self.metrics.exposed_values.labels(r["platform"], c["data_class"]).inc(c["distinct_values"])

    def _evidence_topics(self, transfers: pa.Table | None) -> list[str]:
        """Topics whose hits can be evidence of the window's transfers: the exposing messages'
        topics and the application inventory's.  None without transfers: no finding to make."""
        if transfers is None or not transfers.num_rows:
            return []
        topics = {t for a in self.inventory.applications for t in a.topics}
        sw = pc.cast(transfers.column("seen_where"), pa.string())
        msg = transfers.filter(pc.is_in(sw, pa.array(_f.MESSAGE_WHERE)))
        topics |= set(pc.unique(pc.cast(msg.column("source"), pa.string())).to_pylist())
        topics.discard(None)
        return sorted(topics)

    def _read(self, name: str, lo_ns: int, hi_ns: int, cut: dict[str, int], columns: list[str] | None = None,
              sources: list[str] | None = None) -> pa.Table | None:
        """Rows of ``name`` with record time in [lo, hi + lateness), from the hour folders that can
        hold them (row-group statistics skip the rest), below each partition's cut."""
        base = self.root / f"dataset={name}"
        if not base.is_dir():
            return None
        lo_h = max(0, lo_ns // (3600 * NS))
        hi_h = (hi_ns + self.lateness_ns) // (3600 * NS)
        files = [str(p) for h in range(lo_h, hi_h + 1) for p in (base / hour_dir(h)).glob("*.parquet")]
        if not files:
            return None
        d = ds.dataset(files, format="parquet")
        filt = (ds.field("ts_ms") >= lo_ns // MS) & (ds.field("ts_ms") < -(-(hi_ns + self.lateness_ns) // MS))
        if sources is not None:
            filt = filt & ds.field("source").isin(sources)
        cols = None if columns is None else [c for c in dict.fromkeys(columns + ["source", "partition", "offset"])
                                            if c in d.schema.names]
        t = d.to_table(columns=cols, filter=filt)
        if not t.num_rows:
            return t
        import polars as pl

        keys = pl.DataFrame({"k": list(cut), "limit": list(cut.values())}, schema={"k": pl.Utf8, "limit": pl.Int64})
        rows = pl.from_arrow(t.select(["source", "partition", "offset"])).with_columns(
            k=pl.col("source").cast(pl.Utf8) + "+" + pl.col("partition").cast(pl.Utf8))
        keep = rows.join(keys, on="k", how="left", maintain_order="left").select(
            (pl.col("offset") < pl.col("limit")).fill_null(False)).to_series()
        return t.filter(keep.to_arrow())

    def _read_findings(self, start: int) -> pa.Table | None:
        base = self.root / "dataset=findings"
        if start < 0 or not base.is_dir():
            return None
        p = base / _f._window_file(start, start + self.window_ns)
        if not p.is_file():
            return None
        import pyarrow.parquet as pq
        return pq.read_table(p, schema=_f.FINDINGS)


def _hour_of(d: Path) -> int:
    """The hour number (since the epoch) of a ``date=YYYY-MM-DD/hour=HH`` folder."""
    from datetime import datetime, timezone

    try:
        t = datetime.strptime(f"{d.parent.name[5:]} {d.name[5:]}", "%Y-%m-%d %H").replace(tzinfo=timezone.utc)
    except ValueError:
        return -1
    return int(t.timestamp()) // 3600
