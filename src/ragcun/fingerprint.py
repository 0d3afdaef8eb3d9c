"""Identities of what ragcun caches by: a model (its weights and encoding setup), a list of texts, a text.

One function each, used everywhere: the embedding cache, the frozen-base feature cache, the BM25
index cache, result files and the retriever's manifest all name a model by :func:`model_fingerprint`,
so "the same model" means the same thing in every place.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

FINGERPRINT_METHOD = "sha256-v3"  # what the retriever's manifest records (v3: tokenizers included)


def model_fingerprint(model: Any) -> str:
    """SHA-256 (hex, 16 characters) of a model's weights and everything that changes its vectors.

    ``model`` is a SentenceTransformer (or any iterable of its modules). Hashed: each module's
    class and configuration (``get_config_dict``), every parameter and buffer (name, shape, dtype and
    *all* bytes, so a fine-tuned copy saved under the same path never reuses a stale cache), each module's
    tokenizer (:func:`tokenizer_identity`: lower-casing off in ``tokenizer.json`` changes every vector), and,
    for a whole model, its ``max_seq_length``, prompts and similarity function. Not hashed: the Python class
    the model was loaded as and where it was loaded from, so the same weights share one identity.
    About 0.2 s for MiniLM's 90 MB.
    """
    import torch

    h = hashlib.sha256()
    try:
        modules = list(model)
    except TypeError:
        modules = [model]
    for i, module in enumerate(modules):
        h.update(f"{i}:{type(module).__module__}.{type(module).__qualname__}|".encode())
        get_cfg = getattr(module, "get_config_dict", None)
        if callable(get_cfg):
            h.update(json.dumps(get_cfg(), sort_keys=True, default=str).encode())
        tokenizer = getattr(module, "tokenizer", None)
        if tokenizer is not None:
            h.update(f"|tokenizer:{tokenizer_identity(tokenizer)}|".encode())
        for name, tensor in sorted(module.state_dict().items()):
            if not isinstance(tensor, torch.Tensor):
                continue
            t = tensor.detach().cpu().contiguous()
            h.update(f"|{name}:{tuple(t.shape)}:{t.dtype}|".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    if hasattr(model, "encode"):
        for attr in ("max_seq_length", "similarity_fn_name", "prompts", "default_prompt_name"):
            h.update(f"|{attr}={json.dumps(getattr(model, attr, None), sort_keys=True, default=str)}"
                     .encode())
    return h.hexdigest()[:16]


#: the tokenizer settings that change how a text is split, beside the backend's own serialisation (not
#: ``model_max_length``: setting ``max_seq_length`` moves it, and the sequence length is hashed on its own)
TOKENIZER_SETTINGS = ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "do_basic_tokenize",
                      "never_split", "add_prefix_space", "add_bos_token", "add_eos_token", "padding_side",
                      "truncation_side", "clean_up_tokenization_spaces")


def tokenizer_identity(tokenizer: Any) -> str:
    """SHA-256 (hex) of what a Hugging Face tokenizer does to a text: its fast backend's full serialisation
    (normaliser, pre-tokeniser, vocabulary, post-processor, added tokens) or, for a slow one, its vocabulary,
    and the settings in :data:`TOKENIZER_SETTINGS`. Where it was loaded from is not part of it."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # without "truncation"/"padding": state each encode call sets, not the model's
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        h.update(json.dumps(spec, sort_keys=True).encode("utf-8"))
    elif callable(getattr(tokenizer, "get_vocab", None)):
        h.update(json.dumps(sorted(tokenizer.get_vocab().items()), default=str).encode("utf-8"))
    else:
        h.update(type(tokenizer).__qualname__.encode())
    kwargs = getattr(tokenizer, "init_kwargs", {}) or {}
    settings = {k: kwargs.get(k, getattr(tokenizer, k, None)) for k in TOKENIZER_SETTINGS}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode("utf-8"))
    return h.hexdigest()


def texts_fingerprint(ids: Sequence[str], texts: Sequence[str], extra: Any = None) -> str:
    """SHA-256 (hex) of (id, text) pairs in order, plus any JSON-able ``extra`` (options that change the
    result)."""
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
    h = hashlib.sha256()
    if extra is not None:
        h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    for i, t in zip(ids, texts, strict=True):
        h.update(str(i).encode("utf-8"))
        h.update(b"\x00")
        h.update(t.encode("utf-8"))
        h.update(b"\x01")
    return h.hexdigest()


def text_key(text: str) -> bytes:
    """The 32-byte SHA-256 digest of one text (a row key of the frozen-base feature cache)."""
    return hashlib.sha256(text.encode("utf-8")).digest()
