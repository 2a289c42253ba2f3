"""NetFlow v5 / v9 / IPFIX decoder shell: template registry state, held data sets, Arrow output.

:class:`NetflowDecoder` owns the template registry (numpy arrays, see
:mod:`flowaudit.kernels.netflow`) and runs the batch kernel over export datagrams::

    dec = NetflowDecoder()
    res = dec.decode_result(buf, offsets, exporters=["192.0.2.1"], exporter_idx=np.zeros(n, np.int32))
    res.table      # pyarrow.Table in flowaudit.datasets.FLOWS layout
    res.numeric    # dict of numpy arrays (addresses as hi/lo uint64, IPv4 as ::ffff:a.b.c.d)
    res.status     # int16 per datagram, 0 = ok; res.reasons[i] the reason string
    dec.counters   # cumulative per-reason counters (dict)
    dec.templates()  # the live templates (like goflow2's /templates)

Templates are keyed by (exporter address, observation domain / source id, version, template id),
never by the exporter's source port; a template id re-sent with another definition (an exporter
restart) replaces the old one (``templates_updated``) and the records after it use the new layout.
Data sets that arrive before their template are held (bounded by count, bytes and exporter-time
age) and decoded at the end of the message that brings the template -- with that definition --,
or dropped and counted as ``missing_template``.  Counts are reported raw, with the sampling
interval beside them; nothing is scaled here.

Every record is decoded or counted with a reason.  A datagram whose status is not ``ok`` is
quarantined whole and writes no flows, for v5, v9 and IPFIX alike: records decoded from it before
the problem was met are counted as ``records_quarantined``, its sets still waiting for a template
as ``sets_quarantined`` (its templates are still learned).  Four or more non-zero bytes after the
last record of a set are counted as ``records_truncated``.  :meth:`NetflowDecoder.export_state`
and :meth:`NetflowDecoder.import_state` carry templates and held sets across a restart; a Kafka
message delivered again replaces the sets held from its first delivery (``held_duplicate``).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import numpy as np
import orjson
import pyarrow as pa

from flowaudit.datasets import FLOWS, SCHEMA_VERSION
from flowaudit.kernels import netflow as _k

STATUS_NAMES = _k.STATUS_NAMES
COUNTER_NAMES = _k.COUNTER_NAMES
_V4_PREFIX = np.uint64(0xFFFF00000000)


@dataclass
class NetflowResult:
    table: pa.Table                      # FLOWS layout
    numeric: dict                        # column name -> numpy array (one entry per row of table)
    exporters: list                      # numeric["exporter_idx"] indexes this list
    status: np.ndarray                   # int16 per datagram of the batch (0 ok)
    counters: dict = field(default_factory=dict)  # this call only

    @property
    def reasons(self) -> list:
        return [STATUS_NAMES[s] for s in self.status]


def _dict_array(indices, names) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(np.asarray(indices, np.int32), type=pa.int32()),
                                          pa.array(list(names), type=pa.string()))


def format_addresses(hi: np.ndarray, lo: np.ndarray, ipver: np.ndarray) -> pa.Array:
    """Text addresses (IPv4 dotted, IPv6 RFC 5952) from hi/lo uint64 pairs; '' without address.

    IPv4 is formatted by a kernel straight into Arrow's string layout; each distinct IPv6
    address is formatted once (``ipaddress``) and copied by the same kernel."""
    n = hi.shape[0]
    hi = np.ascontiguousarray(hi, np.uint64)
    lo = np.ascontiguousarray(lo, np.uint64)
    ipver = np.ascontiguousarray(ipver, np.uint8)
    v6 = ipver == 6
    v6_idx = np.zeros(n, np.int64)
    v6_data = np.zeros(0, np.uint8)
    v6_off = np.zeros(1, np.int64)
    if v6.any():
        pairs = np.stack([hi[v6], lo[v6]], axis=1)
        uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
        texts = [ipaddress.IPv6Address((h << 64) | l).compressed.encode() for h, l in uniq.tolist()]
        v6_idx[v6] = inv.reshape(-1)
        v6_off = np.zeros(len(texts) + 1, np.int64)
        np.cumsum([len(t) for t in texts], out=v6_off[1:])
        v6_data = np.frombuffer(b"".join(texts), np.uint8)
    data, offsets = _k.format_addresses(lo, ipver, v6_idx, v6_data, v6_off)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def parse_address(text: str) -> tuple[int, int, int]:
    """(hi, lo, ip_version) of a text address, IPv4 as ::ffff:a.b.c.d; (0, 0, 0) if not an address."""
    try:
        a = ipaddress.ip_address(text.strip())
    except (ValueError, AttributeError):
        return 0, 0, 0
    if a.version == 4:
        return 0, 0xFFFF00000000 | int(a), 4
    v = int(a)
    return v >> 64, v & 0xFFFFFFFFFFFFFFFF, 6


class NetflowDecoder:
    """Stateful NetFlow v5/v9/IPFIX decoder (one per stream of export datagrams).

    ``template_capacity``: templates kept (LRU-evicted beyond, counter ``template_evicted``);
    ``template_ttl_s``: a template not refreshed within this many seconds of *exporter* time is
    dropped (0 = never); ``hold_seconds``/``max_held_sets``/``max_held_bytes``: bounds on data sets
    held while their template is unknown.
    """

    def __init__(self, template_capacity: int = 2048, max_fields: int = 192, domain_capacity: int = 4096,
                 template_ttl_s: int = 3600, hold_seconds: int = 60, max_held_sets: int = 1024,
                 max_held_bytes: int = 4 << 20, max_exporters: int = 65536):
        self.reg = _k.new_registry(template_capacity, max_fields, domain_capacity)
        self.template_ttl_s = int(template_ttl_s)
        self.hold_seconds = int(hold_seconds)
        self.max_held_sets = int(max_held_sets)
        self.max_held_bytes = int(max_held_bytes)
        self.max_exporters = int(max_exporters)
        self.counters: dict[str, int] = {name: 0 for name in COUNTER_NAMES}
        self._exp_ids: dict[str, int] = {}     # exporter address -> stable id (never reused)
        self._exp_names: dict[int, str] = {}
        self._next_id = 1
        # held data sets: bytes laid end to end + meta + provenance
        self._hbuf = np.zeros(0, np.uint8)
        self._hoff = np.zeros(1, np.int64)
        self._hmeta = np.zeros((0, _k.H_N), np.int64)
        self._hprov: list[tuple] = []          # (source, partition, offset, ts_ms, exporter)
        self._out = np.empty((1024, _k.NCOL), np.int64)   # kernel work matrix, reused (grows)

    # ------------------------------------------------------------------ exporters
    def _exporter_ids(self, exporters: list[str]) -> np.ndarray:
        ids = np.empty(len(exporters), np.int64)
        for i, e in enumerate(exporters):
            x = self._exp_ids.pop(e, None)
            if x is None:
                x = self._next_id
                self._next_id += 1
                self._exp_names[x] = e
            self._exp_ids[e] = x  # re-insert: most recently used last
            ids[i] = x
        while len(self._exp_ids) > self.max_exporters:
            old = next(iter(self._exp_ids))
            self._exp_names.pop(self._exp_ids.pop(old), None)
        return ids

    # ------------------------------------------------------------------ decoding
    def decode(self, buf, offsets, exporters, exporter_idx, **prov) -> pa.Table:
        """Decode a batch of export datagrams into a FLOWS table (see :meth:`decode_result`)."""
        return self.decode_result(buf, offsets, exporters, exporter_idx, **prov).table

    def decode_result(self, buf: np.ndarray, offsets: np.ndarray, exporters: list[str], exporter_idx,
                      sources: list[str] | None = None, source_idx=None, partition=None, offset=None,
                      ts_ms=None) -> NetflowResult:
        """Decode datagram ``i`` = ``buf[offsets[i]:offsets[i+1]]`` exported by
        ``exporters[exporter_idx[i]]``.  Provenance arrays (per datagram) default to source "-",
        partition -1, offset = datagram index, no timestamp."""
        buf = np.ascontiguousarray(buf, dtype=np.uint8)
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        nd = offsets.shape[0] - 1
        exporter_idx = np.asarray(exporter_idx, np.int64)
        if exporter_idx.shape[0] != nd:
            raise ValueError("exporter_idx must have one entry per datagram")
        if nd and (exporter_idx.min() < 0 or exporter_idx.max() >= len(exporters)):
            raise ValueError("exporter_idx out of range")
        sources = list(sources) if sources else ["-"]
        source_idx = np.zeros(nd, np.int64) if source_idx is None else np.asarray(source_idx, np.int64)
        partition = np.full(nd, -1, np.int64) if partition is None else np.asarray(partition, np.int64)
        offset = np.arange(nd, dtype=np.int64) if offset is None else np.asarray(offset, np.int64)
        ts_ms = np.full(nd, -1, np.int64) if ts_ms is None else np.asarray(ts_ms, np.int64)
        ids = self._exporter_ids(list(exporters))
        exp_id = ids[exporter_idx] if nd else np.zeros(0, np.int64)

        # a Kafka message delivered again (a replay after a restart from a snapshot) brings its data
        # sets again: the copies held from its first delivery are dropped, never held or decoded twice
        if self._hprov and nd and (partition >= 0).any():
            again = {(sources[int(source_idx[i])], int(partition[i]), int(offset[i])) for i in range(nd)
                     if partition[i] >= 0}
            dup = [h for h, pv in enumerate(self._hprov) if pv[:3] in again]
            if dup:
                self._drop_held(dup)
                self.counters["held_duplicate"] += len(dup)

        r = self.reg
        out, n, status, counters, pend, npend, held_done = _k.decode_batch(
            buf, offsets, exp_id, self.template_ttl_s, self._hbuf, self._hoff, self._hmeta,
            r["tmeta"], r["tfields"], r["tsel"], r["thash"], r["tfree"], r["dmeta"], r["dhash"], r["dfree"],
            r["state"], self._out)
        self._out = out
        out = out[:n].T   # column views: out[C_*] is one column
        call = {name: int(counters[i]) for i, name in enumerate(COUNTER_NAMES)}
        # a quarantined datagram writes no flows: its records (decoded before the problem was met)
        # are counted, not kept -- for v5, v9 and IPFIX alike
        if n and status.any():
            dg0 = out[_k.C_DGRAM]
            bad = (dg0 < nd) & (status[np.minimum(dg0, max(nd - 1, 0))] != 0)
            if bad.any():
                call["records_quarantined"] += int(bad.sum())
                out = out[:, ~bad]
                n = out.shape[1]

        # ---- row provenance: datagrams of this batch, then held entries of earlier calls
        dg = out[_k.C_DGRAM]
        from_batch = dg < nd
        exp_names = list(exporters)
        src_names = list(sources)
        row_exp = np.zeros(n, np.int64)
        row_src = np.zeros(n, np.int64)
        row_part = np.zeros(n, np.int64)
        row_off = np.zeros(n, np.int64)
        row_ts = np.zeros(n, np.int64)
        bi = dg[from_batch]
        row_exp[from_batch] = exporter_idx[bi]
        row_src[from_batch] = source_idx[bi]
        row_part[from_batch] = partition[bi]
        row_off[from_batch] = offset[bi]
        row_ts[from_batch] = ts_ms[bi]
        if not from_batch.all():
            exp_pos = {e: i for i, e in enumerate(exp_names)}
            src_pos = {s: i for i, s in enumerate(src_names)}
            for j in np.nonzero(~from_batch)[0]:
                s, pa_, of, ts, e = self._hprov[int(dg[j]) - nd][:5]
                if e not in exp_pos:
                    exp_pos[e] = len(exp_names)
                    exp_names.append(e)
                if s not in src_pos:
                    src_pos[s] = len(src_names)
                    src_names.append(s)
                row_exp[j], row_src[j], row_part[j], row_off[j], row_ts[j] = exp_pos[e], src_pos[s], pa_, of, ts

        # ---- held store: drop the decoded, add this batch's pending, enforce the bounds
        self._update_held(buf, offsets, pend[:npend], held_done, status, sources, source_idx, partition, offset,
                          ts_ms, exporters, exporter_idx, call)
        for k, v in call.items():
            self.counters[k] += v

        u = out.view(np.uint64)
        numeric = {
            "dgram": np.where(from_batch, dg, -1),
            "exporter_idx": row_exp.astype(np.int32),
            "version": out[_k.C_VERSION].astype(np.uint8),
            "obs_domain": out[_k.C_DOMAIN].astype(np.uint32),
            "template_id": out[_k.C_TID].astype(np.uint16),
            "src_hi": u[_k.C_SRC_HI].copy(), "src_lo": u[_k.C_SRC_LO].copy(),
            "dst_hi": u[_k.C_DST_HI].copy(), "dst_lo": u[_k.C_DST_LO].copy(),
            "ip_version": out[_k.C_IPVER].astype(np.uint8),
            "src_port": out[_k.C_SPORT].astype(np.uint16),
            "dst_port": out[_k.C_DPORT].astype(np.uint16),
            "protocol": out[_k.C_PROTO].astype(np.uint8),
            "tcp_flags": out[_k.C_FLAGS].astype(np.uint8),
            "bytes": u[_k.C_BYTES].copy(), "packets": u[_k.C_PKTS].copy(),
            "rev_present": (out[_k.C_RBYTES] != -1) | (out[_k.C_RPKTS] != -1),
            "rev_bytes": np.where(out[_k.C_RBYTES] == -1, 0, out[_k.C_RBYTES]).view(np.uint64),
            "rev_packets": np.where(out[_k.C_RPKTS] == -1, 0, out[_k.C_RPKTS]).view(np.uint64),
            "first_ns": out[_k.C_FIRST].copy(), "last_ns": out[_k.C_LAST].copy(),
            "sampling_interval": out[_k.C_SAMPLING].astype(np.uint32),
            "time_flags": out[_k.C_TIMEFLAGS].astype(np.uint8),
        }
        table = self._table(numeric, row_src, row_part, row_off, row_ts, src_names, exp_names)
        return NetflowResult(table=table, numeric=numeric, exporters=exp_names, status=status, counters=call)

    def decode_batch(self, batch) -> NetflowResult:
        """Decode a :class:`flowaudit.pipeline.Batch` of Kafka messages whose values are export
        datagrams and whose keys are the exporter addresses (as ``flowaudit collect`` produces
        them; a missing key counts as exporter ``"-"``)."""
        n = len(batch)
        exps: dict[str, int] = {}
        idx = np.empty(n, np.int32)
        for i, k in enumerate(batch.keys):
            e = k.decode("ascii", "replace") if k else "-"
            idx[i] = exps.setdefault(e, len(exps))
        return self.decode_result(batch.buf, batch.offsets, list(exps), idx, sources=batch.sources,
                                  source_idx=batch.source_idx, partition=batch.partition, offset=batch.offset,
                                  ts_ms=batch.ts_ms)

    def _table(self, num, row_src, row_part, row_off, row_ts, src_names, exp_names) -> pa.Table:
        n = num["bytes"].shape[0]
        rev_mask = ~num["rev_present"]
        cols = [
            _dict_array(row_src, src_names),
            pa.array(row_part.astype(np.int32), pa.int32()),
            pa.array(row_off, pa.int64()),
            pa.array(row_ts, pa.int64(), mask=row_ts < 0),
            _dict_array(num["exporter_idx"], exp_names),
            pa.array(num["version"], pa.uint8()),
            pa.array(num["obs_domain"], pa.uint32()),
            pa.array(num["template_id"], pa.uint16()),
            format_addresses(num["src_hi"], num["src_lo"], num["ip_version"]),
            format_addresses(num["dst_hi"], num["dst_lo"], num["ip_version"]),
            pa.array(num["src_port"], pa.uint16()),
            pa.array(num["dst_port"], pa.uint16()),
            pa.array(num["protocol"], pa.uint8()),
            pa.array(num["tcp_flags"], pa.uint8()),
            pa.array(num["bytes"], pa.uint64()),
            pa.array(num["packets"], pa.uint64()),
            pa.array(num["rev_bytes"], pa.uint64(), mask=rev_mask),
            pa.array(num["rev_packets"], pa.uint64(), mask=rev_mask),
            pa.array(num["first_ns"], pa.int64()),
            pa.array(num["last_ns"], pa.int64()),
            pa.array(num["sampling_interval"], pa.uint32()),
            pa.array(num["ip_version"], pa.uint8()),
            pa.array(num["time_flags"], pa.uint8()),
            _dict_array(np.zeros(n, np.int32), [SCHEMA_VERSION]),
        ]
        return pa.Table.from_arrays(cols, schema=FLOWS)

    def _update_held(self, buf, offsets, pend, held_done, status, sources, source_idx, partition, offset, ts_ms,
                     exporters, exporter_idx, call):
        keep_old = np.nonzero(held_done == 0)[0]
        chunks, metas, provs = [], [], []
        for h in keep_old:
            chunks.append(self._hbuf[self._hoff[h]:self._hoff[h + 1]])
            metas.append(self._hmeta[h])
            provs.append(self._hprov[h])
        for row in pend:
            d = int(row[_k.H_DGRAM])
            if status[d] != 0:
                call["sets_quarantined"] += 1   # its datagram is quarantined: never held, never decoded
                continue
            chunks.append(buf[row[_k.H_START]:row[_k.H_END]].copy())
            metas.append(row.copy())
            # provenance, and the set's byte position in its datagram (with the offset: its identity)
            provs.append((sources[source_idx[d]], int(partition[d]), int(offset[d]), int(ts_ms[d]),
                          exporters[exporter_idx[d]], int(row[_k.H_START] - offsets[d])))
        dropped = 0
        # age in exporter time, then count and byte bounds (oldest first)
        keep = [i for i, m in enumerate(metas) if m[_k.H_AGE] <= self.hold_seconds]
        dropped += len(metas) - len(keep)
        if len(keep) > self.max_held_sets:
            dropped += len(keep) - self.max_held_sets
            keep = keep[-self.max_held_sets:]
        total = sum(len(chunks[i]) for i in keep)
        while keep and total > self.max_held_bytes:
            total -= len(chunks[keep[0]])
            keep.pop(0)
            dropped += 1
        call["missing_template"] += dropped
        if keep:
            lens = np.array([len(chunks[i]) for i in keep], np.int64)
            self._hoff = np.zeros(len(keep) + 1, np.int64)
            np.cumsum(lens, out=self._hoff[1:])
            self._hbuf = np.concatenate([chunks[i] for i in keep]).astype(np.uint8)
            self._hmeta = np.stack([metas[i] for i in keep]).astype(np.int64)
            self._hprov = [provs[i] for i in keep]
        else:
            self._hbuf = np.zeros(0, np.uint8)
            self._hoff = np.zeros(1, np.int64)
            self._hmeta = np.zeros((0, _k.H_N), np.int64)
            self._hprov = []

    def _drop_held(self, drop: list[int]) -> None:
        keep = np.setdiff1d(np.arange(len(self._hprov)), np.asarray(drop, np.int64))
        chunks = [self._hbuf[self._hoff[h]:self._hoff[h + 1]] for h in keep]
        lens = np.array([len(c) for c in chunks], np.int64)
        self._hoff = np.zeros(len(keep) + 1, np.int64)
        np.cumsum(lens, out=self._hoff[1:])
        self._hbuf = np.concatenate(chunks).astype(np.uint8) if chunks else np.zeros(0, np.uint8)
        self._hmeta = self._hmeta[keep].copy() if len(keep) else np.zeros((0, _k.H_N), np.int64)
        self._hprov = [self._hprov[h] for h in keep]

    @property
    def held(self) -> int:
        """Data sets currently held for a template."""
        return len(self._hprov)

    def flush(self) -> int:
        """End of input: drop every held data set, counted as ``missing_template``; returns the count."""
        n = self.held
        self.counters["missing_template"] += n
        self._hbuf = np.zeros(0, np.uint8)
        self._hoff = np.zeros(1, np.int64)
        self._hmeta = np.zeros((0, _k.H_N), np.int64)
        self._hprov = []
        return n

    # ------------------------------------------------------------------ restart state
    def export_state(self) -> tuple[dict, dict]:
        """What must survive a restart, as (JSON-able meta, numpy arrays): the live templates and the
        per-(exporter, domain) state (sampling, system init time, withdraw generations, sequence),
        the exporter ids they are keyed by, and the held data sets with their provenance.  Only
        used registry rows are taken, so the size follows what is live, not the capacities."""
        r = self.reg
        used = np.flatnonzero(r["tmeta"][:, _k.TM_USED])
        nf = int(r["tmeta"][used, _k.TM_NFIELDS].max()) if used.size else 0
        dused = np.flatnonzero(r["dmeta"][:, _k.DM_USED])
        meta = {"exporters": [[e, int(i)] for e, i in self._exp_ids.items()], "next_id": self._next_id,
                "tick": int(r["state"][_k.ST_TICK]), "gen": int(r["state"][_k.ST_GEN]),
                "held_prov": [list(pv) for pv in self._hprov]}
        arrays = {"tmeta": r["tmeta"][used], "tfields": r["tfields"][used, :nf], "tsel": r["tsel"][used, :nf],
                  "dmeta": r["dmeta"][dused], "hbuf": self._hbuf, "hoff": self._hoff, "hmeta": self._hmeta}
        return meta, arrays

    def import_state(self, meta: dict, arrays: dict) -> None:
        """Load :meth:`export_state` output into this (fresh) decoder; raises ValueError when it is
        malformed (the decoder is then unchanged).  Beyond this decoder's capacities the most
        recently used templates and domains are kept (the rest counted as evicted)."""
        try:
            tmeta = np.asarray(arrays["tmeta"], np.int64)
            tfields = np.asarray(arrays["tfields"], np.int64)
            tsel = np.asarray(arrays["tsel"], np.int64)
            dmeta = np.asarray(arrays["dmeta"], np.int64)
            hbuf = np.asarray(arrays["hbuf"], np.uint8)
            hoff = np.asarray(arrays["hoff"], np.int64)
            hmeta = np.asarray(arrays["hmeta"], np.int64).reshape(-1, _k.H_N)
            exp_ids = {str(e): int(i) for e, i in meta["exporters"]}
            next_id = int(meta["next_id"])
            prov = [(str(a), int(b), int(c), int(d), str(e), int(f)) for a, b, c, d, e, f in meta["held_prov"]]
            tick, gen = int(meta["tick"]), int(meta["gen"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"netflow state: {type(exc).__name__}") from None
        nt, nd = tmeta.shape[0], dmeta.shape[0]
        maxf = self.reg["tfields"].shape[1]
        ok = (tmeta.ndim == 2 and tmeta.shape[1] == _k.TM_N and tfields.ndim == 3 and tfields.shape[0] == nt
              and tfields.shape[2] == _k.F_N and tsel.shape[:2] == tfields.shape[:2] and tsel.shape[2] == _k.S_N
              and dmeta.ndim == 2 and dmeta.shape[1] == _k.DM_N and hoff.ndim == 1
              and hoff.shape[0] == hmeta.shape[0] + 1 == len(prov) + 1 and hoff[0] == 0
              and np.all(np.diff(hoff) >= 0) and hoff[-1] == hbuf.shape[0]
              and (not nt or (tmeta[:, _k.TM_NFIELDS].min() > 0 and tmeta[:, _k.TM_NFIELDS].max() <= tfields.shape[1]
                              and tmeta[:, _k.TM_MINLEN].min() > 0 and tmeta[:, _k.TM_NSEL].max() <= tfields.shape[1]))
              and next_id > max(exp_ids.values(), default=0) and gen >= 1)
        if not ok:
            raise ValueError("netflow state: inconsistent arrays")
        # most recently used first, within this decoder's capacities and field limit
        tk = [i for i in np.argsort(-tmeta[:, _k.TM_TICK], kind="stable") if tmeta[i, _k.TM_NFIELDS] <= maxf]
        tk = tk[:self.reg["tmeta"].shape[0]]
        dk = np.argsort(-dmeta[:, _k.DM_TICK], kind="stable")[:self.reg["dmeta"].shape[0]]
        reg = _k.new_registry(self.reg["tmeta"].shape[0], maxf, self.reg["dmeta"].shape[0])
        st = reg["state"]
        for slot, i in enumerate(tk):
            reg["tmeta"][slot] = tmeta[i]
            w = min(tfields.shape[1], maxf)
            reg["tfields"][slot, :w] = tfields[i, :w]
            reg["tsel"][slot, :w] = tsel[i, :w]
            pos = _k._t_find(reg["thash"], reg["tmeta"], tmeta[i, _k.TM_K1], tmeta[i, _k.TM_K2])
            if pos >= 0:
                raise ValueError("netflow state: duplicate template key")
            reg["thash"][-(pos + 1)] = slot
        st[_k.ST_FREE_TOP] -= len(tk)
        reg["tfree"][:st[_k.ST_FREE_TOP]] = np.arange(reg["tmeta"].shape[0] - 1, len(tk) - 1, -1, dtype=np.int32)
        for row, i in enumerate(dk):
            reg["dmeta"][row] = dmeta[i]
            pos = _k._d_find(reg["dhash"], reg["dmeta"], dmeta[i, _k.DM_K1])
            if pos >= 0:
                raise ValueError("netflow state: duplicate domain key")
            reg["dhash"][-(pos + 1)] = row
        st[_k.ST_DFREE_TOP] -= len(dk)
        reg["dfree"][:st[_k.ST_DFREE_TOP]] = np.arange(reg["dmeta"].shape[0] - 1, len(dk) - 1, -1, dtype=np.int32)
        st[_k.ST_TICK], st[_k.ST_GEN] = tick, gen
        self.counters["template_evicted"] += nt - len(tk)
        self.counters["domain_evicted"] += nd - len(dk)
        self.reg = reg
        self._exp_ids = exp_ids
        self._exp_names = {i: e for e, i in exp_ids.items()}
        self._next_id = next_id
        self._hbuf, self._hoff, self._hmeta, self._hprov = hbuf.copy(), hoff.copy(), hmeta.copy(), prov

    # ------------------------------------------------------------------ views
    @property
    def template_count(self) -> int:
        return int(self.reg["tmeta"][:, _k.TM_USED].sum())

    def templates(self) -> list[dict]:
        """The stored templates (like goflow2's ``/templates``): exporter, domain, version, id, kind,
        refresh time (exporter seconds) and fields (IE, PEN, length, how it is used)."""
        tm, tf = self.reg["tmeta"], self.reg["tfields"]
        rows = []
        for s in np.nonzero(tm[:, _k.TM_USED])[0]:
            k1, k2 = int(tm[s, _k.TM_K1]), int(tm[s, _k.TM_K2])
            nf = int(tm[s, _k.TM_NFIELDS])
            rows.append({
                "exporter": self._exp_names.get(k1 >> 32, f"#{k1 >> 32}"),
                "obs_domain": k1 & 0xFFFFFFFF, "version": k2 >> 16, "template_id": k2 & 0xFFFF,
                "kind": "options" if tm[s, _k.TM_KIND] == _k.KIND_OPTIONS else "data",
                "scope_fields": int(tm[s, _k.TM_SCOPE]), "record_min_bytes": int(tm[s, _k.TM_MINLEN]),
                "refreshed_export_s": int(tm[s, _k.TM_REFRESH]),
                "fields": [{"ie": int(tf[s, j, _k.F_IE]), "pen": int(tf[s, j, _k.F_PEN]),
                            "length": int(tf[s, j, _k.F_LEN]), "use": _k.SEM_NAMES[int(tf[s, j, _k.F_SEM])]}
                           for j in range(nf)],
            })
        rows.sort(key=lambda r: (r["exporter"], r["obs_domain"], r["version"], r["template_id"]))
        return rows

    def sampling(self) -> dict:
        """(exporter, domain) -> sampling interval learnt from options data (or v5 headers)."""
        dm = self.reg["dmeta"]
        res = {}
        for r in np.nonzero(dm[:, _k.DM_USED])[0]:
            k1 = int(dm[r, _k.DM_K1])
            res[(self._exp_names.get(k1 >> 32, f"#{k1 >> 32}"), k1 & 0xFFFFFFFF)] = int(dm[r, _k.DM_SAMPLING])
        return res


# ====================================================================== goflow2 JSON
_PROTO_NAMES = {"HOPOPT": 0, "ICMP": 1, "IGMP": 2, "IPV4": 4, "IPIP": 4, "TCP": 6, "EGP": 8, "UDP": 17,
                "IPV6": 41, "RSVP": 46, "GRE": 47, "ESP": 50, "AH": 51, "ICMPV6": 58, "IPV6-ICMP": 58,
                "EIGRP": 88, "OSPF": 89, "OSPFIGP": 89, "PIM": 103, "VRRP": 112, "L2TP": 115, "SCTP": 132,
                "UDPLITE": 136}
_FLOW_TYPES = {"NETFLOW_V5": 5, "NETFLOW_V9": 9, "IPFIX": 10}


def _int(v, default=0) -> int:
    if v is None:
        return default
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            return default
    return default


def _time_ns(v) -> int:
    """A flow time in ns since the epoch; 0 (unknown) when it does not fit int64."""
    t = _int(v)
    return t if -(1 << 63) <= t < 1 << 63 else 0


def _iso_seconds(v) -> float | None:
    """ISO 8601 text (``Z``, ``+00:00`` or ``+0000``) -> seconds since the epoch; None if unreadable."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() if isinstance(v, str) else None
    except (ValueError, OverflowError):
        return None


class NoFlow(dict):
    """A Suricata event that is no flow (no JSON line can pass for one)."""


class EveFlow(dict):
    """A Suricata ``flow`` or ``netflow`` event as the Zeek connection it stands for (its type says
    where it came from: a message's type is ``suricata-flow``, not ``zeek-conn``)."""


def _eve_conn(rec: dict) -> dict:
    """A Suricata ``eve.json`` event as the Zeek connection it stands for: a ``flow`` event (both
    directions: ``pkts_toserver``, ``bytes_toserver`` and back; ``start`` .. ``end``) or a
    ``netflow`` event (one direction: ``pkts``, ``bytes``); the exporter is the event's ``host``
    (Suricata's ``sensor-name``), else ``suricata``.  Any other event (an alert, DNS, TLS ...) is
    no connection and gives no flow (:class:`NoFlow`); the bytes are the packets' as Suricata counts
    them (IP bytes, with the link header where it had one)."""
    et = rec["event_type"]
    body = rec.get(et) if et in ("flow", "netflow") else None
    if not isinstance(body, dict):
        return NoFlow()
    t0, t1 = _iso_seconds(body.get("start")), _iso_seconds(body.get("end"))
    host = rec.get("host")
    conn = EveFlow({"ts": t0 if t0 is not None else rec.get("timestamp"), "id.orig_h": rec.get("src_ip"),
            "id.orig_p": rec.get("src_port"), "id.resp_h": rec.get("dest_ip"), "id.resp_p": rec.get("dest_port"),
            "proto": rec.get("proto"), "_node_name": host if isinstance(host, str) and host else "suricata",
            "duration": t1 - t0 if t0 is not None and t1 is not None and t1 >= t0 else None})
    if et == "flow":
        conn.update(orig_pkts=body.get("pkts_toserver"), orig_ip_bytes=body.get("bytes_toserver"),
                    resp_pkts=body.get("pkts_toclient"), resp_ip_bytes=body.get("bytes_toclient"))
    else:
        conn.update(orig_pkts=body.get("pkts"), orig_ip_bytes=body.get("bytes"))
    return conn


def _conn_check(rec: dict) -> dict:
    if isinstance(rec.get("event_type"), str):     # Suricata's eve.json
        rec = _eve_conn(rec)
        if isinstance(rec, NoFlow):
            return rec
    ts = rec.get("ts")
    if isinstance(ts, str):          # LogAscii::json_timestamps = JSON::TS_ISO8601, Suricata's timestamp
        ts = rec["ts"] = _iso_seconds(ts)
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not 0 <= ts < 9.2e9:
        raise ValueError("no readable ts")
    for side in ("id.orig_h", "id.resp_h"):
        if not isinstance(rec.get(side), str) or parse_address(rec[side])[2] == 0:
            raise ValueError(f"no address in {side}")
    return rec


def zeek_conn_log():
    """A reader of one Zeek ``conn.log``'s lines (JSON lines or Zeek's ASCII log; a record needs
    a numeric ``ts`` and both addresses), or of Suricata's ``eve.json`` (:func:`_eve_conn`)."""
    from ..sources.zeek import ZeekLog

    return ZeekLog("conn", _conn_check, {"ts": "time", "duration": "interval", "id.orig_p": "port",
                                         "id.resp_p": "port", "orig_pkts": "count", "orig_ip_bytes": "count",
                                         "resp_pkts": "count", "resp_ip_bytes": "count", "orig_bytes": "count",
                                         "resp_bytes": "count"})


def zeek_conn_flows(rec: dict) -> list[dict]:
    """One Zeek ``conn.log`` record as the unidirectional flow records a NetFlow exporter would
    have sent for the connection, in goflow2's JSON names (for :func:`decode_goflow_json`): the
    originator's packets to the responder, and the responder's back when it sent any.  Bytes are
    IP bytes (``orig_ip_bytes``, as NetFlow counts them; the payload bytes where those are
    unset); the times are ``ts`` and ``ts + duration``; unsampled; the exporter is the sensor
    (``_node_name`` in a Zeek cluster's logs), else ``zeek``.  A Suricata event that is no flow
    gives none."""
    if isinstance(rec, NoFlow):
        return []
    node = rec.get("_node_name")
    exporter = node if isinstance(node, str) and node else "zeek"
    t0 = int(round(float(rec["ts"]) * 1e9))
    dur = rec.get("duration")
    t1 = t0 + (int(round(float(dur) * 1e9)) if isinstance(dur, (int, float)) and 0 <= dur < 1e9 else 0)
    proto = str(rec.get("proto", "")).upper()
    v6 = ":" in rec["id.orig_h"]
    proto = 58 if proto == "ICMP" and v6 else _PROTO_NAMES.get(proto, 0)

    def one(src, dst, sport, dport, pkts, ip_bytes, payload):
        nbytes = ip_bytes if ip_bytes is not None else payload
        return {"type": "ZEEK_CONN", "sampler_address": exporter, "src_addr": rec[src], "dst_addr": rec[dst],
                "src_port": rec.get(sport), "dst_port": rec.get(dport), "proto": proto, "bytes": nbytes or 0,
                "packets": pkts or 0, "time_flow_start_ns": t0, "time_flow_end_ns": t1, "sampling_rate": 1}

    out = [one("id.orig_h", "id.resp_h", "id.orig_p", "id.resp_p", rec.get("orig_pkts"), rec.get("orig_ip_bytes"),
               rec.get("orig_bytes"))]
    if rec.get("resp_pkts") or rec.get("resp_ip_bytes") or rec.get("resp_bytes"):
        out.append(one("id.resp_h", "id.orig_h", "id.resp_p", "id.orig_p", rec.get("resp_pkts"),
                       rec.get("resp_ip_bytes"), rec.get("resp_bytes")))
    return out


# quarantine reasons of decode_goflow_json's statuses (a flow archive's row without an address too)
GOFLOW_REASONS = {1: "malformed_json", 2: "no_usable_address"}


def decode_goflow_json(values: list, sources: list[str] | None = None, source_idx=None, partition=None,
                       offset=None, ts_ms=None) -> tuple[pa.Table, np.ndarray]:
    """goflow2 JSON flow messages (one JSON object per message) -> (FLOWS table, status per message).

    A value may be the message's dict already (:func:`zeek_conn_flows`).
    status: 0 ok, 1 not a JSON object / undecodable, 2 no usable address.  Understands both the
    goflow2 v1 numeric and v2 textual renderings of ``etype``/``proto``; ``sampling_rate`` 0 means
    unknown and is reported as 1; the exporter is ``sampler_address``."""
    n = len(values)
    status = np.zeros(n, np.int8)
    rows = []
    keep = []
    for i, v in enumerate(values):
        try:
            m = v if isinstance(v, dict) else orjson.loads(v) if v is not None else None
        except orjson.JSONDecodeError:
            m = None
        if not isinstance(m, dict):
            status[i] = 1
            continue
        sh, sl, sv = parse_address(str(m.get("src_addr", "")))
        dh, dl, dv = parse_address(str(m.get("dst_addr", "")))
        if sv == 0 and dv == 0:
            status[i] = 2
            continue
        proto = m.get("proto", 0)
        if isinstance(proto, str):
            proto = _PROTO_NAMES.get(proto.upper(), _int(proto))
        ftype = m.get("type", "")
        rows.append((str(m.get("sampler_address", "")), _FLOW_TYPES.get(ftype, 0) if isinstance(ftype, str) else 0,
                     _int(m.get("observation_domain_id")) & 0xFFFFFFFF, sh, sl, dh, dl, max(sv, dv),
                     _int(m.get("src_port")) & 0xFFFF, _int(m.get("dst_port")) & 0xFFFF, _int(proto) & 0xFF,
                     _int(m.get("tcp_flags")) & 0xFF, _int(m.get("bytes")) & 0xFFFFFFFFFFFFFFFF,
                     _int(m.get("packets")) & 0xFFFFFFFFFFFFFFFF, _time_ns(m.get("time_flow_start_ns")),
                     _time_ns(m.get("time_flow_end_ns")), max(1, _int(m.get("sampling_rate"))) & 0xFFFFFFFF))
        keep.append(i)
    keep = np.asarray(keep, np.int64)
    nr = len(rows)
    cols = list(zip(*rows)) if rows else [()] * 17
    exps = sorted(set(cols[0])) if rows else []
    epos = {e: j for j, e in enumerate(exps)}
    src_names = list(sources) if sources else ["-"]
    sidx = np.zeros(n, np.int64) if source_idx is None else np.asarray(source_idx, np.int64)
    part = np.full(n, -1, np.int64) if partition is None else np.asarray(partition, np.int64)
    offs = np.arange(n, dtype=np.int64) if offset is None else np.asarray(offset, np.int64)
    tss = np.full(n, -1, np.int64) if ts_ms is None else np.asarray(ts_ms, np.int64)
    ipver = np.array(cols[7], np.uint8) if nr else np.zeros(0, np.uint8)
    u64 = lambda c: np.array(c, dtype=np.uint64) if nr else np.zeros(0, np.uint64)  # noqa: E731
    ts_rows = tss[keep] if nr else np.zeros(0, np.int64)
    arrays = [
        _dict_array(sidx[keep] if nr else [], src_names),
        pa.array(part[keep].astype(np.int32) if nr else np.zeros(0, np.int32), pa.int32()),
        pa.array(offs[keep] if nr else np.zeros(0, np.int64), pa.int64()),
        pa.array(ts_rows, pa.int64(), mask=ts_rows < 0),
        _dict_array([epos[e] for e in cols[0]], exps),
        pa.array(np.array(cols[1], np.uint8) if nr else [], pa.uint8()),
        pa.array(np.array(cols[2], np.uint32) if nr else [], pa.uint32()),
        pa.array(np.zeros(nr, np.uint16), pa.uint16()),
        format_addresses(u64(cols[3]), u64(cols[4]), ipver),
        format_addresses(u64(cols[5]), u64(cols[6]), ipver),
        pa.array(np.array(cols[8], np.uint16) if nr else [], pa.uint16()),
        pa.array(np.array(cols[9], np.uint16) if nr else [], pa.uint16()),
        pa.array(np.array(cols[10], np.uint8) if nr else [], pa.uint8()),
        pa.array(np.array(cols[11], np.uint8) if nr else [], pa.uint8()),
        pa.array(u64(cols[12]), pa.uint64()),
        pa.array(u64(cols[13]), pa.uint64()),
        pa.nulls(nr, pa.uint64()),
        pa.nulls(nr, pa.uint64()),
        pa.array(np.array(cols[14], np.int64) if nr else [], pa.int64()),
        pa.array(np.array(cols[15], np.int64) if nr else [], pa.int64()),
        pa.array(np.array(cols[16], np.uint32) if nr else [], pa.uint32()),
        pa.array(ipver, pa.uint8()),
        pa.array(((np.array(cols[14], np.int64) > 0) * 1 + (np.array(cols[15], np.int64) > 0) * 2).astype(np.uint8)
                 if nr else np.zeros(0, np.uint8), pa.uint8()),
        _dict_array(np.zeros(nr, np.int32), [SCHEMA_VERSION]),
    ]
    return pa.Table.from_arrays(arrays, schema=FLOWS), status


def numeric_view(flows: pa.Table) -> dict:
    """The egress engine's arrays (addresses as hi/lo uint64) from a FLOWS table, e.g. goflow2's;
    each distinct address is parsed once.  ``src_ok`` / ``dst_ok``: whether that side is an address
    (text that is not one reads as hi = lo = 0)."""
    out = {}
    for side in ("src", "dst"):
        col = flows.column(f"{side}_addr").combine_chunks().cast(pa.string()).fill_null("").dictionary_encode()
        parsed = [parse_address(str(a)) for a in col.dictionary.to_pylist()]
        idx = col.indices.to_numpy(zero_copy_only=False)
        hi = np.array([p[0] for p in parsed] + [0], np.uint64)
        lo = np.array([p[1] for p in parsed] + [0], np.uint64)
        ok = np.array([p[2] != 0 for p in parsed] + [False], bool)
        out[f"{side}_hi"], out[f"{side}_lo"], out[f"{side}_ok"] = hi[idx], lo[idx], ok[idx]
    for name in ("src_port", "dst_port", "protocol", "tcp_flags", "bytes", "packets", "first_ns", "last_ns",
                 "sampling_interval", "ip_version"):
        out[name] = flows.column(name).to_numpy()
    return out
