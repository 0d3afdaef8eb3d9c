"""Evaluation: BEIR metrics with trec_eval semantics, isotropy diagnostics, RAG metrics and plots, on top of
:mod:`ragcun.encoding` (models, corpus encoding with its cache, exact search).

Import the submodules directly (``from ragcun.evaluation.beir_eval import evaluate_model``); this
package imports nothing heavy so ``import ragcun.evaluation`` stays cheap.
"""

from __future__ import annotations

__all__ = ["beir_eval", "isotropy", "metrics", "plots", "rag", "validation"]
