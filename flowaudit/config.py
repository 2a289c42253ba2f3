"""One settings model: a TOML file plus ``FLOWAUDIT_<SECTION>_<KEY>`` environment variables.

Precedence: defaults < TOML file < environment < command-line flags.  Every error is a
:class:`ConfigError` with a one-line message (the CLI prints it and exits 2), never a traceback:
unknown keys (with a suggestion), wrong types, bad values.

Environment examples::

    FLOWAUDIT_KAFKA_BOOTSTRAP_SERVERS=broker:9092
    FLOWAUDIT_KAFKA_TOPICS=port.edifact=edifact,port.x12=x12,port.mixed=auto
    FLOWAUDIT_SINK_ROOT=/data/flowaudit
    FLOWAUDIT_SECURITY_HMAC_KEY=...            (or FLOWAUDIT_SECURITY_HMAC_KEY_FILE=/run/secrets/key)
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints


def given_episode_gap(args, settings) -> int | None:
    """The episode gap a command's ``--episode-gap`` flag, settings file or environment gives
    (``findings.episode_gap_s`` off its default), else None: the report then takes the audit's."""
    if getattr(args, "episode_gap", None) is not None:
        return int(args.episode_gap)
    gap = settings.findings.episode_gap_s
    return gap if gap != FindingsSettings.episode_gap_s else None


def out_path(kind: str):
    """An argparse ``type`` for an output path: ``"file"`` refuses an existing folder, ``"folder"``
    an existing file (each was a traceback, or a puzzling key-file error, after the work was done)."""
    def parse(text: str):
        p = Path(text)
        if kind == "file" and p.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a folder: give a file name")
        if kind == "folder" and p.exists() and not p.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a file: give a folder")
        return text
    parse.__name__ = f"{kind} path"
    return parse


def bounded(typ=int, lo=0, inclusive: bool = True, hi=None):
    """An argparse ``type`` for a count or a size: a ``typ`` at least ``lo`` (above it when not
    ``inclusive``) and at most ``hi`` (when given).  Out of range, argparse names the flag and
    exits 2; a negative window, top, batch size or thread count was a traceback or silently
    nothing."""
    def parse(text: str):
        try:
            v = typ(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {typ.__name__} value: {text!r}") from None
        if v != v or v < lo or (v == lo and not inclusive):      # (v != v: NaN)
            raise argparse.ArgumentTypeError(f"must be {'at least' if inclusive else 'above'} {lo}: {text!r}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"must be at most {hi}: {text!r}")
        return v
    parse.__name__ = typ.__name__
    return parse


MAX_SPAN_S = 366 * 86_400          # the longest window, look-back, lateness, episode gap or silent-zone window

FORMATS = ("edifact", "x12", "xml", "json", "flat", "auto", "netflow", "goflow", "dns", "zeek_conn", "eve")
DEFAULT_TOPICS = {"port.edifact": "edifact", "port.x12": "x12", "port.xml": "xml", "port.json": "json"}


class ConfigError(ValueError):
    """A configuration problem, explained in one line."""


@dataclass
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "flowaudit"
    # topic -> format: "edifact", "x12", "xml", "json", "auto" (detect from the first bytes);
    # "netflow" (export datagrams keyed by exporter, as `flowaudit collect` produces them),
    # "goflow" (goflow2 JSON flows), "dns" (Zeek dns.log, ssl.log or http.log records, or Suricata eve.json
    # events: DNS answers, TLS server names and HTTP Hosts name the flows' addresses), "zeek_conn" (Zeek
    # conn.log records, or Suricata eve.json flow events, as flows), "eve" (Suricata eve.json with every
    # event type on one topic: its names and its flows both)
    topics: dict = field(default_factory=lambda: dict(DEFAULT_TOPICS))
    auto_offset_reset: str = "earliest"
    session_timeout_ms: int = 6000
    poll_max_messages: int = 5000
    poll_timeout_s: float = 0.5
    max_message_bytes: int = 8 * 1024 * 1024
    dedupe_entries: int = 1_000_000    # payloads + interchange refs remembered for the duplicate flags (32 MiB)
    # batches in flight between the consuming thread and the worker thread (0 = no worker thread)
    pipeline_depth: int = 2
    # threads that run one batch's nogil kernels side by side (each format's decoder, pieces of a
    # batch's EDIFACT / X12, the watchlist marker scan); 1 = one after another in the worker
    # thread.  flowaudit scan uses it too
    kernel_threads: int = 2
    # stream processes on this host, members of one consumer group (flowaudit stream --workers);
    # each a whole service with its own metrics port (metrics.port + its index)
    workers: int = 1
    # extra librdkafka properties passed through verbatim (security.protocol, sasl.*, ...)
    extra: dict = field(default_factory=dict)
    # --until-drained: give up (exit 4, with the partitions still waiting) after this many seconds
    # without a message or a change of assignment; 0 = wait for ever
    drain_stall_s: float = 120.0
    # flow topics (netflow / goflow / zeek_conn / eve) wait for the member's dns and eve topics to catch up by
    # record time, at most this many seconds per wait, so that a backlog never reads flows before the answers
    # that name their addresses (flowaudit/sources/dnssync.py); 0 = off
    dns_wait_s: float = 10.0


@dataclass
class SinkSettings:
    root: str = "flowaudit-out"
    rotate_records: int = 100_000      # messages per file per partition; record time rotates by hour
    # Arrow memory the buffered rows of all partitions may hold before every partition publishes
    # what it has (a byte bound across partitions, like Kafka Connect's flush.size is per partition)
    buffer_budget_mb: int = 16
    compression: str = "zstd"
    row_group_size: int = 64 * 1024
    raw_values: bool = False           # store raw sensitive values (local investigations only)
    # a writer thread publishes the file sets the worker closes (encode + fsync of batch N beside
    # the kernels of batch N+1): 1.15-1.25x end to end on 2 cores, ~30 MB more peak memory
    # (benchmarks/HISTORY.md); false: the worker publishes between batches
    write_behind: bool = True
    # the broker's log no longer matches the files (topic recreated, log truncated or rewritten):
    # "stop" (exit 3, write nothing) or "new_epoch" (file the new log beside the old, +e<k> names)
    on_log_reset: str = "stop"


@dataclass
class SecuritySettings:
    hmac_key: str = ""
    hmac_key_file: str = ""


@dataclass
class MetricsSettings:
    host: str = "127.0.0.1"
    port: int = 9464                   # 0 = no HTTP endpoint


@dataclass
class EgressSettings:
    enabled: bool = True               # watchlist, DNS attribution and zone policy -> transfers dataset
    watchlist_dir: str = ""            # operator watchlist files, added to the shipped sourced defaults
    policy_file: str = ""              # zones and policy (schemas/zones.example.toml shows the format)
    dns_max_entries: int = 100_000
    write_flows: bool = True           # also keep every decoded flow (dataset=flows)
    silent_window_s: int = 300         # silent-zone check window (flow time); 0 = off


@dataclass
class FindingsSettings:              # exposure findings from event-time windows in the stream
    enabled: bool = True
    window_s: int = 300                # window length (record time)
    lateness_s: int = 60               # how long a window waits for its slowest partition's late data
    lookback_s: int = 0                # flow-borne exposure also counts hits this far before the window
    episode_gap_s: int = 3600          # reports and `findings --episodes`: the most quiet inside one episode
    severity_model: str = ""            # operator weights over schemas/severity.toml
    # evidence rows kept in memory for the windows still open (all partitions); beyond it the
    # windows read their rows back from storage until the next close (slower closes, same findings)
    memory_mb: int = 64


@dataclass
class CollectSettings:               # flowaudit collect (UDP -> Kafka); flags override
    listen: str = "0.0.0.0:2055"
    topic: str = "netflow"
    sockets: int = 1
    rcvbuf_bytes: int = 64 << 20


@dataclass
class NetflowSettings:
    template_ttl_s: int = 3600       # a template not refreshed within this much exporter time is dropped


@dataclass
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    sink: SinkSettings = field(default_factory=SinkSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    egress: EgressSettings = field(default_factory=EgressSettings)
    collect: CollectSettings = field(default_factory=CollectSettings)
    findings: FindingsSettings = field(default_factory=FindingsSettings)
    netflow: NetflowSettings = field(default_factory=NetflowSettings)

    def validate(self) -> "Settings":
        k = self.kafka
        if not k.topics:
            raise ConfigError("kafka.topics is empty: name at least one topic")
        for topic, fmt in k.topics.items():
            if fmt not in FORMATS:
                raise ConfigError(f"kafka.topics.{topic}: format {fmt!r} is not one of {', '.join(FORMATS)}")
        if k.auto_offset_reset not in ("earliest", "latest"):
            raise ConfigError("kafka.auto_offset_reset must be 'earliest' or 'latest'")
        for name in ("poll_max_messages", "max_message_bytes", "session_timeout_ms", "dedupe_entries"):
            if getattr(k, name) <= 0:
                raise ConfigError(f"kafka.{name} must be positive")
        if not 0 <= k.pipeline_depth <= 64:
            raise ConfigError("kafka.pipeline_depth must be 0..64")
        if not 1 <= k.kernel_threads <= 64:
            raise ConfigError("kafka.kernel_threads must be 1..64")
        if not 1 <= k.workers <= 64:
            raise ConfigError("kafka.workers must be 1..64")
        if self.metrics.port and self.metrics.port + k.workers - 1 > 65535:
            raise ConfigError(f"metrics.port {self.metrics.port} leaves no port for each of kafka.workers = "
                              f"{k.workers} (port + 0 .. port + {k.workers - 1})")
        if self.sink.rotate_records <= 0:
            raise ConfigError("sink.rotate_records must be positive")
        if self.sink.buffer_budget_mb <= 0:
            raise ConfigError("sink.buffer_budget_mb must be positive")
        if self.sink.on_log_reset not in ("stop", "new_epoch"):
            raise ConfigError("sink.on_log_reset must be 'stop' or 'new_epoch'")
        if k.drain_stall_s < 0:
            raise ConfigError("kafka.drain_stall_s must be >= 0")
        if k.dns_wait_s < 0:
            raise ConfigError("kafka.dns_wait_s must be >= 0")
        if self.sink.compression not in ("zstd", "snappy", "gzip", "lz4", "none"):
            raise ConfigError("sink.compression must be one of zstd, snappy, gzip, lz4, none")
        if not 0 <= self.metrics.port <= 65535:
            raise ConfigError("metrics.port must be 0..65535")
        e = self.egress
        if e.watchlist_dir and not Path(e.watchlist_dir).is_dir():
            raise ConfigError(f"egress.watchlist_dir: no such folder: {e.watchlist_dir}")
        if e.policy_file and not Path(e.policy_file).is_file():
            raise ConfigError(f"egress.policy_file: no such file: {e.policy_file}")
        f = self.findings
        if f.window_s <= 0 or f.lateness_s < 0 or f.lookback_s < 0:
            raise ConfigError("findings.window_s must be positive, findings.lateness_s and lookback_s >= 0")
        if f.episode_gap_s < 0:
            raise ConfigError("findings.episode_gap_s must be >= 0")
        if e.silent_window_s < 0:
            raise ConfigError("egress.silent_window_s must be >= 0 (0: off)")
        for name, v in (("findings.window_s", f.window_s), ("findings.lateness_s", f.lateness_s),
                        ("findings.lookback_s", f.lookback_s), ("findings.episode_gap_s", f.episode_gap_s),
                        ("egress.silent_window_s", e.silent_window_s)):
            if v > MAX_SPAN_S:     # (a window of 1e20 s ran for ever: its nanoseconds overflow int64)
                raise ConfigError(f"{name} must be at most {MAX_SPAN_S} (366 days): {v}")
        if f.memory_mb < 0:
            raise ConfigError("findings.memory_mb must be >= 0 (0: every window reads its rows from storage)")
        if f.severity_model and not Path(f.severity_model).is_file():
            raise ConfigError(f"findings.severity_model: no such file: {f.severity_model}")
        if e.dns_max_entries <= 0:
            raise ConfigError("egress.dns_max_entries must be positive")
        if not 1 <= self.collect.sockets <= 64:
            raise ConfigError("collect.sockets must be 1..64")
        if self.collect.rcvbuf_bytes <= 0:
            raise ConfigError("collect.rcvbuf_bytes must be positive")
        if not 0 <= self.netflow.template_ttl_s <= MAX_SPAN_S:
            raise ConfigError(f"netflow.template_ttl_s must be 0..{MAX_SPAN_S} (0: templates never expire)")
        return self


def _coerce(path: str, typ: Any, value: Any, from_env: bool) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
        if from_env and str(value).lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return str(value).lower() in ("1", "true", "yes", "on")
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_env:
            try:
                return int(value)
            except ValueError:
                pass
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_env:
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is str:
        if isinstance(value, str):
            return value
    elif typ is dict:
        if isinstance(value, dict):
            return {str(a): b for a, b in value.items()}
        if from_env:  # "a=b,c=d"
            out = {}
            for item in filter(None, (p.strip() for p in str(value).split(","))):
                if "=" not in item:
                    raise ConfigError(f"{path}: expected key=value pairs separated by commas, got {item!r}")
                a, b = item.split("=", 1)
                out[a.strip()] = b.strip()
            return out
    raise ConfigError(f"{path}: expected {typ.__name__}, got {type(value).__name__} {value!r}")


def _apply(obj: Any, data: dict, prefix: str, from_env: bool = False) -> None:
    hints = get_type_hints(type(obj))
    names = [f.name for f in fields(obj)]
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (known: {', '.join(names)})"
            raise ConfigError(f"unknown key {path}{hint}")
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{path} must be a table")
            _apply(current, value, f"{path}.", from_env)
        else:
            setattr(obj, key, _coerce(path, hints[key], value, from_env))


def _env_overrides(env: dict[str, str]) -> dict:
    out: dict = {}
    sections = [f.name for f in fields(Settings)]
    for name, value in env.items():
        if not name.startswith("FLOWAUDIT_"):
            continue
        rest = name[len("FLOWAUDIT_"):].lower()
        for section in sections:
            if rest.startswith(section + "_"):
                out.setdefault(section, {})[rest[len(section) + 1:]] = value
                break
        else:
            # FLOWAUDIT_CONFIG names the file, handled by load(); FLOWAUDIT_WORKER tags a worker
            # of `flowaudit stream --workers N` (flowaudit/workers.py)
            if rest in ("config", "worker"):
                continue
            raise ConfigError(f"unknown environment variable {name} (sections: {', '.join(sections)})")
    return out


def load(path: str | os.PathLike | None = None, env: dict[str, str] | None = None,
         overrides: dict | None = None) -> Settings:
    """Build validated settings from defaults, the TOML file, the environment and ``overrides``."""
    env = dict(os.environ if env is None else env)
    settings = Settings()
    path = path or env.get("FLOWAUDIT_CONFIG")
    if path:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p}: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {p}: not UTF-8 text (TOML is UTF-8)") from None
        except OSError as exc:           # a folder, no permission, an I/O error
            raise ConfigError(f"config file {p}: cannot read ({exc.strerror or type(exc).__name__})") from None
        _apply(settings, data, "")
    _apply(settings, _env_overrides(env), "", from_env=True)
    if overrides:
        _apply(settings, overrides, "")
    return settings.validate()


MIN_KEY_BYTES = 16


def check_key(key: bytes, where: str) -> bytes:
    """The one minimum-length check for an operator key, wherever it comes from."""
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{where}: the key must be at least {MIN_KEY_BYTES} bytes (got {len(key)})")
    return key


def key_configured(settings: Settings) -> bool:
    """Whether the operator configured a key (``security.hmac_key`` or ``security.hmac_key_file``)."""
    return bool(settings.security.hmac_key or settings.security.hmac_key_file)


def root_key(root: Path) -> bytes | None:
    """The key a root created for itself (``<root>/.hmac-key``), or None."""
    kf = Path(root) / ".hmac-key"
    try:
        return kf.read_bytes().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the HMAC key file {kf}: {exc.strerror}") from None


def hmac_key(settings: Settings, root: Path, create: bool = True, inherit: tuple = ()) -> tuple[bytes, str]:
    """The operator's HMAC key and where it came from.

    Order: ``security.hmac_key``, ``security.hmac_key_file``, else a random key created once in
    ``<root>/.hmac-key`` (mode 0600) so that hashes stay joinable across restarts (and sealed
    quarantine payloads stay readable); operators should configure their own key for
    production.  Every key is at least 16 bytes.  ``create=False`` (readers such as
    ``flowaudit quarantine show``) never creates a key: no key is a :class:`ConfigError`.

    ``inherit``: roots whose rows this one carries over (a retro-hunt).  Without a configured key,
    ``root`` takes their ``.hmac-key`` instead of a new one, so that their hashes stay joinable
    with its own and their sealed quarantine opens there; roots with different keys of their own,
    or a ``root`` that already holds another key, are a :class:`ConfigError`.
    """
    sec = settings.security
    if sec.hmac_key:
        return check_key(sec.hmac_key.encode(), "security.hmac_key"), "security.hmac_key"
    if sec.hmac_key_file:
        try:
            key = Path(sec.hmac_key_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"security.hmac_key_file: {exc.strerror}: {sec.hmac_key_file}") from None
        return check_key(key, "security.hmac_key_file"), sec.hmac_key_file
    kf = root / ".hmac-key"
    theirs = {str(r): k for r in inherit if (k := root_key(r)) is not None}
    if len(set(theirs.values())) > 1:
        raise ConfigError(f"the roots {', '.join(sorted(theirs))} each created a key of their own (.hmac-key): "
                          f"carry them over in separate audits, or set the key they were written with "
                          f"(security.hmac_key or security.hmac_key_file)")
    if theirs:
        src, key = next(iter(theirs.items()))
        if create and not kf.exists():
            _create_key_file(root, kf, key)
    if not kf.exists():
        if not create:
            raise ConfigError(f"no operator key: set security.hmac_key or security.hmac_key_file "
                              f"(FLOWAUDIT_SECURITY_HMAC_KEY[_FILE]); {kf} does not exist")
        _create_key_file(root, kf)
    mine = root_key(root)
    if mine is None:
        raise ConfigError(f"cannot read the HMAC key file {kf}: it is gone")
    if theirs and mine != key:
        raise ConfigError(f"{kf} holds another key than {src}/.hmac-key, whose rows this audit carries over: "
                          f"their hashes would not join and their quarantine would not open; audit into a new --out")
    return check_key(mine, str(kf)), str(kf)


def output_key(settings: Settings, folder: Path) -> bytes:
    """:func:`hmac_key` for a command's output file in ``folder`` (``scan --out``, ``flows
    --quarantine``); a key it makes there is said once on stderr: hashes under it join nothing
    keyed otherwise (the stream's, an audit's), and sealed records open only with it."""
    sec = settings.security
    fresh = not (sec.hmac_key or sec.hmac_key_file or (folder / ".hmac-key").exists())
    key, src = hmac_key(settings, folder)
    if fresh:
        print(f"flowaudit: no operator key configured: a new random key, kept in {src}, keys these hashes; set "
              f"security.hmac_key_file (FLOWAUDIT_SECURITY_HMAC_KEY_FILE) to the stream's key for hashes that join "
              f"its output", file=sys.stderr)
    return key


def _create_key_file(root: Path, kf: Path, key: bytes | None = None) -> None:
    """Write ``key`` (default: a random one) to a private temp file, fsync, and link it to ``kf``
    (no overwrite: a concurrent first start keeps one key).  Any failure (ENOSPC, EFBIG, EACCES)
    leaves no temp file behind and is one :class:`ConfigError`."""
    tmp = root / f".hmac-key.{os.getpid()}.tmp"
    try:
        root.mkdir(mode=0o750, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key if key is not None else os.urandom(32).hex().encode())
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, kf)
            except FileExistsError:
                pass
            dfd = os.open(root, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the HMAC key file {kf}: {exc.strerror or exc}") from None
