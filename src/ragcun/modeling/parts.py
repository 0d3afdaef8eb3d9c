"""Any sentence-transformers model as two parts: the body that does the expensive work, and what follows it
(a trailing ``Normalize`` and, for a ragcun encoder, its head). Shared bodies encode a corpus once; the head
is what ragcun adds, and what its parameter count reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize
from torch import nn

from ragcun.progress import DocProgress


def split_at_head(model: SentenceTransformer) -> tuple[list[nn.Module], list[nn.Module]]:
    """``(body, tail)`` of any sentence-transformers model: the expensive part, and what follows it.

    The tail is the model's trailing ``Normalize`` (if any) plus, for a ragcun encoder, its head;
    the body is everything before. Models that share a body (the untouched base and a frozen-base
    arm, or an arm and its own pre-head view) can then encode a corpus once and apply each tail.
    """
    mods = list(model)
    cfg = getattr(model, "ragcun_config", None)
    n_head = int(cfg.get("num_head_modules", 0)) if isinstance(cfg, dict) else 0
    base, head = mods[: len(mods) - n_head], mods[len(mods) - n_head :]
    cut = len(base)
    while cut > 0 and isinstance(base[cut - 1], Normalize):
        cut -= 1
    return base[:cut], base[cut:] + head


@torch.no_grad()
def encode_base(
    encoder: SentenceTransformer,
    base_modules: Sequence[nn.Module],
    texts: Sequence[str],
    batch_size: int = 64,
    show_progress: bool = True,
) -> np.ndarray:
    """Run only ``base_modules`` (tokeniser → transformer → pooling) on ``texts``, in eval mode; returns
    float32 (N, D): the one way the base of a model runs alone (its cached features, the head's warm start,
    :meth:`IsotropicGaussianEncoder.base_features`).

    Texts are sorted by length (stably) so batches pad little, as ``SentenceTransformer.encode`` does.
    """

    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    device = next(iter(p for m in base_modules for p in m.parameters())).device
    was_training = [m.training for m in base_modules]
    for m in base_modules:
        m.eval()
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out: np.ndarray | None = None
    # a bar on a terminal, a log line every 30 s elsewhere: this pass can take minutes on a CPU
    progress = DocProgress(len(texts), "encoding base features", unit="texts", enabled=show_progress)
    try:
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            features: dict[str, Any] = encoder.preprocess([texts[i] for i in idx])
            features = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
            for m in base_modules:
                features = m(features)
            emb = features["sentence_embedding"].float().cpu().numpy()
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
            out[idx] = emb
            progress.update(len(idx))
    finally:
        progress.close()
        for m, mode in zip(base_modules, was_training, strict=True):
            m.train(mode)
    assert out is not None
    return out


def apply_modules(modules: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings ``x`` through ``modules`` (a head, a trailing ``Normalize``): the one place a tail
    of a model is applied to vectors computed without it (cached base features, a shared body's output)."""
    for m in modules:
        x = m({"sentence_embedding": x})["sentence_embedding"]
    return x


def submodel(model: SentenceTransformer, modules: list[nn.Module]) -> SentenceTransformer:
    """A SentenceTransformer over some of ``model``'s own modules (shared, not copied), with its prompts
    and sequence length, e.g. the body for a shared pass, or the base alone for a pre-head evaluation."""
    sub = SentenceTransformer(modules=modules, device=str(model.device), prompts=dict(model.prompts or {}),
                              default_prompt_name=model.default_prompt_name, similarity_fn_name="cosine")
    return sub


def parameter_counts(model: Any) -> dict[str, int]:
    """Parameters of the base and the head (what ragcun adds after the base; 0 for a plain model), in all and
    trainable: one count for the card, the MTEB metadata, the Hub and the training log."""
    body, tail = split_at_head(model)
    params = [[p for m in mods for p in m.parameters()] for mods in (body, tail)]
    (base, head), (base_on, head_on) = ([sum(p.numel() for p in ps if keep(p)) for ps in params]
                                        for keep in (lambda p: True, lambda p: p.requires_grad))
    return {"total": base + head, "base": base, "head": head, "base_trainable": base_on,
            "head_trainable": head_on}
