"""The audit report (flowaudit/report): numbers equal to the Parquet output, sensitive values only
masked, self-contained HTML checked in a real headless Chromium, and ``flowaudit report`` as a
subprocess.

The ROOT is the exposure scenario run through the real classifier and egress detector
(tests/findings_fixtures.py) with its findings written, plus flow records for the scenario's flows
and an input file of undecodable records at 09:00 (quarantine, and a two-hour gap in the data).
"""
from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowaudit import report
from flowaudit.datasets import FLOWS, SCHEMA_VERSION
from flowaudit.detect import findings as F
from flowaudit.pipeline import Batch, Classifier, format_code
from flowaudit.protect import Protector

from .conftest import HMAC_KEY
from .findings_fixtures import T0, scenario_tables

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
WINDOW = 300 * 10**9
SECTIONS = ("verdicts", "charts", "findings", "coverage", "method")
BAD_FILE = "/archive/2026-03-01/port.json-0900.parquet"   # an audited input file, as audits name sources
BAD = [b'{"containerNumber": "MSCU', b"\xff\xfe\x00{", b"<a><b></a>", b"", b'{"a": [1, 2'] * 3


def _write(root: Path, name: str, t: pa.Table, hour: str, fname: str) -> None:
    d = root / f"dataset={name}" / "date=2026-03-01" / f"hour={hour}"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, d / fname)


def _flows(sc) -> pa.Table:
    """FLOWS rows of the scenario's flow records (the same flows its transfers were detected from)."""
    rows = []
    for i, (src, dst, sp, dp, proto, nbytes, first_ns, sampling) in enumerate(sc.flows):
        rows.append(dict(source="netflow", partition=0, offset=i, ts_ms=first_ns // 1_000_000, exporter="192.0.2.1",
                         version=9 if i % 2 else 10, obs_domain=0, template_id=256, src_addr=src, dst_addr=dst,
                         src_port=sp, dst_port=dp, protocol=proto, tcp_flags=0, bytes=nbytes,
                         packets=max(1, nbytes // 1000), rev_bytes=None, rev_packets=None, first_ns=first_ns,
                         last_ns=first_ns + 10**9, sampling_interval=sampling, ip_version=4, time_flags=3,
                         schema_version=SCHEMA_VERSION))
    return pa.Table.from_pylist(rows, schema=FLOWS)


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    s = scenario_tables(tmp)
    root = s["root"]
    _write(root, "flows", _flows(s["scenario"]), "06", "netflow+0+0+12.parquet")
    # an input file of undecodable records two hours after the scenario's hour
    ts = T0 + 3 * 3_600_000 + 60_000
    batch = Batch.from_values(BAD, format_code("json"), sources=[BAD_FILE], partition=np.full(len(BAD), -1),
                              offset=np.arange(len(BAD)), ts_ms=np.full(len(BAD), ts))
    res = Classifier(Protector(HMAC_KEY.encode())).run(batch)
    assert res.quarantine.num_rows == len(BAD) and res.messages.num_rows == 0
    _write(root, "quarantine", res.quarantine, "09", "bad.parquet")
    no_findings = tmp / "no-findings"
    shutil.copytree(root, no_findings)
    # the stream's 5-minute windows: the scenario's hour spreads over several
    F.write_findings(root, F.correlate_root(root, window_ns=WINDOW, inventory=s["inventory"]))
    seen = {c: pq.read_table(root / f"dataset={d}").column(c).unique().to_pylist()[0]
            for d, c in (("messages", "catalog_version"), ("transfers", "watchlist_version"))}
    manifest = {"command": ["flowaudit", "audit", "/archive/2026-03-01", "--out", str(root), "--engine", "polars"],
                "engine": "polars", "started": "2026-03-02T01:00:00Z", "finished": "2026-03-02T01:04:10Z",
                "since": "2026-03-01T06:00:00Z", "until": "2026-03-01T10:00:00Z",
                "inputs": [{"path": "/archive/2026-03-01/port.edifact.parquet", "layout": "kafka-connect",
                            "rows": 1200, "bytes": 812_345, "status": "ok"},
                           {"path": BAD_FILE, "layout": "flat", "rows": len(BAD), "bytes": 301, "status": "ok"},
                           {"path": "/archive/2026-03-01/broken.parquet", "layout": "flat", "rows": 0, "bytes": 77,
                            "status": "failed", "error": "<not a parquet file>"}],
                "versions": {"catalog": {"version": seen["catalog_version"], "sha256": "ab" * 32},
                             "watchlist": {"version": seen["watchlist_version"], "sha256": "cd" * 32},
                             "severity_model": {"version": "2026.03.1", "sha256": "ef" * 32}, "schema": SCHEMA_VERSION}}
    (root / "_audit").mkdir()
    (root / "_audit" / "manifest.json").write_text(json.dumps(manifest))
    out = tmp / "out"
    data = report.write(root, out / "audit.html")
    return {"root": root, "out": out, "data": data, "html": (out / "audit.html").read_text(encoding="utf-8"),
            "manifest": manifest, "s": s, "no_findings": no_findings}


def _read(root: Path, name: str) -> pl.DataFrame:
    t = pq.ParquetDataset(root / f"dataset={name}", partitioning="hive").read()
    return pl.from_arrow(t).with_columns(pl.col(pl.Categorical).cast(pl.Utf8))


# ------------------------------------------------------------------------------ the numbers
def test_verdicts_equal_the_findings_parquet(audit):
    data, root = audit["data"], audit["root"]
    f = _read(root, "findings")
    v = {x["name"]: x for x in data["verdicts"]}
    # LOGINK first, then the other watchlisted platforms, then the zone-policy rules
    kinds = [x["kind"] for x in data["verdicts"]]
    assert data["verdicts"][0]["name"] == "LOGINK" and kinds == sorted(kinds, key=lambda k: k != "platform")
    assert {"NEAL-NET", "Nuctech", "TeamViewer"} <= set(v)
    for name in {x["name"] for x in data["verdicts"] if x["kind"] == "platform"}:
        sub = f.filter(pl.col("platform") == name)
        assert v[name]["findings"] == sub.height, name
        assert v[name]["exposed"] == (sub.height > 0)
        if sub.height:
            assert v[name]["bytes_scaled"] == sub["bytes_scaled"].sum()
            assert v[name]["messages"] == sub["messages"].sum() and v[name]["flows"] == sub["flows"].sum()
            assert v[name]["first_seen_ns"] == sub["first_seen_ns"].min()
            assert v[name]["by_severity"] == dict(sub.group_by("severity").len().iter_rows())
            classes = sub.select("data_classes").explode("data_classes").drop_nulls().unnest("data_classes")
            want = dict(classes.group_by("data_class").agg(pl.col("occurrences").sum()).iter_rows()) \
                if classes.height else {}
            assert {c["data_class"]: c["occurrences"] for c in v[name]["data_classes"]} == want
    assert v["LOGINK"]["verdict"] == "exposed" and v["LOGINK"]["worst_severity"] == "critical"
    assert v["Nuctech"]["verdict"] == "not exposed" and v["Nuctech"]["findings"] == 0
    assert v["NEAL-NET"]["verdict"] == "informational"
    expected = {e.entity for e in audit["s"]["scenario"].exposures if e.platform == "LOGINK"}
    assert set(v["LOGINK"]["entities"]) == expected
    # zone policy: every violation counted under its rule family
    pol = f.filter(pl.col("platform") == "policy")
    assert sum(x["findings"] for x in data["verdicts"] if x["kind"] == "policy") == pol.height
    assert v["remote_access:*"]["rules"] == ["remote_access:rdp"] and v["silent_zone"]["verdict"] == "no violation"
    # findings per severity, worst first
    fd = data["findings"]
    assert fd["total"] == f.height == len(fd["rows"])
    assert {k: n for k, n in fd["by_severity"].items() if n} == dict(f.group_by("severity").len().iter_rows())
    ranks = [F.SEV_RANK[r["severity"]] for r in fd["rows"]]
    assert ranks == sorted(ranks, reverse=True) and fd["rows"][0]["entity"] == "app:tracking-gw"
    top = fd["rows"][0]
    assert top["samples"] and all(s["source"] == "port.json" and s["offset"] >= 0 for s in top["samples"])
    # the headline says it
    assert data["headline"]["level"] == "exposed" and data["headline"]["title"].startswith("LOGINK: exposed")


def test_coverage_equals_the_parquet(audit):
    data, root = audit["data"], audit["root"]
    c = data["coverage"]
    m, q, fl = _read(root, "messages"), _read(root, "quarantine"), _read(root, "flows")
    assert c["rows"] == {"messages": m.height, "quarantine": q.height, "flows": fl.height,
                         "total": m.height + q.height + fl.height}
    assert c["quarantine_by_reason"] == dict(q.group_by("reason").len().iter_rows()) and len(c["quarantine_by_reason"]) > 1
    fmts = {(x["dataset"], x["format"]): x["rows"] for x in c["formats"]}
    assert {k[1]: n for k, n in fmts.items() if k[0] == "messages"} == dict(m.group_by("format").len().iter_rows())
    assert fmts[("flows", "IPFIX")] + fmts[("flows", "NetFlow v9")] == fl.height
    assert c["other_rows"]["hits"] == _read(root, "hits").height
    # the audited window 06:00-10:00 has data at 06 and 09: 07 and 08 are a gap
    t = c["time"]
    assert t["span_hours"] == 4 and t["hours_with_data"] == 2 and t["gap_hours"] == 2
    assert t["gaps"] == [{"from": "2026-03-01T07:00:00Z", "to": "2026-03-01T09:00:00Z", "hours": 2}]
    assert t["first"] == "2026-03-01T06:00:00Z" and t["last"] == "2026-03-01T10:00:00Z"
    assert sum(t["chart"]["rows"]) == c["rows"]["total"]
    assert c["inputs"]["by_status"] == {"failed": 1, "ok": 2}
    assert any("failed" in x for x in c["caveats"]) and any("quarantined" in x for x in c["caveats"])
    # method: recorded versions, and "not recorded" where the manifest is silent
    meth = data["method"]
    assert meth["versions"]["watchlist"]["recorded"]["sha256"] == "cd" * 32
    assert meth["versions"]["policy"]["recorded"] == {"version": "not recorded", "sha256": "not recorded"}
    assert meth["versions"]["schema"]["recorded"]["version"] == SCHEMA_VERSION
    assert meth["versions"]["catalog"]["seen_in_data"] == sorted(m["catalog_version"].unique().to_list())
    assert all(v["matches"] is not False for v in meth["versions"].values())
    assert meth["versions"]["watchlist"]["matches"] is True and meth["versions"]["policy"]["matches"] is None
    assert meth["workers"] == "not recorded" and meth["engine"] == "polars"
    assert meth["command"].startswith("flowaudit audit /archive/2026-03-01 --out ")
    assert meth["findings"]["source"] == "dataset" and meth["manifest"].endswith("_audit/manifest.json")


def test_report_json_and_html_show_the_same_numbers(audit):
    data, html_text = audit["data"], audit["html"]
    on_disk = json.loads((audit["out"] / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(data, default=str))
    lg = data["verdicts"][0]
    row = re.search(r"<tr><td><strong>LOGINK</strong>.*?</tr>", html_text).group(0)
    for n in (lg["findings"], lg["bytes_scaled"], lg["messages"], lg["flows"]):
        assert f">{n:,}<" in row
    for reason, n in data["coverage"]["quarantine_by_reason"].items():
        assert f"<td>{reason}</td><td class=\"num\">{n:,}</td>" in html_text
    assert "&lt;not a parquet file&gt;" in html_text and "<not a parquet file>" not in html_text
    assert BAD_FILE in html_text and "cd" * 32 in html_text and "not recorded" in html_text
    assert html_text.count("<svg") == 6 and html_text.count('role="img"') == 6


def test_sensitive_values_appear_only_masked(audit):
    """Every sampled value's raw form (from the same run with raw values opted in) is absent, but
    for a watchlist indicator the finding names (a recipient id such as LOGINKHUB is both)."""
    raw = {r["value_hmac"]: r["value_raw"] for r in audit["s"]["raw_hits"].to_pylist()}
    indicators = {i for r in audit["data"]["findings"]["rows"] for i in r["indicators"]}
    text = audit["html"] + (audit["out"] / "report.json").read_text()
    sampled = [(s["value_masked"], raw[bytes.fromhex(s["value_hmac"])]) for r in audit["data"]["findings"]["rows"]
               for s in r["samples"]]
    assert len(sampled) > 20
    checked = 0
    for masked, value in sampled:
        assert masked in text or masked.replace("&", "&amp;") in text
        if len(value) >= 5 and value != masked and value not in indicators:
            assert value not in text and value.replace("&", "&amp;") not in text, masked
            checked += 1
    assert checked > 20


def test_self_contained(audit):
    h = audit["html"]
    assert not re.search(r"""(?:src|href|action|poster|xlink:href)\s*=\s*["']?\s*(?:https?:)?//""", h, re.I)
    assert not re.search(r"url\(\s*[\"']?\s*(?:https?:)?//", h, re.I)
    assert "<script" not in h.lower() and "@import" not in h and "@font-face" not in h
    assert "<link" not in h.replace('<link rel="icon" href="data:,">', "")


def test_bar_labels_never_overlap():
    """A bar's value is written over it only where every label fits its slot: 23 bins of "1.2 kB"
    overlapped their neighbours (the synth dump's LOGINK panel); then only the tallest is labelled."""
    from flowaudit.report import svg
    from flowaudit.report.html import human_bytes

    def labels(values):
        s = svg.time_bars("t", "t", "d", [T0 + k * 900_000_000_000 for k in range(len(values))], 900,
                          [("LOGINK", values)], human_bytes, "bytes")
        xs = [float(x) for x, t in re.findall(r'<text x="([\d.]+)" y="[\d.]+" font-size="10"[^>]*>([^<]+)<', s)]
        return xs, s

    crowded = [1200 + 7 * k for k in range(23)]
    crowded[5] = 2_400_000
    xs, s = labels(crowded)
    assert len(xs) == 1 and "2.4 MB" in s                     # the tallest bar only
    few = [300, 0, 1200, 2_400_000, 900, 80]
    xs, _ = labels(few)
    assert len(xs) == 5                                       # room for each: every bar labelled
    assert all(b - a >= 6 * 5.8 for a, b in zip(xs, xs[1:]))


def test_versions_other_than_recorded_are_flagged(audit):
    d = report.build(audit["root"], dict(audit["manifest"], versions={"catalog": {"version": "1999.1"}}))
    assert d["method"]["versions"]["catalog"]["matches"] is False
    assert any("other versions" in c and "catalog" in c for c in d["headline"]["caveats"])
    assert "differs" in report.render_html(d)


def test_a_manifest_field_of_another_kind_is_not_recorded_not_a_crash(audit):
    """A hand-edited or foreign manifest whose fields have other kinds than an audit writes was an
    AttributeError or TypeError: those fields are now not recorded, and the limits say which."""
    odd = dict(audit["manifest"], command=5, engine=["polars"], inputs="all", tables=3, versions="v1",
               correlation="oops", carried_over=[1], workers=True, since=7)
    d = report.build(audit["root"], odd)
    m = d["method"]
    assert (m["command"], m["engine"], m["workers"], m["since"]) == ("not recorded",) * 4
    assert d["findings"]["episode_gap_s"] == 3600
    want = "carried_over, command, correlation, engine, inputs, since, tables, versions, workers"
    assert any(f"has {want} of another kind" in c for c in d["coverage"]["caveats"])
    assert d["findings"]["total"] == report.build(audit["root"], audit["manifest"])["findings"]["total"]
    assert "of another kind" in report.render_html(d)


def test_without_findings_dataset_or_data(audit, tmp_path):
    """No findings dataset: the report correlates the transfers itself and says so; an empty ROOT
    concludes nothing; a ROOT of clean messages is "not exposed" everywhere."""
    d = report.build(audit["no_findings"])
    assert d["method"]["findings"]["source"] == "computed" and d["method"]["manifest"] == "not recorded"
    assert "no manifest" in d["coverage"]["caveats"][0]
    want = F.correlate_root(audit["no_findings"], window_ns=300 * 10**9)
    assert d["findings"]["total"] == want.num_rows and d["verdicts"][0]["exposed"]
    empty = report.build(tmp_path)
    assert empty["headline"]["level"] == "no_data" and not any(v["exposed"] for v in empty["verdicts"])
    clean = tmp_path / "clean"
    m = pq.read_table(next((audit["root"] / "dataset=messages").rglob("*.parquet")))
    _write(clean, "messages", m.slice(0, 100), "06", "m.parquet")
    d = report.write(clean, tmp_path / "r" / "x.html", {"workers": 4}, json_path=tmp_path / "r" / "x.json")
    assert d["headline"]["level"] == "clear" and d["headline"]["title"] == "No exposure to LOGINK found"
    assert all(v["verdict"] in ("not exposed", "no violation") for v in d["verdicts"])
    assert (tmp_path / "r" / "x.json").is_file() and not (tmp_path / "r" / "report.json").exists()
    assert d["method"]["workers"] == 4 and d["method"]["engine"] == "not recorded"
    assert "not exposed" in report.render_html(d)
    assert d["coverage"]["time"]["rows_without_time"] == 0 and not any("no time" in c for c in d["coverage"]["caveats"])
    # rows without a time (an archive's null or unreadable time) are counted and named as a limit
    _write(clean, "messages", m.slice(100, 7).set_column(m.schema.get_field_index("ts_ms"), "ts_ms",
                                                         pa.nulls(7, m.schema.field("ts_ms").type)), "00", "t.parquet")
    d = report.build(clean)
    assert d["coverage"]["time"]["rows_without_time"] == 7 and d["coverage"]["rows"]["messages"] == 107
    assert any(c.startswith("7 row(s) have no time") for c in d["coverage"]["caveats"])
    for p in (clean / "dataset=messages").rglob("t.parquet"):
        p.unlink()
    (clean / "_audit").mkdir()
    note = "/arch/t: an Iceberg table, read without its metadata (pyiceberg is not installed: ...): every Parquet file"
    (clean / "_audit" / "manifest.json").write_text(json.dumps({"tables": [note, "/arch/u: an Iceberg table at "
                                                                           "snapshot 7 (v2.metadata.json): 1 data file(s)"]}))
    assert report.build(clean)["coverage"]["caveats"].count(note) == 1     # a limit; a table read whole is not
    assert not any("snapshot 7" in c for c in report.build(clean)["coverage"]["caveats"])
    (clean / "_audit" / "manifest.json").write_text('{"engine": ')
    d = report.build(clean)
    assert "could not be read" in d["headline"]["caveats"][0] and d["method"]["engine"] == "not recorded"


# ------------------------------------------------------------------------------ Chromium
class _Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fd 3 in, fd 4 out): no port
    is opened.  Started and stopped by PID."""

    def __init__(self, profile: Path):
        self.log_path = profile.parent / "chromium.log"
        self._log = open(self.log_path, "wb")   # a file, never a pipe nobody reads
        cmd_r, self._cmd_w = os.pipe()
        self._resp_r, resp_w = os.pipe()
        args = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", "--mute-audio", "about:blank"]
        self.proc = subprocess.Popen(["bash", "-c", f'exec "$0" "$@" 3<&{cmd_r} 4>&{resp_w}', CHROMIUM, *args],
                                     pass_fds=(cmd_r, resp_w), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._log)
        os.close(cmd_r)
        os.close(resp_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._next(timeout)
            if m.get("id") == self._id:
                assert "error" not in m, (method, m["error"])
                return m["result"]
            self.events.append(m)

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        for m in self.events:
            if m.get("method") == method:
                return m
        while True:
            m = self._next(timeout)
            self.events.append(m)
            if m.get("method") == method:
                return m

    def _next(self, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._resp_r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._resp_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe: " + self.log_path.read_text(errors="replace")[-2000:])
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def close(self):
        try:
            if self.proc.poll() is None:
                try:
                    self.send("Browser.close", timeout=5)
                except (TimeoutError, RuntimeError, OSError):
                    pass
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            os.close(self._cmd_w)
            os.close(self._resp_r)
            self._log.close()


def _png_info(png: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values of the decoded rows) of a PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", png[16:24])
    pos, idat = 8, b""
    while pos < len(png):
        n, kind = struct.unpack(">I4s", png[pos:pos + 8])
        if kind == b"IDAT":
            idat += png[pos + 8:pos + 8 + n]
        pos += 12 + n
    return w, h, len(set(zlib.decompress(idat)))


def test_renders_in_headless_chromium(audit, tmp_path):
    assert Path(CHROMIUM).exists(), "chromium is required: bash deploy/install-system-deps.sh test"
    page = (audit["out"] / "audit.html").resolve()
    browser = _Chromium(tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=s)
        browser.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 2000, "deviceScaleFactor": 1,
                                                            "mobile": False}, session=s)
        browser.send("Page.navigate", {"url": page.as_uri()}, session=s)
        browser.wait_event("Page.loadEventFired")

        def js(expr):
            r = browser.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=s)
            assert "exceptionDetails" not in r, r
            return r["result"]["value"]

        dom = js("document.documentElement.outerHTML")
        for sec in SECTIONS:
            assert f'id="{sec}"' in dom and js(f"!!document.getElementById('{sec}').querySelector('h2')"), sec
        assert js("document.querySelectorAll('svg[role=img] title').length") >= 6
        assert js("document.querySelectorAll('article.card').length") == audit["data"]["findings"]["episodes_with_evidence"]
        assert "LOGINK: exposed" in js("document.getElementById('verdict-headline').textContent")
        # every chart fits the page and has drawn marks
        assert js("[...document.querySelectorAll('svg.chart')].every(e => e.getBoundingClientRect().width <= 1280 "
                  "&& e.querySelectorAll('rect').length > 0)")
        png = base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"}, session=s)["data"])
        (tmp_path / "report.png").write_bytes(png)
        w, h, distinct = _png_info(png)
        assert (w, h) == (1280, 2000) and len(png) > 50_000 and distinct > 50
        # print: no tinted or dark backgrounds, then a real multi-page PDF
        browser.send("Emulation.setEmulatedMedia", {"media": "print"}, session=s)
        bgs = js("[document.body, document.querySelector('.headline'), document.querySelector('tr.group th')]"
                 ".map(e => getComputedStyle(e).backgroundColor)")
        assert all(b in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)") for b in bgs), bgs
        pdf = base64.b64decode(browser.send("Page.printToPDF", {"printBackground": False, "preferCSSPageSize": True},
                                            session=s, timeout=60)["data"])
        (tmp_path / "report.pdf").write_bytes(pdf)
        assert pdf.startswith(b"%PDF-") and len(pdf) > 20_000
        assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) >= 2
    finally:
        browser.close()
    errors = [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert not errors, errors
    urls = {e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"}
    assert urls and all(u == page.as_uri() or u.startswith("data:") for u in urls), urls
    assert browser.proc.returncode is not None


# ------------------------------------------------------------------------------ the command
def test_report_command(audit, tmp_path):
    out = tmp_path / "cli" / "audit.html"
    p = subprocess.run([sys.executable, "-m", "flowaudit", "report", str(audit["root"]), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "LOGINK: exposed" in p.stderr and str(out) in p.stderr
    fd = audit["data"]["findings"]
    assert f"; {fd['total']:,} finding(s) in {fd['episodes_total']:,} episode(s), " in p.stderr
    data = json.loads((out.parent / "report.json").read_text())
    want = json.loads(json.dumps(audit["data"], default=str))
    for k in ("verdicts", "findings", "coverage"):
        assert data[k] == want[k], k
    assert data["method"]["manifest"].endswith("manifest.json")
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    # a manifest given on the command line wins over ROOT/_audit/manifest.json; an operator watchlist
    # (the stream's setting, here from the environment) adds its platforms to the verdicts
    man = tmp_path / "m.json"
    man.write_text(json.dumps({"engine": "dask", "workers": 8}))
    wl = tmp_path / "wl"
    wl.mkdir()
    (wl / "ops.toml").write_text('version = "ops-1"\n[platforms.CraneVendorRemote]\nseverity = "high"\n'
                                 'source = "operator: the crane vendor\'s remote-access service"\n')
    p = subprocess.run([sys.executable, "-m", "flowaudit", "report", str(audit["root"]), "--out", str(out),
                        "--manifest", str(man), "--json", str(tmp_path / "r.json")], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, FLOWAUDIT_EGRESS_WATCHLIST_DIR=str(wl)))
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    m = r["method"]
    assert (m["engine"], m["workers"], m["command"]) == ("dask", 8, "not recorded")
    assert {"name": "CraneVendorRemote", "verdict": "not exposed"}.items() <= \
        next(v for v in r["verdicts"] if v["name"] == "CraneVendorRemote").items()
    assert len(m["watchlist_read_by_report"]["files"]) == 2 and "CraneVendorRemote" in out.read_text()
    assert subprocess.run([sys.executable, "-m", "flowaudit", "report", str(tmp_path / "nope"), "--out",
                           str(out)], capture_output=True, timeout=60).returncode == 2
    p = subprocess.run([sys.executable, "-m", "flowaudit", "report", str(audit["root"]), "--out", str(out),
                        "--watchlist-dir", str(tmp_path / "none")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "watchlist_dir" in p.stderr, p.stderr
    # the episode gap: the audit's (its manifest's correlation), unless a flag or setting gives one
    f = _read(audit["root"], "findings")
    man.write_text(json.dumps({"correlation": {"episode_gap_s": 0}}))
    for env, gap in (({}, 0), ({"FLOWAUDIT_FINDINGS_EPISODE_GAP_S": "86400"}, 86400)):
        p = subprocess.run([sys.executable, "-m", "flowaudit", "report", str(audit["root"]), "--out", str(out),
                            "--manifest", str(man)], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, **env))
        assert p.returncode == 0, p.stderr
        fd = json.loads((out.parent / "report.json").read_text())["findings"]
        assert fd["episode_gap_s"] == gap and fd["episodes_total"] == len(_episodes_by_hand(f, gap * 10**9))
    assert f"at most {'1 day'} of quiet" in out.read_text(encoding="utf-8")
    p = subprocess.run([sys.executable, "-m", "flowaudit", "report", str(audit["root"]), "--out", str(out),
                        "--episode-gap", "-1"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--episode-gap" in p.stderr
    man.write_text("[1]")
    assert subprocess.run([sys.executable, "-m", "flowaudit", "report", str(audit["root"]), "--out", str(out),
                           "--manifest", str(man)], capture_output=True, timeout=60).returncode == 2


def _episodes_by_hand(f: pl.DataFrame, gap_ns: int = 3_600_000_000_000) -> list[list[str]]:
    """The findings' episodes, slowly: per platform/rule, exposure and source, windows in time order,
    a new episode where the quiet since the last window is over ``gap_ns`` (an hour) and over its
    length."""
    eps = []
    for _, g in f.group_by(["platform", "rule", "exposure", "entity"]):
        cur, last = None, None
        for r in g.sort("window_start_ns").iter_rows(named=True):
            if last is None or r["window_start_ns"] - last["window_end_ns"] > max(
                    gap_ns, last["window_end_ns"] - last["window_start_ns"]):
                cur = []
                eps.append(cur)
            cur.append(r["finding_id"])
            last = r
    return sorted(sorted(e) for e in eps)


def test_episodes_merge_a_sources_windows_and_add_up(audit):
    """A source's findings in windows an hour or less apart are one episode; its windows, volume
    and classes are those of its findings in the Parquet output, and the HTML lists it."""
    data, root = audit["data"], audit["root"]
    f = _read(root, "findings")
    fd = data["findings"]
    ids = [r["finding_id"] for r in fd["rows"]]            # the finding numbers: 1 = ids[0]
    got = sorted(sorted(ids[n - 1] for n in e["findings"]) for e in fd["episodes"])
    assert got == _episodes_by_hand(f) and fd["episodes_total"] == len(got) < f.height
    assert sum(e["windows"] for e in fd["episodes"]) == f.height and not any(e["findings_not_listed"]
                                                                              for e in fd["episodes"])
    for e in fd["episodes"]:
        sub = f.filter(pl.col("finding_id").is_in([ids[n - 1] for n in e["findings"]]))
        assert e["windows"] == sub.height
        assert {k: e[k] for k in ("bytes_scaled", "messages", "flows")} == \
            {k: sub[k].sum() for k in ("bytes_scaled", "messages", "flows")}
        assert (e["first_seen_ns"], e["last_seen_ns"]) == (sub["first_seen_ns"].min(), sub["last_seen_ns"].max())
        assert F.SEV_RANK[e["severity"]] == max(F.SEV_RANK[s] for s in sub["severity"])
        classes = sub.select("data_classes").explode("data_classes").drop_nulls().unnest("data_classes")
        want = dict(classes.group_by("data_class").agg(pl.col("occurrences").sum()).iter_rows()) \
            if classes.height else {}
        assert {c["data_class"]: c["occurrences"] for c in e["data_classes"]} == want
    # the evidence, per episode: its findings' samples, a class at a time, and their indicators
    by_id = {r["finding_id"]: r for r in fd["rows"]}
    assert fd["episodes_with_evidence"] == len(fd["episodes"])
    for e in fd["episodes"]:
        rows = [by_id[i] for i in e["finding_ids"]]
        pool = [smp for r in rows for smp in r["samples"]]
        assert e["samples"] and all(smp in pool for smp in e["samples"]) or not pool
        assert len(e["samples"]) == min(len(pool), 40)
        first = [smp["data_class"] for smp in e["samples"][:len({smp["data_class"] for smp in pool})]]
        assert sorted(first) == sorted({smp["data_class"] for smp in pool})       # every class before a repeat
        assert set(e["indicators"]) == {i for r in rows for i in r["indicators"]}
        assert e["occurrences"] == sum(r["occurrences"] for r in rows)
    v = {x["name"]: x for x in data["verdicts"]}
    assert v["LOGINK"]["episodes"] == sum(e["platform"] == "LOGINK" for e in fd["episodes"])
    assert f"in {v['LOGINK']['episodes']:,} episode(s) from" in data["headline"]["lines"][0]
    assert v["remote_access:*"]["episodes"] == 1 and v["silent_zone"]["episodes"] == 0
    ranks = [F.SEV_RANK[e["severity"]] for e in fd["episodes"]]
    assert ranks == sorted(ranks, reverse=True) and fd["episodes"][0]["platform"] == "LOGINK"
    longest = max(fd["episodes"], key=lambda e: e["windows"])
    assert longest["windows"] > 1
    html_text = audit["html"]
    section = html_text[html_text.index("<h3>Episodes</h3>"):html_text.index("<h3>Every finding</h3>")]
    assert section.count("<tr>") == len(fd["episodes"]) + 1        # the head and one row each
    assert html_text.count('<article class="card') == len(fd["episodes"])   # a card per episode, not per finding
    k = fd["episodes"].index(longest) + 1
    card = html_text[html_text.index(f'id="e{k}"'):]
    card = card[:card.index("</article>")]
    assert f"{longest['windows']:,} finding(s)" in card and longest["samples"][0]["value_masked"] in card
    a, b = min(longest["findings"]), max(longest["findings"])
    assert (f"{a}</a>&ndash;{b}" if b - a + 1 == longest["windows"] else f">{a}</a>") in section
    # the gap rule: the tracking gateway's findings again 1 h after their last window (same
    # episode) and then 1 h 0.001 s after those (a new one)
    from flowaudit.report.data import _episodes, _findings_frame

    base = _findings_frame(pq.ParquetDataset(root / "dataset=findings", partitioning="hive").read())
    gw = base.filter(pl.col("entity") == "app:tracking-gw")
    span = gw["window_end_ns"].max() - gw["window_start_ns"].min()
    hour = 3_600_000_000_000
    t = pl.concat([base] + [gw.with_columns(pl.col(c) + shift for c in ("window_start_ns", "window_end_ns",
                                                                        "first_seen_ns", "last_seen_ns", "t_ns"))
                            .with_columns(finding_id=pl.col("finding_id") + tag)
                            for shift, tag in ((span + hour, "-b"), (2 * (span + hour) + 1_000_000, "-c"))])
    got = _episodes(t, {fid: i for i, fid in enumerate(t["finding_id"], 1)})
    fids = t["finding_id"].to_list()
    assert sorted(sorted(fids[n - 1] for n in e["findings"]) for e in got) == _episodes_by_hand(t)
    assert sorted(e["windows"] for e in got if e["entity"] == "app:tracking-gw") == [gw.height, 2 * gw.height]
    # another gap (an operator's setting): none, or long enough to join the gateway's three runs
    for gap_s in (0, 120, 2 * (span + hour) // 1_000_000_000):
        got = _episodes(t, {fid: i for i, fid in enumerate(t["finding_id"], 1)}, gap_s)
        assert sorted(sorted(fids[n - 1] for n in e["findings"]) for e in got) == \
            _episodes_by_hand(t, gap_s * 1_000_000_000), gap_s
    assert [e["windows"] for e in got if e["entity"] == "app:tracking-gw"] == [3 * gw.height]
    assert fd["episode_gap_s"] == 3600 and "at most 1 hour of quiet" in html_text
