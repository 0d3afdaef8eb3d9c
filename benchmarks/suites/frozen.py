"""Frozen base: one training epoch on cached base features vs running the frozen base every step.

Real all-MiniLM-L6-v2 on real SciFact train triplets (random negatives). Three timings per epoch:
the slow path (base forward every batch), the fast path with a cold feature cache (encodes each
distinct text once, then trains), and the fast path with a warm cache (a second arm or epoch).
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import DATA_DIR, row, timed


def _setup(tmp: Path, n_train: int) -> Path:
    from ragcun.data.subset import write_subset
    from ragcun.data.triplets import build_triplets

    source = write_subset(Path(DATA_DIR) / "beir" / "scifact", tmp / "scifact-train", {"train": n_train + 2},
                          extra_docs=60, max_chars=300)
    build_triplets(source, tmp / "triplets", max_train_samples=n_train, val_size=2, val_corpus_size=4,
                   negatives="random", num_negatives=1, show_progress=False, cache_index=False)
    return tmp / "triplets"


def run(quick: bool = False) -> dict:
    from ragcun.training import load_config, train

    n_train = 32 if quick else 256
    seq = 64 if quick else 128
    reps = 1 if quick else 3
    slow_t, cold_t, warm_t, cold_feat, warm_feat, slow_sps, warm_sps = [], [], [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="ragcun-bench-frozen-") as tmpdir:
        tmp = Path(tmpdir)
        triplets = _setup(tmp, n_train)

        def epoch(name: str, fast: bool, cache: str) -> tuple[float, dict]:
            os.environ["RAGCUN_CACHE_DIR"] = str(tmp / cache)  # a fresh name = a cold feature cache
            cfg = load_config(None, [f"train_data={triplets}", "base_model=all-MiniLM-L6-v2",
                                     "freeze_base=true", f"fast_frozen={'true' if fast else 'false'}",
                                     f"max_seq_length={seq}", "per_device_train_batch_size=16",
                                     "num_train_epochs=1",
                                     "validate_during_training=false", "report_to=[]",
                                     f"output_dir={tmp / name}", "save_steps=100000", "logging_steps=1000"])
            (t,), out = timed(lambda: train(cfg), reps=1)
            return t, out

        for i in range(reps):  # interleaved, so drifting load hits all three paths alike
            t, slow = epoch(f"slow-{i}", False, "cache-slow")
            slow_t.append(t), slow_sps.append(slow["samples_per_second"])
            t, cold = epoch(f"cold-{i}", True, f"cache-{i}")
            cold_t.append(t), cold_feat.append(cold["feature_time_s"])
            t, warm = epoch(f"warm-{i}", True, f"cache-{i}")  # the cache the cold run just filled
            warm_t.append(t), warm_feat.append(warm["feature_time_s"]), warm_sps.append(
                warm["samples_per_second"])
    inputs = {"model": "all-MiniLM-L6-v2", "triplets": n_train, "negatives": 1, "max_seq_length": seq,
              "batch_size": 16, "texts_per_epoch": n_train * 3, "repetitions": reps}
    return {
        "suite": "frozen",
        "inputs": inputs,
        "rows": [
            row("epoch, frozen base", "seconds", "fast path, cold feature cache", cold_t,
                "slow path (base every step)", slow_t, higher_is_better=False,
                feature_seconds=round(statistics.median(cold_feat), 3)),
            row("epoch, frozen base", "seconds", "fast path, warm feature cache", warm_t,
                "slow path (base every step)", slow_t, higher_is_better=False,
                feature_seconds=round(statistics.median(warm_feat), 3)),
            row("epoch, frozen base", "train samples/s", "fast path (train loop only)", warm_sps, "slow path",
                slow_sps),
        ],
        "notes": [
            "Slow and fast paths train the same head (tests/training/test_trainer.py checks equality).",
            "Cold includes encoding every distinct text once; warm is what later epochs/arms pay.",
            "Seconds are whole train() calls (model load, data, training, saving the final model).",
        ],
    }
