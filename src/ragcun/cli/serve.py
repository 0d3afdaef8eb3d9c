"""``ragcun serve INDEX...``: saved indexes behind an HTTP search service (FastAPI + uvicorn)."""

from __future__ import annotations

from pathlib import Path

import typer

from ragcun.cli.app import USER_ERRORS, app, check_bounds, console, device_option, fail


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
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms",
                                      help="How long a query waits for others to batch with."),
    device: str = device_option(),
) -> None:
    """Serve saved indexes over HTTP: POST /search {query, k, filters, index}, GET /health, OpenAPI at
    /docs."""
    check_bounds(port=(port, 1, 65_535), max_k=(max_k, 1, 100_000), max_body_kb=(max_body_kb, 1, 1 << 20),
                 max_batch=(max_batch, 1, 4096))
    if not host.strip():
        raise fail("--host is empty: give an address such as 127.0.0.1 or 0.0.0.0")
    if not 0 <= max_wait_ms <= 1000:
        raise fail(f"--max-wait-ms must be between 0 and 1,000, got {max_wait_ms}")
    try:
        import uvicorn

        from ragcun.retrieval import GaussianRetriever
        from ragcun.serving import ServeSettings, create_app
    except ImportError as exc:
        raise fail(f"ragcun serve needs FastAPI and uvicorn: pip install 'ragcun[serve]' ({exc})") from None
    names = [p.name for p in indexes]
    if len(set(names)) != len(names):
        raise fail(f"two indexes share a folder name ({', '.join(names)}): each is served under its name")
    try:
        retrievers = {p.name: GaussianRetriever.load(p, device=device) for p in indexes}
        application = create_app(retrievers, ServeSettings(max_k=max_k, max_body_bytes=max_body_kb * 1024,
                                                           max_batch=max_batch, max_wait_ms=max_wait_ms))
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    for name, r in retrievers.items():
        console.print(f"serving [bold]{name}[/]: {len(r):,} documents, {r.model_name} ({r.runtime.tag})")
    console.print(f"http://{host}:{port}/search  (OpenAPI: http://{host}:{port}/docs)")
    uvicorn.run(application, host=host, port=port, log_level="warning")
