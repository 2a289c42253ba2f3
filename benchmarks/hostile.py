"""Hostile inputs cost linear time (reliability.md's catalogue; the kernels' caps).

``python -m benchmarks.hostile [--scale 4] [--rounds 3]``: each hostile message of the kernel
tests (an EDIFACT or X12 segment of megabytes, JSON and XML nested past the depth cap, the XML
entity blow-ups) is built at a base size and at ``--scale`` times it, and classified by
``Classifier.run`` (the stream's code path, tables built, no Parquet).  Linear work keeps the MB/s
of the two sizes alike (``large_over_small`` near 1); work that grows with the square of the input
would divide it by the scale (0.25 at 4×).  The tests (tests/test_kernels_*.py) check each case's
status; the time it takes is measured here, never asserted in a test.
"""
from __future__ import annotations

import argparse
import statistics
import time

from flowaudit.pipeline import Batch, Classifier, format_code
from flowaudit.protect import Protector

_ISA = (b"ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *220101*1200*U*00401*"
        b"000000001*0*P*>~GS*SO*A*B*20220101*1200*1*X*004010~")


def cases(k: int) -> dict:
    """name -> (format, message) at size factor ``k`` (about 2.5 MB per factor for the long ones)."""
    n = 2_500_000 * k
    d = 250_000 * k
    ent = 50_000 * k
    return {
        "edifact_long_segment": ("edifact", b"UNH+1+X'FTX+AAA+++" + b"A" * n + b"'UNT+2+1'"),
        "x12_long_segment": ("x12", _ISA + b"ST*315*1~N10*1*" + b"A" * n + b"~SE*1*1~GE*1*1~IEA*1*000000001~"),
        "x12_many_components": ("x12", _ISA + b"ST*315*1~N10*1*" + b"A>" * (n // 2) + b"~SE*1*1~GE*1*1~"
                                b"IEA*1*000000001~"),
        "json_deep": ("json", b'{"a":' * d + b"1" + b"}" * d),
        "json_long_string": ("json", b'{"a":"' + b"x" * n + b'"}'),
        "xml_deep": ("xml", b"<a>" * d + b"</a>" * d),
        "xml_quadratic_entity": ("xml", b'<!DOCTYPE a [<!ENTITY x "' + b"x" * ent + b'">]><a>'
                                 + b"&x;" * ent + b"</a>"),
        "xml_long_text": ("xml", b"<a>" + b"x" * n + b"</a>"),
    }


def _time(clf: Classifier, batch: Batch) -> float:
    t0 = time.perf_counter()
    clf.run(batch)
    return time.perf_counter() - t0


def measure(scale: int = 4, rounds: int = 3) -> dict:
    clf = Classifier(Protector(b"bench-key-0123456789abcdef"), max_message_bytes=64 << 20)
    clf.warmup()
    small, large = cases(1), cases(scale)
    out = {}
    for name, (fmt, msg) in small.items():
        row = {}
        for label, m in (("small", msg), ("large", large[name][1])):
            batch = Batch.from_values([m], format_code(fmt))
            res = clf.run(batch)
            q = res.quarantine
            status = q.column("reason").to_pylist()[0] if q is not None and q.num_rows else "ok"
            secs = statistics.median(_time(clf, batch) for _ in range(max(1, rounds)))
            row[f"{label}_bytes"] = len(m)
            row[f"{label}_mb"] = round(len(m) / 1e6, 2)
            row[f"{label}_mb_s"] = round(len(m) / 1e6 / secs, 1)
            row["status"] = status
        row["large_over_small"] = round(row["large_mb_s"] / row["small_mb_s"], 2)
        out[name] = row
    worst = min(r["large_over_small"] for r in out.values())
    return {"scale": scale, "cases": out, "worst_large_over_small": worst,
            "mb_per_s": round(min(r["large_mb_s"] for r in out.values()), 1)}


def run(quick: bool = False, repeats: int = 3) -> dict:
    """The bench's ``hostile`` stage (``mb_per_s``: the slowest case at the large size)."""
    return measure(2 if quick else 4, max(1, repeats))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    res = measure(a.scale, a.rounds)
    for name, row in res["cases"].items():
        print(f"{name:24s} {row['status']!s:28s} {row['small_mb']:8.2f} MB {row['small_mb_s']:8.1f} MB/s   "
              f"{row['large_mb']:8.2f} MB {row['large_mb_s']:8.1f} MB/s   large/small {row['large_over_small']:.2f}")
    print(f"worst large/small: {res['worst_large_over_small']:.2f} (linear: about 1; quadratic: 1/{res['scale']})")
    return res


if __name__ == "__main__":
    main()
