"""A LlamaIndex retriever that ranks by true L2 distance (``pip install ragcun[llamaindex]``).

LlamaIndex's own path gets a ragcun model wrong: ``HuggingFaceEmbedding`` normalises by default,
discarding the norm, and ``VectorStoreIndex`` ranks by cosine even with ``normalize=False``. This
retriever searches a :class:`~ragcun.GaussianRetriever` instead and plugs into query engines::

    from llama_index.core.query_engine import RetrieverQueryEngine
    from ragcun import GaussianRetriever
    from ragcun.integrations.llamaindex import GaussianLlamaRetriever

    retriever = GaussianLlamaRetriever(GaussianRetriever.load("my-index"), top_k=5)
    nodes = retriever.retrieve("capital of France")      # NodeWithScore, nearest first
    engine = RetrieverQueryEngine.from_args(retriever, llm=...)

``NodeWithScore.score`` is :func:`ragcun.retrieval.results.relevance_score` (in (0, 1], higher is
nearer, so LlamaIndex's similarity cutoffs work); the node's ``metadata["ragcun"]`` holds
``distance``, ``norm``, ``relevance`` and ``rank`` and is kept out of the LLM and embedding text.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("the LlamaIndex adapter needs llama-index-core: "
                      "pip install 'ragcun[llamaindex]'") from e

from ragcun.retrieval.results import SearchResult, check_top_k, hit_metadata, relevance_score
from ragcun.retrieval.retriever import GaussianRetriever

__all__ = ["GaussianLlamaRetriever"]


class GaussianLlamaRetriever(BaseRetriever):
    """LlamaIndex ``BaseRetriever`` over a :class:`~ragcun.GaussianRetriever`.

    Args:
        retriever: the ragcun retriever to search.
        top_k: how many nodes to return.
        distance_scale: use ``1 / (1 + d / distance_scale)`` instead of the index's calibrated relevance.
    """

    def __init__(self, retriever: GaussianRetriever, top_k: int = 10, *, distance_scale: float | None = None,
                 **kwargs: Any) -> None:
        if not isinstance(retriever, GaussianRetriever):
            raise TypeError(f"retriever must be a GaussianRetriever, got {type(retriever).__name__}")
        self.ragcun_retriever = retriever
        self.top_k = check_top_k(top_k)
        self.distance_scale = distance_scale
        relevance_score(0.0, retriever.dimension, distance_scale)  # checks the scale once, here
        super().__init__(**kwargs)

    def _node(self, hit: SearchResult) -> NodeWithScore:
        meta, rel = hit_metadata(hit, self.ragcun_retriever.dimension, self.distance_scale,
                                 self.ragcun_retriever.mean_sq_norm)
        node = TextNode(id_=hit.id, text=hit.text, metadata=meta,
                        excluded_llm_metadata_keys=["ragcun"], excluded_embed_metadata_keys=["ragcun"])
        return NodeWithScore(node=node, score=rel)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if query_bundle.embedding is not None:  # a precomputed query embedding, made with this model
            q = np.asarray(query_bundle.embedding, dtype=np.float32)
            hits = self.ragcun_retriever.search_embeddings(q, top_k=self.top_k)[0]
        else:
            hits = self.ragcun_retriever.retrieve(query_bundle.query_str, top_k=self.top_k)
        return [self._node(h) for h in hits]
