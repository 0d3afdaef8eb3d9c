"""``RagcunTrainer``: sentence-transformers' trainer where ragcun needs something else.

- a save writes the *full* encoder (on the frozen fast path the trained model is a stand-in whose head is
  shared with it); a checkpoint adds the loss's state (SIGReg's slice counter and buffers, so a resumed run
  draws the same directions) and is marked complete only once every rank's files are written; a resume
  loads the full encoder back;
- the logged loss components gain the raw SIGReg statistic and the mean embedding norm, as one readable line.

The save and resume steps are transformers' ``Trainer._save`` / ``_save_checkpoint`` /
``_load_from_checkpoint``: the only places where the trainer writes or reads a checkpoint's model, so they are
overridden here, nowhere else.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformerTrainer
from torch import nn

from ragcun.files import atomic_path, write_json
from ragcun.training.callbacks import mark_checkpoint_complete, rotate_checkpoints

logger = logging.getLogger(__name__)

LOSS_STATE = "ragcun_loss_state.safetensors"


class RagcunTrainer(SentenceTransformerTrainer):
    """SentenceTransformerTrainer + full-encoder checkpoints, marked complete atomically, and one log line.
    The optimizer is sentence-transformers' own (the head's rate through ``learning_rate_mapping``)."""

    def __init__(self, *args: Any, encoder: Any, **kwargs: Any) -> None:
        self.encoder = encoder
        super().__init__(*args, **kwargs)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        self.remove_callback(PrinterCallback)  # the raw metric dicts: ragcun logs one readable line instead
        for cb in self.callback_handler.callbacks:
            if isinstance(cb, ProgressCallback):
                cb.on_log = lambda *a, **k: None

    # saving: always the full encoder, atomically
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not self.args.should_save:  # rank 0 only writes (HF may call _save on every rank)
            return
        output_dir = output_dir or self.args.output_dir
        self.encoder.save(output_dir, create_model_card=False)
        write_json(Path(output_dir) / "training_args.json", json.loads(self.args.to_json_string()))

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        keep = self.args.save_total_limit
        self.args.save_total_limit = None  # transformers would rotate before this checkpoint is complete
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = keep
        ckpt = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        if self.args.should_save:
            save_loss_state(self.loss, ckpt / LOSS_STATE)
        if self.args.world_size > 1:
            self.accelerator.wait_for_everyone()  # every rank's RNG state is on disk
        if self.args.should_save:
            mark_checkpoint_complete(ckpt, self.state.global_step)
            rotate_checkpoints(self.args.output_dir, keep)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        logger.info("resuming from %s", resume_from_checkpoint)
        saved = SentenceTransformer(resume_from_checkpoint, device="cpu")
        missing, unexpected = self.encoder.load_state_dict(saved.state_dict(), strict=False)
        if missing or unexpected:
            raise RuntimeError(f"{resume_from_checkpoint}: checkpoint does not match the model "
                               f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        load_loss_state(self.loss, Path(resume_from_checkpoint) / LOSS_STATE)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            stats = getattr(self.loss, "last_stats", None) or {}
            if "sigreg" in stats:
                logs["sigreg_raw"] = float(stats["sigreg"])
            if "mean_norm" in stats:
                logs["mean_norm"] = float(stats["mean_norm"])
            parts = [f"{k} {float(logs[k]):.4g}"
                     for k in ("loss", "contrastive", "isotropy", "sigreg_raw", "mean_norm") if k in logs]
            logger.info("step %d/%d: %s", self.state.global_step, self.state.max_steps, ", ".join(parts))
        super().log(logs, start_time)


def _loss_buffers(loss: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in loss.state_dict().items() if not k.startswith("model.")}


def save_loss_state(loss: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file


    state = {k: v.detach().cpu().contiguous() for k, v in _loss_buffers(loss).items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def load_loss_state(loss: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    if not path.is_file():
        logger.warning("%s missing: the loss state (SIGReg slice counter) starts afresh", path)
        return
    state = load_file(str(path))
    current = _loss_buffers(loss)
    for k, v in state.items():
        if k in current and current[k].shape == v.shape:
            current[k].copy_(v.to(current[k].device))
        elif k in current:  # a buffer that grows on first use (a queue's rows, SIGReg's principal axes)
            owner, _, name = k.rpartition(".")
            loss.get_submodule(owner).register_buffer(name, v.to(current[k].device))
