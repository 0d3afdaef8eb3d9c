"""The Gaussian encoder: structure, freezing, parameter groups, and the plain sentence-transformers round
trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize

from ragcun import IsotropicGaussianEncoder


@pytest.fixture(scope="module")
def tiny_encoder(tiny_model_path):
    return IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=16, hidden_dim=24)


def test_structure_keeps_the_base_output_and_adds_head(tiny_encoder, tiny_model_path):
    mods = list(tiny_encoder)
    assert isinstance(mods[-3], Normalize)  # the head starts from the base's own (normalised) output
    assert [type(m) for m in tiny_encoder.head_modules] == [Dense, Dense]
    raw = IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=16, normalize_base=False)
    assert not any(isinstance(m, Normalize) for m in raw)
    assert tiny_encoder.similarity_fn_name == "euclidean"
    assert tiny_encoder.get_embedding_dimension() == 16
    emb = tiny_encoder.encode(["a b c", "d e"])
    assert emb.shape == (2, 16)
    assert not np.allclose(np.linalg.norm(emb, axis=1), 1.0)  # not normalised


def test_linear_head(tiny_model_path):
    enc = IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=8, head="linear")
    assert len(enc.head_modules) == 1 and enc.encode(["x"]).shape == (1, 8)
    with pytest.raises(ValueError, match="head"):
        IsotropicGaussianEncoder(base_model=tiny_model_path, head="conv")


def _step(enc):
    opt = torch.optim.SGD([p for p in enc.parameters() if p.requires_grad], lr=0.5)
    feats = enc.tokenize(["one two three", "four five"])
    out = enc(feats)["sentence_embedding"]
    out.square().sum().backward()
    opt.step()


def test_freeze_base_keeps_base_fixed(tiny_model_path):
    enc = IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=8, freeze_base=True)
    before_base = [p.detach().clone() for p in enc.base_parameters()]
    before_head = [p.detach().clone() for p in enc.head_parameters()]
    _step(enc)
    assert all(torch.equal(a, b) for a, b in zip(before_base, enc.base_parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(before_head, enc.head_parameters(), strict=True))
    counts = enc.parameter_counts()
    assert counts["base_trainable"] == 0 and counts["head_trainable"] == counts["head"] > 0


def test_freeze_layers_freezes_embeddings_and_first_blocks(tiny_model_path):
    enc = IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=8, freeze_layers=1)
    named = dict(enc[0].auto_model.named_parameters())
    before = {k: v.detach().clone() for k, v in named.items()}
    _step(enc)
    for name, p in named.items():
        changed = not torch.equal(before[name], p)
        if name.startswith("embeddings.") or ".layer.0." in name:
            assert not p.requires_grad and not changed, name
        elif ".layer.1." in name and "weight" in name:
            assert p.requires_grad, name
    with pytest.raises(ValueError, match="layers"):
        IsotropicGaussianEncoder(base_model=tiny_model_path, freeze_layers=5)


def test_real_minilm_round_trip_with_plain_sentence_transformers(minilm_path, tmp_path):
    enc = IsotropicGaussianEncoder(base_model="all-MiniLM-L6-v2", output_dim=512)
    texts = ["Isotropic embeddings spread evenly.", "The cat sat on the mat.", "Dense retrieval with L2."]
    emb = enc.encode(texts, convert_to_tensor=True)
    assert emb.shape == (3, 512)
    enc.save(tmp_path / "model")
    plain = SentenceTransformer(str(tmp_path / "model"))
    assert plain.similarity_fn_name == "euclidean"
    emb2 = plain.encode(texts, convert_to_tensor=True)
    assert torch.allclose(emb, emb2, atol=1e-5)
    sim = plain.similarity(emb2, emb2)
    assert torch.allclose(sim, -torch.cdist(emb2, emb2), atol=1e-4)
    cfg = json.loads((tmp_path / "model" / "ragcun_config.json").read_text())
    assert cfg["output_dim"] == 512 and cfg["num_head_modules"] == 2
    again = IsotropicGaussianEncoder.from_pretrained(tmp_path / "model")
    assert len(again.head_modules) == 2
    assert torch.allclose(again.encode(texts, convert_to_tensor=True), emb, atol=1e-5)


def test_prompts_pass_through(tiny_model_path):
    enc = IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=8,
                                   prompts={"query": "query: ", "document": "passage: "})
    q = enc.encode_query(["hello"])
    manual = enc.encode(["query: hello"])
    assert np.allclose(q, manual, atol=1e-6)


def test_save_is_atomic_and_keeps_previous_model(tiny_model_path, tmp_path, monkeypatch):
    enc = IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=8)
    target = tmp_path / "m"
    enc.save(target)
    before = sorted(p.name for p in target.iterdir())

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(SentenceTransformer, "save", boom)
    with pytest.raises(RuntimeError):
        enc.save(target)
    assert sorted(p.name for p in target.iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.")]


def test_calibrate_head_starts_outputs_at_unit_scale(tiny_model_path):
    enc = IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=32)
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(64)]
    before = enc.encode(texts, convert_to_tensor=True)
    assert before.std() < 0.5  # a fresh head is far below the N(0, I) scale
    info = enc.calibrate_head(enc.base_features(texts))
    after = enc.encode(texts, convert_to_tensor=True)
    assert info["samples"] == 64
    assert after.mean(0).abs().max() < 1e-4
    assert abs(after.std().item() - 1.0) < 0.02
    assert enc.ragcun_config["head_init"]["method"] == "calibrated"


@pytest.mark.parametrize("head", ["mlp", "linear"])
def test_warm_start_is_the_base_map_exactly(tiny_model_path, head):
    """The warm-started head computes s·P(x − μ) exactly (the MLP through GELU(z) − GELU(−z) = z): centred,
    unit average variance, and every pairwise L2 distance is the base's times one scale."""
    enc = IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=48, head=head, hidden_dim=80)
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(64)]
    feats = enc.base_features(texts)
    info = enc.warm_start_head(feats)
    out = enc.encode(texts, convert_to_tensor=True).double()
    assert info["rank"] == 32 and info["retained_variance"] > 0.999999
    assert out.mean(0).abs().max() < 1e-4
    assert abs(out.var(0, unbiased=True).mean().item() - 1.0) < 1e-3
    base = feats.double()
    ratio = torch.cdist(out, out) / torch.cdist(base, base).clamp_min(1e-12)
    off = ~torch.eye(64, dtype=torch.bool)
    assert torch.allclose(ratio[off], torch.full_like(ratio[off], info["scale"]), rtol=1e-4)
    assert enc.ragcun_config["head_init"]["method"] == "warm"


@pytest.mark.parametrize("head", ["mlp", "linear"])
def test_whitened_start_has_the_identity_covariance(tiny_model_path, head):
    """power = 1 whitens the fitting features exactly (covariance I over the kept axes, centred); power = 0.5
    halves every eigenvalue's log-spread; ZCA ranks exactly as PCA (the same L2 distances); and a
    numerically empty axis is left empty rather than blown up."""
    from ragcun.modeling import whitening_map

    enc = IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=16, head=head, hidden_dim=40)
    texts = [f"sentence number {i} about topic {i % 7} and {i % 5}" for i in range(96)]
    feats = enc.base_features(texts)
    info = enc.warm_start_head(feats, power=1.0)
    out = enc.encode(texts, convert_to_tensor=True).double()
    assert info["rank"] == 16 and info["power"] == 1.0
    torch.testing.assert_close(torch.cov(out.T), torch.eye(16, dtype=torch.float64), rtol=0, atol=2e-3)
    assert out.mean(0).abs().max() < 1e-4
    half = whitening_map(feats, 16, power=0.5)[0]
    base_ev = torch.linalg.eigvalsh(torch.cov(feats.double().T)).flip(0)[:16]
    half_ev = torch.linalg.eigvalsh(torch.cov((feats.double() @ half.T).T)).flip(0)
    spread = (base_ev[0] / base_ev[-1]).log().item()
    assert (half_ev[0] / half_ev[-1]).log().item() == pytest.approx(spread / 2, rel=1e-3)
    pca, _, _ = whitening_map(feats, 32, power=1.0)
    zca, _, _ = whitening_map(feats, 32, power=1.0, kind="zca")
    x = feats.double()
    torch.testing.assert_close(torch.cdist(x @ pca.T, x @ pca.T), torch.cdist(x @ zca.T, x @ zca.T),
                               rtol=1e-6, atol=1e-4)
    flat = torch.cat([feats, torch.zeros(96, 4)], dim=1)  # four dimensions that never vary
    w, _, flat_info = whitening_map(flat, 36, power=1.0)
    assert flat_info["rank"] <= 32 and torch.isfinite(w).all()
    with pytest.raises(ValueError, match="power"):
        whitening_map(feats, 16, power=1.5)
    with pytest.raises(ValueError, match="ZCA"):
        whitening_map(feats, 16, power=1.0, kind="zca")


def test_warm_start_ranks_like_the_untouched_base(minilm_path, beir_slice):
    """At step 0 a warm-started MiniLM ranks a real SciFact slice by L2 exactly as MiniLM ranks it by
    cosine."""
    from ragcun.data.beir import doc_text, load_beir
    from ragcun.evaluation.beir_eval import evaluate_model

    data_path = beir_slice("scifact", {"test": 20}, extra_docs=100)
    data = load_beir(str(data_path))
    enc = IsotropicGaussianEncoder(base_model=minilm_path, output_dim=512, max_seq_length=128)
    enc.warm_start_head(enc.base_features([doc_text(d) for d in data.corpus.values()]))
    base = SentenceTransformer(minilm_path, device="cpu")
    base.max_seq_length = 128
    warm = evaluate_model(enc, [str(data_path)], score="l2", show_progress_bar=False, cache=False)
    ref = evaluate_model(base, [str(data_path)], score="cos", show_progress_bar=False, cache=False)
    (w,), (r,) = warm["results"].values(), ref["results"].values()
    assert w["ndcg@10"] > 0.5
    assert abs(w["ndcg@10"] - r["ndcg@10"]) < 0.001 and abs(w["recall@100"] - r["recall@100"]) < 0.001
    docs = enc.encode_document([doc_text(d) for d in data.corpus.values()], convert_to_tensor=True)
    assert docs.mean(0).norm() / 512 ** 0.5 < 0.01 and abs(docs.var(0).mean().item() - 1.0) < 0.01
