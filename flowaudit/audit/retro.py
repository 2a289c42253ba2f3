"""Retro-hunt: a flowaudit root's carried-over rows under today's watchlist.

A retro-hunt (``flowaudit audit ROOT --out NEW``) does not classify again: the payloads are not
kept, so hosts and markers inside messages cannot be looked for anew.  What it can do with the
rows it carries over:

* the flows' transfers are recomputed from the stored flows (the engine reads them as units), so
  the carried ones (``NETFLOW_DST`` / ``NETFLOW_SRC``) are dropped;
* with ``--dns``, the flows named through DNS (or a TLS server name, an HTTP Host) and the names
  seen themselves are recomputed from the logs given, so the carried ones are dropped too (kept,
  they were counted twice);
* every other carried transfer (a payload match, an interchange recipient, a DNS lookup or a flow
  it named, without ``--dns``) is kept only where today's watchlist still lists its indicator, a
  message's match with today's severity of its platform, a flow or lookup with today's zones of
  its addresses and the severity they give;
* today's EDI parties are matched against the carried hits of the interchange recipient class by
  their keyed hash (``value_hmac``, the same key: :func:`flowaudit.config.hmac_key`), the id as
  listed and in lower case: a party listed since the root was written is found in its messages.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..datasets import CHECKED, NAME_RULES
from ..detect.egress import BASE64_SHOWN, NAME_WHERE, _zone_of

FLOW_WHERE = ("NETFLOW_DST", "NETFLOW_SRC")     # transfers recomputed from the stored flows
RECIPIENT_CLASS = "edi_recipient_id"
_HITS_COLS = ["source", "partition", "offset", "ts_ms", "data_class", "location", "value_hmac"]


class Retro:
    """One retro-hunt's view of the carried rows: :meth:`keep` filters each carried transfers
    file (and remembers the interchange recipients it keeps), :meth:`add_hits` notes each carried
    hits file, :meth:`write_parties` writes today's EDI parties found in them."""

    def __init__(self, detector, key: bytes, dns_given: bool):
        from ..protect import Protector

        self.det = detector
        self.wl = detector.watchlist
        self.dns_given = dns_given
        self.listed = {(ind.type, f"{ind.key}={ind.value}" if ind.type == "party_code" else ind.value)
                       for ind in self.wl.indicators}
        p = Protector(key)
        self.digests: dict[bytes, int] = {}
        for pid, ind in sorted(self.wl.edi_parties.items()):     # upper-case id -> indicator id
            for form in (pid, pid.lower()):
                self.digests.setdefault(p.hmac(form.encode("utf-8")), ind)
        self.kept: set = set()          # (source, partition, offset, indicator, seen_where) kept
        self.hits_files: list[Path] = []
        self.dropped = 0

    def keep(self, t: pa.Table) -> pa.Table:
        """The rows of a carried transfers table that stand under today's watchlist."""
        where = pc.cast(t.column("seen_where"), pa.string())
        drop = pc.is_in(where, value_set=pa.array(list(FLOW_WHERE)))
        if self.dns_given:
            from_dns = pc.or_(pc.is_in(pc.cast(t.column("rule"), pa.string()), value_set=pa.array(list(NAME_RULES))),
                              pc.and_(pc.is_in(where, value_set=pa.array(list(NAME_WHERE))),
                                      pc.is_valid(t.column("bytes"))))
            drop = pc.or_(drop, from_dns)
        itype = pc.cast(t.column("indicator_type"), pa.string()).to_pylist()
        ind = t.column("indicator").to_pylist()
        rule = pc.cast(t.column("rule"), pa.string()).to_pylist()
        unlisted = [(r == "watchlist" or r in NAME_RULES) and not self.still_listed(ty, v)
                    for r, ty, v in zip(rule, itype, ind)]
        drop = pc.or_(pc.fill_null(drop, False), pa.array(unlisted, pa.bool_()))
        kept = t.filter(pc.invert(drop))
        self.dropped += t.num_rows - kept.num_rows
        if kept.num_rows:
            kept = self._today(kept)
            k = kept.select(["source", "partition", "offset", "indicator", "seen_where"]).to_pydict()
            self.kept.update(zip(*(map(str, k["source"]), k["partition"], k["offset"], k["indicator"],
                                   map(str, k["seen_where"]))))
        return kept

    def _today(self, kept: pa.Table) -> pa.Table:
        """Kept watchlist rows as today's watchlist and policy grade them: a message's match takes
        its platform's severity; a flow named through DNS and a DNS lookup kept without ``--dns``
        take today's zones of their addresses and the severity the egress detector gives (the zone
        kind of the port's side; ``info`` where that zone may reach the platform).  The port's
        side of a lookup is its client; of a flow, its source unless the source is on the internet
        (a reply from the named host).  Policy rows and the rest stay as they were."""
        pol = self.det.policy
        cols = {c: pc.cast(kept.column(c), pa.string()).to_pylist()
                for c in ("platform", "rule", "severity", "src_addr", "dst_addr", "src_zone", "dst_zone")}
        internet = pol.n_zones + 1
        zone_of = {}

        def zone(addr):
            if addr not in zone_of:
                zone_of[addr] = _zone_of(pol, addr)
            return zone_of[addr]

        for k, (p, ru, src, dst) in enumerate(zip(cols["platform"], cols["rule"], cols["src_addr"], cols["dst_addr"])):
            if p is None or (ru != "watchlist" and ru not in NAME_RULES):
                continue
            if src is None:                               # a message's match
                cols["severity"][k] = self.wl.severity_for(p, None)
                continue
            sz, dz = zone(src), zone(dst)
            own = dz if (ru == "watchlist" and sz == internet and dz is not None) else sz
            s = self.wl.severity_for(p, pol.zone_kind_name(own) if own is not None else None)
            if own is not None and p in pol.allowed_platforms.get(own, ()):
                s = "info"
            cols["severity"][k] = s
            if sz is not None:
                cols["src_zone"][k] = pol.zone_names[sz]
            if dz is not None:
                cols["dst_zone"][k] = pol.zone_names[dz]
        for c in ("severity", "src_zone", "dst_zone"):
            i = kept.schema.get_field_index(c)
            f = kept.schema.field(i)
            kept = kept.set_column(i, f, pa.array(cols[c], pa.string()).dictionary_encode().cast(f.type))
        return kept

    def still_listed(self, itype: str | None, shown: str | None) -> bool:
        """Whether today's watchlist names what a carried row shows as its indicator: the value
        (``key=value`` for a party code; `` (base64)`` after it for a match of its base64 alias),
        or a host name that today's exact host, host pattern or registered domain of that type
        matches (DNS rows and host patterns show the name itself)."""
        if itype is None or shown is None:
            return True                 # nothing to judge it by: carried over as it is
        if shown.endswith(BASE64_SHOWN):
            shown = shown[:-len(BASE64_SHOWN)]
        if (itype, shown) in self.listed:
            return True
        if itype in ("host", "domain", "host_pattern"):
            i = self.wl.match_host(shown)
            return i >= 0 and self.wl.indicators[i].type == itype
        return False

    def add_hits(self, path: Path) -> None:
        self.hits_files.append(Path(path))

    def matches(self, spec) -> tuple[list, dict]:
        """(message rows, provenance) of today's EDI parties in the carried recipient hits, each
        message's recipient once per place (as the stream finds them), minus those kept already."""
        from ..pipeline import _recipient_where
        from .work import _in_range

        rows, prov = [], {"source": [], "partition": [], "offset": [], "ts_ms": []}
        if not self.digests:
            return rows, prov
        for f in sorted(self.hits_files):
            t = pq.read_table(f, columns=_HITS_COLS, **CHECKED)
            t = t.filter(pc.equal(pc.cast(t.column("data_class"), pa.string()), RECIPIENT_CLASS))
            if not t.num_rows:
                continue
            t = t.filter(pc.is_in(t.column("value_hmac"), value_set=pa.array(list(self.digests), pa.binary(32))))
            ts = np.asarray(t.column("ts_ms").fill_null(-1).to_numpy(zero_copy_only=False), np.int64)
            keep = _in_range(ts, spec)
            if keep is not None:
                t, ts = t.filter(pa.array(keep)), ts[keep]
            for r, tms in zip(t.to_pylist(), ts.tolist()):
                i = self.digests[r["value_hmac"]]
                where = _recipient_where(r["location"])
                k = (str(r["source"]), r["partition"], r["offset"], self.wl.indicators[i].value, where)
                if k in self.kept:
                    continue
                self.kept.add(k)
                rows.append((len(prov["source"]), i, where, self.wl.indicators[i].value))
                for c, v in zip(("source", "partition", "offset"), k[:3]):
                    prov[c].append(v)
                prov["ts_ms"].append(tms)
        return rows, prov

    def write_parties(self, out: Path, spec) -> int:
        """Write the EDI-party transfers found in the carried hits (a file per hour, named by what
        they were found in, so a re-run writes the same files); returns their count."""
        from .work import write_tables

        rows, prov = self.matches(spec)
        if not rows:
            return 0
        names = sorted(set(prov["source"]))
        idx = {n: i for i, n in enumerate(names)}
        ts = np.asarray(prov["ts_ms"], np.int64)
        t = self.det.message_transfers(self.wl, rows, sources=names,
                                       source_idx=np.asarray([idx[s] for s in prov["source"]], np.int32),
                                       partition=np.asarray(prov["partition"], np.int32),
                                       offset=np.asarray(prov["offset"], np.int64), ts_ms=ts)
        h = hashlib.sha256()
        for f in sorted(self.hits_files):
            h.update(str(f.relative_to(out)).encode() + b"\0")
        h.update(self.wl.version.encode())
        write_tables(out, f"audit-retro-edi-parties-{h.hexdigest()[:16]}", {"transfers": (t, ts)}, spec)
        return len(rows)
