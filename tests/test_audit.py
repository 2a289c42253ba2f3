"""``flowaudit audit``: archives in every layout, engines that agree, resume, bad inputs, retro-hunt.

The archives are the labelled exposure scenario (flowaudit.synth.exposure_scenario) written as a
Kafka Connect flat layout, Redpanda's Iceberg key-value layout, an odd layout read through
``--map``, and a flow archive; the audit must report every labelled exposure and nothing else.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from flowaudit import synth
from flowaudit.broker import free_port
from flowaudit.datasets import FLOWS, SCHEMA_VERSION

from .conftest import HMAC_KEY

pytestmark = pytest.mark.slow
T0 = synth.SCENARIO_T0_MS
ENV = dict(os.environ, FLOWAUDIT_SECURITY_HMAC_KEY=HMAC_KEY)


def _messages_by_topic(sc) -> dict:
    by: dict = {}
    for topic, m, ts in sc.messages:
        by.setdefault(topic, []).append((m, ts))
    return by


def flows_table(sc) -> pa.Table:
    f = sc.flows
    n = len(f)
    return pa.Table.from_pydict({
        "source": pa.array(["netflow"] * n).dictionary_encode(), "partition": pa.array([0] * n, pa.int32()),
        "offset": pa.array(np.arange(n)), "ts_ms": pa.array([r[6] // 1_000_000 for r in f], pa.int64()),
        "exporter": pa.array(["127.0.0.1"] * n).dictionary_encode(), "version": pa.array([9] * n, pa.uint8()),
        "obs_domain": pa.array([0] * n, pa.uint32()), "template_id": pa.array([256] * n, pa.uint16()),
        "src_addr": [r[0] for r in f], "dst_addr": [r[1] for r in f],
        "src_port": pa.array([r[2] for r in f], pa.uint16()), "dst_port": pa.array([r[3] for r in f], pa.uint16()),
        "protocol": pa.array([r[4] for r in f], pa.uint8()), "tcp_flags": pa.array([0] * n, pa.uint8()),
        "bytes": pa.array([r[5] for r in f], pa.uint64()),
        "packets": pa.array([max(1, r[5] // 1000) for r in f], pa.uint64()),
        "rev_bytes": pa.nulls(n, pa.uint64()), "rev_packets": pa.nulls(n, pa.uint64()),
        "first_ns": pa.array([r[6] for r in f], pa.int64()), "last_ns": pa.array([r[6] for r in f], pa.int64()),
        "sampling_interval": pa.array([r[7] for r in f], pa.uint32()), "ip_version": pa.array([4] * n, pa.uint8()),
        "time_flags": pa.array([3] * n, pa.uint8()), "schema_version": pa.array([SCHEMA_VERSION] * n).dictionary_encode()},
        schema=FLOWS)


def write_archives(d: Path, sc, row_group: int = 100) -> dict:
    """The scenario as archives: flat (topic= folders), Redpanda (a struct per record), mapped (odd
    names, the coordinates in a struct), a flow archive, the DNS log, the policy and watchlist."""
    for topic, rows in _messages_by_topic(sc).items():
        n = len(rows)
        ts = pa.array([t for _, t in rows], pa.timestamp("ms", tz="UTC"))
        key = pa.array([m.key for m, _ in rows], pa.binary())
        value = pa.array([m.value for m, _ in rows], pa.binary())
        part = pa.array([0] * n, pa.int32())
        off = pa.array(np.arange(n, dtype=np.int64))
        (d / "flat" / f"topic={topic}").mkdir(parents=True)
        pq.write_table(pa.table({"partition": part, "offset": off, "timestamp": ts, "key": key, "value": value}),
                       d / "flat" / f"topic={topic}" / "part-0.parquet", row_group_size=row_group)
        (d / "redpanda" / topic / "data").mkdir(parents=True)
        rp = pa.StructArray.from_arrays(
            [part, off, ts.cast(pa.timestamp("us", tz="UTC")),
             pa.array([[]] * n, pa.list_(pa.struct([("key", pa.binary()), ("value", pa.binary())]))), key],
            names=["partition", "offset", "timestamp", "headers", "key"])
        pq.write_table(pa.table({"redpanda": rp, "value": value}), d / "redpanda" / topic / "data" / "0.parquet",
                       row_group_size=row_group)
        (d / "mapped").mkdir(exist_ok=True)
        meta = pa.StructArray.from_arrays([pa.array([topic] * n), off, ts.cast(pa.int64())],
                                          names=["stream", "seq", "at_ms"])
        pq.write_table(pa.table({"meta": meta, "body": value}), d / "mapped" / f"{topic}.parquet",
                       row_group_size=row_group)
    (d / "flows").mkdir()
    pq.write_table(flows_table(sc), d / "flows" / "flows.parquet")
    (d / "dns.log").write_bytes(b"\n".join(sc.dns) + b"\n")
    (d / "policy.toml").write_text(sc.policy_toml)
    (d / "wl").mkdir()
    (d / "wl" / "ops.toml").write_text(sc.watchlist_toml)
    return {"policy": d / "policy.toml", "wl": d / "wl", "dns": d / "dns.log"}


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    d = tmp_path_factory.mktemp("dump")
    sc = synth.exposure_scenario()   # 1,500 messages 06:00:05 .. 06:50 UTC, the exposures at 06:30 .. 06:40
    files = write_archives(d, sc)
    return {"dir": d, "sc": sc, **files}


def audit(*args, check: int | None = 0, env: dict = ENV, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "flowaudit", "audit", *map(str, args)], capture_output=True, text=True,
                       env=env, timeout=300, **kw)
    if check is not None:
        assert r.returncode == check, r.stdout + r.stderr
    return r


def std_args(dump) -> list:
    return ["--policy", dump["policy"], "--watchlist-dir", dump["wl"], "--dns", dump["dns"], "--window", "3600"]


def table(root: Path, name: str) -> pa.Table:
    base = root / f"dataset={name}"
    if not base.is_dir():
        return pa.table({})
    return pads.dataset(base, format="parquet", partitioning="hive").to_table()


def findings(root: Path) -> dict:
    rows = table(root, "findings").to_pylist()
    out = {(r["platform"], r["rule"], r["entity"]): r for r in rows}
    assert len(out) == len(rows), "one finding per exposure: the scenario fits one window"
    return out


def sorted_rows(t: pa.Table, keys=("source", "partition", "offset")) -> list:
    cols = [c for c in t.column_names if c not in ("date", "hour")]
    t = t.select(cols)
    for c in cols:
        if pa.types.is_dictionary(t.schema.field(c).type):
            t = t.set_column(t.schema.get_field_index(c), c, t.column(c).cast(pa.string()) if pa.types.is_string(
                t.schema.field(c).type.value_type) else t.column(c).cast(t.schema.field(c).type.value_type))
    rows = t.to_pylist()
    return sorted(rows, key=lambda r: tuple(str(r.get(k)) for k in cols))


def assert_labelled(root: Path, sc) -> dict:
    got = findings(root)
    want = {(e.platform, e.rule, e.entity): e for e in sc.exposures}
    assert set(got) == set(want), f"missing {set(want) - set(got)}, unlabelled {set(got) - set(want)}"
    for key, e in want.items():
        f = got[key]
        assert f["correlation"] == e.correlation and f["severity"] == e.severity, (key, f["severity_reasons"])
        assert e.classes <= {c["data_class"] for c in f["data_classes"]}, key
    return got


# ------------------------------------------------------------------------------ layouts
@pytest.mark.parametrize("layout", ["flat", "redpanda", "mapped"])
def test_every_labelled_exposure_in_every_layout(dump, tmp_path, layout):
    extra = ["--map", "value=body,topic=meta.stream,offset=meta.seq,time=meta.at_ms"] if layout == "mapped" else []
    if layout == "flat":   # and --fail-on: a critical finding (LOGINK queries) exits 1
        extra += ["--report", tmp_path / "audit.html", "--fail-on", "critical", "--episode-gap", "7200"]
    out = tmp_path / "out"
    r = audit(dump["dir"] / layout, dump["dir"] / "flows", "--out", out, *std_args(dump), *extra,
              check=1 if layout == "flat" else 0)
    got = assert_labelled(out, dump["sc"])
    n = len(dump["sc"].messages)
    assert table(out, "messages").num_rows + table(out, "quarantine").num_rows == n
    m = orjson.loads((out / "_audit" / "manifest.json").read_bytes())
    assert m["totals"]["rows"] == n + len(dump["sc"].flows) and m["engine"] == "polars"
    assert {i["layout"] for i in m["inputs"]} == {"mapped" if layout == "mapped" else layout, "flows"}
    assert m["versions"]["watchlist"]["sha256"] and m["versions"]["catalog"]["version"]
    # provenance: the archive's Kafka coordinates; samples point at them
    s = got[("LOGINK", "watchlist", "app:tracking-gw")]["samples"][0]
    assert s["source"] == "port.json" and s["offset"] >= 0
    assert "audited" in r.stdout and "\r" not in r.stderr + r.stdout     # no progress bar in a pipe
    if layout == "flat":   # the report (tests/test_report.py renders it in Chromium) reads the audit's manifest
        rep = orjson.loads((tmp_path / "report.json").read_bytes())
        assert (tmp_path / "audit.html").stat().st_size > 10_000
        logink = [v for v in rep["verdicts"] if v["name"] == "LOGINK"][0]
        assert logink["exposed"] and rep["verdicts"][0]["name"] == "LOGINK"
        assert rep["coverage"]["inputs"]["rows"] == m["totals"]["rows"] + sum(
            i.get("rows_pruned", 0) for i in m["inputs"])
        assert rep["method"]["engine"] == "polars" and "flowaudit audit" in rep["method"]["command"]
        # `flowaudit findings OUT`, no flags, correlates as the audit did (its manifest's policy and
        # window): the findings the audit wrote, hosts named as applications
        assert m["correlation"] == {"policy_file": str(Path(dump["policy"]).resolve()), "window_s": 3600,
                                    "lookback_s": 0, "severity_model": None, "episode_gap_s": 7200}
        assert rep["findings"]["episode_gap_s"] == 7200     # the report's episodes, as the flag asked
        f = subprocess.run([sys.executable, "-m", "flowaudit", "findings", str(out), "--format", "json"],
                           capture_output=True, text=True, env=ENV, timeout=120)
        assert f.returncode == 0, f.stderr
        assert f"audited with --policy {Path(dump['policy']).resolve()} --window 3600: correlating with the same" \
            in f.stderr and "this correlation uses" not in f.stderr
        rows = [orjson.loads(x) for x in f.stdout.splitlines()]
        assert sorted((r["platform"], r["rule"], r["entity"], r["severity"], r["bytes"]) for r in rows) == sorted(
            (r["platform"], r["rule"], r["entity"], r["severity"], r["bytes"]) for r in got.values())
        # its episodes, too, as the report grouped them (the gap the audit recorded)
        f = subprocess.run([sys.executable, "-m", "flowaudit", "findings", str(out), "--episodes", "--format", "json"],
                           capture_output=True, text=True, env=ENV, timeout=120)
        assert f.returncode == 0 and "--episode-gap 7200: correlating" in f.stderr, f.stderr
        assert [orjson.loads(x)["finding_ids"] for x in f.stdout.splitlines()] == \
            [e["finding_ids"] for e in rep["findings"]["episodes"]]


def test_progress_bar_on_a_terminal_only():
    import io

    from flowaudit.audit.engine import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        p = Progress(1000, stream)
        p.add(400, 4_000_000)
        p.add(600, 6_000_000)
        p.close()
    out = tty.getvalue()
    assert "\r[" in out and "1,000/1,000 rows" in out and "rows/s" in out and "MB/s" in out and "ETA" in out
    assert pipe.getvalue() == ""


def test_no_layout_fits_names_the_columns(tmp_path):
    bad = tmp_path / "in"
    bad.mkdir()
    pq.write_table(pa.table({"payload": pa.array([b"x"]), "when": pa.array([1])}), bad / "a.parquet")
    r = audit(bad, "--out", tmp_path / "out", check=2)
    assert "a.parquet" in r.stderr and "payload, when" in r.stderr and "--map" in r.stderr
    # a --map no input has the columns of was ignored (the flat layout read without it), and an
    # unreachable scheduler was a traceback.  Each is one line, exit 2; one found in the plan leaves
    # no output root behind (counts below 1: tests/test_config.py)
    flat = tmp_path / "flat"
    flat.mkdir()
    pq.write_table(pa.table({"topic": ["t"], "key": pa.array([7]), "timestamp": ["2026-03-01T06:00:00+01:00"],
                             "value": pa.array([b"UNB+x'"])}), flat / "f.parquet")
    for args, msg in (
            (["--map", "value=body"], "--map value=body: no input has the column(s) it names; they were read as flat"),
            (["--engine", "dask", "--scheduler", f"tcp://127.0.0.1:{free_port()}"], "cannot reach the Dask scheduler")):
        r = audit(flat, "--out", tmp_path / "none", *args, check=2,
                  env=dict(ENV, DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="2s"))
        assert r.stderr.startswith("flowaudit audit: ") and msg in r.stderr and len(r.stderr.splitlines()) == 1, \
            r.stderr
        assert not (tmp_path / "none").exists() or args[0] == "--engine"    # found before ROOT is made
    # a broken watchlist, zone policy or severity model: one line before ROOT is made (the first two
    # failed every unit, each blamed on its input file; the model was a traceback after the last unit)
    (tmp_path / "wl").mkdir()
    (tmp_path / "wl" / "a.toml").write_text("[platforms.X]\nseverity = 5\n")
    (tmp_path / "policy.toml").write_bytes(b"\xff\xfe")
    (tmp_path / "model.toml").write_text("x = [\n")
    for args, msg in ((["--watchlist-dir", tmp_path / "wl"], f"watchlist: {tmp_path / 'wl' / 'a.toml'}: version"),
                      (["--policy", tmp_path / "policy.toml"], f"policy: {tmp_path / 'policy.toml'}: file: cannot read"),
                      (["--severity-model", tmp_path / "model.toml"], f"severity model: {tmp_path / 'model.toml'}: ")):
        r = audit(flat, "--out", tmp_path / "nothing", *args, check=2)
        assert r.stderr.startswith(f"flowaudit audit: {msg}") and len(r.stderr.splitlines()) == 1, r.stderr
        assert not (tmp_path / "nothing").exists()
    r = audit(flat, "--out", tmp_path / "one", "--map", "value=value,topic=topic")    # a map that fits: used
    assert orjson.loads((tmp_path / "one" / "_audit" / "manifest.json").read_bytes())["inputs"][0]["layout"] == "mapped"
    # an integer key column (some archivers store keys so) is keyed as its decimal text, and ISO 8601
    # text times are read; both failed the file ("Unsupported cast from int64 to binary", "a
    # timestamp or integer is needed")
    audit(flat, "--out", tmp_path / "two")
    from flowaudit.audit.work import ts_ms_of
    from flowaudit.protect import Protector

    rows = table(tmp_path / "two", "messages").to_pylist() + table(tmp_path / "two", "quarantine").to_pylist()
    assert [(x["key_hmac"], x["ts_ms"]) for x in rows] == [(Protector(HMAC_KEY.encode()).hmac(b"7"), 1_772_341_200_000)]
    texts = pa.array(["2026-03-01T05:00:00Z", "2026-03-01 05:00:00.250", "bad", None, "2026-03-01T05:00:00Z"])
    assert ts_ms_of(texts, "timestamp").tolist() == [1_772_341_200_000, 1_772_341_200_250, -1, -1, 1_772_341_200_000]
    # float times (epoch seconds with a fraction) were refused as an unknown type; a name's suffix
    # says a numeric column's unit, integers are otherwise ms and floats seconds
    assert ts_ms_of(pa.array([1_772_341_200.25, None, float("nan"), 1e300]), "timestamp").tolist() == \
        [1_772_341_200_250, -1, -1, -1]
    for value, name, ms in ((1_772_341_200_250.0, "ts_ms", 1_772_341_200_250),
                            (1_772_341_200, "event.time_s", 1_772_341_200_000),
                            (1_772_341_200_250_000, "time_us", 1_772_341_200_250),
                            (1_772_341_200_250_000_000, "time_ns", 1_772_341_200_250),
                            (1_772_341_200_250, "timestamp", 1_772_341_200_250)):
        assert ts_ms_of(pa.array([value]), name).tolist() == [ms], name
    # the row groups of a float time column are pruned by their statistics
    fl = tmp_path / "floats"
    fl.mkdir()
    pq.write_table(pa.table({"topic": ["t", "t"], "timestamp": [1_772_341_200.5, 1_772_348_400.5],
                             "value": [b"UNB+x'", b"UNB+y'"]}), fl / "f.parquet", row_group_size=1)
    audit(fl, "--out", tmp_path / "three", "--since", "2026-03-01T06:30:00Z")
    m = orjson.loads((tmp_path / "three" / "_audit" / "manifest.json").read_bytes())
    assert m["rows_pruned"] == 1
    rows = table(tmp_path / "three", "messages").to_pylist() + table(tmp_path / "three", "quarantine").to_pylist()
    assert [x["ts_ms"] for x in rows] == [1_772_348_400_500]


# ------------------------------------------------------------------------------ engines
def test_dask_localcluster_equals_polars(dump, tmp_path):
    args = [dump["dir"] / "flat", dump["dir"] / "flows", *std_args(dump), "--unit-rows", "200"]
    audit(*args, "--out", tmp_path / "p")
    r = audit(*args, "--out", tmp_path / "d", "--engine", "dask", "--workers", "2")
    assert "distributed" not in r.stderr          # Dask's own logging stays quiet
    m = orjson.loads((tmp_path / "d" / "_audit" / "manifest.json").read_bytes())
    assert m["engine"] == "dask" and m["workers"] == 2 and m["units"] > 4
    for name in ("messages", "hits", "quarantine", "flows", "transfers"):
        a, b = table(tmp_path / "p", name), table(tmp_path / "d", name)
        assert a.num_rows == b.num_rows, name
        assert sorted_rows(a) == sorted_rows(b), name
    fp, fd = table(tmp_path / "p", "findings"), table(tmp_path / "d", "findings")
    assert fp.num_rows == len(dump["sc"].exposures)
    assert fp.sort_by("finding_id").equals(fd.sort_by("finding_id"))
    # the same file names on both engines: derived from input content and row range
    names = {n: sorted(p.relative_to(tmp_path / n).as_posix() for p in (tmp_path / n).rglob("*.parquet"))
             for n in ("p", "d")}
    assert names["p"] == names["d"]


# ------------------------------------------------------------------------------ resume
def _bytes_of(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_rerun_and_kill_9_resume_give_identical_files(dump, tmp_path):
    args = [dump["dir"] / "flat", dump["dir"] / "flows", *std_args(dump), "--unit-rows", "100"]
    audit(*args, "--out", tmp_path / "ref")
    ref = _bytes_of(tmp_path / "ref")
    r = audit(*args, "--out", tmp_path / "ref")               # a re-run redoes nothing and changes nothing
    units = orjson.loads((tmp_path / "ref" / "_audit" / "manifest.json").read_bytes())["units"]
    assert units > 10 and f"({units} of {units} units already done)" in r.stdout
    assert _bytes_of(tmp_path / "ref") == ref
    out = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "flowaudit", "audit", *map(str, args), "--out", str(out)],
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            if len(list((out / "_audit" / "units").glob("*.json"))) >= 3:
                break
            time.sleep(0.02)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait(timeout=30)
    done = len(list((out / "_audit" / "units").glob("*.json")))
    assert done >= 3 and not (out / "_audit" / "manifest.json").exists()
    r = audit(*args, "--out", out)
    assert f"({done} of" in r.stdout
    assert _bytes_of(out) == ref


def test_quarantined_rows_are_sealed_to_the_same_bytes_on_every_run(tmp_path):
    """Quarantined payloads are sealed (AES-256-GCM) with a nonce derived from the row and the
    payload, so two audits of the same archive write identical quarantine files, and they open."""
    d = tmp_path / "in" / "topic=port.json"
    d.mkdir(parents=True)
    values = [b'{"bl": "MAEU123456789"', b"\xff\xfe not utf-8", b'{"ok": true}', b"<a><b></a>"]
    n = len(values)
    pq.write_table(pa.table({"partition": pa.array([0] * n, pa.int32()), "offset": pa.array(range(n), pa.int64()),
                             "timestamp": pa.array([T0 + i for i in range(n)], pa.timestamp("ms", tz="UTC")),
                             "key": pa.array([b"k"] * n), "value": pa.array(values, pa.binary())}),
                   d / "part-0.parquet")
    for out in ("a", "b"):
        audit(tmp_path / "in", "--out", tmp_path / out)
    qa = {k: v for k, v in _bytes_of(tmp_path / "a").items() if "dataset=quarantine" in k}
    assert qa and qa == {k: v for k, v in _bytes_of(tmp_path / "b").items() if "dataset=quarantine" in k}
    q = table(tmp_path / "a", "quarantine")
    assert q.num_rows >= 2 and set(q.column("raw_encoding").to_pylist()) == {"aes-256-gcm/v1"}
    r = subprocess.run([sys.executable, "-m", "flowaudit", "quarantine", "show", str(tmp_path / "a"), "port.json", "0",
                        "1", "--raw-out", str(tmp_path / "raw")], env=ENV, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "raw").read_bytes() == values[1]


# ------------------------------------------------------------------------------ bad inputs
def test_bad_file_in_the_middle_fails_or_is_skipped_by_flag(dump, tmp_path):
    d = tmp_path / "in"
    src = dump["dir"] / "flat"
    for f in src.rglob("*.parquet"):
        dst = d / f.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(f.read_bytes())
    whole = (d / "topic=port.xml" / "part-0.parquet").read_bytes()
    (d / "topic=port.xml" / "part-1.parquet").write_bytes(whole[: len(whole) // 2])       # truncated
    pq.write_table(pa.table({"x": [1, 2]}), d / "topic=port.json" / "part-9.parquet")     # wrong schema
    r = audit(d, "--out", tmp_path / "o1", *std_args(dump), check=2)
    assert "part-1.parquet" in r.stderr or "part-9.parquet" in r.stderr
    r = audit(d, "--out", tmp_path / "o2", *std_args(dump), "--on-bad-input", "skip")
    assert "part-1.parquet" in r.stdout and "part-9.parquet" in r.stdout
    m = orjson.loads((tmp_path / "o2" / "_audit" / "manifest.json").read_bytes())
    skipped = {Path(i["path"]).name: i for i in m["inputs"] if i["status"] != "ok"}
    assert set(skipped) == {"part-1.parquet", "part-9.parquet"}
    assert all(i["error"] for i in skipped.values())
    assert table(tmp_path / "o2", "messages").num_rows + table(tmp_path / "o2", "quarantine").num_rows == len(
        dump["sc"].messages)


def test_damaged_pages_are_named_by_file_and_rows(dump, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    f = dump["dir"] / "flat" / "topic=port.edifact" / "part-0.parquet"
    data = bytearray(f.read_bytes())
    md = pq.ParquetFile(f).metadata
    col = [md.row_group(0).column(i) for i in range(md.num_columns)
           if md.row_group(0).column(i).path_in_schema == "value"][0]
    start = col.data_page_offset
    data[start:start + 64] = b"\xff" * 64                   # a garbled page header in the value column
    (d / "bad.parquet").write_bytes(bytes(data))
    r = audit(d, "--out", tmp_path / "o", "--on-bad-input", "skip", *std_args(dump))
    m = orjson.loads((tmp_path / "o" / "_audit" / "manifest.json").read_bytes())
    row = m["inputs"][0]
    assert row["status"] == "failed" and "bad.parquet (rows 0.." in row["error"], (row, r.stdout, r.stderr)


# ------------------------------------------------------------------------------ time range
def test_since_until_prune_row_groups_and_partitions(dump, tmp_path):
    out = tmp_path / "o"
    audit(dump["dir"] / "flat", "--out", out, *std_args(dump), "--since", "2026-03-01T06:20:00Z",
          "--until", "2026-03-01T06:35:00Z")
    m = orjson.loads((out / "_audit" / "manifest.json").read_bytes())
    assert m["rows_pruned"] > 0                         # row groups whose statistics are out of range
    ts = table(out, "messages").column("ts_ms").to_numpy()
    lo, hi = T0 + 1_200_000, T0 + 2_100_000
    assert ts.size and ts.min() >= lo and ts.max() < hi
    want = sum(1 for _t, _m, t in dump["sc"].messages if lo <= t < hi)
    assert ts.size + table(out, "quarantine").num_rows == want
    # a Hive date= folder out of range is not opened at all
    old = tmp_path / "hive" / "date=2020-01-01"
    old.mkdir(parents=True)
    (old / "x.parquet").write_bytes(b"not parquet")           # would fail if it were read
    audit(tmp_path / "hive", "--out", tmp_path / "o3", "--since", "2026-01-01")


# ------------------------------------------------------------------------------ retro-hunt
def test_retro_hunt_with_a_newer_watchlist_finds_the_new_host(dump, tmp_path):
    old = tmp_path / "old"
    # last quarter's audit knew nothing of the operator's LOGINK prefix
    audit(dump["dir"] / "flat", dump["dir"] / "flows", "--out", old, "--policy", dump["policy"], "--window", "3600")
    before = findings(old)
    assert ("LOGINK", "watchlist", "192.0.2.130") not in before
    new = tmp_path / "new"
    r = audit(old, "--out", new, *std_args(dump))
    after = findings(new)
    f = after[("LOGINK", "watchlist", "192.0.2.130")]
    assert f["exposure"] == "inferred" and f["flows"] == 3 and f["destinations"] == ["203.0.113.5"]
    assert {"container_number", "imo_number"} <= {c["data_class"] for c in f["data_classes"]}
    # the classified data is carried over, not classified again
    assert table(new, "hits").num_rows == table(old, "hits").num_rows
    assert table(new, "messages").num_rows == table(old, "messages").num_rows
    assert "audited" in r.stdout
    # and the manifest and the summary say how much was carried over
    m = orjson.loads((new / "_audit" / "manifest.json").read_bytes())
    assert m["carried_over"]["hits"] == table(old, "hits").num_rows > 0
    assert m["carried_over"]["messages"] == table(old, "messages").num_rows
    assert 0 < m["carried_over"]["transfers"] < table(old, "transfers").num_rows   # the flows' are matched again
    assert f"{table(old, 'hits').num_rows:,} hits" in r.stdout.splitlines()[1]


def test_retro_hunt_matches_the_carried_rows_again(dump, tmp_path):
    """A retro-hunt with today's watchlist, policy and DNS logs finds what an audit of the archive
    with them finds: an EDI party listed since is matched in the carried recipient hits (by keyed
    hash), flows named through DNS are not counted twice when the logs are given again, and an
    indicator the operator withdrew is no longer reported."""
    full = tmp_path / "full"           # today's audit of the archive itself
    audit(dump["dir"] / "flat", dump["dir"] / "flows", "--out", full, *std_args(dump))
    old = tmp_path / "old"             # last quarter's, without the operator's watchlist
    audit(dump["dir"] / "flat", dump["dir"] / "flows", "--out", old, "--policy", dump["policy"], "--dns", dump["dns"],
          "--window", "3600")
    new = tmp_path / "new"
    r = audit(old, "--out", new, *std_args(dump), "--report", tmp_path / "html" / "retro.html")
    want, got, before = findings(full), findings(new), findings(old)
    rep = orjson.loads((tmp_path / "html" / "report.json").read_bytes())
    assert any(c.startswith("a retro-hunt") for c in rep["coverage"]["caveats"])
    assert set(got) == set(want)
    party = ("LOGINK", "watchlist", "app:edi-gateway")
    assert party in got and party not in before
    for k, f in want.items():
        g = got[k]
        assert (g["severity"], g["exposure"], g["bytes"], g["messages"], g["flows"]) == \
            (f["severity"], f["exposure"], f["bytes"], f["messages"], f["flows"]), k
        assert g["data_classes"] == f["data_classes"], k
    edi = [t for t in table(new, "transfers").to_pylist() if t["indicator_type"] == "edi_party"]
    assert edi and {t["seen_where"] for t in edi} <= {"EDI_UNB", "X12_ISA", "X12_GS"}
    m = orjson.loads((new / "_audit" / "manifest.json").read_bytes())
    assert m["retro_hunt"]["edi_party_matches"] == len(edi)
    assert f"{len(edi)} interchange recipient(s)" in r.stdout
    # a carried message match takes today's severity of its platform, and only what is listed stays
    from flowaudit.audit.retro import Retro
    from flowaudit.detect.egress import EgressDetector
    from flowaudit.detect.watchlist import compile_files

    wl = tmp_path / "wl.toml"
    wl.write_text('version = "t"\n[platforms.LOGINK]\nseverity = "low"\nsource = "test"\n'
                  '[[indicators]]\nplatform = "LOGINK"\ntype = "host"\nvalue = "test.logink.org"\nsource = "test"\n')
    carried = table(old, "transfers")
    kept = Retro(EgressDetector(compile_files([wl])), HMAC_KEY.encode(), dns_given=False).keep(carried)
    assert 0 < kept.num_rows < carried.num_rows
    assert set(kept.column("indicator").to_pylist()) == {"test.logink.org"}
    assert set(pc.cast(kept.column("severity"), pa.string()).to_pylist()) == {"low"}
    # without --dns, a flow named through DNS and its lookup are carried, graded by today's
    # watchlist and policy: NEAL-NET raised to high; then the host's zone allowed to reach it
    wl.write_text('version = "t"\n[platforms.NEAL-NET]\nseverity = "high"\nsource = "test"\n'
                  '[[indicators]]\nplatform = "NEAL-NET"\ntype = "host"\nvalue = "english.neal-net.net"\nsource = "test"\n')
    was = [t for t in carried.to_pylist() if t["indicator"] == "english.neal-net.net"]
    assert {(t["rule"], t["severity"]) for t in was} == {("dns_lookup", "info"), ("watchlist", "info")}
    pol = Path(dump["policy"]).read_text()
    allowing = tmp_path / "allowing.toml"
    allowing.write_text(pol.replace('may_reach = ["internet", "dmz", "tos", "internal"]',
                                    'may_reach = ["internet", "dmz", "tos", "internal", "platform:NEAL-NET"]'))
    assert allowing.read_text() != pol
    for policy, sev in ((dump["policy"], "high"), (allowing, "info")):
        kept = Retro(EgressDetector(compile_files([wl]), policy), HMAC_KEY.encode(), dns_given=False).keep(carried)
        rows = kept.to_pylist()
        assert {(t["rule"], t["severity"], t["src_addr"], t["src_zone"], t["dst_zone"]) for t in rows} == \
            {(t["rule"], sev, t["src_addr"], "it", "internet") for t in was}
    # the operator withdraws its watchlist: what only it named is gone, the rest stays
    back = tmp_path / "back"
    audit(full, "--out", back, "--policy", dump["policy"], "--dns", dump["dns"], "--window", "3600")
    assert set(findings(back)) == set(before)
    assert not [t for t in table(back, "transfers").to_pylist() if t["indicator_type"] == "edi_party"]


def test_retro_hunt_keeps_the_key_of_the_root_it_carries_over(tmp_path):
    """Without a configured key a root creates its own (.hmac-key).  A retro-hunt takes the key of
    the root it carries over, so the carried quarantine opens under the new root (with a new key
    it did not) and the hashes stay joinable.  Two roots with keys of their own, or an --out that
    holds another key, are refused before anything is written; a configured key that differs
    from a root's own is said on stderr."""
    import shutil

    from flowaudit.protect import Protector

    env = {k: v for k, v in ENV.items() if not k.startswith("FLOWAUDIT_SECURITY_HMAC_KEY")}
    d = tmp_path / "dump"
    synth.write_dump(d, 600, seed=3, files=1, layouts=("flat",))
    old = tmp_path / "old"
    audit(d / "flat", "--out", old, env=env)
    new = tmp_path / "new"
    audit(old, "--out", new, "--policy", d / "policy.toml", env=env)
    key = (old / ".hmac-key").read_bytes()
    assert (new / ".hmac-key").read_bytes() == key and len(key) >= 32
    q = table(new, "quarantine").to_pylist()
    assert q, "the dump's broken messages are carried over"
    raw = tmp_path / "raw.bin"
    r = subprocess.run([sys.executable, "-m", "flowaudit", "quarantine", "show", str(new), q[0]["source"],
                        str(q[0]["partition"]), str(q[0]["offset"]), "--raw-out", str(raw)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    src = pads.dataset(d / "flat", format="parquet", partitioning="hive").to_table().to_pylist()
    want = [x["value"] for x in src if (x["topic"], x["partition"], x["offset"]) ==
            (q[0]["source"], q[0]["partition"], q[0]["offset"])]
    assert raw.read_bytes() == want[0]
    # a value's hash under the new root's key is the one the carried hits hold
    hits = table(new, "hits").select(["data_class", "value_hmac"]).to_pylist()
    labelled = pq.read_table(d / "labels" / "values.parquet").to_pylist()
    imo = {x["value"] for x in labelled if x["data_class"] == "imo_number" and x["valid"]}
    keyed = {h["value_hmac"] for h in hits if h["data_class"] == "imo_number"}
    assert imo and {Protector(key).hmac(v.encode()) for v in imo} & keyed
    # refusals: two roots with keys of their own; an --out holding another key
    other = tmp_path / "other"
    shutil.copytree(old, other)
    (other / ".hmac-key").write_bytes(os.urandom(32).hex().encode())
    r = audit(old, other, "--out", tmp_path / "both", check=2, env=env)
    assert "each created a key of their own" in r.stderr and not any((tmp_path / "both").iterdir())
    (tmp_path / "o3").mkdir()
    (tmp_path / "o3" / ".hmac-key").write_bytes(os.urandom(32).hex().encode())
    r = audit(old, "--out", tmp_path / "o3", check=2, env=env)
    assert "holds another key" in r.stderr and sorted(p.name for p in (tmp_path / "o3").iterdir()) == [".hmac-key"]
    # the operator's configured key wins, and the root's own key is named
    r = audit(old, "--out", tmp_path / "cfg", "--policy", d / "policy.toml")
    assert f"{old} has a key of its own" in r.stderr


def test_iceberg_table_is_read_at_its_current_snapshot(dump, tmp_path, monkeypatch):
    """A real Iceberg table (pyiceberg, a SQLite catalog): after two appends and an overwrite, the
    audit reads the current snapshot's one data file, not the two the overwrite removed; a
    warehouse folder above the table too; an older metadata file gives its own snapshot.  Without
    pyiceberg every data file is read, and the audit says so."""
    from pyiceberg.catalog.sql import SqlCatalog

    from flowaudit.audit.inputs import parquet_files

    topic = next(p.name for p in sorted((dump["dir"] / "redpanda").iterdir()))
    rows = pq.read_table(dump["dir"] / "redpanda" / topic / "data" / "0.parquet")
    rows = rows.cast(pa.schema([f.remove_metadata() for f in rows.schema]))
    wh = tmp_path / "warehouse"
    wh.mkdir()
    cat = SqlCatalog("port", uri=f"sqlite:///{wh}/catalog.db", warehouse=wh.as_uri())
    cat.create_namespace("redpanda")
    t = cat.create_table(f"redpanda.{topic.replace('.', '_')}", schema=rows.schema)
    t.append(rows.slice(0, 40))
    t.append(rows.slice(40, 30))
    before = t.metadata_location
    t.overwrite(rows.slice(70, 25))
    folder = wh / "redpanda" / topic.replace(".", "_")
    assert len(list((folder / "data").glob("*.parquet"))) == 3

    def offsets(out):
        return sorted(o for d in ("messages", "quarantine") for o in table(out, d).to_pydict().get("offset", []))

    want = rows.column("redpanda").combine_chunks().field("offset").to_pylist()
    for arg, n, out in ((folder, 25, "o1"), (wh, 25, "o2"), (Path(before.removeprefix("file://")), 70, "o3")):
        r = audit(arg, "--out", tmp_path / out)
        assert "an Iceberg table at snapshot" in r.stderr and f": {1 if n == 25 else 2} data file(s)" in r.stderr
        assert offsets(tmp_path / out) == sorted(want[70:95] if n == 25 else want[:70]), arg
        m = orjson.loads((tmp_path / out / "_audit" / "manifest.json").read_bytes())
        assert len(m["tables"]) == 1 and all(i["layout"] == "redpanda" for i in m["inputs"])
    monkeypatch.setitem(sys.modules, "pyiceberg.table", None)        # as if pyiceberg were not installed
    notes: list[str] = []
    assert len(parquet_files(folder, notes)) == 3 and "read without its metadata" in notes[0]


def test_dns_log_lines_that_are_no_record_are_quarantined(dump, tmp_path):
    """A --dns log's lines that are no DNS record (not JSON, not an object, no readable time or
    query) are quarantined with the log file and line as provenance, as the stream quarantines
    such a DNS message; they were skipped in silence.  The log's good lines still name the flows."""
    log = tmp_path / "dns.log"
    bad = [b"\xff\xfe not json", b"[1, 2]", b'{"ts": "yesterday", "query": "gateway.logink.cn"}', b'{"ts": 1}']
    good = dump["dns"].read_bytes().splitlines()
    log.write_bytes(b"\n".join([b"#fields ts query", *bad[:2], *good, *bad[2:]]) + b"\n")
    out = tmp_path / "o"
    r = audit(dump["dir"] / "flows", "--out", out, "--policy", dump["policy"], "--dns", log)
    q = table(out, "quarantine").to_pylist()
    assert [(x["source"], x["partition"], x["offset"], x["format"], x["reason"]) for x in q] == \
        [(str(log), -1, i, "dns", "malformed_json") for i in (1, 2, len(good) + 3, len(good) + 4)]
    assert f"{len(bad)} quarantined" in r.stdout
    assert orjson.loads((out / "_audit" / "manifest.json").read_bytes())["totals"]["quarantined"] == len(bad)
    shown = subprocess.run([sys.executable, "-m", "flowaudit", "quarantine", "show", str(out), str(log), "-1",
                            str(len(good) + 3)], capture_output=True, text=True, env=ENV, timeout=120)
    assert shown.returncode == 0 and "yesterday" in shown.stdout, shown.stderr
    def seen(root):
        return sorted((t["seen_where"], t["platform"], t["indicator"], t["src_addr"] or "", t["dst_addr"] or "")
                      for t in table(root, "transfers").to_pylist())

    clean = tmp_path / "c"
    audit(dump["dir"] / "flows", "--out", clean, "--policy", dump["policy"], "--dns", dump["dns"])
    assert seen(out) == seen(clean) and ("DNS_ANSWER", "LOGINK") in {x[:2] for x in seen(out)}
    assert table(clean, "quarantine").num_rows == 0


def test_dns_logs_as_zeek_writes_them_by_default(dump, tmp_path):
    """--dns reads Zeek's default log format (tab-separated, after its header), gzip-rotated, from
    its dated archive folders (each day's files named alike): the same DNS answers, flows named and
    findings as the JSON log.  Another Zeek log, or a folder without DNS logs, is a usage error."""
    import gzip

    from .test_dnsmap import zeek_ascii

    recs = [orjson.loads(x) for x in dump["dns"].read_bytes().splitlines()]
    half = len(recs) // 2
    logs = tmp_path / "zeek"
    for day, part in (("2026-03-01", recs[:half]), ("2026-03-02", recs[half:])):
        (logs / day).mkdir(parents=True)
        (logs / day / "dns.06:00:00-07:00:00.log.gz").write_bytes(gzip.compress(zeek_ascii(part)))
        (logs / day / "conn.06:00:00-07:00:00.log.gz").write_bytes(gzip.compress(zeek_ascii([], path="conn")))

    def seen(root):
        return sorted((t["seen_where"], t["platform"], t["rule"], t["indicator"], t["src_addr"] or "",
                       t["dst_addr"] or "") for t in table(root, "transfers").to_pylist())

    zeek, clean = tmp_path / "z", tmp_path / "c"
    audit(dump["dir"] / "flows", "--out", zeek, "--policy", dump["policy"], "--dns", logs)
    audit(dump["dir"] / "flows", "--out", clean, "--policy", dump["policy"], "--dns", dump["dns"])
    assert seen(zeek) == seen(clean)
    # the lookup, and the flow named through it
    assert {("DNS_ANSWER", "LOGINK", "dns_lookup"), ("DNS_ANSWER", "LOGINK", "watchlist")} <= {x[:3] for x in seen(zeek)}
    assert table(zeek, "quarantine").num_rows == 0
    assert len(list((zeek / "dataset=transfers").rglob("audit-dns-*"))) == 2     # a file a log, none overwritten
    strip = lambda rows: sorted((r["platform"], r["rule"], r["entity"], r["severity"], r["bytes"], r["flows"])  # noqa: E731
                                for r in rows)
    assert strip(table(zeek, "findings").to_pylist()) == strip(table(clean, "findings").to_pylist())
    # the manifest and the report's coverage name each log read, with its records and time span
    from flowaudit import report

    m = orjson.loads((zeek / "_audit" / "manifest.json").read_bytes())
    assert [(Path(x["path"]).parent.name, x["records"], x["bad"]) for x in m["dns_logs"]] == [
        ("2026-03-01", half, 0), ("2026-03-02", len(recs) - half, 0)]
    first = min(r["ts"] for r in recs)
    assert m["dns_logs"][0]["first"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(first)))
    assert sum(x["watched_answers"] for x in m["dns_logs"]) == sum(1 for x in seen(zeek) if x[2] == "dns_lookup")
    data = report.build(zeek)
    assert data["coverage"]["dns_logs"] == m["dns_logs"]
    assert "DNS logs" in report.render_html(data)
    assert not any("no DNS log was read" in c for c in data["coverage"]["caveats"])
    without = tmp_path / "w"
    audit(dump["dir"] / "flows", "--out", without, "--policy", dump["policy"])
    assert any("no DNS log was read" in c for c in report.build(without)["coverage"]["caveats"])
    for arg, why in ((logs / "2026-03-01" / "conn.06:00:00-07:00:00.log.gz", "conn log, not its dns, ssl or http log"),
                     (dump["wl"], "a folder without DNS, SSL, HTTP or EVE logs")):
        r = audit(dump["dir"] / "flows", "--out", tmp_path / "x", "--policy", dump["policy"], "--dns", arg, check=2)
        assert why in r.stderr and "Traceback" not in r.stderr and not (tmp_path / "x").exists()


def test_flows_named_by_tls_server_names_and_http_hosts(dump, tmp_path):
    """Without a DNS log, Zeek's ssl.log (tab-separated) and http.log (JSON lines) name the flows'
    addresses as the DNS log did: a record per connection to a watchlisted host, with the SNI or the
    Host.  The same flows are attributed (seen TLS_SNI / HTTP_HOST, not DNS_ANSWER), the same
    findings follow, and the connections are name_seen rows, no findings by themselves."""
    from .test_dnsmap import seen_line, zeek_ascii

    names = {}
    for x in dump["dns"].read_bytes().splitlines():
        r = orjson.loads(x)
        names.update((a, r["query"]) for a in r["answers"])
    ssl, http = [], []
    used = sorted({f[1] for f in dump["sc"].flows} & set(names))
    for src, dst, _sp, dport, _p, _b, first_ns, _s in dump["sc"].flows:
        if dst in names:        # a connection record for each flow to a named address, at its start
            h = used.index(dst) % 2      # one address's connections over HTTP, the other's over TLS
            rec = orjson.loads(seen_line(first_ns / 1e9, names[dst], dst, "http_host" if h else "tls_sni",
                                         **{"id.orig_h": src, "id.resp_p": dport}))
            (http if h else ssl).append(rec)
    assert ssl and http
    logs = tmp_path / "zeek"
    logs.mkdir()
    (logs / "ssl.log").write_bytes(zeek_ascii(ssl, "ssl"))
    (logs / "http.log").write_bytes(b"\n".join(map(orjson.dumps, http)) + b"\n")

    def seen(root, rule):
        return sorted((t["platform"], t["indicator"], t["src_addr"], t["dst_addr"], t["bytes"], t["seen_where"])
                      for t in table(root, "transfers").to_pylist() if t["rule"] == rule)

    zeek, clean = tmp_path / "z", tmp_path / "c"
    audit(dump["dir"] / "flows", "--out", zeek, "--policy", dump["policy"], "--dns", logs)
    audit(dump["dir"] / "flows", "--out", clean, "--policy", dump["policy"], "--dns", dump["dns"])
    flows = seen(zeek, "watchlist")
    assert {x[-1] for x in flows} == {"TLS_SNI", "HTTP_HOST"}
    assert [x[:-1] for x in flows] == [x[:-1] for x in seen(clean, "watchlist")] and flows
    # a row per connection that named a watched host (notlogink.cn and the like are not)
    watched = [r for r in ssl + http if r.get("server_name", r.get("host")) in ("gateway.logink.cn", "english.neal-net.net")]
    assert len(seen(zeek, "name_seen")) == len(watched) < len(ssl) + len(http) and not seen(zeek, "dns_lookup")
    strip = lambda rows: sorted((r["platform"], r["rule"], r["entity"], r["severity"], r["bytes"], r["flows"])  # noqa: E731
                                for r in rows)
    assert strip(table(zeek, "findings").to_pylist()) == strip(table(clean, "findings").to_pylist())
    m = orjson.loads((zeek / "_audit" / "manifest.json").read_bytes())
    assert sorted((Path(x["path"]).name, x["records"], x["bad"]) for x in m["dns_logs"]) == [
        ("http.log", len(http), 0), ("ssl.log", len(ssl), 0)]
    from flowaudit import report

    data = report.build(zeek)
    v = {x["name"]: x for x in data["verdicts"] if x["kind"] == "platform"}
    assert v["LOGINK"]["names_seen"] > 0 and v["LOGINK"]["dns_lookups"] == 0
    assert "named it by TLS server name or HTTP Host" in report.render_html(data)


def test_map_syntax_errors_are_named():
    """--map: a name without a column, a name mapped twice, a part without '=' and an unknown name
    are usage errors (the first two were read as a map no input fits, or the last one silently won)."""
    from flowaudit.audit.inputs import InputError, parse_map

    assert parse_map(" value=body , time=meta.at_ms,, value=body") == {"value": "body", "time": "meta.at_ms"}
    for text, why in (("value=", "no column"), ("value=a,value=b", "value is mapped twice (a, b)"),
                      ("nonsense", "expected NAME=COLUMN"), ("=x", "unknown name ''"), ("colour=x", "unknown name")):
        with pytest.raises(InputError, match=re.escape(why)):
            parse_map(text)


def test_iceberg_metadata_file_by_hint_or_highest_version(tmp_path):
    """The metadata file an Iceberg folder is read by: the one version-hint.text names, else the
    highest-numbered; a hint that names no file, or is not text, falls back (it was a traceback)."""
    from flowaudit.audit.inputs import iceberg_metadata

    md = tmp_path / "t" / "metadata"
    md.mkdir(parents=True)
    for v in (1, 2, 10):
        (md / f"v{v}.metadata.json").write_text("{}")
    assert iceberg_metadata(tmp_path / "t") == md / "v10.metadata.json"
    for hint, want in ((b"2\n", "v2"), (b"9", "v10"), (b"\xff\xfe\x00", "v10"), (b"../../v1", "v10"), (b"", "v10")):
        (md / "version-hint.text").write_bytes(hint)
        assert iceberg_metadata(tmp_path / "t") == md / f"{want}.metadata.json", hint
    assert iceberg_metadata(md / "v1.metadata.json") == md / "v1.metadata.json"
    assert iceberg_metadata(tmp_path) is None


def test_delta_table_is_read_at_its_current_version(dump, tmp_path):
    """A Delta log (protocol: _delta_log/NNN.json add/remove actions, a parquet checkpoint) decides
    which files are read: the file a later commit removed is not."""
    import json

    t = tmp_path / "delta"
    (t / "_delta_log").mkdir(parents=True)
    src = dump["dir"] / "flat" / "topic=port.xml" / "part-0.parquet"
    old = pq.read_table(src).append_column("topic", pa.array(["port.xml"] * pq.read_metadata(src).num_rows))
    pq.write_table(old.slice(0, 50), t / "part-old.parquet")
    pq.write_table(old, t / "part-new.parquet")
    pq.write_table(pa.table({"add": pa.array([{"path": "part-old.parquet", "size": 1}, None])}),
                   t / "_delta_log" / f"{0:020d}.checkpoint.parquet")
    (t / "_delta_log" / "_last_checkpoint").write_text(json.dumps({"version": 0, "size": 2}))
    (t / "_delta_log" / f"{1:020d}.json").write_text(
        json.dumps({"remove": {"path": "part-old.parquet", "dataChange": True}}) + "\n"
        + json.dumps({"add": {"path": "part-new.parquet", "size": 1, "dataChange": True}}) + "\n")
    audit(t, "--out", tmp_path / "o", *std_args(dump))
    m = orjson.loads((tmp_path / "o" / "_audit" / "manifest.json").read_bytes())
    assert [Path(i["path"]).name for i in m["inputs"]] == ["part-new.parquet"]
    assert table(tmp_path / "o", "messages").num_rows + table(tmp_path / "o", "quarantine").num_rows == old.num_rows
    # an absolute file: URI is the file it names
    from flowaudit.audit.inputs import InputError, delta_files

    (t / "_delta_log" / f"{2:020d}.json").write_text(json.dumps({"add": {"path": (t / "part-old.parquet").as_uri()}}))
    assert sorted(delta_files(t)) == [t / "part-new.parquet", t / "part-old.parquet"]
    # a log that cannot be read names its file and line, in one line (they were tracebacks)
    for bad, why in ((b"\xff\xfe{", "line 1"), (b'{"add": 5}', "line 1"), (b'\n{"remove": {}}', "line 2"),
                     (b'{"add": {"path": 7}}', "add without a path"),
                     (b'{"add": {"path": "s3://port-archive/t/part-1.parquet"}}', "not on this machine")):
        (t / "_delta_log" / f"{3:020d}.json").write_bytes(bad)
        with pytest.raises(InputError, match=why):
            delta_files(t)
    r = audit(t, "--out", tmp_path / "bad", check=2)            # the command: one line, exit 2
    assert r.stderr.count("\n") == 1 and "not on this machine" in r.stderr, r.stderr
    (t / "_delta_log" / f"{3:020d}.json").unlink()
    (t / "_delta_log" / "_last_checkpoint").write_bytes(b"\x00\x01")
    with pytest.raises(InputError, match="not a Delta checkpoint pointer"):
        delta_files(t)


def test_chunked_correlation_equals_one_call(dump, tmp_path):
    """The audit reads evidence a chunk of event time at a time (bounded memory); its findings
    equal one correlate call over the whole root, statuses across chunk boundaries included, on
    one thread or several."""
    from flowaudit.detect.chunked import correlate_chunked
    from flowaudit.detect import findings as F
    from flowaudit.detect.inventory import load as load_inventory

    out = tmp_path / "o"
    audit(dump["dir"] / "flat", dump["dir"] / "flows", "--out", out, *std_args(dump))
    inv = load_inventory(dump["policy"])
    for window_s, chunk_s, lookback_s in ((300, 600, 0), (300, 300, 600), (60, 900, 120)):
        kw = dict(window_ns=window_s * 10**9, lookback_ns=lookback_s * 10**9, inventory=inv)
        one = F.correlate_root(out, **kw)
        assert one.num_rows > 9 and set(one.column("status").to_pylist()) >= {"new", "closed"}
        b = one.to_pylist()
        for threads in (1, 3):   # chunks assessed side by side, statuses chained in order
            a = correlate_chunked(out, chunk_ns=chunk_s * 10**9, threads=threads, **kw).to_pylist()
            diff = [(x["finding_id"], {k: (x[k], y[k]) for k in x if x[k] != y[k]}) for x, y in zip(a, b) if x != y]
            assert len(a) == len(b) and not diff, (window_s, chunk_s, threads, diff[:3])


def test_without_flows_the_chunks_read_only_the_exposing_messages_hits(dump, tmp_path):
    """With no transfer that can make a flow-borne finding, a chunk's evidence is the exposing
    messages' own hits: the reader decodes the rest of a row group only where one of them is,
    hands on just their rows, the chunks are assessed together, and the findings equal one call
    over every hit.  A finding names the catalogue versions of its own evidence: other hits of an
    older catalogue change nothing and are never read; its own hits under another version show in
    it, read the same way."""
    import pyarrow.compute as pc

    from flowaudit.detect import chunked as C
    from flowaudit.detect import findings as F
    from flowaudit.detect.inventory import load as load_inventory
    from flowaudit.detect.windows import exposing, only_mask

    out = tmp_path / "o"
    audit(dump["dir"] / "flat", "--out", out, *std_args(dump))
    kw = dict(window_ns=300 * 10**9, inventory=load_inventory(dump["policy"]))
    sizes = []
    assessed = F.assessed

    def spy(transfers, hits, *a, **k):
        sizes.append(0 if hits is None else hits.num_rows)
        return assessed(transfers, hits, *a, **k)

    def chunked():
        sizes.clear()
        F.assessed = spy
        try:
            return C.correlate_chunked(out, **kw).to_pylist()
        finally:
            F.assessed = assessed

    got = chunked()
    one = F.correlate_root(out, **kw).to_pylist()
    assert got == one and any(r["correlation"] == "message_borne" and r["occurrences"] for r in got)
    # the windows' small evidence is assessed in one call, not one call per window
    assert len(sizes) == 1 and len({r["window_start_ns"] for r in got}) > 1
    hits = table(out, "hits")
    assert 0 < sum(sizes) <= sum(r["occurrences"] for r in got) < hits.num_rows // 4
    # a window whose exposing messages hold no hits decodes no group's other columns (here the
    # footers rule every group out)
    ts = hits.column("ts_ms").to_numpy()
    reader = C.WindowReader(out / "dataset=hits", F._H_COLS, {"port.json", "port.xml", "port.edifact", "port.x12"})
    assert reader.read(int(ts.min()), int(ts.max()) + 1, {"port.json+0": np.array([10**9])}) is None
    assert all(g.whole is None for g in reader.kept.values())

    # one hits file whose other rows came from an older catalogue, then its exposing rows too
    exp = exposing(table(out, "transfers"))
    path = max((out / "dataset=hits").rglob("*.parquet"), key=lambda p: pq.read_metadata(p).num_rows)
    t = pq.read_table(path)
    mine = only_mask(t, exp)
    assert mine.any() and not mine.all()
    versions = {r["finding_id"]: r["catalog_version"] for r in got}
    i = t.schema.get_field_index("catalog_version")
    for older in (~mine, np.ones(len(mine), bool)):
        cv = [v if not o else "c-older" for v, o in zip(pc.cast(t.column("catalog_version"), pa.string()).to_pylist(),
                                                      older)]
        pq.write_table(t.set_column(i, t.schema.field(i), pa.array(cv).dictionary_encode()), path)
        got, one = chunked(), F.correlate_root(out, **kw).to_pylist()
        assert got == one and sum(sizes) <= sum(r["occurrences"] for r in got)   # only the exposing hits read
        named = [r for r in got if "c-older" in (r["catalog_version"] or "")]
        assert bool(named) == older.all()
        assert all(r["catalog_version"] == versions[r["finding_id"]] for r in got if r not in named)


def test_the_findings_reader_leaves_row_groups_its_footers_rule_out_unread(dump, tmp_path, monkeypatch):
    """Reading only some messages' hits, a row group whose footer statistics (topic, partition and
    offset ranges) rule them all out is not read at all; a group without those statistics has
    its key columns read, and nothing more.  The rows equal a full read, filtered."""
    import pyarrow.compute as pc

    from flowaudit.detect import chunked as C
    from flowaudit.detect import findings as F
    from flowaudit.detect.windows import exposing, only_mask

    out = tmp_path / "o"
    audit(dump["dir"] / "flat", "--out", out, *std_args(dump))
    base = out / "dataset=hits"
    hits = table(out, "hits")
    topics = set(pc.unique(hits.column("source").cast(pa.string())).to_pylist())
    assert len(topics) == 4 and len(list(base.rglob("*.parquet"))) == 4      # one topic a file
    only = {k: v for k, v in exposing(table(out, "transfers")).items() if k.startswith("port.json+")}
    assert only
    ts = hits.column("ts_ms").to_numpy()
    lo, hi = int(ts.min()), int(ts.max()) + 1
    reads = []
    orig = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, **kw):
        t = orig(self, i, columns=columns, **kw)
        reads.append((",".join(sorted(pc.unique(t.column("source").cast(pa.string())).to_pylist())),
                      "value_hmac" in (columns or [])))       # (its topics, every column or the keys)
        return t

    def rows(t):
        return sorted(zip(*(t.column(c).cast(pa.string()).to_pylist() if c == "source" else t.column(c).to_pylist()
                            for c in ("source", "partition", "offset", "byte_start", "data_class"))))

    def read(want):
        reads.clear()
        return C.WindowReader(base, F._H_COLS, topics).read(lo, hi, want)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    got = read(only)
    assert rows(got) == rows(hits.filter(pa.array(only_mask(hits, only))))
    assert sorted(reads) == [("port.json", False), ("port.json", True)]
    assert read({"port.json+0": np.array([10**9])}) is None and reads == []   # beyond every offset range

    # the XML file written without statistics (another writer): its key columns are read to rule it out
    path = next(p for p in base.rglob("*.parquet")
                if pq.read_table(p, columns=["source"]).column("source")[0].as_py() == "port.xml")
    t = pq.read_table(path)
    pq.write_table(t, path, write_statistics=False)
    assert pq.read_metadata(path).row_group(0).column(t.schema.get_field_index("offset")).statistics is None
    got = read(only)
    assert rows(got) == rows(hits.filter(pa.array(only_mask(hits, only))))
    assert sorted(reads) == [("port.json", False), ("port.json", True), ("port.xml", False)]


def test_a_flow_without_an_address_is_quarantined_not_a_crash(tmp_path):
    """goflow2 rows with malformed address bytes (not 4 or 16) crashed the whole audit (a
    traceback, exit 1).  A row with one usable side is kept ('' on the other, as the decoders
    write it); a row with neither is quarantined as the stream quarantines such a goflow2 message
    (no_usable_address), its archive row sealed as JSON with its file and row."""
    t0 = 1_772_341_200_000_000_000
    a, b = bytes([10, 40, 1, 5]), bytes([198, 18, 0, 9])
    rows = [(a, b), (b"\x01\x02\x03", b), (b"", b""), (a, None)]
    d = tmp_path / "goflow2"
    d.mkdir()
    n = len(rows)
    pq.write_table(pa.table({
        "type": ["IPFIX"] * n, "time_received_ns": pa.array([t0 + 10**9] * n, pa.uint64()),
        "sampling_rate": pa.array([1] * n, pa.uint64()), "sampler_address": pa.array([bytes([10, 255, 0, 1])] * n),
        "time_flow_start_ns": pa.array([t0 + i for i in range(n)], pa.uint64()),
        "time_flow_end_ns": pa.array([t0 + 10**9] * n, pa.uint64()), "bytes": pa.array([100 + i for i in range(n)],
                                                                                      pa.uint64()),
        "packets": pa.array([1] * n, pa.uint64()), "src_addr": pa.array([s for s, _ in rows], pa.binary()),
        "dst_addr": pa.array([x for _, x in rows], pa.binary()), "proto": pa.array([6] * n, pa.uint32()),
        "src_port": pa.array([40000] * n, pa.uint32()), "dst_port": pa.array([443] * n, pa.uint32())}),
        d / "g.parquet")
    out = tmp_path / "out"
    r = audit(d, "--out", out)
    assert "3 flows" in r.stdout and "1 quarantined" in r.stdout
    flows = sorted((f["offset"], f["src_addr"], f["dst_addr"]) for f in table(out, "flows").to_pylist())
    assert flows == [(0, "10.40.1.5", "198.18.0.9"), (1, "", "198.18.0.9"), (3, "10.40.1.5", "")]
    q = table(out, "quarantine").to_pylist()
    assert [(x["source"], x["offset"], x["reason"], x["format"]) for x in q] == [
        (str(d / "g.parquet"), 2, "no_usable_address", "goflow")]
    s = subprocess.run([sys.executable, "-m", "flowaudit", "quarantine", "show", str(out), str(d / "g.parquet"),
                        "-1", "2", "--raw-out", str(tmp_path / "row.json")], capture_output=True, text=True, env=ENV,
                       timeout=60)
    assert s.returncode == 0, s.stderr
    row = orjson.loads((tmp_path / "row.json").read_bytes())
    assert (row["src_addr"], row["dst_addr"], row["bytes"]) == ("", "", 102)
    m = orjson.loads((out / "_audit" / "manifest.json").read_bytes())
    assert m["totals"]["rows"] == n and m["totals"]["quarantined"] == 1 and m["totals"]["flows"] == 3


def test_a_units_rows_of_one_hour_are_a_slice_where_they_run_and_equal_a_gather():
    """write_tables files a unit's rows per record hour: one run of rows is taken as a slice
    (no copy), scattered rows by a gather; both give the same rows and dictionaries."""
    from flowaudit.audit.work import _rows

    t = pa.table({"n": pa.array(np.arange(10)), "d": pa.array(["x", "y", "z", "x", "y"] * 2).dictionary_encode()})
    for idx in (np.arange(3, 7), np.array([0, 2, 5]), np.array([9]), np.arange(10)):
        got, want = _rows(t, idx), t.take(pa.array(idx))
        assert got.equals(want)
        assert got.column("d").chunk(0).dictionary.equals(want.column("d").chunk(0).dictionary)


# ------------------------------------------------------------------------------ synth --dump, ~50k messages
@pytest.fixture(scope="module")
def synth_dump(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthdump") / "dump"
    labels = synth.write_dump(root, 50_000, seed=21, files=3, row_group_rows=4096)
    return root, labels


def _labelled_windows(labels: dict, window_ns: int) -> dict:
    want: dict = {}
    for e in labels["exposures"]:
        for w in e["windows"]:
            k = (e["platform"], e["rule"], e["entity"], w["start_ns"] // window_ns * window_ns)
            want.setdefault(k, (e, set()))[1].update(w["classes"])
    return want


@pytest.mark.parametrize("layouts", [("flat", "flows"), ("redpanda", "goflow2")])
def test_synth_dump_every_labelled_exposure_window_and_nothing_else(synth_dump, tmp_path, layouts):
    root, labels = synth_dump
    out = tmp_path / "out"
    audit(*(root / x for x in layouts), "--out", out, "--policy", root / "policy.toml", "--watchlist-dir",
          root / "watchlist", "--dns", root / "dns" / "dns.log", "--window", str(labels["window_s"]))
    W = labels["window_s"] * 1_000_000_000
    got = {(r["platform"], r["rule"], r["entity"], r["window_start_ns"]): r
           for r in table(out, "findings").to_pylist()}
    want = _labelled_windows(labels, W)
    assert set(got) == set(want), (set(want) - set(got), set(got) - set(want))
    for k, (e, classes) in want.items():
        f = got[k]
        assert (f["severity"], f["correlation"], f["exposure"]) == (e["severity"], e["correlation"], e["exposure"]), k
        assert classes <= {c["data_class"] for c in f["data_classes"]}, k
    # the report's and `findings --episodes`' grouping: one episode per labelled exposure (the
    # tracking gateway's polling, a finding in each of dozens of windows, is one)
    from flowaudit.report.data import episodes_of

    key = ("platform", "rule", "entity", "exposure", "severity")
    eps = episodes_of(table(out, "findings"))
    assert sorted(tuple(e[k] for k in key) for e in eps) == sorted(tuple(e[k] for k in key)
                                                                    for e in labels["exposures"])
    assert max(e["windows"] for e in eps) > 10
    m = orjson.loads((out / "_audit" / "manifest.json").read_bytes())
    q = table(out, "quarantine").num_rows
    assert q == sum(labels["counts"]["quarantine"].values())
    assert table(out, "messages").num_rows + q == labels["counts"]["messages"]
    assert table(out, "flows").num_rows == labels["counts"]["flows"]
    assert {i["layout"] for i in m["inputs"]} == set(layouts)
