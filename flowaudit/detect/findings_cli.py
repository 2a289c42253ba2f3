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


def _audit_correlation(root: Path) -> dict | None:
    """What ``flowaudit audit`` correlated ROOT's findings with (``_audit/manifest.json``): the zone
    policy file, the findings window and look-back, the severity model.  A manifest from before
    they were recorded gives the policy from its versions and the window and look-back from its
    command line.  None: not an audit root."""
    try:
        m = json.loads((root / "_audit" / "manifest.json").read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict):
        return None
    def count(v, default, lo=0):     # a value of another type (a hand-edited manifest): the default
        return v if isinstance(v, int) and not isinstance(v, bool) and v >= lo else default

    def path(v):
        return v if isinstance(v, str) and v else None

    c = m.get("correlation")
    if isinstance(c, dict):
        return {"policy_file": path(c.get("policy_file")), "window_s": count(c.get("window_s"), 300, 1),
                "lookback_s": count(c.get("lookback_s"), 0), "severity_model": path(c.get("severity_model")),
                "episode_gap_s": count(c.get("episode_gap_s"), None)}
    cmd = [str(x) for x in m.get("command")] if isinstance(m.get("command"), list) else []
    pol = m.get("versions", {}).get("policy") if isinstance(m.get("versions"), dict) else None
    out = {"policy_file": path(pol.get("file")) if isinstance(pol, dict) else None, "window_s": 300,
           "lookback_s": 0, "severity_model": None}        # flowaudit audit's defaults
    for x, nxt in zip(cmd, cmd[1:] + [""]):
        for flag, key in (("--window", "window_s"), ("--lookback", "lookback_s")):
            v = x.removeprefix(flag + "=") if x.startswith(flag + "=") else nxt if x == flag else ""
            if v.isdigit():
                out[key] = int(v)
    return out


# (flag, settings section, key: the manifest's too) of what the audit correlated with
_FLAGS = (("policy", "egress", "policy_file"), ("window", "findings", "window_s"), ("lookback", "findings", "lookback_s"),
          ("severity_model", "findings", "severity_model"))
# what the audit recorded for its report's episodes: taken as _FLAGS are (with --episodes), but it
# changes no finding, so the hint below never names it
_EPISODE_FLAGS = (("episode_gap", "findings", "episode_gap_s"),)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return bool(a) == bool(b) and (not a or Path(a).resolve() == Path(b).resolve())
    return a == b


def _audit_defaults(audit: dict, args, settings, defaults) -> dict:
    """The audit's correlation settings this one takes: each the flags, the settings file and the
    environment leave at its default (a policy or model file the audit named must still exist)."""
    take: dict = {}
    for flag, section, key in _FLAGS + (_EPISODE_FLAGS if getattr(args, "episodes", False) else ()):
        v = audit.get(key)
        if getattr(args, flag) is not None or v in (None, "") or _same(v, getattr(getattr(defaults, section), key)):
            continue
        if getattr(getattr(settings, section), key) != getattr(getattr(defaults, section), key):
            continue
        if isinstance(v, str) and not Path(v).is_file():
            continue
        take.setdefault(section, {})[key] = v
    return take


def _audit_hint(root: Path, audit: dict, settings) -> str | None:
    """Where this correlation differs from the audit's in a setting that changes the findings (a
    flag given, or the audit's policy file gone), the flags that give the findings the audit
    wrote: without the policy's inventory, hosts are not named as applications or zones."""
    want, have = [], []
    for flag, section, key in _FLAGS:
        mine, theirs = getattr(getattr(settings, section), key), audit.get(key)
        if not _same(mine, theirs if theirs is not None else ""):
            name = _flag(flag)
            want += [name, str(theirs) if theirs not in (None, "") else "(none)"]
            have += [name, str(mine) if mine not in (None, "") else "(none)"]
    if not want:
        return None
    return (f"{root} was audited with {' '.join(want)}; this correlation uses {' '.join(have)}, so its hosts, "
            f"applications and windows may differ from the findings the audit wrote (pass the audit's flags to "
            f"match them)")


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


_EPISODE_CSV_COLS = ("severity", "score", "first_seen", "last_seen", "platform", "rule", "exposure", "entity",
                     "zones", "applications", "windows", "bytes", "bytes_scaled", "messages", "flows", "data_classes",
                     "finding_ids")


def _episodes_csv(episodes: list[dict]) -> str:
    def cell(name, v):
        if v is None:
            return ""
        if name == "data_classes":
            return ";".join(f"{x['data_class']}:{x['sensitivity']}:{x['occurrences']}" for x in v)
        return ";".join(v) if isinstance(v, list) else v

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_EPISODE_CSV_COLS)
    for e in episodes:
        w.writerow([cell(c, e[c]) for c in _EPISODE_CSV_COLS])
    return buf.getvalue()


def cmd_findings(args) -> int:
    from .chunked import correlate_chunked
    from .findings import SEV_RANK, format_episodes, format_table, select, worst_first, worst_rank, write_findings
    from .inventory import InventoryError
    from .inventory import load as load_inventory

    from ..config import ConfigError, Settings, load

    root = Path(args.root)
    if not root.is_dir():
        print(f"flowaudit: {root} is not a folder", file=sys.stderr)
        return 2
    from ..quarantine import QuarantineError, parse_range, parse_time

    if args.episode_gap is not None and not args.episodes:
        print("flowaudit: --episode-gap groups episodes: give it with --episodes", file=sys.stderr)
        return 2
    for flag in ("since", "until"):           # checked before the correlation, not after it
        try:
            if getattr(args, flag):
                parse_time(getattr(args, flag))
        except QuarantineError as e:
            print(f"flowaudit: --{flag}: {e}", file=sys.stderr)
            return 2
    try:
        parse_range(args.since, args.until)
    except QuarantineError as e:
        print(f"flowaudit: {e}", file=sys.stderr)
        return 2
    # the stream's settings model: file, FLOWAUDIT_* environment, then these flags
    over: dict = {}
    for flag, section, key in _FLAGS + _EPISODE_FLAGS:
        if getattr(args, flag) is not None:
            over.setdefault(section, {})[key] = getattr(args, flag)
    try:
        st = load(args.config, overrides=over)
        # an audit root is correlated as the audit correlated it, unless flags or settings say otherwise
        audit = _audit_correlation(root)
        take = _audit_defaults(audit, args, st, Settings()) if audit else {}
        if take:
            for section, kv in take.items():
                over.setdefault(section, {}).update(kv)
            st = load(args.config, overrides=over)
            flags = {key: _flag(flag) for flag, _s, key in _FLAGS + _EPISODE_FLAGS}
            given = " ".join(f"{flags[k]} {v}" for kv in take.values() for k, v in kv.items())
            print(f"flowaudit: {root} was audited with {given}: correlating with the same (its "
                  f"_audit/manifest.json; flags override)", file=sys.stderr)
        inv = load_inventory(st.egress.policy_file or None)
        model = _sev.load(st.findings.severity_model or None)
    except (ConfigError, InventoryError, _sev.SeverityModelError) as e:
        print(f"flowaudit: {e}", file=sys.stderr)
        return 2
    f = st.findings
    hint = _audit_hint(root, audit, st) if audit else None
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
    if args.platform and all_findings.num_rows:   # an empty answer says why when a name matches no finding
        have = sorted({str(x) for x in all_findings.column("platform").to_pylist()})
        absent = [p for p in dict.fromkeys(args.platform) if p.lower() not in {h.lower() for h in have}]
        if absent:
            print(f"flowaudit: no finding of platform {', '.join(absent)} under {root} (platforms with findings: "
                  f"{', '.join(have) or 'none'}; policy = zone-policy violations)", file=sys.stderr)
    if args.episodes:
        from ..report.data import episodes_of

        eps = episodes_of(t, st.findings.episode_gap_s)
        shown = eps[:args.top] if args.top else eps
        if args.format == "json":
            for e in shown:
                print(json.dumps(e, ensure_ascii=False))
        elif args.format == "csv":
            sys.stdout.write(_episodes_csv(shown))
        else:
            print(format_episodes(shown))
            more = f" (showing {len(shown)})" if len(shown) < len(eps) else ""
            print(f"{len(eps)} episode(s){more} of {t.num_rows} finding(s); {all_findings.num_rows} findings in all")
    else:
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
    from ..config import bounded

    p = sub.add_parser(
        "findings", help="which sensitive data reached which platform, from which host: worst first",
        description="Correlates the hits, messages and transfers under ROOT into findings (one per platform or "
        "policy rule x source host or application x event-time window) and prints them worst first. A root that "
        "flowaudit audit wrote is correlated with the audit's policy, window, look-back and severity model (its "
        "manifest) where no flag or setting gives them. Exit 1 with "
        "--fail-on when a finding that passes the filters reaches that severity; 2 on a usage or configuration "
        "error.")
    p.add_argument("root", metavar="ROOT", help="the stream's or an audit's Parquet root (dataset=transfers, hits, "
                   "messages)")
    p.add_argument("--since", metavar="TIME", help="findings seen at or after TIME (ISO 8601, UTC unless given)")
    p.add_argument("--until", metavar="TIME", help="findings seen before TIME")
    p.add_argument("--platform", action="append", metavar="P", help="only this platform, in any case (repeatable; "
                   "policy = zone-policy rules); a name no finding has is said on stderr")
    p.add_argument("--severity", choices=_sev.LEVELS, help="only findings at or above this severity")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="table (default), json (one object per line) or csv")
    p.add_argument("--top", type=bounded(int, 0), default=0, metavar="N", help="print at most N findings (default all)")
    p.add_argument("--episodes", action="store_true",
                   help="print episodes instead: the windows of one platform or rule, exposure and source with at most "
                   "--episode-gap of quiet between them, one row each (as the report's); --top counts episodes")
    p.add_argument("--episode-gap", type=bounded(int, 0), metavar="S",
                   help="with --episodes: the most quiet between two windows of one episode (default: the audit's, "
                   "else 3600 s) [env FLOWAUDIT_FINDINGS_EPISODE_GAP_S]")
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
