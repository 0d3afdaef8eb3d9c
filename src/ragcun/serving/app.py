"""The HTTP service: search, embeddings and writes over saved ragcun indexes (FastAPI).

Routes: ``POST /search`` and ``POST /search/batch``; OpenAI's ``POST /v1/embeddings`` and ``GET /v1/models``;
text-embeddings-inference's ``POST /embed``; ``POST /documents`` (upsert) and ``DELETE /documents``;
``GET /health``, ``GET /ready``, ``GET /metrics`` (Prometheus); Swagger UI at ``/docs`` (no network needed).

Every error, 404 and 405 included, is ``{"error": "<one line>"}`` and the server keeps serving. A request is
checked whole (strict types, a query that is not valid Unicode, ``k`` out of range) before it joins a batch,
and a batch that still fails is answered request by request, so one request never fails another. A body
that stalls gets 408. Results are the retriever's own: true L2 distances, the embedding norm, the relevance
calibrated on the index and the stored metadata; a filter is the retriever's (metadata equality, fetched deep
enough for ``k`` matches). Writes are logged before they are applied (:mod:`ragcun.serving.live`).
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ragcun.data.readers import text_problem
from ragcun.encoding.fusion import Fusion
from ragcun.serving.batching import MicroBatcher
from ragcun.serving.live import LiveIndex
from ragcun.serving.observability import Metrics, authorized, log_access, mount_docs, route_of
from ragcun.serving.schemas import (
    BatchSearchRequest,
    BatchSearchResponse,
    DeleteRequest,
    DocumentsRequest,
    EmbeddingsRequest,
    EmbedRequest,
    Hit,
    SearchRequest,
    SearchResponse,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    """Limits, batching and access of the service (``ragcun serve`` options)."""

    max_k: int = 1000
    max_body_bytes: int = 64 * 1024
    max_query_chars: int = 10_000
    max_batch: int = 32
    max_wait_ms: float = 0.0
    max_texts: int = 256
    body_timeout_s: float = 10.0
    api_key: str | None = None
    hybrid: Any = None  # a Fusion: hybrid search is the default of every index (ragcun serve --hybrid)

    def __post_init__(self) -> None:
        for name in ("max_k", "max_body_bytes", "max_query_chars", "max_batch", "max_texts"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ValueError(f"max_wait_ms must be in [0, 1000], got {self.max_wait_ms}")
        if not 0 < self.body_timeout_s <= 3600:
            raise ValueError(f"body_timeout_s must be in (0, 3600], got {self.body_timeout_s}")


class RequestError(Exception):
    """A refused request: its status and one line for ``{"error"}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


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
        return f"unknown field {loc!r}"
    return f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid request"))


def _check_text(text: str, what: str, max_chars: int, empty: str) -> None:
    if not text.strip():
        raise RequestError(400, f"{what} is empty: {empty}")
    if len(text) > max_chars:
        raise RequestError(400, f"{what} is longer than {max_chars:,} characters")
    problem = text_problem(text)  # the readers' one rule: a lone surrogate or a NUL is no text
    if problem:
        raise RequestError(400, f"{what} {problem}")


def _searcher(retriever: Any) -> Any:
    """The batcher's search: one ``retrieve_batch`` per batch and fusion (a Fusion, or False: L2 alone)."""
    return lambda queries, k, hybrid: retriever.retrieve_batch(queries, k, hybrid=hybrid)


def create_app(retrievers: dict[str, Any], settings: ServeSettings | None = None,
               live: dict[str, LiveIndex] | None = None) -> Any:
    """A FastAPI app serving ``retrievers`` (name → loaded :class:`GaussianRetriever`); ``live`` (name →
    :class:`LiveIndex` over the same retriever) makes an index writable."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    if not retrievers:
        raise ValueError("no index to serve")
    settings = settings or ServeSettings()
    live = live or {}
    default = next(iter(retrievers)) if len(retrievers) == 1 else None
    metrics = Metrics(retrievers)
    # what a request that does not say gets: the server's --hybrid, else the index's own, else L2 alone
    fusions = {name: settings.hybrid or r.hybrid or False for name, r in retrievers.items()}
    # every model call runs on one long-lived thread (encoding is serialised by the retriever anyway, and a
    # warm thread keeps torch's OpenMP team: a query encodes 3 ms faster than on asyncio's thread pool)
    model_thread = ThreadPoolExecutor(1, thread_name_prefix="ragcun-model")
    batchers = {name: MicroBatcher(_searcher(r), settings.max_batch, settings.max_wait_ms,
                                   on_batch=metrics.batch.labels(index=name).observe, executor=model_thread)
                for name, r in retrievers.items()}

    async def on_model(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(model_thread, fn, *args)
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        for b in batchers.values():
            await b.start()
        state["ready"] = True
        yield
        state["ready"] = False
        for b in batchers.values():
            await b.stop()
        model_thread.shutdown(wait=True)  # the last writes land before the snapshot
        for name, li in live.items():  # a clean shutdown leaves a snapshot and an empty log
            try:
                li.snapshot()
            except Exception as exc:  # noqa: BLE001 - the log still holds every write
                logger.error("snapshot of %s failed (%s); its log keeps the writes", name, exc)

    app = FastAPI(title="ragcun", version="2", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Search, embeddings and writes over ragcun indexes (isotropic Gaussian "
                              "embeddings, exact L2).")
    mount_docs(app, "ragcun")

    def error(status: int, message: str) -> JSONResponse:
        headers = {"Connection": "close"} if status >= 500 or status == 408 else None
        return JSONResponse(status_code=status, content={"error": message}, headers=headers)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        """Key, body size and body deadline before any route runs; then the metrics and the access log."""
        t0 = time.perf_counter()
        response = await _guarded(request, call_next)
        seconds = time.perf_counter() - t0
        metrics.observe(route_of(request), request.method, response.status_code, seconds)
        log_access(request, response.status_code, seconds)
        return response

    async def _guarded(request: Request, call_next: Any) -> Any:
        if not authorized(request, settings.api_key):
            return error(401, "missing or wrong API key (send Authorization: Bearer <key> or X-API-Key)")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            return error(413, f"request body over {settings.max_body_bytes:,} bytes")
        if request.method in ("POST", "PUT", "DELETE", "PATCH"):
            try:  # Starlette keeps the body for the endpoint
                body = await asyncio.wait_for(request.body(), settings.body_timeout_s)
            except TimeoutError:
                return error(408, f"the request body did not arrive within {settings.body_timeout_s:g} s")
            if len(body) > settings.max_body_bytes:
                return error(413, f"request body over {settings.max_body_bytes:,} bytes")
        try:
            return await call_next(request)
        except Exception as exc:  # noqa: BLE001 - one request's failure, answered (and counted) as its own
            logger.error("request failed: %s: %s", type(exc).__name__, exc)
            return error(500, f"internal error ({type(exc).__name__})")

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, _first_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error(404, f"no route {request.method} {request.url.path} (see /docs)")
        if exc.status_code == 405:
            return error(405, f"{request.method} is not allowed on {request.url.path}")
        if exc.status_code == 400:
            return error(400, "the request body could not be read (not UTF-8 JSON?)")
        return error(exc.status_code, str(exc.detail).splitlines()[0])

    @app.exception_handler(RequestError)
    async def refused(_request: Request, exc: RequestError) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logger.error("request failed: %s: %s", type(exc).__name__, exc)  # never a traceback to the client
        return error(500, f"internal error ({type(exc).__name__})")

    # ------------------------------------------------------------------ helpers
    def pick(name: str | None, field: str = "index") -> str:
        name = name or default
        if name is None:
            raise RequestError(400, f"field {field!r} is required when several indexes are served "
                                    f"({', '.join(retrievers)})")
        if name not in retrievers:
            raise RequestError(404, f"unknown index {name!r} (served: {', '.join(retrievers)})")
        return name

    def check_k(k: int) -> None:
        if not 1 <= k <= settings.max_k:
            raise RequestError(400, f"k must be between 1 and {settings.max_k:,}, got {k}")

    def check_texts(texts: list[str], what: str) -> None:
        if len(texts) > settings.max_texts:
            raise RequestError(400, f"{len(texts)} {what}s in one request; at most {settings.max_texts:,}")
        for i, t in enumerate(texts):
            _check_text(t, f"{what}[{i}]" if len(texts) > 1 else what, settings.max_query_chars,
                        "there is nothing to embed" if what == "input" else "there is nothing to search for")

    def hits_of(name: str, hits: list[Any]) -> list[Hit]:
        r = retrievers[name]
        return [Hit(id=h.id, rank=i + 1, distance=h.distance, relevance=r.relevance(h.distance), norm=h.norm,
                    text=h.text, metadata=h.metadata, hybrid_score=h.hybrid_score)
                for i, h in enumerate(hits)]

    def fusion_for(name: str, hybrid: bool | None, bm25_weight: float | None) -> Fusion | bool:
        """A request's ``hybrid``/``bm25_weight`` as the retriever's ``hybrid=`` (a Fusion, or False)."""
        if bm25_weight is None:
            return fusions[name] if hybrid is None else (fusions[name] or Fusion()) if hybrid else False
        if hybrid is False:
            raise RequestError(400, "bm25_weight is for hybrid search: drop it, or leave hybrid out or true")
        base = fusions[name] or Fusion()
        weights = {**base.weights, "bm25": bm25_weight}
        try:
            return Fusion(base.kind, weights, base.rrf_k)
        except ValueError as exc:
            raise RequestError(400, f"bm25_weight: {exc}") from None

    def writable(name: str) -> LiveIndex:
        if name not in live or not live[name].writable:
            raise RequestError(403, f"index {name!r} is served read-only")
        return live[name]

    def embed(name: str, texts: list[str], kind: str) -> Any:
        r = retrievers[name]
        return r.encode_queries(texts) if kind == "query" else r.encode_documents(texts)

    # ------------------------------------------------------------------ probes
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "indexes": {name: {"documents": len(r), "dimension": r.dimension,
                                                   "model": r.model_name, "fingerprint": r.fingerprint,
                                                   "encoding": r.runtime.tag,
                                                   "writable": name in live and live[name].writable,
                                                   "batches": batchers[name].batches,
                                                   "requests": batchers[name].requests}
                                            for name, r in retrievers.items()}}

    @app.get("/ready")
    async def ready() -> Any:
        if not state["ready"]:
            return error(503, "starting")
        return {"ready": True}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    # ------------------------------------------------------------------ search
    refusals: dict[int | str, dict[str, Any]] = {c: {} for c in (400, 401, 404, 408, 413, 422)}

    @app.post("/search", response_model=SearchResponse, responses=refusals)
    async def search(req: SearchRequest) -> Any:
        t0 = time.perf_counter()
        name = pick(req.index)
        _check_text(req.query, "query", settings.max_query_chars, "there is nothing to search for")
        check_k(req.k)
        r = retrievers[name]
        n = len(r)
        hybrid = fusion_for(name, req.hybrid, req.bm25_weight)
        if n == 0:
            hits = []
        elif req.filters:
            hits = await on_model(r.retrieve, req.query, min(req.k, n), dict(req.filters), hybrid)
        else:  # batched with the requests that queued meanwhile (grouped by fusion)
            hits = await batchers[name].submit(req.query, min(req.k, n), hybrid)
        took = round(1000 * (time.perf_counter() - t0), 2)
        return {"index": name, "hits": hits_of(name, hits), "took_ms": took}

    @app.post("/search/batch", response_model=BatchSearchResponse, responses=refusals)
    async def search_batch(req: BatchSearchRequest) -> Any:
        t0 = time.perf_counter()
        name = pick(req.index)
        check_texts(req.queries, "query")
        check_k(req.k)
        r = retrievers[name]
        k = min(req.k, max(len(r), 1))
        filters = dict(req.filters) if req.filters else None
        hybrid = fusion_for(name, req.hybrid, req.bm25_weight)
        ranked = ([[] for _ in req.queries] if len(r) == 0 else
                  await on_model(r.retrieve_batch, req.queries, k, None, filters, hybrid))
        return {"index": name, "results": [hits_of(name, h) for h in ranked],
                "took_ms": round(1000 * (time.perf_counter() - t0), 2)}

    # ------------------------------------------------------------------ embeddings
    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """OpenAI's model list: one entry per served index (its name is the ``model`` to ask for)."""
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ragcun",
                                            "root": r.model_name, "dimension": r.dimension}
                                           for name, r in retrievers.items()]}

    @app.post("/v1/embeddings", responses={400: {}, 404: {}, 422: {}})
    async def openai_embeddings(req: EmbeddingsRequest) -> dict[str, Any]:
        """OpenAI-compatible embeddings: the model's own vectors (unnormalised)."""
        name = pick(req.model if req.model in retrievers or default is None else None, "model")
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        if not texts:
            raise RequestError(400, "input is empty: there is nothing to embed")
        check_texts(texts, "input")
        if req.dimensions is not None and req.dimensions != retrievers[name].dimension:
            raise RequestError(400, f"dimensions must be the model's {retrievers[name].dimension} (Gaussian "
                                    "embeddings are not truncated)")
        x = await on_model(embed, name, texts, req.input_type)
        tokens = sum(len(t.split()) for t in texts)
        return {"object": "list", "model": name,
                "data": [{"object": "embedding", "index": i, "embedding": v.tolist()}
                         for i, v in enumerate(x)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @app.post("/embed", responses={400: {}, 404: {}, 422: {}})
    async def tei_embed(req: EmbedRequest) -> list[list[float]]:
        """Text-embeddings-inference's ``/embed``: a list of vectors, the model's own unless ``normalize``."""
        import numpy as np

        name = pick(req.index)
        texts = [req.inputs] if isinstance(req.inputs, str) else list(req.inputs)
        if not texts:
            raise RequestError(400, "inputs is empty: there is nothing to embed")
        if not req.truncate:
            raise RequestError(400, "truncate=false is not supported: inputs are cut at the model's "
                                    "max_seq_length")
        check_texts(texts, "input")
        x = await on_model(embed, name, texts, req.prompt_name or "document")
        if req.normalize:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x.tolist()

    # ------------------------------------------------------------------ writes
    @app.post("/documents", responses={400: {}, 403: {}, 404: {}, 422: {}})
    async def upsert(req: DocumentsRequest) -> dict[str, Any]:
        """Add or replace documents (the server embeds them); acknowledged only once logged to disk."""
        name = pick(req.index)
        index = writable(name)
        if len(req.texts) != len(req.ids):
            raise RequestError(400, f"{len(req.ids)} ids but {len(req.texts)} texts")
        if req.metadata is not None and len(req.metadata) != len(req.ids):
            raise RequestError(400, f"{len(req.ids)} ids but {len(req.metadata)} metadata entries")
        check_texts(req.texts, "text")
        try:
            n = await on_model(index.upsert, req.ids, req.texts, req.metadata)
        except (ValueError, TypeError) as exc:
            raise RequestError(400, str(exc).splitlines()[0]) from None
        return {"index": name, "upserted": n, "documents": len(retrievers[name])}

    @app.delete("/documents", responses={400: {}, 403: {}, 404: {}, 422: {}})
    async def delete(req: DeleteRequest) -> dict[str, Any]:
        """Remove documents by id; unknown ids are skipped."""
        name = pick(req.index)
        n = await asyncio.to_thread(writable(name).delete, req.ids)
        return {"index": name, "deleted": n, "documents": len(retrievers[name])}

    return app
