"""``flowaudit verify ROOT``: is an evidence store intact?  Before a root's findings are handed on
(to a Captain of the Port, to an investigation), an operator can show that what it holds reads
back as written and that no offset is stored twice:

* every Parquet file under ``ROOT/dataset=*`` reads back whole, each page against the CRC32 its
  writer stored (``datasets.parquet_options``): a file that does not is **damaged**;
* the stream's files (``topic+partition+first+last[+eN].parquet``): per dataset, topic, partition
  and epoch, no two files hold overlapping offset ranges (**overlap**: an offset stored twice),
  and a set's ``messages`` and ``quarantine`` files hold no more rows than its range has offsets
  (each offset is a message or a quarantined record, once);
* a file set is committed by its ``messages`` file (published last): another dataset's file whose
  range has no ``messages`` file is **uncommitted** -- a set being published, or one a crash left,
  which the writer removes when it resumes (reported, not an error);
* hidden temporary files (``.<name>.tmp-<pid>``) left by a crash are counted.

Exit 0 when nothing is damaged and nothing overlaps, 1 otherwise, 2 on a usage error.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def verify(root: Path) -> dict:
    """The findings of a verification of ``root`` (see the module's docstring)."""
    import pyarrow.parquet as pq

    from .sinks.parquet import COMMIT_DATASET, parse_name, unreadable

    files = sorted(p for p in root.glob("dataset=*/**/*.parquet") if not p.name.startswith("."))
    temps = sorted(p for p in root.glob("dataset=*/**/.*") if p.is_file())
    damaged = unreadable(files, whole=True)
    bad = {p for p, _why in damaged}
    ranges: dict = {}
    per_offset: dict = {}       # a set's messages and quarantine rows: one row per offset at most
    for p in files:
        got = parse_name(p.name)
        if got is None:
            continue
        topic, part, first, last, epoch = got
        dataset = p.relative_to(root).parts[0].split("=", 1)[1]
        ranges.setdefault((dataset, topic, part, epoch), []).append((first, last, p))
        if dataset in (COMMIT_DATASET, "quarantine") and str(p) not in bad:
            n, ps = per_offset.get((topic, part, epoch, first, last), (0, []))
            per_offset[(topic, part, epoch, first, last)] = (n + pq.read_metadata(p).num_rows, ps + [str(p)])
    too_many = [(" and ".join(ps), n, last - first + 1) for (_t, _p, _e, first, last), (n, ps) in per_offset.items()
                if n > last - first + 1]
    overlaps, uncommitted = [], []
    for (dataset, topic, part, epoch), rs in sorted(ranges.items()):
        rs.sort()
        for (f0, l0, p0), (f1, l1, p1) in zip(rs, rs[1:]):
            if f1 <= l0:
                overlaps.append((str(p0), str(p1)))
        if dataset != COMMIT_DATASET:
            committed = {(f, last) for f, last, _p in ranges.get((COMMIT_DATASET, topic, part, epoch), [])}
            uncommitted += [str(p) for f, last, p in rs if (f, last) not in committed]
    return {"root": str(root), "files": len(files), "stream_files": sum(len(v) for v in ranges.values()),
            "damaged": [{"path": p, "why": w} for p, w in damaged],
            "overlaps": [{"first": a, "second": b} for a, b in overlaps],
            "too_many_rows": [{"path": p, "rows": r, "offsets": n} for p, r, n in too_many],
            "uncommitted": uncommitted, "temp_files": [str(p) for p in temps],
            "intact": not (damaged or overlaps or too_many)}


def cmd_verify(args) -> int:
    root = Path(args.root)
    if not root.is_dir() or not any(root.glob("dataset=*")):
        print(f"flowaudit verify: {root} is not a flowaudit root (no dataset=... folders)", file=sys.stderr)
        return 2
    r = verify(root)
    if args.json:
        print(json.dumps(r, indent=1))
        return 0 if r["intact"] else 1
    for d in r["damaged"]:
        print(f"damaged      {d['path']}: {d['why']}")
    for o in r["overlaps"]:
        print(f"overlap      {o['first']} and {o['second']} hold offsets in common (stored twice)")
    for t in r["too_many_rows"]:
        print(f"too many     {t['path']}: {t['rows']:,} rows for {t['offsets']:,} offsets")
    for u in r["uncommitted"]:
        print(f"uncommitted  {u} (no messages file commits its set: being published, or left by a crash; "
              f"the writer removes it when it resumes)")
    print(f"{r['files']:,} Parquet file(s) read back with their page checksums ({r['stream_files']:,} named by "
          f"offset range): {len(r['damaged'])} damaged, {len(r['overlaps'])} overlapping, "
          f"{len(r['too_many_rows'])} with more rows than offsets, {len(r['uncommitted'])} uncommitted, "
          f"{len(r['temp_files'])} temporary file(s) -> {'intact' if r['intact'] else 'NOT intact'}")
    return 0 if r["intact"] else 1


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="check that a root's Parquet files read back (page checksums) and that no "
                       "offset is stored twice", description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("root", metavar="ROOT", help="the stream's or an audit's Parquet root")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(fn=cmd_verify)
