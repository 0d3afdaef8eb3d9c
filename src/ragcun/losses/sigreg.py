"""SIGReg: LeJEPA's sliced Epps–Pulley test of embeddings against N(0, I).

Split as in the LeJEPA reference: a univariate test (:class:`EppsPulley`, with its grid and
weights as buffers) and the multivariate slicing (:class:`SIGReg`, which projects onto random
unit directions drawn from a step counter kept in a buffer, so every rank draws the same ones).
Both are DDP-aware: the empirical characteristic function is summed across ranks with
autograd-aware collectives and N is the global batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ragcun.distributed import all_reduce_sum


def _grid(t_max: float, n_points: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integration nodes t_j, the target CF exp(-t²/2), and weights (trapezoid ×2 for the even integrand) × exp(-t²/2)."""
    if n_points < 2:
        raise ValueError("n_points must be at least 2")
    t = torch.linspace(0.0, float(t_max), n_points, dtype=torch.float32)
    dt = float(t_max) / (n_points - 1)
    weights = torch.full((n_points,), 2.0 * dt, dtype=torch.float32)
    weights[0] = weights[-1] = dt
    phi = torch.exp(-0.5 * t.square())
    return t, phi, weights * phi


class _CharacteristicSums(torch.autograd.Function):
    """Σ_n cos(x_nk t_j) and Σ_n sin(x_nk t_j), shape (K, J) each, with a hand-written backward.

    The backward reuses the forward's cosines and sines instead of recomputing them (autograd would
    evaluate sin and cos again for the derivatives): 1.5× faster for a SIGReg step, same values.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xt = x.unsqueeze(-1) * t  # (N, K, J)
        cos, sin = torch.cos(xt), torch.sin(xt)
        ctx.save_for_backward(cos, sin, t)
        return cos.sum(0), sin.sum(0)

    @staticmethod
    def backward(ctx: Any, grad_cos: torch.Tensor, grad_sin: torch.Tensor) -> tuple[torch.Tensor, None]:
        cos, sin, t = ctx.saved_tensors
        return (cos * (grad_sin * t)).sum(-1) - (sin * (grad_cos * t)).sum(-1), None


def _statistic(x: torch.Tensor, t: torch.Tensor, phi: torch.Tensor, weights: torch.Tensor, distributed: bool) -> torch.Tensor:
    """T_k = N · Σ_j w_j |φ̂_k(t_j) − φ(t_j)|² for every column k of ``x`` (N, K)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        if x.requires_grad and torch.is_grad_enabled():
            cos_sum, sin_sum = _CharacteristicSums.apply(x, t)
        else:
            xt = x.unsqueeze(-1) * t  # (N, K, J)
            cos_sum, sin_sum = torch.cos(xt).sum(0), torch.sin(xt).sum(0)
        n = torch.tensor(float(x.shape[0]), device=x.device)
        if distributed:
            cos_sum = all_reduce_sum(cos_sum)
            sin_sum = all_reduce_sum(sin_sum)
            n = all_reduce_sum(n.detach()).detach()
        err = (cos_sum / n - phi).square() + (sin_sum / n).square()  # (K, J)
        return n * (err @ weights)


def epps_pulley(x: torch.Tensor, t_max: float = 3.0, n_points: int = 17, distributed: bool = True) -> torch.Tensor:
    """Epps–Pulley statistics of each column of ``x`` (N, K) against N(0, 1); returns shape (K,).

    Reference values: ``linspace(-2, 2, 101)`` gives 6.1885, all zeros 0.4020·N, and a large
    N(0, 1) sample about 1.05 (its expectation, whatever N).
    """
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"expected x of shape (N, K), got {tuple(x.shape)}")
    t, phi, w = (a.to(x.device) for a in _grid(t_max, n_points))
    return _statistic(x, t, phi, w, distributed)


class EppsPulley(nn.Module):
    """The univariate Epps–Pulley test as a module (grid and weights as buffers)."""

    def __init__(self, t_max: float = 3.0, n_points: int = 17) -> None:
        super().__init__()
        t, phi, w = _grid(t_max, n_points)
        self.t_max, self.n_points = float(t_max), int(n_points)
        self.register_buffer("t", t, persistent=False)
        self.register_buffer("phi", phi, persistent=False)
        self.register_buffer("weights", w, persistent=False)

    def forward(self, x: torch.Tensor, distributed: bool = True) -> torch.Tensor:
        return _statistic(x, self.t, self.phi, self.weights, distributed)


class SIGReg(nn.Module):
    """Sketched isotropic Gaussian regulariser: mean Epps–Pulley statistic over random 1-D slices.

    Directions are ``num_slices`` fresh unit vectors per training call, drawn on the CPU from
    ``seed + step`` (``step`` is a buffer, saved with the module), so every rank and every device
    type draws the same ones and a resumed run continues the same sequence. In eval mode the
    step does not advance, so repeated measurements agree.
    """

    def __init__(self, num_slices: int = 1024, t_max: float = 3.0, n_points: int = 17, seed: int = 0) -> None:
        super().__init__()
        self.num_slices = int(num_slices)
        self.seed = int(seed)
        self.test = EppsPulley(t_max, n_points)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def directions(self, dim: int, step: int | None = None) -> torch.Tensor:
        gen = torch.Generator(device="cpu")
        gen.manual_seed(self.seed * 1_000_003 + int(self.step.item() if step is None else step))
        a = torch.randn(dim, self.num_slices, generator=gen)
        return a / a.norm(dim=0, keepdim=True)

    def forward(self, x: torch.Tensor, distributed: bool = True) -> torch.Tensor:
        if x.ndim != 2:
            raise ValueError(f"SIGReg expects embeddings of shape (N, D), got {tuple(x.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            a = self.directions(x.shape[1]).to(x.device)
            stats = self.test(x.float() @ a, distributed=distributed)
        if self.training and torch.is_grad_enabled():
            self.step += 1
        return stats.mean()

    def extra_repr(self) -> str:
        return f"num_slices={self.num_slices}, t_max={self.test.t_max}, n_points={self.test.n_points}"
