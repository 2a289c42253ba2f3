"""``flowaudit scan PATH...``: classify message files offline, with the stream's code path.

Files (or every file under a folder) are read, split into interchanges where a file holds
several (EDIFACT ``UNA``/``UNB``, X12 ``ISA``), gathered into batches and classified by the same
:class:`~flowaudit.pipeline.Classifier` the stream service uses.  Hits go to Parquet or JSON
lines (``--out``); a readable summary goes to stdout.  Provenance: ``source`` is the file path,
``partition`` -1, ``offset`` the interchange's index within the file.
"""
from __future__ import annotations

import collections
import os
import re
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from .datasets import HITS, QUARANTINE
from .pipeline import FMT_AUTO, Batch, Classifier

# an interchange starts at the beginning of the file or right after a segment terminator
# (optionally followed by line breaks): EDIFACT UNA/UNB, X12 ISA
_EDI_START = re.compile(rb"(?:(?<=')|(?<=~)|(?<=\n)|(?<=\x1c))[\r\n]*(?=UNA[^\r\n]{6}|UNB\+|ISA[^A-Za-z0-9\s])")
MAX_FILE_BYTES = 256 * 1024 * 1024


def split_interchanges(data: bytes) -> list[bytes]:
    """Split a file into its EDI interchanges; JSON, XML and single interchanges stay whole."""
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n\x00")[:3]
    if head not in (b"UNA", b"UNB", b"ISA"):
        return [data]
    cuts = sorted({m.end() for m in _EDI_START.finditer(data)})
    # not at the very start, and not the UNB right after its own UNA service string advice
    cuts = [c for c in cuts if data[:c].strip(b"\xef\xbb\xbf \t\r\n\x00") and data[max(0, c - 9):c - 6] != b"UNA"]
    if not cuts:
        return [data]
    parts, prev = [], 0
    for c in cuts:
        parts.append(data[prev:c])
        prev = c
    parts.append(data[prev:])
    return parts


def iter_files(paths: list[str]):
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        elif p.is_file():
            yield p
        else:
            raise FileNotFoundError(p)


def scan(paths: list[str], classifier: Classifier, batch_bytes: int = 32 << 20):
    """Yield BatchResults for the files under ``paths`` (with the Batch they came from)."""
    values, src_idx, offs, sources = [], [], [], []
    size = 0

    def flush():
        nonlocal values, src_idx, offs, size
        if not values:
            return None
        batch = Batch.from_values(values, FMT_AUTO, sources=list(sources), source_idx=src_idx, offset=offs)
        values, src_idx, offs, size = [], [], [], 0
        return batch, classifier.run(batch)

    for f in iter_files(paths):
        data = f.read_bytes()[:MAX_FILE_BYTES + 1]
        parts = split_interchanges(data) if len(data) <= MAX_FILE_BYTES else [data]
        sources.append(str(f))
        for i, part in enumerate(parts):
            values.append(part)
            src_idx.append(len(sources) - 1)
            offs.append(i)
            size += len(part)
        if size >= batch_bytes:
            out = flush()
            if out:
                yield out
    out = flush()
    if out:
        yield out


def run(paths: list[str], classifier: Classifier, out: str | None = None, echo=print) -> dict:
    hits_tables, quarantine_tables = [], []
    per_file: dict = collections.defaultdict(lambda: {"format": set(), "type": set(), "messages": 0,
                                                      "hits": collections.Counter(), "quarantined": collections.Counter()})
    for batch, r in scan(paths, classifier):
        names = batch.sources
        fmt_names = r.messages.column("format").to_pylist()
        types = r.messages.column("msg_type").to_pylist()
        for k, i in enumerate(r.m_idx):
            rec = per_file[names[batch.source_idx[i]]]
            rec["messages"] += 1
            rec["format"].add(fmt_names[k])
            rec["type"].add(types[k])
        for i, cls in zip(r.h_idx, r.hits.column("data_class").to_pylist()):
            per_file[names[batch.source_idx[i]]]["hits"][cls] += 1
        for i, reason in zip(r.q_idx, r.quarantine.column("reason").to_pylist()):
            rec = per_file[names[batch.source_idx[i]]]
            rec["messages"] += 1
            rec["quarantined"][reason] += 1
        hits_tables.append(r.hits)
        quarantine_tables.append(r.quarantine)
    hits = pa.concat_tables(hits_tables) if hits_tables else HITS.empty_table()
    quarantine = pa.concat_tables(quarantine_tables) if quarantine_tables else QUARANTINE.empty_table()
    if out:
        write_hits(hits, out)
    echo(format_table(per_file))
    totals = collections.Counter()
    for rec in per_file.values():
        totals.update(rec["hits"])
    echo(f"\n{len(per_file)} files, {sum(r['messages'] for r in per_file.values())} messages, "
         f"{hits.num_rows} hits, {quarantine.num_rows} quarantined"
         + (f"; hits written to {out}" if out else ""))
    return {"files": dict(per_file), "hits": hits, "quarantine": quarantine, "totals": totals}


def write_hits(hits: pa.Table, out: str) -> None:
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix in (".jsonl", ".ndjson", ".json"):
        with open(p, "wb") as f:
            for row in hits.to_pylist():
                row["value_hmac"] = row["value_hmac"].hex()
                f.write(orjson.dumps(row) + b"\n")
    else:
        pq.write_table(hits, p, compression="zstd")


def format_table(per_file: dict) -> str:
    rows = [("file", "format", "type", "msgs", "hits", "top classes", "quarantined")]
    for name, r in per_file.items():
        top = ", ".join(f"{c} {n}" for c, n in r["hits"].most_common(3))
        q = ", ".join(f"{c} {n}" for c, n in r["quarantined"].items())
        short = name if len(name) <= 48 else "…" + name[-47:]
        rows.append((short, "/".join(sorted(r["format"])) or "-", "/".join(sorted(r["type"]))[:14] or "-",
                     str(r["messages"]), str(sum(r["hits"].values())), top, q or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_scan(args) -> int:
    from .config import load, hmac_key
    from .protect import Protector

    settings = load(args.config, overrides={"sink": {"raw_values": True}} if args.raw else None)
    if args.out or settings.security.hmac_key or settings.security.hmac_key_file:
        key, _src = hmac_key(settings, Path(args.out).resolve().parent if args.out else Path("."))
    else:  # nothing is stored: an ephemeral key keeps hashes joinable within this run only
        key = os.urandom(32)
    clf = Classifier(Protector(key, raw=settings.sink.raw_values), dedupe_entries=settings.kafka.dedupe_entries)
    try:
        run(args.paths, clf, out=args.out)
    except FileNotFoundError as exc:
        print(f"flowaudit: no such file or folder: {exc.args[0]}", file=sys.stderr)
        return 2
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("scan", help="classify message files or folders offline (same code path as stream)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (format detected per interchange)")
    p.add_argument("--out", metavar="FILE", help="write hits to FILE (.parquet, or .jsonl for JSON lines)")
    p.add_argument("--raw", action="store_true",
                   help="also store raw values (local investigations only) [env FLOWAUDIT_SINK_RAW_VALUES]")
    p.add_argument("--config", metavar="FILE", help="TOML settings (HMAC key) [env FLOWAUDIT_CONFIG]")
    p.set_defaults(fn=cmd_scan)
