"""``ragcun index build|info`` and ``ragcun search``: build a saved L2 index from a document file, query
it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from ragcun.cli.app import (
    USER_ERRORS,
    app,
    batch_size_option,
    bm25_weight_option,
    check_bounds,
    console,
    data_dir_option,
    dense_weight_option,
    device_option,
    docs_option,
    fail,
    fusion_given,
    fusion_of,
    fusion_option,
    max_seq_length_option,
    precision_option,
    runtime_option,
)
from ragcun.paths import documents_source
from ragcun.progress import DocProgress

#: How many of a corpus's first passages ``index build`` reads for OpenVINO int8's calibration sample.
CALIBRATION_READ = 2_000

logger = logging.getLogger(__name__)


index_app = typer.Typer(help="Build and inspect saved retrieval indexes.", no_args_is_help=True)
app.add_typer(index_app, name="index")


@index_app.command("build")
def index_build(
    model: str = typer.Option(..., "--model", "-m",
                              help="Model: a local directory, an alias (all-MiniLM-L6-v2) or a Hub id."),
    docs: str = docs_option(),
    data_dir: str = data_dir_option(),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (replaced atomically)."),
    index: str = typer.Option("flat", "--index", help="flat (exact) | ivf | hnsw."),
    batch_size: int = batch_size_option(),
    max_seq_length: int = max_seq_length_option(" Kept in the index."),
    backend: str = runtime_option(" Kept in the index."),
    precision: str = precision_option(),
    chunk_size: int = typer.Option(4096, "--chunk-size",
                                   help="Documents read from the file per step (bounds memory)."),
    limit: int = typer.Option(None, "--limit", help="Index only the first N documents."),
    nlist: int = typer.Option(None, "--nlist", help="IVF: number of cells (default ≈ sqrt(n))."),
    nprobe: int = typer.Option(None, "--nprobe", help="IVF: cells probed per query."),
    hnsw_m: int = typer.Option(32, "--hnsw-m", help="HNSW: links per node (M)."),
    ef_construction: int = typer.Option(80, "--ef-construction", help="HNSW: build beam width."),
    ef_search: int = typer.Option(64, "--ef-search", help="HNSW: query beam width."),
    device: str = device_option(),
    engine: str = typer.Option(
        "auto", "--engine", help="Where the vectors live: auto (FAISS), faiss, numpy, qdrant (embedded; a "
        "server with --url) or lancedb (on disk, IVF-PQ for --index ivf; a remote table with --url)."),
    url: str = typer.Option(
        None, "--url", help="--engine qdrant: the server URL; --engine lancedb: a remote database URI "
        "(s3://..., db://...). Default: embedded in the index."),
    overwrite: bool = typer.Option(False, "--overwrite", metavar="",
                                   help="Replace an existing index at --out."),
    hybrid: bool = typer.Option(False, "--hybrid", metavar="",
                                help="Also build BM25 over the documents and make hybrid search (L2 fused "
                                     "with BM25, see --fusion, --bm25-weight) the index's default."),
    fusion: str = fusion_option(),
    bm25_weight: float = bm25_weight_option(),
    dense_weight: float = dense_weight_option(),
) -> None:
    """Encode a document file in streamed chunks and save a searchable index."""
    import itertools

    from ragcun.data.documents import check_documents_file, document_file, read_documents
    from ragcun.retrieval import GaussianRetriever

    fused = fusion_of(hybrid, fusion, bm25_weight, dense_weight)
    index = index.lower()
    if index not in ("flat", "ivf", "hnsw"):
        raise fail(f"--index must be flat, ivf or hnsw, got {index!r}")

    try:
        docs = documents_source(docs, data_dir)
        # a folder without a corpus, /dev/null, an empty file, a .csv: before the model loads
        document_file(docs)
    except USER_ERRORS as exc:
        raise fail(f"--docs {exc}") from None
    blocker = next((p for p in [out, *out.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None and blocker != out:
        raise fail(f"--out {out}: {blocker} is a file, not a folder")
    _check_writable(out)
    if limit is not None and limit < 1:
        raise fail(f"--limit must be a positive number of documents, got {limit}")
    from ragcun.encoding.models import MAX_BATCH_SIZE

    check_bounds(batch_size=(batch_size, 1, MAX_BATCH_SIZE), chunk_size=(chunk_size, 1, None),
                 max_seq_length=(max_seq_length, 1, None), nlist=(nlist, 1, None), nprobe=(nprobe, 1, None),
                 hnsw_m=(hnsw_m, 2, 256), ef_construction=(ef_construction, 1, None),
                 ef_search=(ef_search, 1, None))
    if out.exists() and not out.is_dir():
        raise fail(f"--out {out} is a file; an index is a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise fail(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    from ragcun.retrieval.index import BACKENDS, ENGINE_KINDS

    engine = engine.lower()
    if engine not in BACKENDS:
        raise fail(f"--engine must be one of {', '.join(BACKENDS)}, got {engine!r}")
    if url is not None and not url.strip():
        raise fail("--url is empty: give the Qdrant server's URL or LanceDB's URI, or leave --url out "
                   "for the embedded engine")
    if url and engine not in ENGINE_KINDS:
        raise fail("--url is for --engine qdrant or lancedb")
    params: dict = {}
    if engine in ENGINE_KINDS and index not in ENGINE_KINDS[engine]:
        raise fail(f"--engine {engine} serves --index flat (exact) or {ENGINE_KINDS[engine][1]}, not {index}")
    if engine == "qdrant":
        params = {"url": url, "hnsw_ef": ef_search} if url else {"hnsw_ef": ef_search}
    elif engine == "lancedb":
        params = {"uri": url} if url else {}
        if index == "ivf":
            params |= {k: v for k, v in (("num_partitions", nlist), ("nprobes", nprobe)) if v is not None}
    elif index == "ivf":
        params = {"nlist": nlist, "nprobe": nprobe}
    elif index == "hnsw":
        params = {"M": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search}
    try:  # every document read and checked before the model loads (ids, texts, metadata)
        total = check_documents_file(docs, limit)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    if total == 0:
        raise fail(f"{docs}: no documents found")
    # OpenVINO int8 is calibrated on the corpus: a sample of its first passages (the rest are still streamed)
    calibration = ([r["text"] for r in itertools.islice(read_documents(docs), CALIBRATION_READ)]
                   if str(backend).lower() == "openvino" and str(precision).lower() == "int8" else None)
    try:
        retriever = GaussianRetriever(model, index=index, engine=engine, device=device,
                                      batch_size=batch_size, max_seq_length=max_seq_length,
                                      runtime=backend, precision=precision, hybrid=fused,
                                      calibration=calibration, **params)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from exc
    records = read_documents(docs)
    if limit is not None:
        records = itertools.islice(records, limit)
    logger.info("indexing %s with %s (%s index, dim %d; %s, batch %d)", docs, model, index,
                retriever.dimension, retriever.runtime.tag, retriever.batch_size)
    try:
        with DocProgress(total, "indexing", logger=logger) as progress, progress.track(retriever.encoder):
            n = retriever.add_stream(records, chunk_size=chunk_size, batch_size=batch_size,
                                     progress=progress.update)
        if n == 0:
            raise fail(f"{docs}: no documents found")
        retriever.save(out)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from exc
    how = f"; hybrid {fused.label()}" if fused is not None else ""
    console.print(f"[green]indexed[/] {n} documents → {out} ({index}, dim {retriever.dimension}{how})")


def _check_writable(out: Path) -> None:
    """Fail before the model loads when the index could not be written (a read-only or immutable folder)."""
    import tempfile

    # the index is written beside its final path
    parent = next(p for p in out.absolute().parents if p.exists())
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise fail(f"--out {out}: cannot write in {parent} ({exc.strerror or exc})") from None


@index_app.command("info")
def index_info(directory: Path = typer.Argument(..., help="A saved index directory.")) -> None:
    """Print a saved index's manifest (model, fingerprint, dimension, index type, counts)."""
    from ragcun.retrieval import GaussianRetriever

    try:
        manifest = GaussianRetriever.read_manifest(directory)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from exc
    console.print_json(json.dumps(manifest))


@app.command()
def search(
    directory: Path = typer.Argument(..., help="A saved index directory (from `ragcun index build`)."),
    query: str = typer.Argument(..., help="The query text."),
    k: int = typer.Option(10, "-k", "--top-k", help="Number of results."),
    as_json: bool = typer.Option(False, "--json", metavar="", help="Print the hits as a JSON array."),
    model: str = typer.Option(None, "--model", "-m", help="Model to use (default: the one in the manifest)."),
    device: str = device_option(),
    width: int = typer.Option(100, "--width", help="Characters of text shown per hit (table output)."),
    hybrid: bool = typer.Option(None, "--hybrid/--dense", metavar="",
                                help="Fuse L2 with BM25 (--hybrid) or rank by L2 alone (--dense); default: "
                                     "the index's own (index build --hybrid)."),
    fusion: str = fusion_option(),
    bm25_weight: float = bm25_weight_option(),
    dense_weight: float = dense_weight_option(),
) -> None:
    """Search a saved index; results ranked by L2 distance (smaller is closer), or fused with BM25."""
    from rich.table import Table

    from ragcun.retrieval import GaussianRetriever

    if k <= 0:
        raise fail(f"-k must be positive, got {k}")
    # --dense: L2 alone; fusion options given: that fusion; --hybrid: the index's fusion (else the standard)
    custom = fusion_given(fusion, bm25_weight, dense_weight)
    if hybrid is False:  # --dense: L2 alone, and no fusion option may be given with it
        fusion_of(False, fusion, bm25_weight, dense_weight)
        spec: object = False
    else:
        spec = fusion_of(True, fusion, bm25_weight, dense_weight) if custom else hybrid
    if width < 2:
        raise fail(f"--width must be at least 2 characters, got {width}")
    try:
        retriever = GaussianRetriever.load(directory, model=model, device=device)
        hits = retriever.retrieve(query, top_k=k, hybrid=spec)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=2))
        return
    fused = any(h.hybrid_score is not None for h in hits)
    extra = ["fused"] if fused else []
    table = Table("rank", *extra, "distance", "norm", "id", "text",
                  title=f"{query!r} in {directory}{' (L2 fused with BM25)' if fused else ''}")
    for h in hits:
        text = h.text if len(h.text) <= width else h.text[: width - 1] + "…"
        score = [f"{h.hybrid_score:.3f}"] if fused else []
        table.add_row(str(h.rank), *score, f"{h.distance:.4f}", f"{h.norm:.3f}", h.id, text)
    console.print(table)


# One layout for indexes: `ragcun index build | info | search`; the top-level `ragcun search` stays as a
# shortcut.
index_app.command("search")(search)
