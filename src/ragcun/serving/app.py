"""The HTTP search service: ``POST /search``, ``GET /health``, the OpenAPI page at ``/docs``.

Every bad request is a 4xx whose JSON body is ``{"error": "<one line>"}`` and the server keeps serving: bad
JSON, a missing or unknown field, an empty query, ``k`` outside 1…``max_k``, a body over ``max_body_bytes``
(413), an unknown index (404). Results are the retriever's own: true L2 distances, the embedding norm, the
relevance calibrated on the index (:meth:`GaussianRetriever.relevance`, as the framework adapters use it)
and the stored metadata. Filters are metadata equality (``{"lang": "en"}``), applied to an exact ranking
fetched deep enough to return ``k`` matches when the index holds them.
"""

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ragcun.serving.batching import MicroBatcher

logger = logging.getLogger(__name__)

Scalar = str | int | float | bool


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of the service (``ragcun serve`` options)."""

    max_k: int = 1000
    max_body_bytes: int = 64 * 1024
    max_query_chars: int = 10_000
    max_batch: int = 32
    max_wait_ms: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_k", "max_body_bytes", "max_query_chars", "max_batch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ValueError(f"max_wait_ms must be in [0, 1000], got {self.max_wait_ms}")


class SearchRequest(BaseModel):
    """The body of ``POST /search``."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(description="The query text.")
    k: int = Field(10, description="Number of hits (1 … the server's --max-k).")
    filters: dict[str, Scalar] | None = Field(
        None, description='Metadata equality filters, e.g. {"lang": "en"}.')
    index: str | None = Field(None, description="Which index (needed when the server serves several).")


class Hit(BaseModel):
    id: str | None
    rank: int
    distance: float
    relevance: float
    norm: float
    text: str
    metadata: dict[str, Any] | None


class SearchResponse(BaseModel):
    index: str
    hits: list[Hit]
    took_ms: float


def _first_error(exc: Any) -> str:
    """One line from a pydantic / FastAPI validation error: the field path and what is wrong with it."""
    errors = exc.errors() if hasattr(exc, "errors") else []
    if not errors:
        return str(exc).splitlines()[0]
    err = errors[0]
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
    if err.get("type") == "json_invalid":
        return "the request body is not valid JSON"
    if err.get("type") == "missing":
        return f"field {loc!r} is required"
    if err.get("type") == "extra_forbidden":
        return f"unknown field {loc!r} (expected query, k, filters, index)"
    return f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid request"))


def _matches(metadata: dict[str, Any] | None, filters: dict[str, Any]) -> bool:
    meta = metadata or {}
    return all(k in meta and meta[k] == v for k, v in filters.items())


def create_app(retrievers: dict[str, Any], settings: ServeSettings | None = None) -> Any:
    """A FastAPI app serving ``retrievers`` (name → loaded :class:`GaussianRetriever`)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    if not retrievers:
        raise ValueError("no index to serve")
    settings = settings or ServeSettings()
    default = next(iter(retrievers)) if len(retrievers) == 1 else None
    batchers = {name: MicroBatcher(r.retrieve_batch, settings.max_batch, settings.max_wait_ms)
                for name, r in retrievers.items()}

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        for b in batchers.values():
            await b.start()
        yield
        for b in batchers.values():
            await b.stop()

    app = FastAPI(title="ragcun search", version="1", lifespan=lifespan,
                  description="Exact L2 search over a ragcun index (isotropic Gaussian embeddings).")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": message})

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            return error(413, f"request body over {settings.max_body_bytes:,} bytes")
        # chunked: read it (Starlette keeps it for the endpoint)
        if length is None and request.method == "POST":
            if len(await request.body()) > settings.max_body_bytes:
                return error(413, f"request body over {settings.max_body_bytes:,} bytes")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, _first_error(exc))

    # never a traceback to the client
    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logger.error("search failed: %s: %s", type(exc).__name__, exc)
        return error(500, f"internal error ({type(exc).__name__})")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "indexes": {name: {"documents": len(r), "dimension": r.dimension,
                                                   "model": r.model_name, "fingerprint": r.fingerprint,
                                                   "encoding": r.runtime.tag,
                                                   "batches": batchers[name].batches,
                                                   "requests": batchers[name].requests}
                                            for name, r in retrievers.items()}}

    @app.post("/search", response_model=SearchResponse, responses={400: {}, 404: {}, 413: {}, 422: {}})
    async def search(req: SearchRequest) -> Any:
        t0 = time.perf_counter()
        name = req.index or default
        if name is None:
            return error(400, "field 'index' is required when several indexes are served "
                              f"({', '.join(retrievers)})")
        if name not in retrievers:
            return error(404, f"unknown index {name!r} (served: {', '.join(retrievers)})")
        if not req.query.strip():
            return error(400, "query is empty: there is nothing to search for")
        if len(req.query) > settings.max_query_chars:
            return error(400, f"query is longer than {settings.max_query_chars:,} characters")
        if not 1 <= req.k <= settings.max_k:
            return error(400, f"k must be between 1 and {settings.max_k:,}, got {req.k}")
        retriever = retrievers[name]
        n = len(retriever)
        if n == 0:
            return {"index": name, "hits": [], "took_ms": 0.0}
        if not req.filters:
            hits = await batchers[name].submit(req.query, min(req.k, n))
        else:  # exact ranking, fetched deeper until k matches or the whole index was seen
            depth = min(n, max(4 * req.k, 100))
            while True:
                ranked = await batchers[name].submit(req.query, depth)
                hits = [h for h in ranked if _matches(h.metadata, req.filters)][: req.k]
                if len(hits) >= req.k or depth >= n:
                    break
                depth = min(n, depth * 4)
        out = [Hit(id=h.id, rank=i + 1, distance=h.distance, relevance=retriever.relevance(h.distance),
                   norm=h.norm, text=h.text, metadata=h.metadata) for i, h in enumerate(hits)]
        return {"index": name, "hits": out, "took_ms": round(1000 * (time.perf_counter() - t0), 2)}

    return app
