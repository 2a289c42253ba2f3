"""The fault battery, on the real embedded broker with real ``flowaudit stream`` processes.

Each test asserts what the service promises (README, "Reliability"): every member exits on
SIGTERM within 10 s, and every offset is written exactly once, whatever happened in between:

* scale-out from one member to three in the middle of a run (the rebalance used to deadlock);
* the broker frozen (SIGSTOP) for 30 s, then resumed;
* a zombie: a member frozen past its session while another takes its partitions over;
* disk full on a real tmpfs: consumption pauses, and resumes once space is back;
* storage ahead of the broker: the topic recreated with fewer, then with more messages;
* NetFlow sets held for their template, and the DNS map, across a restart.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from flowaudit import synth
from flowaudit.broker import free_port
from flowaudit.sinks.parquet import read_dataset

from .conftest import produce_labelled, run_stream, stream_cmd, stream_env, stream_with_a_partition_locked
from .test_stream_integration import (_wait_for, assert_exactly_once, assert_no_partial_files, expected_hits,
                                      found_hits)

pytestmark = pytest.mark.slow
SIGTERM_EXIT_S = 10.0


class Member:
    """One ``flowaudit stream`` process with its log, stopped by PID."""

    def __init__(self, broker, topics, root: Path, log: Path, *extra: str, **env):
        self.log = log
        self._err = open(log, "wb")
        cmd = stream_cmd(broker.bootstrap, topics, root, *extra)
        cmd.insert(cmd.index("stream"), "-v")     # INFO logs: assignments, lock hand-overs
        self.proc = subprocess.Popen(cmd,
                                     env=stream_env(**env), stdout=subprocess.DEVNULL, stderr=self._err)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self) -> float:
        """SIGTERM; returns the seconds until the process exited (killed after 60 s)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._err.close()
        return time.monotonic() - t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        self._err.close()


def published(root: Path) -> int:
    d = root / "dataset=messages"
    return sum(1 for _ in d.rglob("*.parquet")) if d.exists() else 0


def drain_and_check(broker, topics, root: Path, placed: dict, *args: str) -> None:
    """A last member drains what is left; then every offset is in storage exactly once.

    It joins a group of its own: storage, not the group's committed offsets, says where each
    partition resumes, and the embedded broker (Tansu) can hold a new member's join for the
    old members' rebalance timeout after a zombie left."""
    r = run_stream(broker.bootstrap, topics, root, "--until-drained", *args, "--group", "drain", timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_exactly_once(root, placed)
    assert_no_partial_files(root)
    assert found_hits(root) == expected_hits(placed)


ARGS = ("--metrics-port", "0", "--rotate-records", "120")
SLOW = {"FLOWAUDIT_KAFKA_POLL_MAX_MESSAGES": "15"}


def test_scale_out_from_one_member_to_three_mid_run(broker, topics, tmp_path):
    placed = produce_labelled(broker.bootstrap, topics, synth.generate(seed=31, n=9000, bad_fraction=0.02))
    root = tmp_path / "out"
    group = ("--group", "g-scale")
    members = [Member(broker, topics, root, tmp_path / "a.log", *group, *ARGS, **SLOW)]
    try:
        assert _wait_for(lambda: published(root) >= 2, 90), members[0].text()[-3000:]
        members.append(Member(broker, topics, root, tmp_path / "b.log", *group, *ARGS, **SLOW))
        before = published(root)
        assert _wait_for(lambda: "assigned [(" in members[1].text(), 60), members[1].text()[-3000:]
        members.append(Member(broker, topics, root, tmp_path / "c.log", *group, *ARGS, **SLOW))
        assert _wait_for(lambda: "assigned [(" in members[2].text(), 60), members[2].text()[-3000:]
        # the group goes on after both rebalances: more file sets are published
        assert _wait_for(lambda: published(root) >= before + 6, 90), [m.text()[-2000:] for m in members]
        for m in members:
            assert m.proc.poll() is None, m.text()[-3000:]
    finally:
        times = [m.terminate() for m in members]
    logs = [m.text() for m in members]
    assert max(times) < SIGTERM_EXIT_S, (times, [t[-2000:] for t in logs])
    assert [m.proc.returncode for m in members] == [0, 0, 0], [t[-2000:] for t in logs]
    assert not any("Traceback" in t for t in logs), [t[-3000:] for t in logs]
    drain_and_check(broker, topics, root, placed, *group, *ARGS)


def test_broker_frozen_for_30_seconds(broker, topics, tmp_path):
    placed = produce_labelled(broker.bootstrap, topics, synth.generate(seed=37, n=6000, bad_fraction=0.02))
    root = tmp_path / "out"
    group = ("--group", "g-freeze")
    m = Member(broker, topics, root, tmp_path / "m.log", *group, *ARGS, **SLOW)
    try:
        assert _wait_for(lambda: published(root) >= 2, 90), m.text()[-3000:]
        os.kill(broker.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(30)
            assert m.proc.poll() is None, m.text()[-3000:]
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        # consumption goes on once the broker answers again: new traffic is consumed and published
        before = published(root)
        placed.update(produce_labelled(broker.bootstrap, topics, synth.generate(seed=38, n=3000)))
        assert _wait_for(lambda: published(root) >= before + 4, 120), m.text()[-3000:]
    finally:
        took = m.terminate()
    assert took < SIGTERM_EXIT_S, (took, m.text()[-3000:])
    assert m.proc.returncode == 0, m.text()[-3000:]
    # a stalled broker is reported, but not 20 lines a second
    kafka_lines = [ln for ln in m.text().splitlines() if "flowaudit.stream WARNING kafka:" in ln]
    assert len(kafka_lines) <= 4 * 8, len(kafka_lines)   # at most one per error kind per 10 s
    drain_and_check(broker, topics, root, placed, *group, *ARGS)


def test_a_zombie_member_never_writes_what_its_successor_writes(broker, topics, tmp_path):
    placed = produce_labelled(broker.bootstrap, topics, synth.generate(seed=41, n=8000, bad_fraction=0.02))
    root = tmp_path / "out"
    group = ("--group", "g-zombie")
    a = Member(broker, topics, root, tmp_path / "a.log", *group, *ARGS, **SLOW)
    b = None
    try:
        assert _wait_for(lambda: published(root) >= 2, 90), a.text()[-3000:]
        b = Member(broker, topics, root, tmp_path / "b.log", *group, *ARGS, **SLOW)
        assert _wait_for(lambda: "assigned [(" in b.text(), 60), b.text()[-3000:]
        time.sleep(1.0)
        os.kill(a.proc.pid, signal.SIGSTOP)     # a is frozen with buffered rows and held locks
        try:
            # past a's session (6 s): the group gives b every partition, but a still holds some
            # locks, so b waits for them instead of writing beside a
            assert _wait_for(lambda: "waiting for the storage locks" in b.text(), 40), b.text()[-3000:]
            time.sleep(15 - 6)
            mark = len(a.text())
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        # a wakes up, finds its session gone, lets its locks go (b takes them) and rejoins the group
        assert _wait_for(lambda: "lock taken" in b.text(), 60), b.text()[-3000:]
        assert _wait_for(lambda: "assigned [(" in a.text()[mark:], 60), a.text()[-3000:]
    finally:
        times = [a.terminate()] + ([b.terminate()] if b else [])
    assert max(times) < SIGTERM_EXIT_S, (times, a.text()[-2000:], b.text()[-2000:])
    assert a.proc.returncode == 0 and b.proc.returncode == 0, (a.text()[-3000:], b.text()[-3000:])
    drain_and_check(broker, topics, root, placed, *group, *ARGS)


def _metric(port: int, name: str) -> float | None:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    vals = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(name)]
    return sum(vals) if vals else None


def test_disk_full_pauses_then_resumes(broker, topics, tmp_path, small_tmpfs):
    """The output root is a real 2 MiB tmpfs that the run outgrows.  A member stuck on the full
    disk still exits on SIGTERM at once; the next one waits for space (paused, metrics say so)
    and finishes once the file system is grown, with every offset exactly once."""
    placed = produce_labelled(broker.bootstrap, topics, synth.generate(seed=43, n=12000, bad_fraction=0.02))
    root = small_tmpfs / "out"
    group = ("--group", "g-full")
    port = free_port()
    m1 = Member(broker, topics, root, tmp_path / "m1.log", *group, "--rotate-records", "400",
                "--metrics-port", str(port))
    try:
        assert _wait_for(lambda: (_metric(port, "flowaudit_storage_paused") or 0) == 1, 120), m1.text()[-3000:]
        assert (_metric(port, 'flowaudit_storage_errors_total{errno="ENOSPC"}') or 0) >= 1
        time.sleep(1.5)
        assert m1.proc.poll() is None, m1.text()[-3000:]   # paused, not crashed
    finally:
        took = m1.terminate()
    assert took < SIGTERM_EXIT_S, (took, m1.text()[-3000:])
    assert m1.proc.returncode == 0, m1.text()[-3000:]
    assert "Traceback" not in m1.text()
    assert "storage fault (ENOSPC)" in m1.text()
    m2 = Member(broker, topics, root, tmp_path / "m2.log", *group, "--rotate-records", "400", "--until-drained",
                "--metrics-port", str(port))
    try:
        assert _wait_for(lambda: (_metric(port, "flowaudit_storage_paused") or 0) == 1, 120), m2.text()[-3000:]
        r = subprocess.run(["mount", "-o", "remount,size=256m", str(small_tmpfs)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert m2.proc.wait(timeout=180) == 0, m2.text()[-3000:]
    finally:
        m2.kill()
    assert "storage writable again" in m2.text()
    assert_exactly_once(root, placed)
    assert_no_partial_files(root)
    assert found_hits(root) == expected_hits(placed)


def _recreate(broker, names: list[str], partitions: int = 2) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for fut in admin.delete_topics(names, operation_timeout=10).values():
        fut.result(timeout=10)
    assert _wait_for(lambda: not set(names) & set(admin.list_topics(timeout=5).topics), 20)
    broker.create_topics({t: partitions for t in names})


def test_storage_ahead_of_the_broker_is_never_skipped_silently(broker, topics, tmp_path):
    only = {"json": topics["json"]}
    root = tmp_path / "out"
    group = ("--group", "g-ahead", "--metrics-port", "0")
    first = produce_labelled(broker.bootstrap, only, synth.generate(seed=47, n=1600, formats=("json",)))
    r = run_stream(broker.bootstrap, only, root, "--until-drained", *group)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_exactly_once(root, first)
    # the topic is recreated and receives fewer messages than storage holds
    _recreate(broker, [only["json"]])
    second = produce_labelled(broker.bootstrap, only, synth.generate(seed=53, n=300, formats=("json",)))
    r = run_stream(broker.bootstrap, only, root, "--until-drained", *group, "--group", "g-ahead-2", timeout=120)
    assert r.returncode == 3, (r.returncode, r.stderr[-3000:])
    assert "storage_ahead" in r.stderr and "recreated or truncated" in r.stderr
    assert_exactly_once(root, first)                      # stopped: nothing written, nothing skipped
    # the operator chooses a new epoch: the new log is filed beside the old one
    r = run_stream(broker.bootstrap, only, root, "--until-drained", *group, "--on-log-reset", "new_epoch")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_dataset(root, "messages").to_pylist() + read_dataset(root, "quarantine").to_pylist()
    assert len(rows) == len(first) + len(second)
    epoch1 = [p for p in root.rglob("*+e1.parquet") if "dataset=messages" in str(p)]
    assert epoch1
    # recreated again, now with more messages than storage holds: offsets look plausible, but the
    # stored message's fingerprint differs from the broker's
    _recreate(broker, [only["json"]])
    produce_labelled(broker.bootstrap, only, synth.generate(seed=59, n=1000, formats=("json",)))
    r = run_stream(broker.bootstrap, only, root, "--until-drained", *group, timeout=120)
    assert r.returncode == 3, (r.returncode, r.stderr[-3000:])
    assert "log_rewritten" in r.stderr or "storage_ahead" in r.stderr


def test_an_unreadable_resume_file_stops_with_a_reason_and_moving_it_aside_reads_the_range_again(broker, topics,
                                                                                                   tmp_path):
    """A partition's newest committed file cut short (a bad disk, a restore gone wrong) leaves
    storage unable to say where the partition resumes: the service stops with exit 5 and one line
    naming the file and what to do (it was a traceback, exit 1).  With the file moved aside, the
    other datasets' files of its range are dropped as orphans and the range is read again: every
    offset once."""
    import shutil

    only = {"json": topics["json"]}
    root = tmp_path / "out"
    group = ("--group", "g-unreadable", "--metrics-port", "0", "--rotate-records", "100")
    first = produce_labelled(broker.bootstrap, only, synth.generate(seed=71, n=400, formats=("json",)))
    r = run_stream(broker.bootstrap, only, root, "--until-drained", *group)
    assert r.returncode == 0, r.stderr[-3000:]
    newest = max((p for p in (root / "dataset=messages").rglob("*.parquet") if "+0+" in p.name),
                 key=lambda p: p.name)
    good = newest.read_bytes()
    newest.write_bytes(good[:200])
    r = run_stream(broker.bootstrap, only, root, "--until-drained", *group, timeout=120)
    assert r.returncode == 5, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr and f"committed file {newest} is unreadable (" in r.stderr
    assert "move it aside" in r.stderr
    shutil.move(newest, tmp_path / newest.name)
    r = run_stream(broker.bootstrap, only, root, "--until-drained", *group, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_exactly_once(root, first)
    assert_no_partial_files(root)


def test_sigterm_during_start_up_is_a_clean_stop(broker, topics, tmp_path):
    """The handlers are installed before /metrics is served: a SIGTERM as soon as the endpoint
    answers (kernel warm-up, broker check) ends the run with 0, not -15."""
    port = free_port()
    m = Member(broker, topics, tmp_path / "out", tmp_path / "m.log", "--group", "g-early",
               "--metrics-port", str(port))
    try:
        assert _wait_for(lambda: _metric(port, "flowaudit_build_info") is not None, 60), m.text()[-2000:]
    finally:
        took = m.terminate()
    assert m.proc.returncode == 0 and took < SIGTERM_EXIT_S, (m.proc.returncode, took, m.text()[-2000:])


def test_until_drained_gives_up_with_a_reason_instead_of_waiting_for_ever(broker, topics, corpus, tmp_path):
    """A partition whose lock another process holds never drains: after kafka.drain_stall_s the
    run exits 4 and names it.  A DNS partition is locked too: the NetFlow messages wait for it
    kafka.dns_wait_s at most, then go on, counted, and their flows are stored."""
    from confluent_kafka import Producer

    from flowaudit.sinks.parquet import PartitionLock

    from .test_flowpath import _restart_inputs

    produce_labelled(broker.bootstrap, topics, synth.generate(seed=61, n=200))
    tel = {"dns": topics["xml"].replace(".xml", ".dns"), "netflow": topics["xml"].replace(".xml", ".netflow")}
    broker.create_topics({t: 1 for t in tel.values()})
    rows, _cut = _restart_inputs(corpus)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for topic, kind, _off, key, value in rows:
        p.produce(tel[kind], value, key=key, partition=0)
    assert p.flush(30) == 0
    root = tmp_path / "out"
    held = [PartitionLock(root, topics["xml"], 1), PartitionLock(root, tel["dns"], 0)]
    assert all(h.try_acquire() for h in held)
    try:
        r = run_stream(broker.bootstrap, {**topics, **tel}, root, "--until-drained", "--group", "g-stall",
                       "--metrics-port", "0", timeout=120, FLOWAUDIT_KAFKA_DRAIN_STALL_S="8",
                       FLOWAUDIT_KAFKA_DNS_WAIT_S="2")
    finally:
        for h in held:
            h.release()
    assert r.returncode == 4, (r.returncode, r.stderr[-3000:])
    assert f"{topics['xml']}+1 (locked)" in r.stderr and "kafka.drain_stall_s" in r.stderr
    n_nf = sum(1 for _t, kind, *_ in rows if kind == "netflow")
    assert f"DNS sync        {n_nf} flow message(s) sent on after kafka.dns_wait_s" in r.stdout, r.stdout
    assert "kafka.dns_wait_s = 2 s" in r.stderr
    flows = read_dataset(root, "flows")
    assert flows.num_rows == 161 + 3        # every flow, as test_flowpath's uninterrupted run has them
    assert not [t for t in read_dataset(root, "transfers").to_pylist() if t["seen_where"] == "DNS_ANSWER"]


def _drain_with_members(broker, only, root: Path, tmp_path: Path, group: str, stall_s: int, n: int = 3) -> list:
    """``n`` members of ``group`` with ``--until-drained``, waited for; returns them (exited)."""
    members = [Member(broker, only, root, tmp_path / f"m{i}.log", "--group", group, "--until-drained",
                      "--metrics-port", "0", FLOWAUDIT_KAFKA_DRAIN_STALL_S=str(stall_s)) for i in range(n)]
    try:
        codes = [m.proc.wait(timeout=180) for m in members]
    finally:
        for m in members:
            m.kill()
    if codes != [0] * n:    # each member's whole log (an assertion's repr would cut the middle out)
        pytest.fail(f"exit codes {codes}\n" + "\n".join(f"--- member {i} (exit {c}):\n{m.text()[-6000:]}"
                                                        for i, (m, c) in enumerate(zip(members, codes))))
    return members


def test_members_sharing_topics_all_end_with_until_drained(broker, topics, tmp_path):
    """Three members of one group over two partitions, rows buffered (no rotation): each holds
    its share, or none, and waits until the group's commits reach every partition's end; each
    publishes what it buffers first, so none waits for another's.  All three exit 0, and every
    offset is stored exactly once."""
    only = {"json": topics["json"]}
    placed = produce_labelled(broker.bootstrap, only, synth.generate(seed=67, n=1200, formats=("json",),
                                                                    bad_fraction=0.02))
    root = tmp_path / "out"
    members = _drain_with_members(broker, only, root, tmp_path, "g-drain-3", stall_s=60)
    held = [m.text().count("assigned [") for m in members]
    assert all(held), held   # every member joined the group before it ended
    assert_exactly_once(root, placed)
    assert_no_partial_files(root)
    assert found_hits(root) == expected_hits(placed)


def _sharing_member(broker, topic: str, tmp_path: Path, group: str):
    """A stream member of ``group`` over ``topic`` (two partitions of 40 messages, a batch each:
    the embedded broker's log end is its last batch's start + 1), built in process with a real
    consumer and not yet joined: the tests below drive its ``--until-drained`` checks."""
    from confluent_kafka import Consumer, Producer

    from flowaudit.config import Settings
    from flowaudit.service import StreamService
    from flowaudit.sources.kafka import consumer_config

    p = Producer({"bootstrap.servers": broker.bootstrap})
    for part in (0, 1):
        for i in range(40):
            p.produce(topic, b'{"n": %d}' % i, partition=part)
            assert p.flush(30) == 0
    st = Settings()
    st.kafka.bootstrap_servers = broker.bootstrap
    st.kafka.group_id = group
    st.kafka.topics = {topic: "json"}
    st.sink.root = str(tmp_path / "out")
    st.security.hmac_key = "sharing-member-test-key"
    svc = StreamService(st.validate(), metrics=None, install_signals=False)
    svc.until_drained = True
    svc.consumer = Consumer(consumer_config(svc.settings))
    svc._topic_parts, svc.expected_partitions = {topic: 2}, 2
    return svc


def _close(svc) -> None:
    svc.consumer.close()
    for s in svc.slots.values():
        s.lock.release()


def test_an_end_of_partition_below_the_logs_end_is_not_trusted(broker, topics, tmp_path):
    """A member sharing the topics ends (``--until-drained``) only when each partition it holds
    had its end-of-partition event at the log's end, asked in the same ListOffsets request as the
    others' ends.  An event below the end (what the three-member drain once saw under load: a
    member exited 0 without reading its partition) keeps the partition reading.  Real broker,
    real commits; the event's offset is set as the consume loop records it."""
    from confluent_kafka import TopicPartition

    topic = topics["json"]
    svc = _sharing_member(broker, topic, tmp_path, "g-own-eof")
    try:
        svc.open_partition(topic, 0)                  # this member holds partition 0
        slot = svc.slots[(topic, 0)]
        svc.consumer.commit(offsets=[TopicPartition(topic, 1, 40)], asynchronous=False)   # the other is done
        slot.eof, slot.eof_at = True, 0               # end of partition before any message
        drained, what = svc._group_drained()
        assert not drained and f"{topic}+0 (end of partition at 0 of" in what, what
        assert slot.eof is False                      # it reads on
        slot.eof, slot.eof_at = True, 40              # the event at the log's end
        assert svc._group_drained() == (True, "")
        # and the others' commits still count: partition 1 short of its end
        svc.consumer.commit(offsets=[TopicPartition(topic, 1, 10)], asynchronous=False)
        svc._other_logs = (0.0, {})
        drained, what = svc._group_drained()
        assert not drained and f"{topic}+1 (committed 10 of" in what, what
    finally:
        _close(svc)


def test_an_assignment_served_by_close_is_not_taken_up(broker, topics, tmp_path):
    """A stop right after the group's join (CI, once: a worker of `--workers 2` stopped by its
    supervisor's death): the assignment the join produced waits, and Consumer.close() serves it.
    There the committed offsets can no longer be asked (the handle is being destroyed), and
    confluent-kafka re-raised that failure out of close(): the member exited with a traceback.  A
    member that is closing takes nothing up: close() returns, and no partition stays locked."""
    from flowaudit.sinks.parquet import PartitionLock

    topic, group = topics["json"], "g-close-assign"
    svc = _sharing_member(broker, topic, tmp_path, group)
    served = []

    def on_assign(consumer, partitions):
        served.append((svc._closing, len(partitions)))
        svc._on_assign(consumer, partitions)

    svc.consumer.subscribe([topic], on_assign=on_assign, on_revoke=svc._on_revoke)
    svc.consumer.poll(0.05)                 # joins; the rest of the join runs in the background
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert _wait_for(lambda: "STABLE" in str(admin.describe_consumer_groups([group])[group].result(10).state), 60)
    time.sleep(1.0)                         # the member's assignment has arrived and waits to be served
    svc._closing = True                     # as run() sets it before closing
    _close(svc)                             # serves the assignment (without the guard: a KafkaError here)
    assert served == [(True, 2)]
    assert svc.slots == {} and not svc._assigned
    for part in (0, 1):
        lock = PartitionLock(svc.root, topic, part)
        assert lock.try_acquire(), part
        lock.release()


def test_a_member_in_a_rebalance_ends_when_the_groups_commits_reach_every_end(broker, topics, tmp_path):
    """The transactional drain test once failed so (exit 4): two members ended together, the
    rebalance their leaving started kept the third without partitions past the stall limit, though
    the group's commits had reached every end.  A member that has been in the group and holds
    nothing now (revoked, rows published) asks the commits of every partition; one that has
    never been assigned does not end before it joins."""
    from confluent_kafka import TopicPartition

    topic = topics["json"]
    svc = _sharing_member(broker, topic, tmp_path, "g-rebalance-end")
    try:
        assert svc.slots == {} and not svc._assigned
        svc.consumer.commit(offsets=[TopicPartition(topic, 0, 40)], asynchronous=False)
        assert svc._drained() is False                 # never joined: waits for its assignment
        svc._joined = True                             # joined once, revoked since (no slots)
        assert svc._drained() is False                 # partition 1 not committed yet
        assert f"{topic}+1 (committed" in svc._group_check[2], svc._group_check
        svc.consumer.commit(offsets=[TopicPartition(topic, 1, 40)], asynchronous=False)
        svc._group_check = (0.0, False, "")            # ask again now (GROUP_CHECK_S)
        assert svc._drained() is True
        assert svc._drain_evidence().startswith(f"no partition held; the others: {topic}+0 committed 40")
    finally:
        _close(svc)


def test_members_end_with_until_drained_after_a_transactional_producer(broker, topics, tmp_path):
    """A transactional producer's commit markers take offsets that no consumer receives, so the
    last offset a member stores is below the partition's end.  At the end of a partition, with
    every row durable, a member commits its consumer position (past the markers): the group's
    offsets reach the end, and the member holding no partition stops instead of waiting out the
    stall limit (exit 4).  Every data offset is stored exactly once."""
    only = {"json": topics["json"]}
    placed = produce_labelled(broker.bootstrap, only, synth.generate(seed=71, n=600, formats=("json",),
                                                                    bad_fraction=0.02), transaction_size=100)
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "probe"})
    ends = {p: c.get_watermark_offsets(TopicPartition(only["json"], p), timeout=10)[1] for p in (0, 1)}
    c.close()
    data_end = {p: 1 + max(o for (_t, q, o) in placed if q == p) for p in (0, 1)}
    assert all(ends[p] > data_end[p] for p in (0, 1)), (ends, data_end)   # markers after the data
    root = tmp_path / "out"
    _drain_with_members(broker, only, root, tmp_path, "g-drain-tx", stall_s=40)   # exit 4 before
    assert_exactly_once(root, placed)
    assert_no_partial_files(root)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g-drain-tx"})
    committed = c.committed([TopicPartition(only["json"], p) for p in (0, 1)], timeout=10)
    c.close()
    assert {tp.partition: tp.offset for tp in committed} == ends     # the group's offsets at the ends


def test_held_netflow_sets_and_the_dns_map_survive_a_restart(broker, corpus, tmp_path):
    """A data set waiting for its template and the DNS answer that attributes it are committed
    before the stream stops; after the restart the template arrives, and the stream writes the
    same flows and transfers as one uninterrupted run (the state is checkpointed beside the files)."""
    from confluent_kafka import Producer

    from .test_flowpath import _restart_inputs

    rows, cut = _restart_inputs(corpus)
    names = {"zeek.dns": "t-restart.dns", "netflow.raw": "t-restart.netflow"}
    broker.create_topics({t: 1 for t in names.values()})
    spec = f"{names['zeek.dns']}=dns,{names['netflow.raw']}=netflow"

    def produce(part):
        p = Producer({"bootstrap.servers": broker.bootstrap})
        for topic, _kind, _off, key, value in part:
            p.produce(names[topic], value, key=key, partition=0)
        assert p.flush(30) == 0

    def stream(root, group):
        cmd = stream_cmd(broker.bootstrap, {}, root, "--until-drained", "--group", group, "--metrics-port", "0")
        cmd[cmd.index("--topics") + 1] = spec
        r = subprocess.run(cmd, env=stream_env(), capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    produce(rows[:cut])
    stream(tmp_path / "split", "g-restart-a")
    assert (tmp_path / "split" / ".state" / "flowpath.state").is_file()
    produce(rows[cut:])
    r = stream(tmp_path / "split", "g-restart-b")
    assert "flow path state not restored" not in r.stderr

    # everything in one run, for comparison, with the consumer's worst order forced: the DNS
    # partition is not readable (its storage lock held, as a leaving member would) while the
    # NetFlow partition is read to its end.  Its flows wait for the DNS answers by record time
    # (flowaudit/sources/dnssync.py): read first, the LOGINK flow would lose its attribution.
    whole = tmp_path / "whole"
    rc, out, text = stream_with_a_partition_locked(broker.bootstrap, spec, whole, (names["zeek.dns"], 0),
                                                   tmp_path / "whole.log", "g-restart-whole",
                                                   FLOWAUDIT_KAFKA_DNS_WAIT_S="120")
    assert rc == 0, text[-3000:]
    assert "lock taken" in text and "DNS sync" not in out

    def canon(root, d):
        keep = ("source", "offset", "exporter", "src_addr", "dst_addr", "dst_port", "bytes", "platform",
                "indicator", "seen_where", "rule")
        return sorted(tuple(str(r.get(k)) for k in keep) for r in read_dataset(root, d).to_pylist())

    for d in ("flows", "transfers"):
        assert canon(tmp_path / "split", d) == canon(tmp_path / "whole", d), d
    held = [f for f in read_dataset(tmp_path / "split", "flows").to_pylist()
            if f["exporter"] == "192.0.2.77" and f["offset"] == 3]
    assert sorted(f["dst_addr"] for f in held) == ["198.51.100.7", "8.8.8.8"]
    assert [t["indicator"] for t in read_dataset(tmp_path / "split", "transfers").to_pylist()
            if t["dst_addr"] == "198.51.100.7" and t["offset"] == 3] == ["gateway.logink.cn"]
