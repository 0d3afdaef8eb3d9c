"""``ragcun serve INDEX...``: saved indexes behind an HTTP service (FastAPI + uvicorn): search, embeddings,
writes, metrics."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

import typer

from ragcun.cli.app import (
    USER_ERRORS,
    app,
    bm25_weight_option,
    check_bounds,
    console,
    dense_weight_option,
    device_option,
    fail,
    fusion_of,
    fusion_option,
)


@app.command()
def serve(
    indexes: list[Path] = typer.Argument(..., help="Saved index folders (from `ragcun index build`); each is "
                                                   "served under its folder name."),
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    max_k: int = typer.Option(1000, "--max-k", help="Largest k a request may ask for."),
    max_body_kb: int = typer.Option(64, "--max-body-kb",
                                    help="Largest request body, in KiB (larger gets 413)."),
    max_batch: int = typer.Option(32, "--max-batch",
                                  help="Concurrent queries encoded and searched together."),
    max_wait_ms: float = typer.Option(0.0, "--max-wait-ms",
                                      help="Hold a batch open this long for more queries (default 0: a batch "
                                           "is what queued while the previous one ran)."),
    body_timeout: float = typer.Option(10.0, "--body-timeout",
                                       help="Seconds a request body may take to arrive (then 408)."),
    api_key: str = typer.Option(None, "--api-key", envvar="RAGCUN_API_KEY", show_envvar=True,
                                help="Require this key (Authorization: Bearer KEY or X-API-Key) on every "
                                     "route but /health, /ready, /metrics and /docs."),
    read_only: bool = typer.Option(False, "--read-only", metavar="",
                                   help="Refuse POST/DELETE /documents (403) and keep no write-ahead log."),
    snapshot_every: int = typer.Option(1000, "--snapshot-every",
                                       help="Writes between atomic snapshots of a written index (its log is "
                                            "replayed on start until then)."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", metavar="",
                                    help="One JSON line per request on stderr."),
    device: str = device_option(),
    hybrid: bool = typer.Option(False, "--hybrid", metavar="",
                                help="Make hybrid search (L2 fused with BM25; see --fusion, --bm25-weight) "
                                     "every served index's default; a request's \"hybrid\" still decides."),
    fusion: str = fusion_option(),
    bm25_weight: float = bm25_weight_option(),
    dense_weight: float = dense_weight_option(),
) -> None:
    """Serve saved indexes over HTTP: POST /search, /search/batch, /v1/embeddings, /embed, /documents
    (DELETE too); GET /health, /ready, /metrics, /v1/models; Swagger UI at /docs."""
    check_bounds(port=(port, 1, 65_535), max_k=(max_k, 1, 100_000), max_body_kb=(max_body_kb, 1, 1 << 20),
                 max_batch=(max_batch, 1, 4096), snapshot_every=(snapshot_every, 1, 10_000_000))
    if not host.strip():
        raise fail("--host is empty: give an address such as 127.0.0.1 or 0.0.0.0")
    if not 0 <= max_wait_ms <= 1000:
        raise fail(f"--max-wait-ms must be between 0 and 1,000, got {max_wait_ms}")
    if not 0 < body_timeout <= 3600:
        raise fail(f"--body-timeout must be in (0, 3,600] seconds, got {body_timeout}")
    fused = fusion_of(hybrid, fusion, bm25_weight, dense_weight)
    if api_key is not None and not api_key.strip():
        raise fail("--api-key (or RAGCUN_API_KEY) is empty: give a key, or leave it unset")
    try:
        import uvicorn

        from ragcun.retrieval import GaussianRetriever
        from ragcun.serving import LiveIndex, ServeSettings, create_app
    except ImportError as exc:
        raise fail(f"ragcun serve needs FastAPI, uvicorn and prometheus-client: pip install 'ragcun[serve]' "
                   f"({exc})") from None
    names = [p.name for p in indexes]
    if len(set(names)) != len(names):
        raise fail(f"two indexes share a folder name ({', '.join(names)}): each is served under its name")
    try:
        retrievers, live = {}, {}
        for p in indexes:
            r = retrievers[p.name] = GaussianRetriever.load(p, device=device)
            if (fused or r.hybrid) is not None:  # BM25 ready before the first request (loaded, or built)
                r.lexical.current(r.store)
            live[p.name] = LiveIndex(r, None if read_only else p, snapshot_every=snapshot_every)
        settings = ServeSettings(max_k=max_k, max_body_bytes=max_body_kb * 1024, max_batch=max_batch,
                                 max_wait_ms=max_wait_ms, body_timeout_s=body_timeout, api_key=api_key,
                                 hybrid=fused)
        application = create_app(retrievers, settings, live=live)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    try:  # bound before anything is announced: a busy port is the first and only thing said
        sock = _bind(host, port)
    except OSError as exc:
        raise fail(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
    for name, r in retrievers.items():
        replayed = f", {live[name].replayed:,} logged writes replayed" if live[name].replayed else ""
        how = f", hybrid {(fused or r.hybrid).label()}" if (fused or r.hybrid) is not None else ""
        console.print(f"serving [bold]{name}[/]: {len(r):,} documents, {r.model_name} ({r.runtime.tag})"
                      f"{'' if read_only else ', writable'}{how}{replayed}")
    console.print(f"http://{host}:{port}/search  (API: http://{host}:{port}/docs)"
                  + ("  [dim]API key required[/]" if api_key else ""))
    access = logging.getLogger("ragcun.access")
    access.propagate = False
    if access_log:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning", access_log=False))
    server.run(sockets=[sock])


def _bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (IPv4 or IPv6, as the host resolves), for uvicorn to listen on."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is fine
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
