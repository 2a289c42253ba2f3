"""Zone and port/protocol policy over flow arrays: one rule id per flow, or -1.

Inputs per flow: source and destination zone ids (from the zone IP set; see
:mod:`flowaudit.zones`: ``0..Z-1`` named zones, ``Z`` = internal but in no zone, ``Z+1`` =
internet), destination port and IP protocol.  Tables:

* ``zone_kind`` (Z+2): 1 = OT or scanner zone (no internet at all), 0 otherwise;
* ``allow`` (Z+2, Z+2) uint8: 1 where the source zone may reach the destination class;
* ``dst_cidr`` per flow: the declared destination prefix holding the destination (-1 none) and
  ``cidr_allow`` (Z+2, C) uint8: 1 where the source zone may reach that prefix;
* services: ``svc_proto`` (0 = tcp and udp), ``svc_port``, ``svc_class`` (0 remote access,
  1 OT protocol), ``svc_allow`` (S, Z+2, Z+2) uint8: zone pairs a service may cross.

Rules, first match wins (most severe first):

0. ``ot_zone_to_internet``: an OT/scanner source zone, internet destination;
1. ``internet_to_ot_zone``: internet source, OT/scanner destination zone;
2. ``3 + s``: service ``s`` (remote access or OT protocol) on the destination port crossing a
   zone boundary (source zone != destination zone) that the service does not allow;
3. ``2`` ``zone_not_allowed``: a named source zone reaching a class not in its ``may_reach``.
"""
from __future__ import annotations

from ._jit import kernel

RULE_OT_INTERNET = 0
RULE_INTERNET_OT = 1
RULE_NOT_ALLOWED = 2
RULE_SERVICE_BASE = 3


@kernel
def evaluate(src_zone, dst_zone, dst_cidr, dst_port, protocol, n_zones, zone_kind, allow, cidr_allow,
             svc_proto, svc_port, svc_allow, out):
    internet = n_zones + 1
    n_svc = svc_port.shape[0]
    for i in range(src_zone.shape[0]):
        s = src_zone[i]
        d = dst_zone[i]
        if s < 0 or s > internet or d < 0 or d > internet:
            out[i] = -1
            continue
        c = dst_cidr[i]
        # a declared destination prefix (may_reach "cidr:...") lifts the zone rules, not the service rules
        lifted = c >= 0 and c < cidr_allow.shape[1] and cidr_allow[s, c] == 1
        if d == internet and zone_kind[s] == 1 and not lifted:
            out[i] = RULE_OT_INTERNET
            continue
        if s == internet and zone_kind[d] == 1:
            out[i] = RULE_INTERNET_OT
            continue
        r = -1
        if s != d:
            p = dst_port[i]
            pr = protocol[i]
            for k in range(n_svc):
                if svc_port[k] == p and (svc_proto[k] == 0 or svc_proto[k] == pr):
                    if svc_allow[k, s, d] == 0:
                        r = RULE_SERVICE_BASE + k
                        break
            if r < 0 and s < n_zones and allow[s, d] == 0 and not lifted:
                r = RULE_NOT_ALLOWED
        out[i] = r
    return out
