"""Salvage scan throughput beside python-hyperscan running the same recognisers.

    python -m benchmarks.salvage [--messages N] [--repeats R]

Input: N synthetic messages of every format (flowaudit.synth, seed 1) plus the shared corpus's ICES
IGM, laid end to end, every message one range (as ``Classifier.run`` hands quarantined messages
to the scan).  flowaudit: ``flowaudit.decode.salvage.scan_ranges`` (kernels/salvage.py: container
+ check digit, e-mail, LEI, USCI, and the labelled B/L, booking, phone, EORI, IMO, UN rules).
Hyperscan: one block-mode database (SOM leftmost) of the same shapes and label rules as regular
expressions over the whole buffer, then the same checks in Python on each match (ISO 6346 and
IMO check digits, LEI mod 97, the phone's digit count and date refusal) - what a regex engine
needs around it to give nearly the same answer (Hyperscan has no look-around and reports every
end of a repeat, so boundaries are checked per match too; its hit count is close, not equal:
the regexes approximate the kernel's rules).  Also the engine alone (matches only counted), the
bound for any Hyperscan-based design.  Best of R runs; MB = 10^6 bytes.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from flowaudit import synth
from flowaudit.decode import salvage as S

from .peers import imo_ok, iso6346_ok

MB = 1e6
IGM = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "messages" / "other" / \
    "cplsupport9123_ICES-IGM-parser__igm.sgm"

_SEP = rb"[ :#.=\"'>+\t\-(),]{0,6}"
_SUF = rb"(?:[ _.\-]{0,4}(?:NUMBER|NBR|NUM|REF|NO|NR|ID))?"
PATTERNS = [
    (0, rb"(?<![A-Za-z0-9])[A-Z]{3}[UJZ] ?[0-9]{7}(?![A-Za-z0-9])", 0),
    (1, rb"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}", 0),   # SOM: no {1,64}
    (2, rb"(?<![A-Za-z0-9])[0-9A-Z]{18}[0-9]{2}(?![A-Za-z0-9])", 0),                  # LEI
    (3, rb"(?<![A-Za-z0-9])[0-9A-HJ-NP-RTUWXY]{18}(?![A-Za-z0-9])", 0),              # USCI
    (4, rb"(?<![A-Za-z0-9])(?:B/L|BL|BOL|HBL|MBL|BILL[ _\-]*OF[ _\-]*LADING|RFF\+BM|BOOKING|BKG|RFF\+BN)" + _SUF
        + rb"(?![A-Za-z0-9])" + _SEP + rb"[A-Za-z0-9]{6,20}(?![A-Za-z0-9])", 2),
    (5, rb"(?<![A-Za-z0-9])(?:TELEPHONE|TELEFAX|TEL|PHONE|FAX|MOBILE|MOB|COM\+)" + _SUF + _SEP
        + rb"\+?[0-9][0-9 .()\-]{5,22}[0-9]", 2),
    (6, rb"(?<![A-Za-z0-9])EORI" + _SUF + rb"(?![A-Za-z0-9])" + _SEP + rb"[A-Za-z]{2}[A-Za-z0-9]{1,15}(?![A-Za-z0-9])", 2),
    (7, rb"(?<![A-Za-z0-9])IMO" + _SUF + rb"(?![A-Za-z])" + _SEP + rb"[0-9]{7}(?![A-Za-z0-9])", 2),
    (8, rb"(?<![A-Za-z0-9])UN(?:DG)?" + _SUF + rb"(?![A-Za-z])" + _SEP + rb"[0-9]{4}(?![A-Za-z0-9])", 2),
]


def _lei_ok(t: bytes) -> bool:
    s = "".join(str(int(c, 36)) for c in t.decode())
    return int(s) % 97 == 1


def _date(d: bytes) -> bool:
    return len(d) == 8 and (d[:2] in (b"19", b"20") and 1 <= int(d[4:6]) <= 12 or
                            d[4:6] in (b"19", b"20") and 1 <= int(d[2:4]) <= 12)


def dataset(n: int) -> tuple[np.ndarray, np.ndarray]:
    vals = [m.value for m in synth.generate(seed=1, n=n)]
    if IGM.is_file():
        vals.append(IGM.read_bytes())
    buf = np.frombuffer(b"".join(vals), np.uint8).copy()
    off = np.zeros(len(vals) + 1, np.int64)
    off[1:] = np.cumsum([len(v) for v in vals])
    return buf, off


def flowaudit_run(buf, off):
    rows, _ = S.scan_ranges(buf, off[:-1], off[1:])
    return rows.shape[0]


def hyperscan_setup(buf):
    import hyperscan
    import re
    data = buf.tobytes()
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    # Hyperscan has no look-around: the boundaries are checked in Python on each match
    exprs = [re.sub(rb"\(\?<!\[A-Za-z0-9\]\)|\(\?!\[A-Za-z0-9\]\)|\(\?!\[A-Za-z\]\)", b"", p) for _, p, _ in PATTERNS]
    flags = [hyperscan.HS_FLAG_SOM_LEFTMOST | (hyperscan.HS_FLAG_CASELESS if c == 2 else 0) for _, _, c in PATTERNS]
    db.compile(expressions=exprs, ids=list(range(len(exprs))), elements=len(exprs), flags=flags)

    def alnum(i):
        return 0 <= i < len(data) and (48 <= data[i] <= 57 or 65 <= data[i] <= 90 or 97 <= data[i] <= 122)

    def run():
        found = []

        def on_match(i, f, t, _fl, _c):
            if alnum(t) if i == 1 else (alnum(f - 1) or alnum(t)):
                return
            tok = data[f:t]
            if i == 0:
                if iso6346_ok(tok.replace(b" ", b"")):
                    found.append((i, f, t))
            elif i == 2:
                if _lei_ok(tok):
                    found.append((i, f, t))
            elif i == 5:
                digits = bytes(c for c in tok if 48 <= c <= 57)
                if 7 <= len(digits) <= 15 and not _date(digits[-8:]):
                    found.append((i, f, t))
            elif i == 7:
                if imo_ok(tok[-7:]):
                    found.append((i, f, t))
            else:
                found.append((i, f, t))
        db.scan(data, match_event_handler=on_match)
        return len(found)

    def engine_only():
        n = [0]

        def count(*_a):
            n[0] += 1
        db.scan(data, match_event_handler=count)
        return n[0]
    return run, engine_only


def best(fn, repeats):
    out, t = None, float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        t = min(t, time.perf_counter() - t0)
    return t, out


def run(quick: bool = False, repeats: int = 3) -> dict:
    """The bench's ``salvage`` stage: the salvage scan beside Hyperscan running the same
    recognisers, on the same bytes (``mb_per_s``: flowaudit's)."""
    res = measure(2000 if quick else 20000, repeats)
    res["mb_per_s"] = res["flowaudit"]["mb_per_s"]
    hs = res["hyperscan"].get("mb_per_s")
    res["ratio_to_hyperscan_with_checks"] = res["mb_per_s"] / hs if hs else None
    return res


def measure(messages: int, repeats: int) -> dict:
    buf, off = dataset(messages)
    flowaudit_run(buf, off[:3])                  # compile / load the cached kernels
    mb = buf.shape[0] / MB
    res = {"bytes": int(buf.shape[0]), "messages": int(off.shape[0] - 1)}
    t, n = best(lambda: flowaudit_run(buf, off), repeats)
    res["flowaudit"] = {"seconds": t, "mb_per_s": mb / t, "hits": int(n)}
    try:
        scan, engine_only = hyperscan_setup(buf)
        t, n = best(scan, repeats)
        res["hyperscan"] = {"seconds": t, "mb_per_s": mb / t, "hits": int(n)}
        t, n = best(engine_only, repeats)
        res["hyperscan_engine"] = {"seconds": t, "mb_per_s": mb / t, "hits": int(n)}
    except Exception as exc:  # noqa: BLE001
        res["hyperscan"] = res["hyperscan_engine"] = {"error": f"{type(exc).__name__}: {exc}"}
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    res = measure(a.messages, a.repeats)
    mb = res["bytes"] / MB
    print(f"salvage scan over {res['messages']:,} messages, {mb:.1f} MB (best of {a.repeats})")
    names = {"flowaudit": "flowaudit salvage kernel", "hyperscan": "hyperscan + Python checks",
             "hyperscan_engine": "hyperscan engine only (raw matches, no checks)"}
    for k, name in names.items():
        r = res[k]
        if "error" in r:
            print(f"  {name:48s} skipped: {r['error']}")
        else:
            print(f"  {name:48s} {r['mb_per_s']:8.1f} MB/s  {r['seconds']:.3f} s  {r['hits']:,} hits")
    if "mb_per_s" in res["hyperscan"]:
        print(f"  ratio flowaudit / hyperscan: {res['flowaudit']['mb_per_s'] / res['hyperscan']['mb_per_s']:.2f}x")
    return res


if __name__ == "__main__":
    main()
