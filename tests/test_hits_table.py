"""The hits table built from the kernels' arrays equals the one built value by value in Python.

``_reference_hits_table`` is ``Classifier._hits_table`` as it was before the values were masked
and keyed in kernels (flowaudit/protect.py's Python rules and ``hmac.digest`` per distinct value,
``pa.array`` from Python lists).  The only changes to it are the fix of ``hit_counts``, which
paired each hit's format after the reorder with its class before it, and dictionaries with each
value once (``flowaudit.datasets.dictionary_array``; masks collide).  Tables are compared with
``Table.equals`` (same dictionaries, same indices), on the real corpus and synthetic traffic.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import types
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from flowaudit import synth
from flowaudit.datasets import HITS, dictionary_array
from flowaudit.decode import FMT_EDIFACT, FMT_JSON, FMT_X12, FMT_XML, FORMAT_NAMES
from flowaudit.detect.egress import EgressDetector
from flowaudit.kernels.dedupe import unique_slices
from flowaudit.pipeline import _FORMAT_LIST, _SALVAGE, SCHEMA_VERSION, Batch, Classifier, _const_dict, _dict_array
from flowaudit.protect import Protector

KEY = b"hits-table-test-key-0123456789"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "messages"
FMT = {"edifact": FMT_EDIFACT, "x12": FMT_X12, "xml": FMT_XML, "json": FMT_JSON}


def _reference_hits_table(self, batch, parts, status, fmt, msg_type, type_names, layer_names=("",)):
    if not parts:
        return HITS.empty_table(), np.zeros(0, np.int64), {}
    msg, cls, loc, valid, conf, start, end, keeps, subs, lays, salv = ([] for _ in range(11))
    layer_names = list(layer_names)
    vbufs, voffs = [], []
    loc_names: list[str] = []
    vbase = nbase = 0
    for _f, r in parts:
        keep = np.arange(r.n_hits) if _f == _SALVAGE else np.flatnonzero(status[r.hit_msg] == 0)
        salv.append(np.full(keep.size, _f == _SALVAGE))
        msg.append(r.hit_msg[keep])
        cls.append(r.hit_class[keep].astype(np.int32))
        loc.append(r.hit_loc[keep].astype(np.int32) + len(loc_names))
        loc_names.extend(r.loc_names)
        valid.append(r.hit_valid[keep])
        conf.append(r.hit_conf[keep])
        start.append(r.hit_start[keep])
        end.append(r.hit_end[keep])
        subs.append(r.hit_sub[keep] if r.hit_sub is not None else np.zeros(keep.size, np.int32))
        names = r.layer_names or list(layer_names)     # the hit's layer path, as a string
        lays.extend(names[int(x)] for x in r.hit_layer[keep]) if r.hit_layer is not None else lays.extend([""] * keep.size)
        keeps.append(keep + nbase)
        nbase += r.val_off.shape[0] - 1
        nv = int(r.val_off[-1])
        vbufs.append(r.val_buf[:nv])
        voffs.append(r.val_off[:-1] + vbase)
        vbase += nv
    h_idx = np.concatenate(msg).astype(np.int64)
    cls_a = np.concatenate(cls)
    valid_a = np.concatenate(valid)
    base = batch.offsets[h_idx]
    vbuf = np.concatenate(vbufs)
    voff = np.append(np.concatenate(voffs), vbase).astype(np.int64)
    keep_all = np.concatenate(keeps).astype(np.int64)
    uid, first = unique_slices(vbuf, voff, keep_all)
    rows = keep_all[first]
    vb, vo = vbuf.tobytes(), voff.tolist()
    distinct = [vb[vo[i]:vo[i + 1]] for i in rows.tolist()]
    if self.egress is not None:
        loc_all = np.concatenate(loc)
        for k in np.flatnonzero(cls_a == self._recipient_code):
            where = loc_names[loc_all[k]]
            where = ("EDI_UNB" if where.startswith("UNB") else "X12_ISA" if where.startswith("ISA")
                     else "X12_GS" if where.startswith("GS") else "JSON_PATH" if where.startswith("$")
                     else "XML_ELEMENT")
            self._recipients.append((int(h_idx[k]), distinct[uid[k]].decode("latin-1"), where))
    cls_of = np.zeros(len(distinct), np.int64)
    cls_of[uid] = cls_a
    if np.array_equal(cls_of[uid], cls_a):
        pid, p_val, p_cls = uid, distinct, cls_of
    else:
        _pairs, first_pair, pid = np.unique(uid.astype(np.int64) * len(self._class_names) + cls_a,
                                           return_index=True, return_inverse=True)
        p_val = [distinct[u] for u in uid[first_pair].tolist()]
        p_cls = cls_a[first_pair]
    masked_u, keyed_u = self.protector.protect_many(p_val, [self._class_names[c] for c in p_cls.tolist()])
    pids = pa.array(np.asarray(pid).astype(np.int32), pa.int32())
    masked = dictionary_array(pids, pa.array(masked_u, pa.string()))
    keyed = dictionary_array(pids, pa.array(keyed_u, pa.binary(32)))
    ids = pa.array(uid.astype(np.int32), pa.int32())
    if self.protector.raw:
        raw = dictionary_array(ids, pa.array([v.decode("utf-8", errors="replace") for v in distinct], pa.string()))
    else:
        raw = pa.nulls(uid.size, HITS.field("value_raw").type)
    m = h_idx.size
    cols = self._provenance(batch, h_idx) + [
        pa.array(np.concatenate(subs).astype(np.int32), pa.int32()),
        _dict_array(fmt[h_idx], _FORMAT_LIST),
        _dict_array(msg_type[h_idx], type_names),
        _dict_array(cls_a, self._class_names),
        _dict_array(self._class_sens[cls_a], self._sens_names),
        _dict_array(np.concatenate(loc), loc_names or ["?"]),
        masked,
        keyed,
        raw,
        pa.array(valid_a == 1, pa.bool_(), mask=valid_a < 0),
        pa.array(np.concatenate(conf).astype(np.uint8), pa.uint8()),
        pa.array(np.concatenate(salv), pa.bool_()),
        pa.array(np.concatenate(start) - base, pa.int64()),
        pa.array(np.concatenate(end) - base, pa.int64()),
        _const_dict(self.catalog.version, m),
        _const_dict(SCHEMA_VERSION, m),
        pa.array(lays, pa.string()).dictionary_encode(),
    ]
    table = pa.Table.from_arrays(cols, schema=HITS)
    order = np.argsort(h_idx, kind="stable")
    if not np.all(order[:-1] < order[1:]):
        table, h_idx, cls_a = table.take(pa.array(order)), h_idx[order], cls_a[order]
    pairs, counts = np.unique(fmt[h_idx].astype(np.int64) * 65536 + cls_a, return_counts=True)
    hit_counts = {(FORMAT_NAMES[int(p) // 65536], self._class_names[int(p) % 65536]): int(c)
                  for p, c in zip(pairs, counts)}
    return table, h_idx, hit_counts


def _pair(raw: bool):
    new = Classifier(Protector(KEY, raw=raw), egress=EgressDetector())
    ref = Classifier(Protector(KEY, raw=raw), egress=EgressDetector())
    ref._hits_table = types.MethodType(_reference_hits_table, ref)
    return new, ref


@pytest.fixture(scope="module")
def classifiers():
    return {False: _pair(False), True: _pair(True)}


def _same(classifiers, batch: Batch, raw: bool = False):
    new, ref = classifiers[raw]
    a, b = new.run(batch), ref.run(batch)
    assert a.hits.schema == b.hits.schema
    assert a.hits.equals(b.hits)                        # dictionaries and indices, column by column
    for name in ("value_masked", "value_hmac", "value_raw"):
        x, y = a.hits.column(name).combine_chunks(), b.hits.column(name).combine_chunks()
        if pa.types.is_dictionary(x.type):
            assert x.dictionary.equals(y.dictionary) and x.indices.equals(y.indices), name
    assert a.hits.to_pylist() == b.hits.to_pylist()
    assert np.array_equal(a.h_idx, b.h_idx) and a.hit_counts == b.hit_counts
    assert new._recipients == ref._recipients
    assert a.messages.column("key_masked").equals(b.messages.column("key_masked"))
    assert a.messages.column("key_hmac").equals(b.messages.column("key_hmac"))
    for t in (a.hits, a.messages):                      # each value once in every dictionary
        for f in t.schema:
            if pa.types.is_dictionary(f.type):
                for ch in t.column(f.name).chunks:
                    assert len(ch.dictionary.unique()) == len(ch.dictionary), f.name
    return a


def _corpus_batch() -> Batch:
    if not CORPUS.is_dir():
        pytest.fail(f"corpus not found at {CORPUS}")
    values, declared, keys = [], [], []
    for fmt, code in FMT.items():
        for f in sorted((CORPUS / fmt).iterdir()):
            values.append(f.read_bytes())
            declared.append(code)
            keys.append(f.name.encode())
    return Batch.from_values(values, declared, keys=keys)


@pytest.mark.parametrize("raw", [False, True])
def test_corpus_hits_equal_the_python_reference(classifiers, raw):
    r = _same(classifiers, _corpus_batch(), raw)
    assert r.hits.num_rows > 1000
    masked = r.hits.column("value_masked").combine_chunks()
    assert any(not s.isascii() for s in masked.dictionary.to_pylist())   # Latin-1 / UTF-8 names: Python rule


@pytest.mark.parametrize("seed,raw", [(11, False), (12, True), (13, False)])
def test_synthetic_hits_equal_the_python_reference(classifiers, seed, raw):
    msgs = list(synth.generate(seed=seed, n=1500))
    keys = [None if i % 7 == 0 else m.key if i % 3 else b"K%d\xc3\xa9" % (i % 50) for i, m in enumerate(msgs)]
    r = _same(classifiers, Batch.from_values([m.value for m in msgs], [FMT[m.format] for m in msgs], keys=keys), raw)
    got = collections.Counter(zip(r.hits.column("format").to_pylist(), r.hits.column("data_class").to_pylist()))
    assert r.hit_counts == dict(got)                   # counts pair each hit's own format and class


def test_same_bytes_as_two_classes_and_hostile_values(classifiers):
    """One value found as two classes takes the (value, class) path; control characters, Latin-1,
    UTF-8 and separators go through both the kernel and the Python rules."""
    edi = ("UNB+UNOC:3+SENDER+RECEIVER+260301:1200+7'UNH+1+IFTMIN:D:00B:UN'"
           "RFF+BM:MAEU123456789'RFF+BN:MAEU123456789'RFF+BN:MAEU 12-34\x1f5'"
           "NAD+CZ+++M\xdcLLER GMBH & CO. KG'NAD+CN+++\t\x1cA B  CD'CTA+IC+:J\xc3\xb6rg Smith'"
           "COM+j.smith@maersk.com:EM'COM+@x.de:EM'COM+0049 40 123456:TE'COM+?+86 21 1234 5678:TE'"
           "UNT+11+1'UNZ+1+7'").encode("latin-1")
    js = '{"equipmentReference":"MSCU1234565","vesselIMONumber":"IMO 9321483","carrierBookingReference":"É1"}'
    r = _same(classifiers, Batch.from_values([edi, js.encode(), edi], [FMT_EDIFACT, FMT_JSON, FMT_EDIFACT]))
    classes = collections.defaultdict(set)
    for row in r.hits.to_pylist():
        classes[row["value_hmac"]].add(row["data_class"])
    assert hmac.new(KEY, b"MAEU123456789", hashlib.sha256).digest() in classes
    assert any(len(c) > 1 for c in classes.values()), "no value was found as two classes"


def test_key_columns_equal_the_python_reference():
    p = Protector(KEY)
    keys = [b"BKG123456", None, b"", b"BKG123456", b"10.0.0.1", "Kühne".encode(), b"\xff\xfeX", b"k" * 300, None]
    masked, keyed, raw = p.key_columns(keys)
    enc = pa.array(keys, pa.binary()).dictionary_encode()
    m, k = p.protect_many(enc.dictionary.to_pylist())
    assert masked.equals(pa.DictionaryArray.from_arrays(enc.indices, pa.array(m, pa.string())))
    assert keyed.equals(pa.DictionaryArray.from_arrays(enc.indices, pa.array(k, pa.binary(32))))
    assert raw.null_count == len(keys)
    assert p.key_columns([])[0].to_pylist() == [] and p.key_columns([None])[1].to_pylist() == [None]


def test_dictionary_array_keeps_values_and_nulls():
    values = pa.array(["a", "b", "a", "c", "b"], pa.string())
    idx = pa.array([0, None, 2, 4, 3, 1], pa.int32())
    d = dictionary_array(idx, values)
    assert d.to_pylist() == ["a", None, "a", "b", "c", "b"]
    assert d.dictionary.to_pylist() == ["a", "b", "c"]
    same = dictionary_array(np.array([1, 0]), pa.array(["x", "y"]))
    assert same.dictionary.to_pylist() == ["x", "y"] and same.to_pylist() == ["y", "x"]


def test_hits_files_are_the_same_bytes_every_time(classifiers, tmp_path):
    """Parquet's writer gives different bytes for the same rows when a dictionary holds a value
    twice (masks collide); with unique dictionaries a replay writes identical files."""
    import pyarrow.parquet as pq

    from flowaudit.datasets import parquet_options
    msgs = list(synth.generate(seed=5, n=1500))
    r = classifiers[False][0].run(Batch.from_values([m.value for m in msgs], [FMT[m.format] for m in msgs]))
    masked = r.hits.column("value_masked").combine_chunks()
    assert len(masked.dictionary) < len(set(r.hits.column("value_hmac").to_pylist()))   # masks did collide
    got = set()
    for i in range(6):
        pq.write_table(r.hits, tmp_path / f"{i}.parquet", **parquet_options(r.hits.schema))
        got.add((tmp_path / f"{i}.parquet").read_bytes())
    assert len(got) == 1
    back = pq.read_table(tmp_path / "0.parquet")
    assert back.to_pylist() == r.hits.to_pylist()
    md = pq.ParquetFile(tmp_path / "0.parquet").metadata.row_group(0)
    names = [md.column(i).path_in_schema for i in range(md.num_columns)]
    assert md.column(names.index("ts_ms")).statistics is not None
    assert md.column(names.index("value_hmac")).statistics is None


def test_output_files_delta_encode_positions_and_keep_dictionaries(classifiers, tmp_path):
    """Signed integer columns (offsets, record times, byte positions, counts) are written
    DELTA_BINARY_PACKED; every other column, list elements included, keeps its dictionary; the
    rows read back unchanged."""
    import pyarrow.parquet as pq

    from flowaudit.datasets import parquet_options
    msgs = list(synth.generate(seed=6, n=800))
    r = classifiers[False][0].run(Batch.from_values([m.value for m in msgs], [FMT[m.format] for m in msgs]))
    for name, t in (("hits", r.hits), ("messages", r.messages)):
        path = tmp_path / f"{name}.parquet"
        pq.write_table(t, path, **parquet_options(t.schema))
        assert pq.read_table(path).to_pylist() == t.to_pylist()
        md = pq.ParquetFile(path).metadata.row_group(0)
        enc = {md.column(i).path_in_schema: md.column(i).encodings for i in range(md.num_columns)}
        for col in ("offset", "ts_ms", "partition"):
            assert "DELTA_BINARY_PACKED" in enc[col] and "RLE_DICTIONARY" not in enc[col], (name, col, enc[col])
        assert "RLE_DICTIONARY" in enc["format"]
        if name == "hits":
            assert "DELTA_BINARY_PACKED" in enc["byte_start"]
            assert "RLE_DICTIONARY" in enc["value_hmac"] and "RLE_DICTIONARY" in enc["confidence"]
        else:
            assert "RLE_DICTIONARY" in enc["flags.list.element"]
