"""A real MiniLM + warm-started Gaussian head over 120 real SciFact passages, indexed once."""

from __future__ import annotations

import pytest

from ragcun.retrieval import GaussianRetriever


@pytest.fixture(scope="package")
def gaussian_minilm(minilm_path, scifact_passages):
    import torch

    from ragcun.modeling import IsotropicGaussianEncoder

    torch.manual_seed(0)
    enc = IsotropicGaussianEncoder(base_model=minilm_path, output_dim=512, device="cpu")
    enc.max_seq_length = 128
    enc.warm_start_head(enc.base_features([d["text"] for d in scifact_passages]))
    return enc


@pytest.fixture(scope="package")
def retriever(gaussian_minilm, scifact_passages):
    r = GaussianRetriever(gaussian_minilm, batch_size=32)
    r.add_documents([d["text"] for d in scifact_passages], ids=[d["id"] for d in scifact_passages],
                    metadata=[d["metadata"] for d in scifact_passages])
    return r
