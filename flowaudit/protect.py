"""Sensitive values are stored masked plus a keyed hash, never raw unless the operator opts in.

``mask(b"MSCU1234565") == "MSCU****565"``: enough left for a human to recognise the kind of
value, not enough to use it.  The HMAC-SHA256 under the operator's key lets equal values be
joined across datasets and days without storing them.
"""
from __future__ import annotations

import hmac


def mask(value: bytes) -> str:
    """Keep at most 4 leading and 3 trailing characters, about a third of the value; star the rest."""
    text = value.decode("utf-8", errors="replace")
    n = len(text)
    if n <= 4:
        return "*" * n
    head, tail = min(4, n * 4 // 11), min(3, n * 3 // 11)
    return text[:head] + "*" * (n - head - tail) + text[n - tail:]


class Protector:
    """Masks and keys values; caches per distinct value (ports repeat the same vessels and parties)."""

    def __init__(self, key: bytes, raw: bool = False, cache_size: int = 1 << 20):
        if not key:
            raise ValueError("an HMAC key is required")
        self._key = key
        self.raw = raw
        self._cache: dict[bytes, tuple[str, bytes]] = {}
        self._cache_size = cache_size

    def protect(self, value: bytes) -> tuple[str, bytes]:
        hit = self._cache.get(value)
        if hit is None:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            hit = (mask(value), hmac.digest(self._key, value, "sha256"))  # one-shot C HMAC
            self._cache[value] = hit
        return hit

    def protect_many(self, values: list[bytes]) -> tuple[list[str], list[bytes]]:
        masked, keyed = [], []
        for v in values:
            m, k = self.protect(v)
            masked.append(m)
            keyed.append(k)
        return masked, keyed
