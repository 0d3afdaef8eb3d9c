"""Nothing wrong passes silently: each kind of bad input gets a one-line error naming the file, line or field
(or a warning where the input is legal), through the CLI and the Python API, on real SciFact slices."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ragcun.cli import app
from ragcun.data.beir import DataFormatError, load_beir

runner = CliRunner()


def out(res) -> str:
    return " ".join(res.output.split())


def assert_clean_error(res, *needles: str) -> None:
    """Exit 1, no traceback, and the message says what is wrong."""
    text = out(res)
    assert res.exit_code == 1, text
    assert "Traceback" not in res.output
    for n in needles:
        assert n in text, f"{n!r} not in {text!r}"


@pytest.fixture(scope="module")
def slice_dir(beir_slice):
    return beir_slice("scifact", {"test": 6, "train": 6}, extra_docs=20, max_chars=200)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------------- training numbers
@pytest.mark.parametrize("setting, message", [
    ("lambda_isotropy=nan", "lambda_isotropy must be a finite number"),
    ("temperature=inf", "temperature must be a finite number"),
    ("num_slices=0", "num_slices must be > 0"),
    ("hidden_dim=-3", "hidden_dim must be > 0"),
    ("head_init_power=1.5", "head_init_power must be in [0, 1]"),
    ("lr_scheduler_type=nope", "lr_scheduler_type must be one of"),
    ("report_to=tensorbord", "report_to: unknown integration 'tensorbord'"),
    ("learning_rate_mapping={a=nan}", "learning_rate_mapping['a'] must be a finite learning rate > 0"),
    ("learning_rate_mapping=x", "learning_rate_mapping must be a table of pattern = learning rate"),
    ("lambda_isotropy=-1", "lambda_isotropy must be >= 0"),
])
def test_training_numbers_are_checked(setting, message, tmp_path):
    res = runner.invoke(app, ["train", "--set", setting, "--set", f"train_data={tmp_path}"])
    assert_clean_error(res, message)


def test_config_errors_keep_their_brackets(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[traning]\nepochs = 1\n")
    res = runner.invoke(app, ["train", str(cfg)])
    assert_clean_error(res, "unknown table [traning]", "[model]", "[training]")


def test_launch_must_be_a_mode(tmp_path):
    res = runner.invoke(app, ["train", "--launch", "banana", "--set", f"train_data={tmp_path}"])
    assert_clean_error(res, "--launch must be 'auto', 'no' or a number of processes, got 'banana'")


# ---------------------------------------------------------------------------- BEIR values
@pytest.mark.parametrize("record, message", [
    ({"_id": "x", "title": "", "text": 5}, "`text` must be a string, got int"),
    ({"_id": "x", "title": ["a"], "text": "t"}, "`title` must be a string, got list"),
    ({"_id": "x", "title": "", "text": {"a": 1}}, "`text` must be a string, got dict"),
    ({"_id": "x", "title": "", "text": None}, "`text` must be a string, got null"),
    ({"_id": 4983.0, "title": "", "text": "t"}, "`_id` must be a string or an integer, got float 4983.0"),
])
def test_corpus_values_must_be_strings(slice_dir, tmp_path, record, message):
    d = _copy(slice_dir, tmp_path / "ds")
    with open(d / "corpus.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    n = len((d / "corpus.jsonl").read_text().splitlines())
    with pytest.raises(DataFormatError, match=rf"corpus\.jsonl:{n}: {message}"):
        load_beir(str(d))


def test_empty_corpus_and_unjudged_qrels_are_errors(slice_dir, tmp_path):
    d = _copy(slice_dir, tmp_path / "empty")
    lines = [json.loads(x) for x in (d / "corpus.jsonl").read_text().splitlines()]
    (d / "corpus.jsonl").write_text("".join(json.dumps({**x, "title": "", "text": ""}) + "\n" for x in lines))
    with pytest.raises(DataFormatError, match="every one of the .* documents has an empty title and text"):
        load_beir(str(d))
    d = _copy(slice_dir, tmp_path / "zero")
    rows = (d / "qrels" / "test.tsv").read_text().splitlines()
    (d / "qrels" / "test.tsv").write_text(
        "\n".join([rows[0], *[r.rsplit("\t", 1)[0] + "\t0" for r in rows[1:]]]) + "\n")
    with pytest.raises(DataFormatError, match=r"test\.tsv: no pair has a positive grade"):
        load_beir(str(d))


def test_non_utf8_bytes_name_the_file_and_line(slice_dir, tmp_path):
    d = _copy(slice_dir, tmp_path / "bytes")
    with open(d / "corpus.jsonl", "ab") as fh:
        fh.write(b'{"_id": "z", "title": "", "text": "caf\xe9"}\n')
    n = len((d / "corpus.jsonl").read_bytes().splitlines())
    with pytest.raises(DataFormatError, match=rf"corpus\.jsonl:{n}: not UTF-8 text \(byte 0xe9"):
        load_beir(str(d))
    d = _copy(slice_dir, tmp_path / "qbytes")
    with open(d / "qrels" / "test.tsv", "ab") as fh:
        fh.write(b"q\xff\td\t1\n")
    with pytest.raises(DataFormatError, match=r"test\.tsv:\d+: not UTF-8"):
        load_beir(str(d))


# ---------------------------------------------------------------------------- evaluation
def test_top_k_is_never_changed_silently(slice_dir, tiny_model_path, caplog):
    from ragcun.evaluation.beir_eval import evaluate_model

    with pytest.raises(ValueError, match="top_k must be a positive integer, got 0"):
        evaluate_model(tiny_model_path, [str(slice_dir)], top_k=0, show_progress_bar=False)
    with caplog.at_level("WARNING"):
        res = evaluate_model(tiny_model_path, [str(slice_dir)], top_k=20, show_progress_bar=False)
    (vals,) = res["results"].values()
    assert "recall@10" in vals and "recall@1000" not in vals and "ndcg@100" not in vals
    assert "top_k=20" in caplog.text and "recall@1000" in caplog.text
    res = runner.invoke(app, ["evaluate", "-m", tiny_model_path, "-d", str(slice_dir),
                              "--max-seq-length", "100000"])
    assert_clean_error(res, "max_seq_length=100000 is above what")


def test_damaged_cache_chunk_is_encoded_again(slice_dir, tiny_model_path, caplog):
    from ragcun.encoding.corpus import encode_beir_corpus
    from ragcun.encoding.models import load_model as load
    from ragcun.evaluation.beir_eval import evaluate_model

    first = evaluate_model(tiny_model_path, [str(slice_dir)], score="l2", show_progress_bar=False)
    model, _ = load(tiny_model_path)
    emb = encode_beir_corpus(model, load_beir(str(slice_dir)))
    chunk = emb.directory / "chunk-00000.npy"
    raw = bytearray(chunk.read_bytes())
    raw[-8:] = np.float32([7.0, 7.0]).tobytes()  # same size, different numbers
    chunk.write_bytes(bytes(raw))
    with caplog.at_level("WARNING"):
        again = evaluate_model(tiny_model_path, [str(slice_dir)], score="l2", show_progress_bar=False)
    assert "differs from the recorded" in caplog.text and str(chunk) in caplog.text
    assert again["results"] == first["results"]


def test_full_disk_is_a_message(slice_dir, tiny_model_path, tmp_path, monkeypatch):
    import errno

    import ragcun.files as io

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.json, "dump", full)
    res = runner.invoke(app, ["evaluate", "-m", tiny_model_path, "-d", str(slice_dir), "-o",
                              str(tmp_path / "r.json")])
    assert_clean_error(res, "No space left on device")


# ---------------------------------------------------------------------------- models
def test_broken_model_directories_name_the_file(tiny_model_path, tmp_path):
    from ragcun.resolve import ModelNotFoundError, load_sentence_transformer

    m = _copy(Path(tiny_model_path), tmp_path / "truncated")
    (weights,) = list(m.rglob("model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelNotFoundError, match=r"model\.safetensors: damaged or truncated weights"):
        load_sentence_transformer(m)
    m = _copy(Path(tiny_model_path), tmp_path / "modules")
    (m / "modules.json").write_text("{not json")
    with pytest.raises(ModelNotFoundError, match=r"modules\.json: corrupt"):
        load_sentence_transformer(m)
    m = _copy(Path(tiny_model_path), tmp_path / "noconfig")
    for cfg in m.rglob("config.json"):
        cfg.unlink()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_sentence_transformer(m)
    res = runner.invoke(app, ["evaluate", "-m", str(m), "-d", "scifact"])
    assert_clean_error(res, "no config.json")


def test_zip_members_cannot_escape_or_explode(tmp_path):
    from ragcun.files import safe_extract

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with zipfile.ZipFile(evil) as zf, pytest.raises(ValueError, match="escapes the target folder"):
        safe_extract(zf, tmp_path / "into")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.bin", b"\0" * 4_000_000)
    with zipfile.ZipFile(bomb) as zf, pytest.raises(ValueError, match="refusing"):
        safe_extract(zf, tmp_path / "into", max_bytes=1_000_000)
    assert not (tmp_path / "outside.txt").exists()


def test_dotenv_is_read_from_the_working_directory_and_only_for_hf_token(tmp_path, monkeypatch):
    from ragcun.resolve import load_dotenv_keys

    (tmp_path / ".env").write_text("HF_TOKEN=abc\nAWS_SECRET=nope\n")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("AWS_SECRET", raising=False)
    monkeypatch.chdir(tmp_path)
    load_dotenv_keys()
    assert os.environ.get("HF_TOKEN") == "abc" and "AWS_SECRET" not in os.environ
    monkeypatch.delenv("HF_TOKEN")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")  # a .env in a parent folder is not searched for
    load_dotenv_keys()
    assert "HF_TOKEN" not in os.environ


# ---------------------------------------------------------------------------- retrieval
@pytest.fixture(scope="module")
def index_dir(tiny_model_path, tmp_path_factory):
    from ragcun.modeling import IsotropicGaussianEncoder
    from ragcun.retrieval import GaussianRetriever

    root = tmp_path_factory.mktemp("bad-index")
    IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=8).save(root / "model")
    r = GaussianRetriever(str(root / "model"))
    r.add_documents(["alpha beta", "gamma delta", "epsilon"], ids=["a", "b", "c"])
    r.save(root / "ix")
    return root


def test_empty_queries_documents_and_bad_top_k(index_dir):
    from ragcun.retrieval import GaussianRetriever

    r = GaussianRetriever.load(index_dir / "ix")
    with pytest.raises(ValueError, match="queries\\[0\\] is empty"):
        r.retrieve("")
    with pytest.raises(ValueError, match="texts\\[0\\] is empty"):
        r.add_documents([" "])
    with pytest.raises(ValueError, match="top_k must be a positive integer, got 2.5"):
        r.retrieve("alpha", top_k=2.5)
    res = runner.invoke(app, ["search", str(index_dir / "ix"), ""])
    assert_clean_error(res, "is empty")


def test_manifests_that_skip_checks_or_were_edited_are_refused(index_dir, tmp_path):
    from ragcun.retrieval import GaussianRetriever, IndexCorruptError
    from ragcun.retrieval.persistence import MANIFEST_HASH, manifest_digest

    for name, edit, message, reseal in (
        ("nofiles", lambda m: m.update(files={}), "does not list", True),
        ("kind", lambda m: m["index"].update(type="annoy"), "index type 'annoy' is not one of", True),
        # an edit that every file's hash would miss (the query encoding: int8 changed 8 of 50 top hits)
        ("int8", lambda m: m["encoding"].update(precision="int8"), "does not match its own hash", False),
        ("unsealed", lambda m: m.pop(MANIFEST_HASH), "does not match its own hash", False),
    ):
        d = _copy(index_dir / "ix", tmp_path / name)
        manifest = json.loads((d / "manifest.json").read_text())
        edit(manifest)
        if reseal:  # a consistent manifest reaches the deeper checks
            manifest[MANIFEST_HASH] = manifest_digest(manifest)
        (d / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(IndexCorruptError, match=message):
            GaussianRetriever.load(d)


def test_index_build_limits_and_out(index_dir, slice_dir, tmp_path):
    model = str(index_dir / "model")
    res = runner.invoke(app, ["index", "build", "-m", model, "--docs", str(slice_dir), "--out",
                              str(tmp_path / "o"), "--limit", "-1"])
    assert_clean_error(res, "--limit must be a positive number of documents, got -1")
    (tmp_path / "file").write_text("x")
    res = runner.invoke(app, ["index", "build", "-m", model, "--docs", str(slice_dir), "--out",
                              str(tmp_path / "file")])
    assert_clean_error(res, "is a file; an index is a folder")


# ---------------------------------------------------------------------------- triplets
def test_bad_triplet_files_and_the_jsonl_layout(tmp_path, slice_dir, tiny_model_path):
    from ragcun.config import ConfigError
    from ragcun.data.triplets import build_triplets
    from ragcun.training.data import load_train_dataset

    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ConfigError, match="empty.jsonl: the training file is empty"):
        load_train_dataset(tmp_path / "empty.jsonl")
    (tmp_path / "nulls.jsonl").write_text('{"query": "q", "positive": null}\n')
    with pytest.raises(ConfigError, match="row 1, column 'positive' is null"):
        load_train_dataset(tmp_path / "nulls.jsonl")
    build_triplets(str(slice_dir), tmp_path / "trip", negatives="random", format="jsonl", show_progress=False,
                   cache_index=False)
    ds, _ = load_train_dataset(tmp_path / "trip")  # the folder `data triplets --format jsonl` writes
    assert len(ds) > 0 and ds.column_names[:2] == ["query", "positive"]


# ---------------------------------------------------------------------------- cheap checks first
def test_dataset_split_and_score_are_checked_before_the_model_loads(slice_dir):
    """A model that does not exist is never reached: the cheaper mistake is reported first."""
    res = runner.invoke(app, ["evaluate", "-m", "/no/such/model", "-d", "no-such-dataset"])
    assert_clean_error(res, "no-such-dataset", "not found")
    res = runner.invoke(app, ["evaluate", "-m", "/no/such/model", "-d", str(slice_dir), "--split", "dev"])
    assert_clean_error(res, "no qrels for split 'dev'", "splits available: train, test")
    res = runner.invoke(app, ["evaluate", "-m", "/no/such/model", "-d", str(slice_dir), "--score", "bm42"])
    assert_clean_error(res, "bm42")
    assert "/no/such/model" not in out(res)
