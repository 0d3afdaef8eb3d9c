"""Data for training and evaluation: BEIR datasets, MS MARCO, BM25 hard negatives, Wikipedia pairs.

The BEIR reader's names are re-exported here (``from ragcun.data import load_beir``); the other submodules
(MS MARCO, BM25 mining, triplets, Wikipedia pairs, downloads) are imported only when asked for.
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
