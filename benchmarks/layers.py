"""Layers cost nothing on messages that have none (issue 12).

``python -m benchmarks.layers [--size-mb 8] [--rounds 5]``: the classify stage
(``Classifier.run`` over the whole batch, tables built, no Parquet) on the plain real corpus
(../shared/corpus/messages, every EDIFACT / X12 / XML / JSON file, repeated whole to
``--size-mb``), with the layers pre-pass disabled (``Classifier.layers_enabled = False``, the
code before layers) and enabled, alternating in one run; the median MB/s of each and their ratio.
For scale it also times the same files wrapped (base64 of gzip: the layered path), and the
JSON / XML files with a base64-of-gzip document in a field (``field_wrapped_mb_s``: the field
layers of flowaudit/decode/embedded.py).  The field-layer marking lives in the JSON / XML
kernels and cannot be switched off; its cost on plain traffic shows in the ``json`` / ``xml``
stages' ratios against their peers, before and after.
"""
from __future__ import annotations

import argparse
import base64
import gzip
import statistics
import time

from .corpus import FORMATS, real_dataset
from flowaudit.pipeline import FMT_AUTO, Batch, Classifier
from flowaudit.protect import Protector


def plain_values(size_mb: float) -> list[bytes]:
    out = []
    for f in FORMATS:
        ds = real_dataset(f, size_mb / len(FORMATS))
        if ds is not None:
            out.extend(ds.values())
    return out


def _time(clf: Classifier, batch: Batch) -> float:
    t0 = time.perf_counter()
    clf.run(batch)
    return time.perf_counter() - t0


def run(quick: bool = False, repeats: int = 5) -> dict:
    """The bench's ``layers`` stage: classify MB/s on the plain corpus with the layers pre-pass
    off and on, alternating (``mb_per_s``: on), and the layered path itself."""
    res = measure(1.0 if quick else 8.0, max(2, repeats))
    res["mb_per_s"] = res["plain_mb_s_layers_on"]
    return res


def measure(size_mb: float, rounds: int) -> dict:
    vals = plain_values(size_mb)
    mb = sum(map(len, vals)) / 1e6
    batch = Batch.from_values(vals, FMT_AUTO)
    clf = Classifier(Protector(b"bench-key-0123456789abcdef"))
    clf.warmup()
    clf.run(batch)
    off, on = [], []
    for r in range(rounds):             # alternating, each side first every other round
        for enabled in ((False, True) if r % 2 == 0 else (True, False)):
            clf.layers_enabled = enabled
            (on if enabled else off).append(_time(clf, batch))
    clf.layers_enabled = True
    wrapped = [base64.b64encode(gzip.compress(v)) for v in vals[: max(1, len(vals) // 8)]]
    wmb = sum(map(len, wrapped)) / 1e6
    wbatch = Batch.from_values(wrapped, FMT_AUTO)
    clf.run(wbatch)
    lay = statistics.median(_time(clf, wbatch) for _ in range(max(1, rounds // 2)))
    fields = [b'{"id":%d,"payload":"%s"}' % (k, w) if k % 2 else b"<Msg><Payload>" + w + b"</Payload></Msg>"
              for k, w in enumerate(wrapped)]
    fmb = sum(map(len, fields)) / 1e6
    fbatch = Batch.from_values(fields, FMT_AUTO)
    clf.run(fbatch)
    flay = statistics.median(_time(clf, fbatch) for _ in range(max(1, rounds // 2)))
    res = {"messages": len(vals), "mb": round(mb, 2),
           "plain_mb_s_layers_off": round(mb / statistics.median(off), 1),
           "plain_mb_s_layers_on": round(mb / statistics.median(on), 1),
           "ratio_on_over_off": round(statistics.median(off) / statistics.median(on), 3),
           "base64_gzip_wrapped_mb_s": round(wmb / lay, 1), "wrapped_messages": len(wrapped),
           "field_wrapped_mb_s": round(fmb / flay, 1)}
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    res = measure(a.size_mb, a.rounds)
    for k, v in res.items():
        print(f"{k}: {v}")
    return res


if __name__ == "__main__":
    main()
