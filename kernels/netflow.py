"""NetFlow v5, v9 and IPFIX decoding over a whole batch of export datagrams.

Input: ``buf``/``offsets`` (datagram ``i`` is ``buf[offsets[i]:offsets[i+1]]``) and ``exp_id``,
a stable int64 exporter id per datagram (the shell interns exporter addresses; the source port
is never part of any key).  Output: one row per flow record in a column-major int64 matrix
``out[C_*, :n]`` (uint64 values are stored bit for bit and viewed as uint64 by the shell), a
status code per datagram (0 ok, else the first ``ST_*`` problem met) and per-reason counters.

The template registry is a set of numpy arrays owned by the shell
(:class:`flowaudit.decode.netflow.NetflowDecoder`) and mutated here in place:

* ``tmeta[slot, TM_*]``   one row per stored template (key, kind, lengths, refresh time, LRU tick,
                          generation); ``tfields[slot, j, F_*]`` its fields (IE, length, PEN,
                          semantic code) and ``tsel[slot, j, S_*]`` the fixed-offset fields that
                          matter (fast path for fixed-length templates);
* ``thash``               open-addressing (linear probing, backward-shift delete) index over
                          ``(k1, k2)`` with ``k1 = exporter_id << 32 | domain`` and
                          ``k2 = version << 16 | template_id``;
* ``dmeta``/``dhash``     per (exporter, domain): sampling interval, systemInitTimeMilliseconds,
                          withdraw-all generations, last export time, expected sequence number;
* ``state``               scalars: LRU tick, global generation, free-slot stack top, eviction hand.

Data sets whose template is not (yet) known wait: as *pending* rows of this batch (byte range +
header context) or as *held* sets of earlier calls (``hbuf``/``hoff``/``hmeta``, kept by the shell
for a bounded time).  At the end of every message that stored templates, the waiting sets of that
exporter/domain whose template is now live are decoded (:func:`_release`) -- with that definition,
so an exporter that restarts and redefines the id later cannot change how they read, and batch
boundaries never change a row.  Those still waiting at the end of the batch are returned.

Every length read from a packet is checked against the end of its message/set before use
(numba does not bounds-check); every loop advances by at least one byte or one record of
length >= 1; templates whose records would be 0 bytes long are never stored.
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel

# ---------------------------------------------------------------- output columns (out[i, C_*])
C_DGRAM, C_VERSION, C_DOMAIN, C_TID = 0, 1, 2, 3
C_SRC_HI, C_SRC_LO, C_DST_HI, C_DST_LO, C_IPVER = 4, 5, 6, 7, 8
C_SPORT, C_DPORT, C_PROTO, C_FLAGS = 9, 10, 11, 12
C_BYTES, C_PKTS, C_RBYTES, C_RPKTS = 13, 14, 15, 16   # rev_* = -1 when absent
C_FIRST, C_LAST, C_SAMPLING, C_TIMEFLAGS = 17, 18, 19, 20
NCOL = 21
TIME_FIRST, TIME_LAST = 1, 2      # C_TIMEFLAGS bits: the time came from the record (else export time)

# ---------------------------------------------------------------- per-reason counters
COUNTER_NAMES = (
    "datagrams", "messages", "messages_v5", "messages_v9", "messages_ipfix",
    "flow_records", "options_records",
    "templates_added", "templates_updated", "templates_refreshed", "template_withdrawn",
    "template_withdraw_all", "template_evicted", "template_expired", "domain_evicted",
    "sets_held", "held_decoded", "missing_template",
    "short_datagram", "bad_version", "v5_bad_count", "v5_truncated",
    "message_length", "set_length_zero", "set_too_short", "set_past_end",
    "zero_padding", "reserved_set", "template_truncated", "template_field_count_zero",
    "template_zero_length", "template_too_many_fields", "template_id_invalid",
    "bad_field_length", "options_scope_invalid", "varlen_overflow", "trailing_bytes",
    "sequence_gap", "v9_count_mismatch", "glued_messages", "records_truncated",
    # counted by the shell (flowaudit.decode.netflow / flowpath), never by the kernel
    "records_quarantined", "sets_quarantined", "held_duplicate", "records_late_dropped",
)
K = {name: i for i, name in enumerate(COUNTER_NAMES)}
NCOUNTERS = len(COUNTER_NAMES)
(K_DGRAMS, K_MSGS, K_V5, K_V9, K_IPFIX, K_FLOWS, K_OPTREC, K_TADD, K_TUPD, K_TREF, K_TWD, K_TWDALL,
 K_TEVICT, K_TEXPIRE, K_DEVICT, K_HELD, K_HELD_OK, K_MISSING, K_SHORT, K_BADVER, K_V5COUNT, K_V5TRUNC,
 K_MSGLEN, K_SETZERO, K_SETSHORT, K_SETPAST, K_ZEROPAD, K_RESERVED, K_TTRUNC, K_TFC0, K_TZEROLEN,
 K_TMANY, K_TIDBAD, K_BADFLEN, K_SCOPE, K_VAROVF, K_TRAILING, K_SEQGAP, K_V9COUNT, K_GLUED,
 K_RECTRUNC, K_RECQUAR, K_SETQUAR, K_HELDDUP, K_LATE) = range(NCOUNTERS)

# ---------------------------------------------------------------- datagram status codes
STATUS_NAMES = ("ok", "short_datagram", "bad_version", "v5_bad_count", "v5_truncated",
                "message_length", "set_length_zero", "set_too_short", "set_past_end",
                "template_truncated", "template_zero_length", "template_too_many_fields",
                "template_id_invalid", "options_scope_invalid", "varlen_overflow", "bad_field_length")
(ST_OK, ST_SHORT, ST_BADVER, ST_V5COUNT, ST_V5TRUNC, ST_MSGLEN, ST_SETZERO, ST_SETSHORT, ST_SETPAST,
 ST_TTRUNC, ST_TZEROLEN, ST_TMANY, ST_TIDBAD, ST_SCOPE, ST_VAROVF, ST_BADFLEN) = range(len(STATUS_NAMES))

# ---------------------------------------------------------------- semantic codes of fields
(SEM_SKIP, SEM_SRC4, SEM_DST4, SEM_SRC6, SEM_DST6, SEM_SPORT, SEM_DPORT, SEM_PROTO, SEM_FLAGS,
 SEM_BYTES, SEM_PKTS, SEM_BYTES_TOT, SEM_PKTS_TOT, SEM_BYTES_INIT, SEM_PKTS_INIT, SEM_RBYTES, SEM_RPKTS,
 SEM_FIRST_UP, SEM_LAST_UP, SEM_START_S, SEM_END_S, SEM_START_MS, SEM_END_MS, SEM_START_US, SEM_END_US,
 SEM_START_NS, SEM_END_NS, SEM_START_DUS, SEM_END_DUS, SEM_DUR_MS, SEM_DUR_US,
 SEM_SAMPLING, SEM_SPI, SEM_SPS, SEM_SYSINIT) = range(35)
SEM_NAMES = ("skip", "src4", "dst4", "src6", "dst6", "sport", "dport", "proto", "tcp_flags",
             "bytes", "packets", "bytes_total", "packets_total", "bytes_initiator", "packets_initiator",
             "rev_bytes", "rev_packets", "first_uptime", "last_uptime", "start_s", "end_s", "start_ms",
             "end_ms", "start_us", "end_us", "start_ns", "end_ns", "start_delta_us", "end_delta_us",
             "duration_ms", "duration_us", "sampling_interval", "sampling_packet_interval",
             "sampling_packet_space", "system_init_ms")

PEN_REVERSE = 29305  # RFC 5103 reverse information elements
VARLEN = 0xFFFF

# ---------------------------------------------------------------- registry layout
(TM_K1, TM_K2, TM_USED, TM_KIND, TM_NFIELDS, TM_SCOPE, TM_MINLEN, TM_FIXED, TM_NSEL, TM_REFRESH,
 TM_TICK, TM_GEN) = range(12)
TM_N = 12
F_IE, F_LEN, F_PEN, F_SEM = 0, 1, 2, 3
F_N = 4
S_OFF, S_LEN, S_SEM = 0, 1, 2
S_N = 3
(DM_K1, DM_USED, DM_SAMPLING, DM_SYSINIT, DM_GEN_DATA, DM_GEN_OPTS, DM_LAST_EXPORT, DM_NEXT_SEQ,
 DM_TICK) = range(9)
DM_N = 9
ST_TICK, ST_GEN, ST_FREE_TOP, ST_HAND, ST_DFREE_TOP, ST_DHAND = range(6)
STATE_N = 8
# pending / held data sets: meta columns
(H_DGRAM, H_START, H_END, H_K1, H_VERSION, H_DOMAIN, H_TID, H_EXPORT_NS, H_UPTIME, H_EXPORT_S,
 H_AGE) = range(11)
H_N = 11

KIND_DATA, KIND_OPTIONS = 0, 1
EVICT_SAMPLE = 32
NTP_EPOCH_OFFSET = 2208988800
MASK32 = 0xFFFFFFFF


def new_registry(capacity: int = 2048, max_fields: int = 192, domains: int = 4096):
    """Fresh, empty registry arrays (see the module docstring)."""
    hsize = 1
    while hsize < 2 * capacity:
        hsize *= 2
    dsize = 1
    while dsize < 2 * domains:
        dsize *= 2
    tmeta = np.zeros((capacity, TM_N), np.int64)
    tfields = np.zeros((capacity, max_fields, F_N), np.int64)
    tsel = np.zeros((capacity, max_fields, S_N), np.int64)
    thash = np.full(hsize, -1, np.int32)
    tfree = np.arange(capacity - 1, -1, -1, dtype=np.int32)  # stack: pop from the top
    dmeta = np.zeros((domains, DM_N), np.int64)
    dhash = np.full(dsize, -1, np.int32)
    dfree = np.arange(domains - 1, -1, -1, dtype=np.int32)
    state = np.zeros(STATE_N, np.int64)
    state[ST_FREE_TOP] = capacity
    state[ST_DFREE_TOP] = domains
    state[ST_GEN] = 1
    return dict(tmeta=tmeta, tfields=tfields, tsel=tsel, thash=thash, tfree=tfree,
                dmeta=dmeta, dhash=dhash, dfree=dfree, state=state)


# ================================================================ byte readers (bounds are the caller's)
@kernel(inline="always")
def u16(b, p):
    return (np.int64(b[p]) << 8) | np.int64(b[p + 1])


@kernel(inline="always")
def u32(b, p):
    return (np.int64(b[p]) << 24) | (np.int64(b[p + 1]) << 16) | (np.int64(b[p + 2]) << 8) | np.int64(b[p + 3])


@kernel(inline="always")
def uint_be(b, p, n):
    """Unsigned big-endian integer of ``n`` (1..8) bytes as uint64."""
    v = np.uint64(0)
    for i in range(n):
        v = (v << np.uint64(8)) | np.uint64(b[p + i])
    return v


# ================================================================ hashing
@kernel(inline="always")
def _mix(k1, k2):
    x = np.uint64(k1) * np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(k2) * np.uint64(0xC2B2AE3D27D4EB4F)
    x ^= x >> np.uint64(29)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(32)
    return np.int64(x & np.uint64(0x7FFFFFFFFFFFFFFF))


@kernel
def _t_find(thash, tmeta, k1, k2):
    """Hash position of template (k1, k2), or -(1 + free position) when absent."""
    mask = thash.shape[0] - 1
    i = _mix(k1, k2) & mask
    for _ in range(thash.shape[0]):
        s = thash[i]
        if s < 0:
            return -(1 + i)
        if tmeta[s, TM_K1] == k1 and tmeta[s, TM_K2] == k2:
            return i
        i = (i + 1) & mask
    return -(1 + thash.shape[0])  # cannot happen: load factor <= 0.5


@kernel
def _t_hash_delete(thash, tmeta, pos):
    mask = thash.shape[0] - 1
    i = pos
    j = pos
    for _ in range(thash.shape[0]):
        j = (j + 1) & mask
        s = thash[j]
        if s < 0:
            break
        home = _mix(tmeta[s, TM_K1], tmeta[s, TM_K2]) & mask
        # move s back to i unless its home lies cyclically in (i, j]
        if i <= j:
            inside = i < home <= j
        else:
            inside = home > i or home <= j
        if not inside:
            thash[i] = s
            i = j
    thash[i] = -1


@kernel
def _d_find(dhash, dmeta, k1):
    mask = dhash.shape[0] - 1
    i = _mix(k1, 0) & mask
    for _ in range(dhash.shape[0]):
        s = dhash[i]
        if s < 0:
            return -(1 + i)
        if dmeta[s, DM_K1] == k1:
            return i
        i = (i + 1) & mask
    return -(1 + dhash.shape[0])


@kernel
def _d_hash_delete(dhash, dmeta, pos):
    mask = dhash.shape[0] - 1
    i = pos
    j = pos
    for _ in range(dhash.shape[0]):
        j = (j + 1) & mask
        s = dhash[j]
        if s < 0:
            break
        home = _mix(dmeta[s, DM_K1], 0) & mask
        if i <= j:
            inside = i < home <= j
        else:
            inside = home > i or home <= j
        if not inside:
            dhash[i] = s
            i = j
    dhash[i] = -1


@kernel
def _t_remove(thash, tmeta, tfree, state, slot):
    pos = _t_find(thash, tmeta, tmeta[slot, TM_K1], tmeta[slot, TM_K2])
    if pos >= 0:
        _t_hash_delete(thash, tmeta, pos)
    tmeta[slot, TM_USED] = 0
    top = state[ST_FREE_TOP]
    tfree[top] = slot
    state[ST_FREE_TOP] = top + 1


@kernel
def _domain(dhash, dmeta, dfree, state, counters, k1, create):
    """Row of the (exporter, domain) state, created when absent and ``create``; -1 otherwise."""
    pos = _d_find(dhash, dmeta, k1)
    state[ST_TICK] += 1
    if pos >= 0:
        r = dhash[pos]
        dmeta[r, DM_TICK] = state[ST_TICK]
        return r
    if not create:
        return -1
    if state[ST_DFREE_TOP] == 0:  # evict the least recently used of a sample
        n = dmeta.shape[0]
        best = -1
        h = state[ST_DHAND]
        for t in range(EVICT_SAMPLE):
            c = (h + t) % n
            if best < 0 or dmeta[c, DM_TICK] < dmeta[best, DM_TICK]:
                best = c
        state[ST_DHAND] = (h + EVICT_SAMPLE) % n
        p2 = _d_find(dhash, dmeta, dmeta[best, DM_K1])
        if p2 >= 0:
            _d_hash_delete(dhash, dmeta, p2)
        dmeta[best, DM_USED] = 0
        dfree[state[ST_DFREE_TOP]] = best
        state[ST_DFREE_TOP] += 1
        counters[K_DEVICT] += 1
        pos = _d_find(dhash, dmeta, k1)
    state[ST_DFREE_TOP] -= 1
    r = dfree[state[ST_DFREE_TOP]]
    dmeta[r, :] = 0
    dmeta[r, DM_K1] = k1
    dmeta[r, DM_USED] = 1
    dmeta[r, DM_SAMPLING] = 1
    dmeta[r, DM_SYSINIT] = -1
    # a re-created domain must not revive templates withdrawn before it was evicted
    dmeta[r, DM_GEN_DATA] = state[ST_GEN]
    dmeta[r, DM_GEN_OPTS] = state[ST_GEN]
    dmeta[r, DM_NEXT_SEQ] = -1
    dmeta[r, DM_TICK] = state[ST_TICK]
    dhash[-(pos + 1)] = r
    return r


# ================================================================ templates
@kernel
def semantic(version, ie, pen, flen, is_scope, counters):
    """Semantic code of a template field; SEM_SKIP for anything not used or of a wrong length."""
    if flen == 0 or flen == VARLEN or is_scope:
        return SEM_SKIP
    sem = SEM_SKIP
    if pen == PEN_REVERSE:
        if ie == 1 or ie == 85:
            sem = SEM_RBYTES
        elif ie == 2 or ie == 86:
            sem = SEM_RPKTS
    elif pen == 0:
        if ie == 8:
            sem = SEM_SRC4
        elif ie == 12:
            sem = SEM_DST4
        elif ie == 27:
            sem = SEM_SRC6
        elif ie == 28:
            sem = SEM_DST6
        elif ie == 7:
            sem = SEM_SPORT
        elif ie == 11:
            sem = SEM_DPORT
        elif ie == 4:
            sem = SEM_PROTO
        elif ie == 6:
            sem = SEM_FLAGS
        elif ie == 1:
            sem = SEM_BYTES
        elif ie == 2:
            sem = SEM_PKTS
        elif ie == 85:
            sem = SEM_BYTES_TOT
        elif ie == 86:
            sem = SEM_PKTS_TOT
        elif ie == 231:
            sem = SEM_BYTES_INIT
        elif ie == 298:
            sem = SEM_PKTS_INIT
        elif ie == 22:
            sem = SEM_FIRST_UP
        elif ie == 21:
            sem = SEM_LAST_UP
        elif ie == 150:
            sem = SEM_START_S
        elif ie == 151:
            sem = SEM_END_S
        elif ie == 152:
            sem = SEM_START_MS
        elif ie == 153:
            sem = SEM_END_MS
        elif ie == 154:
            sem = SEM_START_US
        elif ie == 155:
            sem = SEM_END_US
        elif ie == 156:
            sem = SEM_START_NS
        elif ie == 157:
            sem = SEM_END_NS
        elif ie == 158:
            sem = SEM_START_DUS
        elif ie == 159:
            sem = SEM_END_DUS
        elif ie == 161:
            sem = SEM_DUR_MS
        elif ie == 162:
            sem = SEM_DUR_US
        elif ie == 34 or ie == 50:
            sem = SEM_SAMPLING
        elif ie == 305:
            sem = SEM_SPI
        elif ie == 306:
            sem = SEM_SPS
        elif ie == 160:
            sem = SEM_SYSINIT
    if sem == SEM_SKIP:
        return SEM_SKIP
    # lengths: addresses exact, NTP timestamps exactly 8, everything else 1..8 (reduced size)
    ok = True
    if sem == SEM_SRC4 or sem == SEM_DST4:
        ok = flen == 4
    elif sem == SEM_SRC6 or sem == SEM_DST6:
        ok = flen == 16
    elif sem == SEM_START_US or sem == SEM_END_US or sem == SEM_START_NS or sem == SEM_END_NS:
        ok = flen == 8
    else:
        ok = flen <= 8
    if not ok:
        counters[K_BADFLEN] += 1
        return -1
    return sem


@kernel
def _store_template(b, p, end, version, k1, tid, kind, nfields, nscope, export_s,
                    tmeta, tfields, tsel, thash, tfree, dmeta, dhash, dfree, state, counters):
    """Parse template fields at ``b[p:end)`` and store them.  Returns the byte position after
    the template record, or -1 when the record runs past ``end`` (the set must be abandoned).
    ``status_out`` semantics are left to the caller through the counters."""
    maxf = tfields.shape[1]
    q = p
    # first pass: bounds and lengths only
    minlen = 0
    fixed = 1
    for j in range(nfields):
        if end - q < 4:
            counters[K_TTRUNC] += 1
            return -1
        ie = u16(b, q)
        flen = u16(b, q + 2)
        q += 4
        if version == 10 and ie & 0x8000:
            if end - q < 4:
                counters[K_TTRUNC] += 1
                return -1
            q += 4
        if flen == VARLEN:
            fixed = 0
            minlen += 1
        else:
            minlen += flen
    after = q
    if nfields > maxf:
        counters[K_TMANY] += 1
        return -(2 + after)       # skip it, tell the caller why
    if minlen == 0:
        counters[K_TZEROLEN] += 1
        return -(2 + after)
    dom = _domain(dhash, dmeta, dfree, state, counters, k1, True)
    gen = dmeta[dom, DM_GEN_OPTS] if kind == KIND_OPTIONS else dmeta[dom, DM_GEN_DATA]
    k2 = (np.int64(version) << 16) | tid
    pos = _t_find(thash, tmeta, k1, k2)
    state[ST_TICK] += 1
    if pos >= 0:
        slot = thash[pos]
        # identical redefinition: refresh only
        same = (tmeta[slot, TM_NFIELDS] == nfields and tmeta[slot, TM_KIND] == kind
                and tmeta[slot, TM_SCOPE] == nscope and tmeta[slot, TM_GEN] == gen)
        if same:
            q = p
            for j in range(nfields):
                ie = u16(b, q)
                flen = u16(b, q + 2)
                q += 4
                pen = 0
                if version == 10 and ie & 0x8000:
                    pen = u32(b, q)
                    q += 4
                    ie &= 0x7FFF
                if tfields[slot, j, F_IE] != ie or tfields[slot, j, F_LEN] != flen or tfields[slot, j, F_PEN] != pen:
                    same = False
                    break
        if same:
            tmeta[slot, TM_REFRESH] = export_s
            tmeta[slot, TM_TICK] = state[ST_TICK]
            counters[K_TREF] += 1
            return after
        counters[K_TUPD] += 1
    else:
        if state[ST_FREE_TOP] == 0:  # full: evict the least recently used of a sample
            n = tmeta.shape[0]
            best = -1
            h = state[ST_HAND]
            for t in range(EVICT_SAMPLE):
                c = (h + t) % n
                if best < 0 or tmeta[c, TM_TICK] < tmeta[best, TM_TICK]:
                    best = c
            state[ST_HAND] = (h + EVICT_SAMPLE) % n
            _t_remove(thash, tmeta, tfree, state, best)
            counters[K_TEVICT] += 1
            pos = _t_find(thash, tmeta, k1, k2)
        state[ST_FREE_TOP] -= 1
        slot = tfree[state[ST_FREE_TOP]]
        thash[-(pos + 1)] = slot
        counters[K_TADD] += 1
    tmeta[slot, TM_K1] = k1
    tmeta[slot, TM_K2] = k2
    tmeta[slot, TM_USED] = 1
    tmeta[slot, TM_KIND] = kind
    tmeta[slot, TM_NFIELDS] = nfields
    tmeta[slot, TM_SCOPE] = nscope
    tmeta[slot, TM_MINLEN] = minlen
    tmeta[slot, TM_FIXED] = fixed
    tmeta[slot, TM_REFRESH] = export_s
    tmeta[slot, TM_TICK] = state[ST_TICK]
    tmeta[slot, TM_GEN] = gen
    q = p
    off = 0
    nsel = 0
    selmask = np.int64(0)
    for j in range(nfields):
        ie = u16(b, q)
        flen = u16(b, q + 2)
        q += 4
        pen = 0
        if version == 10 and ie & 0x8000:
            pen = u32(b, q)
            q += 4
            ie &= 0x7FFF
        sem = semantic(version, ie, pen, flen, j < nscope, counters)
        if sem < 0:
            sem = SEM_SKIP
        tfields[slot, j, F_IE] = ie
        tfields[slot, j, F_LEN] = flen
        tfields[slot, j, F_PEN] = pen
        tfields[slot, j, F_SEM] = sem
        if sem != SEM_SKIP and fixed and not (selmask & (np.int64(1) << sem)):
            selmask |= np.int64(1) << sem   # first occurrence only: the fast path needs no per-record check
            tsel[slot, nsel, S_OFF] = off
            tsel[slot, nsel, S_LEN] = flen
            tsel[slot, nsel, S_SEM] = sem
            nsel += 1
        if flen != VARLEN:
            off += flen
    tmeta[slot, TM_NSEL] = nsel
    return after


@kernel
def _withdraw(version, k1, tid, set_kind, thash, tmeta, tfree, dmeta, dhash, dfree, state, counters):
    """Field count 0: withdraw template ``tid`` (or all templates of the set kind when tid is the
    set id, RFC 7011 8.1).  Withdrawn templates are never stored."""
    counters[K_TFC0] += 1
    if version == 10 and (tid == 2 or tid == 3):
        dom = _domain(dhash, dmeta, dfree, state, counters, k1, True)
        state[ST_GEN] += 1
        if set_kind == KIND_OPTIONS:
            dmeta[dom, DM_GEN_OPTS] = state[ST_GEN]
        else:
            dmeta[dom, DM_GEN_DATA] = state[ST_GEN]
        counters[K_TWDALL] += 1
        return
    k2 = (np.int64(version) << 16) | tid
    pos = _t_find(thash, tmeta, k1, k2)
    if pos >= 0:
        _t_remove(thash, tmeta, tfree, state, thash[pos])
        counters[K_TWD] += 1


@kernel
def _lookup(version, k1, tid, export_s, ttl, thash, tmeta, tfree, dmeta, dhash, dfree, state, counters):
    """Slot of the live template, or -1 (absent, withdrawn or expired)."""
    k2 = (np.int64(version) << 16) | tid
    pos = _t_find(thash, tmeta, k1, k2)
    if pos < 0:
        return -1
    slot = thash[pos]
    dom = _domain(dhash, dmeta, dfree, state, counters, k1, False)
    if dom >= 0:
        gen = dmeta[dom, DM_GEN_OPTS] if tmeta[slot, TM_KIND] == KIND_OPTIONS else dmeta[dom, DM_GEN_DATA]
    else:
        gen = state[ST_GEN] + 1  # domain state evicted: be conservative
    if tmeta[slot, TM_GEN] != gen:
        _t_remove(thash, tmeta, tfree, state, slot)
        counters[K_TWD] += 1
        return -1
    # TTL in exporter (record) time; a clock that went backwards does not expire anything
    if ttl > 0 and export_s - tmeta[slot, TM_REFRESH] > ttl:
        _t_remove(thash, tmeta, tfree, state, slot)
        counters[K_TEXPIRE] += 1
        return -1
    state[ST_TICK] += 1
    tmeta[slot, TM_TICK] = state[ST_TICK]
    return slot


# ================================================================ records
@kernel
def _ensure(out, need):
    cap = out.shape[0]
    if need <= cap:
        return out
    while cap < need:
        cap *= 2
    new = np.empty((cap, out.shape[1]), np.int64)
    new[:out.shape[0]] = out
    return new


@kernel(inline="always")
def record_time(vals, seen, s_ns, s_us, s_ms, s_s, s_dus, s_up, export_ns, export_s_ns, uptime_ms, sysinit):
    """A flow's start or end time in ns since the epoch from whichever field the record has, most
    precise first: NTP nanoseconds / microseconds (IPFIX 156/154, 157/155), milliseconds, seconds,
    delta microseconds before export, sysUpTime milliseconds (against the header's uptime, with the
    32-bit wrap, or against systemInitTimeMilliseconds).  Returns (ns, precision rank; 0 = none)."""
    if seen & (np.int64(1) << s_ns):
        v = vals[s_ns]
        return (np.int64(v >> np.uint64(32)) - NTP_EPOCH_OFFSET) * 1000000000 + \
            np.int64(((v & np.uint64(MASK32)) * np.uint64(1000000000)) >> np.uint64(32)), 6
    if seen & (np.int64(1) << s_us):
        v = vals[s_us]
        return (np.int64(v >> np.uint64(32)) - NTP_EPOCH_OFFSET) * 1000000000 + \
            np.int64(((v & np.uint64(MASK32)) * np.uint64(1000000)) >> np.uint64(32)) * 1000, 5
    if seen & (np.int64(1) << s_ms):
        return np.int64(vals[s_ms]) * 1000000, 4
    if seen & (np.int64(1) << s_s):
        return np.int64(vals[s_s]) * 1000000000, 3
    if seen & (np.int64(1) << s_dus):
        return export_s_ns - np.int64(vals[s_dus] & np.uint64(MASK32)) * 1000, 2
    if seen & (np.int64(1) << s_up):
        up = np.int64(vals[s_up] & np.uint64(MASK32))
        if uptime_ms >= 0:
            return export_ns - ((uptime_ms - up) & MASK32) * 1000000, 1
        if sysinit >= 0:
            return (sysinit + up) * 1000000, 1
    return np.int64(0), 0


@kernel
def _decode_data_set(b, p, end, slot, dgram, version, domain, tid, export_ns, uptime_ms, dom,
                     tmeta, tfields, tsel, dmeta, out, n, counters):
    """Decode the records of one data set ``b[p:end)`` with template ``slot`` into ``out``
    (capacity already ensured for (end-p)//minlen rows).  Returns (n, status)."""
    minlen = tmeta[slot, TM_MINLEN]
    nfields = tmeta[slot, TM_NFIELDS]
    fixed = tmeta[slot, TM_FIXED] == 1
    nsel = tmeta[slot, TM_NSEL]
    is_opt = tmeta[slot, TM_KIND] == KIND_OPTIONS
    status = 0
    sysinit = -1
    sampling = 1
    if dom >= 0:
        sysinit = dmeta[dom, DM_SYSINIT]
        sampling = dmeta[dom, DM_SAMPLING]
    export_s_ns = export_ns
    # first occurrence of each semantic; a template writes the same slots in every record, so the
    # slots of fields it lacks stay 0 and the others are always overwritten: no per-record reset
    vals = np.zeros(35, np.uint64)
    # the fast path's field plan, copied once per set
    sel_off = np.empty(max(nsel, 1), np.int64)
    sel_len = np.empty(max(nsel, 1), np.int64)
    sel_sem = np.empty(max(nsel, 1), np.int64)
    selmask = np.int64(0)
    for j in range(nsel):
        sel_off[j] = tsel[slot, j, S_OFF]
        sel_len[j] = tsel[slot, j, S_LEN]
        sel_sem[j] = tsel[slot, j, S_SEM]
        selmask |= np.int64(1) << sel_sem[j]
    while end - p >= minlen:
        # ---- locate the fields of this record
        seen = np.int64(0)
        src4 = np.uint64(0)
        dst4 = np.uint64(0)
        s6h = np.uint64(0)
        s6l = np.uint64(0)
        d6h = np.uint64(0)
        d6l = np.uint64(0)
        if fixed:
            seen = selmask
            for j in range(nsel):
                sem = sel_sem[j]
                q = p + sel_off[j]
                flen = sel_len[j]
                if flen == 4:
                    vals[sem] = np.uint64(u32(b, q))
                elif flen == 2:
                    vals[sem] = np.uint64(u16(b, q))
                elif flen == 1:
                    vals[sem] = np.uint64(b[q])
                elif flen == 8:
                    vals[sem] = (np.uint64(u32(b, q)) << np.uint64(32)) | np.uint64(u32(b, q + 4))
                elif sem == SEM_SRC6:
                    s6h = uint_be(b, q, 8)
                    s6l = uint_be(b, q + 8, 8)
                elif sem == SEM_DST6:
                    d6h = uint_be(b, q, 8)
                    d6l = uint_be(b, q + 8, 8)
                else:
                    vals[sem] = uint_be(b, q, flen)
            rec_end = p + minlen
        else:
            q = p
            bad = False
            for j in range(nfields):
                flen = tfields[slot, j, F_LEN]
                if flen == VARLEN:
                    if end - q < 1:
                        bad = True
                        break
                    flen = np.int64(b[q])
                    q += 1
                    if flen == 255:
                        if end - q < 2:
                            bad = True
                            break
                        flen = u16(b, q)
                        q += 2
                    if end - q < flen:
                        bad = True
                        break
                    q += flen
                    continue
                if end - q < flen:
                    bad = True
                    break
                sem = tfields[slot, j, F_SEM]
                if sem != SEM_SKIP and not (seen & (np.int64(1) << sem)):
                    seen |= np.int64(1) << sem
                    if sem == SEM_SRC6:
                        s6h = uint_be(b, q, 8)
                        s6l = uint_be(b, q + 8, 8)
                    elif sem == SEM_DST6:
                        d6h = uint_be(b, q, 8)
                        d6l = uint_be(b, q + 8, 8)
                    else:
                        vals[sem] = uint_be(b, q, flen)
                q += flen
            if bad:
                counters[K_VAROVF] += 1
                status = ST_VAROVF
                break
            rec_end = q
        p = rec_end
        # ---- options record: update the domain state, no flow row
        if is_opt:
            counters[K_OPTREC] += 1
            if dom >= 0:
                if seen & (np.int64(1) << SEM_SAMPLING) and vals[SEM_SAMPLING] > 0:
                    dmeta[dom, DM_SAMPLING] = np.int64(vals[SEM_SAMPLING] & np.uint64(MASK32))
                elif seen & (np.int64(1) << SEM_SPI):
                    spi = np.int64(vals[SEM_SPI] & np.uint64(MASK32))
                    sps = np.int64(vals[SEM_SPS] & np.uint64(MASK32))
                    if spi > 0:
                        dmeta[dom, DM_SAMPLING] = (spi + sps) // spi
                if seen & (np.int64(1) << SEM_SYSINIT):
                    dmeta[dom, DM_SYSINIT] = np.int64(vals[SEM_SYSINIT] & np.uint64(0x7FFFFFFFFFFFFFFF))
                sysinit = dmeta[dom, DM_SYSINIT]
                sampling = dmeta[dom, DM_SAMPLING]
            continue
        # ---- flow record
        if seen & (np.int64(1) << SEM_SYSINIT):
            # systemInitTimeMilliseconds carried in the data record itself (e.g. Huawei)
            sysinit = np.int64(vals[SEM_SYSINIT] & np.uint64(0x7FFFFFFFFFFFFFFF))
            if dom >= 0:
                dmeta[dom, DM_SYSINIT] = sysinit
        o = n
        n += 1
        counters[K_FLOWS] += 1
        out[o, C_DGRAM] = dgram
        out[o, C_VERSION] = version
        out[o, C_DOMAIN] = domain
        out[o, C_TID] = tid
        has4 = (seen & ((np.int64(1) << SEM_SRC4) | (np.int64(1) << SEM_DST4))) != 0
        has6 = (seen & ((np.int64(1) << SEM_SRC6) | (np.int64(1) << SEM_DST6))) != 0
        src4 = vals[SEM_SRC4]
        dst4 = vals[SEM_DST4]
        nz4 = (src4 | dst4) != np.uint64(0)
        nz6 = (s6h | s6l | d6h | d6l) != np.uint64(0)
        # dual-family templates carry the unused family zero-filled: take the non-zero one, IPv4 first
        if has4 and (nz4 or not (has6 and nz6)):
            out[o, C_SRC_HI] = 0
            out[o, C_SRC_LO] = np.int64(np.uint64(0xFFFF00000000) | src4)
            out[o, C_DST_HI] = 0
            out[o, C_DST_LO] = np.int64(np.uint64(0xFFFF00000000) | dst4)
            out[o, C_IPVER] = 4
        elif has6:
            out[o, C_SRC_HI] = np.int64(s6h)
            out[o, C_SRC_LO] = np.int64(s6l)
            out[o, C_DST_HI] = np.int64(d6h)
            out[o, C_DST_LO] = np.int64(d6l)
            out[o, C_IPVER] = 6
        else:
            out[o, C_SRC_HI] = 0
            out[o, C_SRC_LO] = 0
            out[o, C_DST_HI] = 0
            out[o, C_DST_LO] = 0
            out[o, C_IPVER] = 0
        out[o, C_SPORT] = np.int64(vals[SEM_SPORT] & np.uint64(0xFFFF))
        out[o, C_DPORT] = np.int64(vals[SEM_DPORT] & np.uint64(0xFFFF))
        out[o, C_PROTO] = np.int64(vals[SEM_PROTO] & np.uint64(0xFF))
        out[o, C_FLAGS] = np.int64(vals[SEM_FLAGS] & np.uint64(0xFF))
        if seen & (np.int64(1) << SEM_BYTES):
            out[o, C_BYTES] = np.int64(vals[SEM_BYTES])
        elif seen & (np.int64(1) << SEM_BYTES_TOT):
            out[o, C_BYTES] = np.int64(vals[SEM_BYTES_TOT])
        else:
            out[o, C_BYTES] = np.int64(vals[SEM_BYTES_INIT])
        if seen & (np.int64(1) << SEM_PKTS):
            out[o, C_PKTS] = np.int64(vals[SEM_PKTS])
        elif seen & (np.int64(1) << SEM_PKTS_TOT):
            out[o, C_PKTS] = np.int64(vals[SEM_PKTS_TOT])
        else:
            out[o, C_PKTS] = np.int64(vals[SEM_PKTS_INIT])
        out[o, C_RBYTES] = np.int64(vals[SEM_RBYTES]) if seen & (np.int64(1) << SEM_RBYTES) else -1
        out[o, C_RPKTS] = np.int64(vals[SEM_RPKTS]) if seen & (np.int64(1) << SEM_RPKTS) else -1
        if seen & (np.int64(1) << SEM_SAMPLING) and vals[SEM_SAMPLING] > 0:
            out[o, C_SAMPLING] = np.int64(vals[SEM_SAMPLING] & np.uint64(MASK32))
        else:
            out[o, C_SAMPLING] = sampling
        # ---- times: the most precise absolute value, else uptime-relative
        first, fprec = record_time(vals, seen, SEM_START_NS, SEM_START_US, SEM_START_MS, SEM_START_S,
                                   SEM_START_DUS, SEM_FIRST_UP, export_ns, export_s_ns, uptime_ms, sysinit)
        last, lprec = record_time(vals, seen, SEM_END_NS, SEM_END_US, SEM_END_MS, SEM_END_S,
                                  SEM_END_DUS, SEM_LAST_UP, export_ns, export_s_ns, uptime_ms, sysinit)
        if lprec == 0 and fprec > 0:
            if seen & (np.int64(1) << SEM_DUR_MS):
                last = first + np.int64(vals[SEM_DUR_MS] & np.uint64(MASK32)) * 1000000
                lprec = 1
            elif seen & (np.int64(1) << SEM_DUR_US):
                last = first + np.int64(vals[SEM_DUR_US] & np.uint64(MASK32)) * 1000
                lprec = 1
        tf = 0
        if fprec > 0:
            tf |= TIME_FIRST
        if lprec > 0:
            tf |= TIME_LAST
        # a record without a usable time gets the other end, else the export time (flagged)
        if fprec == 0:
            first = last if lprec > 0 else export_ns
        if lprec == 0:
            last = first if fprec > 0 else export_ns
        out[o, C_FIRST] = first
        out[o, C_LAST] = last
        out[o, C_TIMEFLAGS] = tf
    # bytes left that are shorter than one record are padding: never read as a record.  Padding
    # aligns a set to 4 bytes (RFC 3954 5.3; RFC 7011 3.3.1) and real exporters fill those 1-3 bytes
    # with anything (MikroTik, nprobe); 4 or more non-zero bytes are the tail of a record that did
    # not fit -- typically data read with a stale template -- and are counted, never silently lost
    if status == 0 and end - p >= 4:
        for z in range(p, end):
            if b[z] != 0:
                counters[K_RECTRUNC] += 1
                break
    return n, status


@kernel
def _release(k1, version, buf, pend, npend, hbuf, hoff, hmeta, held_done, nd, ttl,
             tmeta, tfields, tsel, thash, tfree, dmeta, dhash, dfree, state, status, out, n, counters):
    """A message of (exporter/domain k1, version) stored templates: decode, in arrival order, the
    held sets of earlier calls and the pending sets of this batch whose template is now live --
    with *this* definition, before a later message can redefine the id (an exporter restart), and
    after the message's options data (sampling, system init time).  Resolved pending sets get
    H_TID = -1."""
    for h in range(hoff.shape[0] - 1):
        if held_done[h] != 0 or hmeta[h, H_K1] != k1 or hmeta[h, H_VERSION] != version:
            continue
        tid = hmeta[h, H_TID]
        if _t_find(thash, tmeta, k1, (np.int64(version) << 16) | tid) < 0:
            continue
        slot = _lookup(version, k1, tid, hmeta[h, H_EXPORT_S], ttl, thash, tmeta, tfree, dmeta, dhash, dfree,
                       state, counters)
        if slot < 0:
            continue
        dom = _domain(dhash, dmeta, dfree, state, counters, k1, False)
        q = hoff[h]
        send = hoff[h + 1]
        out = _ensure(out, n + (send - q) // tmeta[slot, TM_MINLEN] + 1)
        n, st = _decode_data_set(hbuf, q, send, slot, nd + h, version, hmeta[h, H_DOMAIN], tid,
                                 hmeta[h, H_EXPORT_NS], hmeta[h, H_UPTIME], dom, tmeta, tfields, tsel, dmeta,
                                 out, n, counters)
        held_done[h] = 1
        counters[K_HELD_OK] += 1
    for i in range(npend):
        if pend[i, H_TID] < 0 or pend[i, H_K1] != k1 or pend[i, H_VERSION] != version:
            continue
        tid = pend[i, H_TID]
        if _t_find(thash, tmeta, k1, (np.int64(version) << 16) | tid) < 0:
            continue
        slot = _lookup(version, k1, tid, pend[i, H_EXPORT_S], ttl, thash, tmeta, tfree, dmeta, dhash, dfree,
                       state, counters)
        if slot < 0:
            continue
        dom = _domain(dhash, dmeta, dfree, state, counters, k1, False)
        q = pend[i, H_START]
        send = pend[i, H_END]
        d = pend[i, H_DGRAM]
        out = _ensure(out, n + (send - q) // tmeta[slot, TM_MINLEN] + 1)
        n, st = _decode_data_set(buf, q, send, slot, d, version, pend[i, H_DOMAIN], tid, pend[i, H_EXPORT_NS],
                                 pend[i, H_UPTIME], dom, tmeta, tfields, tsel, dmeta, out, n, counters)
        if st != 0 and status[d] == 0:
            status[d] = st
        pend[i, H_TID] = -1
        counters[K_HELD_OK] += 1
    return out, n


@kernel
def decode_batch(buf, offsets, exp_id, ttl, hbuf, hoff, hmeta,
                 tmeta, tfields, tsel, thash, tfree, dmeta, dhash, dfree, state, out):
    """Decode every datagram of the batch, then retry held and pending data sets.

    ``out`` is an int64 (rows, NCOL) work matrix, reused across calls and grown when needed.
    Returns ``(out, n, status, counters, pend_meta, n_pend, held_done)``:
    ``out[:n]`` the flow rows (C_DGRAM >= n_datagrams means held entry C_DGRAM - n_datagrams);
    ``status`` int16 per datagram; ``pend_meta[:n_pend]`` data sets of this batch still without a
    template (H_* columns, byte range into ``buf``); ``held_done`` 1 per held entry decoded now,
    and the H_AGE (export-time age in seconds) of the others is refreshed in ``hmeta``.  Rows of a
    datagram whose status is not 0 are returned too: the shell counts and drops them.
    """
    nd = offsets.shape[0] - 1
    counters = np.zeros(NCOUNTERS, np.int64)
    status = np.zeros(nd, np.int16)
    # ``out`` is the caller's (reused across calls: its pages are already mapped); grown here when
    # a batch needs more rows, and returned
    n = 0
    pend = np.empty((64, H_N), np.int64)
    npend = 0
    nh = hoff.shape[0] - 1
    held_done = np.zeros(nh, np.int8)
    for d in range(nd):
        counters[K_DGRAMS] += 1
        p = offsets[d]
        dend = offsets[d + 1]
        k_exp = exp_id[d] << 32
        first_msg = True
        while True:
            rem = dend - p
            if rem < 4:
                if first_msg:
                    counters[K_SHORT] += 1
                    status[d] = ST_SHORT
                elif rem > 0:
                    counters[K_TRAILING] += 1
                break
            version = u16(buf, p)
            if not first_msg:
                # another message glued behind the first one?
                if not ((version == 5 and rem >= 24) or (version == 9 and rem >= 20) or (version == 10 and rem >= 16)):
                    counters[K_TRAILING] += 1
                    break
                counters[K_GLUED] += 1
            first_msg = False
            if version == 5:
                if rem < 24:
                    counters[K_SHORT] += 1
                    status[d] = ST_SHORT
                    break
                counters[K_MSGS] += 1
                counters[K_V5] += 1
                cnt = u16(buf, p + 2)
                uptime = u32(buf, p + 4)
                secs = u32(buf, p + 8)
                nsecs = u32(buf, p + 12)
                seq = u32(buf, p + 16)
                domain = (np.int64(buf[p + 20]) << 8) | np.int64(buf[p + 21])
                samp = u16(buf, p + 22) & 0x3FFF
                if samp == 0:
                    samp = 1
                if cnt == 0 or cnt > 30:
                    counters[K_V5COUNT] += 1
                    status[d] = ST_V5COUNT
                    break
                avail = (rem - 24) // 48
                if avail < cnt:
                    counters[K_V5TRUNC] += 1
                    status[d] = ST_V5TRUNC
                    cnt = avail
                dom = _domain(dhash, dmeta, dfree, state, counters, k_exp | domain | (np.int64(5) << 24), True)
                if dmeta[dom, DM_NEXT_SEQ] >= 0 and dmeta[dom, DM_NEXT_SEQ] != seq:
                    counters[K_SEQGAP] += 1
                dmeta[dom, DM_NEXT_SEQ] = (seq + cnt) & MASK32
                export_ns = secs * 1000000000 + nsecs
                out = _ensure(out, n + cnt)
                q = p + 24
                for r in range(cnt):
                    o = n
                    n += 1
                    out[o, C_DGRAM] = d
                    out[o, C_VERSION] = 5
                    out[o, C_DOMAIN] = domain
                    out[o, C_TID] = 0
                    out[o, C_SRC_HI] = 0
                    out[o, C_SRC_LO] = 0xFFFF00000000 | u32(buf, q)
                    out[o, C_DST_HI] = 0
                    out[o, C_DST_LO] = 0xFFFF00000000 | u32(buf, q + 4)
                    out[o, C_IPVER] = 4
                    out[o, C_PKTS] = u32(buf, q + 16)
                    out[o, C_BYTES] = u32(buf, q + 20)
                    first = u32(buf, q + 24)
                    last = u32(buf, q + 28)
                    out[o, C_FIRST] = export_ns - ((uptime - first) & MASK32) * 1000000
                    out[o, C_LAST] = export_ns - ((uptime - last) & MASK32) * 1000000
                    out[o, C_SPORT] = u16(buf, q + 32)
                    out[o, C_DPORT] = u16(buf, q + 34)
                    out[o, C_FLAGS] = buf[q + 37]
                    out[o, C_PROTO] = buf[q + 38]
                    out[o, C_RBYTES] = -1
                    out[o, C_RPKTS] = -1
                    out[o, C_SAMPLING] = samp
                    out[o, C_TIMEFLAGS] = TIME_FIRST | TIME_LAST
                    q += 48
                counters[K_FLOWS] += cnt
                p = p + 24 + 48 * cnt
                if status[d] != 0:
                    break
                continue
            if version != 9 and version != 10:
                counters[K_BADVER] += 1
                status[d] = ST_BADVER
                break
            # ---------------- v9 / IPFIX header
            if version == 9:
                if rem < 20:
                    counters[K_SHORT] += 1
                    status[d] = ST_SHORT
                    break
                counters[K_V9] += 1
                hcount = u16(buf, p + 2)
                uptime = u32(buf, p + 4)
                secs = u32(buf, p + 8)
                seq = u32(buf, p + 12)
                domain = u32(buf, p + 16)
                mend = dend
                sp = p + 20
                export_ns = secs * 1000000000
            else:
                if rem < 16:
                    counters[K_SHORT] += 1
                    status[d] = ST_SHORT
                    break
                mlen = u16(buf, p + 2)
                if mlen < 16 or mlen > rem:
                    counters[K_MSGLEN] += 1
                    status[d] = ST_MSGLEN
                    break
                counters[K_IPFIX] += 1
                hcount = 0
                uptime = -1
                secs = u32(buf, p + 4)
                seq = u32(buf, p + 8)
                domain = u32(buf, p + 12)
                mend = p + mlen
                sp = p + 16
                export_ns = secs * 1000000000
            counters[K_MSGS] += 1
            k1 = k_exp | domain
            dom = _domain(dhash, dmeta, dfree, state, counters, k1, True)
            if dmeta[dom, DM_LAST_EXPORT] < secs:
                dmeta[dom, DM_LAST_EXPORT] = secs
            nrec = 0           # records of this message (v9 header count: templates + data)
            ndata = 0          # data records (IPFIX sequence numbers count these)
            held_here = False
            glued_next = False
            abort = False
            stored_any = False
            while mend - sp >= 4:
                sid = u16(buf, sp)
                slen = u16(buf, sp + 2)
                if version == 9 and sid == 9 and mend - sp >= 20 and nrec >= hcount:
                    glued_next = True   # a second v9 message glued behind this one
                    break
                if slen == 0:
                    allzero = True
                    for z in range(sp, mend):
                        if buf[z] != 0:
                            allzero = False
                            break
                    if allzero:
                        counters[K_ZEROPAD] += 1
                        sp = mend
                    else:
                        counters[K_SETZERO] += 1
                        status[d] = ST_SETZERO
                        abort = True
                    break
                if slen < 4:
                    counters[K_SETSHORT] += 1
                    status[d] = ST_SETSHORT
                    abort = True
                    break
                if slen > mend - sp:
                    counters[K_SETPAST] += 1
                    status[d] = ST_SETPAST
                    abort = True
                    break
                send = sp + slen
                q = sp + 4
                tpl_set = (version == 9 and sid == 0) or (version == 10 and sid == 2)
                opt_set = (version == 9 and sid == 1) or (version == 10 and sid == 3)
                if tpl_set or opt_set:
                    kind = KIND_OPTIONS if opt_set else KIND_DATA
                    while send - q >= 4:
                        tid = u16(buf, q)
                        if tid == 0 and u16(buf, q + 2) == 0:
                            break   # zero padding after the last template record
                        if version == 10 and opt_set:
                            if send - q < 6:
                                counters[K_TTRUNC] += 1   # an options template header cut short
                                break
                            nf = u16(buf, q + 2)
                            if nf == 0:
                                _withdraw(version, k1, tid, kind, thash, tmeta, tfree, dmeta, dhash, dfree,
                                          state, counters)
                                nrec += 1
                                q += 4
                                continue
                            nscope = u16(buf, q + 4)
                            if nscope == 0 or nscope > nf:
                                counters[K_SCOPE] += 1
                                if status[d] == 0:
                                    status[d] = ST_SCOPE
                                break   # the set cannot be walked further safely
                            q += 6
                        elif version == 9 and opt_set:
                            if send - q < 6:
                                counters[K_TTRUNC] += 1   # an options template header cut short
                                break
                            scope_len = u16(buf, q + 2)
                            opt_len = u16(buf, q + 4)
                            if scope_len == 0 or scope_len % 4 != 0 or opt_len % 4 != 0 \
                                    or np.int64(scope_len) + np.int64(opt_len) > send - q - 6:
                                counters[K_SCOPE] += 1
                                if status[d] == 0:
                                    status[d] = ST_SCOPE
                                break
                            nscope = scope_len // 4
                            nf = nscope + opt_len // 4
                            if nf == 0:
                                break
                            q += 6
                        else:
                            nf = u16(buf, q + 2)
                            nscope = 0
                            if nf == 0:
                                _withdraw(version, k1, tid, kind, thash, tmeta, tfree, dmeta, dhash, dfree,
                                          state, counters)
                                nrec += 1
                                q += 4
                                continue
                            q += 4
                        if tid < 256:
                            counters[K_TIDBAD] += 1
                            if status[d] == 0:
                                status[d] = ST_TIDBAD
                            break
                        r = _store_template(buf, q, send, version, k1, tid, kind, nf, nscope, secs,
                                            tmeta, tfields, tsel, thash, tfree, dmeta, dhash, dfree, state,
                                            counters)
                        nrec += 1
                        if r == -1:
                            if status[d] == 0:
                                status[d] = ST_TTRUNC
                            break
                        if r < -1:
                            if status[d] == 0:
                                status[d] = ST_TMANY if nf > tfields.shape[1] else ST_TZEROLEN
                            r = -r - 2
                        else:
                            stored_any = True
                        q = r
                        if version == 9 and opt_set:
                            # v9 options template records are padded to 4 bytes
                            while q < send and (q - sp) % 4 != 0:
                                q += 1
                elif sid >= 256:
                    slot = _lookup(version, k1, sid, secs, ttl, thash, tmeta, tfree, dmeta, dhash, dfree,
                                   state, counters)
                    if slot < 0:
                        if npend == pend.shape[0]:
                            newp = np.empty((pend.shape[0] * 2, H_N), np.int64)
                            newp[:npend] = pend[:npend]
                            pend = newp
                        pend[npend, H_DGRAM] = d
                        pend[npend, H_START] = q
                        pend[npend, H_END] = send
                        pend[npend, H_K1] = k1
                        pend[npend, H_VERSION] = version
                        pend[npend, H_DOMAIN] = domain
                        pend[npend, H_TID] = sid
                        pend[npend, H_EXPORT_NS] = export_ns
                        pend[npend, H_UPTIME] = uptime
                        pend[npend, H_EXPORT_S] = secs
                        pend[npend, H_AGE] = 0
                        npend += 1
                        held_here = True
                    else:
                        out = _ensure(out, n + (send - q) // tmeta[slot, TM_MINLEN] + 1)
                        n0 = n
                        opt0 = counters[K_OPTREC]
                        n, st = _decode_data_set(buf, q, send, slot, d, version, domain, sid, export_ns, uptime,
                                                 dom, tmeta, tfields, tsel, dmeta, out, n, counters)
                        nrec += (n - n0) + (counters[K_OPTREC] - opt0)
                        ndata += (n - n0) + (counters[K_OPTREC] - opt0)
                        if st != 0 and status[d] == 0:
                            status[d] = st
                else:
                    counters[K_RESERVED] += 1
                sp = send
            if not abort and not glued_next and mend - sp > 0:
                counters[K_TRAILING] += 1   # 1..3 bytes after the last set
            if stored_any:
                out, n = _release(k1, version, buf, pend, npend, hbuf, hoff, hmeta, held_done, nd, ttl,
                                  tmeta, tfields, tsel, thash, tfree, dmeta, dhash, dfree, state, status, out, n,
                                  counters)
            # sequence numbers only change counters (v9: packets; IPFIX: data records)
            if version == 9:
                if hcount != nrec and not held_here:
                    counters[K_V9COUNT] += 1
                if dmeta[dom, DM_NEXT_SEQ] >= 0 and dmeta[dom, DM_NEXT_SEQ] != seq:
                    counters[K_SEQGAP] += 1
                dmeta[dom, DM_NEXT_SEQ] = (seq + 1) & MASK32
            else:
                if dmeta[dom, DM_NEXT_SEQ] >= 0 and dmeta[dom, DM_NEXT_SEQ] != seq:
                    counters[K_SEQGAP] += 1
                dmeta[dom, DM_NEXT_SEQ] = -1 if held_here else (seq + ndata) & MASK32
            if abort:
                break
            p = sp if version == 9 else mend
            if not glued_next and version == 9:
                break
    # ---------------- retry: held sets from earlier calls, then this batch's pending sets (a set is
    # normally released the moment its template arrives; this pass refreshes the ages of the rest)
    for h in range(nh):
        if held_done[h] != 0:
            continue
        slot = _lookup(hmeta[h, H_VERSION], hmeta[h, H_K1], hmeta[h, H_TID], hmeta[h, H_EXPORT_S], ttl,
                       thash, tmeta, tfree, dmeta, dhash, dfree, state, counters)
        dom = _domain(dhash, dmeta, dfree, state, counters, hmeta[h, H_K1], False)
        if slot < 0:
            if dom >= 0:
                hmeta[h, H_AGE] = dmeta[dom, DM_LAST_EXPORT] - hmeta[h, H_EXPORT_S]
            continue
        q = hoff[h]
        send = hoff[h + 1]
        out = _ensure(out, n + (send - q) // tmeta[slot, TM_MINLEN] + 1)
        n, st = _decode_data_set(hbuf, q, send, slot, nd + h, hmeta[h, H_VERSION], hmeta[h, H_DOMAIN],
                                 hmeta[h, H_TID], hmeta[h, H_EXPORT_NS], hmeta[h, H_UPTIME], dom,
                                 tmeta, tfields, tsel, dmeta, out, n, counters)
        held_done[h] = 1
        counters[K_HELD_OK] += 1
    keep = 0
    for i in range(npend):
        if pend[i, H_TID] < 0:
            continue      # released when its template arrived
        slot = _lookup(pend[i, H_VERSION], pend[i, H_K1], pend[i, H_TID], pend[i, H_EXPORT_S], ttl,
                       thash, tmeta, tfree, dmeta, dhash, dfree, state, counters)
        dom = _domain(dhash, dmeta, dfree, state, counters, pend[i, H_K1], False)
        if slot < 0:
            if dom >= 0:
                pend[i, H_AGE] = dmeta[dom, DM_LAST_EXPORT] - pend[i, H_EXPORT_S]
            pend[keep] = pend[i]
            keep += 1
            continue
        q = pend[i, H_START]
        send = pend[i, H_END]
        out = _ensure(out, n + (send - q) // tmeta[slot, TM_MINLEN] + 1)
        n, st = _decode_data_set(buf, q, send, slot, pend[i, H_DGRAM], pend[i, H_VERSION], pend[i, H_DOMAIN],
                                 pend[i, H_TID], pend[i, H_EXPORT_NS], pend[i, H_UPTIME], dom,
                                 tmeta, tfields, tsel, dmeta, out, n, counters)
        d = pend[i, H_DGRAM]
        if st != 0 and status[d] == 0:
            status[d] = st
        counters[K_HELD_OK] += 1
    counters[K_HELD] += keep
    return out, n, status, counters, pend[:keep].copy(), keep, held_done


# ================================================================ address text (Arrow string layout)
@kernel
def format_addresses(lo, ipver, v6_idx, v6_data, v6_off):
    """Text of each address as an Arrow string column (``data`` uint8, ``offsets`` int32 n+1):
    IPv4 dotted quad from the low 32 bits of ``lo`` (IPv4-mapped form), IPv6 copied from the
    pre-formatted distinct texts ``v6_data[v6_off[k]:v6_off[k+1]]`` with ``k = v6_idx[i]``,
    and '' for rows without an address (``ipver`` 0)."""
    n = lo.shape[0]
    size = 0
    for i in range(n):
        if ipver[i] == 4:
            size += 15
        elif ipver[i] == 6:
            k = v6_idx[i]
            size += v6_off[k + 1] - v6_off[k]
    data = np.empty(size, np.uint8)
    offsets = np.empty(n + 1, np.int32)
    p = 0
    offsets[0] = 0
    for i in range(n):
        if ipver[i] == 4:
            a = np.int64(lo[i] & np.uint64(MASK32))
            for shift in (24, 16, 8, 0):
                o = (a >> shift) & 255
                if o >= 100:
                    data[p] = 48 + o // 100
                    data[p + 1] = 48 + (o // 10) % 10
                    data[p + 2] = 48 + o % 10
                    p += 3
                elif o >= 10:
                    data[p] = 48 + o // 10
                    data[p + 1] = 48 + o % 10
                    p += 2
                else:
                    data[p] = 48 + o
                    p += 1
                if shift != 0:
                    data[p] = 46
                    p += 1
        elif ipver[i] == 6:
            k = v6_idx[i]
            for j in range(v6_off[k], v6_off[k + 1]):
                data[p] = v6_data[j]
                p += 1
        offsets[i + 1] = p
    return data[:p], offsets
