"""``flowaudit demo``: the whole path on an embedded broker with synthetic port traffic.

Starts Tansu on a free loopback port, produces labelled synthetic messages (EDIFACT, X12,
XML, JSON) to one topic per format, runs the stream service until the topics are drained,
prints a summary and stops the broker by PID.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from confluent_kafka import Producer

from . import synth
from .broker import EmbeddedBroker
from .config import Settings
from .metrics import Metrics
from .service import StreamService, Summary


def produce(messages, bootstrap: str, topics: dict[str, str] | None = None, partitions: int = 3,
            spacing_ms: int | None = None, start_ms: int = 1_772_352_000_000) -> tuple[int, int]:
    """Produce synth messages to ``topics[format]``, keyed; returns (messages, bytes).

    ``spacing_ms``: give message ``i`` the record time ``start_ms + i * spacing_ms`` (event time
    that spans several findings windows); None: the broker's clock."""
    topics = topics or synth.TOPICS
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20,
                  "queue.buffering.max.kbytes": 512 * 1024, "compression.type": "lz4",
                  "enable.idempotence": False, "acks": "all"})
    errors: list = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(err)

    n = b = 0
    for m in messages:
        topic = topics[m.format]
        part = hash_partition(m.key, partitions)
        while True:
            try:
                if spacing_ms is None:
                    p.produce(topic, m.value, key=m.key, partition=part, on_delivery=on_delivery)
                else:
                    p.produce(topic, m.value, key=m.key, partition=part, on_delivery=on_delivery,
                              timestamp=start_ms + n * spacing_ms)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
        b += len(m.value)
        if n % 2000 == 0:
            p.poll(0)
    remaining = p.flush(60)
    if remaining or errors:
        raise RuntimeError(f"produce failed: {remaining} undelivered, errors: {errors[:3]}")
    return n, b


def hash_partition(key: bytes, partitions: int) -> int:
    """Deterministic partition by key (FNV-1a), so a replayed demo lays out the same offsets."""
    h = 0xCBF29CE484222325
    for c in key:
        h = ((h ^ c) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h % partitions


MARKER = ".flowaudit-demo"      # in a root the demo wrote: the next run may clear it


class DemoError(Exception):
    """The demo cannot run as asked (its output folder holds other files)."""


def _fresh_root(root: Path, echo) -> None:
    """An empty output root for this run.  Each run starts a new embedded broker with memory
    storage, whose log the files of an earlier run do not match (the stream would stop on the
    rewritten log, as it must for a real broker): a folder an earlier demo wrote is cleared, one
    with anything else in it is refused."""
    if root.exists() and not root.is_dir():
        raise DemoError(f"{root} is a file: give --out a new or empty folder")
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).is_file():
            raise DemoError(f"{root} is not empty and not marked as the demo's own ({MARKER}): give --out a new "
                            f"or empty folder, or remove it")
        shutil.rmtree(root)
        echo("  output      the previous demo's files cleared (a new broker log starts at offset 0)")
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("written by `flowaudit demo`: its next run clears this folder\n")


def run_demo(count: int = 100_000, seed: int = 7, out: str = "demo-out", partitions: int = 3,
             metrics_port: int = 9464, bad_fraction: float = 0.01, echo=print) -> Summary:
    root = Path(out)
    echo(f"flowaudit demo: {count:,} synthetic messages, seed {seed}, output {root.resolve()}")
    _fresh_root(root, echo)
    with EmbeddedBroker() as broker:
        echo(f"  broker      tansu (embedded, memory storage) on {broker.bootstrap}, pid {broker.proc.pid}")
        broker.create_topics({t: partitions for t in synth.TOPICS.values()})
        t0 = time.monotonic()
        n, nbytes = produce(synth.generate(seed, count, bad_fraction=bad_fraction), broker.bootstrap,
                            partitions=partitions)
        echo(f"  produced    {n:,} messages, {nbytes / 1e6:.1f} MB in {time.monotonic() - t0:.1f} s")
        settings = Settings()
        settings.kafka.bootstrap_servers = broker.bootstrap
        settings.kafka.group_id = f"flowaudit-demo-{seed}"
        settings.kafka.topics = {t: f for f, t in synth.TOPICS.items()}
        settings.sink.root = str(root)
        settings.metrics.port = metrics_port
        settings.validate()
        metrics = Metrics(settings.kafka.topics)
        url = ""
        if metrics_port:
            try:
                port = metrics.serve(settings.metrics.host, metrics_port)
                url = f"http://{settings.metrics.host}:{port}/metrics"
                echo(f"  metrics     {url} (while running)")
            except OSError as exc:
                echo(f"  metrics     not served: {exc}")
        service = StreamService(settings, metrics, until_drained=True, install_signals=True)
        summary = service.run()
        summary.metrics_url = url
        metrics.close()
    from .detect.findings import top_findings

    summary.top_findings = top_findings(root, 10)   # the synthetic LOGINK queries, worst first
    return summary
