"""Retrieval metrics with trec_eval semantics (through pytrec_eval), MRR@k, and TREC run/qrels I/O.

Every number here comes from pytrec_eval (the C trec_eval code) so that results match what
BEIR, pyserini and trec_eval print. Two rules follow BEIR:

* a retrieved document whose id equals the query id is dropped before scoring
  (``ignore_identical_ids``), as ``beir.retrieval.evaluation.EvaluateRetrieval.evaluate`` does;
* a metric is averaged over the queries that appear in both the run and the qrels (trec_eval
  without ``-c``).

MRR@k is trec_eval's ``recip_rank`` on the run cut to its first k documents in trec_eval's own
order (score descending, ties broken by document id descending). It differs from BEIR's
``mrr`` custom metric only in the denominator: BEIR divides by every query in the qrels, even
those the run never answered; here the average is over evaluated queries like every other metric.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from ragcun.files import atomic_path

logger = logging.getLogger(__name__)

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

#: The metrics and cutoffs of ``ragcun evaluate`` (issue 5). Keys are ragcun's lower-case names.
DEFAULT_METRICS: dict[str, tuple[int, ...]] = {
    "ndcg": (1, 3, 5, 10, 100),
    "map": (10, 100),
    "recall": (10, 100, 1000),
    "p": (1, 10),
    "mrr": (10, 100),
}

# ragcun name -> (pytrec_eval measure family, key prefix in pytrec_eval's output)
_TREC = {
    "ndcg": ("ndcg_cut", "ndcg_cut_"),
    "map": ("map_cut", "map_cut_"),
    "recall": ("recall", "recall_"),
    "p": ("P", "P_"),
}


def metric_names(metrics: Mapping[str, Iterable[int]] | None = None) -> list[str]:
    """The flat metric names (``"ndcg@10"`` …) in a stable order."""
    spec = DEFAULT_METRICS if metrics is None else metrics
    return [f"{name}@{k}" for name, ks in spec.items() for k in ks]


def _normalise_spec(k_values: Iterable[int] | None,
                    metrics: Mapping[str, Iterable[int]] | None) -> dict[str, tuple[int, ...]]:
    if metrics is not None and k_values is not None:
        raise ValueError("pass k_values (same cutoffs for every metric) or metrics (per-metric cutoffs), "
                         "not both")
    if k_values is not None:
        ks = tuple(sorted({int(k) for k in k_values}))
        spec = {name: ks for name in DEFAULT_METRICS}
    else:
        spec = {name.lower(): tuple(sorted({int(k) for k in ks}))
                for name, ks in (metrics or DEFAULT_METRICS).items()}
    for name, ks in spec.items():
        if name not in _TREC and name != "mrr":
            raise ValueError(f"unknown metric {name!r}; known: {sorted([*_TREC, 'mrr'])}")
        if any(k < 1 for k in ks):
            raise ValueError(f"cutoffs must be >= 1, got {name}@{ks}")
    return spec


def trec_order(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """Documents in trec_eval's ranking order: score descending, then document id descending."""
    return sorted(((d, float(s)) for d, s in docs.items()), key=lambda x: (x[1], x[0]), reverse=True)


def drop_identical_ids(run: Run) -> dict[str, dict[str, float]]:
    """A copy of ``run`` without hits whose document id equals the query id (BEIR's rule)."""
    return {qid: {d: float(s) for d, s in docs.items() if d != qid} for qid, docs in run.items()}


def _check(qrels: Qrels, run: Run) -> None:
    for qid, docs in qrels.items():
        for did, rel in docs.items():
            if not isinstance(rel, int) or isinstance(rel, bool):
                raise TypeError(f"qrels[{qid!r}][{did!r}] = {rel!r}: relevance must be an int")
    for qid, docs in run.items():
        for did, score in docs.items():
            if not isinstance(score, float | int) or isinstance(score, bool) or math.isnan(float(score)):
                raise ValueError(f"run[{qid!r}][{did!r}] = {score!r}: score must be a finite number")


def evaluate_run(
    qrels: Qrels,
    run: Run,
    k_values: Iterable[int] | None = None,
    *,
    metrics: Mapping[str, Iterable[int]] | None = None,
    ignore_identical_ids: bool = True,
    relevance_level: int = 1,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Score ``run`` against ``qrels``; return (aggregate, per-query) with names like ``"ndcg@10"``.

    ``k_values`` applies the same cutoffs to every metric (as BEIR's ``k_values``); ``metrics``
    gives per-metric cutoffs (default :data:`DEFAULT_METRICS`). ``relevance_level`` is trec_eval's
    ``-l``: the smallest grade counted as relevant for the binary metrics (MAP, recall, P, MRR).
    """
    import pytrec_eval

    spec = _normalise_spec(k_values, metrics)
    _check(qrels, run)
    run = (drop_identical_ids(run) if ignore_identical_ids
           else {q: {d: float(s) for d, s in r.items()} for q, r in run.items()})
    qrels = {str(q): {str(d): int(r) for d, r in docs.items()} for q, docs in qrels.items()}

    measures = {f"{_TREC[name][0]}.{','.join(map(str, ks))}" for name, ks in spec.items() if name in _TREC}
    per_query: dict[str, dict[str, float]] = {}
    if measures:
        evaluator = pytrec_eval.RelevanceEvaluator(qrels, measures, relevance_level=int(relevance_level))
        for qid, vals in evaluator.evaluate(run).items():
            per_query[qid] = {
                f"{name}@{k}": float(vals[f"{_TREC[name][1]}{k}"])
                for name, ks in spec.items() if name in _TREC for k in ks
            }
    if "mrr" in spec:
        rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}, relevance_level=int(relevance_level))
        for k in spec["mrr"]:
            cut = {qid: dict(trec_order(docs)[:k]) for qid, docs in run.items()}
            for qid, vals in rr.evaluate(cut).items():
                per_query.setdefault(qid, {})[f"mrr@{k}"] = float(vals["recip_rank"])

    names = [f"{name}@{k}" for name, ks in spec.items() for k in ks]
    per_query = {qid: {n: per_query[qid][n] for n in names} for qid in sorted(per_query)}
    n = len(per_query)
    if n == 0:
        logger.warning("no query is in both the run (%d queries) and the qrels (%d queries)", len(run),
                       len(qrels))
        return {name: 0.0 for name in names}, {}
    aggregate = {name: math.fsum(v[name] for v in per_query.values()) / n for name in names}
    return aggregate, per_query


# --------------------------------------------------------------------------- TREC files


def write_run(path: str | os.PathLike, run: Run, tag: str = "ragcun", top_k: int | None = None) -> Path:
    """Write ``run`` as a standard 6-column TREC run file (``qid Q0 docid rank score tag``), atomically.

    Documents are written in trec_eval order and ranked from 1; scores use ``repr`` precision so a
    re-read run scores exactly the same.
    """
    if any(ch.isspace() for ch in tag) or not tag:
        raise ValueError(f"run tag must be one non-empty word, got {tag!r}")
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for qid in sorted(run):
            ranked = trec_order(run[qid])
            for rank, (did, score) in enumerate(ranked[:top_k] if top_k else ranked, start=1):
                for field, value in (("query id", qid), ("document id", did)):
                    if not value or any(ch.isspace() for ch in value):
                        raise ValueError(f"{field} {value!r} is empty or has whitespace; "
                                         "not valid in a TREC run")
                fh.write(f"{qid} Q0 {did} {rank} {score!r} {tag}\n")
    return path


def read_run(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read a TREC run file (6 whitespace-separated columns); errors name the file and line."""
    run: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise ValueError(f"{path}:{lineno}: expected 6 columns (qid Q0 docid rank score tag), "
                                 f"got {len(parts)}")
            qid, _q0, did, _rank, score, _tag = parts
            try:
                value = float(score)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: score {score!r} is not a number") from None
            docs = run.setdefault(qid, {})
            if did in docs:
                raise ValueError(f"{path}:{lineno}: document {did!r} appears twice for query {qid!r}")
            docs[did] = value
    return run


def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Read qrels in TREC (``qid iter docid rel``) or BEIR TSV (``query-id corpus-id score``) form.

    The form is told from the first non-empty line (four fields: TREC, else BEIR); parsing and its
    errors (file and line named) are the data loaders', so there is one reader per format.
    """
    from ragcun.data.beir import load_qrels
    from ragcun.data.msmarco import load_qrels_trec

    with open(path, encoding="utf-8", newline="") as fh:  # a missing file: FileNotFoundError naming it
        first = next((line for line in fh if line.strip()), "")
    return load_qrels_trec(path) if len(first.split()) == 4 else load_qrels(path)


def write_qrels(path: str | os.PathLike, qrels: Qrels) -> Path:
    """Write qrels in TREC form (``qid 0 docid rel``), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for qid in sorted(qrels):
            for did in sorted(qrels[qid]):
                fh.write(f"{qid} 0 {did} {int(qrels[qid][did])}\n")
    return path
