"""End to end on the real embedded broker: synth -> Kafka -> flowaudit stream -> Parquet.

The stream runs as a real subprocess (``python -m flowaudit stream``), so SIGKILL hits a real
process at arbitrary moments.
"""
from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flowaudit import synth
from flowaudit.broker import free_port
from flowaudit.protect import Protector, mask
from flowaudit.quarantine import open_row
from flowaudit.sinks.parquet import read_dataset

from .conftest import HMAC_KEY, keyed, produce_labelled, run_stream, stream_cmd, stream_env

pytestmark = pytest.mark.slow
CLASSES = ("container_number", "imo_number")


def expected_hits(placed: dict) -> collections.Counter:
    """Ground truth: (topic, partition, offset, class, hmac, valid) of every labelled container/IMO."""
    want = collections.Counter()
    for (t, p, o), m in placed.items():
        for lab in m.labels:
            if lab.data_class in CLASSES and not lab.lookalike:
                want[(t, p, o, lab.data_class, keyed(lab.value), bool(lab.valid))] += 1
    return want


def found_hits(root: Path) -> collections.Counter:
    """The structural hits (the labels describe decoded messages; salvaged hits of the deliberately
    broken ones are checked on their own, see assert_salvaged)."""
    hits = read_dataset(root, "hits").to_pylist()
    return collections.Counter((h["source"], h["partition"], h["offset"], h["data_class"], h["value_hmac"],
                                h["check_digit_valid"]) for h in hits if h["data_class"] in CLASSES
                               and not h["salvaged"])


def assert_salvaged(root: Path, placed: dict) -> None:
    """Salvaged hits are exactly the hits of quarantined offsets, flagged, of lower confidence,
    and each is a value the broken message really holds."""
    hits = read_dataset(root, "hits").to_pylist()
    bad = {k for k, m in placed.items() if m.expect_quarantine}
    for h in hits:
        k = (h["source"], h["partition"], h["offset"])
        assert h["salvaged"] == (k in bad), h
        if h["salvaged"]:
            assert h["confidence"] < 100 and h["location"].startswith("salvage:")
            assert h["byte_end"] <= len(placed[k].value)


def assert_exactly_once(root: Path, placed: dict) -> None:
    msgs = read_dataset(root, "messages")
    quar = read_dataset(root, "quarantine")
    seen = collections.Counter()
    for table in (msgs, quar):
        for t, p, o in zip(table.column("source").to_pylist(), table.column("partition").to_pylist(),
                           table.column("offset").to_pylist()):
            seen[(t, p, o)] += 1
    dup = [k for k, c in seen.items() if c > 1]
    assert not dup, f"offsets written twice: {dup[:5]}"
    missing = set(placed) - set(seen)
    assert not missing, f"offsets lost: {sorted(missing)[:5]}"
    assert set(seen) == set(placed)
    # quarantined exactly the deliberately bad messages, with the expected reason
    q = {(r["source"], r["partition"], r["offset"]): r for r in quar.to_pylist()}
    bad = {k: m for k, m in placed.items() if m.expect_quarantine}
    assert set(q) == set(bad)
    protector = Protector(HMAC_KEY.encode())
    for k, m in bad.items():
        assert q[k]["reason"] == m.expect_quarantine
        # the record is kept for the investigator, sealed: it opens with the operator key only
        assert q[k]["raw_encoding"] == "aes-256-gcm/v1" and q[k]["key_raw"] is None
        assert open_row(protector, q[k]) == (m.key, m.value)
        assert m.value not in q[k]["raw"] or len(m.value) < 4
    # Kafka keys are masked and keyed like values, never raw by default
    for row in msgs.to_pylist():
        m = placed[(row["source"], row["partition"], row["offset"])]
        assert row["key_hmac"] == protector.hmac(m.key) and row["key_masked"] == mask(m.key)
        assert row["key_raw"] is None


def assert_no_partial_files(root: Path) -> None:
    for f in root.rglob("*.parquet"):
        if not f.name.startswith("."):
            pq.read_metadata(f)  # every visible file has its footer


def test_stream_equals_ground_truth(broker, topics, tmp_path):
    msgs = list(synth.generate(seed=11, n=4000, bad_fraction=0.02))
    placed = produce_labelled(broker.bootstrap, topics, msgs)
    root = tmp_path / "out"
    r = run_stream(broker.bootstrap, topics, root, "--until-drained", "--group", "g-truth",
                   "--metrics-port", "0", "--rotate-records", "700")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "flowaudit summary" in r.stdout
    assert_exactly_once(root, placed)
    assert_no_partial_files(root)
    want, got = expected_hits(placed), found_hits(root)
    assert sum(want.values()) > 2000
    assert got == want, (f"missing {list((want - got).items())[:5]}, extra {list((got - want).items())[:5]}")
    assert_salvaged(root, placed)
    # no look-alike (booking ref shaped like a container, railcar mark) counted as a valid container
    lookalikes = {(t, p, o, keyed(lab.value)) for (t, p, o), m in placed.items() for lab in m.labels
                  if lab.lookalike and lab.data_class == "container_number"}
    assert lookalikes
    hits = read_dataset(root, "hits").to_pylist()
    assert not [h for h in hits if h["data_class"] == "container_number"
                and (h["source"], h["partition"], h["offset"], h["value_hmac"]) in lookalikes]
    # values are masked and keyed, never raw by default
    assert all(h["value_raw"] is None for h in hits)
    assert all("*" in h["value_masked"] for h in hits)
    # exactly the messages that query LOGINK's API became transfers, all attributed to LOGINK
    transfers = read_dataset(root, "transfers").to_pylist()
    to_logink = {k for k, m in placed.items() if "LOGINK" in m.egress}
    assert to_logink
    assert {(t["source"], t["partition"], t["offset"]) for t in transfers} == to_logink
    assert {t["platform"] for t in transfers} == {"LOGINK"}
    assert {"logink.track.customs", "test.logink.org"} <= {t["indicator"] for t in transfers}
    # per-message hit counts agree with the hits dataset
    m = read_dataset(root, "messages").to_pylist()
    per_msg = collections.Counter((h["source"], h["partition"], h["offset"]) for h in hits)
    assert all(row["n_hits"] == per_msg[(row["source"], row["partition"], row["offset"])] for row in m)


def test_buffer_budget_bounds_memory_across_partitions(broker, topics, tmp_path):
    """With record counts and hours that never close a file set, the byte budget across all
    partitions does: files are published (and offsets committed) during the run, exactly once."""
    msgs = list(synth.generate(seed=12, n=3000))
    placed = produce_labelled(broker.bootstrap, topics, msgs)
    root = tmp_path / "out"
    r = run_stream(broker.bootstrap, topics, root, "--until-drained", "--group", "g-budget", "--metrics-port", "0",
                   "--rotate-records", "1000000", FLOWAUDIT_SINK_BUFFER_BUDGET_MB="1",
                   FLOWAUDIT_FINDINGS_ENABLED="false", FLOWAUDIT_KAFKA_POLL_MAX_MESSAGES="200")
    assert r.returncode == 0, r.stderr[-3000:]
    m = re.search(r"buffer budget +reached (\d+) time", r.stdout)
    assert m and int(m.group(1)) >= 1, r.stdout
    files = list((root / "dataset=messages").rglob("*.parquet"))
    assert len(files) > 8                              # 8 partitions: some published more than once
    assert_exactly_once(root, placed)
    assert_no_partial_files(root)


def _wait_for(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_sigkill_mid_run_loses_and_duplicates_nothing(broker, topics, tmp_path):
    msgs = list(synth.generate(seed=23, n=6000, bad_fraction=0.02))
    placed = produce_labelled(broker.bootstrap, topics, msgs)
    root = tmp_path / "out"
    args = ("--group", "g-kill", "--metrics-port", "0", "--rotate-records", "150")
    env = stream_env(FLOWAUDIT_KAFKA_POLL_MAX_MESSAGES="40")

    def published():
        d = root / "dataset=messages"
        return sum(1 for _ in d.rglob("*.parquet")) if d.exists() else 0

    kills = 0
    # kill at different moments: right after start, after the first files, after more files
    for wait_files, extra_delay in ((0, 0.8), (1, 0.0), (3, 0.15), (6, 0.05)):
        before = published()
        proc = subprocess.Popen(stream_cmd(broker.bootstrap, topics, root, *args), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for(lambda: published() >= before + wait_files, 60)
            time.sleep(extra_delay)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            proc.wait(timeout=10)
        assert_no_partial_files(root)
    assert kills >= 3
    r = run_stream(broker.bootstrap, topics, root, "--until-drained", *args, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_exactly_once(root, placed)
    assert_no_partial_files(root)
    assert found_hits(root) == expected_hits(placed)
    # no temp file survives (the key, the partition locks and the restart state stay, by design)
    kept = (".hmac-key", ".locks", ".state")
    leftovers = [p for p in root.rglob(".*") if p.name not in kept and p.parent.name != ".locks"]
    assert not leftovers, leftovers


def scraped_by_prometheus(target_port: int, tmp_path: Path, query: str) -> float:
    """Start Debian's prometheus on loopback scraping the service; return the query's value."""
    import json
    import shutil

    repo = Path(__file__).resolve().parents[1]
    cfg = tmp_path / "prometheus.yml"
    text = (repo / "deploy" / "prometheus.yml").read_text()
    text = text.replace("127.0.0.1:9464", f"127.0.0.1:{target_port}").replace("15s", "1s")
    cfg.write_text(text)
    shutil.copy(repo / "deploy" / "flowaudit-rules.yml", tmp_path / "flowaudit-rules.yml")
    web = free_port()
    prom = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{web}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    value = [-1.0]
    try:
        url = f"http://127.0.0.1:{web}/api/v1/query?query={urllib.request.quote(query)}"

        def got():
            try:
                res = json.loads(urllib.request.urlopen(url, timeout=2).read())["data"]["result"]
            except (OSError, KeyError, ValueError):
                return False
            if res:
                value[0] = float(res[0]["value"][1])
            return bool(res)

        assert _wait_for(got, 60), "prometheus never scraped the service"
    finally:
        prom.terminate()
        prom.wait(timeout=20)
    return value[0]


def test_sigterm_stops_cleanly_and_serves_metrics(broker, topics, tmp_path):
    placed = produce_labelled(broker.bootstrap, topics, synth.generate(seed=5, n=800, bad_fraction=0.02))
    root = tmp_path / "out"
    port = free_port()
    errlog = tmp_path / "stream.err"
    with open(errlog, "wb") as err, subprocess.Popen(
            stream_cmd(broker.bootstrap, topics, root, "--group", "g-term", "--metrics-port", str(port), "--quiet"),
            env=stream_env(), stdout=subprocess.DEVNULL, stderr=err) as proc:
        try:
            url = f"http://127.0.0.1:{port}/metrics"

            def consumed_all():
                try:
                    body = urllib.request.urlopen(url, timeout=2).read().decode()
                except OSError:
                    return False
                total = sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                            if line.startswith("flowaudit_consumed_messages_total{"))
                return total >= len(placed)

            assert _wait_for(consumed_all, 120), "the service did not consume the topics"
            # consumer lag comes from librdkafka statistics (every second): caught up = 0
            lag_line = 'flowaudit_consumer_lag_messages{partition="0",topic="%s"} 0.0' % topics["json"]
            assert _wait_for(lambda: lag_line in urllib.request.urlopen(url, timeout=2).read().decode(), 20)
            body = urllib.request.urlopen(url, timeout=2).read()
            check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
            assert check.returncode == 0, check.stdout + check.stderr
            text = body.decode()
            for name in ("flowaudit_hits_total{", "flowaudit_quarantined_messages_total{",
                         "flowaudit_batch_duration_seconds_bucket", "flowaudit_kernel_seconds_total{",
                         "flowaudit_files_committed_total{", "flowaudit_consumed_bytes_total{",
                         "flowaudit_consumer_lag_messages{"):
                assert name in text, name
            # a real Prometheus server scrapes the service and sees the same count
            assert scraped_by_prometheus(port, tmp_path, "sum(flowaudit_consumed_messages_total)") >= len(placed)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, errlog.read_text()[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # buffered rows were published on the way out: every offset is accounted for
    assert_exactly_once(root, placed)
    assert_no_partial_files(root)
