"""End to end: flowaudit's stream pipeline against a bare confluent-kafka consume loop.

Same embedded broker, same topics and bytes, same run.  Both start from a fresh consumer group
and are timed from the first message received to the last offset handled (the pipeline's time
includes classification, Parquet publish with fsync and offset commits; its kernel warm-up is
reported separately).  The figure that matters is the ratio pipeline / bare.

The pipeline runs in a fresh process with ``flowaudit stream``'s own process settings (glibc
heap, Arrow pool: ``flowaudit.memory.COMMANDS``), as the command runs it.  In this process, with
glibc's and pyarrow's defaults, it measured about 10 % faster (100k messages: 41.0k against
35.4k msg/s; 0.66 M against 1.78 M page faults): the command pins a low mmap threshold that holds
its peak RSS under 500 MB over 1M messages.

The findings share is the pipeline's time on findings (keeping each window's evidence as the
writers take it, then closing the windows: cuts, correlation, the findings file) over its active
time; ``--repeats`` prints it for every run (on shared cores one run is noisy).

    python -m benchmarks.e2e --count 100000
    python -m benchmarks.e2e --count 100000 --repeats 2 --before-peer   # also the code before, alternated
    python -m benchmarks.e2e --count 100000 --workers 2   # 1 -> 2 stream processes, same run

``--workers N``: what ``flowaudit stream --workers N`` runs, N stream processes in one consumer
group over every topic (the group shares the partitions), run at once and timed from the first
message any of them received to the last file any of them published; the same with one process,
alternated.  The rows must equal one process's, except findings: a member correlates the
partitions it owns, so an exposure spread over both members' partitions is found by each.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError

from flowaudit import synth
from flowaudit.broker import EmbeddedBroker
from flowaudit.config import Settings
from flowaudit.demo import produce
from flowaudit.memory import COMMANDS, for_command
from flowaudit.service import StreamService
from flowaudit.sources.kafka import check_broker, consumer_config


def bare_consume(settings: Settings, expected: int, poll: int) -> dict:
    """The peer: consume every message, touch each value (len), nothing else."""
    parts = sum(check_broker(settings).values())
    # the peer keeps librdkafka's own prefetch (64 MiB): the service's smaller one saves memory
    # and would slow the peer, not the service (whose worker is the bottleneck)
    c = Consumer(consumer_config(settings, **{"queued.max.messages.kbytes": 64 * 1024,
                                              "fetch.max.bytes": 32 << 20}))
    c.subscribe(list(settings.kafka.topics))
    n = nbytes = 0
    eof: set = set()
    t_first = None
    try:
        while len(eof) < parts or n < expected:
            msgs = c.consume(num_messages=poll, timeout=0.5)
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof.add((m.topic(), m.partition()))
                    continue
                if t_first is None:
                    t_first = time.monotonic()
                eof.discard((m.topic(), m.partition()))
                v = m.value()
                n += 1
                nbytes += len(v) if v is not None else 0
        secs = time.monotonic() - t_first
    finally:
        c.close()
    return {"messages": n, "bytes": nbytes, "seconds": secs, "msg_per_s": n / secs, "mb_per_s": nbytes / 1e6 / secs}


def _child(fn, args, out) -> None:
    """A stream process (spawned): ``flowaudit stream``'s process settings, then ``fn(*args)``
    with this process's peak RSS added (``VmHWM``: a fresh address space at exec, unlike
    ``ru_maxrss``, which Linux carries over from the parent)."""
    from .stages import _status_kb

    for_command("stream")
    res = fn(*args)
    kb = _status_kb("VmHWM")
    res["peak_rss_mb"] = kb / 1024 if kb is not None else None
    out.put(res)


def in_stream_processes(n: int, fn, *args) -> list:
    """``fn(*args)`` in ``n`` fresh processes at once, each set up as ``flowaudit stream`` sets
    itself up (Arrow's C++ pool chosen before pyarrow's import, through the variable); their
    results."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    had = os.environ.get("ARROW_DEFAULT_MEMORY_POOL")
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", COMMANDS["stream"][1])
    try:
        procs = [ctx.Process(target=_child, args=(fn, args, out)) for _ in range(n)]
        for p in procs:
            p.start()
    finally:
        if had is None:
            os.environ.pop("ARROW_DEFAULT_MEMORY_POOL", None)
    res = [out.get(timeout=900) for _ in procs]
    for p in procs:
        p.join()
    return res


def pipeline(settings: Settings, before: bool = False) -> dict:
    """The stream service in a stream process; ``before``: with ``sink.write_behind`` the other way
    round (on, the default: a writer thread encodes and fsyncs the file sets beside the worker;
    off: the worker does it between batches)."""
    return in_stream_processes(1, _pipeline, settings, before)[0]


def _pipeline(settings: Settings, before: bool) -> dict:
    import dataclasses

    if before:
        sink = dataclasses.replace(settings.sink, write_behind=not settings.sink.write_behind)
        settings = dataclasses.replace(settings, sink=sink)
    s = StreamService(settings, metrics=None, until_drained=True, install_signals=False).run()
    secs = s.active_seconds
    return {"messages": s.messages, "bytes": s.bytes, "seconds": secs, "msg_per_s": s.messages / secs,
            "mb_per_s": s.bytes / 1e6 / secs, "warmup_seconds": s.warmup_seconds,
            "findings_rows": s.findings, "findings_seconds": s.findings_seconds,
            "findings_share": s.findings_seconds / secs if secs else None,
            "hits": dict(s.hits), "quarantined": dict(s.quarantined), "files": dict(s.files),
            "rows": dict(s.rows), "budget_flushes": s.budget_flushes, "batches": s.batches,
            "write_behind_seconds": s.write_behind_seconds, "write_wait_seconds": s.write_wait_seconds}


def _member(settings: Settings) -> dict:
    """One stream process of ``--workers``."""
    s = StreamService(settings, metrics=None, until_drained=True, install_signals=False).run()
    return {"messages": s.messages, "first": s.first_message_at, "end": s.first_message_at + s.active_seconds,
            "exit_code": s.exit_code, "files": dict(s.files), "rows": dict(s.rows)}


def members(settings: Settings, n: int) -> dict:
    """``n`` stream processes in one group, from the first message to the last file published
    (``seconds``), and to the last file of the per-message datasets (``data_seconds``)."""
    res = in_stream_processes(n, _member, settings)   # the same settings, as --workers gives each worker
    if any(r["exit_code"] for r in res):
        raise RuntimeError(f"a member failed: {res}")
    first = min(r["first"] for r in res)
    secs = max(r["end"] for r in res) - first
    # the last row of traffic durable: the newest file of the per-message datasets (without the
    # members' wait for each other's commits at the drain, and the findings they close after it)
    data = [f.stat().st_mtime for d in ("messages", "quarantine", "hits", "transfers")
            for f in (Path(settings.sink.root) / f"dataset={d}").rglob("*.parquet")]
    data_secs = max(data) - first
    n_msgs = sum(r["messages"] for r in res)
    rows: dict = {}
    for r in res:
        for d, c in r["rows"].items():
            rows[d] = rows.get(d, 0) + c
    return {"members": n, "messages": n_msgs, "seconds": secs, "msg_per_s": n_msgs / secs, "rows": rows,
            "data_seconds": data_secs, "data_msg_per_s": n_msgs / data_secs,
            "per_member_messages": [r["messages"] for r in res]}


def run(count: int = 50_000, seed: int = 3, partitions: int = 3, poll: int = 5000, repeats: int = 1,
        rotate_records: int = 100_000, before_peer: bool = False, n_members: int = 0) -> dict:
    """``before_peer``: also run the pipeline as it was before (see :func:`pipeline`), alternated
    with the current one in the same run, so the two are compared on the same load."""
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="flowaudit-bench-") as tmp:
        broker.create_topics({t: partitions for t in synth.TOPICS.values()})
        t0 = time.monotonic()
        n, nbytes = produce(synth.generate(seed, count), broker.bootstrap, partitions=partitions, spacing_ms=20)
        produce_s = time.monotonic() - t0
        results = {"bare": [], "pipeline": []}
        names = ("bare", "pipeline")
        if before_peer:
            results["pipeline_before"] = []
            names = ("bare", "pipeline_before", "pipeline")
        if n_members:
            names = ("bare", "members1", f"members{n_members}")
            results = {k: [] for k in names}
        for r in range(repeats):
            for name in (names if r % 2 == 0 else (names[0],) + names[:0:-1]):
                st = Settings()
                st.kafka.bootstrap_servers = broker.bootstrap
                st.kafka.topics = {t: f for f, t in synth.TOPICS.items()}
                st.kafka.group_id = f"bench-{name}-{r}"
                st.kafka.poll_max_messages = poll
                st.sink.root = str(Path(tmp) / f"{name}-{r}")
                st.sink.rotate_records = rotate_records
                st.security.hmac_key = "benchmark-key-not-secret"
                st.validate()
                if name.startswith("members"):
                    results[name].append(members(st, int(name[7:])))
                    continue
                results[name].append(bare_consume(st, n, poll) if name == "bare" else
                                     pipeline(st, before=name == "pipeline_before"))
    best = {k: max(v, key=lambda x: x["msg_per_s"]) for k, v in results.items()}
    if n_members:
        one, many = best["members1"], best[f"members{n_members}"]
        same = {k: v for k, v in one["rows"].items() if k != "findings"}
        if same != {k: v for k, v in many["rows"].items() if k != "findings"} or one["messages"] != many["messages"]:
            raise RuntimeError(f"the workers wrote other rows than one process: {many['rows']} vs {one['rows']}")
        return {"benchmark": "e2e_members_scaling", "messages": n, "mb": nbytes / 1e6, "runs": results,
                "best": best, "ratio_members1_to_bare": one["msg_per_s"] / best["bare"]["msg_per_s"],
                f"ratio_members{n_members}_to_bare": many["msg_per_s"] / best["bare"]["msg_per_s"],
                "scaling": many["msg_per_s"] / one["msg_per_s"],
                "data_scaling": max(x["data_msg_per_s"] for x in results[f"members{n_members}"])
                / max(x["data_msg_per_s"] for x in results["members1"])}
    if before_peer:   # the same rows (where file sets end depends on the polls, in both)
        a, b = best["pipeline"], best["pipeline_before"]
        if (a["rows"], a["hits"], a["quarantined"]) != (b["rows"], b["hits"], b["quarantined"]):
            raise RuntimeError(f"the pipeline wrote other rows than before: {a['rows']} vs {b['rows']}")
    return {
        "benchmark": "e2e_stream_vs_bare_consume",
        "machine": {"python": platform.python_version(), "cpu": _cpu_model(), "platform": platform.platform()},
        "messages": n, "mb": nbytes / 1e6, "produce_seconds": produce_s, "poll_max_messages": poll,
        "partitions_per_topic": partitions, "runs": results, "best": best,
        "ratio_pipeline_to_bare": best["pipeline"]["msg_per_s"] / best["bare"]["msg_per_s"],
        **({"ratio_before_to_bare": best["pipeline_before"]["msg_per_s"] / best["bare"]["msg_per_s"]}
           if before_peer else {}),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=50_000)
    ap.add_argument("--poll", type=int, default=5000, help="messages per poll (consume num_messages)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", metavar="FILE", help="write the result as JSON")
    ap.add_argument("--before-peer", action="store_true",
                    help="also run the pipeline with sink.write_behind the other way round (default on: "
                         "off), alternated in the same run")
    ap.add_argument("--workers", "--members", dest="members", type=int, default=0, metavar="N",
                    help="instead: 1 and N stream processes in one group (flowaudit stream --workers), "
                         "alternated (scaling)")
    args = ap.parse_args(argv)
    res = run(count=args.count, poll=args.poll, repeats=args.repeats, before_peer=args.before_peer,
              n_members=args.members)
    if args.members:
        b = res["best"]["bare"]
        print(f"e2e workers (one group): {res['messages']:,} messages, {res['mb']:.1f} MB")
        print(f"  bare confluent-kafka consume  {b['msg_per_s']:>10,.0f} msg/s")
        for k in ("members1", f"members{args.members}"):
            r = res["best"][k]
            print(f"  {k:<28}  {r['msg_per_s']:>10,.0f} msg/s  ratio {r['msg_per_s'] / b['msg_per_s']:.2f}  "
                  f"(messages per worker {r['per_member_messages']}, findings rows {r['rows'].get('findings', 0)})")
        print(f"  scaling 1 -> {args.members}                 {res['scaling']:.2f}x  (to the last row of traffic "
              f"durable, without the drain: {res['data_scaling']:.2f}x)")
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2, default=str))
        return 0
    b, p = res["best"]["bare"], res["best"]["pipeline"]
    print(f"e2e on {res['machine']['cpu']}: {res['messages']:,} messages, {res['mb']:.1f} MB")
    print(f"  bare confluent-kafka consume  {b['msg_per_s']:>10,.0f} msg/s  {b['mb_per_s']:7.1f} MB/s")
    print(f"  flowaudit stream pipeline     {p['msg_per_s']:>10,.0f} msg/s  {p['mb_per_s']:7.1f} MB/s"
          f"  (warm-up {p['warmup_seconds']:.1f} s)")
    print(f"  ratio pipeline / bare         {res['ratio_pipeline_to_bare']:.2f}")
    if args.before_peer:
        q = res["best"]["pipeline_before"]
        print(f"  pipeline, write-behind flipped {q['msg_per_s']:>9,.0f} msg/s  ratio "
              f"{res['ratio_before_to_bare']:.2f}  (same run, alternated)")
    print(f"  findings windows              {p['findings_seconds']:.2f} s of the pipeline's {p['seconds']:.1f} s "
          f"({100 * (p['findings_share'] or 0):.1f} %), {p['findings_rows']} findings")
    if len(res["runs"]["pipeline"]) > 1:
        shares = sorted(100 * (r["findings_share"] or 0) for r in res["runs"]["pipeline"])
        print(f"  findings share, every run     median {shares[len(shares) // 2]:.1f} %: "
              + ", ".join(f"{x:.1f}" for x in shares) + " %")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
