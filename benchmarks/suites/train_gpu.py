"""GPU full fine-tuning of all-mpnet-base-v2: samples/s, peak memory and MFU, ragcun's objective vs
sentence-transformers' MNRL (skipped without CUDA).

Each configuration (batch 16–128, bf16 autocast, gradient checkpointing off/on) trains a
fresh model for a few warm-up steps and then times whole optimiser steps (forward, backward,
AdamW) on the same pre-tokenised (query, positive) pairs from scifact's train split:

* **ragcun**: ``IsotropicGaussianEncoder(base_model="all-mpnet-base-v2")`` (MPNet + 768→1024→512
  head, no Normalize) with ``ragcun.losses.IsotropicGaussianLoss`` (Euclidean InfoNCE + SIGReg,
  1024 slices), its components summed;
* **reference**: the plain ``SentenceTransformer`` all-mpnet-base-v2 with
  ``MultipleNegativesRankingLoss`` — what a user trains otherwise.

Model FLOPs utilisation = 6 · parameters · tokens per step / step time / the GPU's peak dense
bf16 rate (from :data:`PEAK_BF16_TFLOPS`). With gradient checkpointing the hardware does ~8·P·T
work, but MFU counts model FLOPs only (the usual convention), so checkpointing lowers it.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import DATA_DIR, row

logger = logging.getLogger(__name__)

MODEL = "all-mpnet-base-v2"
MAX_SEQ_LEN = 256
NUM_SLICES = 1024

# Dense bf16 peak (no sparsity), TFLOP/s, matched by substring of torch.cuda.get_device_name in this order.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    ("H800", 989.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("RTX 4090", 165.0),
]


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def training_pairs(n: int) -> list[tuple[str, str]]:
    """(query, positive passage) pairs from scifact's train qrels, cycled to ``n``."""
    root = Path(DATA_DIR) / "beir" / "scifact"
    try:
        from ragcun.data.beir import doc_text, load_beir

        data = load_beir("scifact", split="train", data_dir=DATA_DIR)
        pairs = [(data.queries[q], doc_text(data.corpus[d])) for q, rel in data.qrels.items()
                 for d, s in rel.items() if s > 0 and d in data.corpus]
    except ImportError:
        corpus, queries = {}, {}
        with open(root / "corpus.jsonl", encoding="utf-8") as fh:
            for line in fh:
                d = json.loads(line)
                corpus[d["_id"]] = ((d.get("title") or "") + " " + d.get("text", "")).strip()
        with open(root / "queries.jsonl", encoding="utf-8") as fh:
            for line in fh:
                q = json.loads(line)
                queries[q["_id"]] = q["text"]
        pairs = []
        with open(root / "qrels" / "train.tsv", encoding="utf-8") as fh:
            next(fh)
            for line in fh:
                parts = line.strip().split("\t")
                if len(parts) == 3 and int(parts[2]) > 0 and parts[0] in queries and parts[1] in corpus:
                    pairs.append((queries[parts[0]], corpus[parts[1]]))
    if not pairs:
        raise ValueError(f"no training pairs found in {root}")
    return [pairs[i % len(pairs)] for i in range(n)]


def measure_training(
    make_model: Callable[[], Any],
    make_loss: Callable[[Any], Any],
    pairs: list[tuple[str, str]],
    batch_size: int,
    checkpointing: bool,
    steps: int,
    warmup: int,
    device: str = "cuda",
    autocast_dtype: Any = None,
) -> dict[str, Any]:
    """Train a fresh model for ``warmup`` + ``steps`` full steps; per-step seconds, tokens, params and peak
    memory."""
    import torch

    autocast_dtype = autocast_dtype or torch.bfloat16
    model = make_model().to(device)
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable({"use_reentrant": False})
    loss_fn = make_loss(model).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-5, fused=device.startswith("cuda"))
    n_params = sum(p.numel() for p in params)

    batches = []
    for i in range(warmup + steps):
        chunk = pairs[(i * batch_size) % len(pairs) :][:batch_size]
        if len(chunk) < batch_size:
            chunk = pairs[:batch_size]
        cols = [model.preprocess([c[0] for c in chunk]), model.preprocess([c[1] for c in chunk])]
        batches.append([{k: v.to(device) if hasattr(v, "to") else v for k, v in f.items()} for f in cols])
    labels = torch.zeros(batch_size, device=device)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times, tokens = [], []
    for i, features in enumerate(batches):
        step_tokens = sum(int(f["input_ids"].numel()) for f in features)
        sync()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype):
            out = loss_fn([dict(f) for f in features], labels)
            loss = sum(out.values()) if isinstance(out, dict) else out
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            tokens.append(step_tokens)
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(f"non-finite loss at step {i}")
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    del model, loss_fn, opt, batches
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"seconds": times, "tokens": tokens, "params": n_params, "peak_gib": peak}


def per_step(m: dict[str, Any], f: Callable[[float, int], float]) -> list[float]:
    """One figure per timed step from its (seconds, tokens)."""
    return [f(s, t) for s, t in zip(m["seconds"], m["tokens"], strict=True)]


def run(quick: bool) -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"suite": "train-gpu", "skipped": "no CUDA device", "inputs": {"model": MODEL}, "rows": [],
                "notes": []}

    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from ragcun.losses import IsotropicGaussianLoss
    from ragcun.modeling import IsotropicGaussianEncoder
    from ragcun.resolve import load_sentence_transformer

    torch.backends.cuda.matmul.allow_tf32 = True
    device_name = torch.cuda.get_device_name(0)
    peak = peak_tflops(device_name)
    batch_sizes = [16, 128] if quick else [16, 32, 64, 128]
    steps, warmup = (5, 2) if quick else (10, 3)
    pairs = training_pairs(max(batch_sizes) * (steps + warmup))

    def ours_model():
        torch.manual_seed(0)
        return IsotropicGaussianEncoder(base_model=MODEL, max_seq_length=MAX_SEQ_LEN, device="cpu")

    def ref_model():
        m = load_sentence_transformer(MODEL, device="cpu")
        m.max_seq_length = MAX_SEQ_LEN
        return m

    variants = {
        "ragcun": (ours_model,
                   lambda m: IsotropicGaussianLoss(m, lambda_isotropy=1.0, num_slices=NUM_SLICES)),
        "reference": (ref_model, lambda m: MultipleNegativesRankingLoss(m)),
    }
    rows, notes, raw = [], [], {}
    for ckpt in (False, True):
        for bs in batch_sizes:
            got: dict[str, dict[str, Any]] = {}
            for name, (make_model, make_loss) in variants.items():
                key = f"{name} B={bs} ckpt={ckpt}"
                logger.info("train-gpu %s", key)
                try:
                    got[name] = measure_training(make_model, make_loss, pairs, bs, ckpt, steps, warmup)
                except torch.cuda.OutOfMemoryError:
                    notes.append(f"{key}: out of GPU memory")
                    torch.cuda.empty_cache()
                    continue
                raw[key] = got[name]
            if "ragcun" not in got:
                continue
            task = f"train B={bs} bf16" + (" +grad-ckpt" if ckpt else "")

            o, r = got["ragcun"], got.get("reference")
            rows.append(row(task, "samples/s", "IsotropicGaussianEncoder + IsotropicGaussianLoss",
                            per_step(o, lambda s, t, bs=bs: bs / s), "ST + MultipleNegativesRankingLoss",
                            per_step(r, lambda s, t, bs=bs: bs / s) if r else None,
                            tokens_per_step=o["tokens"][0], params_m=round(o["params"] / 1e6, 1)))
            rows.append(row(task, "peak GPU memory, GiB", "ragcun", [o["peak_gib"]],
                            "reference", [r["peak_gib"]] if r else None, higher_is_better=False))
            if peak:
                rows.append(row(task, "MFU (6·P·T model FLOPs / peak)", "ragcun",
                                per_step(o, lambda s, t, p=o["params"]: 6 * p * t / s / (peak * 1e12)),
                                "reference",
                                per_step(r, lambda s, t, p=r["params"]: 6 * p * t / s / (peak * 1e12))
                                if r else None))
    if peak is None:
        notes.append(f"MFU not computed: no peak bf16 figure for {device_name!r} in PEAK_BF16_TFLOPS")
    notes += [
        "samples = (query, positive) pairs; in-batch negatives. A step = forward (bf16 autocast) + backward "
        "+ fused AdamW on all parameters; inputs pre-tokenised and on the GPU (no data-loading time).",
        "SIGReg runs in fp32 inside autocast (by design), on the queries and positives together.",
        "MFU uses all trainable parameters (embeddings included) and padded tokens of both columns; "
        f"peak = {peak} TFLOP/s dense bf16 for {device_name}.",
    ]
    return {
        "suite": "train-gpu",
        "inputs": {
            "model": MODEL,
            "device": device_name,
            "peak_bf16_tflops": peak,
            "max_seq_length": MAX_SEQ_LEN,
            "data": "scifact train (query, positive) pairs, cycled",
            "batch_sizes": batch_sizes,
            "steps": steps,
            "warmup_steps": warmup,
            "num_slices": NUM_SLICES,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
        },
        "rows": rows,
        "notes": notes,
        "raw": raw,
    }
