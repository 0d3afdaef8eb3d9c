"""Approximate L2 search at corpus scale: ragcun's LanceDB backend (IVF-PQ on disk) beside FAISS on the same
vectors, the same queries and the same index settings, with exact FAISS search as the ground truth.

* ragcun: :class:`ragcun.retrieval.lance_index.LanceIndex` (``engine="lancedb", index="ivf"``): IVF-PQ with
  ``nlist`` partitions, ``dim/8`` sub-vectors of 8 bits, ``nprobes`` probed and the best
  ``refine_factor × k`` candidates re-ranked on the full vectors; the table lives on disk.
* reference: FAISS ``IndexRefineFlat(IndexIVFPQ)`` with the same ``nlist``, sub-vectors, ``nprobe`` and
  ``k_factor``, held in memory; and ragcun's default FAISS ``ivf`` (``IndexIVFFlat``, same
  ``nlist``/``nprobe``).
* data: 512-d vectors drawn from a mixture of 4,096 Gaussians (``x = 0.8·c + 0.6·ε`` with centres
  ``c ~ N(0, I)``): the covariance is the identity, as ragcun trains for, but the points cluster, as text
  embeddings do. A pure N(0, I) cloud has no neighbourhood structure for any ANN index to use.
  Queries are documents plus noise (``q = x + 0.5·ε``), 1,000 of them, top-10.
* measured: build time (one run), recall@10 against exact search, queries/s for one batched call of
  1,000 queries and for single queries (100, one at a time); 3 repetitions after a warm-up.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import row, timed

logger = logging.getLogger(__name__)

K, DIM, NQ, CENTRES = 10, 512, 1000, 4096


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered vectors with identity covariance, and queries near some of them."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CENTRES, DIM), dtype=np.float32)
    x = np.empty((n, DIM), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        x[s:s + m] = (0.8 * centres[rng.integers(0, CENTRES, m)]
                      + 0.6 * rng.standard_normal((m, DIM), dtype=np.float32))
    q = x[rng.choice(n, NQ, replace=False)] + 0.5 * rng.standard_normal((NQ, DIM), dtype=np.float32)
    return x, q


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(w)) / K for g, w in zip(got, want, strict=True)]))


def _measure(name: str, search, truth: np.ndarray, q: np.ndarray) -> dict[str, Any]:
    t_batch, (_, ids) = timed(lambda: search(q), reps=3, warmup=1)
    t_one, _ = timed(lambda: [search(q[i:i + 1]) for i in range(100)], reps=3, warmup=1)
    r = recall(ids, truth)
    logger.info("%s: recall@10 %.3f, %.0f q/s batched, %.0f q/s single", name, r, NQ / np.median(t_batch),
                100 / np.median(t_one))
    return {"recall": r, "batch_qps": [NQ / t for t in t_batch], "single_qps": [100 / t for t in t_one]}


def run(quick: bool = False) -> dict[str, Any]:
    import faiss

    from ragcun.retrieval.faiss_index import IVFIndex
    from ragcun.retrieval.lance_index import LanceIndex

    n = 100_000 if quick else 1_000_000
    nlist, subs, nprobe, refine = (int(round(np.sqrt(n))), DIM // 8, 32, 10)
    x, q = make_data(n)
    ids = np.arange(n, dtype=np.int64)
    exact = faiss.IndexFlatL2(DIM)
    exact.add(x)
    t0 = time.perf_counter()
    _, truth = exact.search(q, K)
    logger.info("n=%d: exact ground truth in %.1f s", n, time.perf_counter() - t0)
    t_exact, _ = timed(lambda ix=exact: ix.search(q, K), reps=1)
    del exact

    work = tempfile.mkdtemp(prefix="bench-lance-")
    try:
        t0 = time.perf_counter()
        lance = LanceIndex(DIM, exact=False, uri=work, num_partitions=nlist, num_sub_vectors=subs,
                           nprobes=nprobe, refine_factor=refine, min_rows=1)
        for s in range(0, n, 100_000):
            lance.add(x[s:s + 100_000], ids[s:s + 100_000])
        lance.prepare()
        build_lance = time.perf_counter() - t0
        disk = sum(p.stat().st_size for p in Path(work).rglob("*") if p.is_file())
        logger.info("LanceDB IVF-PQ built in %.0f s (%.2f GB on disk)", build_lance, disk / 1e9)
        m_lance = _measure("LanceDB IVF-PQ", lambda qq, ix=lance: ix.search(qq, K), truth, q)
        del lance
    finally:
        shutil.rmtree(work, ignore_errors=True)

    faiss.omp_set_num_threads(faiss.omp_get_max_threads())
    t0 = time.perf_counter()
    ivfpq = faiss.IndexIVFPQ(faiss.IndexFlatL2(DIM), DIM, nlist, subs, 8)
    ivfpq.train(x[np.random.default_rng(1).choice(n, min(n, 256 * nlist), replace=False)])
    ref = faiss.IndexRefineFlat(ivfpq)
    ref.add(x)
    faiss.ParameterSpace().set_index_parameter(ref, "nprobe", nprobe)
    ref.k_factor = refine
    build_pq = time.perf_counter() - t0
    logger.info("FAISS IVF-PQ + refine built in %.0f s", build_pq)
    m_pq = _measure("FAISS IVF-PQ", lambda qq, ix=ref: ix.search(qq, K), truth, q)
    del ref, ivfpq

    t0 = time.perf_counter()
    flat = IVFIndex(DIM, nlist=nlist, nprobe=nprobe)
    flat.add(x, ids)
    flat.prepare()
    build_flat = time.perf_counter() - t0
    m_flat = _measure("FAISS IVF-Flat", lambda qq, ix=flat: ix.search(qq, K), truth, q)
    del flat

    setting = f"{n:,} x {DIM}, nlist {nlist}, {subs}x8-bit PQ, nprobe {nprobe}, refine x{refine}"
    rows = [
        row(f"IVF-PQ recall@10, {setting}", "recall@10", "ragcun LanceDB", [m_lance["recall"]],
            "FAISS IVF-PQ+refine", [m_pq["recall"]], higher_is_better=True),
        row(f"IVF-PQ queries/s, {NQ} per call, {setting}", "queries/s", "ragcun LanceDB",
            m_lance["batch_qps"], "FAISS IVF-PQ+refine", m_pq["batch_qps"], higher_is_better=True),
        row(f"IVF-PQ queries/s, 1 per call, {setting}", "queries/s", "ragcun LanceDB", m_lance["single_qps"],
            "FAISS IVF-PQ+refine", m_pq["single_qps"], higher_is_better=True),
        row(f"IVF-PQ build, {setting}", "seconds", "ragcun LanceDB (on disk)", [build_lance],
            "FAISS IVF-PQ+refine (in memory)", [build_pq], higher_is_better=False, lance_disk_bytes=disk),
        row(f"ragcun FAISS ivf (IVF-Flat), {n:,} x {DIM}, nlist {nlist}, nprobe {nprobe}", "recall@10",
            "ragcun FAISS ivf", [m_flat["recall"]], higher_is_better=True, build_s=build_flat,
            batch_qps=float(np.median(m_flat["batch_qps"])),
            single_qps=float(np.median(m_flat["single_qps"]))),
    ]
    notes = [f"exact FAISS IndexFlatL2: {NQ / t_exact[0]:.0f} queries/s batched (the ground truth)",
             "LanceDB keeps the table on disk and re-reads candidates for re-ranking; "
             "FAISS holds everything in RAM."]
    return {"suite": "engines", "inputs": {"n": n, "dim": DIM, "queries": NQ, "k": K, "nlist": nlist,
                                           "sub_vectors": subs, "nprobe": nprobe, "refine_factor": refine},
            "rows": rows, "notes": notes}
