"""Search speed and recall: ragcun's flat / IVF / HNSW indexes (and its NumPy fallback) against a
plain NumPy exact search, on real scifact embeddings and on a synthetic N(0, I) matrix.

* queries/s: all queries searched in one batch call (top-10), median of repetitions.
* recall@10: overlap of each index's top 10 with the exact top 10.
* scifact: the corpus encoded with the real all-MiniLM-L6-v2 (document embeddings cached as .npy in
  ``ragcun.paths.cache_dir("bench")``; quick mode uses the first 1000 passages), queried with the
  scifact queries.
* synthetic: 1M x 512 Gaussian vectors (quick: 100k), like a SIGReg-trained embedding space.
"""

from __future__ import annotations

import logging
import time
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import DATA_DIR, row, timed

logger = logging.getLogger(__name__)

K = 10


def numpy_exact(x: np.ndarray, q: np.ndarray, k: int = K, block: int = 1 << 24) -> np.ndarray:
    """The reference: brute-force squared L2 in NumPy (argpartition, then sort), in query blocks."""
    sq = np.einsum("ij,ij->i", x, x)
    out = np.empty((q.shape[0], k), np.int64)
    rows = max(1, block // x.shape[0])
    for s in range(0, q.shape[0], rows):
        d = sq[None, :] - 2.0 * (q[s : s + rows] @ x.T)
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d, part, 1), axis=1)
        out[s : s + rows] = np.take_along_axis(part, order, 1)
    return out


def recall_at_k(ref: np.ndarray, got: np.ndarray) -> float:
    return float(np.mean([len(set(r.tolist()) & set(g.tolist())) / len(r)
                          for r, g in zip(ref, got, strict=True)]))


def scifact_embeddings(n_docs: int | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(documents, queries) embeddings of scifact with the real MiniLM, cached as .npy."""
    from ragcun.paths import cache_dir
    from ragcun.resolve import load_sentence_transformer
    from ragcun.retrieval import read_documents

    root = Path(DATA_DIR) / "beir" / "scifact"
    tag = "all" if n_docs is None else str(n_docs)
    cache = cache_dir("bench")
    dpath, qpath = cache / f"scifact-minilm-docs-{tag}.npy", cache / "scifact-minilm-queries.npy"
    model = None
    if not dpath.exists():
        model = load_sentence_transformer("all-MiniLM-L6-v2")
        texts = [d["text"] for d in islice(read_documents(root / "corpus.jsonl"), n_docs)]
        logger.info("encoding %d scifact passages (cached afterwards in %s)", len(texts), dpath)
        x = model.encode_document(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=True)
        np.save(dpath, x.astype(np.float32))
    if not qpath.exists():
        import json

        model = model or load_sentence_transformer("all-MiniLM-L6-v2")
        with open(root / "queries.jsonl", encoding="utf-8") as fh:
            queries = [json.loads(line)["text"] for line in fh if line.strip()]
        q = model.encode_query(queries, batch_size=64, convert_to_numpy=True)
        np.save(qpath, q.astype(np.float32))
    return np.load(dpath, allow_pickle=False), np.load(qpath, allow_pickle=False), str(dpath)


def bench_dataset(name: str, x: np.ndarray, q: np.ndarray, reps: int,
                  configs: dict[str, dict]) -> list[dict[str, Any]]:
    from ragcun.retrieval.engines import make_index

    ids = np.arange(x.shape[0], dtype=np.int64)
    ref_times, ref = timed(lambda: numpy_exact(x, q), reps=reps, warmup=1)
    ref_qps = [q.shape[0] / t for t in ref_times]
    rows = []
    for label, cfg in configs.items():
        kind, backend, params = cfg["kind"], cfg.get("backend", "faiss"), cfg.get("params", {})
        t0 = time.perf_counter()
        index = make_index(kind, x.shape[1], backend=backend, **params)
        index.add(x, ids)
        index.prepare()
        build_s = time.perf_counter() - t0
        times, (_, got) = timed(lambda index=index: index.search(q, K), reps=reps, warmup=1)
        qps = [q.shape[0] / t for t in times]
        rec = recall_at_k(ref, got)
        task = f"{name} top-{K} search, {x.shape[0]} x {x.shape[1]}, {q.shape[0]} queries"
        rows.append(row(task, "queries/s", f"ragcun {label}", qps, "numpy exact (argpartition)", ref_qps,
                        higher_is_better=True, index=kind, backend=backend, params=index.params,
                        build_seconds=round(build_s, 2)))
        rows.append(row(task, "recall@10 vs exact", f"ragcun {label}", [rec], higher_is_better=True,
                        index=kind, params=index.params))
        logger.info("%s %s: %.0f q/s (numpy exact %.0f q/s), recall@10 %.3f, build %.1fs",
                    name, label, float(np.median(qps)), float(np.median(ref_qps)), rec, build_s)
        del index
    return rows


def run(quick: bool = False) -> dict[str, Any]:
    reps = 3
    configs = {
        "flat (FAISS IndexFlatL2)": {"kind": "flat"},
        "numpy fallback": {"kind": "flat", "backend": "numpy"},
        "ivf (nprobe default)": {"kind": "ivf"},
        "ivf nprobe=32": {"kind": "ivf", "params": {"nprobe": 32}},
        "hnsw M=32 efC=80 efS=64": {"kind": "hnsw",
                                    "params": {"M": 32, "ef_construction": 80, "ef_search": 64}},
        "hnsw M=32 efC=80 efS=256": {"kind": "hnsw",
                                     "params": {"M": 32, "ef_construction": 80, "ef_search": 256}},
    }
    rows: list[dict[str, Any]] = []
    notes: list[str] = []

    n_docs = 1000 if quick else None
    xs, qs, cached = scifact_embeddings(n_docs)
    sf_configs = {k: v for k, v in configs.items() if k != "ivf nprobe=32" or xs.shape[0] >= 32 * 39}
    rows += bench_dataset("scifact (all-MiniLM-L6-v2)", xs, qs, reps, sf_configs)
    notes.append(f"scifact: {xs.shape[0]} passages, {qs.shape[0]} queries; embeddings cached in {cached}")

    n_syn, n_q = (100_000, 200) if quick else (1_000_000, 1000)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_syn, 512), dtype=np.float32)
    q = rng.standard_normal((n_q, 512), dtype=np.float32)
    rows += bench_dataset("synthetic N(0, I)", x, q, reps, configs)
    notes.append(
        "synthetic isotropic Gaussian data in 512 dimensions has no cluster structure: the hardest case "
        "for IVF/HNSW recall (trained embeddings are easier); queries are fresh N(0, I) draws"
    )
    notes.append("queries/s = one batched search of all queries; build_seconds includes IVF training")
    return {
        "suite": "search",
        "inputs": {"k": K, "quick": quick, "scifact_docs": int(xs.shape[0]),
                   "scifact_queries": int(qs.shape[0]), "synthetic": [n_syn, 512], "synthetic_queries": n_q,
                   "reps": reps},
        "rows": rows,
        "notes": notes,
    }


if __name__ == "__main__":  # pragma: no cover
    import argparse
    import json

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    res = run(quick=p.parse_args().quick)
    print(json.dumps(res, indent=1, default=str))
