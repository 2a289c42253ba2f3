"""``flowaudit scan PATH...``: classify message files offline, with the stream's code path.

Files (or every file under a folder) are memory-mapped and cut into interchanges in one linear
pass (kernels/split.py: EDIFACT ``UNA``/``UNB`` .. ``UNZ`` and X12 ``ISA`` .. ``IEA``, mixed,
with each interchange's own separators; a big file a step at a time, the next step on a thread);
runs of whole interchanges are copied into batches of about ``batch_bytes`` and classified by
the same :class:`~flowaudit.pipeline.Classifier` the stream service uses, one batch's kernels
beside the tables of the batch before. Every byte of a file lands in exactly one piece: bytes
between interchanges that are not one (garbage) and an interchange without its trailer become
their own pieces, which the classifier quarantines with a reason. A JSON Lines file (``.jsonl``,
``.ndjson``, ``.jsonlines``: a topic dump) is a message a line; any other file that does not
start like EDI (JSON, XML) is one piece. Hits go to Parquet or JSON lines (``--out``); a
readable summary goes to stdout. Provenance: ``source`` is the file path, ``partition`` -1,
``offset`` the piece's index within the file (in a JSON Lines file: the line's number among the
lines with content, 0 = the first). A batch's hits are encoded and written on a thread while the
next batch is classified (one write in flight: Parquet's writer leaves the GIL).
"""
from __future__ import annotations

import collections
import io
import mmap
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .datasets import HITS, parquet_options
from .kernels import split as _split
from .pipeline import FMT_AUTO, Batch, Classifier

DEFAULT_BATCH_BYTES = 8 << 20   # hit-dense EDI: ~25x the batch in classifier tables; 4-16 MiB run equally fast


def interchange_cuts(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(cuts, kinds)`` of a file's bytes (kernels/split.py): piece ``k`` is
    ``buf[cuts[k]:cuts[k+1]]``; the pieces cover the whole file.  An empty file is one empty
    piece (the classifier quarantines it as ``empty_value``: nothing is dropped silently)."""
    if buf.shape[0] == 0:
        return np.zeros(2, np.int64), np.zeros(1, np.uint8)
    return _split.split_interchanges(buf, 0, buf.shape[0])


STEP_BYTES = 8 << 20   # a big file is cut a step at a time (interchange_steps), the next beside this one's batches
STEP_MARGIN = 4096     # > the splitter's look-ahead past a byte it decides on (an ISA's first 512 bytes)
_EDI_KINDS = np.array([_split.K_EDIFACT, _split.K_X12, _split.K_EDIFACT_OPEN, _split.K_X12_OPEN])


def interchange_steps(buf: np.ndarray, step: int = STEP_BYTES, margin: int = STEP_MARGIN):
    """:func:`interchange_cuts` a step at a time: yields ``(cuts, kinds)`` of consecutive runs of
    pieces that, end to end, are exactly the one-pass result, so that the split of the next step
    can run beside the classification of this one.

    Each step splits ``buf[start:start + step]`` and keeps its pieces up to the last interchange
    (not garbage) that starts at least ``margin`` bytes before the step's end; the next step
    starts there.  That is exact because the splitter decides where a piece ends from the bytes
    before that point and a bounded look-ahead (a header's service characters, an ISA's first
    512 bytes: less than ``margin``), or from a look-ahead through white space that, cut short by
    the step's end, carries the piece on to that end (so it is not kept); and because it reads an
    interchange from its header on with nothing carried over but the terminator of the one
    before, which only garbage after it uses.  A step that keeps nothing (an interchange longer
    than it) is tried again twice as long."""
    n = buf.shape[0]
    start = 0
    while True:
        end = min(n, start + step)
        cuts, kinds = interchange_cuts(buf) if start == 0 and end == n else _split.split_interchanges(buf, start, end)
        if end == n or (start == 0 and kinds[0] == _split.K_WHOLE):
            yield (cuts, kinds) if end == n else interchange_cuts(buf)      # not EDI: one piece
            return
        resume = np.flatnonzero((cuts[1:-1] <= end - margin) & np.isin(kinds[1:], _EDI_KINDS))
        if resume.size == 0:
            step *= 2
            continue
        j = int(resume[-1]) + 1
        yield cuts[:j + 1], kinds[:j]
        start = int(cuts[j])


JSON_LINES = (".jsonl", ".ndjson", ".jsonlines")   # a message a line (topic dumps: kcat, kafka-console-consumer)
_WS = np.zeros(256, bool)
_WS[[9, 10, 13, 32]] = True


def line_steps(buf: np.ndarray, step: int = STEP_BYTES):
    """A JSON Lines file's pieces, a step at a time as :func:`interchange_steps` yields them: a
    piece starts at each line that starts with a byte other than white space, and runs to the
    next such line (blank lines join the piece before them), so every byte is in one piece.  Each
    step's temporaries are the size of the step, whatever the file's.  White space before the
    first line belongs to it."""
    n = buf.shape[0]
    if n == 0:
        yield interchange_cuts(buf)
        return
    lead = 0                       # the first byte that is not white space (n: none)
    while lead < n and not (nz := np.flatnonzero(~_WS[buf[lead:lead + step]])).size:
        lead += step
    lead = min(n, lead + int(nz[0])) if lead < n else n
    first = 0
    for pos in range(0, n, step):
        end = min(n, pos + step)
        lo = max(pos, lead + 1)
        starts = np.flatnonzero((buf[lo - 1:end - 1] == 10) & ~_WS[buf[lo:end]]) + lo if lo < end else \
            np.zeros(0, np.int64)
        if end == n:
            cuts = np.concatenate(([first], starts, [n])).astype(np.int64)
            yield cuts, np.zeros(cuts.shape[0] - 1, np.uint8)
        elif starts.size:
            cuts = np.concatenate(([first], starts)).astype(np.int64)
            yield cuts, np.zeros(cuts.shape[0] - 1, np.uint8)
            first = int(starts[-1])


def warmup() -> None:
    """Compile (or load cached) the splitter for the buffers scan() passes it (read-only maps)."""
    sample = b"UNA:+.? '\nUNB+UNOA:2+S+R+260301:1200+1'UNZ+0+1'\nISA*00*"
    interchange_cuts(np.frombuffer(sample, np.uint8))


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
    the heap; read whole where mapping fails), or an empty array for an empty file."""

    def __init__(self, path: Path):
        self._mm = None
        self.buf = np.zeros(0, np.uint8)
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size:
                try:
                    self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                    self.buf = np.frombuffer(self._mm, np.uint8)
                except (OSError, ValueError):   # a file system without mmap: read it (one copy)
                    self.buf = np.frombuffer(f.read(), np.uint8)

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
    about three batches whatever the file size: one being filled, one whose kernels run
    (:meth:`Classifier.pipelined`) while the one before is finished and yielded.  Big files are
    split a step at a time, the next step on a thread (:func:`interchange_steps`).  Small files
    share batches."""
    return classifier.pipelined(_batches(paths, batch_bytes))


def _batches(paths: list[str], batch_bytes: int):
    """The batches of :func:`scan`, unclassified."""
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
        return batch

    for f in iter_files(paths):
        fb = _FileBytes(f)
        ahead = WriteBehind("flowaudit-scan-split") if fb.buf.shape[0] > STEP_BYTES else None
        try:
            sources.append(str(f))
            si = len(sources) - 1
            first = 0      # the file's pieces before this step
            steps = line_steps(fb.buf) if f.suffix.lower() in JSON_LINES else interchange_steps(fb.buf, STEP_BYTES)
            for cuts, _kinds in (steps if ahead is None else _one_ahead(steps, ahead)):
                npieces = cuts.shape[0] - 1
                k = 0
                while k < npieces:
                    # whole pieces k .. m-1, enough to fill the batch (at least one)
                    m = int(np.searchsorted(cuts, cuts[k] + max(1, batch_bytes - size), side="left"))
                    m = min(max(m, k + 1), npieces)
                    chunk = np.array(fb.buf[cuts[k]:cuts[m]])      # a copy: the map is closed below
                    parts.append((chunk, cuts[k:m + 1] - cuts[k], si, first + k))
                    size += chunk.shape[0]
                    k = m
                    if size >= batch_bytes:
                        yield flush()
                first += npieces
        finally:
            if ahead is not None:
                ahead.close()      # the split in flight reads the map: it ends first
            fb.close()
    last = flush()
    if last is not None:
        yield last


def _codes(col) -> tuple[np.ndarray, list]:
    """A dictionary column as (int64 codes, names)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    return arr.indices.to_numpy(zero_copy_only=False).astype(np.int64), arr.dictionary.to_pylist()


def _tally(src: np.ndarray, col) -> list[tuple[int, object, int]]:
    """(source index, value, count) for each distinct pair (no per-row Python)."""
    if src.shape[0] == 0:
        return []
    codes, names = _codes(col)
    k = max(1, len(names))
    keys = src.astype(np.int64) * k + codes
    top = int(keys.max()) + 1
    if top <= max(1 << 16, 4 * keys.size):      # a count per possible pair: no sort of every row
        counts = np.bincount(keys, minlength=top)
        pairs = np.flatnonzero(counts)
        counts = counts[pairs]
    else:
        pairs, counts = np.unique(keys, return_counts=True)
    return [(int(pr // k), names[int(pr % k)], int(c)) for pr, c in zip(pairs, counts)]


def _one_ahead(items, behind: "WriteBehind"):
    """``items``, each next one made on ``behind``'s thread while the caller uses this one."""
    behind.submit(next, items, None)
    while (item := behind.submit(next, items, None)) is not None:
        yield item


class WriteBehind:
    """One write in flight on a thread, beside the caller's next batch: :meth:`submit` first waits
    for the write before it (and raises its error), so writes keep their order and memory holds
    at most one batch's output besides the one being built.  (Any call works so:
    :func:`_one_ahead` makes the next step's split this way.)"""

    def __init__(self, name: str = "flowaudit-scan-writer"):
        self._ex = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._fut = None

    def submit(self, fn, *args):
        """Start ``fn(*args)`` on the thread once the write before it is done; returns that
        write's result (None for the first)."""
        prev = self.wait()
        self._fut = self._ex.submit(fn, *args)
        return prev

    def wait(self):
        """The last write's result (its error raised); None when none is in flight."""
        fut, self._fut = self._fut, None
        return None if fut is None else fut.result()

    def close(self):
        """Wait for the last write (its error raised; its result returned), then stop the thread."""
        try:
            return self.wait()
        finally:
            self._ex.shutdown(wait=True)


def json_lines(table: pa.Table) -> bytes:
    """One JSON object per row, keys in column order, binary columns (the HMAC) as hex: encoded
    by polars (the bytes orjson gives row by row, ~25x faster: a Python dict per row cost 23 us)."""
    import polars as pl
    df = pl.from_arrow(table)       # binary columns, dictionary-encoded or fixed-size too, arrive as Binary
    out = io.BytesIO()
    df.with_columns(pl.col(pl.Binary).bin.encode("hex")).write_ndjson(out)
    return out.getvalue()


class HitWriter:
    """Hits written batch by batch (Parquet row groups, or JSON lines) to a hidden temp file,
    published under ``out`` by :meth:`close`: memory holds a batch's hits or two, not the run's.
    Each batch is encoded and written on a thread (:class:`WriteBehind`) while the caller goes on."""

    def __init__(self, out: str):
        self.path = Path(out)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.path.suffix in (".jsonl", ".ndjson", ".json")
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._f = open(self.tmp, "wb") if self.jsonl else None
        self._pw = None
        self._behind = WriteBehind()

    def write(self, hits: pa.Table) -> None:
        self._behind.submit(self._write, hits)

    def _write(self, hits: pa.Table) -> None:
        if self.jsonl:
            if hits.num_rows:
                self._f.write(json_lines(hits))
        elif hits.num_rows:
            if self._pw is None:
                opts = parquet_options(hits.schema)
                self._rows = opts.pop("row_group_size")
                self._pw = pq.ParquetWriter(self.tmp, hits.schema, **opts)
            self._pw.write_table(hits, row_group_size=self._rows)

    def close(self) -> None:
        self._behind.close()
        if self.jsonl:
            self._f.close()
        elif self._pw is None:
            pq.write_table(HITS.empty_table(), self.tmp, **parquet_options(HITS))
        else:
            self._pw.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            try:
                self._behind.close()
            except Exception:  # noqa: BLE001 - the run failed already; its own error is the one raised
                pass
            if self._f is not None:
                self._f.close()
            if self._pw is not None:
                self._pw.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def run(paths: list[str], classifier: Classifier, out: str | None = None, echo=print,
        batch_bytes: int = DEFAULT_BATCH_BYTES) -> dict:
    """Scan ``paths``, print the per-file summary, stream hits to ``out``; returns the per-file
    summary, ``totals`` (hits per class) and the ``hits`` / ``quarantined`` row counts."""
    per_file: dict = collections.defaultdict(lambda: {"format": set(), "type": set(), "messages": 0,
                                                      "hits": collections.Counter(), "quarantined": collections.Counter()})
    n_hits = n_quarantined = 0
    writer = HitWriter(out) if out else None
    try:
        for batch, r in scan(paths, classifier, batch_bytes=batch_bytes):
            names = batch.sources
            for si in np.unique(batch.source_idx):      # summary rows in file order
                per_file[names[si]]
            m_src = batch.source_idx[r.m_idx]
            for si, cnt in zip(*np.unique(m_src, return_counts=True)):
                per_file[names[si]]["messages"] += int(cnt)
            for key, col in (("format", "format"), ("type", "msg_type")):
                for si, v, _c in _tally(m_src, r.messages.column(col)):
                    per_file[names[si]][key].add(v)
            for si, cls, c in _tally(batch.source_idx[r.h_idx], r.hits.column("data_class")):
                per_file[names[si]]["hits"][cls] += c
            for si, reason, c in _tally(batch.source_idx[r.q_idx], r.quarantine.column("reason")):
                rec = per_file[names[si]]
                rec["messages"] += c
                rec["quarantined"][reason] += c
            n_hits += r.hits.num_rows
            n_quarantined += r.quarantine.num_rows
            if writer:
                writer.write(r.hits)
        if writer:
            writer.close()
            writer = None
    finally:
        if writer:  # failed half way: no partial output under the real name
            writer.abort()
    echo(format_table(per_file))
    totals = collections.Counter()
    for rec in per_file.values():
        totals.update(rec["hits"])
    echo(f"\n{len(per_file)} files, {sum(r['messages'] for r in per_file.values())} messages, "
         f"{n_hits} hits, {n_quarantined} quarantined"
         + (f"; hits written to {out}" if out else ""))
    return {"files": dict(per_file), "hits": n_hits, "quarantined": n_quarantined, "totals": totals}


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
    from .config import load, output_key
    from .protect import Protector

    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:          # before a key file is made for output that will not be written
        print(f"flowaudit: no such file or folder: {missing[0]}", file=sys.stderr)
        return 2
    settings = load(args.config, overrides={"sink": {"raw_values": True}} if args.raw else None)
    if args.out or settings.security.hmac_key or settings.security.hmac_key_file:
        key = output_key(settings, Path(args.out).resolve().parent if args.out else Path("."))
    else:  # nothing is stored: an ephemeral key keeps hashes joinable within this run only
        key = os.urandom(32)
    clf = Classifier(Protector(key, raw=settings.sink.raw_values), dedupe_entries=settings.kafka.dedupe_entries,
                     threads=settings.kafka.kernel_threads)
    try:
        run(args.paths, clf, out=args.out, batch_bytes=max(1, int(args.batch_mib * (1 << 20))))
    except FileNotFoundError as exc:
        print(f"flowaudit: no such file or folder: {exc.args[0]}", file=sys.stderr)
        return 2
    return 0


def add_parser(sub) -> None:
    from .config import bounded, out_path

    p = sub.add_parser("scan", help="classify message files or folders offline (same code path as stream)",
                       description="EDI archive files are cut into their interchanges; a JSON Lines file (.jsonl, "
                       ".ndjson, .jsonlines: a topic dump) is a message a line; any other file is one message. "
                       "Provenance: source = the file, partition = -1, offset = the piece's index in the file.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (format detected per interchange)")
    p.add_argument("--out", type=out_path("file"), metavar="FILE",
                   help="write hits to FILE (.parquet, or .jsonl for JSON lines)")
    p.add_argument("--raw", action="store_true",
                   help="also store raw values (local investigations only) [env FLOWAUDIT_SINK_RAW_VALUES]")
    p.add_argument("--config", metavar="FILE", help="TOML settings (HMAC key) [env FLOWAUDIT_CONFIG]")
    p.add_argument("--batch-mib", type=bounded(float, 0, inclusive=False), default=DEFAULT_BATCH_BYTES / (1 << 20), metavar="N",
                   help="classify whole interchanges in batches of about N MiB (default %(default)g; memory "
                        "grows with it, files of any size are streamed)")
    p.set_defaults(fn=cmd_scan)
