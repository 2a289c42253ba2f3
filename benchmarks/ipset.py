"""``python -m benchmarks.ipset``: CIDR set lookups/s with 100k prefixes, IPv4 and IPv6.

Three implementations in one run, on the same prefixes and the same addresses, single-threaded:

* **flowaudit**: :class:`flowaudit.kernels.ipset.IPSet` (numba kernel, first-level table +
  binary search over sorted disjoint ranges);
* **numpy**: ``np.searchsorted`` over the same sorted ranges (IPv6 via a structured (hi, lo)
  key), i.e. the best one can do without a kernel;
* **ipaddress**: Python's ``ipaddress`` longest-prefix match (one dict per prefix length,
  longest first), run on a subset because it is slow.

The three must agree on every address they all saw; the ratios are printed.  Prefixes follow a
routing-table-like length mix (IPv4 mostly /24, IPv6 mostly /32-/48 inside 2000::/3, some host
routes); two address mixes: uniformly random (the usual LPM benchmark, e.g. DPDK's), and half
drawn inside the prefixes (the harder case: the binary search inside a first-level bucket runs).

Target (issue 4): >= 100 M lookups/s with 100k prefixes.
"""
from __future__ import annotations

import argparse
import ipaddress
import time

import numpy as np

from flowaudit.kernels import ipset as K

_V4_LENS = np.array([8, 12, 14, 16, 17, 18, 19, 20, 21, 22, 23, 24, 28, 32])
_V4_P = np.array([0.001, 0.004, 0.01, 0.03, 0.02, 0.03, 0.04, 0.05, 0.05, 0.09, 0.08, 0.55, 0.015, 0.03])
_V6_LENS = np.array([16, 20, 24, 28, 29, 32, 36, 40, 44, 48, 56, 64, 128])
_V6_P = np.array([0.002, 0.005, 0.01, 0.02, 0.06, 0.15, 0.05, 0.06, 0.07, 0.4, 0.06, 0.06, 0.053])


def make_prefixes(rng, n: int, family: int) -> list[tuple[int, int, int]]:
    if family == 4:
        lens = rng.choice(_V4_LENS, size=n, p=_V4_P / _V4_P.sum())
        addrs = rng.integers(1 << 24, 224 << 24, size=n, dtype=np.uint64)   # unicast-ish
        return [(4, (a >> (32 - p)) << (32 - p), p) for a, p in zip(addrs.tolist(), lens.tolist())]
    lens = rng.choice(_V6_LENS, size=n, p=_V6_P / _V6_P.sum())
    hi = (rng.integers(0, 1 << 61, size=n, dtype=np.uint64) | np.uint64(1 << 61)).tolist()  # 2000::/3
    lo = rng.integers(0, 1 << 63, size=n, dtype=np.uint64).tolist()
    out = []
    for h, w, p in zip(hi, lo, lens.tolist()):
        a = (h << 64) | (w << 1)
        out.append((6, (a >> (128 - p)) << (128 - p), p))
    return out


def make_queries(rng, prefixes, m: int, family: int, inside: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Uniformly random addresses, a fraction ``inside`` of them drawn inside a random prefix."""
    bits = 32 if family == 4 else 128
    half = m - int(m * inside)
    pick = rng.integers(0, len(prefixes), size=m - half)
    inside = []
    r = rng.integers(0, 1 << 63, size=(m - half, 2), dtype=np.uint64).tolist()
    for i, (x, y) in zip(pick.tolist(), r):
        _, net, p = prefixes[i]
        host = ((x << 64) | y) & ((1 << (bits - p)) - 1)
        inside.append(net | host)
    if family == 4:
        rand = rng.integers(0, 1 << 32, size=half, dtype=np.uint64)
        lo = np.concatenate([rand, np.array(inside, dtype=np.uint64)])
        lo = rng.permutation(lo) | np.uint64(0xFFFF << 32)     # IPv4-mapped ::ffff:a.b.c.d
        return np.zeros(m, np.uint64), lo
    h = rng.integers(0, 1 << 61, size=half, dtype=np.uint64) | np.uint64(1 << 61)
    w = rng.integers(0, 1 << 63, size=half, dtype=np.uint64) << np.uint64(1)
    ih = np.array([v >> 64 for v in inside], dtype=np.uint64)
    il = np.array([v & ((1 << 64) - 1) for v in inside], dtype=np.uint64)
    perm = rng.permutation(m)
    return np.concatenate([h, ih])[perm], np.concatenate([w, il])[perm]


def numpy_lookup(s: K.IPSet, hi: np.ndarray, lo: np.ndarray, family: int) -> np.ndarray:
    """The peer: np.searchsorted over the same sorted ranges."""
    if family == 4:
        i = np.searchsorted(s.s4, (lo & np.uint64(0xFFFFFFFF)).astype(np.uint32), side="right") - 1
        return s.v4[i]
    dt = np.dtype([("hi", "<u8"), ("lo", "<u8")])
    keys = np.empty(s.h6.shape[0], dt)
    keys["hi"], keys["lo"] = s.h6, s.l6
    q = np.empty(hi.shape[0], dt)
    q["hi"], q["lo"] = hi, lo
    return s.v6[np.searchsorted(keys, q, side="right") - 1]


class IpaddressLPM:
    """The peer: Python's ipaddress, one dict per prefix length, longest match first."""

    def __init__(self, prefixes):
        self.tables: dict[int, dict] = {}
        for i, (fam, net, p) in enumerate(prefixes):
            n = ipaddress.ip_network((net, p)) if fam == 4 else ipaddress.IPv6Network((net, p))
            self.tables.setdefault(p, {}).setdefault(n, i)
        self.lens = sorted(self.tables, reverse=True)

    def lookup(self, addrs) -> list[int]:
        out = []
        for a in addrs:
            hit = -1
            for p in self.lens:
                e = self.tables[p].get(ipaddress.ip_network((a, p), strict=False))
                if e is not None:
                    hit = e
                    break
            out.append(hit)
        return out


def best_rate(fn, m: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return m / best


def run_family(family: int, n_prefixes: int, m: int, m_py: int, repeat: int, seed: int,
               inside: float) -> dict:
    rng = np.random.default_rng(seed + family)
    prefixes = make_prefixes(rng, n_prefixes, family)
    t0 = time.perf_counter()
    s = K.IPSet([], parsed=prefixes)
    build_s = time.perf_counter() - t0
    hi, lo = make_queries(rng, prefixes, m, family, inside)
    out = np.empty(m, np.int32)
    s.lookup(hi[:16], lo[:16])  # compile / load the cache outside the timing
    ours = s.lookup(hi, lo, out).copy()
    ref_np = numpy_lookup(s, hi, lo, family)
    lpm = IpaddressLPM(prefixes)
    sub = slice(0, m_py)
    addrs = [int(x) & 0xFFFFFFFF for x in lo[sub]] if family == 4 else \
        [(int(h) << 64) | int(w) for h, w in zip(hi[sub], lo[sub])]
    addrs = [ipaddress.IPv4Address(a) if family == 4 else ipaddress.IPv6Address(a) for a in addrs]
    t0 = time.perf_counter()
    ref_py = np.array(lpm.lookup(addrs), dtype=np.int32)
    py_rate = m_py / (time.perf_counter() - t0)
    if not np.array_equal(ours, ref_np):
        raise SystemExit(f"IPv{family}: flowaudit and numpy disagree on {int((ours != ref_np).sum())} addresses")
    # the ipaddress peer resolves duplicates of one prefix to the first entry too
    if not np.array_equal(ours[sub], ref_py):
        raise SystemExit(f"IPv{family}: flowaudit and ipaddress disagree on {int((ours[sub] != ref_py).sum())} addresses")
    ours_rate = best_rate(lambda: s.lookup(hi, lo, out), m, repeat)
    np_rate = best_rate(lambda: numpy_lookup(s, hi, lo, family), m, repeat)
    return {"family": family, "prefixes": n_prefixes, "ranges": s.n_ranges, "build_s": build_s,
            "table_mib": s.nbytes / 2**20, "matched": float((ours >= 0).mean()),
            "flowaudit": ours_rate, "numpy": np_rate, "ipaddress": py_rate}


def run(quick: bool = False, repeats: int = 5, prefixes: int = 100_000, seed: int = 7, scale: float = 1.0) -> dict:
    """The suite's contract (benchmarks/stages.external_stage): a JSON-able dict; the top-level
    ``lookups_per_s`` is IPv4 with half the addresses inside a prefix (the harder mix).  ``scale``
    (0-1) shrinks the prefixes and lookups, as the suite's ``--size-mb`` does for the format stages."""
    scale = min(1.0, max(scale, 0.01))
    prefixes = max(2_000, int(prefixes * scale))
    m = max(20_000, int((500_000 if quick else 4_000_000) * scale))
    out = {"prefixes": prefixes, "lookups": m, "results": []}
    for inside in (0.0, 0.5):
        for fam in (4, 6):
            m_py = max(1_000, int((5_000 if quick else 20_000) * scale))
            r = run_family(fam, prefixes, m, m_py, max(1, repeats), seed, inside)
            r["inside"] = inside
            r["x_numpy"] = r["flowaudit"] / r["numpy"]
            r["x_ipaddress"] = r["flowaudit"] / r["ipaddress"]
            out["results"].append(r)
    hard_v4 = next(r for r in out["results"] if r["family"] == 4 and r["inside"] == 0.5)
    out["lookups_per_s"] = hard_v4["flowaudit"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ipset", description=__doc__.split("\n")[0])
    ap.add_argument("--prefixes", type=int, default=100_000)
    ap.add_argument("--lookups", type=int, default=4_000_000)
    ap.add_argument("--python-lookups", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)
    print(f"CIDR lookup, {a.prefixes} prefixes per family, single thread, best of {a.repeat}")
    print(f"{'family':7} {'ranges':>8} {'MiB':>6} {'match%':>7} {'flowaudit M/s':>14} {'numpy M/s':>10} "
          f"{'ipaddress M/s':>14} {'x numpy':>8} {'x ipaddress':>12}")
    for inside in (0.0, 0.5):
        mix = "uniformly random" if inside == 0 else f"{inside:.0%} drawn inside a prefix, the rest random"
        print(f"-- addresses: {mix}")
        for fam in (4, 6):
            r = run_family(fam, a.prefixes, a.lookups, a.python_lookups, a.repeat, a.seed, inside)
            print(f"IPv{fam:<5} {r['ranges']:>8} {r['table_mib']:>6.1f} {100 * r['matched']:>6.1f}% "
                  f"{r['flowaudit'] / 1e6:>14.1f} {r['numpy'] / 1e6:>10.2f} {r['ipaddress'] / 1e6:>14.4f} "
                  f"{r['flowaudit'] / r['numpy']:>8.1f} {r['flowaudit'] / r['ipaddress']:>12.0f}")
    print("target: >= 100 M lookups/s (issue 4); results of the three agree on every compared address")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
