"""BM25 triplets from the real nfcorpus train split (a slice), MS MARCO-format files, and the index cache."""

from __future__ import annotations

import json

import datasets
import pytest

from ragcun.data.beir import load_beir
from ragcun.data.bm25 import BM25Index, get_index
from ragcun.data.triplets import TripletOptions, build_triplets


@pytest.fixture(scope="module")
def nf_triplets(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("trip") / "nf"
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before the autouse cache fixture
        mp.setenv("RAGCUN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "ragcun-cache"))
        manifest = build_triplets(
            "nfcorpus", out, data_dir=str(data_root), max_train_samples=300, split_ratio=0.05, val_size=20,
            num_negatives=3, bm25_top_k=50, seed=7, show_progress=False,
        )
    return out, manifest


def test_no_document_judged_relevant_in_any_split_is_a_negative(nf_triplets, data_root):
    """NFCorpus judges ~38 documents per query across its splits: none may come back as a negative."""
    from ragcun.data.beir import load_qrels

    out, _ = nf_triplets
    ds = datasets.load_from_disk(str(out / "train"))
    judged: dict[str, set[str]] = {}
    for split in ("train", "dev", "test"):
        for q, docs in load_qrels(data_root / "beir" / "nfcorpus" / "qrels" / f"{split}.tsv").items():
            judged.setdefault(q, set()).update(d for d, g in docs.items() if g > 0)
    clashes = [(ex["query_id"], d) for ex in ds for d in ex["negative_ids"] if d in judged[ex["query_id"]]]
    assert clashes == []
    # the exclusion had work to do
    assert sum(len(judged[q]) for q in set(ds["query_id"])) > len(set(ds["query_id"]))


def test_false_negative_guard_keeps_only_candidates_below_the_positive(tmp_path, data_root):
    from ragcun.data.beir import load_beir
    from ragcun.data.bm25 import get_index

    manifest = build_triplets("nfcorpus", tmp_path / "g", data_dir=str(data_root), max_train_samples=60,
                              split_ratio=0.02, num_negatives=1, bm25_top_k=100, seed=3, show_progress=False,
                              false_negative_guard="above_positive")
    ds = datasets.load_from_disk(str(tmp_path / "g" / "train"))
    data = load_beir("nfcorpus", "train", str(data_root))
    ids = list(data.corpus)
    from ragcun.data.beir import doc_text

    index = get_index(ids, [doc_text(data.corpus[d]) for d in ids], show_progress=False)
    for ex in ds:
        (rank,) = ex["negative_ranks"]
        if rank == -1:
            continue  # no BM25 candidate below the positive: a random negative
        rows, _ = index.search([ex["query"]], k=rank)
        ranking = [ids[i] for i in rows[0]]
        assert ex["positive_id"] in ranking[: rank - 1]  # the positive is ranked above its negative
    assert manifest["options"]["false_negative_guard"] == "above_positive"
    assert manifest["counts"]["guarded_examples"] > 0


def test_no_positive_among_negatives(nf_triplets, data_root):
    out, manifest = nf_triplets
    ds = datasets.load_from_disk(str(out / "train"))
    assert ds.column_names == ["query", "positive", "negative_1", "negative_2", "negative_3",
                               "query_id", "positive_id", "negative_ids", "negative_ranks"]
    assert len(ds) == 300 == manifest["counts"]["train_examples"]
    assert manifest["counts"]["train_queries"] <= round(2570 * 0.05) + 1
    train = load_beir("nfcorpus", "train", str(data_root))
    for ex in ds:
        positives = {d for d, g in train.qrels[ex["query_id"]].items() if g >= 1}
        assert ex["positive_id"] in positives
        assert not positives & set(ex["negative_ids"])
        assert len(set(ex["negative_ids"])) == 3
        assert all(r == -1 or 1 <= r <= 50 + len(positives) for r in ex["negative_ranks"])
        assert ex["query"] == train.queries[ex["query_id"]]
    ranks = [r for ex in ds for r in ex["negative_ranks"]]
    assert sum(r > 0 for r in ranks) > 0.8 * len(ranks)  # mostly real BM25 negatives
    assert manifest["bm25"]["queries_per_second"] > 0
    assert manifest["seed"] == 7 and manifest["options"]["num_negatives"] == 3


def test_validation_is_held_out_beir(nf_triplets):
    out, manifest = nf_triplets
    val = load_beir(str(out / "validation"), split="dev")
    assert len(val.queries) == 20 and val.missing_docs == 0
    assert len(val.corpus) == 2000 == manifest["counts"]["validation_documents"]
    train_q = set(datasets.load_from_disk(str(out / "train"))["query_id"])
    assert not train_q & set(val.queries)
    assert json.loads((out / "manifest.json").read_text())["counts"] == manifest["counts"]


def test_same_seed_same_output_and_index_reused(nf_triplets, tmp_path, data_root, caplog):
    out, _ = nf_triplets
    with caplog.at_level("INFO"):
        build_triplets("nfcorpus", tmp_path / "again", data_dir=str(data_root), max_train_samples=300,
                       split_ratio=0.05, val_size=20, num_negatives=3, bm25_top_k=50, seed=7,
                       show_progress=False)
    assert "reusing BM25 index" in caplog.text
    a = datasets.load_from_disk(str(out / "train"))
    b = datasets.load_from_disk(str(tmp_path / "again" / "train"))
    assert a["negative_ids"] == b["negative_ids"] and a["query_id"] == b["query_id"]


def _msmarco_dir(root):
    root.mkdir()
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    lines = [f"{i}\t{words[i % 12]} {words[(i * 5) % 12]} {words[(i * 7) % 12]} passage number {i}"
             for i in range(60)]
    (root / "collection.tsv").write_text("\n".join(lines) + "\n")
    (root / "queries.train.tsv").write_text("100\talpha beta\n101\tgamma delta\n102\ttheta kappa\n")
    (root / "qrels.train.tsv").write_text("100\t0\t0\t1\n101\t0\t2\t1\n101\t0\t14\t1\n102\t0\t7\t1\n")
    return root


def test_msmarco_files_and_jsonl(tmp_path):
    src = _msmarco_dir(tmp_path / "msmarco")
    m = build_triplets(str(src), tmp_path / "out", num_negatives=2, bm25_top_k=10, format="jsonl",
                       show_progress=False)
    rows = [json.loads(x) for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 4 == m["counts"]["train_examples"]
    assert list(rows[0]) == ["query", "positive", "negative_1", "negative_2", "query_id", "positive_id",
                             "negative_ids", "negative_ranks"]
    pos = {"100": {"0"}, "101": {"2", "14"}, "102": {"7"}}
    for r in rows:
        assert not pos[r["query_id"]] & set(r["negative_ids"])
    assert m["sources"][0]["kind"] == "msmarco"


def test_random_negatives_and_combined_sources(tmp_path, data_root):
    src = _msmarco_dir(tmp_path / "msmarco")
    m = build_triplets([str(src), "scifact"], tmp_path / "out", data_dir=str(data_root), negatives="random",
                       max_train_samples=50, show_progress=False)
    ds = datasets.load_from_disk(str(tmp_path / "out" / "train"))
    assert len(ds) == 50 and {r for x in ds["negative_ranks"] for r in x} == {-1}
    assert {q.split(":")[0] for q in ds["query_id"]} <= {"msmarco", "scifact"}
    assert len(m["sources"]) == 2


def test_bad_options(tmp_path, data_root):
    with pytest.raises(ValueError, match="negatives"):
        build_triplets("scifact", tmp_path / "o", data_dir=str(data_root), negatives="dense")
    for bad, message in ((dict(max_train_samples=float("inf")), "max_train_samples expects int"),
                         (dict(split_ratio=float("nan")), "split_ratio must be a finite number"),
                         (dict(seed="x"), "seed expects int"), (dict(val_size=2.5), "val_size expects int"),
                         (dict(num_negativs=2), r"unknown key 'num_negativs' \(did you mean")):
        with pytest.raises(ValueError, match=f"build_triplets: {message}"):
            build_triplets("scifact", tmp_path / "o", data_dir=str(data_root), **bad)
    with pytest.raises(ValueError, match="not both"):
        build_triplets("scifact", tmp_path / "o", TripletOptions(), data_dir=str(data_root), seed=1)
    assert not (tmp_path / "o").exists()


def test_index_save_load_mmap(tmp_path):
    ids = ["a", "b", "c", "d"]
    texts = ["the cat sat on the mat", "dogs are running", "a cat and a dog", "quantum physics"]
    idx = get_index(ids, texts, show_progress=False)
    assert idx.path is not None and (idx.path / "doc_ids.json").exists()
    loaded = BM25Index.load(idx.path, mmap=True)
    docs, scores = loaded.search(["cats", "running dogs"], k=2)
    assert loaded.doc_ids[docs[0][0]] in {"a", "c"} and loaded.doc_ids[docs[1][0]] == "b"
    assert scores[0][0] > 0


def test_positives_per_query_in_rounds(tmp_path, data_root):
    """max_positives_per_query: the first rows hold every training query once, then second positives."""
    build_triplets("scifact", tmp_path / "r", data_dir=str(data_root), negatives="random", val_size=10,
                   max_positives_per_query=2, show_progress=False, cache_index=False)
    ds = datasets.load_from_disk(str(tmp_path / "r" / "train"))
    qrels = load_beir("scifact", "train", data_dir=str(data_root)).qrels
    queries = [q for q in ds["query_id"]]
    n = len(set(queries))
    assert len(set(queries[:n])) == n  # round one: every query once
    assert all(queries.count(q) == min(2, sum(1 for g in qrels[q].values() if g >= 1)) for q in set(queries))
    assert len(set(zip(ds["query_id"], ds["positive_id"], strict=True))) == len(ds)  # no pair twice
    with pytest.raises(ValueError, match="max_positives_per_query must be > 0"):
        build_triplets("scifact", tmp_path / "o", data_dir=str(data_root), max_positives_per_query=0)
