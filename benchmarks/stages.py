"""The measured stages.  Each returns one *stage record* (a dict, see schemas/bench-result.schema.json).

Method, common to every stage and peer:

* **timing**: ``time.perf_counter`` around the whole unit of work; one untimed warm-up call
  (numba loads or compiles its kernels there: its duration is reported as ``first_call_s``), then
  ``repeats`` timed calls; the record keeps every sample, the median, min/max and IQR.  MB/s =
  10^6 bytes of input per second of the median; items/s likewise.
* **memory**: peak resident set size of this process during the stage's timed calls, read from
  ``VmHWM`` in ``/proc/self/status`` after resetting it by writing ``5`` to
  ``/proc/self/clear_refs`` (Linux >= 4.0) before the stage.  It includes what was already
  resident (the corpus, the interpreter, the compiled kernels): ``start_rss_mb`` is that floor.
  Where the reset is not available the record says ``getrusage`` (a process-lifetime peak).
* **slow peers** (pure-Python parsers, per-pattern regex loops) run on a prefix of whole messages
  sized so that one run takes about ``slow_seconds``; their MB/s is on what they scanned, and
  the counts they are compared with are flowaudit's on the same prefix.
* **counts**: every peer's counts are set beside flowaudit's where the work is comparable
  (``Peer.compare``): "counts agree" or "counts differ: a vs b (why)".  Regex engines running the
  same pattern set must also agree with each other.
"""
from __future__ import annotations

import gc
import importlib
import inspect
import io
import os
import resource
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import peers as P
from .corpus import FORMATS, Dataset

MB = 1e6


# ----------------------------------------------------------------------------------- memory

def _status_kb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def rss_reset() -> str:
    """Reset the peak RSS; returns the method the following :func:`rss_peak_mb` uses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM after clear_refs reset"
    except OSError:
        return "getrusage ru_maxrss (process lifetime peak)"


def rss_now_mb() -> float:
    kb = _status_kb("VmRSS")
    return round(kb / 1024, 1) if kb is not None else 0.0


def rss_peak_mb(method: str) -> float:
    if method.startswith("VmHWM"):
        kb = _status_kb("VmHWM")
        if kb is not None:
            return round(kb / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ----------------------------------------------------------------------------------- timing

def timing(samples: list[float], warmup: int = 1, first_call_s: float | None = None) -> dict:
    s = sorted(samples)
    q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0], s[0], s[0]]
    return {"repeats": len(s), "warmup": warmup, "seconds": [round(x, 6) for x in samples],
            "median_s": statistics.median(s), "min_s": s[0], "max_s": s[-1], "iqr_s": q[2] - q[0],
            "first_call_s": first_call_s}


def measure(fn, repeats: int, warmup: int = 1):
    """(timing dict, result of the last call, memory dict)."""
    first = None
    result = None
    for i in range(warmup):
        t0 = time.perf_counter()
        result = fn()
        if i == 0:
            first = time.perf_counter() - t0
    gc.collect()
    method = rss_reset()
    start = rss_now_mb()
    samples = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - t0)
    mem = {"peak_rss_mb": rss_peak_mb(method), "start_rss_mb": start, "method": method}
    return timing(samples, warmup, first), result, mem


def _rates(rec: dict) -> dict:
    med = rec["timing"]["median_s"]
    rec["mb_per_s"] = rec["bytes"] / MB / med if med > 0 else None
    rec["items_per_s"] = rec["items"] / med if med > 0 and rec.get("items") is not None else None
    return rec


def stage_record(name: str, group: str, what: str, **kw) -> dict:
    rec = {"name": name, "group": group, "what": what, "status": "ok", "reason": None, "dataset": None,
           "bytes": 0, "items": None, "item_unit": None, "timing": None, "mb_per_s": None,
           "items_per_s": None, "memory": None, "counts": {}, "peers": [], "extra": {}}
    rec.update(kw)
    return rec


def skipped(name: str, group: str, what: str, reason: str) -> dict:
    return stage_record(name, group, what, status="skipped", reason=reason)


def failed(name: str, group: str, what: str, exc: BaseException) -> dict:
    return stage_record(name, group, what, status="error", reason=f"{type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------ peer running

def _check_counts(fa: dict, pc: dict, compare: dict, why: str = "") -> dict:
    if not compare:
        return {"status": "not_comparable", "text": "not comparable" + (f": {why}" if why else "")}
    diffs = []
    for pk, fk in compare.items():
        a, b = fa.get(fk), pc.get(pk)
        if a != b:
            diffs.append(f"{fk} {a} vs {b}")
    if diffs:
        return {"status": "differ", "text": "counts differ: " + "; ".join(diffs) + (f" ({why})" if why else "")}
    shown = ", ".join(f"{fk} {fa.get(fk):,}" for fk in compare.values())
    return {"status": "agree", "text": f"counts agree ({shown})"}


def run_peer(peer: P.Peer, ds: Dataset, fa_rate_mb: float | None, fa_counts_on, repeats: int,
             slow_seconds: float, item_unit: str | None = None) -> dict:
    rec = {"name": peer.name, "version": peer.version, "status": "ok", "reason": None, "bytes": 0,
           "prefix": False, "items": None, "item_unit": "messages", "timing": None, "mb_per_s": None,
           "items_per_s": None, "ratio": None, "memory": None, "counts": {},
           "counts_check": None, "note": peer.note}
    if peer.work is None:
        rec.update(status="skipped", reason=peer.skipped)
        rec["counts_check"] = {"status": "skipped", "text": f"skipped: {peer.skipped}"}
        return rec
    try:
        use = ds
        if peer.slow and slow_seconds > 0:
            probe = ds.prefix_bytes(min(ds.nbytes, 300_000))
            fn = peer.work(probe)
            t0 = time.perf_counter()
            fn()
            rate = probe.nbytes / max(time.perf_counter() - t0, 1e-6)
            use = ds.prefix_bytes(int(rate * slow_seconds))
        fn = peer.work(use)
        t, counts, mem = measure(fn, repeats)
        items = sum(int(counts.get(k, 0)) for k in peer.items_key) if peer.items_key else len(use)
        unit = peer.item_unit if peer.items_key else (item_unit or peer.item_unit)
        rec.update(bytes=use.nbytes, prefix=use.nbytes < ds.nbytes, items=items, item_unit=unit,
                   timing=t, memory=mem, counts=counts)
        _rates(rec)
        if fa_rate_mb and rec["mb_per_s"]:
            rec["ratio"] = fa_rate_mb / rec["mb_per_s"]
        fa = fa_counts_on(use) if peer.compare else {}
        rec["counts_check"] = _check_counts(fa, counts, peer.compare, "" if peer.compare else peer.note)
        rec["_dataset"] = use
    except Exception as exc:  # noqa: BLE001 - a broken peer is reported, the run goes on
        rec.update(status="error", reason=f"{type(exc).__name__}: {exc}")
        rec["counts_check"] = {"status": "skipped", "text": f"error: {rec['reason']}"}
    return rec


def _engine_agreement(peers: list[P.Peer], recs: list[dict]) -> None:
    """Regex engines on the same pattern set: each must match the reference engine's per-pattern
    counts on the bytes it scanned (the reference is re-run on a prefix where needed)."""
    group = [(p, r) for p, r in zip(peers, recs) if p.engine_group and r["status"] == "ok"]
    if len(group) < 2:
        return
    ref_p, ref_r = next(((p, r) for p, r in reversed(group) if not r["prefix"]), group[-1])
    for p, r in group:
        if r is ref_r:
            continue
        ds = r["_dataset"]
        ref_counts = ref_r["counts"] if ds.nbytes == ref_r["bytes"] else ref_p.work(ds)()
        diffs = [f"{k} {ref_counts.get(k)} vs {v}" for k, v in r["counts"].items() if ref_counts.get(k) != v]
        where = "prefix" if r["prefix"] else "all"
        if diffs:
            r["engines_check"] = {"status": "differ", "text": f"per-pattern counts differ from {ref_p.name} "
                                  f"on the same {where} bytes: " + "; ".join(diffs)}
        else:
            r["engines_check"] = {"status": "agree", "text": f"= {ref_p.name.split(' (')[0]} per pattern on the "
                                  f"same bytes ({sum(r['counts'].values()):,} matches)"}
    ref_r["engines_check"] = {"status": "agree", "text": "reference engine for the pattern set"}


def run_peers(peer_list: list[P.Peer], ds: Dataset, rec: dict, fa_counts_on, repeats: int,
              slow_seconds: float) -> None:
    out = [run_peer(p, ds, rec["mb_per_s"], fa_counts_on, repeats, slow_seconds, rec.get("item_unit"))
           for p in peer_list]
    _engine_agreement(peer_list, out)
    for r in out:
        r.pop("_dataset", None)
    rec["peers"] = out


# ----------------------------------------------------------------------------- kernel stages

def _decoder(fmt: str):
    return importlib.import_module(f"flowaudit.decode.{fmt}")


def classify_counts(fmt: str, ds: Dataset) -> dict:
    r = _decoder(fmt).classify(ds.buf, ds.offsets, ds.sel)
    return _result_counts(r)


def _result_counts(r) -> dict:
    ok = r.status == 0
    return {"messages": int(r.status.shape[0]), "decoded": int(ok.sum()), "quarantined": int((~ok).sum()),
            "segments": int(r.n_segments[ok].sum()), "hits": int(r.n_hits)}


def format_stage(fmt: str, ds: Dataset, repeats: int, slow_seconds: float, with_peers: bool = True) -> dict:
    """``flowaudit.decode.<fmt>.classify`` over all messages of ``ds`` in one call."""
    unit = {"edifact": "interchanges", "x12": "interchanges", "json": "documents", "xml": "documents"}[fmt]
    rec = stage_record(f"{fmt}" if ds.source == "synth" else f"{fmt} (real)", "kernel",
                       f"{fmt.upper() if fmt != 'json' else 'JSON'} tokenize + classify, full catalogue, one call "
                       f"over the batch", dataset=_ds_label(ds), bytes=ds.nbytes, items=len(ds), item_unit=unit)
    try:
        dec = _decoder(fmt)
        fn = lambda: dec.classify(ds.buf, ds.offsets, ds.sel)  # noqa: E731
        t, r, mem = measure(fn, repeats)
        rec.update(timing=t, memory=mem, counts=_result_counts(r))
        _rates(rec)
    except Exception as exc:  # noqa: BLE001
        return failed(rec["name"], "kernel", rec["what"], exc)
    if with_peers:
        run_peers(P.format_peers(fmt, ds.source), ds, rec, lambda d: classify_counts(fmt, d), repeats,
                  slow_seconds)
    return rec


def _ds_label(ds: Dataset) -> str:
    if ds.source == "real":
        return f"real corpus: {ds.files} files repeated, {ds.nbytes / MB:.1f} MB"
    return f"synthetic: {len(ds):,} messages, {ds.nbytes / MB:.1f} MB"


_VALUES_SCAN = None


def _values_kernel():
    """A numba driver over ``kernels/values.py``: next_container + parse_container (ISO 6346 check
    digit), next_imo + parse_imo (IMO check) across a whole text buffer."""
    global _VALUES_SCAN
    if _VALUES_SCAN is None:
        import numba

        from flowaudit.kernels import values as V
        nc, pc, ni, pi = V.next_container, V.parse_container, V.next_imo, V.parse_imo

        @numba.njit(nogil=True, cache=True)
        def scan(buf):
            out = np.empty(64, np.uint8)
            n = buf.shape[0]
            cc = cv = ic = iv = 0
            pos = 0
            while True:
                s, e = nc(buf, pos, n)
                if s < 0:
                    break
                cc += 1
                if pc(buf, s, e, out, 0) == 1:
                    cv += 1
                pos = e
            pos = 0
            while True:
                s, e = ni(buf, pos, n)
                if s < 0:
                    break
                ic += 1
                if pi(buf, s, e, out, 0) == 1:
                    iv += 1
                pos = e
            return cc, cv, ic, iv
        _VALUES_SCAN = scan
    return _VALUES_SCAN


def values_counts(ds: Dataset) -> dict:
    cc, cv, ic, iv = _values_kernel()(ds.buf)
    return {"container_candidates": int(cc), "container_valid": int(cv), "imo_candidates": int(ic),
            "imo_valid": int(iv)}


def values_stage(ds: Dataset, repeats: int, slow_seconds: float, with_peers: bool = True) -> dict:
    rec = stage_record("values", "values", "value recognisers over free text: ISO 6346 container "
                       "(next_container + check digit) and IMO (next_imo + check)", dataset=_ds_label(ds),
                       bytes=ds.nbytes, items=None, item_unit="candidates")
    try:
        t, c, mem = measure(lambda: values_counts(ds), repeats)
        rec.update(timing=t, memory=mem, counts=c, items=c["container_candidates"] + c["imo_candidates"])
        _rates(rec)
    except Exception as exc:  # noqa: BLE001
        return failed("values", "values", rec["what"], exc)
    if with_peers:
        run_peers(P.values_peers(), ds, rec, values_counts, repeats, slow_seconds)
    return rec


def watchlist_stage(datasets: dict[str, Dataset], repeats: int, slow_seconds: float) -> dict:
    """The message-side watchlist scan (``EgressDetector.prescan``) over every format's synthetic
    messages, one in 50 with a watched name planted (benchmarks/watchlist.py), against
    python-hyperscan and a ``bytes.find`` loop with the same boundary checks."""
    from flowaudit.detect.egress import EgressDetector

    from . import watchlist as W

    ds = W.planted(datasets)
    rec = stage_record("watchlist", "values", "message-side watchlist scan: literals with host and token "
                       "boundaries, then their base64 aliases (EgressDetector.prescan)", dataset=_ds_label(ds),
                       bytes=ds.nbytes, items=len(ds), item_unit="messages")
    try:
        det = EgressDetector()
        t, c, mem = measure(lambda: W.flowaudit_counts(det, ds), repeats)
        rec.update(timing=t, memory=mem, counts=c)
        _rates(rec)
    except Exception as exc:  # noqa: BLE001
        return failed("watchlist", "values", rec["what"], exc)
    run_peers(W.peers(det.watchlist), ds, rec, lambda d: W.flowaudit_counts(det, d), repeats, slow_seconds)
    return rec


# --------------------------------------------------------------------------------- batch path

def mixed_values(datasets: dict[str, Dataset], seed: int = 1) -> tuple[list[bytes], np.ndarray]:
    """All synthetic messages of every format, interleaved in a fixed pseudo-random order."""
    from flowaudit.decode import FORMAT_CODES
    vals, decl = [], []
    for f in FORMATS:
        if f in datasets:
            v = datasets[f].values()
            vals.extend(v)
            decl.extend([FORMAT_CODES[f]] * len(v))
    order = np.random.default_rng(seed).permutation(len(vals))
    return [vals[i] for i in order], np.asarray(decl, np.uint8)[order]


def _classifier(threads: int = 1):
    from flowaudit.pipeline import Classifier
    from flowaudit.protect import Protector
    return Classifier(Protector(b"benchmark-key-not-secret"), threads=threads)


def _write_parquet(tables, compression: str, row_group_size: int) -> int:
    """Parquet bytes in memory, with the options of the service's sink."""
    import pyarrow.parquet as pq

    from flowaudit.datasets import parquet_options
    n = 0
    for t in tables:
        b = io.BytesIO()
        pq.write_table(t, b, **parquet_options(t.schema, compression, row_group_size))
        n += b.tell()
    return n


def batch_pass(clf, vals, decl, batch_size: int, compression: str = "zstd", row_group_size: int = 65536,
               keep_tables: bool = False) -> dict:
    """Batch.from_values -> Classifier -> Arrow tables -> Parquet bytes, batch by batch, as the
    stream's worker runs them: the next batch's kernels are started before this one is finished
    (``Classifier.pipelined``), and each batch's Parquet is written on a thread while the next is
    classified, as the stream's writer thread does (``sink.write_behind``, on by default).  A
    batch's latency runs from its ``Batch.from_values`` to its tables handed to the writer."""
    from collections import deque

    from flowaudit.pipeline import Batch
    from flowaudit.scan import WriteBehind
    lat, out_bytes, hits, quarantined, kept = [], 0, 0, 0, []
    behind = WriteBehind()
    t0s: deque = deque()

    def batches():
        for i in range(0, len(vals), batch_size):
            t0s.append(time.perf_counter())
            yield Batch.from_values(vals[i:i + batch_size], decl[i:i + batch_size])

    for _b, r in clf.pipelined(batches()):
        tables = (r.messages, r.hits, r.quarantine)
        out_bytes += behind.submit(_write_parquet, tables, compression, row_group_size) or 0
        lat.append(time.perf_counter() - t0s.popleft())
        hits += r.hits.num_rows
        quarantined += r.quarantine.num_rows
        if keep_tables:
            kept.append(tables)
    out_bytes += behind.close() or 0
    return {"latencies": lat, "parquet_bytes": out_bytes, "hits": hits, "quarantined": quarantined,
            "tables": kept}


def batch_stage(datasets: dict[str, Dataset], repeats: int, batch_size: int = 5000) -> dict:
    from flowaudit.config import KafkaSettings
    vals, decl = mixed_values(datasets)
    nbytes = sum(map(len, vals))
    threads = KafkaSettings().kernel_threads         # what flowaudit stream runs with by default
    rec = stage_record("batch path", "batch", f"Batch.from_values -> Classifier ({threads} kernel threads, "
                       f"the next batch started before one is finished, as the stream's worker) -> Arrow "
                       f"tables -> Parquet (zstd) bytes in memory on a thread beside the next batch (the "
                       f"stream's write-behind), {batch_size} messages per batch, no Kafka",
                       dataset=f"synthetic, all formats interleaved: {len(vals):,} messages, {nbytes / MB:.1f} MB",
                       bytes=nbytes, items=len(vals), item_unit="messages")
    try:
        clf = _classifier(threads)
        res = {}

        def fn():
            res.update(batch_pass(clf, vals, decl, batch_size))
            return res
        t, r, mem = measure(fn, repeats)
        lat = np.asarray(r["latencies"])
        rec.update(timing=t, memory=mem, counts={"messages": len(vals), "hits": r["hits"],
                                                 "quarantined": r["quarantined"]})
        rec["extra"] = {"batch_size": batch_size, "kernel_threads": threads,
                        "batch_latency_ms_median": float(np.median(lat) * 1e3),
                        "batch_latency_ms_p95": float(np.percentile(lat, 95) * 1e3),
                        "parquet_bytes": r["parquet_bytes"]}
        _rates(rec)
        run_peers([_raw_parquet_peer(decl)], _as_dataset(vals), rec,
                  lambda d: {"messages": len(d)}, repeats, 0)
    except Exception as exc:  # noqa: BLE001
        return failed("batch path", "batch", rec["what"], exc)
    return rec


def _as_dataset(vals: list[bytes]) -> Dataset:
    from .corpus import from_values
    return from_values("mixed", "synth", vals)


def _raw_parquet_peer(decl) -> P.Peer:
    """The floor: the same values as an Arrow binary column written to Parquet, no classification."""
    import pyarrow as pa

    def work(ds):
        vals = ds.values()

        def run():
            t = pa.table({"value": pa.array(vals, pa.binary()), "format": pa.array(decl[: len(vals)])})
            _write_parquet([t], "zstd", 65536)
            return {"messages": t.num_rows}
        return run
    return P.Peer("pyarrow: raw values -> Parquet (no classification)", P.version("pyarrow"), work,
                  compare={"messages": "messages"}, note="the floor of the batch path")


# ------------------------------------------------------------------------------ archive scan

def scan_archive(seed: int, mib: float, cache_dir) -> Path:
    """An EDI archive file of ``mib`` MiB, built once from synthetic traffic and cached under
    ``cache_dir``: EDIFACT and X12 interchanges end to end as a day's archive holds them (every
    third EDIFACT one behind a ``UNA`` service string advice and a line break; CRLF, LF or nothing
    between interchanges).  Keyed by seed, size and the generator's hash."""
    from flowaudit import synth

    from .corpus import _size_tag, generator_hash
    d = Path(cache_dir)
    path = d / f"scan-archive-s{seed}-{_size_tag(mib)}mib-{generator_hash()}.edi"
    if path.exists():
        return path
    d.mkdir(parents=True, exist_ok=True)
    target = int(mib * (1 << 20))
    tmp = d / f".{path.name}.{os.getpid()}"
    total = 0
    with open(tmp, "wb") as f:
        for k, m in enumerate(synth.generate(seed, 1 << 40, formats=("edifact", "x12"))):
            v = m.value
            if m.format == "edifact" and k % 3 == 0 and v.startswith(b"UNB"):
                v = b"UNA:+.? '\n" + v
            v += (b"\r\n", b"\n", b"")[k % 3]
            f.write(v)
            total += len(v)
            if total >= target:
                break
    os.replace(tmp, path)
    return path


def scan_pass(clf, path: Path, batch_bytes: int, compression: str | None = "zstd") -> dict:
    """``flowaudit.scan.scan`` over one file (mmap -> split kernel -> batches -> Classifier.start /
    finish -> Arrow tables), each batch's tables written to Parquet bytes in memory on a thread
    while the next batch is classified, as ``flowaudit scan --out`` writes its hits
    (scan.WriteBehind); ``compression`` None: no Parquet at all (the classification alone)."""
    from flowaudit.scan import WriteBehind, scan
    lat, n, hits, decoded, quarantined, out_bytes = [], 0, 0, 0, 0, 0
    behind = WriteBehind()
    t0 = time.perf_counter()
    for batch, r in scan([str(path)], clf, batch_bytes=batch_bytes):
        if compression is not None:
            out_bytes += behind.submit(_write_parquet, (r.messages, r.hits, r.quarantine), compression, 65536) or 0
        n += len(batch)
        hits += r.hits.num_rows
        decoded += r.messages.num_rows
        quarantined += r.quarantine.num_rows
        lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
    out_bytes += behind.close() or 0
    return {"interchanges": n, "decoded": decoded, "quarantined": quarantined, "hits": hits,
            "parquet_bytes": out_bytes, "latencies": lat}


def scan_stage(seed: int, mib: float, cache_dir, repeats: int, batch_bytes: int | None = None) -> dict:
    """``flowaudit scan`` of one archive file vs the format kernels alone on the same interchanges
    (the issue's target: the batch path at >= 70 % of the kernels' own rate), and the splitter
    kernel alone."""
    from flowaudit.config import KafkaSettings
    from flowaudit.decode import FMT_EDIFACT, FMT_X12
    from flowaudit.kernels import detect as D
    from flowaudit.kernels import split as K
    from flowaudit.scan import DEFAULT_BATCH_BYTES
    batch_bytes = batch_bytes or DEFAULT_BATCH_BYTES
    threads = KafkaSettings().kernel_threads         # what flowaudit scan runs with by default
    what = (f"flowaudit scan of one EDI archive file: mmap -> split kernel -> batches of "
            f"{batch_bytes >> 20} MiB -> Classifier ({threads} kernel threads, as the command's default) -> "
            f"Arrow -> Parquet (zstd) bytes in memory on a thread beside the next batch, no Kafka")
    try:
        path = scan_archive(seed, mib, cache_dir)
    except Exception as exc:  # noqa: BLE001
        return failed("scan archive", "batch", what, exc)
    nbytes = path.stat().st_size
    rec = stage_record("scan archive", "batch", what, bytes=nbytes, item_unit="interchanges",
                       dataset=f"synthetic EDIFACT + X12 archive file, {nbytes / (1 << 20):.0f} MiB "
                               f"(UNA + line breaks, CRLF), cached as {path}")
    try:
        clf = _classifier(threads)
        t, c, mem = measure(lambda: scan_pass(clf, path, batch_bytes), repeats)
        lat = np.asarray(c.pop("latencies"))
        rec.update(timing=t, memory=mem, items=c["interchanges"],
                   counts={k: c[k] for k in ("interchanges", "decoded", "quarantined", "hits")})
        ct, _cc, _cmem = measure(lambda: scan_pass(clf, path, batch_bytes, compression=None), repeats)
        rec["extra"] = {"batch_bytes": batch_bytes, "batches": int(lat.size), "kernel_threads": threads,
                        "batch_latency_ms_median": float(np.median(lat) * 1e3),
                        "batch_latency_ms_p95": float(np.percentile(lat, 95) * 1e3),
                        "parquet_bytes": c["parquet_bytes"],
                        # the same pass without the Parquet writes: what the classification costs
                        "classify_only_mb_per_s": nbytes / ct["median_s"] / 1e6}
        _rates(rec)

        buf = np.fromfile(path, np.uint8)
        cuts, _kinds = K.split_interchanges(buf, 0, buf.shape[0])
        fmt = D.detect_formats(buf, cuts)
        sels = {f: np.flatnonzero(fmt == code).astype(np.int64) for f, code in (("edifact", FMT_EDIFACT),
                                                                                 ("x12", FMT_X12))}

        def kernels():
            out = {"interchanges": 0, "decoded": 0, "hits": 0}
            for f, sel in sels.items():
                r = _decoder(f).classify(buf, cuts, sel)
                out["interchanges"] += int(sel.size)
                out["decoded"] += int((r.status == 0).sum())
                out["hits"] += int(r.n_hits)
            return out
        kt, kc, kmem = measure(kernels, repeats)
        peer = {"name": "format kernels alone (edifact + x12 classify, one call each, same interchanges)",
                "version": P.version("flowaudit"), "status": "ok", "reason": None, "bytes": nbytes, "prefix": False,
                "items": kc["interchanges"], "item_unit": "interchanges", "timing": kt, "memory": kmem,
                "counts": kc, "note": "the kernels' own rate: the batch path's ceiling"}
        _rates(peer)
        peer["ratio"] = rec["mb_per_s"] / peer["mb_per_s"] if peer["mb_per_s"] else None
        peer["counts_check"] = _check_counts(rec["counts"], kc, {"interchanges": "interchanges",
                                                                 "decoded": "decoded", "hits": "hits"})
        st, sc, smem = measure(lambda: int(K.split_interchanges(buf, 0, buf.shape[0])[1].shape[0]), repeats)
        split = {"name": "split kernel alone (kernels/split.py over the file)", "version": P.version("flowaudit"),
                 "status": "ok", "reason": None, "bytes": nbytes, "prefix": False, "items": sc,
                 "item_unit": "interchanges", "timing": st, "memory": smem, "counts": {"interchanges": sc},
                 "note": "the cost of finding the cuts"}
        _rates(split)
        split["ratio"] = rec["mb_per_s"] / split["mb_per_s"] if split["mb_per_s"] else None
        split["counts_check"] = _check_counts(rec["counts"], split["counts"], {"interchanges": "interchanges"})
        rec["peers"] = [peer, split]
        rec["extra"]["ratio_scan_to_kernels"] = peer["ratio"]
        rec["extra"]["ratio_classify_only_to_kernels"] = (rec["extra"]["classify_only_mb_per_s"] / peer["mb_per_s"]
                                                          if peer["mb_per_s"] else None)
    except Exception as exc:  # noqa: BLE001
        return failed("scan archive", "batch", what, exc)
    return rec


# ---------------------------------------------------------------------------------------- e2e

def e2e_stage(count: int, repeats: int, poll: int = 5000) -> dict:
    what = ("flowaudit stream (consume, classify, Parquet with fsync, commit) vs a bare confluent-kafka "
            "consume loop, same embedded broker and data")
    try:
        from . import e2e
    except Exception as exc:  # noqa: BLE001
        return failed("e2e stream", "e2e", what, exc)
    rec = stage_record("e2e stream", "e2e", what, item_unit="messages")
    try:
        res = e2e.run(count=count, poll=poll, repeats=repeats)
        mem = {"peak_rss_mb": max((x.get("peak_rss_mb") or 0) for x in res["runs"]["pipeline"]) or None,
               "start_rss_mb": None,
               "method": "VmHWM of the pipeline's own process (a fresh stream process per run; the broker "
                         "runs in its own)"}
    except Exception as exc:  # noqa: BLE001
        return failed("e2e stream", "e2e", what, exc)
    pipe = [x["seconds"] for x in res["runs"]["pipeline"]]
    bare = [x["seconds"] for x in res["runs"]["bare"]]
    rec.update(dataset=f"synthetic mixed: {res['messages']:,} messages, {res['mb']:.1f} MB, "
                       f"{res['partitions_per_topic']} partitions per topic",
               bytes=int(res["mb"] * MB), items=res["messages"], timing=timing(pipe, 0), memory=mem,
               counts={"messages": res["best"]["pipeline"]["messages"]})
    _rates(rec)
    p = res["best"]["pipeline"]
    rec["extra"] = {"poll_max_messages": poll, "warmup_seconds": p.get("warmup_seconds"),
                    "produce_seconds": res["produce_seconds"], "hits": sum(p.get("hits", {}).values()),
                    "ratio_pipeline_to_bare": res["ratio_pipeline_to_bare"],
                    "findings_share_of_pipeline": p.get("findings_share"), "findings_rows": p.get("findings_rows")}
    b = {"name": "bare confluent-kafka consume loop", "version": P.version("confluent-kafka"), "status": "ok",
         "reason": None, "bytes": rec["bytes"], "prefix": False, "items": res["best"]["bare"]["messages"],
         "item_unit": "messages", "timing": timing(bare, 0), "memory": None,
         "counts": {"messages": res["best"]["bare"]["messages"]}, "note": "consume + len(value), nothing else"}
    _rates(b)
    b["ratio"] = rec["mb_per_s"] / b["mb_per_s"] if b["mb_per_s"] else None
    b["counts_check"] = _check_counts(rec["counts"], b["counts"], {"messages": "messages"})
    rec["peers"] = [b]
    if (os.cpu_count() or 1) >= 2:    # issue #10: the second core as N stream processes in one group
        try:
            w = e2e.run(count=count, poll=poll, repeats=max(1, min(repeats, 3)), n_members=2)
        except Exception as exc:  # noqa: BLE001
            rec["extra"]["workers_error"] = f"{type(exc).__name__}: {exc}"
        else:
            best2 = max(w["runs"]["members2"], key=lambda x: x["data_msg_per_s"])
            rec["extra"].update(workers_scaling_to_last_row=w["data_scaling"], workers_scaling_to_exit=w["scaling"],
                                workers2_msg_per_s=best2["data_msg_per_s"],
                                ratio_workers2_to_bare=best2["data_msg_per_s"] / w["best"]["bare"]["msg_per_s"])
    return rec


def audit_stage(messages: int, cache_dir, dask: bool = True) -> dict:
    """``flowaudit audit`` of a message archive (``synth --dump``, flat layout, cached) vs a bare
    ``polars.scan_parquet`` of the value column (the physical limit), the regex audit a user
    would write in polars (and DuckDB when installed), with peak RSS and Dask 1 -> 2 workers."""
    from . import audit as A

    what = (f"flowaudit audit of a {messages:,}-message Parquet archive (flat Kafka Connect layout), fresh "
            f"process, polars engine, vs a bare scan of the value column and a hand-written regex audit")
    try:
        r = A.run(messages, cache_dir=cache_dir, dask=dask)
    except Exception as exc:  # noqa: BLE001
        return failed("batch audit", "audit", what, exc)
    a = r["audit"]
    rec = stage_record("batch audit", "audit", what, bytes=r["value_bytes"], items=r["rows"], item_unit="messages",
                       dataset=f"synth --dump, {r['rows']:,} messages, {r['value_bytes'] / MB:.0f} MB of values, "
                               f"cached as {r['dump']}",
                       timing=timing([a["seconds"]], 0, None),
                       memory={"peak_rss_mb": a["peak_rss_mb"], "start_rss_mb": None, "method": "child VmHWM, polled"},
                       counts={"messages": a["messages"], "hits": a["hits"], "findings": a["findings"]})
    _rates(rec)

    def peer(name, res, note, counts=None):
        p = {"name": name, "version": P.version("polars"), "status": "ok", "reason": None, "bytes": r["value_bytes"],
             "prefix": False, "items": r["rows"], "item_unit": "messages", "timing": timing([res["seconds"]], 0, None),
             "memory": None, "counts": counts or {}, "note": note,
             "counts_check": {"status": "not_comparable", "text": "not comparable: different questions"}}
        _rates(p)
        p["ratio"] = rec["mb_per_s"] / p["mb_per_s"] if p["mb_per_s"] else None
        rec["peers"].append(p)

    peer("polars.scan_parquet, value column only", r["bare_scan"], "the physical limit: read, decompress, no work")
    peer("polars str.extract_all (containers, IMO, e-mail)", r["polars_regex"],
         "what a user writes by hand: three regexes, no check digits, no context, no findings",
         r["polars_regex"]["counts"])
    if r.get("duckdb_regex"):
        peer("DuckDB regexp_extract_all (same regexes)", r["duckdb_regex"], "the same in DuckDB",
             r["duckdb_regex"]["counts"])
    rec["extra"] = {"ratio_to_bare_scan": r["ratio_to_bare_scan"], "ratio_to_polars_regex": r["ratio_to_polars_regex"],
                    "ratio_to_duckdb_regex": r["ratio_to_duckdb_regex"], "dask": r.get("dask"),
                    "dask_scaling_1_to_2": r.get("dask_scaling_1_to_2"), "polars_threads": r["polars_threads"],
                    "summary": a["summary"]}
    return rec


def memory_stage(sizes, partitions: int = 3) -> dict:
    """Stream memory against input size (issue #10: <= 500 MB over 1M messages, whatever the
    partitions): ``benchmarks.memory``, a fresh ``flowaudit stream --until-drained`` per size, its
    own polled ``VmHWM``, beside a bare consume loop over the same topics in a fresh process."""
    from . import memory as M

    what = ("flowaudit stream --until-drained peak RSS against input size (a fresh process per size, 4 topics), "
            "vs a bare confluent-kafka consume loop over the same topics")
    try:
        r = M.run(sizes, partitions, bare_peer=True)
    except Exception as exc:  # noqa: BLE001
        return failed("stream memory", "memory", what, exc)
    runs = r["runs"]
    big = runs[-1]
    method = "child VmHWM, polled every 0.25 s; a fresh process per size"
    rec = stage_record("stream memory", "memory", what, item_unit="messages",
                       dataset=f"synthetic mixed, {len(runs)} sizes up to {big['messages']:,} messages "
                               f"({big['mb']:.0f} MB), {big['partitions']} partitions",
                       bytes=int(big["mb"] * MB), items=big["messages"],
                       timing=timing([big["seconds"]], 0, None),
                       memory={"peak_rss_mb": big["peak_rss_mb"], "start_rss_mb": None, "method": method},
                       counts={"messages": big["messages"]})
    _rates(rec)
    b = big["bare"]
    peer = {"name": "bare confluent-kafka consume loop (same topics)", "version": P.version("confluent-kafka"),
            "status": "ok", "reason": None, "bytes": rec["bytes"], "prefix": False, "items": b["messages"],
            "item_unit": "messages", "timing": timing([b["seconds"]], 0, None),
            "memory": {"peak_rss_mb": b["peak_rss_mb"], "start_rss_mb": None, "method": method},
            "counts": {"messages": b["messages"]},
            "note": "the floor: a Python process that imports confluent_kafka only, with the stream's consumer "
                    "settings (16 MiB prefetch); process lifetimes, start-up included"}
    _rates(peer)
    peer["ratio"] = rec["mb_per_s"] / peer["mb_per_s"] if peer["mb_per_s"] else None
    peer["counts_check"] = _check_counts(rec["counts"], peer["counts"], {"messages": "messages"})
    rec["peers"] = [peer]
    rec["extra"] = {"target_mb": 500, "runs": [
        {"messages": x["messages"], "mb": x["mb"], "partitions": x["partitions"], "seconds": x["seconds"],
         "peak_rss_mb": x["peak_rss_mb"], "peak_anon_mb": x["peak_anon_mb"], "peak_file_mb": x["peak_file_mb"],
         "budget_flushes": x["budget_flushes"], "bare_peak_rss_mb": x["bare"]["peak_rss_mb"]} for x in runs]}
    return rec


def external_stage(module: str, group: str, what: str, quick: bool, repeats: int, scale: float = 1.0) -> dict:
    """NetFlow decode (benchmarks/netflow.py) and CIDR lookups (benchmarks/ipset.py): their own
    ``run()`` (or ``measure()``) does the measuring and runs its peers (nfdump, a plain-Python
    decoder, numpy, ipaddress).  Contract: keyword arguments ``quick``, ``repeats`` and ``scale``
    (a fraction of the default sizes; each passed only if the signature names it); returns a dict,
    kept whole under ``extra.result``; top-level ``mb_per_s`` and ``items_per_s`` /
    ``records_per_s`` / ``lookups_per_s`` are shown in the table."""
    fn, why = P.external(module)
    if fn is None:
        return skipped(module, group, what, why)
    kw = {}
    params = inspect.signature(fn).parameters
    for k, v in (("quick", quick), ("repeats", repeats), ("repeat", repeats), ("scale", scale)):
        if k in params:
            kw[k] = v
    try:
        method = rss_reset()
        t0 = time.perf_counter()
        res = fn(**kw)
        wall = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001
        return failed(module, group, what, exc)
    if not isinstance(res, dict):
        return skipped(module, group, what, f"benchmarks.{module}.{fn.__name__}() returned "
                       f"{type(res).__name__}, not a dict")
    rec = stage_record(module, group, what, memory={"peak_rss_mb": rss_peak_mb(method), "start_rss_mb": None,
                                                    "method": method})
    rec["extra"] = {"result": _jsonable(res), "wall_s": wall, "called": f"benchmarks.{module}.{fn.__name__}({kw})"}
    for k in ("mb_per_s", "items_per_s", "records_per_s", "lookups_per_s"):
        if isinstance(res.get(k), (int, float)):
            rec["items_per_s" if k != "mb_per_s" else "mb_per_s"] = float(res[k])
    return rec


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


# ------------------------------------------------------------------------------- cold start

_COLD_SCRIPT = r"""
import json, time
from numba.core import event
stack, per_kernel = [], {}


class Compiles(event.Listener):
    # every numba compile (not a cache load): CPU seconds exclusive of the kernels it compiles
    # inside (compiling is single-threaded; wall time on a shared machine mostly measures the load)
    def on_start(self, ev):
        stack.append([ev.data["dispatcher"].py_func, time.process_time(), 0.0])

    def on_end(self, ev):
        fn, t, inner = stack.pop()
        dt = time.process_time() - t
        name = fn.__module__.replace("flowaudit.kernels.", "") + "." + fn.__qualname__
        s, n = per_kernel.get(name, (0.0, 0))
        per_kernel[name] = (s + dt - inner, n + 1)
        if stack:
            stack[-1][2] += dt


event.register("numba:compile", Compiles())
t0, c0 = time.perf_counter(), time.process_time()
import flowaudit
from flowaudit.pipeline import Classifier
from flowaudit.protect import Protector
from flowaudit.decode import FMT_EDIFACT, FMT_JSON, FMT_X12, FMT_XML
t1, c1 = time.perf_counter(), time.process_time()
c = Classifier(Protector(b"k"))
per, per_cpu = {}, {}
for name, f in (("json", FMT_JSON), ("xml", FMT_XML), ("x12", FMT_X12), ("edifact", FMT_EDIFACT)):
    c2 = time.process_time()
    per[name] = c.warmup({f})   # the first also compiles the shared kernels (detect, digest, dedupe)
    per_cpu[name] = time.process_time() - c2
t2, c3 = time.perf_counter(), time.process_time()
top = sorted(per_kernel.items(), key=lambda kv: -kv[1][0])[:10]
# CPU seconds as well as wall time: compiling is single-threaded, and on a shared machine the
# CPU time varies far less than the wall time
print(json.dumps({"import_s": t1 - t0, "kernels_s": t2 - t1, "per_format_s": per,
                  "import_cpu_s": c1 - c0, "kernels_cpu_s": c3 - c1, "per_format_cpu_s": per_cpu,
                  "compiles": sum(n for _s, n in per_kernel.values()), "compiled_functions": len(per_kernel),
                  "top_kernels": [{"kernel": k, "compile_s": s, "specialisations": n} for k, (s, n) in top],
                  "package": flowaudit.__file__}))
"""


def _snapshot(dst: Path) -> Path:
    """A copy of the flowaudit package (with its kernels and schemas) under ``dst``: the numba
    cache is keyed on each source file's path and mtime, so the warm run must see the very files
    the cold run compiled, even while someone edits the checkout."""
    import shutil

    import flowaudit
    import flowaudit.kernels
    import flowaudit.schemas
    ign = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    pkg = dst / "flowaudit"
    shutil.copytree(Path(flowaudit.__file__).parent, pkg, ignore=ign, dirs_exist_ok=True)
    for sub, mod in (("kernels", flowaudit.kernels), ("schemas", flowaudit.schemas)):
        shutil.copytree(Path(mod.__file__).parent, pkg / sub, ignore=ign, dirs_exist_ok=True)
    return dst


def _snapshot_env(src: Path, cache: Path) -> dict:
    """The environment of a subprocess that imports the snapshot at ``src`` and keeps numba's
    cache in ``cache``."""
    return {**os.environ, "NUMBA_CACHE_DIR": str(cache),
            "PYTHONPATH": os.pathsep.join([str(src)] + [x for x in [os.environ.get("PYTHONPATH")] if x])}


def cold_start(timeout: float = 900) -> dict:
    """Compile time with an empty numba cache, then the same with that cache filled (warm start):
    two subprocesses that import a snapshot of the package with NUMBA_CACHE_DIR = a new temp folder."""
    import json
    import subprocess
    import sys
    import tempfile
    out = {"method": "subprocess: import flowaudit.pipeline + Classifier.warmup() (the four format kernels "
                     "and the detector) from a snapshot of the package; NUMBA_CACHE_DIR = an empty temp folder "
                     "(cold), then the same folder again (warm); compiles, per-format shares and the kernels "
                     "that took longest to compile (numba:compile events, nested compiles excluded, CPU seconds); "
                     "wall and CPU seconds"}
    with tempfile.TemporaryDirectory(prefix="flowaudit-cold-") as d:
        src = _snapshot(Path(d) / "src")
        cache = Path(d) / "numba-cache"
        cache.mkdir()
        env = _snapshot_env(src, cache)
        for name in ("cold", "warm"):
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-c", _COLD_SCRIPT], env=env, capture_output=True, text=True,
                               timeout=timeout, cwd=d)
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                out[name] = {"status": "error", "reason": (p.stderr.strip().splitlines() or ["?"])[-1]}
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            if not r.pop("package", "").startswith(str(src)):
                out[name] = {"status": "error", "reason": "the subprocess did not import the snapshot"}
                continue
            tot = r["kernels_s"] or 1.0
            r["per_format_share"] = {k: v / tot for k, v in r["per_format_s"].items()}
            out[name] = {"status": "ok", "process_s": wall, **r}
        out["warmup"] = _warmup_command(src, Path(d) / "numba-cache-warmup", timeout)
    return out


def _warmup_command(src: Path, cache: Path, timeout: float) -> dict:
    """``flowaudit warmup`` as an install runs it (every kernel: the formats, the hit tables, the
    audit's and scan's buffers; ``--jobs`` at its default, two processes on two or more CPUs) with
    an empty cache, then again with that cache: wall seconds and the cache files it leaves."""
    import subprocess
    import sys
    cache.mkdir()
    env = _snapshot_env(src, cache)
    out = {"method": "`python -m flowaudit warmup` (default --jobs) from the same snapshot, its own empty "
                     "NUMBA_CACHE_DIR (cold), then again (warm)", "cpus": os.cpu_count()}
    for name in ("cold", "warm"):
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "flowaudit", "warmup"], env=env, capture_output=True,
                           text=True, timeout=timeout, cwd=src.parent)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            out[name] = {"status": "error", "reason": (p.stderr.strip().splitlines() or ["?"])[-1]}
            continue
        out[name] = {"status": "ok", "process_s": wall,
                     "cache_files": sum(1 for f in cache.rglob("*") if f.suffix in (".nbi", ".nbc"))}
    return out


# ---------------------------------------------------------------------------------- sweeps

def kernel_parallel_variants() -> list[str]:
    """Kernels compiled with ``parallel=True`` / using ``prange`` (none today)."""
    kdir = Path(importlib.import_module("flowaudit.kernels").__file__).parent
    return sorted(p.stem for p in kdir.glob("*.py") if "prange" in p.read_text() or "parallel=True" in p.read_text())


def sweep_batch_size(datasets, sizes, repeats: int) -> dict:
    """Messages per kernel call: per-format classify in chunks of B, and the whole batch path."""
    points = []
    vals, decl = mixed_values(datasets)
    nbytes = sum(map(len, vals))
    clf = _classifier()
    for b in sizes:
        row = {"value": b, "series": {}}
        for f in FORMATS:
            ds = datasets.get(f)
            if ds is None or (b > len(ds) and b != sizes[0]):
                continue
            dec = _decoder(f)
            sel = ds.sel
            chunks = [sel[i:i + b] for i in range(0, len(sel), b)]
            lat: list[float] = []

            def fn():
                lat.clear()
                for c in chunks:
                    t0 = time.perf_counter()
                    dec.classify(ds.buf, ds.offsets, c)
                    lat.append(time.perf_counter() - t0)
            t, _, _ = measure(fn, repeats)
            row["series"][f] = {"mb_per_s": ds.nbytes / MB / t["median_s"],
                                "latency_ms": float(np.median(lat) * 1e3)}
        if b <= len(vals):
            t, r, _ = measure(lambda: batch_pass(clf, vals, decl, b), repeats)
            row["series"]["batch path"] = {"mb_per_s": nbytes / MB / t["median_s"],
                                           "latency_ms": float(np.median(r["latencies"]) * 1e3)}
        points.append(row)
    return {"knob": "batch-size", "unit": "messages per kernel call", "log_x": True, "points": points}


def sweep_parquet(datasets, knob: str, values: list, repeats: int, batch_size: int = 5000) -> dict:
    """Parquet row-group size or compression: the write step of the batch path, batch by batch,
    on the tables of one classifier pass (classification is not re-timed)."""
    vals, decl = mixed_values(datasets)
    nbytes = sum(map(len, vals))
    tables = batch_pass(_classifier(), vals, decl, batch_size, keep_tables=True)["tables"]
    points = []
    for v in values:
        comp, rg = ("zstd", v) if knob == "row-group" else (v, 65536)
        lat: list[float] = []
        size = [0]

        def fn():
            lat.clear()
            size[0] = 0
            for tb in tables:
                t0 = time.perf_counter()
                size[0] += _write_parquet(tb, comp, rg)
                lat.append(time.perf_counter() - t0)
        t, _, _ = measure(fn, repeats)
        points.append({"value": v, "series": {"parquet write": {
            "mb_per_s": nbytes / MB / t["median_s"], "latency_ms": float(np.median(lat) * 1e3),
            "output_mb": size[0] / MB}}})
    unit = "rows per row group" if knob == "row-group" else "codec"
    return {"knob": knob, "unit": unit, "log_x": knob == "row-group", "points": points,
            "note": f"input MB/s through the Parquet write of messages+hits+quarantine, {batch_size} messages "
                    f"per batch; latency = one batch's write"}


def sweep_poll(count: int, values: list[int], repeats: int) -> dict:
    points = []
    for v in values:
        r = e2e_stage(count, repeats, poll=v)
        if r["status"] != "ok":
            points.append({"value": v, "series": {}, "error": r["reason"]})
            continue
        bare = r["peers"][0]
        points.append({"value": v, "series": {
            "flowaudit stream": {"mb_per_s": r["mb_per_s"], "latency_ms": r["timing"]["median_s"] / max(1, r["items"] / v) * 1e3},
            "bare consume": {"mb_per_s": bare["mb_per_s"], "latency_ms": bare["timing"]["median_s"] / max(1, r["items"] / v) * 1e3}}})
    return {"knob": "poll", "unit": "messages per poll (kafka.poll_max_messages)", "log_x": True, "points": points,
            "note": "latency = run time / number of polls (mean time per poll batch)"}


def sweep_threads(datasets, text: Dataset, max_threads: int, repeats: int) -> dict:
    """1..N threads, each running the nogil kernels over its own shard of the messages.

    No flowaudit kernel has a parallel (prange) variant, so NUMBA_NUM_THREADS changes nothing;
    scaling comes from calling the nogil kernels from N Python threads (what the stream's
    worker thread does), one contiguous shard each."""
    par = kernel_parallel_variants()
    points = []
    for n in range(1, max_threads + 1):
        row = {"value": n, "series": {}}
        with ThreadPoolExecutor(n) as ex:
            for f in FORMATS:
                ds = datasets.get(f)
                if ds is None:
                    continue
                dec = _decoder(f)
                shards = np.array_split(ds.sel, n)

                def fn(dec=dec, ds=ds, shards=shards):
                    list(ex.map(lambda s: dec.classify(ds.buf, ds.offsets, s), shards))
                t, _, _ = measure(fn, repeats)
                row["series"][f] = {"mb_per_s": ds.nbytes / MB / t["median_s"],
                                    "latency_ms": t["median_s"] * 1e3}
            scan = _values_kernel()
            cuts = np.linspace(0, text.nbytes, n + 1).astype(np.int64)
            parts = [text.buf[cuts[i]:cuts[i + 1]] for i in range(n)]
            t, _, _ = measure(lambda: list(ex.map(scan, parts)), repeats)
            row["series"]["values"] = {"mb_per_s": text.nbytes / MB / t["median_s"], "latency_ms": t["median_s"] * 1e3}
        points.append(row)
    note = ("no kernel has a parallel (prange) variant: NUMBA_NUM_THREADS has no effect; N threads call "
            "the nogil kernels on N shards" if not par else f"parallel kernels: {', '.join(par)}")
    return {"knob": "threads", "unit": "threads (one shard each)", "log_x": False, "points": points,
            "note": note, "parallel_kernels": par, "cores": len(os.sched_getaffinity(0))}
