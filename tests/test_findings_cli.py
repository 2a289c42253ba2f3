"""``flowaudit findings ROOT`` as a real subprocess over datasets written from the exposure
scenario: the table worst first, filters, formats, --fail-on exit codes, --write."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flowaudit.detect import findings as F
from flowaudit.sinks.parquet import read_dataset

from .findings_fixtures import scenario_tables


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    s = scenario_tables(tmp_path_factory.mktemp("cli"))
    return s["root"], s["policy"], s["scenario"]


def findings(*args, env=None):
    """The CLI over the scenario, whose exposures are laid out in one-hour windows."""
    if "--window" not in args:
        args = (*args, "--window", "3600")
    return subprocess.run([sys.executable, "-m", "flowaudit", "findings", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=env)


def test_table_worst_first_and_fail_on(root):
    r, policy, sc = root
    p = findings(r, "--policy", policy)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split()[:3] == ["severity", "score", "status"]
    sev = [ln.split()[0] for ln in lines[1:-1]]
    assert sev == sorted(sev, key=lambda s: -F.SEV_RANK[s]) and len(sev) == len(sc.exposures)
    assert sev[0] == "critical" and sev[-1] == "info"
    assert "app:tracking-gw" in lines[1] and "customs_reference" in lines[1]
    assert lines[-1].startswith(f"{len(sc.exposures)} finding(s)")
    # --fail-on: exit 1 when a shown finding reaches the level, else 0
    assert findings(r, "--policy", policy, "--fail-on", "critical").returncode == 1
    assert findings(r, "--policy", policy, "--platform", "policy", "--fail-on", "critical").returncode == 0
    assert findings(r, "--policy", policy, "--platform", "policy", "--fail-on", "high").returncode == 1
    assert findings(r, "--policy", policy, "--platform", "NEAL-NET", "--fail-on", "low").returncode == 0
    assert findings(r, "--policy", policy, "--until", "2026-03-01T05:00", "--fail-on", "info").returncode == 0
    assert findings(r, "--policy", policy, "--since", "2026-03-01T06:00", "--fail-on", "info").returncode == 1


def test_formats_and_filters(root):
    r, policy, sc = root
    p = findings(r, "--policy", policy, "--format", "json", "--severity", "high")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(x) for x in p.stdout.splitlines()]
    want = {(e.platform, e.rule, e.entity) for e in sc.exposures if e.severity in ("high", "critical")}
    assert {(x["platform"], x["rule"], x["entity"]) for x in rows} == want
    assert all(len(s["value_hmac"]) == 64 for x in rows for s in x["samples"])
    p = findings(r, "--policy", policy, "--format", "csv", "--platform", "LOGINK")
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert {x["entity"] for x in rows} == {e.entity for e in sc.exposures if e.platform == "LOGINK"}
    tracking = next(x for x in rows if x["entity"] == "app:tracking-gw")
    assert "customs_reference:high:" in tracking["data_classes"] and tracking["severity"] == "critical"
    # without the policy there is no inventory: no inferred classes, message-borne findings name the topic
    p = findings(r, "--format", "json")
    rows = {x["entity"]: x for x in map(json.loads, p.stdout.splitlines())}
    assert rows["192.0.2.130"]["exposure"] == "none" and "topic:port.json" in rows


def test_write_is_deterministic(root, tmp_path):
    r, policy, sc = root
    p = findings(r, "--policy", policy, "--write", "--top", "3")
    assert p.returncode == 0 and "1 file(s) written" in p.stderr, p.stderr
    assert len(p.stdout.splitlines()) == 3 + 2
    files = sorted((r / "dataset=findings").rglob("*.parquet"))
    assert [f.name for f in files] == ["findings-20260301T060000Z-3600s.parquet"]
    before = files[0].read_bytes()
    p = findings(r, "--policy", policy, "--write")
    assert "0 file(s) written, 1 unchanged" in p.stderr
    assert files[0].read_bytes() == before
    t = read_dataset(r, "findings")
    assert t.num_rows == len(sc.exposures) and len(set(t.column("finding_id").to_pylist())) == t.num_rows
    # the command reads a window at a time; its rows are one correlate call's over the whole root
    assert pq.read_table(files[0]).to_pylist() == F.correlate_root(r, inventory=F.load_inventory(policy)).to_pylist()
    # another window length: the old window file is replaced, never kept beside the new ones
    p = findings(r, "--policy", policy, "--write", "--window", "1800")
    assert "removed" in p.stderr and "1 removed" in p.stderr
    names = sorted(f.name for f in (r / "dataset=findings").rglob("*.parquet"))
    assert names and all(n.endswith("-1800s.parquet") for n in names)
    assert not list((r / "dataset=findings").rglob(".*"))
    findings(r, "--policy", policy, "--write")   # back to one hour for the other tests


def test_top_findings_and_errors(root, tmp_path):
    r, policy, sc = root
    top = F.top_findings(r, 2, policy=policy, window_ns=sc.window_ns)
    assert [x["severity"] for x in top] == ["critical", "high"]
    assert F.top_findings(tmp_path, 5) == []
    bad = tmp_path / "sev.toml"
    bad.write_text("[tiers]\nprohibited = 'x'\n")
    p = findings(r, "--severity-model", bad)
    assert p.returncode == 2 and "severity model" in p.stderr
    assert findings(tmp_path / "nope").returncode == 2
    for flag in ("--since", "--until"):     # a bad time is a usage error, not a traceback
        p = findings(r, flag, "yesterday-ish")
        assert p.returncode == 2 and f"{flag}: not an ISO 8601" in p.stderr and "Traceback" not in p.stderr
    assert findings(r, "--window", "0").returncode == 2


def test_a_root_the_audit_wrote_is_correlated_as_the_audit_did(root, tmp_path, capsys):
    """An audit root's manifest records its zone policy and findings window: without flags they
    are taken (said on stderr); a flag given overrides and is named beside the audit's, and so is
    a policy file that is gone.  A manifest from before ``correlation`` was recorded gives them
    from its versions and command line (tests/test_audit.py checks the findings themselves)."""
    _r, policy, _sc = root
    from flowaudit.cli import main

    def run(*args):                     # in this process: the same command, without a start-up each
        rc = main(["findings", *map(str, args)])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out.out, out.err)

    a = tmp_path / "audited"
    (a / "_audit").mkdir(parents=True)
    (a / "_audit" / "manifest.json").write_text(json.dumps({
        "command": ["flowaudit", "audit", "x", "--out", str(a), "--policy", str(policy), "--window=3600"],
        "versions": {"policy": {"file": str(policy)}}}))
    p = run(a, "--window", "300")
    assert p.returncode == 0 and f"audited with --policy {policy}: correlating with the same" in p.stderr
    assert "audited with --window 3600; this correlation uses --window 300" in p.stderr
    p = run(a, "--window", "3600", "--policy", policy)
    assert p.returncode == 0 and "audited with" not in p.stderr
    p = run(a)
    assert p.returncode == 0 and f"audited with --policy {policy} --window 3600: correlating" in p.stderr
    assert "this correlation uses" not in p.stderr
    other = tmp_path / "other.toml"
    other.write_text(Path(policy).read_text())
    (a / "_audit" / "manifest.json").write_text(json.dumps({
        "correlation": {"policy_file": str(tmp_path / "gone.toml"), "window_s": 3600, "lookback_s": 60,
                        "severity_model": None}}))
    p = run(a, "--window", "3600", "--policy", other)
    assert p.returncode == 0 and "--lookback 60: correlating with the same" in p.stderr
    assert (f"audited with --policy {tmp_path / 'gone.toml'}; this correlation uses --policy {other}"
            in p.stderr)


def test_a_root_without_findings_passes(tmp_path):
    """A clean port: a root with nothing that reached a platform has no findings, which is exit 0
    with --fail-on (a cron check), in every format; it exited 2 ("Invalid null value") when the
    filters were applied to no findings."""
    clean = tmp_path / "clean"
    clean.mkdir()
    for args in ((), ("--fail-on", "high"), ("--format", "json"), ("--format", "csv", "--platform", "LOGINK")):
        p = findings(clean, *args)
        assert p.returncode == 0, (args, p.stderr)
    assert "0 finding(s)" in findings(clean).stdout


def test_episodes_group_the_findings_they_print(root, capsys):
    """--episodes: each finding is in exactly one episode of its own platform, rule, exposure and
    source; in 5-minute windows the tracking gateway's findings are one episode, worst first."""
    r, policy, sc = root
    from flowaudit.cli import main

    def run(*args):
        rc = main(["findings", str(r), "--policy", str(policy), "--window", "300", *args])
        return rc, capsys.readouterr().out

    rc, out = run("--format", "json")
    rows = {x["finding_id"]: x for x in map(json.loads, out.splitlines())}
    rc, out = run("--episodes", "--format", "json")
    eps = [json.loads(x) for x in out.splitlines()]
    assert rc == 0 and sorted(i for e in eps for i in e["finding_ids"]) == sorted(rows)
    key = ("platform", "rule", "exposure", "entity")
    for e in eps:
        assert {tuple(rows[i][k] for k in key) for i in e["finding_ids"]} == {tuple(e[k] for k in key)}
        assert e["windows"] == len(e["finding_ids"])
        assert e["messages"] == sum(rows[i]["messages"] for i in e["finding_ids"])
    assert {tuple(e[k] for k in key) for e in eps} == {tuple(x[k] for k in key) for x in rows.values()}
    gw = [e for e in eps if e["entity"] == "app:tracking-gw"]
    assert len(gw) == 1 and gw[0]["windows"] > 1 and eps[0] == gw[0] and gw[0]["severity"] == "critical"
    rc, out = run("--episodes")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["severity", "score", "first"] and "app:tracking-gw" in lines[1]
    assert lines[-1] == f"{len(eps)} episode(s) of {len(rows)} finding(s); {len(rows)} findings in all"
    rc, out = run("--episodes", "--format", "csv", "--top", "1", "--fail-on", "critical")
    got = list(csv.DictReader(io.StringIO(out)))
    assert rc == 1 and len(got) == 1 and got[0]["finding_ids"].split(";") == gw[0]["finding_ids"]
    # another episode gap: no quiet at all still joins windows that touch; a day joins each source's
    def by_hand(gap_ns):      # slowly: a new episode after more quiet than the gap and the last window
        out, last = [], {}
        for x in sorted(rows.values(), key=lambda x: x["window_start_ns"]):
            k, prev = tuple(x[c] for c in key), last.get(tuple(x[c] for c in key))
            if prev is None or x["window_start_ns"] - prev["window_end_ns"] > max(
                    gap_ns, prev["window_end_ns"] - prev["window_start_ns"]):
                out.append([])
                prev = last[k] = {"ids": out[-1]}
            prev["ids"].append(x["finding_id"])
            prev.update(window_start_ns=x["window_start_ns"], window_end_ns=x["window_end_ns"])
        return sorted(sorted(ids) for ids in out)

    assert sorted(sorted(e["finding_ids"]) for e in eps) == by_hand(3600 * 10**9)
    for gap in (0, 86400):
        rc, out = run("--episodes", "--format", "json", "--episode-gap", str(gap))
        other = [json.loads(x) for x in out.splitlines()]
        assert rc == 0 and sorted(sorted(e["finding_ids"]) for e in other) == by_hand(gap * 10**9), gap
    rc = main(["findings", str(r), "--episode-gap", "60"])
    assert rc == 2 and "with --episodes" in capsys.readouterr().err
    # --platform as typed: any case; a name no finding has is said on stderr (it was an empty table)
    rc, out = run("--episodes", "--format", "json", "--platform", "logink")
    assert [json.loads(x) for x in out.splitlines()] == [e for e in eps if e["platform"] == "LOGINK"]
    rc = main(["findings", str(r), "--policy", str(policy), "--window", "300", "--platform", "LOGINC"])
    err = capsys.readouterr().err
    assert rc == 0 and "no finding of platform LOGINC" in err and "platforms with findings: LOGINK, NEAL-NET" in err


def test_a_damaged_file_under_the_root_is_named(root, tmp_path):
    """A Parquet file cut short under ROOT (a copy stopped half way, a bad disk) was an Arrow
    traceback that often named no file: findings and report now name each damaged file, exit 2."""
    import shutil

    r, policy, _sc = root
    copy = tmp_path / "root"
    shutil.copytree(r, copy)
    victim = sorted((copy / "dataset=hits").rglob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    for argv in (["findings", copy, "--policy", policy], ["report", copy, "--out", tmp_path / "r.html"]):
        p = subprocess.run([sys.executable, "-m", "flowaudit", *map(str, argv)], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert f"flowaudit {argv[0]}: {victim}: a damaged Parquet file (" in p.stderr
        assert p.stderr.count("damaged Parquet file") == 1
    # a damaged page inside a file whose footer opens (an OSError, "ZSTD decompression failed", was a
    # traceback): every page is read to name the file
    shutil.rmtree(copy)
    shutil.copytree(r, copy)
    victim = sorted((copy / "dataset=transfers").rglob("*.parquet"))[0]
    md = pq.ParquetFile(victim).metadata
    raw = bytearray(victim.read_bytes())
    for c in range(md.num_columns):
        col = md.row_group(0).column(c)
        start = col.dictionary_page_offset or col.data_page_offset
        raw[start + 20:start + min(120, col.total_compressed_size - 2)] = bytes(
            (b * 7 + 13) & 0xFF for b in raw[start + 20:start + min(120, col.total_compressed_size - 2)])
    victim.write_bytes(bytes(raw))
    assert pq.read_metadata(victim).num_rows == md.num_rows          # the footer still opens
    for argv in (["aggregates", copy], ["report", copy, "--out", tmp_path / "r.html"]):
        p = subprocess.run([sys.executable, "-m", "flowaudit", *map(str, argv)], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert f"flowaudit {argv[0]}: {victim}: a damaged Parquet file (" in p.stderr
        assert p.stderr.count("damaged Parquet file") == 1


def test_a_manifest_of_odd_kinds_is_read_as_defaults(tmp_path):
    """`findings` on a root whose manifest's correlation has values of other kinds (a hand-edited
    manifest) took them as they were: a ValueError traceback.  Such values are the defaults."""
    from flowaudit.detect.findings_cli import _audit_correlation

    (tmp_path / "_audit").mkdir()
    m = tmp_path / "_audit" / "manifest.json"
    for doc, want in (
            ({"correlation": {"window_s": "abc", "lookback_s": [1], "episode_gap_s": True, "policy_file": 5}},
             {"policy_file": None, "window_s": 300, "lookback_s": 0, "severity_model": None, "episode_gap_s": None}),
            ({"correlation": {"window_s": 0, "lookback_s": 60, "episode_gap_s": 0, "severity_model": "m.toml"}},
             {"policy_file": None, "window_s": 300, "lookback_s": 60, "severity_model": "m.toml", "episode_gap_s": 0}),
            ({"correlation": "oops", "versions": "v1", "command": "flowaudit audit --window 60"},
             {"policy_file": None, "window_s": 300, "lookback_s": 0, "severity_model": None}),
            ([1, 2], None)):
        m.write_text(json.dumps(doc))
        assert _audit_correlation(tmp_path) == want, doc


def test_a_time_range_that_holds_no_time_is_a_usage_error(root, tmp_path):
    """--since at or after --until (a typo) gave an empty answer that reads like "nothing reached
    LOGINK": an audit of 0 rows with 0 findings, 0 findings, 0 quarantine rows.  It is now exit 2."""
    from flowaudit.quarantine import QuarantineError, parse_range

    assert parse_range(None, None) == (None, None)
    assert parse_range("2026-03-01", "2026-03-01T00:00:01") == (1772323200000, 1772323201000)
    for since, until in (("2026-03-02", "2026-03-01"), ("2026-03-01T06:00", "2026-03-01T06:00")):
        with pytest.raises(QuarantineError, match="is not before --until"):
            parse_range(since, until)
    r, policy, _sc = root
    bad = ["--since", "2026-03-02", "--until", "2026-03-01"]
    for argv in (["findings", r, "--policy", policy], ["quarantine", "list", r],
                 ["audit", r, "--out", tmp_path / "none"]):
        p = subprocess.run([sys.executable, "-m", "flowaudit", *map(str, argv), *bad], capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 2 and "--since 2026-03-02 is not before --until 2026-03-01" in p.stderr, (argv, p.stderr)
        assert len(p.stderr.splitlines()) == 1
    assert not (tmp_path / "none").exists()


def test_a_damaged_page_of_an_uncompressed_file_is_found_by_its_checksum(root, tmp_path):
    """An uncompressed page (``sink.compression = "none"``) damaged on disk decodes to other values
    without complaint: every reader of a root checks the pages' CRC32 (flowaudit's writers store
    it), so findings, aggregates and report name the file instead of using what it now says."""
    import shutil

    from flowaudit.datasets import parquet_options

    r, policy, _sc = root
    copy = tmp_path / "root"
    # the datasets the stream writes, without findings an earlier test may have stored beside them
    # (the report would take those and read fewer of the transfers' columns)
    shutil.copytree(r, copy, ignore=shutil.ignore_patterns("dataset=findings", "_*"))
    victim = sorted((copy / "dataset=transfers").rglob("*.parquet"))[0]
    t = pq.read_table(victim)
    pq.write_table(t, victim, **parquet_options(t.schema, compression="none"))
    raw = bytearray(victim.read_bytes())
    name = t.column("indicator")[0].as_py().encode()
    at = raw.index(name)                                  # the value, plain in its page
    raw[at] ^= 0x01
    victim.write_bytes(bytes(raw))
    quiet = pq.read_table(victim).column("indicator").to_pylist()     # unchecked: other values, no error
    assert name.decode() not in quiet and len(quiet) == t.num_rows
    for argv in (["findings", copy, "--policy", policy, "--window", "3600"], ["aggregates", copy],
                 ["report", copy, "--out", tmp_path / "r.html"]):
        p = subprocess.run([sys.executable, "-m", "flowaudit", *map(str, argv)], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 2 and "Traceback" not in p.stderr, (argv[0], p.stderr[-2000:])
        assert f"flowaudit {argv[0]}: {victim}: a damaged Parquet file (" in p.stderr
