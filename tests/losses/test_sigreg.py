"""SIGReg against LeJEPA's formula: reference values, gradients, slicing and float32 under autocast."""

from __future__ import annotations

import math

import pytest
import torch

from ragcun.losses.sigreg import EppsPulley, SIGReg, _grid, epps_pulley


def _naive(x: torch.Tensor, t_max: float = 3.0, n_points: int = 17) -> torch.Tensor:
    """The formula written out with complex numbers, as a second opinion."""
    x = x.double()
    t = torch.linspace(0, t_max, n_points, dtype=torch.float64)
    ecf = torch.exp(1j * x[..., None] * t).mean(0)  # (K, J)
    target = torch.exp(-(t**2) / 2)
    dt = t_max / (n_points - 1)
    w = torch.full((n_points,), 2 * dt, dtype=torch.float64)
    w[0] = w[-1] = dt
    return x.shape[0] * ((ecf - target).abs() ** 2 * w * target).sum(-1)


def test_reference_linspace():
    x = torch.linspace(-2, 2, 101)[:, None]
    assert epps_pulley(x).item() == pytest.approx(6.1885, abs=1e-4)


@pytest.mark.parametrize("n", [1, 10, 1000])
def test_reference_zeros_scale_with_n(n):
    assert epps_pulley(torch.zeros(n, 3)) == pytest.approx(torch.full((3,), 0.4020 * n), rel=1e-3)


def test_reference_gaussian_independent_of_n():
    gen = torch.Generator().manual_seed(0)
    for n in (200, 2000, 20000):
        stat = epps_pulley(torch.randn(n, 512, generator=gen)).mean().item()
        assert 0.95 < stat < 1.15, (n, stat)


def test_matches_naive_complex_formula():
    x = torch.randn(300, 7, generator=torch.Generator().manual_seed(1)) * 1.7 + 0.3
    assert torch.allclose(epps_pulley(x).double(), _naive(x), rtol=1e-4)


def test_weights_are_doubled_trapezoid_times_gaussian():
    t, phi, w = _grid(3.0, 17)
    dt = 3.0 / 16
    assert w[0].item() == pytest.approx(dt)
    assert w[5].item() == pytest.approx(2 * dt * math.exp(-t[5].item() ** 2 / 2))
    assert phi[0].item() == 1.0


def test_gradient_matches_finite_differences():
    x = (torch.randn(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
         * 0.5).requires_grad_()

    def f(inp):
        return epps_pulley(inp.float()).double().sum()

    f(x).backward()
    eps = 1e-3
    num = torch.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            xp, xm = x.detach().clone(), x.detach().clone()
            xp[i, j] += eps
            xm[i, j] -= eps
            num[i, j] = (f(xp) - f(xm)) / (2 * eps)
    assert torch.allclose(x.grad, num, atol=2e-3, rtol=2e-2)


def test_gradient_descent_moves_toward_gaussian():
    x = (torch.rand(256, 16, generator=torch.Generator().manual_seed(3)) * 4).requires_grad_()
    sig = SIGReg(num_slices=64)
    opt = torch.optim.Adam([x], lr=0.05)
    first = None
    for _ in range(100):
        loss = sig(x)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 5


def test_sigreg_slices_follow_step_and_eval_is_stable():
    sig = SIGReg(num_slices=8, seed=5)
    x = torch.randn(64, 10, requires_grad=True)
    a0 = sig.directions(10)
    assert torch.allclose(a0.norm(dim=0), torch.ones(8))
    sig(x)
    assert sig.step.item() == 1
    assert not torch.allclose(sig.directions(10), a0)
    assert torch.allclose(SIGReg(num_slices=8, seed=5).directions(10, step=1), sig.directions(10))
    sig.eval()
    v1, v2 = sig(x), sig(x)
    assert v1.item() == v2.item() and sig.step.item() == 1


def test_step_is_saved_in_state_dict():
    sig = SIGReg(num_slices=4)
    sig.step.fill_(7)
    other = SIGReg(num_slices=4)
    other.load_state_dict(sig.state_dict())
    assert other.step.item() == 7


def test_float32_under_autocast():
    sig = SIGReg(num_slices=16)
    x = torch.randn(32, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = torch.nn.Linear(8, 8)(x)
        assert y.dtype == torch.bfloat16
        out = sig(y)
    assert out.dtype == torch.float32


class _Moments(torch.nn.Module):
    """A univariate test of the first two moments: (mean² + (var − 1)²) · N per column."""

    def forward(self, x, distributed=True, extra=None):
        return x.shape[0] * (x.mean(0).square() + (x.var(0) - 1).square())


def test_the_univariate_test_is_injected():
    """As in LeJEPA, the slicing is one module and the univariate test another: SIGReg averages whatever test
    it is given over the same slices."""
    x = torch.randn(256, 12) * 1.5 + 0.2
    sig = SIGReg(num_slices=32, seed=4, univariate=_Moments()).eval()
    a = sig.slices(12, x.device)
    torch.testing.assert_close(sig(x), _Moments()(x @ a).mean())
    default = SIGReg(num_slices=32, seed=4).eval()
    torch.testing.assert_close(default(x), EppsPulley()(x @ a).mean())
    assert "univariate=_Moments" in repr(sig) and "n_points=17" in repr(default)
    with pytest.raises(ValueError, match="set them on the univariate test"):
        SIGReg(n_points=9, univariate=_Moments())


def test_bad_shape():
    with pytest.raises(ValueError, match="shape"):
        SIGReg()(torch.randn(2, 3, 4))


def _anisotropic(n: int, d: int, seed: int) -> torch.Tensor:
    """N(0, Σ): eight directions of variance 3 among ``d`` of variance 1, in a random rotation."""
    gen = torch.Generator().manual_seed(seed)
    rot, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(99)))
    scale = torch.ones(d)
    scale[:8] = 3.0**0.5
    return (torch.randn(n, d, generator=gen) * scale) @ rot.T


def _ratio(policy: str, n: int = 1024, d: int = 256) -> float:
    """Statistic of an anisotropic sample over that of an N(0, I) sample of the same size, each measured
    after one training call on an independent sample of the same distribution (where the axes come from)."""
    out = []
    for sample in (lambda s: _anisotropic(n, d, s),
                   lambda s: torch.randn(n, d, generator=torch.Generator().manual_seed(s))):
        sig = SIGReg(num_slices=256, seed=1, slice_policy=policy, principal_slices=16)
        sig(sample(10).requires_grad_())  # training call: fits the axes used by the next call
        sig.eval()
        with torch.no_grad():
            out.append(sig(sample(11)).item())
    return out[0] / out[1]


def test_pca_policy_detects_anisotropy_that_random_slices_miss():
    """Eight of 256 directions with three times the variance, n = 1,024: every random slice averages the
    spectrum (variance ≈ 1.06), so the random policy's ratio stays below 2 (it misses); the principal axes
    see variance 3 and the pca policy's ratio is far above 2."""
    assert _ratio("random") < 2.0
    assert _ratio("pca") > 3.0


def test_pca_axes_come_from_the_previous_sample_and_pass_a_gaussian():
    """The first call has no axes (random slices only); afterwards the axes are the previous sample's, and
    on a fresh N(0, I) sample the statistic stays at the null's (a sample's own extreme axes would not)."""
    d = 64
    sig = SIGReg(num_slices=256, seed=2, slice_policy="pca", principal_slices=8)
    assert sig.slices(d, torch.device("cpu")).shape == (d, 256)
    prev = torch.randn(512, d, generator=torch.Generator().manual_seed(3))
    sig(prev.requires_grad_())
    assert sig.slices(d, torch.device("cpu")).shape == (d, 272)
    sig.eval()
    fresh = [sig(torch.randn(512, d, generator=torch.Generator().manual_seed(100 + i))).item()
             for i in range(8)]
    assert 0.9 < sum(fresh) / 8 < 1.15
    own = SIGReg(num_slices=256, seed=2, slice_policy="pca", principal_slices=8)
    own(prev)  # its own axes, then tested on the same sample: the extremes of a sample fail it
    own.eval()
    assert own(prev.detach()).item() > 1.5 * sum(fresh) / 8
    cov = torch.cov(prev.detach().T)
    top = sig.axes[:, 0].double()
    assert top @ cov.double() @ top == pytest.approx(torch.linalg.eigvalsh(cov.double())[-1].item(), rel=1e-4)


def test_extra_sample_is_tested_with_the_batch_without_gradient():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(40, 6, generator=gen).requires_grad_()
    extra = torch.randn(100, 6, generator=gen) * 1.5
    joint = epps_pulley(torch.cat([x.detach(), extra]))
    from ragcun.losses.sigreg import EppsPulley

    got = EppsPulley()(x, distributed=False, extra=extra)
    torch.testing.assert_close(got, joint, rtol=1e-5, atol=1e-6)
    got.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
