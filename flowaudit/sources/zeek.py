"""Zeek's logs, a line at a time, whichever way Zeek wrote them (``dns.log``, ``ssl.log`` and
``http.log`` name the flows' addresses, ``conn.log`` is a flow source):

* JSON lines (``LogAscii::use_json``, the Kafka writer);
* Zeek's default ASCII log: tab-separated values after the header lines ``#separator``,
  ``#set_separator``, ``#empty_field``, ``#unset_field``, ``#path``, ``#fields`` and ``#types``
  (a separator or unprintable byte inside a value is escaped ``\\xHH``).  A row becomes the dict
  the JSON writer would have written: unset fields left out, times, intervals and counts as
  numbers, booleans as booleans, vectors and sets as lists (``[]`` for the empty field).

Files may be gzip, as Zeek's rotation leaves them (:func:`flowaudit.sources.files.open_input`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable

import orjson

from .files import GZIP_ERRORS, open_input

_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


def _unescape(v: bytes) -> bytes:
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), v) if b"\\x" in v else v


def _value(t: str, v: bytes):
    """One Zeek ASCII value of type ``t`` as Zeek's JSON writer would write it (a value that does
    not read as its type stays text: the log's ``check`` decides what a record needs)."""
    v = _unescape(v)
    try:
        if t in ("time", "interval", "double"):
            return float(v)
        if t in ("count", "int", "port"):
            return int(v)
    except ValueError:
        pass
    if t == "bool" and v in (b"T", b"F"):
        return v == b"T"
    return v.decode("utf-8", "replace")


class ZeekLog:
    """The records of one Zeek log of kind ``kind`` (its ``#path``: ``dns``, ``conn``; a tuple:
    a log of any of those kinds), a line at a time.  ``check(record)`` returns the record (or what
    it stands for) or raises ValueError (what the caller needs of it); ``types`` gives a field's
    type where a log has ``#fields`` but no ``#types`` line.

    :meth:`record` returns None for a blank or header line, raises ValueError for a line that is
    no record; :attr:`reason` then names the quarantine reason (``malformed_json``, or
    ``format_mismatch`` for a row that does not fit its header or is another Zeek log's)."""

    def __init__(self, kind: str | tuple, check: Callable[[dict], dict], types: dict | None = None):
        self.kinds = (kind,) if isinstance(kind, str) else tuple(kind)
        self.check, self.default_types = check, types or {}
        self.sep, self.set_sep, self.empty, self.unset = b"\t", b",", b"(empty)", b"-"
        self.path: str | None = None
        self.fields: list[str] | None = None
        self.types: list[str] | None = None
        self.reason = "malformed_json"

    def record(self, line: bytes | str) -> dict | None:
        if isinstance(line, str):
            line = line.encode()
        line = line.rstrip(b"\r\n")
        s = line.strip()
        if not s:
            return None
        if s.startswith(b"#"):
            self._header(line.lstrip())
            return None
        if self.fields is None or s.startswith(b"{"):
            self.reason = "malformed_json"
            try:
                rec = orjson.loads(s)
            except orjson.JSONDecodeError:
                raise ValueError("not JSON") from None
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
            return self.check(rec)
        self.reason = "format_mismatch"
        if self.path is not None and self.path not in self.kinds:
            raise ValueError(f"a row of Zeek's {self.path} log, not {_or(self.kinds)}")
        vals = line.split(self.sep)
        if len(vals) != len(self.fields):
            raise ValueError(f"{len(vals)} values where #fields names {len(self.fields)}")
        types = self.types if self.types is not None and len(self.types) == len(self.fields) else None
        rec = {}
        for k, (name, v) in enumerate(zip(self.fields, vals)):
            if v == self.unset:
                continue
            t = types[k] if types else self.default_types.get(name, "string")
            if t.startswith(("vector[", "set[")):
                inner = t[t.index("[") + 1:-1]
                rec[name] = [] if v == self.empty else [_value(inner, e) for e in v.split(self.set_sep)]
            else:
                rec[name] = _value(t, v)
        return self.check(rec)

    def _header(self, line: bytes) -> None:
        if line.startswith(b"#separator "):
            self.sep = _unescape(line[len(b"#separator "):].strip()) or b"\t"
            return
        key, _, val = line[1:].partition(self.sep)
        if key == b"set_separator":
            self.set_sep = _unescape(val) or b","
        elif key == b"empty_field":
            self.empty = val
        elif key == b"unset_field":
            self.unset = val
        elif key == b"path":
            self.path = val.decode("utf-8", "replace")
        elif key == b"fields":
            self.fields = [f.decode("utf-8", "replace") for f in val.split(self.sep)]
            self.types = None
        elif key == b"types":
            self.types = [t.decode("utf-8", "replace") for t in val.split(self.sep)]


def ascii_path(path: str | Path) -> str | None:
    """The ``#path`` of a Zeek ASCII log from its first header lines (None: none, or not readable)."""
    try:
        with open_input(path) as f:
            for _ in range(16):
                line = f.readline()
                if not line.startswith(b"#"):
                    return None
                if line.startswith(b"#path"):
                    return line[len(b"#path"):].strip().decode("utf-8", "replace")
    except GZIP_ERRORS:
        return None
    return None


def _or(kinds) -> str:
    return " or ".join(kinds) if len(kinds) < 3 else ", ".join(kinds[:-1]) + " or " + kinds[-1]


def log_files(paths: Iterable[str | Path], kind: str | tuple, prefixes: tuple = ()) -> list[str]:
    """The Zeek ``kind`` log files named by ``paths`` (a tuple: of any of those kinds): a file as
    given; a folder (Zeek's log folder, its dated archive folders) gives every file under it whose
    name starts with a kind, or one of ``prefixes`` (``dns.log``, ``dns.00:00:00-01:00:00.log.gz``),
    in name order.  A missing path raises FileNotFoundError; a folder without such files, or a Zeek
    ASCII log of another kind (``#path conn`` where ``dns`` is wanted) raises ValueError naming it."""
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    names = prefixes or kinds
    out: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            got = sorted({str(f) for k in names for f in p.rglob(f"{k}*") if f.is_file()})
            if not got:
                raise ValueError(f"{p}: a folder without {_or([k.upper() for k in names])} logs "
                                 f"(files named {_or([k + '*' for k in names])})")
            out.extend(got)
        elif p.exists():
            out.append(str(p))
        else:
            raise FileNotFoundError(f"{p}: no such {_or([k.upper() for k in kinds])} log")
    for f in out:
        got = ascii_path(f)
        if got is not None and got not in kinds:
            raise ValueError(f"{f}: Zeek's {got} log, not its {_or(kinds)} log")
    return out


# The default fields of four of Zeek's logs, as its ASCII writer heads them (DNS and conn: Zeek 3 ..
# 8.0, base/protocols/dns/main.zeek, base/protocols/conn/main.zeek; ssl: Zeek 6 .. 8.0 with its base
# scripts, base/protocols/ssl/main.zeek; http: Zeek 4 .. 8.0, base/protocols/http/main.zeek)
DNS_FIELDS = tuple(zip(
    ("ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto trans_id rtt query qclass qclass_name qtype qtype_name "
     "rcode rcode_name AA TC RD RA Z answers TTLs rejected").split(),
    ("time string addr port addr port enum count interval string count string count string count string bool bool "
     "bool bool count vector[string] vector[interval] bool").split()))
CONN_FIELDS = tuple(zip(
    ("ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto service duration orig_bytes resp_bytes conn_state "
     "local_orig local_resp missed_bytes history orig_pkts orig_ip_bytes resp_pkts resp_ip_bytes "
     "tunnel_parents").split(),
    ("time string addr port addr port enum string interval count count string bool bool count string count count "
     "count count set[string]").split()))
SSL_FIELDS = tuple(zip(
    ("ts uid id.orig_h id.orig_p id.resp_h id.resp_p version cipher curve server_name resumed last_alert "
     "next_protocol established ssl_history cert_chain_fps client_cert_chain_fps sni_matches_cert").split(),
    ("time string addr port addr port string string string string bool string string bool string vector[string] "
     "vector[string] bool").split()))
HTTP_FIELDS = tuple(zip(
    ("ts uid id.orig_h id.orig_p id.resp_h id.resp_p trans_depth method host uri referrer version user_agent "
     "origin request_body_len response_body_len status_code status_msg info_code info_msg tags username "
     "password proxied orig_fuids orig_filenames orig_mime_types resp_fuids resp_filenames "
     "resp_mime_types").split(),
    ("time string addr port addr port count string string string string string string string count count count "
     "string count string set[enum] string string set[string] vector[string] vector[string] vector[string] "
     "vector[string] vector[string] vector[string]").split()))


def write_ascii(records: Iterable[dict], path: str, fields=DNS_FIELDS) -> bytes:
    """Records (as Zeek's JSON writer writes them: unset fields left out) as its ASCII writer
    writes them, for tests, the fuzzer and synthetic logs: the header, a tab between values,
    ``-`` unset, ``(empty)`` for an empty vector or set, elements joined by commas, a backslash,
    tab or comma inside a value escaped ``\\xHH``, times and intervals with six decimals."""
    def value(t, v):
        if v is None:
            return "-"
        if t.startswith(("vector[", "set[")):
            return ",".join(value(t[t.index("[") + 1:-1], e) for e in v) if v else "(empty)"
        if t in ("time", "interval"):
            return f"{float(v):.6f}"
        if t == "bool":
            return "T" if v else "F"
        return str(v).replace("\\", "\\x5c").replace("\t", "\\x09").replace(",", "\\x2c")

    out = ["#separator \\x09", "#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-", f"#path\t{path}",
           "#open\t2026-03-01-06-00-00", "#fields\t" + "\t".join(f for f, _ in fields),
           "#types\t" + "\t".join(t for _, t in fields)]
    out += ["\t".join(value(t, r.get(f)) for f, t in fields) for r in records]
    out.append("#close\t2026-03-01-07-00-00")
    return ("\n".join(out) + "\n").encode()
