"""A query tower against fixed document embeddings: InfoNCE over the whole corpus plus a teacher's ranking.

When the documents are encoded once by a model that stays fixed (an isotropic frozen arm, say), the corpus
keeps every property it had (its isotropy is measured once and holds), and only the query side learns.
Because the documents do not move, every one of them can be a negative in every step at the cost of one
(B, N) matrix product: no in-batch sampling, no stale queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ragcun.losses.contrastive import pairwise_distance


def _padded(rows: Sequence[Sequence[int]], values: Sequence[Sequence[float]] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Ragged per-query lists as (Q, L) tensors plus their (Q, L) mask (padding: row 0, value 0)."""
    width = max((len(r) for r in rows), default=0)
    index = torch.zeros(len(rows), max(width, 1), dtype=torch.long)
    mask = torch.zeros(len(rows), max(width, 1), dtype=torch.bool)
    vals = torch.zeros(len(rows), max(width, 1)) if values is not None else None
    for i, r in enumerate(rows):
        index[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = True
        if vals is not None and values is not None:
            vals[i, : len(r)] = torch.as_tensor(list(values[i]), dtype=torch.float32)
    return index, vals, mask


class FixedCorpusLoss(nn.Module):
    """Train the query side of a retriever against a fixed table of document embeddings.

    For a batch of training queries (the ``query`` column; the ``label`` column is each query's row in the
    tables below) the student's score of every document is ``s(q, d) = −‖q − d‖²/τ``, the quantity the
    retriever sorts by. The loss is

    ``λ_contrastive · InfoNCE + λ_distill · KL``

    - **InfoNCE over the corpus**: ``−mean over q's judged positives p of log softmax_d s(q, d)[p]``, the
      softmax running over *every* document of the table (multi-positive, as each query's qrels allow);
    - **listwise KL to a teacher**: over q's candidates (a teacher's top documents and its positives),
      ``KL(softmax(t / T) ‖ softmax(s))`` where ``t`` are the teacher's scores (a hybrid of BM25 and a dense
      model: :mod:`ragcun.training.teacher`), averaged over the batch's queries that have candidates.

    Args:
        model: the query encoder being trained (a sentence-transformers model).
        documents: (N, D) document embeddings, fixed; kept as a non-persistent buffer.
        positives: per query row, the table rows of its judged documents (at least one each).
        candidates: per query row, the teacher's candidate rows (empty lists, or None: no distillation).
        teacher_scores: the teacher's score of each candidate, in the same order.
        temperature: τ of the student's score. At 128 dimensions distances between N(0, I) samples are
            about 2 · 128 with a spread of tens, so τ ≈ 20 keeps the softmax from saturating.
        teacher_temperature: T of the teacher's softmax.
        lambda_contrastive, lambda_distill: the two terms' weights.

    Inputs: one text column (the queries) and ``label`` (the query's row, an int).

    Example::

        loss = FixedCorpusLoss(query_model, doc_emb, positives, candidates, scores, temperature=20.0)
        trainer = SentenceTransformerTrainer(model=query_model, train_dataset=ds, loss=loss)
    """

    def __init__(self, model: nn.Module, documents: torch.Tensor | Any, positives: Sequence[Sequence[int]],
                 candidates: Sequence[Sequence[int]] | None = None,
                 teacher_scores: Sequence[Sequence[float]] | None = None, temperature: float = 20.0,
                 teacher_temperature: float = 1.0, lambda_contrastive: float = 1.0,
                 lambda_distill: float = 1.0) -> None:
        super().__init__()
        for name, v in (("temperature", temperature), ("teacher_temperature", teacher_temperature)):
            if not 0 < v < float("inf"):
                raise ValueError(f"{name} must be a positive finite number, got {v}")
        for name, v in (("lambda_contrastive", lambda_contrastive), ("lambda_distill", lambda_distill)):
            if not 0 <= v < float("inf"):
                raise ValueError(f"{name} must be a non-negative finite number, got {v}")
        docs = torch.as_tensor(documents, dtype=torch.float32)
        if docs.dim() != 2 or not len(docs):
            raise ValueError(f"documents must be a non-empty (N, D) table, got shape {tuple(docs.shape)}")
        if not torch.isfinite(docs).all():
            raise ValueError("documents: the table holds NaN or inf")
        n = docs.shape[0]
        if any(not p for p in positives):
            raise ValueError("positives: every query needs at least one judged document")
        candidates = candidates or [[] for _ in positives]
        teacher_scores = teacher_scores or [[] for _ in positives]
        if not len(positives) == len(candidates) == len(teacher_scores):
            raise ValueError(f"{len(positives)} queries' positives, {len(candidates)} candidate lists and "
                             f"{len(teacher_scores)} score lists")
        for i, (c, s) in enumerate(zip(candidates, teacher_scores, strict=True)):
            if len(c) != len(s):
                raise ValueError(f"query row {i}: {len(c)} candidates but {len(s)} teacher scores")
        if any(not 0 <= r < n for rows in (*positives, *candidates) for r in rows):
            raise ValueError(f"a positive or candidate row is outside the {n}-document table")
        self.model = model
        self.temperature, self.teacher_temperature = float(temperature), float(teacher_temperature)
        self.lambda_contrastive, self.lambda_distill = float(lambda_contrastive), float(lambda_distill)
        self.register_buffer("documents", docs, persistent=False)
        pos, _, pos_mask = _padded(positives)
        cand, scores, cand_mask = _padded(candidates, teacher_scores)
        if scores is not None and not torch.isfinite(scores).all():
            raise ValueError("teacher_scores: NaN or inf")
        for name, t in (("pos", pos), ("pos_mask", pos_mask), ("cand", cand), ("cand_scores", scores),
                        ("cand_mask", cand_mask)):
            self.register_buffer(name, t, persistent=False)
        self.last_stats: dict[str, float] = {}

    def scores(self, queries: torch.Tensor) -> torch.Tensor:
        """(B, N) student scores ``−‖q − d‖²/τ`` of each query against every document."""
        return -pairwise_distance(queries.float(), self.documents) / self.temperature

    def forward(self, sentence_features: Iterable[dict[str, torch.Tensor]],
                labels: torch.Tensor | None = None) -> torch.Tensor:
        features = list(sentence_features)
        if len(features) != 1:
            raise ValueError(f"FixedCorpusLoss takes one text column (the queries), got {len(features)}")
        if labels is None:
            raise ValueError("FixedCorpusLoss needs each query's row as its label (a 'label' column of ints)")
        queries = self.model(features[0])["sentence_embedding"]
        return self.compute_loss_from_embeddings(queries, labels)

    def compute_loss_from_embeddings(self, queries: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        rows = labels.long().view(-1).to(self.pos.device)
        logp = torch.log_softmax(self.scores(queries), dim=1)
        pos, mask = self.pos[rows], self.pos_mask[rows]
        nce = -(logp.gather(1, pos) * mask).sum(1) / mask.sum(1)
        loss = self.lambda_contrastive * nce.mean()
        stats = {"infonce": float(nce.mean().detach())}
        if self.lambda_distill and bool(self.cand_mask[rows].any()):
            cand, cmask = self.cand[rows], self.cand_mask[rows]
            neg = torch.finfo(logp.dtype).min
            teacher = self.cand_scores[rows] / self.teacher_temperature
            t = torch.log_softmax(teacher.masked_fill(~cmask, neg), 1)
            s = torch.log_softmax(logp.gather(1, cand).masked_fill(~cmask, neg), 1)
            has = cmask.any(1)  # queries without candidates have no teacher term
            kl = (t.exp() * (t - s)).masked_fill(~cmask, 0.0).sum(1)[has]
            loss = loss + self.lambda_distill * kl.mean()
            stats["distill"] = float(kl.mean().detach())
        self.last_stats = stats
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "teacher_temperature": self.teacher_temperature,
                "lambda_contrastive": self.lambda_contrastive, "lambda_distill": self.lambda_distill,
                "documents": int(self.documents.shape[0])}
