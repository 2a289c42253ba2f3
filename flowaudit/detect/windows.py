"""Findings in the stream: event-time windows, closed from what storage holds, written exactly once.

The stream service feeds every batch's record times to :class:`FindingsWindows`.  Event time is
the Kafka record time; a window ``[start, start + window)`` is *due* once the newest record time
seen passes its end plus the allowed lateness.  Closing it:

1. every partition writer publishes what it buffers, so storage (the source of truth) holds
   every row of the window that arrived in time;
2. each partition's cut is found (its first stored message at or after the window's end plus
   the lateness, else the end of its files) and the intent is written
   (``<root>/.state/findings.json``: the window and the cuts);
3. the window's ``transfers``, ``hits`` and ``messages`` rows below the cuts are gathered, and
   :func:`flowaudit.detect.findings.correlate` turns them into findings, with the previous
   window's findings for ``new`` / ``ongoing`` / ``closed``;
4. the findings are written with deterministic names (one file per window); then the intent
   becomes ``closed_until``.

**Evidence in memory.**  The rows of steps 2 and 3 are the rows the partition writers published.
So that a window does not read them back from Parquet, the service hands every partition's rows
to :meth:`FindingsWindows.absorb` as the writer takes them, and the windows keep what can be
evidence: every transfer, the hits and the ``messages`` row of each message that is itself a
transfer (message-borne), every hit of the application inventory's topics (flow-borne), and the
offset and record time of every message and quarantined message (the cuts).  The other hits
never join a transfer.  Each row keeps the hour folder its file set was filed in (its message's
record time), so a window selects exactly the rows a read of storage would: record time in
range, hour folder in range, offset below its partition's cut, topic among the evidence topics.

What memory does not hold is read from storage with those same filters: the files a partition
published before this process took it over (``activate``: everything below the writer's resume
offset), every file of a partition whose log was reset (a new epoch: offsets start over) or
whose publish was abandoned part-way, of a partition this process does not own, and of
partitions whose memory was dropped because it outgrew ``memory_bytes`` (taken up again from
the next window close, at a file boundary).  A window whose rows could be filed under a record
time the sink does not trust (before 2000 or after 2100) is read from storage alone, as before.
A window without a flow that can be flow-borne takes only the exposing messages' hits (the only
ones it correlates, and whose catalogue versions its findings name), from memory or from
storage.  So a restart, at any step, still recomputes a window from the same rows, and the
``findings`` dataset ends up with the same rows as an uninterrupted run.

The event-time watermark is the least newest-record-time over the owned partitions (one at its
end holds nothing back), so a slow partition keeps a window open.  Late data within the
lateness is in its window; data beyond it (record time before a closed window's end) is counted
in ``flowaudit_findings_late_total`` and left out of the findings already written.

**Several members.**  Each member of a group closes windows over the partitions it owns, so a
finding whose evidence lies in partitions of two members is made twice, each time from part of
its evidence.  No file is shared between members, and nothing needs a lock between processes:

* a member's files and window state are its own, named by its *member tag* (a hash of the
  ``topic+partition`` keys it owns): ``findings-<window>-m<tag>.parquet``, and
  ``<root>/.state/findings/<tag>.json`` (the partitions, ``closed_until``, the intent).  Only
  the owner of those partitions writes them (partition locks), so a read-merge-replace of a
  member's own file never races another process.  Each file carries, in its Parquet metadata
  (``flowaudit.findings.member``), the partitions it covers and the window's cuts;
* after a rebalance a member's new tag takes up, per owned partition, the latest
  ``closed_until`` of any state that covered it, and closes the windows from the least of them:
  nothing a departed member closed is lost, and a window two files cover is resolved when read;
* :func:`read_findings` (the report, tests) merges: per window, a file whose partitions are a
  strict subset of another file's is superseded by it; when more than one file remains, the
  window is correlated again from the stored rows under the union of the files' cuts -- exactly
  what one member owning all those partitions would have written, one row per ``finding_id``
  with the evidence combined.  ``flowaudit findings ROOT`` correlates the stored rows itself.
"""
from __future__ import annotations

import hashlib
import logging
import re
import threading
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ..datasets import CHECKED, HITS, MESSAGES, TRANSFERS, checked_parquet
from ..sinks.parquet import _MAX_TS_MS, _MIN_TS_MS, hour_dir, parse_name, replace_atomic
from . import findings as _f

log = logging.getLogger("flowaudit.findings")
NS = 1_000_000_000
MS = 1_000_000
HOUR_MS = 3_600_000
HOUR_NS = 3600 * NS
MEMORY_BYTES = 64 << 20   # evidence kept in memory before it is dropped for storage reads (findings.memory_mb)
_NEVER = 2**63 - 1
_NONE = np.zeros(0, np.int64)
MEMBER_META = b"flowaudit.findings.member"   # Parquet key of a member file's coverage (JSON)
_MEMBER_FILE = re.compile(r"^findings-(.+?)(?:-m([0-9a-f]{12}))?\.parquet$")


def _key(k) -> str:
    return k if isinstance(k, str) else f"{k[0]}+{k[1]}"


def member_tag(keys) -> str:
    """The tag of a member that owns these partitions (``topic+partition`` or (topic, partition)):
    the same partitions give the same tag, in any process, before or after a restart."""
    return hashlib.sha256("\n".join(sorted(_key(k) for k in keys)).encode()).hexdigest()[:12]


def member_file(start_ns: int, end_ns: int, tag: str) -> str:
    """The findings file of the window [start, end) written by the member ``tag``."""
    name = _f._window_file(start_ns, end_ns)
    return f"{name[:-len('.parquet')]}-m{tag}.parquet"


def _schema(base: pa.Schema, cols) -> pa.Schema:
    return pa.schema([base.field(c).with_nullable(True) for c in cols])


# the columns a window gathers of each dataset (what correlate reads), in the sink's types
_SCHEMAS = {"transfers": _schema(TRANSFERS, _f._T_COLS), "hits": _schema(HITS, _f._H_COLS),
            "messages": _schema(MESSAGES, list(_f._M_COLS) + ["ts_ms"])}


class _Chunk:
    """Rows of one dataset that one partition's writer took in one batch: the table (None for
    the cuts' message rows), each row's own record time and offset, and the hour folder its file
    set is filed in (-1: the message's record time is one the sink does not trust)."""

    __slots__ = ("table", "ts", "off", "hk", "own", "sources", "lo", "hi", "last", "nbytes")

    def __init__(self, table, ts, off, hk, own=None, sources=frozenset()):
        self.table, self.ts, self.off, self.hk, self.own, self.sources = table, ts, off, hk, own, sources
        self.lo, self.hi = (int(ts.min()), int(ts.max())) if ts.size else (0, -1)
        self.last = self.hi          # the newest record time a window can take (the sink trusts before 2100)
        if self.hi >= _MAX_TS_MS:
            trusted = ts[ts < _MAX_TS_MS]
            self.last = int(trusted.max()) if trusted.size else -1
        self.nbytes = (table.nbytes if table is not None else 0) + ts.nbytes + off.nbytes + hk.nbytes

    def keep_from(self, lo_ms: int) -> _Chunk | None:
        """The chunk, if it holds rows a window from ``lo_ms`` on can take (None: none).  A table
        is kept whole (copying it to drop a few rows would cost more than it frees); the cuts'
        rows, which any later record time can matter to, are dropped one by one."""
        if self.table is not None:
            return self if self.last >= lo_ms else None
        if self.hi < lo_ms:
            return None
        if self.lo >= lo_ms:
            return self
        m = self.ts >= lo_ms
        return _Chunk(None if self.table is None else self.table.filter(pa.array(m)), self.ts[m], self.off[m],
                      self.hk[m], None if self.own is None else self.own[m], self.sources)


class _Part:
    """One owned partition's evidence: rows filed at offsets >= ``floor`` are in memory (None:
    none are; everything is read from storage)."""

    __slots__ = ("floor", "epoch", "sticky", "chunks", "oldest", "nbytes")

    def __init__(self, floor: int | None, epoch: int, sticky: bool = False):
        self.floor, self.epoch, self.sticky = floor, epoch, sticky
        self.chunks: dict[str, list[_Chunk]] = {"transfers": [], "hits": [], "messages": [], "cuts": []}
        self.oldest = dict.fromkeys(self.chunks, _NEVER)   # least record time of each dataset's chunks
        self.nbytes = 0

    def drop(self, sticky: bool = False) -> None:
        self.floor = None
        self.sticky = self.sticky or sticky
        for v in self.chunks.values():
            v.clear()
        self.oldest = dict.fromkeys(self.chunks, _NEVER)
        self.nbytes = 0


class FindingsWindows:
    def __init__(self, root: Path, window_s: int, lateness_s: int, lookback_s: int, inventory=None, model=None,
                 metrics=None, memory: bool = True, memory_bytes: int = MEMORY_BYTES, policy_file: str = "",
                 severity_model: str = ""):
        if window_s <= 0 or lateness_s < 0 or lookback_s < 0:
            raise ValueError("findings: window_s > 0, lateness_s >= 0 and lookback_s >= 0")
        self.root = Path(root)
        self.window_ns, self.lateness_ns, self.lookback_ns = window_s * NS, lateness_s * NS, lookback_s * NS
        self.inventory = inventory or _f.Inventory()
        self.model = model or _f._sev.load()
        self.metrics = metrics
        # recorded in each findings file, so that a reader can correlate a window again as the stream did
        self.params = {"window_ns": self.window_ns, "lateness_ns": self.lateness_ns, "lookback_ns": self.lookback_ns,
                       "policy_file": str(Path(policy_file).resolve()) if policy_file else "",
                       "severity_model": str(Path(severity_model).resolve()) if severity_model else ""}
        self._seen: dict[tuple[str, int], tuple[int | None, int]] = {}   # key -> (newest record ns, offset)
        self._oldest: dict[tuple[str, int], int] = {}
        self.late = 0
        self.closed = 0
        # the member: its partitions, its tag, its window state (see :meth:`member`)
        self._keys: frozenset | None = None
        self.tag: str | None = None
        self._active: set[str] = set()
        self.closed_until: int | None = None
        self.pending: dict | None = None
        # evidence in memory (see the module docstring); memory=False reads every window from storage
        self.memory = memory
        self.memory_bytes = memory_bytes
        self._parts: dict[str, _Part] = {}
        self.damaged: set[str] = set()   # stored files that do not read back: left out of the windows, said once
        self._kept_from = {"transfers": 0, "messages": 0, "hits": 0, "cuts": 0}   # record time (ms) memory holds from
        self._mu = threading.Lock()          # activate (consuming thread) vs absorb / close (worker)
        self._inv_topics = pa.array(sorted({t for a in self.inventory.applications for t in a.topics}), pa.string())
        self._message_where = pa.array(_f.MESSAGE_WHERE, pa.string())
        self.from_storage = 0                # windows (or their hits) read from storage alone
        self.spills = 0                      # times the evidence outgrew memory_bytes
        self._last: tuple[int, str, pa.Table] | None = None   # the last closed window's own rows, as written

    # -- state -------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        """This member's window state (before the member is known: the single-member file of
        earlier versions, read only to carry its ``closed_until`` over)."""
        if self.tag is None:
            return self.root / ".state" / "findings.json"
        return self.root / ".state" / "findings" / f"{self.tag}.json"

    @staticmethod
    def _load_state(path: Path) -> dict:
        try:
            doc = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            log.error("findings window state %s unreadable (%s): windows restart from the data", path, exc)
            return {}
        return doc if isinstance(doc, dict) else {}

    def _save_state(self, doc: dict) -> None:
        if self._keys is not None:
            doc = dict(doc, partitions=sorted(self._keys))
        replace_atomic(self.state_path, orjson.dumps(doc))

    def member(self, keys) -> None:
        """The partitions this process owns now (a rebalance changes them).  Its findings files
        and window state are named by their tag; a new tag closes windows from the least, over
        its partitions, of the latest ``closed_until`` any member's state recorded for each (a
        partition no state names yet: the others decide).  Its own unfinished intent, if any, is
        taken up exactly."""
        ks = frozenset(_key(k) for k in keys)
        if not ks or ks == self._keys:
            return
        self._keys, self.tag, self._last = ks, member_tag(ks), None
        own = self._load_state(self.state_path)
        self.pending = own.get("closing") if isinstance(own.get("closing"), dict) else None
        if self.pending is not None:
            self.closed_until = own.get("closed_until")
            return
        best: dict[str, int] = {}
        folder = self.state_path.parent
        for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            doc = self._load_state(p)
            cu, parts = doc.get("closed_until"), doc.get("partitions")
            if isinstance(cu, int) and isinstance(parts, list):
                for k in parts:
                    if k in ks:
                        best[k] = max(best.get(k, cu), cu)
        if best:
            self.closed_until = min(best.values())
        else:   # a root of a version with one state file for the stream
            cu = self._load_state(self.root / ".state" / "findings.json").get("closed_until")
            self.closed_until = cu if isinstance(cu, int) else None

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
        self.member(idle.keys())
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
        def oldest(files):
            # none published yet (another member's, or the writer thread's, first file set on its way)
            return ds.dataset(files, format=checked_parquet()).to_table(columns=["ts_ms"],
                                                                       filter=ds.field("ts_ms") > 0) \
                if files else None

        for name in ("messages", "quarantine"):
            t = self._tolerant([str(p) for p in (self.root / f"dataset={name}").glob("date=*/hour=*/*.parquet")],
                               oldest)
            if t is not None and t.num_rows:
                los.append(int(pc.min(t.column("ts_ms")).as_py()) * MS)
        if not los:
            return None
        first = min(los) // self.window_ns * self.window_ns
        self.closed_until = first
        self._save_state({"closed_until": first})
        return first

    # -- evidence in memory -----------------------------------------------------------------------

    def activate(self, key: tuple[str, int], resume: int | None, epoch: int) -> None:
        """The writer of ``key`` recovered: what it publishes from ``resume`` on (its first offset
        not yet in storage; None: nothing stored) is kept in memory, the rest is in storage.  A
        partition whose log was reset (epoch > 0) keeps older epochs' files, whose offsets can be
        anywhere: it is read from storage."""
        self._active.add(_key(key))
        self.member(self._active)
        if not self.memory:
            return
        with self._mu:
            self._parts[f"{key[0]}+{key[1]}"] = _Part(None if epoch else (resume or 0), epoch, sticky=bool(epoch))

    def release(self, key: tuple[str, int]) -> None:
        """``key`` was revoked: the member's next tag leaves it out (its state stays where it is)."""
        self._active.discard(_key(key))

    def from_storage_only(self, key: tuple[str, int]) -> None:
        """The rows of ``key`` are read from storage until it is activated again (a publish was
        abandoned part-way through a batch: what it published never reached :meth:`absorb`)."""
        with self._mu:
            part = self._parts.get(f"{key[0]}+{key[1]}")
            if part is not None:
                part.drop(sticky=True)

    def absorb(self, key: tuple[str, int], tables: dict, offsets: np.ndarray, ts_ms: np.ndarray, above: int,
               epoch: int) -> None:
        """Rows the writer of ``key`` took from one batch: ``tables`` dataset -> (table, offset of
        the message each row is filed with), ``offsets`` / ``ts_ms``: the partition's messages of
        the batch, ``above``: the writer's highest offset before (rows filed at or below it were
        dropped as re-deliveries), ``epoch``: the writer's epoch after."""
        k = f"{key[0]}+{key[1]}"
        with self._mu:
            part = self._parts.get(k)
            if part is None or part.floor is None:
                return
            if epoch != part.epoch:   # the log was reset: offsets start over
                part.drop(sticky=True)
                return
            if offsets.size > 1 and not np.all(offsets[1:] > offsets[:-1]):
                order = np.argsort(offsets, kind="stable")
                offsets, ts_ms = offsets[order], ts_ms[order]
            good = (ts_ms >= _MIN_TS_MS) & (ts_ms < _MAX_TS_MS)
            mhk = np.where(good, ts_ms // HOUR_MS, -1)

            def placed(name):
                """The rows of ``name`` the writer took, and the offset each is filed with."""
                got = tables.get(name)
                if got is None or not got[0].num_rows:
                    return None, None
                t, o = got
                o = np.asarray(o, np.int64)
                if o.size and o.min() <= above:
                    sel = o > above
                    if not sel.any():
                        return None, None
                    t, o = t.filter(pa.array(sel)), o[sel]
                return t, o

            first = int(offsets[0]) if offsets.size else 0
            span = int(offsets[-1]) - first + 1 if offsets.size else 0
            if 0 < span <= 4 * offsets.size + 1024:     # offsets nearly consecutive: a lookup table
                table = np.full(span + 1, -1, np.int64)
                table[offsets - first] = mhk

            def hour(o):
                """The hour folder of the file set each row is filed in: its message's record time."""
                if not offsets.size:
                    return np.full(o.size, -1, np.int64)
                if 0 < span <= 4 * offsets.size + 1024:
                    return table[np.clip(o - first, -1, span)]   # -1 and span: the table's last entry, -1
                pos = np.minimum(np.searchsorted(offsets, o), offsets.size - 1)
                return np.where(offsets[pos] == o, mhk[pos], -1)

            exposing = np.zeros(0, np.int64)
            t, o = placed("transfers")
            if t is not None:
                self._add(part, "transfers", _conform(t, _SCHEMAS["transfers"]), hour(o), k)
                mine = _isin(t.column("seen_where"), self._message_where)
                if mine.any():
                    exposing = np.unique(_np(t.column("offset"))[mine])
            for name in ("messages", "quarantine"):
                t, o = placed(name)
                if t is None:
                    continue
                ts, off, hk = _np(t.column("ts_ms")), _np(t.column("offset")), hour(o)
                self._add_chunk(part, "cuts", _Chunk(None, ts, off, hk))
                if name == "messages" and exposing.size:
                    m = np.isin(off, exposing)
                    if m.any():
                        self._add(part, "messages", _conform(t.filter(pa.array(m)), _SCHEMAS["messages"]), hk[m], k)
            t, o = placed("hits")
            if t is not None:
                # the evidence: the inventory topics' hits, and the hits of the messages that are transfers
                m = _isin(t.column("source"), self._inv_topics) if len(self._inv_topics) else \
                    np.zeros(t.num_rows, bool)
                if exposing.size:
                    m |= np.isin(_np(t.column("offset")), exposing)
                if m.all():   # (the batch's dictionaries are shared by its partitions: not copied)
                    self._add(part, "hits", _conform(t, _SCHEMAS["hits"]), hour(o), k)
                elif m.any():
                    self._add(part, "hits", _compact(_conform(t.filter(pa.array(m)), _SCHEMAS["hits"])), hour(o[m]), k)
            if sum(p.nbytes for p in self._parts.values()) > self.memory_bytes:
                log.info("findings evidence outgrew %d bytes: windows read it from storage until the next close",
                         self.memory_bytes)
                for p in self._parts.values():
                    p.drop()
                self.spills += 1

    def _add(self, part: _Part, name: str, t: pa.Table, hk: np.ndarray, k: str) -> None:
        src = t.column("source")
        sources = frozenset(_present(src))
        own = None
        part_no = _np(t.column("partition"))
        topic, pno = k.rsplit("+", 1)
        if sources != {topic} or (part_no.size and not np.all(part_no == int(pno))):
            # rows filed under another partition's files (held NetFlow records): their own partition's cut applies
            names = pc.cast(src, pa.string()).to_numpy(zero_copy_only=False)
            own = np.asarray([f"{s}+{p}" for s, p in zip(names, part_no)], object)
        self._add_chunk(part, name, _Chunk(t, _np(t.column("ts_ms")), _np(t.column("offset")), hk, own, sources))

    @staticmethod
    def _add_chunk(part: _Part, name: str, c: _Chunk) -> None:
        if c.ts.size:
            part.chunks[name].append(c)
            part.nbytes += c.nbytes
            part.oldest[name] = min(part.oldest[name], c.lo)

    def _covered(self, keys) -> dict[str, int]:
        """The partitions of ``keys`` whose rows filed at offsets >= the returned floor are in memory."""
        return {k: p.floor for k, p in self._parts.items() if p.floor is not None and k in keys}

    def _prune(self) -> None:
        """Forget rows no window still to close can take (closed_until only grows)."""
        end = self.closed_until
        if end is None:
            return
        bounds = {"transfers": end // MS, "messages": end // MS, "hits": (end - self.lookback_ns) // MS,
                  "cuts": -(-(end + self.window_ns + self.lateness_ns) // MS)}
        with self._mu:
            self._kept_from = {k: max(v, self._kept_from[k]) for k, v in bounds.items()}
            for p in self._parts.values():
                for name, lo in bounds.items():
                    if p.oldest[name] >= lo:
                        continue
                    before = sum(c.nbytes for c in p.chunks[name])
                    p.chunks[name] = [c for c in (c.keep_from(lo) for c in p.chunks[name]) if c is not None]
                    p.nbytes += sum(c.nbytes for c in p.chunks[name]) - before
                    p.oldest[name] = min((c.lo for c in p.chunks[name]), default=_NEVER)

    def _rearm(self, flushed: dict[str, int]) -> None:
        """Partitions whose memory was dropped (too big) take it up again from their files' end:
        every writer has just published, so nothing is buffered below it."""
        with self._mu:
            for k, p in self._parts.items():
                if p.floor is None and not p.sticky and k in flushed:
                    p.floor = flushed[k]

    # -- closing ---------------------------------------------------------------------------------

    def close(self, start: int, flushed: dict[str, int]) -> pa.Table:
        """Close the window at ``start``.  ``flushed``: ``topic+partition`` -> the offset that
        partition's files end at, taken after every writer published (a resumed intent keeps its
        own).  A row counts for the window when its partition had not yet passed the window's
        end plus the lateness: it precedes that partition's first message with a record time at
        or after it.  That cut depends on the data alone, not on polls, batches or restarts."""
        end = start + self.window_ns
        if self._keys is None:
            self.member(flushed)
        if self.pending is not None and int(self.pending["start"]) == start:
            cut = self.pending["cut"]          # a crash between intent and done: the same rows
        else:
            cut = self._cuts(end + self.lateness_ns, flushed)
            self.pending = {"start": start, "cut": cut}
            self._save_state({"closed_until": self.closed_until, "closing": self.pending})
        previous = self._read_findings(start - self.window_ns)
        self._last = None    # until this window's file is written: a failed write may have rewritten the last one
        found = self.correlate_window(start, cut, previous)
        self._write(found, start, cut)
        mine = found.filter(pc.equal(found.column("window_start_ns"), start)) if found.num_rows else found
        self._last = (start, self.tag, mine) if mine.num_rows else None
        self.closed_until = end
        self.pending = None
        self._save_state({"closed_until": end})
        self.closed += 1
        if self.memory:
            self._prune()
            self._rearm(flushed)
        if self.metrics:
            self._count(mine, start)
        return found

    def correlate_window(self, start: int, cut: dict[str, int], previous: pa.Table | None) -> pa.Table:
        """The findings of the window at ``start`` from the rows below ``cut`` (memory where it
        holds them, storage for the rest), with ``previous`` (the window before's findings) for
        the status: what :meth:`close` writes, and what :func:`read_findings` recomputes."""
        end = start + self.window_ns
        lo = start - self.lookback_ns
        trusted = (lo >= _MIN_TS_MS * MS and end + self.lateness_ns <= _MAX_TS_MS * MS)
        use_memory = self.memory and trusted
        if self.memory and not trusted:
            self.from_storage += 1
        transfers = self._gather("transfers", start, end, cut, None, use_memory)
        hits = messages = None
        topics = self._evidence_topics(transfers)
        if topics:
            # without a flow that can be flow-borne, the hits that count are the exposing messages' own
            # (a finding names the catalogue versions of its own evidence hits: no other hit counts)
            only = exposing(transfers) if not may_be_flow_borne(transfers) else None
            hits = self._gather("hits", lo, end, cut, topics, use_memory, only)
            messages = self._gather("messages", start, end, cut, topics, use_memory)
        return _f.correlate(transfers if transfers is not None else TRANSFERS.empty_table(), hits, messages,
                            window_ns=self.window_ns, lookback_ns=self.lookback_ns, window_start_ns=start,
                            inventory=self.inventory, model=self.model, previous=previous, watermark_ns=end)

    def _write(self, found: pa.Table, start: int, cut: dict[str, int]) -> None:
        """This member's findings files: one per window of ``found`` (the window at ``start`` and
        the earlier one whose findings it closes), each merged with the file's rows of other
        ``finding_id`` s and replaced atomically (hidden temp file, fsync, rename, fsync of the
        folder).  Only this member writes these names.  The window's file records the partitions
        it covers and their cuts; an earlier window's file keeps what it recorded."""
        import pyarrow.parquet as pq

        from ..datasets import FINDINGS

        if not found.num_rows:
            return
        base = self.root / "dataset=findings"
        mine = orjson.dumps(dict(self.params, partitions=sorted(self._keys or cut), cut=cut, start=start))
        keys = sorted(set(zip(found.column("window_start_ns").to_pylist(), found.column("window_end_ns").to_pylist())))
        for s, e in keys:
            part = found.filter(pc.and_(pc.equal(found["window_start_ns"], s), pc.equal(found["window_end_ns"], e)))
            final = base / member_file(s, e, self.tag)
            old = old_meta = None
            if final.exists():
                try:
                    old = pq.read_table(final, schema=FINDINGS, **CHECKED)
                    old_meta = (pq.read_schema(final).metadata or {}).get(MEMBER_META)
                except Exception:  # noqa: BLE001 - unreadable: replaced
                    old = None
                if old is not None:
                    part = _f.merge_by_finding_id(old, part)
            meta = mine if s == start or old_meta is None else old_meta
            if old is not None and old.equals(part) and old_meta == meta:
                continue
            _f.publish_findings_file(part.replace_schema_metadata({**FINDINGS.metadata, MEMBER_META: meta}), final)

    def _cuts(self, threshold_ns: int, flushed: dict[str, int]) -> dict[str, int]:
        """Per partition: the first offset (below the flushed end) whose record time is at or
        after ``threshold_ns``, else the flushed end (stored messages and quarantined messages
        filed in hour folders from the threshold's on)."""
        cut = dict(flushed)
        thr_ms = -(-threshold_ns // MS)
        hour0 = threshold_ns // HOUR_NS
        covered = {}
        if self.memory and thr_ms >= self._kept_from["cuts"]:
            with self._mu:
                covered = self._covered(cut)
                for k in list(covered):
                    best, unsure = cut[k], None
                    for c in self._parts[k].chunks["cuts"]:
                        if c.hi < thr_ms:
                            continue
                        m = c.ts >= thr_ms
                        off, hk = c.off[m], c.hk[m]
                        sure = off[hk >= hour0]
                        if sure.size:
                            best = min(best, int(sure.min()))
                        if (hk < 0).any():
                            unsure = int(off[hk < 0].min()) if unsure is None else min(unsure, int(off[hk < 0].min()))
                    cut[k] = best
                    if unsure is not None and unsure < best:   # filed in a folder only storage tells
                        del covered[k]

        def wanted(parsed) -> bool:
            if parsed is None:
                return True
            k = f"{parsed[0]}+{parsed[1]}"
            return k in cut and (k not in covered or parsed[2] < covered[k])

        for name in ("messages", "quarantine"):
            base = self.root / f"dataset={name}"
            if not base.is_dir():
                continue
            files = [str(p) for d in base.glob("date=*/hour=*") if _hour_of(d) >= hour0 for p in d.glob("*.parquet")
                     if wanted(parse_name(p.name))]
            t = self._tolerant(files, lambda fs: ds.dataset(fs, format=checked_parquet()).to_table(
                columns=["source", "partition", "offset"], filter=ds.field("ts_ms") >= thr_ms) if fs else None)
            if t is None or not t.num_rows:
                continue
            import polars as pl

            first = (pl.from_arrow(t).group_by(["source", "partition"]).agg(pl.col("offset").min())
                     .with_columns(pl.col("source").cast(pl.Utf8)))
            for s_, p_, o in first.iter_rows():
                k = f"{s_}+{p_}"
                if k in cut and o < cut[k]:
                    cut[k] = o
        return cut

    def _count(self, mine: pa.Table, start: int) -> None:
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

    def _gather(self, name: str, lo_ns: int, hi_ns: int, cut: dict[str, int], sources: list[str] | None,
                use_memory: bool, only: dict[str, np.ndarray] | None = None) -> pa.Table | None:
        """Rows of ``name`` with record time in [lo, hi + lateness), filed in the hour folders that
        can hold them, below their partition's cut (of ``sources`` only, if given): from memory
        where it holds them, from storage for the rest.  ``only``: just the rows of these messages
        (``topic+partition`` -> offsets)."""
        columns = None if name == "transfers" else list(_SCHEMAS[name].names)
        if not use_memory or lo_ns // MS < self._kept_from[name]:
            return self._read(name, lo_ns, hi_ns, cut, columns, sources, only=only)
        lo_ms, hi_ms = lo_ns // MS, -(-(hi_ns + self.lateness_ns) // MS)
        lo_h, hi_h = max(0, lo_ns // HOUR_NS), (hi_ns + self.lateness_ns) // HOUR_NS
        want = None if sources is None else frozenset(sources)
        got: list[pa.Table] = []
        with self._mu:
            covered = self._covered(cut)
            for k in covered:
                for c in self._parts[k].chunks[name]:
                    if c.hi < lo_ms or c.lo >= hi_ms or (want is not None and not (c.sources & want)) or \
                            (only is not None and c.own is None and k not in only):
                        continue
                    m = (c.ts >= lo_ms) & (c.ts < hi_ms)
                    if c.own is None:
                        m &= c.off < cut[k]
                    else:
                        own = np.unique(c.own, return_inverse=True)    # the rows' partitions, numbered once
                        m &= c.off < _own_cut(own, cut)
                    if want is not None and not c.sources <= want:
                        m &= _isin(c.table.column("source"), pa.array(sorted(want), pa.string()))
                    if only is not None:
                        if c.own is None:
                            m &= np.isin(c.off, only.get(k, _NONE))
                        else:
                            m &= _own_isin(own, c.off, only)
                    if not m.any():
                        continue
                    if (c.hk[m] < 0).any():   # filed under a record time the sink does not trust
                        self.from_storage += 1
                        return self._read(name, lo_ns, hi_ns, cut, columns, sources)
                    m &= (c.hk >= lo_h) & (c.hk <= hi_h)
                    if m.all():
                        got.append(c.table)
                    elif m.any():
                        part = c.table.filter(pa.array(m))
                        got.append(_compact(part) if only is not None else part)

        def skip(parsed) -> bool:
            if parsed is None:
                return False
            k = f"{parsed[0]}+{parsed[1]}"
            if k in covered:
                return parsed[2] >= covered[k]          # in memory
            # only transfers hold rows of another partition (held NetFlow records); the rest of a
            # partition outside the cut counts for nothing
            return name != "transfers" and k not in cut

        stored = self._read(name, lo_ns, hi_ns, cut, columns, sources, skip, only)
        if stored is not None and stored.num_rows:
            if not got:
                return stored
            got.append(_conform(stored, _SCHEMAS[name]))
        if not got:
            return stored if stored is not None else _SCHEMAS[name].empty_table()
        return got[0] if len(got) == 1 else pa.concat_tables(got)

    def _read(self, name: str, lo_ns: int, hi_ns: int, cut: dict[str, int], columns: list[str] | None = None,
              sources: list[str] | None = None, skip=None, only: dict[str, np.ndarray] | None = None
              ) -> pa.Table | None:
        """Rows of ``name`` with record time in [lo, hi + lateness), from the hour folders that can
        hold them (row-group statistics skip the rest), below each partition's cut; ``skip``:
        leave out the files whose parsed name it accepts (held in memory); ``only``: just the rows
        of these messages.  Filtered batch by batch, so a window of many rows of which few count (a
        busy window whose evidence outgrew memory) holds only what it keeps."""
        base = self.root / f"dataset={name}"
        if not base.is_dir():
            return None
        lo_h = max(0, lo_ns // HOUR_NS)
        hi_h = (hi_ns + self.lateness_ns) // HOUR_NS
        files = [str(p) for h in range(lo_h, hi_h + 1) for p in (base / hour_dir(h)).glob("*.parquet")
                 if skip is None or not skip(parse_name(p.name))]
        return self._tolerant(files, lambda fs: self._scan(fs, lo_ns, hi_ns, cut, columns, sources, only))

    def _tolerant(self, files: list[str], read):
        """``read(files)`` without the stored files that do not read back (a damaged file: the
        windows go on without its rows rather than stop the service).  An Arrow or I/O error is
        traced to its files, which join :attr:`damaged`, each logged once and counted
        (``flowaudit_storage_unreadable_files``), and the read is tried again without them; an
        error no file explains is raised."""
        from ..sinks.parquet import unreadable

        files = [f for f in files if f not in self.damaged]
        try:
            return read(files)
        except (pa.ArrowException, OSError) as exc:
            error = exc
        found = unreadable(files, whole=True)
        if not found:
            raise error
        for f, why in found:
            self.damaged.add(f)
            log.error("findings: the stored file %s does not read back (%s): the windows go on without its rows; "
                      "restore it or move it aside", f, why)
        if self.metrics:
            self.metrics.storage_unreadable.set(len(self.damaged))
        return read([f for f in files if f not in self.damaged])

    def _scan(self, files: list[str], lo_ns: int, hi_ns: int, cut: dict[str, int], columns, sources, only):
        """:meth:`_read`'s scan of ``files``."""
        if not files:
            return None
        d = ds.dataset(files, format=checked_parquet())
        filt = (ds.field("ts_ms") >= lo_ns // MS) & (ds.field("ts_ms") < -(-(hi_ns + self.lateness_ns) // MS))
        if sources is not None:
            filt = filt & ds.field("source").isin(sources)
        cols = None if columns is None else [c for c in dict.fromkeys(columns + ["source", "partition", "offset"])
                                            if c in d.schema.names]
        scanner = d.scanner(columns=cols, filter=filt)
        import polars as pl

        keys = pl.DataFrame({"k": list(cut), "limit": list(cut.values())}, schema={"k": pl.Utf8, "limit": pl.Int64})
        kept = []
        for b in scanner.to_batches():
            if not b.num_rows:
                continue
            t = pa.Table.from_batches([b])
            rows = pl.from_arrow(t.select(["source", "partition", "offset"])).with_columns(
                k=pl.col("source").cast(pl.Utf8) + "+" + pl.col("partition").cast(pl.Utf8))
            keep = rows.join(keys, on="k", how="left", maintain_order="left").select(
                (pl.col("offset") < pl.col("limit")).fill_null(False)).to_series()
            t = t.filter(keep.to_arrow())
            if only is not None and t.num_rows:
                t = _only(t, only)
            if t.num_rows:
                kept.append(t)
        if not kept:
            return scanner.projected_schema.empty_table()
        return kept[0] if len(kept) == 1 else pa.concat_tables(kept)

    def _read_findings(self, start: int) -> pa.Table | None:
        """The findings file of the window at ``start``: the rows this process just wrote there
        when it closed that window last (a file is written, or kept, only with exactly them)."""
        if self._last is not None and self._last[:2] == (start, self.tag) and start >= 0:
            return self._last[2]
        base = self.root / "dataset=findings"
        if start < 0 or not base.is_dir() or self.tag is None:
            return None
        p = base / member_file(start, start + self.window_ns, self.tag)
        if not p.is_file():
            return None
        import pyarrow.parquet as pq
        try:
            return pq.read_table(p, schema=_f.FINDINGS, **CHECKED)
        except (pa.ArrowException, OSError) as exc:    # damaged: as if not written, so it is written again
            log.error("findings: %s does not read back (%s): the window's findings are written again", p,
                      " ".join(str(exc).split())[:200])
            return None


def read_findings(root: str | Path, *, inventory=None, model=None) -> tuple[pa.Table, dict]:
    """The findings dataset under ``root`` as one table, one row per ``finding_id``, whatever
    members wrote it (see the module docstring): per window, a file that covers a strict subset
    of another file's partitions is superseded (a file without a member tag -- ``flowaudit
    findings --write``, an audit -- covers every partition); when several files remain, the
    window is correlated again from the stored rows under the union of their cuts, with the
    merged previous window for the status, and a finding a member had closed stays closed
    unless the merged next window goes on with it.  ``inventory`` / ``model``: the application
    inventory and severity model to correlate with (default: the files the stream recorded).
    Returns the table and counts (files, members, superseded, recomputed windows)."""
    import pyarrow.parquet as pq

    from ..datasets import FINDINGS

    base = Path(root) / "dataset=findings"
    info = {"files": 0, "members": 0, "superseded": 0, "recomputed_windows": 0}
    if not base.is_dir():
        return FINDINGS.empty_table(), info
    windows: dict[tuple[int, int], list] = {}
    tags = set()
    for p in sorted(base.glob("date=*/hour=*/findings-*.parquet")):
        m = _MEMBER_FILE.match(p.name)
        if m is None:
            continue
        t = pq.read_table(p, schema=FINDINGS, **CHECKED)
        info["files"] += 1
        cover, meta = None, None            # None: every partition
        if m.group(2):
            tags.add(m.group(2))
            try:
                meta = orjson.loads((pq.read_schema(p).metadata or {})[MEMBER_META])
                cover = frozenset(meta["partitions"])
            except (KeyError, TypeError, orjson.JSONDecodeError):
                log.error("findings file %s does not record its partitions: read as it is", p)
                cover, meta = frozenset({m.group(2)}), None
        for s_, e_ in sorted(set(zip(t.column("window_start_ns").to_pylist(), t.column("window_end_ns").to_pylist()))):
            rows = t.filter(pc.and_(pc.equal(t["window_start_ns"], s_), pc.equal(t["window_end_ns"], e_)))
            windows.setdefault((s_, e_), []).append((cover, meta, rows))
    info["members"] = len(tags)
    result: dict[tuple[int, int], pa.Table] = {}
    closed_by: dict[tuple[int, int], set] = {}
    engines: dict = {}
    for w in sorted(windows):
        entries = windows[w]
        whole = [x for x in entries if x[0] is None]
        chosen = whole[:1] or [x for x in entries if not any(x[0] < y[0] for y in entries)]
        info["superseded"] += len(entries) - len(chosen)
        if len(chosen) == 1 or any(x[1] is None for x in chosen) or w[1] <= 0:
            t = pa.concat_tables([x[2] for x in chosen]) if len(chosen) > 1 else chosen[0][2]
            result[w] = _first_per_id(t) if len(chosen) > 1 else t
            continue
        start, win = w[0], w[1] - w[0]
        cut: dict[str, int] = {}
        for _, meta, _ in chosen:
            for k, v in meta["cut"].items():
                cut[k] = max(cut.get(k, v), v)
        prm = chosen[0][1]
        sig = (win, prm.get("lateness_ns", 0), prm.get("lookback_ns", 0), prm.get("policy_file", ""),
               prm.get("severity_model", ""))
        fw = engines.get(sig)
        if fw is None:
            inv = inventory if inventory is not None else _f.load_inventory(_existing(sig[3]))
            mod = model if model is not None else _f._sev.load(_existing(sig[4]))
            fw = engines[sig] = FindingsWindows(root, win // NS, sig[1] // NS, sig[2] // NS, inventory=inv, model=mod,
                                                memory=False)
        prev_w = (start - win, start)
        found = fw.correlate_window(start, cut, result.get(prev_w))
        ws = found.column("window_start_ns")
        result[w] = found.filter(pc.equal(ws, start))
        again = found.filter(pc.equal(ws, start - win))   # the window before's findings it closes
        if again.num_rows and prev_w in result:
            result[prev_w] = _f.merge_by_finding_id(result[prev_w], again)
        closed_by[w] = {r["finding_id"] for x in chosen
                        for r in x[2].select(["finding_id", "status"]).to_pylist() if r["status"] == "closed"}
        info["recomputed_windows"] += 1
    for w, fids in closed_by.items():
        if not fids:
            continue
        nxt = result.get((w[1], 2 * w[1] - w[0]))
        going = set() if nxt is None else {(r["platform"], r["rule"], r["entity"]) for r in
                                           nxt.select(["platform", "rule", "entity"]).to_pylist()}
        rows = result[w].to_pylist()
        for r in rows:
            if r["finding_id"] in fids and (r["platform"], r["rule"], r["entity"]) not in going:
                r["status"] = "closed"
        result[w] = pa.Table.from_pylist(rows, schema=FINDINGS)
    if not result:
        return FINDINGS.empty_table(), info
    t = pa.concat_tables([x.cast(FINDINGS) if x.schema != FINDINGS else x for x in result.values()])
    return t.take(pc.sort_indices(t, [("window_start_ns", "ascending"), ("finding_id", "ascending")])), info


def _existing(path: str) -> str | None:
    if path and not Path(path).is_file():
        log.warning("findings: %s, recorded by the stream, is not there: the default is used", path)
        return None
    return path or None


def _first_per_id(t: pa.Table) -> pa.Table:
    """One row per finding_id, a closed one first (files that cannot be merged any better)."""
    best: dict[str, int] = {}
    status = [str(x) for x in t.column("status").to_pylist()]
    for i, fid in enumerate(t.column("finding_id").to_pylist()):
        j = best.get(fid)
        if j is None or (status[i] == "closed" and status[j] != "closed"):
            best[fid] = i
    return t.take(pa.array(sorted(best.values()), pa.int64()))


def may_be_flow_borne(transfers: pa.Table | None) -> bool:
    """Whether any transfer can make a flow-borne finding (neither message-borne, nor zone
    policy, nor a DNS answer alone): the one correlation that takes hits other than the
    exposing messages'."""
    if transfers is None or not transfers.num_rows:
        return False
    msg = _isin(transfers.column("seen_where"), pa.array(_f.MESSAGE_WHERE, pa.string()))
    pol = _isin(transfers.column("platform"), pa.array(["policy"], pa.string()))
    dns = _isin(transfers.column("rule"), pa.array(_f.NOT_FINDINGS, pa.string()))
    return bool((~(msg | pol | dns)).any())


def exposing(transfers: pa.Table) -> dict[str, np.ndarray]:
    """``topic+partition`` -> the offsets of the messages that are themselves transfers."""
    t = transfers.filter(pa.array(_isin(transfers.column("seen_where"), pa.array(_f.MESSAGE_WHERE, pa.string()))))
    out: dict[str, list] = {}
    for s_, p_, o in zip(pc.cast(t.column("source"), pa.string()).to_pylist(), t.column("partition").to_pylist(),
                         t.column("offset").to_pylist()):
        out.setdefault(f"{s_}+{p_}", []).append(o)
    return {k: np.unique(np.asarray(v, np.int64)) for k, v in out.items()}


def only_mask(t: pa.Table, only: dict[str, np.ndarray]) -> np.ndarray:
    """Per row of ``t``: whether its message is in ``only`` (``topic+partition`` -> sorted offsets,
    :func:`exposing`).  One lookup per topic and partition the rows hold (a few), by bisection."""
    out = np.zeros(t.num_rows, bool)
    if not t.num_rows or not only:
        return out
    src = t.column("source")
    src = (src.combine_chunks() if isinstance(src, pa.ChunkedArray) else src)
    if not pa.types.is_dictionary(src.type):
        src = src.dictionary_encode()
    names = src.dictionary.cast(pa.string()).to_pylist()
    code = src.indices.fill_null(len(names)).to_numpy(zero_copy_only=False).astype(np.int64)
    names.append(None)
    part = _np(t.column("partition")).astype(np.int64)
    off = _np(t.column("offset")).astype(np.int64)
    pair = (code << 32) | (part + 2**31)
    pairs = pair[:1] if pair[0] == pair.min() == pair.max() else np.unique(pair)   # mostly one partition
    for p_ in pairs.tolist():
        name = names[p_ >> 32]
        want = None if name is None else only.get(f"{name}+{(p_ & 0xFFFFFFFF) - 2**31}")
        if want is None or not want.size:
            continue
        rows = np.flatnonzero(pair == p_) if pairs.size > 1 else slice(None)
        o = off[rows]
        i = np.minimum(np.searchsorted(want, o), want.size - 1)
        out[rows] = want[i] == o
    return out


def _only(t: pa.Table, only: dict[str, np.ndarray]) -> pa.Table:
    """The rows of ``t`` whose message is in ``only`` (:func:`only_mask`)."""
    return t.filter(pa.array(only_mask(t, only)))


def _own_cut(own: tuple, cut: dict[str, int]) -> np.ndarray:
    """Each row's partition cut (-1 where none), for rows filed under another partition's files
    (``own``: ``np.unique`` of each row's ``topic+partition`` with its inverse): one lookup per
    distinct partition, not per row."""
    keys, inv = own
    return np.asarray([cut.get(k, -1) for k in keys.tolist()], np.int64)[inv.ravel()]


def _own_isin(own: tuple, off: np.ndarray, only: dict[str, np.ndarray]) -> np.ndarray:
    """Which rows' messages (``own`` partition as in :func:`_own_cut`, ``off`` offset) are in
    ``only``: one ``np.isin`` per distinct partition (a per-row ``in`` walked the whole offset
    list for every row)."""
    keys, inv = own
    inv = inv.ravel()
    m = np.zeros(off.size, bool)
    for i, k in enumerate(keys.tolist()):
        offs = only.get(k)
        if offs is not None and len(offs):
            sel = inv == i
            m[sel] = np.isin(off[sel], offs)
    return m


def _np(col) -> np.ndarray:
    return np.asarray(col.to_numpy() if isinstance(col, pa.ChunkedArray) else col.to_numpy(zero_copy_only=False))


def _isin(col, values: pa.Array) -> np.ndarray:
    """``col`` (a dictionary or plain string column) in ``values``, as a numpy mask; a dictionary
    is looked up entry by entry, then mapped through its indices."""
    parts = []
    for c in (col.chunks if isinstance(col, pa.ChunkedArray) else [col]):
        if pa.types.is_dictionary(c.type) and not c.null_count:
            hit = np.asarray(pc.fill_null(pc.is_in(c.dictionary, value_set=values), False)
                             .to_numpy(zero_copy_only=False), bool)
            parts.append(hit[c.indices.to_numpy(zero_copy_only=False)] if hit.size else np.zeros(len(c), bool))
        else:
            parts.append(np.asarray(pc.fill_null(pc.is_in(c, value_set=values), False)
                                    .to_numpy(zero_copy_only=False), bool))
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def _present(col) -> list:
    """The distinct values a (dictionary) column holds, not the entries of its dictionary."""
    out = set()
    for c in (col.chunks if isinstance(col, pa.ChunkedArray) else [col]):
        if not len(c):
            continue
        if pa.types.is_dictionary(c.type):
            d = c.dictionary
            if len(d) == 1 and c.null_count == 0:
                out.add(d[0].as_py())          # a constant column (the catalog version of a batch)
                continue
            if not c.null_count:
                used = np.flatnonzero(np.bincount(c.indices.to_numpy(zero_copy_only=False), minlength=len(d)))
                out.update(d.take(pa.array(used)).to_pylist())
                continue
            c = d.take(pc.unique(c.indices))
        out.update(pc.unique(c).to_pylist())
    out.discard(None)
    return list(out)


def _compact(t: pa.Table) -> pa.Table:
    """``t`` with dictionaries of only the values its rows use: a partition's share of a batch
    carries the whole batch's dictionaries (one entry per distinct value), which would be kept in
    memory and unified again at every window close.  The used entries are found by counting
    indices, not by hashing the values again."""
    cols = []
    for c in t.columns:
        if pa.types.is_dictionary(c.type) and sum(len(x.dictionary) for x in c.chunks) > len(c):
            c = pa.chunked_array([_compact_array(x) for x in c.chunks], c.type)
        cols.append(c)
    return pa.Table.from_arrays(cols, schema=t.schema)


def _compact_array(x: pa.DictionaryArray) -> pa.DictionaryArray:
    d = x.dictionary
    if len(d) <= len(x):
        return x
    if x.null_count:
        return x.dictionary_decode().dictionary_encode()
    idx = x.indices.to_numpy(zero_copy_only=False)
    used = np.flatnonzero(np.bincount(idx, minlength=len(d)))
    rank = np.zeros(len(d), np.int32)
    rank[used] = np.arange(used.size, dtype=np.int32)
    return pa.DictionaryArray.from_arrays(pa.array(rank[idx], x.type.index_type), d.take(pa.array(used)))


def _conform(t: pa.Table, schema: pa.Schema) -> pa.Table:
    """``t`` with exactly ``schema``'s columns and types (a column it lacks: nulls)."""
    cols = []
    for f in schema:
        if f.name in t.column_names:
            c = t.column(f.name)
            if c.type != f.type and pa.types.is_dictionary(f.type) and not pa.types.is_dictionary(c.type):
                c = c.dictionary_encode()     # e.g. binary(32), which no cast turns into a dictionary
            cols.append(c if c.type == f.type else c.cast(f.type))
        else:
            cols.append(pa.nulls(t.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _hour_of(d: Path) -> int:
    """The hour number (since the epoch) of a ``date=YYYY-MM-DD/hour=HH`` folder."""
    from datetime import datetime, timezone

    try:
        t = datetime.strptime(f"{d.parent.name[5:]} {d.name[5:]}", "%Y-%m-%d %H").replace(tzinfo=timezone.utc)
    except ValueError:
        return -1
    return int(t.timestamp()) // 3600
