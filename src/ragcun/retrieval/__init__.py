"""L2 retrieval over Gaussian embeddings: :class:`GaussianRetriever` and its index backends."""

from __future__ import annotations

from ragcun.data.documents import read_documents
from ragcun.retrieval.engines import make_index
from ragcun.retrieval.errors import (
    DimensionMismatchError,
    IndexCorruptError,
    ModelMismatchError,
    RetrieverError,
)
from ragcun.retrieval.faiss_index import FlatIndex, IVFIndex
from ragcun.retrieval.hnsw_index import HNSWIndex
from ragcun.retrieval.index import INDEX_TYPES, NumpyIndex, VectorIndex, faiss_available
from ragcun.retrieval.retriever import GaussianRetriever, SearchResult

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
]
