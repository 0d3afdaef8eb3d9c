"""Vector indexes for L2 search behind one small interface.

* :class:`FlatIndex`   — FAISS ``IndexIDMap2(IndexFlatL2)``: exact, the default.
* :class:`IVFIndex`    — FAISS ``IndexIDMap2(IndexIVFFlat)``: ``nlist`` cells, ``nprobe`` probed.
* :class:`HNSWIndex`   — FAISS ``IndexIDMap2(IndexHNSWFlat)``: graph search (``M``, ``ef_construction``,
  ``ef_search``).
* :class:`NumpyIndex`  — exact search in NumPy, used when FAISS is not installed; same results as flat.

Every index maps caller-chosen ``int64`` ids to vectors and returns *squared* L2 distances (as FAISS
does); :class:`~ragcun.retrieval.retriever.GaussianRetriever` takes the square root.

Why the IVF index trains lazily: its coarse quantizer must be trained before vectors can be added,
and training on the first batch only would make "add in several calls" differ from "add in one
call". So vectors are buffered until the first search/save (or an explicit :meth:`IVFIndex.train`),
then the quantizer is trained on everything added so far. Vectors added after that are assigned to
the existing cells.

Why HNSW removes by tombstone: FAISS cannot delete from an HNSW graph. Removed ids are excluded at
search time with an ``IDSelector`` (no over-fetch needed, results stay exactly ``k`` when enough
live vectors exist); :meth:`HNSWIndex.compact` rebuilds the graph without them, and it is done
automatically when tombstones exceed ``compact_ratio`` of the index.
"""

from __future__ import annotations

import hashlib
import logging
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

logger = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "ivf", "hnsw")


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


def weights_fingerprint(model: Any, samples_per_tensor: int = 256) -> str:
    """A cheap identity of a model's weights: sha256 over each tensor's name, shape, dtype and a
    strided sample of its values.

    Cheap (a few hundred values per tensor, not the whole model) yet any retraining, a different
    head or a different base changes it. Used to refuse loading an index with another model.
    """
    import torch

    state = model.state_dict() if hasattr(model, "state_dict") else dict(model)
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        h.update(name.encode())
        h.update(repr(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        flat = t.detach().reshape(-1)
        if flat.numel():
            step = max(1, flat.numel() // samples_per_tensor)
            sample = flat[::step][:samples_per_tensor].to("cpu", torch.float64).numpy()
            h.update(np.ascontiguousarray(sample).tobytes())
    return h.hexdigest()


def _as_vectors(x: np.ndarray, dim: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (n, {dim}), got {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or inf")
    return np.ascontiguousarray(x)


def _as_ids(ids: np.ndarray, n: int) -> np.ndarray:
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


# --------------------------------------------------------------------------- FAISS indexes
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
        q = _as_vectors(queries, self.dim)
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
        x = _as_vectors(vectors, self.dim)
        self._index.add_with_ids(x, _as_ids(ids, x.shape[0]))

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
        self.faiss.write_index(self._index, str(Path(directory) / "index.faiss"))

    @classmethod
    def _read(cls, directory: Path, dim: int, mmap: bool, expected: str = "IndexIDMap2"):
        faiss = _faiss()
        path = Path(directory) / "index.faiss"
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError as exc:
            raise ValueError(f"{path}: not a readable FAISS index ({str(exc).splitlines()[0][:200]})") from exc
        if index.d != dim:
            raise ValueError(f"{path}: index dimension {index.d} does not match the manifest's {dim}")
        index = faiss.downcast_index(index) if type(index).__name__ == "Index" else index
        ok = isinstance(index, faiss.IndexIVF) if expected == "IndexIVF" else isinstance(index, faiss.IndexIDMap2)
        if not ok:
            raise ValueError(f"{path}: holds a {type(index).__name__}, expected a {expected} ({cls.kind} index)")
        return index


class FlatIndex(_FaissIndex):
    """Exact L2 search (FAISS ``IndexFlatL2`` with an id map)."""

    kind = "flat"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._index = self.faiss.IndexIDMap2(self.faiss.IndexFlatL2(self.dim))

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any], dim: int, mmap: bool = False) -> FlatIndex:
        obj = cls.__new__(cls)
        VectorIndex.__init__(obj, dim)
        obj.faiss = _faiss()
        obj._index = cls._read(directory, dim, mmap)
        return obj


class IVFIndex(_FaissIndex):
    """Inverted-file index: vectors bucketed into ``nlist`` k-means cells; ``nprobe`` cells searched.

    ``nlist=None`` picks ``≈ sqrt(n)`` cells at training time (at least 39 training points per
    cell, as FAISS recommends). Larger ``nprobe`` → higher recall, slower queries.
    """

    kind = "ivf"

    def __init__(self, dim: int, nlist: int | None = None, nprobe: int | None = None,
                 max_train_points: int = 256 * 4096, seed: int = 1234) -> None:
        super().__init__(dim)
        if nlist is not None and nlist <= 0:
            raise ValueError(f"nlist must be positive, got {nlist}")
        if nprobe is not None and nprobe <= 0:
            raise ValueError(f"nprobe must be positive, got {nprobe}")
        self.nlist = nlist
        self._user_nlist = nlist
        self._nprobe = nprobe
        self.max_train_points = int(max_train_points)
        self.seed = int(seed)
        self._pending_x: list[np.ndarray] = []
        self._pending_ids: list[np.ndarray] = []
        self._index = self.faiss.IndexIDMap2(self.faiss.IndexFlatL2(self.dim))  # placeholder until trained
        self._trained = False
        self._trained_on = 0
        self._warned = False

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
        x = _as_vectors(vectors, self.dim)
        ids = _as_ids(ids, x.shape[0])
        if self._trained:
            self._index.add_with_ids(x, ids)
            n = int(self._index.ntotal)
            if n > 16 * max(self._trained_on, 1) and not self._warned:
                self._warned = True
                logger.warning(
                    "IVF index trained on %d vectors now holds %d; call retrain() (or rebuild) for balanced cells",
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
            raise ValueError(f"IVF index: nlist={nlist} cells but only {n} vectors; lower nlist or use 'flat'")
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
        obj = cls.__new__(cls)
        VectorIndex.__init__(obj, dim)
        obj.faiss = _faiss()
        obj._index = cls._read(directory, dim, mmap, expected="IndexIVF")
        obj._trained = True
        obj._trained_on = int(params.get("trained_on") or obj._index.ntotal)
        obj._warned = False
        obj._user_nlist = params.get("nlist")
        obj._pending_x, obj._pending_ids = [], []
        obj.nlist = int(obj._ivf().nlist)
        obj.max_train_points = int(params.get("max_train_points", 256 * 4096))
        obj.seed = int(params.get("seed", 1234))
        obj._nprobe = int(params.get("nprobe") or obj._ivf().nprobe)
        obj._ivf().nprobe = obj._nprobe
        return obj


class HNSWIndex(_FaissIndex):
    """Graph index (HNSW). ``M`` links per node, ``ef_construction`` build beam, ``ef_search`` query beam.

    Removal marks tombstones filtered at query time; :meth:`compact` rebuilds the graph without them.
    """

    kind = "hnsw"
    files = ("index.faiss", "tombstones.npy")

    def __init__(self, dim: int, M: int = 32, ef_construction: int = 80, ef_search: int = 64,
                 compact_ratio: float = 0.25) -> None:
        super().__init__(dim)
        for name, v in (("M", M), ("ef_construction", ef_construction), ("ef_search", ef_search)):
            if v <= 0:
                raise ValueError(f"{name} must be positive, got {v}")
        self.M = int(M)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)
        self.compact_ratio = float(compact_ratio)
        self._index = self._new()
        self._tombstones: set[int] = set()
        self._selector = None

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
        q = _as_vectors(queries, self.dim)
        if len(self) == 0:
            return np.full((q.shape[0], k), np.inf, np.float32), np.full((q.shape[0], k), -1, np.int64)
        return self._index.search(q, k, params=params)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        x = _as_vectors(vectors, self.dim)
        ids = _as_ids(ids, x.shape[0])
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
        obj = cls.__new__(cls)
        VectorIndex.__init__(obj, dim)
        obj.faiss = _faiss()
        obj._index = cls._read(directory, dim, mmap)
        base = obj.faiss.downcast_index(obj._index.index)
        obj.M = int(params.get("M", base.hnsw.nb_neighbors(1)))
        obj.ef_construction = int(params.get("ef_construction", base.hnsw.efConstruction))
        obj.ef_search = int(params.get("ef_search", base.hnsw.efSearch))
        obj.compact_ratio = float(params.get("compact_ratio", 0.25))
        path = Path(directory) / "tombstones.npy"
        try:
            tomb = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable tombstone file ({exc})") from exc
        obj._tombstones = set(np.asarray(tomb, dtype=np.int64).tolist())
        obj._refresh_selector()
        return obj


# --------------------------------------------------------------------------- NumPy fallback
class NumpyIndex(VectorIndex):
    """Exact L2 search in NumPy: the fallback when FAISS is absent, and the benchmark reference.

    Ranks exactly like ``IndexFlatL2`` (squared distances ``|q|² - 2 q·x + |x|²``, ties broken by
    insertion order), in blocks so memory stays bounded for large collections.
    """

    kind = "flat"
    files = ("vectors.npy", "ids.npy")
    block_floats = 1 << 24  # size of one (queries × docs) distance block: 64 MB of float32

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
        x = _as_vectors(vectors, self.dim)
        ids = _as_ids(ids, x.shape[0])
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
        q = _as_vectors(queries, self.dim)
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        nq, n = q.shape[0], self._n
        out_d = np.full((nq, k), np.inf, np.float32)
        out_i = np.full((nq, k), -1, np.int64)
        if n == 0:
            return out_d, out_i
        kk = min(k, n)
        x, sq, ids = self._x[:n], self._sq[:n], self._ids[:n]
        qsq = np.einsum("ij,ij->i", q, q)
        rows = max(1, self.block_floats // n)
        for s in range(0, nq, rows):
            e = min(nq, s + rows)
            d = qsq[s:e, None] - 2.0 * (q[s:e] @ x.T) + sq[None, :]
            # shortlist with the fast float32 expansion (a margin absorbs its rounding), then rank
            # the shortlist by exact float64 distances so equal vectors tie exactly
            kc = min(n, 2 * kk + 8)
            if kc < n:
                cand = np.argpartition(d, kc - 1, axis=1)[:, :kc]
            else:
                cand = np.broadcast_to(np.arange(n), (e - s, n))
            exact = self._exact(q[s:e], cand)
            # sort by distance, then by insertion position (FAISS's tie order)
            order = np.lexsort((cand, exact), axis=1)[:, :kk]
            out_d[s:e, :kk] = np.take_along_axis(exact, order, axis=1)
            out_i[s:e, :kk] = ids[np.take_along_axis(cand, order, axis=1)]
        return out_d, out_i

    def _exact(self, q: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Exact squared distances (float64) between each query row and its candidate rows."""
        out = np.empty(cand.shape, np.float64)
        step = max(1, (1 << 22) // max(1, cand.shape[1] * self.dim))
        for s in range(0, q.shape[0], step):
            diff = self._x[cand[s : s + step]].astype(np.float64) - q[s : s + step, None, :].astype(np.float64)
            out[s : s + step] = np.einsum("rkd,rkd->rk", diff, diff)
        return out

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

    @classmethod
    def from_faiss(cls, index: _FaissIndex) -> NumpyIndex:
        ids = index.all_ids()
        obj = cls(index.dim, capacity=max(1, len(ids)))
        obj.add(index.reconstruct(ids), ids)
        return obj


# --------------------------------------------------------------------------- factory
def make_index(kind: str, dim: int, backend: str = "auto", **params: Any) -> VectorIndex:
    """Build an empty index. ``backend='auto'`` uses FAISS when installed, else NumPy (flat only)."""
    kind = kind.lower()
    if kind not in INDEX_TYPES:
        raise ValueError(f"index must be one of {', '.join(INDEX_TYPES)}; got {kind!r}")
    if backend not in ("auto", "faiss", "numpy"):
        raise ValueError(f"backend must be 'auto', 'faiss' or 'numpy'; got {backend!r}")
    use_numpy = backend == "numpy" or (backend == "auto" and not faiss_available())
    if use_numpy:
        if kind != "flat":
            raise ImportError(f"index={kind!r} needs FAISS (`pip install ragcun[retrieval]`); "
                              "without it only index='flat' (exact NumPy search) is available")
        if backend == "auto":
            logger.warning("FAISS not installed: using exact NumPy search (same results, slower on large sets)")
        return NumpyIndex(dim, **params)
    cls = {"flat": FlatIndex, "ivf": IVFIndex, "hnsw": HNSWIndex}[kind]
    return cls(dim, **params)


def load_index(directory: Path, kind: str, backend: str, dim: int, params: dict[str, Any],
               mmap: bool = False) -> VectorIndex:
    """Load the index saved in ``directory`` (the manifest says which kind and backend)."""
    if backend == "numpy":
        return NumpyIndex.load(directory, params, dim)
    if backend != "faiss":
        raise ValueError(f"unknown index backend {backend!r} in the manifest")
    if not faiss_available():
        raise ImportError(f"{directory} holds a FAISS index; install FAISS to load it (`pip install ragcun[retrieval]`)")
    cls = {"flat": FlatIndex, "ivf": IVFIndex, "hnsw": HNSWIndex}.get(kind)
    if cls is None:
        raise ValueError(f"unknown index type {kind!r} in the manifest")
    return cls.load(directory, params, dim, mmap=mmap)

