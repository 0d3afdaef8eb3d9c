"""The external vector engines (Qdrant local mode, LanceDB on disk) behind GaussianRetriever: the same hits as
exact L2 on a real SciFact slice with a demo-style model (MiniLM + a warm-started 128-d Gaussian head), saved,
moved and loaded, refused with another model, and built from the CLI."""

from __future__ import annotations

import shutil
from itertools import islice

import numpy as np
import pytest
from typer.testing import CliRunner

from ragcun.cli import app
from ragcun.retrieval import GaussianRetriever
from ragcun.retrieval.errors import DimensionMismatchError, IndexCorruptError, ModelMismatchError

QUERIES = ["vitamin D and cancer risk", "gut microbiota diet", "statins cholesterol",
           "sleep deprivation glucose", "vaccine antibodies", "telomere length", "air pollution lung cancer",
           "inflammation obesity", "mitochondria neurodegeneration", "randomized trial diabetes"]
ENGINES = [pytest.param("qdrant",
                        marks=pytest.mark.skipif(not __import__("importlib").util.find_spec("qdrant_client"),
                                                 reason="qdrant-client not installed")),
           pytest.param("lancedb",
                        marks=pytest.mark.skipif(not __import__("importlib").util.find_spec("lancedb"),
                                                 reason="lancedb not installed"))]
APPROX = {"qdrant": {"index": "hnsw"}, "lancedb": {"index": "ivf", "num_partitions": 4, "min_rows": 256}}


@pytest.fixture(scope="module")
def passages(data_root):
    from ragcun.retrieval import read_documents

    return list(islice(read_documents(data_root / "beir" / "scifact" / "corpus.jsonl"), 512))


@pytest.fixture(scope="module")
def model_dir(minilm_path, passages, tmp_path_factory):
    from ragcun.modeling import IsotropicGaussianEncoder

    enc = IsotropicGaussianEncoder(base_model=minilm_path, output_dim=128, device="cpu")
    enc.max_seq_length = 128
    enc.warm_start_head(enc.base_features([d["text"] for d in passages[:120]]), power=0.5)
    path = tmp_path_factory.mktemp("engine-model") / "model"
    enc.save(path)
    return str(path)


@pytest.fixture(scope="module")
def vectors(model_dir, passages):
    r = GaussianRetriever(model_dir)
    return r.encode_documents([d["text"] for d in passages]), r.encode_queries(QUERIES)


def _build(model_dir, passages, vectors, **kw) -> GaussianRetriever:
    r = GaussianRetriever(model_dir, **kw)
    r.add_embeddings(vectors[0], texts=[d["text"] for d in passages], ids=[d["id"] for d in passages],
                     metadata=[{"n": i} for i in range(len(passages))])
    return r


def _ids(rows) -> list[list[str]]:
    return [[h.id for h in row] for row in rows]


@pytest.mark.parametrize("engine", ENGINES)
def test_exact_engine_returns_the_exact_l2_top10_and_round_trips(engine, model_dir, passages, vectors,
                                                                 tiny_model_path, tmp_path):
    want = _build(model_dir, passages, vectors, engine="numpy").search_embeddings(vectors[1], 10)
    ix = _build(model_dir, passages, vectors, engine=engine)
    got = ix.search_embeddings(vectors[1], 10)
    assert _ids(got) == _ids(want)
    assert np.allclose([[h.distance for h in r] for r in got], [[h.distance for h in r] for r in want],
                       rtol=1e-4)
    assert got[0][0].metadata == want[0][0].metadata and got[0][0].text == want[0][0].text  # round-trip
    ix.save(tmp_path / "ix")
    shutil.move(tmp_path / "ix", tmp_path / "moved")
    again = GaussianRetriever.load(tmp_path / "moved")
    assert again.index.backend == engine and len(again) == len(passages)
    assert _ids(again.search_embeddings(vectors[1], 10)) == _ids(want)
    with pytest.raises((ModelMismatchError, DimensionMismatchError)):  # a collection built with another model
        GaussianRetriever.load(tmp_path / "moved", model=tiny_model_path)
    top = want[0][0].id
    assert again.remove(top) == 1 and top not in _ids(again.search_embeddings(vectors[1][:1], 10))[0]
    # save kept
    assert _ids(GaussianRetriever.load(tmp_path / "moved").search_embeddings(vectors[1], 10)) == _ids(want)


@pytest.mark.parametrize("engine", ENGINES)
def test_approximate_engine_keeps_the_exact_top10(engine, model_dir, passages, vectors, tmp_path):
    exact = _build(model_dir, passages, vectors, engine="numpy").search_embeddings(vectors[1], 10)
    ix = _build(model_dir, passages, vectors, engine=engine, **APPROX[engine])
    approx = ix.search_embeddings(vectors[1], 10)
    recall = np.mean([len({h.id for h in a} & {h.id for h in e}) / 10
                      for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95
    if engine == "lancedb":
        assert ix.index.has_ann  # IVF-PQ was really built and searched
        ix.save(tmp_path / "ix")
        data = next((tmp_path / "ix" / "lance").rglob("data/*.lance"))
        data.write_bytes(data.read_bytes()[:-8] + b"corrupt!")
        with pytest.raises(IndexCorruptError, match="sha256"):
            GaussianRetriever.load(tmp_path / "ix")


@pytest.mark.parametrize("engine", ENGINES)
def test_cli_builds_and_searches_an_engine_index(engine, model_dir, data_root, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(islice(open(data_root / "beir" / "scifact" / "corpus.jsonl"), 40)))
    runner = CliRunner()
    res = runner.invoke(app, ["index", "build", "-m", model_dir, "--docs", str(docs), "--out",
                              str(tmp_path / "ix"), "--engine", engine])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["search", str(tmp_path / "ix"), "cancer", "--json"])
    assert res.exit_code == 0 and '"distance"' in res.output
    wrong = "ivf" if engine == "qdrant" else "hnsw"
    for extra, fragment in ((["--engine", engine, "--index", wrong],
                             f"--engine {engine} serves --index flat"),
                            (["--url", "http://localhost:6333"], "--url is for --engine qdrant or lancedb"),
                            (["--engine", engine, "--url", ""], "--url is empty"),
                            (["--engine", "milvus"], "--engine must be one of")):
        res = runner.invoke(app, ["index", "build", "-m", model_dir, "--docs", str(docs), "--out",
                                  str(tmp_path / "o"), *extra])
        assert (res.exit_code == 1 and fragment in " ".join(res.output.split())
                and "Traceback" not in res.output)


@pytest.mark.parametrize("engine, params, fragment", [
    ("lancedb", {"nprobes": float("nan")}, "nprobes must be a positive integer, got nan"),
    ("lancedb", {"refine_factor": "ten"}, "refine_factor must be a positive integer"),
    ("lancedb", {"min_rows": True}, "min_rows must be a positive integer, got True"),
    ("lancedb", {"num_partitions": 0}, "num_partitions must be a positive integer, got 0"),
    ("lancedb", {"num_sub_vectors": 5}, "num_sub_vectors=5 must divide the dimension 8"),
    ("qdrant", {"hnsw_ef": -1}, "hnsw_ef must be a positive integer, got -1"),
])
def test_bad_engine_parameters_are_named(engine, params, fragment):
    from ragcun.retrieval.engines import make_index

    pytest.importorskip("lancedb" if engine == "lancedb" else "qdrant_client")
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        make_index("ivf" if engine == "lancedb" else "hnsw", 8, backend=engine, **params)
