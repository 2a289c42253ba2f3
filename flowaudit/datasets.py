"""Arrow schemas of the output datasets (versioned; schemas/datasets.json is generated from here).

Every row carries provenance (``source`` = Kafka topic or input file, ``partition``, ``offset`` =
Kafka offset or message index in the file) and the versions that produced it.
"""
from __future__ import annotations

import json

import pyarrow as pa

SCHEMA_VERSION = "1"

_dict = pa.dictionary(pa.int32(), pa.string())

_PROVENANCE = [
    pa.field("source", _dict, nullable=False),         # Kafka topic or input file
    pa.field("partition", pa.int32(), nullable=False),  # Kafka partition (-1 for files)
    pa.field("offset", pa.int64(), nullable=False),     # Kafka offset or message index in the file
    pa.field("ts_ms", pa.int64(), nullable=True),       # Kafka record timestamp (ms since epoch); null if absent
]

MESSAGES = pa.schema(_PROVENANCE + [
    pa.field("key", pa.binary(), nullable=True),
    pa.field("format", _dict, nullable=False),
    pa.field("msg_type", _dict, nullable=False),
    pa.field("bytes", pa.int32(), nullable=False),
    pa.field("n_segments", pa.int32(), nullable=False),
    pa.field("n_hits", pa.int32(), nullable=False),
    pa.field("catalog_version", _dict, nullable=False),
    pa.field("schema_version", _dict, nullable=False),
], metadata={"flowaudit.dataset": "messages", "flowaudit.schema_version": SCHEMA_VERSION})

HITS = pa.schema(_PROVENANCE + [
    pa.field("format", _dict, nullable=False),
    pa.field("msg_type", _dict, nullable=False),
    pa.field("data_class", _dict, nullable=False),
    pa.field("sensitivity", _dict, nullable=False),
    pa.field("location", _dict, nullable=False),
    pa.field("value_masked", pa.string(), nullable=False),
    pa.field("value_hmac", pa.binary(32), nullable=False),  # HMAC-SHA256 under the operator key
    pa.field("value_raw", pa.string(), nullable=True),      # null unless sink.raw_values / --raw
    pa.field("check_digit_valid", pa.bool_(), nullable=True),  # null: the class has no check digit
    pa.field("confidence", pa.uint8(), nullable=False),     # percent
    pa.field("byte_start", pa.int64(), nullable=False),     # value position inside the message
    pa.field("byte_end", pa.int64(), nullable=False),
    pa.field("catalog_version", _dict, nullable=False),
    pa.field("schema_version", _dict, nullable=False),
], metadata={"flowaudit.dataset": "hits", "flowaudit.schema_version": SCHEMA_VERSION})

QUARANTINE = pa.schema(_PROVENANCE + [
    pa.field("key", pa.binary(), nullable=True),
    pa.field("format", _dict, nullable=False),     # declared (topic) or detected format
    pa.field("reason", _dict, nullable=False),     # flowaudit.decode.REASONS
    pa.field("bytes", pa.int32(), nullable=False),
    pa.field("raw", pa.binary(), nullable=True),   # the message value exactly as received (null for tombstones)
    pa.field("schema_version", _dict, nullable=False),
], metadata={"flowaudit.dataset": "quarantine", "flowaudit.schema_version": SCHEMA_VERSION})

SCHEMAS = {"messages": MESSAGES, "hits": HITS, "quarantine": QUARANTINE}


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
