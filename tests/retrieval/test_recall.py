"""Approximate-search recall on a model's real embeddings: the evaluator built once per dataset, called per
model."""

from __future__ import annotations

from ragcun.encoding.settings import EncodeSettings
from ragcun.retrieval.recall import ApproximateSearchEvaluator, approximate_recall


def test_recall_of_the_default_indexes_against_exact_search(tiny_model_path, beir_slice):
    data = str(beir_slice("scifact", {"test": 8}, extra_docs=120, max_chars=300, name="scifact-recall"))
    ev = ApproximateSearchEvaluator(data, settings=EncodeSettings(batch_size=16, max_seq_length=32))
    got = ev(tiny_model_path)
    assert got["queries"] == 8 and got["documents"] >= 120 and set(got["indexes"]) == {"hnsw", "ivf"}
    assert all(0.0 <= r["recall"] <= 1.0 and r["queries_per_s"] > 0 for r in got["indexes"].values())
    assert got["indexes"]["hnsw"]["recall"] >= 0.9  # a graph over ~150 points finds almost every neighbour
    again = approximate_recall(tiny_model_path, data, batch_size=16)
    assert again["documents"] == got["documents"] and again["dim"] == got["dim"]
