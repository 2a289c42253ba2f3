"""``flowaudit bench`` / ``python -m benchmarks``: every stage, side by side with its peers.

One run: generate (or reuse, cached by seed and size) a deterministic corpus, measure each stage
single-threaded with its peers on the same bytes, check the counts, and write
``bench.json`` (validated against schemas/bench-result.schema.json), ``bench.md`` and PNG plots
into ``--out``.  ``--quick`` is the everyday run (about a minute on a 2-core machine); the full
run is the one whose numbers are reported.

    python -m benchmarks --quick
    python -m benchmarks --out bench-out                      # full run
    python -m benchmarks --quick --sweep batch-size --sweep compression
    python -m benchmarks --stages scan                        # flowaudit scan of a 64 MiB archive
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import corpus as C
from . import peers as P
from . import stages as S

STAGES = ("edifact", "x12", "json", "xml", "real", "values", "salvage", "watchlist", "layers", "hostile", "netflow",
          "ipset", "batch", "scan", "e2e", "memory", "audit", "cold-start")
# stage (benchmarks/<stage>.py), group, what it measures
EXTERNAL_STAGES = (
    ("netflow", "netflow", "NetFlow v5/v9/IPFIX decode + watchlist match vs nfdump and a plain-Python decoder"),
    ("ipset", "ipset", "IPv4/IPv6 CIDR set lookups (100k prefixes) vs numpy and ipaddress"),
    ("salvage", "values", "salvage scan of quarantined messages (shape recognisers + context rules) vs "
     "python-hyperscan with the same recognisers"),
    ("layers", "batch", "classify the plain real corpus with the layers pre-pass off and on (it must cost "
     "nothing), and base64>gzip-wrapped values"),
    ("hostile", "batch", "hostile messages (megabyte segments, nesting past the caps, XML entity blow-ups) at "
     "two sizes: linear time keeps their MB/s alike"),
)
SWEEPS = ("batch-size", "poll", "threads", "row-group", "compression")
SCHEMA_VERSION = "1.0.0"


@dataclass
class Config:
    quick: bool = False
    out: str | None = None
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    repeats: int | None = None
    size_mb: float | None = None
    sweeps: list[str] = field(default_factory=list)
    seed: int = 6346
    cache_dir: str = str(C.DEFAULT_CACHE)
    corpus: str | None = None        # real corpus root (shared/corpus); None = default location
    e2e_count: int | None = None
    scan_mib: float | None = None    # archive file for the scan stage (default 64 MiB, quick 16)
    audit_messages: int | None = None  # the audit stage's archive (default 1,000,000, quick 20,000)
    memory_sizes: list[int] | None = None  # the memory stage's runs (default 50k 300k 1M, quick 5k 20k)
    slow_seconds: float | None = None
    plots: bool = True
    cold_start: bool | None = None   # None: on in full mode, off in --quick

    def resolved(self) -> "Config":
        q = self.quick
        c = Config(**asdict(self))
        c.repeats = self.repeats or (2 if q else 5)
        c.size_mb = self.size_mb or (2.0 if q else 16.0)
        c.e2e_count = self.e2e_count or (20_000 if q else 100_000)
        c.scan_mib = self.scan_mib or (16.0 if q else 64.0)
        c.audit_messages = self.audit_messages or (20_000 if q else 1_000_000)
        c.memory_sizes = list(self.memory_sizes or ((5_000, 20_000) if q else (50_000, 300_000, 1_000_000)))
        c.slow_seconds = self.slow_seconds if self.slow_seconds is not None else (0.25 if q else 2.0)
        c.cold_start = (not q) if self.cold_start is None else self.cold_start
        return c


# ------------------------------------------------------------------------------------ machine

def machine() -> dict:
    info = {"cpu_model": platform.processor() or "?", "cores_logical": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "cpu_flags": [], "mem_gb": None, "python": f"{platform.python_implementation()} {platform.python_version()}",
            "platform": platform.platform(), "versions": {}}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                fl = set(line.split(":", 1)[1].split())
                info["cpu_flags"] = sorted(fl & {"sse4_2", "avx", "avx2", "bmi2", "avx512f", "avx512bw",
                                                 "avx512vbmi", "amx_tile"})
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    for d in ("flowaudit", "numpy", "numba", "llvmlite", "pyarrow", "polars", "orjson", "lxml", "confluent-kafka",
              "hyperscan", "google-re2", "pydifact", "matplotlib", "jsonschema"):
        info["versions"][d] = P.version(d)
    info["versions"]["nfdump"] = _nfdump_version()
    info["loadavg_start"] = _loadavg()
    return info


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _nfdump_version() -> str:
    import shutil
    import subprocess
    exe = shutil.which("nfdump")
    if not exe:
        return "not installed"
    try:
        p = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=10)
        return (p.stdout or p.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "installed (version unknown)"


# ---------------------------------------------------------------------------------------- run

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cfg: Config, progress=log) -> dict:
    """Run the suite; returns the result document (not yet written)."""
    explicit_cold = cfg.cold_start is True
    cfg = cfg.resolved()
    t_start = time.perf_counter()
    want = set(cfg.stages)
    res = {"schema_version": SCHEMA_VERSION, "tool": "flowaudit bench",
           "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "mode": "quick" if cfg.quick else "full", "config": asdict(cfg), "machine": machine(),
           "corpus": {}, "cold_start": None, "stages": [], "sweeps": [], "notes": []}
    progress(f"flowaudit bench ({res['mode']}): {res['machine']['cpu_model']}, "
             f"{res['machine']['cores_usable']} cores; corpus seed {cfg.seed}, {cfg.size_mb:g} MB per format")

    need_synth = want & {"edifact", "x12", "json", "xml", "values", "watchlist", "batch"} or cfg.sweeps
    datasets: dict[str, C.Dataset] = {}
    if need_synth:
        t0 = time.perf_counter()
        for f in C.FORMATS:
            datasets[f] = C.synth_dataset(f, cfg.seed, cfg.size_mb, cfg.cache_dir)
        res["corpus"]["synth"] = {f: {"messages": len(d), "bytes": d.nbytes, "sha256": d.sha256}
                                  for f, d in datasets.items()}
        res["corpus"]["synth_seconds"] = time.perf_counter() - t0
        res["corpus"]["cache_dir"] = str(Path(cfg.cache_dir).resolve())
        res["corpus"]["generator"] = C.generator_hash()
        progress(f"  corpus ready in {res['corpus']['synth_seconds']:.1f} s "
                 f"({sum(d.nbytes for d in datasets.values()) / 1e6:.1f} MB)")
    text = C.from_values("text", "synth", [d.buf.tobytes() for d in datasets.values()]) if datasets else None

    def add(rec):
        res["stages"].append(rec)
        progress("  " + _one_line(rec))

    for f in C.FORMATS:
        if f in want:
            progress(f"  measuring {f} ...")
            add(S.format_stage(f, datasets[f], cfg.repeats, cfg.slow_seconds))
    if "real" in want:
        root = Path(cfg.corpus) if cfg.corpus else C.default_real_root()
        for f in C.FORMATS:
            ds = C.real_dataset(f, min(cfg.size_mb, 4.0), root)
            if ds is None:
                add(S.skipped(f"{f} (real)", "kernel", f"{f} on the real sample files",
                              f"real corpus not found under {root}"))
                continue
            progress(f"  measuring {f} (real corpus) ...")
            add(S.format_stage(f, ds, cfg.repeats, cfg.slow_seconds))
    if "values" in want:
        progress("  measuring value recognisers ...")
        add(S.values_stage(text, cfg.repeats, cfg.slow_seconds))
    if "watchlist" in want:
        progress("  measuring the watchlist scan ...")
        add(S.watchlist_stage(datasets, cfg.repeats, cfg.slow_seconds))
    for name, group, what in EXTERNAL_STAGES:   # modules that measure themselves and their peers
        if name in want:
            # their sizes follow --size-mb below the defaults (the tests' tiny corpus)
            scale = min(1.0, cfg.size_mb / (2.0 if cfg.quick else 16.0))
            add(S.external_stage(name, group, what, cfg.quick, cfg.repeats, scale))
    if "batch" in want:
        progress("  measuring the batch path ...")
        add(S.batch_stage(datasets, cfg.repeats))
    if "scan" in want:
        progress(f"  measuring flowaudit scan of a {cfg.scan_mib:g} MiB archive file ...")
        add(S.scan_stage(cfg.seed, cfg.scan_mib, cfg.cache_dir, cfg.repeats))
    if "e2e" in want:
        progress(f"  measuring end to end on the embedded broker ({cfg.e2e_count:,} messages) ...")
        add(S.e2e_stage(cfg.e2e_count, 1 if cfg.quick else 2))
    if "memory" in want:
        progress(f"  measuring stream memory against input size ({', '.join(f'{n:,}' for n in cfg.memory_sizes)} "
                 "messages) ...")
        add(S.memory_stage(cfg.memory_sizes))
    if "audit" in want:
        add(S.audit_stage(cfg.audit_messages, cfg.cache_dir, dask=not cfg.quick))
    if "cold-start" in want or explicit_cold:
        if cfg.cold_start:
            progress("  measuring cold start (empty numba cache, subprocess) ...")
            res["cold_start"] = S.cold_start()
        else:
            res["cold_start"] = {"method": "skipped", "skipped": "--quick (pass --cold-start to measure it)"}

    for knob in cfg.sweeps:
        progress(f"  sweep {knob} ...")
        try:
            res["sweeps"].append(_sweep(knob, cfg, datasets, text))
        except Exception as exc:  # noqa: BLE001
            res["sweeps"].append({"knob": knob, "unit": "", "points": [], "error": f"{type(exc).__name__}: {exc}"})
    if "threads" not in cfg.sweeps:
        par = S.kernel_parallel_variants()
        res["notes"].append("numba threads: " + ("no kernel has a parallel (prange) variant; NUMBA_NUM_THREADS "
                                                  "has no effect" if not par else f"parallel kernels: {par}"))
    res["seconds"] = time.perf_counter() - t_start
    res["machine"]["loadavg_end"] = _loadavg()
    cores = res["machine"]["cores_usable"] or 1
    busy = max((res["machine"]["loadavg_start"] or [0])[0], (res["machine"]["loadavg_end"] or [0])[0])
    if busy > 0.5 * cores + 1:
        res["notes"].append(f"the machine was busy (1-min load average up to {busy:.1f} on {cores} cores): "
                            "timings include interference from other processes; rerun on an idle machine "
                            "for numbers to report")
    return res


def _sweep(knob: str, cfg: Config, datasets, text) -> dict:
    r = max(1, cfg.repeats - 1) if not cfg.quick else 1
    if knob == "batch-size":
        sizes = [64, 256, 1000, 5000, 20000] if cfg.quick else [64, 256, 1000, 2000, 5000, 10000, 20000, 50000]
        return S.sweep_batch_size(datasets, sizes, r)
    if knob == "row-group":
        return S.sweep_parquet(datasets, knob, [1024, 8192, 65536, 1 << 20], r)
    if knob == "compression":
        return S.sweep_parquet(datasets, knob, ["none", "snappy", "lz4", "zstd", "gzip"], r)
    if knob == "poll":
        return S.sweep_poll(min(cfg.e2e_count, 10_000 if cfg.quick else 50_000), [100, 500, 2000, 5000, 20000], 1)
    if knob == "threads":
        n = max(2, len(os.sched_getaffinity(0)))
        return S.sweep_threads(datasets, text, n, r)
    raise ValueError(f"unknown sweep {knob!r} (choose from {', '.join(SWEEPS)})")


def _one_line(rec: dict) -> str:
    if rec["status"] != "ok":
        return f"{rec['name']}: {rec['status']}: {rec['reason']}"
    s = f"{rec['name']}: " + (f"{rec['mb_per_s']:,.1f} MB/s" if rec.get("mb_per_s") else "done")
    for p in rec["peers"]:
        if p["status"] == "ok" and p.get("ratio"):
            s += f" | {p['name'].split(' (')[0]} x{p['ratio']:.1f}"
    return s


# ---------------------------------------------------------------------------------------- CLI

def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--quick", action="store_true",
                    help="everyday run: 2 MB per format, 2 repeats, e2e with 20k messages (about a minute)")
    ap.add_argument("--out", metavar="DIR", help="write bench.json, bench.md and PNG plots here "
                    "(default: nothing written in --quick, ./bench-out otherwise)")
    ap.add_argument("--stages", nargs="+", metavar="STAGE", choices=STAGES,
                    help=f"stages to run (default all): {' '.join(STAGES)}")
    ap.add_argument("--repeats", type=int, metavar="N", help="timed repeats per measurement (default 5, quick 2)")
    ap.add_argument("--size-mb", type=float, metavar="N",
                    help="synthetic MB per format (default 16, quick 2); below the default, the netflow and ipset "
                         "stages shrink their records and lookups in proportion")
    ap.add_argument("--sweep", action="append", default=[], choices=SWEEPS, metavar="KNOB",
                    help=f"tuning sweep, repeatable: {', '.join(SWEEPS)}")
    ap.add_argument("--seed", type=int, default=6346, help="corpus seed (default 6346)")
    ap.add_argument("--cache-dir", default=str(C.DEFAULT_CACHE), metavar="DIR",
                    help="corpus cache (default .bench-cache)")
    ap.add_argument("--corpus", metavar="DIR", help="real sample corpus root (default ../shared/corpus)")
    ap.add_argument("--e2e-count", type=int, metavar="N", help="messages for the e2e stage (default 100000, quick 20000)")
    ap.add_argument("--audit-messages", type=int, metavar="N",
                    help="messages in the audit stage's archive (default 1000000, quick 20000; built once, cached)")
    ap.add_argument("--memory-sizes", type=int, nargs="+", metavar="N",
                    help="the memory stage's runs: a fresh stream process over N messages each, peak RSS "
                         "(default 50000 300000 1000000, quick 5000 20000)")
    ap.add_argument("--scan-mib", type=float, metavar="N",
                    help="size of the archive file the scan stage builds (cached) and scans (default 64, quick 16)")
    ap.add_argument("--slow-seconds", type=float, metavar="S",
                    help="seconds per run for slow peers on a prefix (default 2, quick 0.25)")
    ap.add_argument("--cold-start", dest="cold_start", action="store_true", default=None,
                    help="measure numba cold start even in --quick")
    ap.add_argument("--no-cold-start", dest="cold_start", action="store_false")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNGs")


def config_from_args(args) -> Config:
    return Config(quick=args.quick, out=args.out, stages=list(args.stages or STAGES), repeats=args.repeats,
                  size_mb=args.size_mb, sweeps=list(dict.fromkeys(args.sweep)), seed=args.seed,
                  cache_dir=args.cache_dir, corpus=args.corpus, e2e_count=args.e2e_count, scan_mib=args.scan_mib,
                  audit_messages=args.audit_messages, memory_sizes=args.memory_sizes,
                  slow_seconds=args.slow_seconds, plots=not args.no_plots, cold_start=args.cold_start)


def run_cli(args) -> int:
    from . import report
    cfg = config_from_args(args)
    res = run(cfg)
    out = cfg.out or (None if cfg.quick else "bench-out")
    errors = report.validate(res)
    print(report.markdown(res))
    if errors:
        print("bench.json does not match schemas/bench-result.schema.json:\n  " + "\n  ".join(errors), file=sys.stderr)
    if out:
        paths = report.write(res, out, plots=cfg.plots)
        print(f"\nwrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 1 if errors else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    add_arguments(ap)
    return run_cli(ap.parse_args(argv))
