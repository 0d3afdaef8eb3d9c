"""Documents to index (``ragcun index build``, :meth:`GaussianRetriever.add_file`), from any file ragcun
reads.

One reader per format, shared with the rest of :mod:`ragcun.data`: JSONL through
:func:`ragcun.data.readers.iter_jsonl` with the same field rule as a BEIR corpus
(:func:`~ragcun.data.readers.text_field`, :func:`~ragcun.data.readers.record_id`), TSV through
:func:`ragcun.data.msmarco.iter_tsv_pairs`. Errors are :class:`~ragcun.data.readers.DataFormatError`:
the file and the line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ragcun.data.msmarco import iter_tsv_pairs
from ragcun.data.readers import DataFormatError, iter_jsonl, record_id, regular_file, text_field
from ragcun.paths import dataset_file


def check_metadata(meta: Any, where: str) -> dict | None:
    """One metadata value: a JSON-serialisable dict or None."""
    import json

    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: metadata must be a dict or None, got {type(meta).__name__}")
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: metadata is not JSON-serialisable ({exc})") from exc
    return meta


#: What :func:`read_documents` reads (each optionally ``.gz``): anything else is refused, not guessed at.
DOCUMENT_SUFFIXES = (".jsonl", ".tsv")


def document_file(path: str | os.PathLike) -> Path:
    """The file to read for ``path`` (a BEIR folder means its corpus), checked before any model loads."""
    path = Path(path)
    if path.is_dir():
        if dataset_file(path, "corpus.jsonl").is_file():
            return document_file(dataset_file(path, "corpus.jsonl"))
        raise FileNotFoundError(f"{path} is a folder without corpus.jsonl (expected a document file or a "
                                "BEIR dataset folder)")
    regular_file(path, "document file")  # missing, /dev/null, a FIFO: the readers' one check
    if not path.name.removesuffix(".gz").endswith(DOCUMENT_SUFFIXES):
        raise DataFormatError(path, f"unknown extension {''.join(path.suffixes) or '(none)'!r}: ragcun reads "
                                    "documents from .jsonl or .tsv files, optionally gzipped "
                                    "(.jsonl.gz, .tsv.gz)")
    if path.stat().st_size == 0:
        raise DataFormatError(path, "empty file: no documents")
    return path


def read_documents(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Stream ``{"id", "text", "metadata"}`` records from a file, one line at a time.

    Accepts JSONL with ``id``/``text``/``metadata`` (``title`` optional), a BEIR ``corpus.jsonl``
    (``_id``/``title``/``text``; a BEIR dataset folder works too), a ``.tsv`` of ``id<TAB>text``
    (MS MARCO's collection), each optionally gzipped. As in BEIR, a title is prepended to the text
    (``"title text"``) and also kept in ``metadata["title"]``. A document whose text is empty is an
    error (it could only ever be returned at random), and so is an id seen before, a null id, a lone
    surrogate or a NUL (:mod:`ragcun.data.readers`).
    """
    path = document_file(path)
    first: dict[str, int] = {}  # id -> its line: a duplicate is named with both lines

    def unique(doc_id: str | None, lineno: int) -> None:
        if doc_id is None:
            return
        if doc_id in first:
            raise DataFormatError(path, f"duplicate document id {doc_id!r} (first on line {first[doc_id]})",
                                  lineno)
        first[doc_id] = lineno

    if path.name.removesuffix(".gz").endswith(".tsv"):
        for lineno, doc_id, text in iter_tsv_pairs(path, "text"):
            if not text.strip():
                raise DataFormatError(path, f"document {doc_id!r} has an empty text", lineno)
            unique(doc_id, lineno)
            yield {"id": doc_id, "text": text, "metadata": None}
        return
    for lineno, obj in iter_jsonl(path):
        key = "id" if "id" in obj else "_id"
        doc_id = record_id(path, lineno, obj, key, required=False)
        text = text_field(path, lineno, obj, "text")
        title = text_field(path, lineno, obj, "title", required=False)
        meta = check_metadata(obj.get("metadata"), f"{path}:{lineno}: field 'metadata'")
        if title.strip():
            text = f"{title} {text}"
            meta = {**(meta or {}), "title": title}
        if not text.strip():
            raise DataFormatError(path, f"document {doc_id!r} has an empty text", lineno)
        unique(doc_id, lineno)
        yield {"id": doc_id, "text": text, "metadata": meta or None}


def check_documents_file(path: str | os.PathLike, limit: int | None = None) -> int:
    """Read a document file (its first ``limit`` documents) and return how many there are: every rule of
    :func:`read_documents` (ids unique, texts valid) checked before any model loads, so a bad line 8 million
    lines in fails in a minute, not after hours of encoding."""
    import itertools

    return sum(1 for _ in itertools.islice(read_documents(path), limit))
