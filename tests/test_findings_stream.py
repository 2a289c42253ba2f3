"""Findings over what the real stream wrote: synth exposure scenario -> embedded broker ->
``flowaudit stream`` (watchlist dir + zone policy) -> Parquet -> ``flowaudit findings``."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flowaudit import synth

from .conftest import produce_labelled, run_stream

pytestmark = pytest.mark.slow


def test_findings_over_the_streams_output(broker, topics, tmp_path):
    sc = synth.exposure_scenario(background=600)
    placed = produce_labelled(broker.bootstrap, topics, [m for _, m, _ in sc.messages])
    wl = tmp_path / "wl"
    wl.mkdir()
    (wl / "ops.toml").write_text(sc.watchlist_toml)
    # the inventory names this test's topics
    policy = tmp_path / "policy.toml"
    policy.write_text(sc.policy_toml.replace('["port.edifact", "port.x12"]', f'["{topics["edifact"]}", "{topics["x12"]}"]')
                      .replace('["port.json"]', f'["{topics["json"]}"]'))
    root = tmp_path / "out"
    r = run_stream(broker.bootstrap, topics, root, "--until-drained", "--group", "g-findings", "--metrics-port", "0",
                   "--watchlist-dir", str(wl), "--policy", str(policy))
    assert r.returncode == 0, r.stderr[-3000:]
    p = subprocess.run([sys.executable, "-m", "flowaudit", "findings", str(root), "--policy", str(policy),
                        "--format", "json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    got = {(x["platform"], x["rule"], x["entity"]): x for x in map(json.loads, p.stdout.splitlines())}
    # the message-borne exposures (flows do not travel through Kafka in this test)
    entity = {"topic:port.xml": f"topic:{topics['xml']}"}
    want = {(e.platform, e.rule, entity.get(e.entity, e.entity)): e for e in sc.exposures
            if e.correlation == "message_borne"}
    assert set(got) == set(want)
    for key, e in want.items():
        f = got[key]
        assert f["severity"] == e.severity and f["exposure"] == "observed", (key, f["severity_reasons"])
        assert e.classes <= {c["data_class"] for c in f["data_classes"]}
        topic = f["topics"][0]
        exposing = [k for k, m in placed.items() if k[0] == topic and "LOGINK" in m.egress]
        assert f["messages"] == len(exposing)
        assert {(s["source"], s["partition"], s["offset"]) for s in f["samples"]} <= set(exposing)
    # the whole scenario's LOGINK messages are covered, and nothing else became a finding
    assert sum(f["messages"] for f in got.values()) == sum("LOGINK" in m.egress for m in placed.values())


def _scenario_setup(broker, topics, tmp_path):
    """The exposure scenario produced with its own record times (ordered per partition), plus a
    last message per topic 10 minutes later, so the stream's windows close up to the exposures'."""
    from confluent_kafka import Producer

    from flowaudit.demo import hash_partition

    sc = synth.exposure_scenario(background=300)
    wl = tmp_path / "wl"
    wl.mkdir(exist_ok=True)
    (wl / "ops.toml").write_text(sc.watchlist_toml)
    policy = tmp_path / "policy.toml"
    policy.write_text(sc.policy_toml.replace('["port.edifact", "port.x12"]', f'["{topics["edifact"]}", "{topics["x12"]}"]')
                      .replace('["port.json"]', f'["{topics["json"]}"]'))
    msgs = sorted(((m, ts) for _, m, ts in sc.messages), key=lambda x: x[1])
    last = max(ts for _, ts in msgs) + 600_000
    msgs += [(m, last) for m in synth.generate(seed=99, n=8)]
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for m, ts in msgs:
        p.produce(topics[m.format], m.value, key=m.key, partition=hash_partition(m.key, 2), timestamp=ts)
        p.poll(0)
    assert p.flush(30) == 0
    return sc, ("--watchlist-dir", str(wl), "--policy", str(policy)), len(msgs)


def _findings_rows(root):
    from flowaudit.sinks.parquet import read_dataset

    rows = read_dataset(root, "findings").to_pylist()
    return sorted(rows, key=lambda r: (r["window_start_ns"], r["finding_id"]))


def test_stream_windows_write_the_same_findings_after_kill_9(broker, topics, tmp_path):
    """Findings from the stream's event-time windows (5 min, 60 s lateness): an uninterrupted run
    and a run killed twice mid-stream end with the same findings rows, none twice."""
    import os
    import signal
    import time

    from .conftest import stream_cmd, stream_env

    sc, extra, n = _scenario_setup(broker, topics, tmp_path)
    whole = tmp_path / "whole"
    r = run_stream(broker.bootstrap, topics, whole, "--until-drained", "--group", "g-win-whole", "--metrics-port", "0",
                   *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    want = _findings_rows(whole)
    logink = [f for f in want if f["platform"] == "LOGINK" and f["correlation"] == "message_borne"]
    assert logink and all(f["window_end_ns"] - f["window_start_ns"] == 300 * 10**9 for f in want)
    labelled = {(e.platform, e.rule) for e in sc.exposures if e.correlation == "message_borne"}
    assert {(f["platform"], f["rule"]) for f in want if f["correlation"] == "message_borne"} == labelled
    assert len({f["finding_id"] for f in want}) == len(want)          # one row per finding

    split = tmp_path / "split"
    env = stream_env(FLOWAUDIT_KAFKA_POLL_MAX_MESSAGES="40")
    cmd = stream_cmd(broker.bootstrap, topics, split, "--group", "g-win-split", "--metrics-port", "0",
                     "--rotate-records", "60", *extra)

    def files(d):
        d = split / f"dataset={d}"
        return sum(1 for _ in d.rglob("*.parquet")) if d.exists() else 0

    # killed once in the middle of the first windows, once after a findings file was written
    for ready in (lambda: files("messages") >= 4, lambda: files("findings") >= 1):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while not ready() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    r = run_stream(broker.bootstrap, topics, split, "--until-drained", "--group", "g-win-split", "--metrics-port", "0",
                   *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _findings_rows(split) == want
