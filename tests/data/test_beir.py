"""BEIR loader: official counts on the real scifact and nfcorpus, and every validation error."""

from __future__ import annotations

import json

import pytest

from ragcun.data.beir import (
    BEIR_DATASETS,
    DataFormatError,
    dataset_stats,
    doc_text,
    expand_dataset_names,
    load_beir,
    load_corpus,
    load_qrels,
    load_queries,
)


@pytest.mark.parametrize(
    "name,split,docs,queries,qrels",
    [
        ("scifact", "test", 5183, 300, 339),
        ("scifact", "train", 5183, 809, 919),
        ("nfcorpus", "test", 3633, 323, 12334),
        ("nfcorpus", "train", 3633, 2590, 110575),
    ],
)
def test_official_counts(data_root, name, split, docs, queries, qrels):
    data = load_beir(name, split=split, data_dir=str(data_root))
    corpus, qs, rel = data  # tuple unpacking
    assert len(corpus) == docs
    assert len(qs) == queries
    assert sum(len(v) for v in rel.values()) == qrels
    assert set(qs) == set(rel)
    assert data.missing_docs == 0
    assert all(isinstance(g, int) for v in rel.values() for g in v.values())


def test_load_by_path_and_crlf(data_root):
    path = data_root / "beir" / "scifact"
    assert b"\r\n" in (path / "qrels" / "test.tsv").read_bytes()[:100]  # the official CRLF files
    data = load_beir(str(path), split="test")
    assert data.name == "scifact" and data.path == path
    # no '\r' leaks into ids or grades
    assert all("\r" not in d for v in data.qrels.values() for d in v)
    assert set(g for v in data.qrels.values() for g in v.values()) == {1}


def test_nfcorpus_graded_test_qrels(data_root):
    data = load_beir("nfcorpus", "test", str(data_root))
    grades = [g for v in data.qrels.values() for g in v.values()]
    assert grades.count(2) == 576 and grades.count(1) == 11758


def test_missing_split_names_available(data_root):
    with pytest.raises(FileNotFoundError, match="splits available: train, test"):
        load_beir("scifact", "dev", str(data_root))


def test_unknown_dataset_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "beir" / "nosuch")):
        load_beir("nosuch", data_dir=str(tmp_path))


def test_groups_and_doc_text():
    assert len(BEIR_DATASETS) == 18
    assert expand_dataset_names(["quick"]) == ["scifact", "nfcorpus"]
    assert expand_dataset_names(["standard", "scifact"]) == ["scifact", "nfcorpus", "arguana", "fiqa",
                                                             "trec-covid"]
    assert expand_dataset_names(["all"]) == list(BEIR_DATASETS)
    assert doc_text({"title": "T", "text": "body "}) == "T body"
    assert doc_text({"title": "", "text": " body "}) == "body"


# ---- validation errors, each fed a small broken file ------------------------------------------

def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_malformed_json_names_file_and_line(tmp_path):
    f = _write(tmp_path / "corpus.jsonl", '{"_id": "1", "text": "a"}\n{"_id": "2", "text": \n')
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:2: malformed JSON") as ei:
        load_corpus(f)
    assert ei.value.line == 2 and ei.value.path == f


def test_missing_id(tmp_path):
    f = _write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "a"}\n\n{"text": "b"}\n')
    with pytest.raises(DataFormatError, match=r"queries\.jsonl:3: missing `_id`"):
        load_queries(f)


def test_duplicate_ids(tmp_path):
    f = _write(tmp_path / "corpus.jsonl",
               '{"_id": "1", "text": "a"}\n{"_id": "2", "text": "b"}\n{"_id": "1", "text": "c"}\n')
    with pytest.raises(DataFormatError,
                       match=r"corpus\.jsonl:3: duplicate document id '1' \(first seen on line 1\)"):
        load_corpus(f)
    q = _write(tmp_path / "queries.jsonl", '{"_id": "q", "text": "a"}\n{"_id": "q", "text": "b"}\n')
    with pytest.raises(DataFormatError, match=r"queries\.jsonl:2: duplicate query id"):
        load_queries(q)


@pytest.mark.parametrize("name, text, read, message", [
    ("corpus.jsonl", '{"_id": "1", "title": "t"}\n', load_corpus, r":1: no `text` field"),
    ("qrels/test.tsv", "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq1\td2\r\n", load_qrels,
     r"test\.tsv:3: expected 3 tab-separated fields.*got 2"),
    ("qrels/test.tsv", "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq1\td2\t0.5\r\n", load_qrels,
     r"test\.tsv:3: score must be an integer, got '0\.5'"),
    ("t.tsv", "q1\td1\t1\nq1\td1\t2\n", load_qrels, r"t\.tsv:2: pair"),
])
def test_bad_field_names_the_file_and_line(tmp_path, name, text, read, message):
    with pytest.raises(DataFormatError, match=message):
        read(_write(tmp_path / name, text))


def test_qrels_without_header_and_crlf(tmp_path):
    f = _write(tmp_path / "t.tsv", "q1\td1\t1\r\nq1\td2\t0\r\nq2\td1\t2\r\n")
    assert load_qrels(f) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d1": 2}}


def _mini_dataset(root, qrels_text):
    _write(root / "corpus.jsonl", "".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"doc {i}"}) + "\n"
                                          for i in range(3)))
    _write(root / "queries.jsonl", '{"_id": "q1", "text": "one"}\n{"_id": "q2", "text": "two"}\n'
                                   '{"_id": "q3", "text": "unused"}\n')
    _write(root / "qrels" / "test.tsv", qrels_text)
    return root


def test_qrels_to_missing_documents_warn_not_fail(tmp_path, caplog):
    root = _mini_dataset(tmp_path / "mini",
                         "query-id\tcorpus-id\tscore\r\nq1\td0\t1\r\nq1\tgone1\t1\r\nq2\tgone2\t1\r\n")
    with caplog.at_level("WARNING"):
        data = load_beir(str(root), "test")
    assert data.missing_docs == 2
    assert "2 of 3 qrels pairs" in caplog.text and "missing from the corpus" in caplog.text
    assert set(data.queries) == {"q1", "q2"}  # only queries with qrels
    assert data.qrels["q1"] == {"d0": 1, "gone1": 1}  # kept, as BEIR evaluates them
    st = dataset_stats(str(root))
    assert st["documents"] == 3 and st["splits"]["test"] == {**st["splits"]["test"], "queries": 2, "qrels": 3,
                                                             "missing_docs": 2}


def test_broken_file_inside_dataset_is_named(tmp_path):
    root = _mini_dataset(tmp_path / "mini", "query-id\tcorpus-id\tscore\nq1\td0\t1\nq1\td1\tx\n")
    with pytest.raises(DataFormatError, match=r"mini/qrels/test\.tsv:3: score must be an integer"):
        load_beir(str(root), "test")
