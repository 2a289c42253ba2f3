"""Envelope integrity (issue 11 item 4): fragments refused with a reason, mismatches flagged,
duplicates flagged with bounded memory; the digest and "seen" kernels against Python references.

Every case of the hostile-input battery goes through the real Classifier (flowaudit/pipeline.py)
and is checked in the output tables: the quarantine row with its reason and raw bytes, or the
messages row with its ``flags``."""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flowaudit.decode import FLAG_BITS, FLAGS, FMT_EDIFACT, FMT_JSON, FMT_X12, flag_names
from flowaudit.integrity import Seen, flags_array, origins
from flowaudit.kernels import digest as D
from flowaudit.pipeline import Batch, Classifier
from flowaudit.protect import Protector

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
M64 = 2 ** 64 - 1
KEY = b"integrity-test-key-0123456789abcdef"


# =============================================================== digest kernel vs reference
def rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64


def ref_fmix(h):
    h ^= h >> 33
    h = (h * 0xC2B2AE3D27D4EB4F) & M64
    h ^= h >> 29
    h = (h * 0x165667B19E3779F9) & M64
    return h ^ (h >> 32)


def ref_hash(data: bytes) -> int:
    P1, P2, P4, P5 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5
    h = P5 ^ ((len(data) * P1) & M64)
    i = 0
    while i + 8 <= len(data):
        w = int.from_bytes(data[i:i + 8], "little")
        h ^= (rotl((w * P2) & M64, 31) * P1) & M64
        h = (rotl(h, 27) * P1 + P4) & M64
        i += 8
    for c in data[i:]:
        h ^= (c * P5) & M64
        h = (rotl(h, 11) * P1) & M64
    return ref_fmix(h) or 1


def batch_of(msgs):
    buf = np.frombuffer(b"".join(msgs), np.uint8).copy() if msgs else np.zeros(0, np.uint8)
    offs = np.zeros(len(msgs) + 1, np.int64)
    offs[1:] = np.cumsum([len(m) for m in msgs])
    return buf, offs


@SETTINGS
@given(st.lists(st.binary(max_size=80), min_size=1, max_size=6), st.data())
def test_payload_hash_matches_reference(msgs, data):
    buf, offs = batch_of(msgs)
    sel = data.draw(st.lists(st.integers(-2, len(msgs) + 1), max_size=8))   # out-of-range: hashed as empty
    got = D.payload_hash(buf, offs, np.asarray(sel, np.int64)).tolist()
    assert got == [ref_hash(msgs[i] if 0 <= i < len(msgs) else b"") for i in sel]


def test_payload_hash_tells_apart_and_repeats():
    msgs = [bytes([i % 7]) * (i % 40) + i.to_bytes(4, "little") for i in range(5000)]
    buf, offs = batch_of(msgs + msgs[:10])
    h = D.payload_hash(buf, offs, np.arange(len(msgs) + 10, dtype=np.int64))
    assert len(set(h[:5000].tolist())) == 5000 and h[5000:].tolist() == h[:10].tolist()


# =============================================================== seen table vs reference
class RefSeen:
    """Two generations of dicts key -> first origin, rotated after ``limit`` inserts."""

    def __init__(self, limit):
        self.limit, self.cur, self.prev = limit, {}, {}

    def update(self, keys, origins_):
        out = []
        for key, org in zip(keys, origins_):
            if key == 0:
                out.append(False)
                continue
            if key in self.cur:
                out.append(self.cur[key] != org)
                continue
            dup = key in self.prev and self.prev[key] != org
            org = self.prev.get(key, org)
            if len(self.cur) >= self.limit:
                self.prev, self.cur = self.cur, {}
            self.cur[key] = org
            out.append(dup)
        return out


@SETTINGS
@given(st.integers(2, 12), st.lists(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 3)), max_size=30),
                                    min_size=1, max_size=5))
def test_seen_matches_reference(entries, rounds):
    seen, ref = Seen(entries), RefSeen(entries // 2)
    for pairs in rounds:
        keys = np.array([k for k, _ in pairs], np.uint64)
        orgs = np.array([o for _, o in pairs], np.uint64)
        assert seen.update(keys, orgs).tolist() == ref.update(keys.tolist(), orgs.tolist())
    ck, co, pk, po = seen._t
    assert {int(k): int(o) for k, o in zip(ck, co) if k} == ref.cur
    assert {int(k): int(o) for k, o in zip(pk, po) if k} == ref.prev


def test_seen_is_bounded():
    seen = Seen(1000)
    sizes = [a.nbytes for a in seen._t]
    keys = np.arange(1, 100_001, dtype=np.uint64)
    assert not seen.update(keys, keys).any()
    assert [a.nbytes for a in seen._t] == sizes                       # memory fixed
    assert seen.update(keys[-500:], keys[-500:] + 1).all()            # the last entries/2 are remembered
    assert not seen.update(keys[:1000], keys[:1000] + 1).any()        # old ones are forgotten
    bad = np.zeros(4, np.uint64)                                      # malformed tables: no flags, no write
    assert not D.seen_update(keys, keys, bad, bad, bad, bad, np.array([0, 8], np.int64)).any()


def test_one_table_keeps_payloads_and_interchange_refs_apart():
    seen = Seen(64)
    ref = np.array([5, 0, 7], np.uint64)
    payload = np.array([7, 8, 5], np.uint64)     # the same numbers as the refs: another kind of key
    dp, dr = seen.update_pair(payload, ref, np.array([1, 2, 3], np.uint64))
    assert not dp.any() and not dr.any()         # a payload never matches an interchange ref
    dp, dr = seen.update_pair(payload, ref, np.array([11, 12, 13], np.uint64))
    assert dp.tolist() == [True, True, True]
    assert dr.tolist() == [True, False, True]    # 0: no reference, never a duplicate
    dp, dr = seen.update_pair(payload[:1], ref[:1], np.array([1], np.uint64))
    assert not dp.any() and not dr.any()         # the first origin again: a re-delivery


def _rss_anon_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def test_trim_gives_the_arenas_free_pages_back():
    import platform

    from flowaudit.memory import trim

    if platform.libc_ver()[0] != "glibc":
        assert trim() is False
        return
    blocks = [bytearray(b"x" * 100_000) for _ in range(800)]   # 80 MB of heap blocks (below mmap's threshold)
    keep = blocks[::16]                                       # every 16th stays: holes glibc keeps by itself
    del blocks
    before = _rss_anon_kib()
    trim()
    after = _rss_anon_kib()
    assert before - after > 40_000, (before, after)          # most of the 75 MB of holes went back
    assert len(keep) == 50


_HEAP_PROBE = """
import resource, sys
import numpy as np
from flowaudit.memory import COMMANDS, fix_mmap_threshold
if sys.argv[1] != "inherited":       # inherited: the heap from the environment the parent set
    assert fix_mmap_threshold(*COMMANDS[sys.argv[1]][0])
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):                 # a batch pipeline's 2 MB buffers: allocated, filled, freed
    a = np.ones(2 << 20, np.uint8)
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_batch_heap_reuses_pages_the_stream_heap_hands_back():
    """``flowaudit audit`` keeps mid-sized blocks in glibc's heaps (flowaudit/memory.py): a freed
    2 MB buffer's pages serve the next one.  The stream's 128 KiB threshold maps and faults every
    such buffer afresh (200 x 512 pages), for the lowest RSS."""
    import platform
    import subprocess
    import sys

    from flowaudit.memory import fix_mmap_threshold

    if platform.libc_ver()[0] != "glibc":
        assert fix_mmap_threshold() is False
        return
    faults = {c: int(subprocess.run([sys.executable, "-c", _HEAP_PROBE, c], capture_output=True, text=True,
                                    timeout=120, check=True).stdout) for c in ("stream", "audit")}
    assert faults["stream"] > 200 * 512 * 0.9, faults
    assert faults["audit"] < 200 * 512 * 0.1, faults


def test_a_command_s_heap_reaches_the_processes_it_starts():
    """Dask's LocalCluster workers are processes the audit starts: ``for_command`` hands them its
    heap through the environment (glibc's variables), so a worker reuses its freed pages as the
    driver does; a process started without it maps and faults each 2 MB buffer afresh."""
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's heap variables")
    parent = ("import subprocess, sys\n"
              "from flowaudit.memory import for_command\n"
              "for_command(sys.argv[1])\n"
              "r = subprocess.run([sys.executable, '-c', sys.argv[2], 'inherited'], capture_output=True, text=True,"
              " timeout=120, check=True)\n"
              "print(r.stdout.strip())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    faults = {c: int(subprocess.run([sys.executable, "-c", parent, c, _HEAP_PROBE], capture_output=True, text=True,
                                    timeout=180, check=True, env=env).stdout) for c in ("stream", "audit")}
    assert faults["audit"] < 200 * 512 * 0.1, faults
    assert faults["stream"] > 200 * 512 * 0.9, faults


_POOL_PROBE = """
import sys
from flowaudit.memory import arrow_pool
if sys.argv[1] == "early":
    arrow_pool(default="system")
elif sys.argv[1] == "cli":          # flowaudit scan: its parser imports pyarrow; the pool is chosen before
    import contextlib, io
    from flowaudit.cli import main
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(["scan", "--help"])
    assert "pyarrow" in sys.modules
import pyarrow as pa, pyarrow.dataset as ds, pyarrow.parquet as pq
if sys.argv[1] == "late":
    arrow_pool(default="system")
pq.write_table(pa.table({"x": list(range(200_000))}), sys.argv[2], compression="zstd")
t = ds.dataset(sys.argv[2]).to_table()
assert t.num_rows == 200_000
print(pa.mimalloc_memory_pool().max_memory(), pa.system_memory_pool().max_memory(),
      pa.jemalloc_memory_pool().max_memory() if "jemalloc" in pa.supported_memory_backends() else 1)
"""


@pytest.mark.skipif("mimalloc" not in __import__("pyarrow").supported_memory_backends(), reason="no mimalloc")
def test_arrow_pool_before_pyarrow_import_is_arrows_own_default_too(tmp_path):
    """``flowaudit stream``, ``audit`` and ``scan`` choose their Arrow pool before pyarrow is
    imported, so that the Parquet writer's and the dataset scanner's own allocations come from it
    too, not from mimalloc (whose arena kept up to 60 MB of freed pages by the end of a
    1M-message stream)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    got = {}
    for when in ("early", "cli", "late"):
        out = subprocess.run([sys.executable, "-c", _POOL_PROBE, when, str(tmp_path / f"{when}.parquet")], env=env,
                             capture_output=True, text=True, timeout=120, check=True).stdout.split()
        got[when] = tuple(map(int, out))
    assert got["early"][0] == 0 and got["early"][1] > 0, got      # everything in the system pool
    assert got["cli"][0] == 0 and got["cli"][2] > 0, got          # scan: everything in jemalloc
    assert got["late"][0] > 0, got                                # after the import, Arrow's C++ side keeps mimalloc


_LLVM_PROBE = """
import numba
from flowaudit.memory import LLVM_LIBRARY, _clean_file_ranges, release_library_pages

@numba.njit(cache=False)
def first(n):
    return sum(range(n))

assert first(10) == 45                      # a compile: LLVM's code runs
before = sum(r for _lo, _hi, r in _clean_file_ranges(LLVM_LIBRARY))
released = release_library_pages()
after = sum(r for _lo, _hi, r in _clean_file_ranges(LLVM_LIBRARY))
assert first(100) == 4950                   # compiled code runs without LLVM's pages

@numba.njit(cache=False)
def second(a, b):
    return a * b + 1

assert second(6, 7) == 43                   # and LLVM faults back what another compile needs
again = sum(r for _lo, _hi, r in _clean_file_ranges(LLVM_LIBRARY))
print(before, released, after, again)
"""


def test_llvm_pages_released_and_faulted_back():
    """The stream hands libllvmlite's resident text back once its kernels are loaded
    (``release_library_pages``): the pages leave the process, compiled code still runs, and a
    later compile faults back what it needs.  Only read-only mappings without private pages are
    touched (the library's relocated and writable segments keep their pages)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _LLVM_PROBE], capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    before, released, after, again = map(int, out)
    assert before > 8 << 20, out                    # a compile touched megabytes of LLVM
    assert released == before, out
    assert after < 1 << 20, out                     # gone from this process
    assert again > after, out                       # the second compile read LLVM again


def test_flags_array_round_trip():
    masks = np.array([0, 1, FLAG_BITS["duplicate_payload"] | FLAG_BITS["unt_count_mismatch"], 2 ** len(FLAGS) - 1],
                     np.uint32)
    assert flags_array(masks).to_pylist() == [flag_names(int(m)) for m in masks]
    assert flags_array(masks).to_pylist()[0] == []


def test_origins_differ_by_source_partition_offset():
    o = origins(["a", "b"], np.array([0, 1, 0, 0]), np.array([0, 0, 1, 0]), np.array([5, 5, 5, 6]))
    assert len(set(o.tolist())) == 4
    assert origins(["a"], np.array([0]), np.array([0]), np.array([5]))[0] == o[0]


# =============================================================== the battery through the Classifier
UNB = b"UNB+UNOA:2+SENDER:ZZ+RECV+260301:1200+REF1'"
MSG = b"UNH+1+CODECO:D:95B:UN'EQD+CN+MSCU1234565'UNT+3+1'"
EDI = UNB + MSG + b"UNZ+1+REF1'"


def isa(ctrl=b"000000001", sender=b"SENDER         "):
    return (b"ISA*00*          *00*          *ZZ*" + sender + b"*ZZ*RECV           *260301*1200*U*00401*" + ctrl
            + b"*0*P*>~")


GROUP = b"GS*QO*S*R*20260301*1200*7*X*004010~ST*315*0001~B4***D*20260301*1200*USLAX*MSCU*123456*5~SE*3*0001~GE*1*7~"
X12 = isa() + GROUP + b"IEA*1*000000001~"


def run(values, fmts, clf=None, offsets=None):
    clf = clf or Classifier(Protector(KEY))
    b = Batch.from_values(values, fmts, offset=offsets)
    return clf.run(b)


def reasons(r):
    return dict(zip(r.quarantine.column("offset").to_pylist(), r.quarantine.column("reason").to_pylist()))


def flags_of(r):
    return dict(zip(r.messages.column("offset").to_pylist(), r.messages.column("flags").to_pylist()))


@pytest.mark.parametrize("value, fmt, reason", [
    (UNB + MSG, FMT_EDIFACT, "unterminated_interchange"),                       # no UNZ
    (isa() + GROUP, FMT_X12, "unterminated_interchange"),                       # no IEA: the same rule
    (b"EQD+CN+MSCU1234565'UNT+2+1'UNZ+1+REF1'", FMT_EDIFACT, "headless_fragment"),
    (b"B4***D*20260301*1200*USLAX*MSCU*123456*5~SE*2*0001~GE*1*7~IEA*1*000000001~", FMT_X12, "headless_fragment"),
    (MSG + b"UNZ+1+REF1'", FMT_EDIFACT, "headless_fragment"),                   # second half, split at UNH
    (b"ST*315*0001~SE*2*0001~GE*1*7~IEA*1*000000001~", FMT_X12, "headless_fragment"),
    (EDI[:EDI.index(b"EQD")], FMT_EDIFACT, "unterminated_interchange"),          # first half, split mid-message
    (EDI + b"FTX+AAA+++TRAILING'", FMT_EDIFACT, "bad_envelope"),
    (X12 + b"N9*BM*123~", FMT_X12, "bad_envelope"),
    (MSG + EDI, FMT_EDIFACT, "bad_envelope"),                                   # bare message, then a UNB
    (EDI.replace(b"UNZ", b"UNB+UNOA:2+S+R+1:1+2'UNZ", 1), FMT_EDIFACT, "unterminated_interchange"),
    (isa().replace(b"*00*          ", b"*00*  ", 1) + GROUP + b"IEA*1*000000001~", FMT_X12, "bad_service_string"),
    (isa(sender=b"SENDER ") + GROUP + b"IEA*1*000000001~", FMT_X12, "bad_service_string"),
])
def test_fragments_are_quarantined_with_their_reason(value, fmt, reason):
    if reason == "bad_service_string" and b"*  *" in value:
        assert len(value[:value.index(b"~") + 1]) == 98                        # the battery's 98-byte ISA
    r = run([value, EDI if fmt == FMT_EDIFACT else X12], fmt)
    assert reasons(r) == {0: reason}
    from flowaudit.quarantine import open_row
    assert [open_row(Protector(KEY), row)[1] for row in r.quarantine.to_pylist()] == [value]   # kept, sealed
    assert r.hits.num_rows and set(r.hits.column("offset").to_pylist()) == {1}   # the fragment has no hits
    assert flags_of(r) == {1: []}


@pytest.mark.parametrize("old, new, fmt, flags", [
    (b"UNT+3+1", b"UNT+4+1", FMT_EDIFACT, ["unt_count_mismatch"]),
    (b"UNT+3+1", b"UNT+3+2", FMT_EDIFACT, ["unt_ref_mismatch"]),
    (b"UNZ+1+REF1", b"UNZ+2+REF1", FMT_EDIFACT, ["unz_count_mismatch"]),
    (b"UNZ+1+REF1", b"UNZ+1+REF2", FMT_EDIFACT, ["unz_ref_mismatch"]),
    (b"UNZ+1+REF1", b"UNZ+X+REF9", FMT_EDIFACT, ["unz_count_mismatch", "unz_ref_mismatch"]),
    (b"UNH+1+CODECO:D:95B:UN'", b"UNG+CODECO+S+R+260301:1200+G1'UNH+1+CODECO:D:95B:UN'", FMT_EDIFACT,
     ["envelope_nesting"]),                                                     # a group never closed
    (b"UNT+3+1'", b"UNT+3+1'UNE+2+G2'", FMT_EDIFACT, ["envelope_nesting"]),      # a trailer without header
    (b"SE*3*0001", b"SE*4*0001", FMT_X12, ["se_count_mismatch"]),
    (b"SE*3*0001", b"SE*3*0002", FMT_X12, ["se_ref_mismatch"]),
    (b"GE*1*7", b"GE*2*7", FMT_X12, ["ge_count_mismatch"]),
    (b"GE*1*7", b"GE*1*8", FMT_X12, ["ge_ref_mismatch"]),
    (b"IEA*1*000000001", b"IEA*2*000000001", FMT_X12, ["iea_count_mismatch"]),
    (b"IEA*1*000000001", b"IEA*1*1", FMT_X12, ["iea_ref_mismatch"]),
    # no GS: ST outside a group and GE without its header (nesting), IEA counts no group
    (b"GS*QO*S*R*20260301*1200*7*X*004010~", b"", FMT_X12, ["iea_count_mismatch", "envelope_nesting"]),
])
def test_mismatches_are_flagged_not_rejected(old, new, fmt, flags):
    good = EDI if fmt == FMT_EDIFACT else X12
    bad = good.replace(old, new, 1)
    assert bad != good
    assert flags_of(run([good], fmt)) == {0: []}
    r = run([bad], fmt)
    assert r.quarantine.num_rows == 0 and flags_of(r) == {0: flags}
    assert "container_number" in r.hits.column("data_class").to_pylist()     # still audited


def test_groups_count_and_bare_messages():
    grouped = (UNB + b"UNG+CODECO+S+R+260301:1200+G1'" + MSG + MSG + b"UNE+2+G1'UNZ+1+REF1'")
    bare = MSG + MSG
    r = run([grouped, grouped.replace(b"UNE+2+G1", b"UNE+1+G9"), bare], FMT_EDIFACT)
    assert flags_of(r) == {0: [], 1: ["une_count_mismatch", "une_ref_mismatch", "duplicate_interchange_ref"],
                           2: ["no_interchange_header"]}


def test_duplicates_per_sender_and_payload():
    other_payload = EDI.replace(b"MSCU1234565", b"TCNU6849731")
    other_sender = other_payload.replace(b"SENDER:ZZ", b"OTHER:ZZ")
    x12_again = X12.replace(b"MSCU*123456", b"TCNU*684973")
    x12_other = x12_again.replace(b"000000001", b"000000002")
    r = run([EDI, other_payload, other_sender, EDI, X12, x12_again, x12_other],
            [FMT_EDIFACT] * 4 + [FMT_X12] * 3, Classifier(Protector(KEY)))
    assert flags_of(r) == {0: [], 1: ["duplicate_interchange_ref"], 2: [],
                           3: ["duplicate_interchange_ref", "duplicate_payload"],
                           4: [], 5: ["duplicate_interchange_ref"], 6: []}
    # JSON / XML payloads too; a replay of the same offsets (rebalance) is no duplicate
    clf = Classifier(Protector(KEY))
    doc = b'{"equipmentReference": "MSCU1234565"}'
    r1 = run([doc, doc], FMT_JSON, clf)
    assert flags_of(r1) == {0: [], 1: ["duplicate_payload"]}
    r2 = run([doc, doc], FMT_JSON, clf)
    assert flags_of(r2) == flags_of(r1)
    r3 = run([doc], FMT_JSON, clf, offsets=[7])
    assert flags_of(r3) == {7: ["duplicate_payload"]}
    # per process: a new classifier (a restart, another group member) has not seen them
    assert flags_of(run([doc], FMT_JSON, offsets=[7])) == {7: []}


def test_duplicate_memory_is_bounded():
    clf = Classifier(Protector(KEY), dedupe_entries=8)
    docs = [b'{"n": %d}' % i for i in range(20)]
    run(docs, FMT_JSON, clf)
    r = run([docs[0], docs[19]], FMT_JSON, clf, offsets=[100, 101])
    assert flags_of(r) == {100: [], 101: ["duplicate_payload"]}          # the oldest is forgotten


def test_json_kernel_flags_reach_the_column():
    r = run([b'{"a": 1, "a": 2}', b'{"n": 123456789012345678901}', b'{"ok": true}'], FMT_JSON)
    assert flags_of(r) == {0: ["duplicate_key"], 1: ["big_integer"], 2: []}
