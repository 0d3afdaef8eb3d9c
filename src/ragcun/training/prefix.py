"""Partial fine-tuning, fast: the frozen lower layers run once per text, the trained ones on their output.

With ``freeze_layers = K`` the embeddings and the first K transformer layers are a fixed function, so
running them on every batch is wasted work (for all-MiniLM-L6-v2 with K = 4, two thirds of the forward
pass and none of the learning). Here each distinct training text's hidden states after layer K are computed
once (``torch.no_grad``, eval mode), kept in memory (float32, exact; or bfloat16 when the upper layers run in
bfloat16 anyway: 128 tokens × 384 dims are then 96 KB a text) and cached on disk beside a SHA-256 record
(keyed by the fingerprint of the frozen modules, the sequence length and the texts). Training then runs only
layers K+1… and the rest of the model on them.

The fast path is *the same model*: :class:`PrefixLookup` is an input module that "tokenises" a text to its
row and whose forward runs the encoder's own upper layer objects (shared, not copied) on the cached states,
returning ``token_embeddings`` and ``attention_mask`` as sentence-transformers' ``Transformer`` does; the
encoder's own pooling, normalisation and head follow. A step on it equals a step of the full model with
the lower layers frozen and in eval mode (tested to float tolerance); saving saves the full encoder.
BERT-family encoders (``BertModel``: MiniLM, BGE, E5 …) are supported; others are refused in one line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules.input_module import InputModule
from torch import nn

from ragcun.config import ConfigError
from ragcun.encoding.cache import checked_problem, store_checked
from ragcun.fingerprint import model_fingerprint, texts_fingerprint
from ragcun.paths import cache_dir
from ragcun.progress import DocProgress

logger = logging.getLogger(__name__)


def _bert(encoder: SentenceTransformer) -> nn.Module:
    hf = getattr(encoder[0], "auto_model", None)
    if hf is None or not hasattr(hf, "embeddings") or not hasattr(getattr(hf, "encoder", None), "layer"):
        raise ConfigError("cached-prefix training supports BERT-family encoders (embeddings + "
                          f"encoder.layer); this base is {type(hf).__name__}: set fast_prefix = false")
    return hf


def _mask(hf: nn.Module, x: torch.Tensor, attention_mask: torch.Tensor) -> Any:
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=hf.config, inputs_embeds=x, attention_mask=attention_mask)


@torch.no_grad()
def encode_prefix(encoder: SentenceTransformer, layers: int, texts: Sequence[str], batch_size: int = 64,
                  desc: str = "prefix", dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """Hidden states after the embeddings and the first ``layers`` layers, one (tokens, dim) tensor of
    ``dtype`` a text (padding dropped); eval mode, sorted by length so batches pad little."""
    hf = _bert(encoder)
    was = hf.training
    hf.eval()
    out: list[torch.Tensor | None] = [None] * len(texts)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    device = next(hf.parameters()).device
    try:
        with DocProgress(len(texts), desc) as bar:
            for start in range(0, len(texts), batch_size):
                idx = order[start:start + batch_size]
                feats = encoder[0].preprocess([texts[i] for i in idx])
                ids, am = feats["input_ids"].to(device), feats["attention_mask"].to(device)
                kwargs = ({"token_type_ids": feats["token_type_ids"].to(device)}
                          if "token_type_ids" in feats else {})
                x = hf.embeddings(input_ids=ids, **kwargs)
                mask = _mask(hf, x, am)
                for layer in hf.encoder.layer[:layers]:
                    x = layer(x, mask)
                lengths = am.sum(1).tolist()
                for j, i in enumerate(idx):
                    out[i] = x[j, :lengths[j]].to(dtype).cpu().clone()
                bar.update(len(idx))
    finally:
        hf.train(was)
    return out  # type: ignore[return-value]


def cached_prefix(encoder: SentenceTransformer, layers: int, texts: Sequence[str], batch_size: int = 64,
                  root: str | Path | None = None, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """:func:`encode_prefix` through the on-disk cache: one safetensors file per (frozen modules, length,
    texts), verified against its recorded SHA-256 before use (:func:`ragcun.encoding.cache.checked_problem`;
    a mismatch is refused in one line)."""
    from safetensors.torch import load_file

    hf = _bert(encoder)
    frozen = [hf.embeddings, *hf.encoder.layer[:layers]]
    key = texts_fingerprint([str(i) for i in range(len(texts))], list(texts),
                            extra={"prefix": model_fingerprint(frozen), "layers": layers,
                                   "max_seq_length": encoder.max_seq_length, "dtype": str(dtype),
                                   "format": 1})[:32]
    base = Path(root) if root is not None else cache_dir("prefix")
    path, meta = base / f"{key}.safetensors", base / f"{key}.json"
    if path.is_file() and meta.is_file():
        problem = checked_problem(path)
        if problem is not None:
            raise ConfigError(f"prefix cache {path}: {problem}; delete it to recompute")
        data = load_file(str(path))
        offsets = data["offsets"].tolist()
        states = data["states"]
        logger.info("cached prefix: reusing %s (%d texts)", path, len(texts))
        return [states[offsets[i]:offsets[i + 1]] for i in range(len(texts))]
    out = encode_prefix(encoder, layers, texts, batch_size, dtype=dtype)
    offsets = torch.tensor(np.concatenate([[0], np.cumsum([len(s) for s in out])]), dtype=torch.long)
    store_checked(path, {"states": torch.cat(out).contiguous(), "offsets": offsets},
                  {"texts": len(texts), "layers": layers})
    return out


class PrefixLookup(InputModule):
    """An input module over cached hidden states: ``preprocess`` maps each text to its row, ``forward`` runs
    the encoder's upper layers (its own objects) on the rows' states, returning ``token_embeddings`` and
    ``attention_mask`` as the ``Transformer`` module would. ``autocast_bf16`` runs those layers in bfloat16
    (on CPUs with BF16 units about twice as fast); the head and the loss stay in float32."""

    def __init__(self, hf: nn.Module, layers: int, states: list[torch.Tensor], index: dict[str, int],
                 max_seq_length: int, max_train_length: int | None = None, autocast_bf16: bool = False,
                 prompts: Sequence[str] = ()) -> None:
        super().__init__()
        self.hf = hf
        self.upper = nn.ModuleList(list(hf.encoder.layer)[layers:])  # shared with the encoder
        self.states = states
        self.index = dict(index)
        self.max_seq_length = max_seq_length
        self.max_train_length = max_train_length
        self.autocast_bf16 = autocast_bf16
        self.prompts = [p for p in prompts if p]

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        rows = []
        for text in inputs:
            if prompt:
                text = prompt + text
            elif text not in self.index:
                text = next((p + text for p in self.prompts if p + text in self.index), text)
            if text not in self.index:
                raise KeyError(f"text not in the cached prefix table: {str(text)[:80]!r}; every training and "
                               "validation text must be encoded up front")
            rows.append(self.index[text])
        return {"input_ids": torch.tensor(rows, dtype=torch.long)}

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        rows = features["input_ids"].tolist()
        cut = self.max_train_length if self.training and self.max_train_length else None
        seqs = [self.states[r][:cut] for r in rows]
        device = next(self.upper.parameters()).device
        n = max(len(s) for s in seqs)
        x = torch.zeros(len(seqs), n, seqs[0].shape[1], device=device)
        am = torch.zeros(len(seqs), n, dtype=torch.long, device=device)
        for i, s in enumerate(seqs):
            x[i, :len(s)] = s.to(device=device, dtype=torch.float32)
            am[i, :len(s)] = 1
        mask = _mask(self.hf, x, am)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            for layer in self.upper:
                x = layer(x, mask)
        features["token_embeddings"] = x.float()
        features["attention_mask"] = am
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.states[0].shape[1])

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("PrefixLookup is a training-time stand-in; save the full encoder")


def build_prefix_model(encoder: SentenceTransformer, layers: int, texts: Sequence[str],
                       max_train_length: int | None = None, autocast_bf16: bool = False,
                       batch_size: int = 64) -> SentenceTransformer:
    """A SentenceTransformer ``[PrefixLookup, *encoder[1:]]`` over the cached prefix of the distinct
    ``texts``: training it trains the encoder's upper layers and head (the same objects)."""
    hf = _bert(encoder)
    n_layers = len(hf.encoder.layer)
    if not 0 < layers < n_layers:
        raise ConfigError(f"freeze_layers must be between 1 and {n_layers - 1} for cached-prefix training "
                          f"(got {layers})")
    unique = list(dict.fromkeys(texts))
    states = cached_prefix(encoder, layers, unique, batch_size,
                           dtype=torch.bfloat16 if autocast_bf16 else torch.float32)
    lookup = PrefixLookup(hf, layers, states, {t: i for i, t in enumerate(unique)}, encoder.max_seq_length,
                          max_train_length, autocast_bf16, prompts=list((encoder.prompts or {}).values()))
    device = next(encoder.parameters()).device
    return SentenceTransformer(modules=[lookup, *list(encoder)[1:]], device=str(device),
                               similarity_fn_name="euclidean",
                               prompts={k: v for k, v in (encoder.prompts or {}).items() if v},
                               default_prompt_name=encoder.default_prompt_name)


def _body(model: SentenceTransformer, head_count: int) -> list[nn.Module]:
    return list(model)[: len(model) - head_count]


@torch.no_grad()
def pooled_features(model: SentenceTransformer, rows: Sequence[int], head_count: int,
                    batch_size: int = 128) -> torch.Tensor:
    """What the body (the cached prefix, the upper layers, pooling, normalisation) of a
    :func:`build_prefix_model` model outputs for ``rows`` at full length, in eval mode, float32."""
    body = _body(model, head_count)
    was = [m.training for m in body]
    for m in body:
        m.eval()
    out = []
    try:
        for start in range(0, len(rows), batch_size):
            feats: dict[str, Any] = {"input_ids": torch.tensor(list(rows[start:start + batch_size]))}
            for m in body:
                feats = m(feats)
            out.append(feats["sentence_embedding"].float())
    finally:
        for m, t in zip(body, was, strict=True):
            m.train(t)
    return torch.cat(out) if out else torch.zeros(0)


class FeatureRefresh:
    """Every training text's body output through the layers *being trained*, recomputed every ``every``
    SIGReg steps: the table a corpus sample draws from (SIGReg's gradient then reaches the head; the
    features are at most ``every`` steps old, never the base's from before training)."""

    def __init__(self, model: SentenceTransformer, head_count: int, every: int,
                 rows: Sequence[int] | None = None) -> None:
        self.model = model
        self.head_count = head_count
        self.every = max(1, int(every))
        # only the rows a sample draws from are computed (the others, never drawn, stay zero)
        self.rows = sorted(set(rows)) if rows is not None else list(range(len(model[0].states)))
        self.n = len(model[0].states)
        self.table = self._compute()
        self.refreshed = 0

    def _compute(self) -> torch.Tensor:
        feats = pooled_features(self.model, self.rows, self.head_count)
        table = feats.new_zeros((self.n, feats.shape[1]))
        table[self.rows] = feats
        return table

    def __call__(self, step: int) -> torch.Tensor:
        if step > 0 and step % self.every == 0 and step != self.refreshed:
            self.table = self._compute()
            self.refreshed = step
        return self.table
