"""Exact top-k search over a corpus that never needs to fit in memory at once.

The corpus arrives in chunks (an array, a memory-mapped ``.npy``, or an iterator of arrays);
each chunk is scored against a block of queries and merged into a running top-k, so memory
is bounded by ``query_block × chunk_size`` scores plus ``n_queries × top_k`` results — never a
full query×document matrix.

Scores (higher is better, so every score ranks the same way):

* ``l2``: ``-‖q − d‖``, the true Euclidean distance (not squared), as ragcun models rank;
* ``cos``: cosine similarity;
* ``dot``: inner product.

Candidates are found with matrix products (``‖q‖² + ‖d‖² − 2q·d`` for L2, by torch or FAISS);
the kept top-k are then re-scored exactly in float64 from the vectors themselves, so the
returned L2 values are the true distances, not the cancellation-prone expansion.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

Score = Literal["l2", "cos", "dot"]
SCORES: tuple[str, ...] = ("l2", "cos", "dot")

#: sentence-transformers ``similarity_fn_name`` -> ragcun score.
SIMILARITY_TO_SCORE = {"euclidean": "l2", "cosine": "cos", "dot": "dot", "manhattan": None}


def check_score(score: str) -> str:
    s = score.lower()
    aliases = {"euclidean": "l2", "cosine": "cos", "cos_sim": "cos", "dot_product": "dot", "ip": "dot"}
    s = aliases.get(s, s)
    if s not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)} (got {score!r})")
    return s


def _as_2d_float32(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x if x.flags.writeable else np.array(x)  # a read-only memmap chunk: one chunk-sized copy for torch


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class TopK:
    """A running top-k per query: merge scored chunks, keep the best ``k`` (ties: lower corpus index
    first)."""

    def __init__(self, n_queries: int, k: int) -> None:
        self.k = int(k)
        self.scores = np.full((n_queries, 0), -np.inf, dtype=np.float64)
        self.indices = np.zeros((n_queries, 0), dtype=np.int64)

    def push(self, scores: np.ndarray, indices: np.ndarray, rows: slice | None = None) -> None:
        """Merge candidate ``scores``/``indices`` (n_rows, m) for ``rows`` of the queries."""
        rows = rows or slice(0, self.scores.shape[0])
        s = np.concatenate([self._pad(self.scores)[rows], scores.astype(np.float64)], axis=1)
        i = np.concatenate([self._pad_idx(self.indices)[rows], indices.astype(np.int64)], axis=1)
        order = _sort_desc(s, i)[:, : self.k]
        new_s = np.take_along_axis(s, order, axis=1)
        new_i = np.take_along_axis(i, order, axis=1)
        if self.scores.shape[1] != new_s.shape[1]:
            self.scores = self._pad(self.scores, new_s.shape[1])
            self.indices = self._pad_idx(self.indices, new_s.shape[1])
        self.scores[rows], self.indices[rows] = new_s, new_i

    def _pad(self, a: np.ndarray, width: int | None = None) -> np.ndarray:
        width = a.shape[1] if width is None else width
        if a.shape[1] >= width:
            return a
        return np.concatenate([a, np.full((a.shape[0], width - a.shape[1]), -np.inf)], axis=1)

    def _pad_idx(self, a: np.ndarray, width: int | None = None) -> np.ndarray:
        width = a.shape[1] if width is None else width
        if a.shape[1] >= width:
            return a
        return np.concatenate([a, np.full((a.shape[0], width - a.shape[1]), -1, dtype=np.int64)], axis=1)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.scores.astype(np.float32), self.indices


def _sort_desc(scores: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Per-row order: score descending, then corpus index ascending (missing -1 entries last)."""
    idx_key = np.where(indices < 0, np.iinfo(np.int64).max, indices)
    return np.lexsort((idx_key, -scores), axis=-1)


def _chunk_topk_torch(q: np.ndarray, d: np.ndarray, score: str, k: int, q_sq: np.ndarray,
                      d_sq: np.ndarray | None, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of one (query block, corpus chunk) product, by one fused BLAS call and ``torch.topk``.

    For L2 the ranking key is ``2q·d − ‖d‖²`` (``addmm``: the product and the bias in one pass over the
    score block, which is what bounds the speed at 1M documents); ``‖q‖²`` is subtracted from the kept
    ``k`` only, giving ``−‖q − d‖²``. ``out`` (at least q × d, reused across chunks) spares a
    fresh allocation of the score block each time (10 % at 1M × 512).
    """
    import torch

    qt, dt = torch.from_numpy(q), torch.from_numpy(d)
    sims = torch.from_numpy(out.reshape(-1)[: q.shape[0] * d.shape[0]].reshape(q.shape[0], d.shape[0]))
    if score == "l2":
        torch.addmm(torch.from_numpy(d_sq).neg(), qt, dt.T, alpha=2.0, out=sims)
    else:
        torch.mm(qt, dt.T, out=sims)
    vals, idx = torch.topk(sims, k, dim=1, sorted=False)
    if score == "l2":
        vals = (vals - torch.from_numpy(q_sq)[:, None]).clamp_max_(0.0)
    return vals.numpy(), idx.numpy()


def _chunk_topk_faiss(q: np.ndarray, d: np.ndarray, score: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    metric = faiss.METRIC_L2 if score == "l2" else faiss.METRIC_INNER_PRODUCT
    dist, idx = faiss.knn(q, d, k, metric=metric)
    return (-dist if score == "l2" else dist), idx


def iter_chunks(corpus_emb: np.ndarray, chunk_size: int) -> list[np.ndarray]:
    """Row slices of ``corpus_emb`` (views; a memory-mapped array stays on disk)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [corpus_emb[start : start + chunk_size] for start in range(0, corpus_emb.shape[0], chunk_size)]


def gather_rows(chunks: Sequence[np.ndarray], indices: np.ndarray) -> np.ndarray:
    """Rows ``indices`` (global, -1 = missing -> zeros) of the concatenation of ``chunks``, as float64."""
    sizes = np.array([c.shape[0] for c in chunks], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    flat = indices.reshape(-1)
    out = np.zeros((flat.shape[0], chunks[0].shape[1]), dtype=np.float64)
    which = np.searchsorted(starts, flat, side="right") - 1
    for c in np.unique(which[flat >= 0]):
        sel = np.nonzero((which == c) & (flat >= 0))[0]
        local = flat[sel] - starts[c]
        order = np.argsort(local, kind="stable")  # sorted reads are kind to memory maps
        out[sel[order]] = np.asarray(chunks[c][local[order]], dtype=np.float64)
    return out.reshape(*indices.shape, -1)


def search_chunks(
    query_emb: np.ndarray,
    chunks: Iterable[np.ndarray],
    top_k: int,
    score: str = "l2",
    query_block: int = 1024,
    backend: Literal["torch", "faiss"] = "torch",
    offsets: Sequence[int] | None = None,
    sq_norms: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``query_emb`` against a corpus given as consecutive ``chunks``, with a running top-k.

    Returns ``(scores, indices)`` of shape (n_queries, min(top_k, corpus size)), best first;
    ``indices`` are global row numbers in the concatenated corpus; pass ``offsets`` (the global
    row of each chunk's first row) when the chunks are not consecutive, e.g. one rank's shard, and
    ``sq_norms`` (each chunk's squared row norms) when they are known, as an index keeps them.
    Scores are float32 from the matrix products (for ``l2``: ``-sqrt`` of the expanded squared
    distance); :func:`search` re-scores them exactly.
    """
    score = check_score(score)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    q = _as_2d_float32(query_emb, "query_emb")
    if score == "cos":
        q = _normalise(q).astype(np.float32)
    q_sq = (q.astype(np.float64) ** 2).sum(1).astype(np.float32)
    top = TopK(q.shape[0], top_k)
    offset = 0
    sq = list(sq_norms) if sq_norms is not None and score == "l2" else None
    buffer = np.empty(0, np.float32)
    for n, chunk in enumerate(chunks):
        if offsets is not None:
            offset = int(offsets[n])
        d = _as_2d_float32(chunk, "corpus chunk")
        if d.shape[1] != q.shape[1]:
            raise ValueError(f"corpus dim {d.shape[1]} != query dim {q.shape[1]}")
        if score == "cos":
            d = _normalise(d).astype(np.float32)
        k = min(top_k, d.shape[0])
        d_sq = None
        if score == "l2" and backend == "torch":
            d_sq = np.asarray(sq[n], dtype=np.float32) if sq is not None else np.einsum("ij,ij->i", d, d)
        for qs in range(0, q.shape[0], query_block):
            rows = slice(qs, min(qs + query_block, q.shape[0]))
            if backend == "faiss":
                s, i = _chunk_topk_faiss(q[rows], d, score, k)
            elif backend == "torch":
                need = (rows.stop - rows.start) * d.shape[0]
                if buffer.size < need:
                    buffer = np.empty(need, np.float32)
                s, i = _chunk_topk_torch(q[rows], d, score, k, q_sq[rows], d_sq, buffer)
            else:
                raise ValueError(f"backend must be 'torch' or 'faiss', got {backend!r}")
            top.push(s, i + offset, rows)
        offset += d.shape[0]
    s, i = top.result()
    if score == "l2":  # the candidates were ranked by -‖q−d‖²; report -‖q−d‖
        s = -np.sqrt(np.maximum(-s.astype(np.float64), 0.0)).astype(np.float32)
    return s, i


def exact_scores(query_emb: np.ndarray, docs: np.ndarray, score: str) -> np.ndarray:
    """Scores of each query against its own docs, in float64 from the vectors: (n, dim) × (n, m, dim)
    -> (n, m)."""
    q = np.asarray(query_emb, dtype=np.float64)
    d = np.asarray(docs, dtype=np.float64)
    if score == "l2":
        return -np.sqrt(((d - q[:, None, :]) ** 2).sum(-1))
    if score == "cos":
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        dn = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
        return np.einsum("nd,nmd->nm", qn, dn)
    return np.einsum("nd,nmd->nm", q, d)


def rescore(
    query_emb: np.ndarray, chunks: Sequence[np.ndarray], indices: np.ndarray, score: str,
    top_k: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Re-score candidate ``indices`` exactly (float64, from the vectors), re-sort, keep ``top_k``."""
    score = check_score(score)
    top_k = indices.shape[1] if top_k is None else top_k
    dim = chunks[0].shape[1] if chunks else 1
    block = max(1, (1 << 22) // max(1, indices.shape[1] * dim))  # ~32 MB of float64 per block
    out_s = np.empty(indices.shape, dtype=np.float64)
    for start in range(0, indices.shape[0], block):
        idx = indices[start : start + block]
        out_s[start : start + block] = exact_scores(query_emb[start : start + block],
                                                    gather_rows(chunks, idx), score)
    out_s[indices < 0] = -np.inf
    order = _sort_desc(out_s, indices)[:, :top_k]
    return np.take_along_axis(out_s, order, axis=1), np.take_along_axis(indices, order, axis=1)


def search(
    query_emb: np.ndarray,
    corpus_emb: np.ndarray | Sequence[np.ndarray],
    top_k: int,
    score: str = "l2",
    chunk_size: int = 50_000,
    query_block: int = 1024,
    backend: Literal["torch", "faiss"] = "torch",
    exact_rescore: bool = True,
    margin: int = 16,
    sq_norms: np.ndarray | Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k search; returns ``(scores, indices)`` numpy arrays of shape (n_queries, k), best first.

    ``corpus_emb`` is an array (memory-mapped is fine: ``np.load(path, mmap_mode="r")``), read
    ``chunk_size`` rows at a time, or a list of chunk arrays whose rows are numbered
    consecutively. For ``l2`` the score is ``-‖q − d‖``. Ties go to the lower corpus index.

    With ``exact_rescore`` (default) the fast float32 pass keeps ``top_k + margin`` candidates,
    which are then re-scored in float64 from the vectors: scores are exact and the order equals
    that of a float64 brute-force search unless two documents differ by less than float32 noise
    right at the k-th place. ``sq_norms`` (the rows' squared norms: an array for an array corpus, one array
    per chunk for a chunk list) saves a pass over the corpus per call.
    """
    score = check_score(score)
    chunks = list(corpus_emb) if isinstance(corpus_emb, list | tuple) else iter_chunks(corpus_emb, chunk_size)
    if sq_norms is None or isinstance(sq_norms, list | tuple):  # none, or one array per chunk of a chunk list
        norms = list(sq_norms) if sq_norms is not None else None
    else:
        norms = iter_chunks(sq_norms, chunk_size) if not isinstance(corpus_emb, list | tuple) else None
    if norms is not None and [len(n) for n in norms] != [c.shape[0] for c in chunks]:
        raise ValueError("sq_norms must have one squared norm per corpus row, chunked as the corpus")
    if not chunks:
        raise ValueError("the corpus is empty")
    n_docs = sum(c.shape[0] for c in chunks)
    k_fast = min(top_k + (margin if exact_rescore else 0), n_docs)
    s, idx = search_chunks(query_emb, chunks, k_fast, score, query_block, backend, sq_norms=norms)
    if not exact_rescore:
        return s, idx
    s, idx = rescore(np.asarray(query_emb, dtype=np.float32), chunks, idx, score, top_k)
    return s.astype(np.float32), idx


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard ``(scores, global indices)`` results (e.g. from torchrun ranks) into one top-k."""
    s = np.concatenate([p[0].astype(np.float64) for p in parts], axis=1)
    i = np.concatenate([p[1] for p in parts], axis=1)
    order = _sort_desc(s, i)[:, :top_k]
    return np.take_along_axis(s, order, axis=1).astype(np.float32), np.take_along_axis(i, order, axis=1)
