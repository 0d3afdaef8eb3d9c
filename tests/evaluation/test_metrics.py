"""Metrics on hand-made runs: against values worked out by hand, pytrec_eval directly, and BEIR's
evaluator."""

from __future__ import annotations

import math
import random

import pytest

from ragcun.evaluation.metrics import (
    DEFAULT_METRICS,
    evaluate_run,
    metric_names,
    read_qrels,
    read_run,
    trec_order,
    write_qrels,
    write_run,
)

QRELS = {"q1": {"d1": 1, "d3": 2}, "q2": {"d2": 1}}
RUN = {"q1": {"d1": 0.9, "d2": 0.8, "d3": 0.7}, "q2": {"d1": 0.5, "d2": 0.4}}


def test_hand_computed_values():
    agg, per_q = evaluate_run(QRELS, RUN)
    q1, q2 = per_q["q1"], per_q["q2"]
    # q1: d1 (rel 1) at rank 1, d3 (rel 2) at rank 3
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert q1["ndcg@10"] == pytest.approx((1 + 2 / math.log2(4)) / idcg, abs=1e-9)
    assert q1["ndcg@1"] == pytest.approx(1 / 2, abs=1e-9)  # ideal first doc has gain 2
    assert q1["map@10"] == pytest.approx((1 / 1 + 2 / 3) / 2, abs=1e-9)
    assert q1["recall@10"] == 1.0
    assert q1["p@1"] == 1.0
    assert q1["p@10"] == pytest.approx(0.2)  # trec_eval divides by the cutoff, not by the docs retrieved
    assert q1["mrr@10"] == 1.0
    # q2: only relevant doc at rank 2
    assert q2["ndcg@10"] == pytest.approx(1 / math.log2(3), abs=1e-9)
    assert q2["mrr@10"] == 0.5
    assert q2["map@100"] == 0.5
    assert q2["p@1"] == 0.0
    assert agg["ndcg@10"] == pytest.approx((q1["ndcg@10"] + q2["ndcg@10"]) / 2)
    assert agg["mrr@10"] == 0.75
    assert list(agg) == metric_names(DEFAULT_METRICS)
    assert all(name == name.lower() for name in agg)


def test_mrr_cutoff_and_trec_tie_order():
    _, per_q = evaluate_run(QRELS, RUN, metrics={"mrr": (1, 10)})
    assert per_q["q2"]["mrr@1"] == 0.0 and per_q["q2"]["mrr@10"] == 0.5
    # equal scores: trec_eval ranks by document id descending, so "b" comes before "a"
    tie_run = {"q": {"a": 1.0, "b": 1.0, "c": 0.5}}
    assert [d for d, _ in trec_order(tie_run["q"])] == ["b", "a", "c"]
    _, per_q = evaluate_run({"q": {"a": 1}}, tie_run, metrics={"mrr": (1, 10), "ndcg": (1,)})
    assert per_q["q"]["mrr@1"] == 0.0
    assert per_q["q"]["mrr@10"] == 0.5
    assert per_q["q"]["ndcg@1"] == 0.0


def test_identical_ids_are_ignored():
    run = {"q1": {"q1": 5.0, "d1": 0.9, "d2": 0.8, "d3": 0.7}}
    agg, _ = evaluate_run(QRELS, run)
    agg_ref, _ = evaluate_run(QRELS, {"q1": RUN["q1"]})
    assert agg == agg_ref
    kept, _ = evaluate_run(QRELS, run, ignore_identical_ids=False)
    assert kept["p@1"] == 0.0 and agg["p@1"] == 1.0


def _random_case(seed: int, n_q: int = 30, n_docs: int = 200):
    rng = random.Random(seed)
    qrels, run = {}, {}
    for q in range(n_q):
        qid = f"q{q}"
        rel = rng.sample(range(n_docs), rng.randint(1, 8))
        qrels[qid] = {f"d{d}": rng.choice([0, 1, 1, 2]) for d in rel}
        # rounded: many ties
        run[qid] = {f"d{d}": round(rng.random(), 3) for d in rng.sample(range(n_docs), 150)}
    return qrels, run


def test_matches_pytrec_eval_directly():
    import pytrec_eval

    qrels, run = _random_case(0)
    agg, per_q = evaluate_run(qrels, run)
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.1,3,5,10,100", "map_cut.10,100",
                                                "recall.10,100,1000", "P.1,10", "recip_rank"})
    ref = ev.evaluate(run)
    for qid, vals in ref.items():
        assert per_q[qid]["ndcg@10"] == vals["ndcg_cut_10"]
        assert per_q[qid]["map@100"] == vals["map_cut_100"]
        assert per_q[qid]["recall@1000"] == vals["recall_1000"]
        assert per_q[qid]["p@10"] == vals["P_10"]
        # runs have 150 docs: MRR@100 may differ from unbounded recip_rank, MRR@1000 may not
    _, per_q_full = evaluate_run(qrels, run, metrics={"mrr": (1000,)})
    for qid, vals in ref.items():
        assert per_q_full[qid]["mrr@1000"] == vals["recip_rank"]
    assert agg["ndcg@10"] == pytest.approx(sum(v["ndcg_cut_10"] for v in ref.values()) / len(ref), abs=1e-12)


def test_matches_beir_evaluator():
    beir_eval = pytest.importorskip("beir.retrieval.evaluation")
    qrels, run = _random_case(1)
    k_values = [1, 3, 5, 10, 100, 1000]
    agg, _ = evaluate_run(qrels, run, k_values=k_values)
    ndcg, _map, recall, prec = beir_eval.EvaluateRetrieval.evaluate(
        qrels, {q: dict(d) for q, d in run.items()}, k_values)
    for k in k_values:
        assert round(agg[f"ndcg@{k}"], 5) == pytest.approx(ndcg[f"NDCG@{k}"], abs=1e-5)
        assert round(agg[f"map@{k}"], 5) == pytest.approx(_map[f"MAP@{k}"], abs=1e-5)
        assert round(agg[f"recall@{k}"], 5) == pytest.approx(recall[f"Recall@{k}"], abs=1e-5)
        assert round(agg[f"p@{k}"], 5) == pytest.approx(prec[f"P@{k}"], abs=1e-5)


def test_unknown_metric_and_bad_scores():
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_run(QRELS, RUN, metrics={"bpref": (10,)})
    with pytest.raises(ValueError, match="run\\['q1'\\]\\['d1'\\]"):
        evaluate_run(QRELS, {"q1": {"d1": float("nan")}})
    with pytest.raises(ValueError, match="not both"):
        evaluate_run(QRELS, RUN, k_values=[10], metrics={"ndcg": (10,)})


def test_run_file_round_trip(tmp_path):
    qrels, run = _random_case(2, n_q=5)
    path = write_run(tmp_path / "run.trec", run, tag="mytag")
    lines = path.read_text().splitlines()
    first = lines[0].split()
    assert len(first) == 6 and first[1] == "Q0" and first[3] == "1" and first[5] == "mytag"
    back = read_run(path)
    assert back == {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items()}
    assert evaluate_run(qrels, back) == evaluate_run(qrels, run)
    qpath = write_qrels(tmp_path / "qrels.txt", qrels)
    assert read_qrels(qpath) == qrels


@pytest.mark.parametrize("name, text, read, message", [
    ("bad.trec", b"q1 Q0 d1 1 0.5 tag\nq1 Q0 d2 2 notanumber tag\n", "run", r"bad\.trec:2: score"),
    ("bad.trec", b"q1 Q0 d1 1 0.5\n", "run", r"bad\.trec:1: expected 6 columns"),
    ("test.tsv", b"query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq1\td2\tx\r\n", "qrels",
     r"test\.tsv:3: score must be an integer"),
])
def test_read_errors_name_file_and_line(tmp_path, name, text, read, message):
    path = tmp_path / name
    path.write_bytes(text)
    with pytest.raises(ValueError, match=message):
        (read_run if read == "run" else read_qrels)(path)
