"""Layers: payloads wrapped in one more encoding, looked through before classifying.

Real port systems wrap EDI in other things: a terminal operating system exports a whole COARRI
as one JSON string; AS2 and e-mail archives store interchanges as MIME multipart bodies, often
base64 transfer-encoded; queues and archives carry gzip / zlib / zstd-compressed or base64
values.  :func:`unwrap` peels such layers off ONE message value until what is left is a format
the decoders know (EDIFACT, X12, XML, JSON object / array), with hard limits, so that a bomb is
refused instead of expanded:

* ``max_depth`` layers at most (a path ``base64>gzip>x12`` is two layers deep); one more is
  ``layer_too_deep``;
* every decompression is bounded while it runs (``zlib.decompressobj(...).decompress(data,
  max_length)``, zstd ``stream_reader`` reads of a bounded size): output beyond ``max_ratio``
  times the message's size is ``layer_bomb``, output beyond ``max_bytes`` in all (every layer and
  every MIME part of the message together) is ``layer_too_large``; neither is ever expanded
  further than the limit plus one chunk;
* more than ``max_parts`` MIME parts is ``layer_bomb``;
* a wrapper whose magic matched but whose body does not decode (a truncated gzip stream, a
  corrupt zstd frame) is ``layer_corrupt``.

Detection is a first-bytes check and runs only on messages the format detector called unknown
(flowaudit/pipeline.py), so a message without layers costs nothing:

=============  ====================================================================
``json-string``  first non-space byte ``"``: the whole document is one JSON string
``gzip``       ``1f 8b``
``zlib``       ``78 01`` / ``78 5e`` / ``78 9c`` / ``78 da``
``zstd``       ``28 b5 2f fd`` (the ``zstandard`` package; without it: not unwrapped)
``mime``       ``MIME-Version:`` or ``Content-Type: multipart`` in the first line(s); each
               leaf part is a candidate (its Content-Transfer-Encoding undone: path
               ``mime>base64`` when it was base64)
``base64``     only the base64 alphabet (and line breaks), at least 16 characters, decodes
               strictly; kept only when what it decodes to is itself a known format or layer
=============  ====================================================================

A value that unwraps to nothing known stays ``unknown_format``: unwrapping never turns an
unknown message into a quarantine row it would not have been before, except for the limits.
"""
from __future__ import annotations

import binascii
import email
import email.policy
import re
import zlib
from dataclasses import dataclass

try:  # optional: zstd frames stay unknown_format without it
    import zstandard as _zstd
except ImportError:  # pragma: no cover
    _zstd = None

# the decoders' formats (flowaudit.decode FMT_*), repeated here to keep this module import-light
_KNOWN_FIRST = (b"UNA", b"UNB", b"UNH+", b"ISA", b"GS*", b"ST*", b"<", b"{", b"[")

_WS = re.compile(rb"[\r\n\t ]+")
_B64_HEAD = re.compile(rb"[\r\n\t ]*[A-Za-z0-9+/][A-Za-z0-9+/=\r\n\t ]*")
_MIME_HEAD = re.compile(rb"(?i)^(mime-version\s*:|content-type\s*:\s*multipart/)", re.M)
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Limits:
    max_depth: int = 4             # layers in one path
    max_ratio: int = 200           # decompressed bytes / the message's bytes
    max_bytes: int = 8 << 20       # all layers' output of one message together
    max_parts: int = 64            # MIME leaf parts of one message
    min_base64: int = 16           # shorter alphabet-only values are words, not base64


class LayerError(Exception):
    """A limit was hit or a wrapper is corrupt; ``reason`` is a flowaudit.decode REASONS name."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _strip(v: bytes) -> bytes:
    if v.startswith(b"\xef\xbb\xbf"):
        v = v[3:]
    return v.lstrip(b" \t\r\n\x00")


def known(v: bytes) -> bool:
    """Is ``v`` a format the decoders take (the format detector's first-bytes rule)?"""
    return _strip(v[:64]).startswith(_KNOWN_FIRST)


def kind(v: bytes) -> str | None:
    """The layer ``v`` is wrapped in, from its first bytes (cheap); None: none."""
    head = v[:4]
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if len(head) >= 2 and head[0] == 0x78 and head[1] in (0x01, 0x5E, 0x9C, 0xDA):
        return "zlib"
    if head == b"\x28\xb5\x2f\xfd":
        return "zstd" if _zstd is not None else None
    s = _strip(v[:256])
    if s[:1] == b'"':
        return "json-string"
    if _MIME_HEAD.search(v[:1024]):
        return "mime"
    if len(v) >= Limits.min_base64 and _B64_HEAD.fullmatch(v[:4096]):
        return "base64"
    return None


class _Budget:
    def __init__(self, limits: Limits, size: int):
        self.limits = limits
        self.left = limits.max_bytes
        self.ratio_cap = max(size, 1) * limits.max_ratio

    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise LayerError("layer_too_large")

    def cap(self) -> int:
        """The most bytes one decompression may produce before it is a bomb."""
        return min(self.left, self.ratio_cap)

    def over(self, produced: int) -> str:
        return "layer_too_large" if produced > self.left else "layer_bomb"


def _inflate(v: bytes, wbits: int, budget: _Budget) -> bytes:
    cap = budget.cap()
    out = []
    produced = 0
    data = v
    while True:
        d = zlib.decompressobj(wbits)
        try:
            chunk = d.decompress(data, cap - produced + 1)
            while True:
                out.append(chunk)
                produced += len(chunk)
                if produced > cap:
                    raise LayerError(budget.over(produced))
                if not d.unconsumed_tail:
                    break
                chunk = d.decompress(d.unconsumed_tail, cap - produced + 1)
        except zlib.error:
            raise LayerError("layer_corrupt") from None
        if not d.eof:
            raise LayerError("layer_corrupt")
        data = d.unused_data
        if wbits != 31 or data[:2] != b"\x1f\x8b":   # a gzip file may hold several members
            break
    res = b"".join(out)
    budget.take(len(res))
    return res


def _unzstd(v: bytes, budget: _Budget) -> bytes:
    cap = budget.cap()
    out = []
    produced = 0
    try:
        with _zstd.ZstdDecompressor().stream_reader(v, read_across_frames=True) as r:
            while True:
                chunk = r.read(min(_CHUNK, cap - produced + 1))
                if not chunk:
                    break
                out.append(chunk)
                produced += len(chunk)
                if produced > cap:
                    raise LayerError(budget.over(produced))
    except _zstd.ZstdError:
        raise LayerError("layer_corrupt") from None
    res = b"".join(out)
    budget.take(len(res))
    return res


def _json_string(v: bytes, budget: _Budget) -> bytes | None:
    import json
    try:
        s = json.loads(v)
    except (ValueError, UnicodeDecodeError):
        return None                       # not JSON: stays unknown_format
    if not isinstance(s, str):
        return None
    out = s.encode("utf-8", "surrogatepass")
    budget.take(len(out))
    return out


def _base64(v: bytes, budget: _Budget) -> bytes | None:
    try:
        out = binascii.a2b_base64(_WS.sub(b"", v), strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    budget.take(len(out))
    return out


def _mime(v: bytes, budget: _Budget) -> list[tuple[str, bytes]]:
    """The leaf parts of a MIME body: (layer name, decoded bytes)."""
    try:
        msg = email.message_from_bytes(v, policy=email.policy.compat32)
    except Exception:  # noqa: BLE001 - the email parser is lenient; never let it crash the batch
        return []
    parts = []
    for p in msg.walk():
        if p.is_multipart():
            continue
        if len(parts) >= budget.limits.max_parts:
            raise LayerError("layer_bomb")
        cte = str(p.get("Content-Transfer-Encoding", "")).strip().lower()
        try:
            body = p.get_payload(decode=True)
        except Exception:  # noqa: BLE001
            body = None
        if not body:
            continue
        budget.take(len(body))
        parts.append(("mime>base64" if cte == "base64" else "mime", body))
    return parts


def unwrap(v: bytes, limits: Limits = Limits(), opaque: list | None = None) -> tuple[list[tuple[str, bytes]], str | None]:
    """Peel the layers off message ``v``.

    Returns ``(inner, reason)``: ``inner`` lists ``(layer path, bytes)`` of every known-format
    value found inside (a MIME body can give several; empty when nothing known is inside);
    ``reason`` is None, or the REASONS name of the limit hit / the corrupt wrapper (then the
    message is quarantined whole, whatever ``inner`` holds).  ``opaque``, when given, gets
    ``(layer path, bytes)`` of every decoded value of no known format and no further layer (gzip
    of plain text, a MIME text part): no decoder reads them, but the salvage and egress scans can."""
    budget = _Budget(limits, len(v))
    found: list[tuple[str, bytes]] = []
    try:
        _peel(v, "", 0, budget, found, opaque)
    except LayerError as e:
        return found, e.reason
    except MemoryError:
        return found, "layer_too_large"
    return found, None


def texty(v: bytes) -> bool:
    """``v`` looks like text (its first 4 KiB: at most 1 % control bytes other than tab, CR, LF;
    any encoding with ASCII at its base): worth the salvage and egress scans.  An image, a key or
    a zip archive inside base64 is not."""
    head = v[:4096]
    if not head:
        return False
    ctrl = sum(head.count(bytes([c])) for c in range(32) if c not in (9, 10, 13)) + head.count(b"\x7f")
    return ctrl * 100 <= len(head)


def _peel(v: bytes, path: str, depth: int, budget: _Budget, found: list, opaque: list | None = None) -> None:
    if depth and known(v):
        found.append((path, v))
        return
    k = kind(v)
    if k is None:
        if depth and opaque is not None and texty(v):
            opaque.append((path, v))
        return
    if depth >= budget.limits.max_depth:
        raise LayerError("layer_too_deep")
    sep = ">" if path else ""
    if k == "mime":
        for name, body in _mime(v, budget):
            _peel(body, path + sep + name, depth + 1, budget, found, opaque)
        return
    if k == "gzip":
        inner = _inflate(v, 31, budget)
    elif k == "zlib":
        inner = _inflate(v, 15, budget)
    elif k == "zstd":
        inner = _unzstd(v, budget)
    elif k == "json-string":
        inner = _json_string(v, budget)
    else:
        inner = _base64(v, budget)
    if inner is None:
        return
    _peel(inner, path + sep + k, depth + 1, budget, found, opaque)


__all__ = ["Limits", "LayerError", "unwrap", "kind", "known", "texty"]
