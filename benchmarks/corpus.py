"""Deterministic benchmark corpora, cached by seed and size.

Two kinds of data set per format (edifact, x12, json, xml):

* **synth**: messages from :func:`flowaudit.synth.generate` (one format at a time, so every
  format gets the same byte budget), generated until ``size_mb`` (10^6 bytes) is reached.
  Deterministic for a seed; cached under ``<cache>/synth-s<seed>-<size>mb-<generator hash>/`` so a
  second run (or another size) does not pay the generator again.  The generator hash is the
  SHA-256 of ``flowaudit/synth.py``: a changed generator makes a new cache entry.
* **real**: the public sample files in ``../shared/corpus/messages/<format>/`` (one file = one
  message value), repeated whole until ``size_mb`` is reached.  Never copied into the cache.

A :class:`Dataset` is the batch layout the kernels take: one uint8 buffer, int64 offsets
(message ``i`` is ``buf[offsets[i]:offsets[i+1]]``).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import flowaudit
from flowaudit import synth

FORMATS = ("edifact", "x12", "json", "xml")
DEFAULT_CACHE = Path(".bench-cache")
_REAL_DIRS = {"edifact": "edifact", "x12": "x12", "json": "json", "xml": "xml"}


@dataclass
class Dataset:
    name: str               # "edifact", ...
    source: str             # "synth" | "real"
    buf: np.ndarray         # uint8
    offsets: np.ndarray     # int64, n+1
    files: int = 0          # real: distinct files repeated
    sha256: str = ""

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def nbytes(self) -> int:
        return int(self.offsets[-1])

    @property
    def sel(self) -> np.ndarray:
        return np.arange(len(self), dtype=np.int64)

    def value(self, i: int) -> bytes:
        return self.buf[self.offsets[i]:self.offsets[i + 1]].tobytes()

    def values(self, n: int | None = None) -> list[bytes]:
        b = self.buf.tobytes()
        off = self.offsets.tolist()
        m = len(self) if n is None else min(n, len(self))
        return [b[off[i]:off[i + 1]] for i in range(m)]

    def head(self, n: int) -> "Dataset":
        """The first ``n`` messages (a view, no copy)."""
        n = min(n, len(self))
        return Dataset(self.name, self.source, self.buf[: self.offsets[n]], self.offsets[: n + 1],
                       self.files, "")

    def prefix_bytes(self, nbytes: int) -> "Dataset":
        """Whole messages from the start, at least one, until ``nbytes`` is reached."""
        n = int(np.searchsorted(self.offsets, nbytes, side="left"))
        return self.head(max(1, n))


def from_values(name: str, source: str, values: list[bytes], files: int = 0) -> Dataset:
    lens = np.fromiter((len(v) for v in values), np.int64, count=len(values))
    off = np.zeros(len(values) + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    joined = b"".join(values)
    buf = np.frombuffer(joined, np.uint8) if joined else np.zeros(0, np.uint8)
    return Dataset(name, source, buf, off, files, hashlib.sha256(joined).hexdigest())


def generator_hash() -> str:
    return hashlib.sha256(Path(synth.__file__).read_bytes()).hexdigest()[:12]


def _size_tag(size_mb: float) -> str:
    return f"{size_mb:g}".replace(".", "p")


def synth_dataset(fmt: str, seed: int, size_mb: float, cache_dir: Path | str | None = DEFAULT_CACHE) -> Dataset:
    """``size_mb`` of synthetic ``fmt`` messages, from the cache when present."""
    target = int(size_mb * 1e6)
    d = None
    if cache_dir is not None:
        d = Path(cache_dir) / f"synth-s{seed}-{_size_tag(size_mb)}mb-{generator_hash()}"
        b, o, meta = d / f"{fmt}.bin", d / f"{fmt}.offsets.npy", d / f"{fmt}.json"
        if b.exists() and o.exists() and meta.exists():
            buf = np.fromfile(b, dtype=np.uint8)
            off = np.load(o)
            m = json.loads(meta.read_text())
            if int(off[-1]) == buf.shape[0] == m["bytes"]:
                return Dataset(fmt, "synth", buf, off, 0, m["sha256"])
    values, total = [], 0
    gen = synth.generate(seed, 1 << 40, formats=(fmt,))
    while total < target:
        v = next(gen).value
        values.append(v)
        total += len(v)
    ds = from_values(fmt, "synth", values)
    if d is not None:
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{fmt}.{os.getpid()}"
        ds.buf.tofile(f"{tmp}.bin")
        np.save(f"{tmp}.npy", ds.offsets)
        os.replace(f"{tmp}.bin", d / f"{fmt}.bin")
        os.replace(f"{tmp}.npy", d / f"{fmt}.offsets.npy")
        (d / f"{fmt}.json").write_text(json.dumps({"format": fmt, "seed": seed, "size_mb": size_mb,
                                                   "messages": len(ds), "bytes": ds.nbytes,
                                                   "sha256": ds.sha256, "generator": generator_hash()}))
    return ds


def default_real_root() -> Path:
    """``<repo>/../shared/corpus`` (the checkout's sibling ``shared/`` folder)."""
    return Path(flowaudit.__file__).resolve().parents[2] / "shared" / "corpus"


def real_dataset(fmt: str, size_mb: float, root: Path | str | None = None) -> Dataset | None:
    """The real sample files of ``fmt`` repeated whole up to ``size_mb``; None when absent."""
    root = Path(root) if root is not None else default_real_root()
    d = root / "messages" / _REAL_DIRS[fmt]
    if not d.is_dir():
        d = root / _REAL_DIRS[fmt]          # --corpus may point at messages/ itself
    if not d.is_dir():
        return None
    files = sorted(p for p in d.iterdir() if p.is_file() and not p.name.lower().startswith("readme"))
    base = [p.read_bytes() for p in files]
    base = [v for v in base if v]
    if not base:
        return None
    once = sum(map(len, base))
    reps = max(1, int(np.ceil(size_mb * 1e6 / once)))
    return from_values(fmt, "real", base * reps, files=len(base))


def text_buffer(datasets: dict[str, Dataset]) -> np.ndarray:
    """All synthetic messages of all formats end to end: the free-text buffer for the value
    recognisers (a container number may sit anywhere)."""
    parts = [datasets[f].buf for f in FORMATS if f in datasets]
    return np.ascontiguousarray(np.concatenate(parts)) if parts else np.zeros(0, np.uint8)
