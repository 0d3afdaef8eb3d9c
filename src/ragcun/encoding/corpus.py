"""Corpus encoding in chunks through the on-disk embedding cache (:mod:`ragcun.encoding.cache`).

Encoding the corpus is the slow part of an evaluation (minutes to hours); scoring it is
seconds. So the corpus is encoded ``chunk_size`` documents at a time, each chunk written
atomically as a float32 ``.npy`` under ``<cache>/embeddings/<key>/``, and read back
memory-mapped: re-scoring with another score, or re-running after a crash, costs nothing for
the chunks already done, and memory stays bounded on any corpus size. Under ``torchrun`` each rank
encodes every ``world_size``-th chunk. Models that share a body share one pass of it
(:func:`encode_corpus_shared`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragcun.encoding.cache import CacheLayout, corpus_cached, seed_corpus_cache, write_chunk
from ragcun.fingerprint import model_fingerprint
from ragcun.progress import DocProgress, wanted

logger = logging.getLogger(__name__)


def encode_texts(
    model: Any,
    texts: Sequence[str],
    kind: str = "document",
    batch_size: int = 64,
    show_progress_bar: bool = False,
) -> np.ndarray:
    """Encode ``texts`` as queries or documents (using the model's query/document prompts if any).

    Returns raw float32 vectors: never normalised here, so one cached encoding serves L2, cosine
    and dot scoring alike.
    """
    if kind not in ("query", "document"):
        raise ValueError(f"kind must be 'query' or 'document', got {kind!r}")
    fn = model.encode_query if kind == "query" and hasattr(model, "encode_query") else None
    if kind == "document" and hasattr(model, "encode_document"):
        fn = model.encode_document
    fn = fn or model.encode
    emb = fn(
        list(texts),
        batch_size=batch_size,
        show_progress_bar=wanted(show_progress_bar),
        convert_to_numpy=True,
        normalize_embeddings=False,
    )
    return np.ascontiguousarray(emb, dtype=np.float32)


@dataclass
class CorpusEmbeddings:
    """The corpus vectors as a list of chunk arrays (memory-mapped from the cache when cached)."""

    chunks: list[np.ndarray]
    ids: list[str]
    key: str
    directory: Path | None
    encoded_chunks: int = 0  # chunks this process had to encode (0 = fully cached)
    seconds: float = 0.0
    _tmp: str | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return int(self.chunks[0].shape[1])

    def __len__(self) -> int:
        return sum(c.shape[0] for c in self.chunks)

    def array(self) -> np.ndarray:
        """All vectors in one array (loads everything in memory: small corpora only)."""
        return np.concatenate([np.asarray(c) for c in self.chunks], axis=0)

    def cleanup(self) -> None:
        """Remove the temporary directory of an uncached encoding."""
        self.chunks = []
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def encode_corpus(
    model: Any,
    ids: Sequence[str],
    texts: Sequence[str],
    dataset: str = "corpus",
    batch_size: int = 64,
    chunk_size: int = 10_000,
    cache: bool = True,
    cache_root: str | os.PathLike | None = None,
    show_progress_bar: bool = True,
) -> CorpusEmbeddings:
    """Encode a corpus chunk by chunk, each chunk saved as ``chunk-XXXXX.npy`` (atomic), read back mmapped.

    With ``cache=False`` the chunks go to a temporary directory (call ``cleanup()`` when done),
    so memory stays bounded either way. Under torchrun (``torch.distributed`` initialised) rank
    ``r`` encodes chunks ``r, r + world, …`` into the shared cache and waits for the others;
    the cache directory must then be on a file system every rank sees.
    """
    import time

    from ragcun.distributed import is_distributed, rank, world_size

    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
    if not ids:
        raise ValueError(f"{dataset}: the corpus is empty")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    t0 = time.perf_counter()
    tmp = None
    if not cache:
        if is_distributed() and world_size() > 1:
            raise ValueError("sharded encoding under torchrun needs the on-disk cache (cache=True)")
        tmp = tempfile.mkdtemp(prefix="ragcun-emb-")
    layout = CacheLayout.of(model, dataset, ids, texts, chunk_size, cache_root if cache else tmp)
    layout.directory.mkdir(parents=True, exist_ok=True)

    n_chunks = layout.n_chunks
    mine = ([c for c in range(n_chunks) if c % world_size() == rank()] if is_distributed()
            else list(range(n_chunks)))
    todo = []
    for c in mine:
        if layout.path(c).exists():
            problem = layout.problem(c)
            if problem is None:
                continue
            logger.warning("%s: %s; encoding it again", layout.path(c), problem)
        todo.append(c)
    encoded = 0
    total = sum(hi - lo for lo, hi in map(layout.bounds, todo))
    with DocProgress(total, f"{dataset}: encoding", logger=logger,
                     enabled=show_progress_bar and bool(todo)) as progress:
        for c in todo:
            lo, hi = layout.bounds(c)
            logger.info("%s: encoding documents %d-%d of %d (chunk %d/%d)", dataset, lo, hi, len(ids), c + 1,
                        n_chunks)
            with progress.track(model):
                emb = encode_texts(model, texts[lo:hi], "document", batch_size, show_progress_bar=False)
            if not np.isfinite(emb).all():
                raise FloatingPointError(f"{dataset}: the model produced NaN/inf embeddings in documents "
                                         f"{lo}-{hi}")
            write_chunk(layout.path(c), emb)
            progress.update(hi - lo)
            encoded += 1
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()
    chunks = []
    for c in range(n_chunks):
        problem = layout.problem(c)
        if problem is not None:
            raise ValueError(f"{layout.path(c)}: {problem}; delete {layout.directory} to encode the corpus "
                             "again")
        chunks.append(np.load(layout.path(c), mmap_mode="r", allow_pickle=False))
    if cache and (rank() == 0) and not (layout.directory / "meta.json").exists():
        layout.write_meta(dataset, int(chunks[0].shape[1]))
    if encoded == 0 and cache:
        logger.info("%s: corpus embeddings loaded from cache %s", dataset, layout.directory)
    return CorpusEmbeddings(chunks, list(ids), layout.key, layout.directory, encoded,
                            time.perf_counter() - t0, tmp)


def encode_corpus_shared(
    models: dict[str, Any],
    ids: Sequence[str],
    texts: Sequence[str],
    dataset: str,
    batch_size: int = 64,
    chunk_size: int = 10_000,
) -> dict[str, str]:
    """Encode a corpus once per distinct body and give every model its vectors, in the embedding cache.

    Models whose bodies (:func:`ragcun.modeling.split_at_head`) have the same weights share one pass
    of that body; each model's vectors are its tail applied to the body's, written where
    :func:`encode_corpus` then finds them. The derived vectors of every model are checked against
    its direct encoding of a few documents. Returns label -> "cached" | "derived".
    """
    import torch

    from ragcun.modeling import apply_modules, split_at_head, submodel
    from ragcun.modeling.asymmetric import document_encoder

    done: dict[str, str] = {}
    groups: dict[str, tuple[Any, list[tuple[str, Any, list]]]] = {}
    seen: dict[int, str] = {}
    for label, model in models.items():
        if id(model) in seen:  # the same model under two labels (e.g. ranked by L2 and by cosine)
            done[label] = f"as {seen[id(model)]}"
            continue
        seen[id(model)] = label
        if corpus_cached(model, ids, texts, dataset, chunk_size):
            done[label] = "cached"
            continue
        model = document_encoder(model)  # a query tower shares its documents' pass (and cache)
        body_mods, tail = split_at_head(model)
        body = submodel(model, body_mods)
        fp = model_fingerprint(body)
        groups.setdefault(fp, (body, []))[1].append((label, model, tail))
    for body, targets in groups.values():
        names = ", ".join(t[0] for t in targets)
        logger.info("%s: one pass of the shared body for %s", dataset, names)
        feats = encode_corpus(body, ids, texts, f"{dataset}-body", batch_size, chunk_size)
        try:
            for label, model, tail in targets:
                chunks = []
                # bf16 under the torch bf16 runtime
                dtype = next(iter(model.parameters()), torch.empty(0)).dtype
                with torch.no_grad():
                    for chunk in feats.chunks:
                        x = torch.from_numpy(np.array(chunk, dtype=np.float32)).to(model.device, dtype)
                        chunks.append(apply_modules(tail, x).float().cpu().numpy())
                seed_corpus_cache(model, ids, texts, dataset, chunks, chunk_size)
                probe = list(texts[:4])
                direct = encode_texts(model, probe, "document", batch_size)
                tol = 1e-3 * max(1.0, float(np.abs(direct).max()))
                if not np.allclose(direct, chunks[0][: len(probe)], atol=tol):
                    raise RuntimeError(f"{label}: vectors derived from the shared body differ from direct "
                                       "encoding")
                done[label] = "derived"
        finally:
            feats.cleanup()
    return done


def judged_queries(data: Any) -> dict[str, str]:
    """The queries of a BEIR split that have qrels (the ones every metric is averaged over)."""
    return {q: t for q, t in data.queries.items() if q in data.qrels}


def encode_beir_corpus(model: Any, data: Any, batch_size: int = 64, cache: bool = True,
                       doc_ids: Sequence[str] | None = None, cache_name: str | None = None,
                       show_progress_bar: bool = False) -> CorpusEmbeddings:
    """Encode a BEIR corpus (or the ``doc_ids`` of it) as BEIR joins its documents, through the cache."""
    from ragcun.data.beir import doc_text

    ids = list(doc_ids) if doc_ids is not None else list(data.corpus)
    return encode_corpus(model, ids, [doc_text(data.corpus[d]) for d in ids], cache_name or data.name,
                         batch_size, cache=cache, show_progress_bar=show_progress_bar)
