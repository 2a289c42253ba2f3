"""The batch path without Kafka: buffer -> kernels -> Arrow tables."""
from __future__ import annotations

import collections
import hashlib
import hmac

import numpy as np
import pytest

from flowaudit import synth
from flowaudit.decode import FMT_EDIFACT, FMT_JSON, FMT_X12, FMT_XML
from flowaudit.pipeline import FMT_AUTO, Batch, Classifier
from flowaudit.protect import Protector
from flowaudit.quarantine import open_row

KEY = b"pipeline-test-key-0123456789"
FMT = {"edifact": FMT_EDIFACT, "x12": FMT_X12, "xml": FMT_XML, "json": FMT_JSON}


@pytest.fixture(scope="module")
def clf():
    return Classifier(Protector(KEY))


def test_every_message_lands_once_and_bad_ones_carry_a_reason(clf):
    values = [
        b"",                                                   # empty
        None,                                                  # tombstone
        b"UNB+UNOA:2+A+B+260301:1200+1'UNH+1+CODECO:D:95B:UN'EQD+CN+SUDU1234569",  # unterminated
        b'{"equipmentReference": "SUDU1234569"',               # truncated JSON
        b"<a><b>",                                             # truncated XML
        b'{"x": "\xff\xfe"}',                                  # invalid UTF-8
        b"hello, world",                                       # auto: unknown format
        b"<a/>",                                               # declared json, is XML: mismatch
        b'{"equipmentReference": "SUDU1234569"}',              # fine
    ]
    declared = [FMT_EDIFACT, FMT_JSON, FMT_EDIFACT, FMT_JSON, FMT_XML, FMT_JSON, FMT_AUTO, FMT_JSON, FMT_JSON]
    r = clf.run(Batch.from_values(values, declared))
    reasons = dict(zip(r.q_idx.tolist(), r.quarantine.column("reason").to_pylist()))
    assert reasons == {0: "empty_value", 1: "null_value", 2: "unterminated_interchange", 3: "malformed_json",
                       4: "malformed_xml", 5: "invalid_utf8", 6: "unknown_format", 7: "format_mismatch"}
    assert r.m_idx.tolist() == [8]
    # every payload is kept for re-processing, sealed: it opens with the operator key only
    rows = r.quarantine.to_pylist()
    assert {row["raw_encoding"] for row in rows} == {"aes-256-gcm/v1"}
    assert [open_row(clf.protector, row)[1] for row in rows] == values[:8]
    assert all(values[i] not in row["raw"] for i, row in enumerate(rows) if values[i])
    hits = r.hits.to_pylist()
    h = [x for x in hits if not x["salvaged"]]
    assert len(h) == 1 and h[0]["value_masked"] == "SUDU******9" and h[0]["check_digit_valid"] is True
    # the broken messages are still examined: their container is a salvaged hit on their own offset
    s = [x for x in hits if x["salvaged"]]
    assert [(x["offset"], x["value_masked"], x["confidence"]) for x in s] == [(2, "SUDU******9", 60), (3, "SUDU******9", 60)]
    assert r.hits.column("offset").to_pylist() == [2, 3, 8]
    assert h[0]["value_hmac"] == hmac.new(KEY, b"SUDU1234569", hashlib.sha256).digest()
    assert h[0]["value_raw"] is None


def test_synthetic_batch_matches_labels(clf):
    msgs = list(synth.generate(seed=99, n=1200))
    batch = Batch.from_values([m.value for m in msgs], [FMT[m.format] for m in msgs])
    r = clf.run(batch)
    assert r.q_idx.size == 0, r.quarantine.select(["offset", "reason"]).to_pylist()[:5]
    got = collections.Counter((row["offset"], row["data_class"], row["value_hmac"], row["check_digit_valid"])
                              for row in r.hits.to_pylist() if row["data_class"] in ("container_number", "imo_number"))
    want = collections.Counter()
    for i, m in enumerate(msgs):
        for lab in m.labels:
            if lab.data_class in ("container_number", "imo_number") and not lab.lookalike:
                want[(i, lab.data_class, hmac.new(KEY, lab.value.encode(), hashlib.sha256).digest(), lab.valid)] += 1
    assert got == want


def test_auto_detection_equals_declared(clf):
    msgs = list(synth.generate(seed=5, n=300))
    values = [m.value for m in msgs]
    a = clf.run(Batch.from_values(values, FMT_AUTO))
    b = clf.run(Batch.from_values(values, [FMT[m.format] for m in msgs]))
    assert a.hits.equals(b.hits)
    assert np.array_equal(a.fmt, b.fmt)


def test_raw_values_only_on_opt_in():
    clf = Classifier(Protector(KEY, raw=True))
    r = clf.run(Batch.from_values([b'{"equipmentReference": "SUDU1234569"}'], FMT_JSON))
    assert r.hits.column("value_raw").to_pylist() == ["SUDU1234569"]


def test_too_large_is_rejected_before_parsing():
    clf = Classifier(Protector(KEY), max_message_bytes=64)
    big = b'{"equipmentReference": "SUDU1234569", "pad": "' + b"x" * 100 + b'"}'
    r = clf.run(Batch.from_values([big, b'{"a": 1}'], FMT_JSON))
    assert r.quarantine.column("reason").to_pylist() == ["too_large"]
    assert [open_row(clf.protector, row)[1] for row in r.quarantine.to_pylist()] == [big]
    assert r.m_idx.tolist() == [1]
    # not parsed, but its first max_message_bytes are salvage-scanned
    assert r.hits.column("salvaged").to_pylist() == [True] and r.hits.column("offset").to_pylist() == [0]


def test_synth_cli_writes_files_and_labels(tmp_path):
    import subprocess
    import sys

    import orjson

    out = tmp_path / "s"
    r = subprocess.run([sys.executable, "-m", "flowaudit", "synth", "--seed", "3", "--count", "40", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    labels = [orjson.loads(line) for line in (out / "labels.jsonl").read_bytes().splitlines()]
    assert len(labels) == 40
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "labels.jsonl")
    assert len(files) == 40
    assert {p.parent.name for p in files} <= {"edifact", "x12", "xml", "json"}


def test_message_side_indicators_become_transfers():
    from flowaudit.detect.egress import EgressDetector

    clf = Classifier(Protector(KEY), egress=EgressDetector())
    values = [
        b'{"method": "logink.track.customs", "url": "https://gateway.logink.cn/ais/getVesselBaseInfo"}',
        b'{"note": "LoginKit and notlogink.cn are not LOGINK", "partyFunctionCode": "ZJEPORT"}',  # look-alikes
        b"UNB+UNOA:2+SENDER+RECIPIENT+260301:1200+1'UNH+1+COARRI:D:95B:UN'LOC+9+CNNGB'UNT+3+1'UNZ+1+1'",
    ]
    r = clf.run(Batch.from_values(values, [FMT_JSON, FMT_JSON, FMT_EDIFACT], offset=[10, 11, 12]))
    rows = r.transfers.to_pylist()
    assert {row["offset"] for row in rows} == {10, 11}
    assert r.t_idx.tolist() == [row["offset"] - 10 for row in rows]
    got = {(row["offset"], row["indicator"], row["indicator_type"], row["seen_where"]) for row in rows}
    assert got == {(10, "logink.track.customs", "payload_marker", "JSON_PATH"),
                   (10, "gateway.logink.cn", "host", "JSON_PATH"),
                   (10, "/ais/", "url_path", "JSON_PATH"),   # a URL path counts only beside a LOGINK host
                   (11, "partyFunctionCode=ZJEPORT", "party_code", "JSON_PATH")}
    assert all(row["platform"] == "LOGINK" for row in rows)
    # CNNGB is Ningbo's UN/LOCODE in the EDIFACT LOC segment: no transfer for message 12
    assert not any(row["offset"] == 12 for row in rows)


def test_kernels_side_by_side_give_the_same_tables():
    """threads=2 runs the formats' decoders and the marker scan on a pool: every table, count and
    duplicate flag equals the one-thread run's, batch after batch (the duplicate table carries over)."""
    from flowaudit.detect.egress import EgressDetector

    msgs = list(synth.generate(11, 1200))
    vals = [m.value for m in msgs] + [b'{"u": "https://gateway.logink.cn/ais/x"}', b"LOGINK_CN_CREDIT_PERSON", b"", None]
    decl = [FMT[m.format] for m in msgs] + [FMT_JSON, FMT_AUTO, FMT_JSON, FMT_JSON]
    one = Classifier(Protector(KEY), egress=EgressDetector())
    two = Classifier(Protector(KEY), egress=EgressDetector(), threads=2)
    seen_transfers = 0
    for lo in range(0, len(vals), 400):
        a = one.run(Batch.from_values(vals[lo:lo + 400], decl[lo:lo + 400]))
        b = two.run(Batch.from_values(vals[lo:lo + 400], decl[lo:lo + 400]))
        _same_results(one, two, a, b)
        if lo == 0:   # every format and the marker scan ran (and were timed)
            assert {"egress", "edifact", "x12", "xml", "json"} <= set(b.kernel_seconds)
        seen_transfers += b.transfers.num_rows
    assert seen_transfers >= 2
    with pytest.raises(ValueError):
        Classifier(Protector(KEY), threads=0)



def _same_results(one, two, a, b):
    for name in ("messages", "hits", "transfers"):
        assert getattr(a, name).equals(getattr(b, name)), name
    # quarantined bytes are sealed with a fresh nonce: equal once opened
    assert a.quarantine.drop(["raw"]).equals(b.quarantine.drop(["raw"]))
    assert ([open_row(one.protector, r) for r in a.quarantine.to_pylist()]
            == [open_row(two.protector, r) for r in b.quarantine.to_pylist()])
    assert a.hit_counts == b.hit_counts and a.quarantine_counts == b.quarantine_counts


def test_started_batches_in_pieces_finish_as_run_does(monkeypatch):
    """Classifier.pipelined: start of the next batch before finish of this one (flowaudit scan's overlap),
    each batch's EDIFACT and X12 cut into pieces for two kernel threads: the same tables, counts
    and duplicate flags as run() batch after batch on one thread."""
    from flowaudit import pipeline
    from flowaudit.detect.egress import EgressDetector

    monkeypatch.setattr(pipeline, "PIECE_BYTES", 4096)
    cut = []
    pieces = Classifier._pieces
    monkeypatch.setattr(Classifier, "_pieces", lambda self, *a: cut.append(len(out := pieces(self, *a))) or out)
    msgs = list(synth.generate(12, 1200))
    vals = [m.value for m in msgs]
    vals += vals[:150]                      # seen before, in an earlier batch: flagged duplicates
    decl = [FMT[m.format] for m in msgs] + [FMT_AUTO] * 150
    batches = [Batch.from_values(vals[lo:lo + 450], decl[lo:lo + 450]) for lo in range(0, len(vals), 450)]
    one = Classifier(Protector(KEY), egress=EgressDetector())
    two = Classifier(Protector(KEY), egress=EgressDetector(), threads=2)
    want = [one.run(b) for b in batches]
    order = []
    start = two.start
    monkeypatch.setattr(two, "start", lambda b: order.append(("start", id(b))) or start(b))
    got = []
    for b, r in two.pipelined(iter(batches)):
        order.append(("done", id(b)))
        got.append(r)
    # the next batch is started before the one before it is finished
    ids = [id(b) for b in batches]
    assert order == [("start", ids[0])] + [x for i in range(1, len(ids)) for x in
                                             (("start", ids[i]), ("done", ids[i - 1]))] + [("done", ids[-1])]
    assert max(cut) == 2
    dup = 0
    for a, b in zip(want, got):
        _same_results(one, two, a, b)
        dup += sum("duplicate_payload" in f for f in b.messages.column("flags").to_pylist())
    assert dup >= 100


_ONE_TYPE = """
import base64, collections, dataclasses, gzip, importlib, pkgutil, sys
import numpy as np, pyarrow as pa
from numba.core import types
import flowaudit.kernels as K
from flowaudit import synth
from flowaudit.audit.work import binary_buffers
from flowaudit.detect.egress import EgressDetector
from flowaudit.kernels._jit import KernelDispatcher
from flowaudit.pipeline import FMT_AUTO, Batch, Classifier
from flowaudit.protect import Protector

msgs = list(synth.generate(13, 300))
vals = [m.value for m in msgs] + [base64.b64encode(gzip.compress(msgs[0].value))]   # a layer too
clf = Classifier(Protector(b"pipeline-test-key-0123456789"), egress=EgressDetector())
polled = Batch.from_values(vals, FMT_AUTO)
buf, offsets, _null = binary_buffers(pa.array(vals, pa.binary()))   # the audit's buffer: writable
assert buf.flags.writeable
archived = dataclasses.replace(polled, buf=buf, offsets=offsets)
assert not polled.buf.flags.writeable and not archived.buf.flags.writeable
a, b = clf.run(polled), clf.run(archived)
assert a.hits.equals(b.hits) and a.messages.equals(b.messages)
twice = []
for mod in pkgutil.iter_modules(K.__path__):
    m = importlib.import_module(f"flowaudit.kernels.{mod.name}")
    for name, disp in vars(m).items():
        if isinstance(disp, KernelDispatcher):
            plain = collections.Counter(tuple(t.copy(readonly=True) if isinstance(t, types.Array) else t
                                              for t in sig) for sig in disp.signatures)
            twice += [name for _sig, n in plain.items() if n > 1]
print("twice", twice)
sys.exit(1 if twice else 0)
"""


def test_every_batch_reaches_the_kernels_as_one_buffer_type():
    """A poll's bytes are read-only; an Arrow column's buffer (the audit), a scan's joined
    archive pieces and a decoded layer are writable.  The kernels see all of them read-only,
    so each kernel compiles one specialisation, the one `flowaudit warmup` caches: before, the
    first audit after a warmup compiled 59 kernels again (30 s).  In a fresh interpreter: the
    kernel tests here call kernels with writable arrays of their own."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _ONE_TYPE], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "twice []" in r.stdout


def test_edi_recipients_on_an_operator_watchlist(tmp_path):
    from flowaudit.detect import watchlist
    from flowaudit.detect.egress import EgressDetector

    (tmp_path / "ops.toml").write_text('version = "ops-1"\nformat = 1\n'
                                       '[[indicators]]\nplatform = "LOGINK"\ntype = "edi_party"\n'
                                       'value = "LGKGATEWAY"\nsource = "operator: partner register"\n')
    clf = Classifier(Protector(KEY), egress=EgressDetector(watchlist.Watchlist(tmp_path)))
    edi = b"UNB+UNOA:2+TERMINAL+LGKGATEWAY+260301:1200+1'UNH+1+COARRI:D:95B:UN'UNT+2+1'UNZ+1+1'"
    x12 = (b"ISA*00*          *00*          *ZZ*TERMINAL       *ZZ*LGKGATEWAY     *260301*1200*U*00401*000000001*0*P*>~"
           b"GS*QO*TERMINAL*OTHER*20260301*1200*1*X*004010~ST*315*0001~SE*2*0001~GE*1*1~IEA*1*000000001~")
    other = edi.replace(b"LGKGATEWAY", b"SOMEONE")
    r = clf.run(Batch.from_values([edi, x12, other], [FMT_EDIFACT, FMT_X12, FMT_EDIFACT]))
    got = sorted((i, row["indicator"], row["seen_where"]) for i, row in zip(r.t_idx.tolist(), r.transfers.to_pylist()))
    assert got == [(0, "LGKGATEWAY", "EDI_UNB"), (1, "LGKGATEWAY", "X12_ISA")]


def test_hits_carry_the_message_index_inside_the_interchange(clf):
    edi = (b"UNB+UNOA:2+SENDER+RECIPIENT+260301:1200+7'"
           b"UNH+1+CODECO:D:95B:UN'EQD+CN+SUDU1234569'UNT+3+1'"
           b"UNH+2+CODECO:D:95B:UN'EQD+CN+MSCU1234565'UNT+3+2'UNZ+2+7'")
    x12 = (b"ISA*00*          *00*          *ZZ*A              *ZZ*B              *260301*1200*U*00401*000000001*0*P*>~"
           b"GS*QO*A*B*20260301*1200*1*X*004010~ST*315*0001~B4***D*20260301*1200*USLAX*SUDU*1234569~SE*3*0001~"
           b"ST*315*0002~B4***D*20260301*1200*USLAX*MSCU*1234565~SE*3*0002~GE*2*1~IEA*1*000000001~")
    r = clf.run(Batch.from_values([edi, x12], [FMT_EDIFACT, FMT_X12]))
    got = {(row["offset"], row["data_class"], row["value_masked"], row["msg_index"]) for row in r.hits.to_pylist()
           if row["data_class"] in ("container_number", "edi_recipient_id")}
    # the interchange envelope (UNB recipient, ISA08 / GS03) belongs to no message: index 0
    recipients = [g for g in got if g[1] == "edi_recipient_id"]
    assert {g[0] for g in recipients} == {0, 1} and {g[3] for g in recipients} == {0}
    assert {g for g in got if g[1] == "container_number"} == {
        (0, "container_number", "SUDU******9", 1), (0, "container_number", "MSCU******5", 2),
        (1, "container_number", "SUDU******9", 1), (1, "container_number", "MSCU******5", 2)}


def test_kafka_keys_are_masked_and_keyed_like_values(clf):
    keys = [b"MSCU1234565", b"MSCU1234565", None, b"BL:MAEU123456789"]
    values = [b'{"equipmentReference": "MSCU1234565"}', b'{"a": 1}', b'{"a": 2}', b'{"broken": ']
    r = clf.run(Batch.from_values(values, FMT_JSON, keys=keys))
    m = r.messages.to_pylist()
    assert [x["key_masked"] for x in m] == ["MSC********", "MSC********", None]
    assert m[0]["key_hmac"] == hmac.new(KEY, b"MSCU1234565", hashlib.sha256).digest() and m[2]["key_hmac"] is None
    assert all(x["key_raw"] is None for x in m)
    # the same HMAC as the hit of the same value: keys join with hits
    assert m[0]["key_hmac"] == r.hits.to_pylist()[0]["value_hmac"]
    # keys repeat: one dictionary entry per distinct key of the batch
    assert r.messages.column("key_hmac").combine_chunks().dictionary.to_pylist() == [m[0]["key_hmac"]]
    q = r.quarantine.to_pylist()
    assert q[0]["key_masked"] == "BL:MA***********" and q[0]["key_raw"] is None
    assert b"MAEU123456789" not in q[0]["raw"]
    # the sealed record restores the original key with the value
    assert open_row(clf.protector, q[0]) == (b"BL:MAEU123456789", b'{"broken": ')


def test_one_value_as_two_classes_gets_each_class_mask_and_one_hmac(clf):
    r = clf.run(Batch.from_values([b'{"billOfLadingNumber": "MAEU123456789", "vesselName": "MAEU123456789"}',
                                   b'{"vesselName": "MSC OSCAR", "billOfLadingNumber": "MAEU123456789"}'], FMT_JSON))
    got = [(h["data_class"], h["value_masked"]) for h in r.hits.to_pylist()]
    assert got == [("bill_of_lading", "MAEU*********"), ("vessel_name", "M************"),
                   ("vessel_name", "M** O****"), ("bill_of_lading", "MAEU*********")]
    assert len({h["value_hmac"] for h in r.hits.to_pylist() if h["value_masked"] != "M** O****"}) == 1


def test_raw_keys_and_plain_quarantine_only_on_opt_in():
    clf = Classifier(Protector(KEY, raw=True))
    r = clf.run(Batch.from_values([b'{"a": 1}', b"{nope", None], FMT_JSON, keys=[b"K1", b"K2", b"K3"]))
    assert r.messages.column("key_raw").to_pylist() == [b"K1"]
    q = r.quarantine.to_pylist()
    assert [(x["raw_encoding"], x["key_raw"], x["raw"]) for x in q] == [("plain", b"K2", b"{nope"),
                                                                         ("plain", b"K3", None)]
    assert [open_row(clf.protector, x) for x in q] == [(b"K2", b"{nope"), (b"K3", None)]
