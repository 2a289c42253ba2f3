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
