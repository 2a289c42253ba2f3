"""Findings over a stored root, a chunk of event time at a time: what ``flowaudit audit`` runs
once its units are written, and what ``flowaudit findings ROOT`` runs over any root.

:func:`correlate_chunked` equals :func:`flowaudit.detect.findings.correlate_root` (one call over
every transfer, hit and message, the reference) but reads the evidence a window or a chunk of
windows at a time (:class:`WindowReader`), so memory follows the chunk, not the root; and where a
chunk has no transfer that can be flow-borne it reads only the exposing messages' hits.  On a
1M-message audit root (25.6 M hits) the one call peaked at 5.9 GB (benchmarks/HISTORY.md).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ..datasets import CHECKED, FINDINGS
from ..sinks.parquet import hour_dir
from . import findings as F
from .inventory import Inventory
from .windows import exposing, may_be_flow_borne, only_mask


def _rg_ranges(md, name: str, paths: list | None = None) -> list:
    """(min, max) of the top-level column ``name`` per row group (by its Parquet column path, which
    a nested column before it does not shift); None where there are no statistics (or no such
    column), False where every value is null.  ``paths``: the file's column paths, where the
    caller has them."""
    paths = paths or [md.schema.column(i).path for i in range(md.num_columns)]
    if name not in paths:
        return [None] * md.num_row_groups
    col = paths.index(name)
    out = []
    for i in range(md.num_row_groups):
        st = md.row_group(i).column(col).statistics
        if st is not None and st.null_count == md.row_group(i).num_rows:
            out.append(False)
        elif st is not None and st.has_min_max:
            out.append((st.min, st.max))
        else:
            out.append(None)
    return out


class _Group:
    """One row group as the reader keeps it: its rows of the wanted topics (``rows``, positions in
    the group), their key columns (``keys``: source, partition, offset, ts_ms) and, once a window
    needed them, every column of those rows (``whole``)."""
    __slots__ = ("path", "g", "max_ts", "rows", "keys", "rising", "whole")

    def __init__(self, path, g, max_ts, rows, keys, whole):
        self.path, self.g, self.max_ts, self.rows, self.keys, self.whole = path, g, max_ts, rows, keys, whole
        ts = keys.column("ts_ms")
        # record times that never fall (a partition's rows, most archives): a window is a slice,
        # found by bisection, not a filter that copies the rows
        self.rising = ts.null_count == 0 and bool(np.all(np.diff(ts.to_numpy()) >= 0))

    def window(self, lo_ms: int, hi_ms: int):
        """The rows of [lo_ms, hi_ms): a (start, length) slice of the kept rows, or a mask."""
        ts = self.keys.column("ts_ms")
        if self.rising:
            a = ts.to_numpy()
            i, j = np.searchsorted(a, lo_ms, "left"), np.searchsorted(a, hi_ms, "left")
            return int(i), int(j - i)
        return pc.and_(pc.greater_equal(ts, lo_ms), pc.less(ts, hi_ms)).fill_null(False)


def _latest_ms(files, topics) -> int | None:
    """The latest ``ts_ms`` of the rows of ``topics`` in ``files``: from the footers' row-group
    statistics where a group holds one topic (an output file holds one), read where not."""
    want = pa.array(sorted(topics), pa.string())
    best = None
    for path in files:
        pf = pq.ParquetFile(path, pre_buffer=False, **CHECKED)
        names = pf.schema_arrow.names
        if "ts_ms" not in names or "source" not in names:
            continue
        md = pf.metadata
        for g, (r, s) in enumerate(zip(_rg_ranges(md, "ts_ms"), _rg_ranges(md, "source"))):
            if r is False or s is False:
                continue
            if r is None or s is None or s[0] != s[1]:
                t = pf.read_row_group(g, columns=["ts_ms", "source"])
                m = pc.max(t.column("ts_ms").filter(_in_set(t.column("source"), want))).as_py()
            else:
                m = r[1] if s[0] in topics else None
            if m is not None and (best is None or m > best):
                best = m
    return best


_KEYS = ("source", "partition", "offset", "ts_ms")


def _boxes(md) -> list:
    """Per row group, from the footer: ((source min, max), (partition min, max), (offset min, max)),
    or None where one of those statistics is missing -- what :func:`_may_hold` needs to leave the
    group unread."""
    paths = [md.schema.column(i).path for i in range(md.num_columns)]
    cols = [_rg_ranges(md, n, paths) for n in ("source", "partition", "offset")]
    return [box if all(isinstance(x, tuple) for x in box) else None for box in zip(*cols)]


def _wanted(only: dict) -> list:
    """``only`` (``topic+partition`` -> sorted offsets) as (topic, partition or None, offsets)."""
    out = []
    for key, offs in only.items():
        topic, _, part = key.rpartition("+")
        try:
            out.append((topic, int(part), offs))
        except ValueError:          # no partition: any group of the topic may hold it
            out.append((key, None, offs))
    return out


def _may_hold(box, wanted: list) -> bool:
    """Whether a row group with statistics ``box`` (:func:`_boxes`) can hold a message of
    ``wanted`` (:func:`_wanted`): its topic, partition and an offset inside the group's ranges."""
    (smin, smax), (pmin, pmax), (omin, omax) = box
    for topic, part, offs in wanted:
        if not smin <= topic <= smax or (part is not None and not pmin <= part <= pmax):
            continue
        if part is None:
            return True
        i = int(np.searchsorted(offs, omin))
        if i < offs.size and offs[i] <= omax:
            return True
    return False


def _pick(t, sel):
    return t.slice(*sel) if isinstance(sel, tuple) else t.filter(sel)


class WindowReader:
    """The rows of one dataset, a window of record time at a time, for windows that move forward:
    rows whose ``source`` is in ``topics`` and ``ts_ms`` in [lo_ms, hi_ms), columns ``cols`` (those
    the first file has), in file and row order (None when there is none) -- what a dataset scan
    with that filter returns.  ``read(..., only=...)``: just the rows of those messages.

    Only the hour folders of the window are listed, and only the row groups whose ``ts_ms``
    statistics meet the window are read (a row group spans several windows: it is read once and
    kept, topic-filtered, until a window starts after its last time).  With ``only``, a row group's
    key columns are read first, and its other columns only when one of those messages is in it.
    Reads go through
    :class:`pyarrow.parquet.ParquetFile`, whose buffers come from Python's default pool (the one
    :func:`flowaudit.memory.arrow_pool` chose): a dataset scan takes Arrow's own default, fixed when pyarrow was
    imported -- mimalloc, unless the pool was chosen before (``flowaudit audit`` does), which kept
    what its reader threads freed, so that the driver's RSS grew with every window (README,
    Performance)."""

    def __init__(self, base: Path, cols, topics):
        self.base, self.cols = base, list(cols)
        self.topics = pa.array(sorted(topics), pa.string())
        self.names = None                # the columns returned (the first file's)
        self.ranges: dict = {}           # path -> ts_ms (min, max) per row group (footers only)
        self.boxes: dict = {}            # path -> provenance ranges per row group (_boxes)
        self.kept: dict = {}             # (path, row group) -> _Group

    def read(self, lo_ms: int, hi_ms: int, only: dict | None = None):
        """The window's rows; ``only`` (``topic+partition`` -> sorted offsets,
        :func:`~flowaudit.detect.windows.exposing`): just the rows of those messages (a finding
        counts, and names the catalogue versions of, its own evidence hits only)."""
        self.kept = {k: v for k, v in self.kept.items() if v.max_ts >= lo_ms}   # windows only move forward
        parts = []
        for grp in self._groups(lo_ms, hi_ms, whole=only is None, only=only):
            sel = grp.window(lo_ms, hi_ms)
            if only is None:
                t = _pick(grp.whole, sel)
            else:
                m = only_mask(_pick(grp.keys, sel), only)
                if not m.any():
                    continue
                t = _pick(self._whole(grp), sel).filter(pa.array(m))
            if t.num_rows:
                parts.append(t.select([c for c in self.names if c in t.column_names]))
        return _concat(parts)

    def _groups(self, lo_ms: int, hi_ms: int, whole: bool, only: dict | None = None):
        """The kept or newly read row groups that can hold rows of [lo_ms, hi_ms), in file order;
        with ``only``, not those whose footer rules out all of its messages."""
        wanted = _wanted(only) if only is not None else None
        for h in range(lo_ms // 3_600_000, -(-hi_ms // 3_600_000)):
            # the sink files a row under its record hour (sinks.parquet.hour_dir)
            for path in sorted((self.base / hour_dir(h)).glob("*.parquet")):
                pf = None
                if path not in self.ranges:
                    pf = pq.ParquetFile(path, pre_buffer=False, **CHECKED)
                    names = pf.schema_arrow.names
                    if self.names is None:
                        self.names = [c for c in self.cols if c in names]
                    ok = "ts_ms" in names and "source" in names
                    md = pf.metadata
                    self.ranges[path] = _rg_ranges(md, "ts_ms") if ok else []
                    self.boxes[path] = _boxes(md) if ok else []
                for g, r in enumerate(self.ranges[path]):
                    if r is False or (r is not None and (r[1] < lo_ms or r[0] >= hi_ms)):
                        continue
                    grp = self.kept.get((path, g))
                    box = self.boxes[path][g] if grp is None and wanted is not None else None
                    if box is not None and not _may_hold(box, wanted):
                        continue
                    if grp is None:
                        if pf is None:
                            pf = pq.ParquetFile(path, pre_buffer=False, **CHECKED)
                        have = pf.schema_arrow.names
                        t = pf.read_row_group(g, columns=self._columns(have) if whole else self._keys(have))
                        rows = np.flatnonzero(_in_set(t.column("source"), self.topics).fill_null(False).to_numpy())
                        if rows.size < t.num_rows:
                            t = t.take(rows)
                        grp = self.kept[(path, g)] = _Group(path, g, r[1] if r else 2**63 - 1, rows, t,
                                                            t if whole else None)
                    elif whole:
                        self._whole(grp)
                    yield grp

    def _keys(self, have) -> list[str]:
        return [c for c in _KEYS if c in have]

    def _columns(self, have) -> list[str]:
        return list(dict.fromkeys([c for c in self.names if c in have] + ["ts_ms", "source"]))

    def _whole(self, grp: _Group):
        """Every wanted column of the group's kept rows (read once)."""
        if grp.whole is None:
            pf = pq.ParquetFile(grp.path, pre_buffer=False, **CHECKED)
            t = pf.read_row_group(grp.g, columns=self._columns(pf.schema_arrow.names))
            grp.whole = t.take(grp.rows) if grp.rows.size < t.num_rows else t
        return grp.whole


def _in_set(col, values):
    """``col`` (a chunked string or dictionary column) is in ``values``, computed on each chunk's
    dictionary rather than on the decoded strings."""
    out = []
    for ch in col.chunks:
        if pa.types.is_dictionary(ch.type):
            m = pc.is_in(ch.dictionary.cast(pa.string()), value_set=values)
            out.append(m.take(ch.indices))
        else:
            out.append(pc.is_in(ch.cast(pa.string()), value_set=values))
    return pa.chunked_array(out, pa.bool_())


_MERGE_ROWS = 1_000_000   # evidence rows of chunks assessed in one call, at most (and one chunk's more)


def _concat(tables: list):
    """The tables end to end (None left out; None when there is none)."""
    tables = [t for t in tables if t is not None]
    if not tables:
        return None
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")


def correlate_chunked(root: str | Path, *, window_ns: int, lookback_ns: int = 0, inventory=None, model=None,
                      chunk_ns: int = 0, threads: int = 1):
    """The findings of everything under ``root``, equal to ``findings.correlate_root`` but with
    the hits and messages read one chunk of event time (whole windows; by default one window) at
    a time, from the hour folders that hold it, so memory follows the chunk, not the archive.
    Transfers (rare events) are read once.

    Each chunk is one ``correlate`` call with the transfers of its windows, the hits of
    [chunk start - look-back, chunk end), the findings of the window just before it (``previous``:
    a series that goes on is ``ongoing``, one that stopped is returned again ``closed``) and the
    chunk end as the watermark; the last chunk gets the watermark a single call would use.  A
    finding returned again replaces its earlier row (same ``finding_id``).

    The part of each call that needs no other chunk (reading the evidence, aggregating,
    assessing: :func:`~flowaudit.detect.findings.assessed`) runs on ``threads`` threads, each over
    a run of consecutive chunks with a reader of its own; the statuses, which chain each chunk to
    the one before, follow in order on this thread (:func:`~flowaudit.detect.findings.finish`).
    Consecutive chunks with no transfer that can be flow-borne (their evidence: the exposing
    messages' own rows, which no other chunk shares) are assessed in one call, up to
    ``_MERGE_ROWS`` rows of evidence: a finding's rows, catalogue versions included, follow from
    its own evidence, so the call gives each chunk what its own call would.
    """
    root = Path(root)
    inventory = inventory or Inventory()
    transfers = F._read(root, "transfers", list(F._T_COLS))
    if transfers is None or transfers.num_rows == 0:
        return FINDINGS.empty_table()
    t_ns = pc.coalesce(transfers.column("time_ns"), pc.multiply(transfers.column("ts_ms"), 1_000_000))
    rule = transfers.column("rule").cast(pa.string())
    t = np.asarray(pc.if_else(pc.is_in(rule, pa.array(list(F.NOT_FINDINGS))), None, t_ns).fill_null(-1)
                   .to_numpy(zero_copy_only=False), np.int64)
    sw = transfers.column("seen_where").cast(pa.string())
    topics = set(pc.unique(transfers.filter(pc.is_in(sw, pa.array(F.MESSAGE_WHERE))).column("source")
                           .cast(pa.string())).to_pylist())
    topics |= {x for a in inventory.applications for x in a.topics}
    topics.discard(None)
    topic_f = ds.field("source").isin(sorted(topics)) if topics else None

    def present(name) -> bool:
        return topic_f is not None and (root / f"dataset={name}").is_dir()

    # the single call's watermark: the latest transfer or evidence time
    wm = int(t.max())
    base = root / "dataset=hits"
    if topic_f is not None and base.is_dir():
        m = _latest_ms(ds.dataset(base, format="parquet", partitioning="hive").files, topics)
        if m is not None:
            wm = max(wm, m * 1_000_000)
    chunk = max(window_ns, (chunk_ns // window_ns) * window_ns)   # 0: one window
    known = t >= 0
    if not known.any():
        starts = []
    else:
        first, last = int(t[known].min()) // chunk * chunk, int(t[known].max()) // chunk * chunk
        starts = list(range(first, last + chunk, chunk))
    chunks = [(k, a, transfers.filter(pa.array(known & (t >= a) & (t < a + chunk)))) for k, a in enumerate(starts)]
    busy = [c for c in chunks if c[2].num_rows]   # a chunk with no transfer has nothing to assess

    def assess(run):
        """The assessed findings of consecutive chunks, with this run's own readers."""
        readers = {name: WindowReader(root / f"dataset={name}", cols, topics) if present(name) else None
                   for name, cols in (("hits", F._H_COLS), ("messages", F._M_COLS))}
        got = {}
        pending: list = []       # (k, a, T, evidence) of chunks that take their exposing messages' rows only
        held = 0                 # their evidence rows

        def flush():
            """One ``assessed`` call for the pending chunks (their evidence is each exposing
            message's own rows, so chunks do not share any), its rows handed back per chunk."""
            nonlocal held
            if not pending:
                return
            rows = F.assessed(_concat([p[2] for p in pending]), *(_concat([p[3][n] for p in pending])
                                                                   for n in ("hits", "messages")),
                              window_ns=window_ns, lookback_ns=lookback_ns, inventory=inventory, model=model)
            at = {a: k for k, a, _T, _ev in pending}
            for k in at.values():
                got[k] = []
            for r in rows:
                got[at[r["window_start"] // chunk * chunk]].append(r)
            pending.clear()
            held = 0

        for k, a, T in run:
            lo_ms, hi_ms = (a - lookback_ns) // 1_000_000, -(-(a + chunk) // 1_000_000)
            # the messages count only where they are themselves transfers; the hits too, unless a
            # flow can make a flow-borne finding (that takes every hit of its host's topics)
            mine = exposing(T)
            only = {"hits": None if may_be_flow_borne(T) else mine, "messages": mine}
            ev = {name: None if r is None or only[name] == {} else r.read(lo_ms, hi_ms, only[name])
                  for name, r in readers.items()}
            if only["hits"] is None:
                flush()
                got[k] = F.assessed(T, ev["hits"], ev["messages"], window_ns=window_ns, lookback_ns=lookback_ns,
                                    inventory=inventory, model=model)
                continue
            # small evidence: assessed together with the chunks next to it (a polars query has a
            # fixed cost, which 72 windows of a 1M-message audit paid once each)
            pending.append((k, a, T, ev))
            held += sum(x.num_rows for x in ev.values() if x is not None)
            if held > _MERGE_ROWS:
                flush()
        flush()
        return got

    runs = max(1, min(len(busy), 2 * threads if threads > 1 else 1))
    cuts = [len(busy) * i // runs for i in range(runs + 1)]
    parts = [busy[cuts[i]:cuts[i + 1]] for i in range(runs)]
    rows_of: dict = {}   # chunk -> its assessed findings
    if threads > 1 and runs > 1:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="findings") as pool:
            for got in pool.map(assess, parts):
                rows_of.update(got)
    else:
        for part in parts:
            rows_of.update(assess(part))
    found: dict = {}
    previous = None
    for k, a, T in chunks:
        b = a + chunk
        if T.num_rows == 0 and (previous is None or previous.num_rows == 0):
            previous = None
            continue
        out = F.finish(rows_of.pop(k, []), previous, window_ns=window_ns,
                       watermark_ns=wm if k == len(starts) - 1 else b, model=model)
        for r in out.to_pylist():
            found[r["finding_id"]] = r
        previous = out.filter(pc.equal(out.column("window_end_ns"), b)) if out.num_rows else None
    if (~known).any():   # transfers without a time: one call with the evidence without a time
        ev = {name: F._read(root, name, list(cols), topic_f & ds.field("ts_ms").is_null()) if present(name) else None
              for name, cols in (("hits", F._H_COLS), ("messages", F._M_COLS))}
        out = F.correlate(transfers.filter(pa.array(~known)), ev["hits"], ev["messages"], window_ns=window_ns,
                          lookback_ns=lookback_ns, inventory=inventory, model=model)
        for r in out.to_pylist():
            found.setdefault(r["finding_id"], r)
    if not found:
        return FINDINGS.empty_table()
    res = pa.Table.from_pylist(list(found.values()), schema=FINDINGS)
    return res.take(pc.sort_indices(res, [("window_start_ns", "ascending"), ("finding_id", "ascending")]))
