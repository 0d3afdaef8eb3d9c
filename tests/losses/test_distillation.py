"""The distillation losses equal their definitions, and sentence-transformers' losses where those apply."""

from __future__ import annotations

import math

import pytest
import torch

from ragcun.losses.distillation import EuclideanDistillKLLoss, EuclideanMarginMSELoss, student_scores


def _data(b: int = 4, n: int = 5, d: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, d, generator=g)
    cands = [torch.randn(b, d, generator=g) for _ in range(n)]
    labels = torch.randn(b, n, generator=g) * 3
    return q, cands, labels


def test_kl_equals_its_definition() -> None:
    q, cands, t = _data()
    loss = EuclideanDistillKLLoss(temperature=5.0, teacher_temperature=2.0)
    got = loss.compute_loss_from_embeddings([q, *cands], t)
    want = 0.0
    for i in range(q.shape[0]):
        s = [-float(((q[i] - c[i]) ** 2).sum()) / 5.0 for c in cands]
        ls = [x - math.log(sum(math.exp(y) for y in s)) for x in s]
        pt = [math.exp(x / 2.0) for x in t[i].tolist()]
        pt = [x / sum(pt) for x in pt]
        want += sum(p * (math.log(p) - lsj) for p, lsj in zip(pt, ls, strict=True))
    assert got.item() == pytest.approx(want / q.shape[0], rel=1e-5)


def test_margin_mse_equals_its_definition() -> None:
    q, cands, t = _data()
    loss = EuclideanMarginMSELoss(temperature=5.0, teacher_temperature=2.0)
    got = loss.compute_loss_from_embeddings([q, *cands], t)
    s = student_scores(q, cands, "squared", 5.0)
    errs = [((s[i, 0] - s[i, j]) - (t[i, 0] - t[i, j]) / 2.0).item() ** 2
            for i in range(q.shape[0]) for j in range(1, len(cands))]
    assert got.item() == pytest.approx(sum(errs) / len(errs), rel=1e-5)


def test_equal_to_sentence_transformers_on_cosine() -> None:
    from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss, MarginMSELoss
    from sentence_transformers.util import pairwise_cos_sim

    q, cands, t = _data()
    ours = EuclideanDistillKLLoss(temperature=0.5, teacher_temperature=2.0, score="cos")
    st = DistillKLDivLoss(None, similarity_fct=pairwise_cos_sim, student_temperature=0.5,
                          teacher_temperature=2.0)
    a = ours.compute_loss_from_embeddings([q, *cands], t)
    b = st.compute_loss_from_embeddings([q, *cands], t)
    assert a.item() * 0.5**2 == pytest.approx(b.item(), rel=1e-5)

    ours_m = EuclideanMarginMSELoss(temperature=1.0, teacher_temperature=1.0, score="cos")
    st_m = MarginMSELoss(None, similarity_fct=pairwise_cos_sim)
    a = ours_m.compute_loss_from_embeddings([q, *cands], t)
    b = st_m.compute_loss_from_embeddings([q, *cands], t[:, :1] - t[:, 1:])
    assert a.item() == pytest.approx(b.item(), rel=1e-5)


def test_gradients_flow_and_bad_labels_are_refused() -> None:
    q, cands, t = _data()
    q.requires_grad_(True)
    EuclideanDistillKLLoss().compute_loss_from_embeddings([q, *cands], t).backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    loss = EuclideanDistillKLLoss()
    with pytest.raises(ValueError, match="shape"):
        loss.compute_loss_from_embeddings([q, *cands], t[:, :2])
    with pytest.raises(ValueError, match="NaN or inf"):
        loss.compute_loss_from_embeddings([q, *cands], t.masked_fill(t > 0, float("nan")))
    with pytest.raises(ValueError, match="labels"):
        loss.compute_loss_from_embeddings([q, *cands], None)
    with pytest.raises(ValueError, match="columns"):
        loss.compute_loss_from_embeddings([q, cands[0]], t[:, :1])
    with pytest.raises(ValueError, match="temperature"):
        EuclideanMarginMSELoss(temperature=0.0)
