"""BM25 over a corpus with bm25s: build, save/load (memory-mapped), batched search, hard-negative mining.

bm25s (Lù, 2024) stores BM25 as a sparse matrix of precomputed term scores, so scoring a query
is a handful of sparse-row sums: fast enough to mine MS MARCO's 500K training queries on one
machine, and the index is plain ``.npy`` files that load memory-mapped. Tokenisation: lowercase,
English stopwords, Snowball (PyStemmer) stemming, as in bm25s' own BEIR baselines.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragcun.files import atomic_path, write_json
from ragcun.fingerprint import texts_fingerprint
from ragcun.paths import cache_dir
from ragcun.progress import wanted

logger = logging.getLogger(__name__)

INDEX_FORMAT = 1


@dataclass(frozen=True)
class BM25Params:
    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    stemmer: str | None = "english"
    stopwords: str | None = "en"

    def as_dict(self) -> dict[str, Any]:
        return {"k1": self.k1, "b": self.b, "method": self.method, "stemmer": self.stemmer,
                "stopwords": self.stopwords}


def _stemmer(language: str | None):
    if not language:
        return None
    import Stemmer

    return Stemmer.Stemmer(language).stemWords


def corpus_fingerprint(doc_ids: Sequence[str], texts: Sequence[str], params: BM25Params) -> str:
    """The cache key of an index: the (id, text) pairs and the BM25 parameters."""
    return texts_fingerprint(doc_ids, texts, extra={"format": INDEX_FORMAT, **params.as_dict()})


class BM25Index:
    """A bm25s index plus the document ids of its rows."""

    def __init__(self, retriever: Any, doc_ids: list[str], params: BM25Params,
                 path: Path | None = None) -> None:
        self.retriever = retriever
        self.doc_ids = doc_ids
        self.params = params
        self.path = path
        self._stem = _stemmer(params.stemmer)

    def __len__(self) -> int:
        return len(self.doc_ids)

    @classmethod
    def build(
        cls, doc_ids: Sequence[str], texts: Sequence[str], params: BM25Params | None = None,
        show_progress: bool = True
    ) -> BM25Index:
        import bm25s

        params = params or BM25Params()
        if len(doc_ids) != len(texts):
            raise ValueError(f"{len(doc_ids)} ids but {len(texts)} texts")
        t0 = time.perf_counter()
        tokens = bm25s.tokenize(
            list(texts), stopwords=params.stopwords, stemmer=_stemmer(params.stemmer),
            show_progress=False,  # bm25s' own bars are library chatter: the log line below says it
        )
        retriever = bm25s.BM25(k1=params.k1, b=params.b, method=params.method)
        retriever.index(tokens, show_progress=False)
        logger.info("built BM25 index over %d documents in %.1fs", len(doc_ids), time.perf_counter() - t0)
        return cls(retriever, list(doc_ids), params)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the index atomically (``.npy`` arrays, vocab JSON, ids JSON; nothing pickled)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.mkdir()
            self.retriever.save(str(tmp), show_progress=False)
            with open(tmp / "doc_ids.json", "w", encoding="utf-8") as fh:
                json.dump(self.doc_ids, fh)
            write_json(tmp / "ragcun_bm25.json", {"format": INDEX_FORMAT, "params": self.params.as_dict(),
                                                  "num_docs": len(self.doc_ids)})
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> BM25Index:
        import bm25s

        path = Path(path)
        meta = json.loads((path / "ragcun_bm25.json").read_text())
        if meta.get("format") != INDEX_FORMAT:
            raise ValueError(f"{path}: BM25 index format {meta.get('format')} (expected {INDEX_FORMAT}); "
                             "rebuild it")
        retriever = bm25s.BM25.load(str(path), mmap=mmap, show_progress=False)
        doc_ids = json.loads((path / "doc_ids.json").read_text(encoding="utf-8"))
        return cls(retriever, doc_ids, BM25Params(**meta["params"]), path)

    def tokenize_queries(self, queries: Sequence[str]) -> list[list[str]]:
        import bm25s

        tok = bm25s.tokenize(
            list(queries), stopwords=self.params.stopwords, stemmer=self._stem, return_ids=False,
            show_progress=False
        )
        return [list(t) for t in tok]

    def search(
        self, queries: Sequence[str], k: int = 100, n_threads: int = 0, show_progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (row indices, scores) per query, best first; ``k`` is capped at the corpus size."""
        k = min(k, len(self.doc_ids))
        if not queries:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        tokens = self.tokenize_queries(queries)
        res = self.retriever.retrieve(tokens, k=k, n_threads=n_threads, show_progress=show_progress,
                                      sorted=True)
        return np.asarray(res.documents, dtype=np.int64), np.asarray(res.scores, dtype=np.float32)


def get_index(
    doc_ids: Sequence[str],
    texts: Sequence[str],
    params: BM25Params | None = None,
    cache: bool = True,
    show_progress: bool = True,
) -> BM25Index:
    """Load the cached index of this corpus (``cache_dir("bm25")/<sha>``, memory-mapped) or build and
    save it."""
    params = params or BM25Params()
    if not cache:
        return BM25Index.build(doc_ids, texts, params, show_progress=show_progress)
    key = corpus_fingerprint(doc_ids, texts, params)
    path = cache_dir("bm25") / key[:32]
    if (path / "ragcun_bm25.json").exists():
        logger.info("reusing BM25 index %s", path)
        return BM25Index.load(path, mmap=True)
    index = BM25Index.build(doc_ids, texts, params, show_progress=show_progress)
    index.save(path)
    logger.info("saved BM25 index to %s", path)
    return BM25Index.load(path, mmap=True)


@dataclass
class MinedNegatives:
    """Per query: candidate negatives (row indices into the index) and their 1-based BM25 ranks."""

    candidates: list[np.ndarray]
    ranks: list[np.ndarray]
    seconds: float
    excluded_ranks: list[dict[int, int]] = field(default_factory=list)  # excluded doc row -> its BM25 rank

    @property
    def rate(self) -> float:
        return len(self.candidates) / self.seconds if self.seconds > 0 else float("inf")


def mine_candidates(
    index: BM25Index,
    queries: Sequence[str],
    exclude: Sequence[set[int]],
    top_k: int = 100,
    batch_size: int = 4096,
    n_threads: int = 0,
    show_progress: bool = True,
) -> MinedNegatives:
    """For each query, its BM25 top-``top_k`` documents that are not in ``exclude[i]`` (its labelled
    positives), with their BM25 ranks in the full ranking (positives included).

    Queries go to bm25s in batches; each batch retrieves ``top_k + max |exclude|`` so that every
    query keeps ``top_k`` candidates after its positives are removed. Documents with a zero BM25
    score (no query term in common) are not candidates.
    """
    from tqdm.auto import tqdm

    if len(queries) != len(exclude):
        raise ValueError("queries and exclude differ in length")
    cands: list[np.ndarray] = []
    ranks: list[np.ndarray] = []
    excluded: list[dict[int, int]] = []
    t0 = time.perf_counter()
    with tqdm(total=len(queries), desc="BM25 mining", unit="q", disable=not wanted(show_progress)) as bar:
        for start in range(0, len(queries), batch_size):
            qs = queries[start : start + batch_size]
            ex = exclude[start : start + batch_size]
            k = top_k + max((len(e) for e in ex), default=0)
            idx, scores = index.search(qs, k=k, n_threads=n_threads)
            for row_idx, row_scores, excl in zip(idx, scores, ex, strict=True):
                positions = np.arange(1, len(row_idx) + 1)
                keep = row_scores > 0
                hit: dict[int, int] = {}
                if excl:
                    is_excl = np.isin(row_idx, np.fromiter(excl, dtype=np.int64, count=len(excl)))
                    hit = {int(d): int(r)
                           for d, r in zip(row_idx[is_excl & keep], positions[is_excl & keep], strict=True)}
                    keep &= ~is_excl
                cands.append(row_idx[keep][:top_k])
                ranks.append(positions[keep][:top_k])
                excluded.append(hit)
            bar.update(len(qs))
    seconds = time.perf_counter() - t0
    out = MinedNegatives(cands, ranks, seconds, excluded)
    logger.info("BM25 mining: %d queries in %.1fs (%.1f queries/s)", len(queries), seconds, out.rate)
    return out
