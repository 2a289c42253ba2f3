"""Payload digests and a bounded "seen before" table (the Classifier's duplicate flags).

* :func:`payload_hash`: a 64-bit hash of each selected message's bytes.  Eight bytes per step
  (little-endian words) with the xxHash64 round (multiply, rotate, multiply), the tail byte by
  byte, then the murmur3 finaliser; about 2 GB/s on one core, so it runs over whole payloads.  Not collision resistant
  against an adversary: a crafted collision only sets (or hides) a flag, it changes no data.
* :func:`seen_update`: which keys were seen before, in a table of bounded size.  Two
  generations of open-addressing tables (``uint64`` keys, 0 = empty slot, linear probing, at most
  half full): a key is looked up in both; a key seen again is refreshed into the current
  generation; when the current generation holds ``limit`` keys it becomes the previous one and
  the old previous one is dropped.  So the last ``limit`` .. ``2 * limit`` distinct keys are
  remembered, in ``4 * limit`` slots per array.  Each key carries an *origin* (a hash of topic,
  partition and offset): a key met again at the same origin is a re-delivery (a replay after a
  rebalance), not a duplicate.

Every length read from input is clipped to the buffer; every loop advances.
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel

P1 = np.uint64(0x9E3779B185EBCA87)
P2 = np.uint64(0xC2B2AE3D27D4EB4F)
P3 = np.uint64(0x165667B19E3779F9)
P4 = np.uint64(0x85EBCA77C2B2AE63)
P5 = np.uint64(0x27D4EB2F165667C5)


@kernel
def rotl(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@kernel
def fmix(h):
    h ^= h >> np.uint64(33)
    h *= P2
    h ^= h >> np.uint64(29)
    h *= P3
    h ^= h >> np.uint64(32)
    return h


@kernel
def hash_bytes(buf, s, e):
    """64-bit hash of ``buf[s:e]`` (never 0)."""
    h = P5 ^ (np.uint64(e - s) * P1)
    n8 = (e - s) // 8
    words = buf[s:s + 8 * n8].view(np.uint64)       # little-endian words (x86-64, AArch64)
    for k in range(n8):
        h ^= rotl(words[k] * P2, 31) * P1
        h = rotl(h, 27) * P1 + P4
    i = s + 8 * n8
    while i < e:
        h ^= np.uint64(buf[i]) * P5
        h = rotl(h, 11) * P1
        i += 1
    h = fmix(h)
    return h if h != np.uint64(0) else np.uint64(1)


@kernel
def payload_hash(buf, offsets, sel):
    """``uint64[len(sel)]``: :func:`hash_bytes` of message ``sel[j]`` (``buf[offsets[i]:offsets[i+1]]``,
    clipped to ``buf``; an index outside the batch hashes as empty)."""
    m = sel.shape[0]
    out = np.empty(m, np.uint64)
    nb = offsets.shape[0] - 1
    n = buf.shape[0]
    for j in range(m):
        i = sel[j]
        s = 0
        e = 0
        if 0 <= i < nb:
            s = min(max(offsets[i], 0), n)
            e = min(max(offsets[i + 1], s), n)
        out[j] = hash_bytes(buf, s, e)
    return out


@kernel
def find_slot(tk, key):
    """Slot of ``key`` in table ``tk`` (power-of-two size), or of the empty slot where it goes."""
    mask = np.uint64(tk.shape[0] - 1)
    slot = np.int64(fmix(key) & mask)
    while tk[slot] != np.uint64(0) and tk[slot] != key:
        slot = np.int64((np.uint64(slot) + np.uint64(1)) & mask)
    return slot


@kernel
def seen_update(keys, origins, cur_k, cur_o, prev_k, prev_o, state):
    """For each key in order: was it seen before at another origin?  Updates the tables.

    ``keys`` uint64 (0 = no key: never a duplicate, not stored), ``origins`` uint64;
    ``cur_k``/``cur_o``/``prev_k``/``prev_o`` the two generations (uint64, one power-of-two size
    of at least ``2 * limit + 1`` slots); ``state`` int64 ``[fill of the current generation,
    limit]``.  Returns ``bool[len(keys)]``.
    """
    n = keys.shape[0]
    dup = np.zeros(n, np.bool_)
    limit = max(state[1], 1)
    if cur_k.shape[0] < 2 * limit + 1 or prev_k.shape[0] != cur_k.shape[0] or \
            cur_o.shape[0] != cur_k.shape[0] or prev_o.shape[0] != cur_k.shape[0]:
        return dup                                  # malformed tables: no flags rather than a bad write
    for j in range(n):
        key = keys[j]
        if key == np.uint64(0):
            continue
        org = origins[j]
        s = find_slot(cur_k, key)
        if cur_k[s] == key:
            dup[j] = cur_o[s] != org
            continue
        ps = find_slot(prev_k, key)
        if prev_k[ps] == key:
            dup[j] = prev_o[ps] != org
            org = prev_o[ps]                        # the first sighting stays the origin
        if state[0] >= limit:                       # rotate: current -> previous, fresh current
            prev_k[:] = cur_k
            prev_o[:] = cur_o
            cur_k[:] = 0
            cur_o[:] = 0
            state[0] = 0
            s = find_slot(cur_k, key)
        cur_k[s] = key
        cur_o[s] = org
        state[0] += 1
    return dup
