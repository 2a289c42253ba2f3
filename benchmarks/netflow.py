"""NetFlow decode and ``collect`` throughput, side by side with peers in one run.

* decode: single-threaded records/s of the numba kernel (and of the whole shell: numeric view,
  and the Arrow FLOWS table) on v5, v9 and IPFIX datagrams, plus a ``dst net`` filter over the
  decoded arrays -- against (a) a plain-Python struct decoder on the same bytes and (b) nfdump
  filtering the same flows from its own file (``nfdump -r FILE -q -o csv 'dst net ...'`` and the
  filter-then-top-N form), the nfcapd file having been made by sending the same datagrams to
  ``nfcapd`` on loopback;
* collect: datagrams/s forwarded loss-free by ``flowaudit collect`` into the embedded broker,
  with a bounded, paced sender on 127.0.0.1 (real v9 datagrams of ~1.2 kB, 35 flows each).

    python -m benchmarks.netflow [--records 2000000] [--collect-rates 50000,80000,100000]

Prints the versions of the peers and a JSON summary.  Benchmarks, not tests: nothing asserts a time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from flowaudit.decode.netflow import NetflowDecoder
from flowaudit.kernels import netflow as K

DST_NET = (0xCB007100, 24)           # 203.0.113.0/24, the stand-in for the logistics platform
RECS_PER_DGRAM = {5: 30, 9: 35, 10: 35}
V9_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (5, 1), (1, 4), (2, 4), (22, 4), (21, 4), (10, 2),
             (14, 2)]
IPFIX_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (5, 1), (1, 8), (2, 8), (152, 8), (153, 8),
                (10, 4), (14, 4)]


# ------------------------------------------------------------------------------ data
def _flows(rng, n):
    src = (0x0A140000 | rng.integers(0, 1 << 16, n)).astype(np.uint32)
    dst = rng.integers(0x01000000, 0xDF000000, n).astype(np.uint32)
    hit = rng.random(n) < 0.02
    dst[hit] = DST_NET[0] | rng.integers(0, 256, hit.sum()).astype(np.uint32)
    sport = rng.integers(1024, 65535, n).astype(np.uint16)
    dport = rng.choice(np.array([443, 80, 22, 3389, 5938, 53], np.uint16), n)
    pk = rng.integers(1, 1000, n).astype(np.uint32)
    by = (pk * rng.integers(40, 1500, n)).astype(np.uint32)
    return src, dst, sport, dport, pk, by


def make_v5(n, seed=1):
    rng = np.random.default_rng(seed)
    src, dst, sport, dport, pk, by = _flows(rng, n)
    dt = np.dtype([("src", ">u4"), ("dst", ">u4"), ("nh", ">u4"), ("inp", ">u2"), ("out", ">u2"), ("pk", ">u4"),
                   ("by", ">u4"), ("first", ">u4"), ("last", ">u4"), ("sp", ">u2"), ("dp", ">u2"), ("pad", "u1"),
                   ("flags", "u1"), ("proto", "u1"), ("tos", "u1"), ("sas", ">u2"), ("das", ">u2"), ("sm", "u1"),
                   ("dm", "u1"), ("pad2", ">u2")])
    r = np.zeros(n, dt)
    r["src"], r["dst"], r["sp"], r["dp"], r["pk"], r["by"] = src, dst, sport, dport, pk, by
    r["proto"], r["flags"] = 6, 0x1B
    r["first"], r["last"] = 1_000_000, 1_060_000
    return _pack(r.tobytes(), 48, n, 5, lambda i, c: struct.pack(">HHIIIIBBH", 5, c, 2_000_000, 1_740_988_800 + i // 100,
                                                                   0, i * 30, 0, 0, 0))


def make_templated(n, version, seed=2):
    rng = np.random.default_rng(seed)
    src, dst, sport, dport, pk, by = _flows(rng, n)
    fields = V9_FIELDS if version == 9 else IPFIX_FIELDS
    fmt = {1: "u1", 2: ">u2", 4: ">u4", 8: ">u8"}
    dt = np.dtype([(f"f{j}", fmt[ln]) for j, (ie, ln) in enumerate(fields)])
    r = np.zeros(n, dt)
    vals = {8: src, 12: dst, 7: sport, 11: dport, 4: 6, 6: 0x1B, 1: by, 2: pk, 22: 1_000_000, 21: 1_060_000,
            152: 1_740_988_800_000, 153: 1_740_988_860_000}
    for j, (ie, ln) in enumerate(fields):
        if ie in vals:
            r[f"f{j}"] = vals[ie]
    reclen = dt.itemsize
    tpl = struct.pack(">HH", 256, len(fields)) + b"".join(struct.pack(">HH", ie, ln) for ie, ln in fields)
    tset = struct.pack(">HH", 0 if version == 9 else 2, 4 + len(tpl)) + tpl
    k = RECS_PER_DGRAM[version]

    def header(i, c):
        body = 4 + c * reclen
        sets = struct.pack(">HH", 256, body)
        if version == 9:
            h = struct.pack(">HHIIII", 9, c + (1 if i == 0 else 0), 2_000_000, 1_740_988_800 + i // 100, i, 1)
        else:
            extra = len(tset) if i == 0 else 0
            h = struct.pack(">HHIII", 10, 16 + extra + body, 1_740_988_800 + i // 100, i * k, 1)
        return h + (tset if i == 0 else b"") + sets
    return _pack(r.tobytes(), reclen, n, version, header)


def _pack(recs: bytes, reclen: int, n: int, version: int, header):
    k = RECS_PER_DGRAM[version]
    parts = []
    for i, s in enumerate(range(0, n, k)):
        c = min(k, n - s)
        parts.append(header(i, c) + recs[s * reclen:(s + c) * reclen])
    lens = np.fromiter(map(len, parts), np.int64, len(parts))
    offsets = np.zeros(len(parts) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    return parts, np.frombuffer(b"".join(parts), np.uint8), offsets


# ------------------------------------------------------------------------------ plain Python peer
def python_decode(parts, net=DST_NET):
    """A straightforward struct-based decoder + dst-net filter (v5, v9, IPFIX; fixed templates)."""
    mask = (0xFFFFFFFF << (32 - net[1])) & 0xFFFFFFFF
    templates = {}
    n = hits = 0
    v5rec = struct.Struct(">IIIHHIIIIHHBBBBHHBBH")
    for d in parts:
        version = int.from_bytes(d[:2], "big")
        if version == 5:
            cnt = int.from_bytes(d[2:4], "big")
            for r in v5rec.iter_unpack(d[24:24 + 48 * cnt]):
                n += 1
                if r[1] & mask == net[0]:
                    hits += 1
            continue
        p, end = (20, len(d)) if version == 9 else (16, int.from_bytes(d[2:4], "big"))
        while end - p >= 4:
            sid, slen = struct.unpack_from(">HH", d, p)
            if slen < 4:
                break
            if sid in (0, 2):
                tid, nf = struct.unpack_from(">HH", d, p + 4)
                fl = [struct.unpack_from(">HH", d, p + 8 + 4 * j) for j in range(nf)]
                fmt = ">" + "".join({1: "B", 2: "H", 4: "I", 8: "Q"}[ln] for _, ln in fl)
                templates[tid] = (struct.Struct(fmt), [ie for ie, _ in fl].index(12))
            elif sid >= 256 and sid in templates:
                st, di = templates[sid]
                body = d[p + 4:p + slen]
                usable = len(body) - len(body) % st.size
                for r in st.iter_unpack(body[:usable]):
                    n += 1
                    if r[di] & mask == net[0]:
                        hits += 1
            p += slen
    return n, hits


# ------------------------------------------------------------------------------ ours
def _chunks(offsets, batch):
    nd = offsets.shape[0] - 1
    for a in range(0, nd, batch):
        b = min(nd, a + batch)
        yield offsets[a:b + 1]


def kernel_only(buf, offsets, reps=3, batch=2000):
    """The kernel alone over the stream in batches of ``batch`` datagrams (a Kafka poll's worth),
    registry and work matrix carried across batches as in the stream service."""
    best = 1e9
    n = 0
    h = (np.zeros(0, np.uint8), np.zeros(1, np.int64), np.zeros((0, K.H_N), np.int64))
    out = np.empty((1024, K.NCOL), np.int64)
    for _ in range(reps):
        reg = K.new_registry()
        n = 0
        t0 = time.perf_counter()
        for off in _chunks(offsets, batch):
            exp_id = np.ones(off.shape[0] - 1, np.int64)
            out, k, *_ = K.decode_batch(buf, off, exp_id, 0, *h, reg["tmeta"], reg["tfields"], reg["tsel"],
                                        reg["thash"], reg["tfree"], reg["dmeta"], reg["dhash"], reg["dfree"],
                                        reg["state"], out)
            n += k
        best = min(best, time.perf_counter() - t0)
    return n, best


def shell_decode(buf, offsets, reps=2, table=False, batch=2000):
    """Decoder shell (numeric view, or the Arrow FLOWS table) + a ``dst net`` filter, in batches."""
    best = 1e9
    hits = n = 0
    lo = np.uint64(0xFFFF00000000 | DST_NET[0])
    m = np.uint64(((1 << 64) - 1) ^ ((1 << (32 - DST_NET[1])) - 1))
    for _ in range(reps):
        dec = NetflowDecoder()
        hits = n = 0
        t0 = time.perf_counter()
        for off in _chunks(offsets, batch):
            if table:
                num = dec.decode_result(buf, off, ["192.0.2.1"], np.zeros(off.shape[0] - 1, np.int32)).numeric
            else:
                num = _numeric_only(dec, buf, off)
            sel = (num["dst_hi"] == 0) & ((num["dst_lo"] & m) == lo)
            hits += int(sel.sum())
            n += num["bytes"].shape[0]
        best = min(best, time.perf_counter() - t0)
    return n, hits, best


def _numeric_only(dec, buf, offsets):
    """The decoder's kernel call plus the numeric view, without building the Arrow table."""
    r = dec.reg
    ids = np.ones(offsets.shape[0] - 1, np.int64)
    out, n, *_ = K.decode_batch(buf, offsets, ids, dec.template_ttl_s, dec._hbuf, dec._hoff, dec._hmeta,
                                r["tmeta"], r["tfields"], r["tsel"], r["thash"], r["tfree"], r["dmeta"], r["dhash"],
                                r["dfree"], r["state"], dec._out)
    dec._out = out
    u = out[:n].view(np.uint64)
    return {"dst_hi": u[:, K.C_DST_HI].copy(), "dst_lo": u[:, K.C_DST_LO].copy(), "bytes": u[:, K.C_BYTES].copy()}


# ------------------------------------------------------------------------------ nfdump peer
def nfdump_file(parts, tmp: Path, pps: int = 40_000) -> Path | None:
    if not shutil.which("nfcapd"):
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = tmp / f"nfcapd-{port}"
    d.mkdir()
    proc = subprocess.Popen(["nfcapd", "-w", str(d), "-p", str(port), "-b", "127.0.0.1", "-t", "3600", "-B",
                             str(64 << 20)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        send_paced(parts, port, pps)
        time.sleep(1.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    files = sorted(p for p in d.iterdir() if p.name.startswith("nfcapd.") and "current" not in p.name)
    return files[-1] if files else None


def nfdump_times(f: Path, reps=3) -> dict:
    net = f"dst net {DST_NET[0] >> 24}.{(DST_NET[0] >> 16) & 255}.{(DST_NET[0] >> 8) & 255}.0/{DST_NET[1]}"
    res = {}
    stat = subprocess.run(["nfdump", "-r", str(f), "-I"], capture_output=True, text=True).stdout
    flows = next((int(l.split(":")[1]) for l in stat.splitlines() if l.startswith("Flows:")), None)
    res["flows_in_file"] = flows
    for name, args in (("filter_csv", ["-q", "-o", "csv", net]), ("filter_topN", ["-q", "-s", "dstip/bytes", "-n", "10", net])):
        best = 1e9
        for _ in range(reps):
            t0 = time.perf_counter()
            subprocess.run(["nfdump", "-r", str(f), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            best = min(best, time.perf_counter() - t0)
        res[name] = {"seconds": best, "records_per_s": flows / best if flows else None}
    return res


# ------------------------------------------------------------------------------ collect
def send_paced(parts, port, pps, host="127.0.0.1"):
    """One bounded pass over ``parts`` at ``pps`` datagrams/s (0 = as fast as possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        dst = (host, port)
        t0 = time.perf_counter()
        burst = 50
        for i in range(0, len(parts), burst):
            for x in parts[i:i + burst]:
                s.sendto(x, dst)
            if pps:
                due = t0 + (i + burst) / pps
                while time.perf_counter() < due:
                    pass
        return time.perf_counter() - t0


def collect_trials(rates, n_dgrams, parts, rcvbuf=8 << 20):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from flowaudit.broker import EmbeddedBroker

    results = []
    with EmbeddedBroker() as b:
        for rate in rates:
            topic = f"bench-collect-{rate}-{os.getpid()}"
            b.create_topics({topic: 1})
            proc = subprocess.Popen([sys.executable, "-m", "flowaudit.flows", "collect", "--listen", "127.0.0.1:0",
                                     "--bootstrap", b.bootstrap, "--topic", topic, "--rcvbuf", str(rcvbuf)],
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            info = json.loads(proc.stdout.readline())
            port = int(info["listening"].rsplit(":", 1)[1])
            sent = [parts[i % len(parts)] for i in range(n_dgrams)]
            secs = send_paced(sent, port, rate)
            # let collect drain its socket, then stop it by PID
            time.sleep(2.0)
            os.kill(proc.pid, signal.SIGTERM)
            out, err = proc.communicate(timeout=120)
            final = json.loads(out.strip().splitlines()[-1])["final"]
            # count what the topic holds by reading it back (bounded)
            c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": topic, "enable.auto.commit": False})
            c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
            in_topic = 0
            deadline = time.monotonic() + 120
            idle = 0
            while in_topic < n_dgrams and time.monotonic() < deadline and idle < 10:
                got = [m for m in c.consume(num_messages=10000, timeout=0.5) if m.error() is None]
                idle = 0 if got else idle + 1
                in_topic += len(got)
            c.close()
            results.append({"offered_dgram_per_s": rate or "unpaced", "achieved_send_per_s": round(n_dgrams / secs),
                            "sent": n_dgrams, "received": final["datagrams"], "delivered": final["delivered"],
                            "in_topic": in_topic, "socket_drops": final["socket_drops"],
                            "backpressure_waits": final["backpressure_waits"], "rcvbuf": info["rcvbuf_bytes"],
                            "loss_free": final["datagrams"] == n_dgrams == in_topic})
    return results


def versions() -> dict:
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return None
    import numba

    sfd = None
    try:
        r = subprocess.run(["softflowd", "-h"], capture_output=True, text=True, timeout=10)
        sfd = next((l for l in (r.stdout + r.stderr).splitlines() if "version" in l), None)
    except OSError:
        pass
    return {"python": platform.python_version(), "numba": numba.__version__, "numpy": np.__version__,
            "nfdump": first_line(["nfdump", "-V"]), "softflowd": sfd, "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count()}


def _watchlist(n_prefixes: int = 100_000, seed: int = 3):
    """An IPSet of ``n_prefixes`` random IPv4 prefixes plus the two stand-in networks, or None."""
    try:
        from flowaudit.kernels.ipset import IPSet
    except ImportError:
        return None
    rng = np.random.default_rng(seed)
    lens = rng.integers(20, 33, n_prefixes)
    addrs = rng.integers(0x01000000, 0xDF000000, n_prefixes, dtype=np.int64)
    texts = [f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/{ln}"
             for a, ln in zip((addrs & ~((1 << (32 - lens)) - 1)).tolist(), lens.tolist())]
    return IPSet(texts + ["203.0.113.0/24", "198.51.100.0/24"])


def decode_match(buf, offsets, ipset, reps=2, batch=2000):
    """Kernel + numeric view + watchlist lookup of every destination (100k-prefix IPSet)."""
    best = 1e9
    hits = n = 0
    for _ in range(reps):
        dec = NetflowDecoder()
        hits = n = 0
        t0 = time.perf_counter()
        for off in _chunks(offsets, batch):
            num = _numeric_only(dec, buf, off)
            e = ipset.lookup(num["dst_hi"], num["dst_lo"])
            hits += int((e >= 0).sum())
            n += e.shape[0]
        best = min(best, time.perf_counter() - t0)
    return n, hits, best


def run(quick: bool = False, repeats: int = 3, records: int | None = None, python_records: int | None = None,
        nfdump: bool = True, collect: bool = True, collect_rates=None, collect_datagrams: int | None = None,
        collect_rcvbuf: int = 8 << 20, progress=None, scale: float = 1.0) -> dict:
    """The whole NetFlow benchmark; returns a JSON-able dict (the contract of benchmarks.suite):
    top-level ``records_per_s`` is v9 decode + watchlist match (or + ``dst net`` filter).  ``scale``
    (0-1) shrinks the default sizes, as the suite's ``--size-mb`` does for the format stages."""
    say = progress or (lambda *_: None)
    scale = min(1.0, max(scale, 0.01))
    records = records or max(10_000, int((300_000 if quick else 2_000_000) * scale))
    python_records = python_records or max(2_000, int((50_000 if quick else 200_000) * scale))
    collect_rates = collect_rates or ([80_000, 120_000] if quick else [50_000, 80_000, 100_000, 120_000, 150_000, 0])
    collect_datagrams = collect_datagrams or max(2_000, int((60_000 if quick else 300_000) * scale))
    summary = {"versions": versions(), "decode": {}, "batch_datagrams": 2000}
    NetflowDecoder().decode(np.zeros(0, np.uint8), np.zeros(1, np.int64), [], [])   # compile / load cache
    ipset = _watchlist()
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        for version, make in ((5, make_v5), (9, lambda n: make_templated(n, 9)), (10, lambda n: make_templated(n, 10))):
            say(f"netflow v{version}: {records:,} records")
            parts, buf, offsets = make(records)
            n, t_k = kernel_only(buf, offsets, reps=repeats)
            n2, hits, t_n = shell_decode(buf, offsets, reps=max(1, repeats - 1))
            small = min(len(parts), max(1, python_records // RECS_PER_DGRAM[version]))
            t0 = time.perf_counter()
            npy, _ = python_decode(parts[:small])
            t_py = time.perf_counter() - t0
            res = {"records": n, "kernel_records_per_s": n / t_k, "decode_filter_records_per_s": n2 / t_n,
                   "filter_hits": hits, "python_records_per_s": npy / t_py}
            if ipset is not None:
                n3, mhits, t_m = decode_match(buf, offsets, ipset, reps=max(1, repeats - 1))
                res["decode_match_records_per_s"] = n3 / t_m
                res["match_hits"] = mhits
                res["watchlist_prefixes"] = len(ipset.prefixes)
            nd = min(offsets.shape[0] - 1, 200_000 // RECS_PER_DGRAM[version])
            nt, _, t_t = shell_decode(buf, offsets[:nd + 1], reps=1, table=True)
            res["decode_to_arrow_records_per_s"] = nt / t_t
            res["ratio_kernel_vs_python"] = res["kernel_records_per_s"] / res["python_records_per_s"]
            res["ratio_decode_filter_vs_python"] = res["decode_filter_records_per_s"] / res["python_records_per_s"]
            if nfdump and version in (5, 9) and shutil.which("nfdump"):
                f = nfdump_file(parts, tmp)
                if f:
                    nf = nfdump_times(f, reps=repeats)
                    res["nfdump"] = nf
                    for k in ("filter_csv", "filter_topN"):
                        if nf[k]["records_per_s"]:
                            res[f"ratio_decode_filter_vs_nfdump_{k}"] = \
                                res["decode_filter_records_per_s"] / nf[k]["records_per_s"]
                            if "decode_match_records_per_s" in res:
                                res[f"ratio_decode_match_vs_nfdump_{k}"] = \
                                    res["decode_match_records_per_s"] / nf[k]["records_per_s"]
            summary["decode"][{5: "v5", 9: "v9", 10: "ipfix"}[version]] = res
    v9 = summary["decode"]["v9"]
    summary["records_per_s"] = v9.get("decode_match_records_per_s", v9["decode_filter_records_per_s"])
    if collect:
        say(f"collect: {collect_datagrams:,} datagrams at {collect_rates}")
        parts, _, _ = make_templated(RECS_PER_DGRAM[9] * 2000, 9)
        summary["collect"] = collect_trials(collect_rates, collect_datagrams, parts, collect_rcvbuf)
        ok = [r["achieved_send_per_s"] for r in summary["collect"] if r["loss_free"]]
        summary["collect_loss_free_max_dgram_per_s"] = max(ok) if ok else None
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (about 30 s)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--records", type=int, help="flow records per format (default 2M, quick 300k)")
    ap.add_argument("--python-records", type=int, help="records for the plain-Python peer")
    ap.add_argument("--collect-rates", help="datagrams/s offered to collect, comma separated (0 = unpaced)")
    ap.add_argument("--collect-datagrams", type=int,
                    help="datagrams per rate (default 300k: several times what the socket buffer holds)")
    ap.add_argument("--collect-rcvbuf", type=int, default=8 << 20,
                    help="collect's socket buffer (default 8 MiB, the cap nfcapd got in the corpus README)")
    ap.add_argument("--no-nfdump", action="store_true")
    ap.add_argument("--no-collect", action="store_true")
    args = ap.parse_args(argv)
    rates = [int(x) for x in args.collect_rates.split(",")] if args.collect_rates else None
    summary = run(quick=args.quick, repeats=args.repeats, records=args.records, python_records=args.python_records,
                  nfdump=not args.no_nfdump, collect=not args.no_collect, collect_rates=rates,
                  collect_datagrams=args.collect_datagrams, collect_rcvbuf=args.collect_rcvbuf,
                  progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(summary, indent=1, default=lambda x: round(x, 3) if isinstance(x, float) else str(x)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
