"""The base's features of texts (everything before the head: tokeniser, transformer, pooling), computed once
per distinct text and cached on disk, checksummed.

What the head-only training paths, the head's warm start, SIGReg's corpus sample and the whitening reference
read: ``<cache>/features/<fingerprint[:20]>-L<len>/shard-*.safetensors``, keyed by a fingerprint of the base's
weights and configuration, the sequence length and the SHA-256 of each text. Every shard is written through
:func:`ragcun.encoding.cache.store_checked` (atomic, with its SHA-256 recorded): a damaged or unrecorded shard
is never read, its texts are encoded again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from sentence_transformers import SentenceTransformer
from torch import nn

from ragcun.encoding.cache import checked_problem, store_checked
from ragcun.files import write_json
from ragcun.fingerprint import model_fingerprint, text_key
from ragcun.modeling.parts import encode_base
from ragcun.paths import cache_dir

logger = logging.getLogger(__name__)

FEATURES_SUBDIR = "features"


class FeatureCache:
    """On-disk cache of base-encoder features:
    ``<cache>/features/<fingerprint[:20]>-L<len>/shard-*.safetensors``.

    Each shard holds ``keys`` (N×32 uint8, SHA-256 of the text) and ``features`` (N×D float32), with its
    SHA-256 recorded beside it. New texts go into a new shard written atomically, so concurrent runs and
    crashes never corrupt what is there; any run with the same base and sequence length reuses every shard
    that checks out, and one that does not is skipped (logged) and its texts encoded again.
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
            problem = checked_problem(shard)
            if problem is not None:
                logger.warning("feature cache shard %s %s: not used, its texts are encoded again", shard,
                               problem)
                continue
            data = load_file(str(shard))
            shard_keys, feats = data["keys"], data["features"]
            for row, k in enumerate(shard_keys):
                kb = k.tobytes()
                if kb in wanted and kb not in found:
                    found[kb] = feats[row]
        return found

    def store(self, keys: Sequence[bytes], features: np.ndarray) -> Path | None:
        if not keys:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(b"".join(sorted(keys))).hexdigest()[:16]
        path = self.dir / f"shard-{digest}.safetensors"
        key_arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
        store_checked(path, {"keys": key_arr, "features": np.ascontiguousarray(features, dtype=np.float32)},
                      {"texts": len(keys)}, metadata={"fingerprint": self.fingerprint,
                                                      "max_seq_length": str(self.max_seq_length)})
        meta = self.dir / "meta.json"
        if not meta.exists():
            write_json(meta, {"fingerprint": self.fingerprint, "max_seq_length": self.max_seq_length})
        return path


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
