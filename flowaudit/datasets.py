"""Arrow schemas of the output datasets (versioned; schemas/datasets.json is generated from here).

Every row carries provenance (``source`` = Kafka topic or input file, ``partition``, ``offset`` =
Kafka offset or message index in the file) and the versions that produced it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = "3"

_dict = pa.dictionary(pa.int32(), pa.string())

_PROVENANCE = [
    pa.field("source", _dict, nullable=False),         # Kafka topic or input file
    pa.field("partition", pa.int32(), nullable=False),  # Kafka partition (-1 for files)
    pa.field("offset", pa.int64(), nullable=False),     # Kafka offset or message index in the file
    pa.field("ts_ms", pa.int64(), nullable=True),       # Kafka record timestamp (ms since epoch); null if absent
]

# The Kafka key, treated like a sensitive value (keys carry B/L, booking, EORI, customs ids):
# masked like an identifier plus the HMAC-SHA256 hits use, so a key joins with ``hits.value_hmac``;
# null when the record has no key.  ``key_raw`` is null unless sink.raw_values / --raw.
_KEY = [
    pa.field("key_masked", _dict, nullable=True),
    pa.field("key_hmac", pa.dictionary(pa.int32(), pa.binary(32)), nullable=True),
    pa.field("key_raw", pa.binary(), nullable=True),
]

MESSAGES = pa.schema(_PROVENANCE + _KEY + [
    pa.field("format", _dict, nullable=False),
    pa.field("msg_type", _dict, nullable=False),
    pa.field("bytes", pa.int32(), nullable=False),
    pa.field("n_segments", pa.int32(), nullable=False),
    pa.field("n_hits", pa.int32(), nullable=False),
    pa.field("flags", pa.list_(pa.string()), nullable=False),  # integrity flags, flowaudit.decode.FLAGS ([] clean)
    pa.field("catalog_version", _dict, nullable=False),
    pa.field("schema_version", _dict, nullable=False),
], metadata={"flowaudit.dataset": "messages", "flowaudit.schema_version": SCHEMA_VERSION})

HITS = pa.schema(_PROVENANCE + [
    pa.field("msg_index", pa.int32(), nullable=False),    # message inside the interchange (UNH / ST
                                                          # ordinal, 1-based); 0: envelope, JSON, XML
    pa.field("format", _dict, nullable=False),
    pa.field("msg_type", _dict, nullable=False),
    pa.field("data_class", _dict, nullable=False),
    pa.field("sensitivity", _dict, nullable=False),
    pa.field("location", _dict, nullable=False),
    # one dictionary entry per distinct value of a batch (vessels, parties and ports repeat)
    pa.field("value_masked", _dict, nullable=False),
    pa.field("value_hmac", pa.dictionary(pa.int32(), pa.binary(32)), nullable=False),  # HMAC-SHA256, operator key
    pa.field("value_raw", _dict, nullable=True),            # null unless sink.raw_values / --raw
    pa.field("check_digit_valid", pa.bool_(), nullable=True),  # null: the class has no check digit
    pa.field("confidence", pa.uint8(), nullable=False),     # percent
    pa.field("salvaged", pa.bool_(), nullable=False),       # found by the salvage scan of a quarantined message
    # value position inside the message; for a layered hit (``layer`` not ""), inside the innermost
    # layer's bytes (the decoded base64 / decompressed / MIME part / JSON string value), not the
    # bytes as received
    pa.field("byte_start", pa.int64(), nullable=False),
    pa.field("byte_end", pa.int64(), nullable=False),
    pa.field("catalog_version", _dict, nullable=False),
    pa.field("schema_version", _dict, nullable=False),
    # the layers the value was found inside (flowaudit/decode/layers.py), outermost first, ending
    # with the inner format: "json-string>edifact", "base64>gzip>x12", "mime>base64>edifact";
    # "" for a value in the message itself
    pa.field("layer", _dict, nullable=False),
], metadata={"flowaudit.dataset": "hits", "flowaudit.schema_version": SCHEMA_VERSION})

QUARANTINE = pa.schema(_PROVENANCE + _KEY + [
    pa.field("format", _dict, nullable=False),     # declared (topic) or detected format
    pa.field("reason", _dict, nullable=False),     # flowaudit.decode.REASONS
    pa.field("bytes", pa.int32(), nullable=False),  # length of the value as received
    # the record kept for re-processing (flowaudit quarantine show / reinject), by raw_encoding:
    # "aes-256-gcm/v1" (default): 12-byte nonce || AES-256-GCM ciphertext || 16-byte tag of the
    #   key and value (flowaudit.quarantine.pack), under a key derived from the operator key, with
    #   the row's source, partition and offset as associated data;
    # "plain" (sink.raw_values / --raw): the value exactly as received (null for tombstones)
    pa.field("raw", pa.binary(), nullable=True),
    pa.field("raw_encoding", _dict, nullable=False),
    pa.field("schema_version", _dict, nullable=False),
], metadata={"flowaudit.dataset": "quarantine", "flowaudit.schema_version": SCHEMA_VERSION})

# NetFlow v5/v9/IPFIX: one row per decoded flow record.  Addresses are text (IPv4 dotted,
# IPv6 RFC 5952); counters are as exported (raw), with the sampling interval beside them.
FLOWS = pa.schema(_PROVENANCE + [
    pa.field("exporter", _dict, nullable=False),          # exporter address (from the Kafka key / UDP source)
    pa.field("version", pa.uint8(), nullable=False),      # 5, 9 or 10 (IPFIX); 0: goflow2 sFlow, Zeek conn, Suricata
    pa.field("obs_domain", pa.uint32(), nullable=False),  # v9 source id / IPFIX observation domain (v5: engine)
    pa.field("template_id", pa.uint16(), nullable=False), # 0 for v5
    pa.field("src_addr", pa.string(), nullable=False),
    pa.field("dst_addr", pa.string(), nullable=False),
    pa.field("src_port", pa.uint16(), nullable=False),
    pa.field("dst_port", pa.uint16(), nullable=False),
    pa.field("protocol", pa.uint8(), nullable=False),
    pa.field("tcp_flags", pa.uint8(), nullable=False),
    pa.field("bytes", pa.uint64(), nullable=False),
    pa.field("packets", pa.uint64(), nullable=False),
    pa.field("rev_bytes", pa.uint64(), nullable=True),    # biflow (RFC 5103) reverse direction
    pa.field("rev_packets", pa.uint64(), nullable=True),
    pa.field("first_ns", pa.int64(), nullable=False),     # flow start, ns since epoch (UTC)
    pa.field("last_ns", pa.int64(), nullable=False),
    pa.field("sampling_interval", pa.uint32(), nullable=False),  # 1 = unsampled
    pa.field("ip_version", pa.uint8(), nullable=False),   # 4 or 6
    pa.field("time_flags", pa.uint8(), nullable=False),   # bit 1: first_ns, bit 2: last_ns from the record
                                                          # (a clear bit: the export time stands in)
    pa.field("schema_version", _dict, nullable=False),
], metadata={"flowaudit.dataset": "flows", "flowaudit.schema_version": SCHEMA_VERSION})

# Shaped like Zeek's intel.log: what was seen, of which indicator type, where, and why it matters.
TRANSFERS = pa.schema(_PROVENANCE + [
    pa.field("time_ns", pa.int64(), nullable=True),        # flow start or message time (null: unknown)
    pa.field("exporter", _dict, nullable=True),
    pa.field("src_addr", pa.string(), nullable=True),
    pa.field("src_port", pa.uint16(), nullable=True),
    pa.field("dst_addr", pa.string(), nullable=True),
    pa.field("dst_port", pa.uint16(), nullable=True),
    pa.field("protocol", pa.uint8(), nullable=True),
    pa.field("bytes", pa.uint64(), nullable=True),         # raw, as exported
    pa.field("packets", pa.uint64(), nullable=True),
    pa.field("sampling_interval", pa.uint32(), nullable=True),
    pa.field("bytes_scaled", pa.uint64(), nullable=True),  # bytes x sampling interval (a total claim)
    pa.field("platform", _dict, nullable=False),           # LOGINK, NEAL-NET, Nuctech, TeamViewer, ... or policy
    pa.field("indicator", pa.string(), nullable=False),    # the matched indicator (host, CIDR, marker, port rule)
    pa.field("indicator_type", _dict, nullable=False),     # ip, cidr, domain, url_path, payload_marker, edi_party, port
    pa.field("seen_where", _dict, nullable=False),         # NETFLOW_DST, NETFLOW_SRC, DNS_ANSWER, TLS_SNI, HTTP_HOST, EDI_UNB, X12_ISA, X12_GS, XML_ELEMENT, JSON_PATH, PAYLOAD
    pa.field("src_zone", _dict, nullable=True),
    pa.field("dst_zone", _dict, nullable=True),
    pa.field("rule", _dict, nullable=False),               # watchlist, a NAME_RULES value, or the policy rule that fired
    pa.field("service", _dict, nullable=True),             # rdp, ssh, telnet, vnc, teamviewer, modbus, s7comm, ...
                                                           # from dst port + protocol (zone policy services); null: none
    pa.field("severity", _dict, nullable=False),
    pa.field("indicator_source", pa.string(), nullable=False),  # where the indicator comes from (citation)
    pa.field("watchlist_version", _dict, nullable=False),
    pa.field("policy_version", _dict, nullable=False),
    pa.field("schema_version", _dict, nullable=False),
], metadata={"flowaudit.dataset": "transfers", "flowaudit.schema_version": SCHEMA_VERSION})

# the transfers' rules of a name seen for an address (a DNS answer; a TLS server name or HTTP Host
# on a connection): evidence that names the flows' addresses, no finding by itself
NAME_RULES = ("dns_lookup", "name_seen")

# One row per exposure: platform or policy rule x source entity x event-time window
# (flowaudit/detect/findings.py; shaped like cloud sensitive-data discovery findings).
_CLASS_COUNT = pa.struct([
    pa.field("data_class", pa.string(), nullable=False),
    pa.field("sensitivity", pa.string(), nullable=False),
    pa.field("occurrences", pa.int64(), nullable=False),      # hits of the class
    pa.field("distinct_values", pa.int64(), nullable=False),  # distinct value_hmac of the class
])
_SAMPLE = pa.struct([
    pa.field("source", pa.string(), nullable=False),
    pa.field("partition", pa.int32(), nullable=False),
    pa.field("offset", pa.int64(), nullable=False),
    pa.field("msg_index", pa.int32(), nullable=False),
    pa.field("data_class", pa.string(), nullable=False),
    pa.field("location", pa.string(), nullable=False),
    pa.field("value_masked", pa.string(), nullable=False),    # never raw
    pa.field("value_hmac", pa.binary(32), nullable=False),
])
FINDINGS = pa.schema([
    pa.field("finding_id", pa.string(), nullable=False),      # hash of (platform, rule, entity, window_start_ns)
    pa.field("status", _dict, nullable=False),                # new, ongoing, closed
    pa.field("window_start_ns", pa.int64(), nullable=False),  # event-time window [start, end); 0, 0: unknown time
    pa.field("window_end_ns", pa.int64(), nullable=False),
    pa.field("first_seen_ns", pa.int64(), nullable=True),     # earliest / latest transfer of the window
    pa.field("last_seen_ns", pa.int64(), nullable=True),
    pa.field("correlation", _dict, nullable=False),           # message_borne, flow_borne, zone_policy
    pa.field("exposure", _dict, nullable=False),              # observed, inferred, none
    pa.field("platform", _dict, nullable=False),              # as in transfers (policy: a zone-policy rule)
    pa.field("rule", _dict, nullable=False),
    pa.field("indicators", pa.list_(pa.string()), nullable=False),   # distinct matched indicators (<= 20)
    pa.field("seen_where", pa.list_(pa.string()), nullable=False),
    pa.field("entity", pa.string(), nullable=False),          # host address, app:NAME or topic:NAME
    pa.field("src_host", pa.string(), nullable=True),         # the port-side host (the asset for OT rules)
    pa.field("src_zone", _dict, nullable=True),
    pa.field("application", _dict, nullable=True),           # inventory application(s), comma separated
    pa.field("topics", pa.list_(pa.string()), nullable=False),       # topics whose data is exposed
    pa.field("destinations", pa.list_(pa.string()), nullable=False),  # addresses reached (<= 20)
    pa.field("bytes", pa.uint64(), nullable=True),            # raw flow bytes, or message bytes
    pa.field("bytes_scaled", pa.uint64(), nullable=True),     # x sampling interval
    pa.field("flows", pa.int64(), nullable=False),
    pa.field("messages", pa.int64(), nullable=False),         # messages carrying the exposed data
    pa.field("data_classes", pa.list_(_CLASS_COUNT), nullable=False),  # most sensitive first
    pa.field("occurrences", pa.int64(), nullable=False),
    pa.field("distinct_values", pa.int64(), nullable=False),
    pa.field("samples", pa.list_(_SAMPLE), nullable=False),   # up to 15 occurrences, most sensitive first
    pa.field("additional_occurrences", pa.bool_(), nullable=False),
    pa.field("severity", _dict, nullable=False),
    pa.field("score", pa.float64(), nullable=False),
    pa.field("severity_reasons", pa.list_(pa.string()), nullable=False),
    pa.field("basis", pa.list_(pa.string()), nullable=False),  # ids into schemas/severity.toml [basis]
    pa.field("catalog_version", _dict, nullable=True),
    pa.field("watchlist_version", _dict, nullable=True),
    pa.field("policy_version", _dict, nullable=True),
    pa.field("severity_version", _dict, nullable=False),
    pa.field("schema_version", _dict, nullable=False),
], metadata={"flowaudit.dataset": "findings", "flowaudit.schema_version": SCHEMA_VERSION})

SCHEMAS = {"messages": MESSAGES, "hits": HITS, "quarantine": QUARANTINE, "flows": FLOWS, "transfers": TRANSFERS,
           "findings": FINDINGS}


def is_root(path) -> bool:
    """Whether ``path`` is a flowaudit output root: a folder holding ``dataset=...`` folders."""
    path = Path(path)
    return path.is_dir() and any(p.is_dir() and p.name.startswith("dataset=") for p in path.iterdir())


def dictionary_array(indices, values: pa.Array) -> pa.DictionaryArray:
    """``values[indices]`` dictionary-encoded with each value once in the dictionary (``indices``:
    numpy or Arrow, nulls kept).  Masks collide (two values can share one) and a value found as
    two classes has one HMAC: a dictionary with repeats makes Parquet's writer produce different
    bytes for the same rows from run to run, and larger files."""
    if not isinstance(indices, pa.Array):
        indices = pa.array(np.asarray(indices, np.int32), pa.int32())
    enc = values.dictionary_encode()
    if len(enc.dictionary) != len(values):
        indices = enc.indices.take(indices)
        values = enc.dictionary
    return pa.DictionaryArray.from_arrays(indices, values)


def statistics_columns(schema: pa.Schema) -> list[str]:
    """The columns that get row-group min/max statistics: the provenance columns (a file holds one
    topic or input, and offsets and record times rise through it: a findings reader leaves a row
    group unread by them, flowaudit.detect.chunked) and the other plain numbers.  Labels, masked
    and keyed values and raw bytes get none: a row group holds most labels and a random spread of
    hashes, so their statistics never skip anything, and computing them was a quarter of a hits
    file's write time."""
    prov = {f.name for f in _PROVENANCE}
    return [f.name for f in schema
            if f.name in prov or pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
            or pa.types.is_timestamp(f.type)]


def delta_columns(schema: pa.Schema) -> list[str]:
    """The signed integer columns at the top level: offsets, record times, byte positions, sizes
    and counts.  They rise through a file or stay close, so Parquet's DELTA_BINARY_PACKED stores
    them smaller than a dictionary and writes them faster (no hash per value): 0.92x the write
    time of a hits file, 0.7x of a messages file.  Codes (ports, protocols, flags, confidence)
    and every other column keep their dictionaries."""
    return [f.name for f in schema if pa.types.is_signed_integer(f.type)]


_LEAVES: dict[pa.Schema, list[str]] = {}


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """Parquet's column paths of ``schema`` (``flags.list.element`` for a list), as the writer
    names them (cached per schema, its metadata left out)."""
    schema = schema.remove_metadata()
    leaves = _LEAVES.get(schema)
    if leaves is None:
        import io

        import pyarrow.parquet as pq
        b = io.BytesIO()
        pq.write_table(schema.empty_table(), b)
        ps = pq.ParquetFile(io.BytesIO(b.getvalue())).schema
        leaves = _LEAVES[schema] = [ps.column(i).path for i in range(len(ps))]
    return leaves


def parquet_options(schema: pa.Schema, compression: str = "zstd", row_group_size: int = 65536) -> dict:
    """``pyarrow.parquet.write_table`` keyword arguments for an output file: one place for every
    writer (the stream's sink, the batch audit, the benchmarks).  ``write_batch_size`` 8192 (Arrow's
    default is 1024): the writer encodes a column 8,192 values per step, not 1,024; the same bytes,
    and a hits file written 3 % faster (445k rows: 166 -> 161 ms).  Pages may pass their 1 MB by at
    most one step's values.  Every page carries its CRC32 (``write_page_checksum``; no measurable
    cost: 121.3 against 120.8 ms of CPU for 319k hit rows), so a page damaged on disk is found by
    every reader (:data:`CHECKED`) instead of read as other values: an uncompressed page
    (``sink.compression = "none"``) reads back wrong values in silence without it."""
    opts = dict(compression=None if compression == "none" else compression, row_group_size=row_group_size,
                write_statistics=statistics_columns(schema), write_batch_size=8192, write_page_checksum=True)
    delta = delta_columns(schema)
    if delta:
        opts.update(use_dictionary=[c for c in _leaf_paths(schema) if c not in delta],
                    column_encoding=dict.fromkeys(delta, "DELTA_BINARY_PACKED"))
    return opts


# Reading: every page's CRC32 is checked where the writer stored one (flowaudit's writers always
# do, parquet_options), so a page damaged on disk is an error the readers name the file for
# (sinks.parquet.unreadable), not other values: an uncompressed page (sink.compression = "none")
# read back wrong values in silence, and a zstd page whose damage still decompressed did too.
# About 0.15 s more for `flowaudit findings` over a 1M-message root (1.55 -> 1.70 s).
CHECKED = {"page_checksum_verification": True}


def checked_parquet():
    """``pyarrow.dataset``'s Parquet format with :data:`CHECKED` pages (``ds.dataset(...,
    format=checked_parquet())``)."""
    import pyarrow.dataset as ds

    return ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(**CHECKED))


def describe() -> dict:
    """A JSON-able description of every dataset (written to schemas/datasets.json)."""
    out = {"schema_version": SCHEMA_VERSION, "datasets": {}}
    for name, schema in SCHEMAS.items():
        out["datasets"][name] = [
            {"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema
        ]
    return out


if __name__ == "__main__":  # python -m flowaudit.datasets > schemas/datasets.json
    print(json.dumps(describe(), indent=2))
