"""Findings (flowaudit/detect/findings.py): the correlation rules, the severity model, status
across windows, and ground truth from the synthetic exposure scenario run through the real
classifier and egress detector."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest

from flowaudit import schemas, synth
from flowaudit.detect import zones
from flowaudit.datasets import FINDINGS, HITS, MESSAGES, TRANSFERS
from flowaudit.detect import findings as F
from flowaudit.detect import inventory as I
from flowaudit.detect import severity as S

from .conftest import keyed
from .findings_fixtures import HOUR, T0, hits, scenario_tables, transfers

POLICY = {"version": "p1",
          "zones": {"crane_ot": {"kind": "ot", "cidrs": ["10.20.0.0/16"]}, "it": {"kind": "it", "cidrs": ["10.40.0.0/16"]},
                    "dmz": {"kind": "dmz", "cidrs": ["192.0.2.128/25"]}},
          "applications": [{"name": "edi-gateway", "hosts": ["192.0.2.128/28"], "topics": ["port.edifact", "port.x12"]},
                           {"name": "tracking-gw", "hosts": ["10.40.1.20"], "topics": ["port.json"]}]}
INV = I.from_dict(POLICY)


def by_entity(t: pa.Table) -> dict:
    return {(r["platform"], r["rule"], r["entity"]): r for r in t.to_pylist()}


# ------------------------------------------------------------------------------ ground truth
@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    return scenario_tables(tmp_path_factory.mktemp("scenario"))


def test_every_labelled_exposure_is_found_and_nothing_else(scenario):
    sc, tables, inv = scenario["scenario"], scenario["tables"], scenario["inventory"]
    out = F.correlate(tables["transfers"], tables["hits"], tables["messages"], inventory=inv)
    assert out.schema.equals(FINDINGS)
    got = by_entity(out)
    want = {(e.platform, e.rule, e.entity): e for e in sc.exposures}
    assert set(got) == set(want), f"missing {set(want) - set(got)}, unlabelled {set(got) - set(want)}"
    hits_rows = tables["hits"].to_pylist()
    for key, e in want.items():
        f = got[key]
        classes = {c["data_class"] for c in f["data_classes"]}
        assert f["correlation"] == e.correlation, key
        assert f["severity"] == e.severity, (key, f["score"], f["severity_reasons"])
        assert e.classes <= classes, (key, e.classes - classes)
        assert f["status"] == "new" and f["window_start_ns"] == T0 * 1_000_000
        assert f["window_end_ns"] - f["window_start_ns"] == HOUR
        assert f["finding_id"] == hashlib.sha256("\x1f".join(
            (e.platform, e.rule, e.entity, str(f["window_start_ns"]))).encode()).hexdigest()[:32]
        if e.correlation == "message_borne":
            # exactly the classes hit in the exposing messages (those labelled as reaching LOGINK)
            topic = f["topics"][0]
            exposing = {o for (t, o), m in scenario["placed"].items() if t == topic and "LOGINK" in m.egress}
            own = [h for h in hits_rows if h["source"] == topic and h["offset"] in exposing]
            assert classes == {h["data_class"] for h in own}
            assert f["messages"] == len(exposing) and f["exposure"] == "observed"
            assert f["occurrences"] == len(own)
            assert f["distinct_values"] == len({(h["data_class"], h["value_hmac"]) for h in own})
            assert f["bytes"] == sum(len(scenario["placed"][(topic, o)].value) for o in exposing)
            assert all((s["source"], s["offset"]) in {(topic, o) for o in exposing} for s in f["samples"])
        elif e.classes:
            assert f["exposure"] == "inferred" and f["application"] == "edi-gateway"
            assert f["topics"] == ["port.edifact", "port.x12"]
            own = [h for h in hits_rows if h["source"] in f["topics"]]
            assert classes == {h["data_class"] for h in own}
        else:
            assert classes == set() and f["exposure"] == "none" and f["samples"] == []
        assert len(f["samples"]) <= 15
        assert f["additional_occurrences"] == (f["occurrences"] > len(f["samples"]))
        assert f["basis"] and set(f["basis"]) <= set(S.load().basis)
    # the EDI gateway's flows: raw and scaled bytes, the LOGINK prefix it reached
    d = got[("LOGINK", "watchlist", "192.0.2.130")]
    assert (d["bytes"], d["bytes_scaled"], d["flows"]) == (240_000, 2_400_000, 3)
    assert d["destinations"] == ["203.0.113.5"] and d["indicators"] == ["203.0.113.0/28"]
    assert d["src_zone"] == "dmz"
    dns = got[("LOGINK", "watchlist", "10.40.1.5")]
    assert dns["indicators"] == ["gateway.logink.cn"] and dns["seen_where"] == ["DNS_ANSWER"]
    assert got[("LOGINK", "watchlist", "app:tracking-gw")]["basis"] == ["46-usc-50309", "marad-2024-002"]
    rdp = got[("policy", "remote_access:rdp", "10.20.1.10")]
    assert rdp["src_zone"] == "crane_ot" and rdp["destinations"] == ["10.40.1.5"]


def test_findings_carry_no_raw_value(scenario):
    """Masked values and keyed hashes only, even when the hits were written with raw values."""
    tables = scenario["tables"]
    raw_hits = scenario["raw_hits"]
    assert raw_hits.column("value_raw").null_count == 0
    out = F.correlate(tables["transfers"], raw_hits, tables["messages"], inventory=scenario["inventory"])
    text = json.dumps([{k: v for k, v in r.items() if k != "samples"} | {"samples": [
        {k: v for k, v in s.items() if k != "value_hmac"} for s in r["samples"]]} for r in out.to_pylist()])
    placed = [lab.value for _, m, _ in scenario["scenario"].messages for lab in m.labels if len(lab.value) >= 6]
    assert placed and not [v for v in placed if v in text]
    samples = [s for r in out.to_pylist() for s in r["samples"]]
    assert samples and all("*" in s["value_masked"] for s in samples)
    by_hmac = {keyed(lab.value) for _, m, _ in scenario["scenario"].messages for lab in m.labels}
    assert sum(s["value_hmac"] in by_hmac for s in samples) > len(samples) // 2


def test_deterministic_and_window_call_equals_batch(scenario):
    tables, inv = scenario["tables"], scenario["inventory"]
    a = F.correlate(tables["transfers"], tables["hits"], tables["messages"], inventory=inv)
    shuffled = {k: t.take(pa.array(np.random.default_rng(1).permutation(t.num_rows))) for k, t in tables.items()}
    b = F.correlate(shuffled["transfers"], shuffled["hits"], shuffled["messages"], inventory=inv)
    assert a.equals(b)
    # the stream's per-window call over the same rows gives the same findings
    c = F.correlate(tables["transfers"], tables["hits"], tables["messages"], inventory=inv,
                    window_start_ns=T0 * 1_000_000)
    assert a.equals(c)


# ------------------------------------------------------------------------------ correlation rules
def test_message_borne_takes_the_whole_interchange_and_only_it():
    t = transfers([dict(source="port.edifact", offset=7, seen_where="EDI_UNB", indicator="LOGINKHUB",
                        indicator_type="edi_party", src_addr=None, dst_addr=None)])
    h = hits([dict(source="port.edifact", offset=7, msg_index=1, data_class="container_number", value="MSCU1234565"),
              dict(source="port.edifact", offset=7, msg_index=2, data_class="container_number", value="MSCU1234565"),
              dict(source="port.edifact", offset=7, msg_index=2, data_class="customs_reference",
                   sensitivity="high", value="31202612345678"),
              dict(source="port.edifact", offset=8, msg_index=1, data_class="email", sensitivity="high", value="a@b.c"),
              dict(source="port.x12", offset=7, msg_index=1, data_class="phone", sensitivity="high", value="+1 1")])
    m = pa.Table.from_pylist([dict(source="port.edifact", partition=0, offset=7, format="edifact", msg_type="COPRAR",
                                   bytes=1234, n_segments=9, n_hits=3, flags=[], catalog_version="c",
                                   schema_version="1")], schema=MESSAGES)
    f = F.correlate(t, h, m, inventory=INV).to_pylist()
    assert len(f) == 1
    f = f[0]
    assert f["entity"] == "app:edi-gateway" and f["application"] == "edi-gateway" and f["src_host"] is None
    assert [(c["data_class"], c["occurrences"], c["distinct_values"]) for c in f["data_classes"]] == \
        [("customs_reference", 1, 1), ("container_number", 2, 1)]
    assert (f["messages"], f["bytes"], f["occurrences"], f["distinct_values"]) == (1, 1234, 3, 2)
    assert [s["msg_index"] for s in f["samples"]] == [2, 1, 2]   # most sensitive first, then by position
    assert f["samples"][0]["location"] == "LOC" and f["samples"][0]["value_masked"].startswith("*")
    # no inventory: the topic is the entity
    f2 = F.correlate(t, h, m).to_pylist()[0]
    assert f2["entity"] == "topic:port.edifact" and f2["application"] is None


def test_a_finding_names_the_catalogue_versions_of_its_own_evidence():
    """Two exposures in one window, their hits classified under two catalogue versions (a
    catalogue upgrade mid-window): each finding names the versions of the hits it was made from,
    not every version the window holds, so it reads the same however the root is split or read;
    a finding without evidence hits names none."""
    t = transfers([dict(source="port.edifact", offset=7, seen_where="EDI_UNB", indicator="LOGINKHUB",
                        indicator_type="edi_party", src_addr=None, dst_addr=None),
                   dict(source="port.json", offset=3, seen_where="JSON_PATH", indicator="gateway.logink.cn",
                        indicator_type="host", src_addr=None, dst_addr=None),
                   dict(source="port.xml", offset=1, seen_where="XML_ELEMENT", indicator="gateway.logink.cn",
                        indicator_type="host", src_addr=None, dst_addr=None),
                   dict(src_addr="192.0.2.130", dst_addr="203.0.113.5")])
    h = hits([dict(source="port.edifact", offset=7, value="MSCU1234565", catalog_version="c1"),
              dict(source="port.edifact", offset=7, value="31202612345678", data_class="customs_reference",
                   catalog_version="c2"),
              dict(source="port.json", offset=3, value="MSCU1234565", catalog_version="c2"),
              dict(source="port.json", offset=4, value="x@y.z", data_class="email", catalog_version="c3"),
              dict(source="port.x12", offset=2, value="123456", data_class="seal_number", catalog_version="c4")])
    got = {f["entity"]: f["catalog_version"] for f in F.correlate(t, h, inventory=INV).to_pylist()}
    assert got["app:edi-gateway"] == "c1,c2"           # its message's hits: two versions
    assert got["app:tracking-gw"] == "c2"              # port.json's: not the c3 of another message there
    assert got["topic:port.xml"] is None               # no hits of its message
    assert got["192.0.2.130"] == "c1,c2,c4"            # flow-borne: its inventory topics' hits in the window


def test_flow_borne_window_lookback_and_inventory():
    t = transfers([dict(src_addr="192.0.2.130", dst_addr="203.0.113.5", bytes=100, bytes_scaled=1000,
                        time_ns=T0 * 1_000_000 + 2 * HOUR + 60 * 10**9)])
    h = hits([dict(source="port.edifact", offset=1, ts_ms=T0 + 2 * 3_600_000 + 1000, data_class="un_number",
                   sensitivity="high", value="1263"),                                   # in the window
              dict(source="port.x12", offset=2, ts_ms=T0 + 3_600_000 + 1000, data_class="seal_number",
                   value="123456"),                                                     # in the look-back
              dict(source="port.edifact", offset=3, ts_ms=T0 + 1000, data_class="email",
                   sensitivity="high", value="x@y.z"),                                  # before the look-back
              dict(source="port.edifact", offset=4, ts_ms=T0 + 3 * 3_600_000 + 1000, data_class="phone",
                   sensitivity="high", value="+1 2"),                                   # after the window
              dict(source="port.json", offset=5, ts_ms=T0 + 2 * 3_600_000 + 1000, data_class="eori",
                   sensitivity="high", value="DE1")])                                   # not its topic
    f = F.correlate(t, h, inventory=INV, lookback_ns=HOUR).to_pylist()[0]
    assert f["entity"] == "192.0.2.130" and f["exposure"] == "inferred" and f["correlation"] == "flow_borne"
    assert sorted(c["data_class"] for c in f["data_classes"]) == ["seal_number", "un_number"]
    assert (f["bytes"], f["bytes_scaled"], f["flows"], f["messages"]) == (100, 1000, 1, 2)
    f0 = F.correlate(t, h, inventory=INV).to_pylist()[0]
    assert [c["data_class"] for c in f0["data_classes"]] == ["un_number"]
    # a host not in the inventory: host, platform and bytes, no classes
    f1 = F.correlate(t, h).to_pylist()[0]
    assert (f1["entity"], f1["exposure"], f1["data_classes"], f1["bytes_scaled"]) == ("192.0.2.130", "none", [], 1000)


def test_entity_is_the_port_side_and_the_asset():
    t = transfers([
        dict(src_addr="203.0.113.5", dst_addr="10.40.1.5", seen_where="NETFLOW_SRC", offset=1),   # reply from LOGINK
        dict(platform="policy", rule="internet_to_ot_zone", src_addr="198.18.0.1", dst_addr="10.20.1.10",
             src_zone="internet", dst_zone="crane_ot", offset=2),
        dict(platform="policy", rule="remote_access:ssh", src_addr="10.40.1.5", dst_addr="10.20.1.10",
             src_zone="it", dst_zone="crane_ot", offset=3),
        dict(platform="policy", rule="zone_not_allowed", src_addr="10.40.1.5", dst_addr="192.0.2.140",
             src_zone="it", dst_zone="dmz", offset=4),
        dict(platform="LOGINK", rule="dns_lookup", seen_where="DNS_ANSWER", src_addr="10.40.1.6", offset=5),
        dict(platform="policy", rule="silent_zone", seen_where="NETFLOW_ABSENT", src_addr="10.20.1.12",
             dst_addr=None, src_zone="crane_ot", dst_zone=None, bytes=None, bytes_scaled=None, offset=6),
    ])
    t = t.append_column("service", pa.array(["", "", "ssh", "", "", ""]))  # a column added later is ignored
    got = by_entity(F.correlate(t, None, inventory=INV))
    assert set(got) == {("LOGINK", "watchlist", "10.40.1.5"), ("policy", "internet_to_ot_zone", "10.20.1.10"),
                        ("policy", "remote_access:ssh", "10.20.1.10"), ("policy", "zone_not_allowed", "10.40.1.5"),
                        ("policy", "silent_zone", "10.20.1.12")}
    silent = got[("policy", "silent_zone", "10.20.1.12")]   # a crane host gone quiet: the asset and the rule
    assert (silent["bytes"], silent["flows"], silent["severity"], silent["score"]) == (None, 0, "medium", 50)
    assert silent["basis"] == ["marad-2024-002", "eo-14116-33cfr6"]
    assert got[("LOGINK", "watchlist", "10.40.1.5")]["destinations"] == ["203.0.113.5"]
    assert got[("policy", "remote_access:ssh", "10.20.1.10")]["src_zone"] == "crane_ot"


# ------------------------------------------------------------------------------ severity
def _one(t, h=None, m=None, inv=INV, model=None):
    rows = F.correlate(t, h, m, inventory=inv, model=model).to_pylist()
    assert len(rows) == 1
    return rows[0]


def test_every_severity_level_is_reached():
    logink_query = transfers([dict(source="port.json", offset=1, seen_where="JSON_PATH",
                                   indicator="logink.track.customs", src_addr=None, dst_addr=None)])
    customs = hits([dict(source="port.json", offset=1, data_class="customs_reference", sensitivity="high",
                         value="3120261")])
    containers = hits([dict(source="port.json", offset=1, data_class="container_number", value="MSCU1234565")])
    # critical: a prohibited platform observed receiving high-sensitivity data (50 + 30)
    f = _one(logink_query, customs)
    assert (f["severity"], f["score"]) == ("critical", 80)
    assert f["severity_reasons"] == ["platform LOGINK: prohibited (+50)", "high-sensitivity data, observed (+30)"]
    # high: the same with medium-sensitivity data (50 + 20)
    assert _one(logink_query, containers)["severity"] == "high"
    # medium: LOGINK reached by a host whose data is unknown (50)
    f = _one(transfers([dict(src_addr="10.40.1.5")]))
    assert (f["severity"], f["score"]) == ("medium", 50)
    # low: a generic watchlisted platform ranks below a prohibited one (Nuctech, rated high: 25)
    f = _one(transfers([dict(platform="Nuctech", src_addr="10.40.1.5", src_zone="it")]))
    assert (f["severity"], f["score"]) == ("low", 25)
    # low: a non-OT zone-policy breach (20)
    f = _one(transfers([dict(platform="policy", rule="zone_not_allowed", src_addr="192.0.2.140",
                             src_zone="dmz", dst_zone="it", dst_addr="10.40.1.9")]))
    assert (f["severity"], f["score"]) == ("low", 20)
    # info: a platform the watchlist rates informational (NEAL-NET), or one the zone policy allows
    f = _one(transfers([dict(platform="NEAL-NET", severity="info", src_addr="10.40.1.7")]))
    assert (f["severity"], f["score"]) == ("info", 0)
    # OT: a crane to the internet (50 + 20 for the OT zone) is high; with inferred high data, critical
    ot = dict(platform="policy", rule="ot_zone_to_internet", src_addr="10.20.1.11", src_zone="crane_ot",
              dst_zone="internet", dst_addr="203.0.113.200")
    assert _one(transfers([ot]))["severity"] == "high"
    crane_logink = transfers([dict(ot, platform="LOGINK", src_addr="192.0.2.130", src_zone="crane_ot")])
    f = _one(crane_logink, hits([dict(source="port.x12", data_class="un_number", sensitivity="high", value="1263")]))
    assert (f["severity"], f["score"], f["exposure"]) == ("critical", 85, "inferred")   # 50 + 20 + 15
    # volume: 100 exposing messages add 10 points (50 + 20 + 10)
    many = transfers([dict(source="port.json", offset=i, seen_where="JSON_PATH", indicator="x",
                           src_addr=None, dst_addr=None) for i in range(100)])
    f = _one(many, hits([dict(source="port.json", offset=i, data_class="bill_of_lading", value=f"B{i}")
                         for i in range(100)]))
    assert (f["severity"], f["score"], f["messages"], f["distinct_values"]) == ("critical", 80, 100, 100)


def test_operator_overrides_the_model(tmp_path):
    t = transfers([dict(src_addr="10.40.1.5")])
    over = tmp_path / "sev.toml"
    over.write_text('version = "ops-2"\n[tiers]\nprohibited = 85\n')
    model = S.load(over)
    f = _one(t, model=model)
    assert (f["severity"], f["score"]) == ("critical", 85)
    assert F.correlate(t, None, inventory=INV, model=model).column("severity_version").to_pylist() == ["ops-2"]
    assert _one(t, model=S.load({"levels": {"medium": 55}}))["severity"] == "low"
    for bad in ({"nope": 1}, {"tiers": {"prohibited": "x"}}, {"platforms": {"X": {"basis": ["made-up"]}}},
                {"levels": {"low": 90}}):
        with pytest.raises(S.SeverityModelError):
            S.load(bad)


def test_basis_table_is_sourced():
    model = S.load()
    assert set(model.basis) == {"46-usc-50309", "marad-2024-002", "eo-14116-33cfr6"}
    assert all(b.source.startswith("https://") and b.title for b in model.basis.values())


# ------------------------------------------------------------------------------ status and windows
def test_status_across_windows_and_the_streams_per_window_calls():
    w = [T0 * 1_000_000 + k * HOUR for k in range(4)]
    t = transfers([dict(src_addr="10.40.1.5", time_ns=w[0] + 5), dict(src_addr="10.40.1.5", time_ns=w[1] + 5),
                   dict(src_addr="10.40.1.6", time_ns=w[3] + 5)])
    rows = F.correlate(t, None).to_pylist()
    assert [(r["entity"], r["window_start_ns"], r["status"]) for r in rows] == [
        ("10.40.1.5", w[0], "new"), ("10.40.1.5", w[1], "closed"), ("10.40.1.6", w[3], "new")]
    assert rows[0]["first_seen_ns"] == rows[0]["last_seen_ns"] == w[0] + 5
    # the stream: one call per window, the previous window's findings passed on
    f0 = F.correlate(t, None, window_start_ns=w[0])
    f1 = F.correlate(t, None, window_start_ns=w[1], previous=f0)
    assert f1.column("status").to_pylist() == ["ongoing"]
    f2 = F.correlate(t, None, window_start_ns=w[2], previous=f1)
    assert f2.num_rows == 1 and f2.column("status").to_pylist() == ["closed"]
    assert f2.column("finding_id").to_pylist() == f1.column("finding_id").to_pylist()   # updated, not duplicated
    # a re-run of a window with the same input gives the same rows
    assert F.correlate(t, None, window_start_ns=w[1], previous=f0).equals(f1)


def test_samples_are_bounded_and_rows_without_time():
    t = transfers([dict(source="port.json", offset=1, seen_where="JSON_PATH", indicator="x", time_ns=None,
                        ts_ms=None, src_addr=None, dst_addr=None)])
    h = hits([dict(source="port.json", offset=1, data_class="container_number", value=f"MSCU{i % 4}",
                   byte_start=i) for i in range(20)])
    f = _one(t, h)
    assert (f["window_start_ns"], f["window_end_ns"], f["first_seen_ns"]) == (0, 0, None)
    assert len(f["samples"]) == 15 and f["additional_occurrences"]
    assert f["data_classes"] == [{"data_class": "container_number", "sensitivity": "medium", "occurrences": 20,
                                  "distinct_values": 4}]


def test_empty_inputs():
    assert F.correlate(TRANSFERS.empty_table(), HITS.empty_table()).equals(FINDINGS.empty_table())
    assert F.correlate(transfers([dict(rule="dns_lookup", seen_where="DNS_ANSWER")]), None).num_rows == 0


# ------------------------------------------------------------------------------ inventory
def test_inventory_lives_in_the_zone_policy(tmp_path):
    p = tmp_path / "policy.toml"
    p.write_text(synth.exposure_scenario(background=0).policy_toml)
    assert zones.load(p).zone_names[:2] == ["tos", "crane_ot"]     # the policy still loads
    inv = I.load(p)
    assert [a.name for a in inv.apps_for_host("192.0.2.130")] == ["edi-gateway"]
    assert [a.name for a in inv.apps_for_topic("port.json")] == ["tracking-gw"]
    assert inv.zone_kind("crane_ot") == "ot" and inv.apps_for_host("10.9.9.9") == ()
    ex = I.load(schemas.path("zones.example.toml"))
    assert ex.applications and all(a.topics for a in ex.applications)
    for bad in ([{"name": "x", "hosts": ["not-an-ip"], "topics": ["t"]}], [{"hosts": [], "topics": []}],
                [{"name": "x", "topics": ["t"], "extra": 1}]):
        with pytest.raises(I.InventoryError):
            I.from_dict({"applications": bad})


def test_many_windows_equal_one_call_per_window():
    """Batch over six windows (hits sorted once and sliced) = one call per window (hits filtered)."""
    w = [T0 * 1_000_000 + k * HOUR for k in range(6)]
    t = transfers([dict(src_addr="192.0.2.130", time_ns=ws + 7, offset=k) for k, ws in enumerate(w)] +
                  [dict(src_addr="10.40.1.20", time_ns=w[2] + 9, offset=9)])
    h = hits([dict(source=("port.edifact", "port.x12", "port.json")[i % 3], offset=i, msg_index=i % 2,
                   ts_ms=T0 + i * 1_234_567 % (6 * 3_600_000), data_class=("un_number", "seal_number")[i % 2],
                   sensitivity=("high", "medium")[i % 2], value=f"V{i % 17}", byte_start=i) for i in range(600)])
    batch = F.correlate(t, h, inventory=INV, lookback_ns=HOUR // 2)
    assert batch.num_rows == 7
    per_window = pa.concat_tables([F.correlate(t, h, inventory=INV, lookback_ns=HOUR // 2, window_start_ns=ws)
                                   for ws in w])
    assert batch.drop_columns(["status"]).to_pylist() == per_window.drop_columns(["status"]).to_pylist()
    assert sum(r["occurrences"] for r in batch.to_pylist()) > 0
    statuses = [r["status"] for r in batch.to_pylist() if r["entity"] == "192.0.2.130"]
    assert statuses == ["new"] + ["ongoing"] * 5


def test_hmac_ids_identify_values_in_dictionary_and_plain_chunks():
    """The distinct-value counts use the first eight bytes of each HMAC: the same for a value in a
    dictionary chunk (in memory) and a plain one (read back from Parquet), as many ids as values."""
    import hashlib

    import numpy as np
    import pyarrow as pa

    from flowaudit.detect.findings import _hmac_ids
    digests = [hashlib.sha256(b"v%d" % i).digest() for i in range(50)]
    rows = [digests[i % 7] for i in range(40)] + [digests[i] for i in range(10, 50)]
    plain = pa.array(rows, pa.binary(32))
    coded = pa.DictionaryArray.from_arrays(pa.array([i % 7 for i in range(40)], pa.int32()),
                                           pa.array(digests[:7], pa.binary(32)))
    ids = np.concatenate([_hmac_ids(pa.chunked_array([coded])), _hmac_ids(pa.chunked_array([plain.slice(40)]))])
    want = np.array([int.from_bytes(d[:8], "little", signed=True) for d in rows], np.int64)
    assert ids.tolist() == want.tolist()
    assert len(set(ids.tolist())) == len(set(rows)) == 47
    assert _hmac_ids(pa.chunked_array([plain])).tolist() == want.tolist()
