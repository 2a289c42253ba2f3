"""Command line: ``flowaudit demo | stream | collect | scan | flows | findings | synth | quarantine | bench |
fuzz | warmup``.

Configuration errors print one line and exit 2; a clean stop (SIGTERM, Ctrl-C, drained) exits 0.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__
from .config import ConfigError, bounded, load, out_path
from .memory import COMMANDS, preselect_arrow_pool
from .workers import supervise, worker_tag


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML settings file [env FLOWAUDIT_CONFIG]")
    p.add_argument("--bootstrap", metavar="HOST:PORT",
                   help="Kafka bootstrap servers [env FLOWAUDIT_KAFKA_BOOTSTRAP_SERVERS]")
    p.add_argument("--group", metavar="ID", help="consumer group id [env FLOWAUDIT_KAFKA_GROUP_ID]")
    p.add_argument("--topics", metavar="T=FMT,...",
                   help="topics and their formats (edifact, x12, xml, json, flat, auto; telemetry: netflow, goflow, "
                        "zeek_conn: Zeek conn or Suricata eve flows; dns: Zeek's dns, ssl or http log records, "
                        "Suricata's eve.json names; eve: all of Suricata's eve.json on one topic, its names and its "
                        "flows) [env FLOWAUDIT_KAFKA_TOPICS]")
    p.add_argument("--root", type=out_path("folder"), metavar="DIR",
                   help="Parquet output root [env FLOWAUDIT_SINK_ROOT]")
    p.add_argument("--rotate-records", type=int, metavar="N",
                   help="messages per file per partition [env FLOWAUDIT_SINK_ROTATE_RECORDS]")
    p.add_argument("--raw", action="store_true",
                   help="also store raw sensitive values (local investigations only) [env FLOWAUDIT_SINK_RAW_VALUES]")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="Prometheus /metrics port, 0 = off [env FLOWAUDIT_METRICS_PORT]")
    p.add_argument("--metrics-host", metavar="ADDR", help="address to serve /metrics on [env FLOWAUDIT_METRICS_HOST]")
    p.add_argument("--watchlist-dir", metavar="DIR",
                   help="operator watchlist files, added to the sourced defaults [env FLOWAUDIT_EGRESS_WATCHLIST_DIR]")
    p.add_argument("--policy", metavar="FILE", help="zones and policy TOML [env FLOWAUDIT_EGRESS_POLICY_FILE]")
    p.add_argument("--on-log-reset", choices=("stop", "new_epoch"),
                   help="when the broker's log no longer matches the stored files (topic recreated, log "
                        "truncated): stop with exit 3 (default) or file the new log as a new epoch "
                        "[env FLOWAUDIT_SINK_ON_LOG_RESET]")


def _settings(args):
    over: dict = {}
    if args.bootstrap:
        over.setdefault("kafka", {})["bootstrap_servers"] = args.bootstrap
    if args.group:
        over.setdefault("kafka", {})["group_id"] = args.group
    if args.topics:
        topics = {}
        for item in args.topics.split(","):
            if "=" not in item:
                raise ConfigError(f"--topics: expected topic=format, got {item!r}")
            t, f = item.split("=", 1)
            topics[t.strip()] = f.strip()
        over.setdefault("kafka", {})["topics"] = topics
    if args.root:
        over.setdefault("sink", {})["root"] = args.root
    if args.rotate_records is not None:     # 0 too: the settings refuse it, not ignore it
        over.setdefault("sink", {})["rotate_records"] = args.rotate_records
    if args.raw:
        over.setdefault("sink", {})["raw_values"] = True
    if args.metrics_port is not None:
        over.setdefault("metrics", {})["port"] = args.metrics_port
    if args.metrics_host:
        over.setdefault("metrics", {})["host"] = args.metrics_host
    if args.watchlist_dir:
        over.setdefault("egress", {})["watchlist_dir"] = args.watchlist_dir
    if args.policy:
        over.setdefault("egress", {})["policy_file"] = args.policy
    if getattr(args, "on_log_reset", None):
        over.setdefault("sink", {})["on_log_reset"] = args.on_log_reset
    if getattr(args, "workers", None) is not None:
        over.setdefault("kafka", {})["workers"] = args.workers
    return load(args.config, overrides=over)


def cmd_stream(args) -> int:
    settings = _settings(args)
    if settings.kafka.workers > 1:      # a supervisor: it starts the workers, imports no kernels
        return supervise(args.argv, settings.kafka.workers, settings.metrics.port, topics=settings.kafka.topics)
    from .memory import for_command
    from .metrics import Metrics
    from .service import StartupInterrupted, StreamService, format_summary

    for_command("stream")
    metrics = Metrics(settings.kafka.topics)
    service = StreamService(settings, metrics, until_drained=args.until_drained, max_seconds=args.max_seconds)
    service.install_signal_handlers()   # before anything slow: SIGTERM during start-up is a clean stop
    try:
        if settings.metrics.port:
            try:
                port = metrics.serve(settings.metrics.host, settings.metrics.port)
            except OSError as exc:
                raise ConfigError(f"cannot serve metrics on {settings.metrics.host}:{settings.metrics.port}: "
                                  f"{exc.strerror}")
            print(f"metrics on http://{settings.metrics.host}:{port}/metrics", file=sys.stderr, flush=True)
        summary = service.run()
    except StartupInterrupted:          # stopped before the service started: nothing to publish
        metrics.close()
        return 0
    metrics.close()
    tag = worker_tag()
    if not args.quiet:
        print("\n".join(tag + line for line in format_summary(summary).splitlines()), flush=True)
    if summary.error:
        print(f"flowaudit: {tag}{summary.error}", file=sys.stderr, flush=True)
    return summary.exit_code


def _collect_settings(args):
    """``flowaudit collect``'s settings: the same model as ``stream`` (file, environment, flags)."""
    over: dict = {}
    if args.bootstrap:
        over.setdefault("kafka", {})["bootstrap_servers"] = args.bootstrap
    for flag, key in (("listen", "listen"), ("topic", "topic"), ("sockets", "sockets"), ("rcvbuf", "rcvbuf_bytes")):
        if getattr(args, flag) is not None:
            over.setdefault("collect", {})[key] = getattr(args, flag)
    return load(args.config, overrides=over)


def cmd_collect(args) -> int:
    import json
    import os

    from confluent_kafka import KafkaException

    from .sources.udp import UdpCollector, parse_listen

    settings = _collect_settings(args)
    c = settings.collect
    try:
        host, port = parse_listen(c.listen)
    except ValueError:
        raise ConfigError(f"collect.listen: expected HOST:PORT, got {c.listen!r}") from None
    try:
        col = UdpCollector(host, port, settings.kafka.bootstrap_servers, c.topic, sockets=c.sockets,
                           rcvbuf=c.rcvbuf_bytes, producer_extra=settings.kafka.extra)
    except KafkaException as exc:     # a bad kafka.extra property or value
        raise ConfigError(f"kafka.extra: {exc.args[0].str()}") from None
    except OSError as exc:
        raise ConfigError(f"collect: cannot listen on {host}:{port}: {exc.strerror}") from None
    print(json.dumps({"listening": f"{col.address[0]}:{col.port}", "topic": c.topic,
                      "bootstrap": settings.kafka.bootstrap_servers, "rcvbuf_bytes": col.effective_rcvbuf,
                      "pid": os.getpid()}), flush=True)
    on_stats = (lambda d: print(json.dumps({"stats": d}), flush=True)) if args.stats_every else None
    stats = col.run(max_seconds=args.max_seconds, stats_every=args.stats_every or 0.0, on_stats=on_stats)
    print(json.dumps({"final": stats.as_dict()}), flush=True)
    return 0 if not stats.delivery_errors and not stats.dropped_queue_full else 1


def cmd_demo(args) -> int:
    from .demo import DemoError, run_demo
    from .memory import for_command
    from .service import format_summary

    for_command("demo")                  # the stream's process settings: the demo runs it in-process
    try:
        summary = run_demo(count=args.count, seed=args.seed, out=args.out, partitions=args.partitions,
                           metrics_port=args.metrics_port)
    except DemoError as e:
        print(f"flowaudit demo: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary), flush=True)
    return summary.exit_code                # not 0 when the stream stopped (as `flowaudit stream`)


def cmd_synth(args) -> int:
    from . import synth

    if args.dump:
        return _synth_dump(args)
    msgs = synth.generate(args.seed, args.count, bad_fraction=args.bad_fraction or 0.0)
    if args.bootstrap:
        from .demo import produce
        n, b = produce(msgs, args.bootstrap, partitions=args.partitions)
        print(f"produced {n:,} messages ({b / 1e6:.1f} MB) to {', '.join(synth.TOPICS.values())}")
    else:
        counts = synth.write_files(msgs, args.out)
        print(f"wrote {counts} under {args.out} (labels in {args.out}/labels.jsonl)")
    return 0


def _synth_dump(args) -> int:
    """``flowaudit synth --dump DIR``: a labelled Parquet archive (flowaudit.synth.write_dump)."""
    from . import synth

    if args.bootstrap:
        print("flowaudit: synth: --dump and --bootstrap exclude each other", file=sys.stderr)
        return 2
    layouts = tuple(x.strip() for x in args.layouts.split(",") if x.strip())
    try:
        labels = synth.write_dump(args.dump, args.count, seed=args.seed, files=args.files,
                                  row_group_rows=args.row_group, layouts=layouts, start=args.start,
                                  partitions=args.partitions, hours=args.hours,
                                  bad_fraction=0.01 if args.bad_fraction is None else args.bad_fraction)
    except (ValueError, OSError) as exc:
        print(f"flowaudit: synth --dump: {exc}", file=sys.stderr)
        return 2
    c = labels["counts"]
    print(f"wrote {c['messages']:,} messages ({c['bytes'] / 1e6:.1f} MB; {', '.join(layouts)}), {c['flows']:,} flows "
          f"and {len(labels['exposures'])} labelled exposures, {labels['span']['start']} to {labels['span']['end']}, "
          f"under {args.dump} (labels in labels.json)")
    print(f"audit it: {audit_command(args.dump, labels)}")
    return 0


def audit_command(dump: str, labels: dict) -> str:
    """The ``flowaudit audit`` command line that finds every labelled exposure of a ``synth
    --dump`` archive: its first message layout, its flows, and the policy, DNS log and operator
    watchlist written beside them (without the last two, the exposures they name are missed)."""
    import shlex

    d = dump.rstrip("/") or "/"
    inp = labels["inputs"]

    def path(rel: str) -> str:
        return os.path.join(d, rel.rstrip("/"))

    return shlex.join(["flowaudit", "audit", path(inp["messages"][0]), path(inp["flows"]), "--out", f"{d}-audit",
                       "--policy", path(inp["policy"]), "--dns", path(inp["dns"]),
                       "--watchlist-dir", path(inp["watchlist_dir"]), "--report", f"{d}-audit.html"])


def _warm_share(share: str) -> None:
    """Compile (or load from the cache) one share of the kernels: ``edi`` (EDIFACT, X12, the
    protector's masks, HMAC and raw values, the archive splitter), ``text`` (JSON, XML, flat
    files) or ``all``; each share with the detector, the salvage and marker scans and the hit
    tables.  A top-level function: ``flowaudit warmup --jobs 2`` spawns a process that runs one."""
    from .decode import FMT_EDIFACT, FMT_FLAT, FMT_JSON, FMT_X12, FMT_XML
    from .detect.egress import EgressDetector
    from .pipeline import Classifier
    from .protect import Protector
    from .protect import warmup as protect_warmup
    from .scan import warmup as scan_warmup

    formats = {"edi": {FMT_EDIFACT, FMT_X12}, "text": {FMT_JSON, FMT_XML, FMT_FLAT}, "all": None}[share]
    Classifier(Protector(b"warmup-key-not-secret"), egress=EgressDetector()).warmup(formats)
    if share != "text":
        protect_warmup()                # masks, HMAC and raw values of the hits (kernels/mask.py, hmac.py)
        scan_warmup()                   # the archive splitter of flowaudit scan


def _text_formats_cached() -> bool:
    """Whether numba's cache holds the JSON and XML scanners (their index files: the cache folder
    is keyed by the kernels' sources, kernels/_jit.py), the largest compiles of the text share."""
    from .kernels import jsonscan, xmlscan

    try:
        return all(os.path.exists(d._cache._cache_file._index_path)
                   for d in (jsonscan.json_scan_run, xmlscan.xml_scan_run))
    except AttributeError:   # another numba's internals: compile side by side, to be safe
        return False


def cmd_warmup(args) -> int:
    """Compile (and cache) every kernel, so the first batch of a service is not slow.  With
    ``--jobs 2`` (the default on two or more CPUs) a second process compiles the text formats
    while this one compiles the EDI formats; then this process loads every kernel from the cache
    and compiles whatever is still missing there, so the cache ends complete either way."""
    import multiprocessing as mp
    import time

    t0 = time.perf_counter()
    jobs = args.jobs if args.jobs is not None else min(2, os.cpu_count() or 1)
    if jobs > 1 and not _text_formats_cached():   # a warm cache loads in a second: no second process
        child = mp.get_context("spawn").Process(target=_warm_share, args=("text",), name="flowaudit-warmup")
        child.start()
        try:
            _warm_share("edi")
        finally:
            child.join()
    _warm_share("all")
    print(f"kernels ready in {time.perf_counter() - t0:.1f} s")
    return 0


def _add_quarantine_parser(sub) -> None:
    from . import quarantine as q

    p = sub.add_parser("quarantine", help="list, show and reinject quarantined records",
                       description="Quarantined records are kept for re-processing, sealed (AES-256-GCM under "
                       "a key derived from the operator key) unless raw values were opted in. ROOT is a sink root "
                       "(its dataset=quarantine) or one quarantine Parquet file (flowaudit flows --quarantine).")
    qs = p.add_subparsers(dest="qcmd", required=True)
    lp = qs.add_parser("list", help="one line per quarantined record (no key needed)")
    lp.add_argument("root", metavar="ROOT")
    q.add_filters(lp)
    lp.add_argument("--format", choices=("table", "json"), default="table",
                    help="table (default) or json (one object per line)")
    lp.set_defaults(fn=q._run(q.cmd_list))
    sp = qs.add_parser("show", help="open one record with the operator key and print it safely")
    sp.add_argument("root", metavar="ROOT")
    sp.add_argument("source", metavar="SOURCE", help="topic (or input file) of the record")
    sp.add_argument("partition", metavar="PARTITION", type=bounded(int, -2**31, hi=2**31 - 1))
    sp.add_argument("offset", metavar="OFFSET", type=bounded(int, -2**63, hi=2**63 - 1))
    sp.add_argument("--hex", action="store_true", help="print the value as a hexdump (default: escaped text "
                    "for UTF-8 without NUL bytes, else a hexdump)")
    sp.add_argument("--raw-out", metavar="FILE", help="write the value's exact bytes to FILE (mode 0640, "
                    "never overwritten) instead of printing it")
    q.add_key_flags(sp)
    sp.set_defaults(fn=q._run(q.cmd_show))
    rp = qs.add_parser("reinject", help="produce quarantined records (original keys) back to Kafka, e.g. after "
                       "a fix, and check their delivery",
                       description="Every selected record is opened first; then each is produced with its "
                       "original key (header flowaudit-reinjected-from = source/partition/offset) to its "
                       "original topic and partition, or to --topic. Exit 0 only when every record was "
                       "delivered.")
    rp.add_argument("root", metavar="ROOT")
    rp.add_argument("--bootstrap", metavar="HOST:PORT",
                    help="Kafka bootstrap servers [env FLOWAUDIT_KAFKA_BOOTSTRAP_SERVERS]")
    rp.add_argument("--topic", metavar="T", help="produce to T (default: each record's original topic)")
    q.add_filters(rp)
    rp.add_argument("--dry-run", action="store_true", help="open the records and count them; send nothing")
    rp.add_argument("--timeout", type=bounded(float, 0, inclusive=False), default=30.0, metavar="S",
                    help="delivery wait (default 30 s)")
    q.add_key_flags(rp)
    rp.set_defaults(fn=q._run(q.cmd_reinject))


# Commands whose parsers build without pyarrow or numba.  For one of them, the parsers of the
# others, whose modules import those libraries, are left out: ``flowaudit collect`` (a long-running
# UDP -> Kafka relay) then runs without the ~120 MB they take.  A test checks the set.
_LIGHT = frozenset({"demo", "stream", "collect", "synth", "warmup", "audit", "fuzz", "report"})


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line; ``command``: the one being run (None: every command, as ``--help`` lists)."""
    full = command not in _LIGHT
    ap = argparse.ArgumentParser(prog="flowaudit", description="Audit a seaport's logistics data flows: "
                                 "which sensitive data moves, and where it goes.")
    ap.add_argument("--version", action="version", version=f"flowaudit {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("demo", help="embedded broker + synthetic port traffic + stream service, then a summary")
    p.add_argument("--count", type=bounded(int, 1), default=100_000, metavar="N",
                   help="synthetic messages to produce (default 100000)")
    p.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    p.add_argument("--out", default="demo-out", help="Parquet output root (default ./demo-out); a root an earlier "
                   "demo wrote is cleared first, any other non-empty folder refused")
    p.add_argument("--partitions", type=bounded(int, 1), default=3, metavar="N",
                   help="partitions per topic (default 3)")
    p.add_argument("--metrics-port", type=bounded(int, 0, hi=65535), default=9464, metavar="PORT",
                   help="Prometheus port while running, 0 = off")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("stream", help="consume the configured topics, classify, write Parquet, serve metrics")
    _add_config_flags(p)
    p.add_argument("--until-drained", action="store_true",
                   help="stop once every partition is at its end (members of one group: their own "
                        "partitions, and the group's commits at the end of the others); exit 4 after "
                        "kafka.drain_stall_s without progress [env FLOWAUDIT_KAFKA_DRAIN_STALL_S]")
    p.add_argument("--max-seconds", type=bounded(float, 0, inclusive=False), metavar="S", help="stop after S seconds")
    p.add_argument("--quiet", action="store_true", help="no summary on exit")
    p.add_argument("--workers", type=int, metavar="N",
                   help="N stream processes on this host, members of one consumer group, each with "
                        "metrics on --metrics-port + its index (default 1); worker 0 alone reads the "
                        "dns/eve/netflow/goflow/zeek_conn topics, so DNS answers meet the flows they name "
                        "[env FLOWAUDIT_KAFKA_WORKERS]")
    p.set_defaults(fn=cmd_stream)

    p = sub.add_parser("collect", help="listen for NetFlow/IPFIX export datagrams on UDP and forward them "
                       "to a Kafka topic keyed by exporter address",
                       description="Forward every UDP datagram unchanged to Kafka: key = exporter IP address, "
                       "headers exporter, exporter_port, received_ns. Settings come from the same model as "
                       "`stream` (TOML file, FLOWAUDIT_* environment, flags); the producer gets "
                       "kafka.bootstrap_servers and kafka.extra (security.protocol, sasl.*, ssl.*, ...). "
                       "SIGTERM/Ctrl-C drains the socket, flushes and exits 0.")
    p.add_argument("--config", metavar="FILE", help="TOML settings file [env FLOWAUDIT_CONFIG]")
    p.add_argument("--bootstrap", metavar="HOST:PORT",
                   help="Kafka bootstrap servers (default 127.0.0.1:9092) [env FLOWAUDIT_KAFKA_BOOTSTRAP_SERVERS]")
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="address to listen on (default 0.0.0.0:2055) [env FLOWAUDIT_COLLECT_LISTEN]")
    p.add_argument("--topic", help="Kafka topic (default netflow) [env FLOWAUDIT_COLLECT_TOPIC]")
    p.add_argument("--sockets", type=int, metavar="N",
                   help="receiving sockets/threads bound with SO_REUSEPORT (default 1) [env FLOWAUDIT_COLLECT_SOCKETS]")
    p.add_argument("--rcvbuf", type=int, metavar="BYTES",
                   help="socket receive buffer (default 64 MiB; capped by net.core.rmem_max unless CAP_NET_ADMIN) "
                        "[env FLOWAUDIT_COLLECT_RCVBUF_BYTES]")
    p.add_argument("--max-seconds", type=bounded(float, 0, inclusive=False), metavar="S", help="stop after S seconds")
    p.add_argument("--stats-every", type=bounded(float, 0, inclusive=False), metavar="S", help="print counters as JSON every S seconds")
    p.set_defaults(fn=cmd_collect)

    p = sub.add_parser("synth", help="deterministic synthetic port traffic with ground-truth labels",
                       description="Write one file per message plus labels.jsonl (--out), produce to Kafka "
                       "(--bootstrap), or write a labelled Parquet archive (--dump DIR): the messages in the flat "
                       "(Kafka Connect sink) and Redpanda Iceberg layouts, the flows (flowaudit flows schema and "
                       "goflow2's), a Zeek DNS log, the zone policy and watchlist, and labels.json with the "
                       "exposures a batch audit must find (README: Synthetic archives).")
    p.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    p.add_argument("--count", "--messages", dest="count", type=bounded(int, 0), default=1000, metavar="N",
                   help="messages to generate (default 1000; --dump adds the exposure scenario's 12)")
    p.add_argument("--bad-fraction", type=bounded(float, 0, hi=1), default=None, metavar="F",
                   help="share of undecodable messages (default 0; 0.01 with --dump)")
    p.add_argument("--out", type=out_path("folder"), default="synth-out", help="folder for files and labels.jsonl")
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="produce to Kafka instead of writing files")
    p.add_argument("--partitions", type=bounded(int, 1), default=3, metavar="N",
                   help="partitions per topic when producing or dumping (default 3)")
    p.add_argument("--dump", metavar="DIR", help="write a labelled Parquet archive to DIR (which must not exist or be "
                   "empty; written beside it and renamed into place when complete)")
    p.add_argument("--files", type=bounded(int, 1), default=4, metavar="K",
                   help="with --dump: files per topic partition and of the flow archive, by record time (default 4)")
    p.add_argument("--row-group", type=bounded(int, 1), default=4096, metavar="R", help="with --dump: rows per row group (default 4096)")
    p.add_argument("--layouts", default="flat,redpanda", metavar="L,...",
                   help="with --dump: message archive layouts, flat and/or redpanda (default flat,redpanda)")
    p.add_argument("--start", metavar="ISO", help="with --dump: the first record time, ISO 8601, UTC unless given "
                   "(default 2026-03-01T05:00:00Z, 1970-01-01 .. 2200-01-01; the exposure scenario takes the first "
                   "whole hour after it)")
    p.add_argument("--hours", type=float, default=6.0, help="with --dump: hours of record time (default 6, at least 2, "
                   "at most 8784)")
    p.set_defaults(fn=cmd_synth)

    from . import fuzz, report
    from .audit import cli as audit_cli
    if full:
        from . import bench_cli, flows, scan
        from .detect import egress, findings_cli
        scan.add_parser(sub)
        flows.add_parsers(sub)
        egress.add_parser(sub)
        findings_cli.add_parser(sub)
    audit_cli.add_parser(sub)
    if full:
        bench_cli.add_parser(sub)
    fuzz.add_parser(sub)
    report.add_parser(sub)

    if full:
        _add_quarantine_parser(sub)
        from . import verify
        verify.add_parser(sub)

    p = sub.add_parser("warmup", help="compile and cache the numba kernels")
    p.add_argument("--jobs", type=bounded(int, 1), metavar="N", help="1: compile in this process only; 2 or more: two "
                   "processes side by side (default: 2 on two or more CPUs)")
    p.set_defaults(fn=cmd_warmup)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in COMMANDS:
        # the Arrow allocator of the long-running commands (flowaudit/memory.py), chosen before the
        # parser imports pyarrow, so that Arrow's own C++ default is the same pool (scan of the 64 MiB
        # bench archive: 492-496 MB peak against 529-535 MB with mimalloc, pyarrow's default)
        preselect_arrow_pool(default=COMMANDS[command][1])
    args = build_parser(command).parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format=f"%(asctime)s {worker_tag()}%(name)s %(levelname)s %(message)s")
    try:
        return args.fn(args)
    except ConfigError as exc:
        print(f"flowaudit: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader of stdout went away (`flowaudit findings ROOT | head`): stop as a command
        # killed by SIGPIPE does (128 + 13), without a traceback, and without Python's second
        # error when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        bad = _damaged_parquet(args, exc)
        if not bad:
            raise
        for path, why in bad[:10]:
            print(f"flowaudit {args.cmd}: {path}: a damaged Parquet file ({why}); move it aside or restore it, "
                  f"then run again", file=sys.stderr)
        if len(bad) > 10:
            print(f"flowaudit {args.cmd}: {len(bad) - 10} more damaged Parquet file(s)", file=sys.stderr)
        return 2


def _damaged_parquet(args, exc: Exception) -> list[tuple[str, str]]:
    """After an Arrow error in a command that reads a root (or an audit's input folders): the
    Parquet files under them whose footer does not open, with why (Arrow's own message often
    names no file).  Empty: not that, the error is raised as it is."""
    arrow = sys.modules.get("pyarrow")
    # (a damaged page, its footer whole, is an OSError: "ZSTD decompression failed")
    if arrow is None or not isinstance(exc, (arrow.ArrowException, OSError)):
        return []
    from pathlib import Path

    from .sinks.parquet import unreadable

    files = []
    for folder in (Path(p) for p in [getattr(args, "root", None), *(getattr(args, "inputs", None) or [])] if p):
        found = [folder] if folder.is_file() else sorted(folder.rglob("*.parquet")) if folder.is_dir() else []
        # (hidden files: a writer's temp files, never read)
        files += [f for f in found if not any(x.startswith(".") for x in f.relative_to(folder).parts)]
    bad = unreadable(files)
    if not bad and files:      # every footer opens: a damaged page inside a file, then
        print(f"flowaudit {args.cmd}: {' '.join(str(exc).split())[:200]}; reading every page of "
              f"{len(files):,} Parquet file(s) to name the damaged one", file=sys.stderr)
        bad = unreadable(files, whole=True)
    return bad


if __name__ == "__main__":
    sys.exit(main())
