"""The benchmark machinery on a tiny corpus: schema-valid JSON, and flowaudit's counts equal each
available peer's where the work is comparable.  Never the timings."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pytest

from benchmarks import corpus as C
from benchmarks import peers as P
from benchmarks import report, stages, suite


STAGES = ["edifact", "x12", "json", "xml", "values", "salvage", "watchlist", "layers", "hostile", "batch", "scan", "netflow",
          "ipset", "memory", "audit"]
# every peer the suite runs for a stage, installed or not (a missing one must be reported as skipped)
EXPECTED_PEERS = {
    "edifact": {"python re", "google-re2", "python-hyperscan", "pydifact"},
    "x12": {"python re", "google-re2", "python-hyperscan", "python bytes.split"},
    "json": {"python re", "google-re2", "python-hyperscan", "orjson loads + iterative walk"},
    "xml": {"python re", "google-re2", "python-hyperscan", "lxml hardened parse + XPath", "lxml iterparse"},
    "values": {"python re + Python check digit", "google-re2", "python-hyperscan"},
}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    cache = tmp_path_factory.mktemp("bench-cache")
    cfg = suite.Config(quick=True, size_mb=0.05, repeats=1, stages=STAGES, cache_dir=str(cache),
                       slow_seconds=0.0, plots=False, cold_start=False, scan_mib=0.25, audit_messages=2000,
                       memory_sizes=[400, 1500])
    return suite.run(cfg, progress=lambda _m: None)


def _stage(res, name):
    return next(s for s in res["stages"] if s["name"] == name)


def test_json_matches_schema(result):
    assert report.validate(result) == []
    # the document survives a JSON round trip unchanged in shape
    assert report.validate(json.loads(json.dumps(result, default=str))) == []


def test_cold_start_record_with_the_warmup_command_validates_and_renders(result):
    """The cold-start record's shape (the measurement itself takes minutes: `./dev bench`):
    `flowaudit warmup` as installed beside the per-format compile, in the JSON and the Markdown."""
    doc = json.loads(json.dumps(result, default=str))
    start = {"status": "ok", "process_s": 50.0, "import_s": 2.0, "kernels_s": 48.0,
             "per_format_s": {"json": 20.0}, "per_format_share": {"json": 0.42}}
    doc["cold_start"] = {"method": "m", "cold": start, "warm": dict(start, process_s=2.5),
                         "warmup": {"method": "w", "cpus": 2,
                                    "cold": {"status": "ok", "process_s": 46.3, "cache_files": 340},
                                    "warm": {"status": "error", "reason": "boom"}}}
    assert report.validate(doc) == []
    md = report.markdown(doc)
    assert "`flowaudit warmup` as installed (every kernel, default --jobs, 2 CPUs): cold 46.3 s (340 cache files), " \
           "warm: error boom" in md
    doc["cold_start"]["warmup"]["cold"]["status"] = "fine"
    assert report.validate(doc) != []


def test_schema_rejects_a_broken_document(result):
    bad = json.loads(json.dumps(result, default=str))
    bad["stages"][0]["status"] = "fine"
    del bad["machine"]["cpu_model"]
    assert len(report.validate(bad)) >= 2


def test_kernel_stages_ran(result):
    for name in ("edifact", "x12", "json", "xml", "values", "batch path", "scan archive"):
        s = _stage(result, name)
        assert s["status"] == "ok", s["reason"]
        assert s["bytes"] > 0 and s["timing"]["repeats"] == 1
        assert s["memory"]["peak_rss_mb"] > 0


def test_every_peer_is_reported(result):
    for stage, names in EXPECTED_PEERS.items():
        got = [p["name"] for p in _stage(result, stage)["peers"]]
        for n in names:
            assert any(g.startswith(n) for g in got), (stage, n, got)
    for s in result["stages"]:
        for p in s["peers"]:
            assert p["version"]
            if p["status"] != "ok":
                assert p["reason"], p          # skipped or failed: always with the reason


def test_flowaudit_counts_equal_each_peer(result):
    compared = 0
    for s in result["stages"]:
        for p in s["peers"]:
            if p["status"] != "ok":
                continue
            check = p["counts_check"]
            assert check["status"] in ("agree", "not_comparable"), (s["name"], p["name"], check["text"])
            compared += check["status"] == "agree"
            if p.get("engines_check"):
                assert p["engines_check"]["status"] == "agree", (s["name"], p["name"], p["engines_check"])
    # values (re at least), batch path floor and one parser per format are always comparable
    assert compared >= 3


def test_value_counts_are_nonzero_and_equal(result):
    s = _stage(result, "values")
    assert s["counts"]["container_candidates"] > 0
    assert s["counts"]["container_valid"] <= s["counts"]["container_candidates"]
    re_peer = next(p for p in s["peers"] if p["name"].startswith("python re"))
    for k, v in s["counts"].items():
        assert re_peer["counts"][k] == v


def test_audit_stage_reports_the_ratios_and_memory(result):
    audit = _stage(result, "batch audit")
    assert audit["status"] == "ok", audit["reason"]
    assert audit["counts"]["messages"] > 1900 and audit["counts"]["findings"] > 0
    assert audit["memory"]["peak_rss_mb"] > 0
    assert {p["name"].split(",")[0] for p in audit["peers"]} >= {"polars.scan_parquet"}
    x = audit["extra"]
    assert x["ratio_to_bare_scan"] > 0 and x["ratio_to_polars_regex"] > 0


def test_memory_stage_reports_peak_rss_against_input_size(result):
    """Issue #10's memory target in the bench: a fresh `flowaudit stream --until-drained` per size,
    its own peak RSS, beside a bare consume loop over the same topics (the floor)."""
    s = _stage(result, "stream memory")
    assert s["status"] == "ok", s["reason"]
    runs = s["extra"]["runs"]
    assert [r["messages"] for r in runs] == [400, 1500] and s["counts"]["messages"] == 1500
    for r in runs:
        assert r["peak_rss_mb"] > r["peak_anon_mb"] > 0 and r["partitions"] == 12
        assert 0 < r["bare_peak_rss_mb"] < r["peak_rss_mb"]
    assert s["memory"]["peak_rss_mb"] == runs[-1]["peak_rss_mb"]
    (bare,) = s["peers"]
    assert bare["counts_check"]["status"] == "agree" and bare["memory"]["peak_rss_mb"] == runs[-1]["bare_peak_rss_mb"]
    md = report.markdown(result)
    assert "| | *400 messages (" in md and "| | *1,500 messages (" in md and "target <= 500 MB" in md


def test_salvage_and_layers_stages_measure_beside_their_peers(result):
    salvage, layers = _stage(result, "salvage"), _stage(result, "layers")
    assert salvage["status"] == "ok" and salvage["mb_per_s"] > 0, salvage["reason"]
    r = salvage["extra"]["result"]
    assert r["flowaudit"]["hits"] > 0 and ("mb_per_s" in r["hyperscan"] or "error" in r["hyperscan"])
    assert layers["status"] == "ok" and layers["extra"]["result"]["plain_mb_s_layers_off"] > 0, layers["reason"]


def test_hostile_stage_classifies_each_case_as_the_kernel_tests_expect(result):
    h = _stage(result, "hostile")
    assert h["status"] == "ok", h["reason"]
    cases = h["extra"]["result"]["cases"]
    assert {k: v["status"] for k, v in cases.items()} == {
        "edifact_long_segment": "segment_too_long", "x12_long_segment": "segment_too_long",
        "x12_many_components": "too_many_components", "json_deep": "too_deep", "json_long_string": "ok",
        "xml_deep": "too_deep", "xml_quadratic_entity": "forbidden_xml_construct", "xml_long_text": "ok"}
    assert all(1.9 < v["large_bytes"] / v["small_bytes"] < 2.1 for v in cases.values())   # --quick: scale 2


def test_watchlist_stage_agrees_with_its_peers(result):
    """The watchlist stage's peers found the same matches as the kernel (counts of matches,
    messages and patterns), the planted names among them: clear, base64 and look-alike names in
    one message in 50; hyperscan ran or says why not."""
    s = _stage(result, "watchlist")
    assert s["status"] == "ok", s["reason"]
    assert s["counts"]["matches"] > 0 and s["counts"]["messages"] > 0
    peers = {p["name"]: p for p in s["peers"]}
    assert set(peers) == {"python bytes.find per literal", "python-hyperscan (block mode, one database)"}
    for p in peers.values():
        assert p["status"] in ("ok", "skipped") and (p["status"] == "skipped" or p["counts_check"]["status"] == "agree"), p


def test_unavailable_stages_say_why(result):
    for name in ("netflow", "ipset"):
        s = _stage(result, name)
        assert s["status"] in ("ok", "skipped", "error")
        if s["status"] != "ok":
            assert s["reason"]


def test_missing_peer_library_is_skipped_not_dropped(monkeypatch):
    monkeypatch.setitem(sys.modules, "hyperscan", None)    # import hyperscan -> ImportError
    monkeypatch.setitem(sys.modules, "re2", None)
    peers = P.regex_peers("edifact") + P.values_peers()
    skipped = [p for p in peers if p.work is None]
    assert len(skipped) == 4
    assert all("not importable" in p.skipped for p in skipped)
    ds = C.from_values("edifact", "synth", [b"UNB+UNOA:2+A+B+260301:1200+1'UNZ+0+1'"])
    rec = stages.run_peer(skipped[0], ds, 1.0, lambda d: {}, 1, 0)
    assert rec["status"] == "skipped" and rec["reason"]


def test_container_regex_semantics_match_the_kernel():
    text = (b"MSCU1234565 xMSCU1234565 MSCU12345656 MSCU 1234565,TGHU8765432;"
            b"imo 9074729 IMO:9074728 IMO12345678 booking ABCU1234560")
    ds = C.from_values("text", "synth", [text])
    fa = stages.values_counts(ds)
    for p in P.values_peers():
        if p.work is not None:
            assert p.work(ds)() == fa, p.name


def test_corpus_is_deterministic_and_cached(tmp_path):
    a = C.synth_dataset("x12", 7, 0.02, tmp_path)
    files = sorted(x.name for x in next(tmp_path.iterdir()).iterdir())
    assert files == ["x12.bin", "x12.json", "x12.offsets.npy"]
    b = C.synth_dataset("x12", 7, 0.02, tmp_path)          # from the cache
    c = C.synth_dataset("x12", 7, 0.02, None)               # generated again
    assert a.sha256 == b.sha256 == c.sha256
    assert np.array_equal(a.offsets, b.offsets) and a.nbytes >= 20_000
    assert C.synth_dataset("x12", 8, 0.02, None).sha256 != a.sha256


def test_report_writes_json_markdown_and_plots(result, tmp_path):
    import matplotlib  # noqa: F401  (the bench extra installs it)
    sweep = {"knob": "threads", "unit": "threads", "log_x": False,
             "points": [{"value": 1, "series": {"edifact": {"mb_per_s": 100.0, "latency_ms": 10.0}}},
                        {"value": 2, "series": {"edifact": {"mb_per_s": 190.0, "latency_ms": 5.3}}}]}
    res = dict(result, sweeps=[sweep])
    paths = {p.name for p in report.write(res, tmp_path)}
    assert {"bench.json", "bench.md", "throughput.png", "sweep-threads.png", "scaling.png"} <= paths
    assert report.validate(json.loads((tmp_path / "bench.json").read_text())) == []
    md = (tmp_path / "bench.md").read_text()
    assert "| **edifact** | **flowaudit**" in md and "counts agree" in md


def test_sweeps_on_a_tiny_corpus(tmp_path):
    ds = {f: C.synth_dataset(f, 3, 0.02, tmp_path) for f in C.FORMATS}
    text = C.from_values("text", "synth", [d.buf.tobytes() for d in ds.values()])
    sws = [stages.sweep_batch_size(ds, [8, 64], 1), stages.sweep_parquet(ds, "compression", ["none", "zstd"], 1),
           stages.sweep_threads(ds, text, 2, 1)]
    res = {**suite.run(suite.Config(quick=True, stages=["audit"], cache_dir=str(tmp_path), cold_start=False),
                       progress=lambda _m: None), "sweeps": sws}
    assert report.validate(res) == []
    assert [p["value"] for p in sws[2]["points"]] == [1, 2]
    if not sws[2]["parallel_kernels"]:
        assert "NUMBA_NUM_THREADS has no effect" in sws[2]["note"]


def test_bench_cli_registers_the_subcommand():
    from flowaudit import bench_cli
    ap = argparse.ArgumentParser(prog="flowaudit")
    sub = ap.add_subparsers(dest="cmd")
    bench_cli.add_parser(sub)
    args = ap.parse_args(["bench", "--quick", "--out", "x", "--stages", "edifact", "values",
                          "--repeats", "3", "--size-mb", "1", "--sweep", "batch-size", "--sweep", "threads"])
    cfg = suite.config_from_args(args)
    assert cfg.quick and cfg.out == "x" and cfg.stages == ["edifact", "values"]
    assert cfg.repeats == 3 and cfg.size_mb == 1 and cfg.sweeps == ["batch-size", "threads"]
    assert args.fn is bench_cli.cmd_bench


def test_every_stage_module_imports_as_installed(tmp_path):
    """`flowaudit bench` run outside the checkout imports the suite as ``flowaudit.benchmarks``:
    no stage may import the top-level ``benchmarks`` (the layers stage did, and was skipped)."""
    import subprocess
    from pathlib import Path

    mods = sorted(p.stem for p in Path(suite.__file__).parent.glob("*.py") if p.stem not in ("__init__", "__main__"))
    code = ("import importlib, sys\n"
            f"for m in {mods!r}:\n"
            "    importlib.import_module('flowaudit.benchmarks.' + m)\n"
            "assert 'benchmarks' not in sys.modules, 'a stage imported the top-level benchmarks package'\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_scan_stage_scans_the_cached_archive_whole(result, tmp_path_factory):
    """The scan row: every interchange of the archive decoded once, the same hits as the format
    kernels on the same interchanges, and the archive built once under the cache folder."""
    s = _stage(result, "scan archive")
    assert s["status"] == "ok", s["reason"]
    assert s["bytes"] >= 0.25 * (1 << 20) and s["counts"]["interchanges"] > 100
    assert s["counts"]["decoded"] == s["counts"]["interchanges"] and s["counts"]["quarantined"] == 0
    kern, split = s["peers"]
    assert kern["counts_check"]["status"] == "agree" and split["counts_check"]["status"] == "agree"
    assert s["extra"]["ratio_scan_to_kernels"] == kern["ratio"] > 0
    assert s["extra"]["ratio_classify_only_to_kernels"] > 0 and s["extra"]["kernel_threads"] >= 1
    cache = result["config"]["cache_dir"]
    path = stages.scan_archive(result["config"]["seed"], 0.25, cache)
    assert str(path).startswith(cache) and path.stat().st_size == s["bytes"]


def test_audit_with_a_large_dns_log_names_the_same_flows(tmp_path):
    """benchmarks.audit --dns-lookups: the dump's flows audited beside a DNS log of its own answers
    and N unrelated lookups give the findings the dump's own DNS log gives; the bench counts the
    log's lines and bytes (the timings are the bench's, never asserted)."""
    from benchmarks import audit as A

    d = A.dump(2000, 9, tmp_path)
    r = A.dns_run(d, 3000)
    own = A.audit_run(d, inputs=[d / "flows"], extra=("--dns", d / "dns" / "dns.log"))
    assert r["findings"] == own["findings"] and r["rows"] == own["rows"] > 0
    assert r["dns_lines"] == 3000 + sum(1 for x in (d / "dns" / "dns.log").read_bytes().splitlines() if x.strip())
    assert r["dns_bytes"] == (d / "dns-3000.log").stat().st_size and r["peak_rss_mb"] > 0
