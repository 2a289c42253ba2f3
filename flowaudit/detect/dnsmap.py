"""DNS attribution: a bounded, TTL-respecting IP -> name map fed by Zeek ``dns.log`` records, and
by the names Zeek saw on connections: the TLS server name (SNI) of ``ssl.log`` and the HTTP
``Host`` of ``http.log`` (JSON lines, or Zeek's default tab-separated ASCII log:
:mod:`flowaudit.sources.zeek`; gzip-rotated files: :func:`flowaudit.sources.files.open_input`).
Suricata's ``eve.json`` gives the same three: its ``dns`` answers (formats 1, 2 detailed or
grouped, and 3), ``tls`` events' ``sni`` and ``http`` events' ``hostname``; its other events (alerts,
flows, stats ...) are records that name nothing (:func:`eve_record`).

A flow to an address that recently resolved from ``gateway.logink.cn`` is attributed to LOGINK
even though no IP is configured.  Time is **record time** (the ``ts`` of the DNS answers, the
flow's start time), never the wall clock, so a replayed capture attributes as the live one did.

* An answer (A/AAAA address in ``answers``, TTL in ``TTLs`` at the same position) for query
  ``q`` makes the address mean ``q`` during its *validity interval*
  ``[ts - grace, ts + ttl + grace]`` (TTL clamped to ``[min_ttl, max_ttl]``; ``grace`` =
  ``skew_s``, 5 s by default, absorbs clock skew between the resolver and the exporter and the
  1-second resolution of v9 export times).  A CNAME chain (names in ``answers``) is kept: when a
  CNAME in the chain, rather than the query, is the watched name, that name is stored.
* A connection whose TLS ClientHello named ``server_name`` (``ssl.log``), or whose HTTP request
  named ``host`` (``http.log``; its port and a trailing dot dropped, an address literal no name),
  makes its responder address mean that name from ``ts - grace`` for ``default_ttl`` (300 s) plus
  ``grace``, as an answer without a TTL would.  These see what DNS logs miss: a lookup over DNS
  over HTTPS, a resolver outside the sensor's view, an answer cached before the log began.  The
  map keeps how it learned a name (``via``: ``dns``, ``tls_sni``, ``http_host``), so a flow's
  evidence says which.  ``responder``: an optional predicate over the responder's address; a
  connection to one it refuses is returned (a row: who named what) but names no address.  The
  egress detector refuses the addresses inside the zone policy: a connection through a proxy (an
  HTTP ``CONNECT``, TLS inside it) names the platform on the proxy's address, which every other
  flow to the proxy would then have been attributed to.
* A flow is attributed by **its own start time** against these intervals, never against the
  newest answer seen: NetFlow exports a long flow only after the active timeout, so a flow that
  started inside an answer's TTL is often exported after later answers.  An address keeps up to
  ``max_per_addr`` intervals (an address that re-resolves to another name keeps both); the latest
  answer containing the flow's start wins.  The same name answered again for an address extends
  its interval instead of adding one.
* ``keep``: an optional predicate over names; only matching names are stored (the egress
  detector passes its watchlist), so unrelated lookups can never evict the ones that matter.
* Bounded: at most ``max_entries`` addresses, least recently *answered* evicted first; an
  interval is dropped once it ended more than ``horizon_s`` (1 h by default: longer than
  usual active timeouts) before the newest answer time seen (``now_ns``).

:meth:`DnsMap.arrays` exposes the live map as sorted (hi, lo) uint64 keys for the join kernel
(:func:`flowaudit.kernels.ipset.exact_lookup`); :meth:`DnsMap.attribute` does the join.
:meth:`DnsMap.to_state` / :meth:`DnsMap.load_state` carry the map across restarts.
"""
from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import orjson

from flowaudit.kernels import ipset as _ipset
from flowaudit.sources.zeek import ZeekLog
from flowaudit.sources.zeek import log_files as zeek_log_files

NS = 1_000_000_000


@dataclass
class DnsAnswer:
    ts_ns: int
    client: str | None
    query: str
    name: str            # the name stored (query, or the watched CNAME; the SNI or Host)
    addr: str
    ttl_s: float
    via: str = "dns"     # how the name was learned: a DNS answer, a TLS server name, an HTTP Host


VIAS = ("dns", "tls_sni", "http_host")


_MAX_TS_S = float(1 << 62) / NS    # record times beyond this (year 2116) are garbage, not times


def _ts_ns(v) -> int | None:
    """Epoch seconds (number or ISO 8601 text) -> ns; None when unreadable or outside 0..2**62 ns."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            s = float(v)
        except OverflowError:      # an integer beyond float range
            return None
    elif isinstance(v, str):
        try:
            s = datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError):
            return None
    else:
        return None
    return int(round(s * NS)) if 0.0 <= s < _MAX_TS_S else None


def record_via(rec: dict) -> str | None:
    """Which of Zeek's logs a record is from, by its fields (a JSON line carries no ``#path``):
    ``dns`` (a ``query``), ``tls_sni`` (ssl.log: ``server_name``, ``cipher`` or ``established``),
    ``http_host`` (http.log: ``method``, ``host`` or ``trans_depth``), or None; a Suricata event
    says it itself (:func:`eve_record`; ``other``: an event that names nothing)."""
    if isinstance(rec, _Eve):
        return rec["_via"]
    if "query" in rec:
        return "dns"
    if "server_name" in rec or "cipher" in rec or "established" in rec:
        return "tls_sni"
    if "method" in rec or "host" in rec or "trans_depth" in rec:
        return "http_host"
    return None


_NAME_FIELD = {"dns": "query", "tls_sni": "server_name", "http_host": "host"}


class _Eve(dict):
    """A Suricata event as the record it stands for (no JSON line can pass for one)."""


def eve_record(rec: dict) -> dict | None:
    """A Suricata ``eve.json`` event as the Zeek record it stands for (``_via`` says which), or None
    when ``rec`` is no eve event.  ``dns``: the answer events of format 1 (one per answer:
    ``rrname``, ``rdata``, ``ttl``), 2 (``answers`` with ``rdata`` and ``ttl``, or ``grouped`` by
    type, no TTLs) and 3 (``queries`` and ``answers``, ``type`` ``response``); its client is the
    side not on port 53.  ``tls``: ``sni`` (logged with ``extended: yes``, Suricata's default
    eve configuration); ``http``: ``hostname``; the client is ``src_ip``, the server ``dest_ip``.
    A query event, and every other event type, names nothing (``_via`` ``other``)."""
    et = rec.get("event_type")
    if not isinstance(et, str):
        return None
    out = _Eve(_via="other", ts=rec.get("timestamp"))
    body = rec.get(et)
    if not isinstance(body, dict):
        return out
    src, dst = rec.get("src_ip"), rec.get("dest_ip")
    if et == "tls" and body.get("sni") is not None:
        out.update({"_via": "tls_sni", "server_name": body["sni"], "id.orig_h": src, "id.resp_h": dst})
    elif et == "http" and body.get("hostname") is not None:
        out.update({"_via": "http_host", "host": body["hostname"], "id.orig_h": src, "id.resp_h": dst})
    elif et == "dns" and body.get("type") in ("answer", "response"):
        qs = body.get("queries")                                        # format 3
        if isinstance(qs, list):
            query = qs[0].get("rrname") if qs and isinstance(qs[0], dict) else None
        else:
            query = body.get("rrname")
        answers, ttls = [], []
        if isinstance(body.get("answers"), list):                       # formats 2 (detailed) and 3
            for a in body["answers"]:
                if isinstance(a, dict) and isinstance(a.get("rdata"), str):
                    answers.append(a["rdata"])
                    ttls.append(a.get("ttl"))
        elif isinstance(body.get("grouped"), dict):                     # format 2, grouped: no TTLs
            g = body["grouped"]
            answers = [x for t in ("CNAME", "A", "AAAA") if isinstance(g.get(t), list) for x in g[t]]
        elif isinstance(body.get("rdata"), str):                        # format 1: an event an answer
            answers, ttls = [body["rdata"]], [body.get("ttl")]
        client = dst if rec.get("src_port") == 53 else src
        out.update({"_via": "dns", "query": query, "answers": answers, "TTLs": ttls,
                    "rcode_name": body.get("rcode"), "id.orig_h": client})
    return out


def _check(rec) -> dict:
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    rec = eve_record(rec) or rec
    via = record_via(rec) if _ts_ns(rec.get("ts")) is not None else None
    if via is None:
        raise ValueError("no readable ts, or no DNS, TLS or HTTP record")
    if via == "other":
        return rec
    name = rec.get(_NAME_FIELD[via])
    # a DNS record needs its query; a TLS or HTTP record without a name (no SNI, an HTTP/1.0
    # request) is a record that names nothing
    if not isinstance(name, str) and (via == "dns" or name is not None):
        raise ValueError(f"{_NAME_FIELD[via]} is no text")
    return rec


# a field's type when a log has #fields but no #types line (Zeek always writes both)
_TYPES = {"ts": "time", "rtt": "interval", "answers": "vector[string]", "TTLs": "vector[interval]",
          "resumed": "bool", "established": "bool", "trans_depth": "count"}
KINDS = ("dns", "ssl", "http")     # the Zeek logs (their #path) that name addresses
PREFIXES = KINDS + ("eve",)        # the files of a folder read for names: Zeek's, and Suricata's eve.json


def dns_log() -> ZeekLog:
    """A reader of one Zeek ``dns.log``, ``ssl.log`` or ``http.log``'s lines (JSON or Zeek's ASCII
    log): a record needs a readable ``ts`` and to be one of those (:func:`record_via`; a DNS record
    with a text ``query``), else it is a bad line (the map counts it in ``bad_lines``; the stream
    and the audit quarantine it)."""
    return ZeekLog(KINDS, _check, _TYPES)


def log_files(paths: Iterable[str | Path]) -> list[str]:
    """The name logs named by ``paths`` (files, or folders of Zeek's or Suricata's logs: their
    ``dns*``, ``ssl*``, ``http*`` and ``eve*`` files); :func:`flowaudit.sources.zeek.log_files`."""
    return zeek_log_files(paths, KINDS, PREFIXES)


def _dns_names(query: str, answers: list) -> list[str]:
    """A DNS record's names: its query, then the CNAMEs of its answers."""
    return [query] + [a for a in answers if isinstance(a, str) and not _is_addr(a)]


MAX_NAME = 253     # a host name's longest text (RFC 1035 2.3.4, without the trailing dot)


def _first_kept(names: list[str], keep) -> str | None:
    """The first of ``names`` that ``keep`` keeps (any, without one), lower case, no trailing dot;
    a text longer than a host name can be (an HTTP Host of megabytes) is no name."""
    for n in names:
        n = n.rstrip(".")
        if len(n) <= MAX_NAME and (keep is None or keep(n)):
            return n.lower()
    return None


def json_line(line: bytes | str, rec: dict) -> bytes:
    """A record's line as a JSON line (that of a JSON log as it is; a Zeek ASCII row as the JSON
    line Zeek would have written), to be read again without its log's header."""
    if isinstance(line, str):
        line = line.encode()
    return line if line.lstrip().startswith(b"{") else orjson.dumps(rec)


def _host(name: str, via: str) -> str | None:
    """The name a TLS server name or HTTP Host gives (lower case, no port or trailing dot); None
    for an address literal or nothing."""
    name = name.strip()
    if via == "http_host":
        if name.startswith("["):                      # [v6]:port
            return None
        if name.count(":") == 1:
            name = name.split(":", 1)[0]
    name = name.rstrip(".").lower()
    return None if not name or _is_addr(name) else name


class DnsMap:
    def __init__(self, max_entries: int = 100_000, *, keep: Callable[[str], bool] | None = None,
                 min_ttl_s: float = 0.0, max_ttl_s: float = 86_400.0, skew_s: float = 5.0,
                 default_ttl_s: float = 300.0, horizon_s: float = 3600.0, max_per_addr: int = 4,
                 responder: Callable[[str], bool] | None = None):
        if max_entries < 1 or max_per_addr < 1:
            raise ValueError("dnsmap: max_entries and max_per_addr must be >= 1")
        self.max_entries = int(max_entries)
        self.max_per_addr = int(max_per_addr)
        self.keep = keep
        self.responder = responder
        self.min_ttl_ns = int(min_ttl_s * NS)
        self.max_ttl_ns = int(max_ttl_s * NS)
        self.skew_ns = int(skew_s * NS)
        self.default_ttl_ns = int(default_ttl_s * NS)
        self.horizon_ns = int(horizon_s * NS)
        # (hi, lo) -> [[name, valid_from_ns, valid_until_ns, answered_ns, via], ...] (oldest answer first);
        # dict order = least recently answered address first
        self._map: OrderedDict[tuple[int, int], list[list]] = OrderedDict()
        # a watched name's CNAME targets -> (that name, valid until ns), least recently answered
        # first: Suricata's eve DNS format 1 logs a chain a record an event, so the A record's owner
        # is the last target, and only this says whose address it is.  Bounded on its own: a map
        # kept to one address (the audit's gathering of the watched records) still follows chains
        self._alias: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self.max_aliases = max(self.max_entries, 10_000)
        self.now_ns = 0
        self.span: list[int] | None = None   # [first, last] record time of the records observed (a caller may reset it)
        self.last_via: str | None = None     # the kind of the last record of the last observe_lines call
        self.last_log = "zeek"               # and whose log it was (zeek, suricata)
        self.stats = {"lines": 0, "bad_lines": 0, "answers": 0, "stored": 0, "evicted": 0, "expired": 0}
        self._arrays = None

    def __len__(self) -> int:
        return len(self._map)

    # ---------------------------------------------------------------------------- input
    def observe_lines(self, lines: Iterable[bytes | str], bad: list | None = None, *,
                      whole: bool = False, watched: list | None = None) -> list[DnsAnswer]:
        """Consume a Zeek dns.log's lines (a file's lines or a Kafka message value's): JSON
        lines, or Zeek's ASCII format after its header lines (:func:`dns_log`).

        Returns the stored answers (for the DNS_ANSWER rows); malformed lines are counted in
        ``stats['bad_lines']`` and skipped, and with ``bad`` given, each is appended to it as
        ``(index in lines, line, quarantine reason)`` (for the callers that quarantine them).
        ``whole``: the lines are one unit (a Kafka message) that is quarantined whole when a line
        is bad, so then none of its records is taken into the map either.  Otherwise each record
        goes into the map as it is read: a log of any size is read in bounded memory.
        ``watched``: each record that names a host ``keep`` keeps is appended to it as
        ``(record time ns, its JSON line)`` (:func:`json_line`; the audit's units read those again).
        """
        stored: list[DnsAnswer] = []
        log = dns_log()
        recs = []
        n_good = n_bad = 0
        last = None
        for i, line in enumerate(lines):
            if line is None:
                continue
            try:
                rec = log.record(line)
            except ValueError:
                n_bad += 1
                if bad is not None:
                    bad.append((i, line, log.reason))
                continue
            if rec is None:
                continue
            n_good += 1
            last = rec
            ts, via = _ts_ns(rec["ts"]), record_via(rec)      # (the reader checked both)
            if whole:
                recs.append((rec, ts, via, line))
            elif self._observe(rec, ts, via, stored) and watched is not None:
                watched.append((ts, json_line(line, rec)))
        self.stats["lines"] += n_good + n_bad
        self.stats["bad_lines"] += n_bad
        self.last_via = record_via(last) if last is not None else None
        self.last_log = "suricata" if isinstance(last, _Eve) else "zeek"
        if whole and not n_bad:
            for rec, ts, via, line in recs:
                if self._observe(rec, ts, via, stored) and watched is not None:
                    watched.append((ts, json_line(line, rec)))
        self._expire()
        return stored

    def _observe(self, rec: dict, ts: int, via: str, stored: list) -> bool:
        """One record (as :func:`dns_log` reads it, of record time ``ts`` and kind ``via``) into the
        map; whether it named a host ``keep`` keeps (the records a reader holds on to:
        :meth:`observe_lines`' ``watched``)."""
        self.span = [ts, ts] if self.span is None else [min(self.span[0], ts), max(self.span[1], ts)]
        if via == "other":
            return False
        if via != "dns":
            return self._observe_name(rec, ts, via, stored)
        query = rec.get("query")
        answers = rec.get("answers")
        if not isinstance(query, str) or not isinstance(answers, list):
            return False
        ttls = rec.get("TTLs")
        if not isinstance(ttls, list):
            ttls = []
        if rec.get("rcode_name") not in (None, "NOERROR"):
            return False
        self.now_ns = max(self.now_ns, ts)
        names = _dns_names(query, answers)
        name = _first_kept(names, self.keep)
        if name is None:
            name = self._aliased(names, ts)
            if name is None:
                return False
        client = rec.get("id.orig_h")
        for i, a in enumerate(answers):
            if not isinstance(a, str):
                continue
            ttl = ttls[i] if i < len(ttls) and isinstance(ttls[i], (int, float)) else None
            # clamped in seconds first, so that a huge TTL cannot overflow the ns arithmetic
            ttl_ns = self.default_ttl_ns if ttl is None else int(min(max(float(ttl), 0.0), 1e10) * NS)
            ttl_ns = min(max(ttl_ns, self.min_ttl_ns), self.max_ttl_ns)
            try:
                hi, lo = _ipset.addr_key(a)
            except ValueError:
                target = a.rstrip(".").lower()
                if 0 < len(target) <= MAX_NAME:          # a CNAME: its own answers are this name's
                    self._alias.pop(target, None)
                    self._alias[target] = (name, ts + ttl_ns + self.skew_ns)
                    while len(self._alias) > self.max_aliases:
                        self._alias.popitem(last=False)
                continue
            self.stats["answers"] += 1
            self._add((hi, lo), name, ts - self.skew_ns, ts + ttl_ns + self.skew_ns, ts)
            self.stats["stored"] += 1
            stored.append(DnsAnswer(ts, client if isinstance(client, str) else None, query, name, a, ttl_ns / NS))
        self._arrays = None
        return True

    def _aliased(self, names: list[str], ts: int) -> str | None:
        """The watched name whose CNAME one of ``names`` is, at record time ``ts`` (None: none)."""
        for n in names:
            hit = self._alias.get(n.rstrip(".").lower())
            if hit is not None and ts <= hit[1]:
                return hit[0]
        return None

    def _observe_name(self, rec: dict, ts: int, via: str, stored: list) -> bool:
        """A TLS server name or HTTP Host: the connection's responder is that name for a while."""
        raw, addr, client = rec.get(_NAME_FIELD[via]), rec.get("id.resp_h"), rec.get("id.orig_h")
        name = _host(raw, via) if isinstance(raw, str) else None
        if name is None or not isinstance(addr, str) or _first_kept([name], self.keep) is None:
            return False
        try:
            key = _ipset.addr_key(addr)
        except ValueError:
            return False
        self.now_ns = max(self.now_ns, ts)
        self.stats["answers"] += 1
        ttl_ns = min(max(self.default_ttl_ns, self.min_ttl_ns), self.max_ttl_ns)
        if self.responder is None or self.responder(addr):
            self._add(key, name, ts - self.skew_ns, ts + ttl_ns + self.skew_ns, ts, via)
            self.stats["stored"] += 1
            self._arrays = None
        stored.append(DnsAnswer(ts, client if isinstance(client, str) else None, raw, name, addr, ttl_ns / NS, via))
        return True

    def _add(self, key: tuple[int, int], name: str, t0: int, t1: int, answered: int, via: str = "dns") -> None:
        ivs = self._map.pop(key, None) or []
        for iv in ivs:
            # the same name the same way again, overlapping or touching: one longer interval
            if iv[0] == name and iv[4] == via and t0 <= iv[2] and iv[1] <= t1:
                iv[1], iv[2], iv[3] = min(iv[1], t0), max(iv[2], t1), max(iv[3], answered)
                break
        else:
            ivs.append([name, t0, t1, answered, via])
        ivs.sort(key=lambda iv: iv[3])
        del ivs[:-self.max_per_addr]
        self._map[key] = ivs
        while len(self._map) > self.max_entries:
            self._map.popitem(last=False)
            self.stats["evicted"] += 1

    def _expire(self) -> None:
        """Drop intervals that ended more than ``horizon`` before the newest answer time."""
        limit = self.now_ns - self.horizon_ns
        dead = 0
        for k in [k for k, ivs in self._map.items() if any(iv[2] < limit for iv in ivs)]:
            ivs = [iv for iv in self._map[k] if iv[2] >= limit]
            dead += len(self._map[k]) - len(ivs)
            if ivs:
                self._map[k] = ivs
            else:
                del self._map[k]
        if dead:
            self.stats["expired"] += dead
            self._arrays = None
        for k in [k for k, (_n, until) in self._alias.items() if until < limit]:
            del self._alias[k]

    # ---------------------------------------------------------------------------- output
    def get(self, addr: str, t_ns: int) -> str | None:
        """The name ``addr`` resolved from at record time ``t_ns`` (None if none or expired)."""
        best = None
        for name, t0, t1, answered, _via in self._map.get(_ipset.addr_key(addr), ()):
            if t0 <= t_ns <= t1 and (best is None or answered >= best[1]):
                best = (name, answered)
        return best[0] if best else None

    def arrays(self):
        """(keys_hi, keys_lo, first, count (int64 per distinct address, sorted by key), and per
        interval name_idx int32, valid_from, valid_until int64, names, vias: how each name was
        learned); an address's intervals are ``first .. first + count`` and oldest answer first."""
        if self._arrays is None:
            items = sorted(self._map.items())
            n = len(items)
            index: dict[str, int] = {}
            hi = np.fromiter((k[0] for k, _ in items), np.uint64, count=n)
            lo = np.fromiter((k[1] for k, _ in items), np.uint64, count=n)
            count = np.fromiter((len(v) for _, v in items), np.int64, count=n)
            first = np.zeros(n, np.int64)
            if n:
                np.cumsum(count[:-1], out=first[1:])
            ivs = [iv for _, v in items for iv in v]
            m = len(ivs)
            idx = np.fromiter((index.setdefault((iv[0], iv[4]), len(index)) for iv in ivs), np.int32, count=m)
            t0 = np.fromiter((iv[1] for iv in ivs), np.int64, count=m)
            t1 = np.fromiter((iv[2] for iv in ivs), np.int64, count=m)
            self._arrays = (hi, lo, first, count, idx, t0, t1, [k[0] for k in index], [k[1] for k in index])
        return self._arrays

    def attribute(self, hi: np.ndarray, lo: np.ndarray, t_ns: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
        """Per address: index into the returned names (and vias: how each was learned) of the
        name it resolved from at ``t_ns`` (the latest answer whose validity interval holds
        ``t_ns``), or -1."""
        khi, klo, first, count, idx, t0, t1, names, vias = self.arrays()
        n = np.asarray(hi).shape[0]
        out = np.full(n, -1, np.int32)
        if khi.size == 0 or n == 0:
            return out, names, vias
        pos = _ipset.exact_lookup(khi, klo, np.ascontiguousarray(hi, np.uint64),
                                  np.ascontiguousarray(lo, np.uint64), np.empty(n, np.int64))
        hit = pos >= 0
        p = np.where(hit, pos, 0)
        t = np.asarray(t_ns, np.int64)
        # oldest to newest interval of each address: a later match overwrites an earlier one
        for j in range(int(count.max())):
            has = hit & (j < count[p])
            k = np.where(has, first[p] + j, 0)
            ok = has & (t0[k] <= t) & (t <= t1[k])
            out[ok] = idx[k[ok]]
        return out, names, vias

    # ---------------------------------------------------------------------------- restart
    def to_state(self) -> dict:
        """The map as JSON-able data (addresses as text), for :meth:`load_state` after a restart."""
        return {"now_ns": self.now_ns,
                "entries": [[_ipset.key_text(h, w), ivs] for (h, w), ivs in self._map.items()],
                "aliases": [[a, n, until] for a, (n, until) in self._alias.items()]}

    def load_state(self, state: dict) -> int:
        """Merge a :meth:`to_state` snapshot into this map (bounds and expiry apply); returns the
        intervals taken.  Raises ValueError on a malformed snapshot, leaving the map unchanged.
        An interval of four values (a snapshot written before the map kept ``via``) is a DNS answer."""
        entries = state.get("entries") if isinstance(state, dict) else None
        now = state.get("now_ns") if isinstance(state, dict) else None
        if not isinstance(entries, list) or not isinstance(now, int):
            raise ValueError("dns map state: entries and now_ns required")
        parsed = []
        for e in entries:
            try:
                addr, ivs = e
                key = _ipset.addr_key(addr)
                for iv in ivs:
                    name, t0, t1, answered, via = iv if len(iv) == 5 else (*iv, "dns")
                    if not (isinstance(name, str) and via in VIAS
                            and all(isinstance(x, int) and not isinstance(x, bool) for x in (t0, t1, answered))):
                        raise TypeError
                    parsed.append((key, name, t0, t1, answered, via))
            except (TypeError, ValueError):
                raise ValueError("dns map state: bad entry") from None
        aliases = state.get("aliases", [])       # (a snapshot written before the map kept them: none)
        if not isinstance(aliases, list) or not all(
                isinstance(x, list) and len(x) == 3 and isinstance(x[0], str) and isinstance(x[1], str)
                and isinstance(x[2], int) and not isinstance(x[2], bool) for x in aliases):
            raise ValueError("dns map state: bad alias")
        for key, name, t0, t1, answered, via in parsed:
            self._add(key, name, t0, t1, answered, via)
        for a, n, until in aliases:
            self._alias.pop(a, None)
            self._alias[a] = (n, until)
        while len(self._alias) > self.max_aliases:
            self._alias.popitem(last=False)
        self.now_ns = max(self.now_ns, now)
        self._arrays = None
        self._expire()
        return len(parsed)


def _is_addr(s: str) -> bool:
    """An address literal, not a name (digits and dots alone are no host name: they are taken as an
    IPv4 address without parsing, which was a quarter of a DNS log's reading time)."""
    if ":" not in s:
        return bool(s) and not s.strip("0123456789.")
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False
