"""FixedCorpusLoss: InfoNCE over a fixed document table and listwise KL to a teacher, against their
definitions written out by hand, and its refusals of bad input."""

from __future__ import annotations

import math

import pytest
import torch

from ragcun.losses.corpus import FixedCorpusLoss

DOCS = torch.tensor([[0.0, 1.0, 2.0], [1.0, -1.0, 0.5], [2.0, 0.0, -1.0], [-1.0, 0.5, 1.5],
                     [0.5, 0.5, 0.5], [3.0, -2.0, 1.0]])
POSITIVES = [[0, 2], [4], [5]]
CANDIDATES = [[1, 2, 3], [], [0, 5, 4, 1]]
TEACHER = [[0.5, 2.0, -1.0], [], [1.0, 3.0, 0.0, -2.0]]


def by_hand(q: torch.Tensor, rows: list[int], tau: float, big_t: float, lc: float, ld: float) -> float:
    """The loss from its definition, one query and one document at a time, in float64."""
    docs = DOCS.double()
    nces, kls = [], []
    for b, r in enumerate(rows):
        s = [-float(((q[b].double() - d) ** 2).sum()) / tau for d in docs]
        log_z = math.log(sum(math.exp(v) for v in s))
        nces.append(-sum(s[p] - log_z for p in POSITIVES[r]) / len(POSITIVES[r]))
        if CANDIDATES[r]:
            t = [v / big_t for v in TEACHER[r]]
            zt = math.log(sum(math.exp(v) for v in t))
            sc = [s[c] for c in CANDIDATES[r]]
            zs = math.log(sum(math.exp(v) for v in sc))
            kls.append(sum(math.exp(ti - zt) * ((ti - zt) - (si - zs)) for ti, si in zip(t, sc, strict=True)))
    return lc * sum(nces) / len(nces) + (ld * sum(kls) / len(kls) if kls else 0.0)


@pytest.mark.parametrize(("rows", "tau", "big_t", "lc", "ld"), [
    ([0, 1, 2], 2.0, 1.0, 1.0, 1.0),
    ([2, 0], 5.0, 0.5, 0.3, 2.0),
    ([1, 1], 1.0, 1.0, 1.0, 1.0),   # no candidates in the batch: InfoNCE alone
    ([0, 2], 3.0, 1.0, 0.0, 1.0),   # the teacher alone
])
def test_equals_its_definition(rows, tau, big_t, lc, ld):
    torch.manual_seed(0)
    q = torch.randn(len(rows), 3, requires_grad=True)
    loss = FixedCorpusLoss(None, DOCS, POSITIVES, CANDIDATES, TEACHER, temperature=tau,
                           teacher_temperature=big_t, lambda_contrastive=lc, lambda_distill=ld)
    got = loss.compute_loss_from_embeddings(q, torch.tensor(rows))
    assert got.item() == pytest.approx(by_hand(q.detach(), rows, tau, big_t, lc, ld), rel=1e-5, abs=1e-6)
    got.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    assert not loss.documents.requires_grad  # the corpus is fixed: only the queries learn
    assert ("distill" in loss.last_stats) == (ld > 0 and any(CANDIDATES[r] for r in rows))


def test_the_gradient_pulls_a_query_toward_its_positive():
    q = torch.zeros(1, 3, requires_grad=True)
    loss = FixedCorpusLoss(None, DOCS, [[5]], temperature=4.0)
    before = float(((q.detach() - DOCS[5]) ** 2).sum())
    opt = torch.optim.SGD([q], lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        loss.compute_loss_from_embeddings(q, torch.tensor([0])).backward()
        opt.step()
    scores = loss.scores(q.detach())
    assert int(scores.argmax()) == 5 and float(((q.detach() - DOCS[5]) ** 2).sum()) < before


def test_runs_through_a_sentence_transformer(tiny_model_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    dim = model.get_embedding_dimension()
    docs = torch.randn(5, dim)
    loss = FixedCorpusLoss(model, docs, [[0], [3]], [[1, 2], [0, 4]], [[1.0, 0.0], [0.2, 0.1]])
    features = model.preprocess(["vitamin d", "statins and muscle pain"])
    out = loss([features], torch.tensor([0, 1]))
    out.backward()
    assert torch.isfinite(out) and any(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="one text column"):
        loss([features, features], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="label"):
        loss([features], None)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"documents": torch.tensor([[0.0, float("nan")]])}, "NaN or inf"),
    ({"documents": torch.zeros(0, 3)}, "non-empty"),
    ({"positives": [[0], []]}, "at least one judged"),
    ({"positives": [[0], [9]]}, "outside the 6-document table"),
    ({"candidates": [[1], [2, 7]], "teacher_scores": [[1.0], [1.0, 2.0]]}, "outside"),
    ({"candidates": [[1], [2]], "teacher_scores": [[1.0], [1.0, 2.0]]}, "query row 1: 1 candidates but 2"),
    ({"candidates": [[1]], "teacher_scores": [[1.0]]}, "2 queries' positives, 1 candidate lists"),
    ({"candidates": [[1], [2]], "teacher_scores": [[float("inf")], [0.0]]}, "teacher_scores: NaN or inf"),
    ({"temperature": 0.0}, "temperature must be a positive finite"),
    ({"teacher_temperature": float("nan")}, "teacher_temperature must be a positive finite"),
    ({"lambda_distill": -1.0}, "lambda_distill must be a non-negative finite"),
])
def test_refuses_bad_input(kwargs, message):
    args = {"documents": DOCS, "positives": [[0], [1]], **kwargs}
    with pytest.raises(ValueError, match=message):
        FixedCorpusLoss(None, **args)
