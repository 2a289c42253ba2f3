"""``flowaudit quarantine list | show | reinject``: sealed payloads are kept, shown safely, and go
back to Kafka with their original keys (the reinject test runs on the real embedded broker)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowaudit import quarantine
from flowaudit.protect import Protector, mask

from .conftest import CORPUS, HMAC_KEY, run_stream, stream_env

KEY = HMAC_KEY.encode()
T0_MS = 1_772_323_200_000  # 2026-03-01T00:00:00Z


def cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "flowaudit", "quarantine", *map(str, args)],
                          env=stream_env(**env), capture_output=True, text=True, timeout=120)


def _file(tmp_path: Path, rows: list, raw: bool = False) -> Path:
    """A quarantine Parquet file of ``rows`` = (source, partition, offset, ts_ms, key, value, reason)."""
    n = len(rows)
    src = sorted({r[0] for r in rows})
    reasons = sorted({r[6] for r in rows})
    def d(idx, names):
        return pa.DictionaryArray.from_arrays(pa.array(np.asarray(idx, np.int32)), pa.array(names))
    prov = [d([src.index(r[0]) for r in rows], src), pa.array([r[1] for r in rows], pa.int32()),
            pa.array([r[2] for r in rows], pa.int64()), pa.array([r[3] for r in rows], pa.int64())]
    t = quarantine.table(Protector(KEY, raw=raw), prov, [r[4] for r in rows], [r[5] for r in rows],
                         d(np.zeros(n), ["json"]), d([reasons.index(r[6]) for r in rows], reasons))
    f = tmp_path / "q.parquet"
    quarantine.write_private(f, writer=lambda fh: pq.write_table(t, fh))
    return f


ROWS = [("port.json", 0, 7, T0_MS, b"BKG-4711", b'{"a": "\x1b[31mred\x1b]0;title\x07", "b": "\\\\"', "malformed_json"),
        ("port.json", 1, 3, T0_MS + 3_600_000, None, b"\x00\x01\x02\xff binary", "unknown_format"),
        ("port.json", 1, 4, None, b"k", None, "null_value")]


def test_list_filters_and_needs_no_key(tmp_path):
    f = _file(tmp_path, ROWS)
    assert f.stat().st_mode & 0o137 == 0           # 0640
    r = cli("list", f, "--format", "json", FLOWAUDIT_SECURITY_HMAC_KEY="")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["partition"], x["offset"], x["reason"], x["key_masked"], x["raw_encoding"]) for x in rows] == [
        (0, 7, "malformed_json", mask(b"BKG-4711"), "aes-256-gcm/v1"), (1, 3, "unknown_format", None, "aes-256-gcm/v1"),
        (1, 4, "null_value", "*", "aes-256-gcm/v1")]
    assert rows[0]["key_hmac"] == Protector(KEY).hmac(b"BKG-4711").hex()
    r = cli("list", f, "--reason", "unknown_format", "--reason", "null_value", "--since", "2026-03-01T00:30")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["source", "partition", "offset", "time", "(UTC)", "format", "reason", "bytes", "key"]
    assert len(lines) == 5 and "2026-03-01T01:00:00.000Z" in lines[2] and "unknown_format" in lines[2]
    assert lines[-1] == "1 quarantined, 1 unknown_format"
    assert r.stderr == ""
    r = cli("list", f, "--reason", "malformed_jsn", "--reason", "malformed_json")     # a typo is named
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "1 quarantined, 1 malformed_json"
    assert r.stderr.strip() == ("flowaudit quarantine: no record has reason malformed_jsn "
                                "(reasons here: malformed_json, null_value, unknown_format)")
    r = cli("list", f, "--until", "2026-03-01")
    assert r.stdout.splitlines()[-1] == "0 quarantined"
    r = cli("list", f, "--since", "yesterday")
    assert r.returncode == 2 and r.stderr.strip() == "flowaudit quarantine: not an ISO 8601 date or time: 'yesterday'"


def test_a_reader_that_goes_away_and_offsets_out_of_range(tmp_path):
    """``flowaudit quarantine list ... | head -1``: the reader closes the pipe while the list is
    written; the command stops as one killed by SIGPIPE does (exit 141), without a traceback (it
    was a BrokenPipeError).  ``show`` with a partition or offset beyond its column's range is a
    usage error (it was a TypeError from Arrow)."""
    f = _file(tmp_path, [("port.json", 0, i, T0_MS + i, b"k", b"{", "malformed_json") for i in range(5000)])
    with subprocess.Popen([sys.executable, "-m", "flowaudit", "quarantine", "list", str(f), "--format", "json"],
                          env=stream_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        first = p.stdout.readline()
        p.stdout.close()
        err = p.stderr.read().decode()
        assert p.wait(timeout=120) == 141 and json.loads(first)["offset"] == 0
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err, err
    for part, off in (("0", str(2**63)), (str(2**31), "0"), ("0", "-" + str(2**63 + 1))):
        r = cli("show", f, "port.json", part, off)
        assert r.returncode == 2 and "must be at" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_show_escapes_text_dumps_binary_and_writes_exact_bytes(tmp_path):
    f = _file(tmp_path, ROWS)
    r = cli("show", f, "port.json", 0, 7)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout          # nothing reaches the terminal raw
    assert '{"a": "\\x1b[31mred\\x1b]0;title\\x07", "b": "\\\\\\\\"' in r.stdout
    assert "key        'BKG-4711'" in r.stdout and "reason     malformed_json" in r.stdout
    r = cli("show", f, "port.json", 1, 3)
    assert "00000000  00 01 02 ff 20 62 69 6e 61 72 79" in r.stdout and "|.... binary|" in r.stdout
    assert "key        -" in r.stdout
    assert "(none: tombstone)" in cli("show", f, "port.json", 1, 4).stdout
    out = tmp_path / "value.bin"
    r = cli("show", f, "port.json", 0, 7, "--raw-out", out)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == ROWS[0][5] and out.stat().st_mode & 0o137 == 0
    r = cli("show", f, "port.json", 0, 7, "--raw-out", out)       # never overwritten
    assert r.returncode != 0 and out.read_bytes() == ROWS[0][5]
    r = cli("show", f, "port.json", 0, 8)
    assert r.returncode == 2 and r.stderr.strip() == "flowaudit quarantine: no quarantine row port.json/0/8"


def test_show_refuses_another_key_and_a_moved_blob(tmp_path):
    f = _file(tmp_path, ROWS)
    r = cli("show", f, "port.json", 0, 7, FLOWAUDIT_SECURITY_HMAC_KEY="another-operator-key-0123")
    assert r.returncode == 2
    assert r.stderr.strip() == ("flowaudit quarantine: port.json/0/7: the payload does not open with this operator "
                                "key (another key, or the blob was moved or altered)")
    # the blob of row 0 copied into row 1: it does not open there
    t = pq.read_table(f)
    raw = t.column("raw").to_pylist()
    t = t.set_column(t.schema.get_field_index("raw"), "raw", pa.array([raw[0], raw[0], raw[2]], pa.binary()))
    f.unlink()
    pq.write_table(t, f)
    assert cli("show", f, "port.json", 0, 7).returncode == 0
    assert "does not open" in cli("show", f, "port.json", 1, 3).stderr
    # no key configured and none beside the file: an error, and no key is created
    r = cli("show", f, "port.json", 0, 7, FLOWAUDIT_SECURITY_HMAC_KEY="")
    assert r.returncode == 2 and "no operator key" in r.stderr and not (tmp_path / ".hmac-key").exists()


def test_plain_rows_when_raw_values_are_opted_in(tmp_path):
    f = _file(tmp_path, ROWS, raw=True)
    t = pq.read_table(f).to_pylist()
    assert [(x["raw_encoding"], x["raw"], x["key_raw"]) for x in t] == [("plain", r[5], r[4]) for r in ROWS]
    r = cli("show", f, "port.json", 0, 7, FLOWAUDIT_SECURITY_HMAC_KEY="another-operator-key-0123")
    assert r.returncode == 0 and "key        'BKG-4711'" in r.stdout


def test_flows_quarantine_file_is_sealed_and_opens_with_the_key_beside_it(tmp_path):
    from flowaudit.sources.pcap import read_datagrams

    pcap = CORPUS / "netflow" / "public" / "logstash" / "logstash_nf5_invalid01.pcap"
    assert pcap.is_file(), pcap
    q = tmp_path / "nf" / "q.parquet"
    q.parent.mkdir()
    r = subprocess.run([sys.executable, "-m", "flowaudit", "flows", str(pcap), "--out", str(tmp_path / "f.parquet"),
                        "--quarantine", str(q)], env=stream_env(FLOWAUDIT_SECURITY_HMAC_KEY=""),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (q.parent / ".hmac-key").stat().st_mode & 0o077 == 0 and q.stat().st_mode & 0o137 == 0
    assert f"a new random key, kept in {q.parent / '.hmac-key'}" in r.stderr     # said: it seals these rows
    rows = pq.read_table(q).to_pylist()
    dg = read_datagrams([str(pcap)])
    assert len(rows) == 1 and rows[0]["raw_encoding"] == "aes-256-gcm/v1" and rows[0]["key_raw"] is None
    row = rows[0]
    i = int(np.flatnonzero(dg.frame == row["offset"])[0])
    datagram = bytes(dg.buf[dg.offsets[i]:dg.offsets[i + 1]])
    assert datagram not in row["raw"]
    out = tmp_path / "dgram.bin"
    r = cli("show", q, row["source"], -1, row["offset"], "--raw-out", out, FLOWAUDIT_SECURITY_HMAC_KEY="")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == datagram
    assert f"key        '{dg.exporters[dg.exporter_idx[i]]}'" in r.stdout
    # file rows have no topic: reinject needs one
    r = cli("reinject", q, "--bootstrap", "127.0.0.1:1", "--dry-run", FLOWAUDIT_SECURITY_HMAC_KEY="")
    assert r.returncode == 2 and "name the target with --topic" in r.stderr


def _consume(bootstrap: str, topic: str, partitions: int, n: int, timeout: float = 60) -> list:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{topic}", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            got.extend(m for m in c.consume(num_messages=100, timeout=0.5) if m.error() is None)
        got.extend(m for m in c.consume(num_messages=10, timeout=1.0) if m.error() is None)  # and no more
    finally:
        c.close()
    return sorted(got, key=lambda m: (m.partition(), m.offset()))


@pytest.mark.slow
def test_reinject_restores_bytes_and_key_and_the_fixed_route_decodes_it(broker, topics, tmp_path):
    """A JSON message misrouted to the XML topic is quarantined (format_mismatch); reinjected to
    the JSON topic it is decoded, with the original key and bytes."""
    from confluent_kafka import Producer

    value = b'{"equipmentReference": "MSCU1234565", "note": "\\u00e9\xc3\xa9"}'
    key = b"BKG-MAEU123456789"
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce(topics["xml"], value, key=key, partition=1)
    p.produce(topics["json"], b'{"a": 1}', key=b"other", partition=0)
    assert p.flush(30) == 0
    root = tmp_path / "out"
    r = run_stream(broker.bootstrap, topics, root, "--until-drained", "--group", "g-q", "--metrics-port", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    from flowaudit.sinks.parquet import read_dataset

    q = read_dataset(root, "quarantine").to_pylist()
    assert [(x["source"], x["partition"], x["offset"], x["reason"]) for x in q] == [
        (topics["xml"], 1, 0, "format_mismatch")]
    assert value not in q[0]["raw"] and key not in q[0]["raw"] and q[0]["key_masked"] == mask(key)
    assert (root / ".hmac-key").exists() is False       # the stream had the operator key from the environment

    r = cli("reinject", root, "--bootstrap", broker.bootstrap, "--topic", topics["json"], "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"would reinject 1 records, 1 to {topics['json']}"
    assert len(_consume(broker.bootstrap, topics["json"], 2, 2, timeout=5)) == 1   # nothing sent

    r = cli("reinject", root, "--bootstrap", broker.bootstrap, "--topic", topics["json"], "--reason", "format_mismatch")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"reinjected 1 of 1 records, 1 to {topics['json']}"
    got = [m for m in _consume(broker.bootstrap, topics["json"], 2, 2) if m.key() == key]
    assert len(got) == 1 and got[0].value() == value
    assert got[0].headers() == [(quarantine.REINJECT_HEADER, f"{topics['xml']}/1/0".encode())]

    # the default target is the record's own topic and partition
    r = cli("reinject", root, "--bootstrap", broker.bootstrap)
    assert r.returncode == 0 and r.stdout.strip() == f"reinjected 1 of 1 records, 1 to {topics['xml']}"
    back = _consume(broker.bootstrap, topics["xml"], 2, 2)
    assert [(m.partition(), m.offset(), m.key(), m.value()) for m in back] == [(1, 0, key, value), (1, 1, key, value)]

    # re-processing: the JSON topic's copy decodes now; the XML topic's copy is quarantined again
    r = run_stream(broker.bootstrap, topics, root, "--until-drained", "--group", "g-q", "--metrics-port", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    msgs = {(m["source"], m["partition"], m["offset"]): m for m in read_dataset(root, "messages").to_pylist()}
    new = msgs[(topics["json"], got[0].partition(), got[0].offset())]
    assert new["key_hmac"] == Protector(KEY).hmac(key) and new["n_hits"] == 1
    hits = [h for h in read_dataset(root, "hits").to_pylist() if h["offset"] == got[0].offset()
            and h["source"] == topics["json"]]
    assert [h["value_masked"] for h in hits] == ["MSCU******5"]
    q = read_dataset(root, "quarantine").to_pylist()
    assert sorted((x["partition"], x["offset"]) for x in q) == [(1, 0), (1, 1)]
    assert {x["source"] for x in q} == {topics["xml"]}


def test_not_a_quarantine_dataset_is_one_line(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    r = cli("list", tmp_path / "x.parquet")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "not a quarantine dataset" in r.stderr
    r = cli("list", tmp_path / "missing")
    assert r.returncode == 2 and r.stderr.strip() == f"flowaudit quarantine: {tmp_path / 'missing'}: no such file or folder"


def test_reinject_reports_records_not_delivered(tmp_path):
    from flowaudit.broker import free_port

    f = _file(tmp_path, ROWS[:1])
    r = cli("reinject", f, "--bootstrap", f"127.0.0.1:{free_port()}", "--timeout", "2")   # nothing listens there
    assert r.returncode == 1, r.stderr
    assert r.stdout.startswith("reinjected 0 of 1 records, 1 to port.json; 1 not delivered (0 still queued; first error: ")
