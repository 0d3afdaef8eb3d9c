"""BEIR datasets in the official format: loading, validation and statistics.

The official layout is::

    <name>/corpus.jsonl        {"_id", "title", "text", "metadata"} per line
    <name>/queries.jsonl       {"_id", "text", "metadata"} per line, ALL splits together
    <name>/qrels/<split>.tsv   header ``query-id<TAB>corpus-id<TAB>score``, CRLF line endings

We read these files ourselves (rather than through ``beir.datasets.data_loader``) so that every
problem in a file is reported with the file name and line number, and so that the loader does
not pull in the ``beir`` package and its dependencies. The result is the same dictionaries that
BEIR's ``GenericDataLoader`` returns, so numbers are comparable with the BEIR literature.
"""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragcun.data.readers import (
    DataFormatError,
    iter_jsonl,
    iter_lines,
    record_id,
    regular_file,
    text_field,
    write_jsonl,
)
from ragcun.paths import dataset_file, find_beir_dataset, missing

logger = logging.getLogger(__name__)

# The 18 datasets of the BEIR benchmark (Thakur et al., 2021), in the paper's order. MS MARCO is
# BEIR's in-domain training set and is not among the 18; it is downloadable by name as well.
BEIR_DATASETS: tuple[str, ...] = (
    "trec-covid",
    "bioasq",
    "nfcorpus",
    "nq",
    "hotpotqa",
    "fiqa",
    "signal1m",
    "trec-news",
    "robust04",
    "arguana",
    "webis-touche2020",
    "cqadupstack",
    "quora",
    "dbpedia-entity",
    "scidocs",
    "fever",
    "climate-fever",
    "scifact",
)

DATASET_GROUPS: dict[str, list[str]] = {
    "quick": ["scifact", "nfcorpus"],
    "standard": ["scifact", "nfcorpus", "arguana", "fiqa", "trec-covid"],
    "all": list(BEIR_DATASETS),
}

SPLITS = ("train", "dev", "test")


def expand_dataset_names(names: Iterable[str]) -> list[str]:
    """Expand group names (``quick``, ``standard``, ``all``) and drop duplicates, keeping order.

    Names that are neither a group nor a known dataset are kept as they are (a local dataset or a
    cqadupstack sub-forum such as ``cqadupstack/android`` is a valid name).
    """
    out: list[str] = []
    for name in names:
        for part in str(name).split(","):
            part = part.strip()
            if not part:
                continue
            expanded = DATASET_GROUPS.get(part, [part])
            for n in expanded:
                if n not in out:
                    out.append(n)
    return out


def doc_text(doc: dict[str, str]) -> str:
    """The text used to encode a document: ``title + " " + text`` stripped, as BEIR's
    ``DenseRetrievalExactSearch`` does, so scores are comparable with published numbers."""
    title = (doc.get("title") or "").strip()
    text = doc.get("text") or ""
    if title:
        return (title + " " + text).strip()
    return text.strip()


@dataclass
class BeirData:
    """One split of a BEIR dataset. Unpacks as ``corpus, queries, qrels = load_beir(...)``."""

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    name: str
    path: Path
    split: str = "test"
    missing_docs: int = 0  # qrels pairs whose document is not in the corpus (warned, not fatal)
    extra: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.corpus, self.queries, self.qrels))

    def __repr__(self) -> str:  # the dicts are huge: never print them
        return (
            f"BeirData(name={self.name!r}, split={self.split!r}, documents={len(self.corpus)}, "
            f"queries={len(self.queries)}, qrels={sum(len(v) for v in self.qrels.values())}, "
            f"path={str(self.path)!r})"
        )


def load_corpus(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """Read a BEIR ``corpus.jsonl``: doc id -> {"title", "text"}.

    Errors (naming file and line): malformed JSON, missing ``_id``, missing ``text``, duplicate ids.
    """
    path = Path(path)
    regular_file(path, "corpus file")
    corpus: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        _id = record_id(path, lineno, obj)
        text, title = (text_field(path, lineno, obj, "text"),
                       text_field(path, lineno, obj, "title", required=False))
        if _id in corpus:
            raise DataFormatError(path, f"duplicate document id {_id!r} (first seen on line "
                                        f"{first_line[_id]})", lineno)
        first_line[_id] = lineno
        corpus[_id] = {"title": title, "text": text}
    if not corpus:
        raise DataFormatError(path, "corpus is empty")
    if not any((d["title"] + d["text"]).strip() for d in corpus.values()):
        raise DataFormatError(path, f"every one of the {len(corpus)} documents has an empty title and text")
    return corpus


def load_queries(path: str | os.PathLike) -> dict[str, str]:
    """Read a BEIR ``queries.jsonl``: query id -> text (all splits)."""
    path = Path(path)
    regular_file(path, "queries file")
    queries: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        _id = record_id(path, lineno, obj)
        text = text_field(path, lineno, obj, "text")
        if _id in queries:
            raise DataFormatError(path, f"duplicate query id {_id!r} (first seen on line {first_line[_id]})",
                                  lineno)
        first_line[_id] = lineno
        queries[_id] = text
    return queries


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def load_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (``query-id corpus-id score``): query id -> {doc id: grade}.

    Handles the official CRLF line endings and the header line. Errors (naming file and line):
    a row that is not three tab-separated fields, a non-integer score, and a pair listed twice
    with different grades.
    """
    path = Path(path)
    regular_file(path, "qrels file")
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise DataFormatError(
                path,
                f"expected 3 tab-separated fields (query-id, corpus-id, score), got {len(fields)}: "
                f"{line[:80]!r}",
                lineno,
            )
        qid, did, score = (f.strip() for f in fields)
        if lineno == 1 and not _is_int(score):
            continue  # the official header: query-id  corpus-id  score
        if not _is_int(score):
            raise DataFormatError(path, f"score must be an integer, got {score!r}", lineno)
        if not qid or not did:
            raise DataFormatError(path, "empty query-id or corpus-id", lineno)
        grade = int(score)
        prev = qrels.setdefault(qid, {}).get(did)
        if prev is not None and prev != grade:
            raise DataFormatError(
                path, f"pair ({qid!r}, {did!r}) listed twice with different scores ({prev} and {grade})",
                lineno
            )
        qrels[qid][did] = grade
    if qrels and not any(g > 0 for docs in qrels.values() for g in docs.values()):
        raise DataFormatError(path, "no pair has a positive grade: nothing is relevant, every metric would "
                                    "be 0")
    return qrels


def available_splits(path: str | os.PathLike) -> list[str]:
    """The splits that have a qrels file, in train/dev/test order then alphabetical."""
    qdir = Path(path) / "qrels"
    if not qdir.is_dir():
        return []
    found = sorted(p.stem for p in qdir.glob("*.tsv") if p.is_file())
    return [s for s in SPLITS if s in found] + [s for s in found if s not in SPLITS]


def resolve_dataset(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of a dataset given by name (searched in the data directory) or by path."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        if dataset_file(p, "corpus.jsonl").is_file():
            return p
        raise FileNotFoundError(f"{p} is not a BEIR dataset folder (no corpus.jsonl or corpus.jsonl.gz)")
    if p.is_symlink():
        raise missing(p, "dataset")
    return find_beir_dataset(str(name_or_path), data_dir)


def find_split(name_or_path: str, split: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The dataset's folder, after checking that it exists and has ``split`` (no file is read)."""
    path = resolve_dataset(name_or_path, data_dir)
    qrels_path = path / "qrels" / f"{split}.tsv"
    if qrels_path.exists() and not qrels_path.is_file():
        raise FileNotFoundError(f"{qrels_path}: not a regular file (a folder?); the qrels of split {split!r} "
                                "are a TSV file")
    if not qrels_path.is_file():
        name = path.name if Path(name_or_path).expanduser().is_dir() else str(name_or_path)
        have = ", ".join(available_splits(path)) or "none"
        raise FileNotFoundError(f"{name}: no qrels for split {split!r} ({qrels_path} missing; "
                                f"splits available: {have})")
    return path


def load_beir(name_or_path: str, split: str = "test", data_dir: str | None = None) -> BeirData:
    """Load one split of a BEIR dataset by name (looked up in the data directory) or folder path.

    Returns the whole corpus, the queries of ``split`` that have qrels, and the qrels (all grades,
    including 0, as BEIR evaluates them). Qrels pointing to documents missing from the corpus are
    counted in ``missing_docs`` and logged as a warning (the official ArguAna release has five).
    """
    path = find_split(name_or_path, split, data_dir)
    name = path.name if Path(name_or_path).expanduser().is_dir() else str(name_or_path)
    qrels_path = path / "qrels" / f"{split}.tsv"
    logger.info("loading BEIR %s (%s) from %s", name, split, path)
    corpus = load_corpus(dataset_file(path, "corpus.jsonl"))
    all_queries = load_queries(dataset_file(path, "queries.jsonl"))
    qrels = load_qrels(qrels_path)

    missing_q = [q for q in qrels if q not in all_queries]
    for q in missing_q:
        del qrels[q]
    if missing_q and not qrels:
        raise DataFormatError(qrels_path,
                              f"none of its {len(missing_q)} query ids is in {path / 'queries.jsonl'}")
    pairs = sum(len(rel) for rel in qrels.values())
    missing_docs = sum(1 for rel in qrels.values() for d in rel if d not in corpus)
    if not any(g > 0 and d in corpus for rel in qrels.values() for d, g in rel.items()):
        raise DataFormatError(qrels_path,
                              f"none of the documents judged relevant is in {path / 'corpus.jsonl'} "
                              "(a wrong corpus, or ids from another column?)")
    if missing_q or missing_docs:  # one line saying what was dropped or cannot be retrieved
        parts = []
        if missing_q:
            parts.append(f"{len(missing_q)} of {len(missing_q) + len(qrels)} judged queries are not in "
                         f"queries.jsonl (dropped, e.g. {missing_q[:3]})")
        if missing_docs:
            parts.append(f"{missing_docs} of {pairs} qrels pairs point to documents missing from the corpus "
                         "(kept as unretrievable, as BEIR scores them)")
        logger.warning("%s: %s: %s", name, qrels_path, "; ".join(parts))
    queries = {q: all_queries[q] for q in qrels}
    return BeirData(
        corpus=corpus, queries=queries, qrels=qrels, name=name, path=path, split=split,
        missing_docs=missing_docs
    )


def write_beir(path: str | os.PathLike, corpus: Iterable[dict[str, Any]], queries: Iterable[dict[str, Any]],
               qrels: dict[str, dict[str, dict[str, int]]]) -> Path:
    """Write a dataset in the official layout :func:`load_beir` reads (``corpus.jsonl``, ``queries.jsonl``,
    ``qrels/<split>.tsv`` with its header and CRLF line endings): the one BEIR writer, for slices of real
    datasets and held-out validation sets."""
    path = Path(path)
    (path / "qrels").mkdir(parents=True, exist_ok=True)
    write_jsonl(path / "corpus.jsonl", corpus)
    write_jsonl(path / "queries.jsonl", queries)
    for split, rows in qrels.items():
        lines = "".join(f"{q}\t{d}\t{g}\r\n" for q, docs in rows.items() for d, g in docs.items())
        (path / "qrels" / f"{split}.tsv").write_bytes(("query-id\tcorpus-id\tscore\r\n" + lines).encode())
    return path


def _length_stats(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {"mean": 0.0, "median": 0.0, "min": 0, "max": 0}
    return {
        "mean": round(statistics.fmean(lengths), 2),
        "median": float(statistics.median(lengths)),
        "min": min(lengths),
        "max": max(lengths),
    }


def dataset_stats(name_or_path: str, data_dir: str | None = None) -> dict[str, Any]:
    """Counts and word-length statistics of a BEIR dataset, for all of its splits.

    ``{"name", "path", "documents", "missing_docs", "doc_words": {...}, "splits": {split: {"queries",
    "qrels", "relevant", "qrels_per_query", "query_words": {...}, "missing_docs"}}}``
    """
    path = resolve_dataset(name_or_path, data_dir)
    corpus = load_corpus(dataset_file(path, "corpus.jsonl"))
    all_queries = load_queries(dataset_file(path, "queries.jsonl"))
    out: dict[str, Any] = {
        "name": path.name if Path(name_or_path).expanduser().is_dir() else str(name_or_path),
        "path": str(path),
        "documents": len(corpus),
        "doc_words": _length_stats([len(doc_text(d).split()) for d in corpus.values()]),
        "queries_total": len(all_queries),
        "splits": {},
    }
    for split in available_splits(path):
        qrels = load_qrels(path / "qrels" / f"{split}.tsv")
        qids = [q for q in qrels if q in all_queries]
        n_pairs = sum(len(qrels[q]) for q in qids)
        out["splits"][split] = {
            "queries": len(qids),
            "qrels": n_pairs,
            "relevant": sum(1 for q in qids for g in qrels[q].values() if g > 0),
            "qrels_per_query": round(n_pairs / len(qids), 2) if qids else 0.0,
            "query_words": _length_stats([len(all_queries[q].split()) for q in qids]),
            "missing_docs": sum(1 for q in qids for d in qrels[q] if d not in corpus),
            "missing_queries": len(qrels) - len(qids),
        }
    return out
