"""Evaluation: BEIR metrics with trec_eval semantics, exact chunked search, corpus encoding with a cache,
isotropy diagnostics, RAG metrics and plots.

Import the submodules directly (``from ragcun.evaluation.beir_eval import evaluate_model``); this
package imports nothing heavy so ``import ragcun.evaluation`` stays cheap.
"""

from __future__ import annotations

__all__ = ["beir_eval", "encode", "isotropy", "metrics", "plots", "rag", "search"]
