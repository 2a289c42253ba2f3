"""Start-up: a service warms only the formats its topics declare; an ``auto`` topic warms none.

Each check runs in a fresh interpreter, so which kernels a warm-up touched is visible in their
dispatchers (a kernel compiled or loaded from the cache has an overload; one never used has none)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_SCRIPT = r"""
import json, sys
from flowaudit.decode import FMT_JSON
from flowaudit.pipeline import FMT_AUTO, Batch, Classifier
from flowaudit.protect import Protector
from flowaudit.kernels import detect, edifact, jsonscan, xmlscan

def used():
    return {"json": len(jsonscan.json_scan_run.overloads), "xml": len(xmlscan.xml_scan_run.overloads),
            "edi": len(edifact.classify_batch.overloads), "detect": len(detect.detect_formats.overloads)}

c = Classifier(Protector(b"k"))
formats = {FMT_AUTO} if sys.argv[1] == "auto" else {FMT_JSON}
c.warmup(formats)
after_warmup = used()
r = c.run(Batch.from_values([b'{"equipmentReference":"MSCU1234565"}'], FMT_AUTO))
print(json.dumps({"warmup": after_warmup, "first_json": used(), "hits": int(r.hits.num_rows)}))
"""


def _run(kind: str) -> dict:
    p = subprocess.run([sys.executable, "-c", _SCRIPT, kind], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_auto_topic_warms_no_format_and_a_format_compiles_on_its_first_message():
    r = _run("auto")
    assert r["warmup"] == {"json": 0, "xml": 0, "edi": 0, "detect": 1}
    assert r["first_json"]["json"] == 1 and r["first_json"]["xml"] == 0 and r["first_json"]["edi"] == 0
    assert r["hits"] >= 1


def test_declared_topic_warms_its_format_only():
    r = _run("json")
    assert r["warmup"]["json"] == 1 and r["warmup"]["xml"] == 0 and r["warmup"]["edi"] == 0


_EVERY_PATH = r"""
import base64, dataclasses, gzip
import pyarrow as pa
from flowaudit import synth
from flowaudit.audit.work import binary_buffers
from flowaudit.detect.egress import EgressDetector
from flowaudit.pipeline import FMT_AUTO, Batch, Classifier, format_code
from flowaudit.protect import Protector

msgs = list(synth.generate(17, 400))
vals = [m.value for m in msgs] + [base64.b64encode(gzip.compress(msgs[0].value))]
decl = [format_code(m.format) for m in msgs] + [FMT_AUTO]
clf = Classifier(Protector(b"warmup-test-key-0123456789"), egress=EgressDetector())
polled = Batch.from_values(vals, decl)                      # the stream's poll
buf, offsets, _ = binary_buffers(pa.array(vals, pa.binary()))
archived = dataclasses.replace(polled, buf=buf, offsets=offsets)   # an audit unit's Arrow column
for b in (polled, archived, Batch.from_values(vals, FMT_AUTO)):
    clf.run(b)
print("ran")
"""


@pytest.mark.slow
def test_a_cold_warmup_side_by_side_leaves_nothing_to_compile(tmp_path, corpus):
    """`flowaudit warmup` on an empty cache, two processes side by side: afterwards the stream's
    polls, an audit unit's Arrow buffers, layered values and `flowaudit scan` of the corpus load
    every kernel from the cache (numba reports no cache entry saved)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    r = subprocess.run([sys.executable, "-m", "flowaudit", "warmup", "--jobs", "2"], env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0 and "kernels ready" in r.stdout, r.stderr[-2000:]
    env["NUMBA_DEBUG_CACHE"] = "1"
    runs = [[sys.executable, "-c", _EVERY_PATH],
            [sys.executable, "-m", "flowaudit", "scan", str(corpus / "messages"), "--out", str(tmp_path / "h.parquet")]]
    for cmd in runs:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stderr[-2000:]
        saved = [ln for ln in (p.stdout + p.stderr).splitlines() if "data saved" in ln]
        assert not saved, (cmd[-1][:40], saved[:5])
        assert "[cache] data loaded" in p.stdout + p.stderr   # the cache was there and used
