"""``evaluate_model``: BEIR evaluation of any sentence-transformers model with L2, cosine or dot scoring.

The pipeline is BEIR's (same text joining, same query set, top-k+1 then drop the hit whose id
equals the query id, pytrec_eval metrics) with three differences that do not change the
numbers: the corpus is encoded in cached chunks, the search keeps a running top-k over
memory-mapped chunks, and L2 ranks by the true distance ``-‖q − d‖``.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragcun.encoding.corpus import CorpusEmbeddings, encode_corpus, encode_texts, judged_queries
from ragcun.encoding.fusion import Fusion, hybrid_search
from ragcun.encoding.search import SIMILARITY_TO_SCORE, check_score, merge_topk, rescore, search_chunks
from ragcun.encoding.settings import EncodeSettings
from ragcun.evaluation.metrics import DEFAULT_METRICS, evaluate_run, metric_names, write_qrels, write_run
from ragcun.files import package_versions, write_json
from ragcun.fingerprint import model_fingerprint
from ragcun.runtime import runtime_of

logger = logging.getLogger(__name__)

DEFAULT_TOP_K = 1000


def default_score(model: Any) -> str:
    """The score a model was built for: its ``similarity_fn_name`` (euclidean -> l2, cosine -> cos,
    dot -> dot).

    sentence-transformers models without one use cosine, as sentence-transformers itself does.
    """
    name = getattr(model, "similarity_fn_name", None) or "cosine"
    score = SIMILARITY_TO_SCORE.get(str(name))
    if score is None:
        raise ValueError(f"the model's similarity function {name!r} has no ragcun score; pass score='l2', "
                         "'cos' or 'dot'")
    return score


def _run_file_for(run_file: str | os.PathLike, dataset: str, several: bool) -> Path:
    path = Path(run_file)
    if not several:
        return path
    safe = dataset.replace("/", "_")
    return path.with_name(f"{path.stem}.{safe}{path.suffix or '.trec'}")


def retrieve(
    model: Any,
    corpus: dict[str, dict[str, str]],
    queries: dict[str, str],
    score: str,
    top_k: int = DEFAULT_TOP_K,
    dataset: str = "corpus",
    batch_size: int = 64,
    cache: bool = True,
    chunk_size: int = 10_000,
    ignore_identical_ids: bool = True,
    show_progress_bar: bool = True,
    corpus_emb: CorpusEmbeddings | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, float], np.ndarray]:
    """Dense retrieval of ``queries`` over ``corpus``; returns (run, timing seconds, query embeddings).

    Like BEIR, it asks for ``top_k + 1`` hits and drops the one whose id equals the query id, so
    each query keeps ``top_k``. Under torchrun every rank searches its own corpus chunks and the
    top-k lists are merged (all ranks return the same run). Pass ``corpus_emb`` (from
    :func:`~ragcun.encoding.corpus.encode_corpus` on the same corpus order) to reuse an encoding;
    it is then left for the caller to clean up.
    """
    from ragcun.data.beir import doc_text
    from ragcun.distributed import is_distributed, rank, world_size

    score = check_score(score)
    timing: dict[str, float] = {}
    doc_ids = list(corpus)
    own = corpus_emb is None
    emb = corpus_emb or encode_corpus(
        model, doc_ids, [doc_text(corpus[d]) for d in doc_ids], dataset, batch_size, chunk_size, cache,
        show_progress_bar=show_progress_bar,
    )
    if len(emb) != len(doc_ids):
        raise ValueError(f"corpus_emb has {len(emb)} vectors but the corpus {len(doc_ids)} documents")
    try:
        timing["encode_corpus_s"] = emb.seconds
        timing["corpus_chunks_encoded"] = emb.encoded_chunks
        qids = list(queries)
        t0 = time.perf_counter()
        q_emb = encode_texts(model, [queries[q] for q in qids], "query", batch_size, show_progress_bar=False)
        timing["encode_queries_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        k = min(top_k + (1 if ignore_identical_ids else 0), len(doc_ids))
        starts = np.concatenate([[0], np.cumsum([c.shape[0] for c in emb.chunks])])
        mine = list(range(len(emb.chunks)))
        if is_distributed():
            mine = [c for c in mine if c % world_size() == rank()]
        k_fast = min(k + 16, len(doc_ids))
        if mine:
            _, cand = search_chunks(q_emb, [emb.chunks[c] for c in mine], k_fast, score,
                                    offsets=[int(starts[c]) for c in mine])
            part = rescore(q_emb, emb.chunks, cand, score, k)
        else:
            part = (np.full((len(qids), 0), -np.inf), np.zeros((len(qids), 0), dtype=np.int64))
        if is_distributed() and world_size() > 1:
            import torch.distributed as dist

            parts: list[Any] = [None] * world_size()
            dist.all_gather_object(parts, part)
            part = merge_topk(parts, k)
        scores, indices = part
        timing["search_s"] = time.perf_counter() - t0
    finally:
        if own:
            emb.cleanup()

    run: dict[str, dict[str, float]] = {}
    for row, qid in enumerate(qids):
        hits: dict[str, float] = {}
        for s, i in zip(scores[row], indices[row], strict=True):
            if i < 0:
                continue
            did = doc_ids[int(i)]
            if ignore_identical_ids and did == qid:
                continue
            hits[did] = float(s)
            if len(hits) == top_k:
                break
        run[qid] = hits
    return run, timing, q_emb


def retrieve_hybrid(
    model: Any,
    corpus: dict[str, dict[str, str]],
    queries: dict[str, str],
    score: str,
    fusion: Fusion,
    top_k: int = DEFAULT_TOP_K,
    dataset: str = "corpus",
    batch_size: int = 64,
    cache: bool = True,
    chunk_size: int = 10_000,
    show_progress_bar: bool = True,
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Hybrid retrieval (:func:`~ragcun.encoding.fusion.hybrid_search`): the model's ``score`` and BM25 fused
    per query over the whole corpus; a fusion without a dense weight is BM25 alone (the model is not run).
    Returns (run, timing seconds); like :func:`retrieve`, a hit whose id equals the query id is dropped."""
    from ragcun.data.beir import doc_text
    from ragcun.data.bm25 import get_index

    timing: dict[str, float] = {}
    doc_ids = list(corpus)
    texts = [doc_text(corpus[d]) for d in doc_ids]
    qids = list(queries)
    doc_emb = q_emb = None  # BM25 alone: the model is not run
    if fusion.weights.get("dense"):
        emb = encode_corpus(model, doc_ids, texts, dataset, batch_size, chunk_size, cache,
                            show_progress_bar=show_progress_bar)
        try:
            timing["encode_corpus_s"] = emb.seconds
            doc_emb = emb.array()
        finally:
            emb.cleanup()
        t0 = time.perf_counter()
        q_emb = encode_texts(model, [queries[q] for q in qids], "query", batch_size)
        timing["encode_queries_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    bm25 = get_index(doc_ids, texts, cache=cache, show_progress=False)
    timing["bm25_index_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores, indices = hybrid_search(q_emb, doc_emb, [queries[q] for q in qids], bm25, fusion, top_k + 1,
                                    score)
    timing["search_s"] = time.perf_counter() - t0
    run: dict[str, dict[str, float]] = {}
    for row, qid in enumerate(qids):
        hits = {doc_ids[int(i)]: float(v) for v, i in zip(scores[row], indices[row], strict=True)
                if doc_ids[int(i)] != qid}
        run[qid] = dict(list(hits.items())[:top_k])
    return run, timing


class BeirEvaluator:
    """BEIR evaluation in the spirit of sentence-transformers' evaluators: built with its datasets, score and
    encoding settings (checked at once, before any model loads), called with a model, returning the results
    dict. One evaluator serves many models, each by its own score if the call names one; with ``keep_data``
    each dataset is read once, on its first call, and kept for the next model. :func:`evaluate_model` is one
    call of one.

    Example::

        ev = BeirEvaluator(["scifact", "nfcorpus"], settings=EncodeSettings(max_seq_length=256))
        for m in ("all-MiniLM-L6-v2", "runs/demo/arms/frozen/best"):
            print(ev(m)["results"])
    """

    def __init__(self, datasets: str | Sequence[str], score: str | None = None, *,
                 settings: EncodeSettings | None = None, top_k: int = DEFAULT_TOP_K,
                 k_values: Sequence[int] | None = None, chunk_size: int = 10_000,
                 show_progress_bar: bool = True, keep_data: bool = True) -> None:
        from ragcun.data.beir import expand_dataset_names, find_split

        self.settings = settings or EncodeSettings()
        self.score = check_score(score) if score else None
        self.names = expand_dataset_names([datasets] if isinstance(datasets, str) else list(datasets))
        if not self.names:
            raise ValueError("no dataset given")
        for ds in self.names:
            find_split(ds, self.settings.split, self.settings.data_dir)
        metrics = {n: tuple(k_values) for n in DEFAULT_METRICS} if k_values else dict(DEFAULT_METRICS)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        deepest = max(k for ks in metrics.values() for k in ks)
        if top_k < deepest:  # a metric at a cutoff beyond the run would be computed from a truncated list
            dropped = sorted({f"{m}@{k}" for m, ks in metrics.items() for k in ks if k > top_k})
            logger.warning("top_k=%d: %s left out (they need %d retrieved documents)", top_k,
                           ", ".join(dropped), deepest)
            metrics = {m: tuple(k for k in ks if k <= top_k) for m, ks in metrics.items()}
            metrics = {m: ks for m, ks in metrics.items() if ks}
        self.metrics, self.top_k, self.chunk_size = metrics, top_k, chunk_size
        self.show_progress_bar = show_progress_bar
        self._data: dict[str, Any] | None = {} if keep_data else None

    def data(self, dataset: str) -> Any:
        """The evaluated split of ``dataset`` (read once and kept, with ``keep_data``)."""
        from ragcun.data.beir import load_beir

        if self._data is not None and dataset in self._data:
            return self._data[dataset]
        data = load_beir(dataset, split=self.settings.split, data_dir=self.settings.data_dir)
        if self._data is not None:
            self._data[dataset] = data
        return data

    def _under(self, source: Any, runtime: Any, data: Any, score: str, batch_size: int) -> Any:
        """``source`` as it encodes ``data``: itself; where ``auto`` is still to be measured, the runtime it
        chooses with ``data``'s labelled check (cached per CPU, model and dataset); OpenVINO int8 calibrated
        on ``data``'s corpus."""
        from ragcun.runtime import prepare_model

        if runtime.needs_calibration and runtime_of(source).is_reference:
            from ragcun.data.beir import doc_text
            from ragcun.runtime.openvino import calibration_sample

            sample = calibration_sample([doc_text(d) for d in data.corpus.values()])
            return prepare_model(source, runtime, self.settings.device, owned=False, calibration=sample)
        if not runtime.is_measured:
            return source
        from ragcun.evaluation.runtime_check import beir_check

        return prepare_model(source, runtime, self.settings.device, owned=False,
                             check=beir_check(data, score, batch_size))

    def __call__(self, model: Any, model_name: str | None = None, output: str | os.PathLike | None = None,
                 run_file: str | os.PathLike | None = None, score: str | None = None,
                 hybrid: Fusion | None = None) -> dict[str, Any]:
        """The results of ``model`` (a path, an alias or a loaded model) on every dataset, ranked by ``score``
        (default: the evaluator's, else the model's own), or by that score fused with BM25 per ``hybrid``;
        written to ``output`` (atomically) and its run to ``run_file`` (TREC, with the qrels beside it) when
        given."""
        from ragcun.distributed import is_main_process

        s, split, names, top_k, metrics = (self.settings, self.settings.split, self.names, self.top_k,
                                           self.metrics)
        # the data are read and checked before the model loads: a bad line fails in a second, not after it
        read = {ds: self.data(ds) for ds in (names if self._data is not None else names[:1])}
        # runtime: what really encodes; auto still to be measured is chosen per dataset, int8 included where
        # the dataset's labels show it loses at most 0.5 NDCG@10 (evaluation/runtime_check.py)
        source, name, runtime, batch_size = s.load(model, defer_measured=True)
        name = model_name or name
        score = check_score(score) if score is not None else self.score or default_score(source)
        model = self._under(source, runtime, read[names[0]] if names[0] in read else self.data(names[0]),
                            score, batch_size)
        out: dict[str, Any] = {
            "model": name,
            "model_fingerprint": model_fingerprint(model),
            "score": score,
            "hybrid": hybrid.as_dict() if hybrid is not None else None,
            "split": split,
            "metrics": metric_names(metrics),
            "results": {},
            "per_query": {},
            "timing": {},
            "datasets": {},
            "config": {
                "split": split,
                "score": score,
                "batch_size": batch_size,
                "backend": runtime_of(model).backend,
                "precision": runtime_of(model).precision,
                "max_seq_length": getattr(model, "max_seq_length", None),
                "top_k": top_k,
                "ignore_identical_ids": True,
                "text": "BEIR: (title + ' ' + text).strip()",
                "similarity_fn_name": getattr(model, "similarity_fn_name", None),
                "embedding_dim": (model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension")
                                  else None),
                "device": str(getattr(model, "device", "cpu")),
                "python": platform.python_version(),
                "versions": _versions(),
            },
        }
        for ds in names:
            t0 = time.perf_counter()
            data = read.pop(ds, None) or self.data(ds)
            corpus, _, qrels = data
            if ds != names[0]:
                model = self._under(source, runtime, data, score, batch_size)
            ds = data.name  # a folder path is reported by its folder name
            queries = judged_queries(data)
            if not queries:
                raise ValueError(f"{ds}: no query of split {split!r} has both text and qrels")
            logger.info("%s: %d documents, %d queries; score %s", ds, len(corpus), len(queries), score)
            if hybrid is not None:
                run, timing = retrieve_hybrid(model, corpus, queries, score, hybrid, top_k, data.name,
                                              batch_size, s.cache, self.chunk_size, self.show_progress_bar)
            else:
                run, timing, _ = retrieve(
                    model, corpus, queries, score, top_k, data.name, batch_size, s.cache, self.chunk_size,
                    show_progress_bar=self.show_progress_bar
                )
            t1 = time.perf_counter()
            aggregate, per_query = evaluate_run(qrels, run, metrics=metrics)
            timing["metrics_s"] = time.perf_counter() - t1
            timing["total_s"] = time.perf_counter() - t0
            out["results"][ds] = aggregate
            out["per_query"][ds] = per_query
            out["timing"][ds] = timing
            out["datasets"][ds] = {"runtime": runtime_of(model).tag, "documents": len(corpus),
                                   "queries": len(queries),
                                   "evaluated_queries": len(per_query),
                                   "qrels": sum(len(v) for v in qrels.values())}
            logger.info("%s: %s", ds, "  ".join(f"{m} {aggregate[m]:.4f}" for m in ("ndcg@10", "recall@100")
                                                if m in aggregate))
            if run_file and is_main_process():
                written = write_run(_run_file_for(run_file, ds, len(names) > 1), run,
                                    tag=_run_tag(name, score if hybrid is None else f"{score}+bm25"))
                write_qrels(written.with_suffix(".qrels"), qrels)  # trec_eval QRELS RUN, beside it
        if output and is_main_process():
            write_json(output, out)
        return out


def evaluate_model(
    model: Any,
    datasets: str | Sequence[str],
    split: str = "test",
    score: str | None = None,
    batch_size: int | None = None,
    max_seq_length: int | None = None,
    data_dir: str | os.PathLike | None = None,
    cache: bool = True,
    output: str | os.PathLike | None = None,
    run_file: str | os.PathLike | None = None,
    top_k: int = DEFAULT_TOP_K,
    k_values: Sequence[int] | None = None,
    chunk_size: int = 10_000,
    device: str | None = None,
    show_progress_bar: bool = True,
    model_name: str | None = None,
    backend: str | None = None,
    precision: str | None = None,
    settings: EncodeSettings | None = None,
    hybrid: Fusion | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` (path, alias or loaded SentenceTransformer) on BEIR ``datasets``: one call of a
    :class:`BeirEvaluator`.

    ``datasets`` are names, folders, or the groups ``quick``/``standard``/``all``. ``score``
    defaults to the model's own similarity (L2 for ragcun models, cosine for plain
    sentence-transformers); ``hybrid`` (a :class:`~ragcun.encoding.fusion.Fusion`) fuses it with BM25 per
    query. ``backend``/``precision`` choose the runtime (:mod:`ragcun.runtime`; default:
    the measured fastest lossless one); ``batch_size`` defaults to the measured best for the device. The
    encoding settings (split, batch size, max_seq_length, data_dir, cache, device, backend, precision) may
    come as one :class:`~ragcun.encoding.settings.EncodeSettings` instead (``settings=``). Returns (and writes
    to ``output``, atomically) the results dict::

        {"model", "model_fingerprint", "score", "results": {ds: {"ndcg@10": …}},
         "per_query": {ds: {qid: {"ndcg@10": …}}}, "timing": {…}, "config": {…}}
    """
    s = EncodeSettings.of(settings, split=split, batch_size=batch_size, max_seq_length=max_seq_length,
                          data_dir=data_dir, cache=cache, device=device, backend=backend, precision=precision)
    evaluator = BeirEvaluator(datasets, score, settings=s, top_k=top_k, k_values=k_values,
                              chunk_size=chunk_size, show_progress_bar=show_progress_bar, keep_data=False)
    return evaluator(model, model_name=model_name, output=output, run_file=run_file, hybrid=hybrid)


def _run_tag(name: str, score: str) -> str:
    path = Path(str(name))
    # a run name: demo_isotropy
    base = (path.name if path.exists() else str(name).replace("/", "_")) or "ragcun"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{base}-{score}")


def _versions() -> dict[str, str | None]:
    return package_versions("ragcun", "sentence-transformers", "transformers", "torch", "pytrec-eval-terrier",
                            "numpy")
