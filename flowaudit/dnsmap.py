"""DNS attribution: a bounded, TTL-respecting IP -> name map fed by Zeek ``dns.log`` JSON lines.

A flow to an address that recently resolved from ``gateway.logink.cn`` is attributed to LOGINK
even though no IP is configured.  Time is **record time** (the ``ts`` of the DNS answers, the
flow's start time), never the wall clock, so a replayed capture attributes as the live one did.

* An answer (A/AAAA address in ``answers``, TTL in ``TTLs`` at the same position) for query
  ``q`` maps the address to ``q`` from ``ts - skew`` to ``ts + ttl`` (TTL clamped to
  ``[min_ttl, max_ttl]``).  A CNAME chain (names in ``answers``) is kept: when a CNAME in the
  chain, rather than the query, is the watched name, that name is stored.
* ``keep``: an optional predicate over names; only matching names are stored (the egress
  detector passes its watchlist), so unrelated lookups can never evict the ones that matter.
* Bounded: at most ``max_entries`` addresses, least recently *answered* evicted first; expired
  entries are dropped as record time moves on (``now`` = the latest answer time seen).

:meth:`DnsMap.arrays` exposes the live map as sorted (hi, lo) uint64 keys for the join kernel
(:func:`flowaudit.kernels.ipset.exact_lookup`); :meth:`DnsMap.attribute` does the join.
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

NS = 1_000_000_000


@dataclass
class DnsAnswer:
    ts_ns: int
    client: str | None
    query: str
    name: str            # the name stored (query, or the watched CNAME)
    addr: str
    ttl_s: float


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


class DnsMap:
    def __init__(self, max_entries: int = 100_000, *, keep: Callable[[str], bool] | None = None,
                 min_ttl_s: float = 0.0, max_ttl_s: float = 86_400.0, skew_s: float = 5.0,
                 default_ttl_s: float = 300.0):
        if max_entries < 1:
            raise ValueError("dnsmap: max_entries must be >= 1")
        self.max_entries = int(max_entries)
        self.keep = keep
        self.min_ttl_ns = int(min_ttl_s * NS)
        self.max_ttl_ns = int(max_ttl_s * NS)
        self.skew_ns = int(skew_s * NS)
        self.default_ttl_ns = int(default_ttl_s * NS)
        # (hi, lo) -> (name, valid_from_ns, valid_until_ns); order = least recently answered first
        self._map: OrderedDict[tuple[int, int], tuple[str, int, int]] = OrderedDict()
        self.now_ns = 0
        self.stats = {"lines": 0, "bad_lines": 0, "answers": 0, "stored": 0, "evicted": 0, "expired": 0}
        self._arrays = None

    def __len__(self) -> int:
        return len(self._map)

    # ---------------------------------------------------------------------------- input
    def observe_lines(self, lines: Iterable[bytes | str]) -> list[DnsAnswer]:
        """Consume Zeek dns.log JSON lines (file lines or Kafka message values).

        Returns the stored answers (for the DNS_ANSWER rows); malformed lines are counted in
        ``stats['bad_lines']`` and skipped.
        """
        stored: list[DnsAnswer] = []
        for line in lines:
            if line is None:
                continue
            if isinstance(line, str):
                line = line.encode()
            line = line.strip()
            if not line or line.startswith(b"#"):
                continue
            self.stats["lines"] += 1
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                self.stats["bad_lines"] += 1
                continue
            if not isinstance(rec, dict):
                self.stats["bad_lines"] += 1
                continue
            self._observe(rec, stored)
        self._expire()
        return stored

    def observe_file(self, path: str | Path) -> list[DnsAnswer]:
        with open(path, "rb") as f:
            return self.observe_lines(f)

    def _observe(self, rec: dict, stored: list) -> None:
        ts = _ts_ns(rec.get("ts"))
        query = rec.get("query")
        answers = rec.get("answers")
        if ts is None or not isinstance(query, str) or not isinstance(answers, list):
            if ts is None or not isinstance(query, str):
                self.stats["bad_lines"] += 1
            return
        ttls = rec.get("TTLs")
        if not isinstance(ttls, list):
            ttls = []
        if rec.get("rcode_name") not in (None, "NOERROR"):
            return
        self.now_ns = max(self.now_ns, ts)
        names = [query] + [a for a in answers if isinstance(a, str) and not _is_addr(a)]
        name = None
        for n in names:
            if self.keep is None or self.keep(n):
                name = n.rstrip(".").lower()
                break
        if name is None:
            return
        client = rec.get("id.orig_h")
        for i, a in enumerate(answers):
            if not isinstance(a, str):
                continue
            try:
                hi, lo = _ipset.addr_key(a)
            except ValueError:
                continue
            self.stats["answers"] += 1
            ttl = ttls[i] if i < len(ttls) and isinstance(ttls[i], (int, float)) else None
            # clamped in seconds first, so that a huge TTL cannot overflow the ns arithmetic
            ttl_ns = self.default_ttl_ns if ttl is None else int(min(max(float(ttl), 0.0), 1e10) * NS)
            ttl_ns = min(max(ttl_ns, self.min_ttl_ns), self.max_ttl_ns)
            key = (hi, lo)
            self._map.pop(key, None)
            self._map[key] = (name, ts - self.skew_ns, ts + ttl_ns)
            self.stats["stored"] += 1
            stored.append(DnsAnswer(ts, client if isinstance(client, str) else None, query, name, a, ttl_ns / NS))
            while len(self._map) > self.max_entries:
                self._map.popitem(last=False)
                self.stats["evicted"] += 1
        self._arrays = None

    def _expire(self) -> None:
        """Drop entries whose TTL ended before the latest answer time (record time)."""
        dead = [k for k, (_, _, until) in self._map.items() if until < self.now_ns]
        for k in dead:
            del self._map[k]
        if dead:
            self.stats["expired"] += len(dead)
            self._arrays = None

    # ---------------------------------------------------------------------------- output
    def get(self, addr: str, t_ns: int) -> str | None:
        """The name ``addr`` resolved from at record time ``t_ns`` (None if none or expired)."""
        e = self._map.get(_ipset.addr_key(addr))
        if e is None or not (e[1] <= t_ns <= e[2]):
            return None
        return e[0]

    def arrays(self):
        """(keys_hi, keys_lo, name_idx int32, valid_from, valid_until int64, names) sorted by key."""
        if self._arrays is None:
            items = sorted(self._map.items())
            n = len(items)
            names: list[str] = []
            index: dict[str, int] = {}
            hi = np.fromiter((k[0] for k, _ in items), np.uint64, count=n)
            lo = np.fromiter((k[1] for k, _ in items), np.uint64, count=n)
            idx = np.fromiter((index.setdefault(v[0], len(index)) for _, v in items), np.int32, count=n)
            names = list(index)
            t0 = np.fromiter((v[1] for _, v in items), np.int64, count=n)
            t1 = np.fromiter((v[2] for _, v in items), np.int64, count=n)
            self._arrays = (hi, lo, idx, t0, t1, names)
        return self._arrays

    def attribute(self, hi: np.ndarray, lo: np.ndarray, t_ns: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Per address: index into the returned names of the name it resolved from at ``t_ns``, or -1."""
        khi, klo, idx, t0, t1, names = self.arrays()
        n = np.asarray(hi).shape[0]
        if khi.size == 0 or n == 0:
            return np.full(n, -1, np.int32), names
        pos = _ipset.exact_lookup(khi, klo, np.ascontiguousarray(hi, np.uint64),
                                  np.ascontiguousarray(lo, np.uint64), np.empty(n, np.int64))
        hit = pos >= 0
        p = np.where(hit, pos, 0)
        t = np.asarray(t_ns, np.int64)
        ok = hit & (t0[p] <= t) & (t <= t1[p])
        return np.where(ok, idx[p], -1).astype(np.int32), names


def _is_addr(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False
