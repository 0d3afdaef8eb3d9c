"""``GaussianRetriever``: encode documents with a ragcun model, search them by L2 distance.

What a RAG application imports::

    from ragcun import GaussianRetriever

    r = GaussianRetriever("path/to/ragcun-model")          # or an alias, or a loaded model
    r.add_documents(["Paris is the capital of France.", ...], metadata=[{"src": "wiki"}, ...])
    for hit in r.retrieve("capital of France", top_k=5):
        print(hit.id, hit.distance, hit.text)
    r.save("my-index");  r2 = GaussianRetriever.load("my-index")

Ranking is by true (not squared) L2 distance between the query and the document embeddings,
whatever the model. For a ragcun Gaussian encoder that is the trained similarity. For a plain
cosine model (one ending in ``Normalize``) embeddings have unit norm, so L2 ranking equals cosine
ranking (``|q-d|² = 2 - 2 cos``); for an unnormalised dot-product model it does *not*.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragcun.io import atomic_path, sha256_file
from ragcun.retrieval.index import (
    INDEX_TYPES,
    HNSWIndex,
    VectorIndex,
    load_index,
    make_index,
    weights_fingerprint,
)
from ragcun.retrieval.store import DocumentStore, dump_metadata

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STORE_FILE = "docs.sqlite"
FORMAT = "ragcun-retriever"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- errors and results
class RetrieverError(ValueError):
    """Base class for index errors (a ValueError so generic handlers still catch it)."""


class IndexCorruptError(RetrieverError):
    """A saved index has a missing, truncated or altered file."""


class ModelMismatchError(RetrieverError):
    """The model given to ``load`` is not the one the index was built with."""


class DimensionMismatchError(RetrieverError):
    """Embedding dimensions disagree (model vs index vs manifest)."""


@dataclass(frozen=True)
class SearchResult:
    """One hit: the document, its true L2 ``distance`` to the query and its embedding's ``norm``."""

    id: str
    text: str
    distance: float
    norm: float
    rank: int
    metadata: dict[str, Any] | None = field(default=None)

    @property
    def score(self) -> float:
        """``-distance``: higher is better, for code written against similarity scores."""
        return -self.distance

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- a readers-writer lock
class _RWLock:
    """Many concurrent readers (searches) or one writer (add/remove/save). Writers are preferred
    so a stream of queries cannot starve an update."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._writer_depth = 0
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        if self._writer == me:  # a writer may read (re-entrant)
            yield
            return
        with self._cond:
            while self._writer is not None or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._writer_depth += 1
            else:
                self._waiting_writers += 1
                while self._writer is not None or self._readers:
                    self._cond.wait()
                self._waiting_writers -= 1
                self._writer, self._writer_depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._writer_depth -= 1
                if not self._writer_depth:
                    self._writer = None
                    self._cond.notify_all()


# --------------------------------------------------------------------------- reading document files
def read_documents(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Stream ``{"id", "text", "metadata"}`` records from a file, one line at a time.

    Accepts JSONL with ``id``/``text``/``metadata`` (``title`` optional), a BEIR ``corpus.jsonl``
    (``_id``/``title``/``text``; a BEIR dataset folder works too), a ``.tsv`` of ``id<TAB>text``
    (MS MARCO's collection), each optionally gzipped. As in BEIR, a title is prepended to the
    text (``"title text"``) and also kept in ``metadata["title"]``. Errors name the file and line.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "corpus.jsonl").exists():
            raise FileNotFoundError(f"{path} is a folder without corpus.jsonl (expected a BEIR dataset folder)")
        path = path / "corpus.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    tsv = path.name.removesuffix(".gz").endswith(".tsv")
    with opener(path, "rt", encoding="utf-8", newline=None) as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            if tsv:
                parts = line.split("\t")
                if len(parts) < 2:
                    raise ValueError(f"{where}: expected 'id<TAB>text', got {line[:80]!r}")
                yield {"id": parts[0], "text": "\t".join(parts[1:]), "metadata": None}
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            text = obj.get("text")
            if not isinstance(text, str):
                raise ValueError(f"{where}: field 'text' missing or not a string")
            doc_id = obj.get("id", obj.get("_id"))
            if doc_id is not None and not isinstance(doc_id, str | int):
                raise ValueError(f"{where}: field 'id' must be a string or integer")
            meta = dump_metadata(obj.get("metadata"), f"{where}: field 'metadata'")
            title = obj.get("title")
            if isinstance(title, str) and title.strip():
                text = f"{title} {text}"
                meta = {**(meta or {}), "title": title}
            yield {"id": None if doc_id is None else str(doc_id), "text": text, "metadata": meta or None}


def count_lines(path: str | os.PathLike) -> int:
    """Cheap line count (for a progress bar total); BEIR folders resolve to corpus.jsonl."""
    path = Path(path)
    if path.is_dir():
        path = path / "corpus.jsonl"
    opener = gzip.open if path.suffix == ".gz" else open
    n = 0
    with opener(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            n += block.count(b"\n")
    return n


# --------------------------------------------------------------------------- the retriever
def _model_name(model: Any) -> str:
    cfg = getattr(model, "ragcun_config", None) or {}
    if cfg.get("base_model"):
        return f"{cfg['base_model']} + ragcun head ({cfg.get('output_dim')})"
    try:
        first = model[0]
        name = first.auto_model.config._name_or_path
        if name:
            return str(name)
    except Exception:  # noqa: BLE001 - informative only
        pass
    return type(model).__name__


def _is_normalized(model: Any) -> bool:
    try:
        return any(type(m).__name__ == "Normalize" for m in model)
    except TypeError:
        return False


def _evaluation_fingerprint():
    from ragcun.evaluation.encode import model_fingerprint

    return model_fingerprint


#: manifest "fingerprint_method" -> loader of the function. "model" (the project-wide
#: ragcun.evaluation.encode.model_fingerprint: weights + max_seq_length, prompts, pipeline) is
#: preferred; "weights" (ragcun.retrieval.index.weights_fingerprint) when it is unavailable.
_FINGERPRINTS = {
    "model": _evaluation_fingerprint,
    "weights": lambda: weights_fingerprint,
}


def _default_fingerprint_method() -> str:
    try:
        _evaluation_fingerprint()
    except ImportError:
        return "weights"
    return "model"


class GaussianRetriever:
    """Dense retrieval by L2 distance over a ragcun (or any sentence-transformers) model.

    Args:
        model: a loaded ``SentenceTransformer``, a local model directory, or an alias
            (``all-MiniLM-L6-v2``) resolved by :func:`ragcun.models.load_sentence_transformer`.
        index: ``"flat"`` (exact, default), ``"ivf"`` or ``"hnsw"``; see :mod:`ragcun.retrieval.index`.
        backend: ``"auto"`` (FAISS when installed, else exact NumPy), ``"faiss"`` or ``"numpy"``.
        model_name: the name written to the manifest (defaults to the path/alias given, or one
            derived from the model); ``load`` uses it to reload the model.
        device: device for a model loaded here.
        batch_size: default encoding batch size.
        **index_params: ``nlist``/``nprobe`` (IVF), ``M``/``ef_construction``/``ef_search``/
            ``compact_ratio`` (HNSW).

    Thread safety: any number of threads may call ``retrieve``/``retrieve_batch`` at once; ``add_documents``,
    ``remove`` and ``save`` take an exclusive lock for the (short) index update. Encoding is serialised
    (HF fast tokenizers are not re-entrant), FAISS search runs in parallel.
    """

    def __init__(
        self,
        model: Any,
        index: str = "flat",
        *,
        backend: str = "auto",
        model_name: str | None = None,
        device: str | None = None,
        batch_size: int = 64,
        **index_params: Any,
    ) -> None:
        self.model, name, location = self._resolve_model(model, device)
        self.model_name = model_name or name
        self.model_location = location
        self.batch_size = int(batch_size)
        self.dimension = self._model_dimension(self.model)
        self.index: VectorIndex = make_index(index, self.dimension, backend=backend, **index_params)
        self.store = DocumentStore()
        self._fingerprint: str | None = None
        self._fingerprint_method: str | None = None
        self._lock = _RWLock()
        self._encode_lock = threading.Lock()
        self._next_iid = 0

    # ------------------------------------------------------------------ model
    @staticmethod
    def _resolve_model(model: Any, device: str | None) -> tuple[Any, str, str | None]:
        if isinstance(model, str | os.PathLike):
            from ragcun.models import load_sentence_transformer, resolve_model

            resolved = resolve_model(model)
            loaded = load_sentence_transformer(model, device=device)
            location = str(Path(resolved.location).resolve()) if resolved.source != "hub" else resolved.location
            name = str(model) if resolved.source != "local" else str(Path(model).resolve())
            return loaded, name, location
        if not hasattr(model, "encode"):
            raise TypeError(f"model must be a path, an alias or a SentenceTransformer, got {type(model).__name__}")
        return model, _model_name(model), None

    @staticmethod
    def _model_dimension(model: Any) -> int:
        getter = getattr(model, "get_embedding_dimension", None) or getattr(
            model, "get_sentence_embedding_dimension", None
        )
        dim = getter() if getter else None
        if not dim:
            dim = int(np.asarray(model.encode(["dimension probe"])).shape[-1])
        return int(dim)

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the model (computed once, written to the manifest)."""
        if self._fingerprint is None:
            self._fingerprint_method = getattr(self, "_fingerprint_method", None) or _default_fingerprint_method()
            self._fingerprint = _FINGERPRINTS[self._fingerprint_method]()(self.model)
        return self._fingerprint

    def encode_documents(self, texts: Sequence[str], batch_size: int | None = None,
                         show_progress_bar: bool = False) -> np.ndarray:
        """Document embeddings (the model's document prompt applied), float32, unnormalised."""
        enc = getattr(self.model, "encode_document", None) or self.model.encode
        with self._encode_lock:
            x = enc(list(texts), batch_size=batch_size or self.batch_size, convert_to_numpy=True,
                    show_progress_bar=show_progress_bar)
        return self._check_dim(np.asarray(x, dtype=np.float32))

    def encode_queries(self, queries: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Query embeddings (the model's query prompt applied)."""
        enc = getattr(self.model, "encode_query", None) or self.model.encode
        with self._encode_lock:
            x = enc(list(queries), batch_size=batch_size or self.batch_size, convert_to_numpy=True,
                    show_progress_bar=False)
        return self._check_dim(np.asarray(x, dtype=np.float32))

    def _check_dim(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.dimension:
            raise DimensionMismatchError(f"model produced embeddings of shape {x.shape}; index dimension is {self.dimension}")
        return x

    # ------------------------------------------------------------------ adding
    def add_documents(
        self,
        texts: Sequence[str],
        ids: Sequence[str] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        batch_size: int | None = None,
        show_progress_bar: bool = False,
    ) -> list[str]:
        """Encode and index ``texts``; return their ids.

        ``ids`` default to generated ``doc-<n>`` ids (``n`` counts every document ever added, so
        they are stable across save/load and never reused after a removal). A duplicate id (within
        the call or already indexed) raises ``ValueError`` before anything is encoded.
        """
        texts = list(texts) if not isinstance(texts, str) else [texts]
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        n = len(texts)
        if ids is not None:
            ids = [str(i) for i in ids]
            if len(ids) != n:
                raise ValueError(f"{n} texts but {len(ids)} ids")
            self._check_new_ids(ids)
        if metadata is not None:
            metadata = list(metadata)
            if len(metadata) != n:
                raise ValueError(f"{n} texts but {len(metadata)} metadata entries")
            metadata = [dump_metadata(m, f"metadata[{i}]") for i, m in enumerate(metadata)]
        if n == 0:
            return []
        vectors = self.encode_documents(texts, batch_size=batch_size, show_progress_bar=show_progress_bar)
        return self.add_embeddings(vectors, texts, ids=ids, metadata=metadata)

    def add_embeddings(
        self,
        embeddings: np.ndarray,
        texts: Sequence[str],
        ids: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[str]:
        """Index precomputed document embeddings (made with *this* model) with their texts."""
        x = self._check_dim(np.asarray(embeddings, dtype=np.float32).reshape(len(texts), -1))
        n = len(texts)
        metadata = list(metadata) if metadata is not None else [None] * n
        norms = np.linalg.norm(x, axis=1)
        with self._lock.write():
            iids = list(range(self._next_iid, self._next_iid + n))
            given = list(ids) if ids is not None else [None] * n
            final_ids = [str(g) if g is not None else f"doc-{iid}" for g, iid in zip(given, iids, strict=True)]
            self._check_new_ids(final_ids)
            self.index.add(x, np.asarray(iids, dtype=np.int64))
            try:
                self.store.insert(iids, final_ids, list(texts), metadata, norms.tolist())
            except Exception:
                self.index.remove(np.asarray(iids, dtype=np.int64))
                raise
            self._next_iid += n
        return final_ids

    def _check_new_ids(self, ids: Sequence[str]) -> None:
        seen: set[str] = set()
        dups = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
        if dups:
            raise ValueError(f"duplicate document ids in this call: {_preview(dups)}")
        taken = self.store.existing_ids(ids)
        if taken:
            raise ValueError(f"document ids already in the index: {_preview(taken)} (remove them first)")

    def add_stream(
        self,
        records: Iterable[dict[str, Any]],
        chunk_size: int = 4096,
        batch_size: int | None = None,
        progress: Any = None,
    ) -> int:
        """Index ``{"id", "text", "metadata"}`` records from any iterable, ``chunk_size`` at a time.

        Memory holds one chunk of text plus the index, never the whole input. ``progress`` is an
        optional callable taking the number of documents just indexed (e.g. a tqdm ``update``).
        """
        total = 0
        chunk: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal total
            texts = [r["text"] for r in chunk]
            given = [r.get("id") for r in chunk]
            if any(g is not None for g in given):
                user = [str(g) for g in given if g is not None]
                self._check_new_ids(user)
            metas = [r.get("metadata") for r in chunk]
            x = self.encode_documents(texts, batch_size=batch_size)
            self.add_embeddings(x, texts, ids=given, metadata=metas)
            total += len(chunk)
            if progress is not None:
                progress(len(chunk))
            chunk.clear()

        for rec in records:
            chunk.append(rec)
            if len(chunk) >= chunk_size:
                flush()
        if chunk:
            flush()
        return total

    def add_file(self, path: str | os.PathLike, chunk_size: int = 4096, batch_size: int | None = None,
                 progress: Any = None) -> int:
        """Stream a JSONL / BEIR corpus / TSV file into the index (see :func:`read_documents`)."""
        return self.add_stream(read_documents(path), chunk_size=chunk_size, batch_size=batch_size, progress=progress)

    # ------------------------------------------------------------------ removing
    def remove(self, ids: str | Sequence[str], missing: str = "error") -> int:
        """Remove documents by id; return how many were removed.

        ``missing="error"`` raises ``KeyError`` naming unknown ids (nothing is removed);
        ``"ignore"`` skips them. For HNSW the vectors are tombstoned (filtered from results)
        and the graph is rebuilt once tombstones exceed ``compact_ratio`` of it.
        """
        ids = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        if missing not in ("error", "ignore"):
            raise ValueError("missing must be 'error' or 'ignore'")
        with self._lock.write():
            found = self.store.iids_for(ids)
            unknown = [i for i in ids if i not in found]
            if unknown and missing == "error":
                raise KeyError(f"unknown document ids: {_preview(unknown)}")
            iids = sorted(set(found.values()))
            if not iids:
                return 0
            self.index.remove(np.asarray(iids, dtype=np.int64))
            return self.store.delete(iids)

    # ------------------------------------------------------------------ searching
    def __len__(self) -> int:
        return len(self.store)

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self.store.get(doc_id) is not None

    def get(self, doc_id: str) -> dict[str, Any] | None:
        """The stored text, metadata and norm of one document, or None."""
        row = self.store.get(doc_id)
        return None if row is None else {"id": doc_id, "text": row[0], "metadata": row[1], "norm": row[2]}

    def _prepare(self) -> None:
        if self.index.needs_prepare:
            with self._lock.write():
                self.index.prepare()

    def retrieve(self, query: str, top_k: int = 10) -> list[SearchResult]:
        """The ``top_k`` nearest documents to ``query``, nearest first."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__} (use retrieve_batch for lists)")
        return self.retrieve_batch([query], top_k=top_k)[0]

    def retrieve_batch(self, queries: Sequence[str], top_k: int = 10,
                       batch_size: int | None = None) -> list[list[SearchResult]]:
        """``retrieve`` for many queries: one encoding pass and one index search."""
        queries = list(queries)
        if not queries:
            return []
        q = self.encode_queries(queries, batch_size=batch_size)
        return self.search_embeddings(q, top_k=top_k)

    def search_embeddings(self, query_embeddings: np.ndarray, top_k: int = 10) -> list[list[SearchResult]]:
        """Search with precomputed query embeddings (shape ``(nq, dim)``)."""
        if top_k <= 0:
            raise ValueError(f"top_k must be positive, got {top_k}")
        q = np.asarray(query_embeddings, dtype=np.float32)
        q = q[None, :] if q.ndim == 1 else q
        self._check_dim(q)
        self._prepare()
        with self._lock.read():
            sq, iid = self.index.search(q, top_k)
            docs = self.store.get_many(np.unique(iid[iid >= 0]).tolist())
        out: list[list[SearchResult]] = []
        for drow, irow in zip(sq, iid, strict=True):
            hits: list[SearchResult] = []
            for d, i in zip(drow, irow, strict=True):
                doc = docs.get(int(i)) if i >= 0 else None
                if doc is None:
                    continue
                did, text, meta, norm = doc
                hits.append(SearchResult(id=did, text=text, distance=float(np.sqrt(max(float(d), 0.0))),
                                         norm=norm, rank=len(hits) + 1, metadata=meta))
            out.append(hits)
        return out

    # ------------------------------------------------------------------ persistence
    def manifest(self) -> dict[str, Any]:
        import importlib.metadata as md

        try:
            version = md.version("ragcun")
        except md.PackageNotFoundError:  # pragma: no cover
            version = None
        counts = {"documents": len(self.store), "vectors": len(self.index), "next_iid": self._next_iid}
        if isinstance(self.index, HNSWIndex):
            counts["tombstones"] = self.index.tombstones
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "ragcun_version": version,
            "model": {
                "name": self.model_name,
                "location": self.model_location,
                "fingerprint": self.fingerprint,
                "fingerprint_method": self._fingerprint_method,
                "normalized": _is_normalized(self.model),
            },
            "dimension": self.dimension,
            "metric": "l2",
            "index": {"type": self.index.kind, "backend": self.index.backend, "params": self.index.params},
            "counts": counts,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index, documents and manifest to ``directory`` atomically.

        Files are written into a temporary sibling folder and swapped in with a rename, so a
        crash mid-save leaves any previous index at ``directory`` intact.
        """
        directory = Path(directory)
        self._prepare()
        _ = self.fingerprint
        with self._lock.read(), atomic_path(directory) as tmp:
            tmp.mkdir(parents=True)
            self.index.save(tmp)
            self.store.save(tmp / STORE_FILE)
            manifest = self.manifest()
            files = [*self.index.files, STORE_FILE]
            manifest["files"] = {f: {"bytes": (tmp / f).stat().st_size, "sha256": sha256_file(tmp / f)} for f in files}
            with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
                json.dump(manifest, fh, indent=2)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
        logger.info("saved %d documents (%s index) to %s", manifest["counts"]["documents"], self.index.kind, directory)
        return directory

    @staticmethod
    def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
        """The manifest of a saved index, validated for format; errors name the file."""
        path = Path(directory) / MANIFEST
        if not Path(directory).is_dir():
            raise FileNotFoundError(f"{directory}: no such index directory")
        if not path.is_file():
            raise IndexCorruptError(f"{path} missing: {directory} is not a saved ragcun index (or its save was interrupted)")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise IndexCorruptError(f"{path}: corrupt manifest ({exc})") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise IndexCorruptError(f"{path}: not a ragcun retriever manifest (format={manifest.get('format') if isinstance(manifest, dict) else None!r})")
        if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise RetrieverError(f"{path}: format version {manifest['format_version']} is newer than this ragcun supports ({FORMAT_VERSION})")
        for key in ("model", "dimension", "index", "counts", "files"):
            if key not in manifest:
                raise IndexCorruptError(f"{path}: field {key!r} missing")
        return manifest

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        model: Any = None,
        *,
        device: str | None = None,
        verify: bool = True,
        check_model: bool = True,
        mmap: bool = False,
    ) -> GaussianRetriever:
        """Load a saved retriever.

        ``model=None`` reloads the model named in the manifest. With ``verify`` every file's sha256
        is checked (a missing, truncated or altered file raises :class:`IndexCorruptError`). With
        ``check_model`` a model whose weight fingerprint differs raises :class:`ModelMismatchError`,
        and any dimension disagreement raises :class:`DimensionMismatchError`. ``mmap`` maps a FAISS
        index read-only instead of reading it into memory (then the retriever must not be modified).
        """
        directory = Path(directory)
        manifest = cls.read_manifest(directory)
        for fname, info in manifest["files"].items():
            fpath = directory / fname
            if not fpath.is_file():
                raise IndexCorruptError(f"{fpath} missing (listed in {directory / MANIFEST})")
            size = fpath.stat().st_size
            if size != info.get("bytes"):
                raise IndexCorruptError(f"{fpath}: {size} bytes, the manifest says {info.get('bytes')} (truncated or altered)")
            if verify and sha256_file(fpath) != info.get("sha256"):
                raise IndexCorruptError(f"{fpath}: sha256 does not match the manifest (file altered or corrupt)")
        mm = manifest["model"]
        dim = int(manifest["dimension"])
        if model is None:
            source = mm.get("location") if mm.get("location") and Path(mm["location"]).exists() else mm.get("name")
            try:
                loaded = cls._resolve_model(source, device)[0]
            except Exception as exc:
                raise RetrieverError(
                    f"could not load the index's model {mm.get('name')!r} ({exc}); pass model=... to load()"
                ) from exc
            name, location = mm.get("name"), mm.get("location")
        else:
            loaded, name, location = cls._resolve_model(model, device)
            if not isinstance(model, str | os.PathLike):
                name, location = None, None  # a loaded model: keep the manifest's name
        self = cls.__new__(cls)
        self.model = loaded
        self.model_name = name or mm.get("name") or _model_name(self.model)
        self.model_location = location or mm.get("location")
        self.batch_size = 64
        self.dimension = dim
        self._lock = _RWLock()
        self._encode_lock = threading.Lock()
        self._fingerprint = None
        self._fingerprint_method = mm.get("fingerprint_method") or "weights"
        if self._fingerprint_method not in _FINGERPRINTS:
            raise RetrieverError(f"{directory}: unknown fingerprint method {self._fingerprint_method!r} in the manifest")
        model_dim = cls._model_dimension(self.model)
        if model_dim != dim:
            raise DimensionMismatchError(
                f"{directory}: index dimension {dim} but the model {self.model_name!r} produces {model_dim}"
            )
        if check_model:
            fp = self.fingerprint
            if fp != mm.get("fingerprint"):
                raise ModelMismatchError(
                    f"{directory} was built with model {mm.get('name')!r} (weights fingerprint "
                    f"{str(mm.get('fingerprint'))[:12]}…), but the given model's fingerprint is {fp[:12]}…. "
                    "Search with the model that built the index (or pass check_model=False if you are sure)."
                )
        else:
            self._fingerprint = mm.get("fingerprint")
        ix = manifest["index"]
        try:
            self.index = load_index(directory, ix.get("type"), ix.get("backend", "faiss"), dim,
                                    ix.get("params") or {}, mmap=mmap)
        except (ValueError, RuntimeError) as exc:
            raise IndexCorruptError(str(exc)) from exc
        try:
            self.store = DocumentStore.load(directory / STORE_FILE)
        except ValueError as exc:
            raise IndexCorruptError(str(exc)) from exc
        counts = manifest["counts"]
        self._next_iid = int(self.store.get_info("next_iid") or counts.get("next_iid", 0))
        n_docs, n_vec = len(self.store), len(self.index)
        if n_docs != counts.get("documents") or n_vec != counts.get("vectors") or n_docs != n_vec:
            raise IndexCorruptError(
                f"{directory}: counts disagree (manifest: {counts.get('documents')} documents / "
                f"{counts.get('vectors')} vectors; files: {n_docs} documents / {n_vec} vectors)"
            )
        logger.info("loaded %d documents (%s index) from %s", n_docs, self.index.kind, directory)
        return self

    def __repr__(self) -> str:
        return (f"GaussianRetriever(model={self.model_name!r}, index={self.index.kind!r}, "
                f"backend={self.index.backend!r}, dim={self.dimension}, documents={len(self)})")


def _preview(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:n])
    return shown + (f" … ({len(items)} in all)" if len(items) > n else "")


__all__ = [
    "DimensionMismatchError",
    "GaussianRetriever",
    "INDEX_TYPES",
    "IndexCorruptError",
    "ModelMismatchError",
    "RetrieverError",
    "SearchResult",
    "count_lines",
    "read_documents",
]
