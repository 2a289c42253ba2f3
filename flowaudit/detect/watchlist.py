"""The watchlist: platforms and their typed indicators (schemas/watchlist.toml + operator files).

:func:`compile_files` validates and compiles TOML files into a :class:`CompiledWatchlist`
(immutable: an IP set, host dictionaries, the literal patterns of :mod:`kernels.markers`).
:class:`Watchlist` holds the current compiled object and reloads it atomically: a new object
is built from the files and only then swapped in; a file that fails validation leaves the old
one in place (``last_error`` says why, in one line).  Reload is explicit (:meth:`Watchlist.reload`)
or by polling (:meth:`Watchlist.poll`, which compares each file's mtime and size); no threads.

Matching is exact and case-insensitive for names, never substring (see schemas/watchlist.toml).
A name, path or marker of at least ``B64_MIN_LITERAL`` bytes is also looked for in base64, as
YARA's ``base64`` modifier does it: its three alignments (standard and URL-safe alphabets) are
literals of their own (:func:`base64_aliases`), so a LOGINK URL in a base64 field too short to be
decoded as a layer (``kernels/jsonscan.B64_MIN``) is still seen.  Base64 keeps case, so an
alias is one spelling: names get aliases in lower and in upper case (``GATEWAY.LOGINK.CN`` as
well), case-insensitive markers those and the spelling listed, other literals the spelling
listed; another mixed-case spelling is not seen.  Aliases have no boundaries: an alias match only points at a run, which
:mod:`flowaudit.detect.egress` decodes and matches as text.
"""
from __future__ import annotations

import base64
import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flowaudit import schemas
from flowaudit.kernels import ipset as _ipset
from flowaudit.kernels import markers as _mk

TYPES = ("ip", "cidr", "domain", "host", "host_pattern", "url_path", "payload_marker", "party_code",
         "edi_party")
SEVERITIES = ("info", "low", "medium", "high", "critical")
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_PLATFORM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,47}$")
_TOKEN = re.compile(r"^[\x21-\x7e]{2,128}$")
# aliases only for literals this long (11 base64 characters or more): the shorter ones (/ais/,
# ticket:, x-ca-key) are paths and weak markers, which count only beside a name of their platform,
# and the decoded run around that name's alias is matched whole
B64_MIN_LITERAL = 9


class WatchlistError(ValueError):
    """A watchlist file failed validation; the message is one line: file: where: what."""


@dataclass(frozen=True)
class Platform:
    name: str
    severity: str
    description: str
    source: str
    alert_zone_kinds: tuple[str, ...] = ()   # empty: every zone; else other zones get "info"


@dataclass(frozen=True)
class Indicator:
    id: int
    platform: str
    type: str
    value: str                 # normalised (hosts lower-case, paths as given)
    source: str
    file: str
    key: str = ""              # party_code: the field name
    context: str = "any"       # party_code: "json" or "any"
    weak: bool = False
    case_insensitive: bool = False
    note: str = ""


def normalize_host(name: str) -> str:
    """Lower case, no trailing dot, IDNA for non-ASCII labels."""
    n = name.strip().rstrip(".").lower()
    if n and not n.isascii():
        try:
            n = n.encode("idna").decode("ascii")
        except UnicodeError:   # no valid IDN (an empty or over-long label): kept as is, it matches nothing
            pass
    return n


def _valid_host(n: str, wildcard: bool = False) -> bool:
    labels = n.split(".")
    if len(labels) < 2 or len(n) > 253:
        return False
    for i, lab in enumerate(labels):
        if wildcard and i == 0 and lab.count("*") == 1:
            lab = lab.replace("*", "x")
        if not _LABEL.match(lab):
            return False
    return True


def _host_pattern_regex(p: str) -> re.Pattern:
    first, rest = p.split(".", 1)
    pre, post = first.split("*")
    return re.compile(re.escape(pre) + r"[a-z0-9_-]*" + re.escape(post) + r"\." + re.escape(rest))


@dataclass
class CompiledWatchlist:
    """Everything the detectors need, compiled; never mutated after construction."""

    version: str
    files: tuple[str, ...]
    platforms: dict[str, Platform]
    indicators: list[Indicator]
    ipset: _ipset.IPSet
    ip_indicator: np.ndarray                   # IPSet entry -> indicator id
    hosts: dict[str, int]                      # exact host -> indicator id
    domains: dict[str, int]                    # registered domain -> indicator id
    host_patterns: list[tuple[re.Pattern, int]]
    edi_parties: dict[str, int]                # upper-case id -> indicator id
    patterns: _mk.Patterns                     # payload literals
    pattern_indicator: np.ndarray              # pattern id -> indicator id (then the aliases')
    party_codes: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # key (lower) -> [(VALUE, id)]
    b64_patterns: _mk.Patterns | None = None   # base64 aliases: pattern ids from patterns.n on
    pattern_kind: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))  # pattern id -> kind
    pattern_skip: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))   # an alias: its group's chars before it

    def scan_payloads(self, buf: np.ndarray, offsets: np.ndarray, sel: np.ndarray | None = None) -> tuple:
        """(msg, pattern, start, end) arrays of the literals' and their base64 aliases' matches,
        by message, then start.  The aliases are a second pass with their own filters: mixed
        in, their random-looking pairs would let most positions through the literals' filter."""
        got = self.patterns.scan(buf, offsets, sel)
        if self.b64_patterns is None:
            return got
        more = self.b64_patterns.scan(buf, offsets, sel)
        if not more[0].size:
            return got
        m, p, s, e = (np.concatenate([a, b]) for a, b in zip(got, more))
        p[got[0].size:] += self.patterns.n
        order = np.lexsort((s, m))
        return m[order], p[order], s[order], e[order]

    @property
    def platform_names(self) -> list[str]:
        return sorted(self.platforms)

    def match_host(self, name: str) -> int:
        """Indicator id for a host name (exact host, then host pattern, then the closest
        registered domain), or -1.  Case-insensitive, trailing dot ignored, never substring."""
        n = normalize_host(name) if name else ""
        if not n:
            return -1
        hit = self.hosts.get(n)
        if hit is not None:
            return hit
        for rx, ind in self.host_patterns:
            if rx.fullmatch(n):
                return ind
        labels = n.split(".")
        for i in range(len(labels) - 1):
            hit = self.domains.get(".".join(labels[i:]))
            if hit is not None:
                return hit
        return -1

    def match_edi_party(self, party: str) -> int:
        return self.edi_parties.get(party.strip().upper(), -1)

    def severity_for(self, platform: str, zone_kind: str | None) -> str:
        p = self.platforms.get(platform)
        if p is None:
            return "medium"
        if p.alert_zone_kinds and zone_kind not in p.alert_zone_kinds:
            return "info"
        return p.severity


# ------------------------------------------------------------------------------ loading
def _fail(file: str, where: str, what: str):
    raise WatchlistError(f"watchlist: {file}: {where}: {what}".replace("\n", " "))


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        _fail(str(path), "file", f"cannot read ({type(e).__name__}: {e})")
    except tomllib.TOMLDecodeError as e:
        _fail(str(path), "toml", str(e))


def default_path() -> Path:
    return schemas.path("watchlist.toml")


def operator_files(directory: str | Path | None) -> list[Path]:
    """The operator's extra watchlists: ``*.toml`` in the directory, sorted by name."""
    if not directory:
        return []
    d = Path(directory)
    if not d.is_dir():
        raise WatchlistError(f"watchlist: {d}: directory: not found")
    return sorted(p for p in d.glob("*.toml") if p.is_file() and not p.name.startswith("."))


def compile_files(paths: list[Path]) -> CompiledWatchlist:
    """Validate and compile watchlist files (the first is normally the shipped default)."""
    platforms: dict[str, Platform] = {}
    indicators: list[Indicator] = []
    versions = []
    digest = hashlib.sha256()
    for path in paths:
        fname = str(path)
        data = _read(path)
        digest.update(path.read_bytes())
        unknown = set(data) - {"version", "format", "platforms", "indicators", "description"}
        if unknown:
            _fail(fname, "top level", f"unknown key(s) {sorted(unknown)}")
        if data.get("format", 1) != 1:
            _fail(fname, "format", f"unsupported format {data.get('format')!r} (expected 1)")
        ver = data.get("version")
        if not isinstance(ver, str) or not ver:
            _fail(fname, "version", "a non-empty string is required")
        versions.append(ver)
        for name, spec in (data.get("platforms") or {}).items():
            where = f"platforms.{name}"
            if not _PLATFORM.match(name):
                _fail(fname, where, "platform names are 1-48 letters, digits, space . _ -")
            if not isinstance(spec, dict):
                _fail(fname, where, "must be a table")
            extra = set(spec) - {"description", "severity", "source", "alert_zone_kinds"}
            if extra:
                _fail(fname, where, f"unknown key(s) {sorted(extra)}")
            sev = spec.get("severity", "high")
            if sev not in SEVERITIES:
                _fail(fname, where, f"severity {sev!r} not one of {SEVERITIES}")
            src = spec.get("source")
            if not isinstance(src, str) or not src.strip():
                _fail(fname, where, "source (URL or citation) is required")
            kinds = spec.get("alert_zone_kinds", [])
            if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
                _fail(fname, where, "alert_zone_kinds must be a list of strings")
            if name in platforms:
                _fail(fname, where, "platform defined twice (first in an earlier file)")
            platforms[name] = Platform(name, sev, str(spec.get("description", "")), src.strip(), tuple(kinds))
        for i, spec in enumerate(data.get("indicators") or []):
            indicators.extend(_indicators(fname, i, spec, platforms, len(indicators)))
    if not paths:
        raise WatchlistError("watchlist: no files")
    version = versions[0] if len(versions) == 1 else f"{versions[0]}+{digest.hexdigest()[:8]}"
    return _compile(version, tuple(str(p) for p in paths), platforms, indicators)


def _indicators(fname: str, i: int, spec, platforms: dict, base: int) -> list[Indicator]:
    where = f"indicators[{i}]"
    if not isinstance(spec, dict):
        _fail(fname, where, "must be a table")
    extra = set(spec) - {"platform", "type", "value", "values", "source", "key", "context", "weak",
                         "case_insensitive", "note"}
    if extra:
        _fail(fname, where, f"unknown key(s) {sorted(extra)}")
    plat = spec.get("platform")
    if plat not in platforms:
        _fail(fname, where, f"platform {plat!r} is not defined (define it under [platforms.NAME])")
    typ = spec.get("type")
    if typ not in TYPES:
        _fail(fname, where, f"type {typ!r} not one of {TYPES}")
    src = spec.get("source")
    if not isinstance(src, str) or not src.strip():
        _fail(fname, where, "source (URL or citation) is required for every indicator")
    if ("value" in spec) == ("values" in spec):
        _fail(fname, where, "give exactly one of value / values")
    vals = [spec["value"]] if "value" in spec else spec["values"]
    if not isinstance(vals, list) or not vals or not all(isinstance(v, str) and v.strip() for v in vals):
        _fail(fname, where, "values must be non-empty strings")
    key = spec.get("key", "")
    ctx = spec.get("context", "any")
    if typ == "party_code":
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", key):
            _fail(fname, where, "party_code needs key = the field name")
        if ctx not in ("any", "json"):
            _fail(fname, where, f"context {ctx!r} not one of ('any', 'json')")
    elif "key" in spec or "context" in spec:
        _fail(fname, where, "key/context apply to party_code only")
    out = []
    for v in vals:
        v = v.strip()
        norm = _normalize(fname, where, typ, v)
        out.append(Indicator(base + len(out), plat, typ, norm, src.strip(), fname, key, ctx,
                             bool(spec.get("weak", False)), bool(spec.get("case_insensitive", False)),
                             str(spec.get("note", ""))))
    return out


def _normalize(fname: str, where: str, typ: str, v: str) -> str:
    if typ in ("ip", "cidr"):
        try:
            fam, net, plen = _ipset.parse_prefix(v)
        except ValueError as e:
            _fail(fname, where, f"bad {typ} {v!r} ({e})")
        if typ == "ip" and "/" in v:
            _fail(fname, where, f"ip {v!r} has a prefix length; use type cidr")
        return v
    if typ in ("domain", "host"):
        n = normalize_host(v)
        if not _valid_host(n):
            _fail(fname, where, f"bad {typ} {v!r} (need a dotted DNS name, no wildcards)")
        return n
    if typ == "host_pattern":
        n = normalize_host(v)
        if "*" not in n.split(".")[0] or "*" in n.split(".", 1)[-1] or not _valid_host(n, wildcard=True):
            _fail(fname, where, f"bad host_pattern {v!r} (one * inside the first label only)")
        return n
    if typ == "url_path":
        if not v.startswith("/") or len(v) < 2 or any(c.isspace() for c in v):
            _fail(fname, where, f"bad url_path {v!r} (must start with / and have no spaces)")
        return v
    if typ == "payload_marker":
        core = v[:-1] if v.endswith("*") else v
        if not _TOKEN.match(core) or "*" in core:
            _fail(fname, where, f"bad payload_marker {v!r} (2-128 printable ASCII, optional trailing *)")
        return v
    if typ == "party_code":
        if not _TOKEN.match(v):
            _fail(fname, where, f"bad party_code {v!r}")
        return v
    if typ == "edi_party":
        if not re.fullmatch(r"[\x20-\x7e]{1,35}", v):
            _fail(fname, where, f"bad edi_party {v!r} (1-35 printable ASCII)")
        return v.upper()
    raise AssertionError(typ)


def _compile(version, files, platforms, indicators) -> CompiledWatchlist:
    ip_inds = [ind for ind in indicators if ind.type in ("ip", "cidr")]
    ips = _ipset.IPSet([ind.value for ind in ip_inds])
    hosts: dict[str, int] = {}
    domains: dict[str, int] = {}
    hpats: list[tuple[re.Pattern, int]] = []
    edi: dict[str, int] = {}
    party: dict[str, list[tuple[str, int]]] = {}
    literals: list[tuple[bytes, int, bool]] = []
    lit_ind: list[int] = []
    seen_lit: dict[tuple[bytes, int, bool], int] = {}

    def lit(b: bytes, kind: int, ci: bool, ind: int):
        k = (b.lower() if ci else b, kind, ci)
        if k in seen_lit:  # one literal once: the first indicator keeps it
            return
        seen_lit[k] = len(literals)
        literals.append((b, kind, ci))
        lit_ind.append(ind)

    for ind in indicators:
        t, v = ind.type, ind.value
        if t == "host":
            hosts.setdefault(v, ind.id)
            lit(v.encode(), _mk.HOST, True, ind.id)
        elif t == "domain":
            domains.setdefault(v, ind.id)
            lit(v.encode(), _mk.DOMAIN, True, ind.id)
        elif t == "host_pattern":
            hpats.append((_host_pattern_regex(v), ind.id))
            lit(v.split("*", 1)[1].encode(), _mk.HOST_SUFFIX, True, ind.id)
        elif t == "url_path":
            lit(v.encode(), _mk.PATH_PREFIX if v.endswith("/") else _mk.PATH, False, ind.id)
        elif t == "payload_marker":
            if v.endswith("*"):
                lit(v[:-1].encode(), _mk.TOKEN_PREFIX, ind.case_insensitive, ind.id)
            else:
                lit(v.encode(), _mk.TOKEN, ind.case_insensitive, ind.id)
        elif t == "party_code":
            party.setdefault(ind.key.lower(), []).append((v.upper(), ind.id))
            lit(ind.key.encode(), _mk.KEY, True, ind.id)
        elif t == "edi_party":
            edi.setdefault(v, ind.id)
    aliases: dict[bytes, tuple[int, int]] = {}   # alias -> (indicator id (the first literal's), skip)
    for (b, kind, ci), ind in zip(literals, lit_ind):
        if kind != _mk.KEY and len(b) >= B64_MIN_LITERAL:
            # names in lower and upper case, case-insensitive literals as listed too: base64 keeps
            # case (102 -> 156 aliases: the alias pass 1.56 -> 0.98 GB/s, about 1 % of the stream)
            if kind in (_mk.HOST, _mk.DOMAIN, _mk.HOST_SUFFIX):
                forms = (b.lower(), b.upper())
            else:
                forms = (b, b.lower(), b.upper()) if ci else (b,)
            for form in dict.fromkeys(forms):
                for a, skip in base64_aliases(form):
                    aliases.setdefault(a, (ind, skip))
    b64 = _mk.Patterns([(a, _mk.BASE64, False) for a in aliases]) if aliases else None
    pats = _mk.Patterns(literals)
    # exact hosts are more specific than their registered domain: report the host when both match
    return CompiledWatchlist(
        version=version, files=files, platforms=dict(platforms), indicators=list(indicators), ipset=ips,
        ip_indicator=np.asarray([ind.id for ind in ip_inds], np.int32), hosts=hosts, domains=domains,
        host_patterns=hpats, edi_parties=edi, patterns=pats,
        pattern_indicator=np.asarray(lit_ind + [ind for ind, _ in aliases.values()], np.int32), party_codes=party,
        b64_patterns=b64, pattern_kind=np.concatenate([pats.pat_kind, np.full(len(aliases), _mk.BASE64, np.uint8)]),
        pattern_skip=np.asarray([0] * len(literals) + [skip for _, skip in aliases.values()], np.int8))


def base64_aliases(lit: bytes) -> list[tuple[bytes, int]]:
    """The base64 text that ``lit`` becomes wherever it sits in an encoded value, as (alias,
    skip): one per alignment (0, 1 or 2 bytes before it in its group of three), without the
    characters that depend on the bytes around it, in the standard alphabet and, where it
    differs, the URL-safe one (``-_`` for ``+/``); ``skip``: the characters of its group of four
    before the alias (0, 2 or 3), so that a match tells where the encoding's groups start."""
    out: list[tuple[bytes, int]] = []
    for k in range(3):
        skip = (0, 2, 3)[k]
        enc = base64.b64encode(b"\0" * k + lit).rstrip(b"=")[skip:]
        if (k + len(lit)) % 3:
            enc = enc[:-1]     # its last character holds bits of the next byte too
        for a in (enc, enc.replace(b"+", b"-").replace(b"/", b"_")):
            if (a, skip) not in out:
                out.append((a, skip))
    return out


def load(extra_dir: str | Path | None = None, *, include_default: bool = True) -> CompiledWatchlist:
    files = ([default_path()] if include_default else []) + operator_files(extra_dir)
    return compile_files(files)


class Watchlist:
    """The current compiled watchlist, reloaded atomically from the default + operator files."""

    def __init__(self, extra_dir: str | Path | None = None, *, include_default: bool = True):
        self.extra_dir = extra_dir
        self.include_default = include_default
        self.last_error: str | None = None
        self.reloads = 0           # successful reloads after the first load
        self.failed_reloads = 0
        self._signature = self._stat()
        self._current = load(extra_dir, include_default=include_default)  # the first load must succeed

    @property
    def current(self) -> CompiledWatchlist:
        return self._current

    def _files(self) -> list[Path]:
        return ([default_path()] if self.include_default else []) + operator_files(self.extra_dir)

    def _stat(self):
        try:
            files = self._files()
        except WatchlistError:
            return None
        sig = []
        for p in files:
            try:
                st = p.stat()
                sig.append((str(p), st.st_mtime_ns, st.st_size))
            except OSError:
                sig.append((str(p), -1, -1))
        return tuple(sig)

    def reload(self) -> bool:
        """Build a new compiled watchlist and swap it in; on any error keep the old one."""
        sig = self._stat()
        try:
            new = load(self.extra_dir, include_default=self.include_default)
        except WatchlistError as e:
            self.last_error = str(e)
            self.failed_reloads += 1
            self._signature = sig  # do not retry the same broken files on every poll
            return False
        self._current = new        # one reference assignment: readers see the old or the new
        self._signature = sig
        self.last_error = None
        self.reloads += 1
        return True

    def poll(self) -> bool:
        """Reload when a file was added, removed or changed (mtime or size); True if swapped."""
        if self._stat() == self._signature:
            return False
        return self.reload()
