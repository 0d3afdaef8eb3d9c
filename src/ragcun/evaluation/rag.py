"""RAG-oriented diagnostics: does the score separate relevant from irrelevant passages, and is it calibrated?

For each test query the candidate pool is its judged positives (grade ≥ 1) plus
``negatives_per_query`` documents sampled uniformly from the rest of the corpus (seeded). On
that pool:

* ``recall@10`` and ``mrr`` of the positives when the pool is ranked by the score;
* ``separation``: mean score of positives − mean score of negatives, raw and standardised
  (divided by the pooled within-class standard deviation, Cohen's d), so cosine (in [−1, 1])
  and L2 (−distance, unbounded) compare;
* ``roc_auc`` of the score as a relevance classifier (scikit-learn);
* calibration: a logistic fit of relevance on the score, cross-fitted over query groups
  (5-fold GroupKFold: a query's own pairs never train its prediction), its expected calibration
  error over 10 equal-width bins, the Brier score, and the reliability-diagram bins.

Norm vs success: over the full-corpus retrieval, the Pearson and Spearman correlation of the
query embedding norm with per-query NDCG@10 (NaN when the norms are constant, e.g. a
normalised model).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ragcun.encoding.search import check_score, exact_scores, gather_rows
from ragcun.encoding.settings import EncodeSettings
from ragcun.evaluation.metrics import evaluate_run
from ragcun.files import write_json
from ragcun.fingerprint import model_fingerprint

logger = logging.getLogger(__name__)


def expected_calibration_error(prob: np.ndarray, label: np.ndarray,
                               n_bins: int = 10) -> tuple[float, list[dict[str, float]]]:
    """ECE over ``n_bins`` equal-width probability bins (weighted by bin size) and the reliability bins."""
    prob = np.asarray(prob, dtype=np.float64)
    label = np.asarray(label, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(prob, edges[1:-1], right=False), 0, n_bins - 1)
    ece, bins = 0.0, []
    for b in range(n_bins):
        sel = which == b
        count = int(sel.sum())
        if count == 0:
            bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": 0,
                         "confidence": float("nan"), "accuracy": float("nan")})
            continue
        conf, acc = float(prob[sel].mean()), float(label[sel].mean())
        ece += count / len(prob) * abs(conf - acc)
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": count, "confidence": conf,
                     "accuracy": acc})
    return float(ece), bins


def separation(pos: np.ndarray, neg: np.ndarray) -> dict[str, float]:
    """Mean positive − mean negative score, raw and divided by the pooled within-class std (Cohen's d)."""
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    diff = float(pos.mean() - neg.mean())
    n1, n2 = len(pos), len(neg)
    pooled = (math.sqrt(((n1 - 1) * pos.var(ddof=1) + (n2 - 1) * neg.var(ddof=1)) / max(1, n1 + n2 - 2))
              if n1 > 1 and n2 > 1 else float("nan"))
    return {
        "separation": diff,
        "separation_std": diff / pooled if pooled and pooled > 0 else float("nan"),
        "pos_mean": float(pos.mean()),
        "neg_mean": float(neg.mean()),
        "pos_std": float(pos.std(ddof=1)) if n1 > 1 else float("nan"),
        "neg_std": float(neg.std(ddof=1)) if n2 > 1 else float("nan"),
    }


def _correlations(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from scipy import stats

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or np.ptp(x) < 1e-6 * max(1.0, float(np.abs(x).max())) or np.ptp(y) == 0:
        return {"pearson": float("nan"), "pearson_p": float("nan"), "spearman": float("nan"),
                "spearman_p": float("nan")}
    p = stats.pearsonr(x, y)
    s = stats.spearmanr(x, y)
    return {"pearson": float(p.statistic), "pearson_p": float(p.pvalue), "spearman": float(s.statistic),
            "spearman_p": float(s.pvalue)}


def rag_metrics_from_embeddings(
    query_emb: np.ndarray,
    query_ids: Sequence[str],
    corpus_chunks: Sequence[np.ndarray] | np.ndarray,
    doc_ids: Sequence[str],
    qrels: dict[str, dict[str, int]],
    score: str,
    negatives_per_query: int = 100,
    seed: int = 0,
    per_query_ndcg: dict[str, float] | None = None,
    n_bins: int = 10,
) -> dict[str, Any]:
    """The pool metrics from precomputed embeddings (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import brier_score_loss, roc_auc_score
    from sklearn.model_selection import GroupKFold, cross_val_predict

    score = check_score(score)
    chunks = [corpus_chunks] if isinstance(corpus_chunks, np.ndarray) else list(corpus_chunks)
    doc_index = {d: i for i, d in enumerate(doc_ids)}
    rng = np.random.default_rng(seed)
    n_docs = len(doc_ids)
    pool_run: dict[str, dict[str, float]] = {}
    labels, scores, groups = [], [], []
    pos_all, neg_all = [], []
    for row, qid in enumerate(query_ids):
        judged = qrels.get(qid, {})
        positives = [doc_index[d] for d, r in judged.items() if r >= 1 and d in doc_index]
        if not positives:
            continue
        excluded = set(positives) | {doc_index[qid]} if qid in doc_index else set(positives)
        k = min(negatives_per_query, n_docs - len(excluded))
        negatives: list[int] = []
        while len(negatives) < k:
            cand = rng.integers(0, n_docs, size=2 * (k - len(negatives)) + 8)
            for c in cand:
                c = int(c)
                if c not in excluded:
                    excluded.add(c)
                    negatives.append(c)
                    if len(negatives) == k:
                        break
        idx = np.array(positives + negatives, dtype=np.int64)[None, :]
        s = exact_scores(query_emb[row : row + 1], gather_rows(chunks, idx), score)[0]
        lab = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
        pool_run[qid] = {doc_ids[int(i)]: float(v) for i, v in zip(idx[0], s, strict=True)}
        labels.append(lab)
        scores.append(s)
        groups.append(np.full(len(lab), row))
        pos_all.append(s[: len(positives)])
        neg_all.append(s[len(positives) :])
    if not labels:
        raise ValueError("no query has a judged positive in the corpus")
    y = np.concatenate(labels)
    x = np.concatenate(scores)
    g = np.concatenate(groups)
    pool_qrels = {q: {d: r for d, r in qrels[q].items() if r >= 1} for q in pool_run}
    max_pool = max(len(v) for v in pool_run.values())
    agg, per_q = evaluate_run(pool_qrels, pool_run, metrics={"recall": (10,), "mrr": (max_pool,)},
                              ignore_identical_ids=False)

    n_groups = len(pool_run)
    feat = ((x - x.mean()) / (x.std() or 1.0))[:, None]
    if n_groups >= 2 and len(np.unique(y)) == 2:
        cv = GroupKFold(n_splits=min(5, n_groups))
        prob = cross_val_predict(LogisticRegression(), feat, y, cv=cv, groups=g, method="predict_proba")[:, 1]
    else:
        prob = np.full(len(y), y.mean())
    full_fit = LogisticRegression().fit(feat, y) if len(np.unique(y)) == 2 else None
    ece, bins = expected_calibration_error(prob, y, n_bins)
    out: dict[str, Any] = {
        "score": score,
        "queries": n_groups,
        "pairs": int(len(y)),
        "positives": int(y.sum()),
        "negatives_per_query": int(negatives_per_query),
        "seed": int(seed),
        # ranked within each query's pool (its positives + the sampled negatives), not the whole corpus:
        # named apart from `ragcun evaluate`'s full-corpus recall@10 so the two are never compared
        "pool_recall@10": agg["recall@10"],
        "pool_mrr": agg[f"mrr@{max_pool}"],
        **separation(np.concatenate(pos_all), np.concatenate(neg_all)),
        "roc_auc": float(roc_auc_score(y, x)) if len(np.unique(y)) == 2 else float("nan"),
        "ece": ece,
        "brier": float(brier_score_loss(y, prob)),
        "logistic": ({"coef_per_std": float(full_fit.coef_[0, 0]), "intercept": float(full_fit.intercept_[0]),
                      "score_mean": float(x.mean()), "score_std": float(x.std())}
                     if full_fit is not None else None),
        "reliability": bins,
    }
    if per_query_ndcg is not None:
        qn = np.linalg.norm(np.asarray(query_emb, dtype=np.float64), axis=1)
        keep = [i for i, q in enumerate(query_ids) if q in per_query_ndcg]
        out["norm_vs_ndcg@10"] = _correlations(qn[keep],
                                               np.array([per_query_ndcg[query_ids[i]] for i in keep]))
        out["query_norm_mean"] = float(qn.mean())
        out["query_norm_std"] = float(qn.std())
    return out


def evaluate_rag(
    model: Any,
    dataset: str,
    split: str = "test",
    score: str | None = None,
    negatives_per_query: int = 100,
    seed: int = 0,
    batch_size: int | None = None,
    max_seq_length: int | None = None,
    data_dir: str | os.PathLike | None = None,
    cache: bool = True,
    output: str | os.PathLike | None = None,
    plot: str | os.PathLike | None = None,
    device: str | None = None,
    show_progress_bar: bool = True,
    backend: str | None = None,
    precision: str | None = None,
    settings: EncodeSettings | None = None,
) -> dict[str, Any]:
    """RAG metrics of ``model`` on one BEIR ``dataset``; writes JSON to ``output`` and a reliability plot to
    ``plot``.

    ``backend``/``precision`` choose the encoding runtime (:mod:`ragcun.runtime`); the encoding settings may
    come as one :class:`~ragcun.encoding.settings.EncodeSettings` instead (``settings=``)."""
    from ragcun.data.beir import load_beir
    from ragcun.encoding.corpus import encode_beir_corpus, judged_queries
    from ragcun.evaluation.beir_eval import default_score, retrieve

    t0 = time.perf_counter()
    s = EncodeSettings.of(settings, split=split, batch_size=batch_size, max_seq_length=max_seq_length,
                          data_dir=data_dir, cache=cache, device=device, backend=backend, precision=precision)
    split = s.split
    model, name, runtime, batch_size = s.load(model)
    score = check_score(score) if score else default_score(model)
    data = load_beir(dataset, split=split, data_dir=s.data_dir)
    corpus, qrels, queries = data.corpus, data.qrels, judged_queries(data)
    doc_ids = list(corpus)
    emb = encode_beir_corpus(model, data, batch_size, s.cache, show_progress_bar=show_progress_bar)
    try:
        run, _timing, q_emb = retrieve(model, corpus, queries, score, 1000, data.name, batch_size,
                                       corpus_emb=emb)
        _, per_query = evaluate_run(qrels, run, metrics={"ndcg": (10,)})
        qids = list(queries)
        result = rag_metrics_from_embeddings(
            q_emb, qids, emb.chunks, doc_ids, qrels, score, negatives_per_query, seed,
            per_query_ndcg={q: v["ndcg@10"] for q, v in per_query.items()},
        )
    finally:
        emb.cleanup()
    result = {"model": name, "model_fingerprint": model_fingerprint(model), "dataset": dataset,
              "split": split, "backend": runtime.backend, "precision": runtime.precision,
              **result, "seconds": time.perf_counter() - t0}
    if plot:
        from ragcun.evaluation.plots import reliability_plot

        reliability_plot({name: result}, plot)
    if output:
        write_json(output, result)
    return result
