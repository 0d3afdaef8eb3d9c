"""The on-disk caches of what a model computes: checksummed files, never read when damaged.

Every cache file is written atomically with a JSON record beside it (:func:`write_record`) holding its SHA-256
and what produced it, and verified against that record before it is read (:func:`checked_problem`): the base
features of :mod:`ragcun.encoding.features`, a cached prefix and a teacher's scores (safetensors,
:func:`store_checked`), and the corpus embeddings below (``.npy`` chunks, so that a large corpus is read
memory-mapped).

A folder is named by :func:`cache_key`, a hash of everything that changes the vectors: the model
(:func:`ragcun.fingerprint.model_fingerprint`), the dataset name, a hash of the document ids and texts, the
max sequence length and the chunk size. Each chunk is a float32 ``.npy`` written atomically with its record
beside it, so a damaged or interrupted chunk is found and encoded again, never read. :class:`CacheLayout` is
the one place the folder and the chunk bounds are computed, for :func:`ragcun.encoding.corpus.encode_corpus`,
for vectors computed another way (:func:`seed_corpus_cache`) and for asking whether a corpus is cached
(:func:`corpus_cached`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragcun.files import atomic_path, sha256_file, write_json
from ragcun.fingerprint import model_fingerprint, texts_fingerprint
from ragcun.paths import cache_dir

CACHE_VERSION = 3  # 2: chunks carry a sha256 sidecar; 3: their JSON record, as every cache file


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "corpus"


def write_chunk(path: Path, emb: np.ndarray) -> None:
    """One cache chunk: the ``.npy`` and, beside it, its record (both atomic), so damage is caught on read."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    with atomic_path(path) as out, open(out, "wb") as fh:
        np.save(fh, emb, allow_pickle=False)
    write_record(path, {"rows": int(emb.shape[0])})


def _chunk_problem(path: Path, rows: int) -> str | None:
    """Why a cache chunk cannot be used (missing, unrecorded, altered, unreadable, wrong shape), or None."""
    problem = checked_problem(path)
    if problem is not None:
        return problem
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        return f"unreadable ({exc})"
    if arr.ndim != 2 or arr.shape[0] != rows or arr.dtype != np.float32:
        return f"shape {arr.shape} {arr.dtype}, expected ({rows}, dim) float32"
    return None


def record_path(path: Path) -> Path:
    """The JSON record beside a cached tensor file."""
    return path.with_suffix(".json")


def write_record(path: Path, record: dict[str, Any] | None = None) -> None:
    """The JSON record beside a cache file just written: ``record`` and the file's SHA-256."""
    write_json(record_path(path), {**(record or {}), "sha256": sha256_file(path)})


def store_checked(path: Path, tensors: dict[str, Any], record: dict[str, Any] | None = None,
                  metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (numpy arrays or torch tensors, not mixed) to ``path`` as safetensors, atomically,
    then its record (``record`` + the file's SHA-256) beside it: a file without its record is never read."""
    first = next(iter(tensors.values()))
    if isinstance(first, np.ndarray):
        from safetensors.numpy import save_file
    else:
        from safetensors.torch import save_file
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    write_record(path, record)
    return path


def checked_problem(path: Path, inputs: dict[str, Any] | None = None) -> str | None:
    """Why a cache file cannot be used (missing, no record of :func:`write_record`, changed since it was
    written, made from other ``inputs``), or None."""
    meta = record_path(path)
    if not path.is_file():
        return "missing"
    if not meta.is_file():
        return "has no record (written by an older ragcun or interrupted)"
    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"unreadable record ({exc})"
    if inputs is not None and record.get("inputs") != inputs:
        return "its recorded inputs differ from this run's (the model, the data or the settings)"
    digest = sha256_file(path)
    if digest != record.get("sha256"):
        recorded = str(record.get("sha256"))[:12]
        return f"checksum {digest[:12]}… differs from the recorded {recorded}… (the file changed)"
    return None


def cache_key(model_fp: str, dataset: str, ids: Sequence[str], texts: Sequence[str], **options: Any) -> str:
    """Directory name of a corpus encoding: ``<dataset>-<hash of model, corpus and options>``."""
    payload = json.dumps(
        {"v": CACHE_VERSION, "model": model_fp, "dataset": dataset,
         "texts": texts_fingerprint(ids, texts)[:16], **options},
        sort_keys=True,
        default=str,
    )
    return f"{_safe(dataset)}-{hashlib.sha256(payload.encode()).hexdigest()[:20]}"


@dataclass(frozen=True)
class CacheLayout:
    """Where one corpus encoding lives and how the corpus splits into its chunks (the one place both are
    computed, for encoding, seeding and looking up the cache)."""

    directory: Path
    key: str
    fingerprint: str
    documents: int
    chunk_size: int
    max_seq_length: int | None

    @classmethod
    def of(cls, model: Any, dataset: str, ids: Sequence[str], texts: Sequence[str], chunk_size: int,
           root: str | os.PathLike | None) -> CacheLayout:
        from ragcun.modeling.asymmetric import document_encoder

        model = document_encoder(model)  # a query tower's corpus is its document encoder's
        fp, msl = model_fingerprint(model), getattr(model, "max_seq_length", None)
        key = cache_key(fp, dataset, ids, texts, max_seq_length=msl, chunk_size=chunk_size)
        directory = (Path(root) if root else cache_dir("embeddings")) / key
        return cls(directory, key, fp, len(ids), chunk_size, msl)

    @property
    def n_chunks(self) -> int:
        return (self.documents + self.chunk_size - 1) // self.chunk_size

    def bounds(self, c: int) -> tuple[int, int]:
        """The documents of chunk ``c``: ``[lo, hi)``."""
        return c * self.chunk_size, min((c + 1) * self.chunk_size, self.documents)

    def path(self, c: int) -> Path:
        return self.directory / f"chunk-{c:05d}.npy"

    def problem(self, c: int) -> str | None:
        lo, hi = self.bounds(c)
        return _chunk_problem(self.path(c), hi - lo)

    def write_meta(self, dataset: str, dim: int, **extra: Any) -> None:
        write_json(self.directory / "meta.json",
                   {"dataset": dataset, "model_fingerprint": self.fingerprint, "documents": self.documents,
                    "dim": dim, "chunk_size": self.chunk_size, "max_seq_length": self.max_seq_length,
                    **extra})


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
    layout = CacheLayout.of(model, dataset, ids, texts, chunk_size, cache_root)
    layout.directory.mkdir(parents=True, exist_ok=True)
    if len(chunks) != layout.n_chunks:
        raise ValueError(f"{dataset}: {len(chunks)} chunks given, the corpus splits into {layout.n_chunks}")
    for c, arr in enumerate(chunks):
        lo, hi = layout.bounds(c)
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != hi - lo or not np.isfinite(arr).all():
            raise ValueError(f"{dataset}: chunk {c} has shape {arr.shape} "
                             f"(expected ({hi - lo}, dim), finite)")
        write_chunk(layout.path(c), arr)
    layout.write_meta(dataset, int(chunks[0].shape[1]), seeded=True)
    return layout.directory


def corpus_cached(model: Any, ids: Sequence[str], texts: Sequence[str], dataset: str,
                  chunk_size: int = 10_000, cache_root: str | os.PathLike | None = None) -> bool:
    """Whether :func:`encode_corpus` would find every chunk of this corpus in the cache."""
    layout = CacheLayout.of(model, dataset, ids, texts, chunk_size, cache_root)
    return all(layout.problem(c) is None for c in range(layout.n_chunks))
