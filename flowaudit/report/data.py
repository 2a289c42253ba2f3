"""The audit report's data: one dict (what ``report.json`` holds) built from a ROOT's datasets.

Sections, in the order a reader needs them:

* ``headline``: the one-line verdict on LOGINK, then the others;
* ``verdicts``: one row per watchlisted platform (LOGINK first), then one per zone-policy rule
  family; a platform or rule without a finding says so ("not exposed", "no violation");
* ``findings``: counts per severity and the worst findings with their evidence (masked samples
  with topic / file, partition, offset);
* ``charts``: the series the charts draw (bytes and messages per platform over time, classes per
  platform, host x platform, policy violations per zone over time, rows per time bin);
* ``coverage``: what was read, so that "no finding" means something (inputs, rows, time span and
  its gaps, quarantine by reason, formats);
* ``method``: catalogue, watchlist, policy, severity model and schema versions (the manifest's,
  and those the rows carry), the command line and the engine.

Every number comes from the Parquet files under ROOT; datasets are read column by column and
batch by batch, so a long audit's ``messages`` is never held in memory whole.  Sensitive values
appear only as the findings store them: masked, with their HMAC.
"""
from __future__ import annotations

import json
import shlex
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds

from .. import __version__
from ..datasets import FINDINGS, NAME_RULES, SCHEMA_VERSION, checked_parquet
from ..detect import severity as _sev
from ..detect import watchlist as _wl
from ..detect.findings import SEV_RANK, worst_first

REPORT_FORMAT = 4          # 2: findings.episodes, the evidence given per episode; 3: coverage.dns_logs; 4: verdicts[].names_seen
MAX_FINDINGS = 500        # findings listed (table and report.json); the rest are counted
MAX_EVIDENCE = 50         # episodes shown with their evidence (samples)
EPISODE_SAMPLES = 40      # samples an episode keeps in report.json (its findings' pooled, a class at a time)
MAX_BINS = 48             # time bins of a chart
MAX_HOSTS = 25            # rows of the host x platform chart
HOUR_NS = 3_600_000_000_000
EPISODE_GAP_S = 3600      # default most quiet between two windows of one episode (or one window, if longer)
NOT_RECORDED = "not recorded"
PROHIBITED = "LOGINK"     # the platform the headline is about (46 U.S.C. 50309)
_BIN_CHOICES_S = (300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400,
                  28 * 86400)
_SEV_ORDER = tuple(reversed(_sev.LEVELS))   # critical first
_SENS_RANK = {"high": 3, "medium": 2, "low": 1}
_VERSION_KEYS = ("catalog", "watchlist", "policy", "severity_model", "schema")


# ------------------------------------------------------------------------------ small helpers
def iso(ns: int | None) -> str | None:
    """ISO 8601 UTC of a nanosecond time (None for unknown or 0)."""
    if not ns:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dataset(root: Path, name: str) -> ds.Dataset | None:
    base = root / f"dataset={name}"
    if not base.is_dir():
        return None
    return ds.dataset(base, format=checked_parquet(), partitioning="hive")   # hidden temp files are skipped


def _batches(d: ds.Dataset | None, columns: list[str]):
    """Record batches of the columns the dataset has (dictionaries decoded), one at a time."""
    if d is None:
        return
    cols = [c for c in columns if c in d.schema.names]
    for b in d.to_batches(columns=cols, batch_size=1 << 20):
        if b.num_rows:
            yield _frame(pa.Table.from_batches([b]), columns)


def _frame(t: pa.Table, columns: list[str]) -> pl.DataFrame:
    """A polars frame of ``t`` with dictionary columns decoded; columns ``t`` lacks read as null."""
    out = {}
    for name in columns:
        if name not in t.column_names:
            out[name] = pa.nulls(t.num_rows)
            continue
        col = t.column(name)
        if pa.types.is_dictionary(col.type):
            col = pa.chunked_array([c.dictionary_decode() for c in col.chunks], col.type.value_type)
        out[name] = col
    return pl.from_arrow(pa.table(out))


# the manifest's fields the report reads, and the kind of each: a field of another kind (a
# hand-edited or foreign manifest) is shown as not recorded, and the report says so
_MANIFEST_KINDS = {"command": (list, str), "engine": str, "workers": int, "started": str, "finished": str,
                   "since": str, "until": str, "inputs": list, "tables": list, "carried_over": dict,
                   "versions": dict, "correlation": dict, "dns_logs": list}


def _load_manifest(root: Path, manifest: dict | None) -> tuple[dict, str, str | None]:
    """(manifest, where it came from, why it could not be read, or which fields were not of their
    kind)."""
    if manifest is not None:
        m, src = dict(manifest), "given"
    else:
        p = root / "_audit" / "manifest.json"
        if not p.is_file():
            return {}, NOT_RECORDED, None
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            return {}, str(p), f"{p} could not be read ({type(e).__name__}): the run is not recorded"
        if not isinstance(m, dict):
            return {}, str(p), f"{p} is not a JSON object: the run is not recorded"
        src = str(p)
    odd = sorted(k for k, kind in _MANIFEST_KINDS.items() if m.get(k) is not None and
                 (not isinstance(m[k], kind) or isinstance(m[k], bool)))
    for k in odd:
        del m[k]
    if isinstance(m.get("inputs"), list):
        m["inputs"] = [i for i in m["inputs"] if isinstance(i, dict)]
    if isinstance(m.get("tables"), list):
        m["tables"] = [t for t in m["tables"] if isinstance(t, str)]
    if isinstance(m.get("dns_logs"), list):
        m["dns_logs"] = [x for x in m["dns_logs"] if isinstance(x, dict)]
    why = (f"the manifest ({src}) has {', '.join(odd)} of another kind than an audit writes: shown as not recorded"
           if odd else None)
    return m, src, why


def _pick_bin(lo_ns: int, hi_ns: int, min_s: int = 0) -> int:
    """Bin length (s) so that [lo, hi] spans at most MAX_BINS bins, at least ``min_s``."""
    span_s = max(1, (hi_ns - lo_ns) // 1_000_000_000 + 1)
    for b in _BIN_CHOICES_S:
        if b >= min_s and span_s / b <= MAX_BINS:
            return b
    return max(min_s, -(-span_s // MAX_BINS))


# ------------------------------------------------------------------------------ findings
def _read_findings(root: Path) -> tuple[pa.Table, dict]:
    """The findings dataset (deduplicated by finding_id), or the findings computed now when ROOT
    has none but has transfers (noted in the method)."""
    d = _dataset(root, "findings")
    if d is not None:
        # the stream's members write a file each per window: merged, one row per finding_id
        from ..detect.windows import read_findings

        t, merged = read_findings(root)
        origin = {"source": "dataset", "files": merged["files"]}
    elif (root / "dataset=transfers").is_dir():
        from ..detect.chunked import correlate_chunked

        t = correlate_chunked(root, window_ns=300 * 1_000_000_000)
        origin = {"source": "computed", "files": 0,
                  "note": "ROOT has no findings dataset: the report correlated its transfers, hits and messages "
                          "(300 s windows, no application inventory, so flow-borne findings list no classes)"}
    else:
        t = FINDINGS.empty_table()
        origin = {"source": "absent", "files": 0, "note": "ROOT has neither findings nor transfers"}
    rows_read = t.num_rows
    if t.num_rows:
        # the stream re-emits an exposure that stopped as "closed" under the same finding_id: one row each
        ids = t.column("finding_id").to_pylist()
        status = [str(s) for s in t.column("status").to_pylist()]
        best: dict[str, int] = {}
        for i, (fid, st) in enumerate(zip(ids, status)):
            j = best.get(fid)
            if j is None or (st == "closed" and status[j] != "closed"):
                best[fid] = i
        if len(best) < t.num_rows:
            t = t.take(pa.array(sorted(best.values())))
        t = worst_first(t)
    origin["rows_read"] = rows_read
    origin["duplicates_dropped"] = rows_read - t.num_rows
    return t, origin


def _findings_frame(t: pa.Table) -> pl.DataFrame:
    cols = ["finding_id", "status", "window_start_ns", "window_end_ns", "first_seen_ns", "last_seen_ns",
            "correlation", "exposure", "platform", "rule", "entity", "src_host", "src_zone", "application",
            "bytes", "bytes_scaled", "flows", "messages", "data_classes", "occurrences", "severity", "score"]
    f = _frame(t, cols)
    return f.with_columns(
        t_ns=pl.coalesce(pl.col("first_seen_ns"), pl.when(pl.col("window_start_ns") > 0).then(pl.col("window_start_ns"))),
        rank=pl.col("severity").replace_strict(SEV_RANK, default=0, return_dtype=pl.Int32),
        bytes_scaled=pl.col("bytes_scaled").cast(pl.Int64), bytes=pl.col("bytes").cast(pl.Int64))


def _finding_row(r: dict) -> dict:
    """One finding for report.json and the HTML: times as ISO, HMACs as hex, never a raw value."""
    out = {k: r.get(k) for k in ("finding_id", "severity", "score", "status", "platform", "rule", "correlation",
                                 "exposure", "entity", "src_host", "src_zone", "application", "bytes",
                                 "bytes_scaled", "flows", "messages", "occurrences", "distinct_values",
                                 "additional_occurrences")}
    for k in ("window_start_ns", "window_end_ns", "first_seen_ns", "last_seen_ns"):
        out[k] = r.get(k)
        out[k.replace("_ns", "")] = iso(r.get(k))
    for k in ("indicators", "seen_where", "topics", "destinations", "severity_reasons", "basis"):
        out[k] = list(r.get(k) or [])
    out["data_classes"] = [dict(c) for c in r.get("data_classes") or []]
    out["samples"] = [{"source": s["source"], "partition": s["partition"], "offset": s["offset"],
                       "msg_index": s["msg_index"], "data_class": s["data_class"], "location": s["location"],
                       "value_masked": s["value_masked"],
                       "value_hmac": (s["value_hmac"] or b"").hex()} for s in r.get("samples") or []]
    out["versions"] = {k: r.get(k) for k in ("catalog_version", "watchlist_version", "policy_version",
                                             "severity_version", "schema_version")}
    return out


# ------------------------------------------------------------------------------ verdicts
def _platform_order(wl: _wl.CompiledWatchlist | None, model: _sev.SeverityModel, seen: list[str]) -> list[dict]:
    """Watchlisted platforms, LOGINK first, then by tier and watchlist severity; then platforms
    the findings name that the watchlist read here does not (an operator file's)."""
    tier_rank = {"prohibited": 0, "watchlist": 1, "informational": 2}
    wl_rank = {s: i for i, s in enumerate(reversed(_wl.SEVERITIES))}
    out = []
    plats = dict(wl.platforms) if wl is not None else {}
    for name in seen:
        if name not in plats:
            plats[name] = None
    for name, p in plats.items():
        tier = model.platform_tier.get(name, "watchlist")
        if p is not None and p.severity == "info" and tier == "watchlist":
            tier = "informational"
        out.append({"name": name, "tier": tier,
                    "watchlist_severity": p.severity if p else None,
                    "description": p.description if p else "named by the findings; not in the watchlist read "
                                                             "by the report (an operator file?)",
                    "source": p.source if p else None,
                    "alert_zone_kinds": list(p.alert_zone_kinds) if p else [],
                    "in_watchlist": p is not None,
                    "_order": (name != PROHIBITED, tier_rank.get(tier, 1), wl_rank.get(p.severity, 9) if p else 9,
                               name.lower())})
    out.sort(key=lambda x: x.pop("_order"))
    return out


def _rule_family(model: _sev.SeverityModel, rule: str) -> str:
    if rule in model.rules:
        return rule
    head = rule.split(":", 1)[0]
    return f"{head}:*" if ":" in rule and f"{head}:*" in model.rules else rule


_RULE_TEXT = {
    "ot_zone_to_internet": "crane or scanner (OT zone) talking to the internet",
    "internet_to_ot_zone": "the internet reaching into an OT zone",
    "remote_access:*": "remote access (RDP, SSH, VNC, TeamViewer ...) across a zone boundary",
    "ot_protocol:*": "OT protocols (Modbus, S7comm ...) across zones",
    "silent_zone": "a zone that should report and went silent",
    "zone_not_allowed": "a flow between zones the policy does not allow",
}


def _summarize(sub: pl.DataFrame) -> dict:
    """Counts and volume of a group of findings."""
    if sub.height == 0:
        return {"findings": 0, "worst_severity": None, "by_severity": {}, "first_seen": None, "last_seen": None,
                "first_seen_ns": None, "last_seen_ns": None, "bytes": None, "bytes_scaled": None, "messages": 0,
                "flows": 0, "entities": [], "data_classes": [], "exposure": {}, "unknown_time": 0}
    by_sev = {s: int(n) for s, n in sub.group_by("severity").len().iter_rows() if n}
    worst = max(by_sev, key=lambda s: SEV_RANK.get(s, 0))
    first = sub["t_ns"].min()
    last = sub.select(pl.coalesce("last_seen_ns", "t_ns")).to_series().max()
    classes = _classes(sub)
    b, bs = sub["bytes"], sub["bytes_scaled"]
    return {"findings": sub.height, "worst_severity": worst,
            "by_severity": {s: by_sev[s] for s in _SEV_ORDER if s in by_sev},
            "first_seen_ns": first, "last_seen_ns": last, "first_seen": iso(first), "last_seen": iso(last),
            "bytes": int(b.sum()) if b.null_count() < b.len() else None,
            "bytes_scaled": int(bs.sum()) if bs.null_count() < bs.len() else None,
            "messages": int(sub["messages"].sum()), "flows": int(sub["flows"].sum()),
            "entities": sorted(sub["entity"].unique().to_list()),
            "data_classes": classes,
            "exposure": {k: int(v) for k, v in sub.group_by("exposure").len().sort("exposure").iter_rows()},
            "unknown_time": int(sub["t_ns"].null_count())}


def _classes(sub: pl.DataFrame) -> list[dict]:
    """Data classes over findings: occurrences summed, findings carrying the class, most sensitive first."""
    x = sub.select("finding_id", "data_classes").explode("data_classes").drop_nulls("data_classes")
    if x.height == 0:
        return []
    x = x.unnest("data_classes")
    g = (x.group_by("data_class").agg(sensitivity=pl.col("sensitivity").first(),
                                      occurrences=pl.col("occurrences").sum(),
                                      findings=pl.col("finding_id").n_unique())
         .with_columns(srank=pl.col("sensitivity").replace_strict(_SENS_RANK, default=0, return_dtype=pl.Int32))
         .sort(["srank", "occurrences", "data_class"], descending=[True, True, False]))
    return [{"data_class": r["data_class"], "sensitivity": r["sensitivity"], "occurrences": int(r["occurrences"]),
             "findings": int(r["findings"])} for r in g.iter_rows(named=True)]


_EPISODE_KEY = ["platform", "rule", "exposure", "entity"]


def _episodes(F: pl.DataFrame, number_of: dict[str, int], gap_s: int = EPISODE_GAP_S) -> list[dict]:
    """Findings merged into episodes: the windows of one platform or rule, exposure and source
    that follow each other with at most ``gap_s`` (an hour by default; one window, if longer) of
    quiet between them: a gateway polling LOGINK all morning is one episode, not 37 rows.  Volume
    and class occurrences are summed over the episode's findings; the worst severity and highest
    score are the episode's.
    ``number_of``: finding_id -> its number in the report's findings list (listed ones only)."""
    if F.height == 0:
        return []
    start = pl.coalesce(pl.when(pl.col("window_start_ns") > 0).then(pl.col("window_start_ns")), "t_ns")
    end = pl.coalesce(pl.when(pl.col("window_end_ns") > 0).then(pl.col("window_end_ns")), "last_seen_ns", start)
    x = (F.with_columns(_s=start, _e=end)
         .sort([*_EPISODE_KEY, "_s"], nulls_last=True)
         .with_columns(_gap=(pl.col("_s") - pl.col("_e").shift(1).over(_EPISODE_KEY))
                       > pl.max_horizontal(pl.lit(int(gap_s) * 1_000_000_000), (pl.col("_e") - pl.col("_s")).shift(1)
                                           .over(_EPISODE_KEY)))
         .with_columns(episode=pl.col("_gap").fill_null(True).cum_sum().over(_EPISODE_KEY)))
    out = []
    for _, sub in x.group_by([*_EPISODE_KEY, "episode"], maintain_order=True):
        s = _summarize(sub)
        best = sub.sort(["rank", "score"], descending=True).row(0, named=True)
        ids = sub["finding_id"].to_list()                       # in time order
        listed = sorted(n for n in (number_of.get(f) for f in ids) if n)
        out.append({**{k: best[k] for k in _EPISODE_KEY}, "severity": s["worst_severity"],
                    "score": float(sub["score"].max()), "rank": best["rank"], "windows": sub.height,
                    "zones": sorted(z for z in sub["src_zone"].unique().to_list() if z),
                    "applications": sorted(a for a in sub["application"].unique().to_list() if a),
                    "first_seen_ns": s["first_seen_ns"], "last_seen_ns": s["last_seen_ns"],
                    "first_seen": s["first_seen"], "last_seen": s["last_seen"],
                    "bytes": s["bytes"], "bytes_scaled": s["bytes_scaled"], "messages": s["messages"],
                    "flows": s["flows"], "data_classes": s["data_classes"], "finding_ids": ids, "findings": listed,
                    "findings_not_listed": sub.height - len(listed)})
    out.sort(key=lambda e: (-e["rank"], -e["score"], -(e["bytes_scaled"] or 0), e["first_seen_ns"] or 0,
                            e["platform"], e["entity"]))
    for e in out:
        del e["rank"]
    return out


def _add_evidence(episodes: list[dict], findings: pa.Table, built: dict[str, dict]) -> None:
    """Give each episode its findings' evidence, pooled: indicators, where seen, topics,
    destinations and basis (each once, in order), the worst finding's severity reasons, and the
    samples of every finding, a class at a time (_classes' order: most sensitive first).  ``built``:
    the report rows already made (finding_id -> row); the others are made here."""
    where = {fid: i for i, fid in enumerate(findings.column("finding_id").to_pylist())}
    for e in episodes:
        rest = [f for f in e["finding_ids"] if f not in built]
        if rest:
            built = {**built, **{r["finding_id"]: r for r in map(_finding_row, findings.take(
                pa.array([where[f] for f in rest])).to_pylist())}}
        rows = [built[f] for f in e["finding_ids"]]
        for k in ("indicators", "seen_where", "topics", "destinations", "basis", "correlation"):
            e[k] = list(dict.fromkeys(x for r in rows for x in (r[k] if isinstance(r[k], list) else [r[k]]) if x))
        worst = max(rows, key=lambda r: (SEV_RANK.get(r["severity"], 0), r["score"] or 0))
        e["severity_reasons"] = worst["severity_reasons"]
        # a sample of each class in turn (the classes most sensitive first, each in time order), so
        # the first rows shown cover every class the episode exposed
        by_class: dict[str, list] = {c["data_class"]: [] for c in e["data_classes"]}
        for r in rows:
            for smp in r["samples"]:
                by_class.setdefault(smp["data_class"], []).append(smp)
        turns = [lst for lst in by_class.values() if lst]
        e["samples"] = [lst[i] for i in range(max(map(len, turns), default=0)) for lst in turns
                        if i < len(lst)][:EPISODE_SAMPLES]
        e["occurrences"] = sum(r["occurrences"] or 0 for r in rows)


def episodes_of(findings: pa.Table, gap_s: int = EPISODE_GAP_S) -> list[dict]:
    """The episodes of a findings table (:func:`_episodes`), worst first; ``finding_ids`` name
    each one's findings in time order."""
    eps = _episodes(_findings_frame(findings), {}, gap_s)
    for e in eps:
        del e["findings"], e["findings_not_listed"]     # the report's numbering
    return eps


def _verdicts(F: pl.DataFrame, wl, model, names: dict) -> list[dict]:
    """``names``: rule (``dns_lookup``, ``name_seen``) -> platform -> the transfers of names seen."""
    out = []
    plat_f = F.filter(pl.col("platform") != "policy")
    for p in _platform_order(wl, model, sorted(plat_f["platform"].unique().to_list())):
        s = _summarize(plat_f.filter(pl.col("platform") == p["name"]))
        if s["findings"] == 0:
            verdict = "not exposed"
        elif s["worst_severity"] == "info":
            verdict = "informational"
        else:
            verdict = "exposed"
        out.append({"kind": "platform", **p, "verdict": verdict, "exposed": s["findings"] > 0,
                    "data_known": bool(s["data_classes"]),
                    "dns_lookups": int(names.get("dns_lookup", {}).get(p["name"], 0)),
                    "names_seen": int(names.get("name_seen", {}).get(p["name"], 0)), **s})
    pol = F.filter(pl.col("platform") == "policy")
    fam_of = {r: _rule_family(model, r) for r in pol["rule"].unique().to_list() if r is not None}
    pol = pol.with_columns(family=pl.col("rule").replace_strict(fam_of, default=None, return_dtype=pl.Utf8))
    families = list(model.rules) + sorted(set(pol["family"].to_list()) - set(model.rules))
    for fam in families:
        sub = pol.filter(pl.col("family") == fam)
        s = _summarize(sub)
        zones = sorted(z for z in sub["src_zone"].unique().to_list() if z) if sub.height else []
        rules = sorted(sub["rule"].unique().to_list()) if sub.height else []
        out.append({"kind": "policy", "name": fam, "tier": "policy", "description": _RULE_TEXT.get(fam, "zone-policy rule"),
                    "verdict": "violated" if s["findings"] else "no violation", "exposed": s["findings"] > 0,
                    "rules": rules, "zones": zones, "weight": model.rules.get(fam, (None, ()))[0], **s})
    return out


def _headline(verdicts: list[dict], coverage: dict) -> dict:
    plats = [v for v in verdicts if v["kind"] == "platform"]
    lg = next((v for v in plats if v["name"] == PROHIBITED), None)
    rows = coverage["rows"]["total"]
    lines = []
    if lg is not None and lg["exposed"]:
        level = "exposed"
        title = f"{PROHIBITED}: exposed ({lg['worst_severity']})"
        what = ", ".join(c["data_class"] for c in lg["data_classes"][:6]) or "unknown (no inventory entry)"
        more = f" and {len(lg['data_classes']) - 6} more" if len(lg["data_classes"]) > 6 else ""
        lines.append(f"{lg['findings']:,} finding(s) in {lg['episodes']:,} episode(s) from {len(lg['entities']):,} "
                     f"source(s), first seen "
                     f"{_human(lg['first_seen'])}, last seen {_human(lg['last_seen'])}: {_n(lg['bytes_scaled'])} bytes, "
                     f"{lg['messages']:,} messages, {lg['flows']:,} flows.")
        lines.append(f"Data classes exposed: {what}{more}.")
    elif rows == 0:
        level = "no_data"
        title = "No data read: nothing can be concluded"
        lines.append("ROOT holds no messages, quarantined rows or flow records.")
    else:
        level = "clear"
        title = f"No exposure to {PROHIBITED} found"
        span = coverage["time"]
        lines.append(f"{rows:,} rows read from {_human(span['first'])} to {_human(span['last'])}; "
                     f"{span['gap_hours']:,} hour(s) without data inside the span.")
    others = [v for v in plats if v["name"] != PROHIBITED]
    exposed = [f"{v['name']} {v['verdict']} ({v['findings']:,} finding(s), worst {v['worst_severity']})"
               for v in others if v["exposed"]]
    clear = [v["name"] for v in others if not v["exposed"]]
    if others:
        lines.append("Other platforms: " + "; ".join(exposed + ([", ".join(clear) + " not exposed"] if clear else []))
                     + ".")
    pol = [v for v in verdicts if v["kind"] == "policy" and v["exposed"]]
    if pol:
        n = sum(v["findings"] for v in pol)
        worst = max((v["worst_severity"] for v in pol), key=lambda s: SEV_RANK.get(s, 0))
        lines.append(f"Zone policy: {n:,} violation(s), worst {worst}: "
                     + ", ".join(f"{v['name']} ({v['findings']:,})" for v in pol) + ".")
    else:
        lines.append("Zone policy: no violation found.")
    return {"level": level, "title": title, "lines": lines, "caveats": list(coverage["caveats"])}


def _human(iso_text: str | None) -> str:
    """2026-03-01T06:14:25Z -> 2026-03-01 06:14 UTC."""
    return f"{iso_text[:10]} {iso_text[11:16]} UTC" if iso_text else "at an unknown time"


def _n(v) -> str:
    return "unknown" if v is None else f"{v:,}"


# ------------------------------------------------------------------------------ charts
def _charts(F: pl.DataFrame, coverage: dict) -> dict:
    timed = F.filter(pl.col("t_ns").is_not_null())
    win_s = int((F["window_end_ns"] - F["window_start_ns"]).max() or 0) // 1_000_000_000 if F.height else 0
    out: dict = {}
    if timed.height:
        lo, hi = int(timed["t_ns"].min()), int(timed["t_ns"].max())
        bin_s = _pick_bin(lo, hi, win_s)
        bn = bin_s * 1_000_000_000
        start = lo - lo % bn
        bins = list(range(start, hi - hi % bn + bn, bn))
        timed = timed.with_columns(bin=(pl.col("t_ns") - pl.col("t_ns") % bn))
        plat = timed.filter(pl.col("platform") != "policy")
        series = []
        for name in _ordered(plat["platform"].unique().to_list()):
            g = plat.filter(pl.col("platform") == name).group_by("bin").agg(
                b=pl.col("bytes_scaled").fill_null(0).sum(), m=pl.col("messages").sum(), f=pl.len())
            d = {r[0]: r[1:] for r in g.iter_rows()}
            series.append({"platform": name, "bytes_scaled": [int(d.get(b, (0, 0, 0))[0]) for b in bins],
                           "messages": [int(d.get(b, (0, 0, 0))[1]) for b in bins],
                           "findings": [int(d.get(b, (0, 0, 0))[2]) for b in bins]})
        out["platform_time"] = {"bin_s": bin_s, "bins": [iso(b) for b in bins], "bins_ns": bins, "series": series}
        pol = timed.filter(pl.col("platform") == "policy").with_columns(zone=pl.col("src_zone").fill_null("(no zone)"))
        zs = []
        for z in sorted(pol["zone"].unique().to_list()):
            g = dict(pol.filter(pl.col("zone") == z).group_by("bin").len().iter_rows())
            zs.append({"zone": z, "violations": [int(g.get(b, 0)) for b in bins]})
        out["zone_time"] = {"bin_s": bin_s, "bins": [iso(b) for b in bins], "bins_ns": bins, "series": zs}
    else:
        out["platform_time"] = out["zone_time"] = {"bin_s": 0, "bins": [], "bins_ns": [], "series": []}
    out["unknown_time_findings"] = int(F["t_ns"].null_count()) if F.height else 0
    # classes x platform (occurrences summed over findings)
    cells = []
    plat = F.filter(pl.col("platform") != "policy")
    for name in _ordered(plat["platform"].unique().to_list()):
        for c in _classes(plat.filter(pl.col("platform") == name)):
            cells.append({"platform": name, **c})
    out["classes"] = cells
    # host (entity) x platform: bytes and findings; policy findings under "zone policy"
    hp = F.with_columns(col=pl.when(pl.col("platform") == "policy").then(pl.lit("zone policy"))
                        .otherwise(pl.col("platform")))
    g = hp.group_by("entity", "col").agg(b=pl.col("bytes_scaled").fill_null(0).sum(), n=pl.len(),
                                         m=pl.col("messages").sum(), worst=pl.col("rank").max())
    tot = g.group_by("entity").agg(b=pl.col("b").sum(), w=pl.col("worst").max()).sort(
        ["w", "b", "entity"], descending=[True, True, False])
    hosts = tot["entity"].to_list()
    shown = hosts[:MAX_HOSTS]
    out["host_platform"] = {
        "hosts": shown, "hosts_total": len(hosts),
        "columns": _ordered([c for c in g["col"].unique().to_list() if c != "zone policy"])
        + (["zone policy"] if "zone policy" in g["col"].to_list() else []),
        "cells": [{"entity": e, "platform": c, "bytes_scaled": int(b), "findings": int(n), "messages": int(m)}
                  for e, c, b, n, m, _ in g.filter(pl.col("entity").is_in(shown)).sort("entity", "col").iter_rows()]}
    out["rows_time"] = coverage["time"]["chart"]
    return out


def _ordered(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: (n != PROHIBITED, n.lower()))


# ------------------------------------------------------------------------------ coverage
class _Tally:
    """Per-dataset counts accumulated batch by batch."""

    def __init__(self):
        self.rows = 0
        self.no_time = 0
        self.hours: Counter = Counter()
        self.by: dict[str, Counter] = {}
        self.bytes: Counter = Counter()
        self.versions: dict[str, set] = {}
        self.sources: set = set()

    def add(self, df: pl.DataFrame, t_ns: pl.Expr, group_cols: tuple[str, ...] = (),
            bytes_col: str | None = None, version_cols: tuple[str, ...] = ()):
        self.rows += df.height
        h = df.select((t_ns // HOUR_NS).alias("h"))["h"]
        self.no_time += int(h.null_count())
        self.hours.update(dict(h.drop_nulls().value_counts().iter_rows()))
        for c in group_cols:
            cnt = self.by.setdefault(c, Counter())
            cnt.update({k if k is not None else "(null)": v for k, v in df[c].value_counts().iter_rows()})
        if bytes_col:
            g = df.group_by(group_cols[0]).agg(pl.col(bytes_col).cast(pl.Int64).sum())
            self.bytes.update({k if k is not None else "(null)": int(v or 0) for k, v in g.iter_rows()})
        for c in version_cols:
            self.versions.setdefault(c, set()).update(v for v in df[c].unique().to_list() if v is not None)
        if "source" in df.columns:
            self.sources.update(df["source"].unique().to_list())


def _coverage(root: Path, manifest: dict) -> tuple[dict, dict, dict]:
    """(coverage, versions seen in the data, DNS lookups per platform)."""
    msgs, quar, flows, trans = _Tally(), _Tally(), _Tally(), _Tally()
    for df in _batches(_dataset(root, "messages"), ["source", "ts_ms", "format", "bytes", "catalog_version",
                                                     "schema_version"]):
        msgs.add(df, pl.col("ts_ms") * 1_000_000, ("format",), "bytes", ("catalog_version", "schema_version"))
    for df in _batches(_dataset(root, "quarantine"), ["source", "ts_ms", "format", "reason", "bytes",
                                                       "schema_version"]):
        quar.add(df, pl.col("ts_ms") * 1_000_000, ("reason", "format"), None, ("schema_version",))
    for df in _batches(_dataset(root, "flows"), ["source", "first_ns", "version", "bytes", "schema_version"]):
        df = df.with_columns(version=pl.col("version").cast(pl.Int64).replace_strict(
            {5: "NetFlow v5", 9: "NetFlow v9", 10: "IPFIX"}, default="other (sFlow, Zeek conn, Suricata)",
            return_dtype=pl.Utf8))
        flows.add(df, pl.col("first_ns"), ("version",), None, ("schema_version",))
    for df in _batches(_dataset(root, "transfers"), ["platform", "rule", "time_ns", "watchlist_version",
                                                      "policy_version", "schema_version"]):
        df = df.with_columns(pr=pl.col("platform").fill_null("-") + "\x1f" + pl.col("rule").fill_null("-"))
        trans.add(df, pl.col("time_ns"), ("pr",), None, ("watchlist_version", "policy_version", "schema_version"))
    counts = {}
    for name in ("hits", "transfers", "findings"):
        d = _dataset(root, name)
        counts[name] = d.count_rows() if d is not None else None
    dns = {r: Counter() for r in NAME_RULES}
    for k, v in trans.by.get("pr", {}).items():
        p, r = k.split("\x1f", 1)
        if r in dns:
            dns[r][p] += v
    present = {n: (root / f"dataset={n}").is_dir() for n in ("messages", "quarantine", "flows", "hits", "transfers",
                                                             "findings")}
    rows = {"messages": msgs.rows, "quarantine": quar.rows, "flows": flows.rows}
    rows["total"] = sum(rows.values())
    # time: hours with rows (messages, quarantine, flows), the span, the hours of it without data
    hours = msgs.hours + quar.hours + flows.hours
    since, until = _parse_iso(manifest.get("since")), _parse_iso(manifest.get("until"))
    lo = min(hours) if hours else None
    hi = max(hours) if hours else None
    span_lo = since // HOUR_NS if since is not None else lo
    span_hi = (until - 1) // HOUR_NS if until is not None else hi
    gaps = []
    if span_lo is not None and span_hi is not None and span_hi >= span_lo:
        h = span_lo
        while h <= span_hi:
            if not hours.get(h):
                g0 = h
                while h <= span_hi and not hours.get(h):
                    h += 1
                gaps.append((g0, h))
            else:
                h += 1
    gap_hours = sum(b - a for a, b in gaps)
    span_hours = (span_hi - span_lo + 1) if span_lo is not None and span_hi is not None and span_hi >= span_lo else 0
    chart = {"bin_s": 0, "bins": [], "bins_ns": [], "rows": []}
    if span_hours:
        lo_ns, hi_ns = span_lo * HOUR_NS, (span_hi + 1) * HOUR_NS - 1
        bin_s = _pick_bin(lo_ns, hi_ns, 3600)
        bh = bin_s // 3600
        nb = -(-span_hours // bh)
        per = [0] * nb
        for hh, n in hours.items():
            if span_lo <= hh <= span_hi:
                per[(hh - span_lo) // bh] += n
        chart = {"bin_s": bin_s, "bins_ns": [lo_ns + i * bin_s * 1_000_000_000 for i in range(nb)], "rows": per}
        chart["bins"] = [iso(b) for b in chart["bins_ns"]]
    no_time = msgs.no_time + quar.no_time + flows.no_time
    time = {"first": iso(lo * HOUR_NS) if lo is not None else None,
            "last": iso((hi + 1) * HOUR_NS) if hi is not None else None,
            "since": manifest.get("since") or NOT_RECORDED, "until": manifest.get("until") or NOT_RECORDED,
            "span_hours": span_hours, "hours_with_data": sum(1 for h, n in hours.items() if n and span_lo is not None
                                                              and span_lo <= h <= span_hi),
            "gap_hours": gap_hours,
            "gaps": [{"from": iso(a * HOUR_NS), "to": iso(b * HOUR_NS), "hours": b - a} for a, b in gaps],
            "rows_without_time": no_time,
            "chart": chart}
    inputs = list(manifest.get("inputs") or [])
    by_status = Counter(str(i.get("status") or "ok") for i in inputs)
    in_rows = [i.get("rows") for i in inputs]
    in_bytes = [i.get("bytes") for i in inputs]
    formats = []
    for k, v in sorted(msgs.by.get("format", {}).items(), key=lambda kv: -kv[1]):
        formats.append({"dataset": "messages", "format": k, "rows": int(v), "bytes": int(msgs.bytes.get(k, 0))})
    for k, v in sorted(quar.by.get("format", {}).items(), key=lambda kv: -kv[1]):
        formats.append({"dataset": "quarantine", "format": k, "rows": int(v), "bytes": None})
    for k, v in sorted(flows.by.get("version", {}).items(), key=lambda kv: -kv[1]):
        formats.append({"dataset": "flows", "format": k, "rows": int(v), "bytes": None})
    caveats = []
    if not inputs:
        caveats.append("the inputs read were not recorded (no manifest): the rows below are what ROOT holds")
    bad = by_status.get("failed", 0) + by_status.get("skipped", 0)
    if bad:
        caveats.append(f"{by_status.get('failed', 0)} input(s) failed and {by_status.get('skipped', 0)} were skipped: "
                       "their data was not audited")
    caveats += [t for t in manifest.get("tables") or [] if "not applied" in t or "without its metadata" in t]
    if quar.rows:
        caveats.append(f"{quar.rows:,} row(s) quarantined (undecodable): their content was not inspected")
    if gap_hours:
        caveats.append(f"{gap_hours:,} hour(s) inside the span have no data")
    if no_time:
        caveats.append(f"{no_time:,} row(s) have no time (a null, or a text the audit could not read as a time): "
                       "their content was inspected, but the time charts and the span cannot place them (an "
                       "audit with --since or --until leaves such rows out, counted outside its range)")
    if manifest.get("carried_over"):
        caveats.append("a retro-hunt over earlier output: the messages were not read again, so names and markers "
                       "inside them are those the earlier audit's watchlist found (flows, DNS answers given again "
                       "and interchange recipients were matched with today's)")
    if rows["total"] and not flows.rows and not trans.rows:
        caveats.append("no flow records and no transfers: traffic that carried data without a message "
                       "(network flows) could not be observed")
    elif rows["total"] and not flows.rows:
        caveats.append("no flow records: exposures carried by network flows are seen only where transfers were "
                       "written from other sources")
    dns_logs = manifest.get("dns_logs")
    if flows.rows and dns_logs == []:      # an audit that recorded reading no DNS log
        caveats.append("no DNS log was read (audit --dns: Zeek's dns, ssl or http logs, Suricata's eve.json): a flow "
                       "reached a platform only where the watchlist lists its address; flows to the addresses its "
                       "names resolved to were not attributed")
    coverage = {
        "datasets_present": present,
        "inputs": {"recorded": bool(inputs), "count": len(inputs), "by_status": dict(sorted(by_status.items())),
                   "rows": sum(r for r in in_rows if isinstance(r, int)) if inputs else None,
                   "bytes": sum(b for b in in_bytes if isinstance(b, int)) if inputs else None,
                   "list": [{"path": i.get("path"), "layout": i.get("layout"), "rows": i.get("rows"),
                             "bytes": i.get("bytes"), "status": i.get("status") or "ok", "error": i.get("error")}
                            for i in inputs]},
        "dns_logs": [{k: x.get(k) if isinstance(x.get(k), kind) and not isinstance(x.get(k), bool) else None
                      for k, kind in (("path", str), ("records", int), ("bad", int), ("watched_answers", int),
                                      ("first", str), ("last", str))} for x in dns_logs or []],
        "rows": rows,
        "other_rows": counts,
        "sources": {"messages": len(msgs.sources), "quarantine": len(quar.sources), "flows": len(flows.sources)},
        "time": time,
        "quarantine_by_reason": {k: int(v) for k, v in sorted(quar.by.get("reason", {}).items(),
                                                               key=lambda kv: (-kv[1], kv[0]))},
        "formats": formats,
        "caveats": caveats,
    }
    seen = {"catalog": sorted(msgs.versions.get("catalog_version", set())),
            "watchlist": sorted(trans.versions.get("watchlist_version", set())),
            "policy": sorted(trans.versions.get("policy_version", set())),
            "schema": sorted(msgs.versions.get("schema_version", set()) | quar.versions.get("schema_version", set())
                             | flows.versions.get("schema_version", set())
                             | trans.versions.get("schema_version", set()))}
    return coverage, seen, {r: dict(c) for r, c in dns.items()}


def _parse_iso(v) -> int | None:
    """ns since the epoch of an ISO 8601 time (UTC unless it says otherwise); None if absent or unreadable."""
    if not v or not isinstance(v, str):
        return None
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp()) * 1_000_000_000


# ------------------------------------------------------------------------------ method
def _method(manifest: dict, manifest_src: str, seen: dict, findings_t: pa.Table, origin: dict,
            model: _sev.SeverityModel, wl) -> dict:
    recorded = manifest.get("versions") or {}
    versions = {}
    sev_seen = sorted({str(v) for v in findings_t.column("severity_version").to_pylist() if v}) \
        if findings_t.num_rows else []
    seen = dict(seen, severity_model=sev_seen)
    for k in _VERSION_KEYS:
        r = recorded.get(k)
        if isinstance(r, dict):
            rec = {"version": r.get("version") or NOT_RECORDED, "sha256": r.get("sha256") or NOT_RECORDED,
                   **{x: y for x, y in r.items() if x not in ("version", "sha256")}}
        elif isinstance(r, str) and r:
            rec = {"version": r, "sha256": NOT_RECORDED}
        else:
            rec = {"version": NOT_RECORDED, "sha256": NOT_RECORDED}
        seen_k = seen.get(k, [])
        match = None if rec["version"] == NOT_RECORDED or not seen_k else seen_k == [rec["version"]]
        versions[k] = {"recorded": rec, "seen_in_data": seen_k, "matches": match}
    cmd = manifest.get("command")
    return {
        "manifest": manifest_src,
        "command": shlex.join(str(c) for c in cmd) if isinstance(cmd, list) and cmd else (cmd or NOT_RECORDED),
        "engine": manifest.get("engine") or NOT_RECORDED,
        "workers": manifest.get("workers") if manifest.get("workers") is not None else NOT_RECORDED,
        "started": manifest.get("started") or NOT_RECORDED,
        "finished": manifest.get("finished") or NOT_RECORDED,
        "since": manifest.get("since") or NOT_RECORDED,
        "until": manifest.get("until") or NOT_RECORDED,
        "versions": versions,
        "findings": origin,
        "severity_model": {"version": model.version,
                           "levels": [{"level": k, "min_score": v} for k, v in model.levels],
                           "basis": [{"id": b.id, "title": b.title, "source": b.source} for b in model.basis.values()]},
        "watchlist_read_by_report": {"version": wl.version if wl else NOT_RECORDED,
                                     "files": list(wl.files) if wl else []},
        "dataset_schema_version": SCHEMA_VERSION,
        "generator": f"flowaudit {__version__}",
    }


# ------------------------------------------------------------------------------ the whole
def episode_gap(manifest: dict, given: int | None) -> int:
    """The episode gap (s): ``given`` (a flag or setting), else the one the audit recorded, else
    an hour."""
    if given is not None:
        return int(given)
    c = manifest.get("correlation") if isinstance(manifest, dict) else None
    rec = c.get("episode_gap_s") if isinstance(c, dict) else None
    return rec if isinstance(rec, int) and not isinstance(rec, bool) and rec >= 0 else EPISODE_GAP_S


def build(root, manifest: dict | None = None, *, watchlist_dir=None, episode_gap_s: int | None = None) -> dict:
    """The report's data from the datasets under ``root`` (no files written).

    ``manifest``: the audit's manifest (None: ``ROOT/_audit/manifest.json`` when present).
    ``watchlist_dir``: operator watchlist files besides the shipped default (the platforms listed).
    ``episode_gap_s``: the most quiet inside one episode (None: the audit's, else an hour).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    manifest, manifest_src, manifest_error = _load_manifest(root, manifest)
    model = _sev.load()
    wl = _wl.load(watchlist_dir)
    findings_t, origin = _read_findings(root)
    F = _findings_frame(findings_t)
    coverage, seen, dns = _coverage(root, manifest)
    verdicts = _verdicts(F, wl, model, dns)
    rows = findings_t.slice(0, MAX_FINDINGS).to_pylist()
    by_sev = {s: int(n) for s, n in F.group_by("severity").len().iter_rows()} if F.height else {}
    by_plat = {}
    if F.height:
        for p, s, n in F.group_by("platform", "severity").len().iter_rows():
            by_plat.setdefault(p, {})[s] = int(n)
    gap_s = episode_gap(manifest, episode_gap_s)
    episodes = _episodes(F, {r["finding_id"]: i for i, r in enumerate(rows, 1)}, gap_s)
    report_rows = [_finding_row(r) for r in rows]
    _add_evidence(episodes[:MAX_EVIDENCE], findings_t, {r["finding_id"]: r for r in report_rows})
    for v in verdicts:
        v["episodes"] = sum(1 for e in episodes if (e["platform"] == v["name"] if v["kind"] == "platform" else
                                                    e["platform"] == "policy" and e["rule"] in v["rules"]))
    findings = {"total": findings_t.num_rows, "episodes_total": len(episodes), "episode_gap_s": gap_s,
                "episodes": episodes[:MAX_FINDINGS],
                "by_severity": {s: by_sev.get(s, 0) for s in _SEV_ORDER},
                "by_platform": {p: {s: v[s] for s in _SEV_ORDER if s in v} for p, v in sorted(by_plat.items())},
                "listed": len(rows), "episodes_with_evidence": min(len(episodes), MAX_EVIDENCE),
                "rows": report_rows}
    data = {
        "report_format": REPORT_FORMAT,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "root": str(root.resolve()),
        "verdicts": verdicts,
        "findings": findings,
        "charts": _charts(F, coverage),
        "coverage": coverage,
        "method": _method(manifest, manifest_src, seen, findings_t, origin, model, wl),
    }
    if manifest_error:
        coverage["caveats"].insert(0, manifest_error)
    differ = [k for k, v in data["method"]["versions"].items() if v["matches"] is False]
    if differ:
        coverage["caveats"].append("the rows carry other versions than the audit recorded (" + ", ".join(differ)
                                   + "): rows of another run may be under ROOT")
    data["headline"] = _headline(verdicts, coverage)
    return data
