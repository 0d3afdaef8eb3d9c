"""Where the head starts: an affine map of the base's features, written exactly into its ``Dense`` layers.

:func:`whitening_map` computes, from base features of training documents, the map
``x ↦ c · diag(λ^(−p/2)) · Pᵀ (x − μ)``: the centred feature in its top principal axes ``P``, each axis
rescaled by its eigenvalue ``λ`` to the power ``−p/2``, and one scale ``c`` that gives the output unit
average variance. The power is the *temper* of the whitening:

* ``p = 0`` keeps the base's geometry (L2 ranking on the output is the base's own ranking; the warm start);
* ``p = 1`` whitens: the output covariance on the fitting features is the identity (post-hoc whitening,
  the reference a SIGReg-trained head has to beat);
* in between, the spectrum is tempered: the top axes are shrunk and the small ones grown, partly.

``kind="zca"`` rotates the whitened axes back into the input's coordinates (Bell & Sejnowski's zero-phase
whitening); L2 distances, and so rankings and every rotation-invariant isotropy measure, are the same as
for ``"pca"`` — ZCA only keeps each output dimension aligned with an input one.

:func:`affine_start` writes such a map into a linear head exactly, or into the MLP head exactly through
GELU(z) − GELU(−z) = z (hidden units in (+z, −z) pairs with output weights (+1, −1); the others a residual
branch that starts at zero).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from torch import nn

logger = logging.getLogger(__name__)

WhitenKind = Literal["pca", "zca"]
#: Axes whose variance is below this fraction of the largest are numerically empty: never whitened up.
EMPTY_AXIS = 1e-6


def whitening_map(features: torch.Tensor, out_dim: int, power: float = 0.0, kind: WhitenKind = "pca",
                  max_rank: int | None = None) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(W, b, info)`` with ``W x + b`` the tempered whitening of ``features`` (N, D_in) into ``out_dim``.

    ``W`` has one row per output dimension that is used (the top principal axes; ``kind="zca"``: D_in
    rows in input coordinates); the remaining output dimensions are empty. ``max_rank`` caps the axes kept
    (an MLP head represents at most ``hidden_dim // 2``).
    """
    if not 0.0 <= power <= 1.0:
        raise ValueError(f"the whitening power must be in [0, 1], got {power}")
    if kind not in ("pca", "zca"):
        raise ValueError(f"kind must be 'pca' or 'zca', got {kind!r}")
    x = features.detach().to(dtype=torch.float64)
    n, d_in = x.shape
    if n < 2:
        raise ValueError(f"the head's start needs at least 2 feature vectors, got {n}")
    if not torch.isfinite(x).all():
        raise ValueError("the base features contain NaN or inf")
    mu = x.mean(0)
    cov = torch.cov((x - mu).T).reshape(d_in, d_in)
    evals, evecs = torch.linalg.eigh(cov)
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    total = float(evals.sum())
    if total <= 0:
        raise ValueError("the base features have no variance: cannot scale the head's start")
    rank = min(d_in, out_dim, max_rank or d_in)
    if kind == "zca" and out_dim != d_in:
        raise ValueError(f"ZCA whitening keeps the input's coordinates: output_dim must be {d_in}, "
                         f"got {out_dim}")
    if power > 0:  # a numerically empty axis would be blown up to unit variance: leave it empty
        rank = min(rank, int((evals > EMPTY_AXIS * float(evals[0])).sum()))
    if power == 0:  # the warm start: one scale, exactly the base's geometry
        scale = (out_dim / (total if rank == d_in else float(evals[:rank].sum()))) ** 0.5
        proj = scale * evecs[:, :rank].T
    else:
        gains = evals[:rank].pow(-0.5 * power)
        scale = (out_dim / float((evals[:rank] * gains.square()).sum())) ** 0.5
        proj = (scale * gains)[:, None] * evecs[:, :rank].T
    if kind == "zca":
        proj = evecs[:, :rank] @ proj
    shift = -(proj @ mu)
    info = {"samples": int(n), "rank": int(rank), "scale": float(scale), "power": float(power), "kind": kind,
            "retained_variance": float(evals[:rank].sum() / total), "mean_norm": float(mu.norm())}
    return proj, shift, info


@torch.no_grad()
def affine_start(head: list[nn.Module], weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Make the head compute ``weight @ x + bias`` exactly (rows beyond ``weight``'s are zero outputs)."""
    first, last = head[0].linear, head[-1].linear
    rank = weight.shape[0]
    dt = first.weight.dtype
    if rank > last.out_features:
        raise ValueError(f"a {rank}-row map does not fit a {last.out_features}-d head")
    if len(head) == 1:
        last.weight.zero_()
        last.weight[:rank] = weight.to(dt)
        if last.bias is not None:
            last.bias.zero_()
            last.bias[:rank] = bias.to(dt)
        return
    if first.out_features < 2 * rank:
        raise ValueError(f"the MLP head needs hidden_dim >= {2 * rank} to represent a {rank}-row map")
    if first.bias is None:
        raise ValueError("the MLP head's first layer needs a bias for this start")
    first.weight[:rank] = weight.to(dt)
    first.weight[rank : 2 * rank] = -weight.to(dt)
    first.bias[:rank] = bias.to(dt)
    first.bias[rank : 2 * rank] = -bias.to(dt)
    last.weight.zero_()
    eye = torch.eye(rank, dtype=dt, device=last.weight.device)
    last.weight[:rank, :rank] = eye
    last.weight[:rank, rank : 2 * rank] = -eye
    if last.bias is not None:
        last.bias.zero_()
