"""The reference every exact search must equal: the full query × document matrix in float64, sorted by score
descending, then corpus index ascending. Written independently of ``ragcun.encoding.search``."""

from __future__ import annotations

import numpy as np


def brute_force(query_emb: np.ndarray, corpus_emb: np.ndarray, top_k: int,
                score: str = "l2") -> tuple[np.ndarray, np.ndarray]:
    """``(scores, indices)`` of the ``top_k`` best documents per query; ``score`` is l2 (negative distance),
    cos or dot."""
    q = np.asarray(query_emb, dtype=np.float64)
    d = np.asarray(corpus_emb, dtype=np.float64)
    if score == "l2":
        full = -np.sqrt(((q[:, None, :] - d[None, :, :]) ** 2).sum(-1))
    elif score == "cos":
        unit = [x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) for x in (q, d)]
        full = unit[0] @ unit[1].T
    elif score == "dot":
        full = q @ d.T
    else:
        raise ValueError(f"unknown score {score!r}")
    idx = np.broadcast_to(np.arange(d.shape[0]), full.shape)
    order = np.lexsort((idx, -full), axis=-1)[:, :top_k]
    return np.take_along_axis(full, order, axis=1), np.take_along_axis(idx, order, axis=1)
