"""Bad input as a table: file contents × reader or command → the one-line message it must get.

Every file reader of :mod:`ragcun.data` runs through the generic file faults (missing, not a regular file,
corrupt gzip, bytes that are not UTF-8), every document fault runs through both the Python reader and
``ragcun index build``, and every numeric option through its command. A reader added to ragcun.data without
a row here fails :func:`test_every_reader_is_in_the_table`.
"""

from __future__ import annotations

import gzip
import inspect
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import ragcun.data.beir
import ragcun.data.documents
import ragcun.data.msmarco
import ragcun.data.pairs
import ragcun.data.wiki
from ragcun.cli import app
from ragcun.data.beir import load_beir

runner = CliRunner()


def assert_clean_error(res, *needles: str) -> None:
    text = " ".join(res.output.split())
    assert res.exit_code == 1, text
    assert "Traceback" not in res.output and "╭" not in res.output, res.output  # no traceback, no usage box
    for n in needles:
        assert n in text, f"{n!r} not in {text!r}"


def consume(result):
    """Run a reader to the end (generators, dicts and tuples alike)."""
    return list(result) if inspect.isgenerator(result) else result


# ---------------------------------------------------------------------------- every file reader × file faults
READERS = {
    "iter_lines": ragcun.data.beir.iter_lines,
    "iter_jsonl": ragcun.data.beir.iter_jsonl,
    "load_corpus": ragcun.data.beir.load_corpus,
    "load_queries": ragcun.data.beir.load_queries,
    "load_qrels": ragcun.data.beir.load_qrels,
    "read_documents": ragcun.data.documents.read_documents,
    "iter_tsv_pairs": ragcun.data.msmarco.iter_tsv_pairs,
    "load_collection": ragcun.data.msmarco.load_collection,
    "load_queries_tsv": ragcun.data.msmarco.load_queries_tsv,
    "load_qrels_trec": ragcun.data.msmarco.load_qrels_trec,
    "iter_passages": ragcun.data.pairs.iter_passages,
    "iter_local_articles": ragcun.data.wiki.iter_local_articles,
}
#: Readers that take no file (they stream from the Hub or join a dataset folder's files, each read above).
NOT_FILE_READERS = {"iter_hf_articles", "load_beir"}


def _suffix(reader: str) -> str:
    return ".tsv" if reader in ("iter_tsv_pairs", "load_collection", "load_queries_tsv", "load_qrels_trec",
                                "load_qrels") else ".jsonl"


FILE_FAULTS = {
    # name: (how to make it from a path stem, the fragment the error must contain)
    "missing": (lambda p: p, "not found"),
    "not a regular file": (lambda p: (p.mkdir(), p)[1], "not a regular file"),
    "corrupt gzip": (lambda p: (p.with_name(p.name + ".gz").write_bytes(b"\x1f\x8b\x08\x00garbage"),
                                p.with_name(p.name + ".gz"))[1], "cannot be read"),
    "truncated gzip": (lambda p: (p.with_name(p.name + ".gz").write_bytes(
        gzip.compress(b'{"_id": "a", "text": "x"}\n' * 200)[:40]), p.with_name(p.name + ".gz"))[1],
                       "cannot be read"),
    "not UTF-8": (lambda p: (p.write_bytes(b'{"_id": "a", "text": "caf\xe9"}\n' if p.suffix == ".jsonl"
                                           else b"a\tcaf\xe9\n"), p)[1], "not UTF-8"),
}


def test_every_reader_is_in_the_table():
    modules = [ragcun.data.beir, ragcun.data.documents, ragcun.data.msmarco, ragcun.data.pairs,
               ragcun.data.wiki]
    found = {name for m in modules for name, fn in vars(m).items()
             if inspect.isfunction(fn) and fn.__module__ == m.__name__
             and name.startswith(("read_", "load_", "iter_"))}
    assert found - set(READERS) - NOT_FILE_READERS == set(), "a new reader needs its rows in READERS"


@pytest.mark.parametrize("fault", list(FILE_FAULTS))
@pytest.mark.parametrize("reader", list(READERS))
def test_file_faults_name_the_file(reader, fault, tmp_path):
    make, fragment = FILE_FAULTS[fault]
    path = make(tmp_path / f"input{_suffix(reader)}")
    if reader == "read_documents" and fault == "not a regular file":
        fragment = "folder without corpus.jsonl"  # a folder is read as a BEIR dataset folder
    with pytest.raises((ValueError, OSError)) as info:
        consume(READERS[reader](path))
    message = str(info.value)
    assert fragment in message and str(path) in message and "\n" not in message, message


# ---------------------------------------------------------------------------- documents: reader and command
DOCUMENT_CASES = [
    ("docs.csv", b"id,text\n1,alpha\n", "unknown extension '.csv'"),
    ("docs.txt", b"alpha\n", "unknown extension '.txt'"),
    ("empty.jsonl", b"", "empty file"),
    ("bad.jsonl", b'{"id": "a", "text": "alpha"}\n{"id": "b", "text": "x"\n', "bad.jsonl:2: malformed JSON"),
    ("array.jsonl", b"[1, 2]\n", "array.jsonl:1: expected a JSON object"),
    ("blank.jsonl", b'{"id": "a", "text": "  "}\n', "blank.jsonl:1: document 'a' has an empty text"),
    ("latin.jsonl", b'{"id": "a", "text": "caf\xe9"}\n', "latin.jsonl:1: not UTF-8"),
    ("meta.jsonl", b'{"id": "a", "text": "alpha", "metadata": [1]}\n', "meta.jsonl:1: field 'metadata'"),
    ("corrupt.jsonl.gz", b"\x1f\x8b\x08\x00garbage", "corrupt.jsonl.gz: cannot be read"),
    ("short.tsv", b"p1\n", "short.tsv:1"),
    ("nullid.jsonl", b'{"_id": null, "text": "alpha"}\n', "nullid.jsonl:1: `_id` is null"),
    ("dup.jsonl", b'{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n',
     "dup.jsonl:2: duplicate document id 'a' (first on line 1)"),
    ("dup.tsv", b"p1\talpha\np1\tbeta\n", "dup.tsv:2: duplicate document id 'p1' (first on line 1)"),
    ("lone.jsonl", b'{"id": "a", "text": "\\ud800 cells"}\n',
     "lone.jsonl:1: `text` holds a lone surrogate (U+D800"),
    ("loneid.jsonl", b'{"id": "\\udfff", "text": "cells"}\n',
     "loneid.jsonl:1: `id` holds a lone"),
    ("nul.jsonl", b'{"id": "a", "text": "a\\u0000b"}\n', "nul.jsonl:1: `text` holds a NUL character"),
    ("nul.tsv", b"p1\ta\x00b\n", "nul.tsv:1: the line holds a NUL character"),
]


@pytest.fixture(scope="module")
def model_dir(tiny_model_path, tmp_path_factory):
    from ragcun.modeling import IsotropicGaussianEncoder

    root = tmp_path_factory.mktemp("table-model")
    IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=8).save(root / "model")
    return str(root / "model")


@pytest.mark.parametrize(("name", "content", "fragment"), DOCUMENT_CASES)
def test_document_faults_through_reader_and_command(name, content, fragment, model_dir, tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises((ValueError, OSError), match=None) as info:
        list(ragcun.data.documents.read_documents(path))
    assert fragment in str(info.value)
    out = tmp_path / "index"
    # a model that is not there: the documents' error comes first, so they are read before any model loads
    no_model = str(tmp_path / "no-model")
    res = runner.invoke(app, ["index", "build", "-m", no_model, "--docs", str(path), "--out", str(out)])
    assert_clean_error(res, fragment)
    assert not out.exists()  # nothing written by a failed command
    # encode reads the same records the same way
    vectors = tmp_path / "v.npy"
    res = runner.invoke(app, ["encode", "-m", no_model, "--docs", str(path), "--out", str(vectors)])
    assert_clean_error(res, fragment)
    assert not vectors.exists()


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda t: (t / "nocorpus").mkdir() or t / "nocorpus", "is a folder without corpus.jsonl"),
    (lambda t: Path("/dev/null"), "/dev/null: not a regular file"),
])
def test_document_paths_that_are_not_document_files(make, fragment, model_dir, tmp_path):
    res = runner.invoke(app, ["index", "build", "-m", model_dir, "--docs", str(make(tmp_path)),
                              "--out", str(tmp_path / "index")])
    assert_clean_error(res, "--docs", fragment)


# -------------------------------------------------------------------------- BEIR folders: loader and evaluate
@pytest.fixture(scope="module")
def slice_dir(beir_slice):
    return beir_slice("scifact", {"test": 6}, extra_docs=10, max_chars=200)


def _qrels_to_unknown_docs(d: Path) -> None:
    lines = (d / "qrels" / "test.tsv").read_text().splitlines()
    (d / "qrels" / "test.tsv").write_text("\n".join([lines[0]] + [f"{ln.split()[0]}\tnope-{i}\t1"
                                                                  for i, ln in enumerate(lines[1:])]) + "\n")


def _qrels_to_unknown_queries(d: Path) -> None:
    lines = (d / "qrels" / "test.tsv").read_text().splitlines()
    (d / "qrels" / "test.tsv").write_text("\n".join([lines[0]] + [f"q-nope-{i}\t{ln.split()[1]}\t1"
                                                                  for i, ln in enumerate(lines[1:])]) + "\n")


def _corpus_line_broken(d: Path) -> None:
    with open(d / "corpus.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"_id": "z", "text": \n')


def _corpus_surrogate(d: Path) -> None:
    with open(d / "corpus.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"_id": "z", "title": "", "text": "\\ud83d cells"}\n')


def _qrels_split_is_a_folder(d: Path) -> None:
    (d / "qrels" / "test.tsv").unlink()
    (d / "qrels" / "test.tsv").mkdir()


BEIR_CASES = [
    (_qrels_to_unknown_docs, "none of the documents judged relevant is in"),
    (_qrels_to_unknown_queries, "none of its"),
    (_corpus_line_broken, "corpus.jsonl:"),
    (_corpus_surrogate, "holds a lone surrogate (U+D83D"),
    (_qrels_split_is_a_folder, "test.tsv: not a regular file (a folder?)"),
]


@pytest.mark.parametrize(("edit", "fragment"), BEIR_CASES)
def test_beir_faults_through_loader_and_evaluate(edit, fragment, slice_dir, tiny_model_path, tmp_path):
    d = tmp_path / "ds"
    shutil.copytree(slice_dir, d)
    edit(d)
    with pytest.raises((ValueError, OSError), match=None) as info:
        load_beir(str(d))
    assert fragment in str(info.value)
    res = runner.invoke(app, ["evaluate", "-m", tiny_model_path, "-d", str(d), "--no-cache"])
    assert_clean_error(res, fragment)


def test_evaluate_reads_the_data_before_the_model(slice_dir, tmp_path):
    d = tmp_path / "ds"
    shutil.copytree(slice_dir, d)
    _corpus_surrogate(d)
    res = runner.invoke(app, ["evaluate", "-m", str(tmp_path / "no-model"), "-d", str(d), "--no-cache"])
    assert_clean_error(res, "corpus.jsonl:", "lone surrogate")  # not the missing model


def test_what_evaluation_drops_is_counted_in_one_line(slice_dir, tmp_path, caplog):
    d = tmp_path / "partial"
    shutil.copytree(slice_dir, d)
    with open(d / "qrels" / "test.tsv", "a", encoding="utf-8") as fh:
        fh.write("q-unknown\tsome-doc\t1\n")
        first = next(iter(load_beir(str(slice_dir)).qrels))
        fh.write(f"{first}\tdoc-unknown\t1\n")
    with caplog.at_level("WARNING", logger="ragcun.data.beir"):
        load_beir(str(d))
    lines = [r.getMessage() for r in caplog.records if "judged queries" in r.getMessage()]
    assert (len(lines) == 1 and "1 of" in lines[0] and "q-unknown" in lines[0]
            and "missing from the corpus" in lines[0])


def test_metrics_beyond_top_k_are_absent_not_nan(slice_dir, tiny_model_path, tmp_path):
    out = tmp_path / "res.json"
    res = runner.invoke(app, ["evaluate", "-m", tiny_model_path, "-d", str(slice_dir), "--top-k", "5", "-o",
                              str(out)])
    assert res.exit_code == 0, res.output
    assert "nan" not in res.output.lower()
    data = json.loads(out.read_text())
    (vals,) = data["results"].values()
    assert vals and all(int(k.split("@")[1]) <= 5 for k in vals)
    assert "NaN" not in out.read_text()


# ---------------------------------------------------------------------------- numeric options and devices
@pytest.fixture(scope="module")
def index_dir(model_dir, tmp_path_factory):
    from ragcun.retrieval import GaussianRetriever

    r = GaussianRetriever(model_dir)
    r.add_documents(["alpha beta", "gamma delta", "epsilon"], ids=["a", "b", "c"])
    path = tmp_path_factory.mktemp("table-index") / "ix"
    r.save(path)
    return str(path)


OPTION_CASES = [
    (["search", "{ix}", "alpha", "--width", "0"], "--width must be at least 2 characters, got 0"),
    (["search", "{ix}", "alpha", "--width", "-5"], "--width must be at least 2 characters, got -5"),
    (["search", "{ix}", "alpha", "-k", "0"], "-k must be positive"),
    (["evaluate", "-m", "{model}", "-d", "{ds}", "--batch-size", "1000000000000"],
     "--batch-size must be between 1 and 65,536"),
    (["evaluate", "-m", "{model}", "-d", "{ds}", "--batch-size", "0"], "--batch-size must be between 1"),
    (["evaluate", "-m", "{model}", "-d", "{ds}", "--top-k", "0"], "--top-k must be between 1"),
    (["evaluate", "-m", "{model}", "-d", "{ds}", "--chunk-size", "-1"], "--chunk-size must be at least 1"),
    (["evaluate", "-m", "{model}", "-d", "{ds}", "--device", "quantum"],
     "--device 'quantum' is not a device"),
    (["isotropy", "-m", "{model}", "-d", "{ds}", "--num-slices", "0"], "--num-slices must be between 1"),
    (["evaluate-rag", "-m", "{model}", "-d", "{ds}", "--negatives", "0"], "--negatives must be between 1"),
    (["index", "build", "-m", "{model}", "--docs", "{docs}", "--out", "{tmp}/i", "--batch-size", "0"],
     "--batch-size must be"),
    (["index", "build", "-m", "{model}", "--docs", "{docs}", "--out", "{tmp}/i", "--hnsw-m", "1"],
     "--hnsw-m must be"),
    (["index", "build", "-m", "{model}", "--docs", "{docs}", "--out", "{tmp}/file/i"],
     "is a file, not a folder"),
    (["index", "build", "-m", "{model}", "--docs", "{docs}", "--out", "{tmp}/i", "--device", "mps:7"],
     "--device"),
    (["search", "{ix}", "alpha", "--device", "tpu"], "--device 'tpu' is not a device"),
    (["index", "build", "-m", "{model}", "--docs", " ", "--out", "{tmp}/i"], "--docs is empty"),
    (["encode", "-m", "{model}", "--docs", "", "--out", "{tmp}/i.npy"], "--docs is empty"),
    (["encode", "-m", "{model}", "--docs", "nosuchset", "--out", "{tmp}/i.npy"],
     "--docs nosuchset: no such file or folder; as a dataset name"),
    (["train", "--device", "quantum"], "--device 'quantum' is not a device"),
    (["serve", "{ix}", "--body-timeout", "nan"], "--body-timeout must be in"),
    (["serve", "{ix}", "--snapshot-every", "0"], "--snapshot-every must be between 1"),
    (["serve", "{ix}", "--api-key", " "], "--api-key (or RAGCUN_API_KEY) is empty"),
]
if not torch.cuda.is_available():
    OPTION_CASES += [
        (["evaluate", "-m", "{model}", "-d", "{ds}", "--device", "cuda"],
         "--device cuda: no CUDA GPU is visible"),
        (["index", "build", "-m", "{model}", "--docs", "{docs}", "--out", "{tmp}/i", "--device", "cuda:1"],
         "--device cuda:1: no CUDA GPU"),
        (["search", "{ix}", "alpha", "--device", "cuda"], "available: cpu"),
    ]


@pytest.mark.parametrize(("argv", "fragment"), OPTION_CASES)
def test_options_out_of_bounds_name_the_flag(argv, fragment, model_dir, index_dir, slice_dir, tmp_path):
    (tmp_path / "file").write_text("x")
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "alpha"}\n')
    values = {"ix": index_dir, "model": model_dir, "ds": str(slice_dir), "docs": str(docs),
              "tmp": str(tmp_path)}
    res = runner.invoke(app, [a.format(**values) for a in argv])
    assert_clean_error(res, fragment)
    assert not (tmp_path / "i").exists()


def test_the_python_api_names_the_device(model_dir):
    from ragcun.retrieval import GaussianRetriever

    with pytest.raises(ValueError, match="device 'quantum' is not a device"):
        GaussianRetriever(model_dir, device="quantum")


def test_a_folder_that_cannot_be_written_is_named(model_dir, tmp_path):
    """A normal user's read-only folder (mode 555); where the tests run as root, who may write anywhere, the
    folder is made immutable instead (chattr +i), which refuses root too."""
    import os
    import subprocess

    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "alpha"}\n')
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(locked)], capture_output=True, check=False).returncode:
            pytest.skip("running as root on a file system without chattr +i: no folder is unwritable")
    else:
        os.chmod(locked, 0o555)
    try:
        res = runner.invoke(app, ["index", "build", "-m", model_dir, "--docs", str(docs), "--out",
                                  str(locked / "index")])
        assert_clean_error(res, str(locked))
        assert list(locked.iterdir()) == []
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(locked)], check=False)
        os.chmod(locked, 0o755)


def test_a_misspelt_dataset_gets_a_suggestion(data_root):
    from ragcun.paths import find_beir_dataset

    with pytest.raises(FileNotFoundError, match=r"'scifcat' not found \(did you mean 'scifact'\?\)"):
        find_beir_dataset("scifcat", data_root)
    res = runner.invoke(app, ["data", "stats", "nfcorpsu", "--data-dir", str(data_root)])
    assert_clean_error(res, "did you mean 'nfcorpus'?")
