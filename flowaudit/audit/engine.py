"""The audit driver: inputs -> units -> an engine -> findings -> manifest (and the report).

Engines run the same :func:`~flowaudit.audit.work.process_unit` over units:

``polars``  in this process, one unit per thread (bounded memory: a unit is whole row groups,
            at most ``unit_rows`` rows and 16 MiB); the findings correlation is polars, a window
            of event time at a time (:func:`correlate_chunked`).
``dask``    tasks on Dask distributed: a ``LocalCluster`` of ``workers`` processes, or an existing
            cluster at ``scheduler`` (every worker needs flowaudit installed, a warm numba cache,
            and the inputs and output root at the same paths).

Then the findings of the whole output root are correlated once, on the driver, and written with
deterministic names; a manifest (inputs, rows, versions, command, engine) lands in
``ROOT/_audit/manifest.json``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import orjson

from ..memory import trim
from ..sinks.parquet import fsync_dir, hour_dir, makedirs, replace_atomic
from . import inputs as _in
from .work import Spec, marker_path, process_unit

FLOW_WHERE = ("NETFLOW_DST", "NETFLOW_SRC")     # transfers a retro-hunt recomputes from the flows
COPIED = ("messages", "hits", "quarantine")


@dataclass
class Options:
    inputs: list
    out: str
    engine: str = "polars"
    workers: int = 2
    threads: int = 1                    # polars engine: units in parallel in this process
    scheduler: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    mapping: dict = field(default_factory=dict)
    formats: tuple = ()
    dns_files: tuple = ()               # Zeek dns.log JSON lines
    on_bad_input: str = "fail"          # fail or skip
    unit_rows: int = _in.DEFAULT_UNIT_ROWS
    window_s: int = 300
    lookback_s: int = 0
    command: list = field(default_factory=list)


class AuditError(RuntimeError):
    pass


# ------------------------------------------------------------------------------ progress
class Progress:
    """rows/s, MB/s and ETA on a terminal (redrawn at most 5 times a second); silent in a pipe."""

    def __init__(self, total_rows: int, stream=None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total = max(total_rows, 1)
        self.rows = self.bytes = 0
        self.t0 = time.monotonic()
        self._last = 0.0

    def add(self, rows: int, nbytes: int) -> None:
        self.rows += rows
        self.bytes += nbytes
        now = time.monotonic()
        if self.tty and (now - self._last > 0.2 or self.rows >= self.total):
            self._last = now
            el = max(now - self.t0, 1e-9)
            rate = self.rows / el
            eta = (self.total - self.rows) / rate if rate > 0 else 0
            w = 30
            k = int(w * min(self.rows / self.total, 1.0))
            self.stream.write(f"\r[{'#' * k}{'.' * (w - k)}] {self.rows:,}/{self.total:,} rows  {rate:,.0f} rows/s  "
                              f"{self.bytes / el / 1e6:,.1f} MB/s  ETA {eta:,.0f} s ")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# ------------------------------------------------------------------------------ versions
def _sha256_files(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(map(str, paths)):
        h.update(p.encode().rsplit(b"/", 1)[-1])
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def versions(settings) -> dict:
    """Catalogue, watchlist, policy, severity model and schema versions, each with a hash."""
    from .. import catalog as _cat
    from .. import schemas
    from ..datasets import SCHEMA_VERSION
    from ..detect import severity as _sev
    from ..detect import watchlist as _wl

    out: dict = {"schema": {"version": SCHEMA_VERSION}}
    cat = _cat.load()
    out["catalog"] = {"version": cat.version, "sha256": _sha256_files(sorted(schemas.path("catalog").glob("*.toml")))}
    e = settings.egress
    wl = _wl.Watchlist(e.watchlist_dir or None).current
    out["watchlist"] = {"version": wl.version, "files": [str(f) for f in wl.files],
                        "sha256": _sha256_files(wl.files)}
    if e.policy_file:
        from ..detect import zones as _zones
        pol = _zones.load(e.policy_file)
        out["policy"] = {"version": getattr(pol, "version", None), "file": e.policy_file,
                         "sha256": _sha256_files([e.policy_file])}
    else:
        out["policy"] = {"version": None, "file": None, "sha256": None}
    model = _sev.load(settings.findings.severity_model or None)
    sev_files = [schemas.path("severity.toml")] + ([settings.findings.severity_model]
                                                    if settings.findings.severity_model else [])
    out["severity_model"] = {"version": model.version, "sha256": _sha256_files(sev_files) if sev_files else None}
    return out


# ------------------------------------------------------------------------------ discovery
@dataclass
class Plan:
    inputs: list = field(default_factory=list)       # manifest rows
    units: list = field(default_factory=list)
    copies: list = field(default_factory=list)       # (src path, dst relative path, dataset)
    pruned_rows: int = 0
    errors: list = field(default_factory=list)


def _bad(plan: Plan, opts: Options, path, exc: Exception) -> None:
    msg = str(exc)
    if opts.on_bad_input == "fail":
        raise AuditError(msg)
    plan.inputs.append({"path": str(path), "layout": None, "rows": 0, "bytes": _size(path), "status": "skipped",
                        "error": msg})
    plan.errors.append(msg)
    print(f"flowaudit audit: skipped: {msg}", file=sys.stderr)


def _size(path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def plan(opts: Options) -> Plan:
    p = Plan()
    out = Path(opts.out).resolve()
    for arg in map(Path, opts.inputs):
        if not arg.exists():
            raise AuditError(f"{arg}: no such file or folder")
        if arg.resolve() == out:
            raise AuditError(f"{arg}: the input is the output root; audit into another --out")
        if _in.is_output_root(arg):
            _plan_root(p, opts, arg)
            continue
        if (arg / "metadata").is_dir() and any((arg / "metadata").glob("*.metadata.json")):
            print(f"flowaudit audit: {arg}: an Iceberg table: reading its Parquet data files directly "
                  f"(files a later snapshot removed are read too)", file=sys.stderr)
        files = _in.parquet_files(arg)
        if not files:
            raise AuditError(f"{arg}: no Parquet files")
        for f in files:
            _plan_file(p, opts, f)
    return p


def _plan_file(p: Plan, opts: Options, f: Path, mapping: dict | None = None) -> None:
    if not _in.hive_in_range(_in._hive(f), opts.since_ms, opts.until_ms):
        p.inputs.append({"path": str(f), "layout": None, "rows": 0, "bytes": _size(f), "status": "pruned",
                         "error": None})
        return
    try:
        inp = _in.open_input(f, opts.mapping if mapping is None else mapping)
    except _in.InputError as exc:
        _bad(p, opts, f, exc)
        return
    units, pruned = _in.units_of(inp, opts.since_ms, opts.until_ms, opts.unit_rows)
    p.pruned_rows += pruned
    p.units.extend(units)
    p.inputs.append({"path": str(f), "layout": inp.layout, "rows": inp.rows, "bytes": inp.size, "status": "ok",
                     "error": None, "rows_pruned": pruned})


def _plan_root(p: Plan, opts: Options, root: Path) -> None:
    """Retro-hunt: re-match the stored flows with today's watchlist and policy; carry the
    classified datasets over unchanged, and the transfers the flows cannot reproduce."""
    for ds in COPIED + ("transfers",):
        base = root / f"dataset={ds}"
        for f in sorted(base.rglob("*.parquet")) if base.is_dir() else []:
            if any(x.startswith(".") for x in f.relative_to(base).parts):
                continue
            if not _in.hive_in_range(_in._hive(f), opts.since_ms, opts.until_ms):
                continue
            p.copies.append((f, str(f.relative_to(root)), ds))
    base = root / "dataset=flows"
    for f in sorted(base.rglob("*.parquet")) if base.is_dir() else []:
        if not any(x.startswith(".") for x in f.relative_to(base).parts):
            _plan_file(p, opts, f, mapping={})
    p.inputs.append({"path": str(root), "layout": "flowaudit-root", "rows": None, "bytes": None, "status": "ok",
                     "error": None})


def _copy(src: Path, dst: Path, ds: str) -> None:
    """Hard-link (or copy) a carried-over file; transfers lose their flow-matched rows."""
    makedirs(dst.parent)
    if dst.exists():
        dst.unlink()
    if ds == "transfers":
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from ..datasets import TRANSFERS
        from .work import write_file

        t = pq.read_table(src, schema=TRANSFERS)
        t = t.filter(pc.invert(pc.is_in(t.column("seen_where").cast("string"), value_set=pa.array(list(FLOW_WHERE)))))
        if t.num_rows:
            write_file(t, dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    fsync_dir(dst.parent)


# ------------------------------------------------------------------------------ engines
def _run_polars(units, spec, on_result, on_error, threads: int = 1) -> None:
    """Units on ``threads`` threads of this process (kernels and Parquet release the GIL); the
    results are handled here, on the calling thread, as they complete."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="audit") as pool:
        it = iter(units)
        running = {}
        try:
            while True:
                while len(running) < max(1, threads):   # at most one unit per thread in memory
                    u = next(it, None)
                    if u is None:
                        break
                    running[pool.submit(process_unit, u, spec)] = u
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    u = running.pop(f)
                    try:
                        stats = f.result()
                    except Exception as exc:  # noqa: BLE001 - on_error re-raises what is not a bad input
                        on_error(u, exc)
                        continue
                    on_result(u, stats)
        except BaseException:
            for f in running:
                f.cancel()
            raise


def _run_dask(units, spec, workers: int, scheduler: str | None, on_result, on_error) -> dict:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise AuditError("--engine dask needs Dask distributed: pip install 'flowaudit[dask]'") from None
    for name in ("distributed", "distributed.nanny", "distributed.scheduler", "distributed.worker"):
        logging.getLogger(name).setLevel(logging.ERROR)   # the summary and errors say what matters
    cluster = None
    if scheduler:
        client = Client(scheduler, timeout="30s")
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        sched = client.scheduler_info(**({"n_workers": -1} if _takes_n(client) else {}))
        info = {"scheduler": scheduler or cluster.scheduler_address, "workers": len(sched["workers"])}
        by_key = {}
        futs = []
        for u in units:
            f = client.submit(process_unit, u, spec, pure=False, key=f"audit-{u.uid}")
            by_key[f.key] = u
            futs.append(f)
        try:
            for f in as_completed(futs):
                try:
                    stats = f.result()
                except Exception as exc:  # noqa: BLE001 - on_error re-raises what is not a bad input
                    on_error(by_key[f.key], exc)
                    continue
                on_result(by_key[f.key], stats)
        except BaseException:
            client.cancel(futs)
            raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return info


def _takes_n(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def _dns_answers(out: Path, spec: Spec) -> None:
    """The DNS_ANSWER transfers of the --dns logs in [since, until) (the workers read the same
    answers to name the flows' addresses), once per run, under a name derived from the logs."""
    import numpy as np
    import pyarrow as pa

    from ..detect import watchlist
    from ..detect.egress import EgressDetector
    from .work import _in_range, write_tables

    h = hashlib.sha256()
    for f in spec.dns_files:
        h.update(Path(f).read_bytes())
    det = EgressDetector(watchlist.Watchlist(spec.watchlist_dir or None), spec.policy_file or None,
                         dns_max_entries=spec.dns_max_entries)
    for f in spec.dns_files:
        with open(f, "rb") as fh:
            t = det.observe_dns(fh, source=f)
        ts = np.asarray(t.column("ts_ms").fill_null(-1).to_numpy(zero_copy_only=False), np.int64)
        keep = _in_range(ts, spec)
        if keep is not None:
            t, ts = t.filter(pa.array(keep)), ts[keep]
        if t.num_rows:
            write_tables(out, f"audit-dns-{Path(f).stem[:40]}-{h.hexdigest()[:16]}", {"transfers": (t, ts)}, spec)


# ------------------------------------------------------------------------------ findings


def _rg_ranges(md, col: int) -> list:
    """(min, max) of column ``col`` per row group; None where there are no statistics, False where
    every value is null."""
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
    the group), their key columns (``keys``: source, partition, offset, ts_ms and the catalog
    version where the reader returns one) and, once a window needed them, every column of those rows
    (``whole``)."""
    __slots__ = ("path", "g", "max_ts", "rows", "keys", "rising", "whole")

    def __init__(self, path, g, max_ts, rows, keys, whole):
        import numpy as np

        self.path, self.g, self.max_ts, self.rows, self.keys, self.whole = path, g, max_ts, rows, keys, whole
        ts = keys.column("ts_ms")
        # record times that never fall (a partition's rows, most archives): a window is a slice,
        # found by bisection, not a filter that copies the rows
        self.rising = ts.null_count == 0 and bool(np.all(np.diff(ts.to_numpy()) >= 0))

    def window(self, lo_ms: int, hi_ms: int):
        """The rows of [lo_ms, hi_ms): a (start, length) slice of the kept rows, or a mask."""
        import numpy as np
        import pyarrow.compute as pc

        ts = self.keys.column("ts_ms")
        if self.rising:
            a = ts.to_numpy()
            i, j = np.searchsorted(a, lo_ms, "left"), np.searchsorted(a, hi_ms, "left")
            return int(i), int(j - i)
        return pc.and_(pc.greater_equal(ts, lo_ms), pc.less(ts, hi_ms)).fill_null(False)


def _latest_ms(files, topics) -> int | None:
    """The latest ``ts_ms`` of the rows of ``topics`` in ``files``: from the footers' row-group
    statistics where a group holds one topic (an output file holds one), read where not."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    want = pa.array(sorted(topics), pa.string())
    best = None
    for path in files:
        pf = pq.ParquetFile(path, pre_buffer=False)
        names = pf.schema_arrow.names
        if "ts_ms" not in names or "source" not in names:
            continue
        md = pf.metadata
        for g, (r, s) in enumerate(zip(_rg_ranges(md, names.index("ts_ms")), _rg_ranges(md, names.index("source")))):
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
        import pyarrow as pa

        self.base, self.cols = base, list(cols)
        self.topics = pa.array(sorted(topics), pa.string())
        self.names = None                # the columns returned (the first file's)
        self.ranges: dict = {}           # path -> ts_ms (min, max) per row group (footers only)
        self.kept: dict = {}             # (path, row group) -> _Group

    def read(self, lo_ms: int, hi_ms: int, only: dict | None = None):
        """The window's rows; ``only`` (``topic+partition`` -> sorted offsets,
        :func:`~flowaudit.detect.windows.exposing`): just the rows of those messages.  Where the
        dataset has a ``catalog_version`` and those rows do not show every version the window's
        rows of the topics have, every row is returned, as without ``only`` (the findings name
        the versions of the hits they were read with)."""
        import pyarrow as pa

        from ..detect.windows import _present, only_mask

        self.kept = {k: v for k, v in self.kept.items() if v.max_ts >= lo_ms}   # windows only move forward
        parts, shown, got = [], set(), set()
        for grp in self._groups(lo_ms, hi_ms, whole=only is None):
            sel = grp.window(lo_ms, hi_ms)
            if only is None:
                t = _pick(grp.whole, sel)
            else:
                k = _pick(grp.keys, sel)
                versions = "catalog_version" in self.names and "catalog_version" in k.column_names
                if versions:
                    shown.update(_present(k.column("catalog_version")))
                m = only_mask(k, only)
                if not m.any():
                    continue
                t = _pick(self._whole(grp), sel).filter(pa.array(m))
                if versions:
                    got.update(_present(t.column("catalog_version")))
            if t.num_rows:
                parts.append(t.select([c for c in self.names if c in t.column_names]))
        if not shown <= got:
            return self.read(lo_ms, hi_ms)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="default")

    def _groups(self, lo_ms: int, hi_ms: int, whole: bool):
        """The kept or newly read row groups that can hold rows of [lo_ms, hi_ms), in file order."""
        import numpy as np
        import pyarrow.parquet as pq

        for h in range(lo_ms // 3_600_000, -(-hi_ms // 3_600_000)):
            # the sink files a row under its record hour (sinks.parquet.hour_dir)
            for path in sorted((self.base / hour_dir(h)).glob("*.parquet")):
                pf = None
                if path not in self.ranges:
                    pf = pq.ParquetFile(path, pre_buffer=False)
                    names = pf.schema_arrow.names
                    if self.names is None:
                        self.names = [c for c in self.cols if c in names]
                    ok = "ts_ms" in names and "source" in names
                    self.ranges[path] = _rg_ranges(pf.metadata, names.index("ts_ms")) if ok else []
                for g, r in enumerate(self.ranges[path]):
                    if r is False or (r is not None and (r[1] < lo_ms or r[0] >= hi_ms)):
                        continue
                    grp = self.kept.get((path, g))
                    if grp is None:
                        if pf is None:
                            pf = pq.ParquetFile(path, pre_buffer=False)
                        have = pf.schema_arrow.names
                        t = pf.read_row_group(g, columns=self._columns(have) if whole else self._keys(have))
                        rows = np.flatnonzero(_in_set(t.column("source"), self.topics).to_numpy())
                        if rows.size < t.num_rows:
                            t = t.take(rows)
                        grp = self.kept[(path, g)] = _Group(path, g, r[1] if r else 2**63 - 1, rows, t,
                                                            t if whole else None)
                    elif whole:
                        self._whole(grp)
                    yield grp

    def _keys(self, have) -> list[str]:
        """The key columns, and the catalog version where the reader returns it."""
        return [c for c in _KEYS if c in have] + [c for c in ("catalog_version",) if c in have and c in self.names]

    def _columns(self, have) -> list[str]:
        return list(dict.fromkeys([c for c in self.names if c in have] + ["ts_ms", "source"]))

    def _whole(self, grp: _Group):
        """Every wanted column of the group's kept rows (read once)."""
        import pyarrow.parquet as pq

        if grp.whole is None:
            pf = pq.ParquetFile(grp.path, pre_buffer=False)
            t = pf.read_row_group(grp.g, columns=self._columns(pf.schema_arrow.names))
            grp.whole = t.take(grp.rows) if grp.rows.size < t.num_rows else t
        return grp.whole


def _in_set(col, values):
    """``col`` (a chunked string or dictionary column) is in ``values``, computed on each chunk's
    dictionary rather than on the decoded strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = []
    for ch in col.chunks:
        if pa.types.is_dictionary(ch.type):
            m = pc.is_in(ch.dictionary.cast(pa.string()), value_set=values)
            out.append(m.take(ch.indices))
        else:
            out.append(pc.is_in(ch.cast(pa.string()), value_set=values))
    return pa.chunked_array(out, pa.bool_())


def correlate_chunked(root: Path, *, window_ns: int, lookback_ns: int = 0, inventory=None, model=None,
                      chunk_ns: int = 0, threads: int = 1):
    """The findings of everything under ``root``, equal to ``findings.correlate_root`` but with
    the hits and messages read one chunk of event time (whole windows; by default one window) at
    a time, from the hour folders that hold it, so memory follows the chunk, not the archive.  Transfers (rare events) are read once.

    Each chunk is one ``correlate`` call with the transfers of its windows, the hits of
    [chunk start - look-back, chunk end), the findings of the window just before it (``previous``:
    a series that goes on is ``ongoing``, one that stopped is returned again ``closed``) and the
    chunk end as the watermark; the last chunk gets the watermark a single call would use.  A
    finding returned again replaces its earlier row (same ``finding_id``).

    The part of each call that needs no other chunk (reading the evidence, aggregating,
    assessing: :func:`~flowaudit.detect.findings.assessed`) runs on ``threads`` threads, each over
    a run of consecutive chunks with a reader of its own; the statuses, which chain each chunk to
    the one before, follow in order on this thread (:func:`~flowaudit.detect.findings.finish`).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from ..datasets import FINDINGS
    from ..detect import findings as F
    from ..detect.windows import exposing, may_be_flow_borne

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
        for k, a, T in run:
            lo_ms, hi_ms = (a - lookback_ns) // 1_000_000, -(-(a + chunk) // 1_000_000)
            # the messages count only where they are themselves transfers; the hits too, unless a
            # flow can make a flow-borne finding (that takes every hit of its host's topics)
            mine = exposing(T)
            only = {"hits": None if may_be_flow_borne(T) else mine, "messages": mine}
            ev = {name: None if r is None or only[name] == {} else r.read(lo_ms, hi_ms, only[name])
                  for name, r in readers.items()}
            got[k] = F.assessed(T, ev["hits"], ev["messages"], window_ns=window_ns, lookback_ns=lookback_ns,
                                inventory=inventory, model=model)
        return got

    runs = max(1, min(len(busy), 2 * threads if threads > 1 else 1))
    cuts = [len(busy) * i // runs for i in range(runs + 1)]
    parts = [busy[cuts[i]:cuts[i + 1]] for i in range(runs)]
    rows_of: dict = {}   # chunk -> its assessed findings
    if threads > 1 and runs > 1:
        from concurrent.futures import ThreadPoolExecutor

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


# ------------------------------------------------------------------------------ the audit
def run(opts: Options, settings, echo=print) -> dict:
    """Run the audit; returns the manifest (also written to ROOT/_audit/manifest.json)."""
    from ..config import hmac_key
    from ..detect import severity as _sev
    from ..detect.findings import write_findings
    from ..detect.inventory import load as load_inventory

    started = datetime.now(timezone.utc)
    out = Path(opts.out)
    makedirs(out)
    key, _src = hmac_key(settings, out)
    p = plan(opts)
    e = settings.egress
    spec = Spec(out=str(out.resolve()), key=key, raw=settings.sink.raw_values, egress=e.enabled,
                watchlist_dir=e.watchlist_dir or "", policy_file=e.policy_file or "",
                dns_max_entries=e.dns_max_entries, formats=tuple(opts.formats),
                dns_files=tuple(str(Path(f).resolve()) for f in opts.dns_files), since_ms=opts.since_ms,
                until_ms=opts.until_ms, max_message_bytes=settings.kafka.max_message_bytes,
                compression=settings.sink.compression, row_group_size=settings.sink.row_group_size)
    for src, rel, ds in p.copies:
        _copy(src, out / rel, ds)
    if spec.dns_files and spec.egress:
        _dns_answers(out, spec)
    done, pending = [], []
    for u in p.units:
        m = marker_path(out, u.uid)
        if m.exists():
            try:
                done.append(orjson.loads(m.read_bytes()))
                continue
            except orjson.JSONDecodeError:
                m.unlink()
        pending.append(u)
    prog = Progress(sum(u.rows for u in pending))
    results = list(done)

    def on_result(u, stats):
        results.append(stats)
        prog.add(stats["rows"], stats["bytes"])

    def on_error(u, exc):
        if not _is_data_error(exc):
            raise exc
        msg = str(exc)
        for row in p.inputs:
            if row["path"] == str(u.input.path):
                row["status"], row["error"] = "failed", msg
        if opts.on_bad_input == "fail":
            raise AuditError(msg)
        print(f"flowaudit audit: skipped: {msg}", file=sys.stderr)

    engine_info: dict = {}
    try:
        if opts.engine == "dask":
            engine_info = _run_dask(pending, spec, opts.workers, opts.scheduler, on_result, on_error)
        else:
            _run_polars(pending, spec, on_result, on_error, opts.threads)
    finally:
        prog.close()
    f = settings.findings
    t0 = time.monotonic()
    trim()      # what the units' threads left free in their heaps goes back before correlation grows its own
    # two correlation threads: 1.4x on 2 cores; each holds its own window's evidence (about 150 MB
    # at 1M messages), so more would lift the audit's peak past its units' (README, Performance)
    findings = correlate_chunked(out, threads=min(opts.threads, 2), window_ns=opts.window_s * 1_000_000_000,
                                 lookback_ns=opts.lookback_s * 1_000_000_000,
                                 inventory=load_inventory(e.policy_file or None),
                                 model=_sev.load(f.severity_model or None))
    counts = write_findings(out, findings, prune=True)
    findings_s = time.monotonic() - t0
    totals: dict = {}
    for r in results:
        for k in ("rows", "outside_range", "bytes", "messages", "hits", "quarantined", "flows", "transfers"):
            totals[k] = totals.get(k, 0) + int(r.get(k, 0) or 0)
    spans = [(r["tmin_ms"], r["tmax_ms"]) for r in results if r.get("tmin_ms") is not None]
    manifest = {
        "command": opts.command, "engine": opts.engine,
        "workers": engine_info.get("workers", 1) if opts.engine == "dask" else 1,
        "scheduler": engine_info.get("scheduler"),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "since": _iso(opts.since_ms), "until": _iso(opts.until_ms),
        "inputs": p.inputs, "units": len(p.units), "units_resumed": len(done), "rows_pruned": p.pruned_rows,
        "totals": totals, "findings": int(findings.num_rows), "findings_files": counts,
        "findings_seconds": round(findings_s, 3),
        "time_span": {"min": _iso(min(s[0] for s in spans)) if spans else None,
                      "max": _iso(max(s[1] for s in spans)) if spans else None},
        "versions": versions(settings),
    }
    mp = out / "_audit" / "manifest.json"
    makedirs(mp.parent)
    replace_atomic(mp, orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return manifest


def _iso(ms) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _is_data_error(exc: BaseException) -> bool:
    """A bad input (unreadable pages, wrong types: process_unit names it), not a bug or a fault
    writing the output."""
    return isinstance(exc, _in.InputError)
