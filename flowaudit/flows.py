"""``flowaudit flows`` (pcap / goflow2 JSON -> FLOWS Parquet).

``cli.py`` registers it with ``flows.add_parsers(subparsers)`` (``flowaudit collect``, UDP -> Kafka,
lives in ``cli.py`` with the other commands that read the settings model).  Every flag names the
environment variable that sets its default.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

ENV_TTL = "FLOWAUDIT_NETFLOW_TEMPLATE_TTL_S"
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")     # what a folder given to flowaudit flows contributes
CAPTURE_NAMES = CAPTURE_SUFFIXES + tuple(s + ".gz" for s in CAPTURE_SUFFIXES)   # (gzip or not)
JSON_NAMES = tuple(s + z for s in (".json", ".jsonl", ".ndjson") for z in ("", ".gz"))   # goflow2 JSON lines
BATCH_DATAGRAMS = 65536


def _env(name: str, default, hi=None):
    """An environment variable's value of ``default``'s type (at least 0, at most ``hi``); a value
    that is not one is a ConfigError naming the variable."""
    from .config import ConfigError

    v = os.environ.get(name)
    if v is None or v == "":
        return default
    if default is None:
        return v
    try:
        got = type(default)(v)
    except ValueError:
        raise ConfigError(f"{name}: expected {type(default).__name__}, got {v!r}") from None
    if got < 0 or (hi is not None and got > hi):
        raise ConfigError(f"{name} must be 0..{hi}: {v!r}")
    return got


# ---------------------------------------------------------------------------------- flows
def _quarantine_table(protector, dg, sel, status, file_names):
    from .decode.netflow import STATUS_NAMES
    from .quarantine import table

    n = len(sel)
    reasons = sorted({STATUS_NAMES[s] for s in status[sel]})
    rpos = {r: i for i, r in enumerate(reasons)}
    d = lambda idx, names: pa.DictionaryArray.from_arrays(  # noqa: E731
        pa.array(np.asarray(idx, np.int32), pa.int32()), pa.array(names, pa.string()))
    ts = dg.ts_ns[sel] // 1_000_000
    prov = [d(dg.file_idx[sel], file_names), pa.array(np.full(n, -1, np.int32), pa.int32()),
            pa.array(dg.frame[sel], pa.int64()), pa.array(ts, pa.int64(), mask=ts < 0)]
    return table(protector, prov, [dg.exporters[dg.exporter_idx[i]].encode() for i in sel],
                 [bytes(dg.buf[dg.offsets[i]:dg.offsets[i + 1]]) for i in sel],
                 d(np.zeros(n), ["netflow"]), d([rpos[STATUS_NAMES[s]] for s in status[sel]], reasons))


def decode_pcaps(paths, ports=None, template_ttl_s: int | None = None, decoder=None):
    """Decode export captures -> (FLOWS table, datagrams, per-datagram status, decoder)."""
    from .decode.netflow import NetflowDecoder
    from .config import MAX_SPAN_S
    from .sources.pcap import read_datagrams

    dg = read_datagrams(paths, ports)
    dec = decoder or NetflowDecoder(template_ttl_s=_env(ENV_TTL, 3600, MAX_SPAN_S) if template_ttl_s is None
                                    else template_ttl_s)
    files = [Path(f).name for f in dg.files]
    tables = []
    status = np.zeros(len(dg), np.int16)
    for s in range(0, max(len(dg), 1), BATCH_DATAGRAMS):
        e = min(len(dg), s + BATCH_DATAGRAMS)
        if e <= s:
            break
        off = dg.offsets[s:e + 1]
        res = dec.decode_result(dg.buf, off, dg.exporters, dg.exporter_idx[s:e], sources=files,
                                source_idx=dg.file_idx[s:e], partition=np.full(e - s, -1),
                                offset=dg.frame[s:e], ts_ms=dg.ts_ns[s:e] // 1_000_000)
        status[s:e] = res.status
        tables.append(res.table)
    dec.flush()
    from .datasets import FLOWS
    table = pa.concat_tables(tables).unify_dictionaries() if tables else FLOWS.empty_table()
    return table, dg, status, dec


def _lines(paths):
    """(file index, line index, line) of every line of ``paths``, plain or gzip; a gzip file cut
    short or damaged raises PcapError naming it (one line for the CLI)."""
    from .sources.files import GZIP_ERRORS, open_input
    from .sources.pcap import PcapError

    for fi, p in enumerate(paths):
        try:
            with open_input(p) as f:
                yield from ((fi, i, line) for i, line in enumerate(f))
        except GZIP_ERRORS as exc:
            raise PcapError(f"{p}: not readable ({exc})") from None


def decode_json_lines(paths):
    """goflow2 JSON lines -> (FLOWS table, status per line, the rejected lines as (file index,
    line index, line, quarantine reason))."""
    from .decode.netflow import GOFLOW_REASONS, decode_goflow_json

    values, sidx, offs = [], [], []
    for fi, i, line in _lines(paths):
        if line.strip():
            values.append(line)
            sidx.append(fi)
            offs.append(i)
    table, status = decode_goflow_json(values, [Path(p).name for p in paths], sidx, None, offs)
    rejects = [(sidx[k], offs[k], values[k], GOFLOW_REASONS[int(status[k])]) for k in np.flatnonzero(status)]
    return table, status, rejects


def _conn_log_name(name: str) -> bool:
    """The names of the logs read as connections: Zeek's conn log (``conn.log``, rotated
    ``conn.06:00:00-07:00:00.log.gz``) and Suricata's ``eve.json`` (its flow events; rotated
    ``eve.json.1``, ``eve-2026-03-01.json.gz``)."""
    return (name.startswith("conn.") and ".log" in name) or (name.startswith("eve") and ".json" in name)


def decode_zeek_conn(paths):
    """Zeek ``conn.log`` files (JSON lines or Zeek's ASCII log, gzip or not) and Suricata
    ``eve.json`` files (their flow and netflow events) -> (FLOWS table, connections read, the lines
    that are no connection as (file index, line index, line, quarantine reason)).  Each connection gives the originator's
    flow and, when the responder sent any, the responder's (:func:`zeek_conn_flows`); ``offset``
    is the line's index in its file, ``exporter`` ``zeek`` (or the record's ``_node_name``)."""
    from .decode.netflow import decode_goflow_json, zeek_conn_flows, zeek_conn_log

    values, sidx, offs, rejects = [], [], [], []
    records = 0
    logs: dict = {}
    for fi, i, line in _lines(paths):
        log = logs.setdefault(fi, zeek_conn_log())     # a reader a file: its own header
        try:
            rec = log.record(line)
        except ValueError:
            rejects.append((fi, i, line, log.reason))
            continue
        if rec is None:
            continue
        flows = zeek_conn_flows(rec)
        records += bool(flows)          # (a Suricata event that is no flow is none)
        for flow in flows:
            values.append(flow)
            sidx.append(fi)
            offs.append(i)
    table, _status = decode_goflow_json(values, [Path(p).name for p in paths], sidx, None, offs)
    return table, records, rejects


def _conn_label(paths) -> str:
    eve = sum(Path(p).name.startswith("eve") for p in paths)
    return ("Zeek conn logs" if not eve else "Suricata eve.json" if eve == len(paths)
            else "Zeek conn logs and Suricata eve.json")


def _protector(quarantine_file: str):
    """The operator key (FLOWAUDIT_CONFIG / FLOWAUDIT_SECURITY_HMAC_KEY[_FILE], else a
    ``.hmac-key`` beside the quarantine file) that seals the quarantined datagrams."""
    from .config import load, output_key
    from .protect import Protector

    settings = load(None)
    return Protector(output_key(settings, Path(quarantine_file).resolve().parent), raw=settings.sink.raw_values)


def cmd_flows(args) -> int:
    import pyarrow.parquet as pq

    ports = set(args.port) if args.port else None
    inputs = []
    for p in args.inputs:
        if Path(p).is_dir():           # a folder: its captures, sorted (its JSON may be anything)
            found = sorted(str(f) for f in Path(p).rglob("*")
                           if (f.name.endswith(CAPTURE_NAMES) or _conn_log_name(f.name)) and f.is_file())
            if not found:
                print(f"flowaudit flows: {p}: a folder without capture files ({', '.join(CAPTURE_SUFFIXES)}, "
                      f"gzip or not), Zeek conn logs or Suricata eve.json files", file=sys.stderr)
                return 2
            inputs += found
        elif not Path(p).is_file():
            print(f"flowaudit flows: {p}: no such file", file=sys.stderr)
            return 2
        else:
            inputs.append(p)
    from .sources.pcap import PcapError
    from .sources.zeek import ascii_path

    conn = [p for p in inputs if _conn_log_name(Path(p).name) or ascii_path(p) == "conn"]
    jsonl = [p for p in inputs if p.endswith(JSON_NAMES) and p not in conn]
    pcaps = [p for p in inputs if p not in jsonl and p not in conn]
    from .quarantine import lines_table

    tables, quarantined = [], []
    summary: dict = {}
    protector = _protector(args.quarantine) if args.quarantine else None
    if pcaps:
        try:
            table, dg, status, dec = decode_pcaps(pcaps, ports, args.template_ttl)
        except PcapError as exc:
            print(f"flowaudit flows: {exc}", file=sys.stderr)
            return 2
        tables.append(table)
        bad = np.nonzero(status)[0]
        summary.update(datagrams=len(dg), flows=table.num_rows, quarantined=int(len(bad)),
                       skipped_frames=dg.skipped, counters={k: v for k, v in dec.counters.items() if v})
        if args.quarantine:
            quarantined.append(_quarantine_table(protector, dg, bad, status, [Path(f).name for f in dg.files]))
        if args.templates:
            summary["templates"] = dec.templates()
    try:        # (a gzip file cut short or damaged: one line naming it)
        if jsonl:
            t, st, rejects = decode_json_lines(jsonl)
            tables.append(t)
            summary["json_messages"] = int(len(st))
            summary["json_rejected"] = len(rejects)
            if args.quarantine and rejects:
                quarantined.append(lines_table(protector, rejects, [Path(p).name for p in jsonl], "goflow"))
        if conn:
            t, summary["zeek_conn_records"], rejects = decode_zeek_conn(conn)
            tables.append(t)
            summary["zeek_conn_rejected"] = len(rejects)
            if args.quarantine and rejects:
                quarantined.append(lines_table(protector, rejects, [Path(p).name for p in conn], "zeek_conn"))
    except PcapError as exc:
        print(f"flowaudit flows: {exc}", file=sys.stderr)
        return 2
    if args.quarantine:        # the undecodable datagrams and lines, sealed under the operator key
        from .quarantine import write_private

        q = pa.concat_tables([t.unify_dictionaries() for t in quarantined]).unify_dictionaries() if quarantined \
            else None
        Path(args.quarantine).unlink(missing_ok=True)
        if q is not None:
            write_private(args.quarantine, writer=lambda f: pq.write_table(q, f))
    out = pa.concat_tables([t.unify_dictionaries() for t in tables]).unify_dictionaries() if len(tables) > 1 else tables[0]
    from .datasets import parquet_options
    pq.write_table(out, args.out, **parquet_options(out.schema))
    summary["out"] = args.out
    summary["rows"] = out.num_rows
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
    else:
        print(f"{out.num_rows:,} flows -> {args.out}"
              + (f" ({summary.get('datagrams', 0):,} datagrams, {summary.get('quarantined', 0):,} quarantined)"
                 if pcaps else "")
              + (f"; {summary['json_rejected']:,} of {summary['json_messages']:,} goflow2 JSON lines not flows"
                 if summary.get("json_rejected") else "")
              + (f"; {_conn_label(conn)}: {summary['zeek_conn_records']:,} connections"
                 + (f", {summary['zeek_conn_rejected']:,} lines not connections (not JSON, or not fitting "
                    f"their header)" if summary["zeek_conn_rejected"] else "") if conn else "")
              + ("" if args.quarantine or not (summary.get("json_rejected") or summary.get("zeek_conn_rejected"))
                 else "; --quarantine FILE keeps the lines that are not flows"))
    return 0


def add_parsers(sub) -> None:
    """Register ``flows`` on an argparse subparsers object."""
    from .config import MAX_SPAN_S, bounded, out_path

    p = sub.add_parser("flows", help="decode NetFlow v5/v9/IPFIX captures (pcap/pcapng), goflow2 JSON "
                       "lines or Zeek conn logs into a FLOWS Parquet file",
                       description="Decode the UDP export datagrams of pcap/pcapng files (Ethernet, VLAN, "
                       "raw IP, Linux cooked SLL/SLL2; IPv4/IPv6) into one row per flow record. Files ending "
                       ".json/.jsonl/.ndjson are read as goflow2 JSON flow messages, one per line. Zeek conn logs "
                       "(conn.log, rotated conn.*.log.gz, or any Zeek ASCII log whose #path is conn; JSON or Zeek's "
                       "tab-separated format) give each connection's flow records as an exporter would: the "
                       "originator's and, when it answered, the responder's. Suricata's eve.json (eve*.json*) "
                       "gives its flow events the same way (and its netflow events one direction each; its other "
                       "events no flow). Any file may be gzip-compressed "
                       "(rotated captures, tcpdump -z gzip). A folder contributes its .pcap, .pcapng and .cap "
                       "files, Zeek conn logs and eve.json files, .gz or not (recursively, sorted). Counts are raw, "
                       "with the "
                       "sampling interval beside them.")
    p.add_argument("inputs", nargs="+", metavar="PCAP",
                   help="capture files or folders of them (or goflow2 JSON lines, or Zeek conn logs)")
    p.add_argument("--out", required=True, type=out_path("file"), metavar="FILE",
                   help="output Parquet file (FLOWS schema)")
    p.add_argument("--port", type=bounded(int, 0, hi=65535), action="append", metavar="N",
                   help="only UDP datagrams to this collector port (repeatable; default: every UDP datagram)")
    p.add_argument("--quarantine", type=out_path("file"), metavar="FILE",
                   help="also write undecodable datagrams and the goflow2 / Zeek lines that are not flows "
                        "(reason, payload sealed under the operator key [env FLOWAUDIT_SECURITY_HMAC_KEY[_FILE], "
                        "else FILE's folder/.hmac-key]) here; read them with flowaudit quarantine")
    p.add_argument("--template-ttl", type=bounded(int, 0, hi=MAX_SPAN_S), metavar="S", default=None,
                   help=f"drop templates not refreshed for S seconds of exporter time, 0 = never "
                        f"(default 3600) [env {ENV_TTL}]")
    p.add_argument("--templates", action="store_true", help="include the template registry in the --json summary")
    p.add_argument("--json", action="store_true", help="print a JSON summary (counters per reason)")
    p.set_defaults(fn=cmd_flows)


def main(argv=None) -> int:
    """``python -m flowaudit.flows ...``: the same as ``flowaudit ...`` (kept for scripts that use it)."""
    from .cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
