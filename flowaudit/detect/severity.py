"""The severity model of findings: schemas/severity.toml, declarative and versioned.

``score = max(platform weight, rule weight) + zone-kind weight + sensitivity weight x exposure
factor + volume points``; the level is the highest one whose minimum the score reaches.  The
file's comments explain each table; :func:`load` merges an operator file over the shipped one,
key by key.  :meth:`SeverityModel.assess` returns the level, the score, the reasons (one line
per term that added points) and the basis ids of one finding.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from flowaudit import schemas

LEVELS = ("info", "low", "medium", "high", "critical")   # worst last; flowaudit's severity names
SENSITIVITIES = ("low", "medium", "high")
EXPOSURES = ("observed", "inferred", "none")
_TOP = {"version", "format", "levels", "tiers", "platforms", "default", "rules", "zone_kinds", "sensitivity",
        "exposure", "volume", "basis"}


class SeverityModelError(ValueError):
    """A severity model file failed validation (one line)."""


@dataclass(frozen=True)
class Basis:
    id: str
    title: str
    source: str


@dataclass(frozen=True)
class SeverityModel:
    version: str
    levels: tuple[tuple[str, float], ...]        # (level, minimum score), highest minimum first
    tiers: dict[str, float]
    platform_tier: dict[str, str]
    platform_basis: dict[str, tuple[str, ...]]
    default_basis: tuple[str, ...]
    rules: dict[str, tuple[float, tuple[str, ...]]]   # exact name or "prefix:*" -> (weight, basis)
    zone_kinds: dict[str, float]
    sensitivity: dict[str, float]
    exposure: dict[str, float]
    volume: tuple[tuple[int, int, float], ...]    # (min messages, min bytes, points), largest first
    basis: dict[str, Basis]

    def level_of(self, score: float) -> str:
        for name, lo in self.levels:
            if score >= lo:
                return name
        return self.levels[-1][0]

    def rule(self, name: str) -> tuple[float, tuple[str, ...]] | None:
        if name in self.rules:
            return self.rules[name]
        head = name.split(":", 1)[0]
        return self.rules.get(f"{head}:*") if ":" in name else None

    def assess(self, *, platform: str, rule: str, transfer_severity: str, zone_kind: str | None,
               max_sensitivity: str | None, exposure: str, messages: int, bytes_scaled: int
               ) -> tuple[str, float, list[str], list[str]]:
        """(level, score, reasons, basis ids) of one finding."""
        reasons: list[str] = []
        basis: list[str] = []
        p_weight = 0.0
        if platform != "policy":
            tier = self.platform_tier.get(platform, "watchlist")
            if transfer_severity == "info":
                tier = "informational"
            p_weight = self.tiers.get(tier, 0.0)
            reasons.append(f"platform {platform}: {tier} (+{p_weight:g})")
            basis.extend(self.platform_basis.get(platform, self.default_basis))
        r_weight = 0.0
        r = self.rule(rule) if rule != "watchlist" else None
        if r is not None:
            r_weight, r_basis = r
            reasons.append(f"rule {rule} (+{r_weight:g})")
            basis.extend(r_basis)
        elif rule != "watchlist":
            basis.extend(self.default_basis)
        score = max(p_weight, r_weight)
        if p_weight and r_weight:
            reasons.append(f"the larger of platform and rule counts ({score:g})")
        z = self.zone_kinds.get(zone_kind or "", 0.0)
        if z:
            score += z
            reasons.append(f"asset in a zone of kind {zone_kind} (+{z:g})")
        if max_sensitivity:
            s = self.sensitivity.get(max_sensitivity, 0.0) * self.exposure.get(exposure, 0.0)
            if s:
                score += s
                reasons.append(f"{max_sensitivity}-sensitivity data, {exposure} (+{s:g})")
        for min_m, min_b, pts in self.volume:
            if messages >= min_m or bytes_scaled >= min_b:
                score += pts
                what = [f"{messages:,} messages"] if messages else []
                what += [f"{bytes_scaled:,} bytes"] if bytes_scaled else []
                reasons.append(f"volume: {', '.join(what)} (+{pts:g})")
                break
        level = self.level_of(score)
        return level, score, reasons, sorted(set(basis), key=basis.index)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _fail(file: str, what: str):
    raise SeverityModelError(f"severity model: {file}: {what}")


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        _fail(str(path), f"cannot read ({type(e).__name__})")
    except tomllib.TOMLDecodeError as e:
        _fail(str(path), str(e))


def load(override: str | Path | dict | None = None) -> SeverityModel:
    """The shipped model, with an operator file (or dict) merged over it key by key."""
    data = _read(schemas.path("severity.toml"))
    file = "schemas/severity.toml"
    if override is not None:
        over = override if isinstance(override, dict) else _read(Path(override))
        file = "<override>" if isinstance(override, dict) else str(override)
        unknown = set(over) - _TOP
        if unknown:
            _fail(file, f"unknown key(s) {sorted(unknown)}")
        data = _merge(data, over)
    return from_dict(data, file)


def from_dict(data: dict, file: str = "<model>") -> SeverityModel:
    def num(v, where):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            _fail(file, f"{where}: a number is required, got {v!r}")
        return float(v)

    version = data.get("version")
    if not isinstance(version, str) or not version:
        _fail(file, "version: a non-empty string is required")
    levels = data.get("levels") or {}
    if set(levels) != set(LEVELS):
        _fail(file, f"levels: exactly {list(LEVELS)} are required")
    lv = sorted(((k, num(v, f"levels.{k}")) for k, v in levels.items()), key=lambda kv: -kv[1])
    if [k for k, _ in lv] != list(reversed(LEVELS)):
        _fail(file, "levels: minimums must rise from info to critical")
    tiers = {k: num(v, f"tiers.{k}") for k, v in (data.get("tiers") or {}).items()}
    for t in ("prohibited", "watchlist", "informational"):
        if t not in tiers:
            _fail(file, f"tiers.{t} is required")
    basis = {}
    for bid, spec in (data.get("basis") or {}).items():
        if not isinstance(spec, dict) or not spec.get("title") or not spec.get("source"):
            _fail(file, f"basis.{bid}: title and source are required")
        basis[bid] = Basis(bid, str(spec["title"]), str(spec["source"]))

    def basis_list(v, where):
        v = tuple(v or ())
        for b in v:
            if b not in basis:
                _fail(file, f"{where}: unknown basis {b!r}")
        return v

    default_basis = basis_list((data.get("default") or {}).get("basis"), "default.basis")
    p_tier, p_basis = {}, {}
    for name, spec in (data.get("platforms") or {}).items():
        t = spec.get("tier", "watchlist")
        if t not in tiers:
            _fail(file, f"platforms.{name}.tier {t!r} is not a tier")
        p_tier[name] = t
        if "basis" in spec:
            p_basis[name] = basis_list(spec["basis"], f"platforms.{name}.basis")
    rules = {}
    for name, spec in (data.get("rules") or {}).items():
        if not isinstance(spec, dict):
            _fail(file, f"rules.{name}: a table with weight (and basis) is required")
        rules[name] = (num(spec.get("weight"), f"rules.{name}.weight"),
                       basis_list(spec.get("basis", default_basis), f"rules.{name}.basis"))
    sens = {k: num(v, f"sensitivity.{k}") for k, v in (data.get("sensitivity") or {}).items()}
    if set(sens) - set(SENSITIVITIES):
        _fail(file, f"sensitivity: only {list(SENSITIVITIES)}")
    expo = {k: num(v, f"exposure.{k}") for k, v in (data.get("exposure") or {}).items()}
    if set(expo) != set(EXPOSURES):
        _fail(file, f"exposure: exactly {list(EXPOSURES)} are required")
    vol = []
    for i, step in enumerate(data.get("volume") or []):
        vol.append((int(num(step.get("min_messages", 2**62), f"volume[{i}].min_messages")),
                    int(num(step.get("min_bytes", 2**62), f"volume[{i}].min_bytes")),
                    num(step.get("points"), f"volume[{i}].points")))
    vol.sort(key=lambda s: -s[2])
    zk = {k: num(v, f"zone_kinds.{k}") for k, v in (data.get("zone_kinds") or {}).items()}
    return SeverityModel(str(version), tuple(lv), tiers, p_tier, p_basis, default_basis, rules, zk, sens, expo,
                         tuple(vol), basis)
