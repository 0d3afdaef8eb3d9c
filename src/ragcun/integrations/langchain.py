"""LangChain adapters that rank by true L2 distance (``pip install ragcun[langchain]``).

LangChain's own wrappers get a ragcun model wrong: ``HuggingFaceEmbeddings`` with
``InMemoryVectorStore`` ranks by cosine, throwing away the norm the head was trained to carry, and
the FAISS store ranks by L2 but its relevance scores fall outside [0, 1], so a score-threshold
retriever returns nothing. These adapters keep ragcun's ranking::

    from ragcun.integrations.langchain import GaussianVectorStore

    store = GaussianVectorStore.from_texts(texts, embedding="runs/demo/arms/isotropy/best")
    store.similarity_search_with_score("capital of France", k=5)   # (Document, L2 distance)
    retriever = store.as_retriever(search_type="similarity_score_threshold",
                                   search_kwargs={"score_threshold": 0.6, "k": 10})

The store behaves as LangChain's conformance suite (``langchain-tests``' ``VectorStoreIntegrationTests``)
asks: a returned ``Document`` carries exactly the metadata it was added with (scores come through the
``*_with_score`` methods; ``annotate=True`` adds ``metadata["ragcun"] = {"distance", "norm", "relevance",
"rank"}`` for callers who want them in the document), adding an existing id replaces it (what LangChain's
indexing API and RecordManager rely on), deleting an unknown id is a no-op, ``filter=`` (metadata equality
as a dict, or a callable on the ``Document``) is honoured on every engine, and maximal marginal relevance
runs on the L2 embeddings (:func:`ragcun.retrieval.results.l2_mmr`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("the LangChain adapter needs langchain-core: pip install 'ragcun[langchain]'") from e

from ragcun.encoding.corpus import encode_texts
from ragcun.encoding.models import load_for_index
from ragcun.retrieval.results import SearchResult, hit_metadata, relevance_score
from ragcun.retrieval.retriever import GaussianRetriever

__all__ = ["GaussianEmbeddings", "GaussianVectorStore"]


class GaussianEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over a ragcun model: unnormalised vectors, query/document prompts kept.

    Use it with any LangChain store that ranks by L2 (FAISS); stores that rank by cosine lose the norm.
    """

    def __init__(self, model: Any, *, batch_size: int = 64, device: str | None = None) -> None:
        self.model, self.model_name, _ = load_for_index(model, device)
        self.batch_size = int(batch_size)

    def _encode(self, kind: str, texts: list[str]) -> list[list[float]]:
        return encode_texts(self.model, texts, kind, batch_size=self.batch_size).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._encode("document", list(texts))

    def embed_query(self, text: str) -> list[float]:
        return self._encode("query", [text])[0]


class GaussianVectorStore(VectorStore):
    """A LangChain ``VectorStore`` backed by :class:`~ragcun.GaussianRetriever` (FAISS, NumPy, Qdrant or
    LanceDB; L2).

    ``similarity_search_with_score`` returns the true L2 distance (lower is nearer), as LangChain's
    FAISS store does; ``similarity_search_with_relevance_scores`` and the score-threshold retriever
    use the index's calibrated relevance (:meth:`GaussianRetriever.relevance`: in [0, 1], the cosine for
    unit-norm models, about 0 for unrelated documents); ``distance_scale`` switches to
    :func:`relevance_score` with that scale instead.

    Args:
        retriever: the retriever to wrap (its documents, index type and model).
        distance_scale: use ``1 / (1 + d / distance_scale)`` instead of the calibrated relevance.
        annotate: add ``metadata["ragcun"]`` (distance, norm, relevance, rank) to returned documents. Off by
            default: a round trip then returns exactly what was added.
    """

    def __init__(self, retriever: GaussianRetriever, *, distance_scale: float | None = None,
                 annotate: bool = False) -> None:
        if not isinstance(retriever, GaussianRetriever):
            raise TypeError(f"retriever must be a GaussianRetriever, got {type(retriever).__name__}")
        self.retriever = retriever
        self.distance_scale = distance_scale
        self.annotate = bool(annotate)
        relevance_score(0.0, retriever.dimension, distance_scale)  # checks the scale once, here
        self._embeddings: GaussianEmbeddings | None = None

    # ---------------------------------------------------------------- building
    @classmethod
    def from_texts(cls, texts: list[str], embedding: Any, metadatas: list[dict] | None = None, *,
                   ids: list[str] | None = None, distance_scale: float | None = None, annotate: bool = False,
                   **retriever_kwargs: Any) -> GaussianVectorStore:
        """A new store over ``texts``; ``embedding`` is a :class:`GaussianEmbeddings`, a model or a path."""
        model = embedding.model if isinstance(embedding, GaussianEmbeddings) else embedding
        store = cls(GaussianRetriever(model, **retriever_kwargs), distance_scale=distance_scale,
                    annotate=annotate)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    def load(cls, directory: str | Path, *, distance_scale: float | None = None, annotate: bool = False,
             **load_kwargs: Any) -> GaussianVectorStore:
        """Open an index saved by :meth:`save` or ``GaussianRetriever.save`` (see
        ``GaussianRetriever.load``)."""
        return cls(GaussianRetriever.load(directory, **load_kwargs), distance_scale=distance_scale,
                   annotate=annotate)

    def save(self, directory: str | Path) -> Path:
        """Save atomically, as ``GaussianRetriever.save`` does."""
        return self.retriever.save(directory)

    @property
    def embeddings(self) -> GaussianEmbeddings:
        if self._embeddings is None:
            self._embeddings = GaussianEmbeddings(self.retriever.model, batch_size=self.retriever.batch_size)
        return self._embeddings

    # ---------------------------------------------------------------- documents
    def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *,
                  ids: list[str | None] | None = None, **kwargs: Any) -> list[str]:
        """Encode and add ``texts``; an id already stored is replaced (upsert), a missing id gets a random
        UUID, as LangChain's stores do."""
        _no_extra(kwargs, "add_texts")
        texts = list(texts)
        given = list(ids) if ids is not None else [None] * len(texts)
        if len(given) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(given)} ids")
        final = [str(i) if i is not None else uuid.uuid4().hex for i in given]
        return self.retriever.add_documents(texts, ids=final, metadata=metadatas, upsert=True)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Remove ``ids`` (every document when ``None``); unknown ids are skipped, as LangChain expects."""
        _no_extra(kwargs, "delete")
        targets = self.retriever.store.ids() if ids is None else list(ids)
        self.retriever.remove(targets, missing="ignore")
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents of ``ids`` in that order; unknown ids are left out."""
        out = []
        for i in ids:
            row = self.retriever.get(i)
            if row is not None:
                out.append(Document(id=i, page_content=row["text"], metadata=dict(row["metadata"] or {})))
        return out

    # ---------------------------------------------------------------- search
    def _relevance(self, distance: float) -> float:
        if self.distance_scale is None:  # calibrated on the index (the cosine for unit-norm models)
            return self.retriever.relevance(distance)
        return relevance_score(distance, self.retriever.dimension, self.distance_scale)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return self._relevance

    def _document(self, h: SearchResult) -> Document:
        if self.annotate:
            r = self.retriever
            meta = hit_metadata(h, r.dimension, self.distance_scale, r.mean_sq_norm)[0]
        else:
            meta = dict(h.metadata or {})
        return Document(id=h.id, page_content=h.text, metadata=meta)

    def _filter(self, spec: Any) -> Any:
        """LangChain's filter (metadata values as a dict, or a callable on a ``Document``) for the
        retriever."""
        if spec is None or isinstance(spec, dict) or not callable(spec):
            return spec  # the retriever checks dicts and refuses anything else in one line
        return lambda h: bool(spec(Document(id=h.id, page_content=h.text, metadata=dict(h.metadata or {}))))

    def similarity_search_with_score(self, query: str, k: int = 4, filter: Any = None,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        """``(Document, L2 distance)`` pairs, nearest first; ``filter`` as described in the module."""
        _no_extra(kwargs, "similarity_search_with_score")
        hits = self.retriever.retrieve(query, top_k=k, filter=self._filter(filter))
        return [(self._document(h), h.distance) for h in hits]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, filter: Any = None,
                                    **kwargs: Any) -> list[Document]:
        _no_extra(kwargs, "similarity_search_by_vector")
        hits = self.retriever.search_embeddings(np.asarray(embedding, dtype=np.float32), top_k=k,
                                                filter=self._filter(filter))[0]
        return [self._document(h) for h in hits]

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20,
                                      lambda_mult: float = 0.5, filter: Any = None,
                                      **kwargs: Any) -> list[Document]:
        """Diverse results by maximal marginal relevance on the L2 embeddings (see
        :meth:`GaussianRetriever.retrieve_mmr`)."""
        _no_extra(kwargs, "max_marginal_relevance_search")
        hits = self.retriever.retrieve_mmr(query, k, fetch_k, lambda_mult, filter=self._filter(filter))
        return [self._document(h) for h in hits]

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, filter: Any = None,
                                                **kwargs: Any) -> list[Document]:
        _no_extra(kwargs, "max_marginal_relevance_search_by_vector")
        hits = self.retriever.retrieve_mmr(np.asarray(embedding, dtype=np.float32), k, fetch_k, lambda_mult,
                                           filter=self._filter(filter))
        return [self._document(h) for h in hits]


def _no_extra(kwargs: dict[str, Any], where: str) -> None:
    """An option this store does not know is refused, never silently ignored."""
    if kwargs:
        raise TypeError(f"{where}: unsupported option(s) {', '.join(sorted(kwargs))}")
