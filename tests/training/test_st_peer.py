"""The sentence-transformers peer (``st_loss``): sentence-transformers' own losses on the plain base, trained
through ragcun's fast path, are sentence-transformers' own recipe, step for step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer

from ragcun.config import ConfigError
from ragcun.training.trainer import train

from .test_trainer import tiny_cfg

PEER = ["lambda_isotropy=0", "validate_during_training=false", "freeze_layers=1", "max_steps=3",
        "save_steps=3"]


def _state(path: Path) -> dict[str, torch.Tensor]:
    return SentenceTransformer(str(path), device="cpu").state_dict()


def test_mnrl_peer_is_sentence_transformers_own_trainer(triplets_dir, tiny_nodropout_path, tmp_path):
    """ragcun's cached-prefix MNRL run ends where sentence-transformers' trainer ends on the full model with
    the same layers frozen, the same data, batches, seed and schedule (dropout off, so train mode is
    deterministic)."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from ragcun.training.data import load_train_dataset

    cfg = tiny_cfg(triplets_dir, tiny_nodropout_path, tmp_path / "peer", "st_loss=mnrl", "num_negatives=1",
                   *PEER)
    out = train(cfg)
    assert out["cached_prefix"] and out["parameters"]["head"] == 0

    model = SentenceTransformer(tiny_nodropout_path, device="cpu")
    model.max_seq_length = cfg.max_seq_length
    hf = model[0].auto_model
    hf.embeddings.requires_grad_(False)
    hf.encoder.layer[0].requires_grad_(False)
    data, _ = load_train_dataset(triplets_dir, 1, None)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "st"), max_steps=3,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps,
        seed=cfg.seed, data_seed=cfg.seed, batch_sampler="no_duplicates", report_to="none",
        save_strategy="no", use_cpu=True, dataloader_pin_memory=False, disable_tqdm=True)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                               loss=MultipleNegativesRankingLoss(model, scale=20.0)).train()

    ours, theirs = _state(tmp_path / "peer" / "final"), model.state_dict()
    assert ours.keys() == theirs.keys()
    start = _state(Path(tiny_nodropout_path))
    moved = [k for k in ours if not torch.equal(start[k], theirs[k])]
    assert moved, "the reference did not train"
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-4, atol=1e-5)


def test_distillation_peer_saves_a_plain_cosine_model(triplets_dir, tiny_model_path, tmp_path):
    """DistillKLDivLoss on the hybrid teacher's candidates: the saved model is the base (its cosine, no head),
    moved, and loadable by plain sentence-transformers."""
    out = train(tiny_cfg(triplets_dir, tiny_model_path, tmp_path / "kd", "st_loss=distill_kl",
                         "teacher=hybrid", "teacher_candidates=3", "bf16=true",
                         "train_max_seq_length=16", *PEER))
    assert out["data"]["columns"][-1] == "label" and out["cached_prefix"]
    saved = SentenceTransformer(str(tmp_path / "kd" / "best"), device="cpu")
    base = SentenceTransformer(tiny_model_path, device="cpu")
    assert saved.similarity_fn_name == base.similarity_fn_name
    assert saved.get_embedding_dimension() == base.get_embedding_dimension()
    assert [type(m).__name__ for m in saved] == [type(m).__name__ for m in base]
    config = json.loads((tmp_path / "kd" / "best" / "ragcun_config.json").read_text())
    assert config["num_head_modules"] == 0 and config["run"]["training"]["st_loss"] == "distill_kl"
    assert any(not torch.equal(a, b) for a, b in zip(saved.state_dict().values(), base.state_dict().values(),
                                                       strict=True))


@pytest.mark.parametrize(("extra", "message"), [
    (["st_loss=mnrl"], "st_loss = 'mnrl' .*: set lambda_isotropy = 0.0 \\(got 1.0\\)"),
    (["st_loss=mnrl", "lambda_isotropy=0", "teacher=hybrid"], "set teacher = 'none'"),
    (["st_loss=distill_kl", "lambda_isotropy=0"], "set teacher \\(hybrid, dense or bm25\\)"),
    (["st_loss=mnrl", "lambda_isotropy=0", "freeze_base=true"], "set freeze_base = False"),
])
def test_peer_config_is_checked(triplets_dir, tiny_model_path, tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        tiny_cfg(triplets_dir, tiny_model_path, tmp_path / "bad", *extra)
