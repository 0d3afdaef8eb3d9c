"""Hybrid search on a live :class:`~ragcun.retrieval.GaussianRetriever`: its L2 ranking and BM25 over the same
documents, fused per query by :mod:`ragcun.encoding.fusion` (the one place scores are combined).

Why: a dense model and BM25 fail on different queries. On NFCorpus test MiniLM's score z-scored plus
0.5 × BM25 z-scored scores 35.8 NDCG@10 against 31.5 and 32.1 for either alone (``ragcun evaluate --hybrid``).

How a query is answered (exact, for every engine):

* the candidates are the union of the dense index's top ``depth`` and BM25's top ``depth`` (every document
  when the index holds at most :data:`EXHAUSTIVE` of them, so the fusion's statistics are the corpus's and
  the ranking equals ``ragcun evaluate --hybrid`` with ``score = l2``);
* every candidate gets both scores: its true L2 distance (a BM25-only candidate's vector is read back from
  the engine) and its BM25 score over the current corpus;
* the fused ranking is filtered (``filter=``) and fetched deeper, ×4 at a time, until ``top_k`` hits match.

BM25 (bm25s, the same tokenisation as :mod:`ragcun.data.bm25`) is built from the stored texts on first use
and rebuilt when documents were added or removed since, so its statistics are always those of the index's
current documents; a saved index carries it (hash-checked like every other file).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragcun.data.bm25 import BM25Index, BM25Params
from ragcun.encoding.fusion import Fusion, bm25_scores, fuse
from ragcun.retrieval.errors import IndexCorruptError
from ragcun.retrieval.results import SearchResult

logger = logging.getLogger(__name__)

#: an index up to this size fuses over every document (the corpus's statistics, as ``evaluate --hybrid``)
EXHAUSTIVE = 20_000
#: above it, each scorer's top this-many documents (their union) are the candidates
DEFAULT_CANDIDATES = 1_000
BM25_DIR = "bm25"


def as_fusion(spec: Any, default: Fusion | None = None) -> Fusion | None:
    """A search's ``hybrid=`` as a fusion: None/False → dense only, True → ``default`` (else the standard
    z-score fusion, BM25 weighted 0.5), a :class:`Fusion` → itself; anything else is refused in one line."""
    if spec is None or spec is False:
        return None
    if spec is True:
        return default or Fusion()
    if isinstance(spec, Fusion):
        return spec
    raise TypeError(f"hybrid must be True, False, None or a ragcun Fusion, got {type(spec).__name__}")


class LexicalIndex:
    """BM25 over a document store's texts, kept current with the store's version (rebuilt on demand)."""

    def __init__(self, params: BM25Params | None = None) -> None:
        self.params = params or BM25Params()
        self.bm25: BM25Index | None = None
        self.iids = np.zeros(0, dtype=np.int64)  # BM25 row -> the document's iid (ascending)
        self.version = -1
        self.builds = 0
        self._lock = threading.Lock()

    def current(self, store: Any) -> tuple[BM25Index, np.ndarray]:
        """The BM25 index of ``store``'s documents as they are now (rebuilt if they changed), its row iids."""
        with self._lock:
            if self.bm25 is None or self.version != store.version:
                t0 = time.perf_counter()
                iids, texts, version = store.texts()
                self.bm25 = BM25Index.build([str(i) for i in iids], texts, self.params, show_progress=False)
                self.iids, self.version = np.asarray(iids, dtype=np.int64), version
                self.builds += 1
                logger.info("BM25 over %d documents built in %.2fs", len(iids), time.perf_counter() - t0)
            return self.bm25, self.iids

    def save(self, directory: Path, store: Any) -> list[str]:
        """Write the (current) BM25 index under ``directory/bm25``; return its files, relative to
        ``directory``."""
        bm25, _ = self.current(store)
        target = directory / BM25_DIR
        bm25.save(target)
        return sorted(str(p.relative_to(directory)) for p in target.rglob("*") if p.is_file())

    @classmethod
    def load(cls, directory: Path, store: Any) -> LexicalIndex:
        """The BM25 index saved beside ``store`` (files already hash-checked); it must cover exactly the
        store's documents."""
        path = directory / BM25_DIR
        try:
            bm25 = BM25Index.load(path, mmap=False)
        except (OSError, ValueError, KeyError) as exc:
            raise IndexCorruptError(f"{path}: unreadable BM25 index ({exc})") from exc
        iids, _, version = store.texts()
        if bm25.doc_ids != [str(i) for i in iids]:
            raise IndexCorruptError(f"{path}: the BM25 index covers {len(bm25.doc_ids)} documents that are "
                                    f"not the store's {len(iids)}")
        out = cls(bm25.params)
        out.bm25, out.iids, out.version = bm25, np.asarray(iids, dtype=np.int64), version
        return out


def search(
    retriever: Any,
    queries: Sequence[str],
    q: np.ndarray,
    top_k: int,
    fusion: Fusion,
    keep: Callable[[SearchResult], bool] | None = None,
    candidates: int | None = None,
) -> list[list[SearchResult]]:
    """The fused top ``top_k`` of each query (texts ``queries``, embeddings ``q``) on ``retriever``'s index.

    Hits keep their true L2 ``distance`` and carry the fused score as ``hybrid_score`` (the rank's order).
    """
    if candidates is not None and (isinstance(candidates, bool) or not isinstance(candidates, int)
                                   or candidates < 1):
        raise ValueError(f"candidates must be a positive integer, got {candidates!r}")
    out: list[list[SearchResult]] = [[] for _ in queries]
    with retriever._lock.read():  # one consistent view: no write lands between the two scorers
        n = len(retriever.store)
        if n == 0:
            return out
        bm25, rows = retriever.lexical.current(retriever.store)
        lexical = (bm25_scores(bm25, list(queries)) if fusion.weights.get("bm25")
                   else np.zeros((len(queries), len(rows))))
        depth = n if candidates is None and n <= EXHAUSTIVE else min(candidates or DEFAULT_CANDIDATES, n)
        depth = max(depth, min(top_k, n))
        todo = list(range(len(queries)))
        while todo:
            sq, iid = retriever.index.search(q[todo], depth)
            left = []
            for j, row in enumerate(todo):
                ranked = _fused(retriever, q[row], sq[j], iid[j], lexical[row], rows, depth, fusion)
                kept = list(_hits(retriever.store, *ranked, keep, top_k))
                if len(kept) < top_k and depth < n:
                    left.append(row)
                out[row] = kept
            todo, depth = left, min(depth * 4, n)
    return out


def _fused(retriever: Any, qv: np.ndarray, sq: np.ndarray, iid: np.ndarray, lexical: np.ndarray,
           rows: np.ndarray, depth: int, fusion: Fusion) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One query's candidates (dense top ∪ BM25 top) with both scores each, fused: (iids, distances, fused
    scores), best first (ties by iid)."""
    ok = iid >= 0
    dense_iids, dense_sq = iid[ok], sq[ok].astype(np.float64)
    top = np.argsort(-lexical, kind="stable")[:depth]
    extra = np.setdiff1d(rows[top[lexical[top] > 0]], dense_iids)
    if extra.size:  # BM25-only candidates: their true distance from the stored vectors
        vecs = np.asarray(retriever._vectors(extra, locked=True), dtype=np.float64)
        extra_sq = ((vecs - qv.astype(np.float64)) ** 2).sum(axis=1)
        dense_iids, dense_sq = np.concatenate([dense_iids, extra]), np.concatenate([dense_sq, extra_sq])
    by_iid = np.argsort(dense_iids, kind="stable")  # insertion order: RRF's ties are broken as the corpus's
    dense_iids, dense_sq = dense_iids[by_iid], dense_sq[by_iid]
    dist = np.sqrt(np.maximum(dense_sq, 0.0))
    pos = np.minimum(np.searchsorted(rows, dense_iids), max(len(rows) - 1, 0))
    if len(rows) == 0 or not np.array_equal(rows[pos], dense_iids):
        raise IndexCorruptError("the BM25 index and the vector index hold different documents")
    fused = fuse({"dense": -dist[None, :], "bm25": lexical[pos][None, :]}, fusion)[0]
    order = np.lexsort((dense_iids, -fused))
    return dense_iids[order], dist[order], fused[order]


def _hits(store: Any, iids: np.ndarray, dist: np.ndarray, fused: np.ndarray,
          keep: Callable[[SearchResult], bool] | None, top_k: int) -> Iterator[SearchResult]:
    """The ranked candidates as hits, read from the store a block at a time, until ``top_k`` pass ``keep``."""
    rank, block = 0, max(4 * top_k, 64)
    for start in range(0, len(iids), block):
        docs = store.get_many(iids[start:start + block].tolist())
        for i in range(start, min(start + block, len(iids))):
            doc = docs.get(int(iids[i]))
            if doc is None:
                continue
            did, text, meta, norm = doc
            hit = SearchResult(id=did, text=text, distance=float(dist[i]), norm=norm, rank=rank + 1,
                               metadata=meta, hybrid_score=float(fused[i]))
            if keep is None or keep(hit):
                rank += 1
                yield hit
                if rank == top_k:
                    return
