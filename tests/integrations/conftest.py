"""A real MiniLM + warm-started Gaussian head over 120 real SciFact passages, indexed once."""

from __future__ import annotations

from itertools import islice

import pytest

from ragcun.retrieval import GaussianRetriever, read_documents

QUERIES = [
    "cerebral white matter in newborns",
    "stem cell gene targeting",
    "myelin protein expression",
    "cancer risk factors",
    "vitamin D and bone density",
]


@pytest.fixture(scope="package")
def scifact_docs(data_root):
    return list(islice(read_documents(data_root / "beir" / "scifact" / "corpus.jsonl"), 120))


@pytest.fixture(scope="package")
def gaussian_minilm(minilm_path, scifact_docs):
    import torch

    from ragcun.modeling import IsotropicGaussianEncoder

    torch.manual_seed(0)
    enc = IsotropicGaussianEncoder(base_model=minilm_path, output_dim=512, device="cpu")
    enc.max_seq_length = 128
    enc.warm_start_head(enc.base_features([d["text"] for d in scifact_docs]))
    return enc


@pytest.fixture(scope="package")
def retriever(gaussian_minilm, scifact_docs):
    r = GaussianRetriever(gaussian_minilm, batch_size=32)
    r.add_documents([d["text"] for d in scifact_docs], ids=[d["id"] for d in scifact_docs],
                    metadata=[d["metadata"] for d in scifact_docs])
    return r
