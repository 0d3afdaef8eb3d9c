"""A query tower and a document encoder as one sentence-transformers model (a ``Router``).

``encode_query`` runs the query route, ``encode_document`` (and plain ``encode``) the document route, as
sentence-transformers' asymmetric models do; the model ranks by Euclidean distance and plain
``SentenceTransformer(path)`` loads it. ragcun's query-tower training (:mod:`ragcun.training.query_tower`)
builds it from a trained query encoder and the untouched document encoder, whose corpus embeddings (and so
their isotropy) it leaves exactly as they were.
"""

from __future__ import annotations

from typing import Any

from sentence_transformers.base.modules import Router

from ragcun.runtime.spec import is_asymmetric

__all__ = ["document_encoder", "is_asymmetric", "query_document_model"]


def query_document_model(query: Any, documents: Any) -> Any:
    """One ``IsotropicGaussianEncoder`` whose query route is ``query``'s modules and document route
    ``documents``'; both models' ragcun configs are kept under ``towers``."""
    from ragcun.modeling.encoder import IsotropicGaussianEncoder

    if query.get_embedding_dimension() != documents.get_embedding_dimension():
        raise ValueError(f"the query tower is {query.get_embedding_dimension()}-d but the documents are "
                         f"{documents.get_embedding_dimension()}-d")
    router = Router.for_query_document(query_modules=list(query), document_modules=list(documents))
    model = IsotropicGaussianEncoder(modules=[router], device=str(documents.device),
                                     prompts=dict(documents.prompts),
                                     default_prompt_name=documents.default_prompt_name,
                                     similarity_fn_name="euclidean")
    model.ragcun_config = {"num_head_modules": 0, "towers": {
        "query": dict(getattr(query, "ragcun_config", {}) or {}),
        "document": dict(getattr(documents, "ragcun_config", {}) or {})}}
    return model


def document_encoder(model: Any) -> Any:
    """The model that encodes ``model``'s documents: ``model`` itself, or for a query-document ``Router`` its
    document route as a model of its own (modules shared, not copied; ragcun's config of that tower).

    Corpus vectors are cached under this model's fingerprint, so a query tower trained on an arm's documents
    reads that arm's cached corpus instead of encoding it again: the vectors are the same by construction.
    """
    if not is_asymmetric(model):
        return model
    from sentence_transformers import SentenceTransformer

    routers = [m for m in model if isinstance(m, Router)]
    if len(model) != 1 or "document" not in routers[0].sub_modules:
        raise ValueError("only a query-document Router as the model's one module has a document encoder of "
                         "its own")
    modules = list(routers[0].sub_modules["document"])
    tower = dict(((getattr(model, "ragcun_config", None) or {}).get("towers") or {}).get("document") or {})
    doc = SentenceTransformer(modules=modules, device=str(model.device), prompts=dict(model.prompts or {}),
                              default_prompt_name=model.default_prompt_name,
                              similarity_fn_name=model.similarity_fn_name)
    doc.ragcun_config = tower  # its head known, so split_at_head sees the arm it came from
    return doc
