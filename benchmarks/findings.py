"""The findings stage against the classification it follows, on the same synthetic data.

The exposure scenario (flowaudit.synth.exposure_scenario) with ``--count`` background messages
(one every ``--spacing-ms`` of event time: 18,000 per hour window by default) and its flows and
DNS answers repeated every hour is
classified in batches of ``--batch`` messages (Classifier.run with the egress detector, kernels
warmed first), then correlated into findings twice: the stream's way, one call per one-hour
window with that window's rows and the previous window's findings, and the batch way, one call
over everything.  The figure that matters is correlation seconds / classification seconds (the
classification is only part of the pipeline's time, so the ratio to the whole pipeline is lower).

    python -m benchmarks.findings --count 100000
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowaudit import synth
from flowaudit.detect import zones
from flowaudit.detect import findings as F
from flowaudit.detect.inventory import load as load_inventory
from flowaudit.detect.egress import EgressDetector
from flowaudit.pipeline import Batch, Classifier, format_code
from flowaudit.protect import Protector
from flowaudit.detect.watchlist import Watchlist

HOUR_NS = 3_600_000_000_000


def run(count: int, batch: int, spacing_ms: int = 200, seed: int = 8) -> dict:
    sc = synth.exposure_scenario(seed=seed, background=count, spacing_ms=spacing_ms)
    tmp = Path(tempfile.mkdtemp(prefix="flowaudit-bench-findings-"))
    (tmp / "wl").mkdir()
    (tmp / "wl" / "ops.toml").write_text(sc.watchlist_toml)
    (tmp / "policy.toml").write_text(sc.policy_toml)
    det = EgressDetector(Watchlist(tmp / "wl"), zones.load(tmp / "policy.toml"))
    inv = load_inventory(tmp / "policy.toml")
    clf = Classifier(Protector(b"bench-key-not-secret-0123"), egress=det)
    clf.warmup()
    topics = sorted({t for t, _, _ in sc.messages})
    counters = {t: 0 for t in topics}
    msgs = sorted(sc.messages, key=lambda x: x[2])
    offsets = []
    for t, _, _ in msgs:
        offsets.append(counters[t])
        counters[t] += 1
    hits, messages, transfers = [], [], []
    classify_s = 0.0
    nbytes = 0
    for lo in range(0, len(msgs), batch):
        part = msgs[lo:lo + batch]
        b = Batch.from_values([m.value for _, m, _ in part], [format_code(m.format) for _, m, _ in part],
                              sources=topics, source_idx=[topics.index(t) for t, _, _ in part],
                              partition=np.zeros(len(part), np.int32), offset=np.asarray(offsets[lo:lo + batch]),
                              ts_ms=np.asarray([ts for *_, ts in part]), keys=[m.key for _, m, _ in part])
        nbytes += int(b.offsets[-1])
        t0 = time.perf_counter()
        r = clf.run(b)
        classify_s += time.perf_counter() - t0
        hits.append(r.hits)
        messages.append(r.messages)
        transfers.append(r.transfers)
    hours = int((msgs[-1][2] - synth.SCENARIO_T0_MS) // 3_600_000) + 1
    fa = sc.flow_arrays()
    for k in range(hours):   # the scenario's DNS answers and flows, once an hour
        dns = [json.dumps(dict(d, ts=d["ts"] + 3600 * k)).encode() for d in map(json.loads, sc.dns)]
        transfers.append(det.observe_dns(dns, source="dns"))
        transfers.append(det.detect_flows(dict(fa, first_ns=fa["first_ns"] + k * HOUR_NS), source="netflow",
                                          partition=0))
    H, M, T = pa.concat_tables(hits), pa.concat_tables(messages), pa.concat_tables(transfers)
    # the stream's way: one call per window with that window's rows (no look-back here)
    t_ns = pc.coalesce(T["time_ns"], pc.multiply(T["ts_ms"], 1_000_000)).to_numpy(zero_copy_only=False)
    h_ns = pc.multiply(H["ts_ms"], 1_000_000).to_numpy(zero_copy_only=False)
    w0 = synth.SCENARIO_T0_MS * 1_000_000
    slices = []   # the stream holds each window's rows already: slicing is not timed
    for k in range(hours):
        ws = w0 + k * HOUR_NS
        slices.append((ws, T.filter(pa.array((t_ns >= ws) & (t_ns < ws + HOUR_NS))),
                       H.filter(pa.array((h_ns >= ws) & (h_ns < ws + HOUR_NS)))))
    t0 = time.perf_counter()
    prev = None
    stream_rows = 0
    for ws, tw, hw in slices:
        out = F.correlate(tw, hw, M, window_start_ns=ws, inventory=inv, previous=prev)
        stream_rows += out.num_rows
        prev = out
    stream_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch_out = F.correlate(T, H, M, inventory=inv)
    batch_s = time.perf_counter() - t0
    return {"bench": "findings", "messages": len(msgs), "bytes": nbytes, "hits": H.num_rows,
            "transfers": T.num_rows, "windows": hours, "spacing_ms": spacing_ms, "findings": batch_out.num_rows,
            "classify_seconds": round(classify_s, 3), "correlate_stream_seconds": round(stream_s, 3),
            "correlate_batch_seconds": round(batch_s, 3),
            "stream_ratio": round(stream_s / classify_s, 4), "batch_ratio": round(batch_s / classify_s, 4),
            "machine": platform.processor() or platform.machine()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100_000, help="background messages (default 100000)")
    ap.add_argument("--batch", type=int, default=5000, help="messages per classified batch (default 5000)")
    ap.add_argument("--spacing-ms", type=int, default=200,
                    help="event time between background messages (default 200: 18,000 messages per window)")
    ap.add_argument("--out", metavar="FILE", help="also write the result as JSON")
    args = ap.parse_args(argv)
    res = run(args.count, args.batch, args.spacing_ms)
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
