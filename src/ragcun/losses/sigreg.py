"""SIGReg: LeJEPA's sliced Epps–Pulley test of embeddings against N(0, I).

Split as in the LeJEPA reference: a univariate test (:class:`EppsPulley`, with its grid and
weights as buffers) and the multivariate slicing (:class:`SIGReg`, which projects onto unit
directions: random ones drawn from a step counter kept in a buffer, so every rank draws the same
ones, and with ``slice_policy="pca"`` also the data's own principal and smallest-variance axes).
Both are DDP-aware: the empirical characteristic function is summed across ranks with
autograd-aware collectives and N is the global sample. A detached ``extra`` sample (a feature queue)
can be tested together with the batch: it adds power, the gradient flows through the batch.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from ragcun.distributed import all_reduce_sum

SlicePolicy = Literal["random", "pca"]


def _grid(t_max: float, n_points: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integration nodes t_j, the target CF exp(-t²/2), and weights (trapezoid ×2 for the even integrand)
    × exp(-t²/2)."""
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


def _sums(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.requires_grad and torch.is_grad_enabled():
        return _CharacteristicSums.apply(x, t)
    xt = x.unsqueeze(-1) * t  # (N, K, J)
    return torch.cos(xt).sum(0), torch.sin(xt).sum(0)


def _statistic(x: torch.Tensor, t: torch.Tensor, phi: torch.Tensor, weights: torch.Tensor, distributed: bool,
               extra: torch.Tensor | None = None) -> torch.Tensor:
    """T_k = N · Σ_j w_j |φ̂_k(t_j) − φ(t_j)|² for every column k of ``x`` (N, K) together with the rows of
    ``extra`` (M, K; no gradient), N being every row on every rank."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        cos_sum, sin_sum = _sums(x, t)
        rows = x.shape[0]
        if extra is not None and extra.shape[0]:
            with torch.no_grad():
                c, s = _sums(extra.detach().float(), t)
            cos_sum, sin_sum, rows = cos_sum + c, sin_sum + s, rows + extra.shape[0]
        n = torch.tensor(float(rows), device=x.device)
        if distributed:
            cos_sum = all_reduce_sum(cos_sum)
            sin_sum = all_reduce_sum(sin_sum)
            n = all_reduce_sum(n.detach()).detach()
        err = (cos_sum / n - phi).square() + (sin_sum / n).square()  # (K, J)
        return n * (err @ weights)


def epps_pulley(x: torch.Tensor, t_max: float = 3.0, n_points: int = 17,
                distributed: bool = True) -> torch.Tensor:
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

    def forward(self, x: torch.Tensor, distributed: bool = True,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        return _statistic(x, self.t, self.phi, self.weights, distributed, extra)


@torch.no_grad()
def principal_axes(x: torch.Tensor, count: int, distributed: bool = True) -> torch.Tensor:
    """The ``count`` largest- and ``count`` smallest-variance axes of ``x`` (N, D) as columns (D, 2·count).

    The covariance is summed over every rank first (float64), so all ranks get the same axes. They mean
    something only for a sample well above the dimension: below it the covariance is singular and its
    smallest-variance axes are an arbitrary basis of the null space (use ``sigreg_sample`` or a queue).
    """
    x = x.detach().double()
    d = x.shape[1]
    stats = torch.cat([torch.tensor([float(x.shape[0])], dtype=x.dtype, device=x.device), x.sum(0),
                       (x.T @ x).reshape(-1)])
    if distributed:
        stats = all_reduce_sum(stats)
    n, s, ss = stats[0], stats[1 : 1 + d], stats[1 + d :].reshape(d, d)
    mean = s / n
    cov = (ss - n * torch.outer(mean, mean)) / (n - 1).clamp_min(1.0)
    _, vecs = torch.linalg.eigh(cov)  # ascending
    m = min(int(count), d // 2)
    return torch.cat([vecs[:, d - m :].flip(1), vecs[:, :m]], dim=1).float()  # largest first, then smallest


class SIGReg(nn.Module):
    """Sketched isotropic Gaussian regulariser: the mean of a univariate test's statistic over 1-D slices.

    The univariate test is :class:`EppsPulley` unless another is injected (``univariate=``, as LeJEPA's
    ``SlicingUnivariateTest`` takes one): a module mapping projections (N, K) to K statistics, called as
    ``test(x, distributed=..., extra=...)``.

    ``slice_policy="random"`` (LeJEPA's): ``num_slices`` fresh unit vectors per training call, drawn
    on the CPU from ``seed + step`` (``step`` is a buffer, saved with the module), so every rank and
    every device type draws the same ones and a resumed run continues the same sequence. In eval
    mode the step does not advance, so repeated measurements agree.

    ``slice_policy="pca"`` adds the ``principal_slices`` largest- and smallest-variance axes of the
    data. Why: random directions in many dimensions are almost blind to the covariance's shape — a
    random unit slice averages all eigenvalues, so its variance stays near their mean (Diaconis &
    Freedman 1984) while the top axis carries 20× that — so a corpus whose variance sits in a few
    directions passes every random slice. The axes are taken from the *previous* call's sample (every
    ``refresh_every`` calls), never from the sample being tested: a sample's own extreme axes have
    extreme variances even under N(0, I) (Marchenko–Pastur), which would make the test reject a
    Gaussian and push its spread below the target.
    """

    def __init__(self, num_slices: int = 1024, t_max: float = 3.0, n_points: int = 17, seed: int = 0,
                 slice_policy: SlicePolicy = "random", principal_slices: int = 32,
                 refresh_every: int = 1, univariate: nn.Module | None = None) -> None:
        super().__init__()
        if univariate is not None and (t_max, n_points) != (3.0, 17):
            raise ValueError("t_max and n_points configure the default Epps–Pulley test; set them on the "
                             "univariate test you pass instead")
        if slice_policy not in ("random", "pca"):
            raise ValueError(f"slice_policy must be 'random' or 'pca', got {slice_policy!r}")
        if refresh_every < 1 or principal_slices < 1:
            raise ValueError("principal_slices and refresh_every must be >= 1")
        self.num_slices = int(num_slices)
        self.seed = int(seed)
        self.slice_policy: SlicePolicy = slice_policy
        self.principal_slices = int(principal_slices)
        self.refresh_every = int(refresh_every)
        # injected, as in LeJEPA (see the class docstring)
        self.test = univariate if univariate is not None else EppsPulley(t_max, n_points)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("axes", torch.zeros(0, 0))  # principal axes for the next call (pca policy)

    def directions(self, dim: int, step: int | None = None) -> torch.Tensor:
        gen = torch.Generator(device="cpu")
        gen.manual_seed(self.seed * 1_000_003 + int(self.step.item() if step is None else step))
        a = torch.randn(dim, self.num_slices, generator=gen)
        return a / a.norm(dim=0, keepdim=True)

    def slices(self, dim: int, device: torch.device) -> torch.Tensor:
        """The unit directions of the next call: random, plus the kept principal axes (pca policy)."""
        a = self.directions(dim).to(device)
        if self.slice_policy == "pca" and self.axes.shape[0] == dim:
            a = torch.cat([a, self.axes.to(device)], dim=1)
        return a

    def forward(self, x: torch.Tensor, distributed: bool = True,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        """Mean statistic of ``x`` (N, D), tested together with the detached rows of ``extra`` (M, D)."""
        if x.ndim != 2:
            raise ValueError(f"SIGReg expects embeddings of shape (N, D), got {tuple(x.shape)}")
        if extra is not None and (extra.ndim != 2 or extra.shape[1] != x.shape[1]):
            raise ValueError(f"extra sample of shape {tuple(extra.shape)} does not match embeddings "
                             f"{tuple(x.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            a = self.slices(x.shape[1], x.device)
            stats = self.test(x.float() @ a, distributed=distributed,
                              extra=None if extra is None else extra.detach().float() @ a)
        if self.training and torch.is_grad_enabled():
            if self.slice_policy == "pca" and int(self.step) % self.refresh_every == 0:
                sample = x.detach() if extra is None else torch.cat([x.detach(), extra.detach()])
                self.axes = principal_axes(sample, self.principal_slices, distributed)
            self.step += 1
        return stats.mean()

    def extra_repr(self) -> str:
        policy = ("" if self.slice_policy == "random"
                  else f", slice_policy=pca, principal_slices={self.principal_slices}")
        test = (f"t_max={self.test.t_max}, n_points={self.test.n_points}" if isinstance(self.test, EppsPulley)
                else f"univariate={type(self.test).__name__}")
        return f"num_slices={self.num_slices}, {test}{policy}"
