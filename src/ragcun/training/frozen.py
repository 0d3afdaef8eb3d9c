"""Frozen base, fast: encode each distinct text once with the base, cache it, train the head on it.

With ``freeze_base`` the base encoder is a fixed function, so running it on every batch of every
epoch is wasted work: encoding dominates, the head is a few matrix products. Here the base's
pooled outputs are computed once per distinct text and cached (:mod:`ragcun.encoding.features`), and the
head trains on them.

The fast path is *the same training* by construction: :func:`build_fast_model` returns a
``SentenceTransformer`` whose input module (:class:`FeatureLookup`) "tokenises" a text to its row
in the feature table and whose forward returns that row as the sentence embedding, followed by
the very same head module objects as the full encoder. The same ``SentenceTransformerTrainer``,
sampler, optimizer, schedule and loss then run on it; only the base's forward pass is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules.input_module import InputModule
from torch import nn

from ragcun.encoding.features import FeatureCache, cached_base_features
from ragcun.modeling.parts import apply_modules


class FeatureLookup(InputModule):
    """An input module whose "tokens" are rows of a precomputed feature table.

    ``preprocess(texts)`` maps each text to its row (``input_ids``, so sentence-transformers'
    collator and trainer treat it like any tokenised column); ``forward`` returns the row as
    ``sentence_embedding``. The table is a non-persistent buffer: it moves with the model but is
    never saved (the trainer saves the full encoder instead).
    """

    def __init__(self, features: np.ndarray | torch.Tensor, index: dict[str, int], max_seq_length: int = 512,
                 prompts: Sequence[str] = ()) -> None:
        super().__init__()
        table = torch.as_tensor(np.asarray(features, dtype=np.float32))
        self.register_buffer("table", table, persistent=False)
        self.index = dict(index)
        self.max_seq_length = max_seq_length
        self.prompts = [p for p in prompts if p]

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None,
                   **kwargs: Any) -> dict[str, torch.Tensor]:
        rows = []
        for text in inputs:
            if prompt:
                text = prompt + text
            elif text not in self.index:  # given without its prompt (sentence-transformers' card statistics)
                text = next((p + text for p in self.prompts if p + text in self.index), text)
            try:
                rows.append(self.index[text])
            except KeyError:
                raise KeyError(
                    f"text not in the cached feature table (frozen fast path): {str(text)[:80]!r}; "
                    "every training/validation text must be encoded up front"
                ) from None
        return {"input_ids": torch.tensor(rows, dtype=torch.long)}

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features["sentence_embedding"] = self.table[features["input_ids"]]
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.table.shape[1])

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("FeatureLookup is a training-time stand-in for the base; save the full "
                                  "encoder")


def build_fast_model(
    encoder: SentenceTransformer,
    base_modules: Sequence[nn.Module],
    head_modules: Sequence[nn.Module],
    texts: Sequence[str],
    max_seq_length: int,
    batch_size: int = 64,
    cache: FeatureCache | None = None,
    show_progress: bool = True,
) -> SentenceTransformer:
    """A SentenceTransformer ``[FeatureLookup, *head_modules]`` over cached base features of ``texts``.

    The head modules are the encoder's own objects (shared, not copied): training the fast model
    trains the encoder's head, and saving the encoder saves the result.
    """
    feats, index = cached_base_features(encoder, base_modules, texts, max_seq_length, batch_size, cache,
                                        show_progress)
    lookup = FeatureLookup(feats, index, max_seq_length=max_seq_length,
                           prompts=list((encoder.prompts or {}).values()))
    device = next(iter(p for m in head_modules for p in m.parameters())).device
    fast = SentenceTransformer(modules=[lookup, *head_modules], device=str(device),
                               similarity_fn_name="euclidean",
                               prompts={k: v for k, v in (encoder.prompts or {}).items() if v},
                               default_prompt_name=encoder.default_prompt_name)
    return fast


class CorpusSample:
    """A fresh uniform sample of the training documents (and queries), through the head, every call.

    On the frozen fast path every training text's base features are in the table, so SIGReg can test a
    corpus-scale sample each step at the cost of the head alone (while the base is fine-tuned, the table
    holds its features from before training, computed once, and SIGReg shapes the head on them): ``size``
    distinct-document rows drawn uniformly (each document counts once, however often it is a positive or a
    negative), and as many queries, at most the number of distinct ones. The draw is seeded by (seed, step,
    rank), so a resumed run draws the same samples and DDP ranks draw different ones.
    """

    def __init__(self, table: torch.Tensor, query_rows: Sequence[int], document_rows: Sequence[int],
                 head_modules: Sequence[nn.Module], size: int, seed: int = 0,
                 refresh: Any = None) -> None:
        if not document_rows or not query_rows:
            raise ValueError("the corpus sample needs training documents and queries in the feature table")
        self.table = table
        self.queries = torch.tensor(sorted(set(query_rows)), dtype=torch.long)
        self.documents = torch.tensor(sorted(set(document_rows)), dtype=torch.long)
        self.head = list(head_modules)
        self.size = int(size)
        self.seed = int(seed)
        self.refresh = refresh  # step -> the current table (features through layers being trained), or None

    def _embed(self, rows: torch.Tensor) -> torch.Tensor:
        return apply_modules(self.head, self.table[rows.to(self.table.device)])

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        from ragcun.distributed import rank

        if self.refresh is not None:
            self.table = self.refresh(int(step))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + 7_919 * rank() + int(step))
        docs = self.documents[torch.randint(len(self.documents), (self.size,), generator=gen)]
        n_q = min(self.size, len(self.queries))
        queries = self.queries[torch.randint(len(self.queries), (n_q,), generator=gen)]
        return self._embed(queries), self._embed(docs)
