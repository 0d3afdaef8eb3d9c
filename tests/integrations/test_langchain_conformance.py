"""LangChain's own conformance suite (``langchain-tests``' ``VectorStoreIntegrationTests``, sync and async)
against ``GaussianVectorStore`` over the real all-MiniLM-L6-v2, on the in-process FAISS index and on the
embedded Qdrant and LanceDB engines."""

from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import VectorStoreIntegrationTests  # noqa: E402

from ragcun.integrations.langchain import GaussianVectorStore  # noqa: E402
from ragcun.retrieval import GaussianRetriever  # noqa: E402


@pytest.fixture(scope="module")
def minilm(minilm_path):
    from ragcun.resolve import load_sentence_transformer

    return load_sentence_transformer(minilm_path, device="cpu")


class TestGaussianVectorStoreFaiss(VectorStoreIntegrationTests):
    backend = "faiss"

    @pytest.fixture()
    def vectorstore(self, minilm, tmp_path):
        if self.backend != "faiss" and not importlib.util.find_spec(
                {"qdrant": "qdrant_client", "lancedb": "lancedb"}[self.backend]):
            pytest.skip(f"{self.backend} not installed")
        store = GaussianVectorStore(GaussianRetriever(minilm, engine=self.backend, batch_size=8))
        try:
            yield store
        finally:
            store.delete()


class TestGaussianVectorStoreQdrant(TestGaussianVectorStoreFaiss):
    backend = "qdrant"


class TestGaussianVectorStoreLance(TestGaussianVectorStoreFaiss):
    backend = "lancedb"
