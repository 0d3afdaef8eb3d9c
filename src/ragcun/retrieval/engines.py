"""Which index class serves an index type on a backend: building an empty one, naming its files, loading a
saved one. The one place that knows every :class:`~ragcun.retrieval.index.VectorIndex` implementation, so the
implementations import only the interface (:mod:`ragcun.retrieval.index`), never each other."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ragcun.retrieval.index import (
    BACKENDS,
    ENGINE_KINDS,
    INDEX_TYPES,
    NumpyIndex,
    VectorIndex,
    faiss_available,
)

logger = logging.getLogger(__name__)


def _faiss_classes() -> dict[str, type]:
    from ragcun.retrieval.faiss_index import FlatIndex, IVFIndex
    from ragcun.retrieval.hnsw_index import HNSWIndex

    return {"flat": FlatIndex, "ivf": IVFIndex, "hnsw": HNSWIndex}


def _engine_class(backend: str) -> type[VectorIndex]:
    if backend == "qdrant":
        from ragcun.retrieval.qdrant_index import QdrantIndex

        return QdrantIndex
    from ragcun.retrieval.lance_index import LanceIndex

    return LanceIndex


def make_index(kind: str, dim: int, backend: str = "auto", **params: Any) -> VectorIndex:
    """Build an empty index. ``backend='auto'`` uses FAISS when installed, else NumPy (flat only)."""
    kind = kind.lower()
    if kind not in INDEX_TYPES:
        raise ValueError(f"index must be one of {', '.join(INDEX_TYPES)}; got {kind!r}")
    if backend not in BACKENDS:
        raise ValueError(f"the engine must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend in ENGINE_KINDS:
        if kind not in ENGINE_KINDS[backend]:
            raise ValueError(f"backend={backend!r} serves index='flat' (exact) or "
                             f"{ENGINE_KINDS[backend][1]!r}, not {kind!r}")
        return _engine_class(backend)(dim, exact=kind == "flat", **params)
    use_numpy = backend == "numpy" or (backend == "auto" and not faiss_available())
    if use_numpy:
        if kind != "flat":
            raise ImportError(f"index={kind!r} needs FAISS (`pip install ragcun[retrieval]`); "
                              "without it only index='flat' (exact NumPy search) is available")
        if backend == "auto":
            logger.warning("FAISS not installed: using exact NumPy search "
                           "(same results, slower on large sets)")
        return NumpyIndex(dim, **params)
    return _faiss_classes()[kind](dim, **params)


def index_files(kind: str, backend: str) -> tuple[str, ...]:
    """The files an index of this kind and backend saves (all must be covered by the manifest's hashes)."""
    if backend == "numpy":
        return NumpyIndex.files
    if backend in ENGINE_KINDS:
        return _engine_class(backend).files
    return _faiss_classes()[kind].files


def load_index(directory: Path, kind: str, backend: str, dim: int, params: dict[str, Any],
               mmap: bool = False) -> VectorIndex:
    """Load the index saved in ``directory`` (the manifest says which kind and backend)."""
    if backend == "numpy":
        return NumpyIndex.load(directory, params, dim)
    if backend in ENGINE_KINDS:
        return _engine_class(backend).load(directory, params, dim)
    if backend != "faiss":
        raise ValueError(f"unknown index backend {backend!r} in the manifest")
    if not faiss_available():
        raise ImportError(f"{directory} holds a FAISS index; install FAISS to load it "
                          "(`pip install ragcun[retrieval]`)")
    cls = _faiss_classes().get(kind)
    if cls is None:
        raise ValueError(f"unknown index type {kind!r} in the manifest")
    return cls.load(directory, params, dim, mmap=mmap)

