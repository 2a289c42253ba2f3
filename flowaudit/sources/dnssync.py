"""Flows wait for the DNS answers that name their addresses: Kafka-time synchronisation of a
member's flow partitions (``netflow`` / ``goflow`` / ``zeek_conn`` / ``eve`` topics) with its
partitions of names (``dns`` / ``eve`` topics; "DNS partitions" below).

The DNS map attributes a flow only if the answer naming its address went through the flow path
first.  Live, answers precede the flows they name by seconds to minutes (an exporter sends a flow
after its inactive or active timeout), and a poll hands DNS answers on before flows.  With a
backlog (a restart, a new group, a member that was paused, a DNS partition whose storage lock
is still held by a leaving member) the consumer fetches the topics independently, and a flow
partition can be read to its end before its DNS partition delivers anything: those flows would
lose their attribution, silently, for good.

So flows are ordered against DNS by Kafka record time, the way Kafka Streams orders a task's
input partitions (timestamp synchronisation, bounded by ``max.task.idle.ms``):

* each held DNS partition has a *frontier*: the newest record time delivered from it, or
  "everything" once it reported its end (``PARTITION_EOF``) with nothing delivered since;
  a partition not yet readable (waiting for its lock) or that delivered nothing yet has none;
* a flow message goes on when its record time is at or below every held DNS partition's
  frontier; otherwise it waits, in offset order per partition (an end-of-partition event waits
  behind the messages before it), and its partition is paused, so that only what was already
  fetched waits in memory;
* ``kafka.dns_wait_s`` bounds the wait (default 10 s; 0 turns the synchronisation off): a flow
  partition whose oldest waiting message waited that long goes on as it is.  Those messages are
  counted (``flowaudit_dns_sync_timeouts_total``) and logged: their flows may lack attribution.
  A flow partition that is not readable yet passes on (the stream drops its messages and reads
  them again once its lock is taken).

A topic of both (a Suricata ``eve`` topic: DNS answers and flow events on one topic) is a DNS
partition and a flow partition at once.  Its messages wait like flows, in offset order, and its
frontier counts what it has passed on; while some of its messages wait, everything before its
oldest waiting message has been passed on, so that head's record time is its frontier for the
other partitions.  It never waits for itself (its names come in offset order before its flows),
and of two such partitions the one whose head is older goes first, as Kafka Streams picks the
partition with the oldest head: neither holds the other up.

A member that holds no DNS partition passes flows straight on.  Waiting messages were delivered
but never handed to a writer, so no offset past them is committed: a revoked partition's waiting
messages are dropped and re-read by its next owner, and a stop re-reads them on the next start.
"""
from __future__ import annotations

import math
import time

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError

_EOF = KafkaError._PARTITION_EOF


def record_ms(m) -> float:
    """A message's Kafka record time in ms; +inf when the broker gave none (it then waits for every
    DNS partition's end)."""
    kind, ts = m.timestamp()
    return math.inf if kind == TIMESTAMP_NOT_AVAILABLE or ts < 0 else float(ts)


class DnsSync:
    """See the module docstring.  Used by the stream's consuming thread only."""

    def __init__(self, dns_topics, flow_topics, wait_s: float):
        self.dns_topics = frozenset(dns_topics)
        self.flow_topics = frozenset(flow_topics)
        self.wait_s = float(wait_s)
        self.enabled = self.wait_s > 0 and bool(self.dns_topics) and bool(self.flow_topics)
        self._dns: dict[tuple[str, int], tuple[float, bool]] = {}   # held DNS partition -> (newest ms, at end)
        self.waiting: dict[tuple[str, int], list] = {}              # flow partition -> messages, in order
        self._since: dict[tuple[str, int], float] = {}              # flow partition -> when its head began waiting
        self.timeouts = 0                                           # data messages sent on by the bound

    def assign(self, keys) -> None:
        for k in keys:
            if k[0] in self.dns_topics:
                self._dns.setdefault(k, (-math.inf, False))

    def revoke(self, keys) -> None:
        """Forget partitions no longer held; their waiting messages are re-read by the next owner."""
        for k in keys:
            self._dns.pop(k, None)
            self.waiting.pop(k, None)
            self._since.pop(k, None)

    def frontier(self, ready, but=None) -> float:
        """The record time (ms) every held DNS partition (but ``but``) has delivered up to;
        ``ready(key)``: the partition is read (not waiting for its storage lock).  A partition of
        names and flows with messages waiting has delivered everything before its oldest one."""
        f = math.inf
        for k, (ms, end) in self._dns.items():
            if k == but:
                continue
            if not ready(k):
                return -math.inf
            q = self.waiting.get(k)
            if q:       # (a head without record time: only what it passed on; an end: everything)
                head = math.inf if q[0].error() is not None else record_ms(q[0])
                f = min(f, max(ms, head) if q[0].error() is not None or head < math.inf else ms)
            elif not end:
                f = min(f, ms)
        return f

    def _passed(self, key, m) -> None:
        """``m`` of the DNS partition ``key`` was passed on: its frontier moves."""
        err = m.error()
        ms, _end = self._dns[key]
        if err is None:
            t = record_ms(m)
            self._dns[key] = (max(ms, t) if t < math.inf else ms, False)
        elif err.code() == _EOF:
            self._dns[key] = (ms, True)

    def admit(self, msgs: list, ready, now: float | None = None) -> tuple[list, int]:
        """The poll's messages that go on now, in order, with the waiting flow messages that may go
        on joined after them; and how many data messages the bound sent on this time."""
        if not self.enabled:
            return msgs, 0
        now = time.monotonic() if now is None else now
        out = []
        for m in msgs:
            key = (m.topic(), m.partition())
            if key[0] in self.flow_topics and ready(key) and (m.error() is None or m.error().code() == _EOF):
                q = self.waiting.get(key)
                if q is None:
                    q = self.waiting[key] = []
                    self._since[key] = now
                q.append(m)
                continue
            if key in self._dns and ready(key):
                self._passed(key, m)
            out.append(m)
        forced = 0
        moved = True
        while moved and self.waiting:      # again while a partition of names and flows moved on
            moved = False
            for key in list(self.waiting):
                q = self.waiting[key]
                f = self.frontier(ready, but=key)
                if now - self._since[key] >= self.wait_s:
                    n = sum(1 for m in q if m.error() is None and record_ms(m) > f)
                    forced += n
                    cut = len(q)
                else:
                    cut = 0
                    while cut < len(q) and (q[cut].error() is not None or record_ms(q[cut]) <= f):
                        cut += 1
                if not cut:
                    continue
                out.extend(q[:cut])
                if key in self._dns:       # names and flows: what it passed on moves its frontier
                    for m in q[:cut]:
                        self._passed(key, m)
                    moved = True
                if cut == len(q):
                    del self.waiting[key], self._since[key]
                else:
                    del q[:cut]
                    self._since[key] = now   # the new head starts its own wait
        self.timeouts += forced
        return out, forced
