"""Training mechanics on a tiny BERT and real SciFact text: optimizer groups, freezing,
the frozen fast path against the slow path, outputs of a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import TrainerCallback

from ragcun.training.config import load_config
from ragcun.training.data import load_train_dataset
from ragcun.training.trainer import build_model, train

REPO = Path(__file__).resolve().parents[2]


def tiny_cfg(triplets_dir, model_path, out, *extra: str):
    return load_config(REPO / "configs" / "train_tiny.toml",
                       [f"train_data={triplets_dir}", f"base_model={model_path}", f"output_dir={out}",
                        *extra])


def head_state(path: Path) -> dict[str, torch.Tensor]:
    model = SentenceTransformer(str(path), device="cpu")
    return {k: v for k, v in model.state_dict().items() if not k.startswith("0.")}


def base_state(path: Path) -> dict[str, torch.Tensor]:
    model = SentenceTransformer(str(path), device="cpu")
    return {k: v for k, v in model.state_dict().items() if k.startswith("0.")}


def test_load_train_dataset_selects_text_columns(triplets_dir):
    ds, manifest = load_train_dataset(triplets_dir, num_negatives=1, max_samples=5)
    assert ds.column_names == ["query", "positive", "negative_1"] and len(ds) == 5
    assert manifest["triplets_manifest"]["counts"]["train_examples"] == 24


def test_bad_training_data_is_named(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"anchor": ["a"], "positive": ["b"]}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"d: training data lacks column\(s\) \['query'\]"):
        load_train_dataset(tmp_path / "d")


@pytest.mark.parametrize("extra", [(), ("freeze_base=true",), ("freeze_base=true", "fast_frozen=false")])
def test_the_head_learns_at_its_own_rate(triplets_dir, tiny_model_path, tmp_path, extra):
    """sentence-transformers' optimizer with ``learning_rate_mapping``: the head's parameters (on the full
    model or a cached path's stand-in) at head_learning_rate, the base's at learning_rate, no decay on biases
    and norms, every trainable parameter once."""
    captured = {}

    class Capture(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, model=None, **kwargs):
            captured["groups"] = [(g["initial_lr"], g["weight_decay"], list(g["params"]))
                                  for g in optimizer.param_groups]
            captured["model"] = model

    cfg = tiny_cfg(triplets_dir, tiny_model_path, tmp_path / "o", "learning_rate=2e-5",
                   "head_learning_rate=1e-3", "weight_decay=0.1", "max_steps=1",
                   "validate_during_training=false", "save_steps=1", *extra)
    train(cfg, callbacks=[Capture()])
    model = captured["model"]
    head_size = 2  # the tiny config's mlp head: two Dense modules, the model's last two
    head = {id(p) for m in list(model)[-head_size:] for p in m.parameters()}
    seen = []
    for lr, decay, params in captured["groups"]:
        for p in params:
            seen.append(id(p))
            assert lr == (1e-3 if id(p) in head else 2e-5)
            assert decay == (0.1 if p.ndim >= 2 else 0.0)
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable) and len(set(seen)) == len(seen)
    assert any(id(p) in head for p in model.parameters()) and (("freeze_base=true" in extra)
                                                              == all(i in head for i in seen))


def test_metric_for_best_model_chooses_the_kept_model(triplets_dir, tiny_model_path, tmp_path):
    """sentence-transformers' metric_for_best_model (and greater_is_better) decide which validation keeps
    best/; without it, NDCG@10."""
    out = tmp_path / "run"
    summary = train(tiny_cfg(triplets_dir, tiny_model_path, out, "max_steps=4", "eval_steps=1",
                             "freeze_base=true", "metric_for_best_model=val_isotropy_sigreg_ratio",
                             "greater_is_better=false"))
    curve = {r["step"]: r["isotropy_sigreg_ratio"] for r in summary["validation_curve"] if r["step"] > 0}
    assert summary["best"]["metric"] == "val_isotropy_sigreg_ratio"
    assert len(curve) == 4 and summary["best"]["step"] == min(curve, key=curve.get)


@pytest.mark.parametrize(("value", "names"), [
    ("none", []), ("tensorboard", ["tensorboard"]), ("tensorboard, wandb", ["tensorboard", "wandb"]),
    ("[]", []), ('["tensorboard", "none"]', ["tensorboard"])])
def test_report_to_reads_every_form_sentence_transformers_takes(value, names):
    from ragcun.training.session import reporters

    assert reporters(load_config(None, [f"report_to={value}"])) == names


def test_freeze_base_slow_path_changes_head_only(triplets_dir, tiny_model_path, tmp_path):
    cfg = tiny_cfg(triplets_dir, tiny_model_path, tmp_path / "run", "freeze_base=true", "fast_frozen=false",
                   "max_steps=2", "validate_during_training=false", "save_steps=2")
    summary = train(cfg)
    assert summary["parameters"]["base_trainable"] == 0
    before = build_model(cfg)
    after = SentenceTransformer(str(tmp_path / "run" / "final"), device="cpu").state_dict()
    for k, v in before.state_dict().items():
        if k.startswith("0."):
            assert torch.equal(v, after[k]), k
    assert any(not torch.equal(v, after[k]) for k, v in before.state_dict().items() if not k.startswith("0."))


def test_freeze_layers_freezes_embeddings_and_first_blocks(minilm_path):
    cfg = load_config(None, [f"base_model={minilm_path}", "freeze_layers=4"])
    model = build_model(cfg, device="cpu")
    named = dict(model.named_parameters())
    assert not any(p.requires_grad for n, p in named.items() if "embeddings" in n)
    assert not any(p.requires_grad for n, p in named.items() if ".layer.3." in n)
    assert all(p.requires_grad for n, p in named.items() if ".layer.4." in n or ".layer.5." in n)


def test_frozen_fast_path_equals_slow_path(triplets_dir, tiny_model_path, tmp_path):
    """Same seed, same sampler, same optimizer: cached features give the same head."""
    common = ["freeze_base=true", "max_steps=4", "save_steps=4", "eval_steps=2", "lambda_isotropy=1.0"]
    slow = train(tiny_cfg(triplets_dir, tiny_model_path, tmp_path / "slow", "fast_frozen=false", *common))
    fast = train(tiny_cfg(triplets_dir, tiny_model_path, tmp_path / "fast", "fast_frozen=true", *common))
    assert fast["frozen_fast_path"] and not slow["frozen_fast_path"]
    hs, hf = head_state(tmp_path / "slow" / "final"), head_state(tmp_path / "fast" / "final")
    assert hs.keys() == hf.keys() and hs
    for k in hs:
        torch.testing.assert_close(hf[k], hs[k], rtol=1e-4, atol=1e-5)
    init = head_state(tmp_path / "slow" / "checkpoint-4")  # sanity: the head did move
    assert init.keys() == hs.keys()
    assert abs(fast["best"]["score"] - slow["best"]["score"]) < 1e-4
    # the base is untouched and saved with the head: best/ is a complete encoder
    bs = base_state(tmp_path / "fast" / "best")
    ref = base_state(tmp_path / "slow" / "best")
    assert all(torch.equal(bs[k], ref[k]) for k in ref)


def test_run_outputs(triplets_dir, tiny_model_path, tmp_path):
    out = tmp_path / "run"
    summary = train(tiny_cfg(triplets_dir, tiny_model_path, out, "max_steps=4",
                             "report_to=[\"tensorboard\"]"))
    assert summary["global_steps"] == 4 and summary["samples_per_second"] > 0
    saved = json.loads((out / "train_summary.json").read_text())
    assert saved["config"]["model"]["output_dim"] == 16 and saved["config"]["training"]["seed"] == 42
    assert saved["data"]["rows"] == 24 and saved["versions"]["torch"]
    assert saved["best"]["metric"] == "val_ndcg@10" and 0 <= saved["best"]["score"] <= 1
    model = SentenceTransformer(str(out / "best"), device="cpu")
    assert model.similarity_fn_name == "euclidean" and model.get_embedding_dimension() == 16
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    assert all((p / "ragcun_checkpoint.json").is_file() for p in out.glob("checkpoint-*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((out / "tensorboard").glob("events.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/contrastive", "train/isotropy", "train/sigreg_raw", "eval/val_ndcg@10"} <= tags
    assert any(t.startswith("eval/val_isotropy_") for t in tags)


@pytest.mark.parametrize("frozen", [True, False])
def test_query_and_document_prompts_reach_training(triplets_dir, tiny_model_path, tmp_path, frozen):
    """A base with query/document prompts (as EmbeddingGemma has): training applies them per column, the
    frozen fast path's feature table holds the prompted texts (a raw text would not be found), the warm
    start sees prompted documents, and the saved model keeps the prompts."""
    from ragcun.training.data import column_prompts

    base = SentenceTransformer(tiny_model_path, device="cpu")
    base.prompts = {"query": "query: ", "document": "passage: "}
    base.save(str(tmp_path / "prompted"))
    cfg = tiny_cfg(triplets_dir, tmp_path / "prompted", tmp_path / "out", "max_steps=2", "save_steps=2",
                   "eval_steps=2", f"freeze_base={'true' if frozen else 'false'}")
    model = build_model(cfg, device="cpu")
    assert column_prompts(model, ["query", "positive", "negative_1"]) == {
        "query": "query: ", "positive": "passage: ", "negative_1": "passage: "}
    from ragcun.training.frozen import FeatureLookup

    seen: set = set()
    original = FeatureLookup.preprocess

    def recording(self, inputs, prompt=None, **kwargs):
        seen.add(prompt)
        return original(self, inputs, prompt=prompt, **kwargs)

    FeatureLookup.preprocess = recording
    try:
        summary = train(cfg)
    finally:
        FeatureLookup.preprocess = original
    assert summary["global_steps"] == 2 and summary["validation_curve"]
    if frozen:  # the collator (training batches) and the evaluator (encode_query/encode_document) pass them
        assert {"query: ", "passage: "} <= seen
    saved = SentenceTransformer(str(tmp_path / "out" / "best"), device="cpu")
    assert saved.prompts["query"] == "query: " and saved.prompts["document"] == "passage: "
    assert column_prompts(SentenceTransformer(tiny_model_path, device="cpu"), ["query", "positive"]) == {}


def test_corpus_scale_sigreg_options_train(triplets_dir, tiny_model_path, tmp_path):
    """SIGReg beyond the batch through the real trainer: on the frozen fast path a fresh uniform sample of the
    training documents per step (pca slices, a whitened start); while fine-tuning, a feature queue. Both
    train, move the head, record their options, and the queue and the principal axes are saved for resume."""
    from safetensors.torch import load_file

    from ragcun.training.frozen import CorpusSample

    common = ["max_steps=3", "save_steps=3", "validate_during_training=false", "slice_policy=pca",
              "principal_slices=4", "head_init_power=0.5", "sigreg_on=separate"]
    seen: list[int] = []
    original = CorpusSample.__call__

    def recording(self, step):
        queries, docs = original(self, step)
        seen.append(docs.shape[0])
        assert docs.requires_grad and len(self.documents) > len(set(self.queries.tolist())) / 4
        return queries, docs

    CorpusSample.__call__ = recording
    try:
        fast = train(tiny_cfg(triplets_dir, tiny_model_path, tmp_path / "fast", "freeze_base=true",
                              "sigreg_sample=40", *common))
    finally:
        CorpusSample.__call__ = original
    assert seen == [40, 40, 40] and fast["config"]["training"]["sigreg_sample"] == 40
    assert json.loads((tmp_path / "fast" / "final" / "ragcun_config.json")
                      .read_text())["head_init"]["power"] == 0.5
    full = train(tiny_cfg(triplets_dir, tiny_model_path, tmp_path / "full", "queue_size=32", *common))
    state = load_file(str(tmp_path / "full" / "checkpoint-3" / "ragcun_loss_state.safetensors"))
    assert state["queue.rows"].shape == (32, 16) and int(state["queue.filled"]) == 32
    assert state["sigreg.axes"].shape == (16, 8) and state["sigreg_queries.axes"].shape == (16, 8)
    assert full["final_loss_stats"]["sigreg"] > 0


@pytest.mark.parametrize(("overrides", "message"), [
    (["freeze_base=true", "sigreg_sample=64", "queue_size=64"], "not both"),
    (["head_init_power=1.5"], "head_init_power must be in"),
    (["head_init=calibrated", "head_init_power=0.5"], "applies to head_init = 'warm'"),
    (["slice_policy=pcaa"], "slice_policy"),
    (["principal_slices=0"], "principal_slices must be > 0"),
])
def test_bad_isotropy_options_are_named(overrides, message):
    from ragcun.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_hashed_no_duplicates_sampler_draws_the_same_batches(triplets_dir):
    """The sampler ragcun hands the trainer (values hashed once) draws exactly the batches of
    sentence-transformers' plain no-duplicates sampler, epoch after epoch, on data with repeated texts, and
    writes nothing beside the training data."""
    import datasets
    import torch
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    from ragcun.training.args import HashedNoDuplicatesBatchSampler, RagcunTrainingArguments

    ds, _ = load_train_dataset(triplets_dir, num_negatives=1)
    ds = datasets.concatenate_datasets([ds, ds.select(range(10))])  # duplicates force deferrals
    before = sorted(p.name for p in triplets_dir.rglob("*"))
    hashed = HashedNoDuplicatesBatchSampler(ds, batch_size=4, drop_last=False, generator=torch.Generator(),
                                            seed=42)
    plain = NoDuplicatesBatchSampler(ds, batch_size=4, drop_last=False, generator=torch.Generator(), seed=42)
    for epoch in range(3):
        hashed.set_epoch(epoch)
        plain.set_epoch(epoch)
        assert list(hashed) == list(plain)
    # the default of ragcun's training arguments, and sentence-transformers' own name for it
    out = str(triplets_dir / "x")
    assert RagcunTrainingArguments(output_dir=out).batch_sampler is HashedNoDuplicatesBatchSampler
    named = RagcunTrainingArguments(output_dir=out, batch_sampler="no_duplicates")
    assert named.batch_sampler is HashedNoDuplicatesBatchSampler
    assert sorted(p.name for p in triplets_dir.rglob("*")) == before  # no datasets cache file beside the data
