"""``flowaudit scan PATH...``: classify message files offline, with the stream's code path.

Files (or every file under a folder) are memory-mapped and cut into interchanges in one linear
pass (kernels/split.py: EDIFACT ``UNA``/``UNB`` .. ``UNZ`` and X12 ``ISA`` .. ``IEA``, mixed, with
each interchange's own separators); runs of whole interchanges are copied into batches of about
``batch_bytes`` and classified by the same :class:`~flowaudit.pipeline.Classifier` the stream
service uses.  Every byte of a file lands in exactly one piece: bytes between interchanges that
are not one (garbage) and an interchange without its trailer become their own pieces, which the
classifier quarantines with a reason.  A file that does not start like EDI (JSON, XML) is one
piece.  Hits go to Parquet or JSON lines (``--out``); a readable summary goes to stdout.
Provenance: ``source`` is the file path, ``partition`` -1, ``offset`` the piece's index within
the file.
"""
from __future__ import annotations

import collections
import mmap
import os
import sys
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from .datasets import HITS, QUARANTINE
from .kernels import split as _split
from .pipeline import FMT_AUTO, Batch, Classifier

DEFAULT_BATCH_BYTES = 32 << 20


def interchange_cuts(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(cuts, kinds)`` of a file's bytes (kernels/split.py): piece ``k`` is
    ``buf[cuts[k]:cuts[k+1]]``; the pieces cover the whole file.  An empty file is one empty
    piece (the classifier quarantines it as ``empty_value``: nothing is dropped silently)."""
    if buf.shape[0] == 0:
        return np.zeros(2, np.int64), np.zeros(1, np.uint8)
    return _split.split_interchanges(buf, 0, buf.shape[0])


def split_interchanges(data: bytes) -> list[bytes]:
    """Split a file into its EDI interchanges; JSON, XML and single interchanges stay whole."""
    cuts, _kinds = interchange_cuts(np.frombuffer(data, np.uint8))
    c = cuts.tolist()
    return [data[c[k]:c[k + 1]] for k in range(len(c) - 1)]


def iter_files(paths: list[str]):
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        elif p.is_file():
            yield p
        else:
            raise FileNotFoundError(p)


class _FileBytes:
    """A file's bytes as a read-only uint8 array: memory-mapped (the page cache holds it, not
    the heap), or an empty array for an empty file."""

    def __init__(self, path: Path):
        self._mm = None
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.buf = np.frombuffer(self._mm, np.uint8) if self._mm is not None else np.zeros(0, np.uint8)

    def close(self) -> None:
        self.buf = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # a view is still alive somewhere: the GC unmaps it later
                pass
            self._mm = None


def scan(paths: list[str], classifier: Classifier, batch_bytes: int = DEFAULT_BATCH_BYTES):
    """Yield ``(Batch, BatchResult)`` for the files under ``paths``.

    Each file is memory-mapped and cut into interchanges in one pass (kernels/split.py); runs of
    whole interchanges are copied into batches of about ``batch_bytes`` (an interchange is never
    split across batches; one larger than ``batch_bytes`` is a batch of its own), so memory stays
    about two batches whatever the file size.  Small files share batches."""
    sources: list[str] = []
    parts: list[tuple[np.ndarray, np.ndarray, int, int]] = []   # bytes, local offsets, source, first index
    size = 0

    def flush():
        nonlocal parts, size
        if not parts:
            return None
        bufs, offs, src, idx = [], [np.zeros(1, np.int64)], [], []
        base = 0
        for chunk, local, si, first in parts:
            bufs.append(chunk)
            offs.append(local[1:] + base)
            base += chunk.shape[0]
            n = local.shape[0] - 1
            src.append(np.full(n, si, np.int32))
            idx.append(np.arange(first, first + n, dtype=np.int64))
        buf = bufs[0] if len(bufs) == 1 else np.concatenate(bufs)
        offsets = np.concatenate(offs)
        n = offsets.shape[0] - 1
        batch = Batch(buf=buf, offsets=offsets, declared=np.full(n, FMT_AUTO, np.uint8), sources=list(sources),
                      source_idx=np.concatenate(src), partition=np.full(n, -1, np.int32),
                      offset=np.concatenate(idx), ts_ms=np.full(n, -1, np.int64), keys=[None] * n,
                      null=np.zeros(n, bool))
        parts, size = [], 0
        return batch, classifier.run(batch)

    for f in iter_files(paths):
        fb = _FileBytes(f)
        try:
            cuts, _kinds = interchange_cuts(fb.buf)
            sources.append(str(f))
            si = len(sources) - 1
            npieces = cuts.shape[0] - 1
            k = 0
            while k < npieces:
                # whole pieces k .. m-1, enough to fill the batch (at least one)
                m = int(np.searchsorted(cuts, cuts[k] + max(1, batch_bytes - size), side="left"))
                m = min(max(m, k + 1), npieces)
                chunk = np.array(fb.buf[cuts[k]:cuts[m]])      # a copy: the map is closed below
                parts.append((chunk, cuts[k:m + 1] - cuts[k], si, k))
                size += chunk.shape[0]
                k = m
                if size >= batch_bytes:
                    yield flush()
        finally:
            fb.close()
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
