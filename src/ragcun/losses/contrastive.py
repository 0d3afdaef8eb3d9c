"""Euclidean InfoNCE: contrastive learning whose logits are negative (squared) L2 distances.

Ranking by L2 at test time and training with cosine would optimise the wrong geometry; here the
softmax sees exactly the quantity the retriever sorts by.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ragcun.distributed import all_gather_with_grad, rank

Distance = Literal["squared", "l2"]


def pairwise_distance(a: torch.Tensor, b: torch.Tensor, distance: Distance = "squared") -> torch.Tensor:
    """‖a_i − b_j‖² (or ‖a_i − b_j‖) for every pair, computed stably (no negative squares)."""
    sq = (a.square().sum(-1, keepdim=True) - 2.0 * a @ b.T + b.square().sum(-1)[None, :]).clamp_min(0.0)
    if distance == "squared":
        return sq
    if distance == "l2":
        # exact sqrt with a safe gradient at 0
        return torch.sqrt(sq + 1e-12)
    raise ValueError(f"distance must be 'squared' or 'l2', got {distance!r}")


class EuclideanInfoNCE(nn.Module):
    """InfoNCE with logits −d(q, c)/τ over in-batch positives and any number of hard negatives.

    ``forward(queries, docs)`` takes the query embeddings (B, D) and a list of document
    embeddings ``[positives (B, D), negatives_1 (B, D), ...]``. Query i's target is positive i;
    every other positive and every negative in the batch is a candidate negative. With
    ``gather_across_devices`` the candidates of all ranks are gathered (with gradients), so the
    negatives grow with the global batch.
    """

    def __init__(self, temperature: float = 1.0, distance: Distance = "squared",
                 gather_across_devices: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.temperature = float(temperature)
        self.distance: Distance = distance
        self.gather_across_devices = gather_across_devices

    def logits(self, queries: torch.Tensor, docs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = queries.shape[0]
        offset = 0
        if self.gather_across_devices:
            docs = [all_gather_with_grad(d) for d in docs]
            offset = rank() * batch
        candidates = torch.cat(docs, dim=0)
        logits = -pairwise_distance(queries, candidates, self.distance) / self.temperature
        labels = torch.arange(offset, offset + batch, device=queries.device)
        return logits, labels

    def forward(self, queries: torch.Tensor, docs: list[torch.Tensor]) -> torch.Tensor:
        logits, labels = self.logits(queries.float(), [d.float() for d in docs])
        return F.cross_entropy(logits, labels)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, distance={self.distance!r}, "
                f"gather_across_devices={self.gather_across_devices}")
