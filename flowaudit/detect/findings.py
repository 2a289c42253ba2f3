"""Findings: which sensitive data reached which platform (or left which zone), from which host or
application, when, how much, and on what evidence.  One row per *exposure*: platform or policy
rule x source entity x event-time window (the ``findings`` dataset, :data:`FINDINGS`).

:func:`correlate` is the core: a pure function over Arrow tables of ``transfers``, ``hits`` and
(optionally) ``messages``, deterministic for the same input.  The stream calls it once per
event-time window (``window_start_ns``) with that window's rows plus a look-back of hits, and the
previous window's findings (``previous``) so that an exposure that stopped is re-emitted as
``closed`` under the same ``finding_id``.  ``flowaudit findings ROOT`` calls it over every
window of the datasets already written.

Correlation rules (README, "Findings"):

* **message-borne** (``observed``): a message that is itself a transfer (a JSON query to a
  LOGINK API path, a payload with a LOGINK marker, an EDI interchange addressed to a watchlisted
  recipient; ``seen_where`` PAYLOAD / XML_ELEMENT / JSON_PATH / EDI_UNB / X12_ISA / X12_GS)
  exposes every class hit in that message -- for EDI, in its whole interchange (one Kafka
  message).  The entity is the inventory application that produces the topic (``app:NAME``),
  else the topic (``topic:NAME``).
* **flow-borne** (``inferred``): a flow or DNS-attributed transfer from host H to platform P
  in window W exposes what H handles: the classes and distinct values seen on the topics of H's
  applications (the application inventory) in W plus the look-back.  Without an inventory
  entry the finding still names host, platform and bytes, and lists no classes (``none``).
* **zone policy**: remote-access or OT protocols across a zone boundary, crane or scanner flows
  to or from the internet, silent zones: the finding names the asset (the side in an OT or
  scanner zone; the source otherwise) and the rule.

DNS answers alone (rule ``dns_lookup``), and the TLS server names and HTTP Hosts that name an
address (rule ``name_seen``), are not findings; the flows attributed through them are.
Rows without any event time fall into the window [0, 0) ("unknown time").
"""
from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ..datasets import CHECKED, FINDINGS, HITS, NAME_RULES, SCHEMA_VERSION, checked_parquet
from . import severity as _sev
from .inventory import Inventory
from .inventory import load as load_inventory

MESSAGE_WHERE = ("PAYLOAD", "XML_ELEMENT", "JSON_PATH", "EDI_UNB", "X12_ISA", "X12_GS")
NOT_FINDINGS = NAME_RULES
STATUSES = ("new", "ongoing", "closed")
MAX_SAMPLES = 15
MAX_LIST = 20
HOUR_NS = 3600 * 1_000_000_000
SEV_RANK = {s: i for i, s in enumerate(_sev.LEVELS)}
SENS_RANK = {"low": 1, "medium": 2, "high": 3}
_SENS_NAME = {v: k for k, v in SENS_RANK.items()}
_OT_RULES = ("ot_zone_to_internet", "internet_to_ot_zone")
_OT_KINDS = ("ot", "scanner")
KEY = ["platform", "rule", "entity", "window_start"]

# columns read by name (a column another version adds is ignored; one it lacks reads as null)
_T_COLS = {"source": pl.Utf8, "partition": pl.Int32, "offset": pl.Int64, "ts_ms": pl.Int64, "time_ns": pl.Int64,
           "src_addr": pl.Utf8, "dst_addr": pl.Utf8, "bytes": pl.UInt64, "bytes_scaled": pl.UInt64,
           "platform": pl.Utf8, "indicator": pl.Utf8, "seen_where": pl.Utf8, "src_zone": pl.Utf8,
           "dst_zone": pl.Utf8, "rule": pl.Utf8, "severity": pl.Utf8, "watchlist_version": pl.Utf8,
           "policy_version": pl.Utf8}
_H_COLS = {"source": pl.Utf8, "partition": pl.Int32, "offset": pl.Int64, "ts_ms": pl.Int64, "msg_index": pl.Int32,
           "data_class": pl.Utf8, "sensitivity": pl.Utf8, "location": pl.Utf8, "value_masked": pl.Utf8,
           "value_hmac": pl.Binary, "byte_start": pl.Int64, "catalog_version": pl.Utf8}
_M_COLS = {"source": pl.Utf8, "partition": pl.Int32, "offset": pl.Int64, "bytes": pl.Int64}
_SAMPLE_FIELDS = ["source", "partition", "offset", "msg_index", "data_class", "location", "value_masked",
                  "value_hmac"]


# ------------------------------------------------------------------------------ input
def _in_memory() -> dict:
    """Polars' in-memory engine for the small queries here (the default may pick the streaming
    one, whose start-up costs more than these frames take); older versions have no choice."""
    try:
        pl.LazyFrame({"a": [1]}).collect(engine="in-memory")
    except Exception:  # noqa: BLE001 - an older polars: its default engine
        return {}
    return {"engine": "in-memory"}


_ENGINE = _in_memory()


def _collect(lf: pl.LazyFrame) -> pl.DataFrame:
    return lf.collect(**_ENGINE)


def _frame(table: pa.Table | None, cols: dict, lazy: bool = False) -> pl.DataFrame | pl.LazyFrame:
    """The named columns of an Arrow table as a polars frame (dictionaries decoded, missing = null);
    ``lazy``: a LazyFrame, so that the caller's next steps run in the same query."""
    n = 0 if table is None else table.num_rows
    if n == 0:
        out = pl.DataFrame(schema=cols)
        return out.lazy() if lazy else out
    present = _plain(table, [c for c in cols if c in table.column_names])
    arrays = {c: present.column(c) if c in present.column_names else pa.nulls(n) for c in cols}
    out = pl.from_arrow(pa.table(arrays)).lazy().with_columns([pl.col(c).cast(t) for c, t in cols.items()])
    return out if lazy else _collect(out)


# ------------------------------------------------------------------------------ the core
def correlate(transfers: pa.Table, hits: pa.Table | None, messages: pa.Table | None = None, *,
              window_ns: int = HOUR_NS, lookback_ns: int = 0, window_start_ns: int | None = None,
              inventory: Inventory | None = None, model: _sev.SeverityModel | None = None,
              previous: pa.Table | None = None, watermark_ns: int | None = None) -> pa.Table:
    """Findings (:data:`FINDINGS` rows) of the transfers, hits and messages given.

    ``window_ns``: event-time window length.  ``window_start_ns``: correlate only the transfers
    of the window [start, start + window_ns) (the stream's per-window call); None: every window
    the transfers touch.  Hits are the evidence: message-borne findings take the hits of the
    exposing messages whatever their time; flow-borne findings take the hits of the host's
    inventory topics whose record time is in [window start - ``lookback_ns``, window end).
    ``previous``: findings of earlier windows -- a series (platform, rule, entity) present in
    the window just before is ``ongoing``, and a previous finding whose series does not go on
    in the next complete window is returned again as ``closed`` (same ``finding_id``).
    ``watermark_ns``: how far event time is complete (default: the end of ``window_start_ns``'s
    window, else the latest transfer or hit time).  Deterministic for the same input.
    """
    if window_ns <= 0 or lookback_ns < 0:
        raise ValueError("window_ns must be > 0 and lookback_ns >= 0")
    inventory = inventory or Inventory()
    model = model or _sev.load()
    T = _transfer_frame(transfers, window_ns, window_start_ns)
    if T.height == 0 and (previous is None or previous.num_rows == 0):
        return FINDINGS.empty_table()
    H = _Hits(hits)
    if watermark_ns is None:
        if window_start_ns is not None:
            watermark_ns = window_start_ns + window_ns
        else:
            watermark_ns = max([x for x in (T["t"].max(), H.codes["t"].max()) if x is not None], default=0)
    return finish(_assessed(T, H, messages, window_ns, lookback_ns, inventory, model), previous,
                  window_ns=window_ns, watermark_ns=watermark_ns, model=model)


def assessed(transfers: pa.Table, hits: pa.Table | None, messages: pa.Table | None = None, *,
             window_ns: int, lookback_ns: int = 0, inventory: Inventory | None = None,
             model: _sev.SeverityModel | None = None) -> list[dict]:
    """The first half of :func:`correlate`, which needs no other window: the assessed findings
    of these transfers and their evidence, before their status (:func:`finish` adds it, with the
    window before).  Windows can run it side by side."""
    T = _transfer_frame(transfers, window_ns, None)
    if T.height == 0:
        return []
    return _assessed(T, _Hits(hits), messages, window_ns, lookback_ns, inventory or Inventory(),
                     model or _sev.load())


def finish(rows: list[dict], previous: pa.Table | None, *, window_ns: int, watermark_ns: int,
           model: _sev.SeverityModel | None = None) -> pa.Table:
    """The second half of :func:`correlate`: status from the window before (``previous``), rows."""
    return _to_arrow(_status(rows, previous, window_ns, watermark_ns), model or _sev.load())


def _transfer_frame(transfers: pa.Table, window_ns: int, window_start_ns: int | None) -> pl.DataFrame:
    T = _frame(transfers, _T_COLS, lazy=True).filter(~pl.col("rule").is_in(NOT_FINDINGS))
    T = T.with_columns(t=pl.coalesce(pl.col("time_ns"), pl.col("ts_ms") * 1_000_000))
    if window_start_ns is not None:
        T = T.filter((pl.col("t") >= window_start_ns) & (pl.col("t") < window_start_ns + window_ns))
    return _collect(T)


def _assessed(T: pl.DataFrame, H: _Hits, messages, window_ns: int, lookback_ns: int, inventory: Inventory,
              model: _sev.SeverityModel) -> list[dict]:
    T = _classify_rows(T, window_ns, inventory)
    rows = _aggregate(T, H, messages, window_ns, lookback_ns) if T.height else []
    return _assess(rows, model, inventory)


def _classify_rows(T: pl.DataFrame, window_ns: int, inv: Inventory) -> pl.DataFrame:
    """Per transfer row: window, correlation kind, the port-side host and zone, application, topics."""
    # applications: per distinct address and per distinct topic (a handful), never per row; every
    # address and topic of the rows, so that the rest is one query
    addrs = [a for a in pl.concat([T["src_addr"], T["dst_addr"]]).unique().to_list() if a]
    apps = [inv.apps_for_host(a) for a in addrs]
    host_apps = pl.DataFrame({"host": addrs, "h_app": [",".join(x.name for x in a) or None for a in apps],
                              "h_topics": [sorted({t for x in a for t in x.topics}) for a in apps]},
                             schema={"host": pl.Utf8, "h_app": pl.Utf8, "h_topics": pl.List(pl.Utf8)})
    topics = [s for s in T["source"].unique().to_list() if s]
    topic_apps = pl.DataFrame({"source": topics,
                               "t_app": [",".join(a.name for a in inv.apps_for_topic(s)) or None for s in topics]},
                              schema={"source": pl.Utf8, "t_app": pl.Utf8})
    ws = pl.when(pl.col("t").is_null()).then(0).otherwise(pl.col("t") - pl.col("t") % window_ns)
    sk = pl.col("src_zone").replace_strict(inv.zone_kinds, default=None, return_dtype=pl.Utf8)
    dk = pl.col("dst_zone").replace_strict(inv.zone_kinds, default=None, return_dtype=pl.Utf8)
    dst_side = (pl.when(pl.col("correlation") == "flow_borne").then(pl.col("seen_where") == "NETFLOW_SRC")
                .when(pl.col("correlation") == "zone_policy")
                .then((pl.col("rule") == "internet_to_ot_zone") | (dk.is_in(_OT_KINDS) & ~sk.is_in(_OT_KINDS).fill_null(False)))
                .otherwise(False)).fill_null(False)
    msg = pl.col("correlation") == "message_borne"
    app = pl.when(msg).then(pl.col("t_app")).otherwise(pl.col("h_app"))
    return (T.lazy()
            .with_columns(window_start=ws.cast(pl.Int64),
                          window_end=pl.when(pl.col("t").is_null()).then(0).otherwise(ws + window_ns).cast(pl.Int64),
                          correlation=pl.when(pl.col("seen_where").is_in(MESSAGE_WHERE)).then(pl.lit("message_borne"))
                          .when(pl.col("platform") == "policy").then(pl.lit("zone_policy"))
                          .otherwise(pl.lit("flow_borne")))
            .with_columns(
                host=pl.when(msg).then(None).when(dst_side).then(pl.col("dst_addr")).otherwise(pl.col("src_addr")),
                zone=pl.when(msg).then(None).when(dst_side).then(pl.col("dst_zone")).otherwise(pl.col("src_zone")),
                dest=pl.when(msg).then(None).when(dst_side).then(pl.col("src_addr")).otherwise(pl.col("dst_addr")))
            .join(host_apps.lazy(), on="host", how="left").join(topic_apps.lazy(), on="source", how="left")
            .with_columns(
                application=app,
                entity=pl.when(msg & pl.col("t_app").is_not_null()).then(pl.lit("app:") + pl.col("t_app"))
                .when(msg).then(pl.lit("topic:") + pl.col("source").fill_null("-"))
                .otherwise(pl.col("host").fill_null("-")),
                topics_row=pl.when(msg).then(pl.concat_list(pl.col("source")))
                .when(pl.col("correlation") == "flow_borne").then(pl.col("h_topics"))
                .otherwise(pl.lit([], dtype=pl.List(pl.Utf8))),
                sev_rank=pl.col("severity").replace_strict(SEV_RANK, default=0, return_dtype=pl.Int32))
            .pipe(_collect))


def _hmac_ids(col: pa.ChunkedArray) -> np.ndarray:
    """int64 per row: the first eight bytes of its HMAC-SHA256, which identify the value for the
    distinct-value counts without hashing or unifying 32-byte dictionaries across files (read back
    from Parquet the column is plain, 32 bytes a row).  Two distinct values share them with
    probability about n^2 / 2^65: about 2e-5 for 25 M distinct values."""
    out = []
    for ch in col.chunks:
        if not len(ch):
            continue
        coded = pa.types.is_dictionary(ch.type)
        d = ch.dictionary if coded else ch
        if d.null_count:
            d = d.fill_null(b"\0" * 32)
        width = d.type.byte_width
        raw = np.frombuffer(d.buffers()[1], np.uint8)[d.offset * width:(d.offset + len(d)) * width]
        ids = raw.reshape(len(d), width)[:, :8].copy().view("<i8").ravel()
        out.append(ids[ch.indices.fill_null(0).to_numpy()] if coded else ids)
    return np.concatenate(out) if out else np.zeros(0, np.int64)


class _Hits:
    """The hits as integer codes (dictionaries unified once): the joins and counts run on int32
    columns; the strings of the few sample rows are taken from the Arrow table at the end.

    Topic and class codes follow the names' sorted order, whatever order the input's dictionaries
    have (storage read-back, memory, files listed in any order): samples, which are ordered by
    topic and tie-broken by class, are then the same for the same rows."""

    def __init__(self, hits: pa.Table | None):
        cols = ["source", "partition", "offset", "ts_ms", "msg_index", "data_class", "sensitivity", "location",
                "value_masked", "value_hmac", "byte_start", "catalog_version"]
        if hits is None or hits.num_rows == 0:
            hits = HITS.empty_table()
        t = hits.select(cols)
        self.table = t           # the sample rows' strings are taken from here at the end
        n = t.num_rows
        # only the coded columns are unified (the masked values and locations are never compared)
        coded = {}
        for name in ("source", "data_class", "sensitivity", "catalog_version"):
            col = t.column(name)
            coded[name] = col if pa.types.is_dictionary(col.type) else col.dictionary_encode()
        u = pa.table(coded).unify_dictionaries()

        def codes(name) -> np.ndarray:
            col = u.column(name)
            if not n:
                return np.zeros(0, np.int32)
            return np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in col.chunks if len(c)]) \
                .astype(np.int32, copy=False)

        def names(name):
            col = u.column(name)
            return col.chunk(0).dictionary.to_pylist() if col.num_chunks else []

        def sorted_codes(name):
            """(codes in the sorted order of the names, the names in that order)."""
            d = names(name)
            order = sorted(range(len(d)), key=lambda i: (d[i] is None, d[i] or ""))
            if order == list(range(len(d))):
                return codes(name), d
            rank = np.empty(len(d), np.int32)
            rank[order] = np.arange(len(d), dtype=np.int32)
            return rank[codes(name)], [d[i] for i in order]

        src, self.source_names = sorted_codes("source")
        cls, self.class_names = sorted_codes("data_class")
        self.sens_names = names("sensitivity")
        self.cv_names = names("catalog_version")     # a finding names those of its own evidence
        srank = np.asarray([SENS_RANK.get(x, 0) for x in self.sens_names] + [0], np.int32)
        sens_c = codes("sensitivity")
        ts = t.column("ts_ms")
        self.codes = pl.DataFrame({
            "src": pl.Series(src, dtype=pl.Int32),
            "partition": pl.Series(t.column("partition").to_numpy(), dtype=pl.Int32),
            "offset": pl.Series(t.column("offset").to_numpy(), dtype=pl.Int64),
            "t": pl.from_arrow(pc.multiply(ts, 1_000_000)) if n else pl.Series([], dtype=pl.Int64),
            "msg_index": pl.Series(t.column("msg_index").to_numpy(), dtype=pl.Int32),
            "cls": pl.Series(cls, dtype=pl.Int32),
            "srank": pl.Series(srank[sens_c], dtype=pl.Int32),
            "hmac": pl.Series(_hmac_ids(t.column("value_hmac")), dtype=pl.Int64),
            "byte_start": pl.Series(t.column("byte_start").to_numpy(), dtype=pl.Int64),
            "cv": pl.Series(codes("catalog_version"), dtype=pl.Int32),
            "row": pl.Series(np.arange(n, dtype=np.int64)),
        }).with_columns(pl.col("t").cast(pl.Int64))

    def take_plain(self, rows: np.ndarray, cols: list[str]) -> pa.Table:
        """Rows ``rows`` of columns ``cols``, dictionaries decoded (see :func:`_plain`), taken chunk
        by chunk: a take across chunks would first unify their dictionaries (every distinct masked
        value of every batch) for a few sample rows."""
        t = self.table
        rows = np.asarray(rows, np.int64)
        whole = pa.array(rows, pa.int64())
        out = {}
        for name in cols:
            col = t.column(name)
            if col.num_chunks <= 1 or not pa.types.is_dictionary(col.type) or not len(rows):
                out[name] = col.take(whole)
                continue
            bounds = np.cumsum([0] + [len(c) for c in col.chunks])
            which = np.searchsorted(bounds, rows, side="right") - 1
            order = np.argsort(which, kind="stable")
            parts = [col.chunk(int(k)).take(pa.array(rows[order][which[order] == k] - bounds[k], pa.int64()))
                     .dictionary_decode() for k in np.unique(which)]
            out[name] = pa.concat_arrays(parts).take(pa.array(np.argsort(order), pa.int64()))
        return _plain(pa.table(out), cols)

    def source_code(self, expr: pl.Expr) -> pl.Expr:
        return expr.replace_strict({n: i for i, n in enumerate(self.source_names)}, default=-1, return_dtype=pl.Int32)


_SAMPLE_BY = ["srank_neg", "src", "partition", "offset", "msg_index", "byte_start", "cls"]
_HCOLS = ["src", "partition", "offset", "msg_index", "cls", "srank", "hmac", "byte_start", "row"]


def _top_samples(df: pl.DataFrame | pl.LazyFrame, by: list[str]) -> pl.DataFrame | pl.LazyFrame:
    """At most MAX_SAMPLES hits per group ``by``: most sensitive first, then by topic and position
    (a LazyFrame in, per group, a LazyFrame out)."""
    if by:
        rest = [c for c in _HCOLS if c not in by]
        return (df.with_columns(srank_neg=-pl.col("srank")).sort(by + _SAMPLE_BY).group_by(by, maintain_order=True)
                .head(MAX_SAMPLES).select(by + rest))
    if df.height == 0:
        return df.select(_HCOLS)
    df = df.select(_HCOLS)[_candidates(df)]
    return df.with_columns(srank_neg=-pl.col("srank")).sort(_SAMPLE_BY).head(MAX_SAMPLES).select(_HCOLS)


def _candidates(df: pl.DataFrame) -> np.ndarray:
    """Rows that can be among the first MAX_SAMPLES (a superset, without sorting everything): per
    sensitivity level, most sensitive first, the hits of the first messages by (topic, partition, offset)."""
    sr = df["srank"].to_numpy()
    key = ((df["src"].to_numpy().astype(np.int64) << 56) | (df["partition"].to_numpy().astype(np.int64) << 40)
           | df["offset"].to_numpy().astype(np.int64))
    out, need = [], MAX_SAMPLES
    for level in np.unique(sr)[::-1]:
        idx = np.flatnonzero(sr == level)
        if idx.size > need:
            k = key[idx]
            idx = idx[k <= np.partition(k, need - 1)[need - 1]]
        out.append(idx)
        need -= min(need, idx.size)
        if need == 0:
            break
    return np.sort(np.concatenate(out))


def _class_stats(df: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    return df.group_by(by + ["cls", "srank"]).agg(occurrences=pl.len(), distinct_values=pl.col("hmac").n_unique())


def _aggregate(T: pl.DataFrame, H: _Hits, messages: pa.Table | None, window_ns: int,
               lookback_ns: int) -> list[dict]:
    """Transfers, observed and inferred hits -> one dict per finding (before severity).  The steps
    are lazy queries, run together where nothing in between needs their result."""
    def uniq_list(expr, limit=MAX_LIST):
        return expr.drop_nulls().filter(expr.drop_nulls() != "").unique().sort().head(limit)

    TL = T.lazy()
    agg = TL.group_by(KEY).agg(
        pl.col("window_end").first(), pl.col("correlation").first(), pl.col("host").first(),
        pl.col("zone").drop_nulls().first(), pl.col("application").drop_nulls().first(),
        first_seen=pl.col("t").min(), last_seen=pl.col("t").max(),
        indicators=uniq_list(pl.col("indicator")), seen_where=uniq_list(pl.col("seen_where")),
        destinations=uniq_list(pl.col("dest")),
        topics=pl.col("topics_row").list.explode(keep_nulls=False, empty_as_null=False).unique().sort(),
        f_bytes=pl.col("bytes").sum(), f_bytes_scaled=pl.col("bytes_scaled").sum(),
        has_bytes=pl.col("bytes").is_not_null().any(), flows=pl.col("bytes").is_not_null().sum(),
        sev_rank=pl.col("sev_rank").max(),
        watchlist_version=pl.col("watchlist_version").drop_nulls().unique().sort().str.join(","),
        policy_version=pl.col("policy_version").drop_nulls().unique().sort().str.join(","))

    HC = H.codes
    # message-borne: the exposing messages (one per Kafka message, however many indicators matched);
    # flow-borne: per finding, the set of topics its host's applications carry
    Mx, F = pl.collect_all([
        TL.filter(pl.col("correlation") == "message_borne").select(KEY + ["source", "partition", "offset"]).unique(),
        TL.filter((pl.col("correlation") == "flow_borne") & (pl.col("window_end") > 0))
        .group_by(KEY).agg(tset=pl.col("topics_row").first())
        .with_columns(tkey=pl.col("tset").list.join("\x1f")).filter(pl.col("tkey") != "")], **_ENGINE)
    msg_stats = Mx.lazy().group_by(KEY).agg(m_messages=pl.len())
    if messages is not None and Mx.height:   # only the rows of the exposing messages are converted
        M = _frame(messages.filter(pc.is_in(messages["offset"], pa.array(Mx["offset"].unique().to_numpy()))),
                   _M_COLS, lazy=True)
        mb = Mx.lazy().join(M, on=["source", "partition", "offset"], how="left").group_by(KEY).agg(
            m_bytes=pl.col("bytes").sum(), m_has=pl.col("bytes").is_not_null().any())
        msg_stats = msg_stats.join(mb, on=KEY, how="left")
    MxC = Mx.lazy().with_columns(src=H.source_code(pl.col("source"))).drop("source")
    cand = HC.lazy().filter(pl.col("offset").is_in(Mx["offset"].unique().implode())) if Mx.height else \
        HC.clear().lazy()
    observed = MxC.join(cand.drop("t"), on=["src", "partition", "offset"], how="inner")
    stats = [_class_stats(observed, KEY)]
    samples = [_top_samples(observed.select(KEY + _HCOLS), KEY)]
    versions = [observed.group_by(KEY).agg(cvs=pl.col("cv").unique())]   # of each finding's own evidence
    # flow-borne: what the host's inventory topics carried in the window plus the look-back,
    # computed once per (window, set of topics) and shared by every host with that set
    inf_msgs = []
    windows = sorted(F["window_start"].unique().to_list())
    all_srcs = sorted({H.source_names.index(x) for ts_ in F["tset"].to_list() for x in ts_ if x in H.source_names})
    HI = HC.filter(pl.col("src").is_in(all_srcs) & pl.col("t").is_not_null()) if windows else HC.clear()
    if len(windows) > 4:   # many windows: sort once and slice, rather than one pass per window
        HI = HI.sort("t")
        t_sorted = HI["t"].to_numpy()
    for ws in windows:
        Fw = F.filter(pl.col("window_start") == ws)
        if len(windows) > 4:
            lo, hi = np.searchsorted(t_sorted, [ws - lookback_ns, ws + window_ns], "left")
            Wall = HI.slice(int(lo), int(hi - lo))
        else:
            Wall = HI.filter((pl.col("t") >= ws - lookback_ns) & (pl.col("t") < ws + window_ns))
        for tkey, tset in Fw.select("tkey", "tset").unique("tkey").sort("tkey").iter_rows():
            srcs = [H.source_names.index(x) for x in tset if x in H.source_names]
            W = Wall.filter(pl.col("src").is_in(srcs))
            if W.height == 0:
                continue
            keys = Fw.filter(pl.col("tkey") == tkey).select(KEY).lazy()
            stats.append(keys.join(_class_stats(W, []).lazy(), how="cross"))
            samples.append(keys.join(_top_samples(W.select(_HCOLS), []).lazy(), how="cross"))
            versions.append(keys.join(W.lazy().select(cvs=pl.col("cv").unique().implode()), how="cross"))
            n_msgs = W.select(pl.col("src").cast(pl.Int64) * 2**56 + pl.col("partition").cast(pl.Int64) * 2**40
                              + pl.col("offset")).to_series().n_unique()
            inf_msgs.append(keys.with_columns(i_messages=pl.lit(n_msgs)))
    C = (pl.concat([c.select(KEY + ["cls", "srank", "occurrences", "distinct_values"]) for c in stats])
         .with_columns(data_class=pl.col("cls").replace_strict(dict(enumerate(H.class_names)), return_dtype=pl.Utf8),
                       sensitivity=pl.col("srank").replace_strict(_SENS_NAME, default="", return_dtype=pl.Utf8),
                       occurrences=pl.col("occurrences").cast(pl.Int64),
                       distinct_values=pl.col("distinct_values").cast(pl.Int64))
         .sort(KEY + ["srank", "occurrences", "data_class"], descending=[False] * 4 + [True, True, False])
         .group_by(KEY, maintain_order=True)
         .agg(data_classes=pl.struct("data_class", "sensitivity", "occurrences", "distinct_values"),
              max_srank=pl.col("srank").max(), occurrences=pl.col("occurrences").sum(),
              distinct_values=pl.col("distinct_values").sum()))
    S = _collect(pl.concat([x.select(KEY + _HCOLS) for x in samples]))
    # the strings of the sample rows only
    picked = pl.from_arrow(H.take_plain(S["row"].to_numpy(), _SAMPLE_FIELDS)).to_struct("sample")
    S = (pl.DataFrame([S[c] for c in KEY] + [picked]).lazy()
         .group_by(KEY, maintain_order=True).agg(samples=pl.col("sample")))
    V = (pl.concat([v.select(KEY + ["cvs"]) for v in versions]).explode("cvs")
         .group_by(KEY).agg(cvs=pl.col("cvs").drop_nulls().unique()))
    out = (agg.join(C, on=KEY, how="left").join(S, on=KEY, how="left").join(msg_stats, on=KEY, how="left")
           .join(V, on=KEY, how="left"))
    if inf_msgs:
        out = out.join(pl.concat(inf_msgs), on=KEY, how="left")
    rows = _collect(out.sort(KEY)).to_dicts()
    for r in rows:   # the catalogue versions that classified the finding's evidence hits
        names = sorted({H.cv_names[c] for c in r.pop("cvs", None) or () if H.cv_names[c]})
        r["catalog_version"] = (",".join(names) or None) if r.get("occurrences") else None
    return rows


def _plain(t: pa.Table, cols: list[str]) -> pa.Table:
    """Columns ``cols`` of ``t`` with dictionaries decoded and binary(32) as binary."""
    out = {}
    for name in cols:
        col = t.column(name)
        if pa.types.is_dictionary(col.type):
            col = pa.chunked_array([c.dictionary_decode() for c in col.chunks], col.type.value_type)
        if pa.types.is_fixed_size_binary(col.type):
            col = col.cast(pa.binary())
        out[name] = col
    return pa.table(out)


def _assess(rows: list[dict], model: _sev.SeverityModel, inv: Inventory) -> list[dict]:
    """Exposure, bytes, messages and severity of each finding (a loop over findings, not hits)."""
    for r in rows:
        occ = r.get("occurrences") or 0
        corr = r["correlation"]
        r["exposure"] = "none" if not occ else ("observed" if corr == "message_borne" else "inferred")
        r["data_classes"] = r.get("data_classes") or []
        r["samples"] = r.get("samples") or []
        r["occurrences"] = int(occ)
        r["distinct_values"] = int(r.get("distinct_values") or 0)
        r["additional_occurrences"] = r["occurrences"] > len(r["samples"])
        if corr == "message_borne":
            r["messages"] = int(r.get("m_messages") or 0)
            has = r.get("m_has")
            r["bytes"] = r["bytes_scaled"] = int(r["m_bytes"]) if has else None
        else:
            r["messages"] = int(r.get("i_messages") or 0)
            r["bytes"] = int(r["f_bytes"]) if r["has_bytes"] else None
            r["bytes_scaled"] = int(r["f_bytes_scaled"]) if r["has_bytes"] else None
        kind = inv.zone_kind(r.get("zone"))
        if kind is None and r["rule"] in _OT_RULES:
            kind = "ot"   # these rules fire only for OT or scanner zones
        level, score, reasons, basis = model.assess(
            platform=r["platform"], rule=r["rule"], transfer_severity=_sev.LEVELS[int(r["sev_rank"] or 0)],
            zone_kind=kind, max_sensitivity=_SENS_NAME.get(r.get("max_srank") or 0),
            exposure=r["exposure"], messages=r["messages"] if corr == "message_borne" else 0,
            bytes_scaled=r["bytes_scaled"] or 0)
        r.update(severity=level, score=float(score), severity_reasons=reasons, basis=basis)
        r["finding_id"] = finding_id(r["platform"], r["rule"], r["entity"], r["window_start"])
    return rows


def finding_id(platform: str, rule: str, entity: str, window_start_ns: int) -> str:
    """The deterministic id of a finding: a hash of its key (a re-run updates, never duplicates)."""
    key = "\x1f".join((platform, rule, entity, str(int(window_start_ns))))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _status(rows: list[dict], previous: pa.Table | None, window_ns: int, watermark_ns: int) -> list[dict]:
    """new / ongoing from the window before; closed when the next complete window has none."""
    starts = {(r["platform"], r["rule"], r["entity"], r["window_start"]) for r in rows}
    prev_rows = previous.to_pylist() if previous is not None and previous.num_rows else []
    prev_ends = {(p["platform"], p["rule"], p["entity"], p["window_end_ns"]) for p in prev_rows}
    for r in rows:
        series = (r["platform"], r["rule"], r["entity"])
        ws, we = r["window_start"], r["window_end"]
        before = (*series, ws - window_ns)
        r["status"] = "ongoing" if ws > 0 and (before in starts or (*series, ws) in prev_ends) else "new"
        if we > 0 and (*series, we) not in starts and watermark_ns >= we + window_ns:
            r["status"] = "closed"
    # previous findings whose exposure stopped: the same finding, now closed
    for p in prev_rows:
        series = (p["platform"], p["rule"], p["entity"])
        we = p["window_end_ns"]
        if (p["status"] != "closed" and we > 0 and (*series, we) not in starts and watermark_ns >= we + window_ns
                and (*series, p["window_start_ns"]) not in starts):   # not recomputed by this call
            q = dict(p)
            q["status"] = "closed"
            q["_previous"] = True
            rows.append(q)
    return rows


def _to_arrow(rows: list[dict], model: _sev.SeverityModel) -> pa.Table:
    if not rows:
        return FINDINGS.empty_table()
    cols: dict[str, list] = {f.name: [] for f in FINDINGS}
    for r in rows:
        if r.get("_previous"):
            for f in FINDINGS:
                cols[f.name].append(r.get(f.name))
            continue
        vals = dict(r, window_start_ns=r["window_start"], window_end_ns=r["window_end"],
                    first_seen_ns=r["first_seen"], last_seen_ns=r["last_seen"], src_host=r["host"],
                    src_zone=r.get("zone"), catalog_version=r.get("catalog_version") or None,
                    watchlist_version=r.get("watchlist_version") or None,
                    policy_version=r.get("policy_version") or None,
                    severity_version=model.version, schema_version=SCHEMA_VERSION)
        for f in FINDINGS:
            cols[f.name].append(vals.get(f.name))
    arrays = []
    for f in FINDINGS:
        if pa.types.is_dictionary(f.type):
            arrays.append(pa.array(cols[f.name], pa.string()).dictionary_encode())
        else:
            arrays.append(pa.array(cols[f.name], f.type))
    t = pa.Table.from_arrays(arrays, schema=FINDINGS)
    order = pc.sort_indices(t, [("window_start_ns", "ascending"), ("finding_id", "ascending")])
    return t.take(order)


# ------------------------------------------------------------------------------ over a root
def _read(root: Path, name: str, columns: list[str], filt=None) -> pa.Table | None:
    import pyarrow.dataset as ds

    base = Path(root) / f"dataset={name}"
    if not base.is_dir():
        return None
    d = ds.dataset(base, format=checked_parquet(), partitioning="hive")
    return d.to_table(columns=[c for c in columns if c in d.schema.names], filter=filt)


def correlate_root(root: str | Path, *, window_ns: int = HOUR_NS, lookback_ns: int = 0,
                   inventory: Inventory | None = None, model: _sev.SeverityModel | None = None) -> pa.Table:
    """Every finding of the datasets already written under ``root``, in one :func:`correlate` call
    over every evidence row in memory: the reference.  The commands run
    :func:`flowaudit.detect.chunked.correlate_chunked`, equal to it (tested), which reads a window
    at a time."""
    import pyarrow.dataset as ds

    root = Path(root)
    inventory = inventory or Inventory()
    transfers = _read(root, "transfers", list(_T_COLS))
    if transfers is None or transfers.num_rows == 0:
        return FINDINGS.empty_table()
    # only the hits that can be evidence: the exposing messages' topics and the inventory topics
    sw = pc.cast(transfers.column("seen_where"), pa.string())
    topics = set(pc.unique(pc.cast(transfers.filter(pc.is_in(sw, pa.array(MESSAGE_WHERE))).column("source"),
                                   pa.string())).to_pylist())
    topics |= {t for a in inventory.applications for t in a.topics}
    topics.discard(None)
    filt = ds.field("source").isin(sorted(topics)) if topics else None
    hits = _read(root, "hits", list(_H_COLS), filt) if topics else None
    messages = _read(root, "messages", list(_M_COLS), filt) if topics else None
    return correlate(transfers, hits, messages, window_ns=window_ns, lookback_ns=lookback_ns,
                     inventory=inventory, model=model)


def worst_rank(t: pa.Table | None) -> int:
    """The highest severity rank (SEV_RANK) among findings ``t``; -1 when there is none."""
    if t is None or t.num_rows == 0:
        return -1
    return max(SEV_RANK.get(x, 0) for x in pc.unique(pc.cast(t.column("severity"), pa.string())).to_pylist())


def worst_first(t: pa.Table) -> pa.Table:
    """Findings ordered for a reader: severity, score, latest first."""
    rank = pa.array([SEV_RANK.get(s, 0) for s in pc.cast(t.column("severity"), pa.string()).to_pylist()],
                    pa.int32())
    t2 = t.append_column("_rank", rank)
    order = pc.sort_indices(t2, [("_rank", "descending"), ("score", "descending"),
                                 ("last_seen_ns", "descending"), ("finding_id", "ascending")])
    return t.take(order)


def top_findings(root: str | Path, n: int = 10, *, policy: str | Path | None = None,
                 window_ns: int = 300 * 1_000_000_000) -> list[dict]:
    """The ``n`` worst findings under ``root`` as dicts (for the demo's summary)."""
    from .chunked import correlate_chunked

    t = worst_first(correlate_chunked(root, window_ns=window_ns, inventory=load_inventory(policy)))
    return t.slice(0, n).to_pylist()


# ------------------------------------------------------------------------------ writing
def _window_file(start_ns: int, end_ns: int) -> str:
    if end_ns <= 0:
        return "date=1970-01-01/hour=00/findings-unknown-time.parquet"
    t = datetime.fromtimestamp(start_ns // 1_000_000_000, tz=timezone.utc)
    return f"date={t:%Y-%m-%d}/hour={t:%H}/findings-{t:%Y%m%dT%H%M%S}Z-{(end_ns - start_ns) // 1_000_000_000}s.parquet"


def merge_by_finding_id(old: pa.Table, part: pa.Table) -> pa.Table:
    """``part`` plus the rows of ``old`` whose ``finding_id`` it does not have, sorted by id."""
    rest = old.filter(pc.invert(pc.is_in(old["finding_id"], value_set=part["finding_id"])))
    if not rest.num_rows:
        return part
    part = pa.concat_tables([rest, part]).unify_dictionaries().combine_chunks()
    return part.take(pc.sort_indices(part, [("finding_id", "ascending")]))


def publish_findings_file(part: pa.Table, final: Path) -> None:
    """Write ``part`` to ``final`` durably: a temporary file, fsync, rename, fsync the folder."""
    from ..sinks.parquet import _write_durable, fsync_dir, makedirs
    makedirs(final.parent)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    try:
        _write_durable(part, tmp, "zstd", 65536)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(final.parent)


def write_findings(root: str | Path, findings: pa.Table, prune: bool = True) -> dict:
    """Write one file per window under ``root/dataset=findings`` with deterministic names.

    An existing file with the same rows is kept; a changed one is replaced atomically (hidden temp
    file, fsync, rename, fsync of the folder: the sink's recipe, with a replace instead of a link
    because a finding is updated in place); files of windows this run no longer produces are
    removed (``prune``).  Without ``prune`` (the stream, which writes what one window close
    changed: that window's findings and the earlier ones it closes) a window's other findings
    stay in its file: the rows given replace the file's rows of the same ``finding_id``.
    Returns counts: written, kept, removed.
    """
    from ..sinks.parquet import fsync_dir
    import pyarrow.parquet as pq

    base = Path(root) / "dataset=findings"
    counts = {"written": 0, "kept": 0, "removed": 0}
    wanted = set()
    if findings.num_rows:
        keys = pa.table({"s": findings.column("window_start_ns"), "e": findings.column("window_end_ns")})
        for s, e in sorted(set(zip(keys["s"].to_pylist(), keys["e"].to_pylist()))):
            part = findings.filter(pc.and_(pc.equal(findings["window_start_ns"], s),
                                           pc.equal(findings["window_end_ns"], e)))
            final = base / _window_file(s, e)
            wanted.add(final)
            if final.exists():
                try:
                    old = pq.read_table(final, schema=FINDINGS, **CHECKED)
                except Exception:  # noqa: BLE001 - unreadable: replace it
                    old = None
                if old is not None and not prune:
                    part = merge_by_finding_id(old, part)
                if old is not None and old.equals(part):
                    counts["kept"] += 1
                    continue
            publish_findings_file(part, final)
            counts["written"] += 1
    if prune and base.is_dir():
        for p in base.glob("date=*/hour=*/findings-*.parquet"):
            if p not in wanted:
                p.unlink()
                fsync_dir(p.parent)
                counts["removed"] += 1
    return counts


# ------------------------------------------------------------------------------ CLI
def _ts(ns) -> str:
    if not ns:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _classes_text(r: dict, k: int = 3) -> str:
    cl = r["data_classes"] or []
    txt = ", ".join(f"{c['data_class']} x{c['occurrences']}" for c in cl[:k])
    return txt + (f" +{len(cl) - k}" if len(cl) > k else "") if txt else "-"


def _bytes_text(r: dict) -> str:
    return "-" if r["bytes_scaled"] is None else f"{r['bytes_scaled']:,}"


# fixed-width columns: (title, width; negative = right-aligned, text of a row)
_SEVERITY_COLS = (("severity", 9, lambda r: r["severity"]), ("score", -5, lambda r: f"{r['score']:.0f}"))
_WHERE_COLS = (("platform", 10, lambda r: r["platform"]), ("rule", 24, lambda r: r["rule"]),
               ("source (host / app)", 28, lambda r: r["entity"]))
_TABLE_COLS = (*_SEVERITY_COLS, ("status", 8, lambda r: r["status"]),
               ("window (UTC)", 19, lambda r: _ts(r["window_start_ns"])), *_WHERE_COLS,
               ("zone", 9, lambda r: r["src_zone"] or "-"), ("exposure", 9, lambda r: r["exposure"]),
               ("bytes", -12, _bytes_text), ("msgs", -5, lambda r: str(r["messages"])))
_EPISODE_COLS = (*_SEVERITY_COLS, ("first seen (UTC)", 19, lambda r: _ts(r["first_seen_ns"])),
                 ("last seen (UTC)", 19, lambda r: _ts(r["last_seen_ns"])), *_WHERE_COLS,
                 ("zone", 9, lambda r: ",".join(r["zones"]) or "-"), ("exposure", 9, lambda r: r["exposure"]),
                 ("windows", -7, lambda r: f"{r['windows']:,}"), ("bytes", -12, _bytes_text),
                 ("msgs", -5, lambda r: str(r["messages"])))


def _fixed_width(cols, rows: list[dict]) -> str:
    """A fixed-width table (text cut to its column, numbers never), the data classes last."""
    def line(cells):
        return " ".join(c.rjust(-w) if w < 0 else c[:w].ljust(w) for c, (_t, w, _f) in zip(cells, cols))

    out = [line([t for t, _w, _f in cols]) + "  data classes"]
    out += [line([f(r) for _t, _w, f in cols]) + "  " + _classes_text(r) for r in rows]
    return "\n".join(out)


def format_table(rows: list[dict]) -> str:
    """Findings as a fixed-width table (worst first as given)."""
    return _fixed_width(_TABLE_COLS, rows)


def format_episodes(episodes: list[dict]) -> str:
    """Episodes (flowaudit.report.data.episodes_of) as a fixed-width table, worst first as given."""
    return _fixed_width(_EPISODE_COLS, episodes)


def select(t: pa.Table, *, since: str | None = None, until: str | None = None, platforms=None,
           severity: str | None = None) -> pa.Table:
    """Findings whose window overlaps [since, until), of these platforms (any case), at least this
    severity."""
    from ..quarantine import parse_time

    mask = pa.array([True] * t.num_rows, pa.bool_())    # typed: no findings is an empty bool array
    if since:
        mask = pc.and_kleene(mask, pc.greater_equal(t["last_seen_ns"], parse_time(since) * 1_000_000))
    if until:
        mask = pc.and_kleene(mask, pc.less(t["first_seen_ns"], parse_time(until) * 1_000_000))
    if platforms:      # as the user types them: --platform logink is LOGINK
        mask = pc.and_kleene(mask, pc.is_in(pc.utf8_lower(pc.cast(t["platform"], pa.string())),
                                            pa.array([p.lower() for p in platforms], pa.string())))
    if severity:
        ranks = pa.array([SEV_RANK.get(s, 0) for s in pc.cast(t["severity"], pa.string()).to_pylist()], pa.int32())
        mask = pc.and_kleene(mask, pc.greater_equal(ranks, SEV_RANK[severity]))
    return t.filter(pc.fill_null(mask, False))
