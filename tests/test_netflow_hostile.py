"""Hostile NetFlow input (../shared/reliability.md section 4 and items 48-62): every case is decoded
without a crash or a hang, with bounded memory, and is *counted* (per-reason counters; datagram
status -> quarantine reason where the datagram itself is malformed).

A SIGALRM guard turns a hang into a failure instead of a stuck suite.
"""
from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from flowaudit.decode.netflow import NetflowDecoder
from flowaudit.kernels import netflow as K

CORPUS_NF = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "netflow"


@pytest.fixture(autouse=True)
def no_hang():
    def boom(*_):
        raise TimeoutError("decoder hung")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def decode(datagrams, dec=None, exporter="192.0.2.9"):
    dec = dec or NetflowDecoder()
    if isinstance(datagrams, bytes):
        datagrams = [datagrams]
    exps = [exporter] if isinstance(exporter, str) else list(exporter)
    idx = np.zeros(len(datagrams), np.int32) if isinstance(exporter, str) else np.arange(len(datagrams)) % len(exps)
    offsets = np.zeros(len(datagrams) + 1, np.int64)
    np.cumsum([len(d) for d in datagrams], out=offsets[1:])
    buf = b"".join(datagrams)
    res = dec.decode_result(np.frombuffer(buf, np.uint8) if buf else np.zeros(0, np.uint8), offsets, exps, idx)
    return res, dec


def ipfix(*sets, domain=1, secs=1_700_000_000, seq=0, length=None):
    body = b"".join(sets)
    return struct.pack(">HHIII", 10, 16 + len(body) if length is None else length, secs, seq, domain) + body


def v9(*sets, domain=1, secs=1_700_000_000, uptime=100_000, count=None, seq=0):
    return struct.pack(">HHIIII", 9, len(sets) if count is None else count, uptime, secs, seq, domain) + b"".join(sets)


def set_(sid, body, length=None):
    return struct.pack(">HH", sid, 4 + len(body) if length is None else length) + body


def tpl(tid, fields, nscope=None):
    out = struct.pack(">HH", tid, len(fields)) + (struct.pack(">H", nscope) if nscope is not None else b"")
    for f in fields:
        ie, ln = f[0], f[1]
        pen = f[2] if len(f) > 2 else 0
        out += struct.pack(">HH", ie | (0x8000 if pen else 0), ln) + (struct.pack(">I", pen) if pen else b"")
    return out


FLOW = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 4), (2, 4)]


def flow_rec(src=0x0A000001, dst=0xCB007105, sp=40000, dp=443, proto=6, by=1000, pk=10):
    return struct.pack(">IIHHBII", src, dst, sp, dp, proto, by, pk)


def v5(count, nrec=None, version=5):
    nrec = count if nrec is None else nrec
    hdr = struct.pack(">HHIIIIBBH", version, count, 1000, 1_700_000_000, 0, 0, 0, 0, 0)
    return hdr + bytes(48) * nrec


# ---------------------------------------------------------------------------- v5 (48, 49)
@pytest.mark.parametrize("count,nrec,reason,counted", [
    (0, 0, "v5_bad_count", 0),
    (31, 31, "v5_bad_count", 0),
    (65535, 30, "v5_bad_count", 0),
    (30, 2, "v5_truncated", 2),     # count says 30, two records fit: the datagram is quarantined whole,
    (1, 0, "v5_truncated", 0),      # and the two complete records are counted, never written
])
def test_v5_bad_counts(count, nrec, reason, counted):
    res, dec = decode(v5(count, nrec))
    assert res.reasons == [reason]
    assert res.table.num_rows == 0
    assert dec.counters[reason] == 1
    assert dec.counters["records_quarantined"] == counted


def test_v5_longer_than_count_is_trailing_not_records():
    res, dec = decode(v5(2, 3)[:-10])   # 2 records + 38 extra bytes
    assert res.table.num_rows == 2 and res.reasons == ["ok"]
    assert dec.counters["trailing_bytes"] == 1


@pytest.mark.parametrize("data,reason", [
    (b"", "short_datagram"), (b"\x00", "short_datagram"), (b"\x00\x05\x00", "short_datagram"),
    (b"\x00\x05\x00\x01" + bytes(10), "short_datagram"),
    (struct.pack(">HH", 7, 1) + bytes(40), "bad_version"),
    (struct.pack(">HH", 0xFFFF, 0xFFFF) + bytes(40), "bad_version"),
])
def test_short_and_wrong_version(data, reason):
    res, dec = decode(data)
    assert res.reasons == [reason] and res.table.num_rows == 0
    assert dec.counters[reason] == 1


# ---------------------------------------------------------------------------- sets (50, 51, 62)
def test_zero_length_set_aborts_packet():
    good = set_(2, tpl(256, FLOW)) + set_(256, flow_rec())
    bad = struct.pack(">HH", 256, 0) + flow_rec()   # length 0 followed by non-zero bytes
    res, dec = decode(ipfix(good, bad))
    assert res.reasons == ["set_length_zero"]
    assert res.table.num_rows == 0                  # a quarantined datagram writes no flows ...
    assert dec.counters["set_length_zero"] == 1
    assert dec.counters["records_quarantined"] == 1  # ... the record before the bad set is counted


def test_zero_padding_after_last_set_is_not_an_error():
    """Palo Alto 8.1 style: one flowset in a zero-filled 1400-byte v9 packet."""
    res, dec = decode(v9(set_(0, tpl(256, FLOW)), set_(256, flow_rec()), bytes(1400)))
    assert res.reasons == ["ok"] and res.table.num_rows == 1
    assert dec.counters["zero_padding"] == 1


@pytest.mark.parametrize("slen,reason", [(1, "set_too_short"), (3, "set_too_short"), (4000, "set_past_end")])
def test_set_length_below_4_or_past_end(slen, reason):
    res, dec = decode(ipfix(set_(2, tpl(256, FLOW)), set_(256, flow_rec(), length=slen)))
    assert res.reasons == [reason] and res.table.num_rows == 0
    assert dec.counters[reason] == 1


@pytest.mark.parametrize("length", [0, 8, 15, 10_000, 65535])
def test_ipfix_message_length_outside_16_to_datagram(length):
    res, dec = decode(ipfix(set_(2, tpl(256, FLOW)), set_(256, flow_rec()), length=length))
    assert res.reasons == ["message_length"] and res.table.num_rows == 0
    assert dec.counters["message_length"] == 1
    assert dec.template_count == 0


def test_reserved_set_ids_skipped_and_padding_never_read():
    pad_rec = flow_rec() + b"\x00" * 3          # 3 bytes of padding: shorter than one record
    res, dec = decode(ipfix(set_(2, tpl(256, FLOW)), set_(7, b"\xff" * 12), set_(255, b""), set_(256, pad_rec)))
    assert res.reasons == ["ok"] and res.table.num_rows == 1
    assert dec.counters["reserved_set"] == 2


def test_glued_messages_in_one_datagram():
    m1 = ipfix(set_(2, tpl(256, FLOW)), set_(256, flow_rec(sp=1)))
    m2 = ipfix(set_(256, flow_rec(sp=2) + flow_rec(sp=3)), seq=1)
    v9a = v9(set_(0, tpl(300, FLOW)), set_(300, flow_rec(sp=4)), count=2)
    v9b = v9(set_(300, flow_rec(sp=5)), count=1, seq=1)
    res, dec = decode([m1 + m2, v9a + v9b, v5(1) + v5(2)])
    assert res.reasons == ["ok", "ok", "ok"]
    assert sorted(res.numeric["src_port"].tolist()) == [0, 0, 0, 1, 2, 3, 4, 5]
    assert dec.counters["glued_messages"] == 3


# ---------------------------------------------------------------------------- templates (52-56, 59)
def test_field_count_zero_withdraws_and_is_never_stored():
    dec = NetflowDecoder()
    decode(ipfix(set_(2, tpl(256, FLOW))), dec)
    assert dec.template_count == 1
    res, _ = decode(ipfix(set_(2, struct.pack(">HH", 256, 0)), set_(256, flow_rec())), dec)
    assert dec.template_count == 0 and res.table.num_rows == 0
    assert dec.counters["template_field_count_zero"] == 1 and dec.counters["template_withdrawn"] == 1
    # v9: a template record with field count 0 is also a withdrawal, never a stored template
    decode(v9(set_(0, struct.pack(">HH", 400, 0))), dec)
    assert dec.template_count == 0 and dec.counters["template_field_count_zero"] == 2


def test_withdraw_all_templates_of_a_domain():
    dec = NetflowDecoder()
    decode(ipfix(set_(2, tpl(256, FLOW) + tpl(257, FLOW))), dec)
    decode(ipfix(set_(2, tpl(256, FLOW)), domain=2), dec)
    res, _ = decode(ipfix(set_(2, struct.pack(">HH", 2, 0)), set_(256, flow_rec()), set_(257, flow_rec())), dec)
    assert res.table.num_rows == 0 and dec.counters["template_withdraw_all"] == 1
    res, _ = decode(ipfix(set_(256, flow_rec()), domain=2), dec)   # another domain is untouched
    assert res.table.num_rows == 1


def test_all_zero_length_fields_template_is_rejected_without_looping():
    zero = [(8, 0), (12, 0), (1, 0)]
    res, dec = decode(ipfix(set_(2, tpl(256, zero)), set_(256, bytes(64))))
    assert dec.template_count == 0 and res.table.num_rows == 0
    assert dec.counters["template_zero_length"] == 1
    assert res.reasons == ["template_zero_length"]
    assert dec.held == 0                            # its datagram is quarantined: the set is counted,
    assert dec.counters["sets_quarantined"] == 1    # never held for a later template


def test_variable_length_overflow_rejected():
    fields = FLOW + [(82, 0xFFFF)]
    long_form = flow_rec() + b"\xff" + struct.pack(">H", 5000) + b"x" * 10     # claims 5000 bytes
    short_form = flow_rec() + b"\x40" + b"y" * 3                               # claims 64 bytes
    for body in (long_form, short_form, flow_rec() + b"\xff\x00"):
        res, dec = decode(ipfix(set_(2, tpl(256, fields)), set_(256, body)))
        assert res.reasons == ["varlen_overflow"] and res.table.num_rows == 0
        assert dec.counters["varlen_overflow"] == 1
    ok = flow_rec() + b"\xff" + struct.pack(">H", 300) + b"z" * 300 + flow_rec(sp=7) + b"\x00"
    res, _ = decode(ipfix(set_(2, tpl(256, fields)), set_(256, ok)))
    assert res.reasons == ["ok"] and res.numeric["src_port"].tolist() == [40000, 7]


def test_ipv4_field_declared_50_bytes():
    fields = [(8, 50), (12, 4), (1, 4)]
    body = b"A" * 50 + struct.pack(">II", 0x08080808, 77)
    res, dec = decode(ipfix(set_(2, tpl(256, fields)), set_(256, body)))
    assert dec.counters["bad_field_length"] == 1
    (row,) = res.table.to_pylist()
    # the 50-byte field is skipped by its declared length, never interpreted or copied
    assert row["dst_addr"] == "8.8.8.8" and row["src_addr"] == "0.0.0.0" and row["bytes"] == 77


def test_options_scope_zero_or_wrapping_length():
    # IPFIX: scope field count 0
    res, dec = decode(ipfix(set_(3, tpl(300, [(149, 4), (34, 4)], nscope=0))))
    assert res.reasons == ["options_scope_invalid"] and dec.template_count == 0
    # IPFIX: scope count > field count
    res, dec = decode(ipfix(set_(3, tpl(300, [(149, 4)], nscope=5))))
    assert res.reasons == ["options_scope_invalid"]
    # v9: scope length 0, and scope+option lengths that would wrap a uint16
    for scope_len, opt_len in ((0, 8), (0xFFFC, 0x0008), (4, 0xFFFC), (6, 4)):
        body = struct.pack(">HHH", 300, scope_len, opt_len) + struct.pack(">HHHH", 1, 4, 34, 4)
        res, dec = decode(v9(set_(1, body)))
        assert res.reasons == ["options_scope_invalid"], (scope_len, opt_len)
        assert dec.template_count == 0 and dec.counters["options_scope_invalid"] == 1


def test_zero_size_subtemplatemultilist_is_opaque():
    """IE 293 (subTemplateMultiList) is variable length and skipped as opaque bytes: a zero-size
    entry cannot make the decoder loop."""
    fields = FLOW + [(293, 0xFFFF)]
    body = (flow_rec() + b"\x03" + b"\x00\x00\x00") * 3   # each stML: semantic byte + a 0-length entry
    res, dec = decode(ipfix(set_(2, tpl(256, fields)), set_(256, body)))
    assert res.reasons == ["ok"] and res.table.num_rows == 3


def test_truncated_template_and_bad_template_id():
    fields = tpl(256, FLOW)
    res, dec = decode(ipfix(set_(2, fields[:-3])))
    assert res.reasons == ["template_truncated"] and dec.template_count == 0
    res, dec = decode(ipfix(set_(2, tpl(12, FLOW))))
    assert res.reasons == ["template_id_invalid"] and dec.template_count == 0


def test_template_with_too_many_fields_is_skipped():
    fields = [(1, 1)] * 300
    res, dec = decode(ipfix(set_(2, tpl(256, fields) + tpl(257, FLOW)), set_(257, flow_rec())))
    assert dec.counters["template_too_many_fields"] == 1
    # the datagram is quarantined (its record counted, not written), but the next template of the
    # set is still read: the exporter's next datagram decodes
    assert res.reasons == ["template_too_many_fields"] and res.table.num_rows == 0
    assert dec.counters["records_quarantined"] == 1
    res, _ = decode(ipfix(set_(257, flow_rec()), seq=1), dec)
    assert res.reasons == ["ok"] and res.table.num_rows == 1


def test_redefined_template_uses_new_layout():
    dec = NetflowDecoder()
    decode(ipfix(set_(2, tpl(256, FLOW)), set_(256, flow_rec(sp=1))), dec)
    swapped = [(7, 2), (11, 2), (8, 4), (12, 4), (4, 1), (1, 4), (2, 4)]
    rec = struct.pack(">HHIIBII", 5, 6, 0x01020304, 0x05060708, 17, 9, 1)
    res, _ = decode(ipfix(set_(2, tpl(256, swapped)), set_(256, rec)), dec)
    (row,) = res.table.to_pylist()
    assert (row["src_port"], row["dst_port"], row["src_addr"], row["protocol"]) == (5, 6, "1.2.3.4", 17)
    assert dec.counters["templates_updated"] == 1


def test_restart_redefinition_and_a_set_waiting_for_the_old_template():
    """An exporter the collector joins mid-stream (data before any template), then its templates,
    then a restart that re-sends id 256 with another layout.  The early set is decoded with the
    first definition (when it arrives), the later ones with the new one -- in one batch and in one
    batch per datagram alike -- and the redefinition is counted."""
    swapped = [(7, 2), (11, 2), (8, 4), (12, 4), (4, 1), (1, 4), (2, 4), (10, 4)]   # 25-byte records

    def rec_b(sp):
        return struct.pack(">HHIIBIII", sp, 443, 0x0A000009, 0xCB007109, 17, 5, 1, 3)

    stream = [
        ipfix(set_(256, flow_rec(sp=1) + flow_rec(sp=2) + flow_rec(sp=3)), seq=10),   # joined mid-stream
        ipfix(set_(2, tpl(256, FLOW)), set_(256, flow_rec(sp=4)), seq=13),
        ipfix(set_(2, tpl(256, swapped)), set_(256, rec_b(5) + rec_b(6)), seq=0),   # restart
        ipfix(set_(256, rec_b(7)), seq=2),
    ]
    for split in (False, True):
        dec = NetflowDecoder()
        rows = []
        for part in ([[d] for d in stream] if split else [stream]):
            res, _ = decode(part, dec)
            assert not res.status.any()
            rows += res.table.to_pylist()
        got = sorted((r["src_port"], r["dst_port"], r["src_addr"], r["protocol"], r["bytes"]) for r in rows)
        assert got == [(1, 443, "10.0.0.1", 6, 1000), (2, 443, "10.0.0.1", 6, 1000), (3, 443, "10.0.0.1", 6, 1000),
                       (4, 443, "10.0.0.1", 6, 1000), (5, 443, "10.0.0.9", 17, 5), (6, 443, "10.0.0.9", 17, 5),
                       (7, 443, "10.0.0.9", 17, 5)], split
        c = dec.counters
        assert (c["templates_updated"], c["held_decoded"], c["missing_template"], c["records_truncated"]) == (1, 1, 0, 0)


def test_template_key_is_exporter_and_domain_never_port():
    """Same template id from two exporters and two domains: four independent layouts."""
    dec = NetflowDecoder()
    a = ipfix(set_(2, tpl(256, FLOW)), domain=1)
    b = ipfix(set_(2, tpl(256, [(7, 2), (11, 2)])), domain=2)
    decode([a, b, a, b], dec, exporter=["192.0.2.1", "192.0.2.1", "192.0.2.2", "192.0.2.2"])
    assert dec.template_count == 4
    res, _ = decode([ipfix(set_(256, struct.pack(">HH", 1, 2)), domain=2)], dec, exporter="192.0.2.2")
    assert res.table.to_pylist()[0]["dst_port"] == 2
    res, _ = decode([ipfix(set_(256, flow_rec()), domain=1)], dec, exporter="192.0.2.3")  # unknown exporter
    assert res.table.num_rows == 0 and dec.held == 1


# ---------------------------------------------------------------------------- floods (58, 60) and memory
def test_template_flood_held_at_cap():
    dec = NetflowDecoder(template_capacity=1024)
    shapes = {k: v.shape for k, v in dec.reg.items()}
    rng = random.Random(5)
    per_dgram = 100
    dgrams, exps = [], []
    for i in range(1000):   # 100k templates across domains and spoofed exporters
        recs = b"".join(tpl(256 + j, FLOW) for j in range(per_dgram))
        dgrams.append(ipfix(set_(2, recs), domain=rng.randrange(1 << 32)))
        exps.append(f"10.{i % 250}.{i // 250}.1")
    dgrams.append(ipfix(set_(2, tpl(256, FLOW)), set_(256, flow_rec()), domain=7))
    exps.append("192.0.2.200")
    res, _ = decode(dgrams, dec, exporter=exps)
    assert res.table.num_rows == 1                                    # the freshest template still works
    assert dec.template_count == 1024
    assert dec.counters["templates_added"] == 100_001
    assert dec.counters["template_evicted"] == 100_001 - 1024
    assert {k: v.shape for k, v in dec.reg.items()} == shapes         # registry memory is fixed
    assert len(dec.templates()) == 1024


def test_domain_flood_evicts_domain_state():
    """Spoofed observation domains beyond the domain table: state is evicted (counted) and a
    template whose domain state was evicted is never used with a stale withdraw generation."""
    dec = NetflowDecoder(domain_capacity=64, template_capacity=256)
    dgrams = [ipfix(set_(2, tpl(256, FLOW)), set_(256, flow_rec()), domain=d) for d in range(1000)]
    res, _ = decode(dgrams, dec)
    assert res.table.num_rows == 1000 and not res.status.any()
    assert dec.counters["domain_evicted"] >= 1000 - 64
    assert int(dec.reg["dmeta"][:, K.DM_USED].sum()) == 64


def test_pipeline_batch_keys_are_exporters():
    from flowaudit.pipeline import Batch

    a = ipfix(set_(2, tpl(256, FLOW)), set_(256, flow_rec(sp=1)))
    b = ipfix(set_(256, flow_rec(sp=2)), seq=1)
    batch = Batch.from_values([a, b, a, None], 0, sources=["netflow"], partition=[0, 0, 1, 1],
                              offset=[5, 6, 7, 8], keys=[b"192.0.2.1", b"192.0.2.1", b"192.0.2.2", None])
    res = NetflowDecoder().decode_batch(batch)
    rows = res.table.to_pylist()
    assert [(r["exporter"], r["src_port"], r["offset"], r["partition"]) for r in rows] == [
        ("192.0.2.1", 1, 5, 0), ("192.0.2.1", 2, 6, 0), ("192.0.2.2", 1, 7, 1)]
    assert res.reasons == ["ok", "ok", "ok", "short_datagram"]   # the tombstone


def test_data_flood_without_templates_is_bounded_and_counted():
    dec = NetflowDecoder(max_held_sets=100, max_held_bytes=64 << 10)
    dgrams = [ipfix(set_(300 + i % 50, bytes(1000)), domain=i) for i in range(5000)]
    res, _ = decode(dgrams, dec)
    assert res.table.num_rows == 0 and not res.status.any()
    assert dec.held <= 100 and dec._hbuf.nbytes <= 64 << 10
    assert dec.counters["missing_template"] + dec.held == 5000
    dec.flush()
    assert dec.counters["missing_template"] == 5000 and dec.held == 0


def test_held_set_expires_by_exporter_time():
    dec = NetflowDecoder(hold_seconds=60)
    decode(ipfix(set_(256, flow_rec()), secs=1000), dec)
    assert dec.held == 1
    decode(ipfix(set_(2, tpl(999, FLOW)), secs=1100), dec)   # 100 s later, still no template 256
    assert dec.held == 0 and dec.counters["missing_template"] == 1


def test_held_set_decoded_in_a_later_batch_keeps_its_provenance():
    dec = NetflowDecoder()
    offsets = np.array([0, 0], np.int64)
    data = ipfix(set_(256, flow_rec(sp=77)))
    offsets[1] = len(data)
    dec.decode_result(np.frombuffer(data, np.uint8), offsets, ["192.0.2.5"], [0], sources=["topicA"],
                      partition=[3], offset=[41], ts_ms=[123])
    data2 = ipfix(set_(2, tpl(256, FLOW)), seq=1)
    res = dec.decode_result(np.frombuffer(data2, np.uint8), np.array([0, len(data2)]), ["192.0.2.5"], [0],
                            sources=["topicA"], partition=[3], offset=[42], ts_ms=[124])
    (row,) = res.table.to_pylist()
    assert (row["src_port"], row["source"], row["partition"], row["offset"], row["ts_ms"]) == (77, "topicA", 3, 41, 123)
    assert res.numeric["dgram"].tolist() == [-1]
    assert dec.counters["held_decoded"] == 1


def test_sequence_gaps_and_restarts_only_count():
    dec = NetflowDecoder()
    msgs = [ipfix(set_(2, tpl(256, FLOW)), set_(256, flow_rec()), seq=0),
            ipfix(set_(256, flow_rec()), seq=1),             # in order
            ipfix(set_(256, flow_rec()), seq=50),            # gap
            ipfix(set_(256, flow_rec()), seq=0xFFFFFFFF),    # jump
            ipfix(set_(256, flow_rec()), seq=0),             # 2^32 wrap: in order
            ipfix(set_(256, flow_rec()), seq=0)]             # restart
    res, _ = decode(msgs, dec)
    assert res.table.num_rows == 6 and not res.status.any()
    assert dec.counters["sequence_gap"] == 3


def test_every_record_is_decoded_or_counted():
    """Hostile shapes, each data set holding exactly one record so that sets and records count
    alike: records put in == rows out + records_quarantined + sets dropped for want of a template
    (missing_template, after flush) + sets of quarantined datagrams (sets_quarantined) + records
    that cannot be delimited (varlen_overflow).  Bytes after a set header that cannot be delimited
    (length 0, past the end) are no records: the datagram is quarantined whole, raw bytes kept."""
    one = flow_rec()
    shapes = [
        ([ipfix(set_(2, tpl(256, FLOW)), set_(256, one))], 1),                            # plain
        ([ipfix(set_(256, one), set_(2, tpl(256, FLOW)))], 1),                            # data before template
        ([ipfix(set_(300, one))], 1),                                                     # template never comes
        ([ipfix(set_(2, tpl(256, FLOW)), set_(256, one), struct.pack(">HH", 256, 0) + one)], 1),  # length 0 after
        ([ipfix(set_(2, tpl(256, FLOW)), set_(256, one), set_(256, one, length=4000))], 1),     # set past end
        ([ipfix(set_(301, one), set_(2, tpl(256, FLOW)), set_(256, one), set_(2, tpl(12, FLOW)))], 2),  # bad tid
        ([v5(30, 2)], 2), ([v5(1) + v5(2)], 3),                                           # v5 truncated / glued
        ([v9(set_(0, tpl(256, FLOW)), set_(256, one), bytes(40))], 1),                     # zero padding
        ([ipfix(set_(2, tpl(256, FLOW + [(82, 0xFFFF)])), set_(256, one + b"\xff\x00"))], 1),  # varlen overflow
        ([ipfix(set_(256, one), secs=1000), ipfix(set_(2, tpl(999, FLOW)), secs=2000)], 1),  # held set ages out
        ([ipfix(set_(2, tpl(256, FLOW)), set_(256, one + one + one))], 3),
    ]
    for datagrams, present in shapes:
        dec = NetflowDecoder()
        rows = 0
        for d in datagrams:
            res, _ = decode(d, dec)
            rows += res.table.num_rows
        dec.flush()
        c = dec.counters
        counted = c["records_quarantined"] + c["missing_template"] + c["sets_quarantined"] + c["varlen_overflow"]
        assert rows + counted == present, (datagrams, rows, {k: v for k, v in c.items() if v})
    # and on the mutated corpus: every row comes from a decoded record, and a quarantined datagram
    # contributes none
    base = _corpus_datagrams(200)
    rng = random.Random(7)
    dec = NetflowDecoder()
    decode(base, dec)
    batch = [mutate(rng, rng.choice(base)) for _ in range(400)]
    before = dict(dec.counters)
    res, _ = decode(batch, dec)
    decoded = dec.counters["flow_records"] - before["flow_records"]
    dropped = dec.counters["records_quarantined"] - before["records_quarantined"]
    assert res.table.num_rows == decoded - dropped
    bad = set(np.flatnonzero(res.status).tolist())
    assert not bad & set(res.numeric["dgram"].tolist())


def test_exported_state_is_bounded_and_checked():
    """Decoder state for a restart: a smaller decoder keeps the most recently used templates (the
    rest counted as evicted) and decodes with them; malformed state raises ValueError and leaves the
    decoder as it was."""
    a = NetflowDecoder()
    for tid in range(256, 266):
        decode(ipfix(set_(2, tpl(tid, FLOW)), domain=3), a)
    decode(ipfix(set_(300, flow_rec(sp=9)), domain=3), a)           # held
    meta, arrays = a.export_state()
    b = NetflowDecoder(template_capacity=4)
    b.import_state(meta, arrays)
    assert [t["template_id"] for t in b.templates()] == [262, 263, 264, 265]
    assert b.counters["template_evicted"] == 6 and b.held == 1
    res, _ = decode(ipfix(set_(265, flow_rec(sp=1)), set_(2, tpl(300, FLOW)), domain=3, seq=1), b)
    assert sorted(res.numeric["src_port"].tolist()) == [1, 9]
    for bad in (dict(arrays, tmeta=arrays["tmeta"][:, :3]), dict(arrays, hoff=arrays["hoff"] + 1),
                dict(arrays, dmeta=np.zeros((2, 3), np.int64))):
        c = NetflowDecoder()
        with pytest.raises(ValueError):
            c.import_state(meta, bad)
        assert c.template_count == 0 and c.held == 0
    with pytest.raises(ValueError):
        NetflowDecoder().import_state({"exporters": "x"}, arrays)


def test_exporter_table_bounded():
    dec = NetflowDecoder(max_exporters=100)
    for i in range(5):
        exps = [f"10.0.{i}.{j}" for j in range(100)]
        decode([v5(1)] * 100, dec, exporter=exps)
    assert len(dec._exp_ids) <= 100


# ---------------------------------------------------------------------------- mutation fuzzing
def _corpus_datagrams(limit=400):
    from flowaudit.sources.pcap import read_datagrams

    pcaps = sorted(p for p in CORPUS_NF.glob("public/*/*.pcap"))
    dg = read_datagrams(pcaps)
    out = [bytes(dg.buf[dg.offsets[i]:dg.offsets[i + 1]]) for i in range(min(len(dg), limit))]
    return out


def mutate(rng: random.Random, d: bytes) -> bytes:
    b = bytearray(d)
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(5)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and len(b) > 4:
            p = rng.randrange(len(b) - 1)
            b[p:p + 2] = rng.choice([b"\x00\x00", b"\xff\xff", b"\x00\x04", b"\x00\x01", b"\x01\x00"])
        elif op == 2:
            b = b[:rng.randrange(len(b) + 1)]
        elif op == 3:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        elif op == 4 and len(b) > 8:
            p = rng.randrange(len(b) - 4)
            b[p:p + 4] = struct.pack(">I", rng.choice([0, 0xFFFFFFFF, 0x80000000, 0xFFFF]))
    return bytes(b)


def test_mutated_corpus_never_crashes():
    """Bit flips, length overwrites, truncations and junk on real export datagrams (templates
    first, so that mutated data sets hit real layouts): counted, bounded, no exception."""
    base = _corpus_datagrams()
    rng = random.Random(1234)
    dec = NetflowDecoder(template_capacity=256)
    decode(base, dec)
    total = 0
    for _ in range(20):
        batch = [mutate(rng, rng.choice(base)) for _ in range(500)]
        res, _ = decode(batch, dec)
        nbytes = sum(len(x) for x in batch)
        total += res.table.num_rows
        assert res.table.num_rows <= nbytes   # every record is at least one byte of input
        assert dec.held <= dec.max_held_sets
    assert dec.counters["datagrams"] == len(base) + 20 * 500


@pytest.mark.slow
def test_mutated_corpus_with_numba_boundscheck(tmp_path):
    """Replay the mutation corpus with NUMBA_BOUNDSCHECK=1 (reliability.md section 6): an
    out-of-bounds access in the kernel raises IndexError instead of reading garbage."""
    script = textwrap.dedent(f"""
        import random, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_netflow_hostile import _corpus_datagrams, mutate, decode
        from test_netflow_kernel import gen_stream
        from flowaudit.decode.netflow import NetflowDecoder
        base = _corpus_datagrams()
        rng = random.Random(99)
        dec = NetflowDecoder(template_capacity=64)
        decode(base, dec)
        for _ in range(10):
            decode([mutate(rng, rng.choice(base)) for _ in range(300)], dec)
        for s in range(100):
            r = random.Random(s)
            decode([d for _, d in gen_stream(r)], dec)
            decode([mutate(r, d) for _, d in gen_stream(r)], dec)
        print("ok", dec.counters["datagrams"])
    """)
    # bounds-checked machine code needs a cache of its own: the fuzz harness's (`flowaudit fuzz`,
    # tests/test_fuzz.py), so the NetFlow kernels are compiled bounds-checked once for both
    from flowaudit.fuzz import CACHE_DIR as cache
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(cache))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-3000:]
