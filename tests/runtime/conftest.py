"""Fixtures the runtime tests share: the real MiniLM at 128 tokens and real SciFact passages."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def minilm(minilm_path, request):
    """The real MiniLM truncated to the test module's ``MINILM_SEQ`` tokens (default 128)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path, device="cpu")
    model.max_seq_length = getattr(request.module, "MINILM_SEQ", 128)
    return model


@pytest.fixture(scope="module")
def passages(scifact_passages) -> list[str]:
    """48 real SciFact passages (many longer than 128 tokens, so truncation is exercised)."""
    return [d["text"] for d in scifact_passages[:48]]
