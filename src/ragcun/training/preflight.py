"""``ragcun preflight``: catch in a minute what would otherwise fail an hour into a run.

Checks GPU visibility, free disk, dependencies, that the config's data and model load, and runs
real training steps on a tiny batch (same code path as ``ragcun train``, into a temporary dir).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ragcun.training.config import TrainConfig

logger = logging.getLogger(__name__)

REQUIRED = ("torch", "sentence_transformers", "transformers", "accelerate", "datasets", "safetensors")
OPTIONAL = {"tensorboard": "TensorBoard logs", "pytrec_eval": "validation NDCG", "faiss": "retrieval"}


@dataclass
class Check:
    name: str
    status: str  # "pass" | "warn" | "fail"
    detail: str
    seconds: float = 0.0


def _timed(name: str, fn) -> Check:
    t = time.perf_counter()
    try:
        status, detail = fn()
    except Exception as exc:  # a preflight reports, it does not crash
        status, detail = "fail", f"{type(exc).__name__}: {exc}"
    return Check(name, status, detail, time.perf_counter() - t)


def check_gpu(cfg: TrainConfig) -> tuple[str, str]:
    import torch

    if not torch.cuda.is_available():
        if cfg.fp16:
            return "fail", "no CUDA GPU visible and fp16 = true needs one"
        return "warn", "no CUDA GPU visible: training runs on CPU"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if cfg.bf16 and not torch.cuda.is_bf16_supported():
        return "fail", f"{names[0]} does not support bf16; use fp16 = true"
    mem = torch.cuda.get_device_properties(0).total_memory / 2**30
    return "pass", f"{len(names)} GPU(s): {', '.join(names)} ({mem:.0f} GiB each)"


def check_disk(cfg: TrainConfig, min_gb: float = 2.0, want_gb: float = 20.0) -> tuple[str, str]:
    target = Path(cfg.output_dir).resolve()
    probe = target
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 2**30
    if free < min_gb:
        return "fail", f"{free:.1f} GiB free at {probe} (< {min_gb} GiB)"
    return ("pass" if free >= want_gb else "warn"), f"{free:.1f} GiB free at {probe}"


def check_dependencies() -> tuple[str, str]:
    missing, have = [], []
    for mod in REQUIRED:
        try:
            importlib.import_module(mod)
            have.append(f"{mod} {md.version(mod.replace('_', '-'))}")
        except ImportError:
            missing.append(mod)
        except md.PackageNotFoundError:
            have.append(mod)
    if missing:
        return "fail", f"missing: {', '.join(missing)} (pip install 'ragcun[all]')"
    absent = [f"{m} ({why})" for m, why in OPTIONAL.items() if importlib.util.find_spec(m) is None]
    detail = "; ".join(have[:4]) + (f"; optional missing: {', '.join(absent)}" if absent else "")
    return ("warn" if absent else "pass"), detail


def check_data(cfg: TrainConfig) -> tuple[str, str]:
    from ragcun.training.data import build_evaluator, load_train_dataset

    if not cfg.train_data:
        return "fail", "train_data is not set"
    ds, _ = load_train_dataset(cfg.train_data, cfg.num_negatives, None)
    detail = f"train: {len(ds)} rows, columns {', '.join(ds.column_names)}"
    ev = build_evaluator(cfg)
    if ev is None:
        return "warn", detail + "; no validation set (no best-model selection)"
    return "pass", detail + f"; validation: {len(ev.query_ids)} queries, {len(ev.doc_ids)} documents"


def check_model(cfg: TrainConfig) -> tuple[str, str]:
    from ragcun.resolve import resolve_model
    from ragcun.training.trainer import build_model

    res = resolve_model(cfg.base_model)
    model = build_model(cfg, device="cpu")
    c = model.parameter_counts()
    return "pass", (f"{cfg.base_model} → {res.location} ({res.source}); trainable base "
                    f"{c['base_trainable']:,}, head {c['head_trainable']:,}")


def check_training(cfg: TrainConfig, steps: int = 2) -> tuple[str, str]:
    import math

    from ragcun.training.trainer import train

    with tempfile.TemporaryDirectory(prefix="ragcun-preflight-") as tmp:
        batch = min(cfg.per_device_train_batch_size, 4)
        tiny = cfg.replace(output_dir=tmp, max_steps=steps, per_device_train_batch_size=batch,
                           gradient_accumulation_steps=1, max_train_samples=batch * steps,
                           max_seq_length=min(cfg.max_seq_length or 64, 64), validate_during_training=False,
                           report_to=[], resume=False, logging_steps=1, save_steps=steps, warmup_steps=0)
        summary = train(tiny)
        stats = summary.get("final_loss_stats", {})
        if summary.get("global_steps") != steps:
            return "fail", f"ran {summary.get('global_steps')} steps instead of {steps}"
        if not all(math.isfinite(float(v)) for v in stats.values()):
            return "fail", f"non-finite loss: {stats}"
        terms = ", ".join(f"{k} {float(v):.3f}" for k, v in stats.items()
                          if k in ("contrastive", "sigreg", "infonce", "distill"))
        return "pass", f"{steps} steps at batch {batch} on {summary['device']}: {terms}"


def run_preflight(cfg: TrainConfig, steps: int = 2) -> list[Check]:
    results = [
        _timed("GPU", lambda: check_gpu(cfg)),
        _timed("disk", lambda: check_disk(cfg)),
        _timed("dependencies", check_dependencies),
        _timed("data", lambda: check_data(cfg)),
        _timed("model", lambda: check_model(cfg)),
    ]
    if any(r.status == "fail" for r in results[2:]):
        results.append(Check("training steps", "fail", "skipped: fix the failures above first"))
    else:
        results.append(_timed("training steps", lambda: check_training(cfg, steps)))
    return results


def print_report(results: list[Check], console) -> None:
    from rich.table import Table

    colour = {"pass": "green", "warn": "yellow", "fail": "red"}
    table = Table(title="ragcun preflight")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    table.add_column("s", justify="right")
    for r in results:
        table.add_row(r.name, f"[{colour[r.status]}]{r.status}[/]", r.detail, f"{r.seconds:.1f}")
    console.print(table)
