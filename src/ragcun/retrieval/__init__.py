"""L2 retrieval over Gaussian embeddings: :class:`GaussianRetriever` and its index backends."""

from __future__ import annotations

from ragcun.retrieval.index import (
    INDEX_TYPES,
    FlatIndex,
    HNSWIndex,
    IVFIndex,
    NumpyIndex,
    VectorIndex,
    faiss_available,
    make_index,
    weights_fingerprint,
)
from ragcun.retrieval.retriever import (
    DimensionMismatchError,
    GaussianRetriever,
    IndexCorruptError,
    ModelMismatchError,
    RetrieverError,
    SearchResult,
    read_documents,
)

__all__ = [
    "INDEX_TYPES",
    "DimensionMismatchError",
    "FlatIndex",
    "GaussianRetriever",
    "HNSWIndex",
    "IVFIndex",
    "IndexCorruptError",
    "ModelMismatchError",
    "NumpyIndex",
    "RetrieverError",
    "SearchResult",
    "VectorIndex",
    "faiss_available",
    "make_index",
    "read_documents",
    "weights_fingerprint",
]
