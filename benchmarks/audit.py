"""The batch audit of a message archive against what a user would run instead, in one run.

The archive is ``flowaudit synth --dump`` (flat Kafka Connect layout, labelled exposures), built
once per seed and size and cached.  Measured on the same files:

* ``flowaudit audit`` (polars engine), a fresh process per run as a user runs it: wall time,
  peak RSS (its own ``VmHWM``, polled; not ``wait4``: that carries this process's peak into
  the child), rows and findings;
* the physical limit: ``polars.scan_parquet`` reading only the value column;
* the audit a user would write by hand: polars ``str.extract_all`` regexes for container numbers,
  IMO numbers and e-mail addresses over the value column (DuckDB too when it is installed);
* Dask scaling: ``--engine dask`` with a LocalCluster of 1 and of 2 workers (``--dask-workers
  1,2,4,8,16`` on a machine with the cores; the README has a 16-core run);
* ``--dns-lookups N``: the audit of the dump's flows with ``--dns`` given a Zeek ``dns.log`` of
  the dump's own answers plus N unrelated lookups (about 400 bytes each, built once and cached):
  wall time, peak RSS and lines per second, so that a day's DNS log is seen to be read in bounded
  memory.

    python -m benchmarks.audit --messages 1000000
    python -m benchmarks.audit --threads 16 --dask-workers 1,2,4,8,16     # a many-core machine
    python -m benchmarks.audit --dns-lookups 2000000 --no-dask
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# what a user writes by hand: the three shapes everyone knows (no check digits, no context)
REGEXES = {"container_number": r"\b[A-Z]{3}[UJZ][0-9]{7}\b", "imo_number": r"\bIMO ?[0-9]{7}\b",
           "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"}
HMAC_KEY = "bench-audit-key-0123456789"


def dump(n: int, seed: int, cache_dir) -> Path:
    """The cached archive (built once: ``synth.write_dump``)."""
    from flowaudit import synth

    d = Path(cache_dir) / f"audit-dump-{seed}-{n}"
    if (d / ".complete").exists():
        return d
    shutil.rmtree(d, ignore_errors=True)
    synth.write_dump(d, n, seed=seed, layouts=("flat",))
    (d / ".complete").write_text("ok\n")
    return d


def _flat(d: Path) -> Path:
    return d / "flat"


def value_bytes(d: Path) -> tuple[int, int]:
    """(rows, bytes of the value column) of the flat archive."""
    import polars as pl

    r = pl.scan_parquet(str(_flat(d) / "**" / "*.parquet"), hive_partitioning=True).select(
        pl.len().alias("n"), pl.col("value").bin.size().sum().alias("b")).collect()
    return int(r["n"][0]), int(r["b"][0])


def bare_scan(d: Path) -> dict:
    import polars as pl

    t0 = time.perf_counter()
    df = pl.scan_parquet(str(_flat(d) / "**" / "*.parquet"), hive_partitioning=True).select("value").collect()
    return {"seconds": time.perf_counter() - t0, "rows": df.height}


def polars_regex(d: Path) -> dict:
    """The regexes in polars over the value column.  Polars refuses a binary -> string cast on the
    archive's few invalid UTF-8 values (strict or not), so the values go through Arrow's unchecked
    cast first, one record batch at a time, as a user working around that error would write it."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    t0 = time.perf_counter()
    counts = dict.fromkeys(REGEXES, 0)
    cast = pc.CastOptions(pa.large_string(), allow_invalid_utf8=True)
    for b in ds.dataset(_flat(d), format="parquet", partitioning="hive").to_batches(columns=["value"]):
        v = pl.from_arrow(pa.table({"v": pc.cast(b.column(0), options=cast)}))
        r = v.select([pl.col("v").str.extract_all(rx).list.len().sum().alias(k) for k, rx in REGEXES.items()])
        for k in REGEXES:
            counts[k] += int(r[k][0] or 0)
    return {"seconds": time.perf_counter() - t0, "counts": counts}


def duckdb_regex(d: Path) -> dict | None:
    try:
        import duckdb
    except ImportError:
        return None
    t0 = time.perf_counter()
    sel = ", ".join(f"sum(len(regexp_extract_all(CAST(value AS VARCHAR), '{rx}'))) AS {k}"
                    for k, rx in REGEXES.items())
    row = duckdb.sql(f"SELECT {sel} FROM read_parquet('{_flat(d)}/**/*.parquet', hive_partitioning=true)").fetchone()
    return {"seconds": time.perf_counter() - t0, "counts": dict(zip(REGEXES, map(int, row)))}


def audit_run(d: Path, engine: str = "polars", workers: int = 1, threads: int | None = None,
              inputs: list | None = None, extra: tuple = ()) -> dict:
    """``flowaudit audit`` in a fresh process: wall seconds, peak RSS of that process, its summary
    (``inputs``: what it audits, the flat archive by default; ``extra``: more arguments)."""
    out = Path(tempfile.mkdtemp(prefix="fa-bench-audit-"))
    try:
        cmd = [sys.executable, "-m", "flowaudit", "audit", *map(str, inputs or [_flat(d)]), "--out",
               str(out / "root"), "--engine", engine, "--workers", str(workers), *map(str, extra)]
        if threads:
            cmd += ["--threads", str(threads)]
        for extra, flag in (("policy.toml", "--policy"), ("watchlist", "--watchlist-dir")):
            if (d / extra).exists():
                cmd += [flag, str(d / extra)]
        env = dict(os.environ, FLOWAUDIT_SECURITY_HMAC_KEY=HMAC_KEY)
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        hwm = _HighWater(p.pid)
        _pid, status, ru = os.wait4(p.pid, 0)
        secs = time.perf_counter() - t0
        hwm.stop()
        so, se = p.stdout.read().decode(), p.stderr.read().decode()
        p.stdout.close()
        p.stderr.close()
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise RuntimeError(f"flowaudit audit exited {p.returncode}: {se[-2000:]}")
        m = json.loads((out / "root" / "_audit" / "manifest.json").read_text())
        # wait4's ru_maxrss is no measure here: Linux carries the parent's high-water mark into a
        # child across fork + exec, and this process holds the peers' whole value column (it
        # reported this process's 1.6 GB for an audit that peaked at 0.7-0.9 GB)
        peak = hwm.kib / 1024 if hwm.kib else ru.ru_maxrss / 1024
        return {"seconds": secs, "peak_rss_mb": peak, "rows": m["totals"]["rows"],
                "messages": m["totals"].get("messages", 0), "hits": m["totals"].get("hits", 0),
                "findings": m["findings"], "summary": so.strip().splitlines()[-1] if so.strip() else ""}
    finally:
        shutil.rmtree(out, ignore_errors=True)


class _HighWater:
    """The child's own peak RSS: its ``VmHWM`` (per address space, so from its exec on), read
    every 50 ms until it exits; the last value read is the peak up to then (a peak in its last
    50 ms would be missed).  Zero where /proc is not there.  ``anon_kib`` / ``file_kib``: the
    highest ``RssAnon`` (heap, Arrow buffers, numba's compiled code) and ``RssFile`` (the
    shared libraries' pages in memory: libllvmlite, polars, pyarrow) sampled."""

    def __init__(self, pid: int):
        import threading

        self.kib = self.anon_kib = self.file_kib = 0
        self._path = f"/proc/{pid}/status"
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                with open(self._path) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.kib = max(self.kib, int(line.split()[1]))
                        elif line.startswith("RssAnon:"):
                            self.anon_kib = max(self.anon_kib, int(line.split()[1]))
                        elif line.startswith("RssFile:"):
                            self.file_kib = max(self.file_kib, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


def dns_log(d: Path, lookups: int) -> Path:
    """The dump's DNS answers and ``lookups`` unrelated ones (Zeek's JSON fields, spread over the
    dump's DNS time span), written once beside the dump."""
    import random

    import orjson

    path = d / f"dns-{lookups}.log"
    if path.exists():
        return path
    base = [orjson.loads(x) for x in (d / "dns" / "dns.log").read_bytes().splitlines() if x.strip()]
    t0, t1 = min(r["ts"] for r in base), max(r["ts"] for r in base)
    rng = random.Random(1)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for r in base:
            f.write(orjson.dumps(r) + b"\n")
        for i in range(lookups):
            f.write(orjson.dumps({
                "ts": t0 + (t1 - t0) * i / max(lookups, 1), "uid": f"C{i}",
                "id.orig_h": f"10.40.{rng.randrange(4)}.{rng.randrange(256)}", "id.orig_p": 50000 + i % 10000, "id.resp_h": "10.40.0.53", "id.resp_p": 53, "proto": "udp",
                "trans_id": i % 65536, "query": f"host{rng.randrange(100000)}.example{rng.randrange(50)}.com",
                "qclass": 1, "qclass_name": "C_INTERNET", "qtype": 1, "qtype_name": "A", "rcode": 0,
                "rcode_name": "NOERROR", "AA": False, "TC": False, "RD": True, "RA": True, "Z": 0,
                "answers": [f"198.51.{rng.randrange(256)}.{rng.randrange(256)}"], "TTLs": [300.0],
                "rejected": False}) + b"\n")
    tmp.replace(path)
    return path


def dns_run(d: Path, lookups: int) -> dict:
    """The audit of the dump's flows with a DNS log of ``lookups`` unrelated lookups beside its own."""
    log = dns_log(d, lookups)
    r = audit_run(d, inputs=[d / "flows"], extra=("--dns", log))
    lines = lookups + sum(1 for x in (d / "dns" / "dns.log").read_bytes().splitlines() if x.strip())
    return {**r, "dns_lines": lines, "dns_bytes": log.stat().st_size, "dns_lines_per_s": lines / r["seconds"]}


def run(n: int = 1_000_000, seed: int = 9, cache_dir=None, repeats: int = 1, dask: bool = True,
        threads: int | None = None, dask_workers: tuple = (1, 2)) -> dict:
    from .corpus import DEFAULT_CACHE

    d = dump(n, seed, cache_dir or DEFAULT_CACHE)
    rows, nbytes = value_bytes(d)
    res: dict = {"messages": n, "rows": rows, "value_bytes": nbytes, "dump": str(d)}

    def best(fn):
        runs = [fn() for _ in range(max(1, repeats))]
        return min(runs, key=lambda r: r["seconds"])

    bare_scan(d)   # page cache warm for everyone
    res["bare_scan"] = best(lambda: bare_scan(d))
    res["polars_regex"] = best(lambda: polars_regex(d))
    duck = duckdb_regex(d)
    res["duckdb_regex"] = duck
    res["audit"] = best(lambda: audit_run(d, threads=threads))
    if dask:
        res["dask"] = {str(w): audit_run(d, "dask", w) for w in dask_workers}
    a = res["audit"]["seconds"]
    res["mb_per_s"] = nbytes / 1e6 / a
    res["rows_per_s"] = rows / a
    res["ratio_to_bare_scan"] = res["bare_scan"]["seconds"] / a
    res["ratio_to_polars_regex"] = res["polars_regex"]["seconds"] / a
    res["ratio_to_duckdb_regex"] = duck["seconds"] / a if duck else None
    if dask and {"1", "2"} <= set(res["dask"]):
        res["dask_scaling_1_to_2"] = res["dask"]["1"]["seconds"] / res["dask"]["2"]["seconds"]
    if dask and "1" in res["dask"]:
        res["dask_scaling"] = {w: res["dask"]["1"]["seconds"] / r["seconds"] for w, r in res["dask"].items()}
    res["cpus"] = os.cpu_count()
    res["polars_threads"] = __import__("polars").thread_pool_size()
    res["self_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-dask", action="store_true")
    ap.add_argument("--threads", type=int, help="polars engine: units in parallel (default: the audit's own)")
    ap.add_argument("--dask-workers", default="1,2", help="LocalCluster sizes to time (default 1,2)")
    ap.add_argument("--cache-dir")
    ap.add_argument("--dns-lookups", type=int, metavar="N",
                    help="only the audit of the dump's flows with a DNS log of N more lookups (peak RSS, lines/s)")
    a = ap.parse_args(argv)
    if a.dns_lookups is not None:
        from .corpus import DEFAULT_CACHE

        d = dump(a.messages, a.seed, a.cache_dir or DEFAULT_CACHE)
        print(json.dumps(dns_run(d, a.dns_lookups), indent=1))
        return 0
    r = run(a.messages, a.seed, a.cache_dir, a.repeats, not a.no_dask, a.threads,
            tuple(int(w) for w in a.dask_workers.split(",")))
    print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
