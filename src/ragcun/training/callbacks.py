"""What runs beside the trainer: the best model, and atomic checkpoints.

(Validation itself is :class:`ragcun.evaluation.validation.RetrievalEvaluator`.)

- :class:`BestModelCallback` keeps the best model so far as ``output_dir/best``, a plain
  sentence-transformers directory, written atomically.
- Checkpoints: the HF Trainer writes ``checkpoint-N`` in several steps; a checkpoint only counts
  once :func:`mark_checkpoint_complete` has listed its files (sizes included) in
  ``ragcun_checkpoint.json``. :func:`last_complete_checkpoint` skips anything else, so a run
  killed mid-write resumes from the previous complete checkpoint.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback

from ragcun.files import write_json

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "ragcun_checkpoint.json"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


# ---------------------------------------------------------------------------- best model
class BestModelCallback(TrainerCallback):
    """After each evaluation, save the model as ``output_dir/best`` when the metric improves (rank 0 only).

    ``save_fn(path)`` saves the *full* encoder (on the frozen fast path the trainer's model is a
    stand-in). The best score and step live in ``output_dir/best.json`` so a resumed run keeps them.
    """

    def __init__(self, output_dir: str | os.PathLike, metric: str, save_fn: Callable[[Path], None],
                 greater_is_better: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.metric = metric
        self.save_fn = save_fn
        self.greater_is_better = greater_is_better
        self.best_score: float | None = None
        self.best_step: int | None = None
        record = self.output_dir / "best.json"
        if record.exists():
            import json

            try:
                data = json.loads(record.read_text())
                self.best_score, self.best_step = float(data["score"]), int(data["step"])
            except (ValueError, KeyError):
                logger.warning("%s is unreadable; starting best-model tracking afresh", record)

    def _better(self, score: float) -> bool:
        if self.best_score is None:
            return True
        return score > self.best_score if self.greater_is_better else score < self.best_score

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # type: ignore[override]
        # the step-0 evaluation is the curve's start, not a candidate
        if not metrics or state.global_step == 0:
            return
        key = self.metric if self.metric in metrics else f"eval_{self.metric}"
        if key not in metrics:
            logger.warning("metric %s not in the evaluation results (%s); best model not updated",
                           self.metric, ", ".join(sorted(metrics)))
            return
        score = float(metrics[key])
        if not self._better(score):
            return
        self.best_score, self.best_step = score, int(state.global_step)
        if state.is_world_process_zero:
            self.save_fn(self.output_dir / "best")
            write_json(self.output_dir / "best.json", {"metric": self.metric, "score": score,
                                                       "step": state.global_step, "epoch": state.epoch})
            logger.info("new best %s = %.4f at step %d → %s", self.metric, score, state.global_step,
                        self.output_dir / "best")


# ---------------------------------------------------------------------------- checkpoints
def checkpoint_step(path: Path) -> int | None:
    m = _CKPT_RE.match(path.name)
    return int(m.group(1)) if m else None


def mark_checkpoint_complete(ckpt: str | os.PathLike, step: int) -> Path:
    """List every file of a finished checkpoint with its size; written last, atomically."""
    ckpt = Path(ckpt)
    files = {
        str(p.relative_to(ckpt)): p.stat().st_size
        for p in sorted(ckpt.rglob("*"))
        if p.is_file() and p.name != COMPLETE_MARKER
    }
    return write_json(ckpt / COMPLETE_MARKER, {"step": int(step), "files": files})


def checkpoint_is_complete(ckpt: str | os.PathLike) -> bool:
    import json

    ckpt = Path(ckpt)
    marker = ckpt / COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError):
        return False
    for rel, size in files.items():
        p = ckpt / rel
        if not p.is_file() or p.stat().st_size != size:
            return False
    return bool(files)


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [p for p in out.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def last_complete_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint whose files all match its completion record; incomplete ones are logged."""
    for ckpt in reversed(list_checkpoints(output_dir)):
        if checkpoint_is_complete(ckpt):
            return ckpt
        logger.warning("skipping incomplete checkpoint %s (interrupted while saving)", ckpt)
    return None


def remove_incomplete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    removed = []
    for ckpt in list_checkpoints(output_dir):
        if not checkpoint_is_complete(ckpt):
            shutil.rmtree(ckpt, ignore_errors=True)
            removed.append(ckpt)
    return removed


def rotate_checkpoints(output_dir: str | os.PathLike, keep: int | None) -> list[Path]:
    """Delete the oldest complete checkpoints beyond ``keep`` (never the newest complete one)."""
    if keep is None or keep <= 0:
        return []
    complete = [c for c in list_checkpoints(output_dir) if checkpoint_is_complete(c)]
    doomed = complete[: max(len(complete) - max(keep, 1), 0)]
    for ckpt in doomed:
        shutil.rmtree(ckpt, ignore_errors=True)
    return doomed
