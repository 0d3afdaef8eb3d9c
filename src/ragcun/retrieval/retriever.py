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

import dataclasses
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragcun.data.bm25 import BM25Params
from ragcun.data.documents import check_metadata, read_documents
from ragcun.data.readers import text_problem
from ragcun.encoding.corpus import encode_texts
from ragcun.encoding.fusion import Fusion
from ragcun.encoding.models import check_batch_size, load_for_index, model_dimension, set_max_seq_length
from ragcun.fingerprint import model_fingerprint
from ragcun.retrieval import hybrid as hybrid_search
from ragcun.retrieval import persistence
from ragcun.retrieval.engines import make_index
from ragcun.retrieval.errors import (
    DimensionMismatchError,
    IndexCorruptError,
    ModelMismatchError,
    RetrieverError,
)
from ragcun.retrieval.index import INDEX_TYPES, VectorIndex
from ragcun.retrieval.locks import ReadWriteLock
from ragcun.retrieval.results import SearchResult, check_top_k, l2_mmr, preview
from ragcun.retrieval.store import DocumentStore

logger = logging.getLogger(__name__)

#: A search filter: metadata equality (``{"lang": "de"}``) or a predicate on each hit.
MetadataFilter = dict[str, Any] | Callable[[SearchResult], bool]


def metadata_filter(spec: MetadataFilter | None) -> Callable[[SearchResult], bool] | None:
    """``spec`` as a predicate on hits (None: no filter); anything else is refused in one line."""
    if spec is None:
        return None
    if isinstance(spec, dict):
        bad = [k for k in spec if not isinstance(k, str)]
        if bad:
            raise TypeError(f"filter keys must be metadata field names (str), got {bad[0]!r}")
        odd = [k for k, v in spec.items() if isinstance(v, float) and not np.isfinite(v)]
        if odd:  # NaN equals nothing: the filter would silently match no document
            raise ValueError(f"filter[{odd[0]!r}] is {spec[odd[0]]!r}: metadata values are finite")
        want = dict(spec)
        return lambda h: all(k in (h.metadata or {}) and h.metadata[k] == v for k, v in want.items())
    if callable(spec):
        return spec
    raise TypeError(f"filter must be a dict of metadata values or a callable, got {type(spec).__name__}")


def renamed(old: str, old_value: Any, new: str, new_value: Any) -> Any:
    """An argument's value under its new name, taking the old one with a ``FutureWarning`` (one word per
    meaning: ``engine`` for where vectors live, ``runtime`` for how texts are encoded)."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"pass {new}= only ({old}= is its deprecated old name)")
    warnings.warn(f"{old}= is deprecated: use {new}= (the old name goes in the next release)", FutureWarning,
                  stacklevel=3)
    return old_value


class GaussianRetriever:
    """Dense retrieval by L2 distance over a ragcun (or any sentence-transformers) model.

    Args:
        model: a loaded ``SentenceTransformer``, a local model directory, or an alias
            (``all-MiniLM-L6-v2``) resolved by :func:`ragcun.resolve.load_sentence_transformer`.
        index: ``"flat"`` (exact, default), ``"ivf"`` or ``"hnsw"``; see :mod:`ragcun.retrieval.index`.
        engine: where the vectors live: ``"auto"`` (FAISS when installed, else exact NumPy), ``"faiss"``,
            ``"numpy"``, ``"lancedb"`` or ``"qdrant"`` (:mod:`ragcun.retrieval.index`).
        model_name: the name written to the manifest (defaults to the path/alias given, or one
            derived from the model); ``load`` uses it to reload the model.
        device: device for a model loaded here.
        batch_size: default encoding batch size.
        max_seq_length: truncate inputs to this many tokens (checked against the model's limit; kept
            in the manifest, so ``load`` applies it again).
        hybrid: search by the L2 ranking fused with BM25 by default (``True``: the standard z-score fusion,
            BM25 weighted 0.5; or a :class:`~ragcun.encoding.fusion.Fusion`); every search can still say
            ``hybrid=`` itself. Kept in the manifest, with the BM25 index (:mod:`ragcun.retrieval.hybrid`).
        bm25: BM25's parameters and tokenisation (default: :class:`~ragcun.data.bm25.BM25Params`).
        runtime, precision: the encoding runtime (``torch``/``onnx``, ``fp32``/``bf16``/``int8``;
            default ``auto``, see :mod:`ragcun.runtime`); kept in the manifest, so ``load`` encodes
            queries the way the documents were encoded. ``model`` stays the torch model.
        calibration: for ``runtime="openvino", precision="int8"``, texts of the corpus to be indexed (a
            sample of up to 128 is kept in the manifest, so ``load`` rebuilds the same int8 graph).
        backend, encode_backend: the old names of ``engine`` and ``runtime`` (deprecated: a
            ``FutureWarning``; they go in the next release).
        **index_params: ``nlist``/``nprobe`` (IVF), ``M``/``ef_construction``/``ef_search``/
            ``compact_ratio`` (HNSW).

    Thread safety: any number of threads may call ``retrieve``/``retrieve_batch`` at once; ``add_documents``,
    ``remove`` and ``save`` take an exclusive lock for the (short) index update. Encoding is serialised
    (HF fast tokenizers are not re-entrant), FAISS search runs in parallel.
    """

    def __init__(
        self,
        model: Any,
        index: str | VectorIndex = "flat",
        *,
        engine: str | None = None,
        model_name: str | None = None,
        device: str | None = None,
        batch_size: int | None = None,
        store: DocumentStore | None = None,
        next_id: int = 0,
        max_seq_length: int | None = None,
        runtime: str | None = None,
        precision: str | None = None,
        hybrid: bool | Fusion | None = None,
        bm25: BM25Params | None = None,
        backend: str | None = None,
        encode_backend: str | None = None,
        calibration: Sequence[str] | None = None,
        **index_params: Any,
    ) -> None:
        from ragcun.runtime import prepare_model, resolve_runtime, runtime_of

        engine = renamed("backend", backend, "engine", engine) or "auto"
        runtime = renamed("encode_backend", encode_backend, "runtime", runtime)
        batch_size = check_batch_size(batch_size, device)
        self.runtime = resolve_runtime(runtime, precision, device)
        self.model, name, location = load_for_index(model, device)
        if max_seq_length is not None:
            set_max_seq_length(self.model, max_seq_length, model_name or name)
        self.calibration: list[str] | None = None
        if self.runtime.precision == "int8" and self.runtime.backend == "openvino":
            from ragcun.runtime.openvino import calibration_sample

            given = _texts(calibration, "calibration", "calibrate on passages of the corpus") if calibration \
                else []
            self.calibration = calibration_sample(given) or None
        self._encoder = prepare_model(self.model, self.runtime, device, owned=False,
                                      calibration=self.calibration)
        self.runtime = runtime_of(self._encoder)  # what auto chose, for the manifest
        self.model_name = model_name or name
        self.model_location = location
        self.batch_size = int(batch_size)
        self.dimension = model_dimension(self._encoder)
        if isinstance(index, VectorIndex):  # a loaded index (see load); its dimension must agree
            if index.dim != self.dimension:
                raise DimensionMismatchError(f"index dimension {index.dim} but the model produces "
                                             f"{self.dimension}")
            self.index = index
        else:
            self.index = make_index(index, self.dimension, backend=engine, **index_params)
        self.store = store if store is not None else DocumentStore()
        self._fingerprint: str | None = None
        self._lock = ReadWriteLock()
        self._encode_lock = threading.Lock()
        self._next_iid = int(next_id)
        self.hybrid = hybrid_search.as_fusion(hybrid)
        self.lexical = hybrid_search.LexicalIndex(bm25)

    # ------------------------------------------------------------------ model
    @property
    def encoder(self) -> Any:
        """The model that actually encodes (``model`` itself, its bf16 copy or its ONNX session): what a
        progress hook must watch."""
        return self._encoder

    @property
    def fingerprint(self) -> str:
        """:func:`ragcun.fingerprint.model_fingerprint` of the model (computed once, written to the
        manifest)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        return self._fingerprint

    def encode_documents(self, texts: Sequence[str], batch_size: int | None = None,
                         show_progress_bar: bool = False) -> np.ndarray:
        """Document embeddings (the model's document prompt applied), float32, unnormalised."""
        return self._encode(texts, "document", batch_size, show_progress_bar)

    def encode_queries(self, queries: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Query embeddings (the model's query prompt applied)."""
        return self._encode(queries, "query", batch_size)

    def _encode(self, texts: Sequence[str], kind: str, batch_size: int | None,
                show_progress_bar: bool = False,
                ) -> np.ndarray:
        with self._encode_lock:
            x = encode_texts(self._encoder, texts, kind, batch_size or self.batch_size, show_progress_bar)
        return self._check_dim(x)

    def _check_dim(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.dimension:
            raise DimensionMismatchError(f"model produced embeddings of shape {x.shape}; index dimension is "
                                         f"{self.dimension}")
        return x

    # ------------------------------------------------------------------ adding
    def add_documents(
        self,
        texts: Sequence[str],
        ids: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        batch_size: int | None = None,
        show_progress_bar: bool = False,
        upsert: bool = False,
    ) -> list[str]:
        """Encode and index ``texts``; return their ids.

        An id left out (``ids=None``, or ``None`` in the list) is generated as ``doc-<n>`` (``n`` counts every
        document ever added, so they are stable across save/load and never reused after a removal). A
        duplicate id within the call, an empty text or bad metadata raises before anything is encoded. An id
        already indexed raises too, unless ``upsert=True``: then the stored document is replaced (text,
        metadata and vector, in one step under the write lock, so no search sees both or neither).
        """
        return self._add(texts, ids, metadata, batch_size, show_progress_bar, upsert=upsert)

    def _add(self, texts: Sequence[str], ids: Sequence[str | None] | None,
             metadata: Sequence[dict[str, Any] | None] | None, batch_size: int | None,
             show_progress_bar: bool = False, first: int = 0, upsert: bool = False) -> list[str]:
        """The one check of documents to add, then their encoding and indexing (``first``: the position of
        ``texts[0]`` in a longer stream, for the messages)."""
        texts, ids, metadata = self.check_documents(texts, ids, metadata, first, upsert)
        if not texts:
            return []
        vectors = self.encode_documents(texts, batch_size=batch_size, show_progress_bar=show_progress_bar)
        return self.add_embeddings(vectors, texts, ids=ids, metadata=metadata, upsert=upsert)

    def check_documents(self, texts: Sequence[str], ids: Sequence[str | None] | None,
                        metadata: Sequence[dict[str, Any] | None] | None, first: int = 0, upsert: bool = False
                        ) -> tuple[list[str], list[str | None] | None, list[dict[str, Any] | None] | None]:
        """Documents to add as lists, checked before anything is encoded (texts, ids, metadata; an id already
        indexed is refused unless ``upsert``); else a one-line error naming the entry."""
        texts = _texts(texts, "texts", "an empty document could only ever be returned at random", first)
        n = len(texts)
        if ids is not None:
            ids = [None if i is None else str(i) for i in ids]
            if len(ids) != n:
                raise ValueError(f"{n} texts but {len(ids)} ids")
            for j, i in enumerate(ids, start=first):
                problem = None if i is None else ("is empty" if not i.strip() else text_problem(i))
                if problem:
                    raise ValueError(f"ids[{j}] {problem}")
            self._check_new_ids([i for i in ids if i is not None], upsert)
        if metadata is not None:
            metadata = list(metadata)
            if len(metadata) != n:
                raise ValueError(f"{n} texts but {len(metadata)} metadata entries")
            metadata = [check_metadata(m, f"metadata[{i}]") for i, m in enumerate(metadata, start=first)]
        return texts, ids, metadata

    def add_embeddings(
        self,
        embeddings: np.ndarray,
        texts: Sequence[str],
        ids: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        upsert: bool = False,
    ) -> list[str]:
        """Index precomputed document embeddings (made with *this* model) with their texts (``upsert``: as
        in :meth:`add_documents`)."""
        x = self._check_dim(np.asarray(embeddings, dtype=np.float32).reshape(len(texts), -1))
        n = len(texts)
        metadata = list(metadata) if metadata is not None else [None] * n
        norms = np.linalg.norm(x, axis=1)
        with self._lock.write():
            iids = list(range(self._next_iid, self._next_iid + n))
            given = list(ids) if ids is not None else [None] * n
            final_ids = [str(g) if g is not None else f"doc-{iid}"
                         for g, iid in zip(given, iids, strict=True)]
            self._check_new_ids(final_ids, upsert)
            replaced = self.store.iids_for(final_ids) if upsert else {}
            if replaced:
                old = sorted(set(replaced.values()))
                self.index.remove(np.asarray(old, dtype=np.int64))
                self.store.delete(old)
            self.index.add(x, np.asarray(iids, dtype=np.int64))
            try:
                self.store.insert(iids, final_ids, list(texts), metadata, norms.tolist())
            except Exception:
                self.index.remove(np.asarray(iids, dtype=np.int64))
                raise
            self._next_iid += n
        return final_ids

    def _check_new_ids(self, ids: Sequence[str], upsert: bool = False) -> None:
        seen: set[str] = set()
        dups = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
        if dups:
            raise ValueError(f"duplicate document ids in this call: {preview(dups)}")
        if upsert:
            return
        taken = self.store.existing_ids(ids)
        if taken:
            raise ValueError(f"document ids already in the index: {preview(taken)} (remove them first)")

    def add_stream(
        self,
        records: Iterable[dict[str, Any]],
        chunk_size: int = 4096,
        batch_size: int | None = None,
        progress: Any = None,
    ) -> int:
        """Index ``{"id", "text", "metadata"}`` records from any iterable, ``chunk_size`` at a time, each
        chunk checked and added as :meth:`add_documents` does.

        Memory holds one chunk of text plus the index, never the whole input. ``progress`` is an
        optional callable taking the number of documents just indexed (e.g. a tqdm ``update``).
        """
        total = 0
        chunk: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal total
            self._add([r.get("text") for r in chunk], [r.get("id") for r in chunk],
                      [r.get("metadata") for r in chunk], batch_size, first=total)
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
        return self.add_stream(read_documents(path), chunk_size=chunk_size, batch_size=batch_size,
                               progress=progress)

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
                raise KeyError(f"unknown document ids: {preview(unknown)}")
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

    @property
    def mean_sq_norm(self) -> float | None:
        """The indexed documents' mean squared embedding norm (None when empty): the relevance scale."""
        return self.store.mean_sq_norm()

    def relevance(self, distance: float) -> float:
        """A hit's relevance in [0, 1], calibrated on this index
        (:func:`~ragcun.retrieval.results.calibrated_relevance`: the cosine for unit-norm models, cosine-like
        for Gaussian ones; monotone in the distance)."""
        from ragcun.retrieval.results import calibrated_relevance

        m = self.mean_sq_norm
        if m is None:
            raise ValueError("the index is empty: there is no relevance to calibrate")
        return calibrated_relevance(distance, m)

    def retrieve(self, query: str, top_k: int = 10, filter: MetadataFilter | None = None,
                 hybrid: bool | Fusion | None = None, candidates: int | None = None) -> list[SearchResult]:
        """The ``top_k`` nearest documents to ``query``, nearest first (``filter``: see
        :meth:`search_embeddings`; ``hybrid``, ``candidates``: see :meth:`retrieve_batch`)."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__} (use retrieve_batch for "
                            "lists)")
        return self.retrieve_batch([query], top_k=top_k, filter=filter, hybrid=hybrid,
                                   candidates=candidates)[0]

    def retrieve_batch(self, queries: Sequence[str], top_k: int = 10, batch_size: int | None = None,
                       filter: MetadataFilter | None = None, hybrid: bool | Fusion | None = None,
                       candidates: int | None = None) -> list[list[SearchResult]]:
        """``retrieve`` for many queries: one encoding pass and one index search.

        ``hybrid`` fuses the L2 ranking with BM25 (:mod:`ragcun.retrieval.hybrid`): ``True`` (the retriever's
        fusion, else z-scores with BM25 weighted 0.5), a :class:`~ragcun.encoding.fusion.Fusion`, ``False``
        (L2 alone) or None (the retriever's default). Hybrid hits carry ``hybrid_score``; ``candidates`` is
        each scorer's depth (default: every document up to 20,000, else 1,000)."""
        queries = _texts(queries, "queries", "there is nothing to search for")
        top_k = check_top_k(top_k)
        fusion = hybrid_search.as_fusion(self.hybrid if hybrid is None else hybrid, self.hybrid)
        if not queries:
            return []
        q = self.encode_queries(queries, batch_size=batch_size)
        if fusion is None:
            return self.search_embeddings(q, top_k=top_k, filter=filter)
        self._check_dim(q)
        self._prepare()
        return hybrid_search.search(self, queries, q, top_k, fusion, metadata_filter(filter), candidates)

    def search_embeddings(self, query_embeddings: np.ndarray, top_k: int = 10,
                          filter: MetadataFilter | None = None) -> list[list[SearchResult]]:
        """Search with precomputed query embeddings (shape ``(nq, dim)``).

        ``filter`` keeps only some documents: a dict is metadata equality on every key
        (``{"lang": "de"}``), a callable takes a :class:`SearchResult` and returns whether to keep it. The
        ranking is fetched deeper (4× at a time, up to the whole index) until ``top_k`` documents match, so a
        filter never returns fewer hits than the index holds matches (exact indexes) and never is ignored.
        """
        top_k = check_top_k(top_k)
        keep = metadata_filter(filter)
        q = np.asarray(query_embeddings, dtype=np.float32)
        if not np.isfinite(q).all():
            raise ValueError("query embeddings contain NaN or inf")
        q = q[None, :] if q.ndim == 1 else q
        self._check_dim(q)
        self._prepare()
        if keep is None:
            return self._search(q, top_k)
        out: list[list[SearchResult] | None] = [None] * q.shape[0]
        todo, depth = list(range(q.shape[0])), max(4 * top_k, 100)
        while todo:
            n = len(self)
            depth = min(depth, max(n, 1))
            ranked = self._search(q[todo], depth)
            left = []
            for row, hits in zip(todo, ranked, strict=True):
                kept = [h for h in hits if keep(h)][:top_k]
                if len(kept) < top_k and depth < n:
                    left.append(row)
                out[row] = [dataclasses.replace(h, rank=r) for r, h in enumerate(kept, start=1)]
            todo, depth = left, depth * 4
        return [o or [] for o in out]

    def _search(self, q: np.ndarray, top_k: int) -> list[list[SearchResult]]:
        """The index's top ``top_k`` per query row with the stored documents (rows already checked)."""
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

    def retrieve_mmr(self, query: str | np.ndarray, top_k: int = 4, fetch_k: int = 20,
                     lambda_mult: float = 0.5, filter: MetadataFilter | None = None) -> list[SearchResult]:
        """Diverse hits: the ``fetch_k`` nearest (after ``filter``) re-ordered by :func:`l2_mmr`, ``top_k``
        kept.

        ``query`` is a text or a query embedding. The hits keep their true L2 distances; ``rank`` is the MMR
        order."""
        top_k, fetch_k = check_top_k(top_k), check_top_k(fetch_k)
        q = (self.encode_queries([query]) if isinstance(query, str)
             else np.asarray(query, dtype=np.float32).reshape(1, -1))
        hits = self.search_embeddings(q, top_k=max(fetch_k, top_k), filter=filter)[0]
        if not hits:
            return []
        order = l2_mmr(q[0], self.document_embeddings([h.id for h in hits]), top_k, lambda_mult)
        return [dataclasses.replace(hits[j], rank=r) for r, j in enumerate(order, start=1)]

    def document_embeddings(self, ids: Sequence[str]) -> np.ndarray:
        """The indexed vectors of ``ids`` (in that order): read back from the engine where it can, else
        encoded again from the stored texts (same model, same runtime). Unknown ids raise ``KeyError``."""
        ids = [str(i) for i in ids]
        found = self.store.iids_for(ids)
        unknown = [i for i in ids if i not in found]
        if unknown:
            raise KeyError(f"unknown document ids: {preview(unknown)}")
        if not ids:
            return np.zeros((0, self.dimension), np.float32)
        return self._vectors(np.asarray([found[i] for i in ids], dtype=np.int64))

    def _vectors(self, iids: np.ndarray, locked: bool = False) -> np.ndarray:
        """The vectors of indexed ``iids``: read back from the engine where it can, else encoded again
        (``locked``: the caller holds the read lock already; a second read could deadlock behind a writer)."""
        reconstruct = getattr(self.index, "reconstruct", None)
        if reconstruct is not None:
            if locked:
                return np.asarray(reconstruct(iids), dtype=np.float32)
            with self._lock.read():
                return np.asarray(reconstruct(iids), dtype=np.float32)
        docs = self.store.get_many(iids.tolist())
        return self.encode_documents([docs[int(i)][1] for i in iids])

    # ------------------------------------------------------------------ persistence
    def _parts(self) -> persistence.Parts:
        return persistence.Parts(self.model, self.model_name, self.model_location, self.index, self.store,
                                 self.batch_size, self.runtime, self._next_iid, self.fingerprint,
                                 self.dimension, lexical=self.lexical, hybrid=self.hybrid,
                                 calibration=self.calibration)

    def manifest(self) -> dict[str, Any]:
        """What ``save`` writes to ``manifest.json`` (without the file hashes)."""
        return persistence.build_manifest(self._parts())

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index, documents and manifest to ``directory`` atomically (see
        :func:`persistence.save`)."""
        self._prepare()
        return persistence.save(self._parts(), directory, self._lock)

    read_manifest = staticmethod(persistence.read_manifest)

    @classmethod
    def load(cls, directory: str | os.PathLike, model: Any = None, *, device: str | None = None,
             verify: bool = True, check_model: bool = True, mmap: bool = False,
             runtime: str | None = None, precision: str | None = None,
             encode_backend: str | None = None) -> GaussianRetriever:
        """Load a saved retriever, checking every file and the model (see :func:`persistence.load`).

        *Loading runs the model the manifest names*: load indexes you trust. The encoding runtime is the
        manifest's unless ``runtime``/``precision`` say otherwise (``encode_backend``: ``runtime``'s old
        name).
        """
        runtime = renamed("encode_backend", encode_backend, "runtime", runtime)
        p = persistence.load(directory, model, device=device, verify=verify, check_model=check_model,
                             mmap=mmap)
        self = cls(p.model, p.index, model_name=p.model_name, batch_size=p.batch_size, store=p.store,
                   next_id=p.next_iid, device=device,
                   runtime=runtime or p.encoding.get("backend"),
                   precision=precision or p.encoding.get("precision"),
                   calibration=p.encoding.get("calibration"))
        self.model_location, self._fingerprint = p.model_location, p.fingerprint
        if p.lexical is not None:
            self.lexical, self.hybrid = p.lexical, p.hybrid
        return self

    def __repr__(self) -> str:
        return (f"GaussianRetriever(model={self.model_name!r}, index={self.index.kind!r}, "
                f"engine={self.index.backend!r}, encoding={self.runtime.tag!r}, dim={self.dimension}, "
                f"documents={len(self)})")


def _texts(texts: Sequence[str], name: str, empty: str, first: int = 0) -> list[str]:
    """``texts`` as a list of non-blank strings; else a one-line error naming the entry (``name[i]``)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    for i, t in enumerate(texts, start=first):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] is {type(t).__name__}, expected str")
        if not t.strip():
            raise ValueError(f"{name}[{i}] is empty: {empty}")
        problem = text_problem(t)
        if problem:  # the tokenizer would fail after the model loaded, naming nothing
            raise ValueError(f"{name}[{i}] {problem}")
    return texts


__all__ = [
    "DimensionMismatchError",
    "GaussianRetriever",
    "INDEX_TYPES",
    "IndexCorruptError",
    "MetadataFilter",
    "ModelMismatchError",
    "RetrieverError",
    "SearchResult",
    "read_documents",
]
