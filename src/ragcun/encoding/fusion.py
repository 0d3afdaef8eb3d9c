"""Score fusion: one dense score and BM25 combined into one ranking (hybrid retrieval, hybrid teachers).

A dense model and BM25 fail on different queries; fusing their scores per query is the cheapest strong
retriever there is (on NFCorpus test, MiniLM's cosine z-scored plus 0.5 × BM25 z-scored scores 35.8 NDCG@10
against MiniLM's 31.5 and BM25's 32.1). This module is the one place those scores are combined, for
``ragcun evaluate --hybrid`` and for the hybrid teacher of :mod:`ragcun.training.teacher`.

Kinds (every one per query, higher is better):

* ``zscore``: ``Σ w_i · (s_i − mean_i) / std_i``, each score standardised over the query's candidates;
* ``convex``: ``Σ w_i · (s_i − min_i) / (max_i − min_i)`` (min-max normalised; weights summing to 1 make it
  the convex combination of Bruch et al., 2023);
* ``rrf``: reciprocal rank fusion, ``Σ w_i / (k + rank_i)`` with 1-based ranks (Cormack et al., 2009).

The candidates are the whole corpus when it is small enough to score exhaustively
(:func:`hybrid_search`, ``max_exhaustive`` documents); above that, the union of each scorer's top
``candidates`` documents, every one scored by both, so statistics are over that union.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ragcun.encoding.search import check_score

FusionKind = Literal["zscore", "convex", "rrf"]
FUSION_KINDS: tuple[str, ...] = ("zscore", "convex", "rrf")
#: a corpus up to this size is scored exhaustively, every query against every document
MAX_EXHAUSTIVE = 200_000


@dataclass(frozen=True)
class Fusion:
    """How two or more scores become one: the kind, each scorer's weight, RRF's constant.

    ``weights`` maps a scorer's name (``"dense"``, ``"bm25"``) to its weight; a weight of 0 drops a scorer.
    """

    kind: FusionKind = "zscore"
    weights: dict[str, float] = field(default_factory=lambda: {"dense": 1.0, "bm25": 0.5})
    rrf_k: float = 60.0

    def __post_init__(self) -> None:
        if self.kind not in FUSION_KINDS:
            raise ValueError(f"fusion kind must be one of {', '.join(FUSION_KINDS)} (got {self.kind!r})")
        if not self.weights:
            raise ValueError("fusion weights are empty: name at least one scorer")
        for name, w in self.weights.items():
            if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
                raise ValueError(f"fusion weight {name!r} must be a finite number >= 0 (got {w!r})")
        if not any(self.weights.values()):
            raise ValueError("fusion weights are all 0")
        if not (math.isfinite(self.rrf_k) and self.rrf_k >= 0):
            raise ValueError(f"rrf_k must be a finite number >= 0 (got {self.rrf_k!r})")

    @classmethod
    def hybrid(cls, kind: FusionKind, bm25_weight: float, dense_weight: float | None = None) -> Fusion:
        """A dense score and BM25: BM25 weighted ``bm25_weight`` beside the dense score's ``dense_weight``
        (default 1; for ``convex`` BM25's share, the dense score's default ``1 − bm25_weight``)."""
        if dense_weight is None:
            dense_weight = 1.0 - bm25_weight if kind == "convex" else 1.0
        return cls(kind, {"dense": dense_weight, "bm25": bm25_weight})

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "weights": dict(self.weights), "rrf_k": self.rrf_k}

    def label(self) -> str:
        parts = " + ".join(f"{w:g}·{n}" for n, w in self.weights.items() if w)
        return f"{self.kind}({parts})" if self.kind != "rrf" else f"rrf(k={self.rrf_k:g}; {parts})"


def zscore(scores: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Each row standardised over its valid entries (a constant row becomes 0); invalid entries stay -inf."""
    s = np.asarray(scores, dtype=np.float64)
    valid = np.isfinite(s) if valid is None else valid
    n = np.maximum(valid.sum(axis=1, keepdims=True), 1)
    filled = np.where(valid, s, 0.0)
    mean = filled.sum(axis=1, keepdims=True) / n
    var = (np.where(valid, s - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / n
    std = np.sqrt(var)
    z = np.where(std > 0, (filled - mean) / np.where(std > 0, std, 1.0), 0.0)
    return np.where(valid, z, -np.inf)


def minmax(scores: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Each row mapped to [0, 1] over its valid entries (a constant row becomes 0)."""
    s = np.asarray(scores, dtype=np.float64)
    valid = np.isfinite(s) if valid is None else valid
    lo = np.where(valid, s, np.inf).min(axis=1, keepdims=True)
    hi = np.where(valid, s, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    out = np.where(span > 0, (np.where(valid, s, 0.0) - lo) / np.where(span > 0, span, 1.0), 0.0)
    return np.where(valid, out, -np.inf)


def ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each entry in its row, best first (ties broken by position, as a stable sort)."""
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, axis=1, kind="stable")
    out = np.empty_like(order)
    np.put_along_axis(out, order, np.arange(1, s.shape[1] + 1)[None, :].repeat(s.shape[0], 0), axis=1)
    return out


def fuse(components: dict[str, np.ndarray], fusion: Fusion) -> np.ndarray:
    """The fused (Q, N) scores of named (Q, N) score matrices over the same candidates.

    ``-inf`` marks a candidate a scorer did not score (and is never fused into a finite score's rank);
    a candidate invalid in every scorer stays ``-inf``.
    """
    missing = [n for n, w in fusion.weights.items() if w and n not in components]
    if missing:
        raise ValueError(f"fusion weights name {missing} but the scores are {sorted(components)}")
    mats = {n: np.asarray(components[n], dtype=np.float64) for n, w in fusion.weights.items() if w}
    shapes = {m.shape for m in mats.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"scores to fuse must be 2-D and of one shape (got {sorted(shapes)})")
    for n, m in mats.items():
        if np.isnan(m).any() or np.isposinf(m).any():
            raise ValueError(f"scores {n!r} hold NaN or +inf")
    any_valid = np.zeros(next(iter(shapes)), dtype=bool)
    out = np.zeros(next(iter(shapes)), dtype=np.float64)
    for n, m in mats.items():
        valid = np.isfinite(m)
        any_valid |= valid
        if fusion.kind == "zscore":  # a candidate this scorer did not score gets the row's lowest z
            part = zscore(m, valid)
            floor = np.where(valid, part, np.inf).min(axis=1, keepdims=True)
            part = np.where(valid, part, np.where(np.isfinite(floor), floor, 0.0))
        elif fusion.kind == "convex":
            part = np.where(valid, minmax(m, valid), 0.0)
        else:
            part = np.where(valid, 1.0 / (fusion.rrf_k + ranks(np.where(valid, m, -np.inf))), 0.0)
        out += fusion.weights[n] * part
    return np.where(any_valid, out, -np.inf)


def dense_scores(query_emb: np.ndarray, doc_emb: np.ndarray, score: str) -> np.ndarray:
    """Every query against every document, (Q, N) float64: ``-‖q − d‖``, cosine or dot."""
    score = check_score(score)
    q = np.asarray(query_emb, dtype=np.float64)
    d = np.asarray(doc_emb, dtype=np.float64)
    if score == "cos":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    dots = q @ d.T
    if score != "l2":
        return dots
    sq = (q * q).sum(1)[:, None] - 2.0 * dots + (d * d).sum(1)[None, :]
    return -np.sqrt(np.maximum(sq, 0.0))


def bm25_scores(index: Any, queries: Sequence[str]) -> np.ndarray:
    """BM25 scores of each query against every document of ``index`` (a :class:`ragcun.data.bm25.BM25Index`),
    (Q, N) float64; a query with no indexed term scores 0 everywhere."""
    out = np.zeros((len(queries), len(index)), dtype=np.float64)
    vocab = index.retriever.vocab_dict
    for i, tokens in enumerate(index.tokenize_queries(queries)):
        known = [t for t in tokens if t in vocab]
        if known:
            out[i] = index.retriever.get_scores(known)
    return out


def check_exhaustive(n_docs: int) -> None:
    """Refuse a corpus too large to score every document for every query."""
    if n_docs > MAX_EXHAUSTIVE:
        raise ValueError(f"hybrid scoring scores every document per query; {n_docs:,} documents is over "
                         f"{MAX_EXHAUSTIVE:,}")


def fused_blocks(query_emb: np.ndarray | None, doc_emb: np.ndarray | None, queries: Sequence[str],
                 bm25: Any, fusion: Fusion, score: str = "cos",
                 query_block: int = 256) -> Iterator[tuple[int, np.ndarray]]:
    """(first query's row, fused (block, N) scores) for each block of ``query_block`` queries over the whole
    corpus; a scorer the fusion does not weight is not computed (its inputs may be None)."""
    weighted = {n for n, w in fusion.weights.items() if w}
    n_docs = len(bm25) if bm25 is not None else len(doc_emb)  # type: ignore[arg-type]
    check_exhaustive(n_docs)
    if "dense" in weighted and (doc_emb is None or query_emb is None):
        raise ValueError("the fusion weights the dense score but no embeddings were given")
    if "bm25" in weighted and bm25 is None:
        raise ValueError("the fusion weights BM25 but no BM25 index was given")
    if "dense" in weighted and bm25 is not None and doc_emb.shape[0] != len(bm25):  # type: ignore[union-attr]
        raise ValueError(f"{doc_emb.shape[0]} document vectors but {len(bm25)} documents in the BM25 "  # type: ignore[union-attr]
                         "index")
    for start in range(0, len(queries), query_block):
        stop = start + query_block
        comps: dict[str, np.ndarray] = {}
        if "dense" in weighted:
            comps["dense"] = dense_scores(query_emb[start:stop], doc_emb, score)  # type: ignore[index]
        if "bm25" in weighted:
            comps["bm25"] = bm25_scores(bm25, queries[start:stop])
        yield start, fuse(comps, fusion)


def hybrid_search(
    query_emb: np.ndarray | None,
    doc_emb: np.ndarray | None,
    queries: Sequence[str],
    bm25: Any,
    fusion: Fusion,
    top_k: int,
    score: str = "cos",
    query_block: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``top_k`` (fused scores, document rows) per query, best first, over the whole corpus.

    The dense scores of ``query_emb`` against ``doc_emb`` (rows in the BM25 index's order) and BM25's are
    fused per query over every document, in blocks of ``query_block`` queries (memory: a block × the corpus);
    with BM25 alone the embeddings may be None.
    """
    n_docs = len(bm25)
    k = min(top_k, n_docs)
    out_s = np.empty((len(queries), k), dtype=np.float64)
    out_i = np.empty((len(queries), k), dtype=np.int64)
    for start, fused in fused_blocks(query_emb, doc_emb, queries, bm25, fusion, score, query_block):
        stop = start + fused.shape[0]
        idx = np.argpartition(-fused, k - 1, axis=1)[:, :k] if k < n_docs else np.tile(np.arange(n_docs),
                                                                                       (fused.shape[0], 1))
        part = np.take_along_axis(fused, idx, axis=1)
        order = np.lexsort((idx, -part), axis=1)
        out_s[start:stop] = np.take_along_axis(part, order, axis=1)
        out_i[start:stop] = np.take_along_axis(idx, order, axis=1)
    return out_s, out_i
