"""The stream's path for network telemetry topics: NetFlow/IPFIX datagrams, goflow2 JSON flows,
Zeek conn.log connections (as the flow records an exporter would send), the names DNS answers,
TLS server names and HTTP Hosts give addresses (Zeek's logs, Suricata's events), and a Suricata
``eve`` topic that carries both (every event type on one topic: the names of a batch are taken
before its flows are matched).

Each Kafka message still lands in exactly one of ``messages`` (decoded) and ``quarantine``;
decoded flows go to ``flows`` (when enabled) and the watchlist / DNS / zone-policy matches to
``transfers``.  Rows carry the provenance of the datagram they came from.  A data set held for
its template and decoded in a later batch keeps its own datagram's offset, and is filed with the
batch that released it (the template's datagram, same exporter and so same partition).
"""
from __future__ import annotations

import logging
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import orjson
import pyarrow as pa

from .. import quarantine as _quarantine
from ..datasets import MESSAGES, SCHEMA_VERSION
from ..decode.netflow import (GOFLOW_REASONS, STATUS_NAMES, EveFlow, NetflowDecoder, NoFlow, decode_goflow_json,
                              numeric_view, zeek_conn_flows, zeek_conn_log)
from .egress import _const, _table as _egress_table
from ..kernels.ipset import addr_key
from ..pipeline import Batch, _const_dict, _dict_array
from .zones import SilentMonitor

log = logging.getLogger(__name__)

KIND_NETFLOW, KIND_GOFLOW, KIND_DNS, KIND_ZEEK_CONN, KIND_EVE = "netflow", "goflow", "dns", "zeek_conn", "eve"
KINDS = (KIND_NETFLOW, KIND_GOFLOW, KIND_DNS, KIND_ZEEK_CONN, KIND_EVE)
_VERSION_NAMES = {5: "v5", 9: "v9", 10: "ipfix"}
# a dns topic's message type: the log of its (last) record
_NAME_MTYPE = {"zeek": {"dns": "zeek-dns", "tls_sni": "zeek-ssl", "http_host": "zeek-http"},
               "suricata": {"dns": "suricata-dns", "tls_sni": "suricata-tls", "http_host": "suricata-http",
                            "other": "suricata-eve"}}
# restart snapshot (FlowPath.state / restore): magic, format version, crc32 and length of the
# zlib-compressed payload; the payload is a JSON header then raw little-endian array bytes
STATE_MAGIC = b"FAFPSTAT"
STATE_FORMAT = 1
STATE_MAX_BYTES = 1 << 30             # decompressed: a foreign or corrupt blob can never exhaust memory
_STATE_HEAD = struct.Struct("<8sHIQ")
_STATE_DTYPES = {"int64": np.int64, "uint64": np.uint64, "uint8": np.uint8}


@dataclass
class FlowResult:
    tables: dict = field(default_factory=dict)      # dataset -> (table, batch index of each row)
    quarantine_counts: Counter = field(default_factory=Counter)   # (format, reason) -> n
    flows: int = 0
    late_dropped: int = 0                           # held rows whose partition is not in this batch
    kernel_seconds: dict = field(default_factory=dict)

    def add(self, dataset: str, table: pa.Table, rows: np.ndarray) -> None:
        """``table``'s rows (batch index ``rows``) to ``dataset``'s, after any it holds."""
        old = self.tables.get(dataset)
        self.tables[dataset] = (table, rows) if old is None else (
            pa.concat_tables([old[0], table]), np.concatenate([old[1], rows]))


class FlowPath:
    def __init__(self, egress=None, write_flows: bool = True, template_ttl_s: int = 3600,
                 silent_window_s: int = 300, protector=None):
        self.egress = egress
        if protector is None:
            raise ValueError("FlowPath needs the stream's Protector (Kafka keys, sealed quarantine payloads)")
        self.protector = protector
        self.write_flows = write_flows
        self.decoder = NetflowDecoder(template_ttl_s=template_ttl_s)
        # silent-zone check: inventory hosts (and monitored-zone hosts seen before) that send nothing
        # through the exporters during a window of flow time
        self.silent = None
        self.window_ns = int(silent_window_s) * 1_000_000_000
        self._win_start: int | None = None
        self._win_src: list = []
        pol = egress.policy if egress is not None else None
        if pol is not None and self.window_ns > 0 and (pol.inventory_hosts or pol.inventory_zones):
            self.silent = SilentMonitor(pol)

    # -- restart state ----------------------------------------------------------------------------

    def state(self) -> bytes:
        """A snapshot of everything a restart must not lose: NetFlow templates and per-domain state,
        data sets held for their template (bytes and provenance), the DNS map (validity intervals)
        and the silent-zone window.  Versioned and checksummed; its size follows what is live and is
        bounded by the decoder's and the map's capacities.  See :meth:`restore`."""
        meta, arrays = self.decoder.export_state()
        doc = {"netflow": meta, "dns": self.egress.dns.to_state() if self.egress is not None else None,
               "silent": None}
        if self.silent is not None:
            hi = np.concatenate([h for h, _ in self._win_src]) if self._win_src else np.zeros(0, np.uint64)
            lo = np.concatenate([w for _, w in self._win_src]) if self._win_src else np.zeros(0, np.uint64)
            arrays = dict(arrays, win_hi=hi.astype(np.uint64), win_lo=lo.astype(np.uint64),
                          learned_hi=np.fromiter((k[0] for k in self.silent.learned), np.uint64),
                          learned_lo=np.fromiter((k[1] for k in self.silent.learned), np.uint64))
            doc["silent"] = {"win_start": self._win_start, "window_ns": self.window_ns}
        head, raw, pos = [], [], 0
        for name, a in arrays.items():
            a = np.ascontiguousarray(a)
            b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
            head.append([name, a.dtype.name, list(a.shape), pos, len(b)])
            raw.append(b)
            pos += len(b)
        doc["arrays"] = head
        js = orjson.dumps(doc)
        payload = zlib.compress(struct.pack("<I", len(js)) + js + b"".join(raw), 1)
        return _STATE_HEAD.pack(STATE_MAGIC, STATE_FORMAT, zlib.crc32(payload), len(payload)) + payload

    def restore(self, blob: bytes) -> bool:
        """Load a :meth:`state` snapshot into this (freshly started) FlowPath.  A corrupt, truncated,
        foreign or newer-format blob is ignored with a logged reason and the path starts empty:
        never an exception.  Returns whether the snapshot was loaded."""
        try:
            doc, arrays = self._parse_state(bytes(blob))
            # everything is checked on fresh objects first; the live path changes only at the end
            dec = NetflowDecoder(template_ttl_s=self.decoder.template_ttl_s)
            dec.import_state(doc["netflow"], arrays)
            dns_state = doc.get("dns")
            if self.egress is not None and dns_state is not None:
                type(self.egress.dns)(max_entries=self.egress.dns.max_entries).load_state(dns_state)
            sil = doc.get("silent")
            window = None
            if self.silent is not None and isinstance(sil, dict) and sil.get("window_ns") == self.window_ns:
                ws = sil.get("win_start")
                window = (int(ws) if isinstance(ws, int) else None,
                          [(arrays["win_hi"], arrays["win_lo"])] if "win_hi" in arrays else [],
                          list(zip(arrays["learned_hi"].tolist(), arrays["learned_lo"].tolist()))
                          if "learned_hi" in arrays else [])
        except (ValueError, KeyError, TypeError, IndexError, zlib.error, struct.error, orjson.JSONDecodeError) as exc:
            log.warning("flowpath: restart state ignored (%s: %s); starting without templates, held sets "
                        "and DNS map", type(exc).__name__, str(exc)[:200])
            return False
        self.decoder = dec
        if self.egress is not None and dns_state is not None:
            self.egress.dns.load_state(dns_state)
        if window is not None:
            self._win_start, self._win_src, learned = window
            self.silent.learned.update(dict.fromkeys(learned))
        return True

    @staticmethod
    def _parse_state(blob: bytes) -> tuple[dict, dict]:
        if len(blob) < _STATE_HEAD.size:
            raise ValueError("too short")
        magic, fmt, crc, n = _STATE_HEAD.unpack_from(blob)
        if magic != STATE_MAGIC:
            raise ValueError("not a flowpath state")
        if fmt != STATE_FORMAT:
            raise ValueError(f"format {fmt}, this build reads {STATE_FORMAT}")
        payload = blob[_STATE_HEAD.size:]
        if len(payload) != n or zlib.crc32(payload) != crc:
            raise ValueError("truncated or corrupt (length/crc32)")
        z = zlib.decompressobj()
        data = z.decompress(payload, STATE_MAX_BYTES)
        if z.unconsumed_tail or not z.eof:
            raise ValueError("payload too large or incomplete")
        (jl,) = struct.unpack_from("<I", data)
        doc = orjson.loads(data[4:4 + jl])
        raw = memoryview(data)[4 + jl:]
        arrays = {}
        for name, dtype, shape, pos, nbytes in doc["arrays"]:
            dt = np.dtype(_STATE_DTYPES[dtype]).newbyteorder("<")
            count = int(np.prod(shape)) if shape else 1
            if pos < 0 or nbytes != count * dt.itemsize or pos + nbytes > len(raw) or min(shape, default=0) < 0:
                raise ValueError(f"array {name!r} out of range")
            arrays[name] = np.frombuffer(raw[pos:pos + nbytes], dt).astype(dt.newbyteorder("="))\
                .reshape(shape)
        return doc, arrays

    def run(self, batch: Batch, idx: np.ndarray, kind: str) -> FlowResult:
        """Process the messages ``idx`` of ``batch``, all of one kind."""
        sub = batch.take(idx)
        res = FlowResult()
        t0 = time.perf_counter()
        if kind == KIND_DNS:
            out = self._dns(sub, idx, res)
        elif kind == KIND_EVE:
            out = self._eve(sub, idx, res)
        else:
            out = self._flows(sub, idx, kind, res)
        self._messages(sub, idx, *out, kind, res)
        res.kernel_seconds[kind] = time.perf_counter() - t0
        return res

    # -- flows ---------------------------------------------------------------------------------

    def _flows(self, sub: Batch, idx: np.ndarray, kind: str, res: FlowResult) -> tuple:
        """A flow topic's messages: their flows, matched; (status, reasons, message types, flows
        per message) for :meth:`_messages`."""
        n = len(sub)
        lens = np.diff(sub.offsets)
        if kind == KIND_NETFLOW:
            r = self.decoder.decode_batch(sub)
            status = np.asarray(r.status, np.int64)
            reasons = [STATUS_NAMES[s] if s else "ok" for s in status]
            flows, numeric, exporters = r.table, r.numeric, r.exporters
            dgram = numeric["dgram"]
            head = np.zeros(n, np.int64)
            for i in range(n):  # the version field of each datagram, for msg_type
                s = sub.offsets[i]
                head[i] = (int(sub.buf[s]) << 8 | int(sub.buf[s + 1])) if lens[i] >= 2 else 0
            mtypes = [_VERSION_NAMES.get(int(v), "netflow") for v in head]
        elif kind == KIND_ZEEK_CONN:
            flows, dgram, status, reasons, mtypes = self._zeek_conn(sub)
            numeric = numeric_view(flows)
            exporters = None
        else:
            values = [None if sub.null[i] else sub.buf[sub.offsets[i]:sub.offsets[i + 1]].tobytes() for i in range(n)]
            flows, st = decode_goflow_json(values, sources=sub.sources, source_idx=sub.source_idx,
                                           partition=sub.partition, offset=sub.offset, ts_ms=sub.ts_ms)
            st = np.asarray(st, np.int64)
            reasons = [GOFLOW_REASONS.get(int(s), "ok") for s in st]
            status = st
            numeric = numeric_view(flows)
            exporters = None
            # goflow rows are in message order, one per decodable message
            dgram = np.flatnonzero(st == 0)
            mtypes = ["goflow2"] * n
        status[sub.null] = 1
        reasons = ["null_value" if sub.null[i] else ("empty_value" if lens[i] == 0 else reasons[i])
                   for i in range(n)]
        per_msg = self._flow_rows(sub, idx, kind, res, flows, numeric, exporters, dgram)
        return status, reasons, mtypes, per_msg

    def _flow_rows(self, sub: Batch, idx: np.ndarray, kind: str, res: FlowResult, flows: pa.Table, numeric: dict,
                   exporters, dgram: np.ndarray) -> np.ndarray:
        """Decoded flows (``dgram``: the message of each, -1 for a held row) to ``flows`` and their
        watchlist, DNS and zone matches to ``transfers``; the flows of each message."""
        n = len(sub)
        # batch index of each flow row: its datagram, or (held rows) the first message of its partition
        f_idx = np.full(flows.num_rows, -1, np.int64)
        mine = dgram >= 0
        f_idx[mine] = idx[dgram[mine]]
        if (~mine).any():
            part = flows.column("partition").to_numpy()
            first_of = {}
            for j in range(n):
                first_of.setdefault(int(sub.partition[j]), int(idx[j]))
            for k in np.flatnonzero(~mine):
                f_idx[k] = first_of.get(int(part[k]), -1)
        keep = f_idx >= 0
        res.late_dropped = int((~keep).sum())
        if res.late_dropped and kind == KIND_NETFLOW:
            self.decoder.counters["records_late_dropped"] += res.late_dropped
        if not keep.all():
            flows = flows.filter(pa.array(keep))
            numeric = {k: v[keep] for k, v in numeric.items()}
            f_idx = f_idx[keep]
        res.flows = flows.num_rows
        per_msg = np.bincount(np.searchsorted(idx, f_idx[f_idx >= 0]), minlength=n) if res.flows else np.zeros(n, int)
        if self.write_flows and flows.num_rows:
            res.tables["flows"] = (flows, f_idx)
        if self.egress is not None and flows.num_rows:
            t = self.egress.detect_flows(numeric, exporters=exporters,
                                         partition=flows.column("partition").to_numpy(),
                                         offset=np.arange(flows.num_rows), ts_ms=flows.column("ts_ms").to_numpy(
                                             zero_copy_only=False))
            if t.num_rows:
                # offset (the flow's index so far) -> the datagram's own offset and source: a batch may
                # hold several topics of one kind, and a held row keeps its own datagram's topic
                rows = pa.array(t.column("offset").to_numpy().astype(np.int64))
                for name in ("offset", "source"):
                    k = t.schema.get_field_index(name)
                    col = flows.column(name).take(rows)
                    if name == "source":
                        col = col.combine_chunks().cast(t.schema.field(k).type)
                    t = t.set_column(k, t.schema.field(k), col)
                res.add("transfers", t, f_idx[rows.to_numpy()])
        if self.silent is not None and flows.num_rows:
            silent = self._silent_windows(numeric, f_idx, flows)
            if silent is not None:
                res.add("transfers", *silent)
        return per_msg

    def _silent_windows(self, numeric: dict, f_idx: np.ndarray, flows: pa.Table):
        """Close every window of flow time that this batch's flows complete; one transfers row per
        silent host, filed with the message whose flow closed the window."""
        t = numeric["first_ns"].astype(np.int64)
        # a record time outside (0, 2**62) ns is exporter garbage: it never opens or closes a window
        # (and the window arithmetic stays inside int64)
        order = np.flatnonzero((t > 0) & (t < 1 << 62))
        order = order[np.argsort(t[order], kind="stable")]
        tables, rows = [], []
        lo = 0
        while lo < order.size:
            if self._win_start is None:
                self._win_start = int(t[order[lo]]) - int(t[order[lo]]) % self.window_ns
            end = self._win_start + self.window_ns
            hi = int(np.searchsorted(t[order], end, side="left"))
            part = order[lo:hi]
            self._win_src.append((numeric["src_hi"][part], numeric["src_lo"][part]))
            if hi >= order.size:
                break                       # the window is still open
            hosts = self.silent.window(np.concatenate([h for h, _ in self._win_src]),
                                       np.concatenate([w for _, w in self._win_src]))
            if hosts:
                closer = int(order[hi])   # the flow that closed the window: its datagram is the provenance
                prov = (str(flows.column("source")[closer]), flows.column("partition")[closer].as_py(),
                        flows.column("offset")[closer].as_py(), flows.column("ts_ms")[closer].as_py())
                tables.append(self._silent_rows(hosts, self._win_start, prov))
                rows.append(np.full(len(hosts), f_idx[order[hi]], np.int64))
            self._win_src = []
            self._win_start = end + (int(t[order[hi]]) - end) // self.window_ns * self.window_ns
            lo = hi
        if not tables:
            return None
        return pa.concat_tables(tables), np.concatenate(rows)

    def _silent_rows(self, hosts: list[str], start_ns: int, prov: tuple) -> pa.Table:
        pol = self.egress.policy
        m = len(hosts)
        hi = np.empty(m, np.uint64)
        lo = np.empty(m, np.uint64)
        for k, h in enumerate(hosts):
            hi[k], lo[k] = addr_key(h)
        z = pol.classify(hi, lo)
        zones = [pol.zone_names[i] if i >= 0 else None for i in z.tolist()]
        source, partition, offset, ts_ms = prov
        cols = {"source": _const(source, m), "partition": pa.array(np.full(m, partition, np.int32)),
                "offset": pa.array(np.full(m, offset, np.int64)),
                "ts_ms": pa.array([ts_ms] * m, pa.int64()),
                "time_ns": pa.array(np.full(m, start_ns, np.int64)), "exporter": pa.nulls(m, pa.string()),
                "src_addr": pa.array(hosts, pa.string()), "src_port": pa.nulls(m, pa.uint16()),
                "dst_addr": pa.nulls(m, pa.string()), "dst_port": pa.nulls(m, pa.uint16()),
                "protocol": pa.nulls(m, pa.uint8()), "bytes": pa.nulls(m, pa.uint64()),
                "packets": pa.nulls(m, pa.uint64()), "sampling_interval": pa.nulls(m, pa.uint32()),
                "bytes_scaled": pa.nulls(m, pa.uint64()), "platform": pa.array(["policy"] * m),
                "indicator": pa.array(hosts, pa.string()), "indicator_type": pa.array(["silent_host"] * m),
                "seen_where": pa.array(["NETFLOW_ABSENT"] * m), "src_zone": pa.array(zones, pa.string()),
                "dst_zone": pa.nulls(m, pa.string()), "rule": pa.array(["silent_zone"] * m),
                "severity": pa.array(["high"] * m),
                "indicator_source": pa.array([f"zone policy {pol.version}: expected sender silent for "
                                              f"{self.window_ns // 1_000_000_000} s"] * m, pa.string())}
        for z_name in zones:
            self.egress._count("policy", z_name or "none", "silent_zone")
        return _egress_table(cols, m, self.egress.watchlist.version, pol.version)

    @staticmethod
    def _zeek_conn(sub: Batch):
        """A Zeek conn topic's messages (each a JSON line, or Zeek's ASCII log with its header, one
        or more connections; or Suricata eve.json events) -> (FLOWS table, message of each row,
        status, reason and type per message).  A message with a line that is no connection is
        quarantined whole (as a DNS message is); a message of Suricata events that are no flows
        (alerts, DNS ...) is read and gives none.  Its type: ``zeek-conn``, ``suricata-flow`` (its
        connections were Suricata flow events) or ``suricata-eve`` (Suricata events, no flow)."""
        n = len(sub)
        status = np.zeros(n, np.int64)
        reasons = ["ok"] * n
        mtypes = ["zeek-conn"] * n
        values, msg = [], []
        for i in range(n):
            if sub.null[i] or sub.offsets[i + 1] == sub.offsets[i]:
                status[i] = 1
                continue
            log_, flows, bad, records = zeek_conn_log(), [], None, 0
            for line in sub.buf[sub.offsets[i]:sub.offsets[i + 1]].tobytes().splitlines():
                try:
                    rec = log_.record(line)
                except ValueError:
                    bad = log_.reason
                    break
                if rec is not None:
                    records += 1
                    flows += zeek_conn_flows(rec)
                    if isinstance(rec, (EveFlow, NoFlow)) and mtypes[i] != "suricata-flow":
                        mtypes[i] = "suricata-flow" if isinstance(rec, EveFlow) else "suricata-eve"
            if bad or not records:
                status[i], reasons[i] = 1, bad or "malformed_json"
                continue
            values += flows
            msg += [i] * len(flows)
        m = np.asarray(msg, np.int64)
        at = lambda a: np.asarray(a)[m]  # noqa: E731
        table, _st = decode_goflow_json(values, sources=sub.sources, source_idx=at(sub.source_idx),
                                        partition=at(sub.partition), offset=at(sub.offset), ts_ms=at(sub.ts_ms))
        return table, m, status, reasons, mtypes

    # -- DNS answers ---------------------------------------------------------------------------

    def _dns(self, sub: Batch, idx: np.ndarray, res: FlowResult, skip: np.ndarray | None = None) -> tuple:
        """A names topic's messages into the DNS map, their lookups and watched names to
        ``transfers``; (status, reasons, message types, flows per message: none) for
        :meth:`_messages`.  ``skip``: messages already judged bad (their names are not taken)."""
        n = len(sub)
        lens = np.diff(sub.offsets)
        status = np.zeros(n, np.int64)
        reasons = ["ok"] * n
        parts, rows_idx = [], []
        mtypes = ["zeek-dns"] * n
        for i in range(n):
            if sub.null[i] or lens[i] == 0:
                status[i] = 1
                reasons[i] = "null_value" if sub.null[i] else "empty_value"
                continue
            if self.egress is None or (skip is not None and skip[i]):
                continue
            bad: list = []
            value = sub.buf[sub.offsets[i]:sub.offsets[i + 1]].tobytes()
            # a message with a bad line is quarantined whole, and none of its answers names a flow:
            # nothing attributed through a record the datasets do not hold (reinject replays it whole)
            t = self.egress.observe_dns(value.splitlines(), source=sub.sources[int(sub.source_idx[i])],
                                        partition=int(sub.partition[i]), offset=int(sub.offset[i]), bad=bad,
                                        whole=True)
            mtypes[i] = _NAME_MTYPE[self.egress.dns.last_log].get(self.egress.dns.last_via, "zeek-dns")
            if bad:
                status[i] = 1
                reasons[i] = bad[0][2]      # malformed_json, or format_mismatch (a Zeek ASCII row)
                continue
            if t.num_rows:
                parts.append(t)
                rows_idx.append(np.full(t.num_rows, idx[i], np.int64))
        if parts:
            res.add("transfers", pa.concat_tables(parts), np.concatenate(rows_idx))
        return status, reasons, mtypes, np.zeros(n, int)

    # -- Suricata eve: names and flows on one topic ------------------------------------------------

    def _eve(self, sub: Batch, idx: np.ndarray, res: FlowResult) -> tuple:
        """A Suricata ``eve`` topic (every event type on one topic, as a shipper sends eve.json):
        its DNS answers, TLS server names and HTTP Hosts go into the DNS map first, then its
        ``flow`` / ``netflow`` events are flows, matched against the map (the names of the batch
        included).  A message with a line that is no Suricata event (or a bad one: no readable
        time, a flow without addresses) is quarantined whole: it names nothing and gives no flow."""
        flows, dgram, status, reasons, types = self._zeek_conn(sub)        # reads, takes nothing in
        n_status, n_reasons, mtypes, _ = self._dns(sub, idx, res, skip=status != 0)
        for i in np.flatnonzero((status != 0) | (n_status != 0)).tolist():
            status[i] = 1
            reasons[i] = n_reasons[i] if n_status[i] else reasons[i]
        dgram = np.asarray(dgram, np.int64)
        if dgram.size and status[dgram].any():            # a name record was bad: its message gives no flow
            keep = status[dgram] == 0
            flows, dgram = flows.filter(pa.array(keep)), dgram[keep]
        per_msg = self._flow_rows(sub, idx, KIND_EVE, res, flows, numeric_view(flows), None, dgram)
        # a flow event's message is suricata-flow, one that named a host its name's type, the rest
        # suricata-eve
        mtypes = [c if c == "suricata-flow" or not m.startswith("suricata-") else m for c, m in zip(types, mtypes)]
        return status, reasons, mtypes, per_msg

    # -- the messages / quarantine rows -----------------------------------------------------------

    def _messages(self, sub, idx, status, reasons, mtypes, per_msg, kind, res) -> None:
        n = len(sub)
        lens = np.diff(sub.offsets).astype(np.int32)
        ok = np.flatnonzero(status == 0)
        bad = np.flatnonzero(status != 0)
        n_transfers = np.zeros(n, np.int32)
        if "transfers" in res.tables:
            n_transfers += np.bincount(np.searchsorted(idx, res.tables["transfers"][1]), minlength=n).astype(np.int32)

        def prov(rows):
            ts = sub.ts_ms[rows]
            return [_dict_array(sub.source_idx[rows], sub.sources), pa.array(sub.partition[rows], pa.int32()),
                    pa.array(sub.offset[rows], pa.int64()), pa.array(ts, pa.int64(), mask=ts < 0)]

        types = sorted(set(mtypes)) or [""]
        tpos = {t: i for i, t in enumerate(types)}
        m = ok.size
        messages = pa.Table.from_arrays(prov(ok) + self.protector.key_columns([sub.keys[i] for i in ok]) + [
            _const_dict(kind, m),
            _dict_array(np.array([tpos[mtypes[i]] for i in ok], np.int32), types),
            pa.array(lens[ok], pa.int32()),
            pa.array(per_msg[ok].astype(np.int32), pa.int32()),      # flows decoded from the message
            pa.array(n_transfers[ok], pa.int32()),                     # transfers it produced
            pa.array([[]] * m, pa.list_(pa.string())),                 # flags: none for telemetry
            _const_dict("-", m),
            _const_dict(SCHEMA_VERSION, m),
        ], schema=MESSAGES)
        res.tables["messages"] = (messages, idx[ok])
        if bad.size:
            rnames = sorted({reasons[i] for i in bad})
            rpos = {r: i for i, r in enumerate(rnames)}
            quarantine = _quarantine.table(
                self.protector, prov(bad), [sub.keys[i] for i in bad],
                [None if sub.null[i] else sub.buf[sub.offsets[i]:sub.offsets[i + 1]].tobytes() for i in bad],
                _const_dict(kind, bad.size), _dict_array(np.array([rpos[reasons[i]] for i in bad], np.int32), rnames),
                lens[bad])
            res.tables["quarantine"] = (quarantine, idx[bad])
            res.quarantine_counts.update((kind, reasons[i]) for i in bad)

