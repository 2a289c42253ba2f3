"""One audit unit: read its row groups, run the stream's code, write its files, mark it done.

:func:`process_unit` is the same function on every engine: called in a loop by the polars
engine, shipped as a task to Dask workers by the dask engine.  It needs only a picklable
:class:`Spec` and a :class:`~flowaudit.audit.inputs.Unit`; the classifier and egress detector are
built once per process from the spec.

Output files are ``ROOT/dataset=<name>/date=D/hour=H/<unit id>.parquet``: the unit id names the
input file (its content) and row range, the content follows from the input alone, and every file
is written to a hidden temporary, fsynced and renamed (the sink's recipe).  The unit's marker
``ROOT/_audit/units/<unit id>.json`` is written last, so a unit either has its marker and all
its files, or is redone in full (rewriting identical files) by the next run.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..datasets import CHECKED, FLOWS, SCHEMA_VERSION, dictionary_array
from ..memory import release_library_pages
from ..sinks.parquet import _write_durable, fsync_dir, hour_dir, hour_keys, makedirs, replace_atomic
from .inputs import InputError, Unit, scaled_ms, time_scale_ms

MARKERS = "_audit/units"


@dataclass(frozen=True)
class Spec:
    """Everything a worker needs to process units (picklable; the HMAC key travels with it)."""

    out: str
    key: bytes
    raw: bool = False
    egress: bool = True
    watchlist_dir: str = ""
    policy_file: str = ""
    dns_max_entries: int = 100_000
    formats: tuple = ()               # ((topic or "*", format name), ...); default auto-detect
    dns_files: tuple = ()             # Zeek dns, ssl and http logs: names for the flows' addresses
    since_ms: int | None = None
    until_ms: int | None = None
    max_message_bytes: int = 8 * 1024 * 1024
    compression: str = "zstd"
    row_group_size: int = 65536

    @property
    def digest(self) -> str:
        return hashlib.sha256(pickle.dumps(self)).hexdigest()


_TOOLS: dict = {}
_TOOLS_LOCK = threading.Lock()


def tools(spec: Spec):
    """(Classifier, EgressDetector or None) for this spec, built once per thread (a classifier
    keeps per-run state, so threads never share one)."""
    key = (spec.digest, threading.get_ident())
    with _TOOLS_LOCK:
        t = _TOOLS.get(key)
        if t is None:
            from ..pipeline import Classifier
            from ..protect import Protector

            egress = None
            if spec.egress:
                from ..detect import watchlist
                from ..detect.egress import EgressDetector

                egress = EgressDetector(watchlist.Watchlist(spec.watchlist_dir or None), spec.policy_file or None,
                                        dns_max_entries=spec.dns_max_entries)
            clf = Classifier(Protector(spec.key, raw=spec.raw), max_message_bytes=spec.max_message_bytes,
                             egress=egress, dedupe_entries=1024)
            t = _TOOLS[key] = (clf, egress)
        return t


_DNS: dict = {}


def dns_log(spec: Spec, keep) -> tuple[np.ndarray, list]:
    """The --dns logs' records that name something ``keep`` keeps (the watchlisted names: the rest
    can name no flow, and a day's DNS or HTTP log is gigabytes), in answer-time order (ns), once per
    process, as JSON lines: a Zeek ASCII row is written as the JSON line Zeek would have written,
    so that the hours' slices need no header (``flowaudit.sources.zeek``).  The lines that are no
    record are the driver's to quarantine (``engine._dns_answers``)."""
    with _TOOLS_LOCK:
        got = _DNS.get(spec.digest)        # (the digest covers the logs and the watchlist)
        if got is None:
            from ..detect.dnsmap import DnsMap
            from ..sources.files import open_input

            rows: list = []
            for f in spec.dns_files:
                with open_input(f) as fh:
                    DnsMap(1, keep=keep).observe_lines(fh, watched=rows)
            got = seed_dns_log(spec, rows)
        return got


def seed_dns_log(spec: Spec, rows: list) -> tuple[np.ndarray, list]:
    """:func:`dns_log`'s answer from ``(record time ns, JSON line)`` rows of the watched records
    (the driver gathers them as it reads the logs, so that the units in its process do not read
    them again)."""
    rows = sorted(rows, key=lambda r: r[0])
    got = _DNS[spec.digest] = (np.array([r[0] for r in rows], np.int64), [r[1] for r in rows])
    return got


# ------------------------------------------------------------------------------ reading
def _column(t: pa.Table, path: str) -> pa.Array:
    top, _, sub = path.partition(".")
    col = t.column(top).combine_chunks()
    if sub:
        col = pc.struct_field(col, sub)
    return col


def ts_ms_of(col: pa.Array, name: str) -> np.ndarray:
    """int64 ms since the epoch (-1: null) from a timestamp, date, integer, float or ISO 8601 text
    column (a numeric column's unit: :func:`~flowaudit.audit.inputs.time_scale_ms`)."""
    if pa.types.is_timestamp(col.type):
        ints = np.asarray(col.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), np.int64)
        u = col.type.unit
        ms = ints * 1000 if u == "s" else ints if u == "ms" else ints // 1000 if u == "us" else ints // 1_000_000
    elif pa.types.is_integer(col.type):
        ints = np.asarray(col.fill_null(0).to_numpy(zero_copy_only=False), np.int64)
        ms = scaled_ms(ints, time_scale_ms(name))
    elif pa.types.is_floating(col.type):
        # a NaN or infinite time, or one past int64 ms, is no time (as a null)
        v = np.asarray(col.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False), np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            v = np.floor(v * time_scale_ms(name, floating=True))
        ok = np.isfinite(v) & (np.abs(v) < 2.0 ** 62)
        return np.where(ok, v, -1).astype(np.int64)
    elif pa.types.is_date(col.type):
        ms = np.asarray(col.cast(pa.timestamp("ms")).cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False),
                        np.int64)
    elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return _iso_ms(col)
    else:
        raise ValueError(f"time column {name!r} has type {col.type}; a timestamp, a number or ISO 8601 text "
                         f"is needed")
    valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), bool)
    return np.where(valid, ms, -1)


def _iso_ms(col: pa.Array) -> np.ndarray:
    """ms since the epoch of ISO 8601 text times (UTC unless they say otherwise; each distinct text
    parsed once); -1 for a null or a text that is not a time: the record keeps no time, as a null."""
    from datetime import datetime, timezone

    enc = col.dictionary_encode()
    out = []
    for v in enc.dictionary.to_pylist():
        try:
            t = datetime.fromisoformat(v.strip())
            out.append(int((t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp() * 1000))
        except (ValueError, AttributeError):
            out.append(-1)
    ms = np.asarray(out + [-1], np.int64)
    idx = enc.indices.fill_null(len(out)).to_numpy(zero_copy_only=False)
    return ms[idx]


def binary_buffers(col: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(buf uint8, offsets int64 n+1 from 0, null bool) of a binary or string array, no copy of
    the values where Arrow already lays them end to end."""
    if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
        col = col.cast(pa.large_binary() if pa.types.is_large_string(col.type) else pa.binary())
    n = len(col)
    bufs = col.buffers()
    dt = np.int64 if pa.types.is_large_binary(col.type) else np.int32
    offs = np.frombuffer(bufs[1], dtype=dt)[col.offset:col.offset + n + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None and len(bufs[2]) else np.zeros(0, np.uint8)
    base = int(offs[0]) if n else 0
    buf = data[base:int(offs[-1])] if n else np.zeros(0, np.uint8)
    null = np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
    return buf, offs - base, null


def _read(unit: Unit, columns: list[str]) -> pa.Table:
    top = sorted({c.split(".")[0] for c in columns})
    return pq.ParquetFile(unit.input.path, **CHECKED).read_row_groups(list(unit.row_groups), columns=top)


def _in_range(ts: np.ndarray, spec: Spec) -> np.ndarray | None:
    """Rows to keep under --since/--until (None: all); a row without a time is out when either is set."""
    if spec.since_ms is None and spec.until_ms is None:
        return None
    keep = ts >= 0
    if spec.since_ms is not None:
        keep &= ts >= spec.since_ms
    if spec.until_ms is not None:
        keep &= ts < spec.until_ms
    return keep


# ------------------------------------------------------------------------------ messages
def message_batch(unit: Unit, spec: Spec):
    """The unit's rows as a pipeline Batch (provenance: topic/partition/offset when the archive
    has them, else the input file and row), and the count of rows outside [since, until)."""
    from ..pipeline import Batch, format_code

    cols = unit.input.columns
    t = _read(unit, list(cols.values()))
    n = t.num_rows
    ts = ts_ms_of(_column(t, cols["time"]), cols["time"]) if "time" in cols else np.full(n, -1, np.int64)
    keep = _in_range(ts, spec)
    outside = 0
    if keep is not None and not keep.all():
        outside = int((~keep).sum())
        rows = np.flatnonzero(keep)
        t = t.take(pa.array(rows))
        ts = ts[rows]
        row_no = unit.first_row + rows
    else:
        row_no = unit.first_row + np.arange(n)
    n = t.num_rows
    buf, offsets, null = binary_buffers(_column(t, cols["value"]))
    if "topic" in cols:
        enc = _column(t, cols["topic"]).cast(pa.string()).dictionary_encode()
        sources = [s if s is not None else str(unit.input.path) for s in enc.dictionary.to_pylist()] or ["-"]
        source_idx = np.asarray(enc.indices.fill_null(0).to_numpy(zero_copy_only=False), np.int32)
    else:
        sources = [unit.input.topic or str(unit.input.path)]
        source_idx = np.zeros(n, np.int32)
    has_coords = "offset" in cols and ("topic" in cols or unit.input.topic)
    if has_coords:
        offset = np.asarray(_column(t, cols["offset"]).fill_null(-1).to_numpy(zero_copy_only=False), np.int64)
        partition = (np.asarray(_column(t, cols["partition"]).fill_null(-1).to_numpy(zero_copy_only=False), np.int32)
                     if "partition" in cols else np.full(n, -1, np.int32))
    else:   # no Kafka coordinates: the input file and its row
        sources = [str(unit.input.path)]
        source_idx = np.zeros(n, np.int32)
        offset = row_no.astype(np.int64)
        partition = np.full(n, -1, np.int32)
    keys = _key_bytes(_column(t, cols["key"])).to_pylist() if "key" in cols else [None] * n
    fmap = dict(spec.formats)
    if "format" in cols:
        names = _column(t, cols["format"]).cast(pa.string()).fill_null("auto").to_pylist()
        declared = np.fromiter((format_code(x) for x in names), np.uint8, count=n)
    else:
        codes = np.array([format_code(fmap.get(s, fmap.get("*", "auto"))) for s in sources], np.uint8)
        declared = codes[source_idx] if n else np.zeros(0, np.uint8)
    batch = Batch(buf=buf, offsets=offsets, declared=declared, sources=sources, source_idx=source_idx,
                  partition=partition, offset=offset, ts_ms=ts, keys=keys, null=null)
    return batch, outside


def _key_bytes(col) -> pa.Array:
    """An archive's key column as bytes: binary and text as they are, a number (an archiver that
    stored integer keys) as its decimal text."""
    if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type) or pa.types.is_string(col.type)
            or pa.types.is_large_string(col.type) or pa.types.is_fixed_size_binary(col.type)):
        col = col.cast(pa.string())
    return col.cast(pa.binary())


def _messages(unit: Unit, spec: Spec) -> tuple[dict, dict]:
    clf, _egress = tools(spec)
    batch, outside = message_batch(unit, spec)
    clf.reset_duplicates(max(1024, 4 * len(batch)))   # duplicate flags: within the unit (2 keys a message), on every engine
    res = clf.run(batch)
    ts = batch.ts_ms
    tables = {"messages": (res.messages, ts[res.m_idx]), "hits": (res.hits, ts[res.h_idx]),
              "quarantine": (res.quarantine, ts[res.q_idx])}
    if res.transfers is not None and res.transfers.num_rows:
        tables["transfers"] = (res.transfers, ts[res.t_idx])
    fmt = res.fmt[res.m_idx]
    from ..decode import FORMAT_NAMES
    formats = {FORMAT_NAMES.get(int(f), "unknown"): int(c) for f, c in zip(*np.unique(fmt, return_counts=True))}
    stats = {"rows": len(batch), "outside_range": outside, "bytes": int(batch.offsets[-1]),
             "messages": res.messages.num_rows, "hits": res.hits.num_rows, "quarantined": res.quarantine.num_rows,
             "transfers": 0 if res.transfers is None else res.transfers.num_rows, "formats": formats,
             "quarantine_reasons": {f"{k[0]}/{k[1]}": v for k, v in res.quarantine_counts.items()},
             "hit_classes": _class_counts(res.hit_counts)}
    return tables, stats


def _class_counts(hit_counts: dict) -> dict:
    """Hits per data class, from the classifier's counts per (format, class)."""
    out: dict = {}
    for (_fmt, cls), n in hit_counts.items():
        out[cls] = out.get(cls, 0) + n
    return out


# ------------------------------------------------------------------------------ flows
def _addr_text(col: pa.Array) -> pa.Array:
    """goflow2's raw address bytes (4 or 16, IPv4-mapped allowed) -> text; '' for anything else (no
    address, as the stream's decoders write it: such a row is quarantined if neither side has one)."""
    import ipaddress

    enc = col.cast(pa.binary()).dictionary_encode()
    out = []
    for b in enc.dictionary.to_pylist():
        if b is not None and len(b) == 4:
            out.append(str(ipaddress.IPv4Address(b)))
        elif b is not None and len(b) == 16:
            a = ipaddress.IPv6Address(b)
            out.append(str(a.ipv4_mapped) if a.ipv4_mapped else str(a))
        else:
            out.append("")
    return pa.array(out, pa.string()).take(enc.indices).fill_null("")


def flows_table(unit: Unit, t: pa.Table) -> pa.Table:
    """The unit's rows as a FLOWS table (provenance from the archive, else the input file and row)."""
    inp = unit.input
    n = t.num_rows
    c = inp.columns
    if inp.layout == "goflow2":
        def g(name, default=None):
            return t.column(name).combine_chunks() if name in t.column_names else default
        src = {
            "src_addr": _addr_text(g("src_addr")), "dst_addr": _addr_text(g("dst_addr")),
            "exporter": _addr_text(g("sampler_address")) if "sampler_address" in t.column_names else None,
            "src_port": g("src_port"), "dst_port": g("dst_port"), "protocol": g("proto"),
            "tcp_flags": g("tcp_flags"), "bytes": g("bytes"), "packets": g("packets"),
            "first_ns": g("time_flow_start_ns"), "last_ns": g("time_flow_end_ns"),
            "sampling_interval": g("sampling_rate"),
            "ts_ms": (pc.divide(g("time_received_ns"), 1_000_000) if "time_received_ns" in t.column_names else None),
        }
        sr = src["sampling_interval"]
        if sr is not None:
            src["sampling_interval"] = pc.if_else(pc.equal(sr, 0), 1, sr)
        if src["ts_ms"] is None and src["first_ns"] is not None:
            src["ts_ms"] = pc.divide(src["first_ns"], 1_000_000)
    else:
        src = {k: _column(t, col) for k, col in c.items() if k in FLOWS.names}
    arrays = []
    for f in FLOWS:
        v = src.get(f.name)
        if v is None:
            if f.name == "source":
                v = pa.array([str(inp.path)] * n, pa.string())
            elif f.name == "partition":
                v = pa.array(np.full(n, -1, np.int32))
            elif f.name == "offset":
                v = pa.array(unit.first_row + np.arange(n, dtype=np.int64))
            elif f.name == "exporter":
                v = pa.array(["-"] * n, pa.string())
            elif f.name in ("last_ns",):
                v = src.get("first_ns")
            elif f.name == "sampling_interval":
                v = pa.array(np.ones(n, np.uint32))
            elif f.name in ("ip_version",):
                v = pc.if_else(pc.match_substring(src["src_addr"], ":"), 6, 4)
            elif f.name == "schema_version":
                v = pa.array([SCHEMA_VERSION] * n, pa.string())
            elif f.name == "time_flags":
                v = pa.array(np.full(n, 3, np.uint8))
            elif f.nullable:
                v = pa.nulls(n, f.type)
            else:
                v = pa.array(np.zeros(n, f.type.to_pandas_dtype()))
        if pa.types.is_dictionary(f.type) and not pa.types.is_dictionary(v.type):
            v = v.cast(pa.string()).dictionary_encode()
        elif pa.types.is_dictionary(f.type):
            v = v.cast(pa.string()).dictionary_encode() if v.type.value_type != pa.string() else v
        if not v.type.equals(f.type):
            v = v.cast(f.type, safe=False)
        if f.name in ("src_addr", "dst_addr"):
            v = v.fill_null("")         # no address (a mapped archive's null): '' as the decoders write it
        arrays.append(v)
    return pa.Table.from_arrays(arrays, schema=FLOWS)


def _flows(unit: Unit, spec: Spec) -> tuple[dict, dict]:
    from ..decode.netflow import numeric_view

    clf, egress = tools(spec)
    t = pq.ParquetFile(unit.input.path, **CHECKED).read_row_groups(list(unit.row_groups))
    flows = flows_table(unit, t)
    first = np.asarray(flows.column("first_ns").to_numpy(zero_copy_only=False), np.int64)
    keep = _in_range(first // 1_000_000, spec)
    outside = 0
    if keep is not None and not keep.all():
        outside = int((~keep).sum())
        flows, t = flows.filter(pa.array(keep)), t.filter(pa.array(keep))
        first = first[keep]
    ts_ms = np.asarray(flows.column("ts_ms").fill_null(-1).to_numpy(zero_copy_only=False), np.int64)
    row_ts = np.where(ts_ms >= 0, ts_ms, first // 1_000_000)
    tables = {}
    numeric = numeric_view(flows)      # each distinct address parsed once, for the check and the egress
    bad = ~(numeric["src_ok"] | numeric["dst_ok"])
    if bad.any():   # neither side an address: quarantined as the stream quarantines such a goflow2 message
        tables["quarantine"] = (_flow_quarantine(clf.protector, flows, t, bad, _flow_format(unit)), row_ts[bad])
        flows, first, ts_ms, row_ts = flows.filter(pa.array(~bad)), first[~bad], ts_ms[~bad], row_ts[~bad]
        numeric = {k: v[~bad] for k, v in numeric.items()}
    tables["flows"] = (flows, row_ts)
    n_tr = 0
    if egress is not None and flows.num_rows:
        tr = _flow_transfers(egress, spec, flows, numeric, first, ts_ms)
        if tr is not None:
            rows = tr.column("offset").to_numpy().astype(np.int64)
            for name in ("offset", "source"):
                k = tr.schema.get_field_index(name)
                col = flows.column(name).take(pa.array(rows))
                if name == "source":
                    col = col.combine_chunks().cast(tr.schema.field(k).type)
                tr = tr.set_column(k, tr.schema.field(k), col)
            tables["transfers"] = (tr, row_ts[rows])
            n_tr = tr.num_rows
    stats = {"rows": int(t.num_rows) + outside, "outside_range": outside, "bytes": 0, "flows": flows.num_rows,
             "transfers": n_tr, "quarantined": int(bad.sum())}
    if bad.any():
        from ..decode.netflow import GOFLOW_REASONS

        stats["quarantine_reasons"] = {f"{_flow_format(unit)}/{GOFLOW_REASONS[2]}": int(bad.sum())}
    return tables, stats


def _flow_format(unit: Unit) -> str:
    """A flow archive's format in the quarantine: the stream's name for goflow2 messages, else flows."""
    return "goflow" if unit.input.layout == "goflow2" else "flows"


def _flow_quarantine(protector, flows: pa.Table, rows: pa.Table, bad: np.ndarray, fmt: str) -> pa.Table:
    """QUARANTINE rows for archived flows without a usable address: the archive's row as JSON (its
    raw bytes: a Parquet row has no others), sealed like any record, with the flow's provenance."""
    import orjson

    from ..decode.netflow import GOFLOW_REASONS
    from ..pipeline import _const_dict
    from ..quarantine import table as quarantine_table

    sel = pa.array(np.flatnonzero(bad))
    q = flows.take(sel)
    values = [orjson.dumps(r, default=lambda v: v.hex() if isinstance(v, bytes) else str(v))
              for r in rows.take(sel).to_pylist()]
    n = len(values)
    prov = [q.column("source").combine_chunks().cast(pa.string()).dictionary_encode(), q.column("partition"),
            q.column("offset"), q.column("ts_ms")]
    return quarantine_table(protector, [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in prov],
                            [None] * n, values, _const_dict(fmt, n), _const_dict(GOFLOW_REASONS[2], n))


HOUR_NS = 3_600_000_000_000
DNS_LOOKBACK_NS = 25 * HOUR_NS    # the DNS map's longest TTL (1 day) plus its horizon (1 h)


def _flow_transfers(egress, spec: Spec, flows: pa.Table, numeric: dict, first: np.ndarray, ts_ms: np.ndarray):
    """Transfers of the unit's flows (``offset``: the flow's row in ``flows``), an hour of flow
    start time at a time: the DNS map gets the answers up to each hour's end in answer order, as
    the stream's map would have had them, starting afresh a day and an hour before the unit's
    first flow (the map forgets an answer an hour after the newest one, so a whole log read
    first would forget what the early flows need)."""

    part = flows.column("partition").to_numpy()
    ats, lines = dns_log(spec, egress._watched_name) if spec.dns_files else (np.zeros(0, np.int64), [])
    egress.dns = egress.name_map(spec.dns_max_entries)
    order = np.argsort(first, kind="stable")
    hours = first[order] // HOUR_NS
    p = int(np.searchsorted(ats, int(first.min()) - DNS_LOOKBACK_NS)) if ats.size else 0
    parts = []
    for h in np.unique(hours):
        q = int(np.searchsorted(ats, (int(h) + 1) * HOUR_NS))
        if q > p:
            egress.dns.observe_lines(lines[p:q])
            p = q
        rows = order[hours == h]
        t = egress.detect_flows({k: v[rows] for k, v in numeric.items()}, partition=part[rows], offset=rows,
                                ts_ms=ts_ms[rows])
        if t.num_rows:
            parts.append(t)
    return pa.concat_tables(parts).unify_dictionaries().combine_chunks() if parts else None


# ------------------------------------------------------------------------------ writing
# the datasets whose tables come from pipeline.Classifier, which builds every dictionary with each
# value once (pipeline._dict_array, datasets.dictionary_array, one HMAC per distinct value; checked
# on the corpus and synthetic traffic in test_hits_table): written as they are, without hashing
# every dictionary again in unique_dictionaries (7.5 ms per hits file of 260k rows)
_UNIQUE_DICTIONARIES = frozenset({"messages", "hits"})


def write_file(table: pa.Table, final: Path, compression: str = "zstd", row_group_size: int = 65536,
               unique: bool = False) -> None:
    """The sink's recipe for one file: hidden temporary, fsync, rename, fsync of the folder.
    ``unique``: the table's dictionaries hold each value once already (else made so first)."""
    makedirs(final.parent)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        _write_durable(table if unique else unique_dictionaries(table), tmp, compression, row_group_size)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(final.parent)


def write_tables(out: Path, uid: str, tables: dict, spec: Spec) -> list[str]:
    """One file per dataset and hour under ``out``, named by the unit; returns their paths."""
    written = []
    for name, (table, ts) in sorted(tables.items()):
        if table.num_rows == 0:
            continue
        keys = hour_keys(np.asarray(ts, np.int64), 0)
        one = keys[0] == keys.min() == keys.max()          # mostly: a unit's rows in one hour
        for hk in keys[:1] if one else np.unique(keys):
            part = table if one else _rows(table, np.flatnonzero(keys == hk))
            final = out / f"dataset={name}" / hour_dir(int(hk)) / f"{uid}.parquet"
            write_file(part, final, spec.compression, spec.row_group_size, unique=name in _UNIQUE_DICTIONARIES)
            written.append(str(final.relative_to(out)))
    return written


def _rows(table: pa.Table, idx: np.ndarray) -> pa.Table:
    """Rows ``idx`` (ascending) of ``table``: a slice where they are one run (an hour of a unit whose
    record times rise, the usual case), else a gather; the same columns and dictionaries either way."""
    return table.slice(int(idx[0]), idx.size) if int(idx[-1]) - int(idx[0]) + 1 == idx.size else table.take(pa.array(idx))


def marker_path(out: Path, uid: str) -> Path:
    return out / MARKERS / f"{uid}.json"


def process_unit(unit: Unit, spec: Spec) -> dict:
    """Classify or match one unit, write its files, then its marker; returns its stats."""
    out = Path(spec.out)
    try:
        tables, stats = (_messages if unit.input.kind == "messages" else _flows)(unit, spec)
    except (OSError, EOFError, ValueError, pa.ArrowException) as exc:   # the input's pages, not our output
        raise InputError(f"{unit.input.path} (rows {unit.first_row}..{unit.last_row - 1}): "
                         f"{type(exc).__name__}: {exc}") from None
    stats["files"] = write_tables(out, unit.uid, tables, spec)
    stats.update(uid=unit.uid, input=str(unit.input.path), first_row=unit.first_row, last_row=unit.last_row)
    spans = [ts[ts >= 0] for _t, ts in tables.values()]
    spans = [s for s in spans if s.size]
    stats["tmin_ms"] = int(min(s.min() for s in spans)) if spans else None
    stats["tmax_ms"] = int(max(s.max() for s in spans)) if spans else None
    m = marker_path(out, unit.uid)
    makedirs(m.parent)
    replace_atomic(m, orjson.dumps(stats, option=orjson.OPT_SORT_KEYS))
    _release_llvm_once(unit.input.kind)
    return stats


_RELEASED: set = set()


def _release_llvm_once(kind: str) -> None:
    """After a process's first unit of a kind (messages, flows) the kernels that kind runs are
    loaded: LLVM's pages go back to the system (:func:`flowaudit.memory.release_library_pages`:
    about 70 MB of RSS), in the driver's unit threads and in each Dask worker alike."""
    with _TOOLS_LOCK:
        if kind in _RELEASED:
            return
        _RELEASED.add(kind)
    release_library_pages()


def unique_dictionaries(table: pa.Table) -> pa.Table:
    """Dictionary columns with each value once in their dictionary (masks collide: two values can
    share a mask).  Parquet's writer is not byte-deterministic on a dictionary with repeats; with
    this, a unit's files are the same bytes on every run, which resume and re-runs rely on."""
    for i, f in enumerate(table.schema):
        if not pa.types.is_dictionary(f.type):
            continue
        chunks = [dictionary_array(ch.indices, ch.dictionary) for ch in table.column(i).chunks]
        changed = any(len(a.dictionary) != len(b.dictionary) for a, b in zip(chunks, table.column(i).chunks))
        if changed:
            table = table.set_column(i, f, pa.chunked_array(chunks, f.type))
    return table
