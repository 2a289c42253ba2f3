"""Stream memory against input size: peak RSS of ``flowaudit stream --until-drained``.

Each size gets fresh topics (``--partitions`` per format, 12 in all by default) on the embedded
broker, filled with synthetic traffic, and a fresh ``flowaudit stream`` process whose peak RSS
is the child's own ``VmHWM`` (polled; ``wait4`` would carry this process's peak into it).  Flat means the buffered rows are bounded (``sink.buffer_budget_mb``), not
the input: the issue's target is <= 500 MB over a 1M-message run, whatever the partitions.

    python -m benchmarks.memory --sizes 50000 300000 1000000
    python -m benchmarks.memory --sizes 1000000 --before-peer   # also with write-behind off, same topics
    python -m benchmarks.memory --bare-peer                     # beside a bare consume loop's peak RSS

``flowaudit bench --stages memory`` runs it (50k, 300k and 1M messages; ``--memory-sizes``).

``--before-peer`` runs a second stream process over the same topics (another group and root)
with ``sink.write_behind`` flipped (on by default: a writer thread publishes
the file sets beside the worker; off, the worker does between batches), to see what the writer thread costs.  ``--dedupe-entries`` / ``--poll`` set
``kafka.dedupe_entries`` / ``kafka.poll_max_messages`` to measure what they cost.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flowaudit import synth
from flowaudit.broker import EmbeddedBroker
from flowaudit.config import Settings
from flowaudit.demo import produce
from flowaudit.sources.kafka import check_broker, consumer_config


def polled(cmd: list, env: dict | None, what: str):
    """``cmd`` run to its end, its own peak RSS polled (``audit._HighWater``: its ``VmHWM``; the
    rusage of ``wait4`` would carry this process's peak into it); its stdout and stderr go to
    files, so a chatty child never blocks on a full pipe.  Returns (stdout, the high-water mark)."""
    from .audit import _HighWater

    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        p = subprocess.Popen(cmd, env=env, stdout=fo, stderr=fe)
        hwm = _HighWater(p.pid)
        rc = p.wait()
        hwm.stop()
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read().decode(), fe.read().decode()
    if rc != 0:
        raise RuntimeError(f"{what} exited {rc}: {err[-2000:]}")
    return out, hwm


def stream_rss(bootstrap: str, topics: dict, root: Path, budget_mb: int | None = None, before: bool = False,
               dedupe_entries: int | None = None, poll: int | None = None) -> dict:
    t = ",".join(f"{name}={fmt}" for fmt, name in topics.items())
    cmd = [sys.executable, "-m", "flowaudit", "stream", "--bootstrap",
           bootstrap, "--topics", t, "--root", str(root), "--until-drained", "--metrics-port", "0",
           "--group", f"mem-{root.name}"]
    env = dict(os.environ, FLOWAUDIT_SECURITY_HMAC_KEY="benchmark-key-not-secret",
               FLOWAUDIT_KAFKA_SESSION_TIMEOUT_MS="6000")
    if before:      # write-behind flipped (on by default)
        env["FLOWAUDIT_SINK_WRITE_BEHIND"] = "false"
    if budget_mb is not None:
        env["FLOWAUDIT_SINK_BUFFER_BUDGET_MB"] = str(budget_mb)
    if dedupe_entries is not None:
        env["FLOWAUDIT_KAFKA_DEDUPE_ENTRIES"] = str(dedupe_entries)
    if poll is not None:
        env["FLOWAUDIT_KAFKA_POLL_MAX_MESSAGES"] = str(poll)
    t0 = time.monotonic()
    out, hwm = polled(cmd, env, "flowaudit stream")
    flushes = 0
    for line in out.splitlines():
        if "buffer budget" in line and "reached" in line:
            flushes = int(line.split("reached", 1)[1].split()[0])
    return {"seconds": time.monotonic() - t0, "peak_rss_mb": hwm.kib / 1024,
            "peak_anon_mb": hwm.anon_kib / 1024, "peak_file_mb": hwm.file_kib / 1024, "budget_flushes": flushes}


# the peer: a process that imports confluent_kafka and nothing else, and consumes every message
_BARE = """
import json, sys
from confluent_kafka import Consumer, KafkaError
conf, topics, expected, parts = json.loads(sys.argv[1])
c = Consumer(conf)
c.subscribe(topics)
n = nbytes = 0
eof = set()
while len(eof) < parts or n < expected:
    for m in c.consume(num_messages=5000, timeout=0.5):
        err = m.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                eof.add((m.topic(), m.partition()))
            continue
        eof.discard((m.topic(), m.partition()))
        v = m.value()
        n += 1
        nbytes += len(v) if v is not None else 0
c.close()
print(n)
"""


def bare_rss(bootstrap: str, topics: dict, expected: int, group: str) -> dict:
    """The peer: a bare consume loop over the same topics with the stream's own consumer settings
    (``sources.kafka.consumer_config``: its 16 MiB prefetch), in a Python process that imports
    ``confluent_kafka`` and nothing else.  Its peak RSS is the floor: the interpreter, librdkafka
    and the prefetch; the stream's peak above it is flowaudit's own."""
    st = Settings()
    st.kafka.bootstrap_servers = bootstrap
    st.kafka.topics = {name: fmt for fmt, name in topics.items()}
    st.kafka.group_id = group
    st.kafka.session_timeout_ms = 6000
    st.security.hmac_key = "benchmark-key-not-secret"
    st.validate()
    parts = sum(check_broker(st).values())
    arg = json.dumps([consumer_config(st), list(st.kafka.topics), expected, parts])
    t0 = time.monotonic()
    out, hwm = polled([sys.executable, "-c", _BARE, arg], None, "the bare consume loop")
    return {"seconds": time.monotonic() - t0, "messages": int(out.split()[-1]), "peak_rss_mb": hwm.kib / 1024}


def run(sizes=(50_000, 300_000), partitions: int = 3, seed: int = 5, budget_mb: int | None = None,
        before_peer: bool = False, dedupe_entries: int | None = None, poll: int | None = None,
        bare_peer: bool = False) -> dict:
    """``bare_peer``: also a bare consume loop over each size's topics (:func:`bare_rss`), its
    peak RSS beside the stream's under ``bare``."""
    rows = []
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="flowaudit-mem-") as tmp:
        for k, n in enumerate(sizes):
            topics = {f: f"mem{k}.{f}" for f in synth.TOPICS}
            broker.create_topics({t: partitions for t in topics.values()})
            msgs = (m for m in synth.generate(seed + k, n))
            count, nbytes = produce(msgs, broker.bootstrap, partitions=partitions,
                                    topics={f: topics[f] for f in topics})
            for before in ((False, True) if before_peer else (False,)):
                root = Path(tmp) / f"root{k}{'-before' if before else ''}"
                r = stream_rss(broker.bootstrap, topics, root, budget_mb, before, dedupe_entries, poll)
                r.update(messages=count, mb=nbytes / 1e6, partitions=partitions * len(topics),
                         write_behind=not before)
                if bare_peer and not before:
                    r["bare"] = bare_rss(broker.bootstrap, topics, count, f"mem-bare-{k}")
                rows.append(r)
                print(json.dumps(r), file=sys.stderr)
    return {"benchmark": "stream_peak_rss_vs_input", "budget_mb": budget_mb, "dedupe_entries": dedupe_entries,
            "poll_max_messages": poll, "runs": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[50_000, 300_000])
    ap.add_argument("--partitions", type=int, default=3, help="partitions per topic (4 topics)")
    ap.add_argument("--budget-mb", type=int, help="sink.buffer_budget_mb (default: the setting's default)")
    ap.add_argument("--before-peer", action="store_true",
                    help="also run each size with sink.write_behind off (default on)")
    ap.add_argument("--dedupe-entries", type=int, help="kafka.dedupe_entries (default: the setting's default)")
    ap.add_argument("--poll", type=int, help="kafka.poll_max_messages (default: the setting's default)")
    ap.add_argument("--bare-peer", action="store_true",
                    help="also a bare confluent-kafka consume loop over each size's topics: its peak RSS")
    a = ap.parse_args(argv)
    print(json.dumps(run(a.sizes, a.partitions, budget_mb=a.budget_mb, before_peer=a.before_peer,
                         dedupe_entries=a.dedupe_entries, poll=a.poll, bare_peer=a.bare_peer), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
