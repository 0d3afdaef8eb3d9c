"""Data for training and evaluation: BEIR datasets, MS MARCO, BM25 hard negatives, Wikipedia pairs.

Import the submodules directly (``from ragcun.data.beir import load_beir``); this package does not
import them eagerly so that ``import ragcun.data`` stays cheap.
"""

from __future__ import annotations

from ragcun.data.beir import (
    BEIR_DATASETS,
    DATASET_GROUPS,
    BeirData,
    DataFormatError,
    doc_text,
    expand_dataset_names,
    load_beir,
    load_corpus,
    load_qrels,
    load_queries,
)

__all__ = [
    "BEIR_DATASETS",
    "DATASET_GROUPS",
    "BeirData",
    "DataFormatError",
    "doc_text",
    "expand_dataset_names",
    "load_beir",
    "load_corpus",
    "load_qrels",
    "load_queries",
]
