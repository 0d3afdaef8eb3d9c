"""Vector indexes for L2 search behind one small interface.

* :class:`~ragcun.retrieval.faiss_index.FlatIndex`  — FAISS ``IndexIDMap2(IndexFlatL2)``: exact, the
  default.
* :class:`~ragcun.retrieval.faiss_index.IVFIndex`   — FAISS ``IndexIDMap2(IndexIVFFlat)``: ``nlist`` cells,
  ``nprobe`` probed.
* :class:`~ragcun.retrieval.hnsw_index.HNSWIndex`  — FAISS ``IndexIDMap2(IndexHNSWFlat)``: graph search.
* :class:`NumpyIndex`  — exact search in NumPy, used when FAISS is not installed; same results as flat.
* :class:`~ragcun.retrieval.qdrant_index.QdrantIndex` — a Qdrant collection (embedded, or a server by
  ``url``), metric Euclid: ``engine="qdrant"`` with ``index="flat"`` (exact) or ``"hnsw"``.
* :class:`~ragcun.retrieval.lance_index.LanceIndex` — a LanceDB table on disk, metric l2:
  ``engine="lancedb"`` with ``index="flat"`` (exact scan) or ``"ivf"`` (IVF-PQ, re-ranked exactly).

Every index maps caller-chosen ``int64`` ids to vectors and returns *squared* L2 distances (as FAISS
does); :class:`~ragcun.retrieval.retriever.GaussianRetriever` takes the square root.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

logger = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "ivf", "hnsw")
#: Where the vectors live: FAISS in-process (auto: when installed), exact NumPy, a Qdrant collection or a
#: LanceDB table.
BACKENDS = ("auto", "faiss", "numpy", "qdrant", "lancedb")
#: The index types each external engine serves.
ENGINE_KINDS = {"qdrant": ("flat", "hnsw"), "lancedb": ("flat", "ivf")}
#: Where ragcun's exact search beats FAISS IndexFlatL2 on the same vectors (benchmarks/suites/exact_search.py,
#: 2-core CPU, 512-d): from 100k documents with up to 16 queries per call (1.2-2x), the RAG serving case;
#: FAISS wins at 5k documents and for batches of 256+ queries (1.4-3.5x). The flat FAISS index follows these.
NUMPY_MIN_DOCS = 50_000
NUMPY_MAX_QUERIES = 16


def exact_l2(q: np.ndarray, vectors: np.ndarray, sq_norms: np.ndarray, ids: np.ndarray,
             k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by :func:`ragcun.encoding.search.search` as an index returns it: ``(squared distances,
    ids)``, missing slots ``inf``/``-1``; ties go to the earlier row, as in ``IndexFlatL2``."""
    from ragcun.encoding.search import search

    nq, n = q.shape[0], vectors.shape[0]
    out_d = np.full((nq, k), np.inf, np.float32)
    out_i = np.full((nq, k), -1, np.int64)
    if n == 0:
        return out_d, out_i
    kk = min(k, n)
    scores, rows = search(q, vectors, kk, "l2", sq_norms=sq_norms)  # float64-rescored
    out_d[:, :kk] = np.square(scores.astype(np.float64))
    out_i[:, :kk] = ids[rows]
    return out_d, out_i


def faiss_available() -> bool:
    """True when ``import faiss`` works (``pip install ragcun[retrieval]``)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _faiss():
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            "this index type needs FAISS: `pip install ragcun[retrieval]` (faiss-cpu). "
            "Without FAISS only exact search is available (index='flat' falls back to NumPy)."
        ) from exc
    return faiss


def as_vectors(x: np.ndarray, dim: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (n, {dim}), got {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or inf")
    return np.ascontiguousarray(x)


def positive_int(what: str, value: Any) -> int:
    """``value`` as an int >= 1, else a ValueError naming ``what`` (NaN, a string or a bool included)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def as_ids(ids: np.ndarray, n: int) -> np.ndarray:
    ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
    if ids.shape[0] != n:
        raise ValueError(f"{n} vectors but {ids.shape[0]} ids")
    return ids


class VectorIndex(ABC):
    """Common interface: ``add``, ``search`` (squared L2), ``remove``, ``save``/``load``."""

    kind: ClassVar[str]
    #: files this index writes into a save directory
    files: ClassVar[tuple[str, ...]] = ("index.faiss",)

    def __init__(self, dim: int) -> None:
        if dim <= 0:
            raise ValueError(f"dimension must be positive, got {dim}")
        self.dim = int(dim)

    @abstractmethod
    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None: ...

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(squared_distances, ids)`` of shape ``(nq, k)``; missing slots have id ``-1``."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids``; return how many were removed."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of live (searchable) vectors."""

    @abstractmethod
    def save(self, directory: Path) -> None: ...

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, params: dict[str, Any], dim: int, mmap: bool = False) -> VectorIndex: ...

    @property
    def params(self) -> dict[str, Any]:
        """Parameters that rebuild an equivalent index (written to the manifest)."""
        return {}

    @property
    def backend(self) -> str:
        return "faiss"

    def prepare(self) -> None:  # noqa: B027 - a no-op by default, not abstract
        """Finish any deferred work (IVF training) before searching or saving."""

    @property
    def needs_prepare(self) -> bool:
        return False


# --------------------------------------------------------------------------- NumPy fallback
class NumpyIndex(VectorIndex):
    """Exact L2 search in NumPy: the fallback when FAISS is absent, and the benchmark reference.

    Ranks exactly like ``IndexFlatL2`` (ties broken by insertion order) with ragcun's one exact search,
    :func:`ragcun.encoding.search.search`: blocked over queries and documents, candidates re-scored
    in float64.
    """

    kind = "flat"
    files = ("vectors.npy", "ids.npy")

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        super().__init__(dim)
        self._x = np.zeros((capacity, self.dim), np.float32)
        self._sq = np.zeros(capacity, np.float32)
        self._ids = np.zeros(capacity, np.int64)
        self._n = 0

    @property
    def backend(self) -> str:
        return "numpy"

    def __len__(self) -> int:
        return self._n

    @property
    def vectors(self) -> np.ndarray:
        return self._x[: self._n]

    @property
    def ids(self) -> np.ndarray:
        return self._ids[: self._n]

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        x = as_vectors(vectors, self.dim)
        ids = as_ids(ids, x.shape[0])
        need = self._n + x.shape[0]
        if need > self._x.shape[0]:  # amortised growth: memory follows the index, not each call
            cap = max(need, int(self._x.shape[0] * 1.5) + 1)
            for name in ("_x", "_sq", "_ids"):
                old = getattr(self, name)
                new = np.zeros((cap, *old.shape[1:]), old.dtype)
                new[: self._n] = old[: self._n]
                setattr(self, name, new)
        self._x[self._n : need] = x
        self._sq[self._n : need] = np.einsum("ij,ij->i", x, x)
        self._ids[self._n : need] = ids
        self._n = need

    def remove(self, ids: np.ndarray) -> int:
        drop = np.isin(self._ids[: self._n], np.asarray(ids, dtype=np.int64).reshape(-1))
        removed = int(drop.sum())
        if removed:
            keep = np.flatnonzero(~drop)
            m = len(keep)
            self._x[:m], self._sq[:m], self._ids[:m] = self._x[keep], self._sq[keep], self._ids[keep]
            self._n = m
        return removed

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        pos = {int(i): j for j, i in enumerate(self.ids)}
        return np.stack([self._x[pos[int(i)]] for i in np.asarray(ids).reshape(-1)]) if len(ids) else \
            np.zeros((0, self.dim), np.float32)

    def all_ids(self) -> np.ndarray:
        return self.ids.copy()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_vectors(queries, self.dim)
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        return exact_l2(q, self.vectors, self._sq[: self._n], self.ids, k)  # the kept norms save a pass

    def save(self, directory: Path) -> None:
        np.save(Path(directory) / "vectors.npy", self.vectors)
        np.save(Path(directory) / "ids.npy", self.ids)

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any], dim: int, mmap: bool = False) -> NumpyIndex:
        directory = Path(directory)
        try:
            x = np.load(directory / "vectors.npy", allow_pickle=False)
            ids = np.load(directory / "ids.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{directory}: unreadable vectors.npy/ids.npy ({exc})") from exc
        if x.ndim != 2 or x.shape[1] != dim:
            raise ValueError(f"{directory / 'vectors.npy'}: shape {x.shape} does not match dimension {dim}")
        obj = cls(dim, capacity=max(1, x.shape[0]))
        obj.add(x, ids)
        return obj
