"""Sensitive values are stored masked plus a keyed hash, never raw unless the operator opts in.

The mask leaves what a human needs to recognise the *kind* of value (which carrier, which flag
state, which country) and nothing that lets anyone use it; the HMAC-SHA256 under the operator's
key lets equal values be joined across datasets and days without storing them.  What each data
class keeps (letters and digits are starred; separators such as ``-./: `` stay):

==========================================  ==============================================  ======================
data class                                  keeps                                           example
==========================================  ==============================================  ======================
container_number                            owner code and category letter, check digit     ``MSCU******5``
imo_number                                  the ``IMO`` prefix, the check digit             ``IMO******3``
mmsi                                        the 3-digit MID (flag state)                    ``636******``
call_sign                                   the first character (ITU prefix)                ``9******``
eori                                        the 2-letter country code                       ``DE*************``
lei                                         the 4-character LOU prefix                      ``5493****************``
cn_usci                                     registration authority and entity type (2)      ``91****************``
port_of_call                                the country of the UN/LOCODE                    ``CN***``
hs_code                                     the chapter (2 digits)                          ``85****``
un_number                                   the ``UN`` prefix                               ``UN****``
vessel_name, party_name, contact_person,    the first character of each word of 2 or more   ``M** O****``
driver_name, goods_description,
party_address
email                                       the domain                                      ``****@maersk.com``
phone                                       ``+`` and the country code (numbers written     ``+86 ** **** ****``
                                            ``+CC`` or ``00CC``); nothing of national ones
cargo_weight, vgm, cargo_value              unit and currency letters, no digit             ``USD *****.**``
date_of_birth, passport_number,             nothing but separators                          ``****-**-**``
licence_plate, freight_charges
any other class, and Kafka keys             a leading run of letters (carrier, country or   ``MAEU*********``
                                            document prefix): at most 4 characters and a
                                            third of the value
==========================================  ==============================================  ======================

Identifier classes keep at most a third of their characters, except container numbers (5 of 11:
the owner prefix says whose box it is, the check digit says whether the number was valid).

:class:`Protector` also seals quarantined payloads (AES-256-GCM under a key derived from the same
operator key, see :meth:`Protector.seal`), so that nothing raw is at rest unless opted in.
"""
from __future__ import annotations

import hmac
import re
import string

import numpy as np
import pyarrow as pa

from .datasets import dictionary_array
from .kernels import dedupe as _dd
from .kernels import hmac as _hk
from .kernels import mask as _mk
from .kernels._jit import read_only

SEAL_ENCODING = "aes-256-gcm/v1"       # the ``raw_encoding`` of a sealed quarantine payload
PLAIN_ENCODING = "plain"               # ``raw_encoding`` when the operator opted into raw values
# HKDF ``info`` of the v1 sealing key: fixed forever, so rows sealed today open with the same
# operator key in any later version (a new scheme gets a new label and a new encoding name)
_SEAL_INFO = b"flowaudit quarantine payload aes-256-gcm v1"
_NONCE_INFO = b"flowaudit quarantine payload nonce hmac-sha256 v1"
NONCE_BYTES = 12

# ITU-T E.164 country codes of one and two digits; every other code has three
_CC1 = {"1", "7"}
_CC2 = {str(c) for c in _mk.CC2}


_ASCII_STAR = str.maketrans(dict.fromkeys(string.ascii_letters + string.digits, "*"))


def _starred(text: str) -> str:
    """Every letter and digit starred (one C call for ASCII text)."""
    if text.isascii():
        return text.translate(_ASCII_STAR)
    return "".join("*" if c.isalnum() else c for c in text)


def _star(text: str, keep=(), starred: str | None = None) -> str:
    """Star every letter and digit of ``text`` except the positions in ``keep``."""
    out = _starred(text) if starred is None else starred
    if not keep:
        return out
    chars = list(out)
    for i in keep:
        chars[i] = text[i]
    return "".join(chars)


def _n_alnum(text: str, starred: str) -> int:
    return starred.count("*") - text.count("*")


def _head(text: str, k: int) -> list[int]:
    """Positions of the first ``k`` letters and digits."""
    out: list[int] = []
    if k <= 0:
        return out
    for i, c in enumerate(text):
        if c.isalnum():
            out.append(i)
            if len(out) == k:
                break
    return out


def _last(text: str) -> int:
    """Position of the last letter or digit (-1: none)."""
    for i in range(len(text) - 1, -1, -1):
        if text[i].isalnum():
            return i
    return -1


# the leading run of up to k ASCII letters (separators between them included)
_LEAD = [re.compile(r"(?:[^A-Za-z0-9]*[A-Za-z]){0,%d}" % k) for k in range(5)]


def _identifier(text: str) -> str:
    s = _starred(text)
    k = min(4, _n_alnum(text, s) // 3)
    if k == 0:
        return s
    if text.isascii():
        end = _LEAD[k].match(text).end()
        return text[:end] + s[end:]
    keep = []
    for i in _head(text, k):
        if not text[i].isalpha():
            break
        keep.append(i)
    return _star(text, keep, s)


def _container(text: str) -> str:
    if len(text) == 11 and text[:4].isalpha() and text[4:].isdigit():   # the usual form, fast
        return text[:4] + "******" + text[10]
    pos = [i for i, c in enumerate(text) if c.isalnum()]
    chars = "".join(text[i] for i in pos)
    if len(chars) == 11 and chars[:4].isalpha() and chars[4:].isdigit():
        return _star(text, pos[:4] + pos[-1:])
    return _identifier(text)


def _imo(text: str) -> str:
    s = _starred(text)
    head = _head(text, 3)
    keep = head if "".join(text[i] for i in head).upper() == "IMO" else []
    last = _last(text)
    if _n_alnum(text, s) > len(keep) + 3 and text[last].isdigit():
        keep = keep + [last]
    return _star(text, keep, s)


def _first(n: int):
    def rule(text: str) -> str:
        s = _starred(text)
        return _star(text, _head(text, n) if _n_alnum(text, s) >= 3 * n else [], s)
    return rule


def _country_prefix(min_len: int):
    """Two leading letters (EORI, UN/LOCODE): the country, in values of ``min_len`` or more."""
    def rule(text: str) -> str:
        s = _starred(text)
        head = _head(text, 2)
        ok = _n_alnum(text, s) >= min_len and all(text[i].isalpha() for i in head)
        return _star(text, head if ok else [], s)
    return rule


def _un_number(text: str) -> str:
    head = _head(text, 2)
    return _star(text, head if "".join(text[i] for i in head).upper() == "UN" else [])


def _initials(text: str) -> str:
    """The first character of every word of two or more characters."""
    keep, word = [], []
    for i, c in enumerate(text + " "):
        if c.isspace():
            if len(word) >= 2:
                keep.append(word[0])
            word = []
        elif c.isalnum():
            word.append(i)
    return _star(text, keep)


def _email(text: str) -> str:
    at = text.rfind("@")
    if at <= 0:
        return _identifier(text)
    return "*" * at + text[at:]


def _phone(text: str) -> str:
    digits = [i for i, c in enumerate(text) if c.isalnum()]
    s = text.lstrip()
    lead = len(text) - len(s)
    skip = 1 if s.startswith("+") else 2 if s.startswith("00") else 0
    if not skip:
        return _star(text)
    rest = [i for i in digits if i >= lead + skip]
    ds = "".join(text[i] for i in rest[:3])
    cc = 1 if ds[:1] in _CC1 else 2 if ds[:2] in _CC2 else 3
    keep = [i for i in digits if i < lead + skip] + rest[:cc]
    return _star(text, keep) if len(rest) > cc + 3 else _star(text)


def _digits_only(text: str) -> str:
    return "".join("*" if c.isdigit() else c for c in text)


# one table: data class -> (rule, parameter).  The Python rules above are the reference (and mask
# the values with a character above U+00FF); kernels/mask.py implements the same rules for the
# batch path (tests/test_protect.py holds the two equal on any bytes).
RULES = {
    "container_number": (_mk.CONTAINER, 0),
    "imo_number": (_mk.IMO, 0),
    "mmsi": (_mk.FIRST, 3),
    "call_sign": (_mk.FIRST, 1),
    "eori": (_mk.COUNTRY, 6),           # an identifier: at most a third
    "lei": (_mk.FIRST, 4),
    "cn_usci": (_mk.FIRST, 2),
    "port_of_call": (_mk.COUNTRY, 4),   # a place: the country is what matters
    "hs_code": (_mk.FIRST, 2),
    "un_number": (_mk.UN, 0),
    **dict.fromkeys(("vessel_name", "party_name", "contact_person", "driver_name", "goods_description",
                     "party_address"), (_mk.INITIALS, 0)),
    "email": (_mk.EMAIL, 0),
    "phone": (_mk.PHONE, 0),
    **dict.fromkeys(("cargo_weight", "vgm", "cargo_value"), (_mk.DIGITS, 0)),
    **dict.fromkeys(("date_of_birth", "passport_number", "licence_plate", "freight_charges"), (_mk.STAR, 0)),
}
DEFAULT_RULE = (_mk.IDENTIFIER, 0)      # any other class, and Kafka keys
_PY_RULES = {
    _mk.STAR: lambda _p: _star, _mk.IDENTIFIER: lambda _p: _identifier, _mk.CONTAINER: lambda _p: _container,
    _mk.IMO: lambda _p: _imo, _mk.FIRST: _first, _mk.COUNTRY: _country_prefix, _mk.UN: lambda _p: _un_number,
    _mk.INITIALS: lambda _p: _initials, _mk.EMAIL: lambda _p: _email, _mk.PHONE: lambda _p: _phone,
    _mk.DIGITS: lambda _p: _digits_only,
}
MASK_RULES = {name: _PY_RULES[code](param) for name, (code, param) in RULES.items()}


def _apply(rule, text: str) -> str:
    out = rule(text)
    return _star(text) if out == text else out   # never the value itself (e.g. "USD" as a value)


def mask(value: bytes, data_class: str | None = None) -> str:
    """The masked text of ``value`` under the rule of ``data_class`` (None: the identifier rule)."""
    return _apply(MASK_RULES.get(data_class, _identifier), value.decode("utf-8", errors="replace"))


def rules_of(names) -> tuple[np.ndarray, np.ndarray]:
    """``(rule, param)`` arrays (kernels/mask.py codes) for data class names; None or a class
    without a rule of its own: the identifier rule."""
    pairs = [RULES.get(c, DEFAULT_RULE) for c in names]
    return (np.fromiter((r for r, _ in pairs), np.uint8, count=len(pairs)),
            np.fromiter((p for _, p in pairs), np.int64, count=len(pairs)))


def _string_array(off: np.ndarray, data: np.ndarray) -> pa.StringArray:
    if off[-1] > np.iinfo(np.int32).max:
        raise ValueError("more than 2 GiB of strings in one array")
    return pa.StringArray.from_buffers(off.shape[0] - 1, pa.py_buffer(off.astype(np.int32)), pa.py_buffer(data))


def mask_slices(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, rule: np.ndarray | None = None,
                param: np.ndarray | None = None) -> pa.StringArray:
    """The masks of ``buf[starts[i]:ends[i]]`` under ``rule[i]`` / ``param[i]`` (:func:`rules_of`;
    None: the identifier rule) as one string array, equal to :func:`mask` value by value.
    Masked in the kernel (kernels/mask.py); a value with a character above U+00FF (other than
    U+FFFD) by the Python rule."""
    buf = read_only(buf, np.uint8)
    starts, ends = read_only(starts, np.int64), read_only(ends, np.int64)
    n = starts.shape[0]
    rule = read_only(np.full(n, DEFAULT_RULE[0], np.uint8) if rule is None else rule, np.uint8)
    param = read_only(np.full(n, DEFAULT_RULE[1], np.int64) if param is None else param, np.int64)
    out, off, todo = _mk.mask_values(buf, starts, ends, rule, param)   # raises on a slice outside buf
    other = np.flatnonzero(todo)
    if other.size:                                       # few: names in other scripts
        texts = {}
        lens = np.diff(off)
        for i in other.tolist():
            text = buf[starts[i]:ends[i]].tobytes().decode("utf-8", errors="replace")
            texts[i] = _apply(_PY_RULES[int(rule[i])](int(param[i])), text).encode("utf-8")
            lens[i] = len(texts[i])
        new_off = np.zeros(n + 1, np.int64)
        np.cumsum(lens, out=new_off[1:])
        spliced = np.empty(int(new_off[-1]), np.uint8)
        a = 0
        for i in other.tolist() + [n]:                   # the kernel's runs between them, as they are
            spliced[new_off[a]:new_off[i]] = out[off[a]:off[i]]
            if i < n:
                spliced[new_off[i]:new_off[i + 1]] = np.frombuffer(texts[i], np.uint8)
            a = i + 1
        out, off = spliced, new_off
    return _string_array(off, out)


def binary_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(data, offsets)`` of a binary/string array without nulls: value ``i`` is
    ``data[offsets[i]:offsets[i + 1]]`` (int64 offsets, n + 1)."""
    if arr.null_count:
        raise ValueError("an array with nulls")
    _validity, offs, data = arr.buffers()[:3]
    off = np.frombuffer(offs, np.int32, count=len(arr) + 1, offset=arr.offset * 4).astype(np.int64)
    buf = np.zeros(0, np.uint8) if data is None else np.frombuffer(data, np.uint8)
    return buf, off


def gather_strings(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.StringArray:
    """``buf[starts[i]:ends[i]]`` as strings, as ``bytes.decode("utf-8", errors="replace")`` gives
    them (copied once into one buffer; invalid UTF-8 takes the per-value Python decode)."""
    buf = read_only(buf, np.uint8)
    starts, ends = read_only(starts, np.int64), read_only(ends, np.int64)
    off = np.zeros(starts.shape[0] + 1, np.int64)
    np.cumsum(ends - starts, out=off[1:])
    data = _dd.gather_slices(buf, starts, ends, read_only(off, np.int64))
    arr = _string_array(off, data)
    try:
        arr.validate(full=True)                          # UTF-8 checked here
        return arr
    except pa.ArrowInvalid:
        b = data.tobytes()
        o = off.tolist()
        return pa.array([b[o[i]:o[i + 1]].decode("utf-8", errors="replace") for i in range(len(o) - 1)], pa.string())


def warmup() -> None:
    """Compile (or load from the cache) the kernels of :class:`Protector` for the array types the
    batch path gives them, raw values included (``flowaudit warmup``)."""
    p = Protector(b"warmup-key-not-secret", raw=True)
    buf = np.frombuffer(b"MSCU1234565M\xdcLLER", np.uint8).copy()
    starts, ends = np.array([0, 11], np.int64), np.array([11, 17], np.int64)
    p.protect_slices(buf, starts, ends, *rules_of(["container_number", "party_name"]))
    gather_strings(buf, starts, ends)
    p.key_columns([b"k", None])


class Protector:
    """Masks, keys and seals values under the operator key.

    The batch path masks and keys whole arrays of values at once (:meth:`protect_slices`, numba
    kernels: kernels/mask.py and kernels/hmac.py); :meth:`protect` is the one-value form, cached per
    distinct value."""

    def __init__(self, key: bytes, raw: bool = False, cache_size: int = 1 << 20):
        if not key:
            raise ValueError("an HMAC key is required")
        self._key = key
        self.raw = raw
        self._cache: dict[tuple, tuple[str, bytes]] = {}
        self._cache_size = cache_size
        self._aead = self._nonce_key = None
        self._pads = None

    def hmac(self, value: bytes) -> bytes:
        return hmac.digest(self._key, value, "sha256")  # one-shot C HMAC

    def hmac_slices(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.FixedSizeBinaryArray:
        """``HMAC-SHA256(key, buf[starts[i]:ends[i]])`` for every ``i``, equal to :meth:`hmac`."""
        if self._pads is None:
            self._pads = _hk.hmac_pads(self._key)
        digests = _hk.hmac_sha256_many(buf, starts, ends, self._pads)
        return pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), digests.shape[0], [None, pa.py_buffer(digests)])

    def protect_slices(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, rule: np.ndarray | None = None,
                       param: np.ndarray | None = None) -> tuple[pa.StringArray, pa.FixedSizeBinaryArray]:
        """Masked (:func:`mask_slices`) and keyed (:meth:`hmac_slices`) arrays of many values, with
        no Python object per value: the same strings and bytes :meth:`protect` gives one by one."""
        return mask_slices(buf, starts, ends, rule, param), self.hmac_slices(buf, starts, ends)

    def protect(self, value: bytes, data_class: str | None = None) -> tuple[str, bytes]:
        ck = (value, data_class)
        hit = self._cache.get(ck)
        if hit is None:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            hit = (mask(value, data_class), self.hmac(value))
            self._cache[ck] = hit
        return hit

    def protect_many(self, values: list[bytes], classes: list | None = None) -> tuple[list[str], list[bytes]]:
        masked, keyed = [], []
        cache = self._cache
        for i, v in enumerate(values):
            c = None if classes is None else classes[i]
            hit = cache.get((v, c)) or self.protect(v, c)
            masked.append(hit[0])
            keyed.append(hit[1])
        return masked, keyed

    def key_columns(self, keys: list) -> list[pa.Array]:
        """``key_masked``, ``key_hmac``, ``key_raw`` for Kafka keys (bytes or None per row): each
        distinct key is masked and keyed once; ``key_raw`` stays null unless raw values are on."""
        arr = pa.array(keys, pa.binary())
        enc = arr.dictionary_encode()
        buf, off = binary_buffers(enc.dictionary)
        masked, keyed = self.protect_slices(buf, off[:-1], off[1:])
        cols = [dictionary_array(enc.indices, masked), dictionary_array(enc.indices, keyed)]
        cols.append(arr if self.raw else pa.nulls(len(arr), pa.binary()))
        return cols

    # -- sealing (quarantined payloads) -------------------------------------------------------

    def _cipher(self):
        if self._aead is None:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
            from cryptography.hazmat.primitives.kdf.hkdf import HKDF

            def derive(info: bytes) -> bytes:
                return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(self._key)
            self._aead = AESGCM(derive(_SEAL_INFO))
            self._nonce_key = derive(_NONCE_INFO)
        return self._aead

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """``nonce (12 bytes) || AES-256-GCM(plaintext) || tag (16)``, bound to ``aad``.

        The nonce is synthetic (the idea of SIV, RFC 5297 / 8452): the first 12 bytes of
        HMAC-SHA256, under a key of its own (HKDF of the operator key, another label), over the
        ``aad`` and the plaintext.  The same row sealed again gives the same bytes, so a replay,
        a duplicate delivery or a resumed audit rewrites identical files; rows or payloads that
        differ get nonces that collide no more often than random ones.  What it shows: that two
        blobs seal the same payload for the same row, which their provenance columns say anyway.
        :meth:`open` is unchanged, so rows sealed with random nonces stay readable."""
        aead = self._cipher()
        nonce = hmac.new(self._nonce_key, len(aad).to_bytes(8, "big") + aad + plaintext,
                         "sha256").digest()[:NONCE_BYTES]
        return nonce + aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """The plaintext of :meth:`seal`; ``cryptography.exceptions.InvalidTag`` when the key or
        the ``aad`` differ, or the blob was altered."""
        return self._cipher().decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
