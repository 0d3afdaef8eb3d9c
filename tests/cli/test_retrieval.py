"""`ragcun index build` / `ragcun search` on a real scifact slice, and the document-file reader."""

from __future__ import annotations

import gzip
import json
from itertools import islice

import pytest
from typer.testing import CliRunner

from ragcun.cli import app
from ragcun.retrieval import GaussianRetriever, read_documents

runner = CliRunner()


def text(res) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(res.output.split())


@pytest.fixture(scope="module")
def encoder_dir(tiny_model_path, tmp_path_factory):
    import torch

    from ragcun.modeling import IsotropicGaussianEncoder

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cli-enc") / "model"
    IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=48, device="cpu").save(path)
    return str(path)


@pytest.fixture()
def corpus_slice(data_root, tmp_path):
    """The first 40 lines of the real scifact corpus.jsonl (BEIR format, untouched)."""
    src = data_root / "beir" / "scifact" / "corpus.jsonl"
    out = tmp_path / "corpus.jsonl"
    with open(src, encoding="utf-8") as fh:
        out.write_text("".join(islice(fh, 40)), encoding="utf-8")
    return out


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_index_build_then_search(encoder_dir, corpus_slice, tmp_path, kind):
    out = tmp_path / "ix"
    res = runner.invoke(app, ["index", "build", "--model", encoder_dir, "--docs", str(corpus_slice),
                              "--out", str(out), "--index", kind, "--chunk-size", "16", "--batch-size", "8"])
    assert res.exit_code == 0, res.output
    manifest = GaussianRetriever.read_manifest(out)
    assert manifest["counts"]["documents"] == 40 and manifest["index"]["type"] == kind
    first = json.loads(corpus_slice.read_text().splitlines()[0])
    res = runner.invoke(app, ["search", str(out), first["title"], "-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)
    assert len(hits) == 3 and [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["distance"] <= hits[1]["distance"] <= hits[2]["distance"]
    assert set(hits[0]) >= {"id", "text", "metadata", "distance", "norm"}
    # same answer as the Python API
    api = GaussianRetriever.load(out).retrieve(first["title"], top_k=3)
    assert [h["id"] for h in hits] == [h.id for h in api]
    res = runner.invoke(app, ["search", str(out), "stem cells", "-k", "2"])
    assert res.exit_code == 0 and "distance" in res.stdout
    res = runner.invoke(app, ["index", "info", str(out)])
    assert res.exit_code == 0 and "fingerprint" in res.stdout


def test_index_build_errors(encoder_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": 3}\n')
    res = runner.invoke(app, ["index", "build", "--model", encoder_dir, "--docs", str(bad), "--out",
                              str(tmp_path / "o")])
    assert res.exit_code == 1
    assert f"{bad}:2: `text` must be a string, got int" in text(res)
    assert not (tmp_path / "o").exists()
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    res = runner.invoke(app, ["index", "build", "--model", encoder_dir, "--docs", str(dup), "--out",
                              str(tmp_path / "o")])
    assert res.exit_code == 1 and f"{dup}:2: duplicate document id 'a' (first on line 1)" in text(res)
    res = runner.invoke(app, ["index", "build", "--model", encoder_dir, "--docs", str(dup), "--out",
                              str(tmp_path / "o"), "--index", "lsh"])
    assert res.exit_code == 1 and "--index must be flat, ivf or hnsw" in text(res)
    res = runner.invoke(app, ["search", str(tmp_path / "missing"), "q"])
    assert res.exit_code == 1 and "no such index directory" in text(res)


def test_read_documents_formats(data_root, tmp_path):
    beir = list(islice(read_documents(data_root / "beir" / "scifact"), 2))  # a dataset folder works
    raw = [json.loads(line) for line in islice(open(data_root / "beir" / "scifact" / "corpus.jsonl"), 2)]
    assert beir[0]["id"] == raw[0]["_id"]
    assert beir[0]["text"] == f"{raw[0]['title']} {raw[0]['text']}"
    assert beir[0]["metadata"]["title"] == raw[0]["title"]
    plain = tmp_path / "docs.jsonl.gz"
    with gzip.open(plain, "wt", encoding="utf-8") as fh:
        fh.write('{"id": 7, "text": "seven", "metadata": {"lang": "en"}}\r\n\n{"text": "no id"}\n')
    assert list(read_documents(plain)) == [
        {"id": "7", "text": "seven", "metadata": {"lang": "en"}},
        {"id": None, "text": "no id", "metadata": None},
    ]
    tsv = tmp_path / "collection.tsv"
    tsv.write_text("p1\tfirst passage\np2\tsecond\n")
    assert [d["id"] for d in read_documents(tsv)] == ["p1", "p2"]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a", "text": "ok"}\n{"id": "b", "text": "x"\n')
    with pytest.raises(ValueError, match=r"broken.jsonl:2: malformed JSON"):
        list(read_documents(broken))
    badmeta = tmp_path / "badmeta.jsonl"
    badmeta.write_text('{"id": "a", "text": "ok", "metadata": [1]}\n')
    with pytest.raises(ValueError, match=r"badmeta.jsonl:1: field 'metadata'"):
        list(read_documents(badmeta))


def test_index_build_max_seq_length_is_kept_and_checked(encoder_dir, corpus_slice, tmp_path):
    out = tmp_path / "ix16"
    res = runner.invoke(app, ["index", "build", "--model", encoder_dir, "--docs", str(corpus_slice),
                              "--out", str(out), "--max-seq-length", "16"])
    assert res.exit_code == 0, res.output
    assert GaussianRetriever.read_manifest(out)["model"]["max_seq_length"] == 16
    loaded = GaussianRetriever.load(out)  # the model on disk truncates at 64: load applies 16 again
    assert loaded.model.max_seq_length == 16
    from ragcun.fingerprint import model_fingerprint

    # the truncation is part of the model's identity, hence load re-applies it
    loaded.model.max_seq_length = 64
    assert model_fingerprint(loaded.model) != GaussianRetriever.read_manifest(out)["model"]["fingerprint"]
    res = runner.invoke(app, ["index", "build", "--model", encoder_dir, "--docs", str(corpus_slice),
                              "--out", str(tmp_path / "bad"), "--max-seq-length", "100000"])
    assert res.exit_code == 1 and "above what" in text(res) and "Traceback" not in res.output
