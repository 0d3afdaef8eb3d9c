"""Readers for the official MS MARCO passage-ranking files.

``collection.tsv``   ``pid<TAB>passage`` (8.8M lines)
``queries.*.tsv``    ``qid<TAB>query``
``qrels.*.tsv``      TREC format ``qid 0 pid relevance`` (tab-separated; TREC DL files use spaces)

Each reader streams its file and reports problems with file name and line number.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from ragcun.data.readers import DataFormatError, iter_lines, regular_file, text_problem

logger = logging.getLogger(__name__)

COLLECTION = "collection.tsv"


def iter_tsv_pairs(path: str | os.PathLike, what: str = "row") -> Iterator[tuple[int, str, str]]:
    """Yield (line number, id, text) from a two-column ``id<TAB>text`` file."""
    path = Path(path)
    regular_file(path, "MS MARCO file")
    for lineno, line in iter_lines(path):
        if not line:
            continue
        _id, sep, text = line.partition("\t")
        if not sep:
            raise DataFormatError(path, f"expected `id<TAB>{what}`, found no tab: {line[:80]!r}", lineno)
        _id = _id.strip()
        if not _id:
            raise DataFormatError(path, "empty id", lineno)
        problem = text_problem(line)
        if problem:
            raise DataFormatError(path, f"the line {problem}", lineno)
        yield lineno, _id, text.strip()


def load_collection(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Read ``collection.tsv`` into parallel (pids, passages) lists; duplicate pids are an error.

    Lists, not a dict of dicts: the full collection (8.8M passages) then fits in about 5 GB.
    """
    pids: list[str] = []
    texts: list[str] = []
    seen: set[str] = set()
    for lineno, pid, text in iter_tsv_pairs(path, "passage"):
        if pid in seen:
            raise DataFormatError(path, f"duplicate passage id {pid!r}", lineno)
        seen.add(pid)
        pids.append(pid)
        texts.append(text)
    if not pids:
        raise DataFormatError(path, "collection is empty")
    logger.info("read %d passages from %s", len(pids), path)
    return pids, texts


def load_queries_tsv(path: str | os.PathLike) -> dict[str, str]:
    """Read an MS MARCO ``queries.*.tsv``: qid -> text."""
    queries: dict[str, str] = {}
    for lineno, qid, text in iter_tsv_pairs(path, "query"):
        if qid in queries:
            raise DataFormatError(path, f"duplicate query id {qid!r}", lineno)
        queries[qid] = text
    return queries


def load_qrels_trec(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Read TREC-format qrels (``qid iter docid rel``, tabs or spaces): qid -> {docid: rel}."""
    path = Path(path)
    regular_file(path, "qrels file")
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in iter_lines(path):
        line = line.strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 4:
            raise DataFormatError(
                path, f"expected 4 fields (qid, iteration, docid, relevance), got {len(fields)}: "
                f"{line[:80]!r}", lineno
            )
        qid, _, did, rel = fields
        try:
            grade = int(rel)
        except ValueError:
            raise DataFormatError(path, f"relevance must be an integer, got {rel!r}", lineno) from None
        qrels.setdefault(qid, {})[did] = grade
    return qrels


def is_msmarco_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / COLLECTION).is_file() and not (p / "corpus.jsonl").exists()


def msmarco_split_files(path: str | os.PathLike, split: str = "train") -> tuple[Path, Path, Path]:
    """(collection, queries, qrels) of ``split`` (``train``, ``dev``, or e.g. ``dev.small``)."""
    p = Path(path)
    files = (p / COLLECTION, p / f"queries.{split}.tsv", p / f"qrels.{split}.tsv")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"MS MARCO split {split!r}: missing {', '.join(missing)}")
    return files
