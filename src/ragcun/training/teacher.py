"""A teacher's scores over each training query's candidates: computed once, cached with a checksum, shared.

The teacher ranks the whole corpus for every training query: ``hybrid`` fuses a dense model's score (the
base model by default) with BM25 (:mod:`ragcun.encoding.fusion`), ``dense`` is a bi-encoder alone
(``all-mpnet-base-v2``, ``embeddinggemma-300m``, any sentence-transformers model), ``bm25`` is BM25 alone.
Each query keeps the teacher's top ``candidates`` documents plus its labelled positives, with the teacher's
score for each: the labels of the distillation losses (:mod:`ragcun.losses.distillation`).

Scores depend only on the teacher, the corpus and the queries, so they are computed once per dataset and
split and cached (``<cache>/teacher/<key>.safetensors`` beside a JSON record of the inputs and the file's
SHA-256): every arm of an experiment, the λ sweep and every rerun read the same file. A cache whose checksum
or recorded inputs differ from what is asked is refused in one line, never used.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ragcun.config import ConfigError, choice_problems, non_negative, positive
from ragcun.encoding.cache import checked_problem, store_checked
from ragcun.encoding.fusion import Fusion, check_exhaustive, fused_blocks
from ragcun.fingerprint import model_fingerprint, texts_fingerprint
from ragcun.paths import cache_dir

logger = logging.getLogger(__name__)

TeacherKind = Literal["none", "hybrid", "dense", "bm25"]
CACHE_FORMAT = 1


@dataclass(frozen=True)
class TeacherSpec:
    """Which teacher scores the candidates: its kind, dense model and score, fusion, and how many it keeps."""

    kind: TeacherKind
    model: str | None
    fusion: Fusion
    candidates: int = 8
    score: str = "cos"
    max_seq_length: int | None = 256  # None: the teacher model's own

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "fusion": self.fusion.as_dict(),
                "candidates": self.candidates, "score": self.score, "max_seq_length": self.max_seq_length}

    def label(self) -> str:
        if self.kind == "bm25":
            return "BM25"
        name = Path(str(self.model)).name
        return name if self.kind == "dense" else f"{name} + BM25 ({self.fusion.label()})"


@dataclass
class TeacherScores:
    """Per query (in the order asked): candidate document rows, best first, then any positive outside the
    teacher's top, and the teacher's score of each."""

    rows: list[np.ndarray]
    scores: list[np.ndarray]
    path: Path | None = None
    seconds: float = 0.0

    def score_of(self, query: int) -> dict[int, float]:
        return dict(zip(self.rows[query].tolist(), self.scores[query].tolist(), strict=True))


def _dense_model(spec: TeacherSpec) -> Any:
    from ragcun.encoding.models import load_model

    model, _ = load_model(spec.model, device=None, max_seq_length=spec.max_seq_length)
    return model


def _compute(spec: TeacherSpec, doc_ids: Sequence[str], doc_texts: Sequence[str], queries: Sequence[str],
             include: Sequence[Sequence[int]], model: Any, corpus_name: str,
             query_block: int = 256) -> TeacherScores:
    from ragcun.data.bm25 import get_index
    from ragcun.encoding.corpus import encode_corpus, encode_texts
    from ragcun.encoding.search import SIMILARITY_TO_SCORE

    check_exhaustive(len(doc_ids))  # before any encoding
    weighted = {n for n, w in spec.fusion.weights.items() if w}
    doc_emb = q_emb = bm25 = None
    score = spec.score
    if "dense" in weighted:
        if score == "auto":  # the model's own similarity (cosine for most, L2 for a ragcun model)
            name = str(getattr(model, "similarity_fn_name", None) or "cosine")
            score = SIMILARITY_TO_SCORE.get(name) or "cos"
        emb = encode_corpus(model, list(doc_ids), list(doc_texts), corpus_name, batch_size=64,
                            show_progress_bar=True)
        try:
            doc_emb = emb.array()
        finally:
            emb.cleanup()
        q_emb = encode_texts(model, list(queries), "query", batch_size=64)
    if "bm25" in weighted:
        bm25 = get_index(doc_ids, doc_texts, show_progress=False)
    k = min(spec.candidates + 1, len(doc_ids))  # one spare: an example's own positive is not its candidate
    rows: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    for start, fused in fused_blocks(q_emb, doc_emb, queries, bm25, spec.fusion, score, query_block):
        top = np.argsort(-fused, axis=1, kind="stable")[:, :k]
        for j in range(fused.shape[0]):
            r = list(top[j])
            r += [p for p in include[start + j] if p not in set(r)]
            rr = np.asarray(r, dtype=np.int64)
            rows.append(rr)
            scores.append(fused[j, rr].astype(np.float32))
    return TeacherScores(rows, scores)


def _inputs(spec: TeacherSpec, doc_ids: Sequence[str], doc_texts: Sequence[str], queries: Sequence[str],
            include: Sequence[Sequence[int]], model: Any) -> dict[str, Any]:

    return {
        "format": CACHE_FORMAT,
        "teacher": spec.as_dict(),
        "teacher_fingerprint": model_fingerprint(model) if model is not None else None,
        "corpus": texts_fingerprint(doc_ids, doc_texts),
        "queries": texts_fingerprint([str(i) for i in range(len(queries))], list(queries)),
        "include": texts_fingerprint([str(i) for i in range(len(include))],
                                     [",".join(map(str, r)) for r in include]),
    }


def _load(path: Path, inputs: dict[str, Any]) -> TeacherScores:
    from safetensors.numpy import load_file

    problem = checked_problem(path, inputs)
    if problem is not None:
        raise ConfigError(f"teacher cache {path}: {problem}; delete it to recompute")
    data = load_file(str(path))
    offsets = data["offsets"]
    rows = [data["rows"][offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    scores = [data["scores"][offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    return TeacherScores(rows, scores, path)


def _store(path: Path, result: TeacherScores, inputs: dict[str, Any]) -> None:
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in result.rows])]).astype(np.int64)
    store_checked(path, {"rows": np.concatenate(result.rows).astype(np.int64),
                         "scores": np.concatenate(result.scores).astype(np.float32), "offsets": offsets},
                  {"inputs": inputs, "queries": len(result.rows), "seconds": round(result.seconds, 2)})


def teacher_scores(spec: TeacherSpec, doc_ids: Sequence[str], doc_texts: Sequence[str],
                   queries: Sequence[str], include: Sequence[Sequence[int]] | None = None,
                   corpus_name: str = "corpus", cache: bool = True,
                   cache_root: str | Path | None = None) -> TeacherScores:
    """The teacher's top ``spec.candidates + 1`` documents of every query (rows into ``doc_ids``) plus the
    rows in ``include[i]`` (its positives), with the teacher's scores; from the cache when it holds them."""
    if spec.kind == "none":
        raise ValueError("teacher 'none' has no scores")
    if len(doc_ids) != len(doc_texts):
        raise ValueError(f"{len(doc_ids)} document ids but {len(doc_texts)} texts")
    include = include if include is not None else [[] for _ in queries]
    if len(include) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(include)} include lists")
    model = _dense_model(spec) if spec.kind in ("hybrid", "dense") else None
    inputs = _inputs(spec, doc_ids, doc_texts, queries, include, model)
    key = texts_fingerprint(["key"], [json.dumps(inputs, sort_keys=True)])[:32]
    root = Path(cache_root) if cache_root is not None else cache_dir("teacher")
    path, meta_path = root / f"{key}.safetensors", root / f"{key}.json"
    if cache and path.is_file() and meta_path.is_file():
        logger.info("teacher scores: reusing %s", path)
        return _load(path, inputs)
    t0 = time.perf_counter()
    logger.info("teacher scores: %s over %d documents for %d queries", spec.label(), len(doc_ids),
                len(queries))
    result = _compute(spec, doc_ids, doc_texts, queries, include, model, corpus_name)
    result.seconds = time.perf_counter() - t0
    if cache:
        _store(path, result, inputs)
        result.path = path
    logger.info("teacher scores computed in %.1fs", result.seconds)
    return result


@dataclass
class TeacherArguments:
    """A config's ``[teacher]`` table: whose scores over each query's candidates the run learns from, and how
    (the distillation loss beside ``[loss]``'s InfoNCE and SIGReg)."""

    teacher: TeacherKind = "none"
    teacher_model: str | None = None  # the dense scorer (default: the model's base_model)
    teacher_fusion: Literal["zscore", "convex", "rrf"] = "zscore"
    teacher_bm25_weight: float = 0.5  # BM25's weight beside the dense score's 1 (convex: BM25's share)
    teacher_candidates: int = 8  # the teacher's top documents per training example, beside its positive
    teacher_temperature: float = 1.0  # T in softmax(teacher / T)
    teacher_max_seq_length: int | None = None  # the dense scorer's (default: the model's max_seq_length)
    # the BEIR dataset (name or folder) whose train split the triplets came from (default: their manifest's
    # source and split)
    teacher_data: str | None = None
    distill_loss: Literal["kl", "margin_mse"] = "kl"

    def check(self) -> list[str]:
        problems = choice_problems(self)
        problems += positive(self, "teacher_candidates", "teacher_temperature", "teacher_max_seq_length")
        problems += non_negative(self, "teacher_bm25_weight")
        if self.teacher_fusion == "convex" and self.teacher_bm25_weight > 1:
            problems.append(f"teacher_fusion = 'convex' needs teacher_bm25_weight in [0, 1] (got "
                            f"{self.teacher_bm25_weight})")
        return problems


def spec_from_config(cfg: Any) -> TeacherSpec:
    """The teacher a :class:`~ragcun.training.config.TrainConfig` names."""
    fusion = {"hybrid": Fusion.hybrid(cfg.teacher_fusion, cfg.teacher_bm25_weight),
              "dense": Fusion(cfg.teacher_fusion, {"dense": 1.0}),
              "bm25": Fusion(cfg.teacher_fusion, {"bm25": 1.0})}[cfg.teacher]
    model = None if cfg.teacher == "bm25" else str(cfg.teacher_model or cfg.base_model)
    return TeacherSpec(cfg.teacher, model, fusion, cfg.teacher_candidates,
                       "auto", cfg.teacher_max_seq_length or cfg.max_seq_length)


def training_source(cfg: Any, manifest: dict[str, Any]) -> tuple[str, str]:
    """The BEIR dataset (path) and split the training triplets came from (or ``teacher_data``'s train
    split)."""
    if cfg.teacher_data:
        return str(cfg.teacher_data), "train"
    sources = (manifest.get("triplets_manifest") or {}).get("sources") or []
    if len(sources) != 1:
        raise ConfigError(f"teacher = {cfg.teacher!r} needs the training data's BEIR source: set "
                          f"teacher_data (the triplets name {len(sources)} sources; one is supported)")
    return str(sources[0]["path"]), str(sources[0].get("split", "train"))


def attach_teacher(train_ds: Any, query_ids: Sequence[str], positive_ids: Sequence[str], cfg: Any,
                   manifest: dict[str, Any], cache: bool = True) -> tuple[Any, dict[str, Any]]:
    """``train_ds`` (query, positive, …) as ``query, positive, candidate_1..N, label``: each example's
    positive, then the teacher's top candidates of its query other than that positive, and the teacher's
    score of each (the distillation losses' labels). Returns the dataset and what was done."""
    import datasets

    from ragcun.data.beir import doc_text, load_beir

    spec = spec_from_config(cfg)
    path, split = training_source(cfg, manifest)
    data = load_beir(path, split=split, data_dir=cfg.data_dir)
    doc_ids = list(data.corpus)
    texts = [doc_text(data.corpus[d]) for d in doc_ids]
    row = {d: i for i, d in enumerate(doc_ids)}
    qtext: dict[str, str] = {}
    positives: dict[str, list[int]] = {}
    for q, p, text in zip(query_ids, positive_ids, train_ds["query"], strict=True):
        if p not in row:
            raise ConfigError(f"teacher: positive {p!r} of query {q!r} is not in {path}'s corpus; is "
                              "teacher_data the dataset the triplets came from?")
        qtext.setdefault(q, text)
        positives.setdefault(q, [])
        if row[p] not in positives[q]:
            positives[q].append(row[p])
    qids = list(qtext)
    scores = teacher_scores(spec, doc_ids, texts, [qtext[q] for q in qids], [positives[q] for q in qids],
                            corpus_name=data.name, cache=cache)
    at = {q: i for i, q in enumerate(qids)}
    n = spec.candidates
    cols: dict[str, list[Any]] = {f"candidate_{j}": [] for j in range(1, n + 1)}
    labels: list[list[float]] = []
    for q, p in zip(query_ids, positive_ids, strict=True):
        i, prow = at[q], row[p]
        table = scores.score_of(i)
        cands = [int(r) for r in scores.rows[i][: n + 1] if int(r) != prow][:n]
        if len(cands) < n:
            raise ConfigError(f"teacher: query {q!r} has {len(cands)} candidates besides its positive; the "
                              f"corpus is too small for teacher_candidates = {n}")
        for j, r in enumerate(cands, start=1):
            cols[f"candidate_{j}"].append(texts[r])
        labels.append([float(table[prow]), *(float(table[r]) for r in cands)])
    out = datasets.Dataset.from_dict({"query": list(train_ds["query"]),
                                      "positive": list(train_ds["positive"]), **cols, "label": labels})
    info = {"teacher": spec.as_dict(), "label": spec.label(), "source": path, "split": split,
            "queries": len(qids), "cache": str(scores.path) if scores.path else None,
            "seconds": round(scores.seconds, 1)}
    return out, info
