"""What every training entry point sets up the same way: the trainer's arguments from ``[training]``, the
reporting integrations, the head's own learning rate, the checkpoint to resume from and the versions a
summary records (for :func:`ragcun.training.trainer.train` and
:func:`ragcun.training.query_tower.train_query_tower`)."""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

from torch import nn

from ragcun.files import package_versions
from ragcun.training.callbacks import last_complete_checkpoint, remove_incomplete_checkpoints
from ragcun.training.config import ConfigError, TrainConfig

logger = logging.getLogger(__name__)


def world_size_from_env() -> int:
    """The number of processes torchrun launched (1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def build_training_args(cfg: TrainConfig, has_evaluator: bool = False, cached: bool = False):
    """``RagcunTrainingArguments(**training)`` of the ``[training]`` table, for this run: no evaluation
    without validation data; the cached paths (``cached``) autocast their own layers, so the trainer's bf16
    and activation checkpointing are off there; TensorBoard is ragcun's own callback (its logs under
    ``output_dir/tensorboard``)."""
    from ragcun.training.args import RagcunTrainingArguments

    values = dict(cfg.tables["training"])
    if not has_evaluator:
        values.update(eval_strategy="no", eval_on_start=False)
    if cached:
        values.update(bf16=False, activation_checkpointing=False)
        values.pop("gradient_checkpointing", None)
    values["report_to"] = [r for r in reporters(cfg) if r != "tensorboard"] or "none"
    try:
        return RagcunTrainingArguments(**values)
    except ValueError as exc:  # sentence-transformers' and transformers' own checks
        raise ConfigError(f"[training] {exc}") from None


def reporters(cfg: TrainConfig) -> list[str]:
    """``report_to`` as a list of integrations (a list, one name, names joined by commas, or none)."""
    value = cfg.report_to
    names = value if isinstance(value, list) else str(value or "").split(",")
    return [n.strip() for n in names if n.strip() and n.strip() != "none"]


def head_learning_rates(model: nn.Module, head_size: int, rate: float | None) -> dict[str, float]:
    """The ``learning_rate_mapping`` entry that gives the head its own rate: the last ``head_size`` modules of
    the model being trained (the full encoder, or a cached path's stand-in), as the loss names them."""
    if rate is None or not head_size:
        return {}
    names = [name for name, _ in model.named_children()][-head_size:]
    return {rf"^model\.(?:{'|'.join(names)})\.": float(rate)}


def resume_checkpoint(cfg: TrainConfig, args: Any, out: Path) -> str | None:
    """With ``resume``: the newest complete checkpoint in ``out`` (incomplete ones removed), else None."""
    if not cfg.resume:
        return None
    if args.should_save:
        for ckpt in remove_incomplete_checkpoints(out):
            logger.warning("removed incomplete checkpoint %s", ckpt)
    ckpt = last_complete_checkpoint(out)
    if ckpt is None:
        logger.warning("--resume: no complete checkpoint in %s; starting from scratch", out)
        return None
    return str(ckpt)


def versions() -> dict[str, str | None]:
    """The versions a run records in its summary."""
    return {"python": platform.python_version(),
            **package_versions("ragcun", "torch", "sentence-transformers", "transformers", "accelerate",
                               "datasets")}
