"""Training triplets (query, positive, hard negatives) from BEIR train splits or MS MARCO.

Output layout (``OUT/`` is written atomically as a whole)::

    OUT/manifest.json   source, counts, options, seed, created, ragcun version, BM25 rate, schema
    OUT/train/          datasets.Dataset.save_to_disk (or OUT/train.jsonl with --format jsonl)
    OUT/validation/     a mini BEIR dataset (corpus.jsonl, queries.jsonl, qrels/dev.tsv)

Train columns, in this order:

    query, positive, negative_1 ... negative_K      texts (documents joined with ``doc_text``)
    query_id, positive_id                           ids (prefixed ``<source>:`` when several sources are combined)
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

import datetime as _dt
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragcun.data.beir import available_splits, doc_text, load_beir, load_qrels
from ragcun.data.msmarco import (
    is_msmarco_dir,
    load_collection,
    load_qrels_trec,
    load_queries_tsv,
    msmarco_split_files,
)
from ragcun.io import atomic_path

logger = logging.getLogger(__name__)

SCHEMA_DOC = {
    "query": "query text",
    "positive": "positive document text (title + ' ' + text)",
    "negative_i": "i-th negative document text, i = 1..K",
    "query_id": "query id (prefixed '<source>:' when several sources are combined)",
    "positive_id": "positive document id",
    "negative_ids": "list[str]: ids of negative_1..K",
    "negative_ranks": "list[int]: BM25 rank (1-based) of each negative in the query's full ranking; -1 = random",
}


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

    def __post_init__(self) -> None:
        self.row = {d: i for i, d in enumerate(self.doc_ids)}

    exclude_judged: bool = True

    def excluded(self, qid: str, threshold: int) -> set[int]:
        """Rows never used as the query's negatives: its positives and every document judged relevant to it."""
        rows = set(_positives(self, qid, threshold))
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
    return _Source(data.name, "beir", str(data.path), ids, [doc_text(data.corpus[d]) for d in ids], data.queries,
                   data.qrels, judged)


def _positives(src: _Source, qid: str, threshold: int) -> list[int]:
    return sorted(src.row[d] for d, g in src.qrels[qid].items() if g >= threshold and d in src.row)


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


def build_triplets(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    split: str = "train",
    max_train_samples: int | None = None,
    split_ratio: float = 1.0,
    val_size: int = 0,
    negatives: str = "bm25",
    num_negatives: int = 1,
    bm25_top_k: int = 100,
    seed: int = 42,
    data_dir: str | None = None,
    val_candidates: int = 30,
    val_corpus_size: int = 2000,
    positive_threshold: int = 1,
    false_negative_guard: str = "none",
    negatives_exclude: str = "judged",
    format: str = "hf",
    batch_size: int = 4096,
    n_threads: int = 0,
    cache_index: bool = True,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Build training triplets and a held-out validation set; return the manifest (also written).

    ``source``: a BEIR dataset name or folder, an MS MARCO folder (collection.tsv, queries.<split>.tsv,
    qrels.<split>.tsv), or a list of those (each mined against its own corpus, then mixed).
    """
    from ragcun.data.bm25 import get_index, mine_candidates
    from ragcun.version import __version__

    if negatives not in ("bm25", "random"):
        raise ValueError(f"negatives must be 'bm25' or 'random', got {negatives!r}")
    if num_negatives < 1:
        raise ValueError("num_negatives must be >= 1")
    if not 0.0 < split_ratio <= 1.0:
        raise ValueError(f"split_ratio must be in (0, 1], got {split_ratio}")
    if negatives_exclude not in ("judged", "positives"):
        raise ValueError(f"negatives_exclude must be 'judged' or 'positives', got {negatives_exclude!r}")
    if false_negative_guard not in ("none", "above_positive"):
        raise ValueError(f"false_negative_guard must be 'none' or 'above_positive', got {false_negative_guard!r}")
    if format not in ("hf", "jsonl"):
        raise ValueError(f"format must be 'hf' or 'jsonl', got {format!r}")
    if val_size < 0 or (max_train_samples is not None and max_train_samples < 1):
        raise ValueError("val_size must be >= 0 and max_train_samples >= 1")

    sources_in = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    srcs = [_load_source(s, split, data_dir) for s in sources_in]
    for src in srcs:
        src.exclude_judged = negatives_exclude == "judged"
    if len(srcs) > 1:
        names = [s.name for s in srcs]
        if len(set(names)) != len(names):
            raise ValueError(f"the same source is given twice: {names}")
        for s in srcs:
            s.prefix = f"{s.name}:"
    rng = np.random.default_rng(seed)

    # 1. queries with at least one positive, held-out validation, split ratio
    pool: list[tuple[int, str]] = []
    no_pos = 0
    for si, s in enumerate(srcs):
        for qid in s.qrels:
            if _positives(s, qid, positive_threshold):
                pool.append((si, qid))
            else:
                no_pos += 1
    if not pool:
        raise ValueError(f"no query of split {split!r} has a positive (grade >= {positive_threshold}) in the corpus")
    pool = [pool[i] for i in rng.permutation(len(pool))]
    if val_size >= len(pool):
        raise ValueError(f"val_size={val_size} leaves no training query (only {len(pool)} queries have positives)")
    val_q = pool[:val_size]
    train_pool = pool[val_size:]
    n_train_q = max(1, round(len(train_pool) * split_ratio))
    train_q = train_pool[:n_train_q]

    # 2. one example per (query, positive); seeded shuffle; cap
    examples = [(si, qid, pos) for si, qid in train_q for pos in _positives(srcs[si], qid, positive_threshold)]
    examples = [examples[i] for i in rng.permutation(len(examples))]
    if max_train_samples is not None:
        examples = examples[:max_train_samples]
    logger.info("%d training examples from %d queries; %d validation queries", len(examples),
                len({(e[0], e[1]) for e in examples}), len(val_q))

    # 3. BM25 candidates, per source
    cand: dict[tuple[int, str], tuple[np.ndarray, np.ndarray, dict[int, int]]] = {}
    val_top: dict[tuple[int, str], list[int]] = {}
    bm25_info: list[dict[str, Any]] = []
    total_mined, total_sec = 0, 0.0
    for si, s in enumerate(srcs):
        need_train = negatives == "bm25"
        train_keys = sorted({(e[0], e[1]) for e in examples if e[0] == si}, key=lambda k: k[1]) if need_train else []
        val_keys = [k for k in val_q if k[0] == si]
        if not train_keys and not val_keys:
            continue
        t0 = time.perf_counter()
        index = get_index(s.doc_ids, s.texts, cache=cache_index, show_progress=show_progress)
        load_s = time.perf_counter() - t0
        info: dict[str, Any] = {"source": s.name, "index": str(index.path) if index.path else None,
                                "index_seconds": round(load_s, 2), "documents": len(s.doc_ids)}
        if train_keys:
            qtexts = [s.queries[k[1]] for k in train_keys]
            excl = [s.excluded(k[1], positive_threshold) for k in train_keys]
            mined = mine_candidates(index, qtexts, excl, top_k=bm25_top_k, batch_size=batch_size,
                                    n_threads=n_threads, show_progress=show_progress)
            for k, c, r, e in zip(train_keys, mined.candidates, mined.ranks, mined.excluded_ranks, strict=True):
                cand[k] = (c, r, e)
            info.update(queries=len(train_keys), mining_seconds=round(mined.seconds, 3),
                        queries_per_second=round(mined.rate, 1))
            total_mined += len(train_keys)
            total_sec += mined.seconds
        if val_keys:
            idx, scores = index.search([s.queries[k[1]] for k in val_keys], k=val_candidates, n_threads=n_threads)
            for k, row, sc in zip(val_keys, idx, scores, strict=True):
                val_top[k] = [int(d) for d, v in zip(row, sc, strict=True) if v > 0]
        bm25_info.append(info)

    # 4. negatives per example
    fallback = guarded = 0
    rows: dict[str, list[Any]] = {"query": [], "positive": []}
    for j in range(1, num_negatives + 1):
        rows[f"negative_{j}"] = []
    rows.update(query_id=[], positive_id=[], negative_ids=[], negative_ranks=[])
    for si, qid, pos in examples:
        s = srcs[si]
        never = s.excluded(qid, positive_threshold)
        if negatives == "bm25":
            c, r, pos_ranks = cand[(si, qid)]
            if false_negative_guard == "above_positive":
                below = r > pos_ranks.get(pos, np.iinfo(np.int64).max)
                guarded += int(not below.all())
                c, r = c[below], r[below]
            take = min(num_negatives, len(c))
            pick = rng.choice(len(c), size=take, replace=False) if take else np.zeros(0, dtype=np.int64)
            neg = [int(c[p]) for p in pick]
            ranks = [int(r[p]) for p in pick]
        else:
            neg, ranks = [], []
        if len(neg) < num_negatives:
            if negatives == "bm25":
                fallback += 1
            extra = _random_negatives(rng, len(s.doc_ids), never | set(neg), num_negatives - len(neg))
            neg += extra
            ranks += [-1] * len(extra)
        if len(neg) < num_negatives:
            raise ValueError(f"{s.name}: corpus too small for {num_negatives} negatives per query")
        rows["query"].append(s.queries[qid])
        rows["positive"].append(s.texts[pos])
        for j, d in enumerate(neg, start=1):
            rows[f"negative_{j}"].append(s.texts[d])
        rows["query_id"].append(s.prefix + qid)
        rows["positive_id"].append(s.prefix + s.doc_ids[pos])
        rows["negative_ids"].append([s.prefix + s.doc_ids[d] for d in neg])
        rows["negative_ranks"].append(ranks)
    if fallback:
        logger.warning("%d example(s) had fewer than %d BM25 candidates; filled with random negatives (rank -1)",
                       fallback, num_negatives)

    rate = total_mined / total_sec if total_sec > 0 else None
    manifest: dict[str, Any] = {
        "ragcun_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "sources": [
            {"name": s.name, "kind": s.kind, "path": s.path, "split": split, "documents": len(s.doc_ids),
             "queries": len(s.queries), "qrels": sum(len(r) for r in s.qrels.values())}
            for s in srcs
        ],
        "seed": seed,
        "options": {
            "split": split, "max_train_samples": max_train_samples, "split_ratio": split_ratio, "val_size": val_size,
            "negatives": negatives, "num_negatives": num_negatives, "bm25_top_k": bm25_top_k,
            "val_candidates": val_candidates, "val_corpus_size": val_corpus_size,
            "positive_threshold": positive_threshold, "false_negative_guard": false_negative_guard,
            "format": format, "negatives_exclude": negatives_exclude,
        },
        "counts": {
            "train_examples": len(examples),
            "train_queries": len({(e[0], e[1]) for e in examples}),
            "validation_queries": len(val_q),
            "queries_without_positive": no_pos,
            "random_fallback_examples": fallback,
            "guarded_examples": guarded,
        },
        "bm25": {"sources": bm25_info, "mined_queries": total_mined, "mining_seconds": round(total_sec, 3),
                 "queries_per_second": round(rate, 1) if rate else None},
        "schema": {"train": SCHEMA_DOC, "validation": "BEIR format; load with load_beir(path, split='dev')"},
    }
    if rate:
        logger.info("BM25 mining rate: %.1f queries/s over %d queries", rate, total_mined)

    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        if format == "hf":
            _save_hf(rows, num_negatives, tmp / "train")
        else:
            with open(tmp / "train.jsonl", "w", encoding="utf-8") as fh:
                for i in range(len(rows["query"])):
                    fh.write(json.dumps({k: v[i] for k, v in rows.items()}, ensure_ascii=False) + "\n")
        if val_q:
            manifest["counts"]["validation_documents"] = _write_validation(
                srcs, val_q, val_top, tmp / "validation", val_corpus_size, rng
            )
        with open(tmp / "manifest.json", "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2)
            fh.write("\n")
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
    (path / "qrels").mkdir(parents=True)
    with open(path / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for si, d in chosen:
            s = srcs[si]
            # texts are already title-joined; keep the title empty so doc_text() returns them unchanged
            fh.write(json.dumps({"_id": s.prefix + s.doc_ids[d], "title": "", "text": s.texts[d]}) + "\n")
    with open(path / "queries.jsonl", "w", encoding="utf-8") as fh:
        for si, qid in val_q:
            s = srcs[si]
            fh.write(json.dumps({"_id": s.prefix + qid, "text": s.queries[qid]}) + "\n")
    with open(path / "qrels" / "dev.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for si, qid in val_q:
            s = srcs[si]
            for d, g in s.qrels[qid].items():
                fh.write(f"{s.prefix + qid}\t{s.prefix + d}\t{g}\n")
    return len(chosen)
