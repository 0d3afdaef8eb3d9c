"""RAG metrics: hand-computed ECE and separation, and pool metrics on embeddings with known structure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ragcun.evaluation.rag import expected_calibration_error, rag_metrics_from_embeddings, separation


def test_ece_by_hand():
    prob = np.array([0.1, 0.1, 0.9, 0.9])
    label = np.array([0, 1, 1, 1])
    ece, bins = expected_calibration_error(prob, label, n_bins=10)
    # bin [0.1, 0.2): confidence 0.1, accuracy 0.5; bin [0.9, 1]: confidence 0.9, accuracy 1.0
    assert ece == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert bins[1]["count"] == 2 and bins[1]["accuracy"] == 0.5
    assert bins[9]["count"] == 2 and bins[9]["confidence"] == pytest.approx(0.9)
    assert sum(b["count"] for b in bins) == 4


def test_separation_by_hand():
    s = separation(np.array([1.0, 3.0]), np.array([0.0, 0.0, 3.0]))
    assert s["separation"] == pytest.approx(2.0 - 1.0)
    pooled = math.sqrt((1 * 2.0 + 2 * 3.0) / 3)  # (n1−1)·var1 + (n2−1)·var2 over n1+n2−2
    assert s["separation_std"] == pytest.approx(1.0 / pooled)


def _structured(informative: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_docs, n_q, dim = 400, 40, 16
    docs = rng.standard_normal((n_docs, dim))
    doc_ids = [f"d{i}" for i in range(n_docs)]
    qrels, q = {}, []
    for j in range(n_q):
        pos = rng.choice(n_docs, 2, replace=False)
        qrels[f"q{j}"] = {doc_ids[p]: 1 for p in pos}
        center = docs[pos].mean(0) if informative else rng.standard_normal(dim)
        q.append(center + 0.1 * rng.standard_normal(dim))
    return np.array(q), [f"q{j}" for j in range(n_q)], docs.astype(np.float32), doc_ids, qrels


def test_informative_embeddings_separate_and_rank():
    q, qids, docs, doc_ids, qrels = _structured(True)
    ndcg = {qid: float(i % 2) for i, qid in enumerate(qids)}
    r = rag_metrics_from_embeddings(q, qids, docs, doc_ids, qrels, "l2", negatives_per_query=50,
                                    per_query_ndcg=ndcg)
    assert r["queries"] == 40 and r["pairs"] == 40 * 52 and r["positives"] == 80
    assert r["roc_auc"] > 0.95 and r["pool_recall@10"] > 0.9 and r["pool_mrr"] > 0.7
    assert "recall@10" not in r  # never confused with evaluate's full-corpus recall@10
    assert r["separation"] > 0 and r["separation_std"] > 1.5
    assert 0 <= r["ece"] < 0.1
    assert len(r["reliability"]) == 10
    assert set(r["norm_vs_ndcg@10"]) == {"pearson", "pearson_p", "spearman", "spearman_p"}


def test_random_embeddings_are_chance_and_cos_norms_give_nan():
    q, qids, docs, doc_ids, qrels = _structured(False)
    r = rag_metrics_from_embeddings(q, qids, docs, doc_ids, qrels, "cos", negatives_per_query=50)
    assert 0.35 < r["roc_auc"] < 0.65
    assert abs(r["separation_std"]) < 0.35
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)  # constant norms: correlation undefined
    r = rag_metrics_from_embeddings(qn, qids, docs, doc_ids, qrels, "cos", 20,
                                    per_query_ndcg={x: 0.5 for x in qids})
    assert math.isnan(r["norm_vs_ndcg@10"]["pearson"])


def test_sampling_is_seeded_and_excludes_positives():
    q, qids, docs, doc_ids, qrels = _structured(True)
    a = rag_metrics_from_embeddings(q, qids, docs, doc_ids, qrels, "dot", 30, seed=3)
    b = rag_metrics_from_embeddings(q, qids, docs, doc_ids, qrels, "dot", 30, seed=3)
    assert a["roc_auc"] == b["roc_auc"] and a["ece"] == b["ece"]
    assert a["positives"] == 80 and a["pairs"] == 40 * 32
