"""The application inventory of the zone policy: which hosts run which application, and which
Kafka topics each application produces or consumes.

It lives in the same TOML file as the zones (``schemas/zones.example.toml``)::

    [[applications]]
    name = "edi-gateway"
    hosts = ["192.0.2.130", "192.0.2.131"]      # addresses or CIDR prefixes
    topics = ["port.edifact", "port.x12"]
    description = "..."                           # optional

The findings correlation (:mod:`flowaudit.detect.findings`) uses it twice: a flow from an
inventory host to a platform exposes the classes seen on that host's topics (``inferred``), and a
message-borne finding names the application that produces the message's topic.  The zone kinds
(``[zones.NAME] kind``) come from the same file, for the severity model.
"""
from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


class InventoryError(ValueError):
    """The application inventory failed validation (one line)."""


@dataclass(frozen=True)
class Application:
    name: str
    hosts: tuple[str, ...]
    topics: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class Inventory:
    version: str = "none"
    applications: tuple[Application, ...] = ()
    zone_kinds: dict = field(default_factory=dict)     # zone name -> kind (ot, scanner, it, ...)

    def _nets(self):
        nets = getattr(self, "_net_cache", None)
        if nets is None:
            nets = [(ipaddress.ip_network(h, strict=False), a) for a in self.applications for h in a.hosts]
            object.__setattr__(self, "_net_cache", nets)
        return nets

    def apps_for_host(self, addr: str | None) -> tuple[Application, ...]:
        """The applications whose hosts include ``addr`` (file order)."""
        if not addr:
            return ()
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return ()
        seen: list[Application] = []
        for net, app in self._nets():
            if ip.version == net.version and ip in net and app not in seen:
                seen.append(app)
        return tuple(seen)

    def apps_for_topic(self, topic: str | None) -> tuple[Application, ...]:
        return tuple(a for a in self.applications if topic in a.topics)

    def zone_kind(self, zone: str | None) -> str | None:
        if zone is None:
            return None
        if zone in ("internet", "internal"):
            return zone
        return self.zone_kinds.get(zone)


def _fail(file: str, where: str, what: str):
    raise InventoryError(f"inventory: {file}: {where}: {what}")


def from_dict(data: dict, file: str = "<policy>") -> Inventory:
    """The ``[[applications]]`` and zone kinds of a parsed zone-policy TOML document."""
    apps: list[Application] = []
    raw = data.get("applications") or []
    if not isinstance(raw, list):
        _fail(file, "applications", "must be an array of tables ([[applications]])")
    names = set()
    for i, spec in enumerate(raw):
        where = f"applications[{i}]"
        if not isinstance(spec, dict):
            _fail(file, where, "must be a table")
        extra = set(spec) - {"name", "hosts", "topics", "description"}
        if extra:
            _fail(file, where, f"unknown key(s) {sorted(extra)}")
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            _fail(file, where, "name: a non-empty string is required")
        if name in names:
            _fail(file, where, f"name {name!r} used twice")
        names.add(name)
        hosts = spec.get("hosts", [])
        topics = spec.get("topics", [])
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            _fail(file, where, "hosts: a list of addresses or CIDR prefixes is required")
        for h in hosts:
            try:
                ipaddress.ip_network(h, strict=False)
            except ValueError as e:
                _fail(file, where, f"bad host {h!r} ({e})")
        if not isinstance(topics, list) or not all(isinstance(t, str) and t for t in topics):
            _fail(file, where, "topics: a list of topic names is required")
        apps.append(Application(name, tuple(hosts), tuple(topics), str(spec.get("description", ""))))
    kinds = {str(z): str((spec or {}).get("kind", "it")) for z, spec in (data.get("zones") or {}).items()}
    return Inventory(str(data.get("version", "none")), tuple(apps), kinds)


def load(path: str | Path | None) -> Inventory:
    """The inventory of a zone-policy file (an empty one for None)."""
    if path is None:
        return Inventory()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        _fail(str(path), "file", f"cannot read ({type(e).__name__})")
    except tomllib.TOMLDecodeError as e:
        _fail(str(path), "toml", str(e))
    return from_dict(data, str(path))
