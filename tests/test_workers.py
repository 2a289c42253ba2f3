"""``flowaudit stream --workers N``: N stream processes in one consumer group, on the real
embedded broker.  Each worker is a whole stream member; the supervisor starts, signals and
waits (flowaudit/workers.py).  Whatever happens, every offset is stored exactly once."""
from __future__ import annotations

import collections
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from flowaudit import synth
from flowaudit.broker import free_port
from flowaudit.workers import exit_status, strip_workers, worker_argv, worker_topics

from .conftest import produce_labelled, stream_cmd, stream_env
from .test_faults import ARGS, SIGTERM_EXIT_S, SLOW, drain_and_check, published
from .test_stream_integration import _wait_for, assert_exactly_once, assert_no_partial_files, expected_hits, found_hits


def test_worker_command_lines():
    argv = ["-v", "stream", "--workers", "2", "--root", "r", "--workers=3", "--until-drained"]
    assert strip_workers(argv) == ["-v", "stream", "--root", "r", "--until-drained"]
    cmd = worker_argv(argv, 1, 9464)
    assert cmd[1:] == ["-m", "flowaudit", "-v", "stream", "--root", "r", "--until-drained", "--workers", "1",
                       "--metrics-port", "9465"]
    assert "--metrics-port" not in worker_argv(argv, 1, 0)     # metrics off stay off
    assert (exit_status(0), exit_status(4), exit_status(-9), exit_status(-15)) == (0, 4, 137, 143)


def test_the_telemetry_topics_go_to_worker_0():
    """DNS answers and the flows they name in one member: worker 0 keeps every topic, the others
    get the message topics (their own --topics, which outranks the file and the environment)."""
    topics = {"a.edi": "edifact", "z.dns": "dns", "nf": "netflow", "b.json": "json"}
    assert worker_topics(topics, 3) == [None, {"a.edi": "edifact", "b.json": "json"},
                                        {"a.edi": "edifact", "b.json": "json"}]
    assert worker_topics({"z.dns": "dns", "nf": "goflow"}, 2) == [None]       # nothing left to share
    assert worker_topics({"z.dns": "dns", "zc": "zeek_conn", "j": "json"}, 2) == [None, {"j": "json"}]
    assert worker_topics({"a": "json", "nf": "netflow"}, 2) == [None, None]    # no DNS: nothing to keep together
    # a Suricata eve topic holds names and flows: its partitions stay in one member, with the others'
    assert worker_topics({"s.eve": "eve", "j": "json"}, 2) == [None, {"j": "json"}]
    assert worker_topics({"s.eve": "eve", "nf": "netflow", "j": "json"}, 2) == [None, {"j": "json"}]
    assert worker_topics({"z.dns": "dns", "s.eve": "eve", "j": "json"}, 3) == [None, {"j": "json"}, {"j": "json"}]
    assert worker_topics(topics, 1) == [None]
    argv = ["stream", "--topics", "a.edi=edifact,z.dns=dns", "--workers", "2", "--topics=x=json"]
    cmd = worker_argv(argv, 1, 0, {"a.edi": "edifact"})
    assert cmd[3:] == ["stream", "--topics", "a.edi=edifact", "--workers", "1"]
    assert worker_argv(argv, 0, 0, None)[3:] == ["stream", "--topics", "a.edi=edifact,z.dns=dns",
                                                  "--topics=x=json", "--workers", "1"]


class Supervisor:
    """``flowaudit -v stream --workers N`` with its log, stopped by PID."""

    def __init__(self, broker, topics, root: Path, log: Path, n: int, *extra: str, **env):
        self.log = log
        self._err = open(log, "wb")
        cmd = stream_cmd(broker.bootstrap, topics, root, "--workers", str(n), *extra)
        cmd.insert(cmd.index("stream"), "-v")
        self.proc = subprocess.Popen(cmd, env=stream_env(**env), stdout=subprocess.PIPE, stderr=self._err)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def workers(self) -> list[int]:
        return [int(p) for p in re.findall(r"worker \d+/\d+ started, pid (\d+)", self.text())]

    def wait(self, timeout: float) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        self._err.close()
        return self.proc.returncode, out.decode(errors="replace")

    def kill(self) -> None:
        for pid in [self.proc.pid, *self.workers()]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
        self._err.close()


def _alive(pid: int) -> bool:
    """A flowaudit process runs as ``pid`` (a zombie waiting for its reaper has exited; a pid
    reused by another program is not ours, and is never killed here)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            ours = b"flowaudit" in f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return ours and state not in ("Z", "X")


def _two_free_ports() -> int:
    """A port that is free, with the next one free too (two workers' /metrics)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free loopback ports")


def _metrics_up(port: int) -> bool:
    try:
        return "flowaudit_" in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return False


pytestmark = pytest.mark.slow


def _two_workers_running(broker, topics, tmp_path, seed: int, group: str, *args: str):
    """Labelled traffic, and a supervisor of two workers (slow polls, small files) that have
    published files: (placed, root, supervisor, the workers' pids)."""
    placed = produce_labelled(broker.bootstrap, topics, synth.generate(seed=seed, n=6000, bad_fraction=0.02))
    root = tmp_path / "out"
    s = Supervisor(broker, topics, root, tmp_path / "s.log", 2, "--group", group, *(args or ARGS), **SLOW)
    if not _wait_for(lambda: published(root) >= 2 and len(s.workers()) == 2, 90):
        s.kill()
        pytest.fail(s.text()[-3000:])
    return placed, root, s, s.workers()


def _drained_by_two(broker, topics, root: Path, tmp_path: Path, group: str) -> tuple:
    """``--workers 2 --until-drained`` over ``topics``, waited for and exited 0: (supervisor,
    its stdout, its log)."""
    s = Supervisor(broker, topics, root, tmp_path / "s.log", 2, "--group", group, "--until-drained",
                   "--metrics-port", "0", FLOWAUDIT_KAFKA_DRAIN_STALL_S="90")
    try:
        rc, out = s.wait(timeout=240)
    finally:
        s.kill()
    log = s.text()
    assert rc == 0, log[-6000:]
    return s, out, log


def test_two_workers_share_the_group_and_drain_it(broker, topics, tmp_path):
    """Both workers hold partitions, each prints its own tagged summary, the supervisor exits 0
    once both have drained, and every offset is stored exactly once."""
    placed = produce_labelled(broker.bootstrap, topics, synth.generate(seed=81, n=3000, bad_fraction=0.02))
    root = tmp_path / "out"
    s, out, log = _drained_by_two(broker, topics, root, tmp_path, "g-workers")
    assert len(s.workers()) == 2, log[-3000:]
    for i in (0, 1):     # each worker logs tagged, holds partitions and ends with its own summary
        assert re.search(rf"\[worker {i}/2\] \S+ INFO .*assigned \[\(", log), log[-6000:]
        assert f"[worker {i}/2] " in out, out
    assert "Traceback" not in log, log[-6000:]
    assert_exactly_once(root, placed)
    assert_no_partial_files(root)
    assert found_hits(root) == expected_hits(placed)


def test_sigterm_to_the_supervisor_stops_every_worker_cleanly(broker, topics, tmp_path):
    port = _two_free_ports()
    placed, root, s, pids = _two_workers_running(broker, topics, tmp_path, 83, "g-workers-term", *ARGS[2:],
                                                 "--metrics-port", str(port))
    try:
        # each worker serves its own /metrics: the configured port plus its index
        assert _wait_for(lambda: _metrics_up(port) and _metrics_up(port + 1), 30), s.text()[-3000:]
        assert all(map(_alive, pids)), s.text()[-3000:]
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        rc, out = s.wait(timeout=60)
        took = time.monotonic() - t0
    finally:
        s.kill()
    assert took < SIGTERM_EXIT_S, (took, s.text()[-3000:])
    assert rc == 0, s.text()[-6000:]
    assert not any(map(_alive, pids)), pids
    assert out.count("[worker ") >= 2, out     # both summaries
    drain_and_check(broker, topics, root, placed, *ARGS)


def test_a_killed_worker_stops_the_supervisor_with_its_status(broker, topics, tmp_path):
    """kill -9 of one worker: the supervisor stops the other cleanly and exits 137, so the unit
    (systemd ``Restart=on-failure``) restarts the lot; nothing is lost or written twice."""
    placed, root, s, pids = _two_workers_running(broker, topics, tmp_path, 85, "g-workers-kill")
    try:
        os.kill(pids[0], signal.SIGKILL)
        rc, _out = s.wait(timeout=60)
    finally:
        s.kill()
    log = s.text()
    assert rc == 137, log[-6000:]
    assert f"worker 0/2 (pid {pids[0]}) exited 137; stopping the others" in log, log[-3000:]
    assert not _alive(pids[1]), log[-3000:]
    drain_and_check(broker, topics, root, placed, *ARGS)


def test_a_killed_supervisor_takes_its_workers_with_it(broker, topics, tmp_path):
    """kill -9 of the supervisor: each worker gets SIGTERM (PR_SET_PDEATHSIG) and stops within
    10 s instead of running on unsupervised; nothing is lost or written twice."""
    placed, root, s, pids = _two_workers_running(broker, topics, tmp_path, 87, "g-workers-orphan")
    try:
        os.kill(s.proc.pid, signal.SIGKILL)
        s.proc.wait()
        assert _wait_for(lambda: not any(map(_alive, pids)), SIGTERM_EXIT_S), s.text()[-3000:]
    finally:
        s.kill()
    assert "Traceback" not in s.text(), s.text()[-6000:]
    drain_and_check(broker, topics, root, placed, *ARGS)


def test_log_offsets_answer_as_the_watermarks_do(broker):
    """The group's drain check and the assignment ask every partition's log start and end in
    one request (``log_offsets``); the answers equal ``get_watermark_offsets``, one partition at
    a time, including an empty partition."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from flowaudit.sources.kafka import EARLIEST, LATEST, log_offsets

    broker.create_topics({"t-log-offsets": 3})
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i in range(40):
        p.produce("t-log-offsets", b"x%d" % i, partition=i % 2)    # partition 2 stays empty
        p.flush(10)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g-log-offsets"})
    try:
        tps = [TopicPartition("t-log-offsets", i) for i in range(3)]
        lo, hi = log_offsets(c, tps, EARLIEST), log_offsets(c, tps, LATEST)
        marks = {("t-log-offsets", tp.partition): c.get_watermark_offsets(tp, timeout=10, cached=False) for tp in tps}
        assert {k: (lo[k], hi[k]) for k in lo} == marks
        assert marks[("t-log-offsets", 2)][0] == marks[("t-log-offsets", 2)][1]      # empty
        assert marks[("t-log-offsets", 0)][1] > 0 and log_offsets(c, [], LATEST) == {}
    finally:
        c.close()


def test_two_workers_keep_dns_answers_and_flows_together(broker, corpus, tmp_path):
    """With DNS, NetFlow and message topics, worker 0 holds every telemetry partition and worker 1
    shares the message topic only: the flow that only a DNS answer of another partition names
    (LOGINK) is attributed, and every offset is stored exactly once.  (Shared round-robin, the
    answer's partition went to worker 1 and the flow's to worker 0: the attribution was lost.)"""
    from confluent_kafka import Producer

    from flowaudit.sinks.parquet import read_dataset

    from .test_flowpath import _restart_inputs

    rows, _cut = _restart_inputs(corpus)
    stem = f"t-wtel{os.getpid()}"
    names = {"zeek.dns": f"{stem}.dns", "netflow.raw": f"{stem}.netflow", "json": f"{stem}.json"}
    broker.create_topics({t: 2 for t in names.values()})
    p = Producer({"bootstrap.servers": broker.bootstrap})
    part = {"zeek.dns": 1, "netflow.raw": 0}    # the answer and the flow it names in different partitions
    for topic, _kind, _off, key, value in rows:
        p.produce(names[topic], value, key=key, partition=part[topic])
    for i in range(40):
        p.produce(names["json"], b'{"container": "MSCU%07d", "vessel": "EVER GIVEN"}' % i, partition=i % 2)
    assert p.flush(30) == 0
    spec = {"dns": names["zeek.dns"], "netflow": names["netflow.raw"], "json": names["json"]}
    root = tmp_path / "out"
    _s, _out, log = _drained_by_two(broker, spec, root, tmp_path, "g-workers-tel")
    assert "worker 0 reads the telemetry topics" in log
    held = {i: " ".join(re.findall(rf"\[worker {i}/2\] \S+ INFO .*assigned (\[.*\])", log)) for i in (0, 1)}
    assert names["zeek.dns"] in held[0] and names["netflow.raw"] in held[0], held
    assert names["zeek.dns"] not in held[1] and names["netflow.raw"] not in held[1], held
    assert "without the DNS partitions" not in log
    stored = collections.Counter()
    for d in ("messages", "quarantine"):
        t = read_dataset(root, d)
        stored.update(zip(t.column("source").to_pylist(), t.column("partition").to_pylist(),
                          t.column("offset").to_pylist()))
    produced = {(names[t], part[t], o) for t, _k, o, _key, _v in rows} | {(names["json"], i % 2, i // 2)
                                                                    for i in range(40)}
    assert set(stored) == produced and set(stored.values()) == {1}
    logink = [(t["offset"], t["platform"], t["seen_where"], t["indicator"])
              for t in read_dataset(root, "transfers").to_pylist() if t["dst_addr"] == "198.51.100.7"]
    assert (3, "LOGINK", "DNS_ANSWER", "gateway.logink.cn") in logink, logink
