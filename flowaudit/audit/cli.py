"""``flowaudit audit INPUT... --out ROOT``: today's catalogue, watchlist and policy over archives.

Kept light: building the command line imports neither polars nor the kernels.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

EXIT_FINDING = 1
EXIT_USAGE = 2


def _formats(values) -> tuple:
    out = []
    for v in values or []:
        topic, sep, fmt = v.rpartition("=")
        out.append((topic if sep else "*", fmt))
    return tuple(out)


def cmd_audit(args) -> int:
    from ..config import ConfigError, load
    from ..decode import FORMAT_CODES
    from ..memory import for_command
    from ..quarantine import QuarantineError, parse_range
    from . import engine
    from .inputs import InputError, parse_map

    for_command("audit")        # page reuse over the lowest RSS (flowaudit/memory.py)
    over: dict = {}
    for flag, section, key in (("window", "findings", "window_s"), ("lookback", "findings", "lookback_s"),
                               ("episode_gap", "findings", "episode_gap_s"),
                               ("severity_model", "findings", "severity_model"), ("policy", "egress", "policy_file"),
                               ("watchlist_dir", "egress", "watchlist_dir")):
        if getattr(args, flag) is not None:
            over.setdefault(section, {})[key] = getattr(args, flag)
    if args.raw:
        over.setdefault("sink", {})["raw_values"] = True
    try:
        settings = load(args.config, overrides=over)
        since_ms, until_ms = parse_range(args.since, args.until)
        formats = _formats(args.format)
        for _t, f in formats:
            if f != "auto" and f not in FORMAT_CODES:
                raise ConfigError(f"--format: unknown format {f!r} (edifact, x12, xml, json, flat, auto)")
        opts = engine.Options(
            inputs=args.inputs, out=args.out, engine=args.engine, workers=args.workers, scheduler=args.scheduler,
            threads=args.threads or min(4, os.cpu_count() or 1),
            since_ms=since_ms, until_ms=until_ms,
            mapping=parse_map(args.map), formats=formats, dns_files=tuple(args.dns or ()), on_bad_input=args.on_bad_input,
            unit_rows=args.unit_rows, window_s=settings.findings.window_s, lookback_s=settings.findings.lookback_s,
            episode_gap_s=settings.findings.episode_gap_s,
            command=["flowaudit"] + sys.argv[1:])
        manifest = engine.run(opts, settings)
    except (ConfigError, InputError, QuarantineError, engine.AuditError, FileNotFoundError) as e:
        print(f"flowaudit audit: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("flowaudit audit: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    t = manifest["totals"]
    bad = [i for i in manifest["inputs"] if i["status"] in ("skipped", "failed")]
    print(f"audited {sum(1 for i in manifest['inputs'] if i['status'] == 'ok')} input(s), {t.get('rows', 0):,} rows "
          f"({manifest['units_resumed']} of {manifest['units']} units already done): {t.get('messages', 0):,} messages, "
          f"{t.get('hits', 0):,} hits, {t.get('quarantined', 0):,} quarantined, {t.get('flows', 0):,} flows, "
          f"{t.get('transfers', 0):,} transfers -> {manifest['findings']} finding(s) under {args.out}")
    if manifest.get("carried_over"):    # a retro-hunt: classified rows carried over, not classified again
        print("  carried over from the root(s), not classified again: "
              + ", ".join(f"{n:,} {ds}" for ds, n in manifest["carried_over"].items()))
        r = manifest.get("retro_hunt") or {}
        print(f"  matched again with today's watchlist: {r.get('edi_party_matches', 0):,} interchange recipient(s) "
              f"of its EDI parties in the carried hits; {r.get('transfers_dropped', 0):,} carried transfer(s) "
              f"recomputed or no longer listed")
    for i in bad:
        print(f"  {i['status']}: {i['error']}")
    if args.report:
        from .. import report

        report.write(args.out, args.report, manifest, watchlist_dir=settings.egress.watchlist_dir or None)
        print(f"report: {args.report}")
    if args.fail_on:
        from ..detect import findings as F

        if F.worst_rank(F._read(Path(args.out), "findings", ["severity"])) >= F.SEV_RANK[args.fail_on]:
            return EXIT_FINDING
    return 0


def add_parser(sub) -> None:
    from ..config import bounded, out_path
    from ..detect.severity import LEVELS

    p = sub.add_parser(
        "audit", help="batch audit of historical Parquet archives (messages, flows, or a flowaudit root)",
        description="Runs today's catalogue, watchlist and zone policy over archived Parquet: Kafka message "
        "archives (flat Kafka Connect layout, Redpanda's Iceberg key-value layout, or --map), flow archives "
        "(flowaudit's flows dataset, goflow2 columns) and flowaudit output roots (a retro-hunt: the classified "
        "data is carried over; the stored flows, the interchange recipients (by keyed hash) and, with --dns, the "
        "DNS lookups and the names seen on connections are matched again with today's watchlist, carried "
        "matches of indicators it no longer lists are dropped, and the rest graded by today's watchlist and policy). Writes the usual datasets and the findings under ROOT with deterministic names: a re-run or a run after Ctrl-C / kill -9 resumes and duplicates nothing. "
        "Exit 0, 1 with --fail-on when a finding reaches that severity, 2 on a usage error or a bad input "
        "(--on-bad-input fail), 130 when interrupted.",
        epilog="example: flowaudit synth --dump /tmp/dump && flowaudit audit /tmp/dump/flat /tmp/dump/flows "
               "--out /tmp/dump-audit --policy /tmp/dump/policy.toml --dns /tmp/dump/dns/dns.log "
               "--watchlist-dir /tmp/dump/watchlist --report /tmp/dump-audit.html (synth --dump prints this "
               "command for the archive it wrote)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="Parquet files, folders of them, Delta tables "
                   "(their current version), Iceberg tables or warehouses (the current snapshot, with pyiceberg: "
                   "pip install 'flowaudit[iceberg]'), or flowaudit roots")
    p.add_argument("--out", required=True, type=out_path("folder"), metavar="ROOT",
                   help="output root (datasets, findings, _audit/)")
    p.add_argument("--engine", choices=("polars", "dask"), default="polars",
                   help="polars: this process, bounded memory (default); dask: Dask distributed tasks")
    p.add_argument("--workers", type=bounded(int, 1), default=2, metavar="N",
                   help="--engine dask without --scheduler: a LocalCluster of N worker processes (default 2)")
    p.add_argument("--threads", type=bounded(int, 1), metavar="N", help="--engine polars: units in parallel in this process "
                   "(default: the CPUs, at most 4); memory grows by about 140 MB a unit (1M messages: 0.9 GB "
                   "at 2, 2.5 GB at 16); the findings correlation takes min(N, 2) threads on either engine")
    p.add_argument("--scheduler", metavar="ADDR", help="--engine dask: an existing cluster, e.g. tcp://HOST:8786")
    p.add_argument("--since", metavar="TIME", help="only records at or after TIME (ISO 8601, UTC unless given); "
                   "pushed down to partitions and row-group statistics")
    p.add_argument("--until", metavar="TIME", help="only records before TIME")
    p.add_argument("--map", metavar="NAME=COL,...", help="column mapping for other layouts: value, time, topic, "
                   "partition, offset, key, format (messages) or the flows dataset's names (flows); a.b = struct field. "
                   "A numeric time's unit is its name's suffix (_ns, _us, _ms, _s), else ms (integers) or s (floats)")
    p.add_argument("--format", action="append", metavar="[TOPIC=]FMT",
                   help="message format (edifact, x12, xml, json, flat, auto) for every topic or one topic (repeatable; "
                   "default: detected per message)")
    p.add_argument("--dns", action="append", metavar="FILE", help="Zeek dns.log, ssl.log or http.log (JSON lines or "
                   "Zeek's tab-separated log, plain or gzip), or Suricata's eve.json; a folder gives its files named "
                   "dns*, ssl*, http* and eve*, e.g. Zeek's dated archive: DNS answers, TLS server names (SNI) and "
                   "HTTP Hosts name the flows' addresses (watchlisted domains) and add DNS_ANSWER, TLS_SNI and "
                   "HTTP_HOST transfers (repeatable)")
    p.add_argument("--on-bad-input", choices=("fail", "skip"), default="fail",
                   help="a file that cannot be read or fits no layout: fail (exit 2, default) or skip it, named in "
                   "the summary, the manifest and the report")
    p.add_argument("--report", metavar="PATH.html", help="also write the self-contained HTML report "
                   "(and report.json beside it)")
    p.add_argument("--fail-on", choices=LEVELS, metavar="SEVERITY", help="exit 1 when a finding reaches SEVERITY")
    p.add_argument("--unit-rows", type=bounded(int, 1), default=65536, metavar="N",
                   help="rows per unit of work, whole row groups (default 65536); bounds memory per worker")
    p.add_argument("--config", metavar="FILE", help="TOML settings (HMAC key, egress, findings) [env FLOWAUDIT_CONFIG]")
    p.add_argument("--policy", metavar="FILE", help="zone policy with the application inventory "
                   "[env FLOWAUDIT_EGRESS_POLICY_FILE]")
    p.add_argument("--watchlist-dir", metavar="DIR", help="operator watchlist files beside the default "
                   "[env FLOWAUDIT_EGRESS_WATCHLIST_DIR]")
    p.add_argument("--window", type=int, metavar="S", help="findings window (default 300 s)")
    p.add_argument("--lookback", type=int, metavar="S", help="findings look-back for flow-borne windows (default 0)")
    p.add_argument("--severity-model", metavar="FILE", help="operator overrides of schemas/severity.toml")
    p.add_argument("--episode-gap", type=bounded(int, 0), metavar="S", help="the report's episodes: the most quiet "
                   "between two windows of one episode (default 3600 s; recorded in the manifest)")
    p.add_argument("--raw", action="store_true", help="also store raw values (local investigations only)")
    p.set_defaults(fn=cmd_audit)

