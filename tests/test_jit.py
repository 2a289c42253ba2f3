"""kernels/_jit.py: one compile per argument type, read-only parameters, the scanners' inputs."""
from __future__ import annotations

import numpy as np
import pytest
from numba.core.errors import TypingError

from flowaudit.decode import json as J
from flowaudit.decode import xml as X
from flowaudit.kernels import jsonscan
from flowaudit.kernels._jit import kernel


@kernel(cache=False, readonly=("src",))
def _sum_ro(src, s, e):
    t = 0
    for i in range(s, e):
        t += src[i]
    return t


@kernel(cache=False)
def _caller(a, b):
    # a: read-only or writable, b: writable; both reach _sum_ro's read-only ``src``
    return _sum_ro(a, 0, a.shape[0]) + _sum_ro(b, 0, b.shape[0]) + _sum_ro(b, 1, 2)


@kernel(cache=False, readonly=("out",))
def _writes_ro(out):
    out[0] = 1
    return 0


@kernel(cache=False)
def _write_caller(a):
    return _writes_ro(a)


def _ro(a):
    a = a.view()
    a.flags.writeable = False
    return a


def test_readonly_parameter_compiles_once_for_writable_and_readonly_arrays():
    w = np.arange(10, dtype=np.uint8)
    assert _caller(w, w) == 45 + 45 + 1
    assert _caller(_ro(w), w) == 45 + 45 + 1
    assert len(_caller.signatures) == 2          # the Python-level entry: one per argument type
    assert len(_sum_ro.signatures) == 1          # the callee: one, read-only
    (sig,) = _sum_ro.signatures
    assert not sig[0].mutable


def test_a_kernel_cannot_write_to_a_readonly_parameter():
    with pytest.raises(TypingError):
        _write_caller(np.zeros(4, np.int64))


def _batch(vals, writable):
    joined = b"".join(vals)
    buf = np.frombuffer(joined, np.uint8)
    if writable:
        buf = buf.copy()
    off = np.zeros(len(vals) + 1, np.int64)
    np.cumsum([len(v) for v in vals], out=off[1:])
    return buf, off, np.arange(len(vals), dtype=np.int64)


def test_scanners_compile_once_for_readonly_and_writable_batches():
    """A batch from np.frombuffer (read-only) and a copied one (writable, e.g. a decoded layer)
    reach the scanners as the same numba types, with identical results."""
    js = [b'{"equipmentReference":"MSCU1234565","note":"TEL +31 10 2521010 MSCU1234565"}']
    xs = [b"<a><TransportEquipment><ID>MSCU1234565</ID></TransportEquipment></a>"]
    for mod, run, vals in ((J, jsonscan.json_scan_run, js), (X, None, xs)):
        a = mod.classify(*_batch(vals, False))
        b = mod.classify(*_batch(vals, True))
        assert a.hit_class.tolist() == b.hit_class.tolist() and len(a.hit_class) > 0
        assert bytes(a.val_buf) == bytes(b.val_buf)
        if run is not None:
            assert len(run.signatures) == 1
    from flowaudit.kernels import xmlscan
    assert len(xmlscan.xml_scan_run.signatures) == 1
    # a scanner loaded from the cache never compiles its callees: 0 then, and never 2
    assert len(jsonscan.recognise.signatures) <= 1


def test_the_cache_key_holds_every_kernel_source(tmp_path):
    """numba keys a cached kernel by its own source file only; a kernel compiled with a callee from
    another module must be recompiled when that module changes: the key holds all of them."""
    import shutil
    from pathlib import Path

    from flowaudit.kernels import _jit, dedupe

    assert isinstance(dedupe.unique_slices._cache, _jit.KernelCache)
    key = dedupe.unique_slices._cache._index_key((), dedupe.unique_slices.targetctx.codegen())
    assert key[-1] == _jit.SOURCES_DIGEST == _jit.sources_digest()
    src = Path(_jit.__file__).parent
    for f in src.glob("*.py"):
        shutil.copy(f, tmp_path / f.name)
    assert _jit.sources_digest(tmp_path) == _jit.SOURCES_DIGEST
    (tmp_path / "values.py").write_text((src / "values.py").read_text() + "\n# changed\n")
    assert _jit.sources_digest(tmp_path) != _jit.SOURCES_DIGEST
