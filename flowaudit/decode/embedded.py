"""EDIFACT embedded in JSON strings and XML text, decoded as a sub-batch.

Real port systems wrap interchanges in other formats: the FIWARE ``EdiCodeco`` entity carries
the raw CODECO in ``messageRaw``; the JAPDEVA tool writes a whole COARRI as one JSON string; SOAP
and PCS XML put interchanges in an element's text or a CDATA section.

Design
------
The JSON and XML kernels mark every string value / leaf text that starts (after white space)
with ``UNA``, ``UNB`` or ``UNH+``.  They decode it (JSON escapes, XML entities and CDATA) into
one side buffer ``ebuf`` and list it in a table ``E`` (outer message, outer location, raw byte
range of the outer string, offset and length in ``ebuf``).  :func:`merge` runs
:func:`flowaudit.decode.edifact.classify` once over all of them as a sub-batch (``ebuf`` with
offsets from ``E``) and maps the hits back to the outer message:

* ``hit_msg``: the outer message's batch index;
* location: the outer location, ``>``, the EDIFACT location (``$.messageRaw>EQD+CN/C237.8260``);
* ``hit_start``/``hit_end``: the outer string's raw range (the inner offsets refer to decoded
  bytes, which need not exist byte-for-byte in the outer message);
* the embedded hits are appended after the outer hits (the pipeline orders hits by message);
* class, validity, confidence and the normalised value as the EDIFACT decoder found them;
* layer (``hits.layer``): ``json-field>edifact`` / ``xml-text>edifact`` (text or CDATA), the
  byte range staying the outer string's (the field is part of the message as received).

An embedded interchange that the EDIFACT decoder refuses sets flag 16 (``FLAG_EMBEDDED_BAD``)
on the outer message; the outer message itself stays decoded.  Nesting stops at one level: the
EDIFACT decoder never looks for JSON or XML inside segments.
"""
from __future__ import annotations

import numpy as np

from flowaudit.decode import FormatResult
from flowaudit.kernels import jsonscan as K

FLAG_EMBEDDED_BAD = 16


def decode_edifact(E: np.ndarray, ebuf: np.ndarray) -> FormatResult:
    """EDIFACT classification of the embedded strings ``E`` (rows) whose bytes are in ``ebuf``."""
    from flowaudit.decode import edifact
    n = E.shape[0]
    offs = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(E[:, K.E_LEN], out=offs[1:])
    if np.array_equal(offs[:-1], E[:, K.E_OFF]):
        buf = np.ascontiguousarray(ebuf[:offs[-1]])
    else:
        buf = np.concatenate([ebuf[o:o + ln] for o, ln in zip(E[:, K.E_OFF].tolist(), E[:, K.E_LEN].tolist())])
    return edifact.classify(buf, offs, np.arange(n, dtype=np.int64))


def merge(res: FormatResult, E: np.ndarray, ebuf: np.ndarray, sel: np.ndarray, layer: str = "") -> FormatResult:
    """``res`` plus the hits of the EDIFACT interchanges embedded in its messages; ``layer``
    names the layer for the hits' ``layer`` column (``json-field>edifact``, ``xml-text>edifact``)."""
    if E.shape[0] == 0:
        return res
    sub = decode_edifact(E, ebuf)
    flags = getattr(res, "flags", None)
    bad = np.flatnonzero(sub.status != 0)
    if flags is not None and bad.size:
        pos = {int(m): j for j, m in enumerate(sel.tolist())}
        for k in bad.tolist():
            flags[pos[int(E[k, K.E_MSG])]] |= FLAG_EMBEDDED_BAD
    if sub.n_hits == 0:
        return res
    row = sub.hit_msg                         # sub-batch index = row of E
    outer_loc = E[row, K.E_LOC]
    pairs = outer_loc * (len(sub.loc_names) + 1) + sub.hit_loc
    uniq, inv = np.unique(pairs, return_inverse=True)
    base = len(res.loc_names)
    names = list(res.loc_names)
    for p in uniq.tolist():
        o, i = divmod(p, len(sub.loc_names) + 1)
        names.append(f"{res.loc_names[o] if 0 <= o < len(res.loc_names) else '$'}>{sub.loc_names[i]}")
    cat = np.concatenate
    out = FormatResult(
        status=res.status, msg_type=res.msg_type, n_segments=res.n_segments,
        hit_msg=cat([res.hit_msg, E[row, K.E_MSG]]),
        hit_class=cat([res.hit_class, sub.hit_class.astype(np.int16)]),
        hit_loc=cat([res.hit_loc, (base + inv).astype(np.int32)]),
        hit_valid=cat([res.hit_valid, sub.hit_valid.astype(np.int8)]),
        hit_conf=cat([res.hit_conf, sub.hit_conf.astype(np.uint8)]),
        hit_start=cat([res.hit_start, E[row, K.E_START]]),
        hit_end=cat([res.hit_end, E[row, K.E_END]]),
        val_off=cat([res.val_off, res.val_off[-1] + sub.val_off[1:] - sub.val_off[0]]),
        val_buf=cat([res.val_buf, sub.val_buf[sub.val_off[0]:sub.val_off[-1]]]),
        loc_names=names,
        hit_layer=np.concatenate([np.zeros(res.n_hits, np.int32), np.ones(sub.n_hits, np.int32)]),
        layer_names=["", layer])
    if flags is not None:
        out.flags = flags
    return out


__all__ = ["merge", "decode_edifact", "FLAG_EMBEDDED_BAD"]
