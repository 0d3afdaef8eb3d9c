"""``train(config)``: a Gaussian encoder trained with sentence-transformers' own trainer
(:class:`~ragcun.training.hf_trainer.RagcunTrainer`), resumable, on one device or under torchrun; its data,
model, loss and arguments built from one :class:`~ragcun.training.config.TrainConfig`."""

from __future__ import annotations

import logging
import time
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ragcun.files import write_json
from ragcun.gemma import check_mixed_precision
from ragcun.modeling.card import describe_model
from ragcun.training.callbacks import (
    BestModelCallback,
)
from ragcun.training.config import ConfigError, TrainConfig, run_record
from ragcun.training.data import (
    build_evaluator,
    calibration_texts,
    column_prompts,
    load_train_dataset,
    text_columns,
)
from ragcun.training.hf_trainer import RagcunTrainer
from ragcun.training.session import (
    build_training_args,
    head_learning_rates,
    reporters,
    resume_checkpoint,
    versions,
    world_size_from_env,
)

logger = logging.getLogger(__name__)



# ---------------------------------------------------------------------------- model and loss
def build_model(cfg: TrainConfig, device: str | None = None):
    """``IsotropicGaussianEncoder(**model)`` of the ``[model]`` table; with ``st_loss`` the base model as it
    is (no head)."""
    from ragcun.modeling import IsotropicGaussianEncoder

    if cfg.base_model is None:
        raise ConfigError("[model] base_model is not set (a sentence-transformers model: alias, path or "
                          "Hub id)")
    if cfg.st_loss != "none":
        model = IsotropicGaussianEncoder(cfg.base_model, freeze_layers=cfg.freeze_layers,
                                         max_seq_length=cfg.max_seq_length, device=device)
        if model.head_modules:
            raise ConfigError(f"st_loss = {cfg.st_loss!r} trains a plain sentence-transformers model; "
                              f"{cfg.base_model} is a ragcun model with a Gaussian head")
    else:
        model = IsotropicGaussianEncoder(**cfg.tables["model"], device=device)
    check_mixed_precision(model, precision(cfg), cfg.base_model)
    return model


def precision(cfg: TrainConfig) -> str:
    """The run's mixed precision as one word: bf16, fp16 or no."""
    return "bf16" if cfg.bf16 else "fp16" if cfg.fp16 else "no"


def build_distillation(cfg: TrainConfig) -> nn.Module | None:
    """The distillation loss on the teacher's scores, or None without a teacher."""
    if cfg.teacher == "none":
        return None
    from ragcun.losses import EuclideanDistillKLLoss, EuclideanMarginMSELoss

    cls = EuclideanDistillKLLoss if cfg.distill_loss == "kl" else EuclideanMarginMSELoss
    return cls(None, temperature=cfg.temperature, teacher_temperature=cfg.teacher_temperature,
               score="squared" if cfg.distance == "squared" else "l2")


def build_st_loss(cfg: TrainConfig, model: nn.Module, world_size: int = 1) -> nn.Module:
    """sentence-transformers' own loss for the peer (``st_loss``), on the model's cosine: MNRL at scale
    ``1 / st_temperature`` on the labels, or DistillKLDivLoss on the teacher's scores with the same
    student temperature and ragcun's teacher temperature (as the Gaussian arms distil)."""
    from sentence_transformers.sentence_transformer.losses import (
        DistillKLDivLoss,
        MultipleNegativesRankingLoss,
    )
    from sentence_transformers.util import pairwise_cos_sim

    if cfg.st_loss == "mnrl":
        gather = bool(cfg.gather_across_devices and world_size > 1)
        return MultipleNegativesRankingLoss(model, scale=1.0 / cfg.st_temperature,
                                            gather_across_devices=gather)
    return DistillKLDivLoss(model, similarity_fct=pairwise_cos_sim, student_temperature=cfg.st_temperature,
                            teacher_temperature=cfg.teacher_temperature)


def build_loss(cfg: TrainConfig, model: nn.Module, world_size: int = 1, corpus_sample: Any = None):
    """``IsotropicGaussianLoss(model, **loss)`` of the ``[loss]`` table, with the run's seed, SIGReg's corpus
    sample and the teacher's distillation loss; with ``st_loss`` sentence-transformers' own loss."""
    from ragcun.losses import IsotropicGaussianLoss

    if cfg.st_loss != "none":
        return build_st_loss(cfg, model, world_size)
    return IsotropicGaussianLoss(model, **cfg.tables["loss"], seed=cfg.seed, corpus_sample=corpus_sample,
                                 distillation=build_distillation(cfg))


def _pin_eval(module: nn.Module) -> None:
    """Keep a frozen base in eval mode (no dropout) even when the trainer calls ``model.train()``.

    A frozen base is a fixed feature extractor; dropout in it would only add noise, and would make
    the slow path differ from the cached-feature fast path.
    """
    def train(self: nn.Module, mode: bool = True) -> nn.Module:
        return nn.Module.train(self, False)

    for sub in module.modules():
        sub.train = types.MethodType(train, sub)  # type: ignore[method-assign]
    nn.Module.train(module, False)


def validation_curve(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Every validation the trainer logged, step 0 included: step, NDCG@10 and the isotropy numbers."""
    curve = []
    for entry in log_history:
        vals = {k.removeprefix("eval_val_"): float(v) for k, v in entry.items()
                if k.startswith("eval_val_") and isinstance(v, int | float)}
        if vals:
            curve.append({"step": int(entry.get("step", 0)), **vals})
    return curve


# ---------------------------------------------------------------------------- entry point
def train(cfg: TrainConfig, callbacks: list | None = None) -> dict[str, Any]:
    """Train one encoder as ``cfg`` says; returns the summary also written to ``train_summary.json``.

    Writes ``output_dir/{checkpoint-N, best, final, tensorboard, train_summary.json}`` (rank 0 only).
    With ``cfg.resume`` it continues from the newest complete checkpoint in ``output_dir``.
    """
    from transformers.integrations import TensorBoardCallback
    from transformers.trainer_utils import set_seed

    cfg.validate()
    if not cfg.train_data:
        raise ConfigError("train_data is not set (config key train_data or --set train_data=PATH)")
    if cfg.train_side == "query":
        from ragcun.training.query_tower import train_query_tower

        return train_query_tower(cfg, callbacks)
    t0 = time.perf_counter()
    world = world_size_from_env()
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)

    distilled = cfg.teacher != "none"
    train_ds, manifest = load_train_dataset(cfg.train_data, cfg.num_negatives if not distilled else 0,
                                            cfg.max_train_samples, with_ids=distilled)
    evaluator = build_evaluator(cfg, batch_size=max(cfg.per_device_train_batch_size, 32))
    fast = bool(cfg.freeze_base and cfg.fast_frozen)
    prefix = bool(not cfg.freeze_base and cfg.freeze_layers > 0 and cfg.fast_prefix)
    # sets up the process group
    args = build_training_args(cfg, has_evaluator=evaluator is not None, cached=fast or prefix)
    if distilled:
        from ragcun.training.teacher import attach_teacher

        with args.main_process_first(local=False, desc="teacher scores"):
            train_ds, manifest["teacher"] = attach_teacher(
                train_ds.select_columns(["query", "positive"]), train_ds["query_id"], train_ds["positive_id"],
                cfg, manifest)
        manifest["columns"] = list(train_ds.column_names)
    set_seed(cfg.seed)
    encoder = build_model(cfg, device="cpu" if fast else None)
    columns = text_columns(train_ds)
    args.prompts = prompts = column_prompts(encoder, columns)  # per column, as at evaluation
    describe_model(encoder, run_record(cfg, len(train_ds)))
    counts = encoder.parameter_counts()
    logger.info("parameters: %s", counts)

    feature_seconds = 0.0
    texts: list[str] = []  # the cached paths' texts, as the model sees them: prompts applied
    if fast or prefix:
        for col in columns:
            texts.extend(prompts.get(col, "") + t for t in train_ds[col])
        if evaluator is not None:
            texts.extend(evaluator.prompted_texts(encoder))
    if fast:
        from ragcun.training.frozen import build_fast_model

        tf = time.perf_counter()
        with args.main_process_first(local=False, desc="base features"):
            model = build_fast_model(encoder, encoder.base_modules, encoder.head_modules, texts,
                                     encoder.max_seq_length, batch_size=cfg.feature_batch_size)
        feature_seconds = time.perf_counter() - tf
    elif prefix:
        from ragcun.training.prefix import build_prefix_model

        tf = time.perf_counter()
        with args.main_process_first(local=False, desc="cached prefix"):
            model = build_prefix_model(encoder, cfg.freeze_layers, texts, cfg.train_max_seq_length,
                                       autocast_bf16=bool(cfg.bf16),
                                       batch_size=cfg.feature_batch_size)
        feature_seconds = time.perf_counter() - tf
    else:
        model = encoder
        if cfg.freeze_base:
            for m in encoder.base_modules:
                _pin_eval(m)
    if cfg.head_init != "default" and encoder.head_modules:
        calib = calibration_texts(train_ds, cfg.calibration_samples, documents_only=cfg.head_init == "warm",
                                  prompts=prompts)
        if fast:
            lookup = model[0]
            feats = lookup.table[[lookup.index[t] for t in calib]]
        elif prefix:
            from ragcun.training.prefix import pooled_features

            feats = pooled_features(model, [model[0].index[t] for t in calib], len(encoder.head_modules))
        else:
            # the base's features of these texts, from (and into) the frozen path's cache:
            # shared by every arm
            from ragcun.encoding.features import cached_base_features

            with args.main_process_first(local=False, desc="head initialisation features"):
                table, _ = cached_base_features(encoder, encoder.base_modules, calib, encoder.max_seq_length,
                                                batch_size=cfg.feature_batch_size, show_progress=False)
            feats = torch.from_numpy(table)
        info = encoder.init_head(cfg.head_init, feats, cfg.head_init_power)
        logger.info("head initialised (%s%s) on %d training texts, output scale x%.3g", cfg.head_init,
                    f", whitening power {cfg.head_init_power:g}" if cfg.head_init_power else "",
                    info["samples"], info["scale"])
    sample = None
    if cfg.sigreg_sample:
        from ragcun.encoding.features import cached_base_features
        from ragcun.training.frozen import CorpusSample

        refresh = None
        if fast:
            table, index = model[0].table, model[0].index
        elif prefix:  # through the layers being trained, recomputed every sigreg_refresh steps
            from ragcun.training.prefix import FeatureRefresh

            index = model[0].index
            sampled = [index[prompts.get(c, "") + t] for c in columns for t in train_ds[c]]
            refresh = FeatureRefresh(model, len(encoder.head_modules), cfg.sigreg_refresh, sampled)
            table = refresh.table
        else:  # the base's features before fine-tuning, cached once: SIGReg shapes the head on them
            texts = list(dict.fromkeys(prompts.get(c, "") + t for c in columns for t in train_ds[c]))
            with args.main_process_first(local=False, desc="corpus-sample features"):
                feats, index = cached_base_features(encoder, encoder.base_modules, texts,
                                                    encoder.max_seq_length, batch_size=cfg.feature_batch_size,
                                                    show_progress=False)
            table = torch.from_numpy(feats).to(encoder.device)
        rows = {c: [index[prompts.get(c, "") + t] for t in train_ds[c]] for c in columns}
        sample = CorpusSample(table, rows["query"], [r for c, v in rows.items() if c != "query" for r in v],
                              encoder.head_modules, cfg.sigreg_sample, cfg.seed, refresh=refresh)
    loss = build_loss(cfg, model, world, sample)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("nothing to train: every parameter is frozen")
    head_rate = head_learning_rates(model, len(encoder.head_modules), cfg.head_learning_rate)
    args.learning_rate_mapping = {**args.learning_rate_mapping, **head_rate}

    resume_from = resume_checkpoint(cfg, args, out)

    def save_full(path: Path) -> None:
        encoder.save(path)

    cbs: list = list(callbacks or [])
    best_cb = None
    if evaluator is not None:
        # sentence-transformers' metric_for_best_model (a validation metric, as transformers names it:
        # val_ndcg@10, val_recall@100, val_isotropy_sigreg_ratio, ...), else the evaluator's primary one
        chosen = (args.metric_for_best_model or "").removeprefix("eval_").removeprefix("val_")
        metric = f"{evaluator.name}_{chosen or evaluator.primary_metric}".replace("val_val_", "val_")
        best_cb = BestModelCallback(out, metric, save_full,
                                    greater_is_better=args.greater_is_better is not False)
        cbs.append(best_cb)
    if "tensorboard" in reporters(cfg):
        tb = TensorBoardCallback()
        tb.logging_dir = str(out / "tensorboard")
        cbs.append(tb)

    Trainer = RagcunTrainer
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, loss=loss, evaluator=evaluator,
                      callbacks=cbs, encoder=encoder)
    tt = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - tt

    summary: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        encoder.save(out / "final")
        if best_cb is None or best_cb.best_step is None:
            encoder.save(out / "best")  # no validation: the final model is the one to use
        samples = (len(train_ds) * cfg.num_train_epochs if cfg.max_steps <= 0
                   else cfg.max_steps * cfg.per_device_train_batch_size * world
                   * cfg.gradient_accumulation_steps)
        summary = {
            "config": cfg.record(),
            "data": manifest,
            "versions": versions(),
            "device": str(args.device),
            "world_size": world,
            "frozen_fast_path": fast,
            "cached_prefix": prefix,
            "parameters": counts,
            "global_steps": int(trainer.state.global_step),
            "resumed_from": resume_from,
            "wall_time_s": time.perf_counter() - t0,
            "train_time_s": train_seconds,
            "feature_time_s": feature_seconds,
            "samples_per_second": float(result.metrics.get("train_samples_per_second",
                                                           samples / max(train_seconds, 1e-9))),
            "train_metrics": {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))},
            "final_loss_stats": dict(getattr(loss, "last_stats", {}) or {}),
            "best": {
                "metric": best_cb.metric if best_cb else None,
                "score": best_cb.best_score if best_cb else None,
                "step": best_cb.best_step if best_cb else None,
            },
            "validation_curve": validation_curve(trainer.state.log_history),
            "best_model": str(out / "best"),
            "final_model": str(out / "final"),
        }
        write_json(out / "train_summary.json", summary)
        logger.info("done in %.1fs: best %s", summary["wall_time_s"], summary["best"])
    if args.world_size > 1:
        trainer.accelerator.wait_for_everyone()
    return summary
