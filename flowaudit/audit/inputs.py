"""What ``flowaudit audit`` reads: inputs found by their schema, cut into deterministic units.

An input argument is a Parquet file, a folder of them (Hive-partitioned or not), or a flowaudit
output root (``dataset=...`` folders: a retro-hunt).  Each Parquet file gets a *layout* from its
schema alone:

``flat``      Kafka Connect / archiver layout: ``value`` (binary) plus any of ``topic``,
              ``partition``, ``offset``, ``timestamp``, ``key`` (a ``topic=`` path segment names
              the topic when there is no column).
``redpanda``  Redpanda's Iceberg key-value layout: a ``redpanda`` struct (partition, offset,
              timestamp, headers, key) plus a binary ``value``.
``mapped``    anything else, through ``--map value=COL,time=COL,...`` (dots reach struct fields).
``flows``     flowaudit's own ``flows`` dataset.
``goflow2``   goflow2's flow columns (``src_addr`` as 4/16 raw bytes, ``time_flow_start_ns`` ...).

A file that fits none is an :class:`InputError` naming the columns it has and those each layout
needs.  A *unit* is a run of whole row groups of one file (about ``unit_rows`` rows); its id is
derived from the file's content (size and Parquet footer) and its row range, so a re-run writes
the same files under the same names, and a finished unit is never redone.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..datasets import FLOWS
from ..datasets import is_root as is_output_root  # noqa: F401  (the engine asks it of each input)

MESSAGE_KEYS = ("value", "topic", "partition", "offset", "time", "key", "format")
FLOW_REQUIRED = ("src_addr", "dst_addr", "src_port", "dst_port", "protocol", "bytes", "packets", "first_ns")
GOFLOW2_REQUIRED = ("src_addr", "dst_addr", "time_flow_start_ns", "bytes", "packets")
FLAT_ALIASES = {"topic": ("topic", "kafka_topic"), "partition": ("partition", "kafka_partition"),
                "offset": ("offset", "kafka_offset"), "time": ("timestamp", "kafka_timestamp", "time", "ts"),
                "key": ("key", "kafka_key")}
DEFAULT_UNIT_ROWS = 65536
DEFAULT_UNIT_BYTES = 16 << 20   # uncompressed bytes of a unit's row groups: hit tables are ~25x that
_FOOTER_BYTES = 1 << 20


class InputError(ValueError):
    """An input that cannot be audited; the message names the file and what is wrong."""


@dataclass
class RowGroup:
    index: int
    first_row: int
    rows: int
    nbytes: int = 0              # uncompressed bytes (the row group's total_byte_size)
    tmin_ms: int | None = None   # from the time column's statistics (None: unknown)
    tmax_ms: int | None = None


@dataclass
class Input:
    path: Path
    layout: str                  # flat, redpanda, mapped, flows, goflow2
    kind: str                    # messages or flows
    columns: dict                # canonical name -> column path in the file ("a.b" for struct fields)
    hive: dict                   # key=value path segments (topic=..., date=..., hour=...)
    size: int
    content_id: str              # from size + footer: names output files, keys resume markers
    row_groups: list[RowGroup] = field(default_factory=list)
    rows: int = 0

    @property
    def topic(self) -> str | None:
        return self.hive.get("topic")


@dataclass
class Unit:
    """Whole row groups ``row_groups`` of one input: rows ``first_row`` .. ``last_row - 1``."""

    input: Input
    row_groups: tuple[int, ...]
    first_row: int
    last_row: int

    @property
    def uid(self) -> str:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.input.path.stem)[:40]
        return f"audit-{stem}-{self.input.content_id}-r{self.first_row:012d}-{self.last_row:012d}"

    @property
    def rows(self) -> int:
        return self.last_row - self.first_row


def parse_map(text: str | None) -> dict:
    """``value=COL,time=COL`` -> {"value": "COL", "time": "COL"}."""
    out: dict = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise InputError(f"--map: expected NAME=COLUMN, got {part!r}")
        k, v = (x.strip() for x in part.split("=", 1))
        if not v:
            raise InputError(f"--map: expected NAME=COLUMN, got {part!r} (no column)")
        if k in out and out[k] != v:
            raise InputError(f"--map: {k} is mapped twice ({out[k]}, {v})")
        allowed = set(MESSAGE_KEYS) | {f.name for f in FLOWS}
        if k not in allowed:
            raise InputError(f"--map: unknown name {k!r}; message names: {', '.join(MESSAGE_KEYS)}; flow names: "
                             f"the flows dataset's columns ({', '.join(FLOW_REQUIRED)}, ...)")
        out[k] = v
    return out


def _leaf_names(schema: pa.Schema) -> dict:
    """column path ("a.b") -> arrow type, for top-level fields and one level of struct fields."""
    out = {}
    for f in schema:
        out[f.name] = f.type
        if pa.types.is_struct(f.type):
            for sub in f.type:
                out[f"{f.name}.{sub.name}"] = sub.type
    return out


def _is_bytes(t: pa.DataType) -> bool:
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_string(t)
            or pa.types.is_large_string(t) or getattr(pa.types, "is_binary_view", lambda _t: False)(t)
            or getattr(pa.types, "is_string_view", lambda _t: False)(t))


def layout_of(schema: pa.Schema, path: Path, mapping: dict) -> tuple[str, str, dict]:
    """(layout, kind, canonical -> column path) of a file's schema, or InputError."""
    cols = _leaf_names(schema)
    names = [f.name for f in schema]
    missing = [v for v in mapping.values() if v not in cols]
    if mapping and not missing:
        if "value" in mapping:
            return "mapped", "messages", dict(mapping)
        if "src_addr" in mapping or "first_ns" in mapping:
            got = {k: k for k in FLOW_REQUIRED if k in cols}
            got.update(mapping)
            lack = [k for k in FLOW_REQUIRED if k not in got]
            if lack:
                raise InputError(f"{path}: a flow archive needs {', '.join(lack)} (map them with --map NAME=COLUMN)")
            return "mapped", "flows", got
    try:
        return _known_layout(schema, path, cols, names)
    except InputError as exc:
        if missing:   # --map was meant for this file
            raise InputError(f"{path}: --map names column(s) {missing} that the file does not have; it has: "
                             f"{', '.join(names)}") from None
        raise exc from None


def _known_layout(schema, path, cols, names):
    if "redpanda" in names and pa.types.is_struct(cols["redpanda"]) and "value" in cols and _is_bytes(cols["value"]):
        m = {"value": "value"}
        for k, sub in (("partition", "partition"), ("offset", "offset"), ("time", "timestamp"), ("key", "key")):
            if f"redpanda.{sub}" in cols:
                m[k] = f"redpanda.{sub}"
        return "redpanda", "messages", m
    if "value" in cols and _is_bytes(cols["value"]):
        m = {"value": "value"}
        for k, aliases in FLAT_ALIASES.items():
            for a in aliases:
                if a in cols:
                    m[k] = a
                    break
        return "flat", "messages", m
    if all(c in cols for c in FLOW_REQUIRED) and (pa.types.is_string(cols["src_addr"])
                                                  or pa.types.is_large_string(cols["src_addr"])):
        return "flows", "flows", {k: k for k in cols if "." not in k}
    if all(c in cols for c in GOFLOW2_REQUIRED):
        return "goflow2", "flows", {k: k for k in cols if "." not in k}
    raise InputError(
        f"{path}: no known layout fits its columns ({', '.join(names) or 'none'}). A message archive needs a "
        f"binary 'value' column (flat: plus topic/partition/offset/timestamp/key; Redpanda: plus a 'redpanda' "
        f"struct); a flow archive needs {', '.join(FLOW_REQUIRED)} (flowaudit flows) or "
        f"{', '.join(GOFLOW2_REQUIRED)} (goflow2); anything else: --map value=COL,time=COL,topic=COL,...")


def _hive(path: Path) -> dict:
    out = {}
    for part in path.parent.parts:
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
    return out


def content_id(path: Path, size: int) -> str:
    """16 hex digits from the file's size and its last MiB (the Parquet footer: schema, row group
    offsets and statistics), so the id follows the content, not the path."""
    h = hashlib.sha256(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        f.seek(max(0, size - _FOOTER_BYTES))
        h.update(f.read(_FOOTER_BYTES))
    return h.hexdigest()[:16]


_TIME_SUFFIX_MS = (("_ns", 1e-6), ("_us", 1e-3), ("_ms", 1.0), ("_s", 1000.0), ("_sec", 1000.0),
                   ("_seconds", 1000.0))


def time_scale_ms(column: str, floating: bool = False) -> float:
    """What one unit of a numeric time column is in ms.  The column's name says its unit where it
    ends so (``_ns``, ``_us``, ``_ms``, ``_s``/``_sec``/``_seconds``, after the last ``.`` of a
    struct path); otherwise integers are milliseconds (Kafka's unit) and floats seconds (epoch
    seconds with a fraction, as ``time.time()``, Spark and pandas write them)."""
    leaf = column.rsplit(".", 1)[-1].lower()
    for suffix, ms in _TIME_SUFFIX_MS:
        if leaf.endswith(suffix):
            return ms
    return 1000.0 if floating else 1.0


def scaled_ms(ints, scale: float):
    """Integer times (a Python int or a numpy array) in ms, exactly: multiplied by a whole
    ``scale``, or floor-divided by its inverse (ns -> ms is ``// 1_000_000``, never a float)."""
    return ints * int(scale) if scale >= 1 else ints // round(1 / scale)


def open_input(path: Path, mapping: dict) -> Input:
    """Read a file's schema and row-group statistics (the footer only)."""
    size = path.stat().st_size
    try:
        pf = pq.ParquetFile(path)
        md = pf.metadata
        schema = pf.schema_arrow
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise InputError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    layout, kind, cols = layout_of(schema, path, mapping)
    hive = _hive(path)
    if layout == "redpanda" and "topic" not in hive and "data" in path.parts[1:-1]:
        # an Iceberg table per topic: <warehouse>/.../<topic>/data/[partition folders/]file.parquet
        k = len(path.parts) - 2 - path.parts[-2::-1].index("data")
        hive["topic"] = path.parts[k - 1]
    inp = Input(path=path, layout=layout, kind=kind, columns=cols, hive=hive, size=size,
                content_id=content_id(path, size))
    tcol = cols.get("time") if kind == "messages" else cols.get("first_ns", "first_ns")
    if layout == "goflow2":
        tcol = "time_flow_start_ns"
    tidx = None
    if tcol:
        for i in range(md.num_columns):
            if md.schema.column(i).path == tcol:
                tidx = i
                break
    ttype = _leaf_names(schema).get(tcol) if tcol else None
    first = 0
    for r in range(md.num_row_groups):
        rg = md.row_group(r)
        g = RowGroup(r, first, rg.num_rows, rg.total_byte_size)
        if tidx is not None:
            st = rg.column(tidx).statistics
            if st is not None and st.has_min_max:
                scale = (time_scale_ms(tcol, pa.types.is_floating(ttype))
                         if pa.types.is_integer(ttype) or pa.types.is_floating(ttype) else 1.0)
                g.tmin_ms = _stat_ms(st.min, scale)
                g.tmax_ms = _stat_ms(st.max, scale)
        inp.row_groups.append(g)
        first += rg.num_rows
    inp.rows = first
    return inp


def _stat_ms(v, scale: float) -> int | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=timezone.utc)
        return int(v.timestamp() * 1000)
    if isinstance(v, int):
        return scaled_ms(v, scale)
    if isinstance(v, float) and math.isfinite(v):
        return math.floor(v * scale)
    return None


def parquet_files(arg: Path, notes: list[str] | None = None) -> list[Path]:
    """Every Parquet file under ``arg`` (or ``arg`` itself), sorted, skipping hidden and ``_``
    files (Spark/Hive markers, Iceberg metadata); a Delta table's current files (its log); an
    Iceberg table's (at ``arg`` or under it, or its ``*.metadata.json`` itself) current snapshot's
    files when pyiceberg is installed, else its data files as they lie.  ``notes`` gets a line per
    table read (what was read, and what was not applied)."""
    notes = [] if notes is None else notes
    meta = iceberg_metadata(arg)
    if meta is not None:
        return iceberg_files(meta, notes)
    if arg.is_file():
        return [arg]
    if not arg.is_dir():
        raise FileNotFoundError(arg)
    if (arg / "_delta_log").is_dir():
        return delta_files(arg)
    tables = sorted({m.parent.parent for m in arg.rglob("*.metadata.json") if m.parent.name == "metadata"
                     and not any(x.startswith((".", "_")) for x in m.relative_to(arg).parts)})
    out = []
    for t in tables:
        out += iceberg_files(iceberg_metadata(t), notes)
    return out + _plain_files(arg, tables)


def _plain_files(arg: Path, skip=()) -> list[Path]:
    """The Parquet files under a folder, sorted (``.parquet``, or no suffix and Parquet's magic),
    but hidden and ``_`` files, a ``metadata`` folder's, and those under the folders ``skip``."""
    out = []
    for p in sorted(arg.rglob("*")):
        rel = p.relative_to(arg).parts
        if any(x.startswith((".", "_")) for x in rel) or "metadata" in rel[:-1]:
            continue
        if any(t == p or t in p.parents for t in skip):
            continue
        if p.is_file() and (p.suffix == ".parquet" or p.suffix == "" and _is_parquet(p)):
            out.append(p)
    return out


def iceberg_metadata(arg: Path) -> Path | None:
    """The metadata file to read an Iceberg table by: ``arg`` itself when it is one, else the one
    ``metadata/version-hint.text`` names, else the highest-numbered ``metadata/*.metadata.json``
    (``00003-<uuid>`` or ``v3``).  None: ``arg`` is no Iceberg table."""
    if arg.is_file():
        return arg if arg.name.endswith(".metadata.json") else None
    md = arg / "metadata"
    found = sorted(md.glob("*.metadata.json")) if md.is_dir() else []
    if not found:
        return None
    hint = md / "version-hint.text"
    v = hint.read_bytes()[:256].decode("utf-8", "replace").strip() if hint.is_file() else ""
    if v and "/" not in v:          # a hint naming no file (or garbage): the highest-numbered file
        for name in (f"v{v}.metadata.json", f"{v}.metadata.json"):
            if (md / name).is_file():
                return md / name

    def version(p: Path):
        m = re.match(r"v?(\d+)", p.name)
        return (int(m.group(1)) if m else -1, p.name)
    return max(found, key=version)


def iceberg_files(meta: Path, notes: list[str]) -> list[Path]:
    """The data files of an Iceberg table's current snapshot (pyiceberg reads its Avro manifests),
    so that files a later snapshot removed (a compaction, an overwrite) are not read.  A data file
    recorded under the table's ``location`` is looked for under the folder the metadata lies in
    (a table copied or mounted elsewhere).  Without pyiceberg: the table's Parquet files as they
    lie, said in ``notes``."""
    table = meta.parent.parent
    try:
        from pyiceberg.table import StaticTable
    except ImportError:
        notes.append(f"{table}: an Iceberg table, read without its metadata (pyiceberg is not installed: pip "
                     f"install 'flowaudit[iceberg]'): every Parquet file in it, files a later snapshot removed too")
        return _plain_files(table)
    from urllib.parse import unquote, urlparse

    try:
        t = StaticTable.from_metadata(str(meta.resolve()))
        snap = t.current_snapshot()
        tasks = list(t.scan().plan_files()) if snap is not None else []
    except Exception as exc:  # noqa: BLE001 - pyiceberg raises many types for a table it cannot read
        why = " ".join(str(exc).split())[:300]             # one line (pydantic's errors span several)
        raise InputError(f"{meta}: an Iceberg table pyiceberg cannot read ({type(exc).__name__}: {why}); point "
                         f"the audit at its data/ folder to read every data file in it") from None
    loc = t.metadata.location.rstrip("/") + "/"
    files, deletes = [], set()
    for task in tasks:
        fp = task.file.file_path
        fmt = getattr(task.file.file_format, "value", task.file.file_format)
        if str(fmt).upper() != "PARQUET":
            raise InputError(f"{meta}: data file {fp} is {fmt}; the audit reads Parquet data files only")
        if fp.startswith(loc) and (table / unquote(fp[len(loc):])).exists():
            files.append(table / unquote(fp[len(loc):]))
        else:
            u = urlparse(fp)
            if u.scheme not in ("", "file"):
                raise InputError(f"{meta}: data file {fp} is not a local path, and not found under {table}")
            files.append(Path(unquote(u.path)))
        deletes |= {d.file_path for d in task.delete_files}
    notes.append(f"{table}: an Iceberg table at snapshot {snap.snapshot_id if snap else 'none (empty)'} "
                 f"({meta.name}): {len(files)} data file(s)"
                 + (f"; {len(deletes)} delete file(s) not applied: rows they delete are audited" if deletes else ""))
    return sorted(files)


def delta_files(table: Path) -> list[Path]:
    """The data files of a Delta table's current version, from its ``_delta_log`` (the last
    checkpoint's ``add`` entries, then every later JSON commit's ``add``/``remove`` actions), so
    that files a later commit removed are not read.  A path is relative to the table, or a
    ``file:`` URI; a log that cannot be read is an :class:`InputError` naming the file and line."""
    import json

    log = table / "_delta_log"
    active: set[str] = set()
    start = 0
    last = log / "_last_checkpoint"
    if last.exists():
        try:
            v = int(json.loads(last.read_bytes())["version"])
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise InputError(f"{last}: not a Delta checkpoint pointer ({type(e).__name__}: {e})") from None
        parts = sorted(log.glob(f"{v:020d}.checkpoint*.parquet"))
        if not parts:
            raise InputError(f"{table}: _delta_log/_last_checkpoint names version {v}, whose checkpoint is missing")
        for cp in parts:
            try:
                adds = pq.read_table(cp, columns=["add"]).column("add").to_pylist()
            except (OSError, pa.ArrowException, KeyError) as e:
                raise InputError(f"{cp}: a Delta checkpoint that cannot be read ({type(e).__name__}: {e})") from None
            active |= {a["path"] for a in adds if isinstance(a, dict) and isinstance(a.get("path"), str)}
        start = v + 1
    for commit in sorted(log.glob("*.json")):
        if not commit.stem.isdigit() or int(commit.stem) < start:
            continue
        for n, line in enumerate(commit.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                action = json.loads(line)
                for kind in ("add", "remove"):
                    if isinstance(action, dict) and kind in action:
                        path = action[kind]["path"]
                        if not isinstance(path, str) or not path:
                            raise ValueError(f"{kind} without a path")
                        (active.add if kind == "add" else active.discard)(path)
                        break
            except (ValueError, TypeError, KeyError) as e:    # JSONDecodeError and bad UTF-8 are ValueErrors
                raise InputError(f"{commit}: line {n}: not a Delta log action ({type(e).__name__}: {e})") from None
    return [_delta_path(table, p) for p in sorted(active)]


def _delta_path(table: Path, p: str) -> Path:
    """A Delta log path: relative to the table (URL-encoded), or an absolute ``file:`` URI."""
    from urllib.parse import unquote, urlparse

    u = urlparse(p)
    if u.scheme == "file":
        return Path(unquote(u.path))
    if len(u.scheme) > 1:               # s3://, abfss://, ... (a one-letter scheme is a Windows drive)
        raise InputError(f"{table}: data file {p} is not on this machine; copy or mount the table's files and "
                         f"point the audit at their folder")
    return table / unquote(p)


def _is_parquet(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(4) == b"PAR1"
    except OSError:
        return False


def hive_in_range(hive: dict, since_ms: int | None, until_ms: int | None) -> bool:
    """False when a ``date=``/``hour=`` path proves the file is outside [since, until)."""
    d = hive.get("date")
    if not d:
        return True
    try:
        day = datetime.strptime(d, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        return True
    start = int(day.timestamp() * 1000)
    span = 86_400_000
    if "hour" in hive and hive["hour"].isdigit():
        start += int(hive["hour"]) * 3_600_000
        span = 3_600_000
    if since_ms is not None and start + span <= since_ms:
        return False
    if until_ms is not None and start >= until_ms:
        return False
    return True


def units_of(inp: Input, since_ms: int | None, until_ms: int | None,
             unit_rows: int = DEFAULT_UNIT_ROWS, unit_bytes: int = DEFAULT_UNIT_BYTES) -> tuple[list[Unit], int]:
    """The input's units after row-group pruning by [since, until), and the rows pruned."""
    keep = []
    pruned = 0
    for g in inp.row_groups:
        out = (since_ms is not None and g.tmax_ms is not None and g.tmax_ms < since_ms) or \
              (until_ms is not None and g.tmin_ms is not None and g.tmin_ms >= until_ms)
        if out or g.rows == 0:
            pruned += g.rows
        else:
            keep.append(g)
    units = []
    run: list[RowGroup] = []

    def close():
        if run:
            units.append(Unit(inp, tuple(g.index for g in run), run[0].first_row, run[-1].first_row + run[-1].rows))
            run.clear()

    for g in keep:
        # a unit is a run of adjacent row groups; a pruned gap or a size limit closes it
        if run and (run[-1].index + 1 != g.index or sum(x.rows for x in run) + g.rows > unit_rows
                    or sum(x.nbytes for x in run) + g.nbytes > unit_bytes):
            close()
        run.append(g)
    close()
    return units, pruned
