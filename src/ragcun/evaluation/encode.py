"""Corpus encoding in chunks with an on-disk embedding cache, and the model fingerprint.

Encoding the corpus is the slow part of an evaluation (minutes to hours); scoring it is
seconds. So the corpus is encoded ``chunk_size`` documents at a time, each chunk written
atomically as a float32 ``.npy`` under ``<cache>/embeddings/<key>/``, and read back
memory-mapped: re-scoring with another score, or re-running after a crash, costs nothing for
the chunks already done, and memory stays bounded on any corpus size.

The key hashes everything that changes the vectors: the model's weights (fingerprint), the
dataset name, a hash of the document ids and texts, the max sequence length, the prompt and
the chunk size. Under ``torchrun`` each rank encodes every ``world_size``-th chunk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragcun.io import atomic_path, write_json
from ragcun.paths import cache_dir

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


def _hash_tensor_sample(h: Any, tensor: Any, n: int = 64) -> None:
    """Feed shape, dtype and ~``n`` evenly spaced values of ``tensor`` into hash ``h``."""
    flat = tensor.detach().reshape(-1)
    h.update(f"{tuple(tensor.shape)}|{tensor.dtype}|".encode())
    if flat.numel() == 0:
        return
    step = max(1, flat.numel() // n)
    sample = flat[::step][:n].float().cpu().numpy().astype(np.float32)
    h.update(sample.tobytes())
    h.update(np.float64(flat.float().sum().item()).tobytes())


def model_fingerprint(model: Any) -> str:
    """A short, cheap hash identifying a model's weights and encoding setup.

    Hashes every parameter/buffer name, shape, dtype, a sample of its values and its sum, plus
    the module pipeline, ``max_seq_length``, prompts and similarity function — so a fine-tuned
    checkpoint, a different head or a different truncation gets a different key, while the
    same weights loaded twice get the same one. Seconds for a 100M-parameter model.
    """
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__name__}|".encode())
    try:
        modules = [type(m).__name__ for m in model]
    except TypeError:
        modules = []
    h.update(json.dumps(modules).encode())
    for attr in ("max_seq_length", "similarity_fn_name", "prompts", "default_prompt_name"):
        h.update(f"|{attr}={json.dumps(getattr(model, attr, None), sort_keys=True, default=str)}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        _hash_tensor_sample(h, tensor)
    return h.hexdigest()[:16]


def texts_fingerprint(ids: Sequence[str], texts: Sequence[str]) -> str:
    """Hash of the (id, text) pairs in order: a slice or an edited corpus gets its own cache entry."""
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
    h = hashlib.sha256()
    for i, t in zip(ids, texts, strict=True):
        h.update(str(i).encode())
        h.update(b"\x00")
        h.update(t.encode("utf-8"))
        h.update(b"\x01")
    return h.hexdigest()[:16]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "corpus"


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
        show_progress_bar=show_progress_bar,
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


def cache_key(model_fp: str, dataset: str, ids: Sequence[str], texts: Sequence[str], **options: Any) -> str:
    """Directory name of a corpus encoding: ``<dataset>-<hash of model, corpus and options>``."""
    payload = json.dumps(
        {"v": CACHE_VERSION, "model": model_fp, "dataset": dataset, "texts": texts_fingerprint(ids, texts), **options},
        sort_keys=True,
        default=str,
    )
    return f"{_safe(dataset)}-{hashlib.sha256(payload.encode()).hexdigest()[:20]}"


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
    t0 = time.perf_counter()
    fp = model_fingerprint(model)
    key = cache_key(fp, dataset, ids, texts, max_seq_length=getattr(model, "max_seq_length", None), chunk_size=chunk_size)
    tmp = None
    if cache:
        directory = Path(cache_root) if cache_root else cache_dir("embeddings")
        directory = directory / key
    else:
        if is_distributed() and world_size() > 1:
            raise ValueError("sharded encoding under torchrun needs the on-disk cache (cache=True)")
        tmp = tempfile.mkdtemp(prefix="ragcun-emb-")
        directory = Path(tmp) / key
    directory.mkdir(parents=True, exist_ok=True)

    n_chunks = (len(ids) + chunk_size - 1) // chunk_size
    mine = [c for c in range(n_chunks) if c % world_size() == rank()] if is_distributed() else list(range(n_chunks))
    encoded = 0
    for c in mine:
        path = directory / f"chunk-{c:05d}.npy"
        if path.exists():
            continue
        lo, hi = c * chunk_size, min((c + 1) * chunk_size, len(ids))
        logger.info("%s: encoding documents %d-%d of %d (chunk %d/%d)", dataset, lo, hi, len(ids), c + 1, n_chunks)
        emb = encode_texts(model, texts[lo:hi], "document", batch_size, show_progress_bar)
        if not np.isfinite(emb).all():
            raise FloatingPointError(f"{dataset}: the model produced NaN/inf embeddings in documents {lo}-{hi}")
        with atomic_path(path) as out, open(out, "wb") as fh:
            np.save(fh, emb, allow_pickle=False)
        encoded += 1
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()
    chunks = []
    for c in range(n_chunks):
        arr = np.load(directory / f"chunk-{c:05d}.npy", mmap_mode="r", allow_pickle=False)
        want = min((c + 1) * chunk_size, len(ids)) - c * chunk_size
        if arr.ndim != 2 or arr.shape[0] != want:
            raise ValueError(f"{directory / f'chunk-{c:05d}.npy'}: shape {arr.shape}, expected ({want}, dim); delete it")
        chunks.append(arr)
    if cache and (rank() == 0) and not (directory / "meta.json").exists():
        write_json(
            directory / "meta.json",
            {"dataset": dataset, "model_fingerprint": fp, "documents": len(ids), "dim": int(chunks[0].shape[1]),
             "chunk_size": chunk_size, "max_seq_length": getattr(model, "max_seq_length", None)},
        )
    if encoded == 0 and cache:
        logger.info("%s: corpus embeddings loaded from cache %s", dataset, directory)
    return CorpusEmbeddings(chunks, list(ids), key, directory, encoded, time.perf_counter() - t0, tmp)


def seed_corpus_cache(
    model: Any,
    ids: Sequence[str],
    texts: Sequence[str],
    dataset: str,
    chunks: Sequence[np.ndarray],
    chunk_size: int = 10_000,
    cache_root: str | os.PathLike | None = None,
) -> Path:
    """Store corpus embeddings of ``model`` computed some other way (e.g. a head applied to cached base
    features) under the key :func:`encode_corpus` would use, so later evaluations read them for free.

    ``chunks`` must split the corpus exactly as ``chunk_size`` does.
    """
    fp = model_fingerprint(model)
    key = cache_key(fp, dataset, ids, texts, max_seq_length=getattr(model, "max_seq_length", None), chunk_size=chunk_size)
    directory = (Path(cache_root) if cache_root else cache_dir("embeddings")) / key
    directory.mkdir(parents=True, exist_ok=True)
    n_chunks = (len(ids) + chunk_size - 1) // chunk_size
    if len(chunks) != n_chunks:
        raise ValueError(f"{dataset}: {len(chunks)} chunks given, the corpus splits into {n_chunks}")
    for c, arr in enumerate(chunks):
        want = min((c + 1) * chunk_size, len(ids)) - c * chunk_size
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != want or not np.isfinite(arr).all():
            raise ValueError(f"{dataset}: chunk {c} has shape {arr.shape} (expected ({want}, dim), finite)")
        with atomic_path(directory / f"chunk-{c:05d}.npy") as out, open(out, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
    write_json(directory / "meta.json", {"dataset": dataset, "model_fingerprint": fp, "documents": len(ids),
                                         "dim": int(chunks[0].shape[1]), "chunk_size": chunk_size,
                                         "max_seq_length": getattr(model, "max_seq_length", None),
                                         "seeded": True})
    return directory
