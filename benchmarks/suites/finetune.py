"""Fine-tuning on a teacher's scores: ragcun's training settings against sentence-transformers' own trainer.

Real all-MiniLM-L6-v2 on real SciFact train queries, each with its positive and the hybrid teacher's top 8
other candidates (the teacher's scores as labels), batch 16, sequence length 128. The reference is plain
``SentenceTransformerTrainer`` with its ``DistillKLDivLoss`` on the full model in fp32 (what a user would
run); ragcun's rows are ``ragcun train`` with the same data, batches and listwise KL (on L2 scores), full
model in fp32, then the cached prefix (the first 4 of 6 layers frozen and run once), bf16 autocast and
64-token training documents. Training examples per second of the training loop (the trainer's own figure).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from benchmarks.common import DATA_DIR, row, timed


def _setup(tmp: Path, n_train: int) -> Path:
    from ragcun.data.subset import write_subset
    from ragcun.data.triplets import build_triplets

    source = write_subset(Path(DATA_DIR) / "beir" / "scifact", tmp / "scifact-train", {"train": n_train + 2},
                          extra_docs=300)
    build_triplets(source, tmp / "triplets", max_train_samples=n_train, val_size=2, val_corpus_size=4,
                   negatives="random", num_negatives=1, show_progress=False, cache_index=False)
    return tmp / "triplets"


def _reference(tmp: Path, dataset, steps: int) -> float:
    """sentence-transformers' trainer + DistillKLDivLoss, full MiniLM, fp32: train samples/s."""
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss

    from ragcun.resolve import resolve_model

    model = SentenceTransformer(str(resolve_model("all-MiniLM-L6-v2").location), device="cpu")
    model.max_seq_length = 128
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp / "st"), per_device_train_batch_size=16, max_steps=steps, learning_rate=1e-4,
        report_to="none", save_strategy="no", logging_steps=1000, disable_tqdm=True, seed=42, use_cpu=True,
        dataloader_pin_memory=False)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset,
                                         loss=DistillKLDivLoss(model))
    result = trainer.train()
    return float(result.metrics["train_samples_per_second"])


def run(quick: bool = False) -> dict:
    from ragcun.training import load_config, train
    from ragcun.training.data import load_train_dataset
    from ragcun.training.teacher import attach_teacher

    n_train = 48 if quick else 160
    steps = n_train // 16
    settings = {
        "full model, fp32": [],
        "cached prefix (4 of 6 layers frozen), fp32": ["freeze_layers=4"],
        "cached prefix, bf16": ["freeze_layers=4", "bf16=true"],
        "cached prefix, bf16, 64-token documents": ["freeze_layers=4", "bf16=true",
                                                    "train_max_seq_length=64"],
    }
    ours: dict[str, list[float]] = {k: [] for k in settings}
    ref: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ragcun-bench-finetune-") as tmpdir:
        tmp = Path(tmpdir)
        os.environ["RAGCUN_CACHE_DIR"] = str(tmp / "cache")
        triplets = _setup(tmp, n_train)
        common = [f"train_data={triplets}", "base_model=all-MiniLM-L6-v2", "max_seq_length=128",
                  "per_device_train_batch_size=16", "num_train_epochs=1", "validate_during_training=false",
                  "report_to=[]",
                  "save_steps=100000", "logging_steps=1000", "teacher=hybrid", "teacher_candidates=8",
                  "lambda_contrastive=0", "lambda_isotropy=0", "learning_rate=1e-4", "head_init=default",
                  "head_init_power=0"]
        for name, extra in settings.items():
            cfg = load_config(None, [*common, *extra, f"output_dir={tmp / name.replace(' ', '_')}"])
            (_t,), out = timed(lambda cfg=cfg: train(cfg), reps=1)
            ours[name].append(out["samples_per_second"])
        cfg = load_config(None, [*common, f"output_dir={tmp / 'data'}"])
        ds, manifest = load_train_dataset(triplets, 0, None, with_ids=True)
        kd, _ = attach_teacher(ds.select_columns(["query", "positive"]), ds["query_id"], ds["positive_id"],
                               cfg, manifest)
        ref.append(_reference(tmp, kd, steps))
    inputs = {"model": "all-MiniLM-L6-v2", "examples": n_train, "candidates": 9, "batch_size": 16,
              "max_seq_length": 128, "teacher": "MiniLM cosine + 0.5 BM25 (z-scores)"}
    return {
        "suite": "finetune",
        "inputs": inputs,
        "rows": [row("fine-tuning on teacher scores", "train samples/s", f"ragcun: {name}", vals,
                     "sentence-transformers trainer, DistillKLDivLoss, full model fp32", ref)
                 for name, vals in ours.items()],
        "notes": [
            "The cached-prefix step equals a full-model step with the same layers frozen "
            "(tests/training/test_teacher.py); bf16 and shorter documents change the numbers, not the model.",
            "Samples/s of the training loop alone; the prefix cache is filled once per text set and shared "
            "by every arm (its time is in the run's feature_time_s).",
        ],
    }
