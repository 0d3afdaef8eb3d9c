"""The index backends on their own: exactness, NumPy == FAISS flat, IVF/HNSW behaviour, removal."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

import ragcun.retrieval as ix


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    q = rng.standard_normal((40, 32)).astype(np.float32)
    ids = (np.arange(3000) * 7 + 5).astype(np.int64)  # ids unrelated to positions
    return x, q, ids


def exact(x, q, ids, k):
    d = ((q[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, 1), ids[order]


def recall_at(ref_ids, got_ids):
    return float(np.mean([len(set(r.tolist()) & set(g.tolist())) / len(r)
                          for r, g in zip(ref_ids, got_ids, strict=True)]))


@pytest.mark.parametrize("cls", [ix.FlatIndex, ix.NumpyIndex])
def test_exact_indexes_match_numpy_l2(data, cls):
    x, q, ids = data
    index = cls(32)
    index.add(x, ids)
    d, i = index.search(q, 10)
    ref_d, ref_i = exact(x, q, ids, 10)
    assert (i == ref_i).all()
    np.testing.assert_allclose(d, ref_d, rtol=1e-4, atol=1e-3)


def test_numpy_equals_faiss_flat_with_ties_and_small_k(data):
    x, q, ids = data
    dup = np.concatenate([x[:50], x[:50]])  # exact ties: both must break them by insertion order
    dids = np.arange(100, dtype=np.int64)
    for k in (1, 10, 150):  # k > n pads with -1
        f, n = ix.FlatIndex(32), ix.NumpyIndex(32)
        f.add(dup, dids)
        n.add(dup, dids)
        df, i_f = f.search(q, k)
        dn, i_n = n.search(q, k)
        assert (i_f == i_n).all()
        ok = i_f >= 0
        np.testing.assert_allclose(dn[ok], df[ok], rtol=1e-4, atol=1e-3)
    assert (i_f[:, 100:] == -1).all()


def test_flat_index_searches_few_queries_with_ragcun_where_measured_faster(data, monkeypatch):
    """Above NUMPY_MIN_DOCS and at most NUMPY_MAX_QUERIES per call the flat index searches FAISS's own vectors
    with ragcun's exact search: the same ids as FAISS, and a view that follows adds and removals."""
    import ragcun.encoding.search as search_mod
    import ragcun.retrieval.faiss_index as fi

    x, q, ids = data
    index = ix.FlatIndex(32)
    index.add(x[:2000], ids[:2000])
    calls = []
    real = search_mod.search
    monkeypatch.setattr(search_mod, "search", lambda *a, **k: calls.append(1) or real(*a, **k))
    by_faiss = index.search(q[:4], 10)
    assert not calls  # 2,000 documents: below the threshold, FAISS searches
    monkeypatch.setattr(fi, "NUMPY_MIN_DOCS", 1000)
    d, i = index.search(q[:4], 10)
    assert calls and (i == by_faiss[1]).all()
    np.testing.assert_allclose(d, by_faiss[0], rtol=1e-4, atol=1e-4)
    index.add(x[2000:], ids[2000:])
    index.remove(ids[:1])
    ref_d, ref_i = exact(x[1:], q[:4], ids[1:], 10)
    d, i = index.search(q[:4], 10)
    assert (i == ref_i).all()
    calls.clear()
    index.search(q, 10)  # 40 queries per call: FAISS again
    assert not calls


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_adding_in_several_calls_equals_one_call(data, kind):
    x, q, ids = data
    one = ix.make_index(kind, 32, nlist=20) if kind == "ivf" else ix.make_index(kind, 32)
    one.add(x, ids)
    many = ix.make_index(kind, 32, nlist=20) if kind == "ivf" else ix.make_index(kind, 32)
    for s in range(0, len(x), 700):
        many.add(x[s : s + 700], ids[s : s + 700])
    one.prepare()
    many.prepare()
    d1, i1 = one.search(q, 10)
    d2, i2 = many.search(q, 10)
    assert (i1 == i2).all()
    np.testing.assert_array_equal(d1, d2)


def test_ivf_parameters_and_recall(data):
    x, q, ids = data
    ref_d, ref_i = exact(x, q, ids, 10)
    ivf = ix.IVFIndex(32, nlist=30, nprobe=1)
    ivf.add(x, ids)
    ivf.prepare()
    assert ivf.nlist == 30 and ivf.params["nprobe"] == 1
    low = recall_at(ref_i, ivf.search(q, 10)[1])
    ivf.nprobe = 30  # probing every cell is exact
    full = recall_at(ref_i, ivf.search(q, 10)[1])
    assert full == 1.0
    assert low < full
    with pytest.raises(ValueError, match="nlist=5000"):
        bad = ix.IVFIndex(32, nlist=5000)
        bad.add(x, ids)
        bad.train()


def test_hnsw_recall_and_tombstone_removal(data):
    x, q, ids = data
    ref_d, ref_i = exact(x, q, ids, 10)
    h = ix.HNSWIndex(32, M=16, ef_construction=80, ef_search=128)
    h.add(x, ids)
    assert recall_at(ref_i, h.search(q, 10)[1]) >= 0.95
    gone = ref_i[:, 0]  # remove every query's nearest neighbour
    n = h.remove(gone)
    assert n == len(set(gone.tolist()))
    assert h.tombstones == n and len(h) == len(x) - n
    d, i = h.search(q, 10)
    assert not np.isin(i, gone).any()
    assert (i >= 0).all()  # still k results: filtered in the search, not after it
    h.compact()
    assert h.tombstones == 0 and len(h) == len(x) - n
    assert not np.isin(h.search(q, 10)[1], gone).any()


def test_hnsw_auto_compacts_when_many_removed(data):
    x, q, ids = data
    h = ix.HNSWIndex(32, M=8, compact_ratio=0.1)
    h.add(x[:500], ids[:500])
    h.remove(ids[:100])
    assert h.tombstones == 0 and len(h) == 400


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_faiss_remove(data, kind):
    x, q, ids = data
    index = ix.make_index(kind, 32, nlist=10, nprobe=10) if kind == "ivf" else ix.make_index(kind, 32)
    index.add(x, ids)
    index.prepare()
    assert index.remove(ids[:10]) == 10
    assert len(index) == len(x) - 10
    d, i = index.search(q, 10)
    ref_d, ref_i = exact(x[10:], q, ids[10:], 10)  # the survivors, still under their own ids
    assert (i == ref_i).all()
    np.testing.assert_allclose(d, ref_d, rtol=1e-4, atol=1e-3)


def test_bad_vectors_rejected():
    f = ix.FlatIndex(8)
    with pytest.raises(ValueError, match=r"shape \(n, 8\)"):
        f.add(np.zeros((2, 9), np.float32), np.arange(2))
    with pytest.raises(ValueError, match="NaN"):
        f.add(np.full((1, 8), np.nan, np.float32), np.arange(1))
    with pytest.raises(ValueError, match="index must be one of"):
        ix.make_index("lsh", 8)


def test_numpy_fallback_without_faiss(monkeypatch, data):
    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss" or name.startswith("faiss."):
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    assert not ix.faiss_available()
    index = ix.make_index("flat", 32)
    assert isinstance(index, ix.NumpyIndex)
    with pytest.raises(ImportError, match="needs FAISS"):
        ix.make_index("hnsw", 32)


def test_ivf_retrain_after_growth(data, caplog):
    x, q, ids = data
    ivf = ix.IVFIndex(32)
    ivf.add(x[:100], ids[:100])
    ivf.prepare()
    assert ivf.nlist == 2  # auto: at least 39 points per cell
    with caplog.at_level("WARNING"):
        ivf.add(x[100:], ids[100:])
    assert "call retrain()" in caplog.text
    ivf.retrain()
    assert ivf.nlist == ix.IVFIndex.auto_nlist(len(x)) and len(ivf) == len(x)
    assert ivf.params["trained_on"] == len(x)
    ivf.nprobe = ivf.nlist
    assert (ivf.search(q, 10)[1] == exact(x, q, ids, 10)[1]).all()
