"""Euclidean InfoNCE and the combined objective."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ragcun.losses import EuclideanInfoNCE, IsotropicGaussianLoss, covariance_regularizer, pairwise_distance


def test_pairwise_distance_equals_cdist():
    a, b = torch.randn(5, 7), torch.randn(9, 7)
    assert torch.allclose(pairwise_distance(a, b, "l2"), torch.cdist(a, b), atol=1e-5)
    assert torch.allclose(pairwise_distance(a, b, "squared"), torch.cdist(a, b) ** 2, atol=1e-4)


def test_infonce_by_hand_with_hard_negatives():
    gen = torch.Generator().manual_seed(0)
    q, p, n1, n2 = (torch.randn(4, 6, generator=gen) for _ in range(4))
    loss = EuclideanInfoNCE(temperature=2.0)(q, [p, n1, n2])
    cands = torch.cat([p, n1, n2])
    logits = -torch.cdist(q, cands) ** 2 / 2.0
    expected = F.cross_entropy(logits, torch.arange(4))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss_l2 = EuclideanInfoNCE(temperature=0.5, distance="l2")(q, [p])
    expected_l2 = F.cross_entropy(-torch.cdist(q, p) / 0.5, torch.arange(4))
    assert loss_l2.item() == pytest.approx(expected_l2.item(), rel=1e-5)


def test_infonce_prefers_close_positives():
    q = torch.randn(8, 16)
    good = EuclideanInfoNCE()(q, [q + 0.01 * torch.randn(8, 16)])
    bad = EuclideanInfoNCE()(q, [torch.randn(8, 16)])
    assert good < bad


def test_l2_distance_gradient_is_finite_at_zero():
    q = torch.randn(3, 4, requires_grad=True)
    EuclideanInfoNCE(distance="l2")(q, [q]).backward()
    assert torch.isfinite(q.grad).all()


def test_covariance_regularizer_zero_at_identity():
    x = torch.eye(4).repeat(25, 1) * 2.0  # second moment = 4 * I / 4 = I
    assert covariance_regularizer(x).item() == pytest.approx(0.0, abs=1e-6)
    assert covariance_regularizer(torch.ones(10, 4)).item() > 1


def test_objective_components_and_weights():
    class Identity(torch.nn.Module):
        pass

    loss = IsotropicGaussianLoss(Identity(), lambda_isotropy=0.5, lambda_reg=0.1, num_slices=32)
    emb = [torch.randn(8, 12, requires_grad=True) for _ in range(3)]
    out = loss.compute_loss_from_embeddings(emb)
    assert set(out) == {"contrastive", "isotropy", "regularizer"}
    assert out["isotropy"].item() == pytest.approx(0.5 * loss.last_stats["sigreg"], rel=1e-5)
    assert out["regularizer"].item() == pytest.approx(0.1 * loss.last_stats["regularizer"], rel=1e-5)
    sum(out.values()).backward()
    assert all(e.grad is not None for e in emb)

    baseline = IsotropicGaussianLoss(Identity(), lambda_isotropy=0.0, num_slices=32)
    out0 = baseline.compute_loss_from_embeddings([e.detach() for e in emb])
    assert set(out0) == {"contrastive"}
    assert "sigreg" in baseline.last_stats  # still monitored
