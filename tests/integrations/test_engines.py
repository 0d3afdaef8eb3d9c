"""The LangChain and LlamaIndex adapters on every vector engine: the same hits as the in-process FAISS
index."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.conftest import SCIFACT_QUERIES as QUERIES

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from ragcun.integrations.langchain import GaussianVectorStore  # noqa: E402
from ragcun.integrations.llamaindex import GaussianLlamaRetriever  # noqa: E402
from ragcun.retrieval import GaussianRetriever  # noqa: E402

ENGINES = [pytest.param(e, marks=pytest.mark.skipif(not importlib.util.find_spec(m),
                                                    reason=f"{m} not installed"))
           for e, m in (("numpy", "numpy"), ("qdrant", "qdrant_client"), ("lancedb", "lancedb"))]


@pytest.fixture(scope="module")
def doc_vectors(retriever, scifact_passages):
    return retriever.encode_documents([d["text"] for d in scifact_passages])


@pytest.mark.parametrize("engine", ENGINES)
def test_adapters_rank_the_same_on_every_engine(engine, retriever, gaussian_minilm, scifact_passages,
                                                doc_vectors):
    other = GaussianRetriever(gaussian_minilm, batch_size=32, engine=engine)
    other.add_embeddings(doc_vectors, texts=[d["text"] for d in scifact_passages],
                         ids=[d["id"] for d in scifact_passages],
                         metadata=[d["metadata"] for d in scifact_passages])
    for q in QUERIES[:3]:
        want = [h.id for h in retriever.retrieve(q, top_k=10)]
        assert [d.id for d, _ in GaussianVectorStore(other).similarity_search_with_score(q, k=10)] == want
        assert [n.node.node_id for n in GaussianLlamaRetriever(other, top_k=10).retrieve(q)] == want


@pytest.fixture(scope="module")
def lang_of():
    return lambda i: "de" if i % 3 == 0 else "en"


@pytest.mark.parametrize("engine", ["faiss", *ENGINES])
def test_filters_and_mmr_are_honoured_on_every_engine(engine, retriever, gaussian_minilm, scifact_passages,
                                                      doc_vectors, lang_of):
    """``filter=`` (a dict, or a callable on the Document) keeps exactly the matching documents of the full
    ranking, deep enough for k of them; MMR is the hand-computed L2 MMR over the fetched hits."""
    other = GaussianRetriever(gaussian_minilm, batch_size=32, engine=engine)
    other.add_embeddings(doc_vectors, texts=[d["text"] for d in scifact_passages],
                         ids=[d["id"] for d in scifact_passages],
                         metadata=[{"lang": lang_of(i), "n": i} for i in range(len(scifact_passages))])
    store = GaussianVectorStore(other)
    n = len(scifact_passages)
    for q in QUERIES[:2]:
        full = retriever.retrieve(q, top_k=n)
        de = [h.id for h in full if lang_of(int(other.get(h.id)["metadata"]["n"])) == "de"]
        assert [d.id for d in store.similarity_search(q, k=5, filter={"lang": "de"})] == de[:5]
        # more than the first depth (100) holds: fetched deeper, all 40 matches come back in order
        assert [d.id for d in store.similarity_search(q, k=n, filter={"lang": "de"})] == de
        got = store.similarity_search(q, k=3, filter=lambda doc: doc.metadata["n"] >= 100)
        assert [d.id for d in got] == [h.id for h in full if int(other.get(h.id)["metadata"]["n"]) >= 100][:3]
        assert store.similarity_search(q, k=3, filter={"lang": "fr"}) == []
        # MMR: lambda 1 is the ranking; 0.5 equals the definition computed here
        assert [d.id for d in store.max_marginal_relevance_search(q, k=4, lambda_mult=1.0)] == \
            [h.id for h in full[:4]]
        cand = full[:20]
        x = doc_vectors[[next(i for i, d in enumerate(scifact_passages) if d["id"] == h.id) for h in cand]]
        x = x.astype(np.float64)
        qv = retriever.encode_queries([q])[0].astype(np.float64)
        chosen = _hand_mmr(x, qv, 4)
        mmr = [d.id for d in store.max_marginal_relevance_search(q, k=4, fetch_k=20, lambda_mult=0.5)]
        assert mmr == [cand[j].id for j in chosen] and mmr != [h.id for h in full[:4]]
    with pytest.raises(TypeError, match="filter must be a dict"):
        store.similarity_search(QUERIES[0], k=2, filter=["de"])
    with pytest.raises(ValueError, match=r"filter\['n'\] is nan: metadata values are finite"):
        store.similarity_search(QUERIES[0], k=2, filter={"n": float("nan")})


def _hand_mmr(x: np.ndarray, qv: np.ndarray, k: int) -> list[int]:
    """MMR at lambda 0.5 with s(a, b) = -|a - b|² / (2m), straight from the definition."""
    m2 = 2 * np.mean((x * x).sum(1))
    chosen: list[int] = []
    for _ in range(k):
        def score(j: int, chosen: list[int] = chosen) -> float:
            redundancy = max((-((x[j] - x[c]) ** 2).sum() / m2 for c in chosen), default=0.0)
            return 0.5 * -((x[j] - qv) ** 2).sum() / m2 - 0.5 * redundancy

        chosen.append(max((j for j in range(len(x)) if j not in chosen), key=score))
    return chosen
