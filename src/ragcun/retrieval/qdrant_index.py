"""Qdrant as the vector engine behind :class:`~ragcun.retrieval.GaussianRetriever` (``engine="qdrant"``).

Why Qdrant: the same ``qdrant-client`` talks to an embedded local engine (tests, a laptop) and to a Qdrant
server or cluster (``url=``), so an index outgrows one machine by changing one argument. The metric is
``Euclid`` everywhere and nothing normalises, so the norm is kept and ranking is ragcun's L2; ``index="flat"``
asks Qdrant for exact search, ``index="hnsw"`` for its HNSW graph. Ids, texts and metadata stay in ragcun's
document store; Qdrant holds the vectors under ragcun's int64 ids.

Saving writes ``qdrant.json`` (where the collection lives) and the vectors with their ids (``vectors.npy``,
``ids.npy``), hash-checked by the manifest like every index file: an embedded index is rebuilt from them on
load, a server collection is checked against them (count and dimension) and refused when it differs. The
collection's metadata records the dimension and metric.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ragcun.retrieval.index import VectorIndex, as_ids, as_vectors, positive_int

BATCH = 1024


def _qdrant():
    try:
        import qdrant_client
        from qdrant_client import models
    except ImportError as exc:
        raise ImportError("backend='qdrant' needs qdrant-client: pip install 'ragcun[qdrant]'") from exc
    return qdrant_client, models


class QdrantIndex(VectorIndex):
    """Vectors in a Qdrant collection (embedded in memory, or on a server given ``url``)."""

    files: ClassVar[tuple[str, ...]] = ("qdrant.json", "vectors.npy", "ids.npy")

    def __init__(self, dim: int, exact: bool = True, url: str | None = None, collection: str | None = None,
                 hnsw_ef: int = 128) -> None:
        super().__init__(dim)
        client_mod, models = _qdrant()
        self.kind = "flat" if exact else "hnsw"
        self.exact = bool(exact)
        self.url = url
        self.hnsw_ef = positive_int("backend='qdrant': hnsw_ef", hnsw_ef)
        self.collection = collection or f"ragcun-{uuid.uuid4().hex[:12]}"
        self.client = client_mod.QdrantClient(url=url) if url else client_mod.QdrantClient(":memory:")
        self._models = models
        if not self.client.collection_exists(self.collection):
            self.client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(size=self.dim, distance=models.Distance.EUCLID),
                metadata={"created_by": "ragcun", "dim": self.dim, "metric": "l2"})
        else:
            size = self.client.get_collection(self.collection).config.params.vectors.size
            if size != self.dim:
                raise ValueError(f"Qdrant collection {self.collection!r} holds {size}-d vectors, "
                                 f"this model makes {self.dim}-d ones")

    @property
    def backend(self) -> str:
        return "qdrant"

    @property
    def params(self) -> dict[str, Any]:
        return {"url": self.url, "collection": self.collection, "hnsw_ef": self.hnsw_ef}

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        x = as_vectors(vectors, self.dim)
        ids = as_ids(ids, x.shape[0])
        if (ids < 0).any():
            raise ValueError("Qdrant point ids must be >= 0")
        for s in range(0, len(ids), BATCH):
            self.client.upsert(self.collection, points=self._models.Batch(
                ids=[int(i) for i in ids[s:s + BATCH]], vectors=x[s:s + BATCH].tolist()), wait=True)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_vectors(queries, self.dim)
        out_d = np.full((q.shape[0], k), np.inf, np.float32)
        out_i = np.full((q.shape[0], k), -1, np.int64)
        params = self._models.SearchParams(exact=self.exact,
                                           hnsw_ef=None if self.exact else max(self.hnsw_ef, k))
        requests = [self._models.QueryRequest(query=row.tolist(), limit=k, params=params) for row in q]
        for r, res in enumerate(self.client.query_batch_points(self.collection, requests=requests)):
            for c, point in enumerate(res.points):
                out_d[r, c] = float(point.score) ** 2  # Euclid scores are distances; the interface is squared
                out_i[r, c] = int(point.id)
        return out_d, out_i

    def remove(self, ids: np.ndarray) -> int:
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        present = ({int(p.id) for p in self.client.retrieve(self.collection, ids=ids, with_vectors=False)}
                   if ids else set())
        if present:
            self.client.delete(self.collection,
                               points_selector=self._models.PointIdsList(points=sorted(present)), wait=True)
        return len(present)

    def __len__(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids``, in that order (every id must be present)."""
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        got = {int(p.id): p.vector for p in self.client.retrieve(self.collection, ids=ids, with_vectors=True)}
        return np.asarray([got[i] for i in ids], dtype=np.float32).reshape(len(ids), self.dim)

    def _export(self) -> tuple[np.ndarray, np.ndarray]:
        ids, vecs, offset = [], [], None
        while True:
            points, offset = self.client.scroll(self.collection, limit=BATCH, offset=offset,
                                                with_vectors=True, with_payload=False)
            ids += [int(p.id) for p in points]
            vecs += [p.vector for p in points]
            if offset is None:
                break
        order = np.argsort(np.asarray(ids, dtype=np.int64), kind="stable")
        x = np.asarray(vecs, dtype=np.float32).reshape(-1, self.dim)[order]
        return x, np.asarray(ids, dtype=np.int64)[order]

    def save(self, directory: Path) -> None:
        x, ids = self._export()
        np.save(directory / "vectors.npy", x)
        np.save(directory / "ids.npy", ids)
        (directory / "qdrant.json").write_text(json.dumps({"exact": self.exact, **self.params}, indent=2)
                                               + "\n")

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any], dim: int, mmap: bool = False) -> QdrantIndex:
        info = json.loads((directory / "qdrant.json").read_text(encoding="utf-8"))
        x = np.load(directory / "vectors.npy")
        ids = np.load(directory / "ids.npy")
        if x.ndim != 2 or x.shape[1] != dim or ids.shape[0] != x.shape[0]:
            raise ValueError(f"{directory}: vectors {x.shape} and {ids.shape[0]} ids do not match "
                             f"dimension {dim}")
        url = info.get("url")
        obj = cls(dim, exact=bool(info.get("exact", True)), url=url,
                  collection=info.get("collection") if url else None, hnsw_ef=int(info.get("hnsw_ef", 128)))
        if url:  # a server collection: it must still hold what was saved
            if len(obj) != x.shape[0]:
                raise ValueError(f"Qdrant collection {obj.collection!r} at {url} holds {len(obj)} vectors, "
                                 f"the saved index {x.shape[0]}: it changed since {directory} was saved")
        else:
            obj.add(x, ids)
        return obj
