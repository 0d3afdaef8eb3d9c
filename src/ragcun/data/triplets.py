"""Training triplets (query, positive, hard negatives) from BEIR train splits or MS MARCO.

Output layout (``OUT/`` is written atomically as a whole)::

    OUT/manifest.json   source, counts, options, seed, created, ragcun version, BM25 rate, schema
    OUT/train/          datasets.Dataset.save_to_disk (or OUT/train.jsonl with --format jsonl)
    OUT/validation/     a mini BEIR dataset (corpus.jsonl, queries.jsonl, qrels/dev.tsv)

Train columns, in this order:

    query, positive, negative_1 ... negative_K      texts (documents joined with ``doc_text``)
    query_id, positive_id                           ids (prefixed ``<source>:`` when several sources are
                                                    combined)
    negative_ids: list[str], negative_ranks: list[int]  BM25 rank (1-based) of each negative; -1 = random

Choices worth knowing:
- one example per (query, positive) pair; a positive is a qrels grade >= ``positive_threshold``
  (default 1: nfcorpus grades 1 and 2 both count);
- BM25 negatives are sampled (seeded) from the query's BM25 top-``bm25_top_k`` with every document
  judged relevant to the query in *any* split of the dataset removed (NFCorpus judges ~38 documents
  per query: a "negative" that is relevant elsewhere teaches the wrong thing); when fewer than
  ``num_negatives`` candidates have a non-zero BM25 score the rest are random documents (rank -1)
  and the manifest counts them;
- ``negatives_exclude="positives"`` restores the older rule (only the example split's positives are
  excluded), for reproducing earlier runs;
- ``false_negative_guard="above_positive"`` also skips the candidates BM25 ranks above the example's
  positive (likely unjudged relevant documents); an example left without candidates gets random ones;
- validation queries are held out before anything else, so no validation query is trained on.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ragcun.config import choice_problems, coerce, non_negative, positive
from ragcun.data.beir import available_splits, doc_text, load_beir, load_qrels, write_beir
from ragcun.data.msmarco import (
    is_msmarco_dir,
    load_collection,
    load_qrels_trec,
    load_queries_tsv,
    msmarco_split_files,
)
from ragcun.data.readers import write_jsonl
from ragcun.files import atomic_path, write_json
from ragcun.version import __version__

logger = logging.getLogger(__name__)

SCHEMA_DOC = {
    "query": "query text",
    "positive": "positive document text (title + ' ' + text)",
    "negative_i": "i-th negative document text, i = 1..K",
    "query_id": "query id (prefixed '<source>:' when several sources are combined)",
    "positive_id": "positive document id",
    "negative_ids": "list[str]: ids of negative_1..K",
    "negative_ranks": "list[int]: BM25 rank (1-based) of each negative in the query's full ranking; "
                      "-1 = random",
}


@dataclass
class TripletOptions:
    """What :func:`build_triplets` makes of its sources: the one list of these options (the experiment's
    ``[triplets]`` table is this plus ``sources``), checked by :meth:`check` wherever they come from."""

    split: str = "train"
    max_train_samples: int | None = None
    split_ratio: float = 1.0
    val_size: int = 0
    val_candidates: int = 30
    val_corpus_size: int = 2000
    negatives: Literal["bm25", "random"] = "bm25"
    num_negatives: int = 1
    bm25_top_k: int = 100
    positive_threshold: int = 1
    # at most this many examples (positives) per query, in rounds: every query's first, then every query's
    # second…, so the first rows cover every query once (None: every positive, shuffled)
    max_positives_per_query: int | None = None
    false_negative_guard: Literal["none", "above_positive"] = "none"
    negatives_exclude: Literal["judged", "positives"] = "judged"
    seed: int = 42

    def check(self) -> list[str]:
        problems = choice_problems(self)
        problems += positive(self, "max_train_samples", "num_negatives", "bm25_top_k", "val_candidates",
                             "val_corpus_size", "max_positives_per_query")
        problems += non_negative(self, "val_size")
        if not 0.0 < self.split_ratio <= 1.0:
            problems.append(f"split_ratio must be in (0, 1] (got {self.split_ratio})")
        return problems


@dataclass
class _Source:
    name: str
    kind: str
    path: str
    doc_ids: list[str]
    texts: list[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    judged: dict[str, set[str]] = field(default_factory=dict)  # query -> docs judged relevant in any split
    prefix: str = ""
    row: dict[str, int] = field(default_factory=dict)
    exclude_judged: bool = True

    def __post_init__(self) -> None:
        self.row = {d: i for i, d in enumerate(self.doc_ids)}

    def positives(self, qid: str, threshold: int) -> list[int]:
        return sorted(self.row[d] for d, g in self.qrels[qid].items() if g >= threshold and d in self.row)

    def excluded(self, qid: str, threshold: int) -> set[int]:
        """Rows never used as the query's negatives: its positives and every document judged relevant to
        it."""
        rows = set(self.positives(qid, threshold))
        if self.exclude_judged:
            rows.update(self.row[d] for d in self.judged.get(qid, ()) if d in self.row)
        return rows


def _load_source(source: str | os.PathLike, split: str, data_dir: str | None) -> _Source:
    p = Path(source).expanduser()
    if is_msmarco_dir(p):
        coll, qfile, rfile = msmarco_split_files(p, split)
        pids, texts = load_collection(coll)
        queries = load_queries_tsv(qfile)
        qrels = {q: r for q, r in load_qrels_trec(rfile).items() if q in queries}
        return _Source("msmarco", "msmarco", str(p), pids, texts, {q: queries[q] for q in qrels}, qrels)
    data = load_beir(str(source), split=split, data_dir=data_dir)
    ids = list(data.corpus)
    judged: dict[str, set[str]] = {}
    for other in available_splits(data.path):
        qrels = data.qrels if other == split else load_qrels(data.path / "qrels" / f"{other}.tsv")
        for q, docs in qrels.items():
            judged.setdefault(q, set()).update(d for d, g in docs.items() if g > 0)
    return _Source(data.name, "beir", str(data.path), ids, [doc_text(data.corpus[d]) for d in ids],
                   data.queries, data.qrels, judged)


def _random_negatives(rng: np.random.Generator, n_docs: int, exclude: set[int], count: int) -> list[int]:
    out: list[int] = []
    if n_docs - len(exclude) <= 0:
        return out
    while len(out) < count:
        cand = int(rng.integers(n_docs))
        if cand not in exclude and cand not in out:
            out.append(cand)
        if len(out) >= n_docs - len(exclude):
            break
    return out


Key = tuple[int, str]  # (source index, query id)


def _split_queries(srcs: list[_Source], o: TripletOptions,
                   rng: np.random.Generator) -> tuple[list[Key], list[tuple[int, str, int]], int]:
    """Held-out validation queries, then one training example per (query, positive), seeded and capped;
    and how many queries had no positive."""
    pool: list[Key] = []
    no_pos = 0
    for si, s in enumerate(srcs):
        for qid in s.qrels:
            if s.positives(qid, o.positive_threshold):
                pool.append((si, qid))
            else:
                no_pos += 1
    if not pool:
        raise ValueError(f"no query of split {o.split!r} has a positive (grade >= {o.positive_threshold}) "
                         "in the corpus")
    pool = [pool[i] for i in rng.permutation(len(pool))]
    if o.val_size >= len(pool):
        raise ValueError(f"val_size={o.val_size} leaves no training query (only {len(pool)} queries have "
                         "positives)")
    val_q, train_pool = pool[:o.val_size], pool[o.val_size:]
    train_q = train_pool[:max(1, round(len(train_pool) * o.split_ratio))]
    if o.max_positives_per_query is None:
        examples = [(si, qid, pos) for si, qid in train_q
                    for pos in srcs[si].positives(qid, o.positive_threshold)]
        examples = [examples[i] for i in rng.permutation(len(examples))]
    else:  # rounds: each query's r-th positive (its own seeded order), queries in the seeded order
        picks = {(si, qid): [int(p) for p in rng.permutation(srcs[si].positives(qid, o.positive_threshold))]
                 [:o.max_positives_per_query] for si, qid in train_q}
        examples = [(si, qid, picks[(si, qid)][r]) for r in range(o.max_positives_per_query)
                    for si, qid in train_q if r < len(picks[(si, qid)])]
    if o.max_train_samples is not None:
        examples = examples[:o.max_train_samples]
    return val_q, examples, no_pos


@dataclass
class _Mined:
    """BM25's work per source: each training query's candidates (rows, ranks, the excluded rows' ranks) and
    each validation query's top documents."""

    candidates: dict[Key, tuple[np.ndarray, np.ndarray, dict[int, int]]] = field(default_factory=dict)
    val_top: dict[Key, list[int]] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    queries: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float | None:
        return self.queries / self.seconds if self.seconds > 0 else None


def _mine(srcs: list[_Source], examples: list[tuple[int, str, int]], val_q: list[Key], o: TripletOptions,
          batch_size: int, n_threads: int, cache_index: bool, show_progress: bool) -> _Mined:
    from ragcun.data.bm25 import get_index, mine_candidates

    out = _Mined()
    for si, s in enumerate(srcs):
        train_keys = sorted({(e[0], e[1]) for e in examples if e[0] == si},
                            key=lambda k: k[1]) if o.negatives == "bm25" else []
        val_keys = [k for k in val_q if k[0] == si]
        if not train_keys and not val_keys:
            continue
        t0 = time.perf_counter()
        index = get_index(s.doc_ids, s.texts, cache=cache_index, show_progress=show_progress)
        info: dict[str, Any] = {"source": s.name, "index": str(index.path) if index.path else None,
                                "index_seconds": round(time.perf_counter() - t0, 2),
                                "documents": len(s.doc_ids)}
        if train_keys:
            qtexts = [s.queries[k[1]] for k in train_keys]
            excl = [s.excluded(k[1], o.positive_threshold) for k in train_keys]
            mined = mine_candidates(index, qtexts, excl, top_k=o.bm25_top_k, batch_size=batch_size,
                                    n_threads=n_threads, show_progress=show_progress)
            for k, c, r, e in zip(train_keys, mined.candidates, mined.ranks, mined.excluded_ranks,
                                  strict=True):
                out.candidates[k] = (c, r, e)
            info.update(queries=len(train_keys), mining_seconds=round(mined.seconds, 3),
                        queries_per_second=round(mined.rate, 1))
            out.queries += len(train_keys)
            out.seconds += mined.seconds
        if val_keys:
            idx, scores = index.search([s.queries[k[1]] for k in val_keys], k=o.val_candidates,
                                       n_threads=n_threads)
            for k, row, sc in zip(val_keys, idx, scores, strict=True):
                out.val_top[k] = [int(d) for d, v in zip(row, sc, strict=True) if v > 0]
        out.sources.append(info)
    return out


def _rows(srcs: list[_Source], examples: list[tuple[int, str, int]], mined: _Mined, o: TripletOptions,
          rng: np.random.Generator) -> tuple[dict[str, list[Any]], int, int]:
    """The training columns (negatives sampled from each query's BM25 candidates, random where too few
    remain), how many examples fell back to random negatives and how many the guard changed."""
    k = o.num_negatives
    fallback = guarded = 0
    rows: dict[str, list[Any]] = {"query": [], "positive": [],
                                  **{f"negative_{j}": [] for j in range(1, k + 1)},
                                  "query_id": [], "positive_id": [], "negative_ids": [], "negative_ranks": []}
    for si, qid, pos in examples:
        s = srcs[si]
        neg: list[int] = []
        ranks: list[int] = []
        if o.negatives == "bm25":
            c, r, pos_ranks = mined.candidates[(si, qid)]
            if o.false_negative_guard == "above_positive":
                below = r > pos_ranks.get(pos, np.iinfo(np.int64).max)
                guarded += int(not below.all())
                c, r = c[below], r[below]
            take = min(k, len(c))
            pick = rng.choice(len(c), size=take, replace=False) if take else np.zeros(0, dtype=np.int64)
            neg, ranks = [int(c[p]) for p in pick], [int(r[p]) for p in pick]
        if len(neg) < k:
            if o.negatives == "bm25":
                fallback += 1
            extra = _random_negatives(rng, len(s.doc_ids), s.excluded(qid, o.positive_threshold) | set(neg),
                                      k - len(neg))
            neg += extra
            ranks += [-1] * len(extra)
        if len(neg) < k:
            raise ValueError(f"{s.name}: corpus too small for {k} negatives per query")
        rows["query"].append(s.queries[qid])
        rows["positive"].append(s.texts[pos])
        for j, d in enumerate(neg, start=1):
            rows[f"negative_{j}"].append(s.texts[d])
        rows["query_id"].append(s.prefix + qid)
        rows["positive_id"].append(s.prefix + s.doc_ids[pos])
        rows["negative_ids"].append([s.prefix + s.doc_ids[d] for d in neg])
        rows["negative_ranks"].append(ranks)
    if fallback:
        logger.warning("%d example(s) had fewer than %d BM25 candidates; filled with random negatives "
                       "(rank -1)", fallback, k)
    return rows, fallback, guarded


def build_triplets(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    options: TripletOptions | None = None,
    *,
    data_dir: str | None = None,
    format: str = "hf",
    batch_size: int = 4096,
    n_threads: int = 0,
    cache_index: bool = True,
    show_progress: bool = True,
    **option_values: Any,
) -> dict[str, Any]:
    """Build training triplets and a held-out validation set; return the manifest (also written).

    ``source``: a BEIR dataset name or folder, an MS MARCO folder (collection.tsv, queries.<split>.tsv,
    qrels.<split>.tsv), or a list of those (each mined against its own corpus, then mixed). The options are a
    :class:`TripletOptions` or its fields as keywords (``split="train", num_negatives=3, ...``), not both.
    """

    if options is not None and option_values:
        raise ValueError(f"pass the options as options= or as keywords, not both "
                         f"({', '.join(option_values)})")
    # keywords go through the one coercion path: a wrong type, NaN or inf is an error naming the option
    o = options or TripletOptions(**{k: coerce(TripletOptions, k, v, "build_triplets")
                                     for k, v in option_values.items()})
    problems = o.check() + ([] if format in ("hf", "jsonl")
                            else [f"format must be hf or jsonl (got {format!r})"])
    if problems:
        raise ValueError("; ".join(problems))

    sources_in = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    srcs = [_load_source(s, o.split, data_dir) for s in sources_in]
    for src in srcs:
        src.exclude_judged = o.negatives_exclude == "judged"
    if len(srcs) > 1:
        names = [s.name for s in srcs]
        if len(set(names)) != len(names):
            raise ValueError(f"the same source is given twice: {names}")
        for s in srcs:
            s.prefix = f"{s.name}:"
    rng = np.random.default_rng(o.seed)
    val_q, examples, no_pos = _split_queries(srcs, o, rng)
    train_queries = len({(e[0], e[1]) for e in examples})
    logger.info("%d training examples from %d queries; %d validation queries", len(examples), train_queries,
                len(val_q))
    mined = _mine(srcs, examples, val_q, o, batch_size, n_threads, cache_index, show_progress)
    rows, fallback, guarded = _rows(srcs, examples, mined, o, rng)

    rate = mined.rate
    manifest: dict[str, Any] = {
        "ragcun_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "sources": [
            {"name": s.name, "kind": s.kind, "path": s.path, "split": o.split, "documents": len(s.doc_ids),
             "queries": len(s.queries), "qrels": sum(len(r) for r in s.qrels.values())}
            for s in srcs
        ],
        "seed": o.seed,
        "options": {**{k: v for k, v in dataclasses.asdict(o).items() if k != "seed"}, "format": format},
        "counts": {
            "train_examples": len(examples),
            "train_queries": train_queries,
            "validation_queries": len(val_q),
            "queries_without_positive": no_pos,
            "random_fallback_examples": fallback,
            "guarded_examples": guarded,
        },
        "bm25": {"sources": mined.sources, "mined_queries": mined.queries,
                 "mining_seconds": round(mined.seconds, 3),
                 "queries_per_second": round(rate, 1) if rate else None},
        "schema": {"train": SCHEMA_DOC, "validation": "BEIR format; load with load_beir(path, split='dev')"},
    }
    if rate:
        logger.info("BM25 mining rate: %.1f queries/s over %d queries", rate, mined.queries)

    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        if format == "hf":
            _save_hf(rows, o.num_negatives, tmp / "train")
        else:
            write_jsonl(tmp / "train.jsonl",
                        ({k: v[i] for k, v in rows.items()} for i in range(len(examples))))
        if val_q:
            manifest["counts"]["validation_documents"] = _write_validation(
                srcs, val_q, mined.val_top, tmp / "validation", o.val_corpus_size, rng
            )
        write_json(tmp / "manifest.json", manifest)
    logger.info("wrote %s", out_dir)
    return manifest


def _save_hf(rows: dict[str, list[Any]], k: int, path: Path) -> None:
    import datasets

    feats = {"query": datasets.Value("string"), "positive": datasets.Value("string")}
    for j in range(1, k + 1):
        feats[f"negative_{j}"] = datasets.Value("string")
    feats.update(
        query_id=datasets.Value("string"), positive_id=datasets.Value("string"),
        negative_ids=datasets.Sequence(datasets.Value("string")),
        negative_ranks=datasets.Sequence(datasets.Value("int32")),
    )
    ds = datasets.Dataset.from_dict(rows, features=datasets.Features(feats))
    ds.save_to_disk(str(path))


def _write_validation(
    srcs: list[_Source], val_q: list[tuple[int, str]], val_top: dict[tuple[int, str], list[int]],
    path: Path, corpus_size: int, rng: np.random.Generator,
) -> int:
    """A mini BEIR dataset: judged docs + BM25 top candidates of the held-out queries, padded with
    a seeded random sample of the corpora up to ``corpus_size`` documents."""
    chosen: dict[tuple[int, int], None] = {}
    for si, qid in val_q:
        s = srcs[si]
        for d in s.qrels[qid]:
            if d in s.row:
                chosen[(si, s.row[d])] = None
        for d in val_top.get((si, qid), []):
            chosen[(si, d)] = None
    total = sum(len(s.doc_ids) for s in srcs)
    target = min(corpus_size, total)
    offsets = np.cumsum([0] + [len(s.doc_ids) for s in srcs])
    if len(chosen) < target:
        for flat in rng.permutation(total):
            si = int(np.searchsorted(offsets, flat, side="right") - 1)
            chosen.setdefault((si, int(flat - offsets[si])), None)
            if len(chosen) >= target:
                break
    # texts are already title-joined; keep the title empty so doc_text() returns them unchanged
    corpus = ({"_id": srcs[si].prefix + srcs[si].doc_ids[d], "title": "", "text": srcs[si].texts[d]}
              for si, d in chosen)
    queries = ({"_id": srcs[si].prefix + q, "text": srcs[si].queries[q]} for si, q in val_q)
    qrels = {srcs[si].prefix + q: {srcs[si].prefix + d: g for d, g in srcs[si].qrels[q].items()}
             for si, q in val_q}
    write_beir(path, corpus, queries, {"dev": qrels})
    return len(chosen)
