"""The LangChain and LlamaIndex adapters on every vector engine: the same hits as the in-process FAISS
index."""

from __future__ import annotations

import importlib.util

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
    other = GaussianRetriever(gaussian_minilm, batch_size=32, backend=engine)
    other.add_embeddings(doc_vectors, texts=[d["text"] for d in scifact_passages],
                         ids=[d["id"] for d in scifact_passages],
                         metadata=[d["metadata"] for d in scifact_passages])
    for q in QUERIES[:3]:
        want = [h.id for h in retriever.retrieve(q, top_k=10)]
        assert [d.id for d, _ in GaussianVectorStore(other).similarity_search_with_score(q, k=10)] == want
        assert [n.node.node_id for n in GaussianLlamaRetriever(other, top_k=10).retrieve(q)] == want
