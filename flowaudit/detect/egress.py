"""Outbound transfers: flows and messages that reach a watchlisted platform or break zone policy.

:class:`EgressDetector` ties the watchlist (:mod:`flowaudit.detect.watchlist`), DNS attribution
(:mod:`flowaudit.detect.dnsmap`) and the zone policy (:mod:`flowaudit.detect.zones`) together and produces
rows in the :data:`flowaudit.datasets.TRANSFERS` layout (shaped like Zeek's intel.log):

* :meth:`EgressDetector.detect_flows`: decoded flow arrays (the NetFlow decoder's contract) ->
  one row per flow that touches a watchlisted address (``NETFLOW_DST`` / ``NETFLOW_SRC``), an
  address that recently resolved from a watchlisted name (``DNS_ANSWER``) or was named so by a
  connection's TLS server name or HTTP Host (``TLS_SNI`` / ``HTTP_HOST``), or fires a policy
  rule (platform ``policy``).  A flow is one row: when both fire, the platform comes from the
  watchlist and the rule from the policy.  ``bytes`` is raw, ``bytes_scaled`` = bytes x sampling.
* :meth:`EgressDetector.observe_dns`: Zeek dns.log, ssl.log or http.log lines -> the map, plus one
  row per answer for a watchlisted name (who resolved it, to what: ``DNS_ANSWER``, rule
  ``dns_lookup``) and per connection that named one (``TLS_SNI`` / ``HTTP_HOST``, rule
  ``name_seen``).  Neither is a finding by itself; the flows named through them are.
* :meth:`EgressDetector.detect_messages`: hosts, URL paths, payload markers and party codes
  inside message payloads (``PAYLOAD`` / ``XML_ELEMENT`` / ``JSON_PATH``) and EDI envelope
  recipients (``EDI_UNB`` / ``X12_ISA`` / ``X12_GS``).  A name or marker seen only in base64 (its
  aliases, :func:`flowaudit.detect.watchlist.base64_aliases`) shows as ``<value> (base64)``.
* :func:`window_aggregates`: bytes per source host and platform per time window.
* :meth:`EgressDetector.metrics`: counts by (platform, zone, rule), labels bounded by
  configuration (never an address, port or indicator value).
"""
from __future__ import annotations

import binascii
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowaudit.detect import watchlist as _wl
from flowaudit.detect import zones as _zones
from flowaudit.datasets import NAME_RULES, SCHEMA_VERSION, TRANSFERS, is_root
from flowaudit.detect.dnsmap import DnsMap
from flowaudit.kernels import ipset as _ipset
from flowaudit.kernels import markers as _mk
from flowaudit.kernels.policy import RULE_SERVICE_BASE as _kp_service_base

FLOW_FIELDS = ("src_hi", "src_lo", "dst_hi", "dst_lo", "src_port", "dst_port", "protocol", "bytes",
               "packets", "first_ns", "sampling_interval")
SEVERITY_RANK = {s: i for i, s in enumerate(_wl.SEVERITIES)}
SEEN_WHERE = ("NETFLOW_DST", "NETFLOW_SRC", "DNS_ANSWER", "PAYLOAD", "XML_ELEMENT", "JSON_PATH",
              "EDI_UNB", "X12_ISA", "X12_GS", "TLS_SNI", "HTTP_HOST")
# how the name map learned a name (dnsmap.VIAS): the rows' seen_where, rule and evidence text
VIA_WHERE = {"dns": "DNS_ANSWER", "tls_sni": "TLS_SNI", "http_host": "HTTP_HOST"}
VIA_RULE = {"dns": "dns_lookup", "tls_sni": "name_seen", "http_host": "name_seen"}
VIA_TEXT = {"dns": "DNS answer", "tls_sni": "TLS server name (SNI)", "http_host": "HTTP Host"}
NAME_WHERE = tuple(VIA_WHERE.values())
_PROTO_NAME = {6: "tcp", 17: "udp"}
BASE64_SHOWN = " (base64)"   # after the indicator value of a match of its base64 alias


def _max_sev(a: str, b: str) -> str:
    return a if SEVERITY_RANK.get(a, 0) >= SEVERITY_RANK.get(b, 0) else b


class EgressDetector:
    """Watchlist + DNS attribution + zone policy over flows and messages."""

    def __init__(self, watchlist: _wl.Watchlist | _wl.CompiledWatchlist | None = None,
                 policy: _zones.Policy | str | Path | None = None, *, dns: DnsMap | None = None,
                 dns_max_entries: int = 100_000):
        if watchlist is None:
            watchlist = _wl.Watchlist()
        self._watchlist = watchlist
        if policy is None:
            policy = _zones.empty_policy()
        elif not isinstance(policy, _zones.Policy):
            policy = _zones.load(policy)
        self.policy = policy
        self.dns = dns if dns is not None else self.name_map(dns_max_entries)
        if self.dns.keep is None:
            self.dns.keep = self._watched_name
        if self.dns.responder is None:
            self.dns.responder = self._on_internet
        self._counts: Counter = Counter()
        self._bytes: Counter = Counter()

    # ---------------------------------------------------------------------------- plumbing
    @property
    def watchlist(self) -> _wl.CompiledWatchlist:
        """The current compiled watchlist (a reloadable holder's current object)."""
        w = self._watchlist
        return w.current if isinstance(w, _wl.Watchlist) else w

    def reload_watchlist(self) -> bool:
        """Re-read changed watchlist files (a reloadable holder only); a bad file keeps the old list."""
        w = self._watchlist
        return w.poll() if isinstance(w, _wl.Watchlist) else False

    def _watched_name(self, name: str) -> bool:
        return self.watchlist.match_host(name) >= 0

    def _on_internet(self, addr: str) -> bool:
        """An address outside every zone and the internal ranges of the policy: one a TLS server
        name or HTTP Host may name (not a proxy the connection went through)."""
        return _zone_of(self.policy, addr) == self.policy.n_zones + 1

    def name_map(self, max_entries: int = 100_000) -> DnsMap:
        """A fresh name map for this detector: watched names only, TLS and HTTP names only for
        responders on the internet."""
        return DnsMap(max_entries, keep=self._watched_name, responder=self._on_internet)

    def metric_label_values(self) -> dict[str, list[str]]:
        """Every value each metric label can take (to initialise the series at 0)."""
        wl = self.watchlist
        return {"platform": wl.platform_names + ["policy"],
                "zone": self.policy.zone_names + ["none"],
                "rule": ["watchlist", *NAME_RULES] + self.policy.rule_names}

    def metrics(self) -> dict[str, dict[tuple[str, str, str], int]]:
        """Cumulative counts keyed by (platform, zone, rule): rows and scaled bytes."""
        return {"transfers_total": dict(self._counts), "transfer_bytes_total": dict(self._bytes)}

    def _count(self, platform, zone, rule, nbytes=0):
        key = (platform, zone, rule)
        self._counts[key] += 1
        if nbytes:
            self._bytes[key] += int(nbytes)

    # ---------------------------------------------------------------------------- flows
    def detect_flows(self, flows: Mapping[str, np.ndarray], *, exporters: list[str] | None = None,
                     source: str = "-", partition=-1, offset=None, ts_ms=None) -> pa.Table:
        """Flow arrays (NetFlow decoder contract) -> TRANSFERS rows.

        ``flows`` holds src_hi, src_lo, dst_hi, dst_lo (uint64), src_port, dst_port (uint16),
        protocol (uint8), bytes, packets (uint64), first_ns (int64), sampling_interval (uint32)
        and optionally exporter_idx (int32, into ``exporters``).  Provenance: ``source`` (topic
        or file), ``partition``/``offset``/``ts_ms`` scalars or per-flow arrays (offset defaults
        to the flow's index).
        """
        missing = [f for f in FLOW_FIELDS if f not in flows]
        if missing:
            raise ValueError(f"egress: flow arrays missing {missing}")
        wl = self.watchlist
        pol = self.policy
        a = {f: np.asarray(flows[f]) for f in FLOW_FIELDS}
        n = a["src_hi"].shape[0]
        if any(v.shape != (n,) for v in a.values()):
            raise ValueError("egress: flow arrays must be 1-d and of one length")
        src_hi, src_lo = a["src_hi"].astype(np.uint64), a["src_lo"].astype(np.uint64)
        dst_hi, dst_lo = a["dst_hi"].astype(np.uint64), a["dst_lo"].astype(np.uint64)
        t = a["first_ns"].astype(np.int64)

        def ip_ind(hi, lo):
            e = wl.ipset.lookup(hi, lo)
            return np.where(e >= 0, wl.ip_indicator[np.maximum(e, 0)] if wl.ip_indicator.size else -1, -1)

        def dns_ind(hi, lo):
            idx, names, vias = self.dns.attribute(hi, lo, t)
            if not names:
                return np.full(n, -1, np.int64), idx, names, vias
            name_ind = np.asarray([wl.match_host(x) for x in names] + [-1], np.int64)
            return np.where(idx >= 0, name_ind[idx], -1), idx, names, vias

        d_ip, s_ip = ip_ind(dst_hi, dst_lo), ip_ind(src_hi, src_lo)
        d_dns, d_idx, d_names, d_vias = dns_ind(dst_hi, dst_lo)
        s_dns, s_idx, s_names, s_vias = dns_ind(src_hi, src_lo)
        ind = np.where(d_ip >= 0, d_ip, np.where(d_dns >= 0, d_dns, np.where(s_ip >= 0, s_ip, s_dns)))
        where = np.where(d_ip >= 0, 0, np.where(d_dns >= 0, 2, np.where(s_ip >= 0, 1, 2)))
        inside_is_src = (d_ip >= 0) | ((d_ip < 0) & (d_dns >= 0))  # platform on the dst side

        sz = pol.classify(src_hi, src_lo)
        dz = pol.classify(dst_hi, dst_lo)
        rule = pol.evaluate(sz, dz, dst_hi, dst_lo, a["dst_port"], a["protocol"])
        rows = np.flatnonzero((ind >= 0) | (rule >= 0))
        if rows.size == 0:
            return TRANSFERS.empty_table()

        rule_names = pol.rule_names
        zone_names = pol.zone_names
        # the service the destination port names (rdp, ssh, modbus, ...): on every row, so that a
        # query for remote access also finds internet_to_ot_zone and watchlist rows
        svc = pol.service_of(a["dst_port"][rows], a["protocol"][rows])
        svc_rule = rule[rows] >= _kp_service_base
        svc[svc_rule] = pol.svc_index[rule[rows][svc_rule] - _kp_service_base]
        svc_names = [s.name for s in pol.services] + [None]
        plat, indic, itype, isrc, rname, sev, szn, dzn, seen = [], [], [], [], [], [], [], [], []
        nbytes = a["bytes"].astype(np.uint64)
        samp = np.maximum(a["sampling_interval"].astype(np.uint64), np.uint64(1))
        scaled = nbytes * samp
        for r in rows.tolist():
            s_z, d_z = int(sz[r]), int(dz[r])
            ru = int(rule[r])
            i = int(ind[r])
            # the port's side of the flow decides the zone used for severity and the metric label
            own_zone = s_z if (i < 0 or inside_is_src[r]) else d_z
            if i >= 0:
                it = wl.indicators[i]
                p = it.platform
                s = wl.severity_for(p, pol.zone_kind_name(own_zone))
                if p in pol.allowed_platforms.get(own_zone, ()):
                    s = "info"
                value, typ, src = it.value, it.type, it.source
                w = SEEN_WHERE[int(where[r])]
                if where[r] == 2:  # named through the map: show the name and how it was learned
                    k = d_idx[r] if inside_is_src[r] else s_idx[r]
                    value, via = (d_names[k], d_vias[k]) if inside_is_src[r] else (s_names[k], s_vias[k])
                    w = VIA_WHERE[via]
                    src = f"{VIA_TEXT[via]}; watchlist {it.type} {it.value}: {it.source}"
            else:
                p, s, value, typ, src, w = "policy", "info", "", "", "", "NETFLOW_DST"
            if ru >= 0:
                rn = rule_names[ru]
                s = _max_sev(s, pol.rule_severity(ru, s_z, d_z))
                if i < 0:
                    if ru >= _kp_service_base:
                        service = pol.services[int(pol.svc_index[ru - _kp_service_base])]
                        value = f"{_PROTO_NAME.get(int(a['protocol'][r]), str(int(a['protocol'][r])))}/{int(a['dst_port'][r])}"
                        typ, src = "port", service.source
                    else:
                        value, typ = f"{zone_names[s_z]}->{zone_names[d_z]}", "zone"
                        src = f"zone policy {pol.version}"
            else:
                rn = "watchlist"
            plat.append(p)
            indic.append(value)
            itype.append(typ)
            isrc.append(src)
            seen.append(w)
            rname.append(rn)
            sev.append(s)
            szn.append(zone_names[s_z])
            dzn.append(zone_names[d_z])
            self._count(p, zone_names[own_zone], rn, scaled[r])
        m = rows.size
        exp_col = None
        if "exporter_idx" in flows and exporters:
            ex = np.asarray(flows["exporter_idx"], np.int32)[rows]
            exp_col = pa.DictionaryArray.from_arrays(pa.array(ex, pa.int32(), mask=ex < 0),
                                                     pa.array(exporters, pa.string()))
        cols = {
            "source": _const(source, m),
            "partition": pa.array(_per_row(partition, rows, np.int32), pa.int32()),
            "offset": pa.array(_per_row(offset, rows, np.int64, default=rows), pa.int64()),
            "ts_ms": _ts_col(ts_ms, rows),
            "time_ns": pa.array(t[rows], pa.int64()),
            "exporter": exp_col if exp_col is not None else pa.nulls(m, TRANSFERS.field("exporter").type),
            "src_addr": pa.array([_ipset.key_text(src_hi[r], src_lo[r]) for r in rows.tolist()], pa.string()),
            "src_port": pa.array(a["src_port"][rows].astype(np.uint16), pa.uint16()),
            "dst_addr": pa.array([_ipset.key_text(dst_hi[r], dst_lo[r]) for r in rows.tolist()], pa.string()),
            "dst_port": pa.array(a["dst_port"][rows].astype(np.uint16), pa.uint16()),
            "protocol": pa.array(a["protocol"][rows].astype(np.uint8), pa.uint8()),
            "bytes": pa.array(nbytes[rows], pa.uint64()),
            "packets": pa.array(a["packets"][rows].astype(np.uint64), pa.uint64()),
            "sampling_interval": pa.array(a["sampling_interval"][rows].astype(np.uint32), pa.uint32()),
            "bytes_scaled": pa.array(scaled[rows], pa.uint64()),
            "platform": _dict(plat), "indicator": pa.array(indic, pa.string()), "indicator_type": _dict(itype),
            "seen_where": _dict(seen),
            "src_zone": _dict(szn), "dst_zone": _dict(dzn), "rule": _dict(rname), "severity": _dict(sev),
            "service": _dict([svc_names[k] for k in svc.tolist()]),
            "indicator_source": pa.array(isrc, pa.string()),
        }
        return _table(cols, m, wl.version, pol.version)

    # ---------------------------------------------------------------------------- DNS
    def observe_dns(self, lines: Iterable[bytes | str], *, source: str = "-", partition=-1,
                    offset=None, bad: list | None = None, whole: bool = False,
                    watched: list | None = None) -> pa.Table:
        """Feed a Zeek dns.log's, ssl.log's or http.log's lines (a file's lines or a Kafka value's)
        into the map; returns a row per answer for a watchlisted name (``DNS_ANSWER``, rule
        ``dns_lookup``) and per connection that named one (``TLS_SNI`` / ``HTTP_HOST``, rule
        ``name_seen``).  ``bad``: the lines that are no such record
        are appended to it; ``whole``: one bad line keeps every line out of the map; ``watched``:
        the records that name a watched host (:meth:`DnsMap.observe_lines`)."""
        answers = self.dns.observe_lines(lines, bad, whole=whole, watched=watched)
        wl = self.watchlist
        pol = self.policy
        if not answers:
            return TRANSFERS.empty_table()
        m = len(answers)
        plat, indic, itype, isrc, sev, szn, dzn, cli, dst = [], [], [], [], [], [], [], [], []
        names = pol.zone_names
        for ans in answers:
            i = wl.match_host(ans.name)
            it = wl.indicators[i]
            zc = _zone_of(pol, ans.client)
            zd = _zone_of(pol, ans.addr)
            s = wl.severity_for(it.platform, pol.zone_kind_name(zc) if zc is not None else None)
            plat.append(it.platform)
            indic.append(ans.name)
            itype.append(it.type)
            isrc.append(f"{VIA_TEXT[ans.via]}; watchlist {it.type} {it.value}: {it.source}")
            sev.append(s)
            szn.append(names[zc] if zc is not None else None)
            dzn.append(names[zd] if zd is not None else None)
            cli.append(ans.client)
            dst.append(ans.addr)
            self._count(it.platform, names[zc] if zc is not None else "none", VIA_RULE[ans.via])
        rows = np.arange(m)
        cols = {
            "source": _const(source, m),
            "partition": pa.array(_per_row(partition, rows, np.int32), pa.int32()),
            "offset": pa.array(_per_row(offset, rows, np.int64, default=rows), pa.int64()),
            "ts_ms": pa.array([a.ts_ns // 1_000_000 for a in answers], pa.int64()),
            "time_ns": pa.array([a.ts_ns for a in answers], pa.int64()),
            "exporter": pa.nulls(m, TRANSFERS.field("exporter").type),
            "src_addr": pa.array(cli, pa.string()), "src_port": pa.nulls(m, pa.uint16()),
            "dst_addr": pa.array(dst, pa.string()), "dst_port": pa.nulls(m, pa.uint16()),
            "protocol": pa.nulls(m, pa.uint8()), "bytes": pa.nulls(m, pa.uint64()),
            "packets": pa.nulls(m, pa.uint64()), "sampling_interval": pa.nulls(m, pa.uint32()),
            "bytes_scaled": pa.nulls(m, pa.uint64()),
            "platform": _dict(plat), "indicator": pa.array(indic, pa.string()), "indicator_type": _dict(itype),
            "seen_where": _dict([VIA_WHERE[a.via] for a in answers]), "src_zone": _dict(szn), "dst_zone": _dict(dzn),
            "rule": _dict([VIA_RULE[a.via] for a in answers]), "severity": _dict(sev),
            "indicator_source": pa.array(isrc, pa.string()),
        }
        return _table(cols, m, wl.version, pol.version)

    # ---------------------------------------------------------------------------- messages
    def prescan(self, buf: np.ndarray, offsets: np.ndarray, sel: np.ndarray | None = None) -> "Prescan":
        """The marker kernel's pass over messages ``sel`` of a batch, for :meth:`detect_messages`
        later (the kernel releases the GIL: flowaudit.pipeline runs it beside the decoders)."""
        wl = self.watchlist
        return Prescan(wl, *_literal_pass(wl, np.ascontiguousarray(buf, np.uint8),
                                          np.ascontiguousarray(offsets, np.int64), sel))

    def detect_messages(self, buf: np.ndarray, offsets: np.ndarray, sel: np.ndarray | None = None, *,
                        recipients: Iterable[tuple[int, str, str]] | None = None, source: str = "-",
                        sources: list[str] | None = None, source_idx=None, partition=-1, offset=None,
                        ts_ms=None, prescan: "Prescan | None" = None) -> pa.Table:
        """Message-side indicators over a batch (``buf`` + ``offsets``; ``sel`` = messages to scan).

        ``recipients``: (message index, recipient id, where) with where ``EDI_UNB`` (UNB S003),
        ``X12_ISA`` (ISA08) or ``X12_GS`` (GS03), e.g. from :func:`envelope_recipients`.
        Provenance (``partition``, ``offset``, ``ts_ms``, ``source_idx``) is indexed by message.
        ``prescan``: :meth:`prescan` of the same ``buf`` over at least ``sel`` (its watchlist is
        the one used, even where the operator's files were reloaded since).
        """
        wl = self.watchlist if prescan is None else prescan.watchlist
        hits = message_matches(wl, buf, offsets, sel, None if prescan is None else prescan[1:])
        party: dict[str, int] = {}          # a batch repeats a handful of recipient ids thousands of times
        for mi, rid, where in (recipients or ()):
            i = party.get(rid)
            if i is None:
                i = party[rid] = wl.match_edi_party(rid)
            if i >= 0:
                hits.append((int(mi), i, where, wl.indicators[i].value))
        return self.message_transfers(wl, hits, source=source, sources=sources, source_idx=source_idx,
                                      partition=partition, offset=offset, ts_ms=ts_ms)

    def message_transfers(self, wl: _wl.CompiledWatchlist, hits: list, *, source: str = "-",
                          sources: list[str] | None = None, source_idx=None, partition=-1, offset=None,
                          ts_ms=None) -> pa.Table:
        """The transfers of message-side matches ``hits``: (message index, indicator id, seen_where,
        shown value) each, with the provenance of :meth:`detect_messages` indexed by message."""
        if not hits:
            return TRANSFERS.empty_table()
        hits = sorted(hits, key=lambda h: h[0])
        msg = np.asarray([h[0] for h in hits], np.int64)
        m = len(hits)
        plat = [wl.indicators[h[1]].platform for h in hits]
        sev = [wl.severity_for(p, None) for p in plat]
        for p, (_, i, where, _) in zip(plat, hits):
            self._count(p, "none", "watchlist")
        ts = None if ts_ms is None else np.asarray(ts_ms, np.int64)[msg] if np.ndim(ts_ms) else np.full(m, int(ts_ms))
        if sources is not None and source_idx is not None:
            src_col = pa.DictionaryArray.from_arrays(pa.array(np.asarray(source_idx, np.int32)[msg], pa.int32()),
                                                     pa.array(sources, pa.string()))
        else:
            src_col = _const(source, m)
        cols = {
            "source": src_col,
            "partition": pa.array(_per_row(partition, msg, np.int32), pa.int32()),
            "offset": pa.array(_per_row(offset, msg, np.int64, default=msg), pa.int64()),
            "ts_ms": pa.array(ts, pa.int64(), mask=ts < 0) if ts is not None else pa.nulls(m, pa.int64()),
            "time_ns": (pa.array(ts * 1_000_000, pa.int64(), mask=ts < 0) if ts is not None
                        else pa.nulls(m, pa.int64())),  # unknown message time stays null
            "exporter": pa.nulls(m, TRANSFERS.field("exporter").type),
        }
        for f in ("src_addr", "src_port", "dst_addr", "dst_port", "protocol", "bytes", "packets",
                  "sampling_interval", "bytes_scaled"):
            cols[f] = pa.nulls(m, TRANSFERS.field(f).type)
        cols.update({
            "platform": _dict(plat), "indicator": pa.array([h[3] for h in hits], pa.string()),
            "indicator_type": _dict([wl.indicators[h[1]].type for h in hits]),
            "seen_where": _dict([h[2] for h in hits]), "src_zone": _dict([None] * m), "dst_zone": _dict([None] * m),
            "rule": _dict(["watchlist"] * m), "severity": _dict(sev),
            "indicator_source": pa.array([wl.indicators[h[1]].source for h in hits], pa.string()),
        })
        return _table(cols, m, wl.version, self.policy.version)


# ------------------------------------------------------------------------------ message matching
def _msg_kind(buf: np.ndarray, s: int, e: int) -> str:
    """Where a payload indicator sits, from the message's first non-space byte."""
    i = s
    while i < e and buf[i] in (9, 10, 13, 32, 0xEF, 0xBB, 0xBF):
        i += 1
    if i < e and buf[i] == 0x3C:  # <
        return "XML_ELEMENT"
    if i < e and buf[i] in (0x7B, 0x5B):  # { [
        return "JSON_PATH"
    return "PAYLOAD"


def _hostchar(c: int) -> bool:
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c in (45, 95)


def _read_value(buf: np.ndarray, e: int, end: int) -> str:
    """The value after a field name: ``"key": "V"``, ``key: 'V'``, ``key=V``, ``<key>V</key>``."""
    i = e
    if i < end and buf[i] in (0x22, 0x27):  # closing quote of the key
        i += 1
    while i < end and buf[i] in (9, 10, 13, 32):
        i += 1
    if i >= end or buf[i] not in (0x3A, 0x3D, 0x3E):  # : = >
        return ""
    i += 1
    while i < end and buf[i] in (9, 10, 13, 32):
        i += 1
    if i < end and buf[i] in (0x22, 0x27):
        i += 1
    j = i
    while j < end and j - i < 64 and buf[j] not in (0x22, 0x27, 0x3C, 0x2C, 0x7D, 0x5D, 9, 10, 13, 32, 0x26, 0x3B):
        j += 1
    return bytes(buf[i:j]).decode("ascii", errors="replace")


class Prescan(NamedTuple):
    watchlist: _wl.CompiledWatchlist
    matches: tuple   # (msg, pattern, start, end) arrays of kernels.markers, messages without escapes
    escaped: np.ndarray  # the messages with \u escapes, &# references or %HH (kernels.markers.escaped)


def _literal_pass(wl: _wl.CompiledWatchlist, buf: np.ndarray, offsets: np.ndarray,
                  sel: np.ndarray | None) -> tuple[tuple, np.ndarray]:
    """(the literals' matches over the messages of ``sel`` without escapes, the messages with
    them): those are matched on their decoded text later, not on their raw bytes as well."""
    sel = np.arange(offsets.shape[0] - 1, dtype=np.int64) if sel is None else np.ascontiguousarray(sel, np.int64)
    escaped = _mk.escaped(buf, offsets, sel)
    return wl.scan_payloads(buf, offsets, sel[~np.isin(sel, escaped)] if escaped.size else sel), escaped


def message_matches(wl: _wl.CompiledWatchlist, buf: np.ndarray, offsets: np.ndarray,
                    sel: np.ndarray | None = None, pre: tuple | None = None) -> list[tuple[int, int, str, str]]:
    """(message, indicator id, seen_where, shown value) per distinct indicator per message;
    ``pre``: :func:`_literal_pass` (a :class:`Prescan`'s matches and escaped messages) over these
    messages and maybe others (only ``sel``'s count), made here when not given.  A message with
    escapes or character references is matched on its text with them decoded
    (``kernels.markers.unescape``) instead of its raw bytes."""
    buf = np.ascontiguousarray(buf, np.uint8)
    offsets = np.ascontiguousarray(offsets, np.int64)
    if pre is None:
        (mm, pp, ss, ee), escaped = _literal_pass(wl, buf, offsets, sel)
    else:
        (mm, pp, ss, ee), escaped = pre
        if sel is not None and mm.size:
            keep = np.isin(mm, sel)
            mm, pp, ss, ee = mm[keep], pp[keep], ss[keep], ee[keep]
        if sel is not None and escaped.size:
            escaped = escaped[np.isin(escaped, sel)]
    per_msg: dict[int, list] = {}
    where_from: dict[int, tuple] = {}     # an escaped message: its decoded text, not the batch
    if escaped.size:
        ubuf, uoff = _mk.unescape(buf, offsets, np.ascontiguousarray(escaped, np.int64))
        for k, mi in enumerate(escaped.tolist()):
            where_from[mi] = (ubuf, int(uoff[k]), int(uoff[k + 1]))
        um, up, us, ue = wl.scan_payloads(ubuf, uoff)
        for k, p, s, e in zip(um.tolist(), up.tolist(), us.tolist(), ue.tolist()):
            per_msg.setdefault(int(escaped[k]), []).append((p, s, e))
    for mi, p, s, e in zip(mm.tolist(), pp.tolist(), ss.tolist(), ee.tolist()):
        per_msg.setdefault(mi, []).append((p, s, e))
    if not per_msg:
        return []
    out = []
    raw_buf = buf
    for mi, found in per_msg.items():
        buf, start, end = where_from.get(mi) or (raw_buf, int(offsets[mi]), int(offsets[mi + 1]))
        where = _msg_kind(buf, start, end)
        cand = _candidates(wl, buf, start, end, [f for f in found if wl.pattern_kind[f[0]] != _mk.BASE64], where)
        # a base64 alias only points at a run: decoded, the run is matched as text, boundaries and all
        for run in _base64_runs(buf, start, end, [(s, int(wl.pattern_skip[p])) for p, s, _e in found
                                                  if wl.pattern_kind[p] == _mk.BASE64]):
            rb = np.frombuffer(run, np.uint8)
            _m, rp, rs, re_ = wl.patterns.scan(rb, np.array([0, rb.size], np.int64))
            cand += [(i, -1, -1, shown + BASE64_SHOWN)
                     for i, _s, _e, shown in _candidates(wl, rb, 0, rb.size, list(zip(rp.tolist(), rs.tolist(),
                                                                                      re_.tolist())), where)]
        strong_hosts = {wl.indicators[i].platform for i, *_ in cand
                        if wl.indicators[i].type in ("host", "domain", "host_pattern")}
        strong = {wl.indicators[i].platform for i, *_ in cand
                  if not wl.indicators[i].weak and wl.indicators[i].type != "url_path"} | strong_hosts
        seen = set()
        for i, s, e, shown in cand:
            ind = wl.indicators[i]
            if ind.type == "url_path" and ind.platform not in strong_hosts:
                continue  # a path only counts next to a host of its platform
            if ind.weak and ind.platform not in strong:
                continue
            if i in seen:
                continue
            seen.add(i)
            out.append((mi, i, where, shown))
    return out


def _candidates(wl: _wl.CompiledWatchlist, buf: np.ndarray, start: int, end: int, found, where: str) -> list:
    """(indicator id, start, end, shown) of the literal matches ``found`` ((pattern, start, end) in
    ``buf``) of one message's text ``buf[start:end]``: host patterns checked on the whole host,
    party codes on the value after their key; a registered domain inside a listed host's match
    and a marker prefix where a listed marker matched are left out."""
    cand = []
    kinds = wl.pattern_kind
    for p, s, e in found:
        ind_id = int(wl.pattern_indicator[p])
        ind = wl.indicators[ind_id]
        k = int(kinds[p])
        if k == _mk.HOST_SUFFIX:
            j = s
            while j > start and (_hostchar(buf[j - 1]) or buf[j - 1] == 0x2E):
                j -= 1
            host = bytes(buf[j:e]).decode("ascii", errors="replace").lower()
            hit = wl.match_host(host)
            if hit < 0 or wl.indicators[hit].type != "host_pattern":
                continue
            cand.append((hit, s, e, host))
        elif k == _mk.KEY:
            val = _read_value(buf, e, end).upper()
            for code, cid in wl.party_codes.get(ind.key.lower(), []):
                ci = wl.indicators[cid]
                if code == val and (ci.context == "any" or where == "JSON_PATH"):
                    cand.append((cid, s, e, f"{ci.key}={ci.value}"))
        else:
            cand.append((ind_id, s, e, ind.value))
    # a registered-domain hit inside an exact-host hit is the same name: keep the host
    spans = [(s, e) for i, s, e, _ in cand if wl.indicators[i].type == "host"]
    cand = [c for c in cand if not (wl.indicators[c[0]].type == "domain"
                                    and any(hs <= c[1] and c[2] == he for hs, he in spans))]
    # a marker prefix (LOGINK_CN_*) where a listed marker matched at the same place: keep the marker
    exact_starts = {s for i, s, e, _ in cand if wl.indicators[i].type == "payload_marker"
                    and not wl.indicators[i].value.endswith("*")}
    return [c for c in cand if not (wl.indicators[c[0]].type == "payload_marker"
                                    and wl.indicators[c[0]].value.endswith("*") and c[1] in exact_starts)]


_B64_CHAR = np.zeros(256, np.bool_)
_B64_CHAR[np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_", np.uint8)] = True


def _base64_runs(buf: np.ndarray, start: int, end: int, found) -> list[bytes]:
    """The decoded bytes of each base64 run of ``buf[start:end]`` that holds a base64 alias match
    (``found``: (start, skip) of each: the alias starts ``skip`` characters into a group of four).
    The run spreads over the alphabet (standard or URL-safe) around the match and is decoded from
    the first group boundary the match implies (a run may begin with alphabet characters that are
    not its own: ``FTX+AAI+++<base64>``); one run once (found by bisection over the message's
    other bytes, however many matches one run holds), a dangling last character dropped."""
    if not found:
        return []
    other = np.flatnonzero(~_B64_CHAR[buf[start:end]])    # positions that end runs
    runs = set()
    for s, skip in found:
        s -= start
        k = int(np.searchsorted(other, s))
        i = int(other[k - 1]) + 1 if k else 0
        runs.add((i + (s - skip - i) % 4, int(other[k]) if k < other.size else end - start))
    out = []
    for i, j in sorted(runs):
        run = bytes(buf[start + i:start + j])
        run = run[:len(run) - 1] if len(run) % 4 == 1 else run
        try:
            out.append(binascii.a2b_base64(run.replace(b"-", b"+").replace(b"_", b"/") + b"=" * (-len(run) % 4)))
        except binascii.Error:
            continue
    return out


def envelope_recipients(buf: np.ndarray, offsets: np.ndarray, sel: np.ndarray | None = None
                        ) -> list[tuple[int, str, str]]:
    """Interchange recipients of EDIFACT (UNB S003 0010) and X12 (ISA08, GS03) messages."""
    offsets = np.asarray(offsets, np.int64)
    idx = range(offsets.shape[0] - 1) if sel is None else np.asarray(sel, np.int64).tolist()
    out = []
    for mi in idx:
        raw = bytes(buf[offsets[mi]:offsets[mi + 1]]).lstrip()
        if raw.startswith(b"UNA") and len(raw) >= 9:
            comp, elem, rel, term = raw[3:4], raw[4:5], raw[6:7], raw[8:9]
            body = raw[9:].lstrip()
        else:
            comp, elem, rel, term, body = b":", b"+", b"?", b"'", raw
        if body.startswith(b"UNB" + elem):
            seg = body.split(term, 1)[0]
            els = seg.split(elem)
            if len(els) > 3:
                rid = els[3].split(comp)[0].replace(rel, b"").decode("latin-1").strip()
                if rid:
                    out.append((mi, rid, "EDI_UNB"))
        elif raw.startswith(b"ISA") and len(raw) >= 106:
            sep, term = raw[3:4], raw[105:106]
            els = raw[:106].split(sep)
            if len(els) > 8:
                out.append((mi, els[8].decode("latin-1").strip(), "X12_ISA"))
            for seg in raw[106:].split(term):
                seg = seg.strip()
                if seg.startswith(b"GS" + sep):
                    g = seg.split(sep)
                    if len(g) > 3:
                        out.append((mi, g[3].decode("latin-1").strip(), "X12_GS"))
    return out


# ------------------------------------------------------------------------------ aggregates
def window_aggregates(transfers: pa.Table, window_ns: int) -> pa.Table:
    """Bytes per source host and platform per window over TRANSFERS rows that carry bytes.

    Columns: window_start_ns, src_addr, src_zone, platform, flows, bytes, bytes_scaled, packets.
    """
    if window_ns <= 0:
        raise ValueError("window_ns must be > 0")
    t = transfers.filter(pc.is_valid(transfers["bytes"]))
    empty = pa.table({"window_start_ns": pa.array([], pa.int64()), "src_addr": pa.array([], pa.string()),
                      "src_zone": pa.array([], pa.string()), "platform": pa.array([], pa.string()),
                      "flows": pa.array([], pa.int64()), "bytes": pa.array([], pa.uint64()),
                      "bytes_scaled": pa.array([], pa.uint64()), "packets": pa.array([], pa.uint64())})
    t = t.filter(pc.is_valid(t["time_ns"]))  # rows without a time belong to no window
    if t.num_rows == 0:
        return empty
    tn = t["time_ns"].to_numpy()
    w = tn - np.mod(tn, window_ns)
    g = pa.table({"window_start_ns": pa.array(w, pa.int64()), "src_addr": t["src_addr"],
                  "src_zone": pc.cast(t["src_zone"], pa.string()), "platform": pc.cast(t["platform"], pa.string()),
                  "bytes": t["bytes"], "bytes_scaled": t["bytes_scaled"], "packets": t["packets"]})
    agg = g.group_by(["window_start_ns", "src_addr", "src_zone", "platform"], use_threads=False).aggregate(
        [("bytes", "count"), ("bytes", "sum"), ("bytes_scaled", "sum"), ("packets", "sum")])
    out = pa.table({"window_start_ns": agg["window_start_ns"], "src_addr": agg["src_addr"],
                    "src_zone": agg["src_zone"], "platform": agg["platform"],
                    "flows": pc.cast(agg["bytes_count"], pa.int64()), "bytes": agg["bytes_sum"],
                    "bytes_scaled": agg["bytes_scaled_sum"], "packets": agg["packets_sum"]})
    return out.sort_by([("window_start_ns", "ascending"), ("bytes_scaled", "descending"),
                        ("src_addr", "ascending"), ("platform", "ascending")])


# ------------------------------------------------------------------------------ helpers
def _zone_of(pol: _zones.Policy, addr: str | None) -> int | None:
    if not addr:
        return None
    try:
        hi, lo = _ipset.addr_key(addr)
    except ValueError:
        return None
    return int(pol.classify(np.array([hi], np.uint64), np.array([lo], np.uint64))[0])


def _dict(values: list) -> pa.DictionaryArray:
    return pa.array(values, pa.string()).dictionary_encode()


def _const(value: str, n: int) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32), pa.int32()), pa.array([value], pa.string()))


def _per_row(v, rows: np.ndarray, dtype, default=None) -> np.ndarray:
    if v is None:
        return np.asarray(default if default is not None else np.full(rows.size, -1), dtype)
    if np.ndim(v) == 0:
        return np.full(rows.size, v, dtype)
    return np.asarray(v, dtype)[rows]


def _ts_col(ts_ms, rows: np.ndarray) -> pa.Array:
    if ts_ms is None:
        return pa.nulls(rows.size, pa.int64())
    v = _per_row(ts_ms, rows, np.int64)
    return pa.array(v, pa.int64(), mask=v < 0)


def _table(cols: dict, m: int, wl_version: str, pol_version: str) -> pa.Table:
    cols["watchlist_version"] = _const(wl_version, m)
    cols["policy_version"] = _const(pol_version, m)
    cols["schema_version"] = _const(SCHEMA_VERSION, m)
    arrays = []
    for f in TRANSFERS:
        arr = cols.get(f.name)
        if arr is None:          # a column this kind of row does not fill (e.g. service on message rows)
            arr = pa.nulls(m, f.type)
        if pa.types.is_dictionary(f.type) and not pa.types.is_dictionary(arr.type):
            arr = pc.cast(arr, pa.string()).dictionary_encode()
        if pa.types.is_dictionary(f.type) and arr.type != f.type:
            arr = pa.DictionaryArray.from_arrays(pc.cast(arr.indices, pa.int32()), arr.dictionary)
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=TRANSFERS)


# ------------------------------------------------------------------------------ CLI
def cmd_aggregates(args) -> int:
    """``flowaudit aggregates ROOT``: per-window bytes per source host and platform."""
    import sys

    import pyarrow.parquet as pq

    from ..sinks.parquet import read_dataset

    root = Path(args.root)
    if not (root / "dataset=transfers").is_dir():
        if not is_root(root):
            print(f"flowaudit: {args.root} is not a flowaudit root (no dataset=... folders)", file=sys.stderr)
            return 2
        transfers = TRANSFERS.empty_table()      # a root where nothing was transferred: no rows, not an error
    else:
        transfers = read_dataset(root, "transfers")
    agg = window_aggregates(transfers, int(args.window * 1e9))
    if args.out:
        pq.write_table(agg, args.out, compression="zstd")
    rows = agg.sort_by([("bytes_scaled", "descending")]).slice(0, args.top).to_pylist()
    print(f"{'window start (UTC)':<20} {'source host':<40} {'zone':<10} {'platform':<16} {'flows':>6} {'bytes (scaled)':>15}")
    for r in rows:
        start = np.datetime64(r["window_start_ns"], "ns").astype("datetime64[s]")
        print(f"{str(start):<20} {str(r['src_addr']):<40} {str(r['src_zone'] or '-'):<10} {r['platform']:<16} "
              f"{r['flows']:>6} {r['bytes_scaled']:>15,}")
    print(f"{agg.num_rows} (window, host, platform) rows" + (f"; written to {args.out}" if args.out else ""))
    return 0


def add_parser(sub) -> None:
    from ..config import MAX_SPAN_S, bounded, out_path

    p = sub.add_parser("aggregates", help="per-window bytes per source host and platform, from the transfers dataset")
    p.add_argument("root", metavar="ROOT", help="the stream's or an audit's Parquet root (holds dataset=transfers)")
    p.add_argument("--window", type=bounded(float, 0, inclusive=False, hi=MAX_SPAN_S), default=300.0, metavar="S",
                   help="window length in seconds (default 300, at most 366 days)")
    p.add_argument("--top", type=bounded(int, 0), default=20, metavar="N", help="rows to print, largest first (default 20)")
    p.add_argument("--out", type=out_path("file"), metavar="FILE", help="write every row to this Parquet file")
    p.set_defaults(fn=cmd_aggregates)
