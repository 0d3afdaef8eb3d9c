"""The FAISS indexes behind :class:`~ragcun.retrieval.GaussianRetriever`: flat (exact) and IVF
(HNSW: :mod:`ragcun.retrieval.hnsw_index`).

Why the IVF index trains lazily: its coarse quantizer must be trained before vectors can be added,
and training on the first batch only would make "add in several calls" differ from "add in one
call". So vectors are buffered until the first search/save (or an explicit :meth:`IVFIndex.train`),
then the quantizer is trained on everything added so far. Vectors added after that are assigned to
the existing cells.

Why the flat index sometimes searches without FAISS: on the vectors FAISS holds (a zero-copy view),
ragcun's exact search measured faster for few queries over many documents (``NUMPY_MIN_DOCS``,
``NUMPY_MAX_QUERIES`` in :mod:`ragcun.retrieval.index`); same ids, distances re-scored in float64.
"""

from __future__ import annotations

import errno
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from ragcun.retrieval.index import (
    NUMPY_MAX_QUERIES,
    NUMPY_MIN_DOCS,
    VectorIndex,
    _faiss,
    as_ids,
    as_vectors,
    exact_l2,
)

logger = logging.getLogger(__name__)


class _FaissIndex(VectorIndex):
    """Shared FAISS plumbing: an ``IndexIDMap2`` around a base index."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.faiss = _faiss()
        self._index = None  # set by subclasses

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def _search_params(self):
        return None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_vectors(queries, self.dim)
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if len(self) == 0:
            return np.full((q.shape[0], k), np.inf, np.float32), np.full((q.shape[0], k), -1, np.int64)
        params = self._search_params()
        if params is None:
            d, i = self._index.search(q, k)
        else:
            d, i = self._index.search(q, k, params=params)
        return d, i

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        x = as_vectors(vectors, self.dim)
        self._index.add_with_ids(x, as_ids(ids, x.shape[0]))

    def remove(self, ids: np.ndarray) -> int:
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        return int(self._index.remove_ids(self.faiss.IDSelectorBatch(ids)))

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (all three FAISS index types keep raw vectors)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._index.reconstruct(int(i)) for i in ids])

    def all_ids(self) -> np.ndarray:
        return self.faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def save(self, directory: Path) -> None:
        path = Path(directory) / "index.faiss"
        try:
            self.faiss.write_index(self._index, str(path))
        except RuntimeError as exc:  # FAISS's C++ message is a dozen lines: its cause, as an OSError
            full = "No space left" in str(exc)
            err = OSError(f"{path}: FAISS could not write it "
                          f"({'No space left on device' if full else str(exc).splitlines()[0]})")
            err.errno = errno.ENOSPC if full else errno.EIO
            raise err from None

    @classmethod
    def _read(cls, directory: Path, dim: int, mmap: bool, expected: str = "IndexIDMap2"):
        faiss = _faiss()
        path = Path(directory) / "index.faiss"
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError as exc:
            raise ValueError(f"{path}: not a readable FAISS index "
                             f"({str(exc).splitlines()[0][:200]})") from exc
        if index.d != dim:
            raise ValueError(f"{path}: index dimension {index.d} does not match the manifest's {dim}")
        index = faiss.downcast_index(index) if type(index).__name__ == "Index" else index
        ok = (isinstance(index, faiss.IndexIVF) if expected == "IndexIVF"
              else isinstance(index, faiss.IndexIDMap2))
        if not ok:
            raise ValueError(f"{path}: holds a {type(index).__name__}, "
                             f"expected a {expected} ({cls.kind} index)")
        return index


class FlatIndex(_FaissIndex):
    """Exact L2 search (FAISS ``IndexFlatL2`` with an id map)."""

    kind = "flat"

    def __init__(self, dim: int, *, faiss_index: Any = None) -> None:
        super().__init__(dim)
        self._index = (faiss_index if faiss_index is not None
                       else self.faiss.IndexIDMap2(self.faiss.IndexFlatL2(self.dim)))
        # (version, vectors, norms, ids)
        self._view: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._version = 0

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        super().add(vectors, ids)
        self._version += 1

    def remove(self, ids: np.ndarray) -> int:
        self._version += 1
        return super().remove(ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS, or ragcun's exact search on FAISS's own vectors (zero-copy) where that measured faster."""
        q = as_vectors(queries, self.dim)
        n = len(self)
        if k <= 0 or n < NUMPY_MIN_DOCS or q.shape[0] > NUMPY_MAX_QUERIES:
            return super().search(q, k)
        if self._view is None or self._view[0] != self._version:
            flat = self.faiss.downcast_index(self._index.index)
            x = self.faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)
            self._view = (self._version, x, np.einsum("ij,ij->i", x, x), self.all_ids())
        _, x, sq, ids = self._view
        return exact_l2(q, x, sq, ids, k)

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any], dim: int, mmap: bool = False) -> FlatIndex:
        return cls(dim, faiss_index=cls._read(directory, dim, mmap))


class IVFIndex(_FaissIndex):
    """Inverted-file index: vectors bucketed into ``nlist`` k-means cells; ``nprobe`` cells searched.

    ``nlist=None`` picks ``≈ sqrt(n)`` cells at training time (at least 39 training points per
    cell, as FAISS recommends). Larger ``nprobe`` → higher recall, slower queries.
    """

    kind = "ivf"

    def __init__(self, dim: int, nlist: int | None = None, nprobe: int | None = None,
                 max_train_points: int = 256 * 4096, seed: int = 1234, *, faiss_index: Any = None,
                 trained_on: int | None = None) -> None:
        super().__init__(dim)
        if nlist is not None and nlist <= 0:
            raise ValueError(f"nlist must be positive, got {nlist}")
        if nprobe is not None and nprobe <= 0:
            raise ValueError(f"nprobe must be positive, got {nprobe}")
        self._user_nlist = nlist
        self.max_train_points = int(max_train_points)
        self.seed = int(seed)
        self._pending_x: list[np.ndarray] = []
        self._pending_ids: list[np.ndarray] = []
        self._warned = False
        if faiss_index is None:  # a placeholder until trained
            self.nlist, self._nprobe = nlist, nprobe
            self._index = self.faiss.IndexIDMap2(self.faiss.IndexFlatL2(self.dim))
            self._trained, self._trained_on = False, 0
        else:  # a trained index read from disk
            self._index = faiss_index
            self._trained = True
            self._trained_on = int(trained_on or faiss_index.ntotal)
            self.nlist = int(self._ivf().nlist)
            self._nprobe = int(nprobe or self._ivf().nprobe)
            self._ivf().nprobe = self._nprobe

    @property
    def nprobe(self) -> int | None:
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if value <= 0:
            raise ValueError(f"nprobe must be positive, got {value}")
        self._nprobe = int(value)
        if self._trained:
            self._ivf().nprobe = self._nprobe

    def _ivf(self):
        return self.faiss.extract_index_ivf(self._index)

    @property
    def params(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "nprobe": self._nprobe, "max_train_points": self.max_train_points,
                "seed": self.seed, "trained_on": getattr(self, "_trained_on", None)}

    @property
    def needs_prepare(self) -> bool:
        return not self._trained and bool(self._pending_x)

    def __len__(self) -> int:
        if self._trained:
            return int(self._index.ntotal)
        return int(sum(len(i) for i in self._pending_ids))

    @staticmethod
    def auto_nlist(n: int) -> int:
        return max(1, min(int(round(math.sqrt(n))), n // 39))

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        x = as_vectors(vectors, self.dim)
        ids = as_ids(ids, x.shape[0])
        if self._trained:
            self._index.add_with_ids(x, ids)
            n = int(self._index.ntotal)
            if n > 16 * max(self._trained_on, 1) and not self._warned:
                self._warned = True
                logger.warning(
                    "IVF index trained on %d vectors now holds %d; "
                    "call retrain() (or rebuild) for balanced cells",
                    self._trained_on, n,
                )
        else:
            self._pending_x.append(x)
            self._pending_ids.append(ids)

    def train(self) -> None:
        """Train the coarse quantizer on everything added so far, then index it."""
        if self._trained:
            return
        x = np.concatenate(self._pending_x) if self._pending_x else np.zeros((0, self.dim), np.float32)
        ids = np.concatenate(self._pending_ids) if self._pending_ids else np.zeros(0, np.int64)
        n = x.shape[0]
        if n == 0:
            raise ValueError("cannot train an IVF index with no vectors; add documents first")
        nlist = self.nlist or self.auto_nlist(n)
        if n < nlist:
            raise ValueError(f"IVF index: nlist={nlist} cells but only {n} vectors; "
                             "lower nlist or use 'flat'")
        quantizer = self.faiss.IndexFlatL2(self.dim)
        ivf = self.faiss.IndexIVFFlat(quantizer, self.dim, nlist, self.faiss.METRIC_L2)
        ivf.cp.seed = self.seed
        ivf.cp.max_points_per_centroid = max(39, self.max_train_points // nlist)
        logger.info("training IVF quantizer: %d cells on %d vectors", nlist, n)
        ivf.train(x)
        ivf.nprobe = self._nprobe or min(nlist, max(8, nlist // 8))
        # IVF stores caller ids natively (no IndexIDMap: its remove_ids assumes a renumbering
        # sub-index, which IVF is not)
        ivf.add_with_ids(x, ids)
        self._index = ivf
        self.nlist = nlist
        self._nprobe = int(ivf.nprobe)
        self._trained = True
        self._trained_on = n
        self._warned = False
        self._pending_x, self._pending_ids = [], []

    def prepare(self) -> None:
        if self.needs_prepare:
            self.train()

    def retrain(self, nlist: int | None = None) -> None:
        """Re-train the quantizer on all current vectors (after the collection grew a lot)."""
        ids = self.all_ids()
        x = self.reconstruct(ids)
        self._pending_x, self._pending_ids = [x], [ids]
        self._trained = False
        self.nlist = nlist if nlist is not None else self._user_nlist
        self.train()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not self._trained and self._pending_x:
            raise RuntimeError("IVF index not trained yet; call prepare()/train() first")
        return super().search(queries, k)

    def remove(self, ids: np.ndarray) -> int:
        if self._trained:
            return super().remove(ids)
        drop = np.asarray(ids, dtype=np.int64).reshape(-1)
        removed = 0
        for j, (x, i) in enumerate(zip(self._pending_x, self._pending_ids, strict=True)):
            keep = ~np.isin(i, drop)
            removed += int((~keep).sum())
            self._pending_x[j], self._pending_ids[j] = x[keep], i[keep]
        return removed

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        if not self._trained:
            self.train()
        # IVF lists need a (hashtable: ids are arbitrary) direct map to reconstruct by id
        ivf = self._ivf()
        ivf.set_direct_map_type(self.faiss.DirectMap.Hashtable)
        try:
            return super().reconstruct(ids)
        finally:
            ivf.set_direct_map_type(self.faiss.DirectMap.NoMap)

    def all_ids(self) -> np.ndarray:
        if not self._trained:
            return np.concatenate(self._pending_ids) if self._pending_ids else np.zeros(0, np.int64)
        inv = self._ivf().invlists
        out = [self.faiss.rev_swig_ptr(inv.get_ids(li), inv.list_size(li)).copy()
               for li in range(inv.nlist) if inv.list_size(li)]
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

    def save(self, directory: Path) -> None:
        self.prepare()
        super().save(directory)

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any], dim: int, mmap: bool = False) -> IVFIndex:
        return cls(dim, params.get("nlist"), params.get("nprobe"),
                   int(params.get("max_train_points", 256 * 4096)), int(params.get("seed", 1234)),
                   faiss_index=cls._read(directory, dim, mmap, expected="IndexIVF"),
                   trained_on=params.get("trained_on"))
