"""Fixtures for training tests: a tiny triplets folder built from real SciFact (train qrels,
random negatives), in the layout `ragcun data triplets` writes, and a dropout-free tiny BERT."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest


def _read_jsonl(path: Path, limit_ids: set[str] | None = None) -> dict[str, dict]:
    out = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            obj = json.loads(line)
            if limit_ids is None or obj["_id"] in limit_ids:
                out[obj["_id"]] = obj
    return out


def _qrels(path: Path) -> list[tuple[str, str]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            q, d, s = line.rstrip("\r\n").split("\t")
            if int(s) > 0:
                rows.append((q, d))
    return rows


def make_triplets(data_root: Path, out: Path, n_train: int = 24, n_val_queries: int = 8, n_val_docs: int = 40,
                  num_negatives: int = 2, seed: int = 0) -> Path:
    """A real-text triplets folder: OUT/manifest.json, OUT/train (save_to_disk), OUT/validation (mini BEIR)."""
    import datasets

    sci = data_root / "beir" / "scifact"
    pairs = _qrels(sci / "qrels" / "train.tsv")
    rng = random.Random(seed)
    train_pairs, val_pairs = pairs[:n_train], pairs[n_train : n_train + n_val_queries]
    doc_ids = {d for _, d in pairs[: n_train + n_val_queries]}
    corpus_all = _read_jsonl(sci / "corpus.jsonl")
    extra = sorted(set(corpus_all) - doc_ids)
    rng.shuffle(extra)
    doc_ids |= set(extra[: n_val_docs + 50])
    queries = _read_jsonl(sci / "queries.jsonl", {q for q, _ in pairs[: n_train + n_val_queries]})

    def text(d: str) -> str:
        doc = corpus_all[d]
        return ((doc.get("title") or "") + " " + doc["text"]).strip()[:300]

    pool = sorted(doc_ids)
    rows = {"query": [], "positive": [], **{f"negative_{i + 1}": [] for i in range(num_negatives)}}
    for q, d in train_pairs:
        rows["query"].append(queries[q]["text"])
        rows["positive"].append(text(d))
        negs = [x for x in rng.sample(pool, num_negatives + 1) if x != d][:num_negatives]
        for i, n in enumerate(negs):
            rows[f"negative_{i + 1}"].append(text(n))
    out.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows).save_to_disk(str(out / "train"))
    val = out / "validation"
    (val / "qrels").mkdir(parents=True, exist_ok=True)
    val_docs = sorted({d for _, d in val_pairs} | set(extra[:n_val_docs]))
    with open(val / "corpus.jsonl", "w") as fh:
        for d in val_docs:
            fh.write(json.dumps({"_id": d, "title": "", "text": text(d)}) + "\n")
    with open(val / "queries.jsonl", "w") as fh:
        for q in dict.fromkeys(q for q, _ in val_pairs):
            fh.write(json.dumps({"_id": q, "text": queries[q]["text"]}) + "\n")
    with open(val / "qrels" / "dev.tsv", "w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q, d in val_pairs:
            fh.write(f"{q}\t{d}\t1\n")
    (out / "manifest.json").write_text(json.dumps({"source": "tests: scifact train slice", "rows": n_train}))
    return out


@pytest.fixture(scope="session")
def triplets_dir(tmp_path_factory, data_root) -> Path:
    return make_triplets(data_root, tmp_path_factory.mktemp("triplets") / "scifact-tiny")


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
