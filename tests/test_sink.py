"""The Parquet sink: naming, rotation, atomic publish, recovery after a crash."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowaudit import quarantine
from flowaudit.datasets import MESSAGES
from flowaudit.protect import Protector
from flowaudit.sinks.parquet import (PartitionWriter, SinkError, committed_files, file_name, hour_keys,
                                     parse_name, read_dataset)

HOUR = 3_600_000
T0 = 1_772_323_200_000  # 2026-03-01T00:00:00Z
PROTECTOR = Protector(b"sink-test-key-0123456789")


def _messages(offsets, ts):
    n = len(offsets)
    d = lambda v: pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([v]))  # noqa: E731
    cols = [d("t"), pa.array(np.zeros(n, np.int32)), pa.array(offsets, pa.int64()), pa.array(ts, pa.int64()),
            *PROTECTOR.key_columns([b"k"] * n), d("edifact"), d("BAPLIE"), pa.array(np.ones(n, np.int32)),
            pa.array(np.ones(n, np.int32)), pa.array(np.zeros(n, np.int32)),
            pa.array([[]] * n, pa.list_(pa.string())), d("0"), d("1")]
    return pa.Table.from_arrays(cols, schema=MESSAGES)


def _quarantine(offsets, ts):
    n = len(offsets)
    d = lambda v: pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([v]))  # noqa: E731
    prov = [d("t"), pa.array(np.zeros(n, np.int32)), pa.array(offsets, pa.int64()), pa.array(ts, pa.int64())]
    return quarantine.table(PROTECTOR, prov, [None] * n, [b"{"] * n, d("json"), d("malformed_json"))


def _add(w, offsets, ts, bad=()):
    offsets = np.asarray(offsets, np.int64)
    ts = np.asarray(ts, np.int64)
    good = np.array([o not in bad for o in offsets], bool)
    tables = {"messages": (_messages(offsets[good], ts[good]), offsets[good])}
    if (~good).any():
        tables["quarantine"] = (_quarantine(offsets[~good], ts[~good]), offsets[~good])
    return w.add(offsets, ts, tables)


def test_names_round_trip():
    name = file_name("port.edifact", 2, 17, 4711)
    assert name == "port.edifact+2+00000000000000000017+00000000000000004711.parquet"
    assert parse_name(name) == ("port.edifact", 2, 17, 4711, 0)
    assert parse_name(".port.edifact+2+1+2.parquet.tmp-1") is None
    e2 = file_name("port.edifact", 2, 17, 4711, epoch=2)
    assert e2 == "port.edifact+2+00000000000000000017+00000000000000004711+e2.parquet"
    assert parse_name(e2) == ("port.edifact", 2, 17, 4711, 2)
    assert parse_name("t+0+00000000000000000001+00000000000000000002+e0.parquet") is None  # epoch 0 has no suffix


def test_hour_keys_bad_timestamps_never_drive_rotation():
    ts = np.array([T0, -1, T0 + 2 * HOUR, 9_999_999_999_999_999, T0 + 3 * HOUR], np.int64)
    keys = hour_keys(ts, current=5)
    assert keys.tolist() == [T0 // HOUR, T0 // HOUR, T0 // HOUR + 2, T0 // HOUR + 2, T0 // HOUR + 3]
    assert hour_keys(np.array([-1, -1], np.int64), current=5).tolist() == [5, 5]


def test_rotation_by_count_and_hour(tmp_path):
    w = PartitionWriter(tmp_path, "t", 0, rotate_records=4)
    published = _add(w, range(10), [T0] * 10)
    assert published == [3, 7]
    assert w.buffered == 2
    # an hour boundary closes the open file set even before it is full
    published = _add(w, [10, 11], [T0 + HOUR, T0 + HOUR])
    assert published == [9]
    assert w.flush() == 11
    files = committed_files(tmp_path, "messages", "t", 0)
    assert [(f, l) for f, l, _ in files] == [(0, 3), (4, 7), (8, 9), (10, 11)]
    assert "date=2026-03-01/hour=00" in str(files[0][2]) and "hour=01" in str(files[-1][2])
    table = read_dataset(tmp_path, "messages")
    assert sorted(table.column("offset").to_pylist()) == list(range(12))


def test_quarantine_and_messages_share_the_offset_range(tmp_path):
    w = PartitionWriter(tmp_path, "t", 0, rotate_records=100)
    _add(w, range(6), [T0] * 6, bad={2, 5})
    assert w.flush() == 5
    m = read_dataset(tmp_path, "messages").column("offset").to_pylist()
    q = read_dataset(tmp_path, "quarantine").column("offset").to_pylist()
    assert sorted(m + q) == list(range(6)) and set(m).isdisjoint(q)
    qf = committed_files(tmp_path, "quarantine", "t", 0)
    mf = committed_files(tmp_path, "messages", "t", 0)
    assert [p.name for *_, p in qf] == [p.name for *_, p in mf]


def test_recover_resumes_after_last_commit_and_removes_orphans_and_temps(tmp_path):
    w = PartitionWriter(tmp_path, "t", 0, rotate_records=3)
    _add(w, range(6), [T0] * 6, bad={4})
    assert committed_files(tmp_path, "messages", "t", 0)[-1][1] == 5
    # simulate a crash between publishing quarantine and the messages commit record
    mf = committed_files(tmp_path, "messages", "t", 0)[-1][2]
    mf.unlink()
    d = mf.parent
    (d / ".t+0+00000000000000000006+00000000000000000008.parquet.tmp-999").write_bytes(b"PAR1partial")
    w2 = PartitionWriter(tmp_path, "t", 0, rotate_records=3)
    assert w2.recover() == 3
    assert [p.name for *_, p in committed_files(tmp_path, "quarantine", "t", 0)] == []  # orphan gone
    assert not any(p.name.startswith(".") for p in d.iterdir())
    # the partition replays from offset 3 and ends identical to an uninterrupted run
    _add(w2, range(3, 6), [T0] * 3, bad={4})
    assert sorted(read_dataset(tmp_path, "messages").column("offset").to_pylist()) == [0, 1, 2, 3, 5]
    assert read_dataset(tmp_path, "quarantine").column("offset").to_pylist() == [4]


def test_redelivered_offsets_are_not_written_twice(tmp_path):
    w = PartitionWriter(tmp_path, "t", 0, rotate_records=2)
    _add(w, range(4), [T0] * 4)
    assert w.next_offset == 4
    _add(w, range(2, 6), [T0] * 4)   # 2 and 3 are already durable
    w.flush()
    assert sorted(read_dataset(tmp_path, "messages").column("offset").to_pylist()) == list(range(6))


def test_never_overwrites_a_committed_file(tmp_path):
    w = PartitionWriter(tmp_path, "t", 0, rotate_records=2)
    _add(w, [0, 1], [T0, T0])
    w2 = PartitionWriter(tmp_path, "t", 0, rotate_records=2)  # a zombie that did not recover
    with pytest.raises(SinkError):
        _add(w2, [0, 1], [T0, T0])
    # the temp file of the refused publish is gone, the committed file intact
    files = committed_files(tmp_path, "messages", "t", 0)
    assert len(files) == 1 and pq.read_metadata(files[0][2]).num_rows == 2
    assert not any(n.startswith(".") for n in os.listdir(files[0][2].parent))


def test_recover_refuses_a_file_with_more_rows_than_its_range(tmp_path):
    w = PartitionWriter(tmp_path, "t", 0, rotate_records=10)
    _add(w, range(3), [T0] * 3)
    w.flush()
    f = committed_files(tmp_path, "messages", "t", 0)[0][2]
    bad = f.with_name(file_name("t", 0, 3, 3))
    pq.write_table(_messages(np.arange(5), np.full(5, T0)), bad)
    with pytest.raises(SinkError):
        PartitionWriter(tmp_path, "t", 0).recover()


def test_files_and_folders_are_not_world_readable(tmp_path):
    old = os.umask(0o000)   # the most permissive umask: modes must still come out 0640 / 0750
    try:
        w = PartitionWriter(tmp_path / "root", "t", 0, rotate_records=2)
        _add(w, [0, 1], [T0, T0], bad={1})
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "root").rglob("*") if p.is_file()]
    dirs = [p for p in (tmp_path / "root").rglob("*") if p.is_dir()]
    assert files and dirs
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o640)}
    assert {oct(p.stat().st_mode & 0o777) for p in dirs} == {oct(0o750)}


def test_a_new_epoch_never_collides_with_the_old_files(tmp_path):
    w = PartitionWriter(tmp_path, "t", 0, rotate_records=3)
    _add(w, range(3), [T0] * 3)          # epoch 0: offsets 0..2
    assert w.recover() == 3 and w.epoch == 0
    w.start_epoch(resume=0)              # the topic was recreated: its offsets start again at 0
    _add(w, range(3), [T0 + 1] * 3)
    names = [p.name for *_, p in committed_files(tmp_path, "messages", "t", 0)]   # epoch order
    assert names == [file_name("t", 0, 0, 2), file_name("t", 0, 0, 2, epoch=1)]
    # recovery resumes in the newest epoch, with the fingerprint of its last message
    w2 = PartitionWriter(tmp_path, "t", 0, rotate_records=3)
    assert w2.recover() == 3 and w2.epoch == 1 and w2.fingerprint == (T0 + 1, -1)
    assert sorted(read_dataset(tmp_path, "messages").column("offset").to_pylist()) == [0, 0, 1, 1, 2, 2]


def test_fingerprint_of_the_last_message_is_in_the_footer(tmp_path):
    w = PartitionWriter(tmp_path, "t", 0, rotate_records=3)
    offsets = np.arange(3, dtype=np.int64)
    ts = np.array([T0, T0 + 5, T0 + 9], np.int64)
    w.add(offsets, ts, {"messages": (_messages(offsets, ts), offsets)}, sizes=np.array([10, 20, 30]))
    assert w.fingerprint == (T0 + 9, 30)
    w2 = PartitionWriter(tmp_path, "t", 0)
    assert w2.recover() == 3 and w2.fingerprint == (T0 + 9, 30)


def test_disk_full_keeps_the_rows_and_the_retry_publishes_the_same_set(small_tmpfs):
    """A real ENOSPC on a small tmpfs: the rows stay buffered, on_fault is asked, and once space
    is freed the retry publishes the same file set; nothing half-written stays behind."""
    import errno as _errno

    filler = small_tmpfs / "filler"
    with open(filler, "wb") as f:       # fill the file system to the last block
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == _errno.ENOSPC
    calls = []

    def on_fault(exc, attempt):
        calls.append((exc.errno, attempt))
        if attempt == 2:
            filler.unlink()             # the operator frees space
        return attempt < 5

    root = small_tmpfs / "root"
    w = PartitionWriter(root, "t", 0, rotate_records=3, on_fault=on_fault)
    published = _add(w, range(3), [T0] * 3, bad={1})
    assert published == [2]
    assert calls[0] == (_errno.ENOSPC, 1) and [a for _, a in calls] == [1, 2]
    assert sorted(read_dataset(root, "messages").column("offset").to_pylist()) == [0, 2]
    assert read_dataset(root, "quarantine").column("offset").to_pylist() == [1]
    assert not [p for p in root.rglob(".*") if p.is_file()]
    # giving up raises PublishAborted and keeps the rows for the next owner to re-read
    from flowaudit.sinks.parquet import PublishAborted
    with open(small_tmpfs / "filler2", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    w.on_fault = lambda exc, attempt: False
    with pytest.raises(PublishAborted):
        _add(w, range(3, 6), [T0] * 3)
    assert w.buffered == 3


def test_partition_lock_fences_a_second_writer(tmp_path):
    from flowaudit.sinks.parquet import PartitionLock

    a, b = PartitionLock(tmp_path, "t", 3), PartitionLock(tmp_path, "t", 3)
    assert a.try_acquire() and a.held
    assert not b.try_acquire()
    assert a.holder().startswith(f"{os.getpid()}@")
    a.release()
    assert b.try_acquire()
    b.release()


def test_a_writer_that_dropped_rows_takes_no_more_until_it_recovers(tmp_path):
    """Rows discarded (a revoked partition, an abandoned publish) are re-read from Kafka; a later
    file set must never be published past them, which would leave a gap."""
    w = PartitionWriter(tmp_path, "t", 0, rotate_records=10)
    _add(w, range(3), [T0] * 3)
    w.discard()
    with pytest.raises(SinkError):
        _add(w, range(3, 6), [T0] * 3)
    assert w.recover() is None          # nothing durable: the owner re-reads from offset 0
    _add(w, range(6), [T0] * 6)
    w.flush()
    assert sorted(read_dataset(tmp_path, "messages").column("offset").to_pylist()) == list(range(6))


def test_a_page_damaged_on_disk_is_found_by_its_checksum(tmp_path):
    """Every page carries its CRC32: a flipped byte in an uncompressed page (sink.compression =
    "none") reads back as another value without an error, and `unreadable(whole=True)` (the
    readers' error path) names the file by its checksum."""
    from flowaudit.sinks.parquet import _write_durable, unreadable

    t = pa.table({"v": pa.array(np.random.default_rng(1).random(50_000))})
    f = tmp_path / "x.parquet"
    _write_durable(t, f, "none", 65536)
    col = pq.read_metadata(f).row_group(0).column(0)
    raw = bytearray(f.read_bytes())
    raw[col.dictionary_page_offset + 1000] ^= 0x40        # a byte of one of the (plain) dictionary's values
    f.write_bytes(bytes(raw))
    got = pq.read_table(f)                  # no error: a wrong value, in silence
    assert got.num_rows == t.num_rows and not got.equals(t)
    (why,) = [w for p, w in unreadable([f], whole=True) if p == str(f)]
    assert "CRC" in why or "checksum" in why.lower(), why
    assert unreadable([f]) == []            # (its footer opens)


def test_verify_names_damaged_duplicated_and_uncommitted_files(tmp_path, capsys):
    """`flowaudit verify ROOT`: a root the writer made is intact (exit 0); a page damaged on disk,
    a set copied under an overlapping range (offsets stored twice), a set with more rows than
    offsets and a file without its committing messages file are each named, and the first three
    make it not intact (exit 1); a crash's temporary file is counted."""
    import json
    import shutil

    from flowaudit.cli import main

    w = PartitionWriter(tmp_path, "t", 0, rotate_records=4)
    assert _add(w, range(12), [T0] * 12, bad={2, 9}) == [3, 7, 11]
    assert main(["verify", str(tmp_path)]) == 0
    assert "-> intact" in capsys.readouterr().out
    files = {d: [p for *_, p in committed_files(tmp_path, d, "t", 0)] for d in ("messages", "quarantine")}
    # offsets 4..7 stored again under 6..9, overlapping the set 8..11; 0..3 given a range too short
    shutil.copy(files["messages"][1], files["messages"][1].with_name(file_name("t", 0, 6, 9)))
    files["messages"][0].rename(files["messages"][0].with_name(file_name("t", 0, 0, 1)))
    files["quarantine"][0].rename(files["quarantine"][0].with_name(file_name("t", 0, 0, 1)))
    orphan = files["quarantine"][1].with_name(file_name("t", 0, 12, 15))
    shutil.copy(files["quarantine"][1], orphan)
    (files["messages"][2].parent / ".x.parquet.tmp-1").write_bytes(b"partial")
    victim = files["messages"][2]
    md = pq.read_metadata(victim)
    raw = bytearray(victim.read_bytes())
    for c in range(md.num_columns):          # every column's pages garbled, the footer whole
        col = md.row_group(0).column(c)
        start = col.dictionary_page_offset or col.data_page_offset
        for k in range(start + 8, start + col.total_compressed_size - 2):
            raw[k] = (raw[k] * 7 + 13) & 0xFF
    victim.write_bytes(bytes(raw))
    assert pq.read_metadata(victim).num_rows == md.num_rows
    capsys.readouterr()
    assert main(["verify", str(tmp_path), "--json"]) == 1
    r = json.loads(capsys.readouterr().out)
    assert [d["path"] for d in r["damaged"]] == [str(victim)]
    assert [(Path(o["first"]).name, Path(o["second"]).name) for o in r["overlaps"]] == [
        (file_name("t", 0, 4, 7), file_name("t", 0, 6, 9)), (file_name("t", 0, 6, 9), file_name("t", 0, 8, 11))]
    assert [(t["rows"], t["offsets"]) for t in r["too_many_rows"]] == [(4, 2)]
    assert r["uncommitted"] == [str(orphan)] and len(r["temp_files"]) == 1 and r["intact"] is False
    assert main(["verify", str(tmp_path / "nothing")]) == 2
