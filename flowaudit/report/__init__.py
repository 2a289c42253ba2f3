"""The audit report: one self-contained HTML file and ``report.json`` from a ROOT's datasets.

``flowaudit report ROOT --out PATH.html`` (and ``flowaudit audit``, which calls :func:`write`)
reads the Hive-partitioned datasets a batch audit or the stream wrote under ROOT (``messages``,
``hits``, ``quarantine``, ``flows``, ``transfers``, ``findings``) and the audit's manifest
(``ROOT/_audit/manifest.json`` unless one is given), and renders:

* the verdict per platform (LOGINK first, then the other watchlisted platforms, then the
  zone-policy rules), exposed or not, since when, how much and which data classes;
* the findings worst first, with their evidence (masked samples and their provenance);
* charts as inline SVG; coverage (inputs, rows, time span and gaps, quarantine, formats);
* the method (versions and hashes, command line, engine).

``data.py`` builds the dict (what ``report.json`` holds), ``html.py`` renders it, ``svg.py``
draws the charts.  This module stays light: building the command line imports no polars.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def build(root, manifest: dict | None = None, *, watchlist_dir=None, episode_gap_s: int | None = None) -> dict:
    """The report data of ROOT's datasets; no file written (see :mod:`flowaudit.report.data`)."""
    from .data import build as _build

    return _build(root, manifest, watchlist_dir=watchlist_dir, episode_gap_s=episode_gap_s)


def render_html(data: dict) -> str:
    """The self-contained HTML page of :func:`build`'s data."""
    from .html import render_html as _render

    return _render(data)


def write(root, html_path, manifest: dict | None = None, *, json_path=None, watchlist_dir=None,
          episode_gap_s: int | None = None) -> dict:
    """Render ROOT's datasets to one self-contained HTML file and ``report.json`` beside it.

    ``json_path`` defaults to ``report.json`` in the HTML file's folder.  ``manifest``: the audit's
    manifest (None: ``ROOT/_audit/manifest.json`` when present).  ``episode_gap_s``: the most quiet
    inside one episode (None: the one the audit recorded, else an hour).  Returns the report data
    (what report.json holds).
    """
    html_path = Path(html_path)
    json_path = Path(json_path) if json_path is not None else html_path.parent / "report.json"
    data = build(root, manifest, watchlist_dir=watchlist_dir, episode_gap_s=episode_gap_s)
    page = render_html(data)
    from ..sinks.parquet import replace_atomic   # hidden temp file, fsync, rename: never half a report

    replace_atomic(json_path, (json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n").encode())
    replace_atomic(html_path, page.encode())
    return data


# ------------------------------------------------------------------------------ CLI
def cmd_report(args) -> int:
    root = Path(args.root)
    if not root.is_dir():
        print(f"flowaudit: {root} is not a folder", file=sys.stderr)
        return 2
    manifest = None
    if args.manifest:
        try:
            manifest = json.loads(Path(args.manifest).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            print(f"flowaudit: manifest {args.manifest}: {e}", file=sys.stderr)
            return 2
        if not isinstance(manifest, dict):
            print(f"flowaudit: manifest {args.manifest}: a JSON object is required", file=sys.stderr)
            return 2
    from ..config import ConfigError, given_episode_gap, load
    from ..detect.watchlist import WatchlistError

    try:
        # the stream's settings model (file, FLOWAUDIT_* environment, this flag): its operator watchlist
        over = {"egress": {"watchlist_dir": args.watchlist_dir}} if args.watchlist_dir else None
        st = load(args.config, overrides=over)
        data = write(root, args.out, manifest, json_path=args.json, watchlist_dir=st.egress.watchlist_dir or None,
                     episode_gap_s=given_episode_gap(args, st))
    except (ConfigError, WatchlistError) as e:
        print(f"flowaudit: {e}", file=sys.stderr)
        return 2
    jp = args.json or str(Path(args.out).parent / "report.json")
    f = data["findings"]
    print(f"report: {args.out} and {jp}: {data['headline']['title']}; {f['total']:,} finding(s) in "
          f"{f['episodes_total']:,} episode(s), {data['coverage']['rows']['total']:,} rows read", file=sys.stderr)
    return 0


def add_parser(sub) -> None:
    from ..config import bounded, out_path

    p = sub.add_parser(
        "report", help="one self-contained HTML audit report (and report.json) from a ROOT's datasets",
        description="Renders the datasets under ROOT (written by `flowaudit audit` or `flowaudit stream`) to one "
        "HTML file that opens offline and prints to PDF: the verdict per platform (LOGINK first), the findings "
        "worst first with masked evidence, charts, coverage and method; report.json beside it holds the same "
        "numbers. Exit 2 on a usage error.")
    p.add_argument("root", metavar="ROOT", help="the Parquet root (dataset=messages, findings, ...)")
    p.add_argument("--out", required=True, type=out_path("file"), metavar="PATH.html", help="the HTML file to write")
    p.add_argument("--manifest", metavar="FILE", help="the audit's manifest (default ROOT/_audit/manifest.json "
                   "when present)")
    p.add_argument("--json", type=out_path("file"), metavar="FILE",
                   help="where report.json goes (default: beside the HTML file)")
    p.add_argument("--watchlist-dir", metavar="DIR", help="operator watchlist files, so that their platforms are "
                   "listed too [env FLOWAUDIT_EGRESS_WATCHLIST_DIR]")
    p.add_argument("--episode-gap", type=bounded(int, 0), metavar="S",
                   help="the most quiet between two windows of one episode, in seconds (default: the audit's, else "
                   "3600) [env FLOWAUDIT_FINDINGS_EPISODE_GAP_S]")
    p.add_argument("--config", metavar="FILE", help="TOML settings file, the stream's (egress.watchlist_dir, "
                   "findings.episode_gap_s) [env FLOWAUDIT_CONFIG]")
    p.set_defaults(fn=cmd_report)
