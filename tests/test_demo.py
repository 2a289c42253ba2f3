"""``flowaudit demo`` as the README's quick start runs it, twice in a row into one folder: each run
starts a new embedded broker (memory storage), so the second must start from an empty root, not
stop on the first run's files as on a rewritten log."""
from __future__ import annotations

import subprocess
import sys

import pyarrow.dataset as pads

COUNT = 600


def demo(out, *args):
    return subprocess.run([sys.executable, "-m", "flowaudit", "demo", "--count", str(COUNT), "--partitions", "1",
                           "--metrics-port", "0", "--out", str(out), *args], capture_output=True, text=True,
                          timeout=300)


def stored(out) -> int:
    n = 0
    for name in ("messages", "quarantine"):
        d = out / f"dataset={name}"
        if d.is_dir():
            n += pads.dataset(d, format="parquet", partitioning="hive").count_rows()
    return n


def test_a_second_demo_run_into_the_same_folder_starts_afresh(tmp_path):
    out = tmp_path / "demo-out"
    first = demo(out)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "STOPPED" not in first.stdout and stored(out) == COUNT and (out / ".flowaudit-demo").is_file()
    second = demo(out)
    # it stopped on "the log was rewritten" with exit 0 before, its stored rows those of the first run
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "the previous demo's files cleared" in second.stdout and "STOPPED" not in second.stdout
    assert stored(out) == COUNT and f"  messages        {COUNT}\n" in second.stdout
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("not the demo's")
    r = demo(other)
    assert r.returncode == 2 and "not marked as the demo's own" in r.stderr and (other / "notes.txt").exists()
    r = demo(other / "notes.txt")                   # a file: refused as well (it was a traceback)
    assert r.returncode == 2 and "is a file" in r.stderr and "Traceback" not in r.stderr
