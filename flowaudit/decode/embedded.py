"""Field-level layers: interchanges and encoded payloads inside JSON strings and XML text.

Real port systems wrap interchanges in other formats: the FIWARE ``EdiCodeco`` entity carries
the raw CODECO in ``messageRaw``; the JAPDEVA tool writes a whole COARRI as one JSON string; SOAP
and PCS XML put interchanges in an element's text or a CDATA section; queues and APIs put an
X12 interchange in a JSON field, or a base64 (often gzip'd) document in a ``payload`` member.

Design
------
The JSON and XML kernels mark every string value / leaf text that is a candidate
(``kernels/jsonscan.edi_marker``): it starts (after white space) with ``UNA``, ``UNB``, ``UNH``
and a separator (EDIFACT), ``ISA`` and a separator, ``GS*`` or ``ST*`` (X12), or it is a run of
at least ``B64_MIN`` (80) base64 characters (``B64_PACKED_MIN``, 24, when the first four decode
to a gzip, zstd or zlib header).  They decode it (JSON escapes, XML entities and
CDATA) into one side buffer ``ebuf`` and list it in a table ``E`` (outer message, outer location,
raw byte range of the outer string, offset and length in ``ebuf``).  :func:`open_fields` decides
what each holds: a bare interchange is taken as it is; anything else goes through
:func:`flowaudit.decode.layers.unwrap` with its limits (base64, then gzip / zlib / zstd inside,
at most ``max_depth`` layers, ``max_ratio`` times the field's size, ``max_bytes`` for all the
fields of one outer message together).  :func:`merge` then classifies everything found as ONE
sub-batch per format (EDIFACT, X12, XML, JSON: the same decoders as top-level messages) and maps
the hits back to the outer message:

* ``hit_msg``: the outer message's batch index;
* location: the outer location, ``>``, the inner location (``$.messageRaw>EQD+CN/C237.8260``);
* ``hit_start``/``hit_end``: the outer string's raw range (the inner offsets refer to decoded
  bytes, which need not exist byte-for-byte in the outer message);
* the embedded hits are appended after the outer hits (the pipeline orders hits by message);
* class, validity, confidence and the normalised value as the inner decoder found them;
* layer (``hits.layer``): the outer kind, the layers, the inner format:
  ``json-field>edifact``, ``json-field>x12``, ``xml-text>x12``, ``json-field>base64>gzip>x12``,
  ``xml-text>base64>json`` ...

Flags of the outer message (``messages.flags``; the flag names predate X12 and layers):

* bit 8 ``embedded_edifact``: a field held an interchange or a decodable layer (EDIFACT, X12,
  XML or JSON), decoded too.  A base64-looking string that decodes to nothing known (a hash, a
  token, an image) is not: the bit is cleared again, nothing is reported, nothing is flagged.
  One that decodes to text (base64, maybe gzip'd, of a free-text note) is salvage-scanned: its
  hits get the field's location ``>`` the salvage kind and the layer path without a format
  (``json-field>base64>gzip``), and its bytes go to the egress scan; no flag either.
* bit 16 ``embedded_edifact_bad``: a field's interchange was refused by its decoder (a fragment,
  a bad envelope), or the field's layer hit a limit (a bomb, too deep, too large) or is corrupt
  (a truncated gzip stream).  The outer message itself stays decoded with its own hits: a bad
  field never crashes, drops or quarantines its message; the flag is in the ``messages`` row,
  where it is counted like every flag.

Nesting stops at one field level: an XML or JSON document found inside a field is classified
without looking into its own fields again, and the EDIFACT / X12 decoders never look for JSON or
XML inside segments.  :func:`merge` also returns the decoded layer bytes of each outer message
(``layer_values``) so that the message-side egress scan sees inside them.
"""
from __future__ import annotations

import importlib

import numpy as np

from flowaudit.decode import FMT_EDIFACT, FMT_JSON, FMT_X12, FMT_XML, FORMAT_NAMES, FormatResult
from flowaudit.decode import layers as _layers
from flowaudit.kernels import jsonscan as K

FLAG_EMBEDDED = 8
FLAG_EMBEDDED_BAD = 16
LIMITS = _layers.Limits()

_BARE = (b"UNA", b"UNB", b"UNH", b"ISA", b"GS*", b"ST*")
_MODULES = {FMT_EDIFACT: "flowaudit.decode.edifact", FMT_X12: "flowaudit.decode.x12",
            FMT_XML: "flowaudit.decode.xml", FMT_JSON: "flowaudit.decode.json"}


def open_fields(E: np.ndarray, ebuf: np.ndarray, rows=None, limits: _layers.Limits = LIMITS,
                opaque: list | None = None):
    """What the marked strings ``E`` (only ``rows``, default all) hold.

    Returns ``(found, bad)``: ``found`` lists ``(row, layer path, bytes)`` of every interchange /
    document inside (path ``""`` for a bare interchange, ``base64>gzip`` for a wrapped one; a
    base64 string of garbage gives nothing); ``bad`` lists ``(row, reason)`` of the strings whose
    layer hit a limit or is corrupt (a :data:`flowaudit.decode.REASONS` name).  The fields of one
    outer message share one ``limits.max_bytes`` budget.  ``opaque``, when given, gets
    ``(row, layer path, bytes)`` of the decoded text of no known format (base64 of plain text)."""
    found, bad = [], []
    left: dict[int, int] = {}
    for k in (range(E.shape[0]) if rows is None else rows):
        o, n = int(E[k, K.E_OFF]), int(E[k, K.E_LEN])
        v = ebuf[o:o + n].tobytes()
        if v[:64].lstrip(b" \t\r\n").startswith(_BARE):
            found.append((k, "", v))
            continue
        m = int(E[k, K.E_MSG])
        budget = left.get(m, limits.max_bytes)
        if budget <= 0:
            bad.append((k, "layer_too_large"))
            continue
        text: list = []
        inner, reason = _layers.unwrap(v, _layers.Limits(limits.max_depth, limits.max_ratio, budget,
                                                         limits.max_parts, limits.min_base64), text)
        if reason is not None:
            bad.append((k, reason))
            continue
        left[m] = budget - sum(len(iv) for _, iv in inner) - sum(len(iv) for _, iv in text)
        found.extend((k, path, iv) for path, iv in inner)
        if opaque is not None:
            opaque.extend((k, path, iv) for path, iv in text)
    return found, bad


def _classify(values: list[bytes]):
    """Detect and classify ``values`` as one sub-batch: ``(fmt per value, status per value,
    [(format, FormatResult with hit_msg = value index)])``."""
    from flowaudit.decode import REASON_CODES
    from flowaudit.decode import detect as _detect
    k = len(values)
    offs = np.zeros(k + 1, dtype=np.int64)
    np.cumsum([len(v) for v in values], out=offs[1:])
    buf = np.frombuffer(b"".join(values), dtype=np.uint8).copy() if offs[-1] else np.zeros(1, np.uint8)
    fmt = _detect.detect(buf, offs)
    status = np.full(k, REASON_CODES["unknown_format"], np.int8)
    parts = []
    for f, mod in _MODULES.items():
        sel = np.flatnonzero(fmt == f).astype(np.int64)
        if sel.size == 0:
            continue
        if f == FMT_JSON:
            ok = _detect.utf8_ok(buf, offs, sel).astype(bool)
            status[sel[~ok]] = REASON_CODES["invalid_utf8"]
            sel = sel[ok]
            if sel.size == 0:
                continue
        dec = importlib.import_module(mod)
        r = dec.classify(buf, offs, sel, embedded=False) if f in (FMT_JSON, FMT_XML) else dec.classify(buf, offs, sel)
        status[sel] = r.status
        if r.n_hits:
            parts.append((f, r))
    return fmt, status, parts


def merge(res: FormatResult, E: np.ndarray, ebuf: np.ndarray, sel: np.ndarray, outer: str = "json-field",
          limits: _layers.Limits = LIMITS) -> FormatResult:
    """``res`` plus the hits of what the marked strings ``E`` of its messages hold (see the module
    docstring); ``outer`` names the outer kind for the ``layer`` column (``json-field``,
    ``xml-text``).  The result's ``layer_values`` lists ``(outer batch index, bytes)`` of every
    value found inside a field layer (not the bare interchanges, whose bytes are in the message)."""
    flags = getattr(res, "flags", None)
    if E.shape[0] == 0:
        return res
    pos = {int(m): j for j, m in enumerate(sel.tolist())}
    msgs = E[:, K.E_MSG]
    live = [k for k, m in enumerate(msgs.tolist()) if m in pos and res.status[pos[m]] == 0]
    opaque: list = []
    found, bad = open_fields(E, ebuf, live, limits, opaque)
    held = np.zeros(E.shape[0], bool)
    if found:
        rows = np.array([r for r, _, _ in found], np.int64)
        fmt, status, parts = _classify([v for _, _, v in found])
        known = np.isin(fmt, list(_MODULES))
        held[rows[known]] = True
        bad.extend((int(r), "refused") for r in rows[known & (status != 0)].tolist())
    if flags is not None:
        # a candidate that held nothing (a hash, a token) is no embedded payload: bit 8 off again
        keep = {int(m) for m in msgs[held].tolist()}
        clear = np.invert(flags.dtype.type(FLAG_EMBEDDED))
        for m in set(msgs.tolist()) - keep:
            j = pos.get(m)
            if j is not None:
                flags[j] &= clear
        for k, _ in bad:
            flags[pos[int(msgs[k])]] |= flags.dtype.type(FLAG_EMBEDDED_BAD)
    out = res
    layer_values = [(int(msgs[r]), v) for r, p, v in found if p] + [(int(msgs[r]), v) for r, _, v in opaque]
    names = [f"{outer}>{p}>" if p else f"{outer}>" for _, p, _ in found]
    parts = parts if found else []
    if opaque:   # decoded text of no known format: the salvage recognisers read it
        from flowaudit.decode import salvage as _salvage
        vals = [v for _, _, v in opaque]
        offs = np.zeros(len(vals) + 1, np.int64)
        np.cumsum([len(v) for v in vals], out=offs[1:])
        sr = _salvage.scan(np.frombuffer(b"".join(vals), np.uint8), offs, np.arange(len(vals), dtype=np.int64))
        if sr.n_hits:
            sr.hit_msg = sr.hit_msg + len(found)          # values after the found ones
            rows = np.array([r for r, _, _ in found] + [r for r, _, _ in opaque], np.int64)
            names = names + [f"{outer}>{p}" for _, p, _ in opaque]
            parts = parts + [(None, sr)]
    if parts:
        out = _append(res, E, rows, names, parts)
    if flags is not None:
        out.flags = flags
    out.layer_values = layer_values
    return out


def _append(res: FormatResult, E, rows, names, parts) -> FormatResult:
    """``res`` with the hits of the sub-batch ``parts`` appended (value ``j`` of the sub-batch is
    E row ``rows[j]``, its layer ``names[j]`` + the format's name; format None: the salvage scan's
    hits of decoded text, ``names[j]`` alone)."""
    cat = np.concatenate
    layer_names = [""]
    loc_names = list(res.loc_names)
    hm, hc, hl, hv, hcf, hs, he, hla, vbufs, voffs = ([] for _ in range(10))
    vbase = int(res.val_off[-1])
    for f, sub in parts:
        j = sub.hit_msg                                   # sub-batch value index
        row = rows[j]
        lay_ids = np.empty(j.size, np.int32)
        lay_of: dict[int, int] = {}
        for q, jj in enumerate(j.tolist()):
            li = lay_of.get(jj)
            if li is None:
                name = names[jj] + (FORMAT_NAMES[f] if f is not None else "")
                if name not in layer_names:
                    layer_names.append(name)
                li = lay_of[jj] = layer_names.index(name)
            lay_ids[q] = li
        outer_loc = E[row, K.E_LOC]
        nl = len(sub.loc_names) + 1
        uniq, inv = np.unique(outer_loc * nl + sub.hit_loc, return_inverse=True)
        base = len(loc_names)
        for p in uniq.tolist():
            o, i = divmod(p, nl)
            loc_names.append(f"{res.loc_names[o] if 0 <= o < len(res.loc_names) else '$'}>{sub.loc_names[i]}")
        hm.append(E[row, K.E_MSG])
        hc.append(sub.hit_class.astype(res.hit_class.dtype))
        hl.append((base + inv.reshape(-1)).astype(res.hit_loc.dtype))
        hv.append(sub.hit_valid.astype(res.hit_valid.dtype))
        hcf.append(sub.hit_conf.astype(res.hit_conf.dtype))
        hs.append(E[row, K.E_START])
        he.append(E[row, K.E_END])
        hla.append(lay_ids)
        v0, v1 = int(sub.val_off[0]), int(sub.val_off[-1])
        vbufs.append(sub.val_buf[v0:v1])
        voffs.append(vbase + sub.val_off[1:] - v0)
        vbase += v1 - v0
    n_new = sum(a.size for a in hm)
    out = FormatResult(
        status=res.status, msg_type=res.msg_type, n_segments=res.n_segments,
        hit_msg=cat([res.hit_msg] + hm).astype(res.hit_msg.dtype),
        hit_class=cat([res.hit_class] + hc), hit_loc=cat([res.hit_loc] + hl),
        hit_valid=cat([res.hit_valid] + hv), hit_conf=cat([res.hit_conf] + hcf),
        hit_start=cat([res.hit_start] + hs).astype(res.hit_start.dtype),
        hit_end=cat([res.hit_end] + he).astype(res.hit_end.dtype),
        val_off=cat([res.val_off] + voffs).astype(res.val_off.dtype),
        val_buf=cat([res.val_buf[:int(res.val_off[-1])]] + vbufs),
        loc_names=loc_names,
        hit_layer=cat([np.zeros(res.n_hits, np.int32)] + hla),
        layer_names=layer_names)
    assert out.hit_msg.size == res.n_hits + n_new
    return out


__all__ = ["merge", "open_fields", "FLAG_EMBEDDED", "FLAG_EMBEDDED_BAD", "LIMITS"]
