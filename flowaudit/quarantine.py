"""Quarantined records: the one builder of QUARANTINE tables, and the operator's tools.

Every path that quarantines (the message pipeline, the stream's telemetry path, ``flowaudit
flows --quarantine``) builds its rows with :func:`table`.  A row keeps the whole record for
re-processing after a fix, sealed by default: ``raw`` holds ``nonce || AES-256-GCM(pack(key,
value)) || tag`` under a key derived (HKDF-SHA256, fixed label) from the operator key, with the
row's source, partition and offset as associated data, so a blob opens only with that key and
only in its own row (``raw_encoding = "aes-256-gcm/v1"``).  With ``sink.raw_values`` / ``--raw``
the value is kept as received and the key in ``key_raw`` (``raw_encoding = "plain"``).

``flowaudit quarantine list | show | reinject`` reads a sink root (``<root>/dataset=quarantine``)
or a single quarantine Parquet file, opens the payloads with the operator key from the usual
settings, and produces them back to Kafka with their original keys.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from .datasets import CHECKED, QUARANTINE, SCHEMA_VERSION
from .protect import PLAIN_ENCODING, SEAL_ENCODING, Protector

_AAD_LABEL = b"flowaudit quarantine row v1\x00"
_HAS_KEY, _HAS_VALUE = 1, 2
REINJECT_HEADER = "flowaudit-reinjected-from"


class QuarantineError(RuntimeError):
    """A row that cannot be opened (wrong key, moved or altered blob) or a bad selection."""


# -- the sealed record ----------------------------------------------------------------------------

def pack(key: bytes | None, value: bytes | None) -> bytes:
    """``flags (1: key, 2: value) || key length (u32 BE) || key || value``."""
    k = key or b""
    flags = (_HAS_KEY if key is not None else 0) | (_HAS_VALUE if value is not None else 0)
    return struct.pack(">BI", flags, len(k)) + k + (value or b"")


def unpack(plain: bytes) -> tuple[bytes | None, bytes | None]:
    flags, n = struct.unpack_from(">BI", plain)
    if flags & ~3 or 5 + n > len(plain):
        raise QuarantineError("sealed record is malformed")
    key = plain[5:5 + n] if flags & _HAS_KEY else None
    value = plain[5 + n:] if flags & _HAS_VALUE else None
    return key, value


def aad(source: str, partition: int, offset: int) -> bytes:
    """Associated data binding a sealed blob to its row: ``"flowaudit quarantine row v1\\0" ||
    source (UTF-8) || "\\0" || partition (int32 BE) || offset (int64 BE)``."""
    return _AAD_LABEL + source.encode() + b"\x00" + struct.pack(">iq", partition, offset)


def table(protector: Protector, provenance: list, keys: list, values: list, fmt: pa.Array,
          reason: pa.Array, nbytes=None) -> pa.Table:
    """QUARANTINE rows: ``provenance`` = [source, partition, offset, ts_ms] arrays, ``keys`` and
    ``values`` bytes or None per row, ``fmt`` and ``reason`` dictionary arrays, ``nbytes`` the
    length of each value as received (default: ``len(value)``, 0 for a tombstone)."""
    m = len(values)
    if nbytes is None:
        nbytes = np.fromiter((0 if v is None else len(v) for v in values), np.int64, count=m)
    if protector.raw:
        raw, encoding = pa.array(values, pa.binary()), PLAIN_ENCODING
    else:
        src, part, off = (provenance[i].to_pylist() for i in range(3))
        raw = pa.array([protector.seal(pack(keys[i], values[i]), aad(src[i], part[i], off[i])) for i in range(m)],
                       pa.binary())
        encoding = SEAL_ENCODING
    const = lambda s: pa.DictionaryArray.from_arrays(pa.array(np.zeros(m, np.int32)), pa.array([s]))  # noqa: E731
    cols = provenance + protector.key_columns(keys) + [
        fmt, reason,
        pa.array(np.asarray(nbytes).astype(np.int32), pa.int32()),
        raw, const(encoding), const(SCHEMA_VERSION),
    ]
    return pa.Table.from_arrays(cols, schema=QUARANTINE)


def lines_table(protector: Protector, rejects: list, file_names: list[str], fmt: str) -> pa.Table:
    """QUARANTINE rows of a text file's lines that are no record (a DNS log's, a goflow2 or Zeek
    conn log's): ``rejects`` holds ``(file index into file_names, line index, line, reason)``; the
    file is the row's source, -1 its partition, the line's index (0 = the first) its offset."""
    n = len(rejects)
    d = lambda names: pa.array(names, pa.string()).dictionary_encode()  # noqa: E731
    prov = [d([file_names[fi] for fi, _i, _l, _r in rejects]), pa.array(np.full(n, -1, np.int32), pa.int32()),
            pa.array([i for _fi, i, _l, _r in rejects], pa.int64()), pa.nulls(n, pa.int64())]
    return table(protector, prov, [None] * n, [line.rstrip(b"\r\n") for _fi, _i, line, _r in rejects],
                 d([fmt] * n), d([r for _fi, _i, _l, r in rejects]))


def open_row(protector: Protector, row: dict) -> tuple[bytes | None, bytes | None]:
    """(key, value) of a quarantine row as a dict (``Table.to_pylist``)."""
    enc = row["raw_encoding"]
    if enc == PLAIN_ENCODING:
        return row["key_raw"], row["raw"]
    if enc != SEAL_ENCODING:
        raise QuarantineError(f"unknown raw_encoding {enc!r}")
    from cryptography.exceptions import InvalidTag

    try:
        plain = protector.open(row["raw"], aad(row["source"], row["partition"], row["offset"]))
    except InvalidTag:
        raise QuarantineError(f"{_where(row)}: the payload does not open with this operator key "
                              "(another key, or the blob was moved or altered)") from None
    return unpack(plain)


def write_private(path: str | os.PathLike, data: bytes | None = None, writer=None) -> None:
    """Create ``path`` with mode 0640 (never overwriting) and write ``data`` or call ``writer(f)``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with os.fdopen(fd, "wb") as f:
        if writer is not None:
            writer(f)
        else:
            f.write(data)


# -- reading and selecting ------------------------------------------------------------------------

def read(root: str | os.PathLike) -> tuple[pa.Table, Path]:
    """The quarantine rows under a sink root (or in one Parquet file), and the folder whose
    ``.hmac-key`` belongs to them."""
    import pyarrow.parquet as pq

    from .sinks.parquet import read_dataset

    p = Path(root)
    if not p.exists():
        raise QuarantineError(f"{p}: no such file or folder")
    try:
        t = pq.read_table(p, **CHECKED) if p.is_file() else read_dataset(p, "quarantine")
    except (pa.ArrowException, OSError) as exc:
        raise QuarantineError(f"{p}: not a quarantine dataset ({str(exc).splitlines()[0]})") from None
    missing = {"raw", "raw_encoding", "source", "partition", "offset"} - set(t.column_names)
    if missing:
        raise QuarantineError(f"{p}: not a quarantine dataset of this version (no {', '.join(sorted(missing))})")
    return t, (p.resolve().parent if p.is_file() else p)


def parse_time(text: str) -> int:
    """ISO 8601 date or date-time (UTC unless it says otherwise) -> ms since the epoch."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise QuarantineError(f"not an ISO 8601 date or time: {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp() * 1000)


def parse_range(since: str | None, until: str | None) -> tuple[int | None, int | None]:
    """``--since`` / ``--until`` -> ms (None where not given); a range that holds no time (since at
    or after until: a typo) is an error, not an empty answer that reads like "nothing happened"."""
    lo = parse_time(since) if since else None
    hi = parse_time(until) if until else None
    if lo is not None and hi is not None and lo >= hi:
        raise QuarantineError(f"--since {since} is not before --until {until}: that range holds no time")
    return lo, hi


def select(t: pa.Table, reasons=None, since: str | None = None, until: str | None = None) -> list[dict]:
    """Rows (dicts) of the given reasons whose record time is in [since, until), in provenance order.
    A reason no row has (a typo, or none of that kind here) is named on stderr with the reasons
    there are: an empty answer then says why."""
    import pyarrow.compute as pc

    if reasons:
        have = sorted(set(pc.unique(t.column("reason").cast(pa.string())).to_pylist()) - {None})
        absent = [r for r in dict.fromkeys(reasons) if r not in have]
        if absent:
            print(f"flowaudit quarantine: no record has reason {', '.join(absent)} "
                  f"(reasons here: {', '.join(have) or 'none'})", file=sys.stderr)
    lo, hi = parse_range(since, until)
    mask = pa.array(np.ones(t.num_rows, bool))
    if reasons:
        mask = pc.and_(mask, pc.is_in(t.column("reason").cast(pa.string()), pa.array(list(reasons))))
    if lo is not None:
        mask = pc.and_kleene(mask, pc.greater_equal(t.column("ts_ms"), lo))
    if hi is not None:
        mask = pc.and_kleene(mask, pc.less(t.column("ts_ms"), hi))
    rows = t.filter(pc.fill_null(mask, False)).to_pylist()
    rows.sort(key=lambda r: (r["source"], r["partition"], r["offset"]))
    return rows


def _where(row: dict) -> str:
    return f"{row['source']}/{row['partition']}/{row['offset']}"


def _iso(ts_ms) -> str:
    if ts_ms is None:
        return "-"
    return f"{datetime.fromtimestamp(ts_ms // 1000, tz=timezone.utc):%Y-%m-%dT%H:%M:%S}.{ts_ms % 1000:03d}Z"


def escape(data: bytes) -> str:
    """Text that is safe on a terminal: printable characters, newlines and tabs as they are,
    everything else (and the backslash) escaped."""
    text = data.decode("utf-8", errors="surrogateescape")
    out = []
    for c in text:
        o = ord(c)
        if c == "\\":
            out.append("\\\\")
        elif c in "\n\t" or (c.isprintable() and not 0xDC80 <= o <= 0xDCFF):
            out.append(c)
        elif 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")    # an undecodable byte
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        else:
            out.append(f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)


def hexdump(data: bytes) -> str:
    lines = []
    for i in range(0, len(data), 16):
        chunk = data[i:i + 16]
        hx = " ".join(f"{b:02x}" for b in chunk)
        lines.append(f"{i:08x}  {hx:<47}  |{''.join(chr(b) if 32 <= b < 127 else '.' for b in chunk)}|")
    return "\n".join(lines)


def _looks_binary(data: bytes) -> bool:
    """Not UTF-8, or NUL bytes: shown as a hexdump; other text is shown escaped."""
    if b"\x00" in data:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# -- the operator's commands ----------------------------------------------------------------------

def _protector(settings, key_root: Path) -> Protector:
    from .config import hmac_key

    key, _src = hmac_key(settings, key_root, create=False)
    return Protector(key)


def cmd_list(args) -> int:
    t, _ = read(args.root)
    rows = select(t, args.reason, args.since, args.until)
    if args.format == "json":
        for r in rows:
            print(json.dumps({"source": r["source"], "partition": r["partition"], "offset": r["offset"],
                              "ts_ms": r["ts_ms"], "format": r["format"], "reason": r["reason"],
                              "bytes": r["bytes"], "key_masked": r["key_masked"],
                              "key_hmac": r["key_hmac"].hex() if r["key_hmac"] else None,
                              "raw_encoding": r["raw_encoding"]}))
        return 0
    head = ("source", "partition", "offset", "time (UTC)", "format", "reason", "bytes", "key")
    cells = [head] + [(escape(r["source"].encode()), str(r["partition"]), str(r["offset"]), _iso(r["ts_ms"]),
                       r["format"], r["reason"], str(r["bytes"]), escape((r["key_masked"] or "-").encode()))
                      for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    for k, c in enumerate(cells):
        print("  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    reasons = {}
    for r in rows:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    print(f"\n{len(rows)} quarantined" + ("".join(f", {n} {r}" for r, n in sorted(reasons.items())) if rows else ""))
    return 0


def cmd_show(args) -> int:
    t, key_root = read(args.root)
    import pyarrow.compute as pc

    sel = pc.and_(pc.and_(pc.equal(t.column("source").cast(pa.string()), args.source),
                          pc.equal(t.column("partition"), args.partition)), pc.equal(t.column("offset"), args.offset))
    rows = t.filter(sel).to_pylist()
    if not rows:
        raise QuarantineError(f"no quarantine row {args.source}/{args.partition}/{args.offset}")
    row = rows[0]
    from .config import load

    key, value = open_row(_protector(load(args.config), key_root), row)
    print(f"source     {escape(row['source'].encode())}\npartition  {row['partition']}\noffset     {row['offset']}\n"
          f"time       {_iso(row['ts_ms'])}\nformat     {row['format']}\nreason     {row['reason']}\n"
          f"bytes      {row['bytes']}\nkey        {'-' if key is None else repr(escape(key))}\n"
          f"encoding   {row['raw_encoding']}")
    if args.raw_out:
        if value is None:
            raise QuarantineError("the record is a tombstone: there is no value to write")
        write_private(args.raw_out, value)
        print(f"value      {len(value)} bytes written to {args.raw_out}")
    elif value is None:
        print("value      (none: tombstone)")
    else:
        print("value:")
        print(hexdump(value) if args.hex or _looks_binary(value) else escape(value))
    return 0


def cmd_reinject(args) -> int:
    from confluent_kafka import KafkaException, Producer

    from .config import load

    t, key_root = read(args.root)
    rows = select(t, args.reason, args.since, args.until)
    files = [r for r in rows if r["partition"] < 0]
    if files and not args.topic:
        raise QuarantineError(f"{len(files)} rows come from files ({files[0]['source']}), not a topic: "
                              "name the target with --topic")
    settings = load(args.config)
    protector = _protector(settings, key_root)
    records = [(r, *open_row(protector, r)) for r in rows]   # every row opens before anything is sent
    per_topic: dict[str, int] = {}
    for r, _k, _v in records:
        topic = args.topic or r["source"]
        per_topic[topic] = per_topic.get(topic, 0) + 1
    if args.dry_run:
        print(f"would reinject {len(records)} records" + "".join(f", {n} to {tp}" for tp, n in per_topic.items()))
        return 0
    conf = dict(settings.kafka.extra)
    # librdkafka gives up on a record after the same timeout, so every record is reported
    # delivered or failed before flush returns
    conf.update({"bootstrap.servers": args.bootstrap or settings.kafka.bootstrap_servers, "acks": "all",
                 "enable.idempotence": False, "linger.ms": 5, "message.timeout.ms": int(args.timeout * 1000)})
    producer = Producer(conf)
    delivered, errors = [0], []

    def report(err, _msg):
        if err is None:
            delivered[0] += 1
        else:
            errors.append(str(err))

    for r, key, value in records:
        topic = args.topic or r["source"]
        kw = {"partition": r["partition"]} if topic == r["source"] and r["partition"] >= 0 else {}
        while True:
            try:
                producer.produce(topic, value, key=key, on_delivery=report,
                                 headers=[(REINJECT_HEADER, _where(r).encode())], **kw)
                break
            except BufferError:
                producer.poll(0.1)
            except KafkaException as exc:
                errors.append(str(exc))
                break
        producer.poll(0)
    remaining = producer.flush(args.timeout + 10)
    failed = len(records) - delivered[0]
    print(f"reinjected {delivered[0]} of {len(records)} records"
          + "".join(f", {n} to {tp}" for tp, n in per_topic.items())
          + (f"; {failed} not delivered ({remaining} still queued; first error: {errors[0] if errors else '-'})"
             if failed else ""))
    return 0 if failed == 0 else 1


def _run(fn):
    def wrapped(args) -> int:
        try:
            return fn(args)
        except QuarantineError as exc:
            print(f"flowaudit quarantine: {exc}", file=sys.stderr)
            return 2
    return wrapped


def add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", action="append", metavar="R", help="only this reason (repeatable)")
    p.add_argument("--since", metavar="TIME", help="record time at or after TIME (ISO 8601, UTC unless given)")
    p.add_argument("--until", metavar="TIME", help="record time before TIME")


def add_key_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="TOML settings with the operator key [env FLOWAUDIT_CONFIG]; else "
                        "FLOWAUDIT_SECURITY_HMAC_KEY[_FILE], else ROOT/.hmac-key")
