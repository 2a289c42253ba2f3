"""The audit driver: inputs -> units -> an engine -> findings -> manifest (and the report).

Engines run the same :func:`~flowaudit.audit.work.process_unit` over units:

``polars``  in this process, one unit per thread (bounded memory: a unit is whole row groups,
            at most ``unit_rows`` rows and 16 MiB); the findings correlation is polars, a window
            of event time at a time (:func:`~flowaudit.detect.chunked.correlate_chunked`).
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
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import orjson

from ..memory import trim
from ..sinks.parquet import fsync_dir, makedirs, replace_atomic
from . import inputs as _in
from .work import Spec, marker_path, process_unit

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
    dns_files: tuple = ()               # Zeek dns.log files or folders of them
    on_bad_input: str = "fail"          # fail or skip
    unit_rows: int = _in.DEFAULT_UNIT_ROWS
    window_s: int = 300
    lookback_s: int = 0
    episode_gap_s: int = 3600           # the report's episodes (recorded: `flowaudit report ROOT` takes it)
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
    roots: list = field(default_factory=list)        # flowaudit roots carried over (retro-hunt)
    pruned_rows: int = 0
    errors: list = field(default_factory=list)
    tables: list = field(default_factory=list)       # how each Iceberg table was read (a line each)


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
        notes: list[str] = []
        try:
            files = _in.parquet_files(arg, notes)
        except _in.InputError as exc:
            _bad(p, opts, arg, exc)
            continue
        for n in notes:
            print(f"flowaudit audit: {n}", file=sys.stderr)
        p.tables += notes
        if not files:
            raise AuditError(f"{arg}: no Parquet files")
        for f in files:
            _plan_file(p, opts, f)
    if opts.mapping and not any(i["layout"] == "mapped" or i["status"] == "pruned" for i in p.inputs):
        # --map is for the inputs that have its columns (flow archives beside it keep their layout):
        # one that fits no input read is a mistake, not a map to ignore (a file pruned by its
        # partition's time was not opened: it may have them)
        read = sorted({i["layout"] for i in p.inputs if i["layout"]})
        given = ",".join(f"{k}={v}" for k, v in opts.mapping.items())
        raise AuditError(f"--map {given}: no input has the column(s) it names"
                         + (f"; they were read as {', '.join(read)} without it" if read else ""))
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
    p.roots.append(root)
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


def _copy(src: Path, dst: Path, ds: str, retro) -> int:
    """Hard-link (or copy) a carried-over file; transfers keep only the rows that stand under
    today's watchlist (:meth:`Retro.keep`).  Returns the rows written."""
    import pyarrow.parquet as pq

    makedirs(dst.parent)
    if dst.exists():
        dst.unlink()
    if ds == "hits":
        retro.add_hits(dst)
    if ds == "transfers":
        from ..datasets import CHECKED, TRANSFERS
        from .work import write_file

        t = retro.keep(pq.read_table(src, schema=TRANSFERS, **CHECKED))
        if t.num_rows:
            write_file(t, dst)
        return t.num_rows
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    fsync_dir(dst.parent)
    return pq.read_metadata(dst).num_rows


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
        try:       # waits Dask's connect timeout (distributed.comm.timeouts.connect, 30 s by default)
            client = Client(scheduler)
        except (OSError, TimeoutError) as exc:
            raise AuditError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc})") from None
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


def _detector(egress):
    """The run's egress detector on the driver (the ``egress`` settings): today's watchlist and
    policy (the retro-hunt's matches, the --dns logs' answers)."""
    from ..detect import watchlist
    from ..detect.egress import EgressDetector

    return EgressDetector(watchlist.Watchlist(egress.watchlist_dir or None), egress.policy_file or None,
                          dns_max_entries=egress.dns_max_entries)


def _dns_answers(out: Path, spec: Spec, det) -> tuple[int, list]:
    """The DNS_ANSWER transfers of the --dns logs in [since, until) (the workers read the same
    answers to name the flows' addresses), once per run, under a name derived from the logs.  A
    line that is no DNS record is quarantined (``malformed_json`` or ``format_mismatch``, as the
    stream's DNS topics): the log file is its source and the line's index (0 = the first) its
    offset.  Returns how many, and what was read of each log (the manifest's ``dns_logs``)."""
    import numpy as np
    import pyarrow as pa

    from ..protect import Protector
    from ..quarantine import lines_table
    from ..sources.files import GZIP_ERRORS, open_input
    from .work import _in_range, seed_dns_log, write_tables

    h = hashlib.sha256()
    for f in spec.dns_files:           # (in pieces: a day's DNS or HTTP log is gigabytes)
        with open(f, "rb") as fh:
            for piece in iter(lambda: fh.read(1 << 20), b""):
                h.update(piece)
    bad, logs, watched = 0, [], []
    names = [Path(f).name for f in spec.dns_files]
    for f in spec.dns_files:
        stem = re.sub(r"[^A-Za-z0-9._-]", "-", Path(f).stem)[:40]
        if names.count(Path(f).name) > 1:       # Zeek's dated folders repeat a day's file names
            stem += "-" + hashlib.sha256(f.encode()).hexdigest()[:8]
        name = f"audit-dns-{stem}-{h.hexdigest()[:16]}"
        misfits: list = []              # (line index, line, reason) of the lines that are no DNS record
        lines, det.dns.span = det.dns.stats["lines"], None
        try:
            with open_input(f) as fh:
                t = det.observe_dns(fh, source=f, bad=misfits, watched=watched)
        except GZIP_ERRORS as e:    # a damaged gzip stream
            raise AuditError(f"--dns {f}: not readable ({e})") from None
        span = det.dns.span or [None, None]
        ms = [s // 1_000_000 if s is not None else None for s in span]
        logs.append({"path": f, "records": det.dns.stats["lines"] - lines - len(misfits), "bad": len(misfits),
                     "watched_answers": t.num_rows, "first": _iso(ms[0]), "last": _iso(ms[1])})
        ts = np.asarray(t.column("ts_ms").fill_null(-1).to_numpy(zero_copy_only=False), np.int64)
        keep = _in_range(ts, spec)
        if keep is not None:
            t, ts = t.filter(pa.array(keep)), ts[keep]
        tables = {"transfers": (t, ts)}
        if misfits:
            q = lines_table(Protector(spec.key, raw=spec.raw), [(0, *m) for m in misfits], [f], "dns")
            tables["quarantine"] = (q, np.full(len(misfits), -1, np.int64))
            bad += len(misfits)
        write_tables(out, name, tables, spec)
    seed_dns_log(spec, watched)     # the units of this process read the watched records from memory
    return bad, logs


# ------------------------------------------------------------------------------ the audit
def run(opts: Options, settings, echo=print) -> dict:
    """Run the audit; returns the manifest (also written to ROOT/_audit/manifest.json)."""
    from ..config import hmac_key, key_configured, root_key
    from ..detect import severity as _sev
    from ..detect.chunked import correlate_chunked
    from ..detect.dnsmap import log_files
    from ..detect.findings import write_findings
    from ..detect.inventory import InventoryError
    from ..detect.inventory import load as load_inventory
    from ..detect.watchlist import WatchlistError
    from ..detect.zones import PolicyError

    started = datetime.now(timezone.utc)
    out = Path(opts.out)
    p = plan(opts)          # before ROOT is made: a usage error leaves nothing behind
    try:                    # --dns: files, or folders of Zeek logs (their dns* files)
        dns_files = log_files(opts.dns_files)
    except ValueError as exc:
        raise AuditError(f"--dns {exc}") from None
    e = settings.egress
    f = settings.findings
    # today's watchlist, zone policy, application inventory and severity model, read now: a broken
    # file is a usage error before ROOT is made, not the failure of every unit or, for the model,
    # a traceback after the last one
    try:
        det = _detector(e) if e.enabled or p.copies else None
        inventory = load_inventory(e.policy_file or None)
        model = _sev.load(f.severity_model or None)
    except (WatchlistError, PolicyError, InventoryError, _sev.SeverityModelError) as exc:
        raise AuditError(str(exc)) from None
    makedirs(out)
    # a retro-hunt keeps the key of the roots it carries over (config.hmac_key), so their hashes
    # join with its own and their sealed quarantine opens under ROOT
    key, _src = hmac_key(settings, out, inherit=tuple(p.roots))
    for r in p.roots if key_configured(settings) else ():
        if root_key(r) not in (None, key):
            print(f"flowaudit audit: {r} has a key of its own (.hmac-key) other than the configured one: if its rows "
                  f"were written with it, their hashes do not join with this audit's and its quarantine opens "
                  f"only with that key", file=sys.stderr)
    spec = Spec(out=str(out.resolve()), key=key, raw=settings.sink.raw_values, egress=e.enabled,
                watchlist_dir=e.watchlist_dir or "", policy_file=e.policy_file or "",
                dns_max_entries=e.dns_max_entries, formats=tuple(opts.formats),
                dns_files=tuple(str(Path(f).resolve()) for f in dns_files), since_ms=opts.since_ms,
                until_ms=opts.until_ms, max_message_bytes=settings.kafka.max_message_bytes,
                compression=settings.sink.compression, row_group_size=settings.sink.row_group_size)
    carried: dict = {}     # retro-hunt: rows carried over per dataset, as written under ROOT
    retro_info: dict = {}
    if p.copies:
        from .retro import Retro

        retro = Retro(det, key, dns_given=bool(spec.dns_files and spec.egress))
        for src, rel, ds in p.copies:
            n = _copy(src, out / rel, ds, retro)
            carried[ds] = carried.get(ds, 0) + n
        retro_info = {"transfers_dropped": retro.dropped,
                      "edi_party_matches": retro.write_parties(out, spec) if spec.egress else 0}
    dns_bad, dns_logs = _dns_answers(out, spec, det) if spec.dns_files and spec.egress else (0, [])
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
    t0 = time.monotonic()
    trim()      # what the units' threads left free in their heaps goes back before correlation grows its own
    # two correlation threads: 1.4x on 2 cores; each holds its own window's evidence (about 150 MB
    # at 1M messages), so more would lift the audit's peak past its units' (benchmarks/HISTORY.md)
    findings = correlate_chunked(out, threads=min(opts.threads, 2), window_ns=opts.window_s * 1_000_000_000,
                                 lookback_ns=opts.lookback_s * 1_000_000_000,
                                 inventory=inventory, model=model)
    counts = write_findings(out, findings, prune=True)
    findings_s = time.monotonic() - t0
    totals: dict = {}
    for r in results:
        for k in ("rows", "outside_range", "bytes", "messages", "hits", "quarantined", "flows", "transfers"):
            totals[k] = totals.get(k, 0) + int(r.get(k, 0) or 0)
    if dns_bad:        # the --dns logs' lines that are no DNS record (quarantined beside the units' rows)
        totals["quarantined"] = totals.get("quarantined", 0) + dns_bad
    spans = [(r["tmin_ms"], r["tmax_ms"]) for r in results if r.get("tmin_ms") is not None]
    manifest = {
        "command": opts.command, "engine": opts.engine,
        "workers": engine_info.get("workers", 1) if opts.engine == "dask" else 1,
        "scheduler": engine_info.get("scheduler"),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "since": _iso(opts.since_ms), "until": _iso(opts.until_ms),
        "inputs": p.inputs, "dns_logs": dns_logs, "units": len(p.units), "units_resumed": len(done),
        "rows_pruned": p.pruned_rows,
        "tables": p.tables,
        "totals": totals, "carried_over": carried, "retro_hunt": retro_info, "findings": int(findings.num_rows),
        "findings_files": counts,
        "findings_seconds": round(findings_s, 3),
        # what the findings were correlated with: `flowaudit findings ROOT` takes these by default
        "correlation": {"policy_file": str(Path(e.policy_file).resolve()) if e.policy_file else None,
                        "window_s": opts.window_s, "lookback_s": opts.lookback_s,
                        "episode_gap_s": opts.episode_gap_s,
                        "severity_model": str(Path(f.severity_model).resolve()) if f.severity_model else None},
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
