"""The teacher's scores (cached, checksummed) and the cached-prefix fast path through the real trainer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ragcun.config import ConfigError
from ragcun.encoding.fusion import Fusion, bm25_scores, dense_scores, fuse
from ragcun.training.teacher import TeacherSpec, teacher_scores
from ragcun.training.trainer import train

from .test_trainer import base_state, head_state, tiny_cfg


@pytest.fixture(scope="module")
def corpus(scifact_passages):
    return [d["id"] for d in scifact_passages[:80]], [d["text"] for d in scifact_passages[:80]]


def test_teacher_scores_equal_the_fused_matrix_and_are_cached(corpus, minilm_path, tmp_path):
    from ragcun.data.bm25 import get_index
    from ragcun.encoding.models import load_model

    ids, texts = corpus
    queries = [texts[5][:50], texts[40][:70], "glucose metabolism in the liver"]
    spec = TeacherSpec("hybrid", minilm_path, Fusion("zscore", {"dense": 1.0, "bm25": 0.5}), candidates=4,
                       score="auto", max_seq_length=64)
    out = teacher_scores(spec, ids, texts, queries, include=[[70], [], [3]], cache_root=tmp_path)
    model, _ = load_model(minilm_path, max_seq_length=64)
    q = model.encode(queries, convert_to_numpy=True)
    d = model.encode(texts, convert_to_numpy=True)
    full = fuse({"dense": dense_scores(q, d, "cos"),
                 "bm25": bm25_scores(get_index(ids, texts, show_progress=False), queries)}, spec.fusion)
    for i in range(3):
        top = list(np.argsort(-full[i], kind="stable")[:5])
        assert out.rows[i][:5].tolist() == top
        np.testing.assert_allclose(out.scores[i], full[i, out.rows[i]], rtol=1e-4, atol=1e-4)
    assert 70 in out.rows[0].tolist() and 3 in out.rows[2].tolist()  # positives always scored
    # a second call reads the file; a changed file or record is refused
    again = teacher_scores(spec, ids, texts, queries, include=[[70], [], [3]], cache_root=tmp_path)
    assert again.path == out.path and all(np.array_equal(a, b) for a, b in zip(again.rows, out.rows,
                                                                                 strict=True))
    data = bytearray(out.path.read_bytes())
    data[-3] ^= 0xFF
    out.path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="checksum"):
        teacher_scores(spec, ids, texts, queries, include=[[70], [], [3]], cache_root=tmp_path)
    meta = out.path.with_suffix(".json")
    record = json.loads(meta.read_text())
    record["inputs"]["corpus"] = "0" * 64
    meta.write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="inputs differ"):
        teacher_scores(spec, ids, texts, queries, include=[[70], [], [3]], cache_root=tmp_path)


def test_cached_prefix_step_equals_full_model_step(triplets_dir, tiny_nodropout_path, tmp_path):
    """Same seed, sampler and optimizer, lower layers frozen: the cached prefix trains the same upper layers
    and head as the full model (dropout off, so train mode is deterministic)."""
    common = ["freeze_layers=1", "max_steps=3", "save_steps=3", "validate_during_training=false",
              "lambda_isotropy=1.0"]
    full = train(tiny_cfg(triplets_dir, tiny_nodropout_path, tmp_path / "full", "fast_prefix=false", *common))
    fast = train(tiny_cfg(triplets_dir, tiny_nodropout_path, tmp_path / "fast", "fast_prefix=true", *common))
    assert fast["cached_prefix"] and not full["cached_prefix"]
    a, b = base_state(tmp_path / "full" / "final"), base_state(tmp_path / "fast" / "final")
    assert a.keys() == b.keys()
    moved = 0
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    ha, hb = head_state(tmp_path / "full" / "final"), head_state(tmp_path / "fast" / "final")
    for k in ha:
        torch.testing.assert_close(hb[k], ha[k], rtol=1e-4, atol=1e-5)
        moved += 1
    assert moved


def test_training_with_a_hybrid_teacher(triplets_dir, tiny_model_path, tmp_path):
    """The teacher's candidates and labels reach the loss: distillation is logged, the model moves."""
    out = train(tiny_cfg(triplets_dir, tiny_model_path, tmp_path / "kd", "teacher=hybrid",
                         "teacher_candidates=3", "max_steps=3", "validate_during_training=false",
                         "freeze_layers=1", "bf16=true", "train_max_seq_length=16"))
    assert out["data"]["columns"] == ["query", "positive", *(f"candidate_{j}" for j in (1, 2, 3)), "label"]
    assert out["data"]["teacher"]["teacher"]["kind"] == "hybrid" and out["cached_prefix"]
    assert out["final_loss_stats"]["distillation"] >= 0 and "contrastive" in out["final_loss_stats"]
    with pytest.raises(ConfigError, match="teacher_candidates must be > 0"):
        train(tiny_cfg(triplets_dir, tiny_model_path, tmp_path / "bad", "teacher=hybrid",
                       "teacher_candidates=0"))


def test_corpus_sample_features_follow_the_trained_layers(tiny_nodropout_path):
    """The SIGReg sample's table on the cached-prefix path is the current model's body output (exact, full
    length), recomputed every ``every`` steps: after the upper layers change, a refresh equals a fresh
    encode of the whole encoder's base."""
    from ragcun.modeling import IsotropicGaussianEncoder
    from ragcun.training.prefix import FeatureRefresh, build_prefix_model

    enc = IsotropicGaussianEncoder(base_model=tiny_nodropout_path, output_dim=8, hidden_dim=16,
                                   max_seq_length=32, freeze_layers=1)
    texts = ["cells divide in the bone marrow", "vitamin d and cancer risk in adults", "short"]
    fast = build_prefix_model(enc, 1, texts, max_train_length=4)
    refresh = FeatureRefresh(fast, len(enc.head_modules), every=2)
    torch.testing.assert_close(refresh.table, enc.base_features(texts), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        for p in enc[0].auto_model.encoder.layer[1].parameters():
            p.add_(0.05 * torch.randn_like(p))
    stale = refresh(1)  # not a refresh step
    torch.testing.assert_close(stale, refresh.table)
    fresh = refresh(2)
    assert not torch.allclose(fresh, stale)
    torch.testing.assert_close(fresh, enc.base_features(texts), rtol=1e-4, atol=1e-5)
