"""Qdrant as the vector engine (backend="qdrant", embedded local mode): the same hits as exact L2 on a real
SciFact slice with a demo-style model (MiniLM + a warm-started 128-d Gaussian head), saved and loaded."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("qdrant_client")

from ragcun.cli import app  # noqa: E402
from ragcun.retrieval import GaussianRetriever  # noqa: E402

QUERIES = ["vitamin D and cancer risk", "gut microbiota diet", "statins cholesterol", "sleep deprivation glucose",
           "vaccine antibodies", "telomere length", "air pollution lung cancer", "inflammation obesity",
           "mitochondria neurodegeneration", "randomized trial diabetes"]


@pytest.fixture(scope="module")
def model_dir(minilm_path, scifact_passages, tmp_path_factory):
    from ragcun.modeling import IsotropicGaussianEncoder

    enc = IsotropicGaussianEncoder(base_model=minilm_path, output_dim=128, device="cpu")
    enc.max_seq_length = 128
    enc.warm_start_head(enc.base_features([d["text"] for d in scifact_passages]), power=0.5)
    path = tmp_path_factory.mktemp("qdrant-model") / "model"
    enc.save(path)
    return str(path)


@pytest.fixture(scope="module")
def vectors(model_dir, scifact_passages):
    r = GaussianRetriever(model_dir)
    docs = r.encode_documents([d["text"] for d in scifact_passages])
    return docs, r.encode_queries(QUERIES)


def _build(model_dir, scifact_passages, vectors, **kw) -> GaussianRetriever:
    r = GaussianRetriever(model_dir, **kw)
    r.add_embeddings(vectors[0], texts=[d["text"] for d in scifact_passages], ids=[d["id"] for d in scifact_passages])
    return r


def test_exact_qdrant_returns_the_exact_l2_top10(model_dir, scifact_passages, vectors, tiny_model_path, tmp_path):
    tiny_model = tiny_model_path
    exact = _build(model_dir, scifact_passages, vectors, backend="numpy")
    qd = _build(model_dir, scifact_passages, vectors, backend="qdrant")
    want, got = exact.search_embeddings(vectors[1], 10), qd.search_embeddings(vectors[1], 10)
    assert [[h.id for h in row] for row in got] == [[h.id for h in row] for row in want]
    assert np.allclose([[h.distance for h in row] for row in got], [[h.distance for h in row] for row in want], rtol=1e-4)
    qd.save(tmp_path / "ix")
    again = GaussianRetriever.load(tmp_path / "ix")
    assert again.index.backend == "qdrant" and len(again) == len(scifact_passages)
    assert [h.id for h in again.retrieve(QUERIES[0], top_k=10)] == [h.id for h in want[0]]
    from ragcun.retrieval.errors import DimensionMismatchError, ModelMismatchError

    with pytest.raises((ModelMismatchError, DimensionMismatchError)):  # a collection built with another model
        GaussianRetriever.load(tmp_path / "ix", model=tiny_model)
    assert qd.remove(want[0][0].id) == 1 and want[0][0].id not in [h.id for h in qd.search_embeddings(vectors[1][:1], 10)[0]]


def test_qdrant_hnsw_keeps_the_exact_top10(model_dir, scifact_passages, vectors):
    exact = _build(model_dir, scifact_passages, vectors, backend="numpy").search_embeddings(vectors[1], 10)
    approx = _build(model_dir, scifact_passages, vectors, index="hnsw", backend="qdrant").search_embeddings(vectors[1], 10)
    recall = np.mean([len({h.id for h in a} & {h.id for h in e}) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95


def test_cli_builds_and_searches_a_qdrant_index(model_dir, data_root, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(line for _, line in zip(range(40), open(data_root / "beir" / "scifact" / "corpus.jsonl"),
                                                    strict=False)))
    runner = CliRunner()
    res = runner.invoke(app, ["index", "build", "-m", model_dir, "--docs", str(docs), "--out", str(tmp_path / "ix"),
                              "--engine", "qdrant"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["search", str(tmp_path / "ix"), "cancer", "--json"])
    assert res.exit_code == 0 and '"distance"' in res.output
    for extra, fragment in ((["--engine", "qdrant", "--index", "ivf"], "serves --index flat (exact) or hnsw"),
                            (["--url", "http://localhost:6333"], "--url is for --engine qdrant"),
                            (["--engine", "qdrant", "--url", ""], "--url is empty"),
                            (["--engine", "milvus"], "--engine must be one of")):
        res = runner.invoke(app, ["index", "build", "-m", model_dir, "--docs", str(docs), "--out", str(tmp_path / "o"),
                                  *extra])
        assert res.exit_code == 1 and fragment in " ".join(res.output.split()) and "Traceback" not in res.output
