"""Adapters for the frameworks RAG applications are built with, each an optional extra.

- :mod:`ragcun.integrations.langchain` (``ragcun[langchain]``): ``GaussianVectorStore``,
  ``GaussianEmbeddings``.
- :mod:`ragcun.integrations.llamaindex` (``ragcun[llamaindex]``): ``GaussianLlamaRetriever``.

Both rank by true L2 distance through :class:`ragcun.GaussianRetriever` and expose distance, norm
and a documented relevance in (0, 1] (:func:`ragcun.retrieval.results.relevance_score`).
Import the submodule you need; this package imports neither framework.
"""
