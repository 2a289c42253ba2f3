"""Input files that log rotation may have compressed: Zeek's ``dns.*.log.gz``, tcpdump's
``-z gzip`` captures, gzipped goflow2 JSON lines."""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

# what reading a damaged gzip stream raises (a truncated file: EOFError; a bad header or CRC:
# gzip.BadGzipFile, an OSError; a corrupt deflate block: zlib.error)
GZIP_ERRORS = (EOFError, OSError, zlib.error)
GZIP_SUFFIX = ".gz"


def open_input(path: str | Path):
    """``path`` opened for reading bytes: decompressed when it is gzip (by its magic bytes, not its
    name), else as it is."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")
