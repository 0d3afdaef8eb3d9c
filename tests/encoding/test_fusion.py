"""The fusion module against hand computations on a tiny corpus, and against real BM25 on a real slice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ragcun.encoding.fusion import Fusion, bm25_scores, dense_scores, fuse, hybrid_search, ranks, zscore


def _z(row: list[float]) -> list[float]:
    mean = sum(row) / len(row)
    std = math.sqrt(sum((x - mean) ** 2 for x in row) / len(row))
    return [(x - mean) / std for x in row]


DENSE = np.array([[0.9, 0.5, 0.1, 0.3], [0.2, 0.4, 0.8, 0.0]])
SPARSE = np.array([[0.0, 7.0, 1.0, 2.0], [3.0, 3.0, 0.0, 6.0]])


def test_zscore_fusion_equals_hand_computation() -> None:
    out = fuse({"dense": DENSE, "bm25": SPARSE}, Fusion("zscore", {"dense": 1.0, "bm25": 0.5}))
    for i in range(2):
        want = [a + 0.5 * b for a, b in zip(_z(list(DENSE[i])), _z(list(SPARSE[i])), strict=True)]
        np.testing.assert_allclose(out[i], want, rtol=1e-12)


def test_convex_fusion_equals_hand_computation() -> None:
    out = fuse({"dense": DENSE, "bm25": SPARSE}, Fusion("convex", {"dense": 0.7, "bm25": 0.3}))
    # row 0: dense min 0.1 max 0.9; bm25 min 0 max 7
    want0 = [0.7 * (d - 0.1) / 0.8 + 0.3 * s / 7.0 for d, s in zip(DENSE[0], SPARSE[0], strict=True)]
    np.testing.assert_allclose(out[0], want0, rtol=1e-12)


def test_rrf_equals_hand_computation() -> None:
    out = fuse({"dense": DENSE, "bm25": SPARSE}, Fusion("rrf", {"dense": 1.0, "bm25": 1.0}, rrf_k=60))
    # row 0: dense ranks 1,2,4,3; bm25 ranks 4,1,3,2
    want0 = [1 / 61 + 1 / 64, 1 / 62 + 1 / 61, 1 / 64 + 1 / 63, 1 / 63 + 1 / 62]
    np.testing.assert_allclose(out[0], want0, rtol=1e-12)
    assert ranks(np.array([[1.0, 3.0, 2.0]])).tolist() == [[3, 1, 2]]


def test_missing_scores_and_constant_rows() -> None:
    assert zscore(np.array([[2.0, 2.0, 2.0]])).tolist() == [[0.0, 0.0, 0.0]]
    dense = np.array([[1.0, 0.0, -np.inf]])
    sparse = np.array([[-np.inf, 2.0, 4.0]])
    out = fuse({"dense": dense, "bm25": sparse}, Fusion("rrf", {"dense": 1.0, "bm25": 1.0}, rrf_k=0))
    np.testing.assert_allclose(out, [[1.0, 0.5 + 0.5, 1.0]])
    both_missing = fuse({"dense": np.array([[-np.inf]]), "bm25": np.array([[-np.inf]])}, Fusion())
    assert both_missing.tolist() == [[-np.inf]]


@pytest.mark.parametrize("bad", [{"dense": float("nan")}, {"dense": -1.0}, {"dense": True}, {}, {"dense": 0}])
def test_bad_weights_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="weight"):
        Fusion("zscore", bad)


def test_bad_kind_and_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="fusion kind"):
        Fusion("sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        fuse({"dense": np.array([[np.nan, 1.0]]), "bm25": SPARSE[:1, :2]}, Fusion())
    with pytest.raises(ValueError, match="scores are"):
        fuse({"dense": DENSE}, Fusion())


def test_dense_scores_match_definitions() -> None:
    rng = np.random.default_rng(0)
    q, d = rng.normal(size=(3, 5)), rng.normal(size=(4, 5))
    np.testing.assert_allclose(dense_scores(q, d, "l2"),
                               -np.linalg.norm(q[:, None] - d[None], axis=-1), rtol=1e-10)
    qn, dn = q / np.linalg.norm(q, axis=1, keepdims=True), d / np.linalg.norm(d, axis=1, keepdims=True)
    np.testing.assert_allclose(dense_scores(q, d, "cos"), qn @ dn.T, rtol=1e-10)


def test_hybrid_search_on_real_bm25(scifact_passages) -> None:
    """Real bm25s over real SciFact passages: BM25 alone ranks as bm25s does, and the fused top-k is the
    top of the hand-fused full matrix."""
    from ragcun.data.bm25 import BM25Index

    ids, texts = [d["id"] for d in scifact_passages], [d["text"] for d in scifact_passages]
    index = BM25Index.build(ids, texts, show_progress=False)
    queries = [texts[3][:60], texts[50][:80], "zzzz unknownword"]
    sparse = bm25_scores(index, queries)
    rows, scores = index.search(queries[:2], k=5)
    np.testing.assert_allclose(np.take_along_axis(sparse[:2], rows, axis=1), scores, rtol=1e-5)
    assert not sparse[2].any()  # no known term: 0 everywhere
    rng = np.random.default_rng(1)
    q_emb, d_emb = rng.normal(size=(3, 8)), rng.normal(size=(len(ids), 8))
    fusion = Fusion("zscore", {"dense": 1.0, "bm25": 0.5})
    s, i = hybrid_search(q_emb, d_emb, queries, index, fusion, top_k=10, score="cos", query_block=2)
    full = fuse({"dense": dense_scores(q_emb, d_emb, "cos"), "bm25": sparse}, fusion)
    for r in range(3):
        np.testing.assert_allclose(s[r], np.sort(full[r])[::-1][:10], rtol=1e-12)
        np.testing.assert_allclose(full[r, i[r]], s[r], rtol=1e-12)
    with pytest.raises(ValueError, match="BM25 index"):
        hybrid_search(q_emb, d_emb[:10], queries, index, fusion, top_k=5)
