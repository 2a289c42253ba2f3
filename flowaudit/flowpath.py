"""The stream's path for network telemetry topics: NetFlow/IPFIX datagrams, goflow2 JSON flows
and Zeek DNS answers.

Each Kafka message still lands in exactly one of ``messages`` (decoded) and ``quarantine``;
decoded flows go to ``flows`` (when enabled) and the watchlist / DNS / zone-policy matches to
``transfers``.  Rows carry the provenance of the datagram they came from.  A data set held for
its template and decoded in a later batch keeps its own datagram's offset, and is filed with the
batch that released it (the template's datagram, same exporter and so same partition).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .datasets import MESSAGES, QUARANTINE, SCHEMA_VERSION
from .decode.netflow import STATUS_NAMES, NetflowDecoder, decode_goflow_json, numeric_view
from .egress import _const, _table as _egress_table
from .kernels.ipset import addr_key
from .pipeline import Batch, _const_dict, _dict_array
from .zones import SilentMonitor

KIND_NETFLOW, KIND_GOFLOW, KIND_DNS = "netflow", "goflow", "dns"
KINDS = (KIND_NETFLOW, KIND_GOFLOW, KIND_DNS)
_VERSION_NAMES = {5: "v5", 9: "v9", 10: "ipfix"}


@dataclass
class FlowResult:
    tables: dict = field(default_factory=dict)      # dataset -> (table, batch index of each row)
    quarantine_counts: Counter = field(default_factory=Counter)   # (format, reason) -> n
    flows: int = 0
    late_dropped: int = 0                           # held rows whose partition is not in this batch
    kernel_seconds: dict = field(default_factory=dict)


class FlowPath:
    def __init__(self, egress=None, write_flows: bool = True, template_ttl_s: int = 3600,
                 silent_window_s: int = 300):
        self.egress = egress
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

    def run(self, batch: Batch, idx: np.ndarray, kind: str) -> FlowResult:
        """Process the messages ``idx`` of ``batch``, all of one kind."""
        sub = batch.take(idx)
        res = FlowResult()
        t0 = time.perf_counter()
        if kind == KIND_DNS:
            self._dns(sub, idx, res)
        else:
            self._flows(sub, idx, kind, res)
        res.kernel_seconds[kind] = time.perf_counter() - t0
        return res

    # -- flows ---------------------------------------------------------------------------------

    def _flows(self, sub: Batch, idx: np.ndarray, kind: str, res: FlowResult) -> None:
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
        else:
            values = [None if sub.null[i] else sub.buf[sub.offsets[i]:sub.offsets[i + 1]].tobytes() for i in range(n)]
            flows, st = decode_goflow_json(values, sources=sub.sources, source_idx=sub.source_idx,
                                           partition=sub.partition, offset=sub.offset, ts_ms=sub.ts_ms)
            st = np.asarray(st, np.int64)
            reasons = ["ok" if s == 0 else "malformed_json" for s in st]
            status = st
            numeric = numeric_view(flows)
            exporters = None
            # goflow rows are in message order, one per decodable message
            dgram = np.flatnonzero(st == 0)
            mtypes = ["goflow2"] * n
        status[sub.null] = 1
        reasons = ["null_value" if sub.null[i] else ("empty_value" if lens[i] == 0 else reasons[i])
                   for i in range(n)]
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
        if not keep.all():
            flows = flows.filter(pa.array(keep))
            numeric = {k: v[keep] for k, v in numeric.items()}
            f_idx = f_idx[keep]
        res.flows = flows.num_rows
        per_msg = np.bincount(np.searchsorted(idx, f_idx[f_idx >= 0]), minlength=n) if res.flows else np.zeros(n, int)
        if self.write_flows and flows.num_rows:
            res.tables["flows"] = (flows, f_idx)
        if self.egress is not None and flows.num_rows:
            src = sub.sources[int(sub.source_idx[0])] if n else "-"
            t = self.egress.detect_flows(numeric, exporters=exporters, source=src,
                                         partition=flows.column("partition").to_numpy(),
                                         offset=np.arange(flows.num_rows), ts_ms=flows.column("ts_ms").to_numpy(
                                             zero_copy_only=False))
            if t.num_rows:
                rows = t.column("offset").to_numpy().astype(np.int64)
                k = t.schema.get_field_index("offset")
                t = t.set_column(k, t.schema.field(k), flows.column("offset").take(pa.array(rows)))
                res.tables["transfers"] = (t, f_idx[rows])
        if self.silent is not None and flows.num_rows:
            silent = self._silent_windows(numeric, f_idx, flows)
            if silent is not None:
                old = res.tables.get("transfers")
                res.tables["transfers"] = silent if old is None else (
                    pa.concat_tables([old[0], silent[0]]), np.concatenate([old[1], silent[1]]))
        self._messages(sub, idx, status, reasons, kind, mtypes, per_msg, res)

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

    # -- DNS answers ---------------------------------------------------------------------------

    def _dns(self, sub: Batch, idx: np.ndarray, res: FlowResult) -> None:
        n = len(sub)
        lens = np.diff(sub.offsets)
        status = np.zeros(n, np.int64)
        reasons = ["ok"] * n
        parts, rows_idx = [], []
        for i in range(n):
            if sub.null[i] or lens[i] == 0:
                status[i] = 1
                reasons[i] = "null_value" if sub.null[i] else "empty_value"
                continue
            if self.egress is None:
                continue
            bad0 = self.egress.dns.stats.get("bad_lines", 0)
            value = sub.buf[sub.offsets[i]:sub.offsets[i + 1]].tobytes()
            t = self.egress.observe_dns(value.splitlines(), source=sub.sources[int(sub.source_idx[i])],
                                        partition=int(sub.partition[i]), offset=int(sub.offset[i]))
            if self.egress.dns.stats.get("bad_lines", 0) > bad0:
                status[i] = 1
                reasons[i] = "malformed_json"
                continue
            if t.num_rows:
                parts.append(t)
                rows_idx.append(np.full(t.num_rows, idx[i], np.int64))
        if parts:
            res.tables["transfers"] = (pa.concat_tables(parts), np.concatenate(rows_idx))
        self._messages(sub, idx, status, reasons, KIND_DNS, ["zeek-dns"] * n, np.zeros(n, int), res)

    # -- the messages / quarantine rows -----------------------------------------------------------

    def _messages(self, sub, idx, status, reasons, kind, mtypes, per_msg, res) -> None:
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
        messages = pa.Table.from_arrays(prov(ok) + [
            pa.array([sub.keys[i] for i in ok], pa.binary()),
            _const_dict(kind, m),
            _dict_array(np.array([tpos[mtypes[i]] for i in ok], np.int32), types),
            pa.array(lens[ok], pa.int32()),
            pa.array(per_msg[ok].astype(np.int32), pa.int32()),      # flows decoded from the message
            pa.array(n_transfers[ok], pa.int32()),                     # transfers it produced
            _const_dict("-", m),
            _const_dict(SCHEMA_VERSION, m),
        ], schema=MESSAGES)
        res.tables["messages"] = (messages, idx[ok])
        if bad.size:
            rnames = sorted({reasons[i] for i in bad})
            rpos = {r: i for i, r in enumerate(rnames)}
            quarantine = pa.Table.from_arrays(prov(bad) + [
                pa.array([sub.keys[i] for i in bad], pa.binary()),
                _const_dict(kind, bad.size),
                _dict_array(np.array([rpos[reasons[i]] for i in bad], np.int32), rnames),
                pa.array(lens[bad], pa.int32()),
                pa.array([None if sub.null[i] else sub.buf[sub.offsets[i]:sub.offsets[i + 1]].tobytes() for i in bad],
                         pa.binary()),
                _const_dict(SCHEMA_VERSION, bad.size),
            ], schema=QUARANTINE)
            res.tables["quarantine"] = (quarantine, idx[bad])
            res.quarantine_counts.update((kind, reasons[i]) for i in bad)

