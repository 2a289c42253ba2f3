"""Results of a bench run as JSON (validated), a Markdown table and PNG plots."""
from __future__ import annotations

import json
from pathlib import Path

from flowaudit import schemas


def schema() -> dict:
    return json.loads(schemas.path("bench-result.schema.json").read_text())


def validate(res: dict) -> list[str]:
    """Schema errors (empty when valid); a missing jsonschema is one error line, not a crash."""
    try:
        import jsonschema
    except ImportError:
        return ["jsonschema is not installed: bench.json was not validated (pip install jsonschema)"]
    doc = json.loads(json.dumps(res, default=str))
    v = jsonschema.Draft202012Validator(schema())
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in v.iter_errors(doc)]


# ------------------------------------------------------------------------------------ markdown

def _f(x, nd=1) -> str:
    if x is None:
        return "–"
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}" if nd else f"{x:.0f}"
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def _rss(mem) -> str:
    if not mem:
        return "–"
    if mem.get("start_rss_mb") is None:
        return _f(mem["peak_rss_mb"])
    return f"{mem['peak_rss_mb']:.0f} (+{max(0.0, mem['peak_rss_mb'] - mem['start_rss_mb']):.0f})"


def _spread(t) -> str:
    if not t:
        return "–"
    return f"{t['min_s'] * 1e3:.1f}–{t['max_s'] * 1e3:.1f}"


def _items(rate, unit) -> str:
    if rate is None:
        return "–"
    for div, suf in ((1e6, " M"), (1e3, " k")):
        if rate >= div:
            return f"{rate / div:.2f}{suf} {unit or ''}/s".strip()
    return f"{rate:.0f} {unit or ''}/s"


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# flowaudit bench ({res['mode']}, {res['created']})", "",
             f"Machine: **{m['cpu_model']}**, {m['cores_usable']} usable cores ({m['cores_logical']} logical), "
             f"{m.get('mem_gb')} GB, {m['python']}; single-threaded unless a sweep says otherwise.  ",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".  ",
             f"Corpus: seed {res['config']['seed']}, {res['config']['size_mb']:g} MB per format; "
             f"{res['config']['repeats']} timed repeats after 1 warm-up, median (min–max ms); MB = 10^6 bytes; "
             "ratio = flowaudit MB/s / peer MB/s (>1: flowaudit faster).", "",
             "| stage | implementation | version | MB scanned | MB/s | items/s | ms median (min–max) | ratio | "
             "peak RSS MB (+ over start) | counts |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for s in res["stages"]:
        if s["status"] != "ok":
            lines.append(f"| {s['name']} | flowaudit | | | | | | | | {s['status']}: {s['reason']} |")
            continue
        t = s["timing"]
        timing = f"{t['median_s'] * 1e3:.1f} ({_spread(t)})" if t else ""  # external stages time themselves
        lines.append(f"| **{s['name']}** | **flowaudit** | {m['versions'].get('flowaudit', '')} | "
                     f"{(s.get('bytes') or 0) / 1e6:.1f} | **{_f(s['mb_per_s'])}** | {_items(s['items_per_s'], s['item_unit'])} | "
                     f"{timing} | | "
                     f"{_rss(s['memory'])} | "
                     + ", ".join(f"{k} {v:,}" for k, v in s["counts"].items()) + " |")
        for p in s["peers"]:
            if p["status"] != "ok":
                lines.append(f"| | {p['name']} | {p['version']} | | | | | | | {p['status']}: {p['reason']} |")
                continue
            pt = p["timing"]
            ptiming = f"{pt['median_s'] * 1e3:.1f} ({_spread(pt)})" if pt else ""
            check = p["counts_check"]["text"] if p.get("counts_check") else ""
            if p.get("engines_check") and p["engines_check"]["status"] != "agree" or \
                    (p.get("engines_check") and "reference" not in p["engines_check"]["text"]):
                check += ("; " if check else "") + p["engines_check"]["text"]
            pre = " (prefix)" if p.get("prefix") else ""
            lines.append(f"| | {p['name']} | {p['version']} | {p['bytes'] / 1e6:.1f}{pre} | {_f(p['mb_per_s'])} | "
                         f"{_items(p['items_per_s'], p.get('item_unit'))} | {ptiming} | "
                         f"**{_f(p['ratio'])}×** | {_rss(p.get('memory'))} | "
                         f"{check} |")
        ex = s.get("extra") or {}
        if s["group"] == "e2e" and ex:
            lines.append(f"| | *pipeline / bare ratio* | | | | | | **{ex['ratio_pipeline_to_bare']:.2f}** | | "
                         f"poll {ex['poll_max_messages']}, warm-up {_f(ex.get('warmup_seconds'))} s |")
            if ex.get("workers_scaling_to_last_row") is not None:
                lines.append(f"| | *`stream --workers 2` (one group) / bare ratio* | | | | | | "
                             f"**{ex['ratio_workers2_to_bare']:.2f}** | | 1 -> 2 workers: "
                             f"{ex['workers_scaling_to_last_row']:.2f}x to the last row durable, "
                             f"{ex['workers_scaling_to_exit']:.2f}x to the last exit (the drain included) |")
        if s["group"] == "memory" and ex.get("runs"):
            for x in ex["runs"]:
                lines.append(f"| | *{x['messages']:,} messages ({x['mb']:.0f} MB)* | | | | | "
                             f"{x['seconds'] * 1e3:.0f} | | "
                             f"{x['peak_rss_mb']:.0f} (anon {x['peak_anon_mb']:.0f}) | bare consume loop "
                             f"{x['bare_peak_rss_mb']:.0f} MB; {x['budget_flushes']} buffer-budget flushes; "
                             f"target <= {ex['target_mb']} MB |")
        if s["group"] == "batch" and "batch_latency_ms_median" in ex:
            per = (f"{ex['batch_size']} messages per batch" if "batch_size" in ex
                   else f"{ex['batch_bytes'] >> 20} MiB per batch, {ex['batches']} batches")
            lines.append(f"| | *per batch* | | | | | {ex['batch_latency_ms_median']:.1f} median, "
                         f"{ex['batch_latency_ms_p95']:.1f} p95 | | | {per} |")
        if ex.get("ratio_scan_to_kernels") is not None:
            lines.append(f"| | *scan / kernels ratio* | | | | | | **{ex['ratio_scan_to_kernels']:.2f}** | | "
                         f"target >= 0.70; {ex.get('kernel_threads', 1)} kernel threads |")
        if ex.get("ratio_classify_only_to_kernels") is not None:
            lines.append(f"| | *scan without Parquet / kernels* | | | | | | "
                         f"**{ex['ratio_classify_only_to_kernels']:.2f}** | | "
                         f"{ex['classify_only_mb_per_s']:.1f} MB/s: the classification alone |")
        if s["group"] in ("netflow", "ipset") and ex.get("result"):
            lines.append(f"| | *{ex.get('called', '')}* | | | | | | | | see bench.json `extra.result` |")
    cs = res.get("cold_start")
    if cs:
        lines += ["", "**Cold start** (" + cs.get("method", "") + "): " + _cold(cs)]
    for sw in res["sweeps"]:
        lines += ["", f"**Sweep {sw['knob']}** ({sw['unit']})" + (f": {sw['note']}" if sw.get("note") else "")]
        if sw.get("error"):
            lines.append(f"error: {sw['error']}")
            continue
        series = []
        for pnt in sw["points"]:
            for k in pnt["series"]:
                if k not in series:
                    series.append(k)
        lines += ["", "| " + sw["knob"] + " | " + " | ".join(f"{k} MB/s | {k} ms" for k in series) + " |",
                  "|---" * (1 + 2 * len(series)) + "|"]
        for pnt in sw["points"]:
            cells = []
            for k in series:
                v = pnt["series"].get(k)
                cells += [_f(v["mb_per_s"]), f"{v['latency_ms']:.2f}"] if v else ["–", "–"]
            lines.append(f"| {pnt['value']} | " + " | ".join(cells) + " |")
    for n in res.get("notes", []):
        lines.append(f"\nNote: {n}")
    lines.append(f"\nRun time {res['seconds']:.0f} s.")
    return "\n".join(lines)


def _cold(cs: dict) -> str:
    if cs.get("skipped"):
        return "skipped: " + cs["skipped"]
    out = []
    for k in ("cold", "warm"):
        r = cs.get(k) or {}
        if r.get("status") == "ok":
            out.append(f"{k} {r['process_s']:.1f} s (import {r['import_s']:.1f} s + kernels {r['kernels_s']:.1f} s"
                       + "".join(f", {f} {x:.0%}" for f, x in (r.get("per_format_share") or {}).items())
                       + (f"; CPU {r['kernels_cpu_s']:.1f} s" if r.get("kernels_cpu_s") is not None else "")
                       + (f"; {r['compiles']} compiles" if r.get("compiles") else "") + ")")
        else:
            out.append(f"{k}: error {r.get('reason')}")
    w = cs.get("warmup")
    if w:
        done = [f"{k} {w[k]['process_s']:.1f} s" + (f" ({w[k]['cache_files']} cache files)" if k == "cold" else "")
                if (w.get(k) or {}).get("status") == "ok" else f"{k}: error {(w.get(k) or {}).get('reason')}"
                for k in ("cold", "warm")]
        out.append(f"`flowaudit warmup` as installed (every kernel, default --jobs, {w.get('cpus')} CPUs): "
                   + ", ".join(done))
    return "; ".join(out)


# --------------------------------------------------------------------------------------- plots

_FA = "#1f6feb"
_PEER = ["#d97706", "#7c3aed", "#059669", "#dc2626", "#6b7280", "#0891b2", "#be185d"]
# one colour per peer family, the same in every stage
_FAMILY = (("python-hyperscan", "#0891b2"), ("google-re2", "#7c3aed"), ("python re", "#059669"),
           ("pydifact", "#d97706"), ("orjson", "#d97706"), ("lxml iterparse", "#dc2626"), ("lxml", "#be185d"),
           ("python bytes", "#6b7280"), ("pyarrow", "#6b7280"), ("bare", "#d97706"))


def _peer_colour(name: str) -> str:
    return next((c for k, c in _FAMILY if name.startswith(k)), "#6b7280")


def plot_throughput(res: dict, path: Path) -> Path | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []   # (stage label, impl label, MB/s, is flowaudit, ratio)
    for s in res["stages"]:
        if s["status"] != "ok" or not s.get("mb_per_s"):
            continue
        rows.append((s["name"], "flowaudit", s["mb_per_s"], True, None))
        for p in s["peers"]:
            if p["status"] == "ok" and p.get("mb_per_s"):
                rows.append((s["name"], p["name"], p["mb_per_s"], False, p.get("ratio")))
    if not rows:
        return None
    fig_h = 1.0 + 0.27 * len(rows) + 0.16 * len({r[0] for r in rows})
    fig, ax = plt.subplots(figsize=(12, fig_h))
    ax.set_axisbelow(True)
    y, ticks, labels, colors = 0.0, [], [], []
    last = None
    for stage, impl, mbs, fa, ratio in rows:
        if stage != last and last is not None:
            y += 0.6
            ax.axhline(y - 0.8, color="#d0d7de", lw=0.8)
        last = stage
        c = _FA if fa else _peer_colour(impl)
        ax.barh(y, mbs, color=c, height=0.8)
        txt = f"{mbs:,.1f}" if mbs < 100 else f"{mbs:,.0f}"
        if ratio:
            txt += f"   (flowaudit {ratio:.2g}×)" if ratio < 10 else f"   (flowaudit {ratio:,.0f}×)"
        ax.text(mbs * 1.06, y, txt, va="center", fontsize=8, fontweight="bold" if fa else "normal")
        ticks.append(y)
        labels.append(f"{stage}: {impl}" if fa else impl)
        colors.append(c)
        y += 1
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=8)
    for t, c in zip(ax.get_yticklabels(), colors):
        if c == _FA:
            t.set_fontweight("bold")
    ax.set_ylim(y - 0.4, -0.6)
    ax.set_xscale("log")
    _plain_log(ax.xaxis)
    lo = min(r[2] for r in rows)
    hi = max(r[2] for r in rows)
    ax.set_xlim(lo / 2, hi * 12)
    ax.set_xlabel("MB/s (10^6 bytes/s, log scale) — one thread, median of repeats")
    m = res["machine"]
    ax.set_title(f"flowaudit (blue) vs peers on the same bytes — {m['cpu_model']}, {m['cores_usable']} cores, "
                 f"{res['mode']} run\n(flowaudit N×) = flowaudit MB/s ÷ peer MB/s", fontsize=10)
    ax.grid(axis="x", which="both", color="#eeeeee")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sweep(sw: dict, res: dict, path: Path) -> Path | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not sw.get("points"):
        return None
    series = []
    for p in sw["points"]:
        for k in p["series"]:
            if k not in series:
                series.append(k)
    cat = any(isinstance(p["value"], str) for p in sw["points"])
    xs_all = list(range(len(sw["points"]))) if cat else [p["value"] for p in sw["points"]]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.6))
    for i, k in enumerate(series):
        xs, mbs, lat = [], [], []
        for x, p in zip(xs_all, sw["points"]):
            v = p["series"].get(k)
            if v:
                xs.append(x)
                mbs.append(v["mb_per_s"])
                lat.append(v["latency_ms"])
        c = _FA if i == 0 else _PEER[(i - 1) % len(_PEER)]
        a1.plot(xs, mbs, "o-", color=c, label=k)
        a2.plot(xs, lat, "o-", color=c, label=k)
    for a, yl in ((a1, "throughput, MB/s"), (a2, "latency per batch, ms")):
        a.set_xlabel(f"{sw['knob']} ({sw['unit']})")
        a.set_ylabel(yl)
        a.grid(color="#eeeeee", which="both")
        if cat:
            a.set_xticks(xs_all)
            a.set_xticklabels([str(p["value"]) for p in sw["points"]])
        elif sw.get("log_x"):
            a.set_xscale("log")
        if sw["knob"] == "threads":
            a.set_xticks(xs_all)
    a2.set_yscale("log")
    _plain_log(a2.yaxis)
    if not cat and sw.get("log_x"):
        for a in (a1, a2):
            a.set_xticks(xs_all)
            a.set_xticklabels([f"{x:,}" for x in xs_all], rotation=30 if len(xs_all) > 6 else 0)
            a.xaxis.set_minor_formatter(_null())
    for pnt_i, (x, p) in enumerate(zip(xs_all, sw["points"])):
        for k, v in p["series"].items():
            if "output_mb" in v:
                a1.annotate(f"{v['output_mb']:.1f} MB out", (x, v["mb_per_s"]), textcoords="offset points",
                            xytext=(0, 8), ha="center", fontsize=7)
    top = max((v["mb_per_s"] for p in sw["points"] for v in p["series"].values()), default=1)
    a1.set_ylim(0, top * 1.15)
    a1.legend(fontsize=8)
    fig.suptitle(f"sweep: {sw['knob']} — {res['machine']['cpu_model']}", fontsize=10)
    if sw.get("note"):
        fig.text(0.5, 0.01, sw["note"], ha="center", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _null():
    from matplotlib.ticker import NullFormatter
    return NullFormatter()


def _plain_log(axis) -> None:
    """Log axis labelled 1, 2, 5, 10, 20 ... instead of 10^x."""
    from matplotlib.ticker import FuncFormatter, LogLocator
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_formatter(_null())


def plot_scaling(sw: dict, res: dict, path: Path) -> Path | None:
    """Speed-up over one thread per kernel, with the ideal line, 1..N cores."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = sw.get("points") or []
    if len(pts) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.6))
    ns = [p["value"] for p in pts]
    ax.plot(ns, ns, "--", color="#9ca3af", label="ideal")
    for i, k in enumerate(pts[0]["series"]):
        base = pts[0]["series"][k]["mb_per_s"]
        ys = [p["series"][k]["mb_per_s"] / base for p in pts if k in p["series"]]
        ax.plot(ns[:len(ys)], ys, "o-", color=_FA if i == 0 else _PEER[(i - 1) % len(_PEER)],
                label=f"{k} ({base:,.0f} MB/s at 1)")
    ax.set_xticks(ns)
    ax.set_xlabel("threads (nogil kernel calls, one shard each)")
    ax.set_ylabel("speed-up over 1 thread")
    ax.set_title(f"scaling 1..{ns[-1]} cores — {res['machine']['cpu_model']}, "
                 f"{res['machine']['cores_usable']} usable cores", fontsize=9)
    ax.grid(color="#eeeeee")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(res: dict, out: str | Path, plots: bool = True) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "bench.json", out / "bench.md"]
    paths[0].write_text(json.dumps(res, indent=2, default=str))
    paths[1].write_text(markdown(res) + "\n")
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("matplotlib is not installed: no PNGs (pip install matplotlib)")
            return paths
        p = plot_throughput(res, out / "throughput.png")
        if p:
            paths.append(p)
        for sw in res["sweeps"]:
            p = plot_sweep(sw, res, out / f"sweep-{sw['knob']}.png")
            if p:
                paths.append(p)
            if sw["knob"] == "threads":
                p = plot_scaling(sw, res, out / "scaling.png")
                if p:
                    paths.append(p)
    return paths
