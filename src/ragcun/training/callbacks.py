"""What runs beside the trainer: validation by retrieval, the best model, and atomic checkpoints.

- :class:`RetrievalEvaluator` is a sentence-transformers evaluator: it encodes a small BEIR-style
  validation set, ranks by L2 distance (what ragcun serves), scores NDCG@10 with pytrec_eval and
  measures the isotropy of the document embeddings. The trainer logs its dict (TensorBoard too).
- :class:`BestModelCallback` keeps the best model so far as ``output_dir/best``, a plain
  sentence-transformers directory, written atomically.
- Checkpoints: the HF Trainer writes ``checkpoint-N`` in several steps; a checkpoint only counts
  once :func:`mark_checkpoint_complete` has listed its files (sizes included) in
  ``ragcun_checkpoint.json``. :func:`last_complete_checkpoint` skips anything else, so a run
  killed mid-write resumes from the previous complete checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers.base.evaluation import BaseEvaluator
from transformers import TrainerCallback

from ragcun.io import write_json

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "ragcun_checkpoint.json"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


# ---------------------------------------------------------------------------- retrieval metrics
def ndcg_recall(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], k_values: Sequence[int]) -> dict[str, float]:
    """NDCG@k and Recall@k with pytrec_eval (the evaluation module's ``evaluate_run`` when it exists)."""
    try:
        from ragcun.evaluation.metrics import evaluate_run  # type: ignore[import-not-found]

        res = evaluate_run(qrels, run, list(k_values))
        if isinstance(res, dict) and res:
            flat = {k.lower(): float(v) for k, v in res.items() if isinstance(v, (int, float))}
            if any(key.startswith("ndcg") for key in flat):
                return flat
    except Exception:  # not there yet, or another signature: fall back to pytrec_eval directly
        pass
    import pytrec_eval

    ks = sorted(set(int(k) for k in k_values))
    measures = {f"ndcg_cut.{','.join(map(str, ks))}", f"recall.{','.join(map(str, ks))}"}
    qrels_int = {q: {d: int(s) for d, s in docs.items()} for q, docs in qrels.items() if q in run}
    scores = pytrec_eval.RelevanceEvaluator(qrels_int, measures).evaluate(run)
    out: dict[str, float] = {}
    n = max(len(qrels_int), 1)
    for k in ks:
        out[f"ndcg@{k}"] = sum(v[f"ndcg_cut_{k}"] for v in scores.values()) / n
        out[f"recall@{k}"] = sum(v[f"recall_{k}"] for v in scores.values()) / n
    return out


def isotropy_summary(emb: np.ndarray | torch.Tensor, num_slices: int = 256) -> dict[str, float]:
    """How Gaussian/isotropic a set of embeddings is (the evaluation module's measures when present).

    Fallback: the SIGReg statistic on fixed slices (≈1 for N(0, I)), mean norm, the per-dimension
    variance spread, and the effective rank of the covariance divided by the dimension (1 = isotropic).
    """
    x = torch.as_tensor(np.asarray(emb), dtype=torch.float32)
    try:
        from ragcun.evaluation.isotropy import isotropy_metrics  # type: ignore[import-not-found]

        res = isotropy_metrics(x.numpy())
        if isinstance(res, dict):
            return {k: float(v) for k, v in res.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}
    except Exception:
        pass
    from ragcun.losses.sigreg import SIGReg

    out: dict[str, float] = {}
    sig = SIGReg(num_slices=num_slices, seed=1234).eval()
    with torch.no_grad():
        out["sigreg"] = float(sig(x, distributed=False))
    out["mean_norm"] = float(x.norm(dim=1).mean())
    var = x.var(dim=0)
    out["mean_variance"] = float(var.mean())
    xc = x - x.mean(0, keepdim=True)
    cov = xc.T @ xc / max(x.shape[0] - 1, 1)
    eig = torch.linalg.eigvalsh(cov).clamp_min(0)
    p = eig / eig.sum().clamp_min(1e-12)
    ent = -(p[p > 0] * p[p > 0].log()).sum()
    out["effective_rank_ratio"] = float(ent.exp() / x.shape[1])
    return out


class RetrievalEvaluator(BaseEvaluator):
    """NDCG@10 by L2 distance on a held-out mini-BEIR set, plus isotropy of its document embeddings.

    ``corpus``: doc id → text; ``queries``: query id → text; ``qrels``: query id → {doc id: grade}.
    Ranking is exact (torch top-k over L2 distances, in chunks); the set is small by design.
    """

    def __init__(
        self,
        corpus: dict[str, str],
        queries: dict[str, str],
        qrels: dict[str, dict[str, int]],
        name: str = "val",
        k_values: Sequence[int] = (10, 100),
        batch_size: int = 64,
        measure_isotropy: bool = True,
        show_progress: bool = False,
    ) -> None:
        super().__init__()
        self.doc_ids = list(corpus)
        self.doc_texts = [corpus[d] for d in self.doc_ids]
        self.query_ids = [q for q in queries if q in qrels]
        self.query_texts = [queries[q] for q in self.query_ids]
        self.qrels = {q: qrels[q] for q in self.query_ids}
        if not self.query_ids or not self.doc_ids:
            raise ValueError(f"validation set {name!r} is empty ({len(self.query_ids)} queries, {len(self.doc_ids)} documents)")
        self.name = name
        self.k_values = tuple(sorted(set(k_values)))
        self.batch_size = batch_size
        self.measure_isotropy = measure_isotropy
        self.show_progress = show_progress
        self.primary_metric = "ndcg@10"
        self.greater_is_better = True

    @property
    def texts(self) -> list[str]:
        """Every text this evaluator encodes (the frozen fast path puts them in its feature table)."""
        return self.query_texts + self.doc_texts

    def _encode(self, model: Any, texts: list[str], kind: str) -> torch.Tensor:
        fn: Callable[..., Any] = getattr(model, f"encode_{kind}", None) or model.encode
        emb = fn(texts, batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=self.show_progress)
        return emb.float().cpu()

    def search(self, q: torch.Tensor, d: torch.Tensor, k: int) -> dict[str, dict[str, float]]:
        k = min(k, d.shape[0])
        run: dict[str, dict[str, float]] = {}
        d_sq = d.square().sum(1)
        for start in range(0, q.shape[0], 256):
            qb = q[start : start + 256]
            dist = (qb.square().sum(1, keepdim=True) - 2 * qb @ d.T + d_sq[None]).clamp_min(0)
            vals, idx = torch.topk(-dist, k, dim=1)
            for row in range(qb.shape[0]):
                qid = self.query_ids[start + row]
                run[qid] = {self.doc_ids[j]: float(v) for j, v in zip(idx[row].tolist(), vals[row].tolist(), strict=True)}
        return run

    def __call__(self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                q = self._encode(model, self.query_texts, "query")
                d = self._encode(model, self.doc_texts, "document")
        finally:
            model.train(was_training)
        run = self.search(q, d, max(self.k_values))
        metrics = ndcg_recall(self.qrels, run, self.k_values)
        if self.measure_isotropy:
            metrics.update({f"isotropy_{k}": v for k, v in isotropy_summary(d).items()})
        logger.info("validation (%s, epoch %s, step %s): %s", self.name, epoch, steps,
                    ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        try:
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        except Exception:  # the fast path's stand-in model has no card data worth keeping
            pass
        return metrics


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
        if not metrics:
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
            write_json(self.output_dir / "best.json", {"metric": self.metric, "score": score, "step": state.global_step,
                                                       "epoch": state.epoch})
            logger.info("new best %s = %.4f at step %d → %s", self.metric, score, state.global_step, self.output_dir / "best")


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
