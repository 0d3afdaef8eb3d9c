"""Distillation on Euclidean scores: a teacher's scores over each query's candidates as the training signal.

A teacher (BM25 fused with the base model, a larger bi-encoder, a cross-encoder) scores each training query
against a few candidate documents; the Gaussian student is taught to rank them as the teacher does, with
its own score ``s(q, d) = −d(q, d)/τ`` (squared or plain L2 distance, the quantity its retriever sorts by).
Two losses, as sentence-transformers has them for dot and cosine scores (``DistillKLDivLoss``,
``MarginMSELoss``), here on the Euclidean score and taking the *same* labels (the teacher's score for every
candidate column), so one dataset serves both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

StudentScore = Literal["squared", "l2", "cos"]


def student_scores(queries: torch.Tensor, candidates: list[torch.Tensor], score: StudentScore = "squared",
                   temperature: float = 1.0) -> torch.Tensor:
    """(B, N) scores of each query against its own N candidate columns: ``−‖q − d‖²/τ``, ``−‖q − d‖/τ`` or
    ``cos(q, d)/τ``."""
    docs = torch.stack([c.float() for c in candidates], dim=1)  # (B, N, D)
    q = queries.float()[:, None, :]
    if score == "cos":
        s = F.cosine_similarity(q, docs, dim=-1)
    else:
        sq = (q - docs).square().sum(-1)
        s = -(sq if score == "squared" else torch.sqrt(sq + 1e-12))
    return s / temperature


def _check_labels(labels: torch.Tensor | None, batch: int, n: int, name: str) -> torch.Tensor:
    if labels is None:
        raise ValueError(f"{name} needs the teacher's scores as labels (a 'label' column of {n} floats)")
    if labels.dim() != 2 or labels.shape != (batch, n):
        raise ValueError(f"{name} expects teacher scores of shape (batch, candidates) = ({batch}, {n}), got "
                         f"{tuple(labels.shape)}")
    if not torch.isfinite(labels).all():
        raise ValueError(f"{name}: the teacher scores hold NaN or inf")
    return labels.detach().float()


class _TeacherScoreLoss(nn.Module):
    """What both distillation losses share: the student's score, the temperatures, the column and label
    checks; a subclass says how student and teacher scores (B, N) are compared (:meth:`compare`)."""

    min_columns = 3

    def __init__(self, model: nn.Module | None = None, temperature: float = 5.0,
                 teacher_temperature: float = 1.0, score: StudentScore = "squared") -> None:
        super().__init__()
        for name, v in (("temperature", temperature), ("teacher_temperature", teacher_temperature)):
            if not 0 < v < float("inf"):
                raise ValueError(f"{name} must be a positive finite number, got {v}")
        self.model = model
        self.temperature = float(temperature)
        self.teacher_temperature = float(teacher_temperature)
        self.score: StudentScore = score

    def forward(self, sentence_features: Iterable[dict[str, torch.Tensor]],
                labels: torch.Tensor | None) -> torch.Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[torch.Tensor],
                                     labels: torch.Tensor | None) -> torch.Tensor:
        if len(embeddings) < self.min_columns:
            raise ValueError(f"{type(self).__name__} needs (query, candidate_1, candidate_2, ...) columns: "
                             f"one candidate teaches nothing (got {len(embeddings)} columns)")
        q, cands = embeddings[0], list(embeddings[1:])
        t = _check_labels(labels, q.shape[0], len(cands), type(self).__name__) / self.teacher_temperature
        return self.compare(student_scores(q, cands, self.score, self.temperature), t)

    def compare(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "teacher_temperature": self.teacher_temperature,
                "score": self.score}


class EuclideanDistillKLLoss(_TeacherScoreLoss):
    """Listwise KL divergence from the teacher's softmax over the candidates to the student's.

    For each query with candidates ``d_1 … d_N`` (inputs ``(query, candidate_1, …, candidate_N)``, labels
    the teacher's N scores ``t``)::

        loss = KL( softmax(t / T) ‖ softmax(s) ),   s_j = −‖q − d_j‖² / τ

    averaged over the batch (``batchmean``). The student's temperature τ is the one its contrastive loss
    uses (squared distances grow with the dimension: 5 suits 128-d); the teacher's T sets how much of its
    ranking below the top is taught (z-scored hybrid scores spread over about 6 units across a top 8: T = 2
    keeps the lower candidates in the target).

    It equals sentence-transformers' ``DistillKLDivLoss(model, similarity_fct=pairwise_cos_sim,
    student_temperature=τ, teacher_temperature=T)`` divided by τ² when ``score="cos"`` (tested); that loss
    multiplies by τ² (Hinton's correction for a shared temperature), this one leaves the scale to its weight.

    Args:
        model: the student (a SentenceTransformer; its embeddings are not normalised).
        temperature: τ, the student's.
        teacher_temperature: T, the teacher's.
        score: ``"squared"`` (default), ``"l2"`` or ``"cos"``.

    Reference: Lin, Yang and Lin, *Distilling Dense Representations for Ranking using Tightly-Coupled
    Teachers* (2020), arXiv 2010.11386.
    """

    def compare(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(student, dim=1), F.softmax(teacher, dim=1), reduction="batchmean")

class EuclideanMarginMSELoss(_TeacherScoreLoss):
    """MarginMSE: the student's score margins between the first candidate and each other one, matched to the
    teacher's.

    Inputs ``(query, candidate_1, …, candidate_N)`` with labels the teacher's N scores ``t`` (the same as
    :class:`EuclideanDistillKLLoss`'s)::

        loss = mean_j ( (s_1 − s_j) − (t_1 − t_j) / T )²,   s_j = −‖q − d_j‖² / τ,  j = 2 … N

    It equals sentence-transformers' ``MarginMSELoss(model, similarity_fct=pairwise_cos_sim)`` with labels
    ``t_1 − t_j`` when ``score="cos"``, τ = T = 1 (tested). Unlike the KL loss it teaches the size of every
    margin, not only the order, so its scale must match the teacher's: τ and T set both.

    Reference: Hofstätter et al., *Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
    Distillation* (2020), arXiv 2010.02666.
    """

    def compare(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(student[:, :1] - student[:, 1:], teacher[:, :1] - teacher[:, 1:])
