"""Shared fixtures: the real embedded broker, the corpus, a labelled synthetic stream."""
from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
HMAC_KEY = "test-key-0123456789abcdef"
_counter = itertools.count()

# The slowest test files first, longest first (their time on a 2-core runner with a cold cache: 60-340 s
# each; the fuzz pass compiles the bounds-checked kernels, the warmup test every kernel), the rest after
# them in their own order.
# `./dev test` runs pytest-xdist with `--dist loadfile --no-loadscope-reorder`, which hands files to
# the workers (three on 2 cores) in this order: the long files start at once and the short ones fill
# the end, so the workers finish together.  Only the order changes, never which tests run.
SLOW_FILES = ("test_faults.py", "test_fuzz.py", "test_warmup.py", "test_workers.py", "test_stream_integration.py",
              "test_audit.py", "test_findings_stream.py", "test_quarantine.py", "test_stream_write_behind.py",
              "test_split.py", "test_findings_memory.py", "test_kernels_edifact.py", "test_bench.py",
              "test_findings_cli.py", "test_hits_table.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: a file's tests keep their order


@pytest.fixture(scope="session")
def corpus() -> Path:
    assert CORPUS.is_dir(), f"the shared corpus is expected at {CORPUS}"
    return CORPUS


@pytest.fixture(scope="session")
def broker():
    """One real Tansu broker for the session, stopped by PID at the end (also on failure)."""
    from flowaudit.broker import EmbeddedBroker

    b = EmbeddedBroker()
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def topics(broker, request):
    """Fresh topics per test: format -> topic name."""
    n = next(_counter)
    stem = request.node.name.split("[")[0][-20:].replace("_", "-")
    names = {f: f"t{n}-{stem}.{f}" for f in ("edifact", "x12", "xml", "json")}
    broker.create_topics({t: 2 for t in names.values()})
    return names


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 2 MiB tmpfs (root in CI and here): disk-full tests fill it for real."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a tmpfs for the disk-full tests (needs root): {r.stderr}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def keyed(value: str) -> bytes:
    return hmac.new(HMAC_KEY.encode(), value.encode(), hashlib.sha256).digest()


def produce_labelled(bootstrap: str, topics: dict[str, str], messages, transaction_size: int = 0) -> dict:
    """Produce synth messages; returns (topic, partition, offset) -> SynthMessage from delivery reports.
    ``transaction_size``: produce in committed transactions of that many messages (each ends with a
    commit marker in every partition it wrote to, an offset no consumer receives)."""
    from confluent_kafka import Producer

    from flowaudit.demo import hash_partition

    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5}
    if transaction_size:
        conf["transactional.id"] = f"flowaudit-test-{os.getpid()}-{time.monotonic_ns()}"
    p = Producer(conf)
    placed: dict = {}
    errors = []

    def report(err, msg, m):
        if err is not None:
            errors.append(err)
        else:
            placed[(msg.topic(), msg.partition(), msg.offset())] = m

    if transaction_size:
        p.init_transactions(30)
    for i, m in enumerate(messages):
        if transaction_size and i % transaction_size == 0:
            if i:
                p.commit_transaction(30)
            p.begin_transaction()
        p.produce(topics[m.format], m.value, key=m.key, partition=hash_partition(m.key, 2),
                  on_delivery=lambda err, msg, m=m: report(err, msg, m))
        p.poll(0)
    if transaction_size:
        p.commit_transaction(30)
    assert p.flush(30) == 0 and not errors, errors
    return placed


def stream_cmd(bootstrap: str, topics: dict[str, str], root: Path, *extra: str) -> list[str]:
    t = ",".join(f"{name}={fmt}" for fmt, name in topics.items())
    return [sys.executable, "-m", "flowaudit", "stream", "--bootstrap", bootstrap, "--topics", t,
            "--root", str(root), *extra]


def stream_env(**extra) -> dict:
    env = dict(os.environ)
    env.update({"FLOWAUDIT_SECURITY_HMAC_KEY": HMAC_KEY, "FLOWAUDIT_KAFKA_SESSION_TIMEOUT_MS": "6000"})
    env.update(extra)
    return env


def stream_with_a_partition_locked(bootstrap: str, spec: str, root: Path, locked: tuple[str, int], log_path: Path,
                                   group: str, hold_s: float = 3.0, **env) -> tuple[int, str, str]:
    """``flowaudit -v stream --until-drained`` over the topics ``spec`` (``T=FMT,...``) with the
    storage lock of the partition ``locked`` held, as a leaving member would, until the stream
    says it waits for it and ``hold_s`` more: the consumer's worst order, the other partitions
    read first (flowaudit/sources/dnssync.py).  ``(returncode, stdout, the log)``."""
    from flowaudit.sinks.parquet import PartitionLock

    lock = PartitionLock(root, *locked)
    assert lock.try_acquire()
    cmd = stream_cmd(bootstrap, {}, root, "--until-drained", "--group", group, "--metrics-port", "0")
    cmd[cmd.index("--topics") + 1] = spec
    cmd.insert(cmd.index("stream"), "-v")
    with open(log_path, "wb") as err:
        proc = subprocess.Popen(cmd, env=stream_env(**env), stdout=subprocess.PIPE, stderr=err)
    try:
        # the warning comes with the assignment of the partitions
        deadline = time.monotonic() + 120
        while "waiting for the storage locks" not in log_path.read_text(errors="replace"):
            assert time.monotonic() < deadline, "the stream never said it waits for the lock"
            time.sleep(0.05)
        time.sleep(hold_s)                              # the other partitions are read meanwhile
    finally:
        lock.release()
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    return proc.returncode, out.decode(), log_path.read_text(errors="replace")


def run_stream(bootstrap, topics, root, *extra, timeout=180, **env):
    return subprocess.run(stream_cmd(bootstrap, topics, root, *extra), env=stream_env(**env),
                          capture_output=True, text=True, timeout=timeout)
