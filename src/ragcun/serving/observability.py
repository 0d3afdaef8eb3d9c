"""What an operator watches and guards: Prometheus metrics, a structured access log, an optional API key,
and Swagger UI served from a Python package (``/docs`` works with no network).

The metrics live in a registry of their own per app (several apps in one process never mix their counts):
``ragcun_requests_total{route,method,status}``, ``ragcun_request_seconds{route}`` (a latency histogram),
``ragcun_batch_size{index}`` (queries per encoder pass), ``ragcun_errors_total{route,status}`` (5xx) and
``ragcun_documents{index}``. Routes are label values by their template (``/search``), an unknown path is
``unmatched``: a scanner cannot blow up the label set.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any

access_logger = logging.getLogger("ragcun.access")

#: Paths that answer without the API key: probes, metrics and the API's own description.
OPEN_PATHS = ("/health", "/ready", "/metrics", "/docs", "/redoc", "/openapi.json")
DOCS_ASSETS = "/docs-assets"


class Metrics:
    """The service's Prometheus metrics (``prometheus-client``), in their own registry."""

    def __init__(self, documents: dict[str, Any]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("ragcun_requests", "HTTP requests answered.", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("ragcun_request_seconds", "Time to answer a request.", ["route"],
                                 buckets=(.002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10),
                                 registry=self.registry)
        self.batch = Histogram("ragcun_batch_size", "Queries encoded and searched together.", ["index"],
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.errors = Counter("ragcun_errors", "Requests that failed on the server's side (5xx).",
                              ["route", "status"], registry=self.registry)
        docs = Gauge("ragcun_documents", "Documents in each served index.", ["index"], registry=self.registry)
        for name, r in documents.items():
            docs.labels(index=name).set_function(lambda r=r: len(r))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)
        if status >= 500:
            self.errors.labels(route=route, status=str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def route_of(request: Any) -> str:
    """The matched route's template, or ``unmatched``."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def log_access(request: Any, status: int, seconds: float) -> None:
    """One JSON line per request on the ``ragcun.access`` logger (``ragcun serve`` prints it to stderr)."""
    if not access_logger.isEnabledFor(logging.INFO):
        return
    client = request.client.host if request.client else None
    access_logger.info(json.dumps({
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()), "client": client,
        "method": request.method, "path": request.url.path, "route": route_of(request), "status": status,
        "ms": round(1000 * seconds, 2),
        "length": request.headers.get("content-length"),
    }))


def authorized(request: Any, api_key: str | None) -> bool:
    """True when no key is set, the path is open, or the request carries the key (``Authorization: Bearer
    KEY`` or ``X-API-Key: KEY``), compared in constant time."""
    if not api_key:
        return True
    path = request.url.path
    if path in OPEN_PATHS or path.startswith(DOCS_ASSETS + "/"):
        return True
    given = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if given is None and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                                                     api_key.encode("utf-8"))


def mount_docs(app: Any, title: str) -> None:
    """``/docs`` (Swagger UI 5, which reads OpenAPI 3.1 as FastAPI writes it) and ``/redoc`` (ReDoc), their
    JavaScript, CSS and icon served from the ``fastapi-offline`` package: FastAPI's default pages load them
    from a CDN and are blank offline (tested in headless Chromium with every other host unreachable)."""
    from pathlib import Path

    import fastapi_offline
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    static = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(static)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Any:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{title} — API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> Any:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{title} — API",
                              redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False)
