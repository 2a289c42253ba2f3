"""The message-side watchlist scan against what a user would write instead, on the same bytes in
one run: ``flowaudit bench --stages watchlist`` (counts checked), or ``python -m
benchmarks.watchlist`` (every match compared).

The bytes are the bench's synthetic messages of the four formats.  One message in ``--every``
(50) also carries a watched name: in clear (the LOGINK gateway URL, a payload marker, a
TeamViewer host), base64-encoded in a short field, or a look-alike that must not match
(``notlogink.cn``, ``LoginKit``).  Three scans of the default watchlist's literals (hosts,
domains, host-pattern suffixes, URL paths, markers, party keys; then their base64 aliases),
each giving every match as (message, pattern, start):

* **flowaudit**: ``EgressDetector.prescan``, what the pipeline runs beside the decoders: the
  escape look (``kernels.markers.escaped``), the literal pass with its host and token
  boundaries and the base64 alias pass (``kernels.markers.scan_filtered``, twice);
* **python-hyperscan**: one block-mode database of the same literals and aliases (caseless
  where the watchlist says so), over the whole buffer; matches that cross a message boundary
  dropped, the boundaries checked in Python;
* **Python ``bytes.find``**: a loop per literal over the buffer (a lower-cased copy for the
  caseless ones), the same boundary checks.

Decoding the runs around alias matches and turning matches into transfers
(``egress.message_matches``) is Python shared by all and not timed here.
"""
from __future__ import annotations

import argparse
import base64
import time

import numpy as np

from . import corpus as C

SEED = 6346


def _word(c: int) -> bool:
    return 48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c == 95


def _hostc(c: int) -> bool:
    return _word(c) or c == 45


def boundary_ok(kind: int, b: bytes, s: int, e: int, start: int, end: int, lit: bytes) -> bool:
    """``kernels.markers._boundary_ok`` in plain Python (the peers' check)."""
    from flowaudit.kernels import markers as M

    def host_end():
        return e >= end or not (_hostc(b[e]) or (b[e] == 46 and e + 1 < end and _hostc(b[e + 1])))

    def tok_left():
        return s <= start or not (_word(b[s - 1]) or (b[s - 1] == 46 and s - 2 >= start and _word(b[s - 2])))

    def tok_right():
        return e >= end or not (_word(b[e]) or (b[e] == 46 and e + 1 < end and _word(b[e + 1])))

    if kind == M.DOMAIN:
        return (s <= start or not _hostc(b[s - 1])) and host_end()
    if kind == M.HOST:
        return (s <= start or (not _hostc(b[s - 1]) and b[s - 1] != 46)) and host_end()
    if kind == M.HOST_SUFFIX:
        return host_end()
    left = not _word(lit[0]) or tok_left()
    if kind in (M.TOKEN, M.KEY):
        return left and (not _word(lit[-1]) or tok_right())
    if kind == M.TOKEN_PREFIX:
        return left and e < end and _word(b[e])
    if kind == M.PATH:
        return not _word(lit[-1]) or tok_right()
    return True   # PATH_PREFIX, BASE64


def literals(wl) -> list[tuple[bytes, int, bool]]:
    """(bytes as stored, kind, caseless) of every pattern, in pattern-id order (aliases last)."""
    out = []
    for pats in (wl.patterns, wl.b64_patterns):
        if pats is None:
            continue
        for i in range(pats.n):
            out.append((pats.pat_buf[pats.pat_off[i]:pats.pat_off[i + 1]].tobytes(), int(pats.pat_kind[i]),
                        bool(pats.pat_ci[i])))
    return out


def plant(values: list[bytes], every: int) -> list[bytes]:
    """One message in ``every`` gets a watched name appended (clear, base64, or a look-alike)."""
    extras = [b' "https://gateway.logink.cn/ais/getVesselBaseInfo"', b" LOGINK_CN_FREIGHTCHARGES",
              b" master7.teamviewer.com", b' "cb":"%s"' % base64.b64encode(b"https://ssl.logink.cn/api"),
              b' "t":"%s"' % base64.urlsafe_b64encode(b"x logink.track.customs"),
              b" notlogink.cn LoginKit blogink.org"]
    out = list(values)
    for k, i in enumerate(range(0, len(out), every)):
        out[i] = out[i] + extras[k % len(extras)]
    return out


def _owner(offsets: np.ndarray, s: int, e: int) -> int:
    """The message holding [s, e), or -1 when the range crosses a message boundary."""
    m = int(np.searchsorted(offsets, s, "right")) - 1
    return m if e <= offsets[m + 1] else -1


def _checked(raw: bytes, offsets: np.ndarray, lits, found) -> list[tuple[int, int, int]]:
    out = []
    for p, s, e in found:
        m = _owner(offsets, s, e)
        if m >= 0 and boundary_ok(lits[p][1], raw, s, e, int(offsets[m]), int(offsets[m + 1]), lits[p][0]):
            out.append((m, p, s))
    return out


def hyperscan_scan(db, raw: bytes, offsets: np.ndarray, lits) -> list[tuple[int, int, int]]:
    found = []

    def on_match(p, _from, to, _flags, _ctx):
        found.append((p, to - len(lits[p][0]), to))
    db.scan(raw, match_event_handler=on_match)
    return _checked(raw, offsets, lits, found)


def find_scan(raw: bytes, offsets: np.ndarray, lits) -> list[tuple[int, int, int]]:
    low = raw.lower()
    found = []
    for p, (lit, _kind, ci) in enumerate(lits):
        hay = low if ci else raw
        i = hay.find(lit)
        while i >= 0:
            found.append((p, i, i + len(lit)))
            i = hay.find(lit, i + 1)
    return _checked(raw, offsets, lits, found)


def planted(datasets: dict, every: int = 50) -> "C.Dataset":
    """The synthetic messages of every format, one in ``every`` with a watched name (:func:`plant`)."""
    values = []
    for fmt in C.FORMATS:
        if fmt in datasets:
            values += datasets[fmt].values()
    return C.from_values("watchlist", "synth", plant(values, every))


def _counts(matches: list[tuple[int, int, int]]) -> dict:
    return {"matches": len(matches), "messages": len({m for m, _p, _s in matches}),
            "patterns": len({p for _m, p, _s in matches})}


def flowaudit_scan(det, ds) -> list[tuple[int, int, int]]:
    """``EgressDetector.prescan`` as (message, pattern, start), sorted."""
    pre = det.prescan(ds.buf, ds.offsets)
    if pre.escaped.size:   # the synthetic mix has none; such a message is matched on its decoded text
        raise RuntimeError("watchlist bench: escaped messages in the mix; the peers would not see the same text")
    mm, pp, ss, _ee = pre.matches
    return sorted(zip(mm.tolist(), pp.tolist(), ss.tolist()))


def flowaudit_counts(det, ds) -> dict:
    return _counts(flowaudit_scan(det, ds))


def _hs_database(lits):
    import hyperscan

    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[b"".join(b"\\x%02x" % c for c in lit) for lit, _k, _ci in lits],
               ids=list(range(len(lits))), elements=len(lits),
               flags=[hyperscan.HS_FLAG_CASELESS if ci else 0 for _l, _k, ci in lits])
    return db


def peers(wl) -> list:
    """The suite's peers of the stage (benchmarks/peers.Peer): counts of the same matches."""
    from . import peers as P

    lits = literals(wl)
    cmp = {"matches": "matches", "messages": "messages", "patterns": "patterns"}
    note = f"{len(lits)} literals and base64 aliases; boundaries checked in Python"
    def work(scan):   # the bytes object made once, outside the timed call (as flowaudit's buffer is)
        return lambda ds: (lambda raw: lambda: _counts(scan(raw, ds.offsets)))(ds.buf.tobytes())

    out = [P.Peer("python bytes.find per literal", P._py_version(),
                  work(lambda raw, off: find_scan(raw, off, lits)), compare=cmp, note=note, slow=True)]
    try:
        db = _hs_database(lits)
    except Exception as exc:  # noqa: BLE001
        return out + [P._skip("python-hyperscan (block mode, one database)", "hyperscan", exc)]
    out.append(P.Peer("python-hyperscan (block mode, one database)", P.version("hyperscan") + " (bundled Vectorscan)",
                      work(lambda raw, off: hyperscan_scan(db, raw, off, lits)), compare=cmp, note=note))
    return out


def main(argv=None) -> int:
    from flowaudit.detect.egress import EgressDetector

    ap = argparse.ArgumentParser(prog="python -m benchmarks.watchlist", description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=16.0, help="MB of synthetic messages per format (default 16)")
    ap.add_argument("--every", type=int, default=50, help="one message in N carries a watched name (default 50)")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    ds = planted({f: C.synth_dataset(f, SEED, a.mb) for f in C.FORMATS}, a.every)
    det = EgressDetector()
    lits = literals(det.watchlist)
    raw = ds.buf.tobytes()
    runs = {"flowaudit (EgressDetector.prescan)": lambda: flowaudit_scan(det, ds),
            "python bytes.find per literal": lambda: sorted(find_scan(raw, ds.offsets, lits))}
    try:
        db = _hs_database(lits)
        runs["python-hyperscan (block mode, one database)"] = lambda: sorted(hyperscan_scan(db, raw, ds.offsets, lits))
    except Exception as exc:  # noqa: BLE001
        print(f"python-hyperscan skipped: {type(exc).__name__}: {exc}")
    runs["flowaudit (EgressDetector.prescan)"]()    # compiled / loaded outside the timing
    got = {}
    for name, fn in runs.items():
        best = float("inf")
        for _ in range(max(1, a.repeats)):
            t0 = time.perf_counter()
            got[name] = fn()
            best = min(best, time.perf_counter() - t0)
        got[name] = (best, got[name])
    t_fa, ours = got.pop("flowaudit (EgressDetector.prescan)")
    print(f"watchlist scan: {ds.nbytes / 1e6:.1f} MB, {len(ds):,} messages, {len(lits)} patterns "
          f"({0 if det.watchlist.b64_patterns is None else det.watchlist.b64_patterns.n} base64 aliases), "
          f"{len(ours):,} matches; best of {a.repeats}")
    print(f"  {'flowaudit (EgressDetector.prescan)':45} {ds.nbytes / 1e6 / t_fa:8.0f} MB/s")
    for name, (t, m) in got.items():
        if m != ours:
            raise SystemExit(f"{name} found {len(m)} matches, flowaudit {len(ours)}: they must be equal")
        print(f"  {name:45} {ds.nbytes / 1e6 / t:8.0f} MB/s   flowaudit {t / t_fa:.2f}x")
    print("every implementation found the same matches (message, pattern, start)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
