"""``train(config)``: a Gaussian encoder trained with sentence-transformers' own trainer
(:class:`~ragcun.training.hf_trainer.RagcunTrainer`), resumable, on one device or under torchrun; its data,
model, loss and arguments built from one :class:`~ragcun.training.config.TrainConfig`."""

from __future__ import annotations

import logging
import os
import platform
import time
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ragcun.gemma import check_mixed_precision
from ragcun.io import package_versions, write_json
from ragcun.progress import wanted
from ragcun.training.callbacks import (
    BestModelCallback,
    last_complete_checkpoint,
    remove_incomplete_checkpoints,
)
from ragcun.training.card import describe_model
from ragcun.training.config import ConfigError, TrainConfig
from ragcun.training.data import (
    build_evaluator,
    calibration_texts,
    column_prompts,
    load_train_dataset,
    text_columns,
)
from ragcun.training.hf_trainer import HashedNoDuplicatesBatchSampler, RagcunTrainer

logger = logging.getLogger(__name__)



# ---------------------------------------------------------------------------- model and loss
def build_model(cfg: TrainConfig, device: str | None = None):
    """The Gaussian encoder ``cfg`` describes; with ``st_loss`` the base model as it is (no head)."""
    from ragcun.modeling import IsotropicGaussianEncoder

    if cfg.st_loss != "none":
        model = IsotropicGaussianEncoder(cfg.base_model, freeze_layers=cfg.freeze_layers,
                                         max_seq_length=cfg.max_seq_length, device=device)
        if model.head_modules:
            raise ConfigError(f"st_loss = {cfg.st_loss!r} trains a plain sentence-transformers model; "
                              f"{cfg.base_model} is a ragcun model with a Gaussian head")
        check_mixed_precision(model, cfg.mixed_precision, cfg.base_model)
        return model
    model = IsotropicGaussianEncoder(
        base_model=cfg.base_model, output_dim=cfg.output_dim, head=cfg.head, hidden_dim=cfg.hidden_dim,
        freeze_base=cfg.freeze_base, freeze_layers=cfg.freeze_layers, normalize_base=cfg.normalize_base,
        max_seq_length=cfg.max_seq_length, device=device,
    )
    check_mixed_precision(model, cfg.mixed_precision, cfg.base_model)
    return model


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
    from ragcun.losses import IsotropicGaussianLoss

    if cfg.st_loss != "none":
        return build_st_loss(cfg, model, world_size)
    return IsotropicGaussianLoss(
        model, lambda_isotropy=cfg.lambda_isotropy, lambda_reg=cfg.lambda_reg, temperature=cfg.temperature,
        distance=cfg.distance, num_slices=cfg.num_slices,
        gather_across_devices=bool(cfg.gather_across_devices and world_size > 1), seed=cfg.seed,
        loss_form=cfg.loss_form, sigreg_on=cfg.sigreg_on, slice_policy=cfg.slice_policy,
        principal_slices=cfg.principal_slices, slice_refresh=cfg.slice_refresh, queue_size=cfg.sigreg_queue,
        corpus_sample=corpus_sample, distillation=build_distillation(cfg), lambda_distill=cfg.lambda_distill,
        lambda_contrastive=cfg.lambda_contrastive,
    )


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


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def per_device_batch(global_batch: int, world_size: int) -> int:
    """The per-device batch that keeps ``global_batch``; it must divide evenly."""
    if global_batch % world_size:
        raise ConfigError(f"batch_size={global_batch} is not divisible by the {world_size} processes; "
                          f"use a multiple of {world_size}")
    return global_batch // world_size


def batch_sampler(name: str) -> Any:
    """sentence-transformers' batch sampler ``name``; ``no_duplicates`` as
    :class:`~ragcun.training.hf_trainer.HashedNoDuplicatesBatchSampler` (the same batches, faster)."""
    return HashedNoDuplicatesBatchSampler if name == "no_duplicates" else name


def build_training_args(cfg: TrainConfig, world_size: int = 1, has_evaluator: bool = False,
                        fast: bool = False):
    from sentence_transformers import SentenceTransformerTrainingArguments

    cuda = torch.cuda.is_available() and not cfg.use_cpu
    report_to = [r for r in cfg.report_to if r not in ("tensorboard", "none")] or "none"
    eval_strategy = "no"
    if has_evaluator:
        eval_strategy = "steps" if cfg.eval_steps > 0 else "epoch"
    save_strategy = "steps" if cfg.save_steps > 0 else "epoch"
    kwargs: dict[str, Any] = dict(
        output_dir=cfg.output_dir,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=per_device_batch(cfg.batch_size, world_size),
        per_device_eval_batch_size=per_device_batch(cfg.batch_size, world_size),
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.projection_learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps if cfg.warmup_steps > 0 else cfg.warmup_ratio,
        lr_scheduler_type=cfg.lr_scheduler,
        max_grad_norm=cfg.max_grad_norm,
        fp16=cfg.mixed_precision == "fp16",
        bf16=cfg.mixed_precision == "bf16" and not fast,  # the cached paths autocast their own layers
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        eval_strategy=eval_strategy,
        eval_on_start=bool(has_evaluator and cfg.eval_on_start),
        save_strategy=save_strategy,
        save_total_limit=None,  # ragcun rotates only complete checkpoints (callbacks.rotate_checkpoints)
        report_to=report_to,
        batch_sampler=batch_sampler(cfg.batch_sampler),
        dataloader_num_workers=cfg.dataloader_num_workers,
        dataloader_pin_memory=bool(cuda),  # pinning helps only a GPU copy (on CPU torch warns every epoch)
        ddp_backend=cfg.ddp_backend or (None if cuda else ("gloo" if world_size > 1 else None)),
        ddp_find_unused_parameters=True,  # e.g. BERT pooler weights get no gradient under mean pooling
        use_cpu=cfg.use_cpu,
        disable_tqdm=not wanted(),  # a bar on a terminal; in a log file, the one-line step logs
    )
    if cfg.gradient_checkpointing and not fast:
        import dataclasses

        names = {f.name for f in dataclasses.fields(SentenceTransformerTrainingArguments)}
        key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
        kwargs[key] = True
        kwargs[f"{key}_kwargs"] = {"use_reentrant": False}
    if eval_strategy == "steps":
        kwargs["eval_steps"] = cfg.eval_steps
    if save_strategy == "steps":
        kwargs["save_steps"] = cfg.save_steps
    return SentenceTransformerTrainingArguments(**kwargs)


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
def _versions() -> dict[str, str | None]:
    return {"python": platform.python_version(),
            **package_versions("ragcun", "torch", "sentence-transformers", "transformers", "accelerate",
                               "datasets")}


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
    t0 = time.perf_counter()
    world = world_size_from_env()
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)

    distilled = cfg.teacher != "none"
    train_ds, manifest = load_train_dataset(cfg.train_data, cfg.num_negatives if not distilled else 0,
                                            cfg.max_train_samples, with_ids=distilled)
    evaluator = build_evaluator(cfg, batch_size=max(cfg.batch_size, 32))
    fast = bool(cfg.freeze_base and cfg.fast_frozen)
    prefix = bool(not cfg.freeze_base and cfg.freeze_layers > 0 and cfg.fast_prefix)
    # sets up the process group
    args = build_training_args(cfg, world, has_evaluator=evaluator is not None, fast=fast or prefix)
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
    describe_model(encoder, cfg, len(train_ds))
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
                                     cfg.max_seq_length, batch_size=cfg.feature_batch_size)
        feature_seconds = time.perf_counter() - tf
    elif prefix:
        from ragcun.training.prefix import build_prefix_model

        tf = time.perf_counter()
        with args.main_process_first(local=False, desc="cached prefix"):
            model = build_prefix_model(encoder, cfg.freeze_layers, texts, cfg.train_max_seq_length,
                                       autocast_bf16=cfg.mixed_precision == "bf16",
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
            from ragcun.training.frozen import cached_base_features

            with args.main_process_first(local=False, desc="head initialisation features"):
                table, _ = cached_base_features(encoder, encoder.base_modules, calib, cfg.max_seq_length,
                                                batch_size=cfg.feature_batch_size, show_progress=False)
            feats = torch.from_numpy(table)
        info = encoder.init_head(cfg.head_init, feats, cfg.head_init_power)
        logger.info("head initialised (%s%s) on %d training texts, output scale x%.3g", cfg.head_init,
                    f", whitening power {cfg.head_init_power:g}" if cfg.head_init_power else "",
                    info["samples"], info["scale"])
    sample = None
    if cfg.sigreg_sample:
        from ragcun.training.frozen import CorpusSample, cached_base_features

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
                feats, index = cached_base_features(encoder, encoder.base_modules, texts, cfg.max_seq_length,
                                                    batch_size=cfg.feature_batch_size, show_progress=False)
            table = torch.from_numpy(feats).to(encoder.device)
        rows = {c: [index[prompts.get(c, "") + t] for t in train_ds[c]] for c in columns}
        sample = CorpusSample(table, rows["query"], [r for c, v in rows.items() if c != "query" for r in v],
                              encoder.head_modules, cfg.sigreg_sample, cfg.seed, refresh=refresh)
    loss = build_loss(cfg, model, world, sample)

    resume_from = None
    if cfg.resume:
        if args.should_save:
            for ckpt in remove_incomplete_checkpoints(out):
                logger.warning("removed incomplete checkpoint %s", ckpt)
        ckpt = last_complete_checkpoint(out)
        if ckpt is None:
            logger.warning("--resume: no complete checkpoint in %s; starting from scratch", out)
        else:
            resume_from = str(ckpt)

    def save_full(path: Path) -> None:
        encoder.save(path)

    cbs: list = list(callbacks or [])
    best_cb = None
    if evaluator is not None:
        best_cb = BestModelCallback(
            out, f"{evaluator.name}_{evaluator.primary_metric}".replace("val_val_", "val_"), save_full)
        cbs.append(best_cb)
    if "tensorboard" in cfg.report_to:
        tb = TensorBoardCallback()
        tb.logging_dir = str(out / "tensorboard")
        cbs.append(tb)

    Trainer = RagcunTrainer
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, loss=loss, evaluator=evaluator,
                      callbacks=cbs, encoder=encoder, ragcun_config=cfg)
    tt = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - tt

    summary: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        encoder.save(out / "final")
        if best_cb is None or best_cb.best_step is None:
            encoder.save(out / "best")  # no validation: the final model is the one to use
        samples = (len(train_ds) * cfg.epochs if cfg.max_steps <= 0
                   else cfg.max_steps * cfg.batch_size * cfg.gradient_accumulation_steps)
        summary = {
            "config": cfg.to_dict(),
            "data": manifest,
            "versions": _versions(),
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
