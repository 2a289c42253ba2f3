"""``flowaudit scan``: offline classification with the stream's code path."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from flowaudit.scan import split_interchanges

EDI = (b"UNB+UNOA:2+A+B+260301:1200+1'UNH+1+CODECO:D:95B:UN'EQD+CN+SUDU1234569'UNT+3+1'UNZ+1+1'")
EDI2 = (b"UNA:+.? 'UNB+UNOA:2+A+B+260301:1200+2'UNH+1+CODECO:D:95B:UN'FTX+AAA+++SHIPPER?'S UNB+ NOTE'"
        b"EQD+CN+MSCU1234565'UNT+4+1'UNZ+1+2'")
X12 = (b"ISA*00*          *00*          *ZZ*A              *ZZ*B              *260301*1200*U*00401*000000001*0*P*>~"
       b"GS*QO*A*B*20260301*1200*1*X*004010~ST*315*0001~B4***D*20260301*1200*USLAX*SUDU*1234569~SE*3*0001~"
       b"GE*1*1~IEA*1*000000001~")


def test_split_edifact_and_x12_interchanges():
    assert split_interchanges(EDI + b"\n" + EDI2) == [EDI + b"\n", EDI2]
    assert split_interchanges(EDI) == [EDI]
    assert split_interchanges(X12 + b"\r\n" + X12) == [X12 + b"\r\n", X12]
    # 'UNB+' inside a released free text is not an interchange start
    assert split_interchanges(EDI2) == [EDI2]
    doc = b'{"a": "UNB+UNOA"}'
    assert split_interchanges(doc) == [doc]


def test_scan_cli_writes_jsonl_and_summary(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "two.edi").write_bytes(EDI + b"\n" + EDI2)
    (tmp_path / "in" / "one.x12").write_bytes(X12)
    (tmp_path / "in" / "bad.json").write_bytes(b'{"equipmentReference": ')
    out = tmp_path / "hits.jsonl"
    r = subprocess.run([sys.executable, "-m", "flowaudit", "scan", str(tmp_path / "in"), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "3 files, 4 messages" in r.stdout and "1 quarantined" in r.stdout
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    got = sorted((row["source"].rsplit("/", 1)[1], row["offset"], row["value_masked"], row["check_digit_valid"])
                 for row in rows if row["data_class"] == "container_number")
    assert got == [("one.x12", 0, "SUDU******9", True), ("two.edi", 0, "SUDU******9", True),
                   ("two.edi", 1, "MSCU******5", False)]
    assert all(row["value_raw"] is None for row in rows)


def test_scan_reports_missing_path(tmp_path):
    r = subprocess.run([sys.executable, "-m", "flowaudit", "scan", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no such file or folder" in r.stderr
    # with --out: refused before a key file is made beside output that is never written
    r = subprocess.run([sys.executable, "-m", "flowaudit", "scan", str(tmp_path / "nope"), "--out",
                        str(tmp_path / "o" / "h.parquet")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no such file or folder" in r.stderr and not (tmp_path / "o").exists()


def test_scan_says_when_it_makes_a_key(tmp_path):
    """Without a configured key, the first --out into a folder makes a random key there and says
    so (its hashes join nothing keyed otherwise); later runs reuse it in silence."""
    (tmp_path / "a.edi").write_bytes(EDI)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWAUDIT_SECURITY_")}
    errs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-m", "flowaudit", "scan", str(tmp_path / "a.edi"), "--out",
                            str(tmp_path / "o" / "h.parquet")], capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr
        errs.append(r.stderr)
    assert f"kept in {tmp_path / 'o' / '.hmac-key'}" in errs[0] and "hmac_key_file" in errs[0] and not errs[1]
    key = tmp_path / "k"
    key.write_bytes(os.urandom(32))
    r = subprocess.run([sys.executable, "-m", "flowaudit", "scan", str(tmp_path / "a.edi"), "--out",
                        str(tmp_path / "p" / "h.parquet")], capture_output=True, text=True, timeout=120,
                       env=dict(env, FLOWAUDIT_SECURITY_HMAC_KEY_FILE=str(key)))
    assert r.returncode == 0 and not r.stderr and not (tmp_path / "p" / ".hmac-key").exists()


# ------------------------------------------------------------------ archives of many interchanges

HIT_COLS = ("offset", "msg_index", "data_class", "location", "value_hmac", "check_digit_valid", "byte_start",
            "byte_end")


def _classifier():
    from flowaudit.pipeline import Classifier
    from flowaudit.protect import Protector
    return Classifier(Protector(b"scan-test-key-0123456789abcdef"))


def _rows(table, cols=HIT_COLS):
    d = table.select(list(cols)).to_pydict()
    return sorted(zip(*(d[c] for c in cols)), key=repr)


def _alone(pieces: list[bytes]):
    """Each piece classified on its own (one batch, ``offset`` = its index)."""
    from flowaudit.pipeline import FMT_AUTO, Batch
    return _classifier().run(Batch.from_values(pieces, FMT_AUTO))


def _scan_all(paths, batch_bytes):
    from flowaudit.scan import scan
    out = list(scan([str(p) for p in paths], _classifier(), batch_bytes=batch_bytes))
    assert out, "scan yielded nothing"
    return out


def _synth_archive(n: int, seed: int = 10):
    """Synthetic EDIFACT and X12 interchanges end to end: every EDIFACT one behind a UNA followed
    by a line break, CRLF / LF / nothing between interchanges, a garbage line after one of them,
    an unterminated interchange at the end.  Returns (file bytes, the pieces as they must come out)."""
    from flowaudit import synth
    pieces = []
    for k, m in enumerate(synth.generate(seed, n, formats=("edifact", "x12"))):
        v = m.value
        if m.format == "edifact" and v.startswith(b"UNB"):
            v = b"UNA:+.? '" + (b"\r\n" if k % 2 else b"\n") + v
        pieces.append(v + (b"\r\n", b"\n", b"")[k % 3])
        if k == n // 2:
            pieces.append(b"-- archive tool: 17 records follow --\r\n")
    pieces.append(b"UNA:+.? '\nUNB+UNOA:2+SENDER+RECIPIENT+260301:1200+99'\nUNH+1+CODECO:D:95B:UN'\n"
                  b"EQD+CN+MSCU1234565'\n")
    return b"".join(pieces), pieces


def test_many_interchange_archive_one_row_per_interchange(tmp_path):
    data, pieces = _synth_archive(400)
    f = tmp_path / "day.edi"
    f.write_bytes(data)
    got_pieces, hits, messages, quarantine = {}, [], 0, []
    # small batches: interchanges of one file spread over many batches, never split between two
    batches = _scan_all([f], batch_bytes=64 << 10)
    assert len(batches) > 3
    for batch, r in batches:
        for i in range(len(batch)):
            got_pieces[int(batch.offset[i])] = batch.buf[batch.offsets[i]:batch.offsets[i + 1]].tobytes()
        hits.extend(_rows(r.hits))
        messages += r.messages.num_rows
        quarantine.extend(zip(r.quarantine.column("offset").to_pylist(), r.quarantine.column("reason").to_pylist()))
    assert got_pieces == dict(enumerate(pieces))
    # exactly one messages-or-quarantine row per interchange (and per garbage run)
    assert messages + len(quarantine) == len(pieces) == 402
    garbage = pieces.index(b"-- archive tool: 17 records follow --\r\n")
    assert sorted(quarantine) == [(garbage, "unknown_format"), (len(pieces) - 1, "unterminated_interchange")]
    # the same hits as each interchange classified on its own
    alone = _alone(pieces)
    assert sorted(hits, key=repr) == _rows(alone.hits)
    assert len(hits) > 400
    # run(): the summary, and the hits streamed batch by batch into one Parquet file
    import pyarrow.parquet as pq
    from flowaudit.scan import run
    lines = []
    res = run([str(f)], _classifier(), out=str(tmp_path / "out" / "hits.parquet"), echo=lines.append,
              batch_bytes=64 << 10)
    assert res["hits"] == len(hits) and res["quarantined"] == 2
    assert f"1 files, {len(pieces)} messages, {len(hits)} hits, 2 quarantined" in lines[-1]
    assert sorted(res["files"][str(f)]["format"]) == ["edifact", "x12"]
    assert _rows(pq.read_table(tmp_path / "out" / "hits.parquet")) == sorted(hits, key=repr)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["hits.parquet"]



def test_steps_pieces_and_overlap_give_the_same_batches(tmp_path, monkeypatch):
    """The file split a step at a time on a thread, each batch's EDIFACT and X12 in pieces on two
    kernel threads, the kernels of each batch started before the batch before is finished: batch
    for batch, the same pieces and tables as one pass on one thread."""
    from flowaudit import pipeline
    from flowaudit import scan as S
    from flowaudit.pipeline import Classifier
    from flowaudit.protect import Protector
    data, _pieces = _synth_archive(400, seed=11)
    f = tmp_path / "day.edi"
    f.write_bytes(data)
    one = _scan_all([f], batch_bytes=64 << 10)          # the file is one step: one pass
    monkeypatch.setattr(S, "STEP_BYTES", 16 << 10)
    monkeypatch.setattr(pipeline, "PIECE_BYTES", 4 << 10)
    steps = []
    stepper = S.interchange_steps
    monkeypatch.setattr(S, "interchange_steps", lambda *a: (steps.append(c) or (c, k) for c, k in stepper(*a)))
    two = list(S.scan([str(f)], Classifier(Protector(b"scan-test-key-0123456789abcdef"), threads=2),
                      batch_bytes=64 << 10))
    assert len(steps) > 20 and len(one) == len(two) > 3
    for (b1, r1), (b2, r2) in zip(one, two):
        assert b1.offset.tolist() == b2.offset.tolist() and bytes(b1.buf) == bytes(b2.buf)
        assert r1.messages.equals(r2.messages) and r1.hits.equals(r2.hits)
        assert r1.quarantine.drop(["raw"]).equals(r2.quarantine.drop(["raw"]))


def test_corpus_files_as_one_archive_give_the_same_hits(corpus, tmp_path):
    """The real EDIFACT and X12 sample files end to end in one archive (a line break after each,
    as an archiving tool writes them) give the same hits and the same quarantine reasons as each
    file scanned alone."""
    files = sorted(p for d in ("edifact", "x12") for p in (corpus / "messages" / d).iterdir()
                   if p.is_file() and not p.name.lower().startswith("readme"))
    assert len(files) >= 30
    alone_hits, alone_q, n_alone = [], [], 0
    for batch, r in _scan_all(files, batch_bytes=1 << 20):
        cols = [c for c in HIT_COLS if c != "offset"]
        for src, row in zip(r.hits.column("source").to_pylist(), _rows_in_order(r.hits, cols)):
            alone_hits.append((src, row))
        alone_q.extend(r.quarantine.column("reason").to_pylist())
        n_alone += len(batch)
    arch = tmp_path / "archive.edi"
    arch.write_bytes(b"".join(p.read_bytes() + b"\n" for p in files))
    arch_hits, arch_q, n_arch = [], [], 0
    for batch, r in _scan_all([arch], batch_bytes=64 << 10):
        arch_hits.extend(_rows_in_order(r.hits, [c for c in HIT_COLS if c != "offset"]))
        arch_q.extend(r.quarantine.column("reason").to_pylist())
        n_arch += len(batch)
    assert n_arch == n_alone
    assert sorted(arch_q) == sorted(alone_q)
    assert sorted(arch_hits, key=repr) == sorted((row for _src, row in alone_hits), key=repr)
    assert len(arch_hits) > 100


def test_json_lines_files_are_a_message_a_line(corpus, tmp_path):
    """A topic dump (.jsonl / .ndjson: a JSON message a line, as kcat or kafka-console-consumer
    write them) is one message per line, not one malformed document: the corpus's JSON messages
    give the same hits in a JSON Lines file as each alone, a line's offset is its number among the
    lines with content, and a bad line is quarantined on its own."""
    def compact(p):
        try:
            return orjson.dumps(orjson.loads(p.read_bytes()))
        except orjson.JSONDecodeError:        # the corpus keeps some broken documents too
            return None

    docs = [d for p in sorted((corpus / "messages" / "json").iterdir()) if p.is_file() and p.suffix.lower() == ".json"
            and (d := compact(p)) is not None]
    assert len(docs) >= 5
    (tmp_path / "alone").mkdir()
    for i, d in enumerate(docs):
        (tmp_path / "alone" / f"{i:03d}.json").write_bytes(d)
    alone = [(int(Path(src).stem), *row) for b, r in _scan_all([tmp_path / "alone"], batch_bytes=1 << 20)
             for src, row in zip(r.hits.column("source").to_pylist(), _rows_in_order(r.hits, HIT_COLS[1:]))]
    dump = tmp_path / "port.json.ndjson"
    dump.write_bytes(b"\n  \n" + b"\n".join(docs[:2]) + b"\n\n{not json\n" + b"\n".join(docs[2:]) + b"\n")
    got, reasons = [], []
    for b, r in _scan_all([dump], batch_bytes=64 << 10):
        assert b.sources == [str(dump)]
        for o, row in zip(r.hits.column("offset").to_pylist(), _rows_in_order(r.hits, HIT_COLS[1:])):
            lead = 4 if o == 0 else 0                   # the first line's piece starts at the blank lines before it
            got.append((o if o < 2 else o - 1, *row[:-2], row[-2] - lead, row[-1] - lead))
        reasons += list(zip(r.quarantine.column("offset").to_pylist(), r.quarantine.column("reason").to_pylist()))
    assert reasons == [(2, "malformed_json")]
    assert sorted(got, key=repr) == sorted(alone, key=repr) and len(got) > 50


def test_line_steps_equal_a_slow_reference():
    """Pieces of a JSON Lines file, however the steps fall: a piece starts at each line whose first
    byte is not white space (but the first, which takes the white space before it)."""
    import random

    import numpy as np

    from flowaudit.scan import line_steps

    for trial in range(3000):
        rng = random.Random(trial)
        data = bytes(rng.choice(b"\n \t\r{}a") for _ in range(rng.randint(0, 50)))
        cuts: list = []
        for c, _k in line_steps(np.frombuffer(data, np.uint8), rng.randint(1, 16)):
            assert not cuts or cuts[-1] == c[0]
            cuts += list(c) if not cuts else list(c[1:])
        lead = next((i for i, x in enumerate(data) if x not in b" \t\r\n"), len(data))
        want = [0] + [p for p in range(lead + 1, len(data)) if data[p - 1] == 10 and data[p] not in b" \t\r\n"] \
            + [len(data)]
        assert cuts == want, (data, cuts)


def _rows_in_order(table, cols):
    d = table.select(list(cols)).to_pydict()
    return list(zip(*(d[c] for c in cols)))


def test_bytes_between_interchanges_reach_quarantine_with_a_reason(tmp_path):
    """Stray segments after a UNZ, a garbage line and an interchange cut off by the end of the
    file: each its own quarantine row with its exact bytes; the interchanges around them decode."""
    good = b"UNB+UNOA:2+S+R+260301:1200+7'UNH+1+CODECO:D:95B:UN'EQD+CN+MSCU1234565'UNT+3+1'UNZ+1+7'\n"
    stray = b"UNH+2+CODECO:D:95B:UN'EQD+CN+MSCU1234565'UNT+3+2'UNZ+1+7'\n"
    junk = b"junk\x00\xff\n"
    tail = b"UNB+UNOA:2+S+R+260301:1200+8'UNH+1"
    f = tmp_path / "mixed.edi"
    f.write_bytes(good + stray + good + junk + good + tail)
    (batch, r), = _scan_all([f], batch_bytes=1 << 20)
    assert r.messages.num_rows == 3 and r.messages.column("offset").to_pylist() == [0, 2, 4]
    q = r.quarantine.to_pydict()
    assert list(zip(q["offset"], q["reason"], q["bytes"])) == [
        (1, "headless_fragment", len(stray)), (3, "unknown_format", len(junk)),
        (5, "unterminated_interchange", len(tail))]
    assert [batch.buf[batch.offsets[i]:batch.offsets[i + 1]].tobytes() for i in (1, 3, 5)] == [stray, junk, tail]


def test_hits_written_behind_keep_order_and_a_failed_write_leaves_no_file(tmp_path):
    """HitWriter encodes each batch on a thread while the caller goes on: batches land in order,
    a write that fails there raises in the caller (at its next write or at close), and abort
    leaves neither the file nor its temp file."""
    import threading
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq
    import pytest

    from flowaudit.datasets import HITS
    from flowaudit.scan import HitWriter, WriteBehind

    order, main = [], threading.get_ident()

    def slow(i):
        time.sleep(0.02 * (3 - i))
        order.append((i, threading.get_ident() != main))
        return i
    wb = WriteBehind()
    assert [wb.submit(slow, i) for i in range(3)] == [None, 0, 1]   # each submit returns the write before
    assert wb.close() == 2
    assert order == [(0, True), (1, True), (2, True)]

    src = tmp_path / "in.edi"
    src.write_bytes(EDI + b"\n" + EDI2 + X12)
    t = pa.concat_tables([r.hits for _b, r in _scan_all([src], 1 << 20)])
    assert t.num_rows >= 3
    out = tmp_path / "hits.parquet"
    w = HitWriter(str(out))
    w.write(t)
    w.write(t.slice(0, 3))
    w.close()
    assert pq.read_table(out).to_pylist() == t.to_pylist() + t.slice(0, 3).to_pylist()

    bad = tmp_path / "bad.parquet"
    w = HitWriter(str(bad))
    w.write(t)
    w.write(pa.table({"x": [1]}))          # not the hits schema: the writer thread raises
    with pytest.raises(ValueError):
        w.write(t)
        w.close()
    w.abort()
    assert sorted(tmp_path.iterdir()) == sorted([out, src])
    assert HITS.names == t.schema.names


def test_json_lines_are_the_rows_orjson_writes(corpus):
    """``--out x.jsonl`` rows, encoded by polars: the same bytes as ``orjson.dumps`` of each row
    (the HMAC as hex), on the real corpus with raw values (Latin-1 and UTF-8 names, control
    characters, quotes and backslashes in values) and on a value of every awkward character."""
    import pyarrow as pa

    from flowaudit.datasets import HITS, dictionary_array
    from flowaudit.pipeline import FMT_AUTO, Batch, Classifier
    from flowaudit.protect import Protector
    from flowaudit.scan import json_lines

    def rows(table):
        out = []
        for row in table.to_pylist():
            row["value_hmac"] = row["value_hmac"].hex()
            out.append(orjson.dumps(row) + b"\n")
        return b"".join(out)

    files = sorted(p for d in ("edifact", "x12", "xml", "json") for p in (corpus / "messages" / d).iterdir()
                   if p.is_file() and not p.name.lower().startswith("readme"))
    clf = Classifier(Protector(b"scan-test-key-0123456789abcdef", raw=True))
    hits = clf.run(Batch.from_values([p.read_bytes() for p in files], FMT_AUTO)).hits
    assert hits.num_rows > 1000 and hits.column("value_raw").null_count == 0
    assert json_lines(hits) == rows(hits)
    odd = "".join(map(chr, range(0, 0x80))) + '"\\/\u00e9\u2028\u2029\U0001f6a2\ufffd'
    t = hits.slice(0, 2)
    i = t.schema.get_field_index("value_raw")
    t = t.set_column(i, HITS.field("value_raw"), dictionary_array(pa.array([0, 1], pa.int32()),
                                                                  pa.array([odd, "plain"], pa.string())))
    assert json_lines(t) == rows(t)
    assert orjson.loads(json_lines(t).splitlines()[0])["value_raw"] == odd
