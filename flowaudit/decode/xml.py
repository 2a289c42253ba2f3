"""XML decoder shell: rules from schemas/catalog/xml.toml, kernel kernels/xmlscan.py.

``classify(buf, offsets, sel) -> FormatResult`` per the contract in ``flowaudit.decode``;
like JSON, the result carries ``flags`` (uint8 per selected message, an extra attribute): 8 a
leaf holding an EDIFACT or X12 interchange or a base64 / compressed document (decoded too,
:mod:`flowaudit.decode.embedded`), 16 that embedded value could not be decoded.

The numba scanner is the only parser that sees the bytes: it refuses DOCTYPE/ENTITY
declarations, XInclude and unknown entity references outright (forbidden_xml_construct) and
rejects anything not well-formed.  There is deliberately no lxml fallback: the scanner's
grammar is checked against the hardened lxml parser of reliability.md section 3 in
tests/test_kernels_xml.py, and a permissive second parser would only add attack surface.

Declared encodings: the scanner reads UTF-8 (and its ASCII subset).  A document whose XML
declaration names a single-byte, ASCII-compatible encoding that Python knows (ISO-8859-1 ... 16,
windows-1250 ... 1258, KOI8-R, Mac Roman ...: every byte one character) is read in that
encoding, as an XML parser does: it is transcoded to UTF-8 here, its declaration is blanked
(spaces, same length) and the scanner runs on the copy.  Values come out as UTF-8; ``hit_start``
/ ``hit_end`` are mapped back to the bytes as received (one byte per character), so positions
always refer to the raw message.  Refused with ``bad_charset``: bytes the declared encoding does
not define (windows-1252 0x81 ...), a UTF-8 BOM in front of a non-UTF-8 declaration, and
encodings the scanner cannot read (unknown names, multi-byte ones such as Shift_JIS, UTF-16).
A document declaring UTF-8, or nothing, must be valid UTF-8 (``invalid_utf8``).  A UTF-8
document falsely declared ISO-8859-1 is read as Latin-1 (every byte sequence is valid there):
its non-ASCII values come out as mojibake, never as an error.
"""
from __future__ import annotations

import codecs
import threading
import tomllib
from functools import lru_cache

import numpy as np

from flowaudit import schemas
from flowaudit.decode import REASON_CODES, FormatResult
from flowaudit.decode.detect import check_batch
from flowaudit.kernels._jit import read_only
from flowaudit.decode.json import compile_rules, run_kernel
from flowaudit.kernels import jsonscan as K
from flowaudit.kernels.dedupe import unique_slices
from flowaudit.kernels.jsonscan import name_hash, name_hashes
from flowaudit.kernels.xmlscan import declared_encoding, xml_scan

_UTF8_NAMES = np.array([name_hash(n) for n in ("utf-8", "us-ascii", "ascii")], np.uint64)  # what the scanner reads

_lock = threading.Lock()
_cache: dict = {}


def _hashes(names) -> np.ndarray:
    return np.array([name_hash(n) for n in names], dtype=np.uint64)


def load_rules(path=None) -> dict:
    """Compile xml.toml into the kernel's rule tables (cached per path)."""
    path = str(path or schemas.path("catalog", "xml.toml"))
    with _lock:
        if path in _cache:
            return _cache[path]
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        compiled = compile_doc(doc)
        _cache[path] = compiled
        return compiled


def compile_doc(doc: dict) -> dict:
    """A parsed xml.toml -> the kernel's tables (rules, wrappers, documents)."""
    compiled = compile_rules(doc, "elements")
    mt = doc.get("message_type", {})
    compiled["wrappers"] = _hashes(mt.get("wrappers", []))
    compiled["documents"] = _hashes(mt.get("documents", []))
    return compiled


@lru_cache(maxsize=256)
def single_byte_codec(name: str) -> str | None:
    """Python's codec for ``name`` when it is a text encoding that maps every byte to at most one
    character and bytes 0..127 to ASCII (so the declaration reads the same); else None."""
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True):
        return None
    try:
        if bytes(range(128)).decode(info.name) != bytes(range(128)).decode("ascii"):
            return None
    except (UnicodeDecodeError, ValueError):
        return None
    for b in range(128, 256):
        for probe, n in ((bytes([b]), 1), (bytes([b, 0x41]), 2)):
            try:
                if len(probe.decode(info.name)) != n:
                    return None          # a multi-byte lead byte
            except UnicodeDecodeError:
                pass                     # a byte the encoding does not define
    return info.name


def _transcode(buf, offsets, sel):
    """Messages declaring a single-byte encoding, transcoded (see the module docstring).

    Returns None when there are none, else ``(buf2, offsets2, back, bad)``: the selected messages
    in a compact batch, message ``j`` of ``sel`` is message ``2 j`` of ``buf2`` / ``offsets2``
    (each followed by a one-byte gap message that stands for its end); ``back`` (int64,
    ``len(buf2) + 1``) maps a position in ``buf2`` to the original position in ``buf``; ``bad``
    lists the ``j`` refused as ``bad_charset``."""
    decl = declared_encoding(read_only(buf), read_only(offsets), read_only(sel))
    cand = np.flatnonzero(decl[:, 1] >= 0)
    # most declare UTF-8: those are told apart in one kernel call, not one Python hash each
    cand = cand[~np.isin(name_hashes(read_only(buf), decl[cand, 1], decl[cand, 2]), _UTF8_NAMES)]
    todo: dict[int, bytes] = {}
    bad = []
    for j in cand.tolist():
        raw_name = bytes(buf[decl[j, 1]:decl[j, 2]])
        codec = single_byte_codec(raw_name.decode("ascii", "replace"))
        if codec is None:
            continue                     # the scanner refuses it (bad_charset)
        s, e = int(offsets[sel[j]]), int(offsets[sel[j] + 1])
        d = int(decl[j, 0]) - s          # the declaration's length
        if (buf[s:s + d] >= 0x80).any():
            continue                     # not ASCII (a BOM, or bytes the scanner refuses itself)
        try:
            text = bytes(buf[s:e]).decode(codec).encode("utf-8")
        except UnicodeDecodeError:
            bad.append(j)                # a byte the declared encoding does not define
            todo[j] = b""
            continue
        todo[j] = b" " * d + text[d:]    # the ASCII declaration, blanked: the same length
    if not todo:
        return None
    parts, back = [], []
    for j, i in enumerate(sel.tolist()):
        s, e = int(offsets[i]), int(offsets[i + 1])
        if j in todo:
            t = todo[j]
            starts = (np.frombuffer(t, np.uint8) & 0xC0) != 0x80      # one original byte per character
            back.append(s + np.cumsum(starts) - starts.astype(np.int64))
        else:
            t = bytes(buf[s:e])
            back.append(np.arange(s, e, dtype=np.int64))
        parts += [t, b" "]
        back.append(np.array([e], np.int64))                         # the gap: the message's end
    offsets2 = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([len(p) for p in parts], out=offsets2[1:])
    back.append(back[-1])                                            # the end of the last gap
    buf2 = np.frombuffer(b"".join(parts), np.uint8)
    return buf2, offsets2, np.concatenate(back), bad


def _message_types(buf: np.ndarray, mt: np.ndarray) -> list:
    """``buf[mt[j, 0]:mt[j, 1]]`` as text per message ("" where ``mt[j, 0] < 0``), each distinct
    type decoded once (the spans grouped by content in one kernel call, not a bytes object per
    message)."""
    ok = np.flatnonzero(mt[:, 0] >= 0)
    out = [""] * mt.shape[0]
    if ok.size:
        uid, first = unique_slices(read_only(buf), np.ascontiguousarray(mt).reshape(-1), 2 * ok)
        j0 = ok[first]
        names = [bytes(buf[a:b]).decode("utf-8", "replace") for a, b in zip(mt[j0, 0].tolist(), mt[j0, 1].tolist())]
        for j, u in zip(ok.tolist(), uid.tolist()):
            out[j] = names[u]
    return out


def classify(buf, offsets, sel, embedded: bool = True, rules: dict | None = None) -> FormatResult:
    """Scan and classify the XML messages ``sel`` of the batch (see ``flowaudit.decode``)."""
    buf, offsets, sel = check_batch(buf, offsets, sel)
    R = rules if rules is not None else load_rules()
    tc = _transcode(buf, offsets, sel) if sel.shape[0] else None
    if tc is not None:   # run on the compact, transcoded copy; positions are mapped back below
        orig_sel, (buf, offsets, back, bad) = sel, tc
        sel = 2 * np.arange(orig_sel.shape[0], dtype=np.int64)
    mt = np.full((sel.shape[0], 2), -1, dtype=np.int64)
    out = run_kernel(xml_scan, R, buf, offsets, sel, (R["wrappers"], R["documents"], mt))
    res = out.result(_message_types(buf, mt))
    E, ebuf = out.embedded()
    if tc is not None:
        res.hit_msg = orig_sel[res.hit_msg // 2]
        res.hit_start = back[res.hit_start]
        res.hit_end = back[res.hit_end]
        E = E.copy()
        E[:, K.E_MSG] = orig_sel[E[:, K.E_MSG] // 2]
        E[:, K.E_START] = back[E[:, K.E_START]]
        E[:, K.E_END] = back[E[:, K.E_END]]
        res.status[bad] = REASON_CODES["bad_charset"]
        sel = orig_sel
    if embedded:
        from flowaudit.decode import embedded as emb
        res = emb.merge(res, E, ebuf, sel, "xml-text")
    return res


__all__ = ["classify", "load_rules", "compile_doc"]
