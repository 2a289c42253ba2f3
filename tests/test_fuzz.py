"""The fuzz harness (``flowaudit fuzz``) and the short fuzz pass CI runs.

* the episode format, the NetFlow field finder and the generator's determinism;
* numba really checks bounds in the worker, and why its cache must be a separate one: numba reuses
  a cached function compiled without bounds checks in a process that asks for them;
* the harness finds, minimises and saves a crash of each kind (exception, SIGSEGV, an out-of-range
  read in a numba kernel, a hang) -- shown on its hidden self-test decoders;
* Hypothesis over the real decoders in this process: any bytes, and mutated seeds, keep the
  invariants;
* the short pass: every decoder for a few seconds each, in a worker process.  The NetFlow-side
  decoders (netflow, goflow, zeek_conn, dns, eve, pcap, markers) run with ``NUMBA_BOUNDSCHECK=1``; the message
  decoders run on the normal compiled kernels, because compiling their bounds-checked variants
  takes minutes on a 2-core runner (``./dev fuzz`` runs everything bounds-checked).
"""
from __future__ import annotations

import json
import os
import pickle
import random
import struct
import subprocess
import sys
import textwrap
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowaudit import fuzz

REPO = Path(__file__).resolve().parents[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWAUDIT_", "NUMBA_"))}
    env.update(extra)
    return env


# ------------------------------------------------------------------------------------ pieces
def test_episode_roundtrip():
    one = [[(b"UNB+UNOA:2+A+B'", None)]]
    assert fuzz.encode_episode(one) == b"UNB+UNOA:2+A+B'"        # one input: its raw bytes
    assert fuzz.decode_episode(b"UNB+UNOA:2+A+B'") == one
    many = [[(b"\x00\x09\x00\x01", b"192.0.2.1"), (None, None), (b"", b"")], [(b"x" * 70_000, None)]]
    data = fuzz.encode_episode(many)
    assert data.startswith(fuzz.MAGIC)
    assert fuzz.decode_episode(data) == many


def test_netflow_fields_are_the_trusted_counts_and_lengths():
    # v9: header (count at 2), a template set (id 0, length) with template 256 of 2 fields
    tmpl = struct.pack(">HH", 256, 2) + struct.pack(">HHHH", 8, 4, 12, 4)
    dgram = struct.pack(">HHIIII", 9, 1, 0, 0, 0, 0) + struct.pack(">HH", 0, 4 + len(tmpl)) + tmpl
    assert fuzz.netflow_fields(dgram) == [(0, 2), (2, 2), (20, 2), (22, 2), (24, 2), (26, 2), (30, 2), (34, 2)]
    # IPFIX: enterprise fields carry a 4-byte PEN after the length
    tmpl = struct.pack(">HH", 300, 2) + struct.pack(">HHI", 0x8001, 4, 29305) + struct.pack(">HH", 7, 2)
    dgram = struct.pack(">HHIII", 10, 16 + 4 + len(tmpl), 0, 0, 0) + struct.pack(">HH", 2, 4 + len(tmpl)) + tmpl
    assert fuzz.netflow_fields(dgram) == [(0, 2), (2, 2), (16, 2), (18, 2), (20, 2), (22, 2), (26, 2), (34, 2)]
    assert fuzz.netflow_fields(b"\x00\x05") == []


def test_generator_is_deterministic_and_mutates(corpus):
    t = fuzz.TARGETS["netflow"]
    seeds = fuzz.load_seeds(t, corpus, 1)
    g1, g2 = fuzz.Generator(t, seeds, 1), fuzz.Generator(t, seeds, 1)
    a = [g1.batch() for _ in range(5)]
    assert a == [g2.batch() for _ in range(5)]
    assert fuzz.Generator(t, seeds, 2).batch() != a[0]
    originals = {v for s in seeds for v, _ in s}
    values = [v for b in a for v, _ in b]
    assert any(v not in originals for v in values) and any(v in originals for v in values)


# ------------------------------------------------------------------------------------ bounds checking
CANARY = textwrap.dedent("""
    import sys
    import numba
    import numpy as np

    @numba.njit(cache=True)
    def at(a, i):
        return a[i]

    a = np.arange(64, dtype=np.int64)[:4]      # a view: index 10 stays inside the allocation
    try:
        print("value", at(a, 10))
    except IndexError:
        print("IndexError")
""")


@pytest.mark.slow
def test_numba_reuses_a_cache_compiled_without_bounds_checks(tmp_path):
    """Why the fuzz worker has its own NUMBA_CACHE_DIR: numba keys cached code by signature, CPU and
    bytecode, not by the bounds-check flag."""
    (tmp_path / "canary_mod.py").write_text(CANARY)

    def run(**env):
        r = subprocess.run([sys.executable, "canary_mod.py"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120, env=_env(**env))
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    shared = str(tmp_path / "cache-shared")
    assert run(NUMBA_CACHE_DIR=shared) == "value 10"                                 # compiled unchecked, cached
    assert run(NUMBA_CACHE_DIR=shared, NUMBA_BOUNDSCHECK="1") == "value 10"          # reused: no check!
    assert run(NUMBA_CACHE_DIR=str(tmp_path / "own"), NUMBA_BOUNDSCHECK="1") == "IndexError"


def _worker_hello(cache_dir: Path, **env) -> tuple:
    p = subprocess.run([sys.executable, "-m", "flowaudit.fuzz", "--worker", str(cache_dir)], input=b"",
                       capture_output=True, timeout=300, env=_env(**env), cwd=REPO)
    (n,) = struct.unpack(">I", p.stdout[:4])
    return pickle.loads(p.stdout[4:4 + n])


@pytest.mark.slow
def test_worker_refuses_to_fuzz_without_bounds_checks(tmp_path):
    kind, msg = _worker_hello(tmp_path, NUMBA_CACHE_DIR=str(tmp_path))
    assert kind == "error" and "NUMBA_BOUNDSCHECK" in msg
    kind, msg = _worker_hello(tmp_path, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "elsewhere"))
    assert kind == "error" and "fuzz cache" in msg
    kind, info = _worker_hello(tmp_path, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path))
    assert kind == "ready" and info["boundscheck"] == 1


def _fuzz(*args, timeout=600):
    r = subprocess.run([sys.executable, "-m", "flowaudit", "fuzz", "--json", *args], capture_output=True,
                       text=True, timeout=timeout, env=_env(), cwd=REPO)
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout), r.stderr


@pytest.mark.slow
def test_crashes_are_found_minimised_and_saved(tmp_path):
    rc, rep, err = _fuzz("--decoder", "selftest-raise", "--decoder", "selftest-segv", "--decoder", "selftest-oob",
                         "--seconds", "30", "--crashers", str(tmp_path), "--minimise-seconds", "60")
    assert rc == 1, err
    assert rep["boundscheck"] is True
    sigs = {c["target"]: c["sig"] for c in rep["crashes"]}
    assert sigs["selftest-raise"][:2] == ["exception", "RuntimeError"]
    assert sigs["selftest-segv"] == ["signal", "SIGSEGV"]
    assert sigs["selftest-oob"][:2] == ["exception", "IndexError"]   # only because bounds checking is on
    for name, word in (("selftest-raise", b"CRASH"), ("selftest-segv", b"SEGV"), ("selftest-oob", b"OOB")):
        (saved,) = (tmp_path / name).glob("*.bin")
        assert saved.read_bytes() == word                   # minimised from a 300-byte seed to the trigger
        assert "minimised: yes" in saved.with_suffix(".txt").read_text()


@pytest.mark.slow
def test_a_hang_is_a_crash(tmp_path):
    rc, rep, err = _fuzz("--decoder", "selftest-hang", "--hang-seconds", "2", "--crashers", str(tmp_path),
                         "--minimise-seconds", "15")
    assert rc == 1, err
    assert [c["sig"] for c in rep["crashes"]] == [["timeout"]]
    (saved,) = (tmp_path / "selftest-hang").glob("*.bin")
    assert b"HANG" in fuzz.decode_episode(saved.read_bytes())[0][0][0] or b"HANG" in saved.read_bytes()


# ------------------------------------------------------------------------------------ Hypothesis, in process
@lru_cache(maxsize=None)
def _runner(name: str):
    return fuzz.make_runner(name)


@lru_cache(maxsize=None)
def _seeds(name: str):
    return fuzz.load_seeds(fuzz.TARGETS[name], fuzz.CORPUS, 1)


MSG_TARGETS = ["edifact", "x12", "xml", "json", "detect", "scan", "embedded", "flat", "markers"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(MSG_TARGETS),
       raw=st.lists(st.one_of(st.none(), st.binary(max_size=400)), max_size=6),
       picks=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 2**32)), max_size=6))
def test_message_decoders_keep_invariants(name, raw, picks):
    """Any bytes, and mutations of the seeds: no exception, every message decoded or quarantined,
    hit ranges inside their message."""
    seeds = _seeds(name)
    mutated = [fuzz.Mutator(random.Random(r), fuzz.TARGETS[name].fmt, seeds).mutate(seeds[i % len(seeds)])
               for i, r in picks]
    batch = [(v, None) for v in raw + mutated]
    if batch:
        st_ = _runner(name).run(batch)
        assert st_["inputs"] == len(batch)


def test_flat_target_decodes_its_seeds_and_survives_their_mutations():
    """The ``flat`` target: its seeds (the corpus's ICES IGM, cut up, and synthetic CSV / TSV /
    0x1D / fixed-width files) are flat files the decoder takes, with hits; their mutations keep the
    invariants (``check_classifier``: every input decoded or quarantined with its raw bytes, hit
    ranges inside their message)."""
    seeds = _seeds("flat")
    assert any(b"\x1d" in s and b"<vesinfo>" in s for s in seeds)            # the real ICES file
    assert {d for s in seeds for d in (b",", b"\t", b"\x1d") if d in s.split(b"\n")[0]} == {b",", b"\t", b"\x1d"}
    r = fuzz.make_runner("flat")
    st_ = r.run([(v, None) for v in seeds])
    assert st_["inputs"] == len(seeds) and st_["decoded"] + st_["quarantined"] == len(seeds)
    assert st_["decoded"] >= 0.9 * len(seeds) and st_["hits"] > len(seeds)
    rng = random.Random(7)
    for _ in range(4):
        batch = [(fuzz.Mutator(rng, "flat", seeds).mutate(rng.choice(seeds)), None) for _ in range(64)]
        st_ = r.run(batch)
        assert st_["decoded"] + st_["quarantined"] == len(batch)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picks=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 2**32)),
                      min_size=1, max_size=12))
def test_netflow_decoder_keeps_invariants(picks):
    """Mutated corpus datagrams, in capture order so templates come first, through the stream's
    NetFlow path with its template state carried from example to example."""
    seeds = _seeds("netflow")
    r = _runner("netflow")
    batch = []
    for s, i, m in picks:
        seq = seeds[s % len(seeds)]
        for v, k in seq[:i % 4 + 1]:
            batch.append((fuzz.Mutator(random.Random(m), "netflow", [v]).mutate(v) if m % 3 else v, k))
    st_ = r.run(batch)
    assert st_["decoded"] + st_["quarantined"] == len(batch)


# ------------------------------------------------------------------------------------ the CI pass
BOUNDSCHECKED = ["netflow", "goflow", "zeek_conn", "dns", "eve", "pcap", "markers"]
UNCHECKED = ["edifact", "x12", "xml", "json", "detect", "scan", "embedded", "flat"]


@pytest.mark.slow
@pytest.mark.parametrize("names, flags", [(BOUNDSCHECKED, []), (UNCHECKED, ["--no-boundscheck"])],
                         ids=["boundscheck", "compiled"])
def test_short_fuzz_pass(tmp_path, names, flags):
    args = [a for n in names for a in ("--decoder", n)]
    rc, rep, err = _fuzz(*args, *flags, "--seconds", str(2 * len(names)), "--crashers", str(tmp_path),
                         timeout=900)
    assert rc == 0, (rep["crashes"], err[-2000:])
    assert rep["boundscheck"] is (not flags)
    for n in names:
        d = rep["decoders"][n]
        assert d["inputs"] > 0, n
        if not flags:
            assert d["kernels_from_fuzz_cache"] > 0, n    # every kernel it ran was the bounds-checked build
    assert not list(tmp_path.rglob("*.bin"))
    if "netflow" in names:   # template state carried between inputs: v9/IPFIX data sets were decoded
        assert rep["decoders"]["netflow"]["flows_v9_ipfix"] > 0
