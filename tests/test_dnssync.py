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


def _random_polls(seed: int):
    """Random polls over a dns partition and a flow partition ("nf"): (events, wait_s)."""
    import random

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
    return events, wait_s


def _replayed(g, events):
    got = []
    for t, batch in events:
        got += g.admit(batch, everything, now=t)[0]
    return ids(got), ids([m for q in g.waiting.values() for m in q])


def test_property_against_the_plain_rule():
    for seed in range(300):
        events, wait_s = _random_polls(seed)
        assert _replayed(gate(wait_s), events) == _reference(events, wait_s), seed

# -- a topic of names and flows (a Suricata eve topic): a DNS partition and a flow partition at once

EVE0, EVE1 = ("eve", 0), ("eve", 1)


def eve_gate(wait_s=10.0, flows=("nf", "eve")):
    g = DnsSync(["dns", "eve"], list(flows), wait_s)
    g.assign([DNS, NF, EVE0, EVE1])
    return g


def test_an_eve_partition_never_waits_for_itself():
    """Its names come in offset order before its flows: with no other DNS partition held, its
    messages go straight on, in order, and move its frontier for the flow topics."""
    g = DnsSync(["eve"], ["nf", "eve"], 10)
    g.assign([EVE0, NF])
    out, forced = g.admit([msg(EVE0, 0, 100), msg(NF, 0, 150), msg(EVE0, 1, 200)], everything, now=0)
    assert ids(out) == [("eve", 0, False), ("eve", 1, False), ("nf", 0, False)] and forced == 0
    assert not g.waiting and g.frontier(everything) == 200


def test_two_eve_partitions_go_in_record_time_order_and_neither_holds_the_other_up():
    g = DnsSync(["eve"], ["eve"], 1000)
    g.assign([EVE0, EVE1])
    # both fetched at once: the partition with the older head goes first, up to the other's head
    out, forced = g.admit([msg(EVE0, 0, 10), msg(EVE0, 1, 30), msg(EVE0, 2, 50),
                           msg(EVE1, 0, 20), msg(EVE1, 1, 40)], everything, now=0)
    assert forced == 0
    assert ids(out) == [("eve", 0, False), ("eve", 0, False), ("eve", 1, False), ("eve", 1, False)]
    # eve/0 at t=50 waits: eve/1 has passed on up to t=40 and may still deliver names before t=50
    assert ids(g.waiting[EVE0]) == [("eve", 2, False)] and EVE1 not in g.waiting
    out, _ = g.admit([msg(EVE1, 2, 60)], everything, now=1)
    # now eve/0's t=50 is the older head: it goes, and eve/1's t=60 waits for eve/0 in turn
    assert [(m.partition(), m.offset()) for m in out] == [(0, 2)] and ids(g.waiting[EVE1]) == [("eve", 2, False)]
    # a tie in record time does not stall them either
    out, _ = g.admit([msg(EVE0, 3, 70), msg(EVE1, 3, 70)], everything, now=2)
    assert [(m.partition(), m.offset()) for m in out] == [(1, 2), (1, 3), (0, 3)] and not g.waiting
    # their ends: everything goes
    out, _ = g.admit([eof(EVE0, 4), eof(EVE1, 4)], everything, now=3)
    assert len(out) == 2 and g.frontier(everything) == math.inf and g.timeouts == 0


def test_flows_wait_for_an_eve_partition_as_for_a_dns_partition():
    g = eve_gate()
    out, _ = g.admit([eof(DNS, 0), msg(NF, 0, 100)], everything, now=0)
    # the eve partition delivered nothing yet: the NetFlow flow waits for it
    assert ids(out) == [("dns", 0, True)] and NF in g.waiting
    out, _ = g.admit([msg(EVE0, 0, 90), eof(EVE1, 0)], everything, now=1)
    assert ids(out) == [("eve", 0, False), ("eve", 0, True)] and NF in g.waiting     # 90 < 100
    out, _ = g.admit([msg(EVE0, 1, 120)], everything, now=2)
    # eve/0's oldest waiting message is of t=120: the flow of t=100 goes in the same poll (one
    # batch, whose names the stream takes before its flows)
    assert sorted(ids(out)) == [("eve", 1, False), ("nf", 0, False)] and not g.waiting


def test_an_eve_partition_waits_for_a_dns_topic():
    g = eve_gate()
    out, _ = g.admit([eof(EVE1, 0), eof(NF, 0), msg(EVE0, 0, 100)], everything, now=0)
    assert ("eve", 0, False) not in ids(out) and EVE0 in g.waiting
    out, _ = g.admit([msg(DNS, 0, 100)], everything, now=1)
    assert ids(out) == [("dns", 0, False), ("eve", 0, False)]


def test_property_an_eve_partition_beside_a_dns_partition_follows_the_plain_rule():
    """One eve partition and one dns partition: the eve partition waits for the dns one exactly
    as a flow partition does (the plain rule above), never for itself."""
    for seed in range(200):
        events, wait_s = _random_polls(seed)
        g = DnsSync(["dns", "nf"], ["nf"], wait_s)      # "nf" here carries names and flows
        g.assign([DNS, NF])
        assert _replayed(g, events) == _reference(events, wait_s), seed


def test_property_eve_partitions_drain_in_order_without_waiting_out_the_bound():
    """Random polls over two eve partitions and a NetFlow partition, every partition ending:
    with a bound never reached, everything goes on, each partition in offset order, and a
    message goes on only once every other names partition has passed on, or holds waiting,
    nothing older than it."""
    import random

    for seed in range(200):
        rng = random.Random(seed)
        g = eve_gate(wait_s=10**9)
        g.revoke([DNS])
        offs = {EVE0: 0, EVE1: 0, NF: 0}
        clock = {k: 0 for k in offs}
        sent = {k: [] for k in offs}
        got = []
        for step in range(rng.randint(1, 15)):
            batch = []
            for _ in range(rng.randint(0, 6)):
                k = rng.choice(list(offs))
                clock[k] += rng.randint(0, 20)
                m = msg(k, offs[k], clock[k])
                offs[k] += 1
                sent[k].append(m)
                batch.append(m)
            out, forced = g.admit(batch, everything, now=step)
            assert forced == 0
            # a poll's messages are one batch, whose names are taken before its flows: a message
            # goes on only once every other eve partition has passed on (in this poll or before),
            # or holds waiting, something at least as new as it
            for m in out:
                k = (m.topic(), m.partition())
                t = m.timestamp()[1]
                for o in (EVE0, EVE1):
                    if o != k:
                        passed = [x.timestamp()[1] for x in got + out if (x.topic(), x.partition()) == o]
                        pending = [x.timestamp()[1] for x in g.waiting.get(o, [])]
                        assert (passed and max(passed) >= t) or (pending and pending[0] >= t), seed
            got += out
        out, _ = g.admit([eof(k, offs[k]) for k in offs], everything, now=100)
        got += [m for m in out if m.error() is None]
        assert not g.waiting, seed
        for k in offs:
            assert [m.offset() for m in got if (m.topic(), m.partition()) == k] == list(range(offs[k])), seed


def test_an_eve_head_without_record_time_vouches_only_for_what_it_passed_on():
    """A waiting eve message the broker gave no time says nothing of what its partition holds
    after it: a flow newer than what that partition passed on still waits (until the bound, as
    any message without a record time waits for every end)."""
    g = DnsSync(["eve"], ["nf", "eve"], 10)
    g.assign([EVE0, EVE1, NF])
    out, _ = g.admit([msg(EVE0, 0, 10), msg(EVE0, 1, None), msg(EVE1, 0, 200), msg(NF, 0, 150)], everything, now=0)
    assert ids(out) == [("eve", 0, False)] and list(g.waiting) == [EVE0, EVE1, NF]
    assert g.frontier(everything, but=EVE1) == 10
    out, forced = g.admit([], everything, now=10)
    assert sorted(ids(out)) == [("eve", 0, False), ("eve", 1, False), ("nf", 0, False)] and forced == 3
