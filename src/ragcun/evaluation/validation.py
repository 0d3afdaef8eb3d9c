"""Validation during training: a sentence-transformers evaluator that ranks a small held-out BEIR-style
set by L2 distance (what ragcun serves) and measures how Gaussian its document embeddings are.

The trainer logs its dict (TensorBoard too) and :class:`~ragcun.training.callbacks.BestModelCallback`
keeps the best model by its NDCG@10. Search is :func:`ragcun.encoding.search.search`, metrics are
:func:`ragcun.evaluation.metrics.evaluate_run`, isotropy is
:func:`ragcun.evaluation.isotropy.isotropy_metrics`: the same code as ``ragcun evaluate`` and
``ragcun isotropy``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sentence_transformers.base.evaluation import BaseEvaluator

from ragcun.encoding.corpus import encode_texts

logger = logging.getLogger(__name__)

#: The isotropy numbers a validation logs (all of them are in ``ragcun isotropy``).
ISOTROPY_KEYS = ("sigreg_ratio", "isoscore", "norm_mean")


class RetrievalEvaluator(BaseEvaluator):
    """NDCG@k and Recall@k by L2 distance on a held-out mini-BEIR set, plus isotropy of its documents.

    ``corpus``: doc id → text; ``queries``: query id → text; ``qrels``: query id → {doc id: grade}.
    """

    def __init__(
        self,
        corpus: dict[str, str],
        queries: dict[str, str],
        qrels: dict[str, dict[str, int]],
        name: str = "val",
        k_values: Sequence[int] = (10, 100),
        batch_size: int = 64,
        measure_isotropy: bool = True,
        isotropy_num_slices: int = 256,
        show_progress: bool = False,
    ) -> None:
        super().__init__()
        self.doc_ids = list(corpus)
        self.doc_texts = [corpus[d] for d in self.doc_ids]
        self.query_ids = [q for q in queries if q in qrels]
        self.query_texts = [queries[q] for q in self.query_ids]
        self.qrels = {q: qrels[q] for q in self.query_ids}
        if not self.query_ids or not self.doc_ids:
            raise ValueError(f"validation set {name!r} is empty ({len(self.query_ids)} queries, "
                             f"{len(self.doc_ids)} documents)")
        self.name = name
        self.k_values = tuple(sorted(set(k_values)))
        self.batch_size = batch_size
        self.measure_isotropy = measure_isotropy
        self.isotropy_num_slices = isotropy_num_slices
        self.show_progress = show_progress
        self.primary_metric = "ndcg@10"
        self.greater_is_better = True

    def prompted_texts(self, model: Any) -> list[str]:
        """Every text this evaluator encodes, as ``model`` sees it (its query/document prompt applied): the
        frozen fast path puts them in its feature table."""
        from ragcun.modeling import query_document_prompts

        q, d = query_document_prompts(model)
        return [q + t for t in self.query_texts] + [d + t for t in self.doc_texts]

    def _encode(self, model: Any, texts: list[str], kind: str) -> np.ndarray:
        return encode_texts(model, texts, kind, batch_size=self.batch_size,
                            show_progress_bar=self.show_progress)

    def __call__(self, model: Any, output_path: str | None = None, epoch: int = -1,
                 steps: int = -1) -> dict[str, float]:
        from ragcun.encoding.search import search
        from ragcun.evaluation.isotropy import isotropy_metrics
        from ragcun.evaluation.metrics import evaluate_run

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                q = self._encode(model, self.query_texts, "query")
                d = self._encode(model, self.doc_texts, "document")
        finally:
            model.train(was_training)
        scores, idx = search(q, d, min(max(self.k_values), len(self.doc_ids)), "l2")
        run = {qid: {self.doc_ids[j]: float(s) for j, s in zip(idx[i], scores[i], strict=True) if j >= 0}
               for i, qid in enumerate(self.query_ids)}
        metrics, _ = evaluate_run(self.qrels, run, metrics={"ndcg": self.k_values, "recall": self.k_values})
        if self.measure_isotropy:
            iso = isotropy_metrics(d, num_slices=self.isotropy_num_slices, include_arrays=False,
                                   reference_repeats=1)
            metrics.update({f"isotropy_{k}": float(iso[k]) for k in ISOTROPY_KEYS})
        logger.info("validation at step %s: %s", steps if steps >= 0 else "end",
                    ", ".join(f"{k.replace('isotropy_', '')} {v:.4g}" for k, v in metrics.items()))
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        try:
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        except Exception:  # noqa: BLE001 - the fast path's stand-in model has no card data worth keeping
            pass
        return metrics
