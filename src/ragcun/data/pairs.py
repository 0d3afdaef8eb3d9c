"""Unsupervised (anchor, positive) pairs from passages, for training without labels.

- ``crop``: two independent random crops of the same passage (Contriever, Izacard et al. 2022:
  each crop keeps a random contiguous span of ``crop_min``..``crop_max`` of the words);
- ``title``: title -> passage, where the passage has a title.

Input: JSONL passages with ``text`` and optional ``title`` (``ragcun data wiki`` output, or a BEIR
``corpus.jsonl``), or a ``.txt`` file with one passage per line. Output::

    OUT/train/, OUT/validation/   datasets.Dataset.save_to_disk (or OUT/{train,validation}.jsonl)
                                  columns: anchor, positive, kind ("crop" | "title"), passage_id
    OUT/manifest.json
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ragcun.data.readers import DataFormatError, iter_jsonl, iter_lines, regular_file, write_jsonl
from ragcun.files import atomic_path

logger = logging.getLogger(__name__)


def iter_passages(path: str | os.PathLike) -> Iterator[dict[str, str]]:
    """Passages ``{"id", "title", "text"}`` from JSONL (``id`` or ``_id``, ``title`` optional) or .txt."""
    path = regular_file(path)
    if path.suffix == ".txt":
        for lineno, line in iter_lines(path):
            if line.strip():
                yield {"id": str(lineno), "title": "", "text": line.strip()}
        return
    for lineno, obj in iter_jsonl(path):
        if "text" not in obj:
            raise DataFormatError(path, "expected a JSON object with a `text` field", lineno)
        pid = obj.get("id", obj.get("_id", lineno))
        yield {"id": str(pid), "title": str(obj.get("title") or ""), "text": str(obj["text"] or "")}


def random_crop(words: list[str], rng: np.random.Generator, crop_min: float = 0.1, crop_max: float = 0.5,
                min_len: int = 5) -> str:
    """A random contiguous span of ``ratio * len(words)`` words, ratio ~ U(crop_min, crop_max)."""
    n = len(words)
    length = max(min(min_len, n), int(round(n * rng.uniform(crop_min, crop_max))))
    start = int(rng.integers(0, n - length + 1))
    return " ".join(words[start : start + length])


def build_pairs(
    passages: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    mode: str = "both",
    val_size: int = 1000,
    max_pairs: int | None = None,
    crop_min: float = 0.1,
    crop_max: float = 0.5,
    min_words: int = 10,
    seed: int = 42,
    format: str = "hf",
) -> dict[str, Any]:
    """Make (anchor, positive) pairs; validation pairs come from held-out passages. Returns the manifest."""
    if mode not in ("crop", "title", "both"):
        raise ValueError(f"mode must be crop, title or both, got {mode!r}")
    if not 0 < crop_min <= crop_max <= 1:
        raise ValueError("need 0 < crop_min <= crop_max <= 1")
    if format not in ("hf", "jsonl"):
        raise ValueError(f"format must be 'hf' or 'jsonl', got {format!r}")
    rng = np.random.default_rng(seed)
    items = [p for p in iter_passages(passages) if len(p["text"].split()) >= min_words]
    if not items:
        raise ValueError(f"{passages}: no passage with at least {min_words} words")
    order = rng.permutation(len(items))
    n_val = min(val_size, max(0, len(items) - 1))
    splits = {"validation": order[:n_val], "train": order[n_val:]}
    rows: dict[str, dict[str, list[str]]] = {}
    for split, idx in splits.items():
        r: dict[str, list[str]] = {"anchor": [], "positive": [], "kind": [], "passage_id": []}
        for i in idx:
            p = items[int(i)]
            words = p["text"].split()
            if mode in ("crop", "both"):
                r["anchor"].append(random_crop(words, rng, crop_min, crop_max))
                r["positive"].append(random_crop(words, rng, crop_min, crop_max))
                r["kind"].append("crop")
                r["passage_id"].append(p["id"])
            if mode in ("title", "both") and p["title"].strip():
                r["anchor"].append(p["title"].strip())
                r["positive"].append(p["text"])
                r["kind"].append("title")
                r["passage_id"].append(p["id"])
        if split == "train" and max_pairs is not None and len(r["anchor"]) > max_pairs:
            keep = np.sort(rng.permutation(len(r["anchor"]))[:max_pairs])
            r = {k: [v[j] for j in keep] for k, v in r.items()}
        rows[split] = r
    manifest = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "source": str(passages), "seed": seed,
        "options": {"mode": mode, "val_size": val_size, "max_pairs": max_pairs, "crop_min": crop_min,
                    "crop_max": crop_max, "min_words": min_words, "format": format},
        "counts": {"passages": len(items), **{f"{s}_pairs": len(r["anchor"]) for s, r in rows.items()},
                   "title_pairs": sum(k == "title" for r in rows.values() for k in r["kind"])},
        "schema": {"anchor": "str", "positive": "str", "kind": "'crop' | 'title'", "passage_id": "str"},
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for split, r in rows.items():
            if format == "hf":
                import datasets

                datasets.Dataset.from_dict(r).save_to_disk(str(tmp / split))
            else:
                write_jsonl(tmp / f"{split}.jsonl",
                            ({k: v[j] for k, v in r.items()} for j in range(len(r["anchor"]))))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    logger.info("pairs: %s", manifest["counts"])
    return manifest
