"""Findings over what the real stream wrote: synth exposure scenario -> embedded broker ->
``flowaudit stream`` (watchlist dir + zone policy) -> Parquet -> ``flowaudit findings``."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import orjson

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


def _scenario_setup(broker, topics, tmp_path, every_partition=False):
    """The exposure scenario produced with its own record times (ordered per partition), plus a
    last message per topic 10 minutes later (``every_partition``: on each partition of each topic),
    so the stream's windows close up to the exposures'."""
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
    tail = synth.generate(seed=99, n=8)
    if every_partition:
        tail = [next(m for m in synth.generate(seed=99, n=64) if m.format == f) for f in topics]
    msgs += [(m, last) for m in tail]
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for m, ts in msgs:
        parts = [hash_partition(m.key, 2)] if not (every_partition and ts == last) else [0, 1]
        for part in parts:
            p.produce(topics[m.format], m.value, key=m.key, partition=part, timestamp=ts)
            p.poll(0)
    n = len(msgs) + (len(tail) if every_partition else 0)
    assert p.flush(30) == 0
    return sc, ("--watchlist-dir", str(wl), "--policy", str(policy)), n


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


def test_two_members_split_an_exposure_and_the_findings_read_back_whole(broker, topics, tmp_path):
    """Two ``flowaudit stream`` members of one group, round-robin: each topic's two partitions
    go to different members, so the LOGINK queries of port.json (keys on both partitions) are
    evidence of one finding split across them.  Each member writes its own findings files (no
    file is shared, nothing is lost to a concurrent replace); read back, the findings are those
    of one member that owned every partition: one row per finding_id, the evidence combined."""
    import os
    import signal
    import time

    import pyarrow.parquet as pq

    from flowaudit.detect.windows import MEMBER_META, read_findings
    from flowaudit.sinks.parquet import read_dataset

    from .conftest import stream_cmd, stream_env

    root = tmp_path / "split"
    wl, policy = tmp_path / "wl", tmp_path / "policy.toml"
    extra = ("--watchlist-dir", str(wl), "--policy", str(policy))
    wl.mkdir()
    sc = synth.exposure_scenario(background=300)
    (wl / "ops.toml").write_text(sc.watchlist_toml)
    policy.write_text(sc.policy_toml.replace('["port.edifact", "port.x12"]', f'["{topics["edifact"]}", "{topics["x12"]}"]')
                      .replace('["port.json"]', f'["{topics["json"]}"]'))    # as _scenario_setup writes it
    env = stream_env(FLOWAUDIT_KAFKA_POLL_MAX_MESSAGES="40")
    logs = [tmp_path / f"m{i}.log" for i in range(2)]
    procs, outs = [], []
    try:
        for lg in logs:
            cmd = stream_cmd(broker.bootstrap, topics, root, "--group", "g-two", "--metrics-port", "0",
                             "--rotate-records", "40", *extra)
            cmd.insert(cmd.index("stream"), "-v")
            outs.append(open(lg, "wb"))
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=outs[-1]))
            # the second member joins once the first one has its partitions: one rebalance, then 4 + 4
            deadline = time.monotonic() + 60
            while "assigned [(" not in lg.read_text(errors="replace") and time.monotonic() < deadline:
                time.sleep(0.1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
                lg.read_text(errors="replace").count("assigned [(") >= (2 if i == 0 else 1) for i, lg in enumerate(logs)):
            time.sleep(0.1)
        # held while the messages are produced, so that no partition is at its end (which holds no
        # window open) while its messages are still on the way: the cuts depend on the data alone
        for p in procs:
            os.kill(p.pid, signal.SIGSTOP)
        try:
            time.sleep(1.0)       # a fetch waiting at the broker answers empty meanwhile
            sc2, _, n = _scenario_setup(broker, topics, tmp_path, every_partition=True)
            time.sleep(0.5)
        finally:
            for p in procs:
                os.kill(p.pid, signal.SIGCONT)

        def stored():
            return sum(read_dataset(root, d).num_rows for d in ("messages", "quarantine"))

        deadline = time.monotonic() + 60
        while stored() < n and time.monotonic() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.2)
        assert stored() == n, [lg.read_text(errors="replace")[-2000:] for lg in logs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        codes = [p.wait(timeout=60) for p in procs]
        for f in outs:
            f.close()
    assert codes == [0, 0], [lg.read_text(errors="replace")[-3000:] for lg in logs]

    # each member wrote its own files, naming the partitions they cover; the exposure was split
    files = sorted((root / "dataset=findings").rglob("findings-*.parquet"))
    covers = {f: tuple(orjson.loads(pq.read_schema(f).metadata[MEMBER_META])["partitions"]) for f in files}
    assert len(set(covers.values())) == 2 and not set.intersection(*map(set, set(covers.values())))
    split_ids = [fid for fid, c in Counter(fid for f in files for fid in pq.read_table(f)["finding_id"].to_pylist())
                 .items() if c > 1]
    assert split_ids, "no finding had evidence on both members"

    # one member owning every partition, over the same messages
    whole = tmp_path / "whole"
    r = run_stream(broker.bootstrap, topics, whole, "--until-drained", "--group", "g-two-whole", "--metrics-port",
                   "0", *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    want = [{k: v for k, v in r.items() if k not in ("date", "hour")} for r in _findings_rows(whole)]
    assert want == sorted(read_findings(whole)[0].to_pylist(), key=lambda r: (r["window_start_ns"], r["finding_id"]))
    got, info = read_findings(root)
    got = sorted(got.to_pylist(), key=lambda r: (r["window_start_ns"], r["finding_id"]))
    assert info["recomputed_windows"] >= 1 and info["members"] == 2
    assert len({f["finding_id"] for f in got}) == len(got)      # one row per finding
    assert got == want
    exposing = sum("LOGINK" in m.egress for _, m, _ in sc2.messages)
    assert sum(f["messages"] for f in got if f["correlation"] == "message_borne") == exposing   # none lost or twice
    assert {f["finding_id"] for f in got} >= set(split_ids)
