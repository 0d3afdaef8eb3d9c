"""The service's request and response bodies: strict types (``k`` is an integer, never a bool, a string or
``2.0``), unknown fields refused, every field described for the OpenAPI page."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, StrictBool, StrictInt, StrictStr

Scalar = StrictStr | StrictInt | FiniteFloat | StrictBool  # strict by the models' config; NaN and inf refused
IndexName = Field(None, min_length=1, description="Which index (needed when the server serves several).")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Fusion(_Strict):
    """The search options both search bodies share: dense or hybrid, and BM25's weight."""

    hybrid: StrictBool | None = Field(
        None, description="Fuse the L2 ranking with BM25 (true) or rank by L2 alone (false); default: the "
                          "index's own (ragcun index build --hybrid).")
    bm25_weight: FiniteFloat | None = Field(
        None, ge=0, description="Hybrid search with BM25 weighted this beside the model's score (implies "
                                "hybrid; default: the index's fusion, else 0.5).")


class SearchRequest(_Fusion):
    """The body of ``POST /search``."""

    query: StrictStr = Field(description="The query text.")
    k: StrictInt = Field(10, description="Number of hits (1 … the server's --max-k).")
    filters: dict[str, Scalar] | None = Field(
        None, description='Metadata equality filters, e.g. {"lang": "en"}.')
    index: StrictStr | None = IndexName


class BatchSearchRequest(_Fusion):
    """The body of ``POST /search/batch``: several queries, one encoder pass and one index search."""

    queries: list[StrictStr] = Field(min_length=1, description="The query texts.")
    k: StrictInt = Field(10, description="Number of hits per query.")
    filters: dict[str, Scalar] | None = Field(None, description="Metadata equality filters for every query.")
    index: StrictStr | None = IndexName


class Hit(BaseModel):
    id: str | None
    rank: int
    distance: float
    relevance: float
    norm: float
    text: str
    metadata: dict[str, Any] | None
    hybrid_score: float | None = None


class SearchResponse(BaseModel):
    index: str
    hits: list[Hit]
    took_ms: float


class BatchSearchResponse(BaseModel):
    index: str
    results: list[list[Hit]]
    took_ms: float


class EmbeddingsRequest(_Strict):
    """OpenAI's ``POST /v1/embeddings`` body (``input_type`` is ragcun's: a query or a document prompt)."""

    input: StrictStr | list[StrictStr] = Field(description="A text or a list of texts.")
    model: StrictStr | None = Field(None, description="The served index whose model embeds (any name when "
                                                      "one is served).")
    encoding_format: Literal["float"] = Field("float", description="Only float: the vectors as numbers.")
    input_type: Literal["query", "document"] = Field(
        "document", description="Apply the model's query or document prompt (the same for symmetric models).")
    user: StrictStr | None = Field(None, description="Accepted for OpenAI compatibility; unused.")
    dimensions: StrictInt | None = Field(None, description="Must be the model's dimension when given "
                                                           "(Gaussian vectors are never truncated).")


class EmbedRequest(_Strict):
    """Text-embeddings-inference's ``POST /embed`` body. Vectors are the model's own, unnormalised: the norm
    is the Gaussian model's confidence (``normalize: true`` divides by it, on request)."""

    inputs: StrictStr | list[StrictStr] = Field(description="A text or a list of texts.")
    normalize: StrictBool = Field(False, description="Divide each vector by its norm (off by default).")
    truncate: StrictBool = Field(True, description="Inputs longer than the model's limit are truncated.")
    prompt_name: Literal["query", "document"] | None = Field(
        None, description="The model's query or document prompt (default: document).")
    index: StrictStr | None = IndexName


class DocumentsRequest(_Strict):
    """``POST /documents``: upsert (an id already indexed is replaced); the server embeds the texts."""

    ids: list[StrictStr] = Field(min_length=1, description="Document ids (unique in the request).")
    texts: list[StrictStr] = Field(min_length=1, description="The documents' texts, one per id.")
    metadata: list[dict[str, Any] | None] | None = Field(None,
                                                        description="One JSON object (or null) per id.")
    index: StrictStr | None = IndexName


class DeleteRequest(_Strict):
    """``DELETE /documents``: unknown ids are skipped."""

    ids: list[StrictStr] = Field(min_length=1, description="Document ids to remove.")
    index: StrictStr | None = IndexName
