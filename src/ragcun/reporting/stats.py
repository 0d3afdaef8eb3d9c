"""Paired significance on per-query scores: the t-test, its confidence interval and the randomisation test.

* paired t-test (``scipy.stats.ttest_rel``, two-sided) and the t-based 95% confidence interval
  of the mean per-query difference;
* a paired randomisation test (random sign flips of the per-query differences, two-sided,
  ``n_permutations`` draws, seeded, with the +1 correction of Phipson & Smyth 2010), the test
  IR papers usually report (Smucker, Allan & Carterette 2007).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np


def paired_test(
    a: Sequence[float], b: Sequence[float], n_permutations: int = 10_000, seed: int = 0,
    confidence: float = 0.95
) -> dict[str, float]:
    """Paired comparison of per-query scores ``a`` (model) vs ``b`` (baseline), same query order.

    Returns the mean difference, its t-based confidence interval, the paired t-test p-value and
    the two-sided randomisation (sign-flip) test p-value.
    """
    from scipy import stats

    x = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 paired queries, got {n}")
    mean = float(x.mean())
    sd = float(x.std(ddof=1))
    se = sd / math.sqrt(n)
    if se > 0:
        with warnings.catch_warnings():  # near-constant differences: scipy warns, the p-value is still right
            warnings.simplefilter("ignore", RuntimeWarning)
            t_p = float(stats.ttest_rel(np.asarray(a, dtype=np.float64),
                                        np.asarray(b, dtype=np.float64)).pvalue)
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    else:
        t_p = 1.0 if mean == 0 else 0.0
        half = 0.0
    rng = np.random.default_rng(seed)
    observed = abs(x.sum())
    hits = 0
    block = 1000
    for start in range(0, n_permutations, block):
        m = min(block, n_permutations - start)
        signs = rng.integers(0, 2, size=(m, n), dtype=np.int8) * 2 - 1
        hits += int((np.abs(signs @ x) >= observed - 1e-12).sum())
    perm_p = (hits + 1) / (n_permutations + 1)
    return {
        "n": int(n),
        "mean_diff": mean,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "t_p": t_p,
        "perm_p": float(perm_p),
        "wins": int((x > 0).sum()),
        "losses": int((x < 0).sum()),
        "ties": int((x == 0).sum()),
    }


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of per-query scores and its t-based confidence interval ``(mean, low, high)``."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if x.shape[0] < 2:
        return mean, mean, mean
    half = (float(stats.t.ppf(0.5 + confidence / 2, x.shape[0] - 1)) * float(x.std(ddof=1))
            / math.sqrt(x.shape[0]))
    return mean, mean - half, mean + half


def paired_scores(a: dict[str, Any], b: dict[str, Any], ds: str, metric: str
                  ) -> tuple[list[float], list[float]]:
    """Per-query ``metric`` of results ``a`` and ``b`` (evaluation result dicts) on ``ds``, over the queries
    both evaluated it for, in query-id order."""
    pa, pb = a.get("per_query", {}).get(ds) or {}, b.get("per_query", {}).get(ds) or {}
    common = [q for q in sorted(set(pa) & set(pb)) if metric in pa[q] and metric in pb[q]]
    return [pa[q][metric] for q in common], [pb[q][metric] for q in common]


def compare(a: dict[str, Any], b: dict[str, Any], ds: str, metric: str = "ndcg@10",
            n_permutations: int = 10_000, seed: int = 0) -> dict[str, float] | None:
    """Paired test of result ``a`` against ``b`` on ``ds`` over the queries both evaluated
    (:func:`paired_scores`); None when fewer than two are shared."""
    xa, xb = paired_scores(a, b, ds, metric)
    return paired_test(xa, xb, n_permutations, seed) if len(xa) >= 2 else None
