"""Hand-written inline SVG charts for the audit report: no script, no external resource.

Two shapes cover the report's charts:

* :func:`time_bars`: small multiples, one bar panel per series over shared time bins, each panel
  with its own scale and its largest value written out (bytes to each platform, violations per
  zone, rows read per bin);
* :func:`heatmap`: a matrix of labelled cells (data classes x platform, host x platform), the
  number written in every cell so that it reads in print and in grey.

Every chart is ``role="img"`` with a ``<title>`` and ``<desc>``, axis titles in words, and a
``<title>`` on each bar or cell.  All text is escaped.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from html import escape

WIDTH = 720     # the width of an A4 page's text: the fonts print at their size
_LOW = (238, 243, 250)     # the lightest cell
_HIGH = (91, 143, 208)     # the darkest: dark text stays readable on it, in colour and in grey
BAR = "#3b6fb6"
BAR_ALT = "#c2571a"


def _e(s) -> str:
    return escape(str(s), quote=True)


def _shade(frac: float) -> str:
    f = min(1.0, max(0.0, frac))
    c = [round(a + (b - a) * f) for a, b in zip(_LOW, _HIGH)]
    return f"#{c[0]:02x}{c[1]:02x}{c[2]:02x}"


def _open(uid: str, w: int, h: int, title: str, desc: str, kind: str) -> str:
    return (f'<svg id="{_e(uid)}" class="chart {kind}" role="img" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
            f'preserveAspectRatio="xMinYMin meet" aria-labelledby="{_e(uid)}-t {_e(uid)}-d">'
            f'<title id="{_e(uid)}-t">{_e(title)}</title><desc id="{_e(uid)}-d">{_e(desc)}</desc>')


def _text(x, y, s, size=12, anchor="start", weight=None, fill="#1b1f24", extra="") -> str:
    w = f' font-weight="{weight}"' if weight else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}"{w}{extra}>'
            f'{_e(s)}</text>')


def bin_label(ns: int, bin_s: int, full: bool = False) -> str:
    t = datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)
    if bin_s >= 86400:
        return f"{t:%Y-%m-%d}"
    return f"{t:%Y-%m-%d %H:%M}" if full else f"{t:%m-%d %H:%M}"


def bin_name(bin_s: int) -> str:
    """A whole number of seconds in the largest unit that divides it: "1 hour", "90 seconds"."""
    for unit, name in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if bin_s and bin_s % unit == 0 or unit == 1:
            n = bin_s // unit
            return f"{n} {name}" + ("" if n == 1 else "s")


def time_bars(uid: str, title: str, desc: str, bins_ns: list[int], bin_s: int, series: list[tuple[str, list]],
              fmt, unit: str, color: str = BAR, mark_empty: bool = False) -> str:
    """One bar panel per (label, values) over ``bins_ns``; ``fmt`` writes a value.  ``mark_empty``:
    a bin without a value is shaded and labelled "no data" (a gap in coverage)."""
    left, right, top, panel_h, gap = 150, 12, 14, 56, 30
    n = max(1, len(bins_ns))
    plot_w = WIDTH - left - right
    h = top + len(series) * (panel_h + gap) + 46
    out = [_open(uid, WIDTH, h, title, desc, "bars")]
    slot = plot_w / n
    bw = max(1.0, min(slot * 0.78, 56.0))
    for i, (label, values) in enumerate(series):
        y0 = top + i * (panel_h + gap) + 14          # top of the panel
        base = y0 + panel_h
        vmax = max(values) if values else 0
        out.append(_text(left - 12, y0 + 18, label, 13, "end", "600"))
        out.append(_text(left - 12, y0 + 36, f"max {fmt(vmax)}" if vmax else "none", 11, "end", fill="#4a525c"))
        out.append(f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="#8a939e" '
                   f'stroke-width="1"/>')
        imax = values.index(vmax) if values and vmax else -1
        # every bar's value over it only where each fits its slot (10 px digits are about 5.8 px
        # wide): otherwise neighbours' labels overlap, and only the tallest bar is labelled
        label_all = n <= 24 and max([len(fmt(v)) for v in values if v] + [0]) * 5.8 + 2 <= slot
        if mark_empty:   # one shaded band per run of empty bins
            j = 0
            while j < len(values):
                if values[j]:
                    j += 1
                    continue
                k = j
                while k < len(values) and not values[k]:
                    k += 1
                x, wd = left + j * slot, (k - j) * slot
                end = bin_label(bins_ns[k - 1] + bin_s * 1_000_000_000, bin_s, True)
                out.append(f'<rect x="{x:.1f}" y="{y0:.1f}" width="{wd:.1f}" height="{panel_h}" fill="#eceef1">'
                           f'<title>{_e(bin_label(bins_ns[j], bin_s, True))} to {_e(end)} UTC: no data</title></rect>')
                if wd >= 44:
                    out.append(_text(x + wd / 2, y0 + panel_h / 2 + 4, "no data", 10, "middle", fill="#4a525c"))
                j = k
        for j, v in enumerate(values):
            if not v:
                continue
            bh = max(1.5, panel_h * v / vmax)
            x = left + j * slot + (slot - bw) / 2
            when = bin_label(bins_ns[j], bin_s, True)
            out.append(f'<rect x="{x:.1f}" y="{base - bh:.1f}" width="{bw:.1f}" height="{bh:.1f}" fill="{color}">'
                       f'<title>{_e(label)}, {_e(when)} UTC: {_e(fmt(v))} {_e(unit)}</title></rect>')
            if label_all or j == imax:
                out.append(_text(x + bw / 2, base - bh - 3, fmt(v), 10, "middle"))
    # the time axis under the last panel: the date once when every bin is on one day
    axis_y = top + len(series) * (panel_h + gap) + 4
    days = {bin_label(b, 86400) for b in bins_ns}
    if bin_s < 86400 and len(days) == 1:
        ticks = [datetime.fromtimestamp(b / 1e9, tz=timezone.utc).strftime("%H:%M") for b in bins_ns]
        axis = f"time (UTC) on {days.pop()}, one bar per {bin_name(bin_s)}"
    else:
        ticks = [bin_label(b, bin_s) for b in bins_ns]
        axis = f"time (UTC), one bar per {bin_name(bin_s)}"
    step = max(1, math.ceil((max([len(t) for t in ticks] + [1]) * 6.6 + 10) / slot))
    for j in range(0, len(bins_ns), step):
        x = left + j * slot + slot / 2
        out.append(f'<line x1="{x:.1f}" y1="{axis_y - 16}" x2="{x:.1f}" y2="{axis_y - 12}" stroke="#8a939e"/>')
        out.append(_text(x, axis_y, ticks[j], 11, "middle"))
    out.append(_text(left + plot_w / 2, axis_y + 22, axis, 12, "middle", fill="#4a525c"))
    out.append(_text(14, top + (h - top) / 2, unit, 12, "middle", fill="#4a525c",
                     extra=f' transform="rotate(-90 14 {top + (h - top) / 2:.1f})"'))
    out.append("</svg>")
    return "".join(out)


def heatmap(uid: str, title: str, desc: str, rows: list[tuple[str, str]], cols: list[str],
            cells: dict[tuple[int, int], tuple[float, str]], row_title: str, col_title: str) -> str:
    """A matrix: ``rows`` (label, note), ``cols`` labels, ``cells`` (row, col) -> (value, text)."""
    longest = max([len(r[0]) + (len(r[1]) + 3 if r[1] else 0) for r in rows] + [len(row_title)])
    label_w = min(300, max(110, 7 * longest + 24))
    cell_w = max(64, min(140, (WIDTH - label_w - 10) // max(1, len(cols))))
    cell_h, top = 26, 56
    w = label_w + cell_w * len(cols) + 10     # wider than WIDTH only with many platforms: scaled to fit
    h = top + cell_h * len(rows) + 12
    vmax = max([v for v, _ in cells.values()] + [0])
    out = [_open(uid, w, h, title, desc, "heat")]
    out.append(_text(label_w + cell_w * len(cols) / 2, 16, col_title, 12, "middle", fill="#4a525c"))
    out.append(_text(label_w - 10, top - 10, row_title, 12, "end", fill="#4a525c"))
    chars = max(4, int(cell_w / 7))
    for c, name in enumerate(cols):
        x = label_w + c * cell_w + cell_w / 2
        short = name if len(name) <= chars else name[:chars - 1] + "\u2026"
        out.append(f'<g>{_text(x, top - 10, short, 12, "middle", "600")}<title>{_e(name)}</title></g>')
    for r, (label, note) in enumerate(rows):
        y = top + r * cell_h
        shown = label if len(label) <= 46 else label[:45] + "\u2026"
        out.append(f'<g>{_text(label_w - 10, y + cell_h / 2 + 4, shown + (f" ({note})" if note else ""), 12, "end")}'
                   f'<title>{_e(label)}</title></g>')
        for c, name in enumerate(cols):
            x = label_w + c * cell_w
            v, txt = cells.get((r, c), (0, ""))
            fill = _shade(math.sqrt(v / vmax)) if v and vmax else "#ffffff"
            out.append(f'<rect x="{x + 1}" y="{y + 1}" width="{cell_w - 2}" height="{cell_h - 2}" fill="{fill}" '
                       f'stroke="#d7dce2"><title>{_e(label)} / {_e(name)}: {_e(txt or "none")}</title></rect>')
            out.append(_text(x + cell_w / 2, y + cell_h / 2 + 4, txt or "\u2013", 11, "middle",
                             fill="#1b1f24" if txt else "#9aa3ad"))
    out.append("</svg>")
    return "".join(out)
