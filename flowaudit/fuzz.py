"""``flowaudit fuzz``: a seeded, structure-aware mutation fuzzer over every decoder entry point.

Targets (``--decoder``), each the code a real input goes through, shell included:

=============  ==============================================================================
``edifact``    ``pipeline.Classifier.run`` with the topic format declared (``x12``, ``xml``,
``x12``        ``json`` alike): decoder kernels, embedded EDIFACT, hits, quarantine, and the
``xml``        watchlist/marker scan of the decoded messages (``egress``)
``json``
``detect``     the same with format ``auto``: the format detector decides
``scan``       ``scan.split_interchanges`` (files of several EDI interchanges), then ``detect``
``embedded``   ``detect`` over JSON and XML documents that carry EDIFACT / X12 interchanges and
               base64 (of gzip) documents in their fields
``flat``       ``Classifier.run`` with the topic format ``flat`` declared: delimiter-separated flat
               files (ICES 0x1D/0x1C manifests, CSV/TSV/;/| with a header, fixed-width) through
               ``decode/flat.py`` (delimiter, header, columns), hits, quarantine, salvage, egress
``markers``    the payload marker scan (``kernels/markers.py`` through ``egress.message_matches``
               and ``EgressDetector.detect_messages``) and ``egress.envelope_recipients`` over
               every input, decodable or not
``netflow``    ``flowpath.FlowPath`` over export datagrams keyed by exporter:
               ``NetflowDecoder`` (v5/v9/IPFIX) with its template registry and held data sets
               carried from batch to batch (reset every 16 batches), then the egress join
``goflow``     ``FlowPath`` over goflow2 JSON flows (``decode_goflow_json``)
``zeek_conn``  ``FlowPath`` over Zeek conn.log records (JSON lines, or the ASCII log with its header)
``dns``        ``FlowPath`` over Zeek dns.log lines (``DnsMap.observe_lines``), state carried
``eve``        ``FlowPath`` over a Suricata eve topic: DNS, TLS, HTTP, flow and other events,
               names into the map before the flows are matched, state carried
``pcap``       ``flows.decode_pcaps``: pcap/pcapng files (``sources/pcap.py``) and their datagrams,
               one decoder for 16 batches of files
=============  ==============================================================================

Inputs are mutations of seeds: the shared corpus (``../shared/corpus`` from the repository root,
read in place) and :mod:`flowaudit.synth`.  Mutations know the formats: byte flips, truncation,
splices between seeds, inserted separators and delimiters (``'+:?``, ``*~>``, ``<&]]>``,
``"\\{[``), duplicated and dropped segments, deep nesting, digit runs set to huge numbers, and
for NetFlow the header count/length, set length, template field count and field lengths set to
0, max or one off.  The generator is deterministic for a seed.

Each batch runs in a worker process started with ``NUMBA_BOUNDSCHECK=1`` and its own numba cache
(``.fuzz-cache/``): numba keys a cached function by signature, CPU and bytecode only, not by the
bounds-check flag, so a kernel compiled without bounds checks would otherwise be loaded from the
normal cache.  The worker proves the setting before it fuzzes (a deliberately out-of-range read
in a small kernel raises ``IndexError``; every kernel it ran was loaded from the fuzz cache).

A crash is an exception escaping the entry point, a broken invariant (every message in exactly
one of messages/quarantine with its raw bytes; hits of decoded messages, salvaged hits of
quarantined ones; hit ranges inside their message, or inside its innermost layer; flow rows only
from datagrams that were input, never more than their bytes can hold; one goflow row per decoded
message) or the worker dying (a signal, or no
answer within ``--hang-seconds``).  The crashing episode is minimised (inputs, then bytes) and
saved as ``tests/fuzz_crashers/<decoder>/<sha1>.bin``; ``tests/test_fuzz_regressions.py``
replays every saved file through the normal path.  A ``.bin`` holding one input is that input's
raw bytes; a sequence of inputs (NetFlow templates and data in order, Kafka keys) starts with
:data:`MAGIC` (see :func:`encode_episode`).
"""
from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import pickle
import random
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from .sources.zeek import CONN_FIELDS, DNS_FIELDS, HTTP_FIELDS, SSL_FIELDS, write_ascii

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
CACHE_DIR = REPO / ".fuzz-cache"
CRASHERS = REPO / "tests" / "fuzz_crashers"
MAGIC = b"FLOWAUDIT-FUZZ-EPISODE-1\n"
LONG_INPUTS = 10_000_000
MAX_INPUT = 256 * 1024
HMAC_KEY = b"fuzz-key-not-secret-0123456789ab"


# ====================================================================== targets
@dataclass(frozen=True)
class Target:
    name: str
    kind: str          # messages | markers | netflow | goflow | zeek_conn | dns | eve | pcap | selftest
    fmt: str = ""      # declared format (messages) or seed family
    batch: int = 128   # inputs per batch
    episode: int = 1   # batches between state resets (1: stateless)
    hidden: bool = False


TARGETS = {t.name: t for t in [
    Target("edifact", "messages", "edifact"),
    Target("x12", "messages", "x12"),
    Target("xml", "messages", "xml"),
    Target("json", "messages", "json"),
    Target("detect", "messages", "auto"),
    Target("scan", "messages", "scan"),
    Target("embedded", "messages", "embedded"),
    Target("flat", "messages", "flat"),
    Target("markers", "markers", "auto"),
    Target("netflow", "netflow", "netflow", batch=64, episode=16),
    Target("goflow", "goflow", "goflow"),
    Target("dns", "dns", "dns", episode=16),
    Target("zeek_conn", "zeek_conn", "zeek_conn", episode=16),
    Target("eve", "eve", "eve", episode=16),
    Target("pcap", "pcap", "pcap", batch=16, episode=16),
    # the harness's own tests (tests/test_fuzz.py): a decoder that fails on a trigger word
    Target("selftest-raise", "selftest", "CRASH", batch=32, hidden=True),
    Target("selftest-segv", "selftest", "SEGV", batch=32, hidden=True),
    Target("selftest-oob", "selftest", "OOB", batch=32, hidden=True),
    Target("selftest-hang", "selftest", "HANG", batch=32, hidden=True),
]}
PUBLIC = [n for n, t in TARGETS.items() if not t.hidden]


# ====================================================================== episode files
def encode_episode(batches: list) -> bytes:
    """Batches of inputs -> bytes: the raw value for one input without key, else MAGIC + frames
    (per batch ``B`` + uint32 count; per input uint8 flags (1 null, 2 key), uint32 length, value,
    then uint16 length and key when flagged)."""
    if len(batches) == 1 and len(batches[0]) == 1 and batches[0][0][1] is None and batches[0][0][0] is not None:
        return batches[0][0][0]
    out = [MAGIC]
    for b in batches:
        out.append(b"B" + struct.pack(">I", len(b)))
        for value, key in b:
            flags = (1 if value is None else 0) | (2 if key is not None else 0)
            v = value or b""
            out.append(struct.pack(">BI", flags, len(v)) + v)
            if key is not None:
                out.append(struct.pack(">H", len(key)) + key)
    return b"".join(out)


def decode_episode(data: bytes) -> list:
    """Inverse of :func:`encode_episode`."""
    if not data.startswith(MAGIC):
        return [[(data, None)]]
    p = len(MAGIC)
    batches = []
    while p < len(data):
        if data[p:p + 1] != b"B":
            raise ValueError(f"episode file: expected a batch at byte {p}")
        (n,) = struct.unpack_from(">I", data, p + 1)
        p += 5
        b = []
        for _ in range(n):
            flags, ln = struct.unpack_from(">BI", data, p)
            p += 5
            value = None if flags & 1 else data[p:p + ln]
            p += ln
            key = None
            if flags & 2:
                (kl,) = struct.unpack_from(">H", data, p)
                key = data[p + 2:p + 2 + kl]
                p += 2 + kl
            b.append((value, key))
        batches.append(b)
    return batches


# ====================================================================== seeds
def _files(folder: Path, exts=None) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "README.md"
                  and (exts is None or p.suffix.lower() in exts))


def _corpus_messages(corpus: Path, fmt: str) -> list[bytes]:
    return [p.read_bytes() for p in _files(corpus / "messages" / fmt)]


def _synth(fmt: str, n: int = 200) -> list[bytes]:
    from . import synth

    formats = synth.FORMATS if fmt == "auto" else (fmt,)
    return [m.value for m in synth.generate(11, n, formats=formats, bad_fraction=0.1)]


def _json_str(b: bytes) -> bytes:
    return json.dumps(b.decode("latin-1")).encode()


def _embedded(corpus: Path) -> list[bytes]:
    edi = _corpus_messages(corpus, "edifact") + _synth("edifact", 40)
    out = []
    for i, e in enumerate(edi):
        text = e.decode("latin-1")
        esc = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        out.append(b'{"id":"urn:ngsi-ld:EdiCodeco:%d","type":"EdiCodeco","messageRaw":%s}' % (i, _json_str(e)))
        out.append(b'[{"file":"x.edi","content":%s,"n":1}]' % _json_str(e))
        out.append(("<?xml version='1.0'?><Envelope><Body><Msg><![CDATA[" + text + "]]></Msg></Body></Envelope>")
                   .encode("latin-1"))
        out.append(("<PCS><Interchange format='EDIFACT'>" + esc + "</Interchange></PCS>").encode("latin-1"))
        if i % 3 == 0:      # field layers: base64 (of gzip) in a JSON member and in XML text
            z = base64.b64encode(gzip.compress(e) if i % 2 else e)
            out.append(b'{"id":%d,"payload":"%s"}' % (i, z))
            out.append(b"<Msg><Body>" + base64.encodebytes(z) + b"</Body></Msg>")
    for x in _corpus_messages(corpus, "x12")[:6]:   # X12 in a JSON field and in CDATA
        out.append(b'{"edi":%s}' % _json_str(x))
        out.append(b"<Doc><X12><![CDATA[" + x + b"]]></X12></Doc>")
    return out


_FLAT_COLS = {
    b"container": [b"MSCU1234565", b"MSKU1234567", b"TGHU 123456 7", b"", b"UTLX 123456"],
    b"imo": [b"9321483", b"IMO 9074729", b"1234567", b""],
    b"consignee": [b"ACME LTD, 88 CHOWRINGHEE ROAD", b'"ACME, INC."', b'"say ""hi"""', b"\xc3\xa9t\xc3\xa9 S.A."],
    b"phone": [b"+31 10 2521010", b"2024-03-15", b"TEL 033 2230 1234"],
    b"email": [b"ops@example.com", b"ROSHAN FUJITOGRP.COM", b"a@b"],
    b"booking_no": [b"BKG123456", b"MAEU123456789"],
    b"port": [b"CNNGB", b"INCCU1", b"NLRTM"],
    b"seal": [b"SL0001", b""],
}


def _flat(corpus: Path, rng: random.Random) -> list[bytes]:
    """Flat files: the corpus's ICES 1.5 IGM (0x1D fields, CRLF, pseudo-tags), cut into smaller
    files, and synthetic CSV / TSV / ``;`` / ``|`` / 0x1D files with catalogue headers and
    fixed-width ones."""
    out = [p.read_bytes() for p in _files(corpus / "messages" / "other")]
    for f in list(out):
        lines = f.split(b"\r\n")
        out += [b"\r\n".join(lines[:2] + lines[k:k + 30]) for k in range(2, len(lines), 30)]
    heads = list(_FLAT_COLS)
    for k in range(80):
        cols = rng.sample(heads, rng.randrange(2, 7))
        rows = [[c.upper() if k % 3 == 0 else c for c in cols]]
        rows += [[rng.choice(_FLAT_COLS[c]) for c in cols] for _ in range(rng.randrange(1, 15))]
        eol = rng.choice((b"\r\n", b"\n"))
        if k % 5 == 4:                                         # fixed-width
            w = rng.choice((12, 16, 24))
            out.append(eol.join(b"".join(v[:w].ljust(w) for v in r) for r in rows) + eol)
        else:
            d = rng.choice((b",", b"\t", b";", b"|", b"\x1d"))
            out.append(eol.join(d.join(r) for r in rows) + eol)
    return out


def _pcaps(corpus: Path) -> list[Path]:
    nf = corpus / "netflow"
    return _files(nf / "public", {".pcap", ".pcapng"}) + _files(nf / "generated", {".pcap", ".pcapng"})


def _netflow(corpus: Path) -> list[list]:
    """One seed per export capture: its datagrams in order, keyed by exporter address."""
    from .sources.pcap import read_datagrams

    out = []
    for p in _pcaps(corpus):
        dg = read_datagrams([p])
        b, o = dg.buf.tobytes(), dg.offsets.tolist()
        seq = [(b[o[i]:o[i + 1]], dg.exporters[dg.exporter_idx[i]].encode()) for i in range(len(dg))]
        if seq:
            out.append(seq)
    return out


def _pcapng(data: bytes) -> bytes | None:
    """The frames of a pcap file rewritten as pcapng (dpkt), so both containers are seeds."""
    import io

    import dpkt

    try:
        rd = dpkt.pcap.Reader(io.BytesIO(data))
        out = io.BytesIO()
        w = dpkt.pcapng.Writer(out, linktype=rd.datalink())
        for ts, frame in rd:
            w.writepkt(frame, ts=ts)
        return out.getvalue()
    except (ValueError, dpkt.dpkt.Error):
        return None


_PORTS = ("TCP", "UDP", "ICMP", "6", 6, 17, "IPV6-ICMP")


def _goflow(rng: random.Random, n: int = 300) -> list[bytes]:
    """goflow2 JSON flow messages in both renderings (v1 numeric etype/proto, v2 text)."""
    out = []
    for i in range(n):
        v6 = rng.random() < 0.3
        addr = (lambda: f"2001:db8::{rng.randrange(65536):x}") if v6 else \
            (lambda: f"{rng.choice([10, 192, 198, 203])}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}")
        m = {"type": rng.choice(["NETFLOW_V5", "NETFLOW_V9", "IPFIX", "SFLOW_5"]),
             "time_received_ns": 1_772_000_000_000_000_000 + i, "sequence_num": i,
             "sampling_rate": rng.choice([0, 1, 100]), "sampler_address": addr(),
             "time_flow_start_ns": 1_772_000_000_000_000_000 + i * 1000, "time_flow_end_ns": 1_772_000_000_500_000_000,
             "bytes": rng.randrange(1 << 20), "packets": rng.randrange(1000), "src_addr": addr(), "dst_addr": addr(),
             "etype": rng.choice(["IPv4", "IPv6", 2048, 34525]), "proto": rng.choice(_PORTS),
             "src_port": rng.randrange(65536), "dst_port": rng.choice([443, 80, 3389, 8443]),
             "tcp_flags": rng.randrange(64), "observation_domain_id": rng.randrange(4)}
        out.append(json.dumps(m).encode())
    return out


_DNS_NAMES = ("gateway.logink.cn", "www.logink.cn", "api.logink.org", "test.logink.org", "example.com",
              "cdn.example.net", "portal.port.example")


def _dns(rng: random.Random, n: int = 300) -> list[bytes]:
    """Zeek dns.log JSON lines: A/AAAA answers, CNAME chains, float and ISO timestamps; and ssl.log
    and http.log records (a TLS server name, an HTTP Host with or without its port, none)."""
    out = []
    t0 = 1_772_000_000.0
    for i in range(n):
        q = rng.choice(_DNS_NAMES)
        if rng.random() < 0.25:             # a connection that named (or did not name) its server
            via = rng.choice(["ssl", "http"])
            rec = {"ts": t0 + i, "uid": f"C{i}", "id.orig_h": f"10.0.0.{rng.randrange(256)}", "id.orig_p": 51000,
                   "id.resp_h": f"203.0.113.{rng.randrange(256)}" if rng.random() < 0.7 else f"2001:db8::{rng.randrange(99)}",
                   "id.resp_p": 443 if via == "ssl" else 80}
            name = rng.choice([q, q + ".", q.upper(), f"{q}:8080", None])
            if via == "ssl":
                rec.update(version="TLSv13", cipher="TLS_AES_128_GCM_SHA256", established=rng.random() < 0.9)
                rec.update({"server_name": name} if name is not None else {})
            else:
                rec.update(trans_depth=1, method="POST", uri="/authapi/rest/auth/apply")
                rec.update({"host": name} if name is not None else {})
            fields = SSL_FIELDS if via == "ssl" else HTTP_FIELDS
            out.append(write_ascii([rec], via, fields) if rng.random() < 0.3 else json.dumps(rec).encode())
            continue
        if rng.random() < 0.1:              # a Suricata eve.json event (DNS formats 2 and 3, TLS, an alert)
            et = rng.choice(["dns", "dns", "tls", "alert"])
            body = {"tls": {"sni": q}, "alert": {"signature": "x"},
                    "dns": {"version": rng.choice([2, 3]), "type": rng.choice(["answer", "response", "query"]),
                            "rrname": q, "queries": [{"rrname": q}], "rcode": "NOERROR",
                            "answers": [{"rrname": q, "rrtype": "A", "ttl": 60, "rdata": f"203.0.113.{rng.randrange(256)}"}],
                            "grouped": {"A": ["203.0.113.1"], "CNAME": [q]}}}[et]
            out.append(json.dumps({"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", time.gmtime(t0 + i)),
                                   "event_type": et, "src_ip": "10.0.0.53", "src_port": 53, "dest_ip": "10.0.0.9",
                                   "dest_port": 53000, et: body}).encode())
            continue
        answers, ttls = [], []
        if rng.random() < 0.3:
            answers.append(rng.choice(_DNS_NAMES))
            ttls.append(300.0)
        for _ in range(rng.randrange(1, 4)):
            answers.append(f"203.0.113.{rng.randrange(256)}" if rng.random() < 0.7 else f"2001:db8::{rng.randrange(99)}")
            ttls.append(float(rng.choice([0, 30, 300, 86400])))
        ts = t0 + i if rng.random() < 0.8 else time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t0 + i))
        rec = {"ts": ts, "uid": f"C{i}", "id.orig_h": f"10.0.0.{rng.randrange(256)}", "id.orig_p": 53000,
               "id.resp_h": "10.0.0.53", "id.resp_p": 53, "proto": "udp", "query": q, "qtype_name": "A",
               "rcode_name": rng.choice(["NOERROR", "NOERROR", "NXDOMAIN"]), "answers": answers, "TTLs": ttls}
        if isinstance(ts, float) and rng.random() < 0.2:     # Zeek's ASCII log, its header in the message
            out.append(write_ascii([rec], "dns", DNS_FIELDS))
            continue
        lines = [json.dumps(rec)]
        if rng.random() < 0.2:
            lines.append("#fields\tts\tuid")
        out.append("\n".join(lines).encode())
    return out


def _zeek_conn(rng: random.Random, n: int = 300) -> list[bytes]:
    """Zeek conn.log records: JSON lines (float and ISO times, unanswered and answered
    connections, IPv4 and IPv6) and Zeek's ASCII log of one to three connections with its header;
    Suricata eve.json flow, netflow and alert events."""
    out = []
    t0 = 1_772_000_000.0
    for i in range(n):
        recs = []
        for _ in range(rng.randrange(1, 4)):
            v6 = rng.random() < 0.3
            addr = (lambda: f"2001:db8::{rng.randrange(65536):x}") if v6 else \
                (lambda: f"10.0.{rng.randrange(256)}.{rng.randrange(256)}")
            answered = rng.random() < 0.7
            recs.append({"ts": t0 + i, "uid": f"C{i}", "id.orig_h": addr(), "id.orig_p": rng.randrange(65536),
                         "id.resp_h": addr() if rng.random() < 0.5 else f"203.0.113.{rng.randrange(256)}",
                         "id.resp_p": rng.choice([443, 80, 3389, 53]), "proto": rng.choice(["tcp", "udp", "icmp"]),
                         "duration": rng.choice([None, 0.0, 1.5, 3600.0]), "orig_pkts": rng.randrange(100),
                         "orig_ip_bytes": rng.randrange(1 << 20), "resp_pkts": rng.randrange(100) if answered else 0,
                         "resp_ip_bytes": rng.randrange(1 << 20) if answered else 0, "conn_state": "SF",
                         "tunnel_parents": []})
        if rng.random() < 0.15:             # Suricata's eve.json: a flow, netflow or alert event
            c = recs[0]
            iso = time.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", time.gmtime(t0 + i))
            et = rng.choice(["flow", "netflow", "alert"])
            body = {"flow": {"pkts_toserver": c["orig_pkts"], "bytes_toserver": c["orig_ip_bytes"],
                             "pkts_toclient": c["resp_pkts"], "bytes_toclient": c["resp_ip_bytes"], "start": iso,
                             "end": iso},
                    "netflow": {"pkts": c["orig_pkts"], "bytes": c["orig_ip_bytes"], "start": iso, "end": iso},
                    "alert": {"signature": "x"}}[et]
            out.append(json.dumps({"timestamp": iso, "event_type": et, "src_ip": c["id.orig_h"],
                                   "src_port": c["id.orig_p"], "dest_ip": c["id.resp_h"], "dest_port": c["id.resp_p"],
                                   "proto": c["proto"].upper(), et: body}).encode())
        elif rng.random() < 0.5:
            out.append(write_ascii(recs, "conn", CONN_FIELDS))
        else:
            r = {k: v for k, v in recs[0].items() if v is not None}
            if rng.random() < 0.2:
                r["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t0 + i))
            out.append(json.dumps(r).encode())
    return out


def _eve(rng: random.Random, n: int = 300) -> list[bytes]:
    """A Suricata eve topic: its events one a message (DNS answers and queries, TLS, alerts, flow
    and netflow events, as the dns and zeek_conn seeds hold them), and a few messages of several."""
    events = [v for v in _dns(rng, n) + _zeek_conn(rng, n) if v.startswith(b'{"timestamp"')]
    rng.shuffle(events)
    return events + [b"\n".join(rng.sample(events, min(len(events), rng.randrange(2, 5)))) for _ in range(n // 10)]


def load_seeds(target: Target, corpus: Path, seed: int):
    """Seeds of a target: a list of byte strings, or (netflow) a list of datagram sequences."""
    rng = random.Random(f"seeds:{seed}:{target.name}")
    k = target.kind
    if k == "selftest":
        noise = bytes(rng.randrange(32, 127) for _ in range(300))
        return [noise[:140] + target.fmt.encode() + noise[140:], noise]
    if not corpus.is_dir():
        raise FileNotFoundError(f"the shared corpus is expected at {corpus}")
    if k == "netflow":
        return _netflow(corpus)
    if k == "pcap":
        files = [p.read_bytes() for p in _pcaps(corpus) if p.stat().st_size <= 64 * 1024]
        return files + [x for x in (_pcapng(f) for f in files[::6]) if x]
    if k == "goflow":
        return _goflow(rng)
    if k == "dns":
        return _dns(rng)
    if k == "zeek_conn":
        return _zeek_conn(rng)
    if k == "eve":
        return _eve(rng)
    if target.fmt == "embedded":
        return _embedded(corpus)
    if target.fmt == "flat":
        return _flat(corpus, rng)
    if target.fmt == "scan":            # files of one or more interchanges, as `flowaudit scan` reads them
        edi = [m for f in ("edifact", "x12") for m in _corpus_messages(corpus, f) + _synth(f, 60)]
        return edi + [b"\r\n".join(rng.sample(edi, rng.randrange(2, 5))) for _ in range(100)]
    fmts = ("edifact", "x12", "xml", "json") if target.fmt == "auto" else (target.fmt,)
    seeds = [m for f in fmts for m in _corpus_messages(corpus, f) + _synth(f)]
    if target.fmt == "auto":
        seeds += _corpus_messages(corpus, "other") + _embedded(corpus)[::4]
    return seeds


# ====================================================================== mutations
_TOKENS = {
    "edifact": [b"'", b"+", b":", b"?", b"??", b"?'", b"'\r\n", b"UNA:+.? '", b"UNA:+.?*~", b"UNA", b"UNB+UNOA:2+",
                b"UNB+UNOC:3+", b"UNB+UNOW:4+", b"UNB+UNOY:4+", b"UNB+UNOZ:1+", b"UNB+UNOB:1\x1dA\x1dB\x1c",
                b"UNH+1+CODECO:D:95B:UN'", b"UNT+", b"UNZ+1+1'", b"UNG+", b"UNE+", b"EQD+CN+", b"NAD+CZ+",
                b"\x1d", b"\x1c", b"\x1f", b"\xef\xbb\xbf", b"\x00", b"\xff"],
    "x12": [b"*", b"~", b">", b"^", b":", b"~\r\n", b"\n", b"ISA*00*          *00*          *ZZ*", b"GS*QO*", b"ST*315*",
            b"SE*", b"GE*", b"IEA*", b"*00401*", b"*00501*", b"*U*", b"N1*CN*"],
    "xml": [b"<", b">", b"</", b"/>", b"&", b"&amp;", b"&#0;", b"&#x110000;", b"&#65;", b"&unknown;", b"<![CDATA[",
            b"]]>", b"<!DOCTYPE a [<!ENTITY x 'y'>]>", b"<!ENTITY e SYSTEM 'file:///etc/passwd'>", b"&e;",
            b"<?xml version='1.0' encoding='UTF-16'?>", b"<?xml version='1.0'?>", b"<!--", b"-->", b"<?pi x?>",
            b"<xi:include href='/etc/hostname' xmlns:xi='http://www.w3.org/2001/XInclude'/>", b"=", b"xmlns:a='b'",
            b"<ID>", b"</ID>", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"],
    "json": [b"{", b"}", b"[", b"]", b'"', b":", b",", b"\\", b"\\u", b"\\ud800", b"\\udc00\\ud800", b"\\u0000", b"1e400",
             b"1e-400", b"-0", b"18446744073709551616", b"9007199254740993", b"NaN", b"Infinity", b"true", b"null",
             b'"messageRaw":"UNB+UNOA:2+', b'"equipmentReference":"', b"\xef\xbb\xbf"],
    "common": [b"\x00", b"\xff", b"\r\n", b" ", b"logink", b"gateway.logink.cn", b"LOGINK_CN_", b"http://",
               b"https://api.logink.org/", b"MSCU1234565", b"9321483"],
}
_TOKENS["auto"] = _TOKENS["edifact"] + _TOKENS["x12"] + _TOKENS["xml"] + _TOKENS["json"]
_TOKENS["embedded"] = _TOKENS["auto"]
_TOKENS["flat"] = [b"\x1d", b"\x1c", b",", b"\t", b";", b"|", b"\r\n", b"\n", b"\r", b'"', b'""', b'"\r\n"', b" " * 40,
                   b"<manifest>", b"<vesinfo>", b"<END-vesinfo>", b"<cargo>", b"<END-cargo>", b"<contain>", b"HREC",
                   b"TREC", b"container,imo,consignee", b"\xef\xbb\xbf", b"\x00", b"\xff"]
_TOKENS["scan"] = _TOKENS["edifact"] + _TOKENS["x12"]
_TOKENS["goflow"] = _TOKENS["json"] + [b'"src_addr":"', b'"proto":"TCP"', b'"bytes":', b"-1", b"1.5"]
_TOKENS["dns"] = _TOKENS["json"] + [b"\n", b'"answers":[', b'"TTLs":[', b'"ts":', b"1e308", b'"2026-13-45T99:99:99Z"',
                                    b'"server_name":"', b'"host":"', b'"id.resp_h":"', b"#path\tssl", b"[::1]:80",
                                    b'"event_type":"dns"', b'"rdata":"', b'"grouped":{', b'"sni":"', b'"queries":[',
                                    b"\t", b"#fields\t", b"#separator \\x09", b"(empty)", b"\t-\t", b"\\x2c"]
_TOKENS["zeek_conn"] = _TOKENS["dns"] + [b'"id.orig_h":"', b'"orig_ip_bytes":', b'"duration":', b"#path\tdns",
                                          b'"event_type":"flow"', b'"bytes_toserver":', b'"start":"', b'"src_ip":"']
_TOKENS["eve"] = _TOKENS["zeek_conn"]
_TOKENS["pcap"] = [b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x0a\x0d\x0d\x0a", b"\x4d\x3c\x2b\x1a", b"\x08\x00",
                   b"\x86\xdd", b"\x81\x00", b"\x45\x00", b"\x60\x00\x00\x00", b"\x00\x09", b"\x00\x0a"]
_TOKENS["netflow"] = [b"\x00\x05", b"\x00\x09", b"\x00\x0a", b"\x00\x00", b"\x00\x01", b"\x00\x02", b"\x00\x03",
                      b"\xff\xff", b"\x01\x00"]
_SEGMENT_SEPS = {"edifact": b"'", "x12": b"~", "xml": b">", "json": b",", "auto": b"'", "embedded": b"'", "scan": b"'",
                 "flat": b"\n",
                 "goflow": b",", "dns": b"\n", "zeek_conn": b"\n", "eve": b"\n"}
_NEST = [b"[", b"{\"a\":", b"<a>", b"<a><b>", b"[{\"k\":["]
_INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x20, 0x0A, 0x0D, 0x27, 0x2B, 0x3A, 0x3F, 0x7E, 0x2A, 0x3C, 0x3E, 0x22,
                0x5C, 0x7B, 0x7D, 0x5B, 0x5D, 0x26, 0x1D, 0x1C, 0x1F]
_NUMBERS = [b"0", b"-1", b"1", b"65535", b"65536", b"2147483648", b"4294967296", b"9223372036854775808",
            b"18446744073709551616", b"99999999999999999999999999999999", b"1e400", b""]
_DIGITS = re.compile(rb"\d+")


def _u16(b, p: int) -> int:
    return (b[p] << 8) | b[p + 1]


def netflow_fields(d: bytes) -> list[tuple[int, int]]:
    """(position, width) of the counts and lengths of a NetFlow/IPFIX datagram a decoder trusts:
    header count/length, set id and length, template id and field count, field lengths, options
    scope lengths."""
    n = len(d)
    if n < 4:
        return []
    ver = _u16(d, 0)
    out = [(0, 2), (2, 2)]
    if ver == 5:
        return out
    if ver not in (9, 10):
        return out
    p = 20 if ver == 9 else 16
    while p + 4 <= n and len(out) < 400:
        sid, slen = _u16(d, p), _u16(d, p + 2)
        out += [(p, 2), (p + 2, 2)]
        end = min(n, p + slen)
        q = p + 4
        tmpl, opts = (0, 1) if ver == 9 else (2, 3)
        while sid in (tmpl, opts) and q + 4 <= end and len(out) < 400:
            out += [(q, 2), (q + 2, 2)]
            if sid == opts:
                if ver == 9:
                    out.append((q + 4, 2))   # option length (scope length at q+2)
                else:
                    out.append((q + 4, 2))   # scope field count (field count at q+2)
                break
            cnt = _u16(d, q + 2)
            q += 4
            for _ in range(cnt):
                if q + 4 > end:
                    break
                out.append((q + 2, 2))
                ie = _u16(d, q)
                q += 8 if (ver == 10 and ie & 0x8000) else 4
        if slen < 4:
            break
        p += slen
    return [(q, w) for q, w in out if q + w <= n]


class Mutator:
    """Deterministic, format-aware byte mutations."""

    def __init__(self, rng: random.Random, family: str, pool: list[bytes]):
        self.rng = rng
        self.tokens = _TOKENS.get(family, []) + _TOKENS["common"]
        self.sep = _SEGMENT_SEPS.get(family, b"\n")
        self.pool = pool or [b""]
        ops = [(self._flip, 4), (self._set, 3), (self._delete, 3), (self._token, 6), (self._truncate, 3),
               (self._chop, 1), (self._dup, 2), (self._splice, 2), (self._digits, 3), (self._segments, 4),
               (self._nest, 1)]
        if family == "netflow":
            ops += [(self._nf_field, 14), (self._nf_version, 1)]
        if family == "pcap":
            ops += [(self._pcap_field, 8)]
        self.ops = [f for f, w in ops for _ in range(w)]

    def mutate(self, data: bytes, rounds: int | None = None) -> bytes:
        r = self.rng
        b = bytearray(data)
        for _ in range(rounds or r.choice((1, 1, 1, 2, 2, 3, 4, 8))):
            r.choice(self.ops)(b)
            if len(b) > MAX_INPUT:
                del b[MAX_INPUT:]
        return bytes(b)

    # -- generic
    def _pos(self, b, end=True) -> int:
        return self.rng.randrange(len(b) + (1 if end else 0)) if b or end else 0

    def _len(self) -> int:
        return self.rng.choice((1, 1, 2, 4, 8, 16, 64, 512, 4096))

    def _flip(self, b):
        if b:
            b[self._pos(b, False)] ^= 1 << self.rng.randrange(8)

    def _set(self, b):
        if b:
            b[self._pos(b, False)] = self.rng.choice(_INTERESTING) if self.rng.random() < 0.7 else self.rng.randrange(256)

    def _delete(self, b):
        if b:
            i = self._pos(b, False)
            del b[i:i + self._len()]

    def _token(self, b):
        i = self._pos(b)
        b[i:i] = self.rng.choice(self.tokens)

    def _truncate(self, b):
        del b[self._pos(b):]

    def _chop(self, b):
        del b[:self._pos(b)]

    def _dup(self, b):
        if not b:
            return
        i = self._pos(b, False)
        chunk = bytes(b[i:i + self._len()])
        times = self.rng.choice((1, 1, 2, 3, 100, 10_000))
        j = self._pos(b)
        b[j:j] = chunk * max(1, min(times, MAX_INPUT // max(1, len(chunk))))

    def _splice(self, b):
        other = self.rng.choice(self.pool)
        i = self._pos(b)
        j = self.rng.randrange(len(other) + 1)
        b[i:] = other[j:]

    def _digits(self, b):
        runs = list(_DIGITS.finditer(b))
        if runs:
            m = self.rng.choice(runs)
            b[m.start():m.end()] = self.rng.choice(_NUMBERS)

    def _segments(self, b):
        segs = bytes(b).split(self.sep)
        if len(segs) < 2:
            return self._token(b)
        r = self.rng
        i = r.randrange(len(segs))
        op = r.randrange(5)
        if op == 0:
            segs.insert(r.randrange(len(segs) + 1), segs[i])            # duplicate
        elif op == 1:
            del segs[i]                                                 # drop
        elif op == 2:
            j = r.randrange(len(segs))
            segs[i], segs[j] = segs[j], segs[i]                         # swap
        elif op == 3:
            segs[i:i + 1] = [segs[i]] * r.choice((10, 1000, 20_000))    # huge count
        else:
            segs[i] = segs[i] + self.sep + segs[i]                      # separator inside
        b[:] = self.sep.join(segs)[:MAX_INPUT]

    def _nest(self, b):
        i = self._pos(b)
        b[i:i] = self.rng.choice(_NEST) * self.rng.choice((10, 100, 300, 2000))

    # -- NetFlow / IPFIX: the counts and lengths a decoder trusts
    def _nf_field(self, b):
        fields = netflow_fields(bytes(b))
        if not fields:
            return self._set(b)
        p, _w = self.rng.choice(fields)
        v = _u16(b, p)
        nv = self.rng.choice((0, 1, 2, 3, 4, 0xFFFF, 0xFFFE, 0x8000, v - 1, v + 1, v * 2, v + 4,
                              self.rng.randrange(65536))) & 0xFFFF
        b[p:p + 2] = nv.to_bytes(2, "big")

    def _nf_version(self, b):
        if len(b) >= 2:
            b[0:2] = self.rng.choice((5, 9, 10, 0, 1, 0xFFFF)).to_bytes(2, "big")

    # -- pcap: record lengths and header fields
    def _pcap_field(self, b):
        if len(b) < 24:
            return self._set(b)
        r = self.rng
        if b[:4] == b"\x0a\x0d\x0d\x0a" or r.random() < 0.3:   # a 32-bit length anywhere (block/record lengths)
            p = r.randrange(0, len(b) - 3) & ~3
        else:                                                # the first record header: incl_len / orig_len
            p = r.choice((8, 12, 16, 20, 24 + 8, 24 + 12))
            if p + 4 > len(b):
                return
        v = int.from_bytes(b[p:p + 4], "little")
        nv = r.choice((0, 1, 0xFFFFFFFF, 0x7FFFFFFF, v + 1, v - 1, v * 2, 65536, 262144)) & 0xFFFFFFFF
        b[p:p + 4] = nv.to_bytes(4, "little")


class Generator:
    """The batches of one target, deterministic for ``seed``."""

    def __init__(self, target: Target, seeds, seed: int):
        self.t = target
        self.rng = random.Random(f"fuzz:{seed}:{target.name}")
        self.seeds = seeds
        flat = [v for s in seeds for v, _ in s] if target.kind == "netflow" else list(seeds)
        self.mut = Mutator(self.rng, target.fmt if target.kind in ("messages", "markers") else target.kind, flat)
        self.flat = flat

    def warmup(self) -> list | None:
        """A batch of unmutated seeds (the first datagrams of every capture); None for self-tests."""
        if self.t.kind == "selftest":
            return None
        if self.t.kind == "netflow":
            return [x for seq in self.seeds for x in seq[:3]]
        step = max(1, len(self.seeds) // self.t.batch)
        return [(s, None) for s in self.seeds[::step][:self.t.batch]]

    def batch(self) -> list:
        r = self.rng
        if self.t.kind == "netflow":
            return self._netflow()
        out = []
        for _ in range(self.t.batch):
            x = r.random()
            if x < 0.02:
                out.append((None if r.random() < 0.5 else b"", None))     # tombstone / empty value
                continue
            s = r.choice(self.seeds)
            out.append((s if x < 0.08 else self.mut.mutate(s), None))
        return out

    def _netflow(self) -> list:
        """Windows of captures (from a capture's start, with its templates, half the time); datagrams
        mutated, exporters swapped, sometimes reordered or repeated."""
        r = self.rng
        out = []
        while len(out) < self.t.batch:          # windows of captures, each from its start half the time
            seq = r.choice(self.seeds)
            start = 0 if r.random() < 0.5 else r.randrange(len(seq))
            for value, key in seq[start:start + r.randrange(1, self.t.batch - len(out) + 1)]:
                if r.random() < 0.4:
                    value = self.mut.mutate(value)
                if r.random() < 0.05:
                    key = r.choice((None, b"", b"192.0.2.77", b"2001:db8::1", b"\xff\xfe"))
                out.append((value, key))
        if r.random() < 0.2 and len(out) > 1:
            r.shuffle(out)
        if r.random() < 0.1 and out:
            out += [r.choice(out)] * r.choice((2, 10))
        return out


# ====================================================================== invariants (worker side)
class InvariantError(AssertionError):
    """An invariant of a decoder's output broke for some input."""

    def __init__(self, name: str, detail: str = ""):
        super().__init__(f"{name}: {detail}" if detail else name)
        self.name = name


def _require(cond, name: str, detail: str = "") -> None:
    if not cond:
        raise InvariantError(name, detail)


def _values(batch) -> list:
    return [v for v, _ in batch]


def check_partition(n: int, ok_idx, bad_idx) -> None:
    """Every message in exactly one of messages and quarantine."""
    import numpy as np

    ok_idx = np.asarray(ok_idx, np.int64)
    bad_idx = np.asarray(bad_idx, np.int64)
    both = np.sort(np.concatenate([ok_idx, bad_idx]))
    _require(both.size == n and np.array_equal(both, np.arange(n)), "messages_xor_quarantine",
             f"{ok_idx.size} messages + {bad_idx.size} quarantined for {n} inputs")


def check_quarantine_raw(values: list, table, idx) -> None:
    """Every quarantined input is kept: its sealed record opens (operator key, its own row) to the
    exact bytes received."""
    from .protect import Protector
    from .quarantine import open_row

    protector = Protector(HMAC_KEY)
    for i, row in zip(idx.tolist(), table.to_pylist()):
        _require(open_row(protector, row)[1] == values[i], "quarantine_raw", f"input {i}: raw bytes differ")
    _require("ok" not in set(table.column("reason").to_pylist()), "quarantine_reason", "reason 'ok'")


def check_classifier(batch, res) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(batch)
    values = [None if batch.null[i] else batch.buf[batch.offsets[i]:batch.offsets[i + 1]].tobytes() for i in range(n)]
    check_partition(n, res.m_idx, res.q_idx)
    _require(res.messages.num_rows == res.m_idx.size and res.quarantine.num_rows == res.q_idx.size, "row_counts")
    _require(bool((res.status[res.m_idx] == 0).all() and (res.status[res.q_idx] != 0).all()), "status_agrees")
    check_quarantine_raw(values, res.quarantine, res.q_idx)
    _require(np.array_equal(res.messages.column("offset").to_numpy(), batch.offset[res.m_idx]), "message_offsets")
    if res.hits.num_rows:
        h = res.h_idx
        salvaged = np.asarray(res.hits.column("salvaged").to_numpy(zero_copy_only=False), bool)
        _require(bool(np.isin(h[~salvaged], res.m_idx).all()), "hits_of_decoded_messages")
        _require(bool(np.isin(h[salvaged], res.q_idx).all()), "salvaged_hits_of_quarantined_messages")
        lens = np.diff(batch.offsets)[h]
        s = res.hits.column("byte_start").to_numpy()
        e = res.hits.column("byte_end").to_numpy()
        # a layered hit's range is in its innermost layer's bytes (hits.layer), not the message's
        outer = np.asarray(pc.equal(res.hits.column("layer").cast(pa.string()), "").to_numpy(zero_copy_only=False),
                           bool)
        bad = np.flatnonzero(outer & ((s < 0) | (s > e) | (e > lens)))
        if bad.size:
            k = bad[0]
            raise InvariantError("hit_range_inside_message", f"message {h[k]}: [{s[k]}, {e[k]}) of {lens[k]} bytes")
    if res.t_idx is not None and res.t_idx.size:
        # decoded messages and quarantined ones with bytes (scanned raw); never a null / empty value
        _require(bool(np.isin(res.t_idx, np.concatenate([res.m_idx, res.q_idx])).all()), "transfers_of_input_messages")
        _require(all(values[i] for i in res.t_idx.tolist()), "transfers_of_messages_with_bytes")


# ====================================================================== runners (worker side)
class _Messages:
    def __init__(self, t: Target):
        from .detect.egress import EgressDetector
        from .pipeline import Classifier, format_code
        from .protect import Protector

        self.cls = Classifier(Protector(HMAC_KEY), egress=EgressDetector())
        self.declared = format_code("auto" if t.fmt in ("auto", "embedded", "scan") else t.fmt)
        self.split = t.fmt == "scan"
        self.base = 0

    def run(self, batch) -> dict:
        from .pipeline import Batch
        from .scan import split_interchanges

        n_in = len(batch)
        if self.split:
            parts = []
            for v, k in batch:
                p = split_interchanges(v) if v is not None else [v]
                _require(v is None or b"".join(p) == v, "split_keeps_every_byte")
                parts += [(x, k) for x in p]
            batch = parts
        n = len(batch)
        b = Batch.from_values(_values(batch), self.declared, keys=[k for _, k in batch],
                              offset=list(range(self.base, self.base + n)), partition=[0] * n)
        self.base += n
        res = self.cls.run(b)
        check_classifier(b, res)
        out = {"inputs": n_in, "decoded": int(res.m_idx.size), "quarantined": int(res.q_idx.size),
               "hits": res.hits.num_rows, "transfers": 0 if res.transfers is None else res.transfers.num_rows}
        if self.split:
            out["interchanges"] = n
        return out


class _Markers:
    def __init__(self, t: Target):
        from .detect.egress import EgressDetector

        self.eg = EgressDetector()

    def run(self, batch) -> dict:

        from .detect.egress import envelope_recipients
        from .pipeline import Batch

        n = len(batch)
        b = Batch.from_values(_values(batch), 255, keys=[k for _, k in batch])
        wl = self.eg.watchlist
        mm, pp, ss, ee = wl.scan_payloads(b.buf, b.offsets, None)
        o = b.offsets
        _require(bool(((mm >= 0) & (mm < n)).all()), "marker_message_in_batch")
        if mm.size:
            _require(bool(((o[mm] <= ss) & (ss < ee) & (ee <= o[mm + 1])).all()), "marker_range_inside_message")
            _require(bool(((pp >= 0) & (pp < wl.pattern_indicator.size)).all()), "marker_pattern_id")
        t = self.eg.detect_messages(b.buf, b.offsets, None, recipients=envelope_recipients(b.buf, b.offsets))
        off = t.column("offset").to_numpy()
        _require(bool(((off >= 0) & (off < n)).all()), "transfer_offset_in_batch")
        return {"inputs": n, "matches": int(mm.size), "transfers": t.num_rows}


class _Flows:
    """netflow, goflow, zeek_conn, dns, eve through the stream's telemetry path (state carried until reset)."""

    def __init__(self, t: Target):
        from . import schemas
        from .detect.egress import EgressDetector
        from .detect.flowpath import FlowPath
        from .protect import Protector

        self.kind = t.kind
        pol = schemas.path("zones.example.toml")
        self.path = FlowPath(egress=EgressDetector(policy=pol if Path(pol).is_file() else None, dns_max_entries=64),
                             template_ttl_s=3600, silent_window_s=300, protector=Protector(HMAC_KEY))
        self.base = 0
        self.lens: dict[int, int] = {}     # offset -> datagram length, for this episode

    def run(self, batch) -> dict:
        import numpy as np

        from .pipeline import Batch

        n = len(batch)
        offs = np.arange(self.base, self.base + n, dtype=np.int64)
        self.base += n
        values = _values(batch)
        b = Batch.from_values(values, 0, sources=[self.kind], keys=[k for _, k in batch], offset=offs,
                              partition=np.zeros(n, np.int32), ts_ms=np.full(n, 1_772_000_000_000, np.int64))
        res = self.path.run(b, np.arange(n, dtype=np.int64), self.kind)
        msgs, m_idx = res.tables["messages"]
        q, q_idx = res.tables.get("quarantine", (None, np.zeros(0, np.int64)))
        check_partition(n, m_idx, q_idx)
        if q is not None:
            check_quarantine_raw(values, q, q_idx)
        out = {"inputs": n, "decoded": int(m_idx.size), "quarantined": int(q_idx.size)}
        for i, v in enumerate(values):
            self.lens[int(offs[i])] = len(v or b"")
        if "flows" in res.tables:
            flows, f_idx = res.tables["flows"]
            fo = flows.column("offset").to_numpy()
            _require(bool(np.isin(fo, list(self.lens)).all()), "flow_rows_of_seen_datagrams")
            if self.kind == "goflow":
                _require(np.array_equal(np.sort(fo), np.sort(offs[m_idx])), "one_flow_per_decoded_message")
            elif self.kind in ("zeek_conn", "eve"):     # one or two flows a connection, a connection a line
                _require(bool(np.isin(fo, offs[m_idx]).all()), "flows_of_decoded_messages")
                uo, cnt = np.unique(fo, return_counts=True)
                lines = np.array([len((values[int(x - offs[0])] or b"").splitlines()) for x in uo])
                _require(bool((cnt <= 2 * lines).all()), "two_flows_a_connection_at_most")
            else:
                ver = flows.column("version").to_numpy()
                _require(bool(np.isin(ver, (5, 9, 10)).all()), "flow_version")
                uo, cnt = np.unique(fo, return_counts=True)
                cap = np.array([self.lens[int(x)] for x in uo])
                v5 = np.array([bool((ver[fo == x] == 5).all()) for x in uo])
                cap = np.where(v5, (cap - 24) // 48, cap)
                _require(bool((cnt <= cap).all()), "flow_rows_fit_in_datagram",
                         f"{cnt.max()} rows from one datagram")
                out["flows_v9_ipfix"] = int((ver != 5).sum())
            out["flows"] = flows.num_rows
        if "transfers" in res.tables:
            tr, t_idx = res.tables["transfers"]
            _require(bool(((t_idx >= 0) & (t_idx < n)).all()), "transfers_of_batch_messages")
            out["transfers"] = tr.num_rows
        if self.kind in ("dns", "eve"):
            _require(len(self.path.egress.dns) <= self.path.egress.dns.max_entries, "dns_map_bounded")
        return out


_TMP = None


class _Pcap:
    """``flows.decode_pcaps`` file by file with one decoder, as ``flowaudit flows A B ...`` does."""

    def __init__(self, t: Target):
        from .decode.netflow import NetflowDecoder

        global _TMP
        if _TMP is None:      # one folder per process, removed when it exits
            _TMP = tempfile.TemporaryDirectory(prefix="flowaudit-fuzz-",
                                               dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.dir = _TMP.name
        self.decoder = NetflowDecoder()

    def run(self, batch) -> dict:
        import numpy as np

        from .flows import decode_pcaps
        from .sources.pcap import PcapError

        out = {"inputs": len(batch), "captures": 0, "not_a_capture": 0, "datagrams": 0, "flows": 0}
        path = os.path.join(self.dir, "input.pcap")
        for value, _ in batch:
            with open(path, "wb") as f:
                f.write(value or b"")
            try:
                table, dg, status, _dec = decode_pcaps([path], decoder=self.decoder)
            except PcapError:              # the documented answer to a file that is no capture
                out["not_a_capture"] += 1
                continue
            nd = len(dg)
            _require(status.shape[0] == nd and dg.offsets.shape[0] == nd + 1, "datagram_arrays")
            _require(bool((np.diff(dg.offsets) >= 0).all()) and int(dg.offsets[-1]) <= dg.buf.shape[0],
                     "datagram_offsets_inside_buffer")
            if table.num_rows:
                _require(bool(np.isin(table.column("offset").to_numpy(), dg.frame).all()), "flow_rows_of_frames")
            out["captures"] += 1
            out["datagrams"] += nd
            out["flows"] += table.num_rows
        return out


class _Selftest:
    """A decoder that fails on its trigger word: raises, dies by SIGSEGV, reads out of range in a
    numba kernel (an IndexError only when bounds checking is on), or never returns."""

    def __init__(self, t: Target):
        self.word = t.fmt.encode()

    def run(self, batch) -> dict:
        for value, _ in batch:
            if value and self.word in value:
                if self.word == b"CRASH":
                    raise RuntimeError("selftest: trigger word")
                if self.word == b"SEGV":
                    os.kill(os.getpid(), signal.SIGSEGV)
                if self.word == b"OOB":
                    import numpy as np
                    canary()(np.frombuffer(value, np.uint8), len(value) + 1000)
                if self.word == b"HANG":
                    time.sleep(3600)
        return {"inputs": len(batch)}


RUNNERS = {"messages": _Messages, "markers": _Markers, "netflow": _Flows, "goflow": _Flows, "dns": _Flows,
           "zeek_conn": _Flows, "eve": _Flows,
           "pcap": _Pcap, "selftest": _Selftest}


def make_runner(name: str):
    t = TARGETS[name]
    return RUNNERS[t.kind](t)


def replay(name: str, data: bytes) -> list[dict]:
    """Run a saved crasher through a fresh runner in this process; raises what the input breaks."""
    r = make_runner(name)
    return [r.run(b) for b in decode_episode(data)]


# ====================================================================== bounds checking
def _canary_py(a, i):
    return a[i]


_CANARY = None


def canary():
    """A one-line kernel (the project's decorator, so cached like the others) that indexes ``a[i]``."""
    global _CANARY
    if _CANARY is None:
        from .kernels._jit import kernel
        _CANARY = kernel(_canary_py)
    return _CANARY


def verify_boundscheck(cache_dir: str) -> dict:
    """Prove numba checks bounds in this process and caches in ``cache_dir``; raises RuntimeError."""
    import numba
    import numpy as np

    if numba.config.BOUNDSCHECK != 1:
        raise RuntimeError(f"NUMBA_BOUNDSCHECK is {numba.config.BOUNDSCHECK!r}, not 1 (set before numba is imported)")
    if os.path.realpath(numba.config.CACHE_DIR or "") != os.path.realpath(cache_dir):
        raise RuntimeError(f"numba caches in {numba.config.CACHE_DIR!r}, not the fuzz cache {cache_dir}")
    try:
        canary()(np.zeros(4, np.uint8), 1000)
    except IndexError:
        pass
    else:
        raise RuntimeError("an out-of-range read in a kernel did not raise IndexError: bounds checking is off")
    return {"boundscheck": 1, "cache_dir": numba.config.CACHE_DIR}


def kernels_from_cache(cache_dir: str) -> int:
    """Every compiled flowaudit kernel in this process was cached under ``cache_dir`` (so none was
    loaded from the normal, unchecked cache); returns how many were checked."""
    from numba.core.registry import CPUDispatcher

    root = os.path.realpath(cache_dir)
    n = 0
    for name, mod in list(sys.modules.items()):
        if not (name.startswith("flowaudit.kernels") or name == __name__) or mod is None:
            continue
        for obj in list(vars(mod).values()):
            if isinstance(obj, CPUDispatcher) and obj.signatures:
                cache = getattr(obj, "_cache", None)
                path = os.path.realpath(getattr(cache, "_cache_path", "") or "")
                if not path.startswith(root + os.sep):
                    raise RuntimeError(f"kernel {name}.{obj.py_func.__name__} is cached in {path!r}, "
                                       f"outside the fuzz cache {root}")
                n += 1
    return n


# ====================================================================== worker process
def _send(f, obj) -> None:
    data = pickle.dumps(obj, protocol=5)
    f.write(struct.pack(">I", len(data)) + data)
    f.flush()


def _recv(f):
    head = f.read(4)
    if len(head) < 4:
        raise EOFError
    (n,) = struct.unpack(">I", head)
    return pickle.loads(f.read(n))


def _signature(exc: BaseException) -> tuple:
    """(type, file:line of the innermost frame in flowaudit, else the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "flowaudit" in f.filename or "/kernels/" in f.filename]
    f = (ours or frames or [None])[-1]
    where = f"{Path(f.filename).name}:{f.lineno}" if f else "?"
    return ("exception", type(exc).__name__, where)


def worker_main(argv: list[str]) -> int:
    """``python -m flowaudit.fuzz --worker CACHE_DIR|-``: runs batches sent on stdin."""
    cache_dir = argv[0]
    try:                               # Linux: die with the parent, even when it is killed
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                      # stray prints go to stderr, never into the protocol
    proto_in = sys.stdin.buffer
    try:
        info = verify_boundscheck(cache_dir) if cache_dir != "-" else {"boundscheck": 0}
    except RuntimeError as exc:
        _send(proto_out, ("error", str(exc)))
        return 2
    _send(proto_out, ("ready", info))
    runners: dict = {}
    while True:
        try:
            msg = _recv(proto_in)
        except EOFError:
            return 0
        cmd, name = msg[0], msg[1]
        try:
            if cmd == "reset":
                runners[name] = make_runner(name)
                _send(proto_out, ("ok", {}))
                continue
            if cmd == "verify":
                _send(proto_out, ("ok", {"kernels_from_fuzz_cache": kernels_from_cache(cache_dir)}
                                  if cache_dir != "-" else {}))
                continue
        except Exception as exc:   # a harness problem (missing file, bad target), not a finding
            _send(proto_out, ("error", f"{type(exc).__name__}: {exc}"))
            continue
        try:
            stats = runners[name].run(msg[2])
        except InvariantError as exc:
            _send(proto_out, ("fail", ("invariant", exc.name), str(exc)))
        except Exception as exc:
            _send(proto_out, ("fail", _signature(exc), "".join(traceback.format_exception(exc))[-4000:]))
        else:
            _send(proto_out, ("ok", stats))


class WorkerDied(Exception):
    def __init__(self, sig: tuple, detail: str):
        super().__init__(detail)
        self.sig = sig


class Worker:
    """The fuzzing process: started with bounds checking and the fuzz cache; restarted after a crash."""

    def __init__(self, boundscheck: bool, cache_dir: Path, hang_seconds: float, log: Path):
        self.boundscheck = boundscheck
        self.cache_dir = cache_dir
        self.hang = hang_seconds
        self.log_path = log
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}

    def env(self) -> dict:
        env = dict(os.environ)
        if self.boundscheck:
            env["NUMBA_BOUNDSCHECK"] = "1"
            env["NUMBA_CACHE_DIR"] = str(self.cache_dir)
        else:
            env.pop("NUMBA_BOUNDSCHECK", None)
            env.pop("NUMBA_CACHE_DIR", None)
        return env

    def start(self) -> dict:
        self.stop()
        if self.boundscheck:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "ab")
        arg = str(self.cache_dir) if self.boundscheck else "-"
        self.proc = subprocess.Popen([sys.executable, "-m", "flowaudit.fuzz", "--worker", arg], env=self.env(),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, cwd=REPO)
        kind, info = self._read(120)
        if kind != "ready":
            raise RuntimeError(f"fuzz worker: {info}")
        self.info = info
        return info

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    self.proc.stdin.close()
                    self.proc.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(5)
            self.proc = None
            self.log.close()

    def _read_exact(self, n: int, deadline: float) -> bytes:
        fd = self.proc.stdout.fileno()
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                raise WorkerDied(("timeout",), "no answer in time (a hang?)")
            if not select.select([fd], [], [], min(left, 1.0))[0]:
                continue
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                rc = self.proc.wait(10)
                sig = ("signal", signal.Signals(-rc).name) if rc < 0 else ("exit", rc)
                raise WorkerDied(sig, f"worker died ({sig[1]})")
            buf += chunk
        return buf

    def _read(self, timeout: float):
        deadline = time.monotonic() + timeout
        (n,) = struct.unpack(">I", self._read_exact(4, deadline))
        return pickle.loads(self._read_exact(n, deadline))

    def call(self, msg, timeout: float | None = None):
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        try:
            _send(self.proc.stdin, msg)
        except BrokenPipeError:
            pass                        # it died: the read below says how
        return self._read(timeout or self.hang)


# ====================================================================== the fuzzing loop (parent)
@dataclass
class Crash:
    target: str
    sig: tuple
    detail: str
    path: str = ""
    inputs: int = 0
    size: int = 0
    minimised: bool = False


def _outcome(worker: Worker, msg, timeout=None):
    """(\"ok\", stats) | (\"fail\", sig, detail); harness errors raise RuntimeError."""
    try:
        r = worker.call(msg, timeout)
    except WorkerDied as exc:
        return ("fail", exc.sig, str(exc))
    if r[0] == "error":
        raise RuntimeError(f"fuzz worker: {r[1]}")
    return r


class Minimiser:
    """Shrinks a crashing episode while it keeps the same crash signature: inputs, then each input's
    bytes (deleted, then zeroed)."""

    def __init__(self, worker: Worker, target: str, sig: tuple, seconds: float):
        self.w = worker
        self.t = target
        self.sig = sig
        self.deadline = time.monotonic() + seconds
        self.trials = 0

    def crashes(self, batches) -> bool:
        if time.monotonic() > self.deadline:
            return False
        self.trials += 1
        r = _outcome(self.w, ("reset", self.t), 600)
        if r[0] != "ok":
            return False
        for b in batches:
            r = _outcome(self.w, ("run", self.t, b))
            if r[0] == "fail":
                return r[1] == self.sig
        return False

    def run(self, episode: list) -> tuple[list, bool]:
        if not self.crashes(episode):
            return episode, False
        items = [(bi, v, k) for bi, b in enumerate(episode) for v, k in b]
        items = self._ddmin(items, self._regroup)
        for j in range(len(items)):
            bi, v, k = items[j]
            if v is None:
                continue
            build = lambda nv: self._regroup(items[:j] + [(bi, nv, k)] + items[j + 1:])  # noqa: E731
            v = self._zero_bytes(self._ddmin(v, build, keep=0), build)
            items[j] = (bi, v, k)
        return self._regroup(items), True

    def _regroup(self, items) -> list:
        groups: dict = {}
        for bi, v, k in items:
            groups.setdefault(bi, []).append((v, k))
        return [groups[k] for k in sorted(groups)]

    def _ddmin(self, xs, build, keep: int = 1):
        """Delta debugging: drop ever smaller chunks of ``xs`` (inputs, or one input's bytes) while
        the crash stays, keeping at least ``keep`` items."""
        chunk = max(1, len(xs) // 2)
        while chunk >= 1 and len(xs) > keep and time.monotonic() < self.deadline:
            i, removed = 0, False
            while i < len(xs) and len(xs) > keep:
                cand = xs[:i] + xs[i + chunk:]
                if len(cand) >= keep and self.crashes(build(cand)):
                    xs, removed = cand, True
                else:
                    i += chunk
            if not removed:
                chunk //= 2
        return xs

    def _zero_bytes(self, v: bytes, build) -> bytes:
        """Zero what the crash does not need (length-prefixed formats resist deletion): what is
        left of the seed's content is only the bytes that matter."""
        chunk = max(1, len(v) // 2)
        while chunk >= 1 and time.monotonic() < self.deadline:
            for i in range(0, len(v), chunk):
                if any(v[i:i + chunk]):
                    cand = v[:i] + bytes(len(v[i:i + chunk])) + v[i + chunk:]
                    if self.crashes(build(cand)):
                        v = cand
            chunk //= 2
        return v


def save_crasher(crashers: Path, target: str, batches: list, sig: tuple, detail: str, note: str) -> Path:
    data = encode_episode(batches)
    d = crashers / target
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{hashlib.sha1(data).hexdigest()}.bin"
    path.write_bytes(data)
    detail = detail.replace(str(REPO) + os.sep, "").replace(sys.prefix + os.sep, "")
    path.with_suffix(".txt").write_text(f"decoder: {target}\ncrash: {' '.join(map(str, sig))}\n{note}\n\n{detail}\n")
    return path


def fuzz_target(worker: Worker, name: str, seeds, seed: int, inputs: int | None, seconds: float | None,
                crashers: Path, minimise_seconds: float, progress=None) -> tuple[dict, Crash | None]:
    t = TARGETS[name]
    gen = Generator(t, seeds, seed)
    stats: dict = {"inputs": 0, "batches": 0}
    _outcome(worker, ("reset", name), 600)            # builds the runner
    # unmutated seeds first, under a long timeout: they compile (or load) the kernels, so that the
    # fuzzing batches can be held to --hang-seconds
    warmup = gen.warmup()
    t0 = time.monotonic()
    episode: list = []
    first = True
    next_report = t0 + 30
    while True:
        if not first and inputs is not None and stats["inputs"] >= inputs:
            break
        if not first and seconds is not None and time.monotonic() - t0 >= seconds:
            break
        if len(episode) >= t.episode:       # a stateful decoder starts afresh (stateless ones need not)
            if t.episode > 1:
                _outcome(worker, ("reset", name), 600)
            episode = []
        batch, warmup, timeout = (warmup, None, 1800) if warmup else (gen.batch(), None, None)
        episode.append(batch)
        r = _outcome(worker, ("run", name, batch), timeout)
        if first:
            first = False
            t0 = time.monotonic()          # time the fuzzing, not the compile
            v = _outcome(worker, ("verify", name))
            stats.update(v[1] if v[0] == "ok" else {})
        if r[0] == "fail":
            sig, detail = r[1], r[2]
            found_at = f"seed {seed}, batch {stats['batches']}, episode of {len(episode)} batches"
            small, ok = Minimiser(worker, name, sig, minimise_seconds).run(episode)
            path = save_crasher(crashers, name, small, sig, detail,
                                f"found: {found_at}; minimised: {'yes' if ok else 'no (did not reproduce alone)'}")
            stats["seconds"] = round(time.monotonic() - t0, 1)
            return stats, Crash(name, sig, detail, str(path), sum(len(b) for b in small),
                                len(encode_episode(small)), ok)
        stats["batches"] += 1
        for k, v in r[1].items():
            stats[k] = stats.get(k, 0) + v
        if progress and time.monotonic() >= next_report:
            next_report = time.monotonic() + 30
            progress(name, stats, time.monotonic() - t0)
    stats["seconds"] = round(time.monotonic() - t0, 1)
    return stats, None


def _summary(name: str, st: dict) -> str:
    rate = st["inputs"] / st["seconds"] if st.get("seconds") else 0
    extra = ", ".join(f"{k} {v:,}" for k, v in st.items()
                      if k not in ("inputs", "batches", "seconds", "kernels_from_fuzz_cache") and isinstance(v, int))
    return f"{name:9s} {st['inputs']:>11,} inputs in {st.get('seconds', 0):6.1f} s ({rate:,.0f}/s); {extra}"


def cmd_fuzz(args) -> int:
    names = args.decoder or PUBLIC
    for n in names:
        if n not in TARGETS:
            print(f"flowaudit fuzz: unknown decoder {n!r} (one of {', '.join(PUBLIC)})", file=sys.stderr)
            return 2
    corpus = Path(args.corpus)
    if not corpus.is_dir() and any(TARGETS[n].kind != "selftest" for n in names):
        print(f"flowaudit fuzz: the shared corpus is expected at {corpus}", file=sys.stderr)
        return 2
    # --inputs N or --long: inputs per decoder; --seconds S (default 60 without either): in total
    inputs = args.inputs or (LONG_INPUTS if args.long else None)
    seconds = (args.seconds or (None if inputs else 60.0))
    seconds = seconds / len(names) if seconds else None
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    worker = Worker(not args.no_boundscheck, cache, args.hang_seconds, cache / "worker.log")
    say = (lambda *a: None) if args.json else (lambda s: print(s, flush=True))
    t_start = time.monotonic()
    try:
        info = worker.start()
    except RuntimeError as exc:
        print(f"flowaudit fuzz: {exc}", file=sys.stderr)
        return 2
    say(f"fuzz: seed {args.seed}, bounds checking {'on' if info.get('boundscheck') else 'off'}"
        f"{', numba cache ' + str(cache) if info.get('boundscheck') else ''}; "
        f"{'%d inputs' % inputs if inputs else '%.0f s' % seconds} per decoder")
    report = {"seed": args.seed, "boundscheck": bool(info.get("boundscheck")), "decoders": {}, "crashes": []}
    crashes = []
    try:
        for n in names:
            t0 = time.monotonic()
            try:
                seeds = load_seeds(TARGETS[n], corpus, args.seed)
                st, crash = fuzz_target(worker, n, seeds, args.seed, inputs, seconds, Path(args.crashers),
                                        args.minimise_seconds,
                                        progress=(lambda nm, s, el: say(f"  ... {nm}: {s['inputs']:,} inputs, "
                                                                        f"{el:.0f} s")))
            except RuntimeError as exc:
                print(f"flowaudit fuzz: {n}: {exc} (worker log: {worker.log_path})", file=sys.stderr)
                return 2
            st["wall_seconds"] = round(time.monotonic() - t0, 1)
            report["decoders"][n] = st
            say(_summary(n, st))
            if crash:
                crashes.append(crash)
                report["crashes"].append(crash.__dict__)
                say(f"  CRASH in {n}: {' '.join(map(str, crash.sig))}; {'minimised to' if crash.minimised else 'saved'} "
                    f"{crash.inputs} input(s), {crash.size} bytes: {crash.path}")
                say("  " + crash.detail.strip().splitlines()[-1][:300])
    finally:
        worker.stop()
    report["wall_seconds"] = round(time.monotonic() - t_start, 1)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        say(f"fuzz: {'%d crash(es)' % len(crashes) if crashes else 'no crash'} in {report['wall_seconds']:.0f} s")
    return 1 if crashes else 0


def add_parser(sub) -> None:
    from .config import bounded

    p = sub.add_parser("fuzz", help="mutation-fuzz every decoder with numba bounds checking on",
                       description="Seeded, structure-aware mutation fuzzing of every decoder entry point "
                       f"({', '.join(PUBLIC)}) over the shared corpus and synthetic traffic, in a worker "
                       "process with NUMBA_BOUNDSCHECK=1 and its own numba cache. A crash (exception, broken "
                       "invariant, signal, hang) is minimised and saved under tests/fuzz_crashers/<decoder>/ "
                       "and the exit status is 1. Default: about a minute in total.")
    p.add_argument("--long", action="store_true", help=f"{LONG_INPUTS:,} inputs per decoder (hours)")
    p.add_argument("--decoder", action="append", metavar="NAME", help=f"only this decoder (repeatable): "
                   f"{', '.join(PUBLIC)}")
    p.add_argument("--seconds", type=bounded(float, 0, inclusive=False), metavar="S",
                   help="fuzzing time in total, split over the decoders "
                   "(default 60 unless --inputs or --long; kernel compilation not counted)")
    p.add_argument("--inputs", type=bounded(int, 1), metavar="N", help="inputs per decoder (whichever of --seconds and "
                   "--inputs comes first ends a decoder's run)")
    p.add_argument("--seed", type=int, default=1, help="generator seed (default 1); a run with --inputs is "
                   "reproducible")
    p.add_argument("--no-boundscheck", action="store_true",
                   help="use the normal compiled kernels (no NUMBA_BOUNDSCHECK; the normal numba cache)")
    p.add_argument("--corpus", default=str(CORPUS), metavar="DIR", help="shared corpus (default ../shared/corpus "
                   "from the repository root)")
    p.add_argument("--crashers", default=str(CRASHERS), metavar="DIR",
                   help="where crashers are saved (default tests/fuzz_crashers)")
    p.add_argument("--cache-dir", default=str(CACHE_DIR), metavar="DIR",
                   help="numba cache of the bounds-checked kernels and the worker log (default .fuzz-cache)")
    p.add_argument("--hang-seconds", type=bounded(float, 0, inclusive=False), default=120.0, metavar="S",
                   help="a batch without an answer for S seconds is a hang (default 120)")
    p.add_argument("--minimise-seconds", type=bounded(float, 0), default=120.0, metavar="S",
                   help="time to minimise a crasher (default 120)")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of text")
    p.set_defaults(fn=cmd_fuzz)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1:])
    ap = argparse.ArgumentParser(prog="flowaudit")
    add_parser(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(["fuzz"] + argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
