"""Format decoders: the shell around the numba kernels, one module per format.

Every decoder exposes the same function::

    classify(buf: np.ndarray[uint8], offsets: np.ndarray[int64], sel: np.ndarray[int64]) -> FormatResult

``buf``/``offsets`` are the whole batch (Arrow binary layout: message ``i`` is
``buf[offsets[i]:offsets[i+1]]``); ``sel`` lists the batch indices of the messages of this
format.  The decoder runs its kernels over all selected messages at once and returns columnar
arrays; it never raises on bad input: a message it cannot decode gets a non-zero ``status``
(a code of :data:`REASONS`) and no hits.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Message formats (uint8 codes used in kernels and the ``format`` column).
FMT_UNKNOWN, FMT_EDIFACT, FMT_X12, FMT_XML, FMT_JSON = 0, 1, 2, 3, 4
FORMAT_NAMES = {FMT_UNKNOWN: "unknown", FMT_EDIFACT: "edifact", FMT_X12: "x12", FMT_XML: "xml", FMT_JSON: "json"}
# network telemetry topics (flowaudit.detect.flowpath): NetFlow/IPFIX datagrams, goflow2 JSON, Zeek DNS
FMT_NETFLOW, FMT_GOFLOW, FMT_DNS = 5, 6, 7
TELEMETRY_NAMES = {FMT_NETFLOW: "netflow", FMT_GOFLOW: "goflow", FMT_DNS: "dns"}
# delimiter-separated flat files (ICES 0x1D manifests, CSV / TSV with a header, fixed width):
# appended after the telemetry codes, so every earlier code stays what it was
FMT_FLAT = 8
FORMAT_NAMES[FMT_FLAT] = "flat"
# Zeek conn.log records (JSON lines, or Zeek's ASCII log with its header in the message) as flows
FMT_ZEEK_CONN = 9
TELEMETRY_NAMES[FMT_ZEEK_CONN] = "zeek_conn"
# Suricata eve.json, every event type on one topic: its names (DNS, TLS, HTTP) and its flows
FMT_EVE = 10
TELEMETRY_NAMES[FMT_EVE] = "eve"
FORMAT_CODES = {v: k for k, v in {**FORMAT_NAMES, **TELEMETRY_NAMES}.items()}

# Quarantine reasons (status codes; 0 = decoded).  Stable: stored in Parquet as strings.
REASONS = {
    0: "ok",
    1: "empty_value",
    2: "null_value",
    3: "too_large",
    4: "unknown_format",
    5: "invalid_utf8",
    6: "unterminated_interchange",
    7: "bad_service_string",       # EDIFACT UNA / X12 ISA: separators, ISA shape (fixed width or compressed)
    8: "release_at_end",
    9: "malformed_json",
    10: "malformed_xml",
    11: "forbidden_xml_construct",  # DOCTYPE / entity / XInclude
    12: "too_deep",
    13: "bad_charset",
    14: "segment_too_long",
    15: "too_many_components",
    16: "format_mismatch",
    17: "bad_envelope",            # EDI: data after the last interchange trailer, or mixed envelope levels
    18: "headless_fragment",       # EDI: no UNB/UNG/UNH (ISA/GS/ST) first, or a trailer whose header is
                                   # not in the value (the tail of a split interchange)
    # layers (flowaudit/decode/layers.py): a wrapped value (base64, gzip, zlib, zstd, MIME, JSON string)
    19: "layer_bomb",              # decompressed past max_ratio x the message, or too many MIME parts
    20: "layer_too_deep",          # more than max_depth layers
    21: "layer_too_large",         # all layers' output of the message past max_bytes
    22: "layer_corrupt",           # a wrapper's magic matched but its body does not decode
}
REASON_CODES = {v: k for k, v in REASONS.items()}

# Integrity flags of a decoded message (``messages.flags``; bit k of the uint32 mask is FLAGS[k]).
# A flag never rejects: the message is decoded and audited, the flag says what is odd about it.
# The first five are the JSON / XML kernels' own bits (kernels/jsonscan.py FLAG_*), unchanged.
FLAGS = (
    "duplicate_key",              # JSON: an object repeats a member name (the last one wins in most parsers)
    "big_integer",                # JSON: an integer beyond 2**53 (kept as text, never converted)
    "number_underflow",           # JSON: a non-zero number below 1e-324
    "embedded_edifact",           # JSON / XML: a string / leaf holds an EDIFACT interchange (decoded too)
    "embedded_edifact_bad",       # ... which the EDIFACT decoder refused (a fragment, a bad envelope)
    "unt_count_mismatch",         # EDIFACT UNT 0074 != segments UNH..UNT
    "unt_ref_mismatch",           # EDIFACT UNT 0062 != UNH 0062
    "une_count_mismatch",         # EDIFACT UNE 0060 != messages in the group
    "une_ref_mismatch",           # EDIFACT UNE 0048 != UNG 0048
    "unz_count_mismatch",         # EDIFACT UNZ 0036 != messages (groups, when UNG is used)
    "unz_ref_mismatch",           # EDIFACT UNZ 0020 != UNB 0020
    "se_count_mismatch",          # X12 SE01 != segments ST..SE
    "se_ref_mismatch",            # X12 SE02 != ST02
    "ge_count_mismatch",          # X12 GE01 != transaction sets in the group
    "ge_ref_mismatch",            # X12 GE02 != GS06
    "iea_count_mismatch",         # X12 IEA01 != functional groups
    "iea_ref_mismatch",           # X12 IEA02 != ISA13
    "envelope_nesting",           # EDI: a message / group not closed before the next one or the trailer,
                                  # a trailer without its header, an X12 ST outside GS
    "no_interchange_header",      # EDI: bare message(s) UNH..UNT / ST..SE (or groups), no UNB / ISA
    "duplicate_interchange_ref",  # EDI: this sender's interchange control reference was seen before
                                  # (UNB S002 + 0020, ISA05/06 + ISA13; per process, bounded memory)
    "duplicate_payload",          # the same value bytes were seen before (per process, bounded memory)
    "layered",                    # decoded from inside a layer (flowaudit/decode/layers.py); ``format`` is
                                  # the innermost format, hits.layer the path
    "layer_part_bad",             # a layered message: one of its inner values (a MIME part) was refused
)
FLAG_BITS = {name: 1 << k for k, name in enumerate(FLAGS)}


def flag_names(mask: int) -> list[str]:
    """The names of the bits set in a ``flags`` mask."""
    return [name for k, name in enumerate(FLAGS) if mask >> k & 1]


@dataclass
class FormatResult:
    """What a decoder found in the selected messages.

    Per selected message (arrays of ``len(sel)``, aligned with ``sel``):
      ``status`` int8, a :data:`REASONS` code; ``msg_type`` list of str ("BAPLIE", "315",
      "Declaration", "json", "" when unknown); ``n_segments`` int32 (segments / elements / values seen).
    Per hit (arrays of the same length):
      ``hit_msg`` int64 batch index (a value of ``sel``), ``hit_class`` int16 class code
      (schemas/catalog/classes.toml), ``hit_loc`` int32 index into ``loc_names``,
      ``hit_valid`` int8 (1 check digit ok, 0 wrong, -1 no check digit),
      ``hit_conf`` uint8 confidence in percent (100 structural position, lower for free text),
      ``hit_start``/``hit_end`` int64 raw byte range of the value in ``buf``,
      ``val_off`` int64 (n_hits+1) and ``val_buf`` uint8: the normalised value of hit ``k`` is
      ``val_buf[val_off[k]:val_off[k+1]]`` (release characters and escapes removed, upper case
      where the class is case-insensitive).
    """

    status: np.ndarray
    msg_type: list
    n_segments: np.ndarray
    hit_msg: np.ndarray
    hit_class: np.ndarray
    hit_loc: np.ndarray
    hit_valid: np.ndarray
    hit_conf: np.ndarray
    hit_start: np.ndarray
    hit_end: np.ndarray
    val_off: np.ndarray
    val_buf: np.ndarray
    loc_names: list = field(default_factory=list)
    # per hit: the message's ordinal inside its interchange (EDIFACT UNH / X12 ST count, 1-based;
    # 0 for envelope values and for JSON / XML documents); None = all 0
    hit_sub: np.ndarray | None = None
    # per selected message: integrity flags (bits of :data:`FLAGS`; JSON / XML: their uint8
    # kernel bits, the same positions); None = none
    flags: np.ndarray | None = None
    # per selected message (EDI): uint64 hash of the first interchange's sender and control
    # reference (0 = none), for the Classifier's duplicate check; None = none
    ikey: np.ndarray | None = None
    # per hit: index into ``layer_names`` of the layer path that led to the value (0 / None: the
    # message itself); set by the layers pre-pass and the embedded-EDIFACT merge
    hit_layer: np.ndarray | None = None
    layer_names: list | None = None

    @property
    def n_hits(self) -> int:
        return int(self.hit_msg.shape[0])
