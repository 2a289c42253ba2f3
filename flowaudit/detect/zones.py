"""Named internal networks (zones), what each may reach, and the port/protocol policy.

A declarative TOML file (schemas/zones.example.toml shows the format; its addresses are
examples) compiles into a :class:`Policy`: an IP set mapping addresses to zone ids, the
allow matrix and the service table for :func:`flowaudit.kernels.policy.evaluate`.

Zone ids: ``0..Z-1`` the named zones (file order), ``Z`` = ``internal`` (internal address space
in no zone), ``Z+1`` = ``internet``.

:class:`SilentMonitor` is the silent-zone check: active crane/scanner hosts (a configured
inventory, plus hosts seen earlier in the monitored zones) that send nothing through the
monitored exporters in a window — what a cellular modem bypassing the crane firewall would look
like from the flow side (domain-facts 3, 6c).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flowaudit.kernels import ipset as _ipset
from flowaudit.kernels import policy as _kp

DEFAULT_INTERNAL = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8",
                    "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10"]
OT_KINDS = ("ot", "scanner")
SEVERITIES = ("info", "low", "medium", "high", "critical")


@dataclass(frozen=True)
class Service:
    name: str
    cls: str          # remote_access | ot_protocol
    proto: str        # tcp | udp | any
    ports: tuple[int, ...]
    source: str
    allow: tuple[tuple[str, str], ...] = ()


_PC = "https://winccoa.com/documentation/WinCCOA/latest/en_US/driver/topics/driver_overview_network.html"
_TV = ("https://www.teamviewer.com/de/global/support/knowledge-base/teamviewer-classic/troubleshooting/"
       "ports-used-by-teamviewer")
# ../shared/domain-facts.md 6c (sourced); SSH from issue 4's list of remote-access services.
DEFAULT_SERVICES = (
    Service("rdp", "remote_access", "tcp", (3389,), "Zeek rdp script: const ports = { 3389/tcp } (domain-facts 6c)"),
    Service("vnc", "remote_access", "tcp", (5900,), "nmap realvnc-auth-bypass output (weak source; domain-facts 6c)"),
    Service("teamviewer", "remote_access", "any", (5938,), _TV),
    Service("ssh", "remote_access", "tcp", (22,), "flowaudit issue 4 (remote-access services: SSH 22); IANA ssh 22/tcp"),
    Service("telnet", "remote_access", "tcp", (23,), "IANA service name and port number registry: telnet 23/tcp"),
    Service("modbus", "ot_protocol", "tcp", (502,), "Zeek modbus main.zeek: const ports = { 502/tcp }; "
            "https://docs.fortinet.com/document/fortigate/7.6.5/administration-guide/635285"),
    Service("s7comm", "ot_protocol", "tcp", (102,), "cisagov/icsnpp-s7comm:scripts/icsnpp/s7comm/dpd.sig; " + _PC),
    Service("enip", "ot_protocol", "tcp", (44818,), "cisagov/icsnpp-enip:scripts/icsnpp/enip/dpd.sig; " + _PC),
    Service("enip_io", "ot_protocol", "udp", (2222,), _PC + " (EtherNet/IP implicit I/O)"),
    Service("dnp3", "ot_protocol", "any", (20000,), _PC),
    Service("iec104", "ot_protocol", "tcp", (2404,), _PC),
    Service("opcua", "ot_protocol", "tcp", (4840,), _PC),
    Service("mqtt", "ot_protocol", "tcp", (1883, 8883), _PC),
)
_PROTO = {"any": 0, "tcp": 6, "udp": 17}


class PolicyError(ValueError):
    """A zone policy file failed validation (one line)."""


@dataclass(frozen=True)
class Zone:
    name: str
    kind: str
    cidrs: tuple[str, ...]
    may_reach: tuple[str, ...]
    severity: str


@dataclass
class Policy:
    version: str
    zones: list[Zone]
    services: list[Service]
    zone_set: _ipset.IPSet            # entry -> zone id (zone_of_entry)
    zone_of_entry: np.ndarray
    internal_set: _ipset.IPSet
    cidr_set: _ipset.IPSet            # declared destination prefixes (may_reach cidr:...)
    zone_kind: np.ndarray             # uint8 (Z+2): 1 OT/scanner
    allow: np.ndarray                 # uint8 (Z+2, Z+2)
    cidr_allow: np.ndarray            # uint8 (Z+2, C)
    svc_proto: np.ndarray             # uint8 per (service, port) row
    svc_port: np.ndarray              # uint16
    svc_index: np.ndarray             # row -> service index
    svc_allow: np.ndarray             # uint8 (rows, Z+2, Z+2)
    allowed_platforms: dict[int, frozenset] = field(default_factory=dict)  # zone id -> platforms
    inventory_hosts: tuple[str, ...] = ()
    inventory_zones: tuple[str, ...] = ()

    @property
    def n_zones(self) -> int:
        return len(self.zones)

    @property
    def zone_names(self) -> list[str]:
        """Names by id, including the two classes after the named zones."""
        return [z.name for z in self.zones] + ["internal", "internet"]

    @property
    def rule_names(self) -> list[str]:
        """Names by rule id of :func:`flowaudit.kernels.policy.evaluate`."""
        return ["ot_zone_to_internet", "internet_to_ot_zone", "zone_not_allowed"] + [
            f"{self.services[int(k)].cls}:{self.services[int(k)].name}" for k in self.svc_index]

    def service_of(self, dst_port, protocol) -> np.ndarray:
        """Service index (into :attr:`services`) per flow from its destination port and protocol,
        -1 where no service claims the port; the first service row in table order wins, as in
        :func:`flowaudit.kernels.policy.evaluate`."""
        port = np.asarray(dst_port).astype(np.int64)
        proto = np.asarray(protocol).astype(np.int64)
        out = np.full(port.shape[0], -1, np.int32)
        for k in range(self.svc_port.shape[0] - 1, -1, -1):   # backwards: earlier rows overwrite
            hit = (port == int(self.svc_port[k])) & ((int(self.svc_proto[k]) == 0) | (proto == int(self.svc_proto[k])))
            out[hit] = self.svc_index[k]
        return out

    def zone_kind_name(self, zid: int) -> str:
        if 0 <= zid < self.n_zones:
            return self.zones[zid].kind
        return "internet" if zid == self.n_zones + 1 else "internal"

    def classify(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Zone id per address: a named zone, else internal (Z), else internet (Z+1)."""
        e = self.zone_set.lookup(hi, lo)
        z = np.where(e >= 0, self.zone_of_entry[np.maximum(e, 0)] if self.zone_of_entry.size else 0,
                     -1).astype(np.int32)
        none = z < 0
        if none.any():
            internal = self.internal_set.lookup(hi[none], lo[none]) >= 0
            z[none] = np.where(internal, self.n_zones, self.n_zones + 1)
        return z

    def evaluate(self, src_zone, dst_zone, dst_hi, dst_lo, dst_port, protocol) -> np.ndarray:
        """Rule id per flow (index into :attr:`rule_names`), -1: none."""
        n = np.asarray(src_zone).shape[0]
        dst_cidr = self.cidr_set.lookup(dst_hi, dst_lo) if self.cidr_set.n_entries else np.full(n, -1, np.int32)
        return _kp.evaluate(np.ascontiguousarray(src_zone, np.int32), np.ascontiguousarray(dst_zone, np.int32),
                            dst_cidr, np.ascontiguousarray(dst_port, np.uint16),
                            np.ascontiguousarray(protocol, np.uint8), self.n_zones, self.zone_kind,
                            self.allow, self.cidr_allow, self.svc_proto, self.svc_port, self.svc_allow,
                            np.empty(n, np.int32))

    def rule_severity(self, rule: int, src_zone: int, dst_zone: int) -> str:
        if rule < 0:
            return "info"
        if rule in (_kp.RULE_OT_INTERNET, _kp.RULE_INTERNET_OT):
            return "critical"
        ot = self.zone_kind[src_zone] == 1 or self.zone_kind[dst_zone] == 1
        if rule == _kp.RULE_NOT_ALLOWED:
            return "high" if ot else self.zones[src_zone].severity if src_zone < self.n_zones else "medium"
        return "high" if ot else "medium"


def _fail(file: str, where: str, what: str):
    raise PolicyError(f"policy: {file}: {where}: {what}".replace("\n", " "))


def load(path: str | Path) -> Policy:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        _fail(str(path), "file", f"cannot read ({type(e).__name__})")
    except tomllib.TOMLDecodeError as e:
        _fail(str(path), "toml", str(e))
    return from_dict(data, str(path))


def from_dict(data: dict, file: str = "<policy>") -> Policy:
    unknown = set(data) - {"version", "format", "network", "zones", "services", "inventory",
                         "applications"}  # applications: flowaudit/detect/inventory.py
    if unknown:
        _fail(file, "top level", f"unknown key(s) {sorted(unknown)}")
    version = data.get("version")
    if not isinstance(version, str) or not version:
        _fail(file, "version", "a non-empty string is required")
    internal = (data.get("network") or {}).get("internal", [])
    zones: list[Zone] = []
    raw_zones = data.get("zones") or {}
    if not isinstance(raw_zones, dict):
        _fail(file, "zones", "must be a table of [zones.NAME]")
    for name, spec in raw_zones.items():
        where = f"zones.{name}"
        if name in ("internet", "internal") or not name.replace("_", "").replace("-", "").isalnum():
            _fail(file, where, "zone names are letters, digits, _ and -, not internet/internal")
        extra = set(spec) - {"kind", "cidrs", "may_reach", "severity", "description"}
        if extra:
            _fail(file, where, f"unknown key(s) {sorted(extra)}")
        cidrs = spec.get("cidrs")
        if not isinstance(cidrs, list) or not cidrs:
            _fail(file, where, "cidrs: a non-empty list is required")
        for c in cidrs:
            try:
                _ipset.parse_prefix(c)
            except (ValueError, AttributeError) as e:
                _fail(file, where, f"bad cidr {c!r} ({e})")
        sev = spec.get("severity", "medium")
        if sev not in SEVERITIES:
            _fail(file, where, f"severity {sev!r} not one of {SEVERITIES}")
        zones.append(Zone(name, str(spec.get("kind", "it")), tuple(cidrs), tuple(spec.get("may_reach", [])), sev))
    names = [z.name for z in zones]
    Z = len(zones)
    cls_id = {n: i for i, n in enumerate(names)} | {"internal": Z, "internet": Z + 1}

    services = {s.name: s for s in DEFAULT_SERVICES}
    for i, spec in enumerate(data.get("services") or []):
        where = f"services[{i}]"
        try:
            ports = tuple(int(p) for p in spec["ports"])
            s = Service(str(spec["name"]), spec.get("class", "remote_access"), spec.get("proto", "tcp"), ports,
                        str(spec["source"]),
                        tuple(tuple(x.split("->", 1)) for x in spec.get("allow", [])))
        except (KeyError, TypeError, ValueError) as e:
            _fail(file, where, f"name, ports and source are required ({type(e).__name__}: {e})")
        if s.cls not in ("remote_access", "ot_protocol") or s.proto not in _PROTO:
            _fail(file, where, "class remote_access|ot_protocol, proto tcp|udp|any")
        if not all(0 < p < 65536 for p in ports):
            _fail(file, where, "ports must be 1..65535")
        for a, b in s.allow:
            if a not in cls_id or b not in cls_id:
                _fail(file, where, f"allow {a}->{b}: unknown zone")
        services[s.name] = s
    svc_list = list(services.values())

    allow = np.zeros((Z + 2, Z + 2), np.uint8)
    cidrs: list[str] = []
    cidr_pairs: list[tuple[int, int]] = []
    allowed_platforms: dict[int, frozenset] = {}
    for zi, z in enumerate(zones):
        allow[zi, zi] = 1
        plats = set()
        for dst in z.may_reach:
            if dst.startswith("cidr:"):
                try:
                    _ipset.parse_prefix(dst[5:])
                except ValueError as e:
                    _fail(file, f"zones.{z.name}", f"may_reach {dst!r} ({e})")
                cidr_pairs.append((zi, len(cidrs)))
                cidrs.append(dst[5:])
            elif dst.startswith("platform:"):
                plats.add(dst[9:])
            elif dst in cls_id:
                allow[zi, cls_id[dst]] = 1
            else:
                _fail(file, f"zones.{z.name}", f"may_reach {dst!r}: not a zone, internet, internal, cidr: or platform:")
        allowed_platforms[zi] = frozenset(plats)
    cidr_allow = np.zeros((Z + 2, max(len(cidrs), 1)), np.uint8)
    for zi, ci in cidr_pairs:
        cidr_allow[zi, ci] = 1
    zone_kind = np.zeros(Z + 2, np.uint8)
    for zi, z in enumerate(zones):
        zone_kind[zi] = 1 if z.kind in OT_KINDS else 0

    rows_proto, rows_port, rows_svc = [], [], []
    for si, s in enumerate(svc_list):
        for p in s.ports:
            rows_proto.append(_PROTO[s.proto])
            rows_port.append(p)
            rows_svc.append(si)
    svc_allow = np.zeros((len(rows_svc), Z + 2, Z + 2), np.uint8)
    for r, si in enumerate(rows_svc):
        for a, b in svc_list[si].allow:
            svc_allow[r, cls_id[a], cls_id[b]] = 1

    entries, zone_of = [], []
    for zi, z in enumerate(zones):
        for c in z.cidrs:
            entries.append(c)
            zone_of.append(zi)
    inv = data.get("inventory") or {}
    inv_hosts = tuple(inv.get("hosts", []))
    for h in inv_hosts:
        try:
            _ipset.addr_key(h)
        except ValueError:
            _fail(file, "inventory.hosts", f"bad address {h!r}")
    inv_zones = tuple(inv.get("zones", []))
    for zn in inv_zones:
        if zn not in names:
            _fail(file, "inventory.zones", f"unknown zone {zn!r}")
    return Policy(
        version=version, zones=zones, services=svc_list, zone_set=_ipset.IPSet(entries),
        zone_of_entry=np.asarray(zone_of, np.int32), internal_set=_ipset.IPSet(DEFAULT_INTERNAL + list(internal)),
        cidr_set=_ipset.IPSet(cidrs), zone_kind=zone_kind, allow=allow, cidr_allow=cidr_allow,
        svc_proto=np.asarray(rows_proto, np.uint8), svc_port=np.asarray(rows_port, np.uint16),
        svc_index=np.asarray(rows_svc, np.int32), svc_allow=svc_allow, allowed_platforms=allowed_platforms,
        inventory_hosts=inv_hosts, inventory_zones=inv_zones)


def empty_policy() -> Policy:
    """No zones: every internal address is ``internal``, the rest ``internet``; service rules only."""
    return from_dict({"version": "none"})


class SilentMonitor:
    """Silent-zone check over windows of flows.

    The expected senders are the inventory hosts plus every host of the monitored zones seen
    sending in an earlier window (at most ``max_learned``, oldest forgotten first).  After each
    window, :meth:`window` returns the expected hosts that sent nothing through the exporters.
    """

    def __init__(self, policy: Policy, *, hosts=None, zones=None, max_learned: int = 65_536):
        self.policy = policy
        self.inventory = {_ipset.addr_key(h) for h in (policy.inventory_hosts if hosts is None else hosts)}
        zones = policy.inventory_zones if zones is None else zones
        self.zone_ids = np.asarray([policy.zone_names.index(z) for z in zones], np.int32)
        self.max_learned = max_learned
        self.learned: dict[tuple[int, int], None] = {}

    def window(self, src_hi: np.ndarray, src_lo: np.ndarray) -> list[str]:
        """The flows of one window (their source addresses) -> expected hosts that were silent."""
        src_hi = np.asarray(src_hi, np.uint64)
        src_lo = np.asarray(src_lo, np.uint64)
        sent = set()
        if src_hi.size:
            pairs = np.unique(np.stack([src_hi, src_lo], axis=1), axis=0)
            sent = {(int(h), int(w)) for h, w in pairs}
        expected = self.inventory | set(self.learned)
        silent = sorted(expected - sent)
        if self.zone_ids.size and src_hi.size:
            uh = np.fromiter((k[0] for k in sent), np.uint64, count=len(sent))
            ul = np.fromiter((k[1] for k in sent), np.uint64, count=len(sent))
            z = self.policy.classify(uh, ul)
            for h, w, zz in zip(uh.tolist(), ul.tolist(), z.tolist()):
                if zz in self.zone_ids:
                    self.learned.pop((h, w), None)
                    self.learned[(h, w)] = None
            while len(self.learned) > self.max_learned:
                self.learned.pop(next(iter(self.learned)))
        return [_ipset.key_text(h, w) for h, w in silent]
