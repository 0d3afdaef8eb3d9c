"""Frozen base, fast: encode each distinct text once with the base, cache it, train the head on it.

With ``freeze_base`` the base encoder is a fixed function, so running it on every batch of every
epoch is wasted work: encoding dominates, the head is a few matrix products. Here the base's
pooled outputs are computed once per distinct text, cached on disk (keyed by a fingerprint of
the base's weights and configuration, ``max_seq_length`` and the SHA-256 of each text), and the
head trains on them.

The fast path is *the same training* by construction: :func:`build_fast_model` returns a
``SentenceTransformer`` whose input module (:class:`FeatureLookup`) "tokenises" a text to its row
in the feature table and whose forward returns that row as the sentence embedding, followed by
the very same head module objects as the full encoder. The same ``SentenceTransformerTrainer``,
sampler, optimizer, schedule and loss then run on it; only the base's forward pass is skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules.input_module import InputModule
from torch import nn

from ragcun.fingerprint import model_fingerprint, text_key
from ragcun.io import atomic_path, write_json
from ragcun.paths import cache_dir
from ragcun.progress import DocProgress

logger = logging.getLogger(__name__)

FEATURES_SUBDIR = "features"


class FeatureCache:
    """On-disk cache of base-encoder features:
    ``<cache>/features/<fingerprint[:20]>-L<len>/shard-*.safetensors``.

    Each shard holds ``keys`` (N×32 uint8, SHA-256 of the text) and ``features`` (N×D float32).
    New texts go into a new shard written atomically, so concurrent runs and crashes never
    corrupt what is there; any run with the same base and sequence length reuses every shard.
    """

    def __init__(self, fingerprint: str, max_seq_length: int, root: str | os.PathLike | None = None) -> None:
        base = Path(root) if root is not None else cache_dir(FEATURES_SUBDIR)
        self.dir = base / f"{fingerprint[:20]}-L{int(max_seq_length)}"
        self.fingerprint = fingerprint
        self.max_seq_length = int(max_seq_length)

    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.safetensors")) if self.dir.is_dir() else []

    def load(self, keys: Iterable[bytes]) -> dict[bytes, np.ndarray]:
        """Cached rows for the wanted keys (those not cached are absent)."""
        from safetensors.numpy import load_file

        wanted = set(keys)
        found: dict[bytes, np.ndarray] = {}
        for shard in self._shards():
            if len(found) == len(wanted):
                break
            data = load_file(str(shard))
            shard_keys, feats = data["keys"], data["features"]
            for row, k in enumerate(shard_keys):
                kb = k.tobytes()
                if kb in wanted and kb not in found:
                    found[kb] = feats[row]
        return found

    def store(self, keys: Sequence[bytes], features: np.ndarray) -> Path | None:
        from safetensors.numpy import save_file

        if not keys:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(b"".join(sorted(keys))).hexdigest()[:16]
        path = self.dir / f"shard-{digest}.safetensors"
        key_arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
        with atomic_path(path) as tmp:
            save_file({"keys": key_arr, "features": np.ascontiguousarray(features, dtype=np.float32)},
                      str(tmp), metadata={"fingerprint": self.fingerprint,
                                          "max_seq_length": str(self.max_seq_length)})
        meta = self.dir / "meta.json"
        if not meta.exists():
            write_json(meta, {"fingerprint": self.fingerprint, "max_seq_length": self.max_seq_length})
        return path


@torch.no_grad()
def encode_base(
    encoder: SentenceTransformer,
    base_modules: Sequence[nn.Module],
    texts: Sequence[str],
    batch_size: int = 64,
    show_progress: bool = True,
) -> np.ndarray:
    """Run only ``base_modules`` (tokeniser → transformer → pooling) on ``texts``; returns float32 (N, D).

    Texts are sorted by length so batches pad little, as ``SentenceTransformer.encode`` does.
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


def cached_base_features(
    encoder: SentenceTransformer,
    base_modules: Sequence[nn.Module],
    texts: Sequence[str],
    max_seq_length: int,
    batch_size: int = 64,
    cache: FeatureCache | None = None,
    show_progress: bool = True,
) -> tuple[np.ndarray, dict[str, int]]:
    """Features of the distinct ``texts`` (from the cache where possible) and each text's row.

    Returns ``(features (U, D), index {text: row})``. Logs how many were cached and encoded.
    """
    unique = list(dict.fromkeys(texts))
    if cache is None:
        cache = FeatureCache(model_fingerprint(base_modules), max_seq_length)
    keys = [text_key(t) for t in unique]
    have = cache.load(keys)
    missing = [i for i, k in enumerate(keys) if k not in have]
    logger.info("base features: %d distinct texts, %d cached, %d to encode (%s)",
                len(unique), len(unique) - len(missing), len(missing), cache.dir)
    new = None
    if missing:
        new = encode_base(encoder, base_modules, [unique[i] for i in missing], batch_size, show_progress)
        cache.store([keys[i] for i in missing], new)
    dim = new.shape[1] if new is not None else next(iter(have.values())).shape[0]
    feats = np.empty((len(unique), dim), dtype=np.float32)
    miss_pos = {i: j for j, i in enumerate(missing)}
    for i, k in enumerate(keys):
        feats[i] = new[miss_pos[i]] if i in miss_pos else have[k]  # type: ignore[index]
    return feats, {t: i for i, t in enumerate(unique)}


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
        x = self.table[rows.to(self.table.device)]
        for m in self.head:
            x = m({"sentence_embedding": x})["sentence_embedding"]
        return x

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        from ragcun.distributed import rank

        if self.refresh is not None:
            self.table = self.refresh(int(step))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + 7_919 * rank() + int(step))
        docs = self.documents[torch.randint(len(self.documents), (self.size,), generator=gen)]
        n_q = min(self.size, len(self.queries))
        queries = self.queries[torch.randint(len(self.queries), (n_q,), generator=gen)]
        return self._embed(queries), self._embed(docs)
