"""The audit report as one self-contained HTML page (no script, no font, no link outside the page).

:func:`render_html` turns :func:`flowaudit.report.data.build`'s dict into the page: the headline
verdict, the summary per platform, the charts (inline SVG), the findings worst first with their
evidence, coverage and method.  Every value from the data goes through :func:`html.escape`.  The
print stylesheet keeps tables and figures whole on a page and drops tinted backgrounds.
"""
from __future__ import annotations

from html import escape

from . import svg

_SEV = ("critical", "high", "medium", "low", "info")
_NUM = ' class="num"'
CARD_SAMPLES = 10       # samples shown per episode (report.json keeps more, and every finding's own)

CSS = """
:root { --ink:#1b1f24; --muted:#4a525c; --rule:#d7dce2; --accent:#1f4e99; --bad:#a4001d; --ok:#22683f; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", Helvetica, Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 36px 64px; }
h1 { font-size: 28px; line-height: 1.2; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 44px 0 12px; padding-bottom: 4px; border-bottom: 2px solid var(--ink); }
h3 { font-size: 17px; margin: 26px 0 8px; }
p { margin: 6px 0 10px; }
.sub { color: var(--muted); margin: 0 0 18px; }
.muted { color: var(--muted); }
.small { font-size: 0.87em; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 0.9em; }
.wrap { overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 16px; font-variant-numeric: tabular-nums; font-size: 14px; }
th, td { text-align: left; vertical-align: top; padding: 5px 8px; border-bottom: 1px solid var(--rule); }
th { font-weight: 600; border-bottom: 2px solid #9aa3ad; }
td.num, th.num { text-align: right; white-space: nowrap; }
tr.group th { background: #f2f4f7; border-bottom: 1px solid var(--rule); font-size: 13px; text-transform: uppercase; letter-spacing: .04em; }
.headline { border: 2px solid; border-left-width: 12px; padding: 14px 20px; margin: 18px 0 8px; }
.headline h2 { border: 0; margin: 0 0 6px; padding: 0; font-size: 24px; }
.headline p { margin: 4px 0; }
.headline.exposed { border-color: var(--bad); background: #fdf1f2; }
.headline.clear { border-color: var(--ok); background: #f0f8f3; }
.headline.no_data { border-color: #8a6d00; background: #fdf8e8; }
.verdict { font-weight: 700; white-space: nowrap; }
.verdict.exposed, .verdict.violated { color: var(--bad); }
.verdict.not-exposed, .verdict.no-violation { color: var(--ok); }
.verdict.informational { color: var(--muted); }
.sev { display: inline-block; min-width: 64px; padding: 0 6px; border: 1px solid; border-radius: 3px; font-size: 12px;
  font-weight: 700; text-align: center; text-transform: uppercase; letter-spacing: .03em; }
.sev-critical { color: #8c0019; border-color: #8c0019; }
.sev-high { color: #a33a00; border-color: #a33a00; }
.sev-medium { color: #6f5500; border-color: #8a6d00; }
.sev-low { color: #22683f; border-color: #22683f; }
.sev-info { color: #4a525c; border-color: #8a939e; }
nav.toc { margin: 18px 0; padding: 10px 16px; border: 1px solid var(--rule); }
nav.toc ol { margin: 4px 0; padding-left: 22px; columns: 2; }
nav.toc a { color: var(--accent); }
figure { margin: 18px 0 26px; }
figure svg { max-width: 100%; height: auto; display: block; }
figure svg.bars { width: 100%; max-width: 900px; }
figure svg text { font-family: inherit; }
figcaption { font-size: 14px; color: var(--muted); margin-top: 4px; }
figcaption strong { color: var(--ink); }
.card { border: 1px solid var(--rule); border-left: 6px solid #8a939e; padding: 10px 16px; margin: 14px 0; }
.card-critical { border-left-color: #8c0019; } .card-high { border-left-color: #a33a00; }
.card-medium { border-left-color: #8a6d00; } .card-low { border-left-color: #22683f; }
.card h3 { margin: 0 0 6px; font-size: 16px; }
.card dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 6px 0 8px; font-size: 14px; }
.card dt { color: var(--muted); }
.card dd { margin: 0; }
.card table { font-size: 13px; }
table.compact { width: auto; min-width: 50%; }
table.kv { width: auto; min-width: 60%; }
table.kv th { font-weight: 400; color: var(--muted); border-bottom: 1px solid var(--rule); padding-right: 24px; white-space: nowrap; }
dl.notes { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; }
dl.notes dt { font-weight: 600; }
dl.notes dd { margin: 0; }
.nowrap { white-space: nowrap; }
.caveat-title { margin-top: 10px !important; font-weight: 600; }
ul.caveats { margin: 2px 0 0; padding-left: 22px; }
ul.caveats li { margin: 1px 0; }
.empty { color: var(--muted); font-style: italic; }
footer { margin-top: 48px; padding-top: 8px; border-top: 1px solid var(--rule); font-size: 13px; color: var(--muted); }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { font-size: 10pt; background: #fff !important; }
  table { font-size: 8.5pt; }
  th, td { padding: 3px 5px; }
  .card dl { font-size: 9pt; }
  .card table { font-size: 8pt; }
  .sev { min-width: 0; font-size: 7.5pt; }
  main { max-width: none; padding: 0; }
  nav.toc { display: none; }
  .headline, .headline.exposed, .headline.clear, .headline.no_data, tr.group th { background: none !important; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  table, figure, .headline, dl { break-inside: avoid; page-break-inside: avoid; }
  .card { break-inside: auto; }
  .card > h3, .card > dl { break-inside: avoid; break-after: avoid; }
  table.long { break-inside: auto; page-break-inside: auto; }
  tr { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  a { color: inherit; text-decoration: none; }
}
"""


def _e(v) -> str:
    return escape("" if v is None else str(v), quote=True)


def _int(v) -> str:
    return "unknown" if v is None else f"{int(v):,}"


def human_bytes(v) -> str:
    if v is None:
        return "unknown"
    v = float(v)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(v) < 1000 or unit == "TB":
            return f"{v:,.0f} {unit}" if unit == "B" else f"{v:,.1f} {unit}"
        v /= 1000
    return f"{v:,.1f} TB"


def _t(iso: str | None) -> str:
    """2026-03-01T06:30:00Z -> 2026-03-01 06:30:00 UTC."""
    if not iso:
        return "unknown"
    return iso.replace("T", " ").replace("Z", " UTC")


def _when(iso: str | None) -> str:
    """A time for a table cell: the date, then the time on its own line (no wrapping inside either)."""
    if not iso:
        return '<span class="muted">unknown</span>'
    return f'<span class="nowrap">{_e(iso[:10])}</span><br><span class="nowrap">{_e(iso[11:19])}</span>'


def _span(first: str | None, last: str | None) -> str:
    """First and last seen for a table cell: one date and two times when they share the day."""
    if not first or not last:
        return '<span class="muted">unknown</span>'
    if first[:10] == last[:10]:
        times = _e(first[11:16]) + (f"&ndash;{_e(last[11:16])}" if last[11:16] != first[11:16] else "")
        return f'<span class="nowrap">{_e(first[:10])}</span><br><span class="nowrap">{times}</span>'
    return (f'<span class="nowrap">{_e(first[:10])} {_e(first[11:16])}</span><br>'
            f'<span class="nowrap">to {_e(last[:10])} {_e(last[11:16])}</span>')


def _kv(rows: list[tuple[str, str]]) -> str:
    """A two-column table of labels and (escaped) values."""
    return ('<table class="kv"><tbody>' + "".join(f'<tr><th scope="row">{_e(k)}</th><td>{v}</td></tr>' for k, v in rows)
            + "</tbody></table>")


def _entity(name: str) -> str:
    """A host, app:NAME or topic:NAME: kept on one line unless long (an input file path)."""
    cls = "mono wrap" if len(name) > 22 else "mono nowrap"
    return f'<span class="{cls}">{_e(name)}</span>'


def _sev(s) -> str:
    if not s:
        return '<span class="muted">&ndash;</span>'
    return f'<span class="sev sev-{_e(s)}">{_e(s)}</span>'


def _verdict(v: str) -> str:
    return f'<span class="verdict {_e(v.replace(" ", "-"))}">{_e(v)}</span>'


def _classes(cl: list[dict], k: int = 6) -> str:
    if not cl:
        return '<span class="muted">none attributed</span>'
    items = [f"{_e(c['data_class'])} <span class=\"muted\">({_e(c['sensitivity'])}, {_int(c['occurrences'])})</span>"
             for c in cl[:k]]
    more = f' <span class="muted">+{len(cl) - k} more</span>' if len(cl) > k else ""
    return ", ".join(items) + more


def _table(head: list[tuple[str, bool]], rows: list[list[str]], cls: str = "") -> str:
    """``head``: (label, numeric); ``rows``: cells already escaped."""
    c = f' class="{cls}"' if cls else ""
    out = [f"<table{c}><thead><tr>"]
    out += [f'<th scope="col"{_NUM if num else ""}>{_e(h)}</th>' for h, num in head]
    out.append("</tr></thead><tbody>")
    for r in rows:
        out.append("<tr>" + "".join(f'<td{_NUM if num else ""}>{cell}</td>'
                                    for cell, (_, num) in zip(r, head)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


# ------------------------------------------------------------------------------ sections
def _headline(d: dict) -> str:
    h = d["headline"]
    lines = "".join(f"<p>{_e(x)}</p>" for x in h["lines"])
    cav = ""
    if h.get("caveats"):
        cav = ('<p class="caveat-title">Read with these limits (section 4):</p><ul class="caveats small">'
               + "".join(f"<li>{_e(x)}</li>" for x in h["caveats"]) + "</ul>")
    return (f'<section class="headline {_e(h["level"])}" aria-label="Verdict">'
            f'<h2 id="verdict-headline">{_e(h["title"])}</h2>{lines}{cav}</section>')


def _summary(d: dict) -> str:
    head = [("Platform / rule", False), ("Verdict", False), ("Findings", True), ("Seen (UTC)", False),
            ("Bytes", True), ("Msgs", True), ("Flows", True), ("Data classes (sensitivity, occurrences)", False)]
    out = ['<section id="verdicts"><h2>1. Verdict per platform</h2>',
           "<p>Every platform of the watchlist, LOGINK first, then the other watchlisted platforms, then the zone-policy "
           "rules. A platform without a finding is <em>not exposed</em> within the coverage of section 4. Bytes are "
           "flow bytes scaled by the sampling interval plus the size of the exposing messages, summed over the "
           "findings.</p>"]
    rows_html, notes = [], []
    for group, kind in (("Watchlisted platforms", "platform"),
                        ("Zone policy: cranes, scanners, remote access", "policy")):
        rows_html.append(f'<tr class="group"><th colspan="{len(head)}" scope="colgroup">{_e(group)}</th></tr>')
        for v in (x for x in d["verdicts"] if x["kind"] == kind):
            n = v["findings"]
            sub = v["tier"] if kind == "platform" else ""
            rows_html.append("<tr>" + "".join([
                f'<td><strong>{_e(v["name"])}</strong>' + (f'<br><span class="muted small">{_e(sub)}</span>' if sub else "")
                + "</td>",
                f"<td>{_verdict(v['verdict'])}" + (f"<br>{_sev(v['worst_severity'])}" if n else "") + "</td>",
                f'<td class="num">{_int(n)}'
                + (f'<br><span class="small muted">{len(v["entities"]):,} source(s), {v["episodes"]:,} '
                   f'episode(s)</span>' if n else "") + "</td>",
                f"<td>{_span(v['first_seen'], v['last_seen']) if n else ''}</td>",
                f'<td class="num">{_int(v["bytes_scaled"]) if n else ""}</td>',
                f'<td class="num">{_int(v["messages"]) if n else ""}</td>',
                f'<td class="num">{_int(v["flows"]) if n else ""}</td>',
                f"<td>{_classes(v['data_classes'], 3) if n else ''}</td>"]) + "</tr>")
            extra = []
            if kind == "platform":
                if v.get("dns_lookups"):
                    extra.append(f"{v['dns_lookups']:,} DNS lookup(s) of its names (not findings by themselves)")
                if v.get("names_seen"):
                    extra.append(f"{v['names_seen']:,} connection(s) that named it by TLS server name or HTTP Host "
                                 "(not findings by themselves)")
                if v["exposed"] and not v["data_known"]:
                    extra.append("traffic reached it; the data carried is unknown (no inventory entry for the host)")
                if v.get("source"):
                    extra.append(f"source: {v['source']}")
            else:
                if v.get("rules"):
                    extra.append("rules: " + ", ".join(v["rules"]))
                if v.get("zones"):
                    extra.append("zones: " + ", ".join(v["zones"]))
            notes.append(f'<dt>{_e(v["name"])}</dt><dd>{_e(v.get("description") or "")}'
                         + (f'<br><span class="muted wrap">{_e("; ".join(extra))}</span>' if extra else "") + "</dd>")
    out.append('<table class="summary"><thead><tr>'
               + "".join(f'<th scope="col"{_NUM if n else ""}>{_e(h)}</th>' for h, n in head)
               + "</tr></thead><tbody>" + "".join(rows_html) + "</tbody></table>")
    f = d["findings"]
    sev_rows = [[_e(p)] + [_int(c.get(s, 0)) for s in _SEV] + [_int(sum(c.values()))]
                for p, c in f["by_platform"].items()]
    sev_rows.append(["<strong>all</strong>"] + [f"<strong>{_int(f['by_severity'].get(s, 0))}</strong>" for s in _SEV]
                    + [f"<strong>{_int(f['total'])}</strong>"])
    out.append("<h3>Findings per severity</h3>")
    out.append(_table([("Platform", False)] + [(s, True) for s in _SEV] + [("all", True)], sev_rows, "sev-counts"))
    out.append('<h3>The platforms and rules</h3><dl class="notes small">' + "".join(notes) + "</dl>")
    out.append("</section>")
    return "".join(out)


def _charts(d: dict) -> str:
    c = d["charts"]
    out = ['<section id="charts"><h2>2. Charts</h2>']
    pt = c["platform_time"]
    if pt["series"]:
        desc = "; ".join(f"{s['platform']}: {sum(s['bytes_scaled']):,} bytes" for s in pt["series"])
        out.append(_figure(svg.time_bars("chart-bytes", "Bytes to each platform over time",
                                         f"Bytes (scaled by sampling) of the findings per platform and time bin. {desc}.",
                                         pt["bins_ns"], pt["bin_s"],
                                         [(s["platform"], s["bytes_scaled"]) for s in pt["series"]], human_bytes,
                                         "bytes"),
                           "Bytes to each platform over time",
                           "flow bytes (scaled by sampling) and exposing message bytes of the findings, by the time "
                           "they were first seen; each panel has its own scale"))
        desc = "; ".join(f"{s['platform']}: {sum(s['messages']):,} messages" for s in pt["series"])
        out.append(_figure(svg.time_bars("chart-messages", "Messages to each platform over time",
                                         f"Messages carrying the exposed data per platform and time bin. {desc}.",
                                         pt["bins_ns"], pt["bin_s"],
                                         [(s["platform"], s["messages"]) for s in pt["series"]], _int, "messages"),
                           "Messages to each platform over time",
                           "messages carrying the exposed data (observed: the exposing messages; inferred: the "
                           "messages the host's applications handled)"))
    else:
        out.append('<p class="empty">No finding on a watchlisted platform with a known time: no time chart.</p>')
    cl = c["classes"]
    if cl:
        plats = list(dict.fromkeys(x["platform"] for x in cl))
        order = {"high": 0, "medium": 1, "low": 2}
        names = sorted({(x["data_class"], x["sensitivity"]) for x in cl}, key=lambda k: (order.get(k[1], 3), k[0]))
        ri = {n: i for i, n in enumerate(names)}
        cells = {(ri[(x["data_class"], x["sensitivity"])], plats.index(x["platform"])):
                 (x["occurrences"], f"{x['occurrences']:,}") for x in cl}
        out.append(_figure(svg.heatmap("chart-classes", "Data classes exposed per platform",
                                       "Occurrences of each sensitive data class in the findings of each platform. "
                                       + "; ".join(f"{x['platform']} {x['data_class']} {x['occurrences']}" for x in cl),
                                       [(n, s) for n, s in names], plats, cells, "data class (sensitivity)",
                                       "platform"),
                           "Data classes exposed per platform",
                           "occurrences of each class in the findings, summed over findings; most sensitive first"))
    else:
        out.append('<p class="empty">No data class attributed to any platform.</p>')
    hp = c["host_platform"]
    if hp["hosts"]:
        cols = hp["columns"]
        hi = {h: i for i, h in enumerate(hp["hosts"])}
        cells = {}
        for x in hp["cells"]:
            txt = f"{human_bytes(x['bytes_scaled'])} / {x['findings']}f" if x["bytes_scaled"] else f"{x['findings']}f"
            cells[(hi[x["entity"]], cols.index(x["platform"]))] = (x["bytes_scaled"] or 0.0001 * x["findings"], txt)
        more = (f"; {hp['hosts_total'] - len(hp['hosts'])} more source(s) not drawn"
                if hp["hosts_total"] > len(hp["hosts"]) else "")
        out.append(_figure(svg.heatmap("chart-hosts", "Source host or application x platform",
                                       "Bytes and number of findings per source and platform. "
                                       + "; ".join(f"{x['entity']} to {x['platform']}: {x['bytes_scaled']} bytes, "
                                                   f"{x['findings']} findings" for x in hp["cells"]),
                                       [(h, "") for h in hp["hosts"]], cols, cells, "source (host / app)",
                                       "platform (zone policy: the asset's violations)"),
                           "Source host or application &times; platform",
                           f"bytes (scaled) / number of findings (f); worst sources first{_e(more)}"))
    zt = c["zone_time"]
    if zt["series"]:
        out.append(_figure(svg.time_bars("chart-zones", "Zone-policy violations per zone over time",
                                         "Zone-policy findings per zone of the asset and time bin. "
                                         + "; ".join(f"{s['zone']}: {sum(s['violations'])}" for s in zt["series"]),
                                         zt["bins_ns"], zt["bin_s"], [(s["zone"], s["violations"]) for s in zt["series"]],
                                         _int, "findings", svg.BAR_ALT),
                           "Zone-policy violations per zone over time",
                           "zone-policy findings by the zone of the asset they name (a crane, a scanner, a host)"))
    else:
        out.append('<p class="empty">No zone-policy violation: no zone chart.</p>')
    if c.get("unknown_time_findings"):
        out.append(f'<p class="muted small">{c["unknown_time_findings"]:,} finding(s) without an event time are '
                   f'not drawn over time.</p>')
    out.append("</section>")
    return "".join(out)


def _figure(svg_text: str, title: str, caption: str) -> str:
    return f"<figure>{svg_text}<figcaption><strong>{title}.</strong> {caption}.</figcaption></figure>"


def _findings(d: dict) -> str:
    f = d["findings"]
    out = ['<section id="findings"><h2>3. Findings, worst first</h2>']
    if not f["rows"]:
        out.append('<p class="empty">No finding.</p></section>')
        return "".join(out)
    eps, shown = f["episodes"], f["episodes_with_evidence"]
    episode_of = {n: k for k, e in enumerate(eps, 1) for n in e["findings"]}
    out.append(_episodes(f))
    out.append("<h3>Every finding</h3>")
    out.append(f"<p>{_int(f['total'])} finding(s): one per platform or policy rule &times; source &times; event-time "
               f"window. Ordered by severity, score, then latest first."
               + (f" The first {f['listed']:,} are listed; <code>flowaudit findings ROOT</code> lists all."
                  if f["listed"] < f["total"] else "") + "</p>")
    head = [("#", True), ("Severity", False), ("Window (UTC)", False), ("Platform / rule, exposure", False),
            ("Source (zone)", False), ("Bytes", True), ("Msgs", True), ("Flows", True), ("Data classes", False),
            ("Episode", True)]
    rows = []
    for i, r in enumerate(f["rows"], 1):
        k = episode_of.get(i)
        rows.append([f'<span id="r{i}">{i}</span>',
                     f'{_sev(r["severity"])}<br><span class="small muted">score {r["score"]:.0f}, {_e(r["status"])}'
                     "</span>",
                     _when(r["window_start"]),
                     f'{_e(r["platform"])}<br><span class="small muted">{_e(r["rule"])}, {_e(r["exposure"])}</span>',
                     _entity(r["entity"]) + (f'<br><span class="small muted">{_e(r["src_zone"])}</span>'
                                             if r["src_zone"] else ""),
                     _int(r["bytes_scaled"]), _int(r["messages"]), _int(r["flows"]),
                     _classes(r["data_classes"], 3),
                     (f'<a href="#e{k}">{k}</a>' if k <= shown else str(k)) if k else ""])
    out.append(_table(head, rows, "long findings"))
    out.append(f"<h3>Evidence, episode by episode (the first {shown:,})</h3>"
               "<p class=\"small muted\">Each episode pools its findings' evidence. Samples are the stored occurrences, "
               "most sensitive first: the topic or input file, the partition (&minus;1 for files), the offset (Kafka "
               "offset or row in the file), the message inside the interchange, where in the message, and the value "
               "masked (never raw) with the start of its HMAC. <code>report.json</code> has every finding's own.</p>")
    for k, e in enumerate(eps[:shown], 1):
        out.append(_card(k, e))
    out.append("</section>")
    return "".join(out)


def _runs(ns: list[int]) -> list[tuple[int, int]]:
    """Sorted numbers as runs: [1..37, 40] -> [(1, 37), (40, 40)]."""
    runs: list[list[int]] = []
    for n in ns:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return [(a, b) for a, b in runs]


def _numbers(ns: list[int]) -> str:
    """Finding numbers as runs (1–37, 40), each run's first number linked to its row."""
    return ", ".join(f'<a href="#r{a}">{a}</a>' + (f"&ndash;{b}" if b > a else "") for a, b in _runs(ns))


def _episodes(f: dict) -> str:
    eps = f["episodes"]
    out = [f"<h3>Episodes</h3><p>{_int(f['total'])} finding(s) form {_int(f['episodes_total'])} episode(s): the windows "
           "of one platform or policy rule, exposure and source that follow each other with at most "
           f"{_e(svg.bin_name(f['episode_gap_s']))} of quiet between them (or one window, if longer). Volume is "
           "summed over the episode; its severity is its worst finding's."
           + (f" The first {len(eps):,} are listed." if len(eps) < f["episodes_total"] else "") + "</p>"]
    head = [("#", True), ("Severity", False), ("Seen (UTC)", False), ("Platform / rule, exposure", False),
            ("Source (zone)", False), ("Windows", True), ("Bytes", True), ("Msgs", True), ("Flows", True),
            ("Data classes", False), ("Findings", False)]
    rows = []
    for k, e in enumerate(eps, 1):
        zones = ", ".join(e["zones"])
        listed = _numbers(e["findings"])
        if e["findings_not_listed"]:
            listed += (", " if listed else "") + f"{e['findings_not_listed']:,} not listed"
        rows.append([f'<a href="#e{k}">{k}</a>' if k <= f["episodes_with_evidence"] else str(k),
                     _sev(e["severity"]), _span(e["first_seen"], e["last_seen"]),
                     f'{_e(e["platform"])}<br><span class="small muted">{_e(e["rule"])}, {_e(e["exposure"])}</span>',
                     _entity(e["entity"]) + (f'<br><span class="small muted">{_e(zones)}</span>' if zones else ""),
                     _int(e["windows"]), _int(e["bytes_scaled"]), _int(e["messages"]), _int(e["flows"]),
                     _classes(e["data_classes"], 3), f'<span class="small">{listed}</span>'])
    out.append(_table(head, rows, "long episodes"))
    return "".join(out)


def _card(k: int, e: dict) -> str:
    n = e["windows"]
    dl = [("Source", e["entity"]), ("Zone", ", ".join(e["zones"]) or "–"),
          ("Application", ", ".join(e["applications"]) or "–"),
          ("Seen", f"{_t(e['first_seen'])} to {_t(e['last_seen'])}"),
          ("Windows", f"{n:,} finding(s)" + (", numbers " + ", ".join(f"{a}–{b}" if b > a else str(a)
                                                                       for a, b in _runs(e["findings"]))
                                              if e["findings"] else "")),
          ("Correlation", f"{', '.join(e['correlation']) or '–'}, exposure {e['exposure']}"),
          ("Indicators", ", ".join(e["indicators"]) or "–"), ("Seen where", ", ".join(e["seen_where"]) or "–"),
          ("Topics", ", ".join(e["topics"]) or "–"), ("Destinations", ", ".join(e["destinations"]) or "–"),
          ("Volume", f"{_int(e['bytes_scaled'])} bytes scaled ({_int(e['bytes'])} raw), {_int(e['messages'])} "
                     f"messages, {_int(e['flows'])} flows"),
          ("Severity", f"{e['severity']} ({e['score']:.0f}): " + "; ".join(e["severity_reasons"])),
          ("Basis", ", ".join(e["basis"]) or "–")]
    out = [f'<article class="card card-{_e(e["severity"])}" id="e{k}">',
           f"<h3>{k}. {_sev(e['severity'])} {_e(e['platform'])} &middot; {_e(e['rule'])} &middot; "
           f'<span class="wrap">{_e(e["entity"])}</span></h3><dl>']
    out += [f"<dt>{_e(a)}</dt><dd class=\"wrap\">{_e(b)}</dd>" for a, b in dl]
    out.append("</dl>")
    if e["data_classes"]:
        out.append(_table([("Data class", False), ("Sensitivity", False), ("Occurrences", True), ("Findings", True)],
                          [[_e(c["data_class"]), _e(c["sensitivity"]), _int(c["occurrences"]), _int(c["findings"])]
                           for c in e["data_classes"]], "compact"))
    samples = e["samples"][:CARD_SAMPLES]
    if samples:
        out.append(_table([("Topic or file", False), ("Part.", True), ("Offset / row", True), ("Msg", True),
                           ("Class", False), ("Location", False), ("Value (masked)", False), ("HMAC", False)],
                          [[f'<span class="wrap mono">{_e(s["source"])}</span>', _int(s["partition"]),
                            _int(s["offset"]), _int(s["msg_index"]), _e(s["data_class"]),
                            f'<span class="mono wrap">{_e(s["location"])}</span>',
                            f'<span class="mono">{_e(s["value_masked"])}</span>',
                            f'<span class="mono">{_e(s["value_hmac"][:10])}</span>'] for s in samples], "samples"))
        rest = e["occurrences"] - len(samples)
        if rest > 0:
            kept = len(e["samples"]) - len(samples)
            out.append(f'<p class="small muted">{_int(rest)} more occurrence(s) not shown'
                       + (f" ({kept} more sample(s) in report.json)" if kept else "") + ".</p>")
    else:
        out.append('<p class="small muted">No sample: no data class could be attributed to this episode.</p>')
    out.append("</article>")
    return "".join(out)


def _coverage(d: dict) -> str:
    c = d["coverage"]
    out = ['<section id="coverage"><h2>4. Coverage</h2>',
           "<p>What the audit read, so that a platform without a finding means something: no finding within these "
           "rows and this time span.</p>"]
    if c["caveats"]:
        out.append('<h3>Limits</h3><ul class="caveats">' + "".join(f"<li>{_e(x)}</li>" for x in c["caveats"]) + "</ul>")
    r, o = c["rows"], c["other_rows"]
    out.append("<h3>Rows</h3>")
    out.append(_table([("Dataset", False), ("Rows", True), ("Note", False)], [
        ["messages", _int(r["messages"]), "decoded messages (EDIFACT, X12, XML, JSON ...)"],
        ["quarantine", _int(r["quarantine"]), "undecodable rows, kept sealed; not inspected"],
        ["flows", _int(r["flows"]), "NetFlow / IPFIX flow records"],
        ["<strong>total read</strong>", f"<strong>{_int(r['total'])}</strong>", "messages + quarantine + flows"],
        ["hits", _int(o.get("hits")) if o.get("hits") is not None else "absent", "sensitive values found"],
        ["transfers", _int(o.get("transfers")) if o.get("transfers") is not None else "absent",
         "traffic to a watchlisted platform or against the zone policy"],
        ["findings", _int(o.get("findings")) if o.get("findings") is not None else "absent",
         "rows of the findings dataset"]]))
    inp = c["inputs"]
    out.append("<h3>Inputs</h3>")
    if inp["recorded"]:
        st = ", ".join(f"{v:,} {k}" for k, v in inp["by_status"].items())
        out.append(f"<p>{inp['count']:,} input(s): {_e(st)}; {_int(inp['rows'])} rows, {_int(inp['bytes'])} bytes "
                   f"as recorded by the audit.</p>")
        out.append(_table([("Path", False), ("Layout", False), ("Rows", True), ("Bytes", True), ("Status", False),
                           ("Error", False)],
                          [[f'<span class="mono wrap">{_e(i["path"])}</span>', _e(i["layout"] or "–"), _int(i["rows"])
                            if i["rows"] is not None else "–", _int(i["bytes"]) if i["bytes"] is not None else "–",
                            f'<span class="verdict {"violated" if i["status"] == "failed" else ""}">{_e(i["status"])}</span>',
                            _e(i["error"] or "")] for i in inp["list"]], "long"))
    else:
        out.append('<p class="empty">Not recorded: no manifest.</p>')
    if c.get("dns_logs"):
        out.append("<h3>DNS logs</h3><p>Zeek DNS logs read to name the flows' addresses (audit --dns).</p>")
        num = lambda v: _int(v) if isinstance(v, int) else "–"  # noqa: E731
        out.append(_table([("Path", False), ("Records", True), ("Not DNS records (quarantined)", True),
                           ("Answers for watchlisted names", True), ("First", False), ("Last", False)],
                          [[f'<span class="mono wrap">{_e(x["path"])}</span>', num(x["records"]), num(x["bad"]),
                            num(x["watched_answers"]), _e(_t(x["first"])), _e(_t(x["last"]))]
                           for x in c["dns_logs"]], "long"))
    t = c["time"]
    out.append("<h3>Time span</h3>")
    out.append(_kv([
        ("Data from", _e(_t(t["first"]))), ("Data until", _e(_t(t["last"]))),
        ("Audit window (since / until)", f"{_e(t['since'])} / {_e(t['until'])}"),
        ("Hours in the span", _int(t["span_hours"])), ("Hours with data", _int(t["hours_with_data"])),
        ("Hours without data (gaps)", _int(t["gap_hours"])), ("Rows without a time", _int(t["rows_without_time"]))]))
    if t["gaps"]:
        gaps = t["gaps"]
        out.append(_table([("Gap from", False), ("to", False), ("Hours", True)],
                          [[_e(_t(g["from"])), _e(_t(g["to"])), _int(g["hours"])] for g in gaps[:100]], "long"))
        if len(gaps) > 100:
            out.append(f'<p class="small muted">{len(gaps) - 100:,} more gap(s) in report.json.</p>')
    ch = t["chart"]
    if ch["rows"]:
        out.append(_figure(svg.time_bars("chart-rows", "Rows read over time",
                                         f"Messages, quarantined rows and flow records per time bin; {t['gap_hours']} "
                                         f"hour(s) without data.", ch["bins_ns"], ch["bin_s"],
                                         [("rows read", ch["rows"])], _int, "rows", mark_empty=True),
                           "Rows read over time", "messages + quarantined rows + flow records; a shaded bin is a "
                           "time without data"))
    out.append("<h3>Quarantined rows by reason</h3>")
    q = c["quarantine_by_reason"]
    if q:
        out.append(_table([("Reason", False), ("Rows", True)], [[_e(k), _int(v)] for k, v in q.items()]
                          + [["<strong>all</strong>", f"<strong>{_int(sum(q.values()))}</strong>"]]))
    else:
        out.append('<p class="empty">None.</p>')
    out.append("<h3>Formats seen</h3>")
    if c["formats"]:
        out.append(_table([("Dataset", False), ("Format", False), ("Rows", True), ("Bytes", True)],
                          [[_e(x["dataset"]), _e(x["format"]), _int(x["rows"]),
                            _int(x["bytes"]) if x["bytes"] is not None else "–"] for x in c["formats"]]))
    else:
        out.append('<p class="empty">None.</p>')
    s = c["sources"]
    out.append(f'<p class="small muted">Distinct sources (topics or input files): {s["messages"]:,} in messages, '
               f'{s["quarantine"]:,} in quarantine, {s["flows"]:,} in flows.</p>')
    out.append("</section>")
    return "".join(out)


def _method(d: dict) -> str:
    m = d["method"]
    out = ['<section id="method"><h2>5. Method</h2>',
           "<p>The versions that produced the rows: as the audit recorded them (with their SHA-256), and as the rows "
           "themselves carry them. A mismatch means rows from another run are under ROOT.</p>"]
    labels = {"catalog": "Catalogue of data classes", "watchlist": "Watchlist", "policy": "Zone policy",
              "severity_model": "Severity model", "schema": "Dataset schema"}
    rows = []
    for k, v in m["versions"].items():
        rec = v["recorded"]
        seen = _e(", ".join(v["seen_in_data"]) or "–")
        if v.get("matches") is False:
            seen += ' <span class="verdict violated">differs</span>'
        rows.append([_e(labels.get(k, k)), _e(rec["version"]), f'<span class="mono wrap small">{_e(rec["sha256"])}</span>',
                     seen])
    out.append(_table([("Component", False), ("Version (recorded)", False), ("SHA-256 (recorded)", False),
                       ("Seen in the rows", False)], rows))
    out.append("<h3>Run</h3>")
    fo = m["findings"]
    fnote = {"dataset": f"read from the findings dataset ({fo['files']:,} file(s), {fo['rows_read']:,} rows, "
                        f"{fo['duplicates_dropped']:,} duplicate(s) dropped)",
             "computed": fo.get("note", ""), "absent": fo.get("note", "")}[fo["source"]]
    wl = m["watchlist_read_by_report"]
    out.append(_kv([
        ("Command", f'<code class="wrap">{_e(m["command"])}</code>'), ("Engine", _e(m["engine"])),
        ("Workers", _e(m["workers"])), ("Started", _e(m["started"])), ("Finished", _e(m["finished"])),
        ("Since / until", f"{_e(m['since'])} / {_e(m['until'])}"),
        ("Manifest", f'<span class="wrap">{_e(m["manifest"])}</span>'), ("Findings", _e(fnote)),
        ("Platforms listed from", f'watchlist {_e(wl["version"])} <span class="mono wrap small">'
                                  f'{_e(", ".join(wl["files"]))}</span>'),
        ("Report", _e(f"{m['generator']}, dataset schema {m['dataset_schema_version']}, generated {d['generated']}"))]))
    sm = m["severity_model"]
    out.append(f"<h3>Severity levels (model {_e(sm['version'])})</h3>")
    out.append("<p>score = max(platform tier weight, policy rule weight) + zone-kind weight of the asset + sensitivity "
               "weight of the most sensitive class &times; exposure factor + volume points "
               "(<code>schemas/severity.toml</code>).</p>")
    out.append(_table([("Level", False), ("Minimum score", True)],
                      [[_sev(x["level"]), f"{x['min_score']:g}"] for x in sm["levels"]]))
    out.append("<h3>Basis</h3>")
    out.append(_table([("Id", False), ("Title", False), ("Source (not linked: the report opens offline)", False)],
                      [[f"<code>{_e(b['id'])}</code>", _e(b["title"]), f'<span class="mono wrap small">{_e(b["source"])}</span>']
                       for b in sm["basis"]]))
    out.append("</section>")
    return "".join(out)


def render_html(data: dict) -> str:
    """The report page: one self-contained HTML string."""
    t = data["coverage"]["time"]
    title = f"flowaudit audit report: {data['headline']['title']}"
    toc = "".join(f'<li><a href="#{a}">{_e(b)}</a></li>' for a, b in (
        ("verdicts", "Verdict per platform"), ("charts", "Charts"), ("findings", "Findings, worst first"),
        ("coverage", "Coverage"), ("method", "Method")))
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="color-scheme" content="light">',
        f'<meta name="generator" content="{_e(data["method"]["generator"])}">',
        '<link rel="icon" href="data:,">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>",
        "<header><h1>Logistics data-flow audit</h1>",
        f'<p class="sub">ROOT <code class="wrap">{_e(data["root"])}</code> &middot; data {_e(_t(t["first"]))} to '
        f'{_e(_t(t["last"]))} &middot; generated {_e(_t(data["generated"]))}</p></header>',
        _headline(data),
        f'<nav class="toc" aria-label="Contents"><strong>Contents</strong><ol>{toc}</ol></nav>',
        _summary(data), _charts(data), _findings(data), _coverage(data), _method(data),
        "<footer>flowaudit: which sensitive port logistics data moves, and whether it reaches LOGINK (46 U.S.C. 50309, "
        "MARAD Advisory 2024-002) or a vendor's remote-access endpoint. Values are masked; HMACs join equal values "
        "without revealing them. The same numbers are in report.json beside this file.</footer>",
        "</main></body></html>\n"])
