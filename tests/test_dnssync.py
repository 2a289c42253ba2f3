"""Flows wait for the DNS answers that name their addresses (flowaudit/sources/dnssync.py), on
real confluent-kafka Message objects; the stream end of it is in test_faults.py."""
from __future__ import annotations

import math

from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE, KafkaError, Message

from flowaudit.sources.dnssync import DnsSync

DNS, NF, TOS = ("dns", 0), ("nf", 0), ("tos", 0)


def msg(key, off, ts=None):
    return Message(topic=key[0], partition=key[1], offset=off, value=b"v",
                   timestamp=(TIMESTAMP_NOT_AVAILABLE, -1) if ts is None else (TIMESTAMP_CREATE_TIME, ts))


def eof(key, off):
    return Message(topic=key[0], partition=key[1], offset=off, error=KafkaError(KafkaError._PARTITION_EOF))


def ids(msgs):
    return [(m.topic(), m.offset(), m.error() is not None) for m in msgs]


def gate(wait_s=10.0):
    g = DnsSync(["dns"], ["nf"], wait_s)
    g.assign([DNS, NF, TOS])
    return g


def everything(_key):
    return True


def test_flows_read_before_their_dns_partition_wait_for_it_in_order():
    g = gate()
    # the flow partition is fetched first, to its end; the DNS partition delivered nothing yet
    out, forced = g.admit([msg(TOS, 0, 100), msg(NF, 0, 100), msg(NF, 1, 300), eof(NF, 2)], everything, now=0)
    assert ids(out) == [("tos", 0, False)] and forced == 0
    assert list(g.waiting) == [NF]
    # the DNS answers up to t=200: the flow of t=100 goes on after them, the rest waits
    out, _ = g.admit([msg(DNS, 0, 50), msg(DNS, 1, 200)], everything, now=1)
    assert ids(out) == [("dns", 0, False), ("dns", 1, False), ("nf", 0, False)]
    # new flow messages queue behind the waiting ones, never ahead of them
    out, _ = g.admit([msg(NF, 2, 150)], everything, now=2)
    assert out == [] and ids(g.waiting[NF]) == [("nf", 1, False), ("nf", 2, True), ("nf", 2, False)]
    # the DNS partition's end: everything goes on, the flow partition's end event in its place
    out, forced = g.admit([eof(DNS, 2)], everything, now=3)
    assert ids(out) == [("dns", 2, True), ("nf", 1, False), ("nf", 2, True), ("nf", 2, False)]
    assert forced == 0 and not g.waiting and g.timeouts == 0


def test_a_dns_partition_at_its_end_holds_nothing_until_it_delivers_again():
    g = gate()
    out, _ = g.admit([eof(DNS, 5), msg(NF, 0, 10**12)], everything, now=0)
    assert ids(out) == [("dns", 5, True), ("nf", 0, False)]
    # a new answer: flows newer than it wait for the next end (live: one poll)
    out, _ = g.admit([msg(DNS, 5, 1000), msg(NF, 1, 999), msg(NF, 2, 1001)], everything, now=1)
    assert ids(out) == [("dns", 5, False), ("nf", 1, False)]
    out, _ = g.admit([eof(DNS, 6)], everything, now=1.5)
    assert ids(out) == [("dns", 6, True), ("nf", 2, False)]


def test_a_dns_partition_waiting_for_its_lock_holds_every_flow():
    g = gate()
    locked = {DNS}

    def ready(k):
        return k not in locked

    # the DNS partition's messages are dropped by the stream (read again once locked): no frontier
    out, _ = g.admit([eof(DNS, 1), msg(NF, 0, 5)], ready, now=0)
    assert ids(out) == [("dns", 1, True)] and NF in g.waiting
    assert g.frontier(ready) == -math.inf
    locked.clear()
    out, _ = g.admit([msg(DNS, 0, 5)], ready, now=1)
    assert ids(out) == [("dns", 0, False), ("nf", 0, False)]


def test_a_flow_partition_not_yet_readable_passes_straight_on():
    g = gate()
    out, _ = g.admit([msg(NF, 0, 5)], lambda k: k != NF, now=0)
    assert ids(out) == [("nf", 0, False)] and not g.waiting


def test_the_wait_is_bounded_and_counted():
    g = gate(wait_s=10)
    g.admit([msg(NF, 0, 100), msg(NF, 1, None)], everything, now=0)
    out, forced = g.admit([], everything, now=9.9)
    assert out == [] and forced == 0
    out, forced = g.admit([], everything, now=10)
    assert ids(out) == [("nf", 0, False), ("nf", 1, False)] and forced == 2 and g.timeouts == 2


def test_progress_restarts_the_wait_of_what_still_waits():
    """A DNS backlog being read moves the flows on in step with it: each partial release starts
    the rest's wait again, so a long catch-up never forces flows ahead of their answers."""
    g = gate(wait_s=10)
    g.admit([msg(NF, i, 100 * i) for i in range(1, 4)], everything, now=0)
    out, _ = g.admit([msg(DNS, 0, 150)], everything, now=8)
    assert ids(out)[1:] == [("nf", 1, False)]
    out, forced = g.admit([], everything, now=12)
    assert out == [] and forced == 0
    out, forced = g.admit([], everything, now=18)
    assert ids(out) == [("nf", 2, False), ("nf", 3, False)] and forced == 2


def test_a_message_without_record_time_waits_for_every_dns_end():
    g = gate()
    out, _ = g.admit([msg(DNS, 0, 10**15), msg(NF, 0, None)], everything, now=0)
    assert ids(out) == [("dns", 0, False)]
    out, _ = g.admit([eof(DNS, 1)], everything, now=1)
    assert ids(out) == [("dns", 1, True), ("nf", 0, False)]


def test_revoked_partitions_forget_their_waiting_messages():
    g = gate()
    g.admit([msg(NF, 0, 5)], everything, now=0)
    g.revoke([NF, DNS])
    assert not g.waiting and g.frontier(everything) == math.inf
    # with no DNS partition held, flows go straight on
    out, _ = g.admit([msg(NF, 1, 5)], everything, now=1)
    assert ids(out) == [("nf", 1, False)]


def test_off_without_dns_topics_or_with_no_wait():
    for g in (DnsSync([], ["nf"], 10), DnsSync(["dns"], ["nf"], 0)):
        g.assign([DNS, NF])
        ms = [msg(NF, 0, 5), msg(DNS, 0, 1)]
        assert g.admit(ms, everything)[0] is ms and not g.enabled


def _reference(events, wait_s):
    """The rule written plainly: replay every poll from scratch, a flow message goes on once its
    record time is at or below the DNS partition's frontier, or its partition waited wait_s."""
    released, dns_ms, dns_end, queue, since = [], -math.inf, False, [], None
    for now, batch in events:
        for m in batch:
            if m.topic() == "dns":
                released.append(m)
                if m.error() is None:
                    t = m.timestamp()[1]
                    dns_ms, dns_end = max(dns_ms, t if t >= 0 else dns_ms), False
                else:
                    dns_end = True
            else:
                if not queue:
                    since = now
                queue.append(m)
        f = math.inf if dns_end else dns_ms
        if queue and now - since >= wait_s:
            released += queue
            queue = []
            continue
        n = 0
        while n < len(queue):
            t = queue[n].timestamp()[1]
            if not (queue[n].error() is not None or (t < 0 and f == math.inf) or 0 <= t <= f):
                break
            n += 1
        released += queue[:n]
        if n and n < len(queue):
            since = now
        queue = queue[n:]
    return ids(released), ids(queue)


def test_property_against_the_plain_rule():
    import random

    for seed in range(300):
        rng = random.Random(seed)
        wait_s = rng.choice([1.0, 3.0, 100.0])
        offs = {"dns": 0, "nf": 0}
        events, now = [], 0.0
        for _ in range(rng.randint(1, 12)):
            now += rng.choice([0.0, 0.5, 2.0])
            batch = []
            for _ in range(rng.randint(0, 5)):
                t = rng.choice(["dns", "nf"])
                key = (t, 0)
                if rng.random() < 0.2:
                    batch.append(eof(key, offs[t]))
                else:
                    batch.append(msg(key, offs[t], rng.choice([None, rng.randint(0, 50)])))
                    offs[t] += 1
            events.append((now, batch))
        g = gate(wait_s)
        got = []
        for t, batch in events:
            got += g.admit(batch, everything, now=t)[0]
        left = [m for q in g.waiting.values() for m in q]
        assert (ids(got), ids(left)) == _reference(events, wait_s), seed
