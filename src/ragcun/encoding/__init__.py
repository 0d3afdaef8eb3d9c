"""Encoding a set of texts with a model under given settings: the layer under evaluation and retrieval.

* :mod:`ragcun.encoding.models` — the one model loader (:func:`~ragcun.encoding.models.load_model`; the
  retriever's :func:`~ragcun.encoding.models.load_for_index` adds the names an index manifest needs), the one
  place that sets and checks ``max_seq_length`` and the batch size.
* :mod:`ragcun.encoding.corpus` — :func:`~ragcun.encoding.corpus.encode_texts`, corpus encoding in chunks
  through the cache (one pass shared by models with the same body).
* :mod:`ragcun.encoding.cache` — the on-disk embedding cache: its key, its folder and chunk layout,
  checksummed chunks.
* :mod:`ragcun.encoding.search` — exact chunked top-k search (L2, cosine, dot), float64-rescored.

Evaluation and retrieval both stand on this package and never import each other (an import-linter contract).
Import the submodules directly; this package imports nothing heavy.
"""

from __future__ import annotations

__all__ = ["cache", "corpus", "models", "search"]
