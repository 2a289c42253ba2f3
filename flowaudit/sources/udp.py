"""``flowaudit collect``: a UDP listener that forwards export datagrams to Kafka, unchanged.

Each datagram becomes one Kafka message: value = the datagram bytes, key = the exporter's IP
address as text (``b"192.0.2.1"``; templates are keyed by it downstream, never by the source
port), headers ``exporter`` (address), ``exporter_port`` and ``received_ns``.  So a real
exporter -> collect -> Kafka -> ``flowaudit stream`` is one path, and the datagrams stay
replayable.

Loss-freedom on loopback comes from three things: a large socket receive buffer (SO_RCVBUFFORCE
when permitted, else SO_RCVBUF up to ``net.core.rmem_max``), a tight receive loop
(``recvfrom_into`` into one preallocated buffer, key bytes cached per exporter, the producer
polled every ``poll_every`` datagrams instead of per message, librdkafka batching with
``linger.ms``), and back-pressure instead of dropping when librdkafka's bounded queue is full
(the kernel buffer absorbs the pause).  Optionally several sockets bound with SO_REUSEPORT, one
thread each.  Memory is bounded by the socket buffers plus librdkafka's
``queue.buffering.max.kbytes``.

SIGTERM / SIGINT: stop receiving, drain what the kernel already holds, flush the producer
(bounded), report counters, exit 0.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaException, Producer

log = logging.getLogger("flowaudit.collect")

MAX_DATAGRAM = 65535


@dataclass
class CollectStats:
    datagrams: int = 0
    bytes: int = 0
    delivered: int = 0
    delivery_errors: int = 0
    backpressure_waits: int = 0
    dropped_queue_full: int = 0
    socket_drops: int = 0          # from /proc/net/udp{,6} for our sockets (kernel buffer overflow)
    exporters: int = 0
    seconds: float = 0.0
    errors: list = field(default_factory=list)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["errors"] = list(self.errors)[:10]
        return d


def parse_listen(text: str, default_port: int = 2055) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` or ``HOST`` -> (host, port); ValueError for a port
    that is not 0..65535."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
        return host, _port(port) if port else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host or "0.0.0.0", _port(port)
    if text.count(":") > 1:  # bare IPv6 address
        return text, default_port
    return text or "0.0.0.0", default_port


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is not 0..65535")
    return port


def _socket_drops(inodes: set[int]) -> int:
    total = 0
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if len(parts) >= 13 and int(parts[9]) in inodes:
                        total += int(parts[12])
        except (OSError, ValueError, StopIteration):
            continue
    return total


def open_socket(host: str, port: int, rcvbuf: int, reuseport: bool) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    force = getattr(socket, "SO_RCVBUFFORCE", 33)
    try:
        s.setsockopt(socket.SOL_SOCKET, force, rcvbuf)      # needs CAP_NET_ADMIN
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((host, port))
    s.settimeout(0.2)
    return s


class UdpCollector:
    """Receive export datagrams on ``host:port`` and produce them to ``topic``."""

    def __init__(self, host: str, port: int, bootstrap: str, topic: str, sockets: int = 1,
                 rcvbuf: int = 64 << 20, poll_every: int = 256, linger_ms: int = 5,
                 queue_kbytes: int = 256 * 1024, producer_extra: dict | None = None):
        """``producer_extra``: librdkafka properties (``kafka.extra``: security.protocol, sasl.*,
        ssl.*, ...) applied over the defaults here; a bad one raises ``KafkaException``."""
        self.topic = topic
        self.poll_every = max(1, int(poll_every))
        self.stats = CollectStats()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        conf = {"bootstrap.servers": bootstrap, "linger.ms": linger_ms, "batch.num.messages": 10000,
                "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": queue_kbytes,
                "compression.type": "lz4", "acks": "all", "enable.idempotence": False,
                "on_delivery": self._on_delivery}
        conf.update(producer_extra or {})
        self.producer = Producer(conf)
        n = max(1, int(sockets))
        self.socks = [open_socket(host, port, rcvbuf, reuseport=n > 1)]
        port = self.socks[0].getsockname()[1]  # port 0: the kernel picked one; bind the others there
        for _ in range(n - 1):
            self.socks.append(open_socket(host, port, rcvbuf, reuseport=True))
        self.address = (host, port)
        self._inodes = {os.fstat(s.fileno()).st_ino for s in self.socks}
        self._keys: dict = {}
        self._rcvbuf = self.socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def effective_rcvbuf(self) -> int:
        return self._rcvbuf

    def _on_delivery(self, err, msg):
        if err is None:
            self.stats.delivered += 1
        else:
            self.stats.delivery_errors += 1
            if len(self.stats.errors) < 10:
                self.stats.errors.append(str(err))

    def _key(self, addr):
        k = self._keys.get(addr[0])
        if k is None:
            if len(self._keys) > 100_000:   # bounded under spoofed sources
                self._keys.clear()
            k = addr[0].encode()
            self._keys[addr[0]] = k
            self.stats.exporters = len(self._keys)
        return k

    def _produce(self, value: bytes, addr, now_ns: int) -> None:
        key = self._key(addr)
        headers = [("exporter", key), ("exporter_port", str(addr[1]).encode()),
                   ("received_ns", str(now_ns).encode())]
        waited = 0
        while True:
            try:
                self.producer.produce(self.topic, value, key=key, headers=headers)
                return
            except BufferError:
                # librdkafka's bounded queue is full: apply back-pressure, the kernel buffer absorbs it
                self.stats.backpressure_waits += 1
                self.producer.poll(0.01)
                waited += 1
                if waited > 3000:       # ~30 s without progress: give up on this datagram, counted
                    self.stats.dropped_queue_full += 1
                    return
            except KafkaException as exc:
                # refused outright (e.g. larger than kafka.extra's message.max.bytes): counted, not fatal
                self._on_delivery(exc.args[0], None)
                return

    def _loop(self, s: socket.socket) -> None:
        buf = bytearray(MAX_DATAGRAM)
        mv = memoryview(buf)
        recv = s.recvfrom_into
        poll = self.producer.poll
        k = 0
        st = self.stats
        while not self._stop.is_set():
            try:
                n, addr = recv(buf)
            except socket.timeout:
                with self._lock:
                    poll(0)
                continue
            except OSError as exc:
                if self._stop.is_set():
                    break
                st.errors.append(str(exc))
                continue
            with self._lock:
                st.datagrams += 1
                st.bytes += n
                self._produce(bytes(mv[:n]), addr, time.time_ns())
                k += 1
                if k >= self.poll_every:
                    poll(0)
                    k = 0
        # drain what the kernel already holds, then leave
        s.setblocking(False)
        for _ in range(10_000_000):
            try:
                n, addr = recv(buf)
            except (BlockingIOError, OSError):
                break
            with self._lock:
                st.datagrams += 1
                st.bytes += n
                self._produce(bytes(mv[:n]), addr, time.time_ns())

    def stop(self) -> None:
        self._stop.set()

    def run(self, max_seconds: float | None = None, stats_every: float = 0.0, on_stats=None,
            flush_timeout: float = 30.0) -> CollectStats:
        """Receive until :meth:`stop` (or SIGTERM/SIGINT when run in the main thread)."""
        t0 = time.monotonic()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        threads = [threading.Thread(target=self._loop, args=(s,), name=f"collect-{i}", daemon=True)
                   for i, s in enumerate(self.socks[1:], 1)]
        for t in threads:
            t.start()
        watcher = None
        if max_seconds or stats_every:
            def watch():
                last = time.monotonic()
                while not self._stop.wait(0.2):
                    now = time.monotonic()
                    if max_seconds and now - t0 >= max_seconds:
                        self.stop()
                    if stats_every and on_stats and now - last >= stats_every:
                        last = now
                        on_stats(self.snapshot())
            watcher = threading.Thread(target=watch, name="collect-watch", daemon=True)
            watcher.start()
        self._loop(self.socks[0])
        for t in threads:
            t.join()
        remaining = self.producer.flush(flush_timeout)
        if remaining:
            self.stats.errors.append(f"{remaining} messages not delivered within {flush_timeout} s")
        self.stats.socket_drops = _socket_drops(self._inodes)
        for s in self.socks:
            s.close()
        self.stats.seconds = time.monotonic() - t0
        return self.stats

    def snapshot(self) -> dict:
        d = self.stats.as_dict()
        d["socket_drops"] = _socket_drops(self._inodes)
        return d
