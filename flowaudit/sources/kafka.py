"""Kafka specifics of the stream service: consumer settings and the broker check.

The service itself (poll -> batch -> pipeline -> sinks -> commit) is :mod:`flowaudit.service`.
"""
from __future__ import annotations

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from ..config import ConfigError, Settings


def consumer_config(settings: Settings, **extra) -> dict:
    k = settings.kafka
    conf = {
        "bootstrap.servers": k.bootstrap_servers,
        "group.id": k.group_id,
        "auto.offset.reset": k.auto_offset_reset,
        "enable.auto.commit": False,          # offsets are committed only after a durable publish
        "enable.auto.offset.store": False,
        "session.timeout.ms": k.session_timeout_ms,
        # a port has many topics of few partitions: round-robin spreads them over every member
        # (range would leave a third member idle on two-partition topics)
        "partition.assignment.strategy": "roundrobin",
        "heartbeat.interval.ms": max(500, k.session_timeout_ms // 3),
        "enable.partition.eof": True,
        "max.partition.fetch.bytes": max(1 << 20, k.max_message_bytes + 1024),
        # prefetch is memory: librdkafka keeps up to this much fetched and not yet consumed.
        # 16 MiB is ~11k port messages, two polls ahead of a worker that is the bottleneck
        # (it takes ~0.2 s per poll where the consumer reads ~100k messages/s); more only
        # raised the RSS (256 MiB cost ~200 MB over a 300k-message run, 64 MiB the writer
        # thread's share again)
        "fetch.max.bytes": max(16 << 20, k.max_message_bytes + 1024),
        "queued.max.messages.kbytes": 16 * 1024,
        # once the prefetch is full, librdkafka postpones a partition's next fetch by this much
        # (default 1000 ms): with a small prefetch that left the worker idle while consume()
        # waited out its timeout for a full poll (0.5 s stalls, ~1.5 s of a 100k-message run)
        "fetch.queue.backoff.ms": 10,
    }
    conf.update(k.extra)
    conf.update(extra)
    return conf


def check_broker(settings: Settings, timeout: float = 10.0) -> dict[str, int]:
    """Reach the broker and the topics, or raise a one-line ConfigError; returns partitions per topic."""
    conf = {"bootstrap.servers": settings.kafka.bootstrap_servers, **settings.kafka.extra}
    try:
        md = AdminClient(conf).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ConfigError(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc.args[0].str()}") from None
    missing = [t for t in settings.kafka.topics if t not in md.topics]
    if missing:
        raise ConfigError(f"topic(s) not found on {settings.kafka.bootstrap_servers}: {', '.join(missing)}")
    return {t: len(md.topics[t].partitions) for t in settings.kafka.topics}


EARLIEST, LATEST = -2, -1     # ListOffsets' special timestamps: the log's start and its end


def log_offsets(consumer, tps, which: int, timeout: float = 10.0) -> dict[tuple[str, int], int]:
    """The start (``EARLIEST``) or end (``LATEST``) offset of each partition in ``tps``, asked in
    one ListOffsets request per broker.  ``get_watermark_offsets(cached=False)`` asks for one
    partition at a time, and the embedded broker takes 0.5 s to answer each: a member taking 12
    partitions over waited 6 s in its assignment callback.  Raises KafkaException on an error."""
    tps = list(tps)
    if not tps:
        return {}
    got = consumer.offsets_for_times([TopicPartition(tp.topic, tp.partition, which) for tp in tps], timeout=timeout)
    out = {}
    for tp in got:
        if tp.error is not None:
            raise KafkaException(tp.error)
        out[(tp.topic, tp.partition)] = tp.offset
    return out
