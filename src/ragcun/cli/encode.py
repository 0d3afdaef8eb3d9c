"""``ragcun encode``: a document or query file to vectors on disk, ids beside them (.npy + .ids.json, or
Parquet)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from ragcun.cli.app import (
    USER_ERRORS,
    app,
    batch_size_option,
    check_bounds,
    console,
    data_dir_option,
    device_option,
    docs_option,
    fail,
    max_seq_length_option,
    precision_option,
    runtime_option,
)
from ragcun.files import atomic_files, atomic_path
from ragcun.paths import documents_source
from ragcun.progress import DocProgress

logger = logging.getLogger(__name__)
FORMATS = (".npy", ".parquet")


def _write(out: Path, ids: list[str], vectors, norms) -> None:
    """``.npy`` (float32 matrix) with ``<stem>.ids.json`` beside it, or one Parquet table (id, vector,
    norm)."""
    import numpy as np


    if out.suffix == ".npy":  # published together: never a matrix beside another run's ids
        with atomic_files(out, out.with_suffix(".ids.json")) as (tmp_vectors, tmp_ids):
            with open(tmp_vectors, "wb") as fh:
                np.save(fh, vectors)
            tmp_ids.write_text(json.dumps(ids, ensure_ascii=False) + "\n", encoding="utf-8")
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    table = pa.table({"id": pa.array(ids, type=pa.string()),
                      "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
                      "norm": pa.array(norms, type=pa.float32())})
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)


@app.command()
def encode(
    model: str = typer.Option(..., "--model", "-m", help="Model: a local directory, an alias or a Hub id."),
    docs: str = docs_option(),
    data_dir: str = data_dir_option(),
    out: Path = typer.Option(..., "--out", "-o", help="x.npy (ids in x.ids.json beside it) or x.parquet "
                                                      "(id, vector, norm)."),
    kind: str = typer.Option("document", "--kind", help="document | query: which prompt and encode call."),
    batch_size: int = batch_size_option(),
    backend: str = runtime_option(),
    precision: str = precision_option(),
    max_seq_length: int = max_seq_length_option(),
    limit: int = typer.Option(None, "--limit", help="Encode only the first N texts."),
    device: str = device_option(),
) -> None:
    """Encode texts to vectors (raw, never normalised: the norm is kept), with their ids."""
    import itertools

    import numpy as np

    from ragcun.data.documents import document_file, read_documents
    from ragcun.encoding.corpus import encode_texts
    from ragcun.encoding.models import MAX_BATCH_SIZE, check_batch_size, load_model
    from ragcun.runtime import resolve_runtime, runtime_of

    check_bounds(batch_size=(batch_size, 1, MAX_BATCH_SIZE), max_seq_length=(max_seq_length, 1, None),
                 limit=(limit, 1, None))
    if kind not in ("document", "query"):
        raise fail(f"--kind must be document or query, got {kind!r}")
    if out.suffix not in FORMATS:
        raise fail(f"--out {out}: the extension must be .npy or .parquet")
    if out.exists() and out.is_dir():
        raise fail(f"--out {out} is a folder; give a file name")

    try:
        docs = documents_source(docs, data_dir)
    except USER_ERRORS as exc:
        raise fail(f"--docs {exc}") from None
    try:
        document_file(docs)
        records = read_documents(docs)
        records = list(itertools.islice(records, limit) if limit else records)
        if not records:
            raise ValueError(f"{docs}: no texts found")
        ids = [r["id"] if r["id"] is not None else str(i) for i, r in enumerate(records)]
        given = {r["id"] for r in records if r["id"] is not None}
        clash = next((i for i, r in zip(ids, records, strict=True) if r["id"] is None and i in given), None)
        if clash is not None:  # a generated id (the row number) would equal a given one
            raise ValueError(f"{docs}: a text without an id would get id {clash!r} (its row), which another "
                             "text has; give every text an id")
        runtime = resolve_runtime(backend, precision, device)
        batch = check_batch_size(batch_size, device)
        loaded, name = load_model(model, device, max_seq_length, runtime,
                                  calibration=[r["text"] for r in records])
        logger.info("encoding %d %ss from %s with %s (%s, batch %d)", len(records), kind, docs, name,
                    runtime_of(loaded).tag, batch)
        with DocProgress(len(records), f"encoding {kind}s", unit=f"{kind}s", logger=logger) as progress, \
                progress.track(loaded):
            vectors = encode_texts(loaded, [r["text"] for r in records], kind, batch)
        if not np.isfinite(vectors).all():
            raise ValueError(f"{name} produced NaN or inf for some texts of {docs}")
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1).astype(np.float32)
        _write(out, ids, vectors, norms)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    extra = f" (ids: {out.with_suffix('.ids.json')})" if out.suffix == ".npy" else ""
    console.print(f"[green]encoded[/] {len(ids)} texts → {out}{extra}: "
                  f"{vectors.shape[0]} × {vectors.shape[1]}, mean norm {float(norms.mean()):.3f}")
