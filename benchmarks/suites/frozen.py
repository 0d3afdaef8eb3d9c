"""Frozen base: one training epoch on cached base features vs running the frozen base every step.

Real all-MiniLM-L6-v2 on real SciFact train triplets (random negatives). Three timings per epoch:
the slow path (base forward every batch), the fast path with a cold feature cache (encodes each
distinct text once, then trains), and the fast path with a warm cache (a second arm or epoch).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from benchmarks.common import DATA_DIR, REPO, row, timed


def _setup(tmp: Path, n_train: int) -> Path:
    sys.path.insert(0, str(Path(REPO) / "tests" / "training"))
    from conftest import make_triplets  # the same real-data builder the tests use

    return make_triplets(Path(DATA_DIR), tmp / "triplets", n_train=n_train, n_val_queries=2, n_val_docs=4,
                         num_negatives=1)


def run(quick: bool = False) -> dict:
    from ragcun.training import load_config, train

    n_train = 32 if quick else 256
    seq = 64 if quick else 128
    with tempfile.TemporaryDirectory(prefix="ragcun-bench-frozen-") as tmpdir:
        tmp = Path(tmpdir)
        triplets = _setup(tmp, n_train)
        os.environ["RAGCUN_CACHE_DIR"] = str(tmp / "cache")

        def cfg(name: str, fast: bool):
            return load_config(None, [f"train_data={triplets}", "base_model=all-MiniLM-L6-v2", "freeze_base=true",
                                      f"fast_frozen={'true' if fast else 'false'}", f"max_seq_length={seq}",
                                      "batch_size=16", "epochs=1", "validate_during_training=false", "report_to=[]",
                                      f"output_dir={tmp / name}", "save_steps=100000", "logging_steps=1000"])

        slow_t, slow = timed(lambda: train(cfg("slow", False)), reps=1)
        cold_t, cold = timed(lambda: train(cfg("cold", True)), reps=1)
        warm_t, warm = timed(lambda: train(cfg("warm", True)), reps=1)
    inputs = {"model": "all-MiniLM-L6-v2", "triplets": n_train, "negatives": 1, "max_seq_length": seq,
              "batch_size": 16, "texts_per_epoch": n_train * 3}
    return {
        "suite": "frozen",
        "inputs": inputs,
        "rows": [
            row("epoch, frozen base", "seconds", "fast path, cold feature cache", cold_t, "slow path (base every step)",
                slow_t, higher_is_better=False, feature_seconds=cold["feature_time_s"]),
            row("epoch, frozen base", "seconds", "fast path, warm feature cache", warm_t, "slow path (base every step)",
                slow_t, higher_is_better=False, feature_seconds=warm["feature_time_s"]),
            row("epoch, frozen base", "train samples/s", "fast path (train loop only)", [warm["samples_per_second"]],
                "slow path", [slow["samples_per_second"]]),
        ],
        "notes": [
            "Slow and fast paths train the same head (tests/training/test_trainer.py checks equality).",
            "Cold includes encoding every distinct text once; warm is what later epochs/arms pay.",
        ],
    }
