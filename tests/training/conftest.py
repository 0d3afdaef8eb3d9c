"""Fixtures for training tests: a tiny triplets folder built from real SciFact (train qrels, random
negatives) by `build_triplets` itself, and a dropout-free tiny BERT."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


def make_triplets(source: Path, out: Path, n_train: int = 24, n_val_queries: int = 8, n_val_docs: int = 40,
                  num_negatives: int = 2, seed: int = 0) -> Path:
    """A real-text triplets folder (random negatives) written by ``build_triplets``, as `ragcun data triplets`
    does."""
    from ragcun.data.triplets import build_triplets

    build_triplets(source, out, max_train_samples=n_train, val_size=n_val_queries, val_corpus_size=n_val_docs,
                   negatives="random", num_negatives=num_negatives, seed=seed, show_progress=False,
                   cache_index=False)
    return out


@pytest.fixture(scope="session")
def triplets_dir(tmp_path_factory, beir_slice) -> Path:
    source = beir_slice("scifact", {"train": 40}, extra_docs=60, max_chars=300, name="scifact-train")
    return make_triplets(source, tmp_path_factory.mktemp("triplets") / "scifact-tiny")


@pytest.fixture(scope="session")
def tiny_nodropout_path(tmp_path_factory, tiny_model_path) -> str:
    """The tiny BERT with dropout off, so DDP and single-process runs draw no random masks."""
    out = tmp_path_factory.mktemp("tiny-nodrop") / "st"
    shutil.copytree(tiny_model_path, out)
    for cfg in out.rglob("config.json"):
        data = json.loads(cfg.read_text())
        if "hidden_dropout_prob" in data:
            data["hidden_dropout_prob"] = 0.0
            data["attention_probs_dropout_prob"] = 0.0
            cfg.write_text(json.dumps(data, indent=2))
    return str(out)
