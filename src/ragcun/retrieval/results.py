"""What a search returns: the hits (:class:`SearchResult`), a hit's distance as a relevance in [0, 1] and its
metadata for the frameworks' documents, and the check of ``top_k``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SearchResult:
    """One hit: the document, its true L2 ``distance`` to the query and its embedding's ``norm``."""

    id: str
    text: str
    distance: float
    norm: float
    rank: int
    metadata: dict[str, Any] | None = field(default=None)
    hybrid_score: float | None = None  # the fused score that ranked it (hybrid search only; higher is better)

    @property
    def score(self) -> float:
        """``-distance``: higher is better, for code written against similarity scores."""
        return -self.distance

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def relevance_score(distance: float, dim: int, scale: float | None = None) -> float:
    """A relevance in (0, 1] from a true L2 ``distance``, for frameworks that need one (LangChain,
    LlamaIndex).

    ``1 / (1 + distance / scale)`` with ``scale = sqrt(2 * dim)`` by default: 1 for an identical
    embedding, ½ at the distance two independent N(0, I) vectors typically have (their squared
    distance averages ``2 * dim``), falling towards 0 beyond. It is monotone in distance, so it ranks
    exactly as L2 does; for unit-norm (cosine) models, whose distances are at most 2, pass a smaller
    ``scale`` (e.g. ``1``) to spread the scores.
    """
    if not math.isfinite(distance) or distance < 0:
        raise ValueError(f"distance must be a finite number >= 0, got {distance!r}")
    s = math.sqrt(2.0 * dim) if scale is None else float(scale)
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    return 1.0 / (1.0 + distance / s)


def calibrated_relevance(distance: float, mean_sq_norm: float) -> float:
    """Relevance in [0, 1] calibrated on the index: ``max(0, 1 − d² / (2·m))``, m the documents' mean
    squared norm.

    Why this form: for unit-norm embeddings (m = 1) it *is* the cosine similarity, since
    ``d² = 2 − 2·cos``, so a framework's cosine threshold means what it always meant; for a centred Gaussian
    model two unrelated vectors are about ``2·m`` apart (relevance ≈ 0) and the same identity holds up to
    the norms' spread, so thresholds carry over. It is monotone in the distance, so it ranks exactly as L2
    does, and needs nothing but the norms the document store already keeps.
    """
    if not math.isfinite(distance) or distance < 0:
        raise ValueError(f"distance must be a finite number >= 0, got {distance!r}")
    if not (math.isfinite(mean_sq_norm) and mean_sq_norm > 0):
        raise ValueError(f"mean squared norm must be a finite number > 0, got {mean_sq_norm!r}")
    return max(0.0, 1.0 - distance * distance / (2.0 * mean_sq_norm))


def hit_metadata(hit: SearchResult, dim: int, scale: float | None = None,
                 mean_sq_norm: float | None = None) -> tuple[dict[str, Any], float]:
    """What the framework adapters attach to a hit: the caller's metadata plus ``ragcun = {distance, norm,
    relevance, rank}``, and the relevance itself: :func:`calibrated_relevance` when the index's
    ``mean_sq_norm`` is given and no explicit ``scale``, else :func:`relevance_score`."""
    if scale is None and mean_sq_norm is not None:
        relevance = calibrated_relevance(hit.distance, mean_sq_norm)
    else:
        relevance = relevance_score(hit.distance, dim, scale)
    meta = dict(hit.metadata or {})
    meta["ragcun"] = {"distance": hit.distance, "norm": hit.norm, "relevance": relevance, "rank": hit.rank}
    return meta, relevance


def l2_mmr(query: np.ndarray, candidates: np.ndarray, k: int, lambda_mult: float = 0.5) -> list[int]:
    """Maximal marginal relevance on Euclidean embeddings: the rows of ``candidates`` to return, in order.

    Each step picks the candidate maximising ``λ·s(q, d) − (1 − λ)·max_{chosen c} s(d, c)`` with
    ``s(a, b) = −‖a − b‖² / (2m)`` (``m`` the candidates' mean squared norm): the similarity the ranking
    itself uses, on one scale for both terms. LangChain's helper uses the cosine, which would discard the
    norm the Gaussian head trains. ``λ = 1`` is the plain ranking; ``λ = 0`` is pure diversity.
    """
    if isinstance(lambda_mult, bool) or not isinstance(lambda_mult, int | float) or not 0 <= lambda_mult <= 1:
        raise ValueError(f"lambda_mult must be a number in [0, 1], got {lambda_mult!r}")
    x = np.asarray(candidates, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        return []
    q = np.asarray(query, dtype=np.float64).reshape(-1)
    scale = 2.0 * max(float(np.mean(np.einsum("ij,ij->i", x, x))), 1e-12)
    rel = -np.square(x - q).sum(axis=1) / scale
    chosen: list[int] = []
    redundancy = np.full(n, -np.inf)
    for _ in range(min(k, n)):
        score = lambda_mult * rel - (1 - lambda_mult) * (redundancy if chosen else 0.0)
        score[chosen] = -np.inf
        j = int(np.argmax(score))
        chosen.append(j)
        redundancy = np.maximum(redundancy, -np.square(x - x[j]).sum(axis=1) / scale)
    return chosen


def check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    return int(top_k)


def preview(items: Sequence[str], n: int = 5) -> str:
    """The first ``n`` items for an error message, with the total when there are more."""
    shown = ", ".join(repr(i) for i in items[:n])
    return shown + (f" … ({len(items)} in all)" if len(items) > n else "")
