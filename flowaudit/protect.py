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
import os
import re
import string

import pyarrow as pa

SEAL_ENCODING = "aes-256-gcm/v1"       # the ``raw_encoding`` of a sealed quarantine payload
PLAIN_ENCODING = "plain"               # ``raw_encoding`` when the operator opted into raw values
# HKDF ``info`` of the v1 sealing key: fixed forever, so rows sealed today open with the same
# operator key in any later version (a new scheme gets a new label and a new encoding name)
_SEAL_INFO = b"flowaudit quarantine payload aes-256-gcm v1"
NONCE_BYTES = 12

# ITU-T E.164 country codes of one and two digits; every other code has three
_CC1 = {"1", "7"}
_CC2 = {"20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47", "48",
        "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65", "66", "81",
        "82", "84", "86", "90", "91", "92", "93", "94", "95", "98"}


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


_NAMES = _initials
MASK_RULES = {
    "container_number": _container,
    "imo_number": _imo,
    "mmsi": _first(3),
    "call_sign": _first(1),
    "eori": _country_prefix(6),          # an identifier: at most a third
    "lei": _first(4),
    "cn_usci": _first(2),
    "port_of_call": _country_prefix(4),  # a place: the country is what matters
    "hs_code": _first(2),
    "un_number": _un_number,
    "vessel_name": _NAMES, "party_name": _NAMES, "contact_person": _NAMES, "driver_name": _NAMES,
    "goods_description": _NAMES, "party_address": _NAMES,
    "email": _email,
    "phone": _phone,
    "cargo_weight": _digits_only, "vgm": _digits_only, "cargo_value": _digits_only,
    "date_of_birth": _star, "passport_number": _star, "licence_plate": _star, "freight_charges": _star,
}


def mask(value: bytes, data_class: str | None = None) -> str:
    """The masked text of ``value`` under the rule of ``data_class`` (None: the identifier rule)."""
    text = value.decode("utf-8", errors="replace")
    out = MASK_RULES.get(data_class, _identifier)(text)
    return _star(text) if out == text else out   # never the value itself (e.g. "USD" as a value)


class Protector:
    """Masks, keys and seals values under the operator key; caches per distinct value (ports
    repeat the same vessels and parties)."""

    def __init__(self, key: bytes, raw: bool = False, cache_size: int = 1 << 20):
        if not key:
            raise ValueError("an HMAC key is required")
        self._key = key
        self.raw = raw
        self._cache: dict[tuple, tuple[str, bytes]] = {}
        self._cache_size = cache_size
        self._aead = None

    def hmac(self, value: bytes) -> bytes:
        return hmac.digest(self._key, value, "sha256")  # one-shot C HMAC

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
        distinct = enc.dictionary.to_pylist()
        masked, keyed = self.protect_many(distinct)
        cols = [pa.DictionaryArray.from_arrays(enc.indices, pa.array(masked, pa.string())),
                pa.DictionaryArray.from_arrays(enc.indices, pa.array(keyed, pa.binary(32)))]
        cols.append(arr if self.raw else pa.nulls(len(arr), pa.binary()))
        return cols

    # -- sealing (quarantined payloads) -------------------------------------------------------

    def _cipher(self):
        if self._aead is None:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
            from cryptography.hazmat.primitives.kdf.hkdf import HKDF

            k = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_INFO).derive(self._key)
            self._aead = AESGCM(k)
        return self._aead

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """``nonce (12 random bytes) || AES-256-GCM(plaintext) || tag (16)``, bound to ``aad``."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._cipher().encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """The plaintext of :meth:`seal`; ``cryptography.exceptions.InvalidTag`` when the key or
        the ``aad`` differ, or the blob was altered."""
        return self._cipher().decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
