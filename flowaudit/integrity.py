"""Integrity flags of decoded messages: the ``messages.flags`` column and the duplicate checks.

The decoders set the per-format flags (flowaudit.decode.FLAGS: EDI envelope counts and
references, JSON number and key oddities, embedded interchanges).  The :class:`Classifier
<flowaudit.pipeline.Classifier>` adds two stateful ones with :class:`Seen`:

* ``duplicate_payload``: the same value bytes (64-bit :func:`kernels.digest.payload_hash`) were
  seen before at another topic / partition / offset (or file / row);
* ``duplicate_interchange_ref``: the same interchange control reference from the same sender
  (EDIFACT UNB S002 0004:0007 + 0020, X12 ISA06/ISA05 + ISA13) was seen before.

Both are **per process** and **bounded**: one :class:`Seen` holds both kinds of key (an
interchange key is salted, so it never meets a payload key) and remembers at least the last
``entries / 2`` and at most the last ``entries`` distinct keys (default 1,000,000: 32 MiB; the
last ~330k-660k messages of a stream whose messages all carry both keys).  A
restart, or another member of the consumer group, does not see earlier messages, so a
duplicate across those is not flagged.  Re-delivery of the same offset (a replay after a
rebalance or a crash) is never a duplicate.  A flag never rejects a message.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from .decode import FLAGS
from .kernels import digest as _d

DEFAULT_ENTRIES = 1_000_000
_FLAG_NAMES = pa.array(FLAGS, pa.string())
_BITS = np.arange(len(FLAGS), dtype=np.uint32)
_REF_SALT = np.uint64(0x5EED1C0DE0F1CE5D)     # interchange keys apart from payload keys in one Seen


class Seen:
    """A bounded set of uint64 keys with their first origin (see kernels/digest.py ``seen_update``)."""

    def __init__(self, entries: int = DEFAULT_ENTRIES):
        if entries < 1:
            raise ValueError("entries must be positive")
        limit = max(entries // 2, 1)
        slots = 1 << int(2 * limit + 1 - 1).bit_length()     # power of two > 2 * limit
        self._t = [np.zeros(slots, np.uint64) for _ in range(4)]   # current keys/origins, previous keys/origins
        self._state = np.array([0, limit], np.int64)

    def update(self, keys: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """``bool[n]``: key ``k`` was seen before at another origin (0 = no key).  Remembers them."""
        keys = np.ascontiguousarray(keys, np.uint64)
        origins = np.ascontiguousarray(origins, np.uint64)
        if keys.shape != origins.shape:
            raise ValueError("keys and origins differ in length")
        return _d.seen_update(keys, origins, *self._t, self._state)

    def update_pair(self, payload: np.ndarray, interchange: np.ndarray, origins: np.ndarray):
        """Both flags of ``n`` messages from one table: ``(dup_payload, dup_interchange)``.  The
        interchange keys are salted (0 stays 0: no key), so the two kinds never match each other."""
        payload = np.asarray(payload, np.uint64)
        ref = np.asarray(interchange, np.uint64)
        ref = np.where(ref != 0, ref ^ _REF_SALT, ref)
        n = payload.shape[0]
        dup = self.update(np.concatenate([payload, ref]), np.concatenate([origins, origins]))
        return dup[:n], dup[n:]


def origins(sources: list[str], source_idx: np.ndarray, partition: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """uint64 per message: a hash of (source name, partition, offset), stable across processes."""
    names = np.array([int.from_bytes(hashlib.blake2b(s.encode("utf-8", "replace"), digest_size=8).digest(), "little")
                      for s in sources] or [0], np.uint64)
    h = names[np.asarray(source_idx, np.int64)] * np.uint64(0x9E3779B185EBCA87)
    h ^= (np.asarray(partition, np.int64).astype(np.uint64) + np.uint64(1)) * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= np.asarray(offset, np.int64).astype(np.uint64) * np.uint64(0x165667B19E3779F9)
    return h


def flags_array(mask: np.ndarray) -> pa.ListArray:
    """``list<string>`` column from uint32 masks (bit k = ``FLAGS[k]``; empty list when clean)."""
    mask = np.asarray(mask, np.uint32)
    bits = ((mask[:, None] >> _BITS[None, :]) & np.uint32(1)).astype(bool)
    offsets = np.zeros(mask.shape[0] + 1, np.int32)
    np.cumsum(bits.sum(axis=1), out=offsets[1:])
    cols = np.nonzero(bits)[1]                      # row-major: each row's flags in bit order
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), _FLAG_NAMES.take(pa.array(cols, pa.int64())))


__all__ = ["Seen", "origins", "flags_array", "DEFAULT_ENTRIES"]
