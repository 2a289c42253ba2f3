"""``flowaudit findings ROOT``: the findings under a root, worst first (table, JSON lines or CSV).

It correlates the stored ``transfers``, ``hits`` and ``messages`` of every partition itself, so
it sees each finding whole however many stream members wrote the root (the members' own
findings files are merged by :func:`flowaudit.detect.windows.read_findings`).

Kept apart from :mod:`flowaudit.detect.findings` so that building the command line does not
import polars.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

from . import severity as _sev
from ..datasets import FINDINGS


def _audit_hint(root: Path, policy: str | None, window_s: int) -> str | None:
    """Where ROOT was written by ``flowaudit audit`` with another zone policy or findings window
    than this correlation's (its manifest records both), the flags that give the findings the
    audit wrote: without the policy's inventory, hosts are not named as applications or zones."""
    try:
        m = json.loads((root / "_audit" / "manifest.json").read_bytes())
    except (OSError, ValueError):
        return None
    cmd = [str(x) for x in m.get("command") or []]
    audit_policy = ((m.get("versions") or {}).get("policy") or {}).get("file")
    audit_window = 300                  # flowaudit audit's default
    for x, nxt in zip(cmd, cmd[1:] + [""]):
        v = x.removeprefix("--window=") if x.startswith("--window=") else nxt if x == "--window" else ""
        if v.isdigit():
            audit_window = int(v)
    want = []
    if audit_policy and (not policy or Path(policy).resolve() != Path(audit_policy).resolve()):
        want += ["--policy", audit_policy]
    if audit_window != window_s:
        want += ["--window", str(audit_window)]
    if not want:
        return None
    return (f"{root} was audited with {' '.join(want)}; this correlation uses "
            f"{'--policy ' + policy if policy else 'no policy'} and --window {window_s}, so its hosts, applications "
            f"and windows may differ from the findings the audit wrote (pass the audit's flags to match them)")


def _jsonable(r: dict) -> dict:
    out = dict(r)
    out["samples"] = [dict(s, value_hmac=s["value_hmac"].hex()) for s in r["samples"] or []]
    return out


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    cols = [f.name for f in FINDINGS if f.name != "samples"]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols + ["samples"])
    for r in rows:
        vals = []
        for c in cols:
            v = r[c]
            if c == "data_classes":
                v = ";".join(f"{x['data_class']}:{x['sensitivity']}:{x['occurrences']}:{x['distinct_values']}"
                             for x in v or [])
            elif isinstance(v, list):
                v = ";".join(map(str, v))
            vals.append("" if v is None else v)
        vals.append(";".join(f"{s['source']}/{s['partition']}/{s['offset']}#{s['msg_index']} {s['location']} "
                             f"{s['value_masked']}" for s in r["samples"] or []))
        w.writerow(vals)
    return buf.getvalue()


def cmd_findings(args) -> int:
    from .chunked import correlate_chunked
    from .findings import SEV_RANK, format_table, select, worst_first, worst_rank, write_findings
    from .inventory import InventoryError
    from .inventory import load as load_inventory

    from ..config import ConfigError, load

    root = Path(args.root)
    if not root.is_dir():
        print(f"flowaudit: {root} is not a folder", file=sys.stderr)
        return 2
    from ..quarantine import QuarantineError, parse_time

    for flag in ("since", "until"):           # checked before the correlation, not after it
        try:
            if getattr(args, flag):
                parse_time(getattr(args, flag))
        except QuarantineError as e:
            print(f"flowaudit: --{flag}: {e}", file=sys.stderr)
            return 2
    # the stream's settings model: file, FLOWAUDIT_* environment, then these flags
    over: dict = {}
    for flag, section, key in (("window", "findings", "window_s"), ("lookback", "findings", "lookback_s"),
                               ("severity_model", "findings", "severity_model"), ("policy", "egress", "policy_file")):
        if getattr(args, flag) is not None:
            over.setdefault(section, {})[key] = getattr(args, flag)
    try:
        st = load(args.config, overrides=over)
        inv = load_inventory(st.egress.policy_file or None)
        model = _sev.load(st.findings.severity_model or None)
    except (ConfigError, InventoryError, _sev.SeverityModelError) as e:
        print(f"flowaudit: {e}", file=sys.stderr)
        return 2
    f = st.findings
    hint = _audit_hint(root, st.egress.policy_file or None, f.window_s)
    if hint:
        print(f"flowaudit: {hint}", file=sys.stderr)
    # a window at a time, on two threads: memory follows a window, not the root
    all_findings = correlate_chunked(root, window_ns=f.window_s * 1_000_000_000, lookback_ns=f.lookback_s * 1_000_000_000,
                                     inventory=inv, model=model, threads=min(2, os.cpu_count() or 1))
    if args.write:
        c = write_findings(root, all_findings)
        print(f"findings dataset: {c['written']} file(s) written, {c['kept']} unchanged, {c['removed']} removed "
              f"under {root / 'dataset=findings'}", file=sys.stderr)
    try:
        t = worst_first(select(all_findings, since=args.since, until=args.until, platforms=args.platform,
                               severity=args.severity))
    except ValueError as e:
        print(f"flowaudit: {e}", file=sys.stderr)
        return 2
    rows = t.slice(0, args.top).to_pylist() if args.top else t.to_pylist()
    if args.format == "json":
        for r in rows:
            print(json.dumps(_jsonable(r), ensure_ascii=False))
    elif args.format == "csv":
        sys.stdout.write(_csv(rows))
    else:
        print(format_table(rows))
        more = f" (showing {len(rows)})" if len(rows) < t.num_rows else ""
        print(f"{t.num_rows} finding(s){more}; {all_findings.num_rows} in all")
    if args.fail_on and worst_rank(t) >= SEV_RANK[args.fail_on]:
        return 1
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "findings", help="which sensitive data reached which platform, from which host: worst first",
        description="Correlates the hits, messages and transfers under ROOT into findings (one per platform or "
        "policy rule x source host or application x event-time window) and prints them worst first. Exit 1 with "
        "--fail-on when a finding that passes the filters reaches that severity; 2 on a usage or configuration "
        "error.")
    p.add_argument("root", metavar="ROOT", help="the stream's Parquet root (dataset=transfers, hits, messages)")
    p.add_argument("--since", metavar="TIME", help="findings seen at or after TIME (ISO 8601, UTC unless given)")
    p.add_argument("--until", metavar="TIME", help="findings seen before TIME")
    p.add_argument("--platform", action="append", metavar="P", help="only this platform (repeatable; policy = "
                   "zone-policy rules)")
    p.add_argument("--severity", choices=_sev.LEVELS, help="only findings at or above this severity")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="table (default), json (one object per line) or csv")
    p.add_argument("--top", type=int, default=0, metavar="N", help="print at most N findings (default all)")
    p.add_argument("--fail-on", choices=_sev.LEVELS, metavar="SEVERITY",
                   help="exit 1 when a finding that passes the filters reaches SEVERITY (info, low, medium, high, "
                   "critical)")
    p.add_argument("--write", action="store_true", help="also write the findings dataset under ROOT "
                   "(one file per window, deterministic names: a re-run replaces or keeps them; the stream "
                   "members' own files of the windows are replaced too)")
    p.add_argument("--config", metavar="FILE", help="TOML settings file, the stream's [env FLOWAUDIT_CONFIG]")
    p.add_argument("--window", type=int, metavar="S",
                   help="event-time window, the stream's too (default 300 s) [env FLOWAUDIT_FINDINGS_WINDOW_S]")
    p.add_argument("--lookback", type=int, metavar="S", help="also count the data a host handled this long before a "
                   "flow-borne window (default 0) [env FLOWAUDIT_FINDINGS_LOOKBACK_S]")
    p.add_argument("--policy", metavar="FILE",
                   help="zone policy with the application inventory ([[applications]]) [env "
                   "FLOWAUDIT_EGRESS_POLICY_FILE]")
    p.add_argument("--severity-model", metavar="FILE",
                   help="operator overrides of schemas/severity.toml [env FLOWAUDIT_FINDINGS_SEVERITY_MODEL]")
    p.set_defaults(fn=cmd_findings)
