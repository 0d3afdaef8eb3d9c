"""What training reads: the triplets (any format ``ragcun data triplets`` or the user writes), the
validation set, and the texts the head is initialised on."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragcun.config import ConfigError, positive
from ragcun.evaluation.validation import RetrievalEvaluator

logger = logging.getLogger(__name__)

_NEG_RE = re.compile(r"^negative_(\d+)$")


@dataclass
class DataArguments:
    """A config's ``[data]`` table: the training triplets and the validation set."""

    # `ragcun data triplets` output dir, a save_to_disk dir, or .jsonl/.parquet/.csv
    train_data: str | None = None
    # mini-BEIR dir or BEIR name; default: <train_data>/validation if present
    validation_data: str | None = None
    validation_split: str = "dev"
    validation_max_queries: int | None = None
    validate_during_training: bool = True  # false: no validation (e.g. preflight, quick smoke runs)
    num_negatives: int | None = None  # use at most this many negative_* columns (None: all)
    max_train_samples: int | None = None
    data_dir: str | None = None  # where BEIR names resolve (default: $RAGCUN_DATA_DIR)

    def check(self) -> list[str]:
        return positive(self, "validation_max_queries", "num_negatives", "max_train_samples")


def _resolve_train_path(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """(dataset location, triplets root or None). A triplets root holds ``manifest.json`` and ``train/``."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"training data {p} not found (run `ragcun data triplets ...` first, "
                                "or fix train_data)")
    if p.is_dir() and (p / "train").is_dir():
        return p / "train", p
    if p.is_dir() and (p / "train.jsonl").is_file():  # `ragcun data triplets --format jsonl`
        return p / "train.jsonl", p
    return p, None


def load_train_dataset(path: str | os.PathLike, num_negatives: int | None = None,
                       max_samples: int | None = None, with_ids: bool = False):
    """Load the training triplets and keep only the text columns, in trainer order.

    Accepts a ``ragcun data triplets`` output folder, a ``datasets.save_to_disk`` folder, or a
    .jsonl/.json/.parquet/.csv file. Returns ``(dataset, manifest)``: columns ``query, positive,
    negative_1..K`` (the loss reads them by position). ``with_ids`` keeps ``query_id`` and ``positive_id``
    too (a teacher needs them; ``ragcun data triplets`` writes them).
    """
    import datasets

    loc, root = _resolve_train_path(path)
    if loc.is_dir():
        try:
            ds = datasets.load_from_disk(str(loc))
        except FileNotFoundError as exc:
            raise ConfigError(f"{loc}: not a datasets.save_to_disk folder ({exc})") from None
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise ConfigError(f"{loc}: a DatasetDict without a 'train' split (has {list(ds)})")
            ds = ds["train"]
    else:
        kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet",
                ".csv": "csv"}.get(loc.suffix.lower())
        if kind is None:
            raise ConfigError(f"{loc}: unsupported training file type {loc.suffix!r} "
                              "(use .jsonl, .parquet, .csv)")
        if loc.stat().st_size == 0:
            raise ConfigError(f"{loc}: the training file is empty")
        try:
            ds = datasets.load_dataset(kind, data_files=str(loc), split="train")
        except Exception as exc:  # noqa: BLE001 - datasets raises many types for a malformed file
            raise ConfigError(f"{loc}: cannot be read as {kind} ({str(exc).splitlines()[0][:200]})") from None
    if len(ds) == 0:
        raise ConfigError(f"{loc}: no training rows")
    cols = list(ds.column_names)
    missing = [c for c in ("query", "positive") if c not in cols]
    if missing:
        raise ConfigError(f"{loc}: training data lacks column(s) {missing} (has {cols}); "
                          "expected query, positive, negative_1..K")
    negs = sorted((c for c in cols if _NEG_RE.match(c)),
                  key=lambda c: int(_NEG_RE.match(c).group(1)))  # type: ignore[union-attr]
    if num_negatives is not None:
        if num_negatives > len(negs):
            raise ConfigError(f"{loc}: num_negatives={num_negatives} but the data has {len(negs)} "
                              "negative columns")
        negs = negs[:num_negatives]
    keep = ["query", "positive", *negs]
    if with_ids:
        lacking = [c for c in ("query_id", "positive_id") if c not in cols]
        if lacking:
            raise ConfigError(f"{loc}: a teacher needs the columns query_id and positive_id (lacks "
                              f"{lacking}); `ragcun data triplets` writes them")
    if max_samples is not None and max_samples < len(ds):
        ds = ds.select(range(max_samples))
    ds = ds.select_columns(keep + (["query_id", "positive_id"] if with_ids else []))
    for col in ds.column_names:
        for row, value in enumerate(ds[col]):
            if not isinstance(value, str) or not value.strip():
                what = ("null" if value is None
                        else ("empty" if isinstance(value, str) else type(value).__name__))
                raise ConfigError(f"{loc}: row {row + 1}, column {col!r} is {what}; every training text "
                                  "must be a non-empty string")
    manifest: dict[str, Any] = {"path": str(Path(path).resolve()), "rows": len(ds), "columns": keep,
                                "fingerprint": getattr(ds, "_fingerprint", None)}
    if root is not None and (root / "manifest.json").is_file():
        try:
            manifest["triplets_manifest"] = json.loads((root / "manifest.json").read_text())
        except ValueError:
            logger.warning("%s is not valid JSON; not copied into the summary", root / "manifest.json")
    return ds, manifest


def build_evaluator(cfg: Any, batch_size: int = 64) -> RetrievalEvaluator | None:
    """The validation evaluator: ``validation_data`` if set, else ``<train_data>/validation`` if present."""
    from ragcun.data.beir import available_splits, doc_text, load_beir

    if not cfg.validate_during_training:
        return None
    source: str | None = cfg.validation_data
    split = cfg.validation_split
    if source is None and cfg.train_data:
        _, root = _resolve_train_path(cfg.train_data)
        if root is not None and (root / "validation" / "corpus.jsonl").is_file():
            source = str(root / "validation")
            splits = available_splits(source)
            if split not in splits and splits:
                split = splits[0]
    if source is None:
        return None
    data = load_beir(source, split=split, data_dir=cfg.data_dir)
    qids = sorted(data.queries)
    if cfg.validation_max_queries is not None:
        qids = qids[: cfg.validation_max_queries]
    queries = {q: data.queries[q] for q in qids}
    corpus = {d: doc_text(doc) for d, doc in data.corpus.items()}
    logger.info("validation: %s (%s), %d queries, %d documents", source, split, len(queries), len(corpus))
    return RetrievalEvaluator(corpus, queries, data.qrels, name="val", batch_size=batch_size)


def text_columns(ds: Any) -> list[str]:
    """The columns of a training dataset that hold texts (all but the teacher's ``label``)."""
    return [c for c in ds.column_names if c != "label"]


def column_prompts(model: Any, columns: list[str]) -> dict[str, str]:
    """The model's query prompt for the ``query`` column and its document prompt for the others, for
    models that have them (EmbeddingGemma: "task: search result | query: ", "title: none | text: "), so
    training sees what ``encode_query`` / ``encode_document`` see at evaluation and retrieval. Empty
    for models without prompts (MiniLM, MPNet)."""
    from ragcun.modeling import query_document_prompts

    q, d = query_document_prompts(model)
    out = {c: (q if c == "query" else d) for c in columns}
    return {c: p for c, p in out.items() if p}


def calibration_texts(train_ds, n: int, documents_only: bool = True, prompts: dict[str, str] | None = None
                      ) -> list[str]:
    """The first ``n`` distinct training texts, row by row, as the model sees them (``prompts`` applied):
    the document columns only (the corpus is what is searched and what the isotropy of a model is
    measured on), or every column."""
    prompts = prompts or {}
    seen: dict[str, None] = {}
    cols = [c for c in text_columns(train_ds) if not (documents_only and c == "query")]
    for row in train_ds.select_columns(cols):
        for c in cols:
            seen.setdefault(prompts.get(c, "") + row[c], None)
        if len(seen) >= n:
            break
    return list(seen)[:n]


