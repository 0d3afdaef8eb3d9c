"""End to end on a real slice of scifact with the real all-MiniLM-L6-v2, plus the encoding cache and the CLI.

The slice (20 test queries, their judged documents and 100 others) is written in the official
BEIR layout, CRLF qrels with header. The full-dataset fidelity check (published NDCG@10) is the
slow test at the bottom.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ragcun.encoding.corpus import encode_corpus
from ragcun.evaluation.beir_eval import evaluate_model
from ragcun.evaluation.metrics import evaluate_run, read_run
from ragcun.fingerprint import model_fingerprint

from ..reference_search import brute_force


@pytest.fixture(scope="module")
def scifact_slice(beir_slice):
    return beir_slice("scifact", {"test": 20}, extra_docs=100)


@pytest.fixture(scope="module")
def minilm(minilm_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path, device="cpu")
    model.max_seq_length = 256
    return model


def test_minilm_on_scifact_slice(scifact_slice, minilm, tmp_path):
    from ragcun.data.beir import doc_text, load_beir

    out, run_file = tmp_path / "res.json", tmp_path / "run.trec"
    res = evaluate_model(minilm, [str(scifact_slice)], output=out, run_file=run_file, show_progress_bar=False)
    ds = "scifact-slice"
    n_docs = len((scifact_slice / "corpus.jsonl").read_text().splitlines())
    assert res["score"] == "cos" and res["model_fingerprint"] == model_fingerprint(minilm)
    m = res["results"][ds]
    assert 0.5 < m["ndcg@10"] <= 1.0  # MiniLM on scifact is ~0.65; the slice is easier (~120 docs)
    assert m["recall@1000"] == 1.0  # every judged doc is in the small corpus
    assert len(res["per_query"][ds]) == 20 and res["datasets"][ds]["documents"] == n_docs
    assert json.loads(out.read_text())["results"][ds]["ndcg@10"] == m["ndcg@10"]

    # independent check: cached vectors are the model's own, brute-force search + pytrec_eval agree
    corpus, queries, qrels = load_beir(str(scifact_slice))
    ids = list(corpus)
    texts = [doc_text(corpus[d]) for d in ids]
    emb = encode_corpus(minilm, ids, texts, ds, show_progress_bar=False)
    assert emb.encoded_chunks == 0  # evaluate_model left it in the cache
    np.testing.assert_allclose(emb.array()[:4], minilm.encode(texts[:4]), atol=2e-5)
    qids = list(queries)
    q = minilm.encode([queries[x] for x in qids])
    s, i = brute_force(q, emb.array(), n_docs, "cos")
    ref_run = {qid: {ids[j]: float(v) for v, j in zip(s[r], i[r], strict=True) if ids[j] != qid}
               for r, qid in enumerate(qids)}
    ref, _ = evaluate_run(qrels, ref_run)
    for k, v in ref.items():
        assert m[k] == pytest.approx(v, abs=1e-6), k
    back = read_run(run_file)
    assert set(back) == set(qids) and all(len(v) == n_docs for v in back.values())
    # the TREC qrels written beside the run: trec_eval-style tools score the pair to ragcun's numbers
    from ragcun.evaluation.metrics import read_qrels

    trec_qrels = read_qrels(run_file.with_suffix(".qrels"))
    assert set(back) <= set(trec_qrels) and all(trec_qrels[q] == qrels[q] for q in trec_qrels)
    again, _ = evaluate_run(trec_qrels, back)
    assert again["ndcg@10"] == pytest.approx(m["ndcg@10"], abs=1e-9)

    # MiniLM's vectors are unit-norm: ranking by L2 gives the same metrics as cosine, re-scored from the cache
    res_l2 = evaluate_model(minilm, [str(scifact_slice)], score="l2", show_progress_bar=False)
    assert res_l2["timing"][ds]["corpus_chunks_encoded"] == 0
    for k, v in m.items():
        assert res_l2["results"][ds][k] == pytest.approx(v, abs=1e-9), k


def test_cache_keys_and_uncached_cleanup(tiny_model_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    ids = [f"d{i}" for i in range(25)]
    texts = [f"document number {i} about topic {i % 3}" for i in range(25)]
    a = encode_corpus(model, ids, texts, "toy", chunk_size=10, cache_root=tmp_path, show_progress_bar=False)
    assert (a.encoded_chunks == 3 and len(a) == 25
            and sorted(p.name for p in a.directory.glob("chunk-*.npy")) == [
                "chunk-00000.npy", "chunk-00001.npy", "chunk-00002.npy"])
    b = encode_corpus(model, ids, texts, "toy", chunk_size=10, cache_root=tmp_path, show_progress_bar=False)
    assert b.encoded_chunks == 0 and b.key == a.key
    np.testing.assert_array_equal(a.array(), b.array())
    c = encode_corpus(model, ids, texts[:-1] + ["changed"], "toy", chunk_size=10, cache_root=tmp_path,
                      show_progress_bar=False)
    assert c.key != a.key  # edited corpus -> new entry
    fp = model_fingerprint(model)
    model.max_seq_length = 32
    assert model_fingerprint(model) != fp
    model.max_seq_length = 64
    with __import__("torch").no_grad():
        next(model.parameters()).add_(1e-3)
    assert model_fingerprint(model) != fp
    d = encode_corpus(model, ids, texts, "toy", chunk_size=10, cache=False, show_progress_bar=False)
    tmp_dir = d.directory
    assert tmp_dir.exists() and len(d) == 25
    d.cleanup()
    assert not tmp_dir.exists()


def test_evaluate_cli_with_tiny_model(scifact_slice, tiny_model_path, tmp_path):
    from typer.testing import CliRunner

    from ragcun.cli import app

    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["evaluate", "--model", tiny_model_path, "--datasets", str(scifact_slice),
                                   "--score", "l2", "--batch-size", "32", "--output", str(out),
                                   "--run-file", str(tmp_path / "run.trec")])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["score"] == "l2" and 0 <= data["results"]["scifact-slice"]["ndcg@10"] <= 1
    assert set(data["results"]["scifact-slice"]) >= {"ndcg@1", "ndcg@100", "map@10", "recall@1000", "p@10",
                                                     "mrr@100"}
    assert (tmp_path / "run.trec").exists()
    res = CliRunner().invoke(app, ["evaluate", "--model", tiny_model_path, "--datasets", "no-such-dataset"])
    assert res.exit_code == 1 and "no-such-dataset" in res.output


@pytest.mark.slow
def test_fidelity_published_minilm_numbers(minilm):
    """Plain all-MiniLM-L6-v2, cosine, 256 tokens: the published NDCG@10 (scifact 64.51, nfcorpus 31.59)
    ±0.3."""
    res = evaluate_model(minilm, ["scifact", "nfcorpus"], max_seq_length=256, show_progress_bar=False)
    assert res["results"]["scifact"]["ndcg@10"] * 100 == pytest.approx(64.51, abs=0.3)
    assert res["results"]["nfcorpus"]["ndcg@10"] * 100 == pytest.approx(31.59, abs=0.3)


def _dist_worker(rank: int, world: int, port: int, model_path: str, corpus: dict, queries: dict,
                 out: str) -> None:
    import os

    import torch.distributed as dist
    from sentence_transformers import SentenceTransformer

    from ragcun.evaluation.beir_eval import retrieve

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = SentenceTransformer(model_path, device="cpu")
        run, timing, _ = retrieve(model, corpus, queries, "l2", top_k=10, dataset="toy", chunk_size=7,
                                  show_progress_bar=False)
        with open(f"{out}.{rank}.json", "w") as fh:
            json.dump({"run": run, "encoded": timing["corpus_chunks_encoded"]}, fh)
        dist.barrier()  # both ranks done before teardown: gloo aborts a rank torn down mid-exchange
    finally:
        dist.destroy_process_group()


def test_torchrun_sharded_encoding_merges_to_the_same_run(tiny_model_path, tmp_path):
    """Two gloo ranks each encode every other chunk and search their own; the merged run equals one
    process's."""
    import socket

    import torch.multiprocessing as mp
    from sentence_transformers import SentenceTransformer

    from ragcun.evaluation.beir_eval import retrieve

    corpus = {f"d{i}": {"title": f"t{i}", "text": f"passage {i} on subject {i % 5}"} for i in range(30)}
    queries = {f"q{i}": f"subject {i}" for i in range(5)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_dist_worker, args=(2, port, tiny_model_path, corpus, queries, str(tmp_path / "out")), nprocs=2)
    runs = [json.loads((tmp_path / f"out.{r}.json").read_text()) for r in range(2)]
    assert [r["encoded"] for r in runs] == [3, 2]  # 5 chunks of 7: ranks took 0,2,4 and 1,3
    model = SentenceTransformer(tiny_model_path, device="cpu")
    single, _, _ = retrieve(model, corpus, queries, "l2", top_k=10, dataset="toy-single", chunk_size=7,
                            cache=False, show_progress_bar=False)
    for r in runs:
        assert list(r["run"]) == list(single)
        for q in single:
            assert list(r["run"][q]) == list(single[q])
            np.testing.assert_allclose(list(r["run"][q].values()), list(single[q].values()), rtol=1e-5)


def test_evaluate_rag_and_isotropy_with_a_model(scifact_slice, tiny_model_path, tmp_path):
    from typer.testing import CliRunner

    from ragcun.cli import app
    from ragcun.evaluation.rag import evaluate_rag

    out, plot = tmp_path / "rag.json", tmp_path / "rel.png"
    r = evaluate_rag(tiny_model_path, str(scifact_slice), score="l2", negatives_per_query=20, output=out,
                     plot=plot, show_progress_bar=False)
    assert r["queries"] == 20 and r["score"] == "l2"
    assert 0 <= r["roc_auc"] <= 1 and 0 <= r["ece"] <= 1 and 0 <= r["pool_recall@10"] <= 1
    assert "pearson" in r["norm_vs_ndcg@10"]
    assert json.loads(out.read_text())["pairs"] == r["pairs"]
    assert plot.read_bytes()[:4] == b"\x89PNG"

    iso_out = tmp_path / "iso"
    res = CliRunner().invoke(app, ["isotropy", "--model", tiny_model_path, "--dataset", str(scifact_slice),
                                   "--out", str(iso_out), "--num-slices", "32", "--label", "tiny"])
    assert res.exit_code == 0, res.output
    rows = json.loads((iso_out / "isotropy.json").read_text())["results"]
    assert [(x["label"], x["kind"]) for x in rows] == [("tiny", "corpus"), ("tiny", "queries")]
    assert rows[1]["n"] == 20 and rows[0]["dim"] == 32
    assert (iso_out / "covariance_heatmap.png").exists()


def test_hybrid_evaluation_fuses_the_model_with_bm25(scifact_slice, minilm, minilm_path, tmp_path):
    """`evaluate --hybrid`: BM25 alone ranks as bm25s does; the real MiniLM fused with BM25 is the hand-fused
    full matrix's ranking; the CLI prints it and refuses a bad weight in one line."""
    from typer.testing import CliRunner

    from ragcun.cli import app
    from ragcun.data.beir import doc_text, load_beir
    from ragcun.data.bm25 import get_index
    from ragcun.encoding.fusion import Fusion, bm25_scores, dense_scores, fuse

    corpus, queries, qrels = load_beir(str(scifact_slice))
    ids = list(corpus)
    texts = [doc_text(corpus[d]) for d in ids]
    qids = [q for q in queries if q in qrels]
    bm25 = get_index(ids, texts, show_progress=False)
    fusion = Fusion("zscore", {"dense": 1.0, "bm25": 0.5})
    res = evaluate_model(minilm, [str(scifact_slice)], hybrid=fusion, show_progress_bar=False,
                         run_file=tmp_path / "h.trec")
    assert res["hybrid"] == fusion.as_dict()
    q_emb, d_emb = minilm.encode([queries[q] for q in qids]), minilm.encode(texts)
    full = fuse({"dense": dense_scores(q_emb, d_emb, "cos"),
                 "bm25": bm25_scores(bm25, [queries[q] for q in qids])}, fusion)
    run = read_run(tmp_path / "h.trec")
    for r, q in enumerate(qids[:5]):
        top = [ids[j] for j in np.argsort(-full[r], kind="stable")[:10]]
        assert list(run[q])[:10] == top
    alone = evaluate_model(minilm, [str(scifact_slice)], hybrid=Fusion("zscore", {"bm25": 1.0}),
                           show_progress_bar=False, run_file=tmp_path / "b.trec")
    b_run = read_run(tmp_path / "b.trec")
    rows, _ = bm25.search([queries[qids[0]]], k=5)
    assert list(b_run[qids[0]])[:5] == [ids[j] for j in rows[0]]
    assert alone["results"]["scifact-slice"]["ndcg@10"] != res["results"]["scifact-slice"]["ndcg@10"]

    out = CliRunner().invoke(app, ["evaluate", "-m", minilm_path, "-d", str(scifact_slice),
                                   "--hybrid", "--bm25-weight", "0.5", "--backend", "torch", "--precision",
                                   "fp32"])
    assert out.exit_code == 0, out.output
    assert "BM25" in out.output and f"{res['results']['scifact-slice']['ndcg@10'] * 100:.2f}" in out.output
    bad = CliRunner().invoke(app, ["evaluate", "-m", "x", "-d", str(scifact_slice), "--hybrid",
                                   "--bm25-weight", "nan"])
    assert bad.exit_code == 1 and "--hybrid: fusion weight 'bm25'" in bad.output
    assert "Traceback" not in bad.output

