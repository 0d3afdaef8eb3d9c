"""MS MARCO readers on the real dev-small / TREC DL files and on broken files."""

from __future__ import annotations

import pytest

from ragcun.data.beir import DataFormatError
from ragcun.data.msmarco import load_collection, load_qrels_trec, load_queries_tsv


def test_real_dev_small_and_dl19(data_root):
    ms = data_root / "msmarco"
    qrels = load_qrels_trec(ms / "dev-small" / "qrels.dev.small.tsv")
    assert len(qrels) == 6980 and sum(len(v) for v in qrels.values()) == 7437
    assert len(load_queries_tsv(ms / "dev-small" / "queries.dev.small.tsv")) == 6980
    dl19 = load_qrels_trec(ms / "trec-dl-2019" / "2019qrels-pass.txt")  # space-separated, graded 0-3
    assert len(dl19) == 43 and {g for v in dl19.values() for g in v.values()} == {0, 1, 2, 3}


def test_broken_files(tmp_path):
    c = tmp_path / "collection.tsv"
    c.write_text("0\tfirst\n1 no tab here\n")
    with pytest.raises(DataFormatError, match=r"collection\.tsv:2: expected `id<TAB>passage`"):
        load_collection(c)
    c.write_text("0\tfirst\n0\tagain\n")
    with pytest.raises(DataFormatError, match=r"collection\.tsv:2: duplicate passage id"):
        load_collection(c)
    r = tmp_path / "qrels.train.tsv"
    r.write_text("1\t0\t5\t1\n2\t0\t6\n")
    with pytest.raises(DataFormatError, match=r"qrels\.train\.tsv:2: expected 4 fields"):
        load_qrels_trec(r)
    r.write_text("1\t0\t5\tyes\n")
    with pytest.raises(DataFormatError, match=r"qrels\.train\.tsv:1: relevance must be an integer"):
        load_qrels_trec(r)
