"""Every encoding runtime against plain sentence-transformers fp32: passages/s and NDCG@10 on full SciFact
test.

* reference: ``SentenceTransformer.encode`` of all-MiniLM-L6-v2 in fp32 PyTorch, batch 16 (the same batch
  as ragcun's, so a row isolates the runtime; ragcun's torch fp32 path *is* this call:
  :func:`ragcun.runtime.prepare_model` returns the model unchanged, so it is not timed twice).
* ragcun: the same model through :func:`ragcun.runtime.prepare_model` — torch bf16, ONNX Runtime fp32, ONNX
  Runtime int8 (per-channel weights, dynamic activations); the export and quantisation are done (and cached)
  before timing and reported as one-off seconds.
* data: scifact corpus (5,183 passages, 256 tokens) and its 300 test queries; quick mode: the judged passages
  plus random others up to 1,000 passages, all 300 queries.
* quality: NDCG@10 over the 300 queries (cosine, ragcun's exact search, pytrec_eval) and each corpus vector's
  cosine to the fp32 reference (min and mean).
* repetitions: one corpus pass per runtime in full mode (a pass is 4–17 minutes here), two in quick mode.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import DATA_DIR, row

logger = logging.getLogger(__name__)

BATCH = 16
RUNTIMES = [("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8")]


def _cpu_flags() -> dict[str, bool]:
    from ragcun.runtime import cpu_info

    flags = cpu_info()[1]
    return {f: f in flags for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")}


def _ndcg10(q: np.ndarray, d: np.ndarray, qids: list[str], doc_ids: list[str], qrels: dict) -> float:
    from ragcun.encoding.search import search
    from ragcun.evaluation.metrics import evaluate_run

    scores, idx = search(q, d, 100, "cos")
    run = {qid: {doc_ids[int(i)]: float(s) for s, i in zip(scores[r], idx[r], strict=True)}
           for r, qid in enumerate(qids)}
    aggregate, _ = evaluate_run(qrels, run, metrics={"ndcg": (10,)})
    return float(aggregate["ndcg@10"])


def _encode(model: Any, docs: list[str], queries: list[str],
            reps: int) -> tuple[list[float], np.ndarray, np.ndarray]:
    model.encode_document(docs[:BATCH], batch_size=BATCH)  # warm-up: first-call allocations, thread pools
    times, emb = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        emb = model.encode_document(docs, batch_size=BATCH, convert_to_numpy=True)
        times.append(len(docs) / (time.perf_counter() - t0))
        logger.info("  %.1f passages/s", times[-1])
    q = model.encode_query(queries, batch_size=BATCH, convert_to_numpy=True)
    return times, np.asarray(emb, dtype=np.float32), np.asarray(q, dtype=np.float32)


def run(quick: bool = False) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer

    from ragcun.data.beir import doc_text, load_beir
    from ragcun.encoding.corpus import judged_queries
    from ragcun.resolve import resolve_model
    from ragcun.runtime import Runtime, cpu_has_bf16, prepare_model

    reps = 2 if quick else 1
    if quick:
        import tempfile

        from benchmarks.suites.evaluate import _slice

        tmp = tempfile.TemporaryDirectory(prefix="ragcun-bench-backends-")
        folder = _slice(1000, Path(tmp.name) / "scifact-1k")
    else:
        from ragcun.paths import find_beir_dataset

        folder = find_beir_dataset("scifact", DATA_DIR)
    data = load_beir(str(folder), split="test")
    doc_ids = list(data.corpus)
    docs = [doc_text(data.corpus[d]) for d in doc_ids]
    queries = judged_queries(data)
    qids = list(queries)
    name = (f"scifact{' (1,000-passage slice)' if quick else ''}: {len(docs)} passages, "
            f"{len(qids)} test queries")

    model = SentenceTransformer(resolve_model("all-MiniLM-L6-v2").location, device="cpu")
    model.max_seq_length = 256
    logger.info("plain sentence-transformers fp32 (reference) on %d passages", len(docs))
    ref_speed, ref_docs, ref_q = _encode(model, docs, [queries[q] for q in qids], reps)
    ref_ndcg = _ndcg10(ref_q, ref_docs, qids, doc_ids, data.qrels)
    task = f"encode {name} (MiniLM, 256 tokens, batch {BATCH}, CPU)"
    rows: list[dict[str, Any]] = []
    for backend, precision in RUNTIMES:
        t0 = time.perf_counter()
        runtime_model = prepare_model(model, Runtime(backend, precision), owned=False)
        setup_s = time.perf_counter() - t0
        label = f"ragcun {backend} {precision}"
        logger.info("%s (set-up %.1f s)", label, setup_s)
        speed, d, q = _encode(runtime_model, docs, [queries[x] for x in qids], reps)
        ndcg = _ndcg10(q, d, qids, doc_ids, data.qrels)
        cos = (d * ref_docs).sum(1) / (np.linalg.norm(d, axis=1) * np.linalg.norm(ref_docs, axis=1))
        details = {"ndcg10": round(100 * ndcg, 2), "ndcg10_fp32": round(100 * ref_ndcg, 2),
                   "ndcg10_delta": round(100 * (ndcg - ref_ndcg), 2), "cos_min": round(float(cos.min()), 5),
                   "cos_mean": round(float(cos.mean()), 5), "setup_seconds": round(setup_s, 1)}
        rows.append(row(task, "passages/s", label, speed, "plain sentence-transformers fp32", ref_speed,
                        higher_is_better=True, **details))
        rows.append(row(task, "NDCG@10 ×100", label, [100 * ndcg], "plain sentence-transformers fp32",
                        [100 * ref_ndcg], higher_is_better=True, cos_min=details["cos_min"]))
        del runtime_model
    flags = _cpu_flags()
    int8_kernel = ("VNNI (vpdpbusd)" if flags["avx512_vnni"] or flags["avx_vnni"]
                   else "AVX2 (u8s8 via vpmaddubsw): no VNNI here")
    notes = [
        f"CPU flags: {', '.join(f for f, on in flags.items() if on) or 'none of the listed'}; missing: "
        f"{', '.join(f for f, on in flags.items() if not on)}. "
        f"bf16 {'runs natively' if cpu_has_bf16() else 'is emulated'} here, and int8 matrix products use "
        f"{int8_kernel}.",
        "setup_seconds: the one-off ONNX export (checked against torch on a probe batch) and int8 "
        "quantisation, cached afterwards under <cache>/onnx/<model fingerprint>/.",
        "ragcun torch fp32 is the reference call itself (the model is returned unchanged), "
        "so it is not a row.",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
    ]
    if quick:
        tmp.cleanup()
    return {"suite": "backends", "inputs": {"dataset": name, "model": "all-MiniLM-L6-v2",
                                              "max_seq_length": 256, "batch_size": BATCH, "reps": reps,
                                              "cpu_flags": flags},
            "rows": rows, "notes": notes}
