"""The HNSW graph index (FAISS ``IndexIDMap2(IndexHNSWFlat)``).

Why HNSW removes by tombstone: FAISS cannot delete from an HNSW graph. Removed ids are excluded at
search time with an ``IDSelector`` (no over-fetch needed, results stay exactly ``k`` when enough
live vectors exist); :meth:`HNSWIndex.compact` rebuilds the graph without them, and it is done
automatically when tombstones exceed ``compact_ratio`` of the index.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ragcun.retrieval.faiss_index import _FaissIndex
from ragcun.retrieval.index import _faiss, as_ids, as_vectors

logger = logging.getLogger(__name__)


class HNSWIndex(_FaissIndex):
    """Graph index (HNSW). ``M`` links per node, ``ef_construction`` build beam, ``ef_search`` query beam.

    Removal marks tombstones filtered at query time; :meth:`compact` rebuilds the graph without them.
    """

    kind = "hnsw"
    files = ("index.faiss", "tombstones.npy")

    def __init__(self, dim: int, M: int = 32, ef_construction: int = 80, ef_search: int = 64,
                 compact_ratio: float = 0.25, *, faiss_index: Any = None,
                 tombstones: Iterable[int] = ()) -> None:
        super().__init__(dim)
        for name, v in (("M", M), ("ef_construction", ef_construction), ("ef_search", ef_search)):
            if v <= 0:
                raise ValueError(f"{name} must be positive, got {v}")
        self.M = int(M)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)
        self.compact_ratio = float(compact_ratio)
        self._index = faiss_index if faiss_index is not None else self._new()
        self._tombstones: set[int] = {int(t) for t in tombstones}
        self._selector = None
        self._refresh_selector()

    def _new(self):
        base = self.faiss.IndexHNSWFlat(self.dim, self.M, self.faiss.METRIC_L2)
        base.hnsw.efConstruction = self.ef_construction
        base.hnsw.efSearch = self.ef_search
        return self.faiss.IndexIDMap2(base)

    @property
    def params(self) -> dict[str, Any]:
        return {"M": self.M, "ef_construction": self.ef_construction, "ef_search": self.ef_search,
                "compact_ratio": self.compact_ratio}

    @property
    def tombstones(self) -> int:
        return len(self._tombstones)

    def __len__(self) -> int:
        return int(self._index.ntotal) - len(self._tombstones)

    def _refresh_selector(self) -> None:
        """Build the tombstone filter once per mutation (never during a search, so concurrent
        searches share one object; both SWIG objects are kept referenced here)."""
        if self._tombstones:
            batch = self.faiss.IDSelectorBatch(np.fromiter(self._tombstones, np.int64, len(self._tombstones)))
            self._selector = (batch, self.faiss.IDSelectorNot(batch))
        else:
            self._selector = None

    def _search_params(self):
        sel = self._selector
        if sel is not None:
            return self.faiss.SearchParametersHNSW(sel=sel[1], efSearch=self.ef_search)
        return self.faiss.SearchParametersHNSW(efSearch=self.ef_search)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        params = self._search_params()
        q = as_vectors(queries, self.dim)
        if len(self) == 0:
            return np.full((q.shape[0], k), np.inf, np.float32), np.full((q.shape[0], k), -1, np.int64)
        return self._index.search(q, k, params=params)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        x = as_vectors(vectors, self.dim)
        ids = as_ids(ids, x.shape[0])
        revived = self._tombstones.intersection(ids.tolist())
        if revived:  # an id removed earlier comes back: drop its old vector first
            self.compact()
        super().add(x, ids)

    def remove(self, ids: np.ndarray) -> int:
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        hit = set(ids[np.isin(ids, self.all_ids())].tolist()) - self._tombstones
        self._tombstones |= hit
        self._refresh_selector()
        if self._tombstones and len(self._tombstones) > self.compact_ratio * self._index.ntotal:
            self.compact()
        return len(hit)

    def compact(self) -> None:
        """Rebuild the graph from the live vectors (drops tombstones)."""
        if not self._tombstones:
            return
        ids = self.all_ids()
        keep = ids[~np.isin(ids, np.fromiter(self._tombstones, np.int64, len(self._tombstones)))]
        x = self.reconstruct(keep)
        logger.info("compacting HNSW index: %d live, %d tombstones", len(keep), len(self._tombstones))
        self._index = self._new()
        if len(keep):
            self._index.add_with_ids(x, keep)
        self._tombstones = set()
        self._refresh_selector()

    def save(self, directory: Path) -> None:
        super().save(directory)
        np.save(Path(directory) / "tombstones.npy", np.array(sorted(self._tombstones), dtype=np.int64))

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any], dim: int, mmap: bool = False) -> HNSWIndex:
        index = cls._read(directory, dim, mmap)
        base = _faiss().downcast_index(index.index)
        path = Path(directory) / "tombstones.npy"
        try:
            tomb = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable tombstone file ({exc})") from exc
        return cls(dim, int(params.get("M", base.hnsw.nb_neighbors(1))),
                   int(params.get("ef_construction", base.hnsw.efConstruction)),
                   int(params.get("ef_search", base.hnsw.efSearch)), float(params.get("compact_ratio", 0.25)),
                   faiss_index=index, tombstones=np.asarray(tomb, dtype=np.int64).tolist())


