"""The batch path shared by ``flowaudit stream`` and ``flowaudit scan``.

A :class:`Batch` is N message values laid end to end in one uint8 buffer with int64 offsets
(the Arrow binary layout) plus provenance arrays.  :meth:`Classifier.run` runs the numba kernels
over the whole batch, one call per format, and returns Arrow tables for the three datasets:

* ``messages``: one row per decoded message (possibly with zero hits), with its integrity
  ``flags`` (flowaudit.decode.FLAGS; duplicates: flowaudit/integrity.py, per process),
* ``hits``: one row per sensitive value found (masked + HMAC, raw only on opt-in),
* ``quarantine``: one row per message that could not be decoded, with its raw bytes and a reason.

Every message of the batch lands in exactly one of ``messages`` and ``quarantine``.  A quarantined
message is still salvage-scanned (flowaudit/decode/salvage.py): its hits carry ``salvaged = true``
and point (``h_idx``, provenance) at the quarantined message.
Python touches each message once to gather it and each hit once to mask it; everything per
byte happens in the kernels.
"""
from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from . import catalog as _catalog
from . import quarantine as _quarantine
from .datasets import HITS, MESSAGES, SCHEMA_VERSION, dictionary_array
from .decode import (FLAG_BITS, FMT_EDIFACT, FMT_FLAT, FMT_JSON, FMT_UNKNOWN, FMT_X12, FMT_XML, FORMAT_CODES,
                     FORMAT_NAMES, REASON_CODES, REASONS, TELEMETRY_NAMES, FormatResult)
from .decode import layers as _layers
from .kernels._jit import read_only
from .integrity import DEFAULT_ENTRIES, Seen, flags_array, origins
from .kernels.dedupe import unique_pairs, unique_slices
from .kernels.digest import payload_hash
from .protect import Protector, gather_strings, mask_slices, rules_of

FMT_AUTO = 255
# a decoder's messages are cut into pieces for the kernel threads only where each piece gets this
# much: a piece costs a thread hand-off and a hit part of its own, and 1 MiB classifies in ~4 ms
PIECE_BYTES = 1 << 20
_PENDING = -1   # status of a layered message between the layers pre-pass and its classification
_DECODER_MODULES = {FMT_EDIFACT: "flowaudit.decode.edifact", FMT_X12: "flowaudit.decode.x12",
                    FMT_XML: "flowaudit.decode.xml", FMT_JSON: "flowaudit.decode.json",
                    FMT_FLAT: "flowaudit.decode.flat"}
_FORMAT_LIST = [FORMAT_NAMES.get(i) or TELEMETRY_NAMES.get(i, "?")
                for i in range(max(*FORMAT_NAMES, *TELEMETRY_NAMES) + 1)]
_SALVAGE = -1  # the "format" of the salvage scan's hit part
_REASON_LIST = [REASONS[i] for i in range(max(REASONS) + 1)]


def format_code(name: str) -> int:
    return FMT_AUTO if name == "auto" else FORMAT_CODES[name]


@dataclass
class Batch:
    """N messages: ``buf[offsets[i]:offsets[i+1]]`` is message ``i``."""

    buf: np.ndarray            # uint8
    offsets: np.ndarray        # int64, n+1
    declared: np.ndarray       # uint8 format code per message (FMT_AUTO: detect)
    sources: list[str]         # distinct source names (topics or files)
    source_idx: np.ndarray     # int32 index into ``sources``
    partition: np.ndarray      # int32
    offset: np.ndarray         # int64 Kafka offset or message index in the file
    ts_ms: np.ndarray          # int64, -1 when absent
    keys: list                 # bytes or None per message
    null: np.ndarray           # bool: tombstone (value None)

    def __post_init__(self):
        self.buf = read_only(self.buf)   # one specialisation of each kernel (decode/detect.py)

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def take(self, idx: np.ndarray) -> "Batch":
        """The sub-batch of messages ``idx`` (values copied into a new buffer)."""
        b, o = self.buf, self.offsets
        vals = [None if self.null[i] else b[o[i]:o[i + 1]].tobytes() for i in idx]
        return Batch.from_values(vals, self.declared[idx], sources=self.sources, source_idx=self.source_idx[idx],
                                 partition=self.partition[idx], offset=self.offset[idx], ts_ms=self.ts_ms[idx],
                                 keys=[self.keys[i] for i in idx])

    @classmethod
    def from_values(cls, values: list, declared: list[int] | int, sources: list[str] | None = None,
                    source_idx=None, partition=None, offset=None, ts_ms=None, keys=None) -> "Batch":
        """Gather Python byte strings (None = tombstone) into one batch."""
        n = len(values)
        if None in values:
            null = np.fromiter((v is None for v in values), dtype=bool, count=n)
            lens = np.fromiter((0 if v is None else len(v) for v in values), dtype=np.int64, count=n)
            joined = b"".join(v for v in values if v is not None)
        else:   # no tombstone (the usual poll): C loops only, less time holding the GIL
            null = np.zeros(n, dtype=bool)
            lens = np.fromiter(map(len, values), dtype=np.int64, count=n)
            joined = b"".join(values)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        buf = np.frombuffer(joined, dtype=np.uint8) if joined else np.zeros(0, dtype=np.uint8)
        if isinstance(declared, int):
            declared = np.full(n, declared, dtype=np.uint8)
        return cls(
            buf=buf, offsets=offsets, declared=np.asarray(declared, dtype=np.uint8),
            sources=sources or ["-"],
            source_idx=np.zeros(n, np.int32) if source_idx is None else np.asarray(source_idx, np.int32),
            partition=np.full(n, -1, np.int32) if partition is None else np.asarray(partition, np.int32),
            offset=np.arange(n, dtype=np.int64) if offset is None else np.asarray(offset, np.int64),
            ts_ms=np.full(n, -1, np.int64) if ts_ms is None else np.asarray(ts_ms, np.int64),
            keys=keys if keys is not None else [None] * n, null=null)


@dataclass
class BatchResult:
    messages: pa.Table
    m_idx: np.ndarray          # batch index of each messages row
    hits: pa.Table
    h_idx: np.ndarray          # batch index of the message of each hit
    quarantine: pa.Table
    q_idx: np.ndarray
    status: np.ndarray         # int8 per message (0 = decoded)
    fmt: np.ndarray            # uint8 per message (decided format)
    transfers: pa.Table | None = None  # message-side watchlist matches (EDI recipients, payload hosts, markers)
    t_idx: np.ndarray | None = None    # batch index of each transfers row
    hit_counts: dict = field(default_factory=dict)         # (format, data_class) -> n
    quarantine_counts: dict = field(default_factory=dict)  # (format, reason) -> n
    kernel_seconds: dict = field(default_factory=dict)     # kernel -> seconds


@dataclass
class _Started:
    """A batch between :meth:`Classifier.start` and :meth:`Classifier.finish`."""
    batch: Batch
    ks: dict
    lens: np.ndarray
    status: np.ndarray
    fmt: np.ndarray
    lay: object
    opaque: list
    jobs: list


def _per_message(r: FormatResult, sel: np.ndarray, status, n_segments, flags, ikey) -> None:
    """A decoder's per-message results into a batch's arrays, at its messages ``sel``."""
    status[sel] = r.status
    n_segments[sel] = r.n_segments
    if r.flags is not None:
        flags[sel] = r.flags
    if r.ikey is not None:
        ikey[sel] = r.ikey


def _cat(parts: list) -> np.ndarray:
    """The arrays of ``parts`` end to end: the only one itself when there is one (a batch of one
    format: no copy, and no fresh pages to fault in under the stream's heap)."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _dict_array(indices: np.ndarray, names: list[str]) -> pa.DictionaryArray:
    if len(set(names)) == len(names):
        return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32), pa.int32()),
                                              pa.array(names, type=pa.string()))
    return dictionary_array(indices, pa.array(names, type=pa.string()))


def _recipient_where(location: str) -> str:
    """The watchlist's ``seen_where`` of an interchange recipient id found at ``location``."""
    return ("EDI_UNB" if location.startswith("UNB") else "X12_ISA" if location.startswith("ISA")
            else "X12_GS" if location.startswith("GS") else "JSON_PATH" if location.startswith("$")
            else "XML_ELEMENT")


def _const_dict(value: str, n: int) -> pa.DictionaryArray:
    return _dict_array(np.zeros(n, np.int32), [value])


class Classifier:
    """Runs the kernels over a batch and builds the output tables."""

    # Layers (flowaudit/decode/layers.py): unknown-format messages are looked through (base64,
    # gzip/zlib/zstd, MIME, whole-document JSON strings) within these limits; False: not at all
    # (benchmarks.layers measures the difference on plain traffic)
    layers_enabled: bool = True
    layer_limits: _layers.Limits = _layers.Limits()

    def __init__(self, protector: Protector, max_message_bytes: int = 8 * 1024 * 1024, egress=None,
                 dedupe_entries: int = DEFAULT_ENTRIES, threads: int = 1):
        """``dedupe_entries``: distinct payloads and interchange references (together) remembered
        for the duplicate flags (the last entries/2 .. entries; per process, see flowaudit/integrity.py).
        ``threads``: threads that run one batch's nogil kernels side by side (each format's decoder
        and the watchlist marker scan); 1: one after another in the calling thread.  The results
        do not depend on it."""
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self.protector = protector
        self._seen = Seen(dedupe_entries)
        self._seen_lock = threading.Lock()
        self.egress = egress  # flowaudit.detect.egress.EgressDetector: message-side indicators (optional)
        self._recipients: list = []
        self.max_message_bytes = max_message_bytes
        self.catalog = _catalog.load()
        self._decoders = {f: importlib.import_module(m) for f, m in _DECODER_MODULES.items()}
        self._detect = importlib.import_module("flowaudit.decode.detect")
        self._salvage = importlib.import_module("flowaudit.decode.salvage")
        max_code = max(self.catalog.classes) + 1
        self._class_names = ["?"] * max_code
        self._class_sens = np.zeros(max_code, np.int32)
        sens_names = sorted({c.sensitivity for c in self.catalog.classes.values()})
        self._sens_names = sens_names
        self._recipient_code = self.catalog.by_name("edi_recipient_id").code
        for code, c in self.catalog.classes.items():
            self._class_names[code] = c.name
            self._class_sens[code] = sens_names.index(c.sensitivity)

    def reset_duplicates(self, entries: int) -> None:
        """Forget the payloads and interchange references seen so far (``entries`` in all): a batch
        audit flags duplicates within one unit, so every engine and every resume flags alike."""
        with self._seen_lock:
            self._seen = Seen(entries)

    def warmup(self, formats=None) -> float:
        """Compile (or load cached) the kernels of ``formats`` (format codes; None: all five, as
        ``flowaudit warmup`` does), with the detector and the salvage scan that every topic needs;
        returns seconds.  FMT_AUTO adds no format: an ``auto`` topic may carry any of them, so
        each compiles on its first message instead, and a service with an empty cache starts
        consuming without first compiling formats it has not seen (with a warm cache, loading a
        format's kernels on first use takes a fraction of a second)."""
        t0 = time.perf_counter()
        samples = {FMT_EDIFACT: b"UNB+UNOA:2+A+B+260301:1200+1'UNH+1+CODECO:D:95B:UN'EQD+CN+MSCU1234565'UNT+3+1'"
                                b"UNZ+1+1'",
                   FMT_X12: b"ISA*00*          *00*          *ZZ*A              *ZZ*B              *260301*1200*U*"
                            b"00401*000000001*0*P*>~GS*QO*A*B*20260301*1200*1*X*004010~ST*315*0001~"
                            b"B4***D*20260301*1200*USLAX*MSCU*123456*5~SE*3*0001~GE*1*1~IEA*1*000000001~",
                   FMT_XML: b"<a><TransportEquipment><ID>MSCU1234565</ID></TransportEquipment></a>",
                   FMT_JSON: b'{"equipmentReference":"MSCU1234565","vesselIMONumber":"9321483"}',
                   FMT_FLAT: b"container,imo,consignee\r\nMSCU1234565,9321483,ACME TEL +31 10 2521010\r\n"}
        codes = sorted(set(samples) if formats is None else set(formats) & set(samples))
        # and one message of no format, for the detector and the salvage scan that every topic needs
        self.run(Batch.from_values([samples[f] for f in codes] + [b"?TEL +31 10 2521010 MSCU1234565"],
                                   codes + [FMT_AUTO]))
        return time.perf_counter() - t0

    def run(self, batch: Batch) -> BatchResult:
        return self.finish(self.start(batch))

    def pipelined(self, batches: Iterable[Batch]) -> Iterator[tuple[Batch, BatchResult]]:
        """``(batch, run(batch))`` for each of ``batches``, in order, each batch started before the
        one before it is finished: one batch's kernels run beside the tables of the one before and
        whatever the caller does with them (``flowaudit scan``, the bench's batch path).  The
        next batch is taken from ``batches`` first, so about three are alive at once."""
        started = None
        for batch in batches:
            nxt = (batch, self.start(batch))
            if started is not None:
                yield started[0], self.finish(started[1])
            started = nxt
        if started is not None:
            yield started[0], self.finish(started[1])

    def start(self, batch: Batch) -> "_Started":
        """The first half of :meth:`run`: the checks, format detection and layers, then the batch's
        kernels started (on the pool when ``threads`` > 1, where they run while this thread goes on;
        else here and now).  ``finish(start(b))`` is ``run(b)``.  A caller may start the next batch
        before it finishes this one, so that the kernels of one batch run beside the tables of the
        one before (``flowaudit scan`` does); batches must be finished in the order they were
        started, as the duplicate flags depend on it."""
        n = len(batch)
        ks: dict[str, float] = {}
        lens = np.diff(batch.offsets)
        status = np.zeros(n, np.int8)
        status[batch.null] = REASON_CODES["null_value"]
        status[(lens == 0) & ~batch.null] = REASON_CODES["empty_value"]
        status[lens > self.max_message_bytes] = REASON_CODES["too_large"]

        t0 = time.perf_counter()
        detected = self._detect.detect(batch.buf, batch.offsets)
        ks["detect"] = time.perf_counter() - t0
        fmt = batch.declared.copy()
        auto = fmt == FMT_AUTO
        fmt[auto] = detected[auto]
        live = status == 0
        status[live & (fmt == FMT_UNKNOWN)] = REASON_CODES["unknown_format"]
        # a topic that declares one format but carries another: a mismatch, never a guess
        # (flat-file detection is a heuristic: it never overrides a declared format)
        mismatch = live & ~auto & (detected != FMT_UNKNOWN) & (detected != FMT_FLAT) & (detected != batch.declared)
        status[mismatch] = REASON_CODES["format_mismatch"]
        opaque: list = []   # (index, layer path, bytes) decoded from layers, of no known format
        lay = self._unwrap_layers(batch, status, detected, ks, opaque) if self.layers_enabled else None

        # JSON must be UTF-8 (RFC 8259); XML is checked by its decoder, which honours a declared
        # single-byte encoding (ISO-8859-1, windows-1252 ...) and requires UTF-8 otherwise
        text = np.flatnonzero((status == 0) & (fmt == FMT_JSON))
        if text.size:
            t0 = time.perf_counter()
            ok = self._detect.utf8_ok(batch.buf, batch.offsets, text.astype(np.int64))
            ks["utf8"] = time.perf_counter() - t0
            status[text[~ok.astype(bool)]] = REASON_CODES["invalid_utf8"]

        jobs = []           # the kernels that do not depend on each other: side by side on the pool
        if self.egress is not None:
            # the marker scan reads every message with bytes, decoded or not (see _message_transfers)
            jobs.append(("egress_scan", self.egress.prescan, (batch.buf, batch.offsets,
                                                              np.flatnonzero((lens > 0) & ~batch.null))))
        for f, dec in self._decoders.items():
            sel = np.flatnonzero((status == 0) & (fmt == f)).astype(np.int64)
            if sel.size:
                jobs.extend(((f, k), dec.classify, (batch.buf, batch.offsets, piece))
                            for k, piece in enumerate(self._pieces(dec, batch.offsets, sel)))
        return _Started(batch, ks, lens, status, fmt, lay, opaque, self._start_jobs(jobs))

    def finish(self, started: "_Started") -> BatchResult:
        """The second half of :meth:`run` (see :meth:`start`): the kernels' results, integrity,
        salvage, layers, the tables and the message-side egress scan."""
        batch, ks, lens, status, fmt, lay, opaque = (started.batch, started.ks, started.lens, started.status,
                                                      started.fmt, started.lay, started.opaque)
        n = len(batch)
        msg_type = np.zeros(n, np.int32)
        type_names = [""]
        n_segments = np.zeros(n, np.int32)
        flags = np.zeros(n, np.uint32)
        ikey = np.zeros(n, np.uint64)
        hit_parts = []
        inner: list = []    # (batch index, bytes) inside a layer, for the egress scan
        done = self._collect_jobs(started.jobs, ks)
        prescan = done.pop("egress_scan", None)
        pieces: dict = {}
        for (f, _k), part in done.items():     # each format's pieces, in selection order
            pieces.setdefault(f, []).append(part)
        for f, parts in pieces.items():
            base = len(type_names)
            uniq = sorted(set().union(*(r.msg_type for _sel, r in parts)))
            lookup = {t: base + i for i, t in enumerate(uniq)}
            type_names.extend(uniq)
            for sel, r in parts:
                _per_message(r, sel, status, n_segments, flags, ikey)
                msg_type[sel] = np.fromiter((lookup[t] for t in r.msg_type), np.int32, count=sel.size)
                if r.n_hits:
                    hit_parts.append((f, r))
                inner.extend(getattr(r, "layer_values", None) or ())
        layer_names = [""]
        if lay is not None:
            self._classify_layers(batch, lay, status, fmt, msg_type, type_names, n_segments, flags, ikey, hit_parts,
                                  layer_names, ks, inner)
        if opaque:
            inner.extend((i, v) for i, _, v in opaque)          # the egress scan reads them too
            part = self._salvage_opaque(opaque, batch.offsets, layer_names, ks)
            if part is not None:
                hit_parts.append((_SALVAGE, part))

        ok_idx = np.flatnonzero(status == 0)
        q_idx = np.flatnonzero(status != 0)
        if ok_idx.size:
            t0 = time.perf_counter()
            org = origins(batch.sources, batch.source_idx[ok_idx], batch.partition[ok_idx], batch.offset[ok_idx])
            digest = payload_hash(batch.buf, batch.offsets, ok_idx.astype(np.int64))
            with self._seen_lock:
                dup_payload, dup_ref = self._seen.update_pair(digest, ikey[ok_idx], org)
            flags[ok_idx[dup_payload]] |= np.uint32(FLAG_BITS["duplicate_payload"])
            flags[ok_idx[dup_ref]] |= np.uint32(FLAG_BITS["duplicate_interchange_ref"])
            ks["integrity"] = time.perf_counter() - t0
        salvaged = self._salvage_part(batch, q_idx, status, ks)
        if salvaged is not None:
            hit_parts.append((_SALVAGE, salvaged))
        self._recipients = []
        hits, h_idx, hit_counts = self._hits_table(batch, hit_parts, status, fmt, msg_type, type_names, layer_names)
        n_hits = np.bincount(h_idx, minlength=n).astype(np.int32) if h_idx.size else np.zeros(n, np.int32)
        messages = self._messages_table(batch, ok_idx, fmt, msg_type, type_names, lens, n_segments, n_hits, flags)
        quarantine = self._quarantine_table(batch, q_idx, fmt, status, lens)
        q_counts: dict = {}
        if q_idx.size:
            pairs, counts = np.unique(fmt[q_idx].astype(np.int32) * 256 + status[q_idx], return_counts=True)
            q_counts = {(FORMAT_NAMES.get(int(p) // 256, "unknown"), REASONS[int(p) % 256]): int(c)
                        for p, c in zip(pairs, counts)}
        transfers = t_idx = None
        scan = np.union1d(ok_idx, q_idx[(status[q_idx] != REASON_CODES["null_value"])
                                        & (status[q_idx] != REASON_CODES["empty_value"])]).astype(np.int64)
        if self.egress is not None and scan.size:
            t0 = time.perf_counter()
            transfers, t_idx = self._message_transfers(batch, scan, inner, prescan)
            ks["egress"] = ks.pop("egress_scan", 0.0) + time.perf_counter() - t0
        return BatchResult(messages, ok_idx, hits, h_idx, quarantine, q_idx, status, fmt,
                           transfers, t_idx, hit_counts, q_counts, ks)

    def _pieces(self, dec, offsets: np.ndarray, sel: np.ndarray) -> list:
        """``sel`` in consecutive pieces of about equal bytes, one per kernel thread, for a decoder
        that classifies each message on its own against a fixed location table (``PIECEWISE``:
        EDIFACT, X12), when the batch holds at least ``PIECE_BYTES`` of it per thread; else
        ``[sel]``.  The pieces' results are hit parts of their own, in order, which give the same
        tables as one result of the whole ``sel``."""
        if self.threads == 1 or not getattr(dec, "PIECEWISE", False):
            return [sel]
        ends = np.cumsum(offsets[sel + 1] - offsets[sel])
        n = min(self.threads, int(ends[-1]) // PIECE_BYTES)
        if n < 2:
            return [sel]
        cuts = np.searchsorted(ends, ends[-1] * np.arange(1, n) // n, side="right")
        return [p for p in np.split(sel, cuts) if p.size]

    def _start_jobs(self, jobs: list) -> list:
        """``(name, fn, args)`` jobs started: on the pool when ``threads`` > 1 (largest inputs
        first), else run here in turn.  :meth:`_collect_jobs` gives their results."""
        def timed(name, fn, args):
            t0 = time.perf_counter()
            r = fn(*args)
            return time.perf_counter() - t0, ((args[2], r) if isinstance(name, tuple) else r)
        if self.threads == 1 or len(jobs) < 2:
            return [(name, timed(name, fn, args)) for name, fn, args in jobs]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="flowaudit-kernels")
        def nbytes(job):   # args: (buf, offsets, sel)
            _name, _fn, (_buf, off, sel) = job
            return int((off[sel + 1] - off[sel]).sum())
        futs = {name: self._pool.submit(timed, name, fn, args) for name, fn, args in sorted(jobs, key=nbytes,
                                                                                              reverse=True)}
        return [(name, futs[name]) for name, _fn, _args in jobs]     # formats and pieces in their usual order

    @staticmethod
    def _collect_jobs(started: list, ks: dict) -> dict:
        """``{name: result}`` of :meth:`_start_jobs` (a format piece's, named ``(format, k)``:
        ``(sel, result)``), each timed into ``ks`` (a format's pieces summed)."""
        out = {}
        for name, job in started:
            secs, out[name] = job if isinstance(job, tuple) else job.result()
            key = FORMAT_NAMES[name[0]] if isinstance(name, tuple) else name
            ks[key] = ks.get(key, 0.0) + secs
        return out

    # -- layers (flowaudit/decode/layers.py) ------------------------------------------------

    def _unwrap_layers(self, batch: Batch, status: np.ndarray, detected: np.ndarray, ks: dict, opaque: list):
        """The layers pre-pass: every message the detector calls unknown whose first bytes show a
        layer is unwrapped (within ``layer_limits``).  A limit hit or a corrupt wrapper sets the
        message's quarantine reason; a message with known formats inside is set aside
        (``_PENDING``) for :meth:`_classify_layers`.  Returns ``(parent, paths, values)`` of the
        inner values, or None (no message had a layer: the batch is untouched).  ``opaque`` gets
        ``(index, path, bytes)`` of the decoded values of no known format (gzip of plain text)."""
        cand = np.flatnonzero(((status == 0) | (status == REASON_CODES["unknown_format"])) & (detected == FMT_UNKNOWN))
        if cand.size == 0:
            return None
        t0 = time.perf_counter()
        b, o = batch.buf, batch.offsets
        parent, paths, values = [], [], []
        for i in cand.tolist():
            if _layers.kind(b[o[i]:min(o[i + 1], o[i] + 4096)].tobytes()) is None:   # first bytes only
                continue
            found: list = []
            inner, reason = _layers.unwrap(b[o[i]:o[i + 1]].tobytes(), self.layer_limits, found)
            opaque.extend((i, path, v) for path, v in found)
            if reason is not None:
                status[i] = REASON_CODES[reason]
            elif inner:
                status[i] = _PENDING
                for path, value in inner:
                    parent.append(i)
                    paths.append(path)
                    values.append(value)
        ks["layers"] = time.perf_counter() - t0
        return (np.array(parent, np.int64), paths, values) if parent else None

    def _classify_layers(self, batch, lay, status, fmt, msg_type, type_names, n_segments, flags, ikey, hit_parts,
                         layer_names, ks, inner=None) -> None:
        """Classify the inner values of the layered messages as a sub-batch with the same decoders,
        and map the results back to the outer messages: one outer message is decoded when at
        least one of its inner values is (``layered`` flag; ``layer_part_bad`` when another was
        refused), its ``format`` / ``msg_type`` are those of its first decoded inner value; else it
        is quarantined with its first inner value's reason.  Hits keep their inner positions
        (``byte_start`` relative to the innermost value) and get the layer path.  ``inner`` gets
        ``(outer index, bytes)`` of every inner value, for the egress scan."""
        t0 = time.perf_counter()
        parent, paths, values = lay
        if inner is not None:
            inner.extend(zip(parent.tolist(), values))
        k = len(values)
        sub = Batch.from_values(values, FMT_AUTO)
        sbuf, soff = sub.buf, sub.offsets
        sfmt = self._detect.detect(sbuf, soff)
        sst = np.zeros(k, np.int8)
        sst[sfmt == FMT_UNKNOWN] = REASON_CODES["unknown_format"]
        decl = batch.declared[parent]
        sst[(sst == 0) & (decl != FMT_AUTO) & (sfmt != decl)] = REASON_CODES["format_mismatch"]
        text = np.flatnonzero((sst == 0) & (sfmt == FMT_JSON))
        if text.size:
            ok = self._detect.utf8_ok(sbuf, soff, text.astype(np.int64))
            sst[text[~ok.astype(bool)]] = REASON_CODES["invalid_utf8"]
        s_type = [""] * k
        s_nseg = np.zeros(k, np.int32)
        s_flags = np.zeros(k, np.uint32)
        s_ikey = np.zeros(k, np.uint64)
        path_names = sorted(set(paths))
        path_id = np.array([path_names.index(p) for p in paths], np.int64)
        for f, dec in self._decoders.items():
            sel = np.flatnonzero((sst == 0) & (sfmt == f)).astype(np.int64)
            if sel.size == 0:
                continue
            r = dec.classify(sbuf, soff, sel)
            _per_message(r, sel, sst, s_nseg, s_flags, s_ikey)
            for j, t in zip(sel.tolist(), r.msg_type):
                s_type[j] = t
            if r.n_hits:
                hit_parts.append((f, self._lift(r, f, parent, path_id, path_names, soff, batch.offsets, layer_names)))
            if inner is not None:
                inner.extend((int(parent[j]), v) for j, v in getattr(r, "layer_values", None) or ())
        ok = sst == 0
        first_ok: dict = {}
        first_any: dict = {}
        for j, i in enumerate(parent.tolist()):
            first_any.setdefault(i, j)
            if ok[j]:
                first_ok.setdefault(i, j)
        for i, j in first_any.items():
            j = first_ok.get(i, j)
            status[i] = 0 if ok[j] else sst[j]
            fmt[i] = sfmt[j]
        good = np.array(sorted(first_ok), np.int64)
        if good.size:
            js = np.array([first_ok[i] for i in good.tolist()], np.int64)
            base = len(type_names)
            uniq = sorted({s_type[j] for j in js.tolist()})
            type_names.extend(uniq)
            msg_type[good] = np.array([base + uniq.index(s_type[j]) for j in js.tolist()], np.int32)
            ikey[good] = s_ikey[js]
            okj = np.flatnonzero(ok)
            np.add.at(n_segments, parent[okj], s_nseg[okj])
            np.bitwise_or.at(flags, parent[okj], s_flags[okj])
            flags[good] |= np.uint32(FLAG_BITS["layered"])
            bad = parent[~ok]
            bad = bad[np.isin(bad, good)]
            flags[bad] |= np.uint32(FLAG_BITS["layer_part_bad"])
        ks["layers"] = ks.get("layers", 0.0) + time.perf_counter() - t0

    def _salvage_opaque(self, opaque: list, offsets: np.ndarray, layer_names: list, ks: dict):
        """The salvage scan of the decoded layer values no decoder reads (gzip or base64 of plain
        text, a MIME text part), as hits of their outer messages with the layer path (``gzip``,
        ``base64>gzip``) and positions inside the decoded value; a FormatResult, or None."""
        t0 = time.perf_counter()
        parent = np.array([i for i, _, _ in opaque], np.int64)
        paths = [p for _, p, _ in opaque]
        sub = Batch.from_values([v for _, _, v in opaque], FMT_AUTO)
        r = self._salvage.scan(sub.buf, sub.offsets, np.arange(len(opaque), dtype=np.int64))
        ks["salvage"] = ks.get("salvage", 0.0) + time.perf_counter() - t0
        if not r.n_hits:
            return None
        path_names = sorted(set(paths))
        path_id = np.array([path_names.index(p) for p in paths], np.int64)
        return self._lift(r, None, parent, path_id, path_names, sub.offsets, offsets, layer_names)

    @staticmethod
    def _layer_ids(r: FormatResult, layer_names: list) -> np.ndarray:
        """``r.hit_layer`` as indices into the batch's ``layer_names`` (appended as needed); a
        result without its own ``layer_names`` already uses the batch's."""
        if r.layer_names is None:
            return r.hit_layer
        ids = []
        for name in r.layer_names:
            if name not in layer_names:
                layer_names.append(name)
            ids.append(layer_names.index(name))
        return np.array(ids, np.int32)[r.hit_layer]

    @staticmethod
    def _lift(r: FormatResult, f: int | None, parent, path_id, path_names, soff, offsets, layer_names) -> FormatResult:
        """The hits of sub-batch result ``r`` as hits of the outer messages: ``hit_msg`` the outer
        index, positions relative to the inner value (shifted so that the hits table's
        ``start - offsets[outer]`` gives them), ``hit_layer`` the path (``base64>gzip>x12``; an
        interchange embedded in an inner JSON / XML string adds its own step; ``f`` None: the
        salvage scan's, the path alone)."""
        j = r.hit_msg
        shift = offsets[parent[j]] - soff[j]
        inner = r.hit_layer if r.hit_layer is not None else np.zeros(j.size, np.int64)
        inner_names = r.layer_names or [""]
        key = path_id[j] * (len(inner_names) + 1) + inner
        uniq, inv = np.unique(key, return_inverse=True)
        ids = []
        for u in uniq.tolist():
            p, q = divmod(u, len(inner_names) + 1)
            name = (path_names[p] if f is None else f"{path_names[p]}>{FORMAT_NAMES[f]}") + \
                (f">{inner_names[q]}" if q else "")
            if name not in layer_names:
                layer_names.append(name)
            ids.append(layer_names.index(name))
        return FormatResult(
            status=r.status, msg_type=r.msg_type, n_segments=r.n_segments, hit_msg=parent[j],
            hit_class=r.hit_class, hit_loc=r.hit_loc, hit_valid=r.hit_valid, hit_conf=r.hit_conf,
            hit_start=r.hit_start + shift, hit_end=r.hit_end + shift, val_off=r.val_off, val_buf=r.val_buf,
            loc_names=r.loc_names, hit_sub=r.hit_sub, hit_layer=np.array(ids, np.int32)[inv.reshape(-1)])

    def _salvage_part(self, batch: Batch, q_idx: np.ndarray, status: np.ndarray, ks: dict):
        """The salvage scan of the quarantined messages (null and empty ones have nothing to scan;
        a too-large one is scanned up to ``max_message_bytes``): a FormatResult, or None."""
        sel = q_idx[(status[q_idx] != REASON_CODES["null_value"]) & (status[q_idx] != REASON_CODES["empty_value"])]
        if sel.size == 0:
            return None
        t0 = time.perf_counter()
        starts = batch.offsets[sel]
        ends = np.minimum(batch.offsets[sel + 1], starts + self.max_message_bytes)
        rows, vbuf = self._salvage.scan_ranges(batch.buf, starts, ends)
        ks["salvage"] = time.perf_counter() - t0
        return self._salvage.result_from_rows(rows, vbuf, sel) if rows.shape[0] else None

    def _message_transfers(self, batch: Batch, sel: np.ndarray, inner=(), prescan=None):
        """Watchlisted hosts, URL paths and markers in payloads, and EDI recipients (from the
        recipient-id hits the kernels already found) -> transfers rows.

        ``sel``: the messages to scan, decoded AND quarantined (a malformed or unknown message's
        raw bytes are scanned as they are); ``inner``: ``(index, bytes)`` of the values found
        inside layers (whole-message and field layers): a message with such values is scanned as
        its raw bytes plus each inner value, each indicator once per message.  ``prescan``: the
        egress detector's marker pass over the batch (``EgressDetector.prescan``), or None."""
        parents = sorted({i for i, _ in inner})
        if parents:
            extra: dict = {}
            for i, v in inner:
                extra.setdefault(i, []).append(v)
            b, o = batch.buf, batch.offsets
            vals = [b"\n".join([b[o[i]:o[i + 1]].tobytes()] + extra[i]) for i in parents]
            sub = Batch.from_values(vals, FMT_AUTO)
            pidx = np.array(parents, np.int64)
            where = {i: j for j, i in enumerate(parents)}
            t_in = self.egress.detect_messages(
                sub.buf, sub.offsets, None, recipients=[(where[m], r, w) for m, r, w in self._recipients if m in where],
                sources=batch.sources, source_idx=batch.source_idx[pidx], partition=batch.partition[pidx],
                offset=pidx, ts_ms=batch.ts_ms[pidx])
            sel = np.setdiff1d(sel, pidx)
            recipients = [x for x in self._recipients if x[0] not in where]
        else:
            t_in = None
            recipients = self._recipients
        t = self.egress.detect_messages(batch.buf, batch.offsets, sel, recipients=recipients,
                                        sources=batch.sources, source_idx=batch.source_idx,
                                        partition=batch.partition, offset=np.arange(len(batch)), ts_ms=batch.ts_ms,
                                        prescan=prescan)
        if t_in is not None and t_in.num_rows:
            t = pa.concat_tables([t, t_in])
            t = t.take(pa.array(np.argsort(t.column("offset").to_numpy(), kind="stable")))
        t_idx = t.column("offset").to_numpy().astype(np.int64)
        k = t.schema.get_field_index("offset")
        t = t.set_column(k, t.schema.field(k), pa.array(batch.offset[t_idx], pa.int64()))
        return t, t_idx

    # -- tables ------------------------------------------------------------------------------

    def _provenance(self, batch: Batch, idx: np.ndarray) -> list:
        ts = batch.ts_ms[idx]
        return [
            _dict_array(batch.source_idx[idx], batch.sources),
            pa.array(batch.partition[idx], pa.int32()),
            pa.array(batch.offset[idx], pa.int64()),
            pa.array(ts, pa.int64(), mask=ts < 0),
        ]

    def _messages_table(self, batch, idx, fmt, msg_type, type_names, lens, n_segments, n_hits, flags) -> pa.Table:
        m = idx.size
        cols = self._provenance(batch, idx) + self.protector.key_columns([batch.keys[i] for i in idx]) + [
            _dict_array(fmt[idx], _FORMAT_LIST),
            _dict_array(msg_type[idx], type_names),
            pa.array(lens[idx].astype(np.int32), pa.int32()),
            pa.array(n_segments[idx], pa.int32()),
            pa.array(n_hits[idx], pa.int32()),
            flags_array(flags[idx]),
            _const_dict(self.catalog.version, m),
            _const_dict(SCHEMA_VERSION, m),
        ]
        return pa.Table.from_arrays(cols, schema=MESSAGES)

    def _quarantine_table(self, batch, idx, fmt, status, lens) -> pa.Table:
        buf, off = batch.buf, batch.offsets
        values = [None if batch.null[i] else buf[off[i]:off[i + 1]].tobytes() for i in idx]
        return _quarantine.table(
            self.protector, self._provenance(batch, idx), [batch.keys[i] for i in idx], values,
            _dict_array(np.where(batch.declared[idx] == FMT_AUTO, fmt[idx], batch.declared[idx]), _FORMAT_LIST),
            _dict_array(status[idx].astype(np.int32), _REASON_LIST), lens[idx])

    def _mask_rules(self) -> tuple[np.ndarray, np.ndarray]:
        """The mask rule and its parameter of each catalog class code (flowaudit.protect.RULES)."""
        rules = getattr(self, "_rules_by_code", None)
        if rules is None:
            rules = self._rules_by_code = rules_of(self._class_names)
        return rules

    def _hits_table(self, batch, parts, status, fmt, msg_type, type_names, layer_names=("",)):
        """The hits rows, in message order: provenance, where, masked + keyed value (raw on opt-in).

        Every distinct (value, class) is masked once and every distinct value keyed once, in the
        kernels, straight from the kernels' value buffer (flowaudit/protect.py: ``mask_slices``,
        ``Protector.hmac_slices``); the Arrow
        columns are built from arrays, with no Python object per hit or per value."""
        if not parts:
            return HITS.empty_table(), np.zeros(0, np.int64), {}
        msg, cls, loc, valid, conf, start, end, keeps, subs, lays, fmts, salv = ([] for _ in range(12))
        vbufs, voffs = [], []
        loc_names: list[str] = []
        loc_base: dict = {}     # a location table seen before (a format's pieces share one): its numbers
        vbase = nbase = 0
        for f, r in parts:
            # a decoder's hits of messages it rejected are dropped; salvage hits are of rejected ones
            keep = np.arange(r.n_hits) if f == _SALVAGE else np.flatnonzero(status[r.hit_msg] == 0)
            salv.append(np.full(keep.size, f == _SALVAGE))
            lays.append(self._layer_ids(r, layer_names)[keep] if r.hit_layer is not None else np.zeros(keep.size, np.int32))
            # a layered hit: its inner format; a salvaged one: its message's (unknown, or the topic's)
            ix = keep if keep.size < r.n_hits else slice(None)     # every hit kept: views, no copies
            fmts.append(fmt[r.hit_msg[ix]].astype(np.uint8) if f == _SALVAGE else np.full(keep.size, f, np.uint8))
            msg.append(r.hit_msg[ix])
            cls.append(r.hit_class[ix])
            names = tuple(r.loc_names)
            lb = loc_base.get(names)
            if lb is None:
                lb = loc_base[names] = len(loc_names)
                loc_names.extend(names)
            loc.append(r.hit_loc[ix].astype(np.int32) + lb)
            valid.append(r.hit_valid[ix])
            conf.append(r.hit_conf[ix])
            start.append(r.hit_start[ix])
            end.append(r.hit_end[ix])
            subs.append(r.hit_sub[ix] if r.hit_sub is not None else np.zeros(keep.size, np.int32))
            keeps.append(keep + nbase)      # index into the combined value offsets
            nbase += r.val_off.shape[0] - 1
            nv = int(r.val_off[-1])
            vbufs.append(r.val_buf[:nv])
            voffs.append(r.val_off[:-1] + vbase)
            vbase += nv
        h_idx = _cat(msg).astype(np.int64, copy=False)
        cls_a = _cat(cls).astype(np.int32, copy=False)
        loc_a = _cat(loc)
        # values of all formats in one buffer; mask and key each distinct value once
        vbuf = _cat(vbufs)
        voff = np.append(_cat(voffs), vbase).astype(np.int64, copy=False)
        keep_all = _cat(keeps).astype(np.int64, copy=False)
        uid, first = unique_slices(read_only(vbuf), voff, keep_all)      # read-only, as every caller passes it
        rows = keep_all[first]                  # the value row of each distinct value
        ks = np.flatnonzero(cls_a == self._recipient_code) if self.egress is not None else ()
        if len(ks):  # interchange recipients, for the watchlist's EDI party ids
            wheres = [_recipient_where(name) for name in loc_names]
            us, inv = np.unique(uid[ks], return_inverse=True)      # each distinct id decoded once
            texts = [vbuf[voff[r]:voff[r + 1]].tobytes().decode("latin-1") for r in rows[us].tolist()]
            self._recipients.extend(zip(h_idx[ks].tolist(), [texts[i] for i in inv.ravel().tolist()],
                                        [wheres[x] for x in loc_a[ks].tolist()]))
        # the mask depends on the data class: one entry per distinct (value, class), which is one
        # per distinct value unless the same bytes were found as two classes; numbered as
        # np.unique(uid * classes + class) numbers them
        pid, first_pair = unique_pairs(uid, cls_a, first)
        p_rows = keep_all[first_pair]
        p_cls = cls_a[first_pair]
        rule, param = self._mask_rules()
        # the mask depends on the class, the HMAC only on the bytes: keyed once per distinct value,
        # so the keyed dictionary has each value once without a look at the digests
        masked_u = mask_slices(vbuf, voff[p_rows], voff[p_rows + 1], rule[p_cls], param[p_cls])
        keyed_u = self.protector.hmac_slices(vbuf, voff[rows], voff[rows + 1])
        raw_u = gather_strings(vbuf, voff[rows], voff[rows + 1]) if self.protector.raw else None
        # hit counts do not depend on the row order
        ncls = len(self._class_names)
        fmt_h = _cat(fmts)
        counts = np.bincount(fmt_h.astype(np.int64) * ncls + cls_a)
        hit_counts = {(FORMAT_NAMES[int(p) // ncls], self._class_names[int(p) % ncls]): int(counts[p])
                      for p in np.flatnonzero(counts)}
        # rows in message order, like the input: permute the per-hit arrays (the dictionaries,
        # numbered above in the order the kernels found the values, stay as they are)
        order = np.argsort(h_idx, kind="stable")
        if np.all(order[:-1] < order[1:]):
            order = None
        per_hit = [h_idx, cls_a, loc_a, pid, uid, _cat(valid), _cat(conf), _cat(start), _cat(end), _cat(subs),
                   fmt_h, _cat(lays), _cat(salv)]
        if order is not None:
            per_hit = [a[order] for a in per_hit]
        h_idx, cls_a, loc_a, pid, uid, valid_a, conf_a, start_a, end_a, sub_a, fmt_h, lay_a, salv_a = per_hit
        base = batch.offsets[h_idx]
        masked = dictionary_array(pid, masked_u)
        keyed = pa.DictionaryArray.from_arrays(pa.array(uid.astype(np.int32), pa.int32()), keyed_u)
        if raw_u is not None:
            raw = dictionary_array(uid, raw_u)
        else:
            raw = pa.nulls(uid.size, HITS.field("value_raw").type)
        m = h_idx.size
        cols = self._provenance(batch, h_idx) + [
            pa.array(sub_a.astype(np.int32), pa.int32()),
            _dict_array(fmt_h, _FORMAT_LIST),
            _dict_array(msg_type[h_idx], type_names),
            _dict_array(cls_a, self._class_names),
            _dict_array(self._class_sens[cls_a], self._sens_names),
            _dict_array(loc_a, loc_names or ["?"]),
            masked,
            keyed,
            raw,
            pa.array(valid_a == 1, pa.bool_(), mask=valid_a < 0),
            pa.array(conf_a.astype(np.uint8), pa.uint8()),
            pa.array(salv_a, pa.bool_()),
            pa.array(start_a - base, pa.int64()),
            pa.array(end_a - base, pa.int64()),
            _const_dict(self.catalog.version, m),
            _const_dict(SCHEMA_VERSION, m),
            _dict_array(lay_a, list(layer_names)),
        ]
        return pa.Table.from_arrays(cols, schema=HITS), h_idx, hit_counts
