"""The training objective as a sentence-transformers loss: contrastive + λ_iso·SIGReg +
λ_reg·regulariser."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import nn

from ragcun.config import Schema, choice_problems, non_negative, positive
from ragcun.losses.contrastive import Distance, EuclideanInfoNCE
from ragcun.losses.queue import FeatureQueue
from ragcun.losses.sigreg import SIGReg, SlicePolicy

Regularizer = Literal["covariance", "none"]
LossForm = Literal["sum", "convex"]
SigregOn = Literal["joint", "separate"]


def covariance_regularizer(x: torch.Tensor) -> torch.Tensor:
    """‖XᵀX/N − I‖²_F / D: the second moment against the identity.

    SIGReg matches the distribution along random 1-D slices; this term targets the whole
    second-moment matrix directly (zero mean and unit, uncorrelated variances) at O(D²) cost.
    It is a cheap, deterministic complement for small batches, where sliced tests are noisy.
    """
    x = x.float()
    n, d = x.shape
    second = x.T @ x / n
    return (second - torch.eye(d, device=x.device)).square().sum() / d


class IsotropicGaussianLoss(nn.Module):
    """Euclidean InfoNCE + ``lambda_isotropy`` · SIGReg + ``lambda_reg`` · covariance regulariser.

    ``loss_form="sum"`` adds λ·SIGReg to the contrastive loss; ``"convex"`` is LeJEPA's
    (1 − λ)·contrastive + λ·SIGReg with λ in [0, 1]. ``sigreg_on="joint"`` tests queries and
    documents of the batch as one sample; ``"separate"`` averages the test of the queries and that of
    the documents, so each side is pulled to N(0, I) on its own (a corpus is searched on its own, and
    queries are short texts whose distribution differs from documents').

    A sentence-transformers loss: ``forward(sentence_features, labels)`` embeds the columns
    (query, positive, negative_1, …) with the model and returns a dict of *weighted* components,
    which ``SentenceTransformerTrainer`` sums into the loss and logs one by one. Raw values
    (SIGReg even when its weight is 0) are kept in :attr:`last_stats` for monitoring.
    SIGReg sees the queries and all documents of the batch together, and under DDP the global
    batch.

    SIGReg at more than batch scale (the batch alone is too small a sample to fail the test): with
    ``queue_size`` the batch is tested together with a :class:`~ragcun.losses.queue.FeatureQueue` of
    recent detached embeddings; with ``corpus_sample`` (a callable taking the SIGReg step and returning
    fresh ``(queries, documents)`` embeddings with gradients, e.g. a uniform sample of cached training
    features through the head) SIGReg tests that sample instead of the batch. ``slice_policy="pca"``
    adds the data's principal and smallest-variance axes to the random slices (see :class:`SIGReg`).

    A teacher's signal: with ``distillation`` (an :class:`~ragcun.losses.distillation.EuclideanDistillKLLoss`
    or :class:`~ragcun.losses.distillation.EuclideanMarginMSELoss`) the columns are (query, positive,
    candidate_1, …) with the teacher's scores of (positive, candidate_1, …) as labels; the loss adds
    ``lambda_distill`` · distillation over those candidates, and InfoNCE (weighted ``lambda_contrastive``, 0
    to leave the labels out) sees the positives alone (in-batch negatives: the teacher's candidates may be
    unjudged relevant documents, so they are never treated as negatives).
    """

    def __init__(
        self,
        model: nn.Module,
        lambda_isotropy: float = 1.0,
        lambda_reg: float = 0.0,
        temperature: float = 5.0,
        distance: Distance = "squared",
        num_slices: int = 1024,
        t_max: float = 3.0,
        n_points: int = 17,
        gather_across_devices: bool = True,
        regularizer: Regularizer = "covariance",
        seed: int = 0,
        monitor_sigreg: bool = True,
        loss_form: LossForm = "sum",
        sigreg_on: SigregOn = "joint",
        slice_policy: SlicePolicy = "pca",
        principal_slices: int = 32,
        slice_refresh: int = 1,
        queue_size: int = 0,
        corpus_sample: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None,
        distillation: nn.Module | None = None,
        lambda_distill: float = 1.0,
        lambda_contrastive: float = 1.0,
    ) -> None:
        super().__init__()
        problems = self.argument_problems(
            lambda_isotropy=lambda_isotropy, lambda_reg=lambda_reg, temperature=temperature,
            distance=distance,
            num_slices=num_slices, loss_form=loss_form, sigreg_on=sigreg_on, slice_policy=slice_policy,
            principal_slices=principal_slices, slice_refresh=slice_refresh, queue_size=queue_size,
            lambda_distill=lambda_distill, lambda_contrastive=lambda_contrastive, regularizer=regularizer,
            t_max=t_max, n_points=n_points)
        if problems:
            raise ValueError("; ".join(problems))
        self.loss_form: LossForm = loss_form
        self.sigreg_on: SigregOn = sigreg_on
        self.model = model
        self.lambda_isotropy = float(lambda_isotropy)
        self.lambda_reg = float(lambda_reg)
        self.regularizer = regularizer
        self.monitor_sigreg = monitor_sigreg
        self.contrastive = EuclideanInfoNCE(temperature, distance, gather_across_devices)
        slicing = dict(num_slices=num_slices, t_max=t_max, n_points=n_points, slice_policy=slice_policy,
                       principal_slices=principal_slices, refresh_every=slice_refresh)
        self.sigreg = SIGReg(seed=seed, **slicing)
        # queries keep their own principal axes (and queue): theirs are not the documents'
        separate = sigreg_on == "separate"
        self.sigreg_queries = SIGReg(seed=seed + 1, **slicing) if separate and slice_policy == "pca" else None
        self.queue = FeatureQueue(queue_size) if queue_size else None
        self.queue_queries = FeatureQueue(queue_size) if queue_size and separate else None
        self.corpus_sample = corpus_sample
        self.distillation = distillation
        self.lambda_distill = float(lambda_distill)
        self.lambda_contrastive = float(lambda_contrastive)
        self.last_stats: dict[str, float] = {}

    @classmethod
    def argument_problems(cls, **kwargs: Any) -> list[str]:
        """What is wrong with these keyword arguments (empty when nothing): checked by the constructor, and by
        a training config before anything loads (its ``[loss]`` table is these arguments)."""
        values = {**Schema.of(cls).defaults, **kwargs}
        problems = choice_problems(cls, values)
        problems += positive(values, "temperature", "num_slices", "principal_slices", "slice_refresh",
                             "n_points", "t_max")
        problems += non_negative(values, "lambda_isotropy", "lambda_reg", "queue_size", "lambda_distill",
                                 "lambda_contrastive")
        if values["loss_form"] == "convex" and not 0.0 <= values["lambda_isotropy"] <= 1.0:
            problems.append(f"loss_form = 'convex' needs lambda_isotropy in [0, 1] (got "
                            f"{values['lambda_isotropy']})")
        return problems

    def forward(self, sentence_features: Iterable[dict[str, torch.Tensor]],
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        embeddings = embed_columns(self.model, sentence_features)
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings: list[torch.Tensor],
                                     labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if len(embeddings) < 2:
            raise ValueError(f"need at least (query, positive) columns, got {len(embeddings)}")
        queries, docs = embeddings[0], list(embeddings[1:])
        weight = 1.0 - self.lambda_isotropy if self.loss_form == "convex" else 1.0
        out: dict[str, torch.Tensor] = {}
        stats: dict[str, Any] = {}
        if self.distillation is not None:
            distill = self.distillation.compute_loss_from_embeddings(embeddings, labels)
            out["distillation"] = weight * self.lambda_distill * distill
            stats["distillation"] = distill.item()
        if self.distillation is None or self.lambda_contrastive > 0:
            contrastive = self.contrastive(queries, docs if self.distillation is None else docs[:1])
            w = weight * (self.lambda_contrastive if self.distillation is not None else 1.0)
            out["contrastive"] = contrastive * w if w != 1.0 else contrastive
            stats["contrastive"] = contrastive.item()
        everything = torch.cat([queries, *docs], dim=0)
        if self.lambda_isotropy > 0:
            sample = (self.corpus_sample(int(self.sigreg.step)) if self.corpus_sample is not None
                      else (queries, docs))
            sig = self._sigreg(*sample)
            out["isotropy"] = self.lambda_isotropy * sig
            stats["sigreg"] = sig.item()
        elif self.monitor_sigreg:
            with torch.no_grad():
                stats["sigreg"] = self._sigreg(queries.detach(), [d.detach() for d in docs]).item()
        if self.regularizer != "none" and self.lambda_reg > 0:
            reg = covariance_regularizer(everything)
            out["regularizer"] = self.lambda_reg * reg
            stats["regularizer"] = reg.item()
        stats["mean_norm"] = everything.detach().float().norm(dim=1).mean().item()
        self.last_stats = stats
        return out

    def _sigreg(self, queries: torch.Tensor, docs: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        docs = torch.cat(docs, dim=0) if isinstance(docs, list) else docs
        if self.sigreg_on == "separate":
            q = (self.sigreg_queries or self.sigreg)(queries, extra=_contents(self.queue_queries))
            value = 0.5 * (q + self.sigreg(docs, extra=_contents(self.queue)))
            _push(self.queue_queries, queries)
            _push(self.queue, docs)
            return value
        everything = torch.cat([queries, docs], dim=0)
        value = self.sigreg(everything, extra=_contents(self.queue))
        _push(self.queue, everything)
        return value

    @property
    def citation(self) -> str:
        return (
            "@article{balestriero2025lejepa, title={LeJEPA: Provable and Scalable Self-Supervised Learning "
            "Without the Heuristics}, author={Balestriero, Randall and LeCun, Yann}, year={2025}}"
        )

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "lambda_isotropy": self.lambda_isotropy,
            "lambda_reg": self.lambda_reg,
            "temperature": self.contrastive.temperature,
            "distance": self.contrastive.distance,
            "num_slices": self.sigreg.num_slices,
            "regularizer": self.regularizer,
            "loss_form": self.loss_form,
            "sigreg_on": self.sigreg_on,
            "slice_policy": self.sigreg.slice_policy,
            "queue_size": self.queue.size if self.queue is not None else 0,
            "corpus_sample": self.corpus_sample is not None,
            "gather_across_devices": self.contrastive.gather_across_devices,
            **({"distillation": type(self.distillation).__name__,
                **{f"distill_{k}": v for k, v in self.distillation.get_config_dict().items()},
                "lambda_distill": self.lambda_distill, "lambda_contrastive": self.lambda_contrastive}
               if self.distillation is not None else {}),
        }


def _contents(queue: FeatureQueue | None) -> torch.Tensor | None:
    return queue.contents() if queue is not None and int(queue.filled) else None


def _push(queue: FeatureQueue | None, x: torch.Tensor) -> None:
    if queue is not None and x.requires_grad and torch.is_grad_enabled():  # training steps only
        queue.push(x)
