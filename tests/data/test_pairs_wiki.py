"""Wikipedia cleaning/passages and unsupervised pairs."""

from __future__ import annotations

import json

import datasets
import pytest

from ragcun.data.beir import DataFormatError
from ragcun.data.pairs import build_pairs
from ragcun.data.wiki import build_wiki_passages, clean_wiki_text, split_passages

RAW = """'''Paris''' is the [[capital city|capital]] of [[France]].{{citation needed}}<ref>A source</ref>
It has <b>many</b> museums.{{Infobox {{nested}} city}}

== History ==
[[File:Paris.jpg|thumb|A view]]
The city was founded long ago.<!-- hidden -->

== References ==
* Some book
"""


def test_clean_wiki_text():
    out = clean_wiki_text(RAW)
    assert out == "Paris is the capital of France. It has many museums.\n\nThe city was founded long ago."


def test_split_passages():
    text = " ".join(f"w{i}" for i in range(250))
    ps = split_passages(text, max_words=100, min_words=60)
    assert [len(p.split()) for p in ps] == [100, 100]  # the 50-word tail is dropped


def test_wiki_local_file(tmp_path):
    src = tmp_path / "articles.jsonl"
    arts = [{"title": f"A{i}", "text": " ".join(["word"] * 130) + "\n\n" + RAW} for i in range(5)]
    src.write_text("".join(json.dumps(a) + "\n" for a in arts))
    m = build_wiki_passages(tmp_path / "p.jsonl", source=src, max_words=50, min_words=10, num_passages=7,
                            show_progress=False)
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 7 == m["passages"]
    assert all("[[" not in p["text"] and "{{" not in p["text"] and len(p["text"].split()) <= 50
               for p in lines)
    assert (tmp_path / "p.jsonl.manifest.json").exists()


def test_wiki_bad_line(tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text('{"title": "x", "text": "y"}\n{"title": \n')
    with pytest.raises(DataFormatError, match=r"a\.jsonl:2"):
        build_wiki_passages(tmp_path / "p.jsonl", source=src, show_progress=False)
    assert not (tmp_path / "p.jsonl").exists()


def test_pairs_from_beir_corpus(tmp_path, data_root):
    m = build_pairs(data_root / "beir" / "scifact" / "corpus.jsonl", tmp_path / "pairs", val_size=50,
                    max_pairs=400, seed=1)
    train = datasets.load_from_disk(str(tmp_path / "pairs" / "train"))
    val = datasets.load_from_disk(str(tmp_path / "pairs" / "validation"))
    assert train.column_names == ["anchor", "positive", "kind", "passage_id"]
    assert len(train) == 400 and len(val) == 100  # 50 passages x (crop + title)
    assert not set(train["passage_id"]) & set(val["passage_id"])
    crops = [r for r in train if r["kind"] == "crop"]
    assert crops and all(r["anchor"] != r["positive"] for r in crops[:50])
    assert {r["kind"] for r in train} == {"crop", "title"}
    assert m["counts"]["passages"] == 5183  # every scifact abstract has >= 10 words


def test_pairs_crop_is_a_span(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text(" ".join(f"t{i}" for i in range(100)) + "\n")
    build_pairs(f, tmp_path / "o", mode="crop", val_size=0, format="jsonl", seed=3)
    row = json.loads((tmp_path / "o" / "train.jsonl").read_text().splitlines()[0])
    for side in ("anchor", "positive"):
        ids = [int(w[1:]) for w in row[side].split()]
        assert 10 <= len(ids) <= 50 and ids == list(range(ids[0], ids[0] + len(ids)))
