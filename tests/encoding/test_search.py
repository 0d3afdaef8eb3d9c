"""The chunked running top-k equals exact (float64 brute-force) search, for every score and backend."""

from __future__ import annotations

import numpy as np
import pytest

from ragcun.encoding.search import merge_topk, rescore, search, search_chunks

from ..reference_search import brute_force


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((37, 24)).astype(np.float32)
    # varied norms
    d = (rng.standard_normal((1013, 24)) * rng.uniform(0.5, 2.0, (1013, 1))).astype(np.float32)
    return q, d


@pytest.mark.parametrize("score", ["l2", "cos", "dot"])
@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("chunk_size", [97, 5000])
def test_chunked_equals_exact(data, score, backend, chunk_size):
    q, d = data
    s, i = search(q, d, 50, score, chunk_size=chunk_size, query_block=8, backend=backend)
    bs, bi = brute_force(q, d, 50, score)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(s, bs, rtol=1e-6, atol=1e-6)


def test_l2_is_true_distance_not_squared(data):
    q, d = data
    s, i = search(q, d, 5, "l2")
    direct = -np.linalg.norm(d[i[0]].astype(np.float64) - q[0].astype(np.float64), axis=1)
    np.testing.assert_allclose(s[0], direct, rtol=1e-6)
    assert (s <= 0).all()


def test_top_k_larger_than_corpus_and_memmap(tmp_path, data):
    q, d = data
    path = tmp_path / "corpus.npy"
    np.save(path, d[:30])
    mm = np.load(path, mmap_mode="r")
    s, i = search(q, mm, 100, "cos", chunk_size=7)
    assert s.shape == (37, 30)
    bs, bi = brute_force(q, d[:30], 100, "cos")
    np.testing.assert_array_equal(i, bi)


def test_shards_merge_to_the_same_top_k(data):
    """What torchrun ranks do: each searches its own chunks (with global offsets), then the lists merge."""
    q, d = data
    chunks = [d[s : s + 200] for s in range(0, len(d), 200)]
    starts = np.cumsum([0] + [c.shape[0] for c in chunks])
    parts = []
    for rank in range(2):
        mine = [c for c in range(len(chunks)) if c % 2 == rank]
        _, cand = search_chunks(q, [chunks[c] for c in mine], 60, "l2",
                                offsets=[int(starts[c]) for c in mine])
        parts.append(rescore(q, chunks, cand, "l2", 40))
    s, i = merge_topk(parts, 40)
    bs, bi = brute_force(q, d, 40, "l2")
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(s, bs, rtol=1e-6)


def test_ties_go_to_lower_index():
    q = np.ones((1, 4), dtype=np.float32)
    d = np.ones((10, 4), dtype=np.float32)
    _, i = search(q, d, 3, "dot", chunk_size=3)
    assert i.tolist() == [[0, 1, 2]]


def test_bad_input():
    q = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="score must be one of"):
        search(q, q, 1, "manhattan")
    with pytest.raises(ValueError, match="dim"):
        search(q, np.zeros((5, 4), dtype=np.float32), 1, "l2")
    with pytest.raises(ValueError, match="2-D"):
        search(np.zeros(3, dtype=np.float32), q, 1, "l2")


def test_chunk_list_takes_its_squared_norms_per_chunk():
    rng = np.random.default_rng(3)
    d = rng.standard_normal((700, 16)).astype(np.float32)
    q = rng.standard_normal((9, 16)).astype(np.float32)
    chunks = [d[:250], d[250:]]
    sq = [np.einsum("ij,ij->i", c, c) for c in chunks]
    expected = search(q, d, 10, "l2")
    got = search(q, chunks, 10, "l2", sq_norms=sq)
    assert np.array_equal(got[1], expected[1]) and np.allclose(got[0], expected[0])
    with pytest.raises(ValueError, match="one squared norm per corpus row"):
        search(q, chunks, 10, "l2", sq_norms=sq[:1])
