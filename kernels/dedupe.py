"""Distinct byte strings in a batch: hits repeat the same vessels, parties and containers, so
masking and keyed hashing run once per distinct value, not once per hit."""
from __future__ import annotations

import numpy as np

from ._jit import kernel


@kernel
def unique_slices(buf, off, idx):
    """Group the slices ``buf[off[i]:off[i+1]]`` for ``i`` in ``idx`` by content.

    Returns ``(uid, first)``: ``uid[k]`` numbers the distinct value of slice ``idx[k]`` in order of
    first appearance, and ``first[u]`` is the position in ``idx`` where value ``u`` first appears.
    Open addressing on a 64-bit FNV-1a hash; equal hashes are confirmed byte by byte.
    """
    n = idx.shape[0]
    uid = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    cap = 16
    while cap < 2 * n:
        cap *= 2
    table = np.full(cap, -1, np.int64)       # -> distinct value number
    hashes = np.empty(n, np.uint64)          # per distinct value
    mask = cap - 1
    n_u = 0
    nbuf = buf.shape[0]
    for k in range(n):
        i = idx[k]
        s = off[i]
        e = off[i + 1]
        if s < 0 or e < s or e > nbuf:       # malformed offsets: treat as empty slice
            s = 0
            e = 0
        h = np.uint64(14695981039346656037)
        for p in range(s, e):
            h = (h ^ np.uint64(buf[p])) * np.uint64(1099511628211)
        slot = np.int64(h & np.uint64(mask))
        while True:
            u = table[slot]
            if u < 0:
                table[slot] = n_u
                hashes[n_u] = h
                first[n_u] = k
                uid[k] = n_u
                n_u += 1
                break
            if hashes[u] == h:
                j = idx[first[u]]
                s2 = off[j]
                e2 = off[j + 1]
                if s2 < 0 or e2 < s2 or e2 > nbuf:
                    s2 = 0
                    e2 = 0
                if e2 - s2 == e - s:
                    same = True
                    for p in range(e - s):
                        if buf[s + p] != buf[s2 + p]:
                            same = False
                            break
                    if same:
                        uid[k] = u
                        break
            slot = (slot + 1) & mask
    return uid, first[:n_u].copy()
