"""The LlamaIndex adapter against the real llama-index-core: the same hits as GaussianRetriever."""

from __future__ import annotations

import pytest

from tests.conftest import SCIFACT_QUERIES as QUERIES

pytest.importorskip("llama_index.core")

from llama_index.core.postprocessor import SimilarityPostprocessor  # noqa: E402
from llama_index.core.schema import MetadataMode, QueryBundle  # noqa: E402

from ragcun.integrations.llamaindex import GaussianLlamaRetriever  # noqa: E402


def test_retriever_ranks_exactly_as_gaussian_retriever(retriever):
    li = GaussianLlamaRetriever(retriever, top_k=10)
    for q in QUERIES:
        want = retriever.retrieve(q, top_k=10)
        got = li.retrieve(q)
        assert [n.node.node_id for n in got] == [h.id for h in want]
        assert ([n.node.metadata["ragcun"]["distance"] for n in got]
                == pytest.approx([h.distance for h in want]))
        scores = [n.score for n in got]
        assert all(0 < s <= 1 for s in scores) and scores == sorted(scores, reverse=True)


def test_precomputed_embedding_and_similarity_cutoff(retriever):
    li = GaussianLlamaRetriever(retriever, top_k=10)
    q = QUERIES[3]
    emb = retriever.encode_queries([q])[0].tolist()
    by_text = li.retrieve(q)
    by_vec = li.retrieve(QueryBundle(query_str=q, embedding=emb))
    assert [n.node.node_id for n in by_vec] == [n.node.node_id for n in by_text]
    cut = by_text[3].score
    kept = SimilarityPostprocessor(similarity_cutoff=cut).postprocess_nodes(by_text)
    assert [n.node.node_id for n in kept] == [n.node.node_id for n in by_text if n.score >= cut]
    assert len(kept) >= 4


def test_ragcun_metadata_stays_out_of_the_llm_text(retriever):
    node = GaussianLlamaRetriever(retriever, top_k=1).retrieve(QUERIES[0])[0].node
    assert "ragcun" in node.metadata
    assert "distance" not in node.get_content(metadata_mode=MetadataMode.LLM)


def test_bad_arguments(retriever):
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        GaussianLlamaRetriever(retriever, top_k=0)
    with pytest.raises(TypeError, match="must be a GaussianRetriever"):
        GaussianLlamaRetriever(object())
