"""Hybrid search on a live GaussianRetriever (L2 fused with BM25): the same ranking as ``evaluate --hybrid``'s
fusion on real SciFact with the real MiniLM, on every engine; exact scores when the candidates are a union;
BM25 current after every write; saved, hash-checked and loaded with the index; the CLI."""

from __future__ import annotations

import json
from itertools import islice

import numpy as np
import pytest
from typer.testing import CliRunner

from ragcun.cli import app
from ragcun.data.bm25 import BM25Index
from ragcun.encoding.fusion import Fusion, fuse, hybrid_search
from ragcun.retrieval import GaussianRetriever
from ragcun.retrieval.errors import IndexCorruptError

QUERIES = ["vitamin D deficiency and cancer risk", "gut microbiota and diet", "statins lower cholesterol",
           "sleep deprivation impairs glucose tolerance", "antibody response to vaccination",
           "telomere length and ageing", "air pollution and lung cancer", "obesity causes inflammation",
           "mitochondrial dysfunction in neurodegeneration", "randomized trial of metformin in diabetes"]
def _engine(name: str, module: str) -> object:
    missing = not __import__("importlib").util.find_spec(module)
    return pytest.param(name, marks=pytest.mark.skipif(missing, reason=f"{module} not installed"))


ENGINES = ["faiss", "numpy", _engine("qdrant", "qdrant_client"), _engine("lancedb", "lancedb")]


@pytest.fixture(scope="module")
def passages(data_root):
    from ragcun.retrieval import read_documents

    return list(islice(read_documents(data_root / "beir" / "scifact" / "corpus.jsonl"), 200))


@pytest.fixture(scope="module")
def encoded(minilm_path, passages):
    r = GaussianRetriever(minilm_path, max_seq_length=128)
    return r.encode_documents([d["text"] for d in passages]), r.encode_queries(QUERIES)


def _build(minilm_path, passages, encoded, **kw) -> GaussianRetriever:
    r = GaussianRetriever(minilm_path, max_seq_length=128, **kw)
    r.add_embeddings(encoded[0], [d["text"] for d in passages], ids=[d["id"] for d in passages],
                     metadata=[{"even": i % 2 == 0} for i in range(len(passages))])
    return r


@pytest.mark.parametrize("engine", ENGINES)
def test_hybrid_ranking_is_evaluates_fusion_on_every_engine(engine, minilm_path, passages, encoded):
    r = _build(minilm_path, passages, encoded, engine=engine)
    bm25 = BM25Index.build([d["id"] for d in passages], [d["text"] for d in passages], show_progress=False)
    for fusion in (Fusion(), Fusion("rrf", {"dense": 1.0, "bm25": 1.0})):
        want_s, want_i = hybrid_search(encoded[1], encoded[0], QUERIES, bm25, fusion, 10, score="l2")
        got = r.retrieve_batch(QUERIES, top_k=10, hybrid=fusion)
        for hits, ws, wi in zip(got, want_s, want_i, strict=True):
            assert [h.id for h in hits] == [passages[j]["id"] for j in wi]
            np.testing.assert_allclose([h.hybrid_score for h in hits], ws, atol=1e-5)
            assert [h.rank for h in hits] == list(range(1, 11))
    dense = r.retrieve_batch(QUERIES, top_k=10)
    assert all(h.hybrid_score is None for row in dense for h in row)
    overlap = np.mean([len({h.id for h in a} & {h.id for h in b}) for a, b in zip(dense, got, strict=True)])
    assert overlap < 9.5  # BM25 changes the ranking (else this test could not tell the two apart)


@pytest.mark.parametrize("engine", ["faiss", "hnsw"])
def test_union_candidates_get_both_exact_scores(engine, minilm_path, passages, encoded):
    kw = {"index": "hnsw"} if engine == "hnsw" else {}  # HNSW has no reconstruct: vectors are re-encoded
    r = _build(minilm_path, passages, encoded, **kw)
    bm25 = BM25Index.build([d["id"] for d in passages], [d["text"] for d in passages], show_progress=False)
    rows = {d["id"]: j for j, d in enumerate(passages)}
    got = r.retrieve_batch(QUERIES[:4], top_k=5, hybrid=True, candidates=15)
    exhaustive = r.retrieve_batch(QUERIES[:4], top_k=5, hybrid=True)
    for qi, hits in enumerate(got):
        qv, lex = encoded[1][qi].astype(np.float64), bm25.retriever.get_scores(bm25.tokenize_queries(
            [QUERIES[qi]])[0])
        dist = np.linalg.norm(encoded[0].astype(np.float64) - qv, axis=1)
        union = set(np.argsort(dist)[:15]) | {j for j in np.argsort(-lex, kind="stable")[:15] if lex[j] > 0}
        u = np.asarray(sorted(union))
        fused = fuse({"dense": -dist[u][None], "bm25": lex[u][None]}, Fusion())[0]
        best = u[np.lexsort((u, -fused))][:5]
        assert [h.id for h in hits] == [passages[j]["id"] for j in best]
        for h in hits:  # the true distance even for a BM25-only candidate
            assert h.distance == pytest.approx(dist[rows[h.id]], abs=2e-3)
        assert len({h.id for h in hits} & {h.id for h in exhaustive[qi]}) >= 3


def test_bm25_follows_writes_and_is_saved_checked_and_loaded(minilm_path, passages, encoded, tmp_path):
    r = _build(minilm_path, passages, encoded, hybrid=Fusion("zscore", {"dense": 1.0, "bm25": 2.0}))
    first = r.retrieve("quixotic zebrafish fin regeneration", top_k=3)
    assert first[0].hybrid_score is not None and r.lexical.builds == 1
    r.add_documents(["Quixotic zebrafish regrow their fins."], ids=["new"])
    assert r.retrieve("quixotic zebrafish fin regeneration", top_k=3)[0].id == "new"
    assert r.lexical.builds == 2
    r.remove("new")
    assert "new" not in [h.id for h in r.retrieve("quixotic zebrafish", top_k=3)]
    assert r.retrieve("quixotic zebrafish", top_k=3, hybrid=False)[0].hybrid_score is None
    kept = r.retrieve("stem cells", top_k=4, filter={"even": True})
    assert len(kept) == 4 and all(h.metadata["even"] for h in kept)

    out = r.save(tmp_path / "ix")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["hybrid"]["fusion"]["weights"] == {"dense": 1.0, "bm25": 2.0}
    assert any(f.startswith("bm25/") for f in manifest["files"])
    loaded = GaussianRetriever.load(out)
    assert loaded.hybrid == r.hybrid and loaded.lexical.builds == 0  # loaded, not rebuilt
    want = [h.id for h in r.retrieve("stem cells", 5)]
    assert [h.id for h in loaded.retrieve("stem cells", top_k=5)] == want
    assert loaded.lexical.builds == 0

    target = next(p for p in (out / "bm25").iterdir() if p.suffix == ".npy")
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(IndexCorruptError, match="bm25/.*sha256"):
        GaussianRetriever.load(out)


def test_bad_hybrid_arguments_are_one_line(minilm_path, passages, encoded):
    r = _build(minilm_path, passages[:20], (encoded[0][:20], encoded[1]))
    with pytest.raises(TypeError, match="hybrid must be"):
        r.retrieve("cells", hybrid="yes")
    with pytest.raises(ValueError, match="candidates must be a positive integer"):
        r.retrieve("cells", hybrid=True, candidates=0)
    with pytest.raises(ValueError, match="fusion weight 'bm25'"):
        Fusion("zscore", {"dense": 1.0, "bm25": float("nan")})


def test_cli_builds_a_hybrid_index_and_searches_it(tiny_model_path, data_root, tmp_path):
    runner = CliRunner()
    out = tmp_path / "ix"
    res = runner.invoke(app, ["index", "build", "-m", tiny_model_path, "--docs", "scifact", "--data-dir",
                              str(data_root), "--limit", "60", "-o", str(out), "--hybrid",
                              "--bm25-weight", "1"])
    assert res.exit_code == 0, res.output
    assert "hybrid zscore(1·dense + 1·bm25)" in res.output
    res = runner.invoke(app, ["search", str(out), "alkaline phosphatase", "--json"])
    assert res.exit_code == 0, res.output
    assert all(h["hybrid_score"] is not None for h in json.loads(res.stdout))
    res = runner.invoke(app, ["search", str(out), "alkaline phosphatase", "--json", "--dense"])
    assert all(h["hybrid_score"] is None for h in json.loads(res.stdout))
    res = runner.invoke(app, ["search", str(out), "alkaline phosphatase", "--fusion", "convex",
                              "--bm25-weight", "2"])
    assert res.exit_code == 1 and "--hybrid: " in res.output and "Traceback" not in res.output
    # fusion options where no fusion happens are refused, never silently ignored
    for argv in (["search", str(out), "cells", "--dense", "--bm25-weight", "1"],
                 ["index", "build", "-m", tiny_model_path, "--docs", "scifact", "--data-dir", str(data_root),
                  "--limit", "5", "-o", str(tmp_path / "ix2"), "--fusion", "rrf"],
                 ["evaluate", "-m", tiny_model_path, "-d", "scifact", "--data-dir", str(data_root),
                  "--dense-weight", "2"]):
        res = runner.invoke(app, argv)
        assert res.exit_code == 1, (argv, res.output)
        assert "apply to hybrid search: add --hybrid" in " ".join(res.output.split()), res.output
        assert "Traceback" not in res.output
    assert not (tmp_path / "ix2").exists()
