"""BM25 hard-negative mining rate (queries/s): ragcun (bm25s, batched) vs rank_bm25 on the same queries.

Two corpora:

1. nfcorpus train (real BEIR: 3,633 documents, 2,590 train queries): every train query mined
   with ``ragcun.data.bm25.mine_candidates`` (top-100, positives excluded).
2. a synthetic corpus of random-word passages (seeded; Zipf-distributed 30k-word vocabulary,
   30-70 words per passage): 200k passages in quick mode, 1M in full mode; queries are 2-6
   words drawn from random passages.

rank_bm25 (``BM25Okapi``, the usual pure-Python baseline) gets the *same* token lists (bm25s'
tokenizer: lowercase, English stopwords, Snowball stemming) and scores a small subset of the
queries, because it scans every document per query term; its rate is per query and comparable.
Index-build time and peak memory are reported too.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from benchmarks.common import DATA_DIR, peak_rss, row

logger = logging.getLogger(__name__)


def _synthetic(n_docs: int, n_queries: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.array(["".join(rng.choice(letters, size=rng.integers(3, 10))) for _ in range(30_000)])
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    p /= p.sum()
    lengths = rng.integers(30, 71, size=n_docs)
    flat = rng.choice(len(vocab), size=int(lengths.sum()), p=p)
    words = vocab[flat]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    docs = [" ".join(words[bounds[i] : bounds[i + 1]]) for i in range(n_docs)]
    queries = []
    for d in rng.integers(0, n_docs, size=n_queries):
        w = docs[d].split()
        k = int(rng.integers(2, 7))
        start = int(rng.integers(0, len(w) - k))
        queries.append(" ".join(w[start : start + k]))
    return docs, queries


def _rank_bm25_rate(corpus_tokens: list[list[str]], query_tokens: list[list[str]],
                    k: int) -> tuple[float, float]:
    from rank_bm25 import BM25Okapi

    t0 = time.perf_counter()
    bm = BM25Okapi(corpus_tokens)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    for q in query_tokens:
        scores = bm.get_scores(q)
        top = np.argpartition(-scores, min(k, len(scores) - 1))[:k]
        top[np.argsort(-scores[top])]
    return len(query_tokens) / (time.perf_counter() - t0), build


def _bench(task: str, ids: list[str], texts: list[str], queries: list[str], exclude: list[set[int]],
           n_ref: int, reps: int, top_k: int = 100) -> list[dict]:
    import bm25s

    from ragcun.data.bm25 import BM25Index, BM25Params, _stemmer, mine_candidates

    t0 = time.perf_counter()
    index, rss = peak_rss(lambda: BM25Index.build(ids, texts, show_progress=False))
    build_s = time.perf_counter() - t0
    rates = []
    for _ in range(reps):
        mined = mine_candidates(index, queries, exclude, top_k=top_k, show_progress=False)
        rates.append(mined.rate)
    params = BM25Params()
    stem = _stemmer(params.stemmer)
    corpus_tokens = [list(t) for t in bm25s.tokenize(texts, stopwords=params.stopwords, stemmer=stem,
                                                       return_ids=False, show_progress=False)]
    ref_q = index.tokenize_queries(queries[:n_ref])
    ref_rate, ref_build = _rank_bm25_rate(corpus_tokens, ref_q, top_k)
    # ragcun on exactly the rank_bm25 subset too, for a same-queries number
    sub = mine_candidates(index, queries[:n_ref], exclude[:n_ref], top_k=top_k, show_progress=False)
    extra = dict(documents=len(ids), queries=len(queries), top_k=top_k, rank_bm25_queries=n_ref,
                 ragcun_rate_on_rank_bm25_subset=round(sub.rate, 1),
                 note="rank_bm25 is timed on a subset of the same queries (it scans all documents per term); "
                      "rates are per query, so comparable")
    return [
        row(task, "queries/s", "ragcun mine_candidates (bm25s, batched)", rates,
            "rank_bm25 BM25Okapi", [ref_rate], higher_is_better=True, **extra),
        row(task, "index build s", "ragcun BM25Index.build (bm25s, incl. tokenisation)", [build_s],
            "rank_bm25 BM25Okapi (pre-tokenised)", [ref_build], higher_is_better=False,
            peak_rss_gb=round(rss / 2**30, 2)),
    ]


def run(quick: bool) -> dict:
    from ragcun.data.beir import doc_text, load_beir

    notes = []
    rows = []
    nf = load_beir("nfcorpus", "train", DATA_DIR)
    ids = list(nf.corpus)
    texts = [doc_text(nf.corpus[d]) for d in ids]
    rowof = {d: i for i, d in enumerate(ids)}
    qids = list(nf.queries)
    queries = [nf.queries[q] for q in qids]
    exclude = [{rowof[d] for d, g in nf.qrels[q].items() if g >= 1 and d in rowof} for q in qids]
    rows += _bench("nfcorpus train (2,590 queries, 3,633 docs)", ids, texts, queries, exclude,
                   n_ref=200 if quick else 2590, reps=1 if quick else 3)

    n_docs = 200_000 if quick else 1_000_000
    n_q = 2_000 if quick else 10_000
    t0 = time.perf_counter()
    docs, sq = _synthetic(n_docs, n_q)
    notes.append(f"synthetic corpus of {n_docs:,} passages generated in {time.perf_counter() - t0:.1f}s")
    rows += _bench(f"synthetic {n_docs:,} passages", [str(i) for i in range(n_docs)], docs, sq,
                   [set() for _ in sq], n_ref=5 if quick else 10, reps=1)
    return {
        "suite": "mining",
        "inputs": {"nfcorpus": "beir/nfcorpus train", "synthetic_docs": n_docs, "synthetic_queries": n_q,
                   "bm25": "k1=0.9 b=0.4 lucene, English stopwords + Snowball stemming", "top_k": 100},
        "rows": rows,
        "notes": notes,
    }


if __name__ == "__main__":
    import json
    import sys

    logging.basicConfig(level=logging.INFO)
    print(json.dumps(run("--full" not in sys.argv), indent=2))
