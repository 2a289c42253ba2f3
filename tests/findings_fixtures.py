"""Inputs for the findings tests: small hand-built transfers / hits tables, and the synthetic
exposure scenario run through the real classifier and egress detector (and written as datasets)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flowaudit import synth
from flowaudit.detect import zones
from flowaudit.datasets import HITS, TRANSFERS
from flowaudit.detect.findings import MESSAGE_WHERE
from flowaudit.detect.inventory import load as load_inventory
from flowaudit.detect.egress import EgressDetector
from flowaudit.pipeline import Batch, Classifier, format_code
from flowaudit.protect import Protector, mask
from flowaudit.detect.watchlist import Watchlist

from .conftest import HMAC_KEY, keyed

T0 = synth.SCENARIO_T0_MS          # ms
HOUR = 3_600_000_000_000           # ns


def transfers(rows: list[dict]) -> pa.Table:
    """TRANSFERS rows: a LOGINK flow from an office host at T0 + 1 s unless a row says otherwise."""
    base = dict(source="netflow", partition=0, offset=0, ts_ms=T0, time_ns=T0 * 1_000_000 + 10**9, exporter=None,
                src_addr="10.40.1.5", src_port=40000, dst_addr="203.0.113.5", dst_port=443, protocol=6,
                bytes=1000, packets=2, sampling_interval=1, bytes_scaled=1000, platform="LOGINK",
                indicator="203.0.113.0/28", indicator_type="cidr", seen_where="NETFLOW_DST", src_zone="it",
                dst_zone="internet", rule="watchlist", severity="high", indicator_source="test",
                watchlist_version="w1", policy_version="p1", schema_version="1")
    out = []
    for r in rows:
        row = dict(base)
        if r.get("seen_where") in MESSAGE_WHERE:   # a message-side row has no flow fields
            row.update({k: None for k in ("src_port", "dst_port", "protocol", "bytes", "packets",
                                          "sampling_interval", "bytes_scaled", "src_zone", "dst_zone")})
        row.update(r)
        out.append(row)
    return pa.Table.from_pylist(out, schema=TRANSFERS)


def hits(rows: list[dict]) -> pa.Table:
    """HITS rows from (source, offset, data_class, value ...): masked and keyed like the pipeline's."""
    out = []
    for r in rows:
        v = r.pop("value")
        row = dict(source="port.edifact", partition=0, offset=0, ts_ms=T0 + 1000, msg_index=0, format="json",
                   msg_type="t", data_class="container_number", sensitivity="medium", location="LOC",
                   value_raw=None, check_digit_valid=None, confidence=100, byte_start=0, byte_end=1,
                   catalog_version="c1", schema_version="1", layer="")
        row.update(r)
        row["value_masked"] = mask(v.encode(), row["data_class"])
        row["value_hmac"] = keyed(v)
        out.append(row)
    return pa.Table.from_pylist(out, schema=HITS)


def scenario_tables(tmp: Path, write_root: bool = True) -> dict:
    """Run synth.exposure_scenario() through the classifier and egress detector.

    Returns the scenario, the hits / messages / transfers tables, the inventory, the policy file,
    ``placed`` ((topic, offset) -> SynthMessage), hits made with raw values opted in, and ``root``
    where the datasets were written (Hive layout, as the stream's sink lays them out)."""
    sc = synth.exposure_scenario()
    (tmp / "wl").mkdir()
    (tmp / "wl" / "ops.toml").write_text(sc.watchlist_toml)
    policy = tmp / "policy.toml"
    policy.write_text(sc.policy_toml)
    topics = sorted({t for t, _, _ in sc.messages})
    counters = {t: 0 for t in topics}
    offsets, placed = [], {}
    for t, m, _ in sc.messages:
        offsets.append(counters[t])
        placed[(t, counters[t])] = m
        counters[t] += 1
    batch = Batch.from_values([m.value for _, m, _ in sc.messages], [format_code(m.format) for _, m, _ in sc.messages],
                              sources=topics, source_idx=[topics.index(t) for t, _, _ in sc.messages],
                              partition=np.zeros(len(offsets), np.int32), offset=np.asarray(offsets),
                              ts_ms=np.asarray([ts for *_, ts in sc.messages]), keys=[m.key for _, m, _ in sc.messages])

    def run(raw: bool):
        det = EgressDetector(Watchlist(tmp / "wl"), zones.load(policy))
        res = Classifier(Protector(HMAC_KEY.encode(), raw=raw), egress=det).run(batch)
        dns = det.observe_dns(sc.dns, source="dns")
        flows = det.detect_flows(sc.flow_arrays(), source="netflow", partition=0)
        return res, pa.concat_tables([res.transfers, dns, flows])

    res, tr = run(False)
    assert res.quarantine.num_rows == 0
    tables = {"hits": res.hits, "messages": res.messages, "transfers": tr}
    root = tmp / "root"
    if write_root:
        for name, t in tables.items():
            d = root / f"dataset={name}" / "date=2026-03-01" / "hour=06"
            d.mkdir(parents=True)
            pq.write_table(t, d / f"{name}+0+{0:020d}+{t.num_rows:020d}.parquet")
    return {"scenario": sc, "tables": tables, "inventory": load_inventory(policy), "policy": policy,
            "placed": placed, "raw_hits": run(True)[0].hits, "root": root}
