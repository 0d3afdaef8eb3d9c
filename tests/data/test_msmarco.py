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


@pytest.mark.parametrize("name, text, read, message", [
    ("collection.tsv", "0\tfirst\n1 no tab here\n", load_collection,
     r"collection\.tsv:2: expected `id<TAB>passage`"),
    ("collection.tsv", "0\tfirst\n0\tagain\n", load_collection, r"collection\.tsv:2: duplicate passage id"),
    ("qrels.train.tsv", "1\t0\t5\t1\n2\t0\t6\n", load_qrels_trec, r"qrels\.train\.tsv:2: expected 4 fields"),
    ("qrels.train.tsv", "1\t0\t5\tyes\n", load_qrels_trec,
     r"qrels\.train\.tsv:1: relevance must be an integer"),
])
def test_broken_files(tmp_path, name, text, read, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataFormatError, match=message):
        read(path)
