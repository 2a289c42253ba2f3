"""flowaudit/detect/zones.py + kernels/policy.py: zone classification, the policy matrix, silent hosts."""
from __future__ import annotations

import ipaddress

import numpy as np
from hypothesis import given, settings, strategies as st

from flowaudit import schemas
from flowaudit.detect import zones as Z
from flowaudit.kernels import ipset as K

POL = Z.load(schemas.path("zones.example.toml"))
ZN = POL.zone_names
HOSTS = {"tos": "10.10.0.5", "crane_ot": "10.20.1.10", "crane6": "2001:db8:20::10", "scanner": "10.30.0.5",
         "it": "10.40.1.5", "it2": "192.0.2.10", "dmz": "192.0.2.200", "internal": "172.16.0.1",
         "internet": "8.8.8.8", "internet6": "2a00::1", "datacentre": "198.51.100.3", "doc": "198.51.100.100"}


def ref_zone(addr: str) -> str:
    a = ipaddress.ip_address(addr)
    best, blen = None, -1
    for z in POL.zones:
        for c in z.cidrs:
            n = ipaddress.ip_network(c)
            if n.version == a.version and a in n and n.prefixlen > blen:
                best, blen = z.name, n.prefixlen
    if best:
        return best
    internal = Z.DEFAULT_INTERNAL + ["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32"]
    if any(a.version == ipaddress.ip_network(c).version and a in ipaddress.ip_network(c) for c in internal):
        return "internal"
    return "internet"


def ref_rule(src: str, dst: str, port: int, proto: int) -> str | None:
    """The policy in plain Python, read straight off the example file."""
    zs, zd = ref_zone(src), ref_zone(dst)
    kind = {z.name: z.kind for z in POL.zones}
    may = {z.name: z.may_reach for z in POL.zones}
    lifted = zs in may and any(m.startswith("cidr:") and ipaddress.ip_address(dst) in ipaddress.ip_network(m[5:])
                               for m in may[zs])
    if zd == "internet" and kind.get(zs) in ("ot", "scanner") and not lifted:
        return "ot_zone_to_internet"
    if zs == "internet" and kind.get(zd) in ("ot", "scanner"):
        return "internet_to_ot_zone"
    if zs == zd:
        return None
    for s in POL.services:
        if port in s.ports and (s.proto == "any" or {"tcp": 6, "udp": 17}[s.proto] == proto):
            if (zs, zd) not in s.allow:
                return f"{s.cls}:{s.name}"
            break
    if zs in may and zd not in may[zs] and not lifted:
        return "zone_not_allowed"
    return None


def test_classify_matches_reference():
    addrs = list(HOSTS.values())
    hi, lo = K.keys_of(addrs)
    got = [ZN[z] for z in POL.classify(hi, lo)]
    assert got == [ref_zone(a) for a in addrs]


def _evaluate(rows):
    src = [r[0] for r in rows]
    dst = [r[1] for r in rows]
    sh, sl = K.keys_of(src)
    dh, dl = K.keys_of(dst)
    rule = POL.evaluate(POL.classify(sh, sl), POL.classify(dh, dl), dh, dl,
                        np.array([r[2] for r in rows], np.uint16), np.array([r[3] for r in rows], np.uint8))
    return [POL.rule_names[r] if r >= 0 else None for r in rule]


PORTS = [22, 23, 80, 102, 443, 502, 1883, 2222, 2404, 3389, 4840, 5900, 5938, 8883, 20000, 44818]


def ref_service(port: int, proto: int) -> str | None:
    """The service a destination port names, read straight off the policy's service list."""
    for s in POL.services:
        if port in s.ports and (s.proto == "any" or {"tcp": 6, "udp": 17}[s.proto] == proto):
            return s.name
    return None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(HOSTS.values())), st.sampled_from(sorted(HOSTS.values())),
                          st.sampled_from(PORTS), st.sampled_from([6, 17])), min_size=1, max_size=30))
def test_policy_matrix_matches_reference(rows):
    assert _evaluate(rows) == [ref_rule(*r) for r in rows]
    svc = POL.service_of(np.array([r[2] for r in rows], np.uint16), np.array([r[3] for r in rows], np.uint8))
    assert [POL.services[k].name if k >= 0 else None for k in svc] == [ref_service(r[2], r[3]) for r in rows]


def test_service_names():
    got = POL.service_of(np.array([3389, 22, 23, 5900, 5938, 5938, 502, 102, 20000, 20000, 2222, 2222, 443]),
                         np.array([6, 6, 6, 6, 6, 17, 6, 6, 6, 17, 17, 6, 6]))
    assert [POL.services[k].name if k >= 0 else None for k in got] == [
        "rdp", "ssh", "telnet", "vnc", "teamviewer", "teamviewer", "modbus", "s7comm", "dnp3", "dnp3", "enip_io",
        None, None]


def test_policy_examples():
    H = HOSTS
    cases = [
        ((H["crane_ot"], H["internet"], 443, 6), "ot_zone_to_internet"),
        ((H["crane6"], H["internet6"], 443, 6), "ot_zone_to_internet"),
        ((H["scanner"], H["internet"], 443, 6), "ot_zone_to_internet"),
        ((H["scanner"], H["datacentre"], 443, 6), None),                 # declared image data centre
        ((H["scanner"], H["doc"], 443, 6), "zone_not_allowed"),         # beyond the lane and the data centre
        ((H["internet"], H["crane_ot"], 3389, 6), "internet_to_ot_zone"),
        ((H["it"], H["crane_ot"], 3389, 6), "remote_access:rdp"),
        ((H["it"], H["internet"], 5938, 17), "remote_access:teamviewer"),
        ((H["it"], H["tos"], 22, 6), None),                              # allowed by the example's ssh rule
        ((H["it"], H["crane_ot"], 22, 6), "remote_access:ssh"),
        ((H["it"], H["crane_ot"], 23, 6), "remote_access:telnet"),
        ((H["tos"], H["crane_ot"], 502, 6), "ot_protocol:modbus"),
        ((H["tos"], H["crane_ot"], 2222, 17), "ot_protocol:enip_io"),
        ((H["tos"], H["crane_ot"], 2222, 6), None),                      # EtherNet/IP I/O is udp
        ((H["crane_ot"], "10.20.9.9", 502, 6), None),                    # inside one zone
        ((H["it"], H["internet"], 443, 6), None),
        ((H["dmz"], H["it"], 443, 6), "zone_not_allowed"),
        ((H["crane_ot"], H["it"], 443, 6), "zone_not_allowed"),
    ]
    assert _evaluate([c[0] for c in cases]) == [c[1] for c in cases]


def test_bad_policy_one_line_errors(tmp_path):
    import pytest
    for text, frag in [('version="1"\n[zones.a]\ncidrs=["10.0.0.0/33"]\n', "bad cidr"),
                       ('version="1"\n[zones.a]\ncidrs=["10.0.0.0/8"]\nmay_reach=["nowhere"]\n', "nowhere"),
                       ('version="1"\n[zones.internet]\ncidrs=["10.0.0.0/8"]\n', "zone names"),
                       ('[zones.a]\ncidrs=["10.0.0.0/8"]\n', "version")]:
        p = tmp_path / "p.toml"
        p.write_text(text)
        with pytest.raises(Z.PolicyError) as e:
            Z.load(p)
        assert frag in str(e.value) and "\n" not in str(e.value)


def test_silent_hosts():
    mon = Z.SilentMonitor(POL)  # inventory 10.20.1.10, 10.20.1.11, 10.20.2.10; learns crane_ot senders
    sh, sl = K.keys_of(["10.20.1.10", "10.20.5.5", "10.40.1.5"])
    assert mon.window(sh, sl) == ["10.20.1.11", "10.20.2.10"]
    # next window: 10.20.5.5 was seen before (crane_ot) and now is silent too; the it host is not tracked
    sh, sl = K.keys_of(["10.20.1.10", "10.20.1.11", "10.20.2.10"])
    assert mon.window(sh, sl) == ["10.20.5.5"]
    # an empty window: every expected host is silent
    assert mon.window(np.zeros(0, np.uint64), np.zeros(0, np.uint64)) == ["10.20.1.10", "10.20.1.11",
                                                                          "10.20.2.10", "10.20.5.5"]


def test_silent_learned_bounded():
    mon = Z.SilentMonitor(POL, hosts=[], max_learned=4)
    sh, sl = K.keys_of([f"10.20.0.{i}" for i in range(10)])
    mon.window(sh, sl)
    assert len(mon.learned) == 4
