"""Start-up: a service warms only the formats its topics declare; an ``auto`` topic warms none.

Each check runs in a fresh interpreter, so which kernels a warm-up touched is visible in their
dispatchers (a kernel compiled or loaded from the cache has an overload; one never used has none)."""
from __future__ import annotations

import json
import subprocess
import sys

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
